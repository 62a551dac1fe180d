"""Running a campaign: the search, then the refinement, then the finish, all through one
evaluation service on one store.

:class:`CampaignRunner` checks the inputs (seed genomes, tasks, data), opens (or resumes) the
store in the campaign directory, makes the
:class:`~evoopt.campaign.evaluation.EvaluationService`, and runs
:class:`~evoopt.campaign.runner.SearchRunner` (the generations),
:func:`~evoopt.campaign.refine.refine_best` and
:func:`~evoopt.campaign.finish.finish_campaign` in turn; none of them sees the others.

The seed genomes are stored when a campaign begins; a resumed campaign uses those (it never
re-reads a seed file, which may have been edited or removed since), so every candidate it
re-asks and every hash it looks up are the ones its store holds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from evoopt.campaign.common import (
    SEED_GENOMES_META,
    TASK_INFO_META,
    WallClock,
    resolve_seed,
)
from evoopt.campaign.config import CampaignConfig, same_campaign
from evoopt.campaign.evaluation import CampaignEvaluate, EvaluationService, ProgressHook
from evoopt.campaign.finish import SearchOutcome, finish_campaign, ranked_individuals
from evoopt.campaign.refine import refine_best
from evoopt.campaign.runner import SearchRunner
from evoopt.campaign.store import DB_NAME, CampaignStore, StoreCorruptError
from evoopt.campaign.tasks import CampaignTasks
from evoopt.evaluator import Evaluator, RayEvaluator, SerialEvaluator
from evoopt.fileio import check_directory
from evoopt.fitness import load_task
from evoopt.fitness.multitask import REFERENCE_SEED
from evoopt.fitness.runner import task_info
from evoopt.genome import Genome, GenomeError


def make_evaluator(config: CampaignConfig, data_dir: str | None, address: str | None = None,
                   serial: bool = False, tasks: CampaignTasks | None = None) -> Evaluator:
    """The evaluator ``config.ray`` asks for (``serial``: in-process, whatever it says).

    A Ray pool gets ``hard_timeout_s = 2 x`` the longest ``time_limit_s`` of every task the
    campaign runs (``tasks``, else loaded from ``config``) ``+ 60 s``: a backstop that kills
    and replaces an actor hung where the task's own time limit cannot reach (native code)."""
    ray = config.ray
    if serial or not ray.enabled:
        return SerialEvaluator(data_dir=data_dir)
    tasks = tasks if tasks is not None else CampaignTasks.load(config)
    longest = max(float(t["time_limit_s"]) for t in tasks.task_dicts())
    cluster = address or ray.address
    return RayEvaluator(num_workers=ray.num_workers or None, address=cluster,
                        data_dir=data_dir, cpus_per_worker=ray.cpus_per_worker,
                        gpus_per_worker=ray.gpus_per_worker,
                        hard_timeout_s=2 * longest + 60,
                        runtime_env=user_code_env(tasks.task_dicts()) if cluster else None)


def user_code_env(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The Ray runtime environment that ships the user's task files to a cluster's workers:
    ``working_dir`` = the folder holding every task file named by an entry (and the files
    next to them that they import), ``EVOOPT_ENTRY_ROOT`` = that folder as the driver sees it
    (so a worker reads ``/driver/path/my_task.py`` from its copy). None when no task is a
    file: built-in tasks and module entries (which must be importable on every node)."""
    from evoopt.fitness.entry import ENTRY_ROOT_VAR, parse_entry

    files = []
    for task in tasks:
        ref = parse_entry(task["entry"]) if task.get("entry") else None
        if ref is not None and ref.kind == "file" and ref.path is not None:
            files.append(ref.path)
    if not files:
        return None
    root = Path(os.path.commonpath([str(p.parent) for p in files]))
    if root == Path(root.anchor):
        raise ValueError(f"the task files {', '.join(map(str, files))} share no folder but the "
                         "file system's root: put them under one folder to ship them to the "
                         "cluster's workers")
    return {"working_dir": str(root), "env_vars": {ENTRY_ROOT_VAR: str(root)}}


def campaign_task_info(config: CampaignConfig) -> dict[str, dict[str, Any]]:
    """What each of the campaign's tasks scores (:func:`~evoopt.fitness.runner.task_info`,
    with its name), by the config's task reference: stored, for reports."""
    refs = [*config.fitness.selection_tasks, *config.final.heldout_tasks]
    return {ref: {"name": (spec := load_task(ref)).name, **task_info(spec)} for ref in refs}


def preflight(config: CampaignConfig, data_dir: str | None, *, seeds: bool = True) -> None:
    """Check everything a campaign needs before a store, a worker or an evaluation exists: its
    seed genomes (unless ``seeds`` is false: a resume uses the stored ones), its tasks, and the
    data (present, readable, and large enough for each task's split). Raises GenomeError,
    TaskError (``ValueError``) or DataError."""
    if seeds:
        for name in config.seeds:
            resolve_seed(name)
    CampaignTasks.load(config).check_data(data_dir)


