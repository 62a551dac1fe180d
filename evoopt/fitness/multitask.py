"""Multi-task fitness: one score from several tasks, each measured against a reference optimizer.

A :class:`TaskMix` is the weighted set of tasks a campaign selects on. One evaluation of a
(genome, seed) on a mix runs the genome on every task with that seed; :func:`combine` turns the
per-task results into the one row a campaign stores and selects on:

* with one task the result is that task's, unchanged (a single-task campaign is a mix of one);
* with several, each task's fitness ``f_t`` is divided by the reference optimizer's fitness
  ``r_t`` on the same task, seed, budget and split (common random numbers: the same network,
  batches and augmentation), so tasks of different scales add up fairly::

      fitness = sum_t w_t (f_t / r_t - 1) / sum_t w_t

  0 is the reference itself, 0.05 is 5 % better than it on the weighted average of tasks, and
  a run that fails on any task is a failure (``WORST_FITNESS``, the status of its first failed
  task). The reference is the campaign's seeded Adam (:data:`REFERENCE_SEED`).

An ok result's fitness is always above ``WORST_FITNESS`` (:func:`~evoopt.fitness.runner.ok_floor`:
a mix that scored 0 on every task would be exactly -1.0), so it is never taken for a failure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evoopt.fitness.runner import WORST_FITNESS, ok_floor, task_info
from evoopt.fitness.task import TaskSpec

#: The seed genome every task of a mix is normalised by (every campaign seeds it).
REFERENCE_SEED = "adam"
#: Per-task fields kept in a multi-task evaluation's ``tasks`` record.
TASK_FIELDS = ("fitness", "val_accuracy", "val_loss", "status", "message", "steps",
               "wall_time_s", "threads", "value", "train_loss_curve")


@dataclass(frozen=True)
class TaskMix:
    """Tasks selected on together, with their weights (positive; normalised when combined)."""

    tasks: tuple[TaskSpec, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("a task mix needs at least one task")
        if len(self.weights) != len(self.tasks):
            raise ValueError(f"a task mix needs one weight per task: {len(self.tasks)} tasks, "
                             f"{len(self.weights)} weights")
        if any(not (isinstance(w, int | float) and math.isfinite(w) and w > 0)
               for w in self.weights):
            raise ValueError(f"task weights must be positive numbers, got {list(self.weights)}")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"task names repeat in a mix: {list(self.names)}")

    @classmethod
    def single(cls, task: TaskSpec) -> TaskMix:
        return cls((task,), (1.0,))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    @property
    def multi(self) -> bool:
        """Whether scores are normalised by the reference (more than one task)."""
        return len(self.tasks) > 1

    @property
    def score_label(self) -> str:
        """A short name of what the mix's fitness measures (for reports): the one task's score,
        or, with several tasks, the score relative to the reference optimizer."""
        return mix_labels([task_info(t) for t in self.tasks])[0]

    @property
    def score_description(self) -> str:
        """The definition of the mix's fitness (for reports), as :func:`combine` computes it."""
        return mix_labels([task_info(t) for t in self.tasks])[1]

    def with_overrides(self, **kw: Any) -> TaskMix:
        """The mix with the same overrides (a fidelity stage's budget) applied to every task."""
        return TaskMix(tuple(t.with_overrides(**kw) for t in self.tasks), self.weights)


def mix_labels(infos: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """(label, description) of the fitness of a mix of tasks, from each task's
    :func:`~evoopt.fitness.runner.task_info` (a campaign stores them, so a report needs no
    task code): one task's own score, or the score relative to the reference optimizer."""
    if len(infos) > 1:
        return (f"relative score vs the seeded {REFERENCE_SEED}",
                f"the weighted mean, over tasks, of each task's fitness divided by the seeded "
                f"{REFERENCE_SEED}'s on the same seed, minus 1 (0 = {REFERENCE_SEED})")
    info = infos[0]
    if info.get("value_range") == [0.0, 1.0] and info.get("direction") == "maximize":
        return info["score_label"], info["score_description"]
    arrow = "↑" if info.get("direction") == "maximize" else "↓"
    mapping = ("the affine map of its value_range" if info.get("value_range") else
               "0.5 + 0.5·x/(1 + |x|), x = the value, negated when minimised")
    return (f"{info['score_label']} ({arrow} better), mapped to (0, 1)",
            f"{info['score_description']}; fitness is that value mapped monotonically to "
            f"[0, 1], higher better: {mapping}")


def task_record(result: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of one task's result (a ``SeedResult.to_dict()``) a mix's row keeps."""
    return {k: result.get(k) for k in TASK_FIELDS}


def combine(mix: TaskMix, results: Mapping[str, Mapping[str, Any]],
            reference: Mapping[str, float] | None = None) -> dict[str, Any]:
    """One result dict (``SeedResult.to_dict()`` shape, plus ``tasks``) from the results of the
    tasks of ``mix`` (by task name) on one seed and split.

    ``reference`` maps each task to the reference optimizer's fitness on the same seed and split
    (needed, and each > 0, when the mix has several tasks). A single task's result is returned
    as it is, with ``tasks`` None. An ok fitness is floored by :func:`ok_floor` (> -1: a failure
    is told by its status, and ``WORST_FITNESS`` is below every ok score).
    """
    missing = [n for n in mix.names if n not in results]
    if missing:
        raise ValueError(f"no result for task(s) {', '.join(missing)}")
    if not mix.multi:
        out = {**results[mix.names[0]], "tasks": None}
        if out.get("status") == "ok":  # a built-in score in [0, 1] is unchanged
            out["fitness"] = ok_floor(out["fitness"])
        return out
    records = {n: task_record(results[n]) for n in mix.names}
    out: dict[str, Any] = {
        "val_accuracy": None, "val_loss": None, "train_loss_curve": [], "tasks": records,
        "steps": sum(int(r["steps"] or 0) for r in records.values()),
        "wall_time_s": float(sum(r["wall_time_s"] or 0.0 for r in records.values())),
        "train_time_s": float(sum(results[n].get("train_time_s") or 0.0 for n in mix.names)),
        "seed": results[mix.names[0]].get("seed"), "split": results[mix.names[0]].get("split"),
        "threads": max(int(results[n].get("threads") or 0) for n in mix.names),
    }
    failed = [n for n in mix.names if records[n]["status"] != "ok"]
    if failed:
        first = records[failed[0]]
        return {**out, "fitness": WORST_FITNESS, "status": first["status"],
                "message": "; ".join(f"{n}: {records[n]['status']}: {records[n]['message']}"
                                     for n in failed)}
    if reference is None:
        raise ValueError("a multi-task score needs the reference's fitness on every task")
    for n in mix.names:
        r = reference.get(n)
        if r is None or not (math.isfinite(r) and r > 0):
            raise ValueError(f"task {n}: the reference fitness must be a positive number, "
                             f"got {r!r}")
    total = sum(mix.weights)
    score = sum(w * (records[n]["fitness"] / reference[n] - 1.0)
                for n, w in zip(mix.names, mix.weights, strict=True)) / total
    return {**out, "fitness": ok_floor(float(score)), "status": "ok", "message": ""}


def weights_for(names: Sequence[str], weights: Sequence[float]) -> tuple[float, ...]:
    """The weights of ``names``: as given, or all 1 when none are."""
    return tuple(float(w) for w in weights) if weights else (1.0,) * len(names)


__all__ = ["REFERENCE_SEED", "TASK_FIELDS", "TaskMix", "combine", "mix_labels", "task_record",
           "weights_for"]
