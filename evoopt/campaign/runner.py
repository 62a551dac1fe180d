"""The campaign's search: strategy and evaluation service together, generation by generation.

Per generation: ``ask`` the strategy; dedupe every candidate (canonical hash, then behavioural
hash) against everything already seen; run the fidelity stages — stage 0 for all, later stages
only for candidates that clear the stage's hurdle (with ``[pruning]``, the seeds run first and
every other run is pruned against the reference seed's run on the same stage and seed: a run
whose curve falls behind it stops early, ``pruned``); every evaluation goes through the
:class:`~evoopt.campaign.evaluation.EvaluationService`, which commits it to SQLite as it
arrives; ``tell`` the strategy; commit the generation and the strategy state.

Resume: the strategy state is committed only at generation boundaries, so a resumed campaign
re-asks the interrupted generation, gets the same candidates (seeded RNG, the seed genomes as
stored), finds the evaluations already committed and pays only for the missing ones. With the
serial evaluator the resumed campaign ends with exactly the individuals and fitnesses of an
uninterrupted one. :class:`~evoopt.campaign.orchestrator.CampaignRunner` runs the search, then
the refinement and the finish.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from evoopt.campaign.common import WallClock, aggregate_fitness, aggregate_ok
from evoopt.campaign.config import CampaignConfig, Stage, top_fraction
from evoopt.campaign.evaluation import EvaluationService, Pruning
from evoopt.campaign.store import CampaignStore
from evoopt.campaign.tasks import CampaignTasks
from evoopt.genome import Genome
from evoopt.genome.behaviour import behaviour_hash
from evoopt.stats import mean_std
from evoopt.strategy.strategy import Candidate, Strategy


@dataclass
class _Tracked:
    """A candidate and what the search knows of it during its generation."""

    candidate: Candidate
    eval_hash: str  # hash under which its evaluations are stored (its representative's)
    scores: dict[str, float] = field(default_factory=dict)  # stage -> mean fitness
    ses: dict[str, float] = field(default_factory=dict)  # stage -> SE of that mean (0: 1 seed)
    stage_index: int = -1
    failed: bool = False  # a run at the last stage it reached was not ok (by status)
    pruned: bool = False  # ... and every such run was pruned
    stopped: bool = False
    cached: bool = False  # a duplicate (by hash or behaviour) of an earlier individual


class SearchRunner:
    """The generations of one campaign (module docstring), resumed from ``store``.

    ``seeds``: the campaign's seed genomes in ``config.seeds`` order; ``clock``: the campaign's
    wall time, recorded at every generation boundary.
    """

    def __init__(self, config: CampaignConfig, store: CampaignStore,
                 service: EvaluationService, tasks: CampaignTasks, seeds: Sequence[Genome],
                 clock: WallClock) -> None:
        self.config = config
        self.store = store
        self.service = service
        self.tasks = tasks
        self.seeds = list(seeds)
        self.clock = clock
        p = config.pruning
        self.pruning = None if not p.enabled else Pruning(
            self.seeds[config.seeds.index(p.reference)], p)

    def run(self) -> Strategy:
        """Run (or resume) generations until the last or a spent budget; the strategy after."""
        strategy = self._strategy()
        self._rebuild_dedupe(strategy.generation)
        while strategy.generation < self.config.generations and not self._budget_spent():
            self._generation(strategy)
        return strategy

    def _strategy(self) -> Strategy:
        state = self.store.get_meta("strategy_state")
        if state is not None:
            return Strategy.from_state(self.config.strategy, self.seeds, state)
        return Strategy(self.config.strategy, self.seeds, rng_seed=self.config.seed)

    def _budget_spent(self) -> bool:
        """The evaluation budget (rows) or the compute budget (training steps run) is spent."""
        cfg = self.config
        if 0 < cfg.max_evaluations <= len(self.store.evaluations()):
            return True
        return 0 < cfg.max_train_steps <= self.store.train_steps()

    def _rebuild_dedupe(self, before_generation: int) -> None:
        rows = sorted(self.store.individuals(), key=lambda r: (r["generation"], r["uid"]))
        for r in rows:
            if r["generation"] < before_generation:
                self.service.identities.register(r["uid"], r["hash"], r["behaviour_hash"])

    # -- one generation -----------------------------------------------------------------------
    def _generation(self, strategy: Strategy) -> None:
        t0 = time.time()
        gen = strategy.generation
        counters = self.service.counters
        cached_before, saved_before, done_before = counters.cached, counters.saved, counters.done
        tracked = []
        for c in strategy.ask():
            canonical, behaviour = c.genome.hash, behaviour_hash(c.genome)
            rep, eval_hash, kind = self.service.identities.register(c.uid, canonical, behaviour)
            self.store.add_individual(
                uid=c.uid, generation=c.generation, operator=c.operator, parents=list(c.parents),
                genome=c.genome.to_dict(), hash=canonical, behaviour_hash=behaviour,
                formula=c.genome.formula(), status="pending", change=c.change,
                cached_from=rep if kind else None, cache_kind=kind, created_at=time.time())
            tracked.append(_Tracked(c, eval_hash, cached=kind is not None))
        self.service.report_progress(gen, "evaluating")
        stages = self.config.stages
        for index, stage in enumerate(stages):
            alive = [t for t in tracked if not t.stopped]
            if index > 0:
                threshold = self._hurdle(stage.hurdle, index - 1, tracked)
                prev = stages[index - 1].name
                for t in alive:
                    if not self._exempt(t, stage) and t.scores[prev] < threshold:
                        t.stopped = True
                        self.service.count_saved(sum(len(s.seeds) for s in stages[index:]))
                alive = [t for t in alive if not t.stopped]
            self._run_stage(index, alive)
        results = []
        for t in tracked:
            stage = stages[t.stage_index]
            score = t.scores[stage.name]
            status = ("pruned" if t.pruned else "failed" if t.failed
                      else "stopped_at_hurdle" if t.stopped
                      else "cached" if t.cached else "evaluated")
            self.store.update_individual(t.candidate.uid, fitness=score,
                                         stage_reached=stage.name, status=status)
            # ranked on a lower confidence bound when [selection] confidence > 0
            told = score - self.config.strategy.confidence * t.ses.get(stage.name, 0.0)
            results.append((t.candidate.uid, (float(t.stage_index), float(told))))
        strategy.tell(results)
        scores = [t.scores[stages[t.stage_index].name] for t in tracked]
        mean, std = mean_std(scores)
        best = max(tracked, key=lambda t: (t.stage_index, t.scores[stages[t.stage_index].name]))
        self.store.add_generation(
            generation=gen, best=max(scores), median=statistics.median(scores),
            mean=mean, std=std, best_uid=best.candidate.uid, n_individuals=len(tracked),
            n_evaluated=counters.done - done_before, n_cached=counters.cached - cached_before,
            n_saved_by_hurdles=counters.saved - saved_before,
            wall_time_s=time.time() - t0, finished_at=time.time())
        self.store.set_meta("strategy_state", strategy.get_state())
        self.clock.record()
        self.service.report_progress(gen, "done")

    def _exempt(self, t: _Tracked, stage: Stage) -> bool:
        """Whether ``t`` enters ``stage`` whatever its score: a seed, unless the stage makes
        seeds face its hurdle; the pruning reference always (the yardstick of the stage)."""
        if t.candidate.operator != "seed":
            return False
        return stage.seeds_exempt or (self.pruning is not None
                                      and t.eval_hash == self.service.eval_hash(
                                          self.pruning.reference))

    def _hurdle(self, rule: str | float, prev_index: int, tracked: list[_Tracked]) -> float:
        prev = self.config.stages[prev_index]
        if isinstance(rule, float):
            return rule
        if rule == "none":
            return -float("inf")
        if rule == "median":
            return statistics.median(t.scores[prev.name] for t in tracked
                                     if prev.name in t.scores)
        fraction = top_fraction(rule)
        if fraction is not None:  # by rank: the best ceil(F * n) go on (ties go on together)
            ranked = sorted((t.scores[prev.name] for t in tracked if prev.name in t.scores),
                            reverse=True)
            return ranked[max(1, math.ceil(fraction * len(ranked))) - 1]
        # a seed genome's score at the previous stage (the seed as stored, under its eval hash)
        seed = self.seeds[self.config.seeds.index(rule)]
        rows = self.store.find_evaluations(self.service.eval_hash(seed), prev.name,
                                           self.config.fitness.split)
        if not rows:
            return -float("inf")
        return statistics.fmean(r["fitness"] for r in rows)

    def _run_stage(self, index: int, alive: list[_Tracked]) -> None:
        stage = self.config.stages[index]
        split = self.config.fitness.split
        mix = self.tasks.stages[index]
        batches: list[tuple[list[_Tracked], Pruning | None]] = [(alive, None)]
        if self.pruning is not None:  # the seeds first, unpruned: the reference's curves
            batches = [([t for t in alive if t.candidate.operator == "seed"], None),
                       ([t for t in alive if t.candidate.operator != "seed"], self.pruning)]
        for batch, pruning in batches:
            if batch:
                self.service.evaluate(
                    [(t.candidate.uid, t.candidate.genome, t.eval_hash) for t in batch],
                    stage.name, mix, stage.seeds, split, pruning)
        for t in alive:
            rows = {r["seed"]: r for r in self.store.find_evaluations(t.eval_hash, stage.name,
                                                                       split)}
            stage_rows = [rows[s] for s in stage.seeds]
            t.scores[stage.name] = aggregate_fitness(stage_rows)
            values = [float(r["fitness"]) for r in stage_rows]
            t.ses[stage.name] = (statistics.stdev(values) / math.sqrt(len(values))
                                 if aggregate_ok(stage_rows) and len(values) > 1 else 0.0)
            t.failed = not aggregate_ok(stage_rows)
            bad = [r["status"] for r in stage_rows if r["status"] != "ok"]
            t.pruned = bool(bad) and all(b == "pruned" for b in bad)
            t.stage_index = index


__all__ = ["SearchRunner"]
