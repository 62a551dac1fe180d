"""Run curves binned by step, and in-run pruning against a reference run's curve.

Every fitness run stores a curve of at most :data:`CURVE_POINTS` bin means over its training
steps: the training loss of a task class's loop, the values an objective reports. Bin ``b``
covers steps ``[edges[b], edges[b + 1])`` of ``total_steps`` (:func:`bin_edges`, the split
``numpy.array_split`` makes), so two runs of one task with the same budget have bins that
line up step for step, whatever they reached.

A :class:`PruneRule` stops a run whose curve has fallen behind a reference optimizer's run on
the same task, seed and budget (common random numbers: the same initial weights and batches,
so the comparison is paired). Like Optuna's pruners, the rule looks only at the values the run
has produced so far; unlike a median rule it needs no other run in flight. The campaign builds
one per (stage, seed) from its reference seed's stored run (``[pruning]`` in the campaign
config); a run it stops has status ``pruned``, which is not ``ok``, so it scores
``WORST_FITNESS`` and costs only the steps it ran.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CURVE_POINTS = 50
DIRECTIONS = ("minimize", "maximize")


def bin_edges(total_steps: int, points: int = CURVE_POINTS) -> list[int]:
    """The step edges of a run's curve bins: ``min(points, total_steps)`` bins, the first
    ``total_steps % n`` of them one step longer (``numpy.array_split``'s split)."""
    if total_steps <= 0:
        return [0]
    n = min(points, total_steps)
    size, extra = divmod(total_steps, n)
    edges = [0]
    for b in range(n):
        edges.append(edges[-1] + size + (1 if b < extra else 0))
    return edges


def downsample_curve(losses: np.ndarray, points: int = CURVE_POINTS) -> list[float]:
    """Means of ``losses`` (one per step) over at most ``points`` equal-size consecutive bins:
    the bins of :func:`bin_edges` for ``len(losses)`` steps."""
    if len(losses) == 0:
        return []
    values = losses.astype(np.float64)
    edges = bin_edges(len(values), points)
    with np.errstate(invalid="ignore", over="ignore"):
        return [float(values[a:b].mean()) for a, b in zip(edges, edges[1:], strict=False)]


class StepCurve:
    """A curve of values reported at steps, binned by :func:`bin_edges` of ``total_steps``:
    each bin the mean of the values reported in it (None when none was). Reports past the last
    step fall in the last bin."""

    def __init__(self, total_steps: int, points: int = CURVE_POINTS) -> None:
        self.edges = bin_edges(total_steps, points)
        n = len(self.edges) - 1
        self._sums = [0.0] * n
        self._counts = [0] * n
        self._last_bin = -1

    def add(self, step: int, value: float) -> None:
        """One value at ``step`` (steps must not decrease; the caller checks)."""
        if not self._sums:
            return
        b = min(bisect.bisect_right(self.edges, step) - 1, len(self._sums) - 1)
        self._sums[b] += value
        self._counts[b] += 1
        self._last_bin = b

    @property
    def completed(self) -> int:
        """Bins before the one the latest report fell in: no later report can change them."""
        return max(self._last_bin, 0)

    def values(self) -> list[float | None]:
        """The bin means so far, up to the latest report's bin (None where nothing was
        reported, or where the mean is not finite)."""
        out: list[float | None] = []
        for s, c in zip(self._sums[: self._last_bin + 1], self._counts, strict=False):
            mean = s / c if c else None
            out.append(mean if mean is not None and math.isfinite(mean) else None)
        return out


@dataclass(frozen=True)
class PruneRule:
    """Stop a run whose curve is worse than a reference run's on the same task and seed.

    ``reference``: the reference run's curve (bin means over ``total_steps``); ``direction``:
    of the curve's values (a training loss is minimised; an objective's reports are taken in
    the objective's direction). Once ``after`` of the bins are complete, after every bin the
    rule compares the run's mean over its last ``window`` complete bins with the reference's
    over the same bins, and stops the run when it is worse by more than ``margin`` × |the
    reference's mean|. ``label`` names the reference in the message.
    """

    reference: tuple[float | None, ...]
    total_steps: int
    direction: str = "minimize"
    margin: float = 0.25
    after: float = 0.25
    window: int = 5
    label: str = "the reference"

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"PruneRule.direction: expected one of {DIRECTIONS}, got "
                             f"{self.direction!r}")
        if isinstance(self.total_steps, bool) or not isinstance(self.total_steps, int) or (
                self.total_steps < 1):
            raise ValueError(f"PruneRule.total_steps: expected an int >= 1, got "
                             f"{self.total_steps!r}")
        n = len(bin_edges(self.total_steps)) - 1
        if len(self.reference) > n:
            raise ValueError(f"PruneRule.reference: a curve of {len(self.reference)} bins "
                             f"does not fit {self.total_steps} steps ({n} bins)")
        # non-finite bins compare with nothing; nor do the bins after a reference's last report
        finite = [None if v is None or not math.isfinite(v) else float(v) for v in self.reference]
        object.__setattr__(self, "reference", (*finite, *(None,) * (n - len(finite))))
        check_prune_settings(self.margin, self.after, self.window, "PruneRule")

    @property
    def first_check(self) -> int:
        """The number of complete bins before the rule first looks."""
        return max(1, math.ceil(self.after * len(self.reference)))

    def verdict(self, curve: Sequence[float | None], completed: int) -> str | None:
        """Why to stop a run whose first ``completed`` bins are ``curve[:completed]``, or None
        to go on. The run and the reference are compared over the last ``window`` complete
        bins that both have a value (a sparse reporter's bins are mostly empty)."""
        if completed < self.first_check:
            return None
        hi = min(completed, len(curve), len(self.reference))
        pairs = [(c, r) for c, r in zip(curve[:hi], self.reference[:hi], strict=True)
                 if c is not None and r is not None][-self.window:]
        if not pairs:
            return None
        run = math.fsum(c for c, _ in pairs) / len(pairs)
        ref = math.fsum(r for _, r in pairs) / len(pairs)
        behind = run - ref if self.direction == "minimize" else ref - run
        if not behind > self.margin * abs(ref):
            return None
        step = bin_edges(self.total_steps)[hi]
        return (f"pruned after {step} of {self.total_steps} steps: its curve's mean over "
                f"{len(pairs)} bins, {run:.4g}, is behind {self.label}'s {ref:.4g} on the "
                f"same seed by more than {self.margin:g} x {abs(ref):.4g} "
                f"({'lower' if self.direction == 'minimize' else 'higher'} is better)")

    def check_steps(self, total_steps: int) -> None:
        """:class:`ValueError` unless the run has the rule's budget (its bins must line up)."""
        if total_steps != self.total_steps:
            raise ValueError(f"prune rule for {self.total_steps} steps given to a run of "
                             f"{total_steps} steps")

    def to_dict(self) -> dict[str, Any]:
        return {"reference": list(self.reference), "total_steps": self.total_steps,
                "direction": self.direction, "margin": self.margin, "after": self.after,
                "window": self.window, "label": self.label}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PruneRule:
        return cls(reference=tuple(d["reference"]), total_steps=int(d["total_steps"]),
                   direction=d.get("direction", "minimize"), margin=float(d["margin"]),
                   after=float(d["after"]), window=int(d["window"]),
                   label=str(d.get("label", "the reference")))


