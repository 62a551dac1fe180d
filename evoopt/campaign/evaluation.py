"""The campaign's evaluation service: every evaluation the search, the refinement and the finish
ask for goes through one store-backed :class:`EvaluationService`, which never pays twice.

An evaluation is keyed by (eval hash, stage, seed, split): the eval hash is the canonical hash
of the genome whose evaluations stand for the asker (its own, or an earlier individual's that
has the same canonical form or computes the same updates: :class:`IdentityIndex`). One already
in the store is reused; a missing one runs on the evaluator and is committed as it arrives.
:class:`CampaignEvaluate` is the same service as a
:data:`~evoopt.fitness.protocol.EvaluateFn` for the tuning protocols (baselines, Optuna, TPE).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from evoopt.campaign.common import aggregate_fitness
from evoopt.campaign.config import FINAL_STAGE, CampaignConfig, PruningConfig
from evoopt.campaign.store import CampaignStore
from evoopt.evaluator import EvalOutcome, EvalRequest, Evaluator
from evoopt.fitness import WORST_FITNESS
from evoopt.fitness.curves import PruneRule
from evoopt.fitness.multitask import REFERENCE_SEED, TaskMix, combine
from evoopt.fitness.runner import curve_direction
from evoopt.genome import Genome
from evoopt.stats import mean_std

ProgressHook = Callable[[dict[str, Any]], None]
#: Who asks for an evaluation: (uid it is committed under, genome, eval hash).
Asker = tuple[str, Genome, str]


@dataclass
class EvaluationCounters:
    """What the service did (``done`` counts the store's evaluations, earlier sessions' too)."""

    done: int = 0  # evaluations in the store
    cached: int = 0  # asked for but found stored (or already pending) under the same eval hash
    saved: int = 0  # spared by the search's hurdles (counted by the search)
    running: int = 0  # submitted, not yet back
    train_steps: int = 0  # training steps run by the evaluations paid in this session

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Pruning:
    """In-run pruning of an evaluation: each (task, seed) run against ``reference``'s stored
    run on the same stage, task, seed and split, by ``settings`` (``[pruning]``, whose
    ``reference`` names the seed genome ``reference`` is). A run with no stored ok reference
    run to compare with goes to the end."""

    reference: Genome
    settings: PruningConfig


class IdentityIndex:
    """Whose evaluations stand for an individual: the first registered with its canonical hash,
    else the first with its behavioural hash (the same updates), else its own."""

    def __init__(self) -> None:
        self._by_hash: dict[str, tuple[str, str]] = {}  # canonical hash -> (uid, eval hash)
        self._by_behaviour: dict[str, tuple[str, str]] = {}

    def register(self, uid: str, canonical: str, behaviour: str) -> tuple[str, str, str | None]:
        """(representative uid, eval hash, cache kind or None) for an individual, registering
        it: ``"hash"`` or ``"behaviour"`` when an earlier individual stands for it."""
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

    def eval_hash(self, canonical: str) -> str:
        """The hash the evaluations of a genome with this canonical hash are stored under."""
        return self._by_hash.get(canonical, ("", canonical))[1]


class EvaluationService:
    """Store-backed evaluation on one evaluator (module docstring).

    ``reference``: the seeded genome multi-task fitness is normalised by (the campaign's
    ``adam``); ``progress`` is called with :attr:`counters` as evaluations finish;
    ``generations`` is the campaign's, for progress reports.
    """

    def __init__(self, store: CampaignStore, evaluator: Evaluator, *, reference: Genome,
                 progress: ProgressHook | None = None, generations: int = 0) -> None:
        self.store = store
        self.evaluator = evaluator
        self.reference = reference
        self.identities = IdentityIndex()
        self.counters = EvaluationCounters(done=len(store.evaluations()))
        self._progress = progress or (lambda info: None)
        self._generations = generations

    def evaluate(self, who: Sequence[Asker], stage: str, mix: TaskMix, seeds: Sequence[int],
                 split: str, pruning: Pruning | None = None) -> None:
        """Make sure every (eval hash, stage, seed, split) of ``who`` is in the store, paying once.

        A missing evaluation is run on the evaluator (one request per task of ``mix``, in
        parallel where the evaluator can) and committed under the asker's uid as soon as its
        last task arrives; one already stored under the same eval hash is reused (counted in
        ``counters.cached``). With several tasks, the reference is evaluated first on the same
        stage, seeds and split, and each row's fitness is
        :func:`~evoopt.fitness.multitask.combine`'s. With ``pruning``, each run is pruned
        against the pruning reference's stored run (:class:`Pruning`); the reference's own
        runs never are.
        """
        seeds = tuple(int(s) for s in seeds)
        if mix.multi:
            self._evaluate([(self._reference_uid(), self.reference, self._reference_hash())],
                           stage, mix, seeds, split)
        self._evaluate(list(who), stage, mix, seeds, split, pruning)

    def eval_hash(self, genome: Genome) -> str:
        """The hash ``genome``'s evaluations are stored under (its representative's)."""
        return self.identities.eval_hash(genome.hash)

    def count_saved(self, n: int) -> None:
        """Count ``n`` evaluations a hurdle spared (reported with the others)."""
        self.counters.saved += n

    def report_progress(self, generation: int | None, phase: str,
                        outcome: EvalOutcome | None = None) -> None:
        """Call the progress hook with the counters (``phase``: evaluating, done, final,
        ``heldout:<task>``)."""
        self._progress({"generation": generation, "phase": phase, **self.counters.to_dict(),
                        "generations": self._generations,
                        "last": outcome.result if outcome else None})

    # -- internals -----------------------------------------------------------------------------
    def _reference_hash(self) -> str:
        return self.eval_hash(self.reference)

    def _reference_uid(self) -> str:
        """The uid of the reference's seed individual (``reference:<name>`` before it exists)."""
        return next((r["uid"] for r in self.store.individuals(0)
                     if r["operator"] == "seed" and r["hash"] == self.reference.hash),
                    f"reference:{REFERENCE_SEED}")

    def _reference_fitness(self, stage: str, seed: int, split: str,
                           mix: TaskMix) -> dict[str, float]:
        """Per task, the reference's fitness at (stage, seed, split); where it failed on that
        seed, its mean over the seeds it finished at that stage and split."""
        rows = self.store.find_evaluations(self._reference_hash(), stage, split)
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

    def _prune_rules(self, pruning: Pruning | None, stage: str, mix: TaskMix, split: str
                     ) -> dict[tuple[int, str], dict[str, Any]]:
        """(seed, task name) -> the :class:`PruneRule` dict of a run, from the pruning
        reference's stored ok runs at (stage, split)."""
        if pruning is None:
            return {}
        rules = {}
        p = pruning.settings
        for row in self.store.find_evaluations(self.eval_hash(pruning.reference), stage, split):
            for task in mix.tasks:
                run = row["tasks"].get(task.name, {}) if mix.multi and row.get("tasks") else row
                curve = run.get("train_loss_curve") or []
                if run.get("status") != "ok" or not curve:
                    continue
                rules[(int(row["seed"]), task.name)] = PruneRule(
                    reference=tuple(curve), total_steps=task.steps,
                    direction=curve_direction(task), margin=p.margin, after=p.after,
                    window=p.window, label=p.reference).to_dict()
        return rules

    def _evaluate(self, who: list[Asker], stage: str, mix: TaskMix, seeds: tuple[int, ...],
                  split: str, pruning: Pruning | None = None) -> None:
        # one pending evaluation per (eval hash, stage, seed, split); one request per task
        pending: dict[str, tuple[str, str, int, dict[str, dict[str, Any]]]] = {}
        requests: dict[str, tuple[EvalRequest, str, str]] = {}
        rules = self._prune_rules(pruning, stage, mix, split)
        exempt = self.eval_hash(pruning.reference) if pruning is not None else None
        for uid, genome, eval_hash in who:
            have = {r["seed"]: r for r in self.store.find_evaluations(eval_hash, stage, split)}
            for seed in seeds:
                key = f"{eval_hash}/{stage}/{seed}/{split}"
                if seed in have:
                    if have[seed]["uid"] != uid:
                        self.counters.cached += 1
                elif key in pending:
                    self.counters.cached += 1
                else:
                    pending[key] = (uid, eval_hash, seed, {})
                    for task in mix.tasks:
                        task_key = f"{key}/{task.name}" if mix.multi else key
                        rule = None if eval_hash == exempt else rules.get((seed, task.name))
                        requests[task_key] = (EvalRequest(
                            key=task_key, genome=genome.to_dict(), task=task.to_dict(),
                            seed=seed, split=split, prune=rule), key, task.name)
        for request, _, _ in requests.values():
            self.evaluator.submit(request)
        self.counters.running = len(pending)
        for outcome in self.evaluator.results():
            _, key, task_name = requests[outcome.key]
            uid, eval_hash, seed, results = pending[key]
            results[task_name] = {**outcome.result, "worker": outcome.worker}
            if len(results) < len(mix.tasks):
                continue
            reference = None
            if mix.multi and all(r.get("status") == "ok" for r in results.values()):
                reference = ({n: results[n]["fitness"] for n in mix.names}  # itself: 0
                             if eval_hash == self._reference_hash()
                             else self._reference_fitness(stage, seed, split, mix))
            row = combine(mix, results, reference)
            row["worker"] = ",".join(sorted({str(r["worker"]) for r in results.values()}))
            self._commit(row, uid, eval_hash, stage, seed, split)
            self.counters.running -= 1
            self.counters.done += 1
            self.counters.train_steps += int(row.get("steps") or 0)
            self.report_progress(None, "evaluating", outcome=outcome)

    def _commit(self, r: dict[str, Any], uid: str, eval_hash: str, stage: str, seed: int,
                split: str) -> None:
        self.store.add_evaluation(
            uid=uid, hash=eval_hash, stage=stage, seed=seed, split=split,
            fitness=float(r.get("fitness", WORST_FITNESS)),
            val_accuracy=r.get("val_accuracy"), val_loss=r.get("val_loss"),
            status=r.get("status", "error"), message=r.get("message", ""),
            steps=r.get("steps", 0), wall_time_s=r.get("wall_time_s", 0.0),
            worker=r.get("worker"), train_loss_curve=r.get("train_loss_curve", []),
            tasks=r.get("tasks"), threads=r.get("threads"), value=r.get("value"),
            created_at=time.time())


