"""Search efficiency: the engine against random search over the same genome space.

    python benchmarks/search_efficiency.py --data-dir ../shared/data/cifar10-mini \
        [--task cifar10-tiny] [--override FIELD=VALUE ...] [--no-default-overrides] \
        [--stage-seeds 0 1 2] [--budget 240] [--search-seeds 3] [--margin 0.02] \
        [--no-ray | --workers 2] [--json OUT]

Default task (:data:`DEFAULT_OVERRIDES`, applied to ``cifar10-tiny`` only, each replaceable by
``--override``): ``cifar10-tiny`` with 2,000 training / 1,000 validation images, 80 steps of
batch 128, width 8, one thread: about 0.9-1.0 s a run on one core, AdamW-cosine's
seed-to-seed std of validation accuracy about 0.012 (so 0.007 for a 3-seed mean). Plain
``cifar10-tiny`` (30 steps of 64, 200 val images) moves about +-0.03 a seed, which let random
genomes clear a 0.01 margin by noise (docs/benchmarks-search.md).

Both methods get the same task, the same evaluator type (by default a Ray pool of ``--workers``
(2) actors, ``--no-ray`` for the in-process serial one; one instance shared by everything in the
run), the same stage (every candidate is trained on each ``--stage-seeds`` seed on the validation
split; its score is the mean, any failed seed making it the worst) and the same budget of paid
evaluations (one (candidate, seed) run each):

* **engine**: a real ``CampaignRunner`` campaign with the search settings of
  ``experiments/discover-cpu.toml`` (regularized evolution, its population, tournament size,
  crossover rate, max_terms and seed genomes, ``lr_screen = [0.3333, 3.0]``, the default mutation
  rates), ``campaign.seed`` = the search seed, one stage, ``max_evaluations`` = the budget. The
  runner stops at the first generation boundary at or past the budget and always runs its finish
  phase; the finish is configured as small as the config allows (top 1 on one fresh seed, no
  comparisons, no tuned baselines, no test split) and is not counted. Paid evaluations are the
  store's evaluation rows of the search stage in creation order; rows past the budget are ignored.
* **random search**: ``random_genome(np.random.default_rng(search_seed), max_terms)``, evaluated
  on the same seeds, deduplicated by canonical genome hash (a duplicate is drawn again, not paid
  twice), until the budget; as many candidates at a time as fill the workers evenly.

Target: the fair-baseline AdamW with warmup-cosine (``adamw-cosine`` in
``evoopt.fitness.baselines``), its lr tuned on the same task, split and stage seeds (those sweep
runs are not counted against either search), scored as its mean over the stage seeds at the
tuned point (like for like: the searches are scored on the same seeds); target = that +
``--margin``. The protocol's re-run on fresh seeds is reported alongside, and so is the noise
of the target (per-seed std at the tuned point / sqrt(number of stage seeds)).

Per search seed and method: the paid evaluations up to and including the last seed of the first
candidate whose score reaches the target (not reached: shown as "> budget" and counted as
budget + 1 in the medians, which makes a ratio a bound, said so in the output), and the best
score among the candidates completed within the budget. Then medians and the engine / random
ratios; the goal is evaluations-to-target ratio <= 0.5.
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
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evoopt.campaign.config import CampaignConfig, parse_config  # noqa: E402
from evoopt.campaign.runner import CampaignRunner, aggregate_fitness  # noqa: E402
from evoopt.campaign.store import CampaignStore  # noqa: E402
from evoopt.evaluator import EvalRequest, Evaluator, RayEvaluator, SerialEvaluator  # noqa: E402
from evoopt.fitness import WORST_FITNESS, load_task  # noqa: E402
from evoopt.genome import Genome  # noqa: E402
from evoopt.genome.sampling import random_genome  # noqa: E402

DISCOVER = ROOT / "experiments" / "discover-cpu.toml"
STAGE = "search"
LR_SCREEN = [0.3333, 3.0]
BASELINE = "adamw-cosine"
EPS = 1e-9  # scores are accuracies on a few hundred images: compare with the target up to this

# Defaults (docs/benchmarks-search.md, "Why these defaults"): measured on 2 CPU cores.
DEFAULT_TASK = "cifar10-tiny"
DEFAULT_OVERRIDES: dict[str, Any] = {"train_size": 2000, "val_size": 1000, "steps": 80,
                                     "batch_size": 128, "width": 8, "threads": 1}
DEFAULT_STAGE_SEEDS = [0, 1, 2]
DEFAULT_BUDGET = 240  # the engine: generation 0 (32 candidates x 3 seeds) + 3 x 48; no overshoot
DEFAULT_MARGIN = 0.02  # ~3 x the measured std of a 3-seed mean (0.007)
DEFAULT_WORKERS = 2


# -- one evaluator for everything ----------------------------------------------------------------
class Evaluate:
    """Runs (key, genome) x seeds through the shared evaluator; keeps every row it paid for.

    Also the ``EvaluateFn`` of ``evoopt.fitness.protocol`` (``items, seeds, split, stage``)
    that the fair-baseline protocol calls.
    """

    def __init__(self, evaluator: Evaluator, task: dict[str, Any]) -> None:
        self.evaluator, self.task = evaluator, task
        self.rows: list[dict[str, Any]] = []  # completion order
        self._n = 0

    def run(self, items: Sequence[tuple[str, Genome]], seeds: Sequence[int],
            split: str = "val") -> list[dict[str, Any]]:
        keys = {}
        for key, genome in items:
            for seed in seeds:
                self._n += 1
                rk = f"{self._n}/{key}/{seed}/{split}"
                keys[rk] = key
                self.evaluator.submit(EvalRequest(rk, genome, self.task, int(seed), split))
        out = []
        for o in self.evaluator.results():
            r = o.result
            out.append({"key": keys[o.key], "seed": o.request.seed, "split": split,
                        "fitness": float(r.get("fitness", WORST_FITNESS)),
                        "status": r.get("status", "error"),
                        "wall_time_s": r.get("wall_time_s", 0.0)})
        self.rows += out
        return out

    def __call__(self, items: list[tuple[str, Genome]], seeds: Sequence[int], split: str,
                 stage: int = -1) -> dict[str, list[float]]:
        rows = self.run(items, seeds, split)
        by = {(r["key"], r["seed"]): r["fitness"] for r in rows}
        return {key: [by[(key, int(s))] for s in seeds] for key, _ in items}


# -- target ---------------------------------------------------------------------------------------
def tune_target(evaluate: Evaluate, stage_seeds: list[int],
                lr_factors: Sequence[float] | None) -> dict[str, Any]:
    """The fair-baseline AdamW + warmup-cosine, tuned on the stage seeds (val split); its score
    is its mean over the stage seeds at the tuned point (the sweep's best), the re-run on fresh
    seeds that the protocol adds is reported alongside."""
    from evoopt.fitness.baselines import FRESH_SEED_OFFSET, get_baseline, tune_baseline

    n = len(evaluate.rows)
    spec = get_baseline(BASELINE, lr_factors)
    fresh = [FRESH_SEED_OFFSET + i for i in range(len(stage_seeds))]
    tuned = tune_baseline(spec, evaluate, stage_seeds, fresh, ("val",))
    per_seed = next(r["per_seed"] for r in tuned.sweep if r["point"] == tuned.best)
    seed_std = statistics.stdev(per_seed) if len(per_seed) > 1 else math.nan
    fresh_mean, fresh_std = tuned.mean_std("val")
    return {"name": tuned.name, "best": tuned.best, "at_grid_edge": tuned.at_grid_edge,
            "grid": {k: list(v) for k, v in spec.grid.items()}, "score": tuned.sweep_fitness,
            "per_seed": per_seed, "seed_std": seed_std,
            # the target's own noise: std of a mean over the stage seeds
            "score_se": seed_std / math.sqrt(len(per_seed)),
            "fresh_seeds": fresh, "fresh_per_seed": tuned.final["val"],
            "fresh_mean": fresh_mean, "fresh_std": fresh_std,
            "runs": len(evaluate.rows) - n, "sweep": tuned.sweep}


# -- the two searches ---------------------------------------------------------------------------
def engine_config(task: str, overrides: dict[str, Any], stage_seeds: list[int], budget: int,
                  search_seed: int, use_ray: bool, population: int | None) -> CampaignConfig:
    """discover-cpu's search settings, one stage, budget, the smallest finish the config allows."""
    d = tomllib.loads(DISCOVER.read_text())
    camp, sel, var = d["campaign"], d["selection"], d["variation"]
    data = {
        "campaign": {"name": f"search-efficiency-{search_seed}", "seed": search_seed,
                     "population": population or camp["population"],
                     # the budget ends the campaign: every generation pays for something
                     "generations": max(budget, 1), "max_evaluations": budget,
                     "seeds": camp["seeds"]},
        "selection": {k: sel[k] for k in ("method", "tournament_size", "elitism") if k in sel},
        "variation": {**{k: var[k] for k in ("crossover_rate", "max_terms", "mutation_rates")
                         if k in var}, "lr_screen": LR_SCREEN},
        "fitness": {"task": task, "split": "val", "overrides": overrides},
        "stages": [{"name": STAGE, "seeds": stage_seeds}],
        "final": {"top_k": 1, "seeds": [max(stage_seeds) + 100], "test_split": False},
        "ray": {"enabled": use_ray},
    }
    assert data["selection"]["method"] == "regularized"
    config = parse_config(data, "search_efficiency engine")
    smallest = {"final_compare": (), "final_tuned": (), "final_baselines": (),
                "final_budget_matched": "none"}
    fields = {f.name for f in dataclasses.fields(CampaignConfig)}
    return dataclasses.replace(config, **{k: v for k, v in smallest.items() if k in fields})


def run_engine(config: CampaignConfig, evaluator: Evaluator, data_dir: str | None,
               tmp: Path) -> dict[str, Any]:
    out = tmp / config.name
    t = time.perf_counter()
    CampaignRunner(config, out, data_dir=data_dir, evaluator=evaluator).run()
    wall = time.perf_counter() - t
    with CampaignStore(out, readonly=True) as store:
        rows = [{"key": e["hash"], "seed": e["seed"], "fitness": e["fitness"],
                 "status": e["status"]}
                for e in store.evaluations(stage=STAGE) if e["split"] == "val"]
        n_final = len(store.evaluations(stage="final"))
        generations = len(store.generations())
    return {"rows": rows, "wall_s": wall, "finish_evaluations": n_final,
            "generations": generations}


def run_random(evaluate: Evaluate, stage_seeds: list[int], budget: int, search_seed: int,
               max_terms: int) -> dict[str, Any]:
    rng = np.random.default_rng(search_seed)
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    duplicates = 0
    per = len(stage_seeds)
    t = time.perf_counter()
    while len(rows) < budget:
        # as many candidates at a time as fill the evaluator's workers evenly (2 workers, 3 seeds:
        # 2 candidates, 6 runs), within the budget
        workers = max(1, evaluate.evaluator.num_workers)
        n = max(1, min(math.lcm(workers, per) // per, (budget - len(rows)) // per))
        batch = []
        while len(batch) < n:
            g = random_genome(rng, max_terms)
            if g.hash in seen:
                duplicates += 1
                continue
            seen.add(g.hash)
            batch.append((g.hash, g))
        rows += evaluate.run(batch, stage_seeds)
    return {"rows": rows, "wall_s": time.perf_counter() - t, "duplicates": duplicates}


# -- scoring --------------------------------------------------------------------------------------
def trace(rows: list[dict[str, Any]], stage_seeds: list[int], budget: int,
          target: float) -> dict[str, Any]:
    """Evaluations to the first candidate at or above ``target``, best score within ``budget``."""
    seen: dict[str, dict[int, dict[str, Any]]] = {}
    first, best, complete, curve = math.inf, -math.inf, 0, []
    for i, r in enumerate(rows[:budget], 1):
        got = seen.setdefault(r["key"], {})
        got[r["seed"]] = r
        if len(got) == len(stage_seeds):  # this row paid the candidate's last seed
            complete += 1
            score = aggregate_fitness([got[s] for s in stage_seeds])
            best = max(best, score)
            if score >= target - EPS and first == math.inf:
                first = i
        curve.append(best)
    return {"evals_to_target": first, "best_at_budget": best, "paid": min(len(rows), budget),
            "candidates": complete, "best_so_far": curve}


def _fmt_evals(x: float, budget: int) -> str:
    return f"> {budget}" if math.isinf(x) else f"{x:.0f}"


def _finite(x: Any) -> Any:
    """``x`` with every non-finite float as None (not reached, nothing completed): strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("EVOOPT_DATA_DIR"))
    parser.add_argument("--task", default=DEFAULT_TASK)
    parser.add_argument("--override", action="append", default=[], metavar="FIELD=VALUE",
                        help="task override (value parsed as JSON when it parses), repeatable; "
                             f"applied over the defaults for {DEFAULT_TASK} ({DEFAULT_OVERRIDES})")
    parser.add_argument("--no-default-overrides", action="store_true",
                        help=f"{DEFAULT_TASK} as shipped (only --override applies)")
    parser.add_argument("--stage-seeds", type=int, nargs="+", default=DEFAULT_STAGE_SEEDS)
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET,
                        help="paid evaluations per method and search seed")
    parser.add_argument("--search-seeds", type=int, default=3,
                        help="search seeds 0..N-1 (engine campaign.seed and random-search RNG)")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help="target = tuned baseline on the stage seeds + this")
    parser.add_argument("--baseline-lr-factors", type=float, nargs="+", default=None,
                        help="lr grid of the baseline = its centre x these (default: the "
                             "protocol's)")
    parser.add_argument("--population", type=int, default=None,
                        help="engine population (default: discover-cpu's)")
    parser.add_argument("--ray", action=argparse.BooleanOptionalAction, default=True,
                        help="a RayEvaluator pool (default); --no-ray: SerialEvaluator")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"Ray workers, one CPU each (default {DEFAULT_WORKERS}; 0: all CPUs)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT")
    args = parser.parse_args()
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
    evaluator: Evaluator = (RayEvaluator(num_workers=args.workers or None, data_dir=args.data_dir)
                            if args.ray else SerialEvaluator(data_dir=args.data_dir))
    evaluate = Evaluate(evaluator, task.to_dict())
    kind = (f"RayEvaluator ({evaluator.num_workers} workers)" if args.ray
            else "SerialEvaluator")
    camp = tomllib.loads(DISCOVER.read_text())["campaign"]
    print("settings:")
    print(f"  task {task.name}, overrides {overrides or 'none'}: {task.image_size} px, "
          f"{task.train_size} train / {task.val_size} val images, {task.steps} steps of batch "
          f"{task.batch_size}, width {task.width}, {task.threads or 'default'} thread(s) a run")
    print(f"  stage seeds {stage_seeds} (score = mean), budget {args.budget} paid evaluations "
          f"per method and search seed, search seeds 0..{args.search_seeds - 1}, margin "
          f"{args.margin}")
    print(f"  engine: {DISCOVER.name} search settings, population "
          f"{args.population or camp['population']}, lr_screen {LR_SCREEN}; random: "
          f"random_genome, deduplicated")
    print(f"  evaluator {kind}, shared by the baseline sweep and both methods")

    t = time.perf_counter()
    base = tune_target(evaluate, stage_seeds, args.baseline_lr_factors)
    target = base["score"] + args.margin
    best = ", ".join(f"{k} {v:.3g}" for k, v in base["best"].items())
    edge = [k for k, e in base["at_grid_edge"].items() if e]
    edge_note = f"; AT GRID EDGE: {', '.join(edge)}" if edge else ""
    print(f"target: {base['name']} tuned ({best}{edge_note}) "
          f"{base['score']:.4f} on the stage seeds + {args.margin} = {target:.4f}  "
          f"[{base['runs']} runs, not counted, {time.perf_counter() - t:.0f} s]")
    per_seed = " ".join(f"{x:.4f}" for x in base["per_seed"])
    fresh = " ".join(f"{x:.4f}" for x in base["fresh_per_seed"])
    print(f"  stage seeds: {per_seed} (std {base['seed_std']:.4f}; std of the "
          f"{len(stage_seeds)}-seed mean {base['score_se']:.4f}, margin / that = "
          f"{_ratio(args.margin, base['score_se']):.1f})")
    print(f"  fresh seeds {base['fresh_seeds']}: {fresh} (mean {base['fresh_mean']:.4f} +- "
          f"{base['fresh_std']:.4f}; stage - fresh {base['score'] - base['fresh_mean']:+.4f})",
          flush=True)

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="search-efficiency-") as tmp:
        for s in range(args.search_seeds):
            config = engine_config(args.task, overrides, stage_seeds, args.budget, s, args.ray,
                                   args.population)
            eng = run_engine(config, evaluator, args.data_dir, Path(tmp))
            rnd = run_random(evaluate, stage_seeds, args.budget, s, config.max_terms)
            results.append({"search_seed": s,
                            "engine": {**eng, **trace(eng["rows"], stage_seeds, args.budget,
                                                      target)},
                            "random": {**rnd, **trace(rnd["rows"], stage_seeds, args.budget,
                                                      target)}})
            e, r = results[-1]["engine"], results[-1]["random"]
            print(f"  search seed {s}: engine {e['wall_s']:.0f} s ({e['generations']} "
                  f"generations, {len(e['rows'])} paid + {e['finish_evaluations']} finish), "
                  f"random {r['wall_s']:.0f} s ({r['duplicates']} duplicates redrawn)",
                  flush=True)

    b = args.budget
    print(f"\n{'seed':>4}  {'engine: evals to target':>23} {'best':>7} {'cands':>5}   "
          f"{'random: evals to target':>23} {'best':>7} {'cands':>5}")
    for res in results:
        e, r = res["engine"], res["random"]
        print(f"{res['search_seed']:>4}  {_fmt_evals(e['evals_to_target'], b):>23} "
              f"{e['best_at_budget']:7.4f} {e['candidates']:5d}   "
              f"{_fmt_evals(r['evals_to_target'], b):>23} {r['best_at_budget']:7.4f} "
              f"{r['candidates']:5d}")

    def med(method: str, key: str) -> float:
        return statistics.median(res[method][key] for res in results)

    # "not reached" counts as budget + 1: a lower bound on that method's true cost
    def med_censored(method: str) -> float:
        return statistics.median(min(res[method]["evals_to_target"], b + 1) for res in results)

    e_med, r_med = med_censored("engine"), med_censored("random")
    e_best, r_best = med("engine", "best_at_budget"), med("random", "best_at_budget")
    ratio_target = _ratio(e_med, r_med)
    ratio_best = _ratio(e_best, r_best)
    hit_e = sum(not math.isinf(res["engine"]["evals_to_target"]) for res in results)
    hit_r = sum(not math.isinf(res["random"]["evals_to_target"]) for res in results)
    print(f"{'med':>4}  {_fmt_evals(e_med if e_med <= b else math.inf, b):>23} {e_best:7.4f} "
          f"{'':5}   {_fmt_evals(r_med if r_med <= b else math.inf, b):>23} {r_best:7.4f}")
    print(f"('> {b}': not reached within the budget, counted as {b + 1} in the medians)")
    print(f"target reached: engine {hit_e}/{len(results)}, random {hit_r}/{len(results)} "
          f"search seeds")
    if e_med > b and r_med > b:
        bound = "undetermined: neither median reached the target"
    elif r_med > b:
        bound = "an upper bound: random's median did not reach the target"
    elif e_med > b:
        bound = "a lower bound: the engine's median did not reach the target"
    else:
        bound = "exact"
    print(f"engine / random, median evaluations to target (not reached counted as budget + 1 = "
          f"{b + 1}): {ratio_target:.3f}  ({bound})   goal <= 0.5: "
          f"{'met' if e_med <= b and ratio_target <= 0.5 else 'not met'}")
    print(f"engine / random, median best score at budget {b}: {ratio_best:.3f} "
          f"({e_best:.4f} vs {r_best:.4f}, {e_best - r_best:+.4f})")
    wall = time.perf_counter() - t_all
    print(f"total wall time {wall:.0f} s")
    evaluator.close()

    if args.json:
        doc = {"argv": sys.argv[1:], "task": task.to_dict(), "overrides": overrides,
               "stage_seeds": stage_seeds, "search_seeds": args.search_seeds,
               "budget": b, "margin": args.margin, "evaluator": kind, "baseline": base,
               "target": target, "results": results,
               "summary": {"engine_median_evals_to_target": e_med,
                           "random_median_evals_to_target": r_med,
                           "not_reached_counted_as": b + 1,
                           "ratio_evals_to_target": ratio_target, "ratio_bound": bound,
                           "engine_median_best": e_best, "random_median_best": r_best,
                           "ratio_best_at_budget": ratio_best},
               "wall_time_s": wall}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_finite(doc), indent=1, default=str) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