def check_prune_settings(margin: object, after: object, window: object, where: str) -> None:
    """:class:`ValueError` naming ``<where>.<field>`` unless ``margin`` is a finite number
    >= 0, ``after`` a fraction in [0, 1) and ``window`` an int >= 1."""
    def real(x: object) -> bool:
        return not isinstance(x, bool) and isinstance(x, int | float) and math.isfinite(x)

    if not (real(margin) and margin >= 0):  # type: ignore[operator]
        raise ValueError(f"{where}.margin: expected a finite number >= 0 (a fraction of the "
                         f"reference's value), got {margin!r}")
    if not (real(after) and 0 <= after < 1):  # type: ignore[operator]
        raise ValueError(f"{where}.after: expected a fraction of training in [0, 1), got "
                         f"{after!r}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"{where}.window: expected an int >= 1 (curve bins), got {window!r}")


def prune_rule(value: PruneRule | Mapping[str, Any] | None, total_steps: int
               ) -> PruneRule | None:
    """A rule from a rule, its dict (an evaluation request's), or None; :class:`ValueError`
    unless it is for a run of ``total_steps`` (:meth:`PruneRule.check_steps`)."""
    if value is None:
        return None
    rule = value if isinstance(value, PruneRule) else PruneRule.from_dict(value)
    rule.check_steps(total_steps)
    return rule


__all__ = ["CURVE_POINTS", "PruneRule", "StepCurve", "bin_edges", "check_prune_settings",
           "downsample_curve", "prune_rule"]
