"""The campaign runner: ties strategy, evaluator and store together, generation by generation.

Per generation: ``ask`` the strategy; dedupe every candidate (canonical hash, then behavioural
hash) against everything already seen; run the fidelity stages — stage 0 for all, later stages
only for candidates that clear the stage's hurdle; commit each finished evaluation to SQLite as
it arrives; ``tell`` the strategy; commit the generation and the strategy state.

Resume: the strategy state is committed only at generation boundaries, so a resumed campaign
re-asks the interrupted generation, gets the same candidates (seeded RNG), finds the
evaluations already committed and pays only for the missing ones. With the serial evaluator the
resumed campaign ends with exactly the individuals and fitnesses of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evoopt.campaign.common import aggregate_fitness, resolve_seed
from evoopt.campaign.config import CampaignConfig, top_fraction
from evoopt.campaign.finish import finish_campaign
from evoopt.campaign.store import CampaignStore
from evoopt.evaluator import EvalOutcome, EvalRequest, Evaluator, RayEvaluator, SerialEvaluator
from evoopt.fileio import check_directory
from evoopt.fitness import WORST_FITNESS, check_task_data, load_task
from evoopt.fitness.multitask import REFERENCE_SEED, TaskMix, combine, weights_for
from evoopt.genome import Genome
from evoopt.genome.behaviour import behaviour_hash
from evoopt.stats import mean_std
from evoopt.strategy.strategy import Candidate, Strategy, StrategyConfig

ProgressHook = Callable[[dict[str, Any]], None]


def make_evaluator(config: CampaignConfig, data_dir: str | None, address: str | None = None,
                   serial: bool = False) -> Evaluator:
    if serial or not config.ray_enabled:
        return SerialEvaluator(data_dir=data_dir)
    return RayEvaluator(num_workers=config.ray_num_workers or None,
                        address=address or config.ray_address, data_dir=data_dir,
                        cpus_per_worker=config.ray_cpus_per_worker,
                        gpus_per_worker=config.ray_gpus_per_worker)


def same_campaign(stored: dict[str, Any], config: CampaignConfig) -> bool:
    """Whether a store's config is ``config``: a field added since the store was written
    counts as its default (so a campaign stored before a new option still resumes)."""
    def plain(d: dict[str, Any]) -> Any:
        return json.loads(json.dumps(d))

    try:
        filled = CampaignConfig.from_dict(stored).to_dict()
    except ValueError:
        return False
    return plain(filled) == plain(config.to_dict())


def stage_tasks(config: CampaignConfig) -> list[TaskMix]:
    """The tasks of each fidelity stage (each selection task with the campaign's overrides, then
    the stage's), weighted as the config says."""
    names = config.selection_tasks
    base = TaskMix(tuple(load_task(n) for n in names), weights_for(names, config.task_weights))
    base = base.with_overrides(**config.task_overrides)
    return [base.with_overrides(**s.overrides) for s in config.stages]


def heldout_tasks(config: CampaignConfig) -> list[TaskMix]:
    """Each held-out task (``final.heldout_tasks``) as shipped, a mix of one."""
    return [TaskMix.single(load_task(n)) for n in config.final_heldout_tasks]


def preflight(config: CampaignConfig, data_dir: str | None) -> None:
    """Check everything a campaign needs before a store, a worker or an evaluation exists: its
    seed genomes, its stage tasks, and the data (present, readable, and large enough for each
    task's split). Raises GenomeError, TaskError (``ValueError``) or DataError."""
    for name in config.seeds:
        resolve_seed(name)
    check_stage_data([*stage_tasks(config), *heldout_tasks(config)], data_dir)


def check_stage_data(mixes: list[TaskMix], data_dir: str | None) -> None:
    """The data each distinct task reads is present, readable and large enough for its split
    (DataError otherwise); the data is loaded once and cached for later runs."""
    tasks = [t for mix in mixes for t in mix.tasks]
    for task in {json.dumps(t.to_dict(), sort_keys=True): t for t in tasks}.values():
        check_task_data(task, data_dir)


@dataclass
class _Tracked:
    """A candidate and what the runner knows of it during its generation."""

    candidate: Candidate
    eval_hash: str  # hash under which its evaluations are stored (its representative's)
    scores: dict[str, float] = field(default_factory=dict)  # stage -> mean fitness
    stage_index: int = -1
    stopped: bool = False
    cached: bool = False  # a duplicate (by hash or behaviour) of an earlier individual


class CampaignRunner:
    """Runs (or resumes) one campaign in ``out_dir``."""

    def __init__(self, config: CampaignConfig, out_dir: str | Path, *,
                 data_dir: str | None = None, evaluator: Evaluator | None = None,
                 progress: ProgressHook | None = None) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.data_dir = data_dir
        self.evaluator = evaluator
        self.progress = progress or (lambda info: None)
        # inputs first: a bad seed or task must not leave a store behind
        self.seeds = [resolve_seed(name) for name in config.seeds]
        self.stage_tasks: list[TaskMix] = stage_tasks(config)
        self.heldout_tasks: list[TaskMix] = heldout_tasks(config)
        check_directory(self.out_dir, "campaign directory")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.store = CampaignStore(self.out_dir)
        stored = self.store.get_meta("config")
        if stored is not None and not same_campaign(stored, config):
            self.store.close()
            raise ValueError(f"{self.out_dir} holds a different campaign; resume it with "
                             "`evoopt resume` or choose another --out")
        self.counters = {"done": 0, "cached": 0, "saved": 0, "running": 0}
        self._by_hash: dict[str, tuple[str, str]] = {}  # canonical hash -> (uid, eval hash)
        self._by_behaviour: dict[str, tuple[str, str]] = {}

    def close(self) -> None:
        """Close the campaign store (checkpointing SQLite's WAL into the one store file)."""
        self.store.close()

    def __enter__(self) -> CampaignRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- entry point ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run to the end (or resume); return the summary written to the store."""
        cfg, store = self.config, self.store
        # Fail (or download) here, once, rather than in every worker's first evaluation; before
        # the config is stored, so the store of a campaign that could not start stays reusable.
        check_stage_data([*self.stage_tasks, *self.heldout_tasks], self.data_dir)
        store.set_meta("config", cfg.to_dict())
        store.set_meta("data_dir", self.data_dir)
        store.set_meta("state", "running")
        store.set_meta("pid", os.getpid())
        if store.get_meta("started_at") is None:
            store.set_meta("started_at", time.time())
        # wall time of earlier sessions of this campaign (however they ended) plus this one's,
        # recorded at every generation boundary and at the end
        self._wall_before = float(store.get_meta("wall_time_s", 0.0) or 0.0)
        self._t_start = time.time()
        strategy = self._strategy()
        self._rebuild_dedupe(strategy.generation)
        self.counters["done"] = len(store.evaluations())
        owns_evaluator = self.evaluator is None
        if self.evaluator is None:
            self.evaluator = make_evaluator(cfg, self.data_dir)
        try:
            while strategy.generation < cfg.generations and not self._budget_spent():
                self._generation(strategy)
            summary = self._finish(strategy)
        except BaseException:
            store.set_meta("state", "interrupted")
            raise
        finally:
            self._record_wall_time()
            if owns_evaluator:
                self.evaluator.close()
        store.set_meta("state", "finished")
        store.set_meta("finished_at", time.time())
        return summary

    def _record_wall_time(self) -> None:
        self.store.set_meta("wall_time_s", self._wall_before + time.time() - self._t_start)

    def _strategy(self) -> Strategy:
        cfg = self.config
        scfg = StrategyConfig(population=cfg.population, selection=cfg.selection,
                              tournament_size=cfg.tournament_size, elitism=cfg.elitism,
                              crossover_rate=cfg.crossover_rate,
                              mutation_rates=dict(cfg.mutation_rates),
                              max_terms=cfg.max_terms, lr_screen=tuple(cfg.lr_screen),
                              initial_random=cfg.initial_random, adapt_rates=cfg.adapt_rates,
                              surrogate_pool=cfg.surrogate_pool)
        state = self.store.get_meta("strategy_state")
        if state is not None:
            return Strategy.from_state(scfg, self.seeds, state)
        return Strategy(scfg, self.seeds, rng_seed=cfg.seed)

    def _budget_spent(self) -> bool:
        """The evaluation budget (rows) or the compute budget (training steps run) is spent."""
        cfg = self.config
        if 0 < cfg.max_evaluations <= len(self.store.evaluations()):
            return True
        return 0 < cfg.max_train_steps <= self.store.train_steps()

    # -- dedupe --------------------------------------------------------------------------------
    def _rebuild_dedupe(self, before_generation: int) -> None:
        rows = sorted(self.store.individuals(), key=lambda r: (r["generation"], r["uid"]))
        for r in rows:
            if r["generation"] < before_generation:
                self._register(r["uid"], r["hash"], r["behaviour_hash"])

    def _register(self, uid: str, canonical: str, behaviour: str) -> tuple[str, str, str | None]:
        """(representative uid, eval hash, cache kind or None) for an individual, registering it."""
        if canonical in self._by_hash:
            rep, eval_hash = self._by_hash[canonical]
            return rep, eval_hash, "hash" if rep != uid else None
        if behaviour in self._by_behaviour:
            rep, eval_hash = self._by_behaviour[behaviour]
            self._by_hash[canonical] = (rep, eval_hash)
            return rep, eval_hash, "behaviour" if rep != uid else None
        self._by_hash[canonical] = (uid, canonical)
        self._by_behaviour[behaviour] = (uid, canonical)
        return uid, canonical, None

    # -- one generation -----------------------------------------------------------------------
    def _generation(self, strategy: Strategy) -> None:
        t0 = time.time()
        gen = strategy.generation
        cached_before, saved_before = self.counters["cached"], self.counters["saved"]
        done_before = self.counters["done"]
        tracked = []
        for c in strategy.ask():
            canonical, behaviour = c.genome.hash, behaviour_hash(c.genome)
            rep, eval_hash, kind = self._register(c.uid, canonical, behaviour)
            self.store.add_individual(
                uid=c.uid, generation=c.generation, operator=c.operator, parents=list(c.parents),
                genome=c.genome.to_dict(), hash=canonical, behaviour_hash=behaviour,
                formula=c.genome.formula(), status="pending", change=c.change,
                cached_from=rep if kind else None, cache_kind=kind, created_at=time.time())
            tracked.append(_Tracked(c, eval_hash, cached=kind is not None))
        self.report_progress(gen, "evaluating")
        for index, stage in enumerate(self.config.stages):
            alive = [t for t in tracked if not t.stopped]
            if index > 0:
                threshold = self._hurdle(stage.hurdle, index - 1, tracked)
                prev = self.config.stages[index - 1].name
                for t in alive:
                    if t.candidate.operator != "seed" and t.scores[prev] < threshold:
                        t.stopped = True
                        self.counters["saved"] += sum(len(s.seeds) for s in
                                                      self.config.stages[index:])
                alive = [t for t in alive if not t.stopped]
            self._run_stage(index, alive)
        results = []
        for t in tracked:
            stage = self.config.stages[t.stage_index]
            score = t.scores[stage.name]
            status = ("failed" if score == WORST_FITNESS else "stopped_at_hurdle" if t.stopped
                      else "cached" if t.cached else "evaluated")
            self.store.update_individual(t.candidate.uid, fitness=score,
                                         stage_reached=stage.name, status=status)
            results.append((t.candidate.uid, (float(t.stage_index), float(score))))
        strategy.tell(results)
        self._commit_generation(gen, tracked, t0, done_before, cached_before, saved_before)
        self.store.set_meta("strategy_state", strategy.get_state())
        self._record_wall_time()
        self.report_progress(gen, "done")

    def _commit_generation(self, gen: int, tracked: list[_Tracked], t0: float,
                           done_before: int, cached_before: int, saved_before: int) -> None:
        scores = [t.scores[self.config.stages[t.stage_index].name] for t in tracked]
        mean, std = mean_std(scores)
        best = max(tracked, key=lambda t: (t.stage_index, t.scores[
            self.config.stages[t.stage_index].name]))
        self.store.add_generation(
            generation=gen, best=max(scores), median=statistics.median(scores),
            mean=mean, std=std,
            best_uid=best.candidate.uid, n_individuals=len(tracked),
            n_evaluated=self.counters["done"] - done_before,
            n_cached=self.counters["cached"] - cached_before,
            n_saved_by_hurdles=self.counters["saved"] - saved_before,
            wall_time_s=time.time() - t0, finished_at=time.time())

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
        seed = resolve_seed(rule)  # a seed genome's score at the previous stage
        rows = self.store.find_evaluations(seed.hash, prev.name, self.config.split)
        if not rows:
            return -float("inf")
        return statistics.fmean(r["fitness"] for r in rows)

    # -- evaluation -----------------------------------------------------------------------------
    def _run_stage(self, index: int, alive: list[_Tracked]) -> None:
        stage = self.config.stages[index]
        task = self.stage_tasks[index]
        self.evaluate_many([(t.candidate.uid, t.candidate.genome, t.eval_hash) for t in alive],
                           stage.name, task, stage.seeds, self.config.split)
        for t in alive:
            rows = {r["seed"]: r for r in self.store.find_evaluations(t.eval_hash, stage.name,
                                                                       self.config.split)}
            t.scores[stage.name] = aggregate_fitness([rows[s] for s in stage.seeds])
            t.stage_index = index

    def evaluate_many(self, who: list[tuple[str, Genome, str]], stage: str, mix: TaskMix,
                      seeds: tuple[int, ...], split: str) -> None:
        """Make sure every (eval hash, stage, seed, split) exists in the store, paying once.

        ``who``: ``(uid, genome, eval hash)``; a missing evaluation is run on the evaluator
        (in parallel where it can: one request per task of ``mix``) and committed under ``uid``
        as soon as its last task arrives; one already stored under the same eval hash is reused
        (counted in ``counters["cached"]``). With several tasks, the reference (the seeded Adam)
        is evaluated first on the same stage, seeds and split, and each row's fitness is
        :func:`~evoopt.fitness.multitask.combine`'s. Public: the finish
        (``evoopt.campaign.finish``) evaluates baselines and searches through it.
        """
        if mix.multi:
            reference = self._reference()
            self._evaluate(
                [(self._seed_uid(reference), reference, self._eval_hash(reference))],
                stage, mix, seeds, split)
        self._evaluate(who, stage, mix, seeds, split)

    def _reference(self) -> Genome:
        return self.seeds[self.config.seeds.index(REFERENCE_SEED)]

    def _eval_hash(self, genome: Genome) -> str:
        """The hash a genome's evaluations are stored under (its representative's)."""
        return self._by_hash.get(genome.hash, ("", genome.hash))[1]

    def _seed_uid(self, genome: Genome) -> str:
        """The uid of the seed individual of ``genome`` (``reference:<name>`` before it exists)."""
        return next((r["uid"] for r in self.store.individuals(0)
                     if r["operator"] == "seed" and r["hash"] == genome.hash),
                    f"reference:{REFERENCE_SEED}")

    def _reference_fitness(self, stage: str, seed: int, split: str,
                           mix: TaskMix) -> dict[str, float]:
        """Per task, the reference's fitness at (stage, seed, split); where it failed on that
        seed, its mean over the seeds it finished at that stage and split."""
        rows = self.store.find_evaluations(self._eval_hash(self._reference()), stage, split)
        out = {}
        for name in mix.names:
            ok = {r["seed"]: r["tasks"][name]["fitness"] for r in rows
                  if r.get("tasks") and r["tasks"].get(name, {}).get("status") == "ok"}
            if not ok:
                raise ValueError(f"multi-task fitness: the reference {REFERENCE_SEED!r} finished "
                                 f"no run of task {name!r} at stage {stage!r} ({split} split), "
                                 "so no score can be normalised by it; is the task trainable "
                                 "by Adam at its default lr?")
            out[name] = ok.get(seed, statistics.fmean(ok.values()))
        return out

    def _evaluate(self, who: list[tuple[str, Genome, str]], stage: str, mix: TaskMix,
                  seeds: tuple[int, ...], split: str) -> None:
        assert self.evaluator is not None
        # one pending evaluation per (eval hash, stage, seed, split); one request per task
        pending: dict[str, tuple[str, str, int, dict[str, dict[str, Any]]]] = {}
        requests: dict[str, tuple[EvalRequest, str, str]] = {}
        for uid, genome, eval_hash in who:
            have = {r["seed"]: r for r in self.store.find_evaluations(eval_hash, stage, split)}
            for seed in seeds:
                key = f"{eval_hash}/{stage}/{seed}/{split}"
                if seed in have:
                    if have[seed]["uid"] != uid:
                        self.counters["cached"] += 1
                elif key in pending:
                    self.counters["cached"] += 1
                else:
                    pending[key] = (uid, eval_hash, seed, {})
                    for task in mix.tasks:
                        task_key = f"{key}/{task.name}" if mix.multi else key
                        requests[task_key] = (EvalRequest(
                            key=task_key, genome=genome.to_dict(), task=task.to_dict(),
                            seed=seed, split=split), key, task.name)
        for request, _, _ in requests.values():
            self.evaluator.submit(request)
        self.counters["running"] = len(pending)
        for outcome in self.evaluator.results():
            _, key, task_name = requests[outcome.key]
            uid, eval_hash, seed, results = pending[key]
            results[task_name] = {**outcome.result, "worker": outcome.worker}
            if len(results) < len(mix.tasks):
                continue
            reference = None
            if mix.multi and all(r.get("status") == "ok" for r in results.values()):
                reference = ({n: results[n]["fitness"] for n in mix.names}  # itself: 0
                             if eval_hash == self._eval_hash(self._reference())
                             else self._reference_fitness(stage, seed, split, mix))
            row = combine(mix, results, reference)
            row["worker"] = ",".join(sorted({str(r["worker"]) for r in results.values()}))
            self._commit_evaluation(row, uid, eval_hash, stage, seed, split)
            self.counters["running"] -= 1
            self.counters["done"] += 1
            self.report_progress(None, "evaluating", outcome=outcome)

    def _commit_evaluation(self, r: dict[str, Any], uid: str, eval_hash: str, stage: str,
                           seed: int, split: str) -> None:
        self.store.add_evaluation(
            uid=uid, hash=eval_hash, stage=stage, seed=seed, split=split,
            fitness=float(r.get("fitness", WORST_FITNESS)),
            val_accuracy=r.get("val_accuracy"), val_loss=r.get("val_loss"),
            status=r.get("status", "error"), message=r.get("message", ""),
            steps=r.get("steps", 0), wall_time_s=r.get("wall_time_s", 0.0),
            worker=r.get("worker"), train_loss_curve=r.get("train_loss_curve", []),
            tasks=r.get("tasks"), created_at=time.time())

    def report_progress(self, generation: int | None, phase: str,
                        outcome: EvalOutcome | None = None) -> None:
        """Call the progress hook with the counters (``phase``: evaluating, done, final)."""
        self.progress({"generation": generation, "phase": phase, **self.counters,
                       "generations": self.config.generations,
                       "last": outcome.result if outcome else None})

    # -- finish --------------------------------------------------------------------------------
    def _finish(self, strategy: Strategy) -> dict[str, Any]:
        return finish_campaign(self, strategy)


__all__ = ["CampaignRunner", "aggregate_fitness", "make_evaluator", "preflight", "resolve_seed",
           "stage_tasks"]
