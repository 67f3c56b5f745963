"""Figures, targets and the two outputs: a table on stdout and a JSON file."""

from __future__ import annotations

import json
import operator
import sys
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
}


@dataclass
class Figure:
    """One measured value, with its target when it has one (``op`` and ``target``)."""

    section: str
    name: str
    value: float | int | None
    unit: str = ""
    op: str | None = None
    target: float | int | None = None
    note: str = ""

    @property
    def passed(self) -> bool | None:
        if self.op is None or self.target is None:
            return None
        if self.value is None:
            return False
        return _OPS[self.op](self.value, self.target)

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: ""}[self.passed]

    def shown_value(self) -> str:
        return _fmt(self.value, self.unit)

    def shown_target(self) -> str:
        if self.op is None or self.target is None:
            return ""
        return f"{self.op} {_fmt(self.target, self.unit)}"

    def as_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "target": None if self.op is None else f"{self.op} {self.target}",
            "pass": self.passed,
            "note": self.note,
        }


def _fmt(value: float | int | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 100:
        text = f"{int(value):,}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    if unit == "%":
        return text + " %"
    return f"{text} {unit}".rstrip()


def format_table(figures: list[Figure]) -> str:
    """Figures grouped by section: name, value, target, PASS/FAIL, note."""
    name_w = max((len(f.name) for f in figures), default=10)
    value_w = max((len(f.shown_value()) for f in figures), default=8)
    target_w = max((len(f.shown_target()) for f in figures), default=6)
    lines: list[str] = []
    section = None
    for f in figures:
        if f.section != section:
            section = f.section
            lines += ["", section, "-" * len(section)]
        row = (
            f"  {f.name:<{name_w}}  {f.shown_value():>{value_w}}  "
            f"{f.shown_target():<{target_w}}  {f.verdict:<4}"
        )
        if f.note:
            row += f"  {f.note}"
        lines.append(row.rstrip())
    judged = [f for f in figures if f.passed is not None]
    failed = [f for f in judged if not f.passed]
    lines += ["", f"{len(judged) - len(failed)} of {len(judged)} targets met."]
    return "\n".join(lines)


def run_and_report(
    bench: Callable[[Any, list[Figure], ExitStack], None],
    args: Any,
    *,
    fail_on_miss: bool = False,
) -> int:
    """Run ``bench(args, figures, stack)``, print the figures, write them to ``args.output``.
    Returns 2 when a measurement could not be taken, 1 for a missed target when
    ``fail_on_miss``, else 0."""
    from load import MeasurementError

    figures: list[Figure] = []
    status = 0
    error = None
    try:
        with ExitStack() as stack:
            bench(args, figures, stack)
    except MeasurementError as exc:
        error, status = str(exc), 2
    except Exception as exc:
        traceback.print_exc()
        error, status = f"{type(exc).__name__}: {exc}", 2
    print(format_table(figures))
    write_json(
        args.output,
        {
            "figures": [f.as_json() for f in figures],
            "error": error,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        },
    )
    print(f"\nresults: {args.output}", flush=True)
    if error:
        print(f"\nerror: a measurement could not be taken: {error}", file=sys.stderr)
    elif fail_on_miss and any(f.passed is False for f in figures):
        status = 1
    return status


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
