"""Render pytest-benchmark JSON reports into a markdown table (the README's performance table).

    python tools/render_bench.py packages/*/benchmarks/results/*.json          # print the table
    python tools/render_bench.py --update-readme README.md packages/*/benchmarks/results/*.json
    python tools/render_bench.py --from-storage .benchmarks                    # newest autosaved run

Each row is one case. "vs ref" divides the reference's median (same op, shape, dtype and test, measured
in the same run: from the same report file) by the case's median; for cases with a throughput ("rate": decoding tokens/s, samples/s) it
divides the rates instead, so a reference that generates fewer tokens (``genlen``) still compares.
"vs baseline" divides ``extra_info['baseline_ms']`` (a figure quoted in the issues, e.g. mamba_ssm on an
H200) by the case's median.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REFERENCE_NAMES = {"reference", "ref", "torch", "pytorch"}
# shape entries that do not change what is compared (only how much of it one call does)
RATE_ONLY_SHAPE_KEYS = {"genlen"}
# extra_info throughput keys, in order of preference, and their unit
RATE_KEYS = (("decode_tokens_per_s", "tok/s"), ("tokens_per_s", "tok/s"), ("samples_per_s", "samples/s"))
BEGIN, END = "<!-- bench-table:begin -->", "<!-- bench-table:end -->"


def _load(paths: list[Path]) -> list[dict]:
    rows = []
    for path in paths:
        data = json.loads(path.read_text())
        machine = data.get("machine_info", {})
        for b in data.get("benchmarks", []):
            b["_file"] = path.name
            b["_machine"] = machine.get("node", "")
            rows.append(b)
    return rows


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return ""
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _key(b: dict) -> tuple:
    e = b.get("extra_info", {})
    func = b["name"].split("[")[0]
    case = b["name"].split("[", 1)[1].rstrip("]") if "[" in b["name"] else ""
    backend = str(e.get("backend", ""))
    case = "-".join(p for p in case.split("-") if p != backend and p not in REFERENCE_NAMES)
    shape = e.get("shape")
    if isinstance(shape, dict) and _rate(e) is not None:
        shape = {k: v for k, v in shape.items() if k not in RATE_ONLY_SHAPE_KEYS}
    return (func, e.get("op", func), json.dumps(shape, sort_keys=True), e.get("dtype"), case)


def _rate(e: dict) -> tuple[float, str] | None:
    for key, unit in RATE_KEYS:
        if e.get(key):
            return float(e[key]), unit
    return None


def render(rows: list[dict]) -> str:
    refs = {}  # a case's reference from the same report (run) only
    for b in rows:
        if str(b.get("extra_info", {}).get("backend", "")).lower() in REFERENCE_NAMES:
            refs[b.get("_file"), _key(b)] = b
    out = [
        "| op | case | shape | dtype | backend | device | median ms | rate | GB/s | % copy BW | peak MB | vs ref "
        "| vs baseline |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in sorted(rows, key=lambda b: (_key(b), str(b.get("extra_info", {}).get("backend")))):
        e = b.get("extra_info", {})
        med = b["stats"]["median"]
        shape = e.get("shape", "")
        if isinstance(shape, dict):
            shape = " ".join(f"{k}={v}" for k, v in shape.items())
        elif isinstance(shape, list):
            shape = "x".join(map(str, shape))
        ref = refs.get((b.get("_file"), _key(b)))
        rate = _rate(e)
        vs_ref = ""
        if ref is not None and str(e.get("backend", "")).lower() not in REFERENCE_NAMES:
            ref_rate = _rate(ref.get("extra_info", {}))
            if rate is not None and ref_rate is not None:
                vs_ref = f"{rate[0] / ref_rate[0]:.1f}x"
            else:
                vs_ref = f"{ref['stats']['median'] / med:.1f}x"
        base = e.get("baseline_ms")
        vs_base = f"{base / (med * 1e3):.2f}x" if base else ""
        out.append(
            "| {op} | {case} | {shape} | {dtype} | {backend} | {device} | {ms} | {rate} | {gbps} | {pct} | {peak} | {vr} "
            "| {vb} |".format(
                op=e.get("op", b["name"].split("[")[0]),
                case=b["name"].split("[", 1)[1].rstrip("]") if "[" in b["name"] else "",
                shape=shape,
                dtype=e.get("dtype", ""),
                backend=e.get("backend", ""),
                device=re.sub(r"^NVIDIA ", "", str(e.get("device", ""))),
                ms=_fmt(med * 1e3),
                rate=f"{_fmt(rate[0])} {rate[1]}" if rate else "",
                gbps=_fmt(e.get("gbps")),
                pct=_fmt(e.get("pct_copy_bw"), 2),
                # (a CUDA-graphed row's peak, taken around a replay, misses the graph's pool: older reports say 0)
                peak="" if "cudagraph" in str(e.get("backend", "")) else _fmt(e.get("peak_mem_mb")),
                vr=vs_ref,
                vb=vs_base,
            )
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", nargs="*", type=Path)
    p.add_argument("--from-storage", type=Path, help="pytest-benchmark storage folder; uses the newest run")
    p.add_argument("--update-readme", type=Path, help="replace the table between the bench-table markers")
    args = p.parse_args(argv)
    paths = list(args.reports)
    if args.from_storage:
        found = sorted(args.from_storage.glob("*/*.json"), key=lambda f: f.stat().st_mtime)
        paths += found[-1:]
    if not paths:
        print("no benchmark reports given", file=sys.stderr)
        return 1
    table = render(_load(paths))
    if args.update_readme:
        text = args.update_readme.read_text()
        if BEGIN not in text or END not in text:
            print(f"{args.update_readme}: markers {BEGIN} / {END} not found", file=sys.stderr)
            return 1
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        args.update_readme.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
