"""Search efficiency: the engine against random search and TPE, over one genome space, by compute.

    python benchmarks/search_efficiency.py --data-dir ../shared/data/cifar10-mini \
        [--methods engine random tpe-genome tpe-adamw] [--engines NAME ...] \
        [--budgets 180 60] [--search-seeds 5] [--fresh-seeds 5] [--stage-seeds 0 1 2] \
        [--task cifar10-tiny] [--override FIELD=VALUE ...] [--target-cache FILE] \
        [--no-ray | --workers 2] [--json OUT]

Every method gets the same task, the same evaluator (one instance: a Ray pool of ``--workers``
1-thread actors, or the serial evaluator with ``--no-ray``), the same genome space and the same
**compute** budget. Compute is training steps actually run (a screen at half the steps costs
half a run; a run stopped by a guard costs the steps it ran) and is printed beside
worker-seconds (the runs' own wall time, summed). Budgets are given in *full runs*: one run of
the task at its full steps on one seed (``--budgets 180 60`` = 180 x steps and 60 x steps).

Methods (``--methods``; each on ``--search-seeds`` search seeds):

* ``engine``: a real :class:`~evoopt.campaign.orchestrator.CampaignRunner` campaign per
  configuration in ``--engines`` (:data:`ENGINES`; ``campaign.seed`` = the search seed,
  ``campaign.max_train_steps`` = the largest budget), the finish as small as the config allows
  and not counted;
* ``random``: :func:`~evoopt.genome.sampling.random_genome`, deduplicated by canonical hash (a
  duplicate is drawn again, never paid), each candidate on every stage seed; ``random-sh``: the
  same draws with the engine's screen (one seed, half the steps) and the best third promoted;
* ``tpe-genome``: Optuna TPE (multivariate, grouped) over the same genome space, define-by-run
  (:func:`evoopt.fitness.optuna_search.genome_space`: the very choices random search makes);
* ``tpe-adamw``: Optuna TPE over AdamW's hyperparameters and schedule (the budget-matched
  baseline's space, :func:`evoopt.fitness.optuna_search.adamw_search_space`).

A candidate's score is its mean validation fitness over ``--stage-seeds`` at full fidelity (any
failed seed: the worst). Each method's *selected* candidate at a budget is its best completed
candidate within that compute (rows past it ignored; a method's behaviour does not depend on the
budget, so one run at the largest budget gives every smaller one as a prefix).

Two measures, at every budget:

1. **compute to target**: steps until the first completed candidate at or above the target, the
   published evolved optimizer (``genomes/reference/evolved-marfinetz-2025.toml``) tuned by the
   fair protocol (:func:`evoopt.fitness.baselines.tune_baseline`) on the same task and stage
   seeds; the four tuned classics are reported beside it, and should one of them reach it, the
   target is raised to the best classic + ``--margin``, so no tuned classic reaches it. Medians
   over search seeds with percentile-bootstrap 95 % intervals; "not reached" counts as the
   budget (a bound, said so);
2. **best at equal compute**: each method's selected candidate re-measured on ``--fresh-seeds``
   fresh seeds (1000, 1001, ...) that no search saw; the engine against each other method paired
   by search seed and fresh seed: per search seed the mean paired difference, then the mean and
   SE over search seeds (the unit of replication of a search).

The target and the classics' tuning are cached in ``--target-cache`` (keyed by task and seeds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evoopt.campaign.common import aggregate_fitness  # noqa: E402
from evoopt.campaign.config import CampaignConfig, parse_config  # noqa: E402
from evoopt.campaign.orchestrator import CampaignRunner  # noqa: E402
from evoopt.campaign.store import CampaignStore  # noqa: E402
from evoopt.evaluator import EvalRequest, Evaluator, RayEvaluator, SerialEvaluator  # noqa: E402
from evoopt.fitness import WORST_FITNESS, load_task  # noqa: E402
from evoopt.fitness.baselines import FRESH_SEED_OFFSET, get_baseline, tune_baseline  # noqa: E402
from evoopt.fitness.optuna_search import (  # noqa: E402
    adamw_search_space,
    budget_matched_search,
    genome_space,
)
from evoopt.genome import Genome  # noqa: E402
from evoopt.genome.sampling import random_genome  # noqa: E402

FULL = "full"  # the stage every method is scored at: the task on the stage seeds
SCREEN = "screen"
TARGET = "evolved-marfinetz-2025"
CLASSICS = ("adam", "adamw-cosine", "lion-cosine", "nesterov-cosine")
EPS = 1e-9

DEFAULT_TASK = "cifar10-tiny"
DEFAULT_OVERRIDES: dict[str, Any] = {"train_size": 2000, "val_size": 1000, "steps": 80,
                                     "batch_size": 128, "width": 8, "threads": 1}
DEFAULT_BUDGETS = [180, 60]
METHODS = ("engine", "random", "random-sh", "tpe-genome", "tpe-adamw")
DEFAULT_METHODS = ["engine", "random", "tpe-genome", "tpe-adamw"]
SCREEN_STEPS = 0.5  # the two-stage configurations screen at this fraction of the steps
PROMOTE = "top:0.3333"

# Engine configurations: overrides of BASE_SEARCH. "shipped" is the search as discover-cpu
# shipped it before issue 17, on the benchmark task: its 100-of-150-step
# one-seed screen (2/3 of the steps here) and median hurdle, then the stage seeds.
_SHIPPED_STAGES = [{"name": SCREEN, "seeds": [0], "steps": 2 / 3},
                   {"name": FULL, "hurdle": "median"}]
_SH_STAGES = [{"name": SCREEN, "seeds": [0], "steps": SCREEN_STEPS},
              {"name": FULL, "hurdle": PROMOTE}]
_PRUNING = {"reference": "adam", "margin": 0.05, "after": 0.25, "window": 5}
ENGINES: dict[str, dict[str, Any]] = {
    # the ablation adds one change at a time
    "shipped": {"stages": _SHIPPED_STAGES},
    "sh": {"stages": _SH_STAGES},
    "sh-p16": {"stages": _SH_STAGES, "population": 16},
    "sh-p16-random0": {"stages": _SH_STAGES, "population": 16, "initial_random": 8},
    "sh-p16-random0-adapt": {"stages": _SH_STAGES, "population": 16, "initial_random": 8,
                             "adapt_rates": True},
    "sh-p16-random0-adapt-surrogate": {"stages": _SH_STAGES, "population": 16,
                                       "initial_random": 8, "adapt_rates": True,
                                       "surrogate_pool": 4},
    "sh-p16-random0-adapt-surrogate-noscreen": {"stages": _SH_STAGES, "population": 16,
                                                "initial_random": 8, "adapt_rates": True,
                                                "surrogate_pool": 4, "lr_screen": []},
    "one-stage": {"stages": [{"name": FULL}]},  # the benchmark's engine before issue 17
    # in-run pruning against the seeded Adam's run on the same stage and seed
    "sh-p16-random0-prune": {"stages": _SH_STAGES, "population": 16, "initial_random": 8,
                             "pruning": _PRUNING},
    # the seeds face the promotion hurdle, without pruning (adam too, then)
    "sh-p16-random0-seedhurdle": {
        "stages": [_SH_STAGES[0], {**_SH_STAGES[1], "seeds_exempt": False}],
        "population": 16, "initial_random": 8},
    # ... and the seeds (all but adam, the pruning reference) face the promotion hurdle
    "sh-p16-random0-prune-seedhurdle": {
        "stages": [_SH_STAGES[0], {**_SH_STAGES[1], "seeds_exempt": False}],
        "population": 16, "initial_random": 8, "pruning": _PRUNING},
    # ... and selection on mean - 1 SE over the stage seeds (noise-aware ranking)
    "sh-p16-random0-prune-seedhurdle-lcb": {
        "stages": [_SH_STAGES[0], {**_SH_STAGES[1], "seeds_exempt": False}],
        "population": 16, "initial_random": 8, "pruning": _PRUNING, "confidence": 1.0},
}
DEFAULT_ENGINES = ["shipped"]


def cpu_signature() -> dict[str, Any]:
    """The CPU the numbers come from: float32 sums (hence every fitness, the target and the
    tuned lrs) differ between CPU kinds (AVX2 / AVX-512), so runs pool only on one kind."""
    model, flags = "", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = sorted(f for f in value.split() if f.startswith("avx"))
    except OSError:
        pass
    return {"model": model, "avx": flags, "cpus": os.cpu_count()}


# -- one evaluator for everything ----------------------------------------------------------------
class Evaluate:
    """(key, genome) x seeds through the shared evaluator, recording every paid row in
    completion order; a genome already run on a seed at a fidelity is not paid again.

    Also the ``EvaluateFn`` (``items, seeds, split, stage``) of the baseline protocol and the
    Optuna searches: ``tasks[stage]`` is the task at that stage (default: the full task)."""

    def __init__(self, evaluator: Evaluator, tasks: Sequence[dict[str, Any]],
                 stage_names: Sequence[str] = (FULL,)) -> None:
        self.evaluator, self.tasks, self.stage_names = evaluator, list(tasks), list(stage_names)
        self.rows: list[dict[str, Any]] = []
        self.cache: dict[tuple[str, int, int, str], float] = {}
        self._n = 0

    def run(self, items: Sequence[tuple[str, Genome]], seeds: Sequence[int], split: str = "val",
            stage: int = -1) -> dict[str, list[float]]:
        task = self.tasks[stage]
        pending: dict[str, tuple[str, Genome, int]] = {}
        asked: set[tuple[str, int, int, str]] = set()
        for key, genome in items:
            for seed in seeds:
                ck = (genome.hash, stage % len(self.tasks), int(seed), split)
                if ck in self.cache or ck in asked:
                    continue
                asked.add(ck)
                self._n += 1
                rk = f"{self._n}/{key}/{seed}"
                pending[rk] = (key, genome, int(seed))
                self.evaluator.submit(EvalRequest(rk, genome, task, int(seed), split))
        for o in self.evaluator.results():
            key, genome, seed = pending[o.key]
            r = o.result
            fitness = float(r.get("fitness", WORST_FITNESS))
            self.cache[(genome.hash, stage % len(self.tasks), seed, split)] = fitness
            self.rows.append({"key": genome.hash, "genome": genome.to_dict(),
                              "stage": self.stage_names[stage], "seed": seed, "split": split,
                              "fitness": fitness, "status": r.get("status", "error"),
                              "steps": int(r.get("steps", 0) or 0),
                              "wall_s": float(r.get("wall_time_s", 0.0) or 0.0)})
        return {key: [self.cache[(g.hash, stage % len(self.tasks), int(s), split)]
                      for s in seeds] for key, g in items}

    def __call__(self, items: list[tuple[str, Genome]], seeds: Sequence[int], split: str,
                 stage: int = -1) -> dict[str, list[float]]:
        return self.run(items, seeds, split, stage)


# -- target ---------------------------------------------------------------------------------------
def tune_targets(evaluator: Evaluator, task: dict[str, Any], stage_seeds: list[int],
                 margin: float) -> dict[str, Any]:
    """The published evolved optimizer and the four classics, each tuned by the fair protocol on
    the stage seeds (val); the target is the evolved optimizer's tuned stage-seed score, raised
    to the best classic + ``margin`` if a classic reaches it."""
    evaluate = Evaluate(evaluator, [task])
    fresh = [FRESH_SEED_OFFSET + i for i in range(len(stage_seeds))]
    rows = {}
    for name in (TARGET, *CLASSICS):
        tuned = tune_baseline(get_baseline(name), evaluate, stage_seeds, fresh, ("val",))
        per_seed = next(r["per_seed"] for r in tuned.sweep if r["point"] == tuned.best)
        rows[name] = {"best": tuned.best, "at_grid_edge": tuned.at_grid_edge,
                      "score": tuned.sweep_fitness, "per_seed": per_seed,
                      "fresh_mean": tuned.mean_std("val")[0], "genome": tuned.genome.to_dict()}
    best_classic = max(rows[c]["score"] for c in CLASSICS)
    target = rows[TARGET]["score"]
    raised = best_classic + margin > target
    return {"rows": rows, "target": max(target, best_classic + margin) if raised else target,
            "raised": raised, "runs": len(evaluate.rows),
            "steps": sum(r["steps"] for r in evaluate.rows)}


# -- the methods ------------------------------------------------------------------------------
@dataclasses.dataclass
class Context:
    evaluator: Evaluator
    task: Any  # TaskSpec at full fidelity
    task_name: str
    overrides: dict[str, Any]
    stage_seeds: list[int]
    budget_steps: int
    data_dir: str | None
    tmp: Path
    use_ray: bool

    @property
    def full_cost(self) -> int:
        return self.task.steps * len(self.stage_seeds)

    def screen_task(self) -> dict[str, Any]:
        return self.task.with_overrides(
            steps=max(1, round(SCREEN_STEPS * self.task.steps))).to_dict()


#: discover-cpu's search settings as shipped before issue 17: the base every engine
#: configuration overrides (pinned here, so a change to the shipped campaign does not change
#: what an earlier measurement meant).
BASE_SEARCH: dict[str, dict[str, Any]] = {
    "campaign": {"population": 32, "seeds": ["adam", "adamw", "adan", "lion", "nesterov",
                                             "rmsprop", "sgd-momentum"]},
    "selection": {"method": "regularized", "tournament_size": 5, "elitism": 0},
    "variation": {"crossover_rate": 0.2, "lr_screen": [0.3333, 3.0], "max_terms": 4},
}


def engine_config(ctx: Context, name: str, search_seed: int) -> CampaignConfig:
    """:data:`BASE_SEARCH` with the overrides of ``ENGINES[name]``, the compute budget, and
    the smallest finish the config allows."""
    camp, sel, var = BASE_SEARCH["campaign"], BASE_SEARCH["selection"], BASE_SEARCH["variation"]
    spec = ENGINES[name]
    stages = []
    for s in spec["stages"]:
        stage: dict[str, Any] = {"name": s["name"], "seeds": s.get("seeds", ctx.stage_seeds)}
        if "steps" in s:
            stage["overrides"] = {"steps": max(1, round(s["steps"] * ctx.task.steps))}
        for key in ("hurdle", "seeds_exempt"):
            if key in s:
                stage[key] = s[key]
        stages.append(stage)
    variation = {**{k: var[k] for k in ("crossover_rate", "max_terms", "mutation_rates",
                                        "lr_screen") if k in var},
                 **{k: spec[k] for k in ("initial_random", "adapt_rates", "lr_screen",
                                         "surrogate_pool") if k in spec}}
    data = {
        "campaign": {"name": f"se-{name}-{search_seed}", "seed": search_seed,
                     "population": spec.get("population", camp["population"]),
                     "generations": 10_000,
                     "max_train_steps": ctx.budget_steps, "seeds": camp["seeds"]},
        "selection": {**{k: sel[k] for k in ("method", "tournament_size", "elitism") if k in sel},
                      **({"confidence": spec["confidence"]} if "confidence" in spec else {})},
        "variation": variation,
        "fitness": {"task": ctx.task_name, "split": "val", "overrides": ctx.overrides},
        "stages": stages,
        "pruning": spec.get("pruning", {"reference": "none"}),
        "final": {"top_k": 1, "seeds": [max(ctx.stage_seeds) + 500], "test_split": False,
                  "compare": [], "baselines": [], "budget_matched": "none"},
        "ray": {"enabled": ctx.use_ray},
    }
    return parse_config(data, f"search_efficiency engine {name}")


def run_engine(ctx: Context, name: str, search_seed: int) -> dict[str, Any]:
    config = engine_config(ctx, name, search_seed)
    out = ctx.tmp / config.name
    t = time.perf_counter()
    CampaignRunner(config, out, data_dir=ctx.data_dir, evaluator=ctx.evaluator).run()
    wall = time.perf_counter() - t
    with CampaignStore(out, readonly=True) as store:
        genomes = {r["hash"]: r["genome"] for r in store.individuals()}
        rows = [{"key": e["hash"], "genome": genomes.get(e["hash"]), "stage": e["stage"],
                 "seed": e["seed"], "fitness": e["fitness"], "status": e["status"],
                 "steps": int(e["steps"] or 0), "wall_s": float(e["wall_time_s"] or 0.0)}
                for e in store.evaluations() if e["stage"] in (SCREEN, FULL)]
        generations = len(store.generations())
    return {"rows": rows, "wall_s": wall, "generations": generations}


def _workers_batch(ctx: Context) -> int:
    """Candidates at a time that fill the workers evenly (2 workers, 3 seeds: 2)."""
    workers = max(1, ctx.evaluator.num_workers)
    return max(1, math.lcm(workers, len(ctx.stage_seeds)) // len(ctx.stage_seeds))


def _spent(evaluate: Evaluate) -> int:
    return sum(r["steps"] for r in evaluate.rows)


def run_random(ctx: Context, search_seed: int, max_terms: int) -> dict[str, Any]:
    evaluate = Evaluate(ctx.evaluator, [ctx.task.to_dict()])
    rng = np.random.default_rng(search_seed)
    seen: set[str] = set()
    duplicates = 0
    t = time.perf_counter()
    while _spent(evaluate) < ctx.budget_steps:
        batch = []
        while len(batch) < _workers_batch(ctx):
            g = random_genome(rng, max_terms).canonical()
            if g.hash in seen:
                duplicates += 1
                continue
            seen.add(g.hash)
            batch.append((g.hash, g))
        evaluate.run(batch, ctx.stage_seeds)
    return {"rows": evaluate.rows, "wall_s": time.perf_counter() - t, "duplicates": duplicates}


def run_random_sh(ctx: Context, search_seed: int, max_terms: int, rung: int = 12
                  ) -> dict[str, Any]:
    """Random search with the engine's successive halving: ``rung`` fresh random genomes
    screened on one seed at the screen steps, the best third (by rank) run on the stage seeds."""
    evaluate = Evaluate(ctx.evaluator, [ctx.screen_task(), ctx.task.to_dict()], (SCREEN, FULL))
    rng = np.random.default_rng(search_seed)
    seen: set[str] = set()
    t = time.perf_counter()
    while _spent(evaluate) < ctx.budget_steps:
        batch = []
        while len(batch) < rung:
            g = random_genome(rng, max_terms).canonical()
            if g.hash not in seen:
                seen.add(g.hash)
                batch.append((g.hash, g))
        screened = evaluate.run(batch, [ctx.stage_seeds[0]], stage=0)
        ranked = sorted(batch, key=lambda kg: -screened[kg[0]][0])
        evaluate.run(ranked[:max(1, math.ceil(len(batch) / 3))], ctx.stage_seeds, stage=1)
    return {"rows": evaluate.rows, "wall_s": time.perf_counter() - t}


def run_tpe(ctx: Context, search_seed: int, space: Callable, multivariate: bool
            ) -> dict[str, Any]:
    evaluate = Evaluate(ctx.evaluator, [ctx.task.to_dict()])
    t = time.perf_counter()
    runs = ctx.budget_steps // ctx.task.steps  # paid runs: every trial costs the same here
    result = budget_matched_search(
        evaluate, [(FULL, ctx.stage_seeds)], runs, ctx.tmp / f"tpe-{search_seed}-{id(space)}.db",
        seed=search_seed, batch=_workers_batch(ctx), space=space, multivariate=multivariate,
        study_name="search-efficiency", key_prefix="trial-")
    return {"rows": evaluate.rows, "wall_s": time.perf_counter() - t,
            "trials": result.n_trials, "failed": result.n_failed}


# -- scoring ---------------------------------------------------------------------------------------
def trace(rows: list[dict[str, Any]], stage_seeds: list[int], budget_steps: int,
          target: float) -> dict[str, Any]:
    """Walk the rows in completion order up to ``budget_steps`` of compute: the compute at the
    first completed candidate (all stage seeds at full fidelity) at or above ``target``, the
    selected (best completed) candidate, and the compute and worker-seconds spent."""
    got: dict[str, dict[int, dict[str, Any]]] = {}
    completed: set[str] = set()
    steps = wall = 0.0
    first, best, selected, genome, complete = math.inf, -math.inf, None, None, 0
    for r in rows:
        if steps + r["steps"] > budget_steps:
            break
        steps += r["steps"]
        wall += r["wall_s"]
        if r["stage"] != FULL:
            continue
        seen = got.setdefault(r["key"], {})
        seen[r["seed"]] = r
        if r["key"] not in completed and all(s in seen for s in stage_seeds):
            completed.add(r["key"])
            complete += 1
            score = aggregate_fitness([seen[s] for s in stage_seeds])
            if score > best:
                best, selected, genome = score, r["key"], r["genome"]
            if score >= target - EPS and first == math.inf:
                first = steps
    return {"steps_to_target": first, "selected": selected, "genome": genome,
            "selected_score": best, "steps": steps, "worker_s": wall, "candidates": complete}


def bootstrap_median(values: Sequence[float], rng: np.random.Generator, n: int = 10_000
                     ) -> tuple[float, float, float]:
    """Median and percentile-bootstrap 95 % interval (resampling the search seeds)."""
    x = np.asarray(values, dtype=float)
    meds = np.median(rng.choice(x, size=(n, len(x)), replace=True), axis=1)
    return float(np.median(x)), float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))


def bootstrap_ratio(a: Sequence[float], b: Sequence[float], rng: np.random.Generator,
                    n: int = 10_000) -> tuple[float, float, float]:
    """Ratio of medians a/b and its percentile-bootstrap 95 % interval (each resampled)."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    ma = np.median(rng.choice(x, size=(n, len(x))), axis=1)
    mb = np.median(rng.choice(y, size=(n, len(y))), axis=1)
    r = ma / mb
    return (float(np.median(x) / np.median(y)), float(np.percentile(r, 2.5)),
            float(np.percentile(r, 97.5)))