def seed_scores(store: CampaignStore, eval_hash: str, seeds: Sequence[int], split: str = "val",
                stage: str = FINAL_STAGE) -> dict[str, Any]:
    """Per-seed fitness of the evaluations stored under ``eval_hash`` at (stage, split), in
    ``seeds`` order (a missing seed counts as the worst), and summaries: ``aggregate`` (any
    failed or missing seed makes it the worst), means, per-task means of a task mix."""
    by_seed = {e["seed"]: e for e in store.find_evaluations(eval_hash, stage, split)}
    evs = [by_seed[s] for s in seeds if s in by_seed]
    per_seed = [float(by_seed[s]["fitness"]) if s in by_seed else WORST_FITNESS for s in seeds]
    mean, std = mean_std(per_seed)
    acc, _ = mean_std([e["val_accuracy"] for e in evs])
    ok = [e for e in evs if e["status"] == "ok"]
    value, value_std = mean_std([e.get("value") for e in ok]) if ok else (None, None)
    return {"aggregate": aggregate_fitness(evs) if len(evs) == len(seeds) else WORST_FITNESS,
            "fitness_mean": mean, "fitness_std": std, "accuracy_mean": acc,
            "value_mean": value, "value_std": value_std,
            "per_seed": per_seed, "n_seeds": len(evs), "tasks": _task_means(evs)}


