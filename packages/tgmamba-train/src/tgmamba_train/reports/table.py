"""Plain-text tables for the CLI's final summary."""

from __future__ import annotations

import math

__all__ = ["format_table"]


def _fmt(v) -> str:
    if isinstance(v, dict):
        m, s = v.get("mean"), v.get("std")
        if m is None or (isinstance(m, float) and math.isnan(m)):
            return "n/a"
        return f"{m:.3f} ± {s:.3f}"
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def format_table(rows: dict[str, dict], columns: list[str], title: str | None = None) -> str:
    """A boxed text table: one row per model, one column per metric (values or {mean, std} dicts)."""
    header = ["model", *columns]
    body = [[name, *(_fmt(vals.get(c)) for c in columns)] for name, vals in rows.items()]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    out = [line, fmt(header), line.replace("-", "=")] + [fmt(r) for r in body] + [line]
    if title:
        out.insert(0, title)
    return "\n".join(out)