def paired_by_search_seed(a: dict[int, list[float]], b: dict[int, list[float]]
                          ) -> dict[str, Any]:
    """a − b: per search seed the mean over fresh seeds of the paired differences; then the
    mean and its SE over search seeds; ``better``/``worse`` beyond 2 SE."""
    diffs = [statistics.fmean(x - y for x, y in zip(a[s], b[s], strict=True)) for s in a]
    mean = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
    verdict = ("better" if mean > 2 * se else "worse" if mean < -2 * se
               else "indistinguishable")
    return {"diff": mean, "se": se, "n": len(diffs), "per_search_seed": diffs,
            "verdict": verdict}


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _fmt_steps(x: float, budget: float) -> str:
    """Steps in thousands; ``x`` at or past ``budget`` means not reached within it."""
    return f">{budget / 1000:.1f}k" if x >= budget else f"{x / 1000:.1f}k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("EVOOPT_DATA_DIR"))
    parser.add_argument("--task", default=DEFAULT_TASK)
    parser.add_argument("--override", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--no-default-overrides", action="store_true")
    parser.add_argument("--stage-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", type=int, nargs="+", default=DEFAULT_BUDGETS,
                        help="compute budgets in full runs (task steps x one seed)")
    parser.add_argument("--search-seeds", type=int, default=5)
    parser.add_argument("--first-search-seed", type=int, default=0)
    parser.add_argument("--fresh-seeds", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=METHODS)
    parser.add_argument("--engines", nargs="+", default=DEFAULT_ENGINES, choices=list(ENGINES))
    parser.add_argument("--margin", type=float, default=0.01,
                        help="if a tuned classic reaches the evolved optimizer, target = best "
                             "classic + this")
    parser.add_argument("--target-cache", type=Path, default=None)
    parser.add_argument("--ray", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, metavar="OUT")
    parser.add_argument("--summarize", type=Path, nargs="+", default=None, metavar="JSON",
                        help="print the summary of (finished or killed) runs' JSON and exit; "
                             "several runs of one task, target and search seeds on one CPU "
                             "are merged, method by method")
    args = parser.parse_args()
    if args.summarize:
        summarize(merge_runs([json.loads(p.read_text()) for p in args.summarize]))
        return
    t_all = time.perf_counter()

    overrides = ({} if args.no_default_overrides or args.task != DEFAULT_TASK
                 else dict(DEFAULT_OVERRIDES))
    for item in args.override:
        k, _, v = item.partition("=")
        try:
            overrides[k] = json.loads(v)
        except json.JSONDecodeError:
            overrides[k] = v
    stage_seeds = list(args.stage_seeds)
    task = load_task(args.task).with_overrides(**overrides)
    budgets = sorted(set(args.budgets), reverse=True)
    big = budgets[0] * task.steps
    evaluator: Evaluator = (RayEvaluator(num_workers=args.workers or None, data_dir=args.data_dir)
                            if args.ray else SerialEvaluator(data_dir=args.data_dir))
    kind = f"RayEvaluator ({evaluator.num_workers} workers)" if args.ray else "SerialEvaluator"
    search_seeds = list(range(args.first_search_seed,
                              args.first_search_seed + args.search_seeds))
    fresh = [FRESH_SEED_OFFSET + i for i in range(args.fresh_seeds)]
    print("settings:")
    print(f"  task {task.name} {overrides or ''}: {task.steps} steps a run, stage seeds "
          f"{stage_seeds}; budgets {budgets} full runs = "
          f"{', '.join(f'{b * task.steps} steps' for b in budgets)}; search seeds "
          f"{search_seeds}; fresh seeds {fresh}; {kind}")
    methods = [f"engine:{e}" for e in args.engines] if "engine" in args.methods else []
    methods += [m for m in args.methods if m != "engine"]
    print(f"  methods: {', '.join(methods)}", flush=True)

    key = json.dumps({"task": task.to_dict(), "stage_seeds": stage_seeds,
                      "margin": args.margin}, sort_keys=True)
    cache = (json.loads(args.target_cache.read_text())
             if args.target_cache and args.target_cache.exists() else {})
    t = time.perf_counter()
    if key in cache:
        targets = cache[key]
    else:
        targets = tune_targets(evaluator, task.to_dict(), stage_seeds, args.margin)
        if args.target_cache:
            cache[key] = targets
            args.target_cache.write_text(json.dumps(_finite(cache), indent=1) + "\n")
    target = targets["target"]
    for name, row in targets["rows"].items():
        edge = [k for k, e in row["at_grid_edge"].items() if e]
        print(f"  tuned {name:<24} {row['score']:.4f} on the stage seeds "
              f"(fresh {row['fresh_mean']:.4f}; "
              f"{', '.join(f'{k} {v:.3g}' for k, v in row['best'].items())}"
              f"{'; AT GRID EDGE ' + ','.join(edge) if edge else ''})")
    raised = " (raised: a tuned classic reached the evolved optimizer)"
    print(f"target {target:.4f}{raised if targets['raised'] else ''}"
          f"  [{targets['runs']} runs, not counted, {time.perf_counter() - t:.0f} s]", flush=True)

    runs: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in methods}
    max_terms = BASE_SEARCH["variation"]["max_terms"]
    remeasure = Evaluate(evaluator, [task.to_dict()])
    doc = {"argv": sys.argv[1:], "task": task.to_dict(), "overrides": overrides,
           "stage_seeds": stage_seeds, "budgets": budgets, "search_seeds": [],
           "fresh_seeds": fresh, "methods": methods, "evaluator": kind, "cpu": cpu_signature(),
           "targets": targets,
           "runs": runs}
    with tempfile.TemporaryDirectory(prefix="search-efficiency-") as tmp:
        ctx = Context(evaluator, task, args.task, overrides, stage_seeds, big, args.data_dir,
                      Path(tmp), args.ray)
        for s in search_seeds:
            for m in methods:
                res = run_method(ctx, m, s, max_terms)
                res["traces"] = {}
                for b in budgets:
                    tr = trace(res.pop("rows") if b == budgets[-1] else res["rows"],
                               stage_seeds, b * task.steps, target)
                    # the selected candidate re-measured on the fresh seeds (cached: one
                    # selected at several budgets is run once)
                    g = None if tr["genome"] is None else Genome.from_dict(tr["genome"])
                    tr["fresh"] = ([WORST_FITNESS] * len(fresh) if g is None
                                   else remeasure.run([(g.hash, g)], fresh)[g.hash])
                    res["traces"][str(b)] = tr
                runs[m][s] = res
                tb = res["traces"][str(budgets[0])]
                print(f"  seed {s} {m:<40} {res['wall_s']:5.0f} s, {tb['steps'] / 1000:.1f}k "
                      f"steps, {tb['candidates']} candidates, selected "
                      f"{tb['selected_score']:.4f} (fresh {statistics.fmean(tb['fresh']):.4f}), "
                      f"to target {_fmt_steps(tb['steps_to_target'], big)}", flush=True)
            doc["search_seeds"].append(s)
            if args.json:  # after every search seed: a killed run keeps what it measured
                _write(args.json, doc)
    evaluator.close()
    doc["summary"] = summarize(doc)
    doc["wall_time_s"] = time.perf_counter() - t_all
    print(f"\ntotal wall time {doc['wall_time_s']:.0f} s (re-measure {len(remeasure.rows)} runs)")
    if args.json:
        _write(args.json, doc)
        print(f"wrote {args.json}")


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(doc), indent=1, default=str) + "\n")


