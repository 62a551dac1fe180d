"""Small helpers shared by the campaign's modules (importing none of the others but the store)."""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from evoopt.campaign.store import CampaignStore
from evoopt.fileio import names_a_path
from evoopt.fitness import WORST_FITNESS
from evoopt.genome import Genome, load_genome, seed_genome

#: Store meta key of the campaign's seed genomes as they were when it began (config order).
SEED_GENOMES_META = "seed_genomes"
WALL_TIME_META = "wall_time_s"


def resolve_seed(name: str) -> Genome:
    """A seed genome by its bare shipped name (``adam``), or a genome file when ``name`` is
    written as a path (:func:`evoopt.fileio.names_a_path`; ``~`` is expanded)."""
    return load_genome(os.path.expanduser(name)) if names_a_path(name) else seed_genome(name)


def aggregate_fitness(rows: list[dict[str, Any]]) -> float:
    """Mean fitness over seeds; any failed seed makes the whole evaluation the worst."""
    if not rows or any(r["status"] != "ok" for r in rows):
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


__all__ = ["SEED_GENOMES_META", "WallClock", "aggregate_fitness", "resolve_seed"]
