"""Small helpers shared by the campaign runner and its finish (no import of either)."""

from __future__ import annotations

import statistics
from typing import Any

from evoopt.fitness import WORST_FITNESS
from evoopt.genome import Genome, load_genome, seed_genome


def resolve_seed(name: str) -> Genome:
    """A seed genome by shipped name (``adam``) or by file path."""
    return load_genome(name) if name.endswith((".toml", ".json")) else seed_genome(name)


def aggregate_fitness(rows: list[dict[str, Any]]) -> float:
    """Mean fitness over seeds; any failed seed makes the whole evaluation the worst."""
    if not rows or any(r["status"] != "ok" for r in rows):
        return WORST_FITNESS
    return statistics.fmean(r["fitness"] for r in rows)


__all__ = ["aggregate_fitness", "resolve_seed"]