def run_method(ctx: Context, method: str, search_seed: int, max_terms: int) -> dict[str, Any]:
    if method.startswith("engine:"):
        return run_engine(ctx, method.split(":", 1)[1], search_seed)
    if method == "random":
        return run_random(ctx, search_seed, max_terms)
    if method == "random-sh":
        return run_random_sh(ctx, search_seed, max_terms)
    if method == "tpe-genome":
        return run_tpe(ctx, search_seed, genome_space(max_terms), multivariate=True)
    return run_tpe(ctx, search_seed, adamw_search_space, multivariate=False)


def merge_runs(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """One document of several runs' methods: they must share the task, the target, the
    budgets, the search seeds and the CPU (float32 sums differ between CPU kinds, so runs on
    two kinds do not pool); a method in several is taken from the first."""
    first = docs[0]
    for d in docs[1:]:
        for key in ("task", "targets", "budgets", "search_seeds", "cpu"):
            if d.get(key) != first.get(key):
                raise SystemExit(f"cannot merge: the runs differ in {key!r}")
    merged = {**first, "methods": list(first["methods"]), "runs": dict(first["runs"])}
    for d in docs[1:]:
        for m in d["methods"]:
            if m not in merged["runs"]:
                merged["methods"].append(m)
                merged["runs"][m] = d["runs"][m]
    return merged


def summarize(doc: dict[str, Any]) -> dict[str, Any]:
    """Print and return the two measures at every budget over the search seeds in ``doc``
    (a finished run, or the JSON a killed one left)."""
    steps, target = doc["task"]["steps"], doc["targets"]["target"]
    search_seeds, methods = doc["search_seeds"], doc["methods"]
    runs = {m: {int(s): r for s, r in doc["runs"][m].items()} for m in methods}
    rng = np.random.default_rng(0)
    summary: dict[str, Any] = {}
    for b in doc["budgets"]:
        bs = b * steps
        print(f"\nbudget {b} full runs ({bs / 1000:.1f}k steps), {len(search_seeds)} search "
              f"seeds; target {target:.4f}")
        print(f"  {'method':<40} {'steps to target: median [95% CI]':>33} reached "
              f"{'worker-s':>8} {'selected: search':>16} {'fresh':>6}")
        per_method = {}
        for m in methods:
            trs = [runs[m][s]["traces"][str(b)] for s in search_seeds]
            to = [min(_num(tr["steps_to_target"]), bs) for tr in trs]
            med, lo, hi = bootstrap_median(to, rng)
            reached = sum(_num(tr["steps_to_target"]) <= bs for tr in trs)
            fresh_mean = statistics.fmean(statistics.fmean(tr["fresh"]) for tr in trs)
            sel = statistics.fmean(max(_num(tr["selected_score"], -1.0), -1.0) for tr in trs)
            wall = statistics.fmean(tr["worker_s"] for tr in trs)
            per_method[m] = {"steps_to_target": to, "median": med, "ci": [lo, hi],
                             "reached": reached, "selected_search_mean": sel,
                             "selected_fresh_mean": fresh_mean, "worker_s_mean": wall}
            print(f"  {m:<40} {_fmt_steps(med, bs):>13} [{_fmt_steps(lo, bs)}, "
                  f"{_fmt_steps(hi, bs)}]{'':>5} {reached}/{len(trs)}   {wall:8.0f} "
                  f"{sel:16.4f} {fresh_mean:6.4f}")
        comparisons = {}
        for e in [m for m in methods if m.startswith("engine:")]:
            for other in [m for m in methods if m != e]:
                cmp = paired_by_search_seed(
                    {s: runs[e][s]["traces"][str(b)]["fresh"] for s in search_seeds},
                    {s: runs[other][s]["traces"][str(b)]["fresh"] for s in search_seeds})
                ratio = bootstrap_ratio(per_method[e]["steps_to_target"],
                                        per_method[other]["steps_to_target"], rng)
                half = len(search_seeds) / 2
                bound = ("" if per_method[e]["reached"] > half
                         and per_method[other]["reached"] > half
                         else " (a bound: a median did not reach the target)")
                comparisons[f"{e} vs {other}"] = {**cmp, "steps_ratio": ratio,
                                                  "ratio_is_bound": bool(bound)}
                print(f"  {e} − {other}: fresh {cmp['diff']:+.4f} (SE {cmp['se']:.4f}, "
                      f"{cmp['n']} search seeds): {cmp['verdict']}; steps to target "
                      f"{ratio[0]:.2f}× [{ratio[1]:.2f}, {ratio[2]:.2f}]{bound}")
        summary[str(b)] = {"methods": per_method, "comparisons": comparisons}
    return summary


def _num(x: Any, missing: float = math.inf) -> float:
    """A JSON number back as a float (None, written for inf/-inf, as ``missing``)."""
    return missing if x is None else float(x)


if __name__ == "__main__":
    main()
