"""Fitness orientation: a task's own value (a loss to minimise, a score to maximise) as the
higher-is-better fitness in [0, 1] that the rest of evoopt ranks, stores and compares.

Torch-free. ``canonical_fitness`` is the one place the value becomes fitness
(docs/design-user-tasks.md §3, item 1):

* with ``value_range = (lo, hi)``: affine, ``(v - lo) / (hi - lo)`` (``(hi - v) / (hi - lo)``
  when minimising); a value outside the range is a :class:`ValueError`. ``(0, 1)`` maximised is
  the identity, so the built-in tasks' numbers stay bit-identical;
* otherwise, with ``x = v`` (maximise) or ``-v`` (minimise): ``0.5 + 0.5 * x / (1 + |x|)``,
  strictly monotone, inside (0, 1), reference-free.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

DIRECTIONS = ("maximize", "minimize")

#: The largest float below 1: the squash never reaches 1.0 (|x| beyond ~1e16 would round to it).
_BELOW_ONE = math.nextafter(1.0, 0.0)


@dataclass(frozen=True)
class Score:
    """What a task may return instead of a bare number: ``value`` becomes fitness;
    ``accuracy`` and ``loss``, when given, fill ``val_accuracy`` and ``val_loss``."""

    value: float
    accuracy: float | None = None
    loss: float | None = None


def check_direction(direction: object, where: str = "direction") -> str:
    """``direction`` if it is ``"maximize"`` or ``"minimize"``; :class:`ValueError` naming
    ``where`` otherwise."""
    if not isinstance(direction, str) or direction not in DIRECTIONS:
        raise ValueError(f"{where}: expected 'maximize' or 'minimize', got {direction!r}")
    return direction


def _real(x: object, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise ValueError(f"{what}: expected a number, got {x!r}")
    return float(x)


def check_value_range(value_range: object, where: str = "value_range"
                      ) -> tuple[float, float] | None:
    """``value_range`` as ``(lo, hi)`` floats with ``lo < hi`` both finite, or None;
    :class:`ValueError` naming ``where`` otherwise."""
    if value_range is None:
        return None
    if isinstance(value_range, str | bytes) or not hasattr(value_range, "__len__") or len(
            value_range) != 2:  # type: ignore[arg-type]
        raise ValueError(f"{where}: expected (lo, hi), got {value_range!r}")
    lo, hi = (_real(v, where) for v in value_range)  # type: ignore[union-attr]
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{where}: expected finite lo < hi, got {value_range!r}")
    return lo, hi


def canonical_fitness(value: float, direction: str,
                      value_range: tuple[float, float] | None = None) -> float:
    """The fitness (higher is better, in [0, 1]) of a task's finite ``value``.

    Without a range the squash is computed as ``0.5 / (1 - x)`` for ``x < 0`` and
    ``1 - 0.5 / (1 + x)`` otherwise (the same function, without the cancellation that would
    cost a minimised loss its resolution near 0), capped just below 1.
    """
    check_direction(direction)
    v = _real(value, "value")
    if not math.isfinite(v):
        raise ValueError(f"value: expected a finite number, got {value!r}")
    bounds = check_value_range(value_range)
    if bounds is not None:
        lo, hi = bounds
        if not lo <= v <= hi:
            raise ValueError(f"value {v!r} is outside value_range ({lo!r}, {hi!r})")
        if direction == "maximize":
            if lo == 0.0 and hi == 1.0:
                return v  # the built-ins' scores: bit-identical
            return (v - lo) / (hi - lo)
        return (hi - v) / (hi - lo)
    x = v if direction == "maximize" else -v
    if x < 0:
        return 0.5 / (1.0 - x)
    return min(1.0 - 0.5 / (1.0 + x), _BELOW_ONE)


__all__ = ["DIRECTIONS", "Score", "canonical_fitness", "check_direction", "check_value_range"]
