"""Which variation operators produced improvements: success rates computed from the store.

A child *improves* when its fitness ``(stage reached, score)`` beats the best of its parents'
lexicographically: the same order the strategy selects by, so a child that got further through
the fidelity stages, or scored higher at the same stage, counts. Only children that were
actually evaluated are counted (a duplicate that reused an earlier individual's evaluations
says nothing about its operator), and seeds have no operator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

COUNTED_STATUSES = ("evaluated", "stopped_at_hurdle", "pruned", "failed")


def _rank(row: Mapping[str, Any], stage_order: Mapping[str, int]) -> tuple[int, float] | None:
    if row.get("fitness") is None or row.get("stage_reached") is None:
        return None
    return stage_order.get(row["stage_reached"], -1), float(row["fitness"])


def improved(child: Mapping[str, Any], parents: Sequence[Mapping[str, Any]],
             stage_order: Mapping[str, int]) -> bool | None:
    """Whether ``child`` beats its best parent; None when either side was never scored."""
    mine = _rank(child, stage_order)
    theirs = [r for r in (_rank(p, stage_order) for p in parents) if r is not None]
    if mine is None or not theirs:
        return None
    return mine > max(theirs)


def operator_success(individuals: Sequence[Mapping[str, Any]],
                     stage_order: Mapping[str, int]) -> list[dict[str, Any]]:
    """One row per operator: ``{operator, children, improvements, success_rate}``.

    Sorted by improvements, then success rate (both descending). ``individuals`` are store rows
    (``uid``, ``operator``, ``parents``, ``fitness``, ``stage_reached``, ``status``).
    """
    by_uid = {r["uid"]: r for r in individuals}
    counts: dict[str, list[int]] = {}
    for row in individuals:
        if row.get("operator") in (None, "seed") or row.get("status") not in COUNTED_STATUSES:
            continue
        parents = [by_uid[p] for p in row.get("parents") or () if p in by_uid]
        verdict = improved(row, parents, stage_order)
        if verdict is None:
            continue
        tally = counts.setdefault(row["operator"], [0, 0])
        tally[0] += 1
        tally[1] += int(verdict)
    rows = [{"operator": op, "children": n, "improvements": k,
             "success_rate": k / n if n else 0.0} for op, (n, k) in counts.items()]
    return sorted(rows, key=lambda r: (-r["improvements"], -r["success_rate"], r["operator"]))