class CampaignRunner:
    """Runs (or resumes) one campaign in ``out_dir`` (module docstring)."""

    def __init__(self, config: CampaignConfig, out_dir: str | Path, *,
                 data_dir: str | None = None, evaluator: Evaluator | None = None,
                 progress: ProgressHook | None = None) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.data_dir = data_dir
        self.evaluator = evaluator
        self.progress = progress
        # inputs first: a bad seed or task must not leave a store behind
        self.tasks = CampaignTasks.load(config)
        check_directory(self.out_dir, "campaign directory")
        read = None if (self.out_dir / DB_NAME).exists() else _read_seeds(config)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.store = CampaignStore(self.out_dir)
        try:
            stored = self.store.get_meta("config")
            if stored is not None and not same_campaign(stored, config):
                raise ValueError(f"{self.out_dir} holds a different campaign; resume it with "
                                 "`evoopt resume` or choose another --out")
            self.seeds = _stored_seeds(self.store, config) or read or _read_seeds(config)
        except BaseException:
            self.store.close()
            raise
        self.service: EvaluationService | None = None  # made by run(), on its evaluator

    def close(self) -> None:
        """Close the campaign store (checkpointing SQLite's WAL into the one store file)."""
        self.store.close()

    def __enter__(self) -> CampaignRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self) -> dict[str, Any]:
        """Run to the end (or resume); return the summary written to the store."""
        cfg, store = self.config, self.store
        # Fail (or download) here, once, rather than in every worker's first evaluation; before
        # the config is stored, so the store of a campaign that could not start stays reusable.
        self.tasks.check_data(self.data_dir)
        owns_evaluator = self.evaluator is None
        if self.evaluator is None:
            self.evaluator = make_evaluator(cfg, self.data_dir, tasks=self.tasks)
        try:  # every worker imports every task's code before anything is paid or stored
            self.evaluator.preflight(self.tasks.task_dicts())
        except BaseException:
            if owns_evaluator:
                self.evaluator.close()
            raise
        store.set_meta("config", cfg.to_dict())
        if store.get_meta(SEED_GENOMES_META) is None:
            store.set_meta(SEED_GENOMES_META, [g.to_dict() for g in self.seeds])
        store.set_meta(TASK_INFO_META, campaign_task_info(cfg))
        store.set_meta("data_dir", self.data_dir)
        store.set_meta("state", "running")
        store.set_meta("pid", os.getpid())
        if store.get_meta("started_at") is None:
            store.set_meta("started_at", time.time())
        clock = WallClock(store)
        self.service = EvaluationService(
            store, self.evaluator, reference=self.seeds[cfg.seeds.index(REFERENCE_SEED)],
            progress=self.progress, generations=cfg.generations)
        try:
            search = SearchRunner(cfg, store, self.service, self.tasks, self.seeds, clock)
            summary = self._refine_and_finish(search.run().generation)
        except BaseException:
            store.set_meta("state", "interrupted")
            raise
        finally:
            clock.record()
            if owns_evaluator:
                self.evaluator.close()
        store.set_meta("state", "finished")
        store.set_meta("finished_at", time.time())
        return summary

    def _refine_and_finish(self, generations: int) -> dict[str, Any]:
        assert self.service is not None
        cfg, store, service = self.config, self.store, self.service
        cached_before = service.counters.cached
        ranked = ranked_individuals(cfg, store)
        t0 = time.time()
        refined = refine_best(CampaignEvaluate(service, cfg, self.tasks.stages), cfg, store,
                              self.out_dir, ranked[0], generations)
        outcome = SearchOutcome(generations, ranked, refined, time.time() - t0, cached_before)
        return finish_campaign(service, cfg, store, self.tasks, self.seeds, self.out_dir,
                               outcome)


def _read_seeds(config: CampaignConfig) -> list[Genome]:
    """The seed genomes from their names or files (GenomeError when one is bad), as they will
    be stored (through their dict form, so a resumed session starts from the same genomes)."""
    return [Genome.from_dict(resolve_seed(name).to_dict()) for name in config.seeds]


def _stored_seeds(store: CampaignStore, config: CampaignConfig) -> list[Genome] | None:
    """The seed genomes a campaign's store holds (``config.seeds`` order): as stored when it
    began, or, in a store written before they were, generation 0's seed individuals; None when
    the campaign has not begun. A malformed stored genome raises StoreCorruptError."""
    stored = store.get_meta(SEED_GENOMES_META)
    if stored is None:
        rows = [r for r in store.individuals(0) if r["operator"] == "seed"]
        if len(rows) != len(config.seeds):
            return None
        stored = [r["genome"] for r in rows]
    if not isinstance(stored, list) or len(stored) != len(config.seeds):
        raise StoreCorruptError(f"{store.path}: stored seed genomes: expected "
                                f"{len(config.seeds)} genomes (campaign.seeds), "
                                f"got {stored!r:.200}")
    try:
        return [Genome.from_dict(d, source=f"stored seed {name!r}")
                for name, d in zip(config.seeds, stored, strict=True)]
    except GenomeError as e:
        raise StoreCorruptError(f"{store.path}: stored seed genomes: {e}") from None


__all__ = ["CampaignRunner", "make_evaluator", "preflight"]
