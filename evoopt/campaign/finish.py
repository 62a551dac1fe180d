"""Finishing a campaign: re-evaluate the top candidates, tune the baselines, compare, export.

0. with ``[refine] evaluations``, the best individual's hyperparameters are refined by TPE
   (:mod:`evoopt.campaign.refine`, the search's last phase); the best refined genomes join the
   top candidates;

On the final seeds (``final.seeds``, which no stage used) at the last stage's budget:

1. the winner is the best of the ``final.top_k`` candidates re-evaluated on
   ``final.selection_seeds`` (any failed seed counts as the worst), or, without selection seeds,
   the search's best; the winner and the seeded ``final.compare`` genomes are evaluated on the
   final seeds, which no selection has seen (with ``final.test_split`` also on the official
   test split: reported, never selected on);
1b. with the funnel (``final.funnel``, on by default when there are held-out tasks), the
   finalists, in the order of their selection-seed score (without selection seeds: the
   search's order), must each not be significantly worse
   than tuned AdamW-cosine on any held-out task before one is named the winner
   (:func:`run_funnel`): on each held-out task, AdamW-cosine and the finalist (its lr tuned on a
   grid of ``final.lr_factors``) are tuned by the fair protocol and compared paired on the final
   seeds (val split); a finalist whose verdict is ``worse`` (> 2 paired SE) on any task is
   skipped; the winner is the first that passes (finalists are examined in rank order, stopping
   there); if none passes, the best-ranked finalist is named anyway, flagged ``none passed``;
2. the fair baselines ``final.baselines`` are tuned by the one protocol of
   :mod:`evoopt.fitness.baselines` (grid sweep on the last stage's seeds, validation split, then
   the best point on the final seeds);
2b. on each held-out task (``final.heldout_tasks``, which selection never saw), the winner (its
   lr tuned on a grid of ``final.lr_factors``) and the same fair baselines are tuned by the same
   protocol on that task and compared paired on the final seeds: does the winner transfer?
3. with ``final.budget_matched = "optuna"``, AdamW is tuned by the budget-matched Optuna search
   of :mod:`evoopt.fitness.optuna_search` over the campaign's own fidelity stages, with as many
   paid evaluations as the campaign's search paid (or ``final.budget_matched_budget``); the
   study lives in ``DIR/optuna.sqlite`` and resumes with the campaign;
4. the winner is compared with every other row **paired by seed** (:mod:`evoopt.stats`);
5. the winner is simplified to its canonical form when the two follow the same probe trajectory,
   then exported with the core exporter.

Every evaluation goes through the campaign's
:class:`~evoopt.campaign.evaluation.EvaluationService` and is committed to the store (uids
``baseline:<name>@<point>`` for sweep points, ``baseline:<name>`` for the tuned re-runs,
``optuna:trial-<n>``), so an interrupted finish resumes without paying twice. The finish takes
the service, the config, the store and the search's outcome
(:class:`SearchOutcome`); :class:`~evoopt.campaign.orchestrator.CampaignRunner` runs the search,
the refinement (step 0), then the finish.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evoopt.campaign.config import FINAL_STAGE, FUNNEL_REFERENCE, SELECTION_STAGE, CampaignConfig
from evoopt.campaign.evaluation import CampaignEvaluate, EvaluationService, seed_scores
from evoopt.campaign.operator_stats import operator_success
from evoopt.campaign.store import CampaignStore, StoreCorruptError
from evoopt.campaign.tasks import CampaignTasks
from evoopt.fileio import atomic_write_text
from evoopt.fitness.baselines import (
    DEFAULT_LR_FACTORS,
    BaselineSpec,
    TunedBaseline,
    get_baseline,
    tune_baselines,
)
from evoopt.fitness.multitask import TaskMix
from evoopt.genome import Genome, GenomeError, genome_from_dict
from evoopt.genome.behaviour import numerically_equivalent
from evoopt.genome.export import class_name_for, export_genome
from evoopt.stats import mean_std, paired_comparison

EXPORT_FILE = "best_optimizer.py"
# Trials asked at a time by the budget-matched search: enough to keep a few workers busy, few
# enough that TPE updates its model often (a user would run it about this parallel).
OPTUNA_BATCH = 8
GENOME_FILE = "best_genome.toml"
OPTUNA_FILE = "optuna.sqlite"
HELDOUT_STAGE = "heldout:"  # + task name: the held-out transfer's (and funnel's) evaluations
FUNNEL_PASSED, FUNNEL_NONE_PASSED, FUNNEL_OFF = "passed", "none passed", "off"
# uid prefixes of evaluations that are not the campaign's search
PROTOCOL_UIDS = ("baseline:", "optuna:")


def search_evaluations(store: CampaignStore) -> list[dict[str, Any]]:
    """The paid evaluations of the campaign's search (every stage; not the finish's)."""
    return [e for e in store.evaluations() if e["stage"] not in (FINAL_STAGE, SELECTION_STAGE)
            and not str(e["stage"]).startswith(HELDOUT_STAGE)
            and not str(e["uid"]).startswith(PROTOCOL_UIDS)]


def search_paid(store: CampaignStore) -> int:
    """How many evaluations the campaign's search paid for (every stage; not the finish's)."""
    return len(search_evaluations(store))


def search_curvature(store: CampaignStore) -> dict[str, float]:
    """What the search's curvature genomes (Hessian-vector products, e.g. AdaHessian's) cost:
    their paid evaluations and wall time, beside the search's. Fitness compares optimizers at
    equal steps and the budget counts evaluations, so this is the compute they got on top."""
    needs_graph: dict[str, bool] = {}
    for ind in store.individuals():
        try:
            needs_graph[ind["uid"]] = Genome.from_dict(ind["genome"]).needs_graph
        except GenomeError:
            needs_graph[ind["uid"]] = False
    paid = search_evaluations(store)
    curvature = [e for e in paid if needs_graph.get(e["uid"], False)]
    return {"evaluations": len(curvature),
            "wall_time_s": sum(e["wall_time_s"] or 0.0 for e in curvature),
            "search_evaluations": len(paid),
            "search_wall_time_s": sum(e["wall_time_s"] or 0.0 for e in paid)}


def _row(store: CampaignStore, key: str, kind: str, name: str, uid: str | None,
         genome: dict[str, Any], eval_hash: str, seeds: Sequence[int], tested: bool,
         stage: str = FINAL_STAGE, **extra: Any) -> dict[str, Any]:
    val = seed_scores(store, eval_hash, seeds, "val", stage)
    row: dict[str, Any] = {
        "key": key, "kind": kind, "name": name, "uid": uid,
        "formula": _formula(genome), "genome": genome,
        "fitness_mean": val["fitness_mean"], "fitness_std": val["fitness_std"],
        "val_accuracy_mean": val["accuracy_mean"], "per_seed": val["per_seed"],
        "value_mean": val["value_mean"], "value_std": val["value_std"],
        "seed_numbers": list(seeds), "n_seeds": val["n_seeds"],
        "test_accuracy_mean": None, "test_per_seed": None, "test_fitness_std": None,
        "test_fitness_mean": None, "tasks": val["tasks"], "test_tasks": None}
    if tested:
        test = seed_scores(store, eval_hash, seeds, "test", stage)
        row.update(test_accuracy_mean=test["accuracy_mean"], test_per_seed=test["per_seed"],
                   test_fitness_std=test["fitness_std"], test_fitness_mean=test["fitness_mean"],
                   test_value_mean=test["value_mean"],
                   test_tasks=test["tasks"])
    row.update(extra)
    return row


def _tuned_row(store: CampaignStore, t: TunedBaseline, spec: BaselineSpec, sweep_stage: str,
               seeds: Sequence[int], tested: bool, stage: str = FINAL_STAGE) -> dict[str, Any]:
    """A comparison row for a baseline tuned by the fair protocol, with how it was tuned."""
    d = t.to_dict()
    return _row(
        store, t.key, "tuned", f"{t.name} (tuned)", t.key, d["genome"], t.genome.hash, seeds,
        tested, stage, lr=t.genome.lr, at_grid_edge=any(t.at_grid_edge.values()),
        tuning={"best": d["best"], "at_grid_edge": d["at_grid_edge"],
                "grid": {dim: list(v) for dim, v in spec.grid.items()},
                "sweep_seeds": d["sweep_seeds"], "sweep_stage": sweep_stage,
                "sweep": [{"point": r["point"], "fitness_mean": r["fitness_mean"],
                           "per_seed": r["per_seed"], "status": r["status"]}
                          for r in d["sweep"]]})


def transfer_verdict(verdicts: list[dict[str, Any]], split: str = "val") -> str:
    """One line: how the winner fares against the tuned baselines on a held-out task."""
    counts = {v: sum(1 for x in verdicts if x["split"] == split and x["verdict"] == v)
              for v in ("better", "indistinguishable", "worse")}
    total = sum(counts.values())
    if not total:
        return "not compared"
    if counts["worse"]:
        return (f"does not transfer: worse than {counts['worse']} of {total} tuned baselines "
                f"(better than {counts['better']})")
    if counts["better"]:
        return (f"transfers: better than {counts['better']} of {total} tuned baselines, "
                f"worse than none")
    return f"transfers only as well: indistinguishable from all {total} tuned baselines"


def lr_tuned_spec(name: str, genome: Genome, lr_factors: Sequence[float] | None
                  ) -> BaselineSpec:
    """``genome`` as a spec whose lr is tuned on a grid of ``lr_factors`` around its own lr (the
    protocol the winner and the funnel's finalists get on a held-out task)."""
    return BaselineSpec(name, f"{name}, its lr tuned on this task", lambda: genome,
                        {"lr": (genome.lr,)}).with_lr_factors(lr_factors or DEFAULT_LR_FACTORS)


def funnel_task_check(finalist: Sequence[float], reference: Sequence[float]) -> dict[str, Any]:
    """One finalist against the funnel's reference on one held-out task: per-seed val fitness on
    the final seeds, paired (:func:`evoopt.stats.paired_comparison`, finalist − reference); it
    passes unless the verdict is ``worse``."""
    cmp = paired_comparison(list(finalist), list(reference)).to_dict()
    return {"fitness_mean": mean_std(finalist)[0], "per_seed": list(finalist),
            "reference_fitness_mean": mean_std(reference)[0],
            "reference_per_seed": list(reference), **cmp, "passed": cmp["verdict"] != "worse"}


def funnel_outcome(examined: Sequence[dict[str, Any]]) -> tuple[int, str]:
    """(index of the winner among the ``examined`` finalists, outcome): the first that passed
    every held-out task, or the first (the best-ranked) flagged ``none passed``."""
    if not examined:
        raise ValueError("the funnel examined no finalist")
    for i, entry in enumerate(examined):
        if entry["passed"]:
            return i, FUNNEL_PASSED
    return 0, FUNNEL_NONE_PASSED


def run_funnel(service: EvaluationService, config: CampaignConfig, heldout: Sequence[TaskMix],
               finalists: Sequence[tuple[str, dict[str, Any]]],
               scores: dict[str, float] | None = None) -> dict[str, Any]:
    """The funnel (module docstring, step 1b) over ``finalists`` (``(eval hash, individual
    row)``, best-ranked first; ``scores``: their selection-seed score by hash) on the
    ``heldout`` tasks. Every evaluation goes through :class:`CampaignEvaluate` under stage
    ``heldout:<task>`` (the held-out transfer's: the winner's and AdamW-cosine's evaluations are
    reused there). Returns the summary's ``funnel`` record; its ``winner_hash`` names the
    winner."""
    sweep, final = config.stages[-1].seeds, config.final.seeds
    lr_factors = config.final.lr_factors
    reference = get_baseline(FUNNEL_REFERENCE, lr_factors)
    tasks = [(mix, HELDOUT_STAGE + mix.tasks[0].name) for mix in heldout]
    references: dict[str, dict[str, Any]] = {}
    examined: list[dict[str, Any]] = []
    for rank, (h, row) in enumerate(finalists):
        genome = Genome.from_dict(row["genome"])
        spec = lr_tuned_spec(f"finalist-{row['uid']}", genome, lr_factors)
        checks: dict[str, dict[str, Any]] = {}
        for mix, stage in tasks:
            service.report_progress(None, stage)
            name = mix.tasks[0].name
            # the reference is tuned with the first finalist (one call: run together), then
            # found in the store for the next
            evaluate = CampaignEvaluate.at(service, config, stage, mix)
            ref_t, fin_t = tune_baselines([reference, spec], evaluate, sweep, final, ("val",))
            references[name] = {"lr": ref_t.genome.lr, "best": dict(ref_t.best),
                                "at_grid_edge": any(ref_t.at_grid_edge.values()),
                                "fitness_mean": mean_std(ref_t.final["val"])[0],
                                "per_seed": ref_t.final["val"]}
            checks[name] = {"lr": fin_t.genome.lr,
                            "at_grid_edge": any(fin_t.at_grid_edge.values()),
                            **funnel_task_check(fin_t.final["val"], ref_t.final["val"])}
        examined.append({"uid": row["uid"], "hash": h, "rank": rank,
                         "formula": row.get("formula") or _formula(row["genome"]),
                         "selection_fitness": None if scores is None else scores.get(h),
                         "search_fitness": row.get("fitness"), "tasks": checks,
                         "passed": all(c["passed"] for c in checks.values()),
                         "lost_on": [n for n, c in checks.items() if not c["passed"]]})
        if examined[-1]["passed"]:
            break
    index, outcome = funnel_outcome(examined)
    return {"reference": FUNNEL_REFERENCE, "tasks": [mix.tasks[0].name for mix, _ in tasks],
            "seeds": list(final), "split": "val", "outcome": outcome,
            "winner_uid": examined[index]["uid"], "winner_hash": examined[index]["hash"],
            "winner_rank": examined[index]["rank"], "references": references,
            "finalists": examined,
            "not_examined": [row["uid"] for _, row in finalists[len(examined):]]}


def heldout_transfer(service: EvaluationService, config: CampaignConfig, mix: TaskMix,
                     winner: Genome, specs: Sequence[BaselineSpec]) -> dict[str, Any]:
    """The winner and the fair baselines on a held-out task (one selection never saw): each has
    its lr (and the baselines their grids) tuned by the fair protocol on the task's validation
    split on the last stage's seeds, then is re-run on the final seeds; the winner is compared
    with each paired by seed. Stored under stage ``heldout:<task>``."""
    final = config.final
    task = mix.tasks[0]
    stage = HELDOUT_STAGE + task.name
    winner_spec = lr_tuned_spec("winner", winner, final.lr_factors)
    service.report_progress(None, stage)
    evaluate = CampaignEvaluate.at(service, config, stage, mix)
    tuned = tune_baselines([winner_spec, *specs], evaluate, config.stages[-1].seeds,
                           final.seeds, final.splits)
    rows = [_tuned_row(service.store, t, spec, stage, final.seeds, final.test_split, stage)
            for t, spec in zip(tuned, [winner_spec, *specs], strict=True)]
    rows[0].update(key="winner", kind="winner", name="winner (lr tuned)")
    verdicts = _verdicts(rows)
    return {"task": task.name, "description": task.description, "stage": stage, "rows": rows,
            "verdicts": verdicts, "transfer": transfer_verdict(verdicts, "val"),
            "transfer_test": transfer_verdict(verdicts, "test")}


def _formula(genome: dict[str, Any]) -> str | None:
    try:
        return genome_from_dict(genome).formula()
    except ValueError:
        return None


def _verdicts(comparison: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The winner against every other row, paired by seed: val fitness, and test accuracy."""
    winner = comparison[0]
    out = []
    for split, field in (("val", "per_seed"), ("test", "test_per_seed")):
        for row in comparison[1:]:
            a, b = winner.get(field), row.get(field)
            if not a or not b or len(a) != len(b):
                continue
            out.append({"against": row["key"], "name": row["name"], "split": split,
                        **paired_comparison(a, b).to_dict()})
    return out


@dataclass(frozen=True)
class SearchOutcome:
    """What the search and the refinement hand to the finish."""

    generations: int  # generations the search ran (every session)
    ranked: list[dict[str, Any]]  # :func:`ranked_individuals` before the refinement
    refined: list[dict[str, Any]]  # the refined candidates' rows (refine.refine_best)
    refine_s: float  # the refinement's wall time
    cached_before: int  # the service's cached count before the refinement


def ranked_individuals(config: CampaignConfig, store: CampaignStore) -> list[dict[str, Any]]:
    """The individuals that finished an evaluation, best first by (stage reached, fitness): the
    top candidates and the refinement's incumbent. Failed ones are left out by their status
    (an ok all-zero task mix stored at ``WORST_FITNESS`` is a score, not a failure).
    ``ValueError`` (naming a failure) when none did: there is nothing to refine, re-evaluate
    or export."""
    order = {s.name: k for k, s in enumerate(config.stages)}
    ranked = sorted((r for r in store.individuals() if r["fitness"] is not None and
                     r["status"] != "failed"),
                    key=lambda r: (order.get(r["stage_reached"], -1), r["fitness"]), reverse=True)
    if not ranked:
        failed = [e for e in store.evaluations() if e["status"] != "ok"]
        example = f" (e.g. {failed[0]['status']}: {failed[0]['message']})" if failed else ""
        raise ValueError(f"no candidate of campaign {config.name} finished an evaluation "
                         f"successfully{example}; nothing to re-evaluate or export")
    return ranked


def finish_campaign(service: EvaluationService, config: CampaignConfig, store: CampaignStore,
                    tasks: CampaignTasks, seeds: Sequence[Genome], out_dir: Path,
                    outcome: SearchOutcome) -> dict[str, Any]:
    """Steps 1-5 of the module docstring after the search (``outcome``): every evaluation
    through ``service``; ``seeds``: the campaign's seed genomes (``config.seeds`` order, as
    stored); the export is written to ``out_dir``. Returns the summary, also stored."""
    cfg, final_cfg = config, config.final
    order = {s.name: k for k, s in enumerate(cfg.stages)}
    rows = store.individuals()
    by_uid = {r["uid"]: r for r in rows}
    generations_s = float(sum(g["wall_time_s"] or 0.0 for g in store.generations()))
    final_seeds = tuple(final_cfg.seeds)
    splits = final_cfg.splits

    def eval_hash(r: dict[str, Any]) -> str:
        return by_uid[r["cached_from"]]["hash"] if r["cached_from"] else r["hash"]

    top: dict[str, dict[str, Any]] = {}
    for r in outcome.ranked:
        top.setdefault(eval_hash(r), r)
        if len(top) == final_cfg.top_k:
            break
    compare: dict[str, dict[str, Any]] = {}
    for name, genome in zip(cfg.seeds, seeds, strict=True):
        if name in final_cfg.compare:
            compare[name] = next(r for r in rows if r["operator"] == "seed" and
                                 r["hash"] == genome.hash)
    # 0. (the refinement, run before:) its best genomes are judged with the others on fresh seeds
    for refined in outcome.refined:
        top.setdefault(refined["hash"], refined)
    refine_s = outcome.refine_s
    evaluate = CampaignEvaluate(service, cfg, tasks.stages)

    # 1. the winner: the top-k re-measured on fresh selection seeds (one lucky score does not
    # stick), else the search's own best; then it and the seeds on the final seeds, which no
    # selection has seen
    t0 = time.time()
    final_task = tasks.final
    service.report_progress(None, "final")
    selection_seeds = tuple(final_cfg.selection_seeds)
    selection: list[dict[str, Any]] = []
    ranked_hashes = list(top)  # ranked by (stage reached, score)
    picked_scores: dict[str, float] | None = None
    if selection_seeds and len(top) > 1:
        service.evaluate([(r["uid"], Genome.from_dict(r["genome"]), h) for h, r in top.items()],
                         SELECTION_STAGE, final_task, selection_seeds, "val")
        picked = {h: seed_scores(store, h, selection_seeds, "val", SELECTION_STAGE) for h in top}
        picked_scores = {h: picked[h]["aggregate"] for h in top}
        # best selection-seed score first (a stable sort: ties keep the search's order)
        ranked_hashes = sorted(top, key=lambda h: picked[h]["aggregate"], reverse=True)
        selection = [{"uid": top[h]["uid"], "formula": top[h]["formula"],
                      "search_fitness": top[h]["fitness"],
                      "fitness_mean": picked[h]["fitness_mean"],
                      "per_seed": picked[h]["per_seed"]} for h in top]
    winner_hash = ranked_hashes[0]
    funnel: dict[str, Any] | None = None
    if cfg.funnel and tasks.heldout:
        # 1b. the funnel: the first finalist not worse than tuned AdamW-cosine on any held-out
        # task (in rank order, stopping there)
        t_funnel = time.time()
        funnel = run_funnel(service, cfg, tasks.heldout, [(h, top[h]) for h in ranked_hashes],
                            picked_scores)
        funnel["wall_time_s"] = time.time() - t_funnel
        winner_hash = funnel["winner_hash"]
        service.report_progress(None, "final")
    winner = top[winner_hash]
    entries = {eval_hash(r): r for r in [winner, *compare.values()]}
    who = [(r["uid"], Genome.from_dict(r["genome"]), h) for h, r in entries.items()]
    service.evaluate(who, FINAL_STAGE, final_task, final_seeds, "val")
    final = {h: seed_scores(store, h, final_seeds) for h in entries}
    tested = final_cfg.test_split
    if tested:
        service.evaluate([(r["uid"], Genome.from_dict(r["genome"]), eval_hash(r))
                          for r in (winner, *compare.values())],
                         FINAL_STAGE, final_task, final_seeds, "test")
    comparison = [_row(store, "winner", "winner", "winner", winner["uid"], winner["genome"],
                       winner_hash, final_seeds, tested)]
    comparison += [_row(store, name, "seed", name, r["uid"], r["genome"], eval_hash(r),
                        final_seeds, tested) for name, r in compare.items()]
    funnel_s = funnel["wall_time_s"] if funnel else 0.0
    final_s = time.time() - t0 - funnel_s

    # 2. fair baselines, one protocol
    t0 = time.time()
    specs = [get_baseline(n, final_cfg.lr_factors) for n in final_cfg.baselines]
    last = cfg.stages[-1]
    tuned = tune_baselines(specs, evaluate, last.seeds, final_seeds, splits) if specs else []
    tuned_rows = [_tuned_row(store, t, specs[i], last.name, final_seeds, tested)
                  for i, t in enumerate(tuned)]
    comparison += tuned_rows
    store.set_meta("baselines", tuned_rows)
    baselines_s = time.time() - t0

    # 2b. held-out transfer: the winner and the fair baselines, each tuned on the held-out task
    t0 = time.time()
    heldout = [heldout_transfer(service, cfg, mix, Genome.from_dict(winner["genome"]), specs)
               for mix in tasks.heldout]
    heldout_s = time.time() - t0

    # 3. budget-matched Optuna AdamW search
    t0 = time.time()
    budget_matched_s = 0.0
    if final_cfg.budget_matched == "optuna":
        from evoopt.fitness.optuna_search import NAME as OPTUNA_NAME
        from evoopt.fitness.optuna_search import budget_matched_search

        budget = final_cfg.budget_matched_budget or search_paid(store)
        result = budget_matched_search(
            evaluate, [(s.name, s.seeds) for s in cfg.stages], budget,
            Path(out_dir) / OPTUNA_FILE, seed=cfg.seed,
            batch=min(cfg.strategy.population, OPTUNA_BATCH))
        info = {k: v for k, v in result.to_dict().items() if k != "trials"}
        store.set_meta("budget_matched", result.to_dict())
        if result.genome is not None:
            for split in splits:
                evaluate([(result.final_key, result.genome)], final_seeds, split)
            comparison.append(_row(
                store, OPTUNA_NAME, "budget_matched", f"{OPTUNA_NAME} (budget-matched)",
                result.final_key, result.genome.to_dict(), result.genome.hash, final_seeds,
                tested, tuning={"best": info["best_params"], "best_trial": info["best_trial"],
                                "best_value": info["best_value"], "n_trials": info["n_trials"],
                                "pruned": info["n_pruned"], "failed": info["n_failed"],
                                "paid": info["paid"], "budget": info["budget"],
                                "stages": info["stages"]}))
        budget_matched_s = time.time() - t0

    # 4. paired verdicts, operators
    verdicts = _verdicts(comparison)
    operators = operator_success(store.individuals(),
                                 {**order, FINAL_STAGE: len(cfg.stages) - 1})

    # 5. simplify and export the winner
    genome = Genome.from_dict(winner["genome"])
    simplified = genome.canonical()
    simplified_ok = numerically_equivalent(genome, simplified)
    exported = dataclasses.replace(simplified if simplified_ok else genome,
                                   name=f"{cfg.name}-{winner['uid']}")
    class_name = class_name_for(dataclasses.replace(exported, name=cfg.name)) + "Optimizer"
    source = export_genome(exported, class_name, provenance={
        "campaign": cfg.name, "uid": winner["uid"],
        "final_fitness_mean": final[winner_hash]["aggregate"]})
    atomic_write_text(Path(out_dir) / EXPORT_FILE, source)
    exported.save(Path(out_dir) / GENOME_FILE)

    generations = store.generations()
    summary = {
        "winner": {"uid": winner["uid"], "hash": winner["hash"], "formula": exported.formula(),
                   "fitness_mean": final[winner_hash]["aggregate"],
                   "fitness_std": final[winner_hash]["fitness_std"],
                   "seeds": final[winner_hash]["per_seed"],  # per-seed fitness
                   "seed_numbers": list(final_seeds), "simplified": simplified_ok,
                   "class_name": class_name,
                   "selection": {"seeds": list(selection_seeds), "candidates": selection},
                   "funnel": funnel["outcome"] if funnel else FUNNEL_OFF},
        "funnel": funnel,
        "comparison": comparison,
        "verdicts": verdicts,
        "operators": operators,
        "heldout": heldout,
        "timings": {"search_s": generations_s + refine_s, "refine_s": refine_s,
                    "baselines_s": baselines_s, "funnel_s": funnel_s, "heldout_s": heldout_s,
                    "budget_matched_s": budget_matched_s, "final_s": final_s},
        "evaluations_done": len(store.evaluations()),
        # reuse during the generations, plus during this final phase (e.g. a baseline's grid
        # point found among the campaign's evaluations)
        "evaluations_cached": sum(g["n_cached"] or 0 for g in generations)
        + service.counters.cached - outcome.cached_before,
        "evaluations_saved_by_hurdles": sum(g["n_saved_by_hurdles"] or 0 for g in generations),
        "search_evaluations": search_paid(store),
        "search_curvature": search_curvature(store),
        "generations": outcome.generations,
        "exported": EXPORT_FILE,
        "genome_file": GENOME_FILE,
    }
    store.set_meta("winner_uid", winner["uid"])
    store.set_meta("winner_genome", exported.to_dict())
    store.set_meta("summary", summary)
    return summary


def campaign_winner(directory: str | Path) -> tuple[Genome, dict[str, Any], str]:
    """The exported (simplified) winner of a finished campaign, its provenance, class name.

    ``ValueError`` when the campaign has no winner yet; ``StoreCorruptError`` (naming the store)
    when the stored winner is malformed."""
    path = Path(directory)
    with CampaignStore(path, readonly=True) as store:
        genome = store.get_meta("winner_genome")
        summary = store.get_meta("summary")
        config = store.get_meta("config") or {}
        where = store.path
    if genome is None or summary is None:
        raise ValueError(f"{path}: the campaign has no winner yet (state: not finished)")
    winner = summary.get("winner") if isinstance(summary, dict) else None
    if not (isinstance(winner, dict) and isinstance(winner.get("class_name"), str)
            and isinstance(config, dict)):
        raise StoreCorruptError(f"{where}: malformed summary or config (no winner with a class "
                                "name)")
    try:
        best = Genome.from_dict(genome, source="winner_genome")
    except GenomeError as e:
        raise StoreCorruptError(f"{where}: {e}") from None
    fitness = winner.get("fitness_mean")
    if isinstance(fitness, bool) or not isinstance(fitness, (int, float)) \
            or not math.isfinite(fitness):
        fitness = None  # provenance is written as Python literals: no nan, no objects
    return best, {"campaign": str(config.get("name", "")), "uid": str(winner.get("uid")),
                  "final_fitness_mean": fitness}, winner["class_name"]
