"""A budget-matched baseline: Optuna (TPE + median pruning) tunes AdamW with the campaign's budget.

An evolved optimizer got ``N`` paid training runs to be found; this search gives AdamW the same
``N`` runs over a fair search space (:func:`adamw_search_space`):

* lr (log 1e-4 .. 1e-1), beta1 (0.8 .. 0.99), beta2 = 1 − (log 1e-4 .. 0.1), i.e. 0.9 .. 0.9999,
  decoupled weight decay (log 1e-5 .. 0.3), lr schedule kind ∈ {constant, cosine,
  warmup_cosine, linear_decay} (the registry's kinds), warmup fraction (0 .. 0.3) only for a
  kind that has one; decays end at 0 (``final_lr_fraction = 0``);
* fidelity stages as in a campaign (:func:`budget_matched_search`): each trial is evaluated
  stage by stage on that stage's seeds, reports the stage's mean fitness at step = stage index,
  and stops when the :class:`~optuna.pruners.MedianPruner` says so; every (trial, seed) run
  counts as one paid evaluation, whatever its stage;
* ``batch`` trials are asked at a time (TPE with ``constant_liar``) and their stages are handed
  to the evaluator together, so a parallel evaluator runs them side by side;
* the study lives in an SQLite file: a killed search resumes where it stopped (trials left
  RUNNING are failed and their parameters re-asked; completed trials and their paid counts,
  kept in the trials' user attributes, are kept).
"""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from evoopt.fitness.protocol import EvaluateFn, RunnerEvaluate, check_results
from evoopt.fitness.runner import WORST_FITNESS, FitnessRunner, make_runner
from evoopt.fitness.task import TaskSpec
from evoopt.genome import Genome, seed_genome
from evoopt.genome.primitives import MAX_TERMS, primitive
from evoopt.genome.sampling import random_genome
from evoopt.stats import mean_std

STUDY_NAME = "evoopt-budget-matched-adamw"
SCHEDULE_KINDS = ("constant", "cosine", "warmup_cosine", "linear_decay")
NAME = "optuna-adamw"
KEY_PREFIX = "optuna:trial-"
for _kind in SCHEDULE_KINDS:  # fail at import if the registry loses one of them
    primitive("schedule", _kind)


def _has(kind: str, hparam: str) -> bool:
    return any(h.name == hparam for h in primitive("schedule", kind).hparams)


def adamw_genome(params: dict[str, Any]) -> Genome:
    """The AdamW genome (genomes/adamw.toml) at a point of :func:`adamw_search_space`."""
    d = seed_genome("adamw").to_dict()
    kind = params["schedule"]
    schedule: dict[str, Any] = {"kind": kind}
    if _has(kind, "warmup_fraction"):
        schedule["warmup_fraction"] = params["warmup_fraction"]
    if _has(kind, "final_lr_fraction"):
        schedule["final_lr_fraction"] = 0.0
    d.update(name=NAME, description="AdamW tuned by a budget-matched Optuna search",
             lr=params["lr"], schedule=schedule)
    d["momentum"] = {**d["momentum"], "beta": params["beta1"]}
    d["second_moment"] = {**d["second_moment"], "beta": 1.0 - params["one_minus_beta2"]}
    d["weight_decay"] = {"kind": "decoupled", "value": params["weight_decay"]}
    return Genome.from_dict(d, source=f"{NAME} trial")


def adamw_search_space(trial: optuna.Trial) -> Genome:
    """Suggest a point (see the module docstring) and return its genome."""
    params: dict[str, Any] = {
        "lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True),
        "beta1": trial.suggest_float("beta1", 0.8, 0.99),
        "one_minus_beta2": trial.suggest_float("one_minus_beta2", 1e-4, 0.1, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-5, 0.3, log=True),
        "schedule": trial.suggest_categorical("schedule", SCHEDULE_KINDS),
    }
    if _has(params["schedule"], "warmup_fraction"):
        params["warmup_fraction"] = trial.suggest_float("warmup_fraction", 0.0, 0.3)
    return adamw_genome(params)


