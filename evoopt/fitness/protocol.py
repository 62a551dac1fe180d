"""How tuning protocols (fair baselines, budget-matched search) get their training runs done.

The protocols in :mod:`evoopt.fitness.baselines` and :mod:`evoopt.fitness.optuna_search` decide
*what* to evaluate; an :data:`EvaluateFn` decides *how* (in-process here, through a campaign's
evaluator and store in :class:`evoopt.campaign.evaluation.CampaignEvaluate`)::

    evaluate(items, seeds, split, stage=-1) -> {key: [fitness per seed, in seed order]}

* ``items``: ``[(key, genome), ...]`` with unique keys (a key names the item to the caller; a
  campaign uses it as the uid its evaluations are stored under);
* ``seeds``: the seeds every item is trained on; ``split``: ``"val"`` or ``"test"``;
* ``stage``: index into the evaluator's fidelity stages (each a task: budget, data, ...);
  ``-1``, the default, is the last, full-budget one. Fair baselines always use the default;
  the budget-matched search walks the stages in order.
* failures (diverged, timeout, error) are reported as ``WORST_FITNESS``, never raised.

:class:`RunnerEvaluate` is the in-process implementation on :class:`FitnessRunner` (one per
stage), used by ``evoopt baselines``; it keeps a row per run for tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from evoopt.fitness.runner import FitnessRunner, SeedResult
from evoopt.genome import Genome

# progress(key, split, seed, result) after every run of RunnerEvaluate
RunProgressFn = Callable[[str, str, int, SeedResult], None]


class EvaluateFn(Protocol):
    def __call__(self, items: list[tuple[str, Genome]], seeds: Sequence[int], split: str,
                 stage: int = -1) -> dict[str, list[float]]: ...


def check_results(items: list[tuple[str, Genome]], seeds: Sequence[int],
                  results: dict[str, list[float]]) -> None:
    """Raise ValueError when an EvaluateFn did not return one score per seed for every key."""
    for key, _ in items:
        got = results.get(key)
        if got is None or len(got) != len(seeds):
            raise ValueError(f"evaluate returned {got!r} for {key!r}; expected one fitness per "
                             f"seed ({len(seeds)})")


class RunnerEvaluate:
    """An :data:`EvaluateFn` running every (item, seed) in this process, serially.

    ``runners[k]`` evaluates stage ``k`` (a single runner: one stage). ``runs`` collects one row
    per run: key, stage, split, seed and the :class:`SeedResult` fields.
    """

    def __init__(self, runners: FitnessRunner | Sequence[FitnessRunner],
                 progress: RunProgressFn | None = None) -> None:
        self.runners = [runners] if hasattr(runners, "evaluate") else list(runners)
        if not self.runners:
            raise ValueError("RunnerEvaluate needs at least one FitnessRunner")
        self.progress = progress
        self.runs: list[dict[str, Any]] = []

    def __call__(self, items: list[tuple[str, Genome]], seeds: Sequence[int], split: str,
                 stage: int = -1) -> dict[str, list[float]]:
        runner = self.runners[stage]
        index = stage % len(self.runners)
        out: dict[str, list[float]] = {}
        for key, genome in items:
            scores = []
            for seed in seeds:
                r = runner.evaluate(genome, int(seed), split=split)
                scores.append(r.fitness)
                self.runs.append({"key": key, "stage": index, "split": split, "seed": int(seed),
                                  "fitness": r.fitness, "accuracy": r.val_accuracy,
                                  "loss": r.val_loss, "status": r.status, "steps": r.steps,
                                  "wall_time_s": r.wall_time_s, "message": r.message})
                if self.progress is not None:
                    self.progress(key, split, int(seed), r)
            out[key] = scores
        return out


__all__ = ["EvaluateFn", "RunProgressFn", "RunnerEvaluate", "check_results"]
