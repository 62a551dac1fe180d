"""How much in-run pruning saves, and what it costs: the rule of ``[pruning]`` applied to real runs.

Runs a sample of the genomes a search pays for (random genomes, and mutants of the seven
classic seeds) to the end on the search benchmark's task (``search_efficiency.py``'s
cifar10-tiny setting), each on the stage seeds, beside the reference (the seeded Adam). Then,
for each pruning setting (margin x after), it replays :class:`~evoopt.fitness.curves.PruneRule`
on every run's stored curve at the runner's own check points, and prints side by side:

* ``pruned``: the fraction of runs the rule stops;
* ``steps``: the training steps run with pruning, as a fraction of the steps without;
* ``lost``: runs the rule stops that finished *above* the reference's fitness on their seed
  (false prunes), and ``lost top-10%``: stopped runs among the best tenth of the sample.

Replaying is exact: a pruned run has trained exactly like the unpruned one up to the step it
stopped at (common random numbers; the rule reads only the past). ``--check N`` re-runs N
runs with the rule live and asserts that status and steps match the replay.

    python benchmarks/pruning_precision.py --data-dir ../shared/data/cifar10-mini \\
        --genomes 60 --seeds 0 1 2 --json pruning.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from evoopt.fitness import load_task, make_runner
from evoopt.fitness.curves import PruneRule, bin_edges
from evoopt.fitness.runner import curve_direction
from evoopt.genome import seed_genome
from evoopt.genome.sampling import random_genome
from evoopt.strategy.operators import mutate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_efficiency import BASE_SEARCH, DEFAULT_OVERRIDES  # noqa: E402

MARGINS = (0.0, 0.05, 0.1, 0.25, 0.5)
AFTERS = (0.25, 0.5)
WINDOW = 5


def sample_genomes(n: int, rng: np.random.Generator) -> list[tuple[str, Any]]:
    """``n`` distinct genomes: half random, half one- to three-fold mutants of the seeds."""
    seeds = [seed_genome(s) for s in BASE_SEARCH["campaign"]["seeds"]]
    out, seen = [], {g.hash for g in seeds}
    while len(out) < n:
        if len(out) % 2 == 0:
            g, kind = random_genome(rng, max_terms=4), "random"
        else:
            g = seeds[int(rng.integers(len(seeds)))]
            for _ in range(int(rng.integers(1, 4))):
                g, _ = mutate(g, rng, max_terms=4)
            kind = "mutant"
        if g.hash not in seen:
            seen.add(g.hash)
            out.append((kind, g))
    return out


def replay(rule: PruneRule, curve: list[float | None], steps: int, check_every: int
           ) -> int | None:
    """The step a run with this curve is pruned at under the runner's checks, or None."""
    edges = bin_edges(steps)
    for s in range(check_every, steps, check_every):
        complete = sum(1 for e in edges[1:] if e <= s)
        if rule.verdict(curve, complete) is not None:
            return s
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--genomes", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--check", type=int, default=4, help="runs re-run with the rule live")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    task = load_task("cifar10-tiny").with_overrides(**DEFAULT_OVERRIDES)
    runner = make_runner(task, data_dir=args.data_dir)
    genomes = sample_genomes(args.genomes, np.random.default_rng(args.sample_seed))
    t0 = time.perf_counter()
    ref = {s: runner.evaluate(seed_genome("adam"), s) for s in args.seeds}
    runs = []
    for i, (kind, g) in enumerate(genomes):
        for s in args.seeds:
            r = runner.evaluate(g, s)
            runs.append({"genome": i, "kind": kind, "seed": s, "status": r.status,
                         "fitness": r.fitness, "steps": r.steps, "curve": r.train_loss_curve,
                         "hash": g.hash})
        print(f"\r  {i + 1}/{len(genomes)} genomes run ({time.perf_counter() - t0:.0f} s)",
              end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    by_genome: dict[int, list[float]] = {}
    for r in runs:
        by_genome.setdefault(r["genome"], []).append(r["fitness"])
    means = {i: float(np.mean(f)) for i, f in by_genome.items()}
    top = set(sorted(means, key=means.get, reverse=True)[:max(1, len(means) // 10)])
    full_steps = sum(r["steps"] for r in runs)
    ok = [r for r in runs if r["status"] == "ok"]

    print(f"task {task.name} ({task.steps} steps, check_every {task.check_every}), "
          f"{len(genomes)} genomes x {len(args.seeds)} seeds = {len(runs)} runs "
          f"({len(ok)} ok); reference adam: "
          + ", ".join(f"seed {s} {ref[s].fitness:.4f}" for s in args.seeds))
    print(f"  {'margin':>6} {'after':>5} {'pruned':>7} {'steps':>6} {'lost':>5} "
          f"{'lost top-10%':>12}")
    table = []
    for after in AFTERS:
        for margin in MARGINS:
            pruned = lost = lost_top = 0
            steps = 0
            for r in runs:
                rule = PruneRule(tuple(ref[r["seed"]].train_loss_curve), task.steps,
                                 curve_direction(task), margin=margin, after=after,
                                 window=WINDOW, label="adam")
                at = replay(rule, r["curve"], task.steps, task.check_every) \
                    if r["steps"] == task.steps else None
                if at is None or at >= r["steps"]:
                    steps += r["steps"]
                    continue
                pruned += 1
                steps += at
                if r["status"] == "ok" and r["fitness"] > ref[r["seed"]].fitness:
                    lost += 1
                if r["genome"] in top:
                    lost_top += 1
            row = {"margin": margin, "after": after, "pruned": pruned / len(runs),
                   "steps": steps / full_steps, "lost": lost, "lost_top": lost_top}
            table.append(row)
            print(f"  {margin:>6.2f} {after:>5.2f} {row['pruned']:>7.1%} {row['steps']:>6.1%} "
                  f"{lost:>5} {lost_top:>12}")

    # the replay is what the runner does live: re-run some pruned and some unpruned runs
    picked: dict[bool, int] = {True: 0, False: 0}
    for r in runs:
        rule = PruneRule(tuple(ref[r["seed"]].train_loss_curve), task.steps,
                         curve_direction(task), margin=0.1, after=0.25, window=WINDOW)
        at = replay(rule, r["curve"], task.steps, task.check_every) \
            if r["steps"] == task.steps else None
        if picked[at is not None] >= args.check:
            continue
        picked[at is not None] += 1
        live = runner.evaluate(genomes[r["genome"]][1], r["seed"], prune=rule)
        expected = ("pruned", at) if at is not None else (r["status"], r["steps"])
        assert (live.status, live.steps) == expected, (live.status, live.steps, expected)
    print(f"  live pruning matched the replay on {picked[True]} pruned and {picked[False]} "
          "unpruned runs (margin 0.1, after 0.25)")
    if args.json:
        args.json.write_text(json.dumps({"task": task.to_dict(), "seeds": args.seeds,
                                         "reference": {s: ref[s].to_dict() for s in ref},
                                         "runs": runs, "table": table}, indent=1))
    print(f"  {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
