"""Refinement: the search's last phase, a TPE search over the best structure's hyperparameters.

Evolution finds structures; a model-based sampler tunes a structure's continuous
hyperparameters (lr, betas, eps, term weights, decay, schedule and clipping values) better than
random perturbation does. After the generations, the best individual's genome is refined by
Optuna's TPE over :func:`~evoopt.fitness.optuna_search.genome_search_space` (structure fixed,
the study starting at the incumbent) on the campaign's own fidelity stages with median pruning,
spending ``refine.evaluations`` paid runs. Those runs are the search's (they count in its
budget, so a budget-matched baseline gets them too). A better genome joins the store as an
individual whose operator is ``tpe_refine`` and whose parent is the incumbent, and competes for
the win like the other top candidates.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from evoopt.fitness.optuna_search import budget_matched_search, genome_search_space
from evoopt.fitness.protocol import EvaluateFn
from evoopt.genome import Genome
from evoopt.genome.behaviour import behaviour_hash

if TYPE_CHECKING:
    from evoopt.campaign.runner import CampaignRunner

REFINE_FILE = "refine.sqlite"
STUDY_NAME = "evoopt-refine"
KEY_PREFIX = "refine:trial-"
OPERATOR = "tpe_refine"
BATCH = 8  # trials asked at a time (as the budget-matched search)


def refine_best(runner: CampaignRunner, evaluate: EvaluateFn, incumbent: dict[str, Any],
                generation: int) -> dict[str, Any] | None:
    """Refine ``incumbent`` (a store row); the new individual's row, or None when no trial beat
    the incumbent at the last stage (or refinement is off)."""
    cfg, store = runner.config, runner.store
    if cfg.refine_evaluations <= 0:
        return None
    genome = Genome.from_dict(incumbent["genome"])
    space, start = genome_search_space(genome)
    result = budget_matched_search(
        evaluate, [(s.name, s.seeds) for s in cfg.stages], cfg.refine_evaluations,
        runner.out_dir / REFINE_FILE, seed=cfg.seed, batch=min(cfg.population, BATCH),
        space=space, study_name=STUDY_NAME, key_prefix=KEY_PREFIX, start_at=start)
    store.set_meta("refine", {k: v for k, v in result.to_dict().items() if k != "trials"}
                   | {"incumbent": incumbent["uid"]})
    if result.genome is None or result.genome.hash == genome.hash:
        return None
    uid = f"refine-{result.best_trial}"
    before = dict(start)
    _, after = genome_search_space(result.genome)
    changed = [f"{k} {_fmt(before[k])}→{_fmt(after[k])}" for k in before
               if k in after and f"{before[k]:.4g}" != f"{after[k]:.4g}"]
    store.add_individual(
        uid=uid, generation=generation, operator=OPERATOR, parents=[incumbent["uid"]],
        genome=result.genome.to_dict(), hash=result.genome.hash,
        behaviour_hash=behaviour_hash(result.genome), formula=result.genome.formula(),
        fitness=result.best_value, stage_reached=cfg.stages[-1].name, status="evaluated",
        change=f"TPE trial {result.best_trial} of {result.n_trials} ({result.paid} runs): "
               + ", ".join(changed), created_at=time.time())
    return store.get_individual(uid)


def _fmt(x: float) -> str:
    return f"{x:.4g}"