def _task_means(evs: list[dict[str, Any]]) -> dict[str, dict[str, Any]] | None:
    """A multi-task evaluation's per-task means over seeds: fitness (the task's own score, not
    normalised), accuracy and loss, over the seeds whose run of that task finished."""
    if not evs or not all(e.get("tasks") for e in evs):
        return None
    out = {}
    for name in evs[0]["tasks"]:
        runs = [e["tasks"].get(name, {}) for e in evs]
        ok = [r for r in runs if r.get("status") == "ok"]
        out[name] = {"fitness_mean": mean_std([r["fitness"] for r in ok])[0],
                     "accuracy_mean": mean_std([r["val_accuracy"] for r in ok])[0],
                     "loss_mean": mean_std([r["val_loss"] for r in ok])[0],
                     "n_ok": len(ok), "n": len(runs)}
    return out


class CampaignEvaluate:
    """The :data:`~evoopt.fitness.protocol.EvaluateFn` of a campaign: every (item, seed) goes
    through ``service.evaluate`` (already stored evaluations are reused) under the item's key as
    uid and its genome's canonical hash.

    ``stage`` indexes the campaign's stages (``stage_mixes``: their tasks); an evaluation on the
    final seeds (disjoint from every stage's seeds) is stored under stage ``final`` at the last
    stage's task, like the candidates' re-evaluation. With ``fixed = (stage name, tasks)`` every
    evaluation goes there instead (a held-out task: one stage name for its sweep and its final
    seeds, which are disjoint).
    """

    def __init__(self, service: EvaluationService, config: CampaignConfig,
                 stage_mixes: Sequence[TaskMix], fixed: tuple[str, TaskMix] | None = None
                 ) -> None:
        self.service = service
        self.config = config
        self.stage_mixes = tuple(stage_mixes)
        self.fixed = fixed

    @classmethod
    def at(cls, service: EvaluationService, config: CampaignConfig, stage: str,
           mix: TaskMix) -> CampaignEvaluate:
        """Every evaluation at stage ``stage`` on ``mix`` (``fixed``), whatever its seeds."""
        return cls(service, config, (), fixed=(stage, mix))

    def __call__(self, items: list[tuple[str, Genome]], seeds: Sequence[int], split: str,
                 stage: int = -1) -> dict[str, list[float]]:
        stages = self.config.stages
        seed_list = tuple(int(s) for s in seeds)
        index = stage % len(stages)
        if self.fixed is not None:
            name, task = self.fixed
        elif set(seed_list) <= set(self.config.final.seeds):
            name, task = FINAL_STAGE, self.stage_mixes[-1]
        else:
            name, task = stages[index].name, self.stage_mixes[index]
        self.service.evaluate([(key, g, g.hash) for key, g in items], name, task, seed_list,
                              split)
        return {key: seed_scores(self.service.store, g.hash, seed_list, split, name)["per_seed"]
                for key, g in items}


__all__ = ["Asker", "CampaignEvaluate", "EvaluationCounters", "EvaluationService",
           "IdentityIndex", "ProgressHook", "Pruning", "seed_scores"]
