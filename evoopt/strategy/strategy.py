"""Ask/tell evolution strategy over genomes, with explicit state and a seeded generator.

The strategy knows genomes and fitness values only: no Ray, no SQLite, no training. Fitness is a
pair ``(stage reached, score at that stage)`` compared lexicographically (DEAP compares
``wvalues`` tuples that way), so a candidate stopped at a cheap hurdle ranks below every
candidate that earned the full budget, and among equals the score decides.

Randomness comes only from ``self.rng`` (a ``numpy.random.Generator`` whose state is part of
:meth:`get_state`). DEAP's ``selTournament`` draws aspirants from the global ``random`` module,
so tournaments here draw aspirants with ``self.rng`` and let DEAP's ``selBest`` pick the winner.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from deap import base, tools

from evoopt.genome import Genome
from evoopt.strategy.operators import crossover, mutate


class CampaignFitness(base.Fitness):
    """(stage reached, score): both maximized, compared lexicographically."""

    weights = (1.0, 1.0)


@dataclass
class StrategyConfig:
    population: int = 8
    selection: str = "tournament"  # or "regularized" (aging: the oldest dies)
    tournament_size: int = 3
    elitism: int = 2
    crossover_rate: float = 0.3
    mutation_rates: dict[str, float] = field(default_factory=dict)


@dataclass
class Candidate:
    """An individual proposed by :meth:`Strategy.ask` (lineage fields live here)."""

    uid: str
    genome: Genome
    generation: int
    operator: str  # seed | mutation | crossover | crossover+mutation
    parents: tuple[str, ...] = ()
    change: str = ""


class Member:
    """A population member: a candidate with a DEAP fitness (plain class: pickles cleanly)."""

    def __init__(self, candidate: Candidate, values: tuple[float, float]) -> None:
        self.candidate = candidate
        self.fitness = CampaignFitness(values)

    @property
    def uid(self) -> str:
        return self.candidate.uid


class Strategy:
    """Generational GA with elitism (or regularized evolution) using DEAP selection tools."""

    def __init__(self, config: StrategyConfig, seeds: list[Genome], rng_seed: int) -> None:
        if not seeds:
            raise ValueError("the strategy needs at least one seed genome")
        self.config = config
        self.seeds = list(seeds)
        self.rng = np.random.default_rng(rng_seed)
        self.generation = 0
        self.population: list[Member] = []
        self.pending: dict[str, Candidate] = {}
        self.seen: set[str] = set()

    # -- ask / tell --------------------------------------------------------------------------
    def ask(self) -> list[Candidate]:
        """New candidates of the current generation (elites are kept, not re-proposed)."""
        if self.pending:
            raise RuntimeError("tell() the previous batch before asking again")
        batch = self._initial() if self.generation == 0 else self._offspring()
        self.pending = {c.uid: c for c in batch}
        return batch

    def tell(self, results: list[tuple[str, tuple[float, float]]]) -> None:
        """Fitness of every pending candidate; failed evaluations come as a finite worst value."""
        values = dict(results)
        missing = set(self.pending) - set(values)
        if missing:
            raise ValueError(f"no fitness for {sorted(missing)}")
        for uid, v in values.items():
            if uid not in self.pending or not all(np.isfinite(v)):
                raise ValueError(f"bad tell for {uid}: {v}")
        children = [Member(self.pending[uid], tuple(values[uid])) for uid in self.pending]
        p = self.config.population
        if self.generation == 0:
            keep = {m.uid for m in tools.selBest(children, p)}
            self.population = [m for m in children if m.uid in keep]
        elif self.config.selection == "regularized":
            self.population = (self.population + children)[-p:]
        else:
            elites = tools.selBest(self.population, self.config.elitism)
            self.population = elites + children
        self.pending = {}
        self.generation += 1

    def best(self) -> Member:
        return tools.selBest(self.population, 1)[0]

    # -- variation ---------------------------------------------------------------------------
    def _uid(self, index: int) -> str:
        return f"g{self.generation}-{index:02d}"

    def _initial(self) -> list[Candidate]:
        batch = [Candidate(self._uid(i), g, 0, "seed") for i, g in enumerate(self.seeds)]
        self.seen |= {g.hash for g in self.seeds}
        while len(batch) < self.config.population:
            parent = batch[int(self.rng.integers(len(self.seeds)))]
            child, change = self._novel(lambda p=parent: mutate(p.genome, self.rng,
                                                                 self.config.mutation_rates))
            batch.append(Candidate(self._uid(len(batch)), child, 0, "mutation", (parent.uid,),
                                   change))
        return batch

    def _offspring(self) -> list[Candidate]:
        p = self.config.population
        n = max(1, p // 2) if self.config.selection == "regularized" else p - self.config.elitism
        return [self._child(i) for i in range(n)]

    def _child(self, index: int) -> Candidate:
        cfg = self.config
        if len(self.population) >= 2 and self.rng.random() < cfg.crossover_rate:
            a, b = self._tournament(), self._tournament()
            for _ in range(4):  # a crossover of an individual with itself is a wasted child
                if b.uid != a.uid:
                    break
                b = self._tournament()
            child, change = self._novel(lambda: self._crossover(a, b))
            op = "crossover+mutation" if "; mutation: " in change else "crossover"
            return Candidate(self._uid(index), child, self.generation, op, (a.uid, b.uid), change)
        a = self._tournament()
        child, change = self._novel(lambda: mutate(a.candidate.genome, self.rng,
                                                   cfg.mutation_rates))
        return Candidate(self._uid(index), child, self.generation, "mutation", (a.uid,), change)

    def _crossover(self, a: Member, b: Member) -> tuple[Genome, str]:
        child, change = crossover(a.candidate.genome, b.candidate.genome, self.rng)
        if child.hash in (a.candidate.genome.hash, b.candidate.genome.hash):
            child, more = mutate(child, self.rng, self.config.mutation_rates)
            change = f"{change}; mutation: {more}"
        return child, change

    def _tournament(self) -> Member:
        k = min(self.config.tournament_size, len(self.population))
        picks = self.rng.choice(len(self.population), size=k, replace=False)
        return tools.selBest([self.population[int(i)] for i in picks], 1)[0]

    def _novel(self, make: Any, tries: int = 8) -> tuple[Genome, str]:
        """A child whose canonical hash was never proposed before, if one is found in time."""
        for _ in range(tries):
            child, change = make()
            if child.hash not in self.seen:
                break
        self.seen.add(child.hash)
        return child, change

    # -- state -------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """JSON-able state: resuming from it reproduces every later ask exactly."""
        return {
            "generation": self.generation,
            "rng": copy.deepcopy(self.rng.bit_generator.state),
            "seen": sorted(self.seen),
            "population": [_candidate_dict(m.candidate) | {"fitness": list(m.fitness.values)}
                           for m in self.population],
        }

    @classmethod
    def from_state(cls, config: StrategyConfig, seeds: list[Genome],
                   state: dict[str, Any]) -> Strategy:
        strategy = cls(config, seeds, rng_seed=0)
        strategy.generation = state["generation"]
        strategy.rng.bit_generator.state = state["rng"]
        strategy.seen = set(state["seen"])
        strategy.population = [Member(_candidate_from(d), tuple(d["fitness"]))
                               for d in state["population"]]
        return strategy


def _candidate_dict(c: Candidate) -> dict[str, Any]:
    return {"uid": c.uid, "genome": c.genome.to_dict(), "generation": c.generation,
            "operator": c.operator, "parents": list(c.parents), "change": c.change}


def _candidate_from(d: dict[str, Any]) -> Candidate:
    return Candidate(d["uid"], Genome.from_dict(d["genome"]), d["generation"], d["operator"],
                     tuple(d["parents"]), d["change"])
