"""Finishing a campaign: re-evaluate the top candidates on fresh seeds, pick, simplify, export.

The winner is the best of the ``final.top_k`` candidates on ``final.seeds`` (seeds no stage
used) at the last stage's budget, compared with the seeded Adam and Adan on the same seeds and
budget (and, with ``final.test_split``, on the official test split: reported, never selected on).
The winner is simplified to its canonical form (dead terms and state removed, duplicate terms
merged) when the two follow the same probe trajectory, then exported with the core exporter.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evoopt.campaign.runner import aggregate_fitness, resolve_seed
from evoopt.campaign.store import CampaignStore
from evoopt.fitness import WORST_FITNESS
from evoopt.genome import Genome
from evoopt.genome.behaviour import numerically_equivalent
from evoopt.genome.export import class_name_for, export_genome

if TYPE_CHECKING:
    from evoopt.campaign.runner import CampaignRunner
    from evoopt.strategy.strategy import Strategy

EXPORT_FILE = "best_optimizer.py"
GENOME_FILE = "best_genome.toml"


def _stats(rows: list[dict[str, Any]], key: str) -> tuple[float | None, float | None]:
    xs = [r[key] for r in rows if r.get(key) is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), statistics.pstdev(xs)


def _final_scores(store: CampaignStore, eval_hash: str, seeds: tuple[int, ...],
                  split: str = "val", stage: str = "final") -> dict[str, Any]:
    evs = [e for e in store.find_evaluations(eval_hash, stage, split) if e["seed"] in seeds]
    _, std = _stats(evs, "fitness")
    acc, _ = _stats(evs, "val_accuracy")
    return {"fitness_mean": aggregate_fitness(evs), "fitness_std": std,
            "val_accuracy_mean": acc, "n_seeds": len(evs),
            "per_seed": [e["fitness"] for e in evs]}


def tune_baselines(runner: CampaignRunner, scores_of: Any) -> list[dict[str, Any]]:
    """The fair-baseline protocol inside a campaign, through its evaluator and store.

    Each ``final.tuned`` seed genome's lr is swept over ``final.lr_grid`` × its own lr at the
    last stage's budget and seeds (validation split; the genome's own lr reuses the stage's
    evaluations of the seed); the best lr is re-run on
    the final seeds — the winner's budget and seeds — and on the test split when asked.
    """
    cfg = runner.config
    last = cfg.stages[-1]
    task = runner.stage_tasks[-1]
    rows = []
    for name in cfg.final_tuned:
        base = resolve_seed(name)
        grid = []
        for factor in cfg.final_lr_grid:
            try:
                grid.append(base.with_lr(base.lr * factor))
            except ValueError:  # outside the genome's valid lr range
                continue
        who = [(f"baseline:{name}", g, g.hash) for g in grid]
        runner._evaluate(who, last.name, task, last.seeds, cfg.split)
        sweep = {g.hash: _final_scores(runner.store, g.hash, last.seeds, cfg.split,
                                       last.name)["fitness_mean"] for g in grid}
        best = max(grid, key=lambda g: (sweep[g.hash], -g.lr))
        runner._evaluate([(f"baseline:{name}", best, best.hash)], "final", task,
                         cfg.final_seeds, "val")
        row = {"name": f"{name} (tuned lr={best.lr:.3g})", "uid": None, "lr": best.lr,
               "sweep": {f"{g.lr:.3g}": sweep[g.hash] for g in grid},
               "at_grid_edge": best.lr in (grid[0].lr, grid[-1].lr), **scores_of(best.hash)}
        if cfg.final_test_split:
            runner._evaluate([(f"baseline:{name}", best, best.hash)], "final", task,
                             cfg.final_seeds, "test")
            test = _final_scores(runner.store, best.hash, cfg.final_seeds, "test")
            row["test_accuracy_mean"] = test["val_accuracy_mean"]
            row["test_fitness_std"] = test["fitness_std"]
        rows.append(row)
    return rows


def finish_campaign(runner: CampaignRunner, strategy: Strategy) -> dict[str, Any]:
    cfg, store = runner.config, runner.store
    cached_before = runner.counters["cached"]
    order = {s.name: k for k, s in enumerate(cfg.stages)}
    rows = store.individuals()
    by_uid = {r["uid"]: r for r in rows}

    def eval_hash(r: dict[str, Any]) -> str:
        return by_uid[r["cached_from"]]["hash"] if r["cached_from"] else r["hash"]

    ranked = sorted((r for r in rows if r["fitness"] is not None and
                     r["fitness"] != WORST_FITNESS),
                    key=lambda r: (order.get(r["stage_reached"], -1), r["fitness"]), reverse=True)
    top: dict[str, dict[str, Any]] = {}
    for r in ranked:
        top.setdefault(eval_hash(r), r)
        if len(top) == cfg.final_top_k:
            break
    compare: dict[str, dict[str, Any]] = {}
    for name, genome in zip(cfg.seeds, runner.seeds, strict=True):
        if name in cfg.final_compare:
            seed_row = next(r for r in rows if r["operator"] == "seed" and
                            r["hash"] == genome.hash)
            compare[name] = seed_row
    if not top:
        failed = [e for e in store.evaluations() if e["status"] != "ok"]
        example = f" (e.g. {failed[0]['status']}: {failed[0]['message']})" if failed else ""
        raise ValueError(f"no candidate of campaign {cfg.name} finished an evaluation "
                         f"successfully{example}; nothing to re-evaluate or export")
    entries = {eval_hash(r): r for r in [*top.values(), *compare.values()]}
    final_task = runner.stage_tasks[-1]
    who = [(r["uid"], Genome.from_dict(r["genome"]), h) for h, r in entries.items()]
    runner._report(None, "final")
    runner._evaluate(who, "final", final_task, cfg.final_seeds, "val")

    def scores(r: dict[str, Any], split: str) -> dict[str, Any]:
        return _final_scores(store, eval_hash(r), cfg.final_seeds, split)

    final = {h: scores(r, "val") for h, r in entries.items()}
    winner_hash = max(top, key=lambda h: final[h]["fitness_mean"])
    winner = top[winner_hash]
    comparison = [{"name": "winner", "uid": winner["uid"], **final[winner_hash]}]
    comparison += [{"name": n, "uid": r["uid"], **final[eval_hash(r)]} for n, r in
                   compare.items()]
    if cfg.final_test_split:
        tested = [winner, *compare.values()]
        runner._evaluate([(r["uid"], Genome.from_dict(r["genome"]), eval_hash(r))
                          for r in tested], "final", final_task, cfg.final_seeds, "test")
        for row, r in zip(comparison, tested, strict=True):
            test = scores(r, "test")
            row["test_accuracy_mean"] = test["val_accuracy_mean"]
            row["test_fitness_std"] = test["fitness_std"]

    tuned = tune_baselines(runner, scores_of=lambda h: _final_scores(store, h, cfg.final_seeds))
    comparison += tuned
    store.set_meta("baselines", tuned)

    genome = Genome.from_dict(winner["genome"])
    simplified = genome.canonical()
    simplified_ok = numerically_equivalent(genome, simplified)
    exported = dataclasses.replace(simplified if simplified_ok else genome,
                                   name=f"{cfg.name}-{winner['uid']}")
    class_name = class_name_for(dataclasses.replace(exported, name=cfg.name)) + "Optimizer"
    source = export_genome(exported, class_name, provenance={
        "campaign": cfg.name, "uid": winner["uid"],
        "final_fitness_mean": final[winner_hash]["fitness_mean"]})
    (runner.out_dir / EXPORT_FILE).write_text(source)
    exported.save(runner.out_dir / GENOME_FILE)

    generations = store.generations()
    summary = {
        "winner": {"uid": winner["uid"], "hash": winner["hash"], "formula": exported.formula(),
                   "fitness_mean": final[winner_hash]["fitness_mean"],
                   "fitness_std": final[winner_hash]["fitness_std"],
                   "seeds": final[winner_hash]["per_seed"],  # per-seed fitness
                   "seed_numbers": list(cfg.final_seeds), "simplified": simplified_ok,
                   "class_name": class_name},
        "comparison": comparison,
        "evaluations_done": len(store.evaluations()),
        # reuse during the generations, plus during this final phase (e.g. a tuned baseline's
        # own lr found among the seed's evaluations)
        "evaluations_cached": sum(g["n_cached"] or 0 for g in generations)
        + runner.counters["cached"] - cached_before,
        "evaluations_saved_by_hurdles": sum(g["n_saved_by_hurdles"] or 0 for g in generations),
        "generations": strategy.generation,
        "exported": EXPORT_FILE,
        "genome_file": GENOME_FILE,
    }
    store.set_meta("winner_uid", winner["uid"])
    store.set_meta("winner_genome", exported.to_dict())
    store.set_meta("summary", summary)
    return summary


def campaign_winner(directory: str | Path) -> tuple[Genome, dict[str, Any], str]:
    """The exported (simplified) winner of a finished campaign, its provenance, class name."""
    path = Path(directory)
    with CampaignStore(path, readonly=True) as store:
        genome = store.get_meta("winner_genome")
        summary = store.get_meta("summary")
        config = store.get_meta("config") or {}
    if genome is None or summary is None:
        raise ValueError(f"{path}: the campaign has no winner yet (state: not finished)")
    return Genome.from_dict(genome, source=f"{path} winner"), {
        "campaign": config.get("name", ""), "uid": summary["winner"]["uid"],
        "final_fitness_mean": summary["winner"]["fitness_mean"]}, summary["winner"]["class_name"]
