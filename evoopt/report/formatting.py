"""How the report writes numbers, times and durations: one place for the template's filters and
the figures' text (a fitness and a genome value: :mod:`evoopt.report.lineage`'s
``format_fitness`` and ``format_value``)."""

from __future__ import annotations

import time
from typing import Any


def fmt_pm(mean: Any, std: Any) -> str:
    """``mean ± std`` (just the mean when there is no std)."""
    if mean is None:
        return "—"
    return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}"


def fmt_signed(v: Any) -> str:
    """A difference with its sign, a true minus sign for negative ones."""
    return "—" if v is None else f"{v:+.4f}".replace("-", "−")


def fmt_p(p: Any) -> str:
    """A p-value: 3 decimals, or ``< 0.001``."""
    if p is None:
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def fmt_pct(v: Any) -> str:
    """A fraction as a percentage to one decimal."""
    return "—" if v is None else f"{100 * v:.1f}%"


def fmt_time(ts: Any) -> str:
    """A Unix time as local ``YYYY-mm-dd HH:MM:SS`` (any other value as it is)."""
    if ts is None:
        return "—"
    if isinstance(ts, int | float):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    return str(ts)


def fmt_duration(s: Any) -> str:
    """Seconds in the unit that reads best: s under 2 min, min under 2 h, else h."""
    if s is None:
        return "—"
    s = float(s)
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


__all__ = ["fmt_duration", "fmt_p", "fmt_pct", "fmt_pm", "fmt_signed", "fmt_time"]
