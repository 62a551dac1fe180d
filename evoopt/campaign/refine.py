"""Refinement: the search's last phase, a TPE search over the best structure's hyperparameters.

Evolution finds structures; a model-based sampler tunes a structure's continuous
hyperparameters (lr, betas, eps, term weights, decay, schedule and clipping values) better than
random perturbation does. After the generations, the best individual's genome is refined by
Optuna's TPE over :func:`~evoopt.fitness.optuna_search.genome_search_space` (structure fixed,
the study starting at the incumbent) on the campaign's own fidelity stages with median pruning,
spending ``refine.evaluations`` paid runs. Those runs are the search's (they count in its
budget, so a budget-matched baseline gets them too). The best refined genomes join the store as
individuals whose operator is ``tpe_refine`` and whose parent is the incumbent, and compete for
the win with the other top candidates on the finish's fresh selection seeds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from evoopt.campaign.config import CampaignConfig
from evoopt.campaign.store import CampaignStore
from evoopt.fitness.optuna_search import budget_matched_search, genome_search_space
from evoopt.fitness.protocol import EvaluateFn
from evoopt.genome import Genome
from evoopt.genome.behaviour import behaviour_hash

REFINE_FILE = "refine.sqlite"
STUDY_NAME = "evoopt-refine"
KEY_PREFIX = "refine:trial-"
OPERATOR = "tpe_refine"
BATCH = 8  # trials asked at a time (as the budget-matched search)
CANDIDATES = 2  # best refined trials that join the top candidates


def refine_best(evaluate: EvaluateFn, config: CampaignConfig, store: CampaignStore,
                out_dir: Path, incumbent: dict[str, Any], generation: int
                ) -> list[dict[str, Any]]:
    """Refine ``incumbent`` (a store row) through ``evaluate`` (the campaign's evaluation
    service: :class:`~evoopt.campaign.evaluation.CampaignEvaluate`), the study kept in
    ``out_dir``; the store rows of the refined candidates (best first), empty when refinement
    is off or no trial other than the incumbent reached the last stage.

    The incumbent was picked as the best of hundreds on the stages' seeds, so its score there is
    inflated (the winner's curse): a refined trial is not asked to beat it on those seeds.
    Instead the best ``CANDIDATES`` trials that differ from it join the campaign's top
    candidates, and the finish re-measures all of them on fresh selection seeds.
    """
    if config.refine.evaluations <= 0:
        return []
    genome = Genome.from_dict(incumbent["genome"])
    space, start = genome_search_space(genome)
    result = budget_matched_search(
        evaluate, [(s.name, s.seeds) for s in config.stages], config.refine.evaluations,
        Path(out_dir) / REFINE_FILE, seed=config.seed,
        batch=min(config.strategy.population, BATCH), space=space, study_name=STUDY_NAME,
        key_prefix=KEY_PREFIX, start_at=start)
    store.set_meta("refine", {k: v for k, v in result.to_dict().items() if k != "trials"}
                   | {"incumbent": incumbent["uid"]})
    last = len(config.stages) - 1
    finished = sorted((t for t in result.trials if t["state"] == "COMPLETE"
                       and t["stage_reached"] == last and t["value"] is not None
                       and not t["failed"]),
                      key=lambda t: (-t["value"], t["number"]))
    rows: list[dict[str, Any]] = []
    seen = {genome.hash}
    for trial in finished:
        refined = Genome.from_dict(trial["genome"], source=f"refine trial {trial['number']}")
        if refined.hash in seen:
            continue
        seen.add(refined.hash)
        rows.append(_add_individual(store, config.stages[-1].name, incumbent, refined, trial,
                                    result.n_trials, generation))
        if len(rows) == CANDIDATES:
            break
    return rows


def _add_individual(store: CampaignStore, last_stage: str, incumbent: dict[str, Any],
                    refined: Genome, trial: dict[str, Any], n_trials: int, generation: int
                    ) -> dict[str, Any]:
    uid = f"refine-{trial['number']}"
    before = {path: value for path, _, value in
              Genome.from_dict(incumbent["genome"]).tunable()}
    after = {path: value for path, _, value in refined.tunable()}
    changed = [f"{k} {_fmt(before[k])}→{_fmt(after[k])}" for k in before
               if k in after and _fmt(before[k]) != _fmt(after[k])]
    store.add_individual(
        uid=uid, generation=generation, operator=OPERATOR, parents=[incumbent["uid"]],
        genome=refined.to_dict(), hash=refined.hash, behaviour_hash=behaviour_hash(refined),
        formula=refined.formula(), fitness=trial["value"],
        stage_reached=last_stage, status="evaluated",
        change=f"TPE trial {trial['number']} of {n_trials}: " + ", ".join(changed),
        created_at=time.time())
    row = store.get_individual(uid)
    assert row is not None
    return row


def _fmt(x: float) -> str:
    return f"{x:.4g}"
