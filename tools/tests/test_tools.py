"""Tests of the repository tools: the README table renderer, the baseline merger and the CI summary."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


render_bench = _load("render_bench")
bench_baseline = _load("bench_baseline")
ci_summary = _load("ci_summary")


def _bench(name: str, median_s: float, **extra) -> dict:
    return {"name": name, "fullname": f"bench.py::{name}", "stats": {"median": median_s}, "extra_info": extra}


def _report(path: Path, *benches: dict) -> Path:
    path.write_text(json.dumps({"machine_info": {"node": "h200"}, "benchmarks": list(benches)}))
    return path


SHAPE = {"b": 4, "l": 2048}


def _op(case: str, median_s: float, backend: str, shape: dict, **extra) -> dict:
    return _bench(f"test_op[{case}]", median_s, op="op", shape=shape, dtype="bfloat16", backend=backend,
                  device="NVIDIA H200", **extra)  # fmt: skip


def test_vs_ref_divides_the_reference_median_of_the_same_case():
    rows = [
        _op("s1-fwd-triton", 0.002, "triton", SHAPE, gbps=1234.5, baseline_ms=3.0),
        _op("s1-fwd-reference", 0.010, "reference", SHAPE),
        _op("s1-fwd-triton", 0.004, "triton", {"b": 8, "l": 2048}),  # another shape: no reference
    ]
    lines = [ln for ln in render_bench.render(rows).splitlines() if "s1-fwd-triton" in ln]
    assert len(lines) == 2
    with_ref = next(ln for ln in lines if "b=4" in ln)
    without_ref = next(ln for ln in lines if "b=8" in ln)
    assert "| 5.0x |" in with_ref  # reference 10 ms / 2 ms
    assert "| 1.50x |" in with_ref  # quoted baseline 3 ms / 2 ms
    assert "| H200 |" in with_ref and "NVIDIA" not in with_ref
    assert "| 1,234 |" in with_ref  # GB/s
    assert without_ref.rstrip().endswith("|  |  |")  # another shape: no reference, no baseline


def test_vs_ref_only_from_the_same_report(tmp_path):
    """A case is compared with the reference of its own report (run) only, not with one from another run."""
    one = _report(tmp_path / "one.json", _op("s1-fwd-triton", 0.002, "triton", SHAPE),
                  _op("s1-fwd-reference", 0.010, "reference", SHAPE))  # fmt: skip
    two = _report(tmp_path / "two.json", _op("s1-fwd-triton", 0.004, "triton", SHAPE))
    table = render_bench.render(render_bench._load([one, two]))
    rows = [ln for ln in table.splitlines() if "| triton |" in ln]
    assert sorted("| 5.0x |" in ln for ln in rows) == [False, True]  # 10 / 2 ms in one.json; none for two.json


def _gen(backend: str, median_s: float, genlen: int, rate: float) -> dict:
    return _bench(f"test_gen[m-b1-float16-{backend}]", median_s, op="generate", shape={"batch": 1, "genlen": genlen},
                  dtype="float16", backend=backend, device="NVIDIA H200", decode_tokens_per_s=rate)  # fmt: skip


def test_rates_compare_across_a_different_genlen():
    """Generation cases: the reference decodes fewer tokens (genlen); the rate ratio still compares them."""
    rows = [_gen("cg", 0.128, 128, 1200.0), _gen("reference", 0.465, 16, 40.0)]
    table = render_bench.render(rows)
    fast = next(ln for ln in table.splitlines() if "| cg |" in ln)
    assert "1,200 tok/s" in fast
    assert "| 30.0x |" in fast  # 1200 / 40 tok/s, not 0.465 / 0.128 s
    ref = next(ln for ln in table.splitlines() if "| reference |" in ln)
    assert "40 tok/s" in ref and "x |" not in ref.split("tok/s", 1)[1]


def test_update_readme_replaces_between_markers(tmp_path):
    report = _report(tmp_path / "r.json", _bench("test_op[a]", 0.001, op="op", backend="triton", dtype="float32"))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{render_bench.BEGIN}\nold table\n{render_bench.END}\noutro\n")
    assert render_bench.main(["--update-readme", str(readme), str(report)]) == 0
    text = readme.read_text()
    assert "old table" not in text and "| op | case |" in text
    assert text.startswith("intro\n") and text.endswith("outro\n")
    readme.write_text("no markers here\n")
    assert render_bench.main(["--update-readme", str(readme), str(report)]) == 1
    assert readme.read_text() == "no markers here\n"


def test_bench_baseline_merges_reports_later_files_win(tmp_path):
    a = _report(tmp_path / "a-h200.json", _bench("t[x]", 1.0), _bench("t[y]", 2.0))
    b = _report(tmp_path / "b-h200.json", _bench("t[y]", 3.0))
    out = tmp_path / "merged.json"
    assert bench_baseline.main([str(out), str(tmp_path / "*-h200.json")]) == 0
    merged = json.loads(out.read_text())
    medians = {x["name"]: x["stats"]["median"] for x in merged["benchmarks"]}
    assert medians == {"t[x]": 1.0, "t[y]": 3.0}
    assert merged["merged_from"] == [str(a), str(b)]


def test_bench_baseline_rejects_nothing_or_garbage(tmp_path, capsys):
    assert bench_baseline.main([str(tmp_path / "o.json"), str(tmp_path / "none-*.json")]) == 2
    (tmp_path / "bad-h200.json").write_text("{not json")
    assert bench_baseline.main([str(tmp_path / "o.json"), str(tmp_path / "bad-*.json")]) == 2
    assert "not a pytest-benchmark report" in capsys.readouterr().err


@pytest.mark.parametrize(
    "log,rc,summary",
    [
        (
            "==== 3 passed, 1 skipped in 1.0s ====\n==== 2 passed, 5 deselected in 2.0s ====\n",
            0,
            "5 passed, 0 failed, 1 skipped",
        ),
        ("==== 3 passed, 1 failed in 1.0s ====\n", 1, "3 passed, 1 failed, 0 skipped"),
        ("==== 1 passed, 2 errors in 1.0s ====\n", 1, "1 passed, 2 failed, 0 skipped"),
        ("nothing ran here\n", 1, "0 passed, 0 failed, 0 skipped"),
    ],
    ids=["green", "failed", "errors", "no-tests"],
)
def test_ci_summary(tmp_path, capsys, log, rc, summary):
    path = tmp_path / "ci.log"
    path.write_text(log)
    assert ci_summary.main(str(path)) == rc
    assert summary in capsys.readouterr().out
