"""Merge stored pytest-benchmark reports into one baseline file for ``--benchmark-compare``.

pytest-benchmark compares a run against one stored report; the stored H200 reports are one file per op and
package (``packages/*/benchmarks/results/*-h200.json``). This writes their union (later files win on a
duplicated benchmark name) so that a run on the same kind of machine is compared case by case:

    python tools/bench_baseline.py OUT.json 'packages/*/benchmarks/results/*-h200.json'
    python -m pytest ... --benchmark-compare=OUT.json --benchmark-compare-fail=median:25%

``nox -s bench`` does this when ``BENCH_BASELINE`` names a glob of reports; ``tools/gpu_suite.sh`` when its
third argument does. Exits with 2 (and says why) when nothing matches or a file is not a benchmark report.
"""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path


def merge(paths: list[Path]) -> dict:
    if not paths:
        raise ValueError("no benchmark reports matched")
    merged: dict | None = None
    by_name: dict[str, dict] = {}
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf8"))
            benches = data["benchmarks"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a pytest-benchmark report ({type(exc).__name__}: {exc})") from exc
        if merged is None:
            merged = {k: v for k, v in data.items() if k != "benchmarks"}
        for bench in benches:
            by_name[bench["fullname"]] = bench
    assert merged is not None
    merged["benchmarks"] = list(by_name.values())
    merged["merged_from"] = [str(p) for p in paths]
    return merged


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out, patterns = Path(argv[0]), argv[1:]
    paths = sorted({Path(p) for pattern in patterns for p in glob.glob(pattern)})
    try:
        merged = merge(paths)
    except ValueError as exc:
        print(f"bench_baseline: {exc} (patterns: {' '.join(patterns)})", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=1), encoding="utf8")
    print(f"bench_baseline: {len(merged['benchmarks'])} cases from {len(paths)} reports -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
