"""How bench/run.py and bench/redis_bench.py put figures in their reports: one number
format, the plain-text and markdown tables, the rows comparing two runs, and a Target
(a named pass/fail, against the target itself and against twice it for --check)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# (label, getter of a run's results, show a ratio)
Row = tuple[str, Callable[[dict[str, Any]], Any], bool]


def div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) >= 0.001 else f"{value:.2g}"
    return str(value)


def compared_rows(
    rows: list[Row], first: dict[str, Any] | None, second: dict[str, Any] | None
) -> list[list[str]]:
    """[label, first's figure, second's, second/first where the row shows a ratio], leaving
    out the rows neither run has a figure for."""
    out = []
    for label, get, ratio in rows:
        a = get(first) if first else None
        b = get(second) if second else None
        if a is None and b is None:
            continue
        r = ""
        if ratio and isinstance(a, int | float) and isinstance(b, int | float) and a:
            r = f"{b / a:.2f}×"
        out.append([label, fmt(a), fmt(b), r])
    return out


@dataclass
class Target:
    name: str
    measured: str
    ok: bool  # against the target itself
    check_ok: bool  # against twice the target (--check)


def text_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def md_table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)