class TrialChoices:
    """The genome space's named choices (:class:`evoopt.genome.sampling.Choices`) made by an
    Optuna trial: a define-by-run conditional space of structure and hyperparameters, the same
    space :func:`~evoopt.genome.sampling.random_genome` samples (flags become two-way
    categories, so TPE does not see random search's prior probabilities)."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def integer(self, name: str, low: int, high: int) -> int:
        return self.trial.suggest_int(name, low, high)

    def category(self, name: str, options: Sequence[str]) -> str:
        return str(self.trial.suggest_categorical(name, list(options)))

    def flag(self, name: str, p: float) -> bool:
        return bool(self.trial.suggest_categorical(name, [False, True]))

    def uniform(self, name: str, low: float, high: float) -> float:
        return self.trial.suggest_float(name, low, high)


def genome_space(max_terms: int = MAX_TERMS) -> Callable[[optuna.Trial], Genome]:
    """TPE over the whole genome space (structure and hyperparameters) of random search."""
    def space(trial: optuna.Trial) -> Genome:
        return random_genome(TrialChoices(trial), max_terms)
    return space


def genome_search_space(genome: Genome) -> tuple[Callable[[optuna.Trial], Genome],
                                                   dict[str, float]]:
    """TPE over ``genome``'s own hyperparameters (:meth:`Genome.tunable`), its structure fixed.

    Each is searched on its registry scale over its registry search range (widened to hold the
    current value): ``log`` → log-uniform, ``log1m`` (decay rates) → ``1 − x`` log-uniform,
    ``linear`` → uniform; a negative weight keeps its sign. Returns the space and the genome's
    own point in it (to start the study at the incumbent).
    """
    dims = []
    for path, spec, value in genome.tunable():
        lo, hi = spec.search or (spec.low, spec.high)
        sign = -1.0 if value < 0 else 1.0
        if spec.scale == "log1m":
            a, b, x, log = 1.0 - hi, 1.0 - lo, 1.0 - value, True
        elif spec.scale == "log":
            a, b, x, log = lo, hi, abs(value), True
        else:
            a, b, x, log = lo, hi, value, False
        a, b = min(a, x), max(b, x)
        if log and a <= 0:
            continue  # no log scale through zero: keep the value
        dims.append((path, spec.scale, sign, a, b, log, x))

    def space(trial: optuna.Trial) -> Genome:
        values = {}
        for path, scale, sign, a, b, log, _ in dims:
            x = trial.suggest_float(path, a, b, log=log)
            values[path] = 1.0 - x if scale == "log1m" else sign * x
        return genome.with_values(values)

    return space, {path: x for path, _, _, _, _, _, x in dims}


@dataclass
class SearchResult:
    """The search's outcome; ``best_*`` and ``genome`` are None when no trial reached the last
    stage. ``paid``: (trial, seed) runs paid, over every trial of the study (resumes included)."""

    best_trial: int | None
    best_value: float | None  # mean fitness at the last stage
    best_params: dict[str, Any] | None
    genome: Genome | None
    n_trials: int
    n_pruned: int
    n_failed: int  # failed runs (diverged, ...) and interrupted trials
    paid: int
    budget: int
    stages: list[tuple[str, list[int]]]
    trials: list[dict[str, Any]] = field(repr=False, default_factory=list)
    key_prefix: str = KEY_PREFIX

    @property
    def final_key(self) -> str:
        return f"{self.key_prefix}{self.best_trial}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["genome"] = None if self.genome is None else self.genome.to_dict()
        d["formula"] = None if self.genome is None else self.genome.formula()
        d["stages"] = [[name, list(seeds)] for name, seeds in self.stages]
        return d


def _paid(study: optuna.Study) -> int:
    return sum(int(t.user_attrs.get("paid", 0)) for t in study.get_trials(deepcopy=False))


def _resume(study: optuna.Study) -> None:
    """Fail the trials a killed search left RUNNING and queue their parameters again."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
        if t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})


