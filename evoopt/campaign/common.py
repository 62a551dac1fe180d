"""Small helpers shared by the campaign's modules (importing none of the others but the store)."""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from evoopt.campaign.store import CampaignStore
from evoopt.fileio import names_a_path
from evoopt.fitness import WORST_FITNESS
from evoopt.genome import Genome, GenomeError, load_genome, seed_genome

#: Store meta key of the campaign's seed genomes as they were when it began (config order).
SEED_GENOMES_META = "seed_genomes"
WALL_TIME_META = "wall_time_s"
#: Store meta key of what each task's score is (labels, direction), by the config's task
#: reference, written when the campaign begins: reports read it instead of importing task code.
TASK_INFO_META = "task_info"


def resolve_seed(name: str) -> Genome:
    """A seed genome by its bare shipped name (``adam``), or a genome file when ``name`` is
    written as a path (:func:`evoopt.fileio.names_a_path`; ``~`` is expanded)."""
    genome = load_genome(os.path.expanduser(name)) if names_a_path(name) else seed_genome(name)
    if not isinstance(genome, Genome):
        raise GenomeError(f"{name}: a chain genome the slot language cannot express "
                          f"({genome.formula()}); the search's operators work on slot genomes "
                          "until they are rebuilt over chains (issue 18, design step 5): it can "
                          "be evaluated, exported and compared, but not seeded yet")
    return genome


def aggregate_ok(rows: list[dict[str, Any]]) -> bool:
    """Whether an evaluation over seeds succeeded: at least one row, and every row ``ok``.

    Failure is a matter of status, never of the number: an ok row stored before
    :func:`~evoopt.fitness.runner.ok_floor` may equal ``WORST_FITNESS`` (an all-zero task mix)."""
    return bool(rows) and all(r["status"] == "ok" for r in rows)


def aggregate_fitness(rows: list[dict[str, Any]]) -> float:
    """Mean fitness over seeds; any failed seed (:func:`aggregate_ok`) makes the whole
    evaluation the worst (``WORST_FITNESS``)."""
    if not aggregate_ok(rows):
        return WORST_FITNESS
    return statistics.fmean(r["fitness"] for r in rows)


class WallClock:
    """A campaign's wall time over all its sessions (however each ended): the earlier sessions'
    total, read from the store when this one starts, plus this one's so far, written back by
    :meth:`record` (at every generation boundary and at the end)."""

    def __init__(self, store: CampaignStore) -> None:
        self.store = store
        self.before = float(store.get_meta(WALL_TIME_META, 0.0) or 0.0)
        self.started = time.time()

    def record(self) -> None:
        self.store.set_meta(WALL_TIME_META, self.before + time.time() - self.started)


__all__ = ["SEED_GENOMES_META", "TASK_INFO_META", "WallClock", "aggregate_fitness",
           "aggregate_ok", "resolve_seed"]