def budget_matched_search(
    evaluate: EvaluateFn,
    stages: Sequence[tuple[str, Sequence[int]]],
    budget: int,
    storage_path: str | Path,
    seed: int = 0,
    batch: int = 1,
    *,
    space: Callable[[optuna.Trial], Genome] = adamw_search_space,
    study_name: str = STUDY_NAME,
    key_prefix: str = KEY_PREFIX,
    start_at: dict[str, Any] | None = None,
    n_startup_trials: int = 5,
    progress: Callable[[dict[str, Any]], None] | None = None,
    multivariate: bool = False,
    random_trials: int = 10,
) -> SearchResult:
    """Run (or resume) the search until ``budget`` paid evaluations are spent.

    ``stages[k] = (name, seeds)``; stage ``k`` is evaluated with ``evaluate(items, seeds, "val",
    stage=k)``. Item keys are ``optuna:trial-<number>``. Each round asks at most as many trials
    as the remaining budget pays in full (at least one, at most ``batch``), so the budget is
    exceeded, if at all, by less than one trial's cost. The median pruner compares a trial's
    stage mean with the completed trials' at the same stage, after ``n_startup_trials`` complete
    ones. A trial with a failed run (``WORST_FITNESS``) stops there and completes with
    ``WORST_FITNESS``. The TPE sampler is seeded with ``seed + number of stored trials``, so a
    resumed search does not repeat the draws of the first session. ``multivariate``: TPE's
    joint model with grouped conditional parameters (for :func:`genome_space`);
    ``random_trials``: trials TPE samples at random before it models.
    """
    if budget < 0 or batch < 1:
        raise ValueError(f"budget must be ≥ 0 and batch ≥ 1, got {budget}, {batch}")
    stage_list = [(str(name), [int(s) for s in seeds]) for name, seeds in stages]
    if not stage_list or any(not seeds for _, seeds in stage_list):
        raise ValueError(f"the search needs at least one stage, each with seeds: {stage_list}")
    full_cost = sum(len(seeds) for _, seeds in stage_list)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{Path(storage_path)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(study_name=study_name, storage=storage,
                                    direction="maximize", load_if_exists=True)
        if start_at is not None and not study.trials:  # a new study starts at the incumbent
            study.enqueue_trial(start_at)
        study.sampler = optuna.samplers.TPESampler(
            seed=seed + len(study.trials), constant_liar=True, n_startup_trials=random_trials,
            multivariate=multivariate, group=multivariate)
    study.pruner = optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials,
                                               n_warmup_steps=0)
    _resume(study)
    last = len(stage_list) - 1
    while (paid := _paid(study)) < budget:
        n = max(1, min(batch, (budget - paid) // full_cost))
        alive: dict[int, tuple[optuna.Trial, Genome]] = {}
        for _ in range(n):
            trial = study.ask()
            try:
                genome = space(trial)
            except ValueError as e:  # a point the genome rejects: a failed trial, no run
                trial.set_user_attr("message", str(e))
                study.tell(trial, state=TrialState.FAIL)
                continue
            trial.set_user_attr("genome", genome.to_dict())
            trial.set_user_attr("paid", 0)
            trial.set_user_attr("stage_reached", -1)
            trial.set_user_attr("stage_values", {})
            alive[trial.number] = (trial, genome)
        for k, (name, seeds) in enumerate(stage_list):
            if not alive:
                break
            items = [(f"{key_prefix}{num}", g) for num, (_, g) in alive.items()]
            results = evaluate(items, seeds, "val", stage=k)
            check_results(items, seeds, results)
            for num, (trial, _) in list(alive.items()):
                scores = [float(x) for x in results[f"{key_prefix}{num}"]]
                # per-seed numbers are the only failure signal an EvaluateFn gives, and an exact
                # one: failures are WORST_FITNESS, every ok fitness is above it (ok_floor)
                failed = any(x <= WORST_FITNESS for x in scores)
                value = WORST_FITNESS if failed else float(mean_std(scores)[0])
                attrs = trial.user_attrs
                trial.set_user_attr("paid", int(attrs.get("paid", 0)) + len(seeds))
                trial.set_user_attr("stage_reached", k)
                trial.set_user_attr("stage_values", {**attrs.get("stage_values", {}),
                                                     name: value})
                trial.set_user_attr(f"per_seed_{k}", scores)
                trial.report(value, step=k)
                if failed:
                    trial.set_user_attr("failed", True)
                    study.tell(trial, WORST_FITNESS)
                elif k == last:
                    study.tell(trial, value)
                elif trial.should_prune():
                    study.tell(trial, state=TrialState.PRUNED)
                else:
                    continue
                del alive[num]
                if progress is not None:
                    progress({"trial": num, "stage": k, "value": value, "paid": _paid(study),
                              "budget": budget})
    return _result(study, stage_list, budget, key_prefix)


def _result(study: optuna.Study, stages: list[tuple[str, list[int]]], budget: int,
            key_prefix: str = KEY_PREFIX) -> SearchResult:
    last = len(stages) - 1
    trials = study.get_trials(deepcopy=False)
    reached = [t for t in trials if t.state == TrialState.COMPLETE and not t.user_attrs.get(
        "failed") and t.user_attrs.get("stage_reached") == last and t.value is not None]
    best = min(reached, key=lambda t: (-t.value, t.number)) if reached else None
    rows = [{"number": t.number, "state": t.state.name, "value": t.value,
             "params": dict(t.params), "paid": int(t.user_attrs.get("paid", 0)),
             "stage_reached": t.user_attrs.get("stage_reached"),
             "stage_values": t.user_attrs.get("stage_values", {}),
             "retry_of": t.user_attrs.get("retry_of"), "genome": t.user_attrs.get("genome"),
             "failed": bool(t.user_attrs.get("failed"))} for t in trials]
    return SearchResult(
        best_trial=None if best is None else best.number,
        best_value=None if best is None else float(best.value),
        best_params=None if best is None else dict(best.params),
        genome=None if best is None else Genome.from_dict(best.user_attrs["genome"],
                                                          source=f"trial {best.number}"),
        n_trials=len(trials),
        n_pruned=sum(t.state == TrialState.PRUNED for t in trials),
        n_failed=sum(t.state == TrialState.FAIL or bool(t.user_attrs.get("failed"))
                     for t in trials),
        paid=_paid(study), budget=budget, stages=stages, trials=rows, key_prefix=key_prefix)


SCREEN_FRACTION = 0.4


def cli_stages(task: TaskSpec, sweep_seeds: Sequence[int]) -> list[tuple[str, TaskSpec,
                                                                           list[int]]]:
    """The CLI's stages: a screen at 40 % of the task's steps on the first sweep seed (as the
    quickstart campaign screens at 60 of 150 steps), then the task itself on every sweep seed."""
    screen = task.with_overrides(steps=max(1, math.ceil(SCREEN_FRACTION * task.steps)))
    return [("screen", screen, [int(sweep_seeds[0])]),
            ("full", task, [int(s) for s in sweep_seeds])]


def cli_search(task: TaskSpec, runner: FitnessRunner, evaluate: RunnerEvaluate,
               sweep_seeds: Sequence[int], final_seeds: Sequence[int], split: str, *,
               budget: int, storage_path: str | Path | None = None, seed: int = 0,
               ) -> tuple[SearchResult, list[float]]:
    """``evoopt baselines --search optuna``: the search on :func:`cli_stages` in this process
    (``runner`` runs the full task; its runs are added to ``evaluate.runs``), then the best
    trial re-run on the fresh ``final_seeds`` on ``split``. Without ``storage_path`` the study
    lives in a temporary file (no resume)."""
    stages = cli_stages(task, sweep_seeds)
    runners = [make_runner(stages[0][1], data_dir=getattr(runner, "data_dir", None)), runner]
    staged = RunnerEvaluate(runners, progress=evaluate.progress)
    staged.runs = evaluate.runs
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(storage_path) if storage_path is not None else Path(tmp) / "optuna.sqlite"
        result = budget_matched_search(staged, [(n, s) for n, _, s in stages], budget, path,
                                       seed=seed, batch=1)
    if result.genome is None:
        return result, []
    scores = staged([(result.final_key, result.genome)], final_seeds, split)[result.final_key]
    return result, scores


__all__ = ["KEY_PREFIX", "NAME", "SCHEDULE_KINDS", "STUDY_NAME", "SearchResult",
           "TrialChoices", "adamw_genome", "adamw_search_space", "budget_matched_search",
           "genome_space", "cli_search",
           "cli_stages"]
