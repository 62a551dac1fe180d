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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from deap import base, tools

from evoopt.genome import Genome, GenomeError
from evoopt.genome.primitives import MAX_TERMS
from evoopt.genome.sampling import random_genome
from evoopt.strategy.operators import crossover, mutate_op, resolve_rates
from evoopt.strategy.surrogate import KNNSurrogate, genome_features

_Made = tuple[Genome, str, str]  # (child, what changed, operator)


class CampaignFitness(base.Fitness):
    """(stage reached, score): both maximized, compared lexicographically."""

    weights = (1.0, 1.0)


@dataclass
class StrategyConfig:
    population: int = 8
    selection: str = "tournament"  # or "regularized" (aging: the oldest dies)
    tournament_size: int = 3
    elitism: int = 2
    # selection ranks on mean - confidence x SE over the seeds at the stage reached (0: on the
    # mean); the campaign applies it when telling (the strategy sees one number a candidate)
    confidence: float = 0.0
    crossover_rate: float = 0.3
    mutation_rates: dict[str, float] = field(default_factory=dict)  # merged with the defaults
    max_terms: int = MAX_TERMS
    lr_screen: tuple[float, ...] = ()  # lr multiples also tried for every new structure
    initial_random: int = 0  # random genomes in generation 0 beside the seeds (and their screens)
    adapt_rates: bool = False  # mutation rates scaled by each operator's measured success
    surrogate_pool: int = 1  # children proposed per child paid for; a surrogate keeps the best
    surrogate_after: int = 16  # told candidates before the surrogate is trusted


@dataclass
class Candidate:
    """An individual proposed by :meth:`Strategy.ask` (lineage fields live here)."""

    uid: str
    genome: Genome
    generation: int
    operator: str  # "seed", a mutation operator's name, "crossover" or "crossover+<mutation>"
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
        self.seen: set[str] = set()  # canonical hashes ever proposed
        self.structures: set[str] = set()  # structures ever proposed (Genome.structure)
        # per mutation operator: [children told, children better than their parent]
        self.operator_record: dict[str, list[int]] = {}
        # every told candidate's features and folded fitness (stage + score): the surrogate's data
        self.told: list[tuple[dict[str, float], float]] = []

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
        self._record_operators(children)
        if self.config.surrogate_pool > 1:
            self.told += [(genome_features(m.candidate.genome), float(sum(m.fitness.values)))
                          for m in children]
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

    # -- adaptive operator rates -----------------------------------------------------------
    def _record_operators(self, children: list[Member]) -> None:
        """Count, per mutation operator, its children and those that beat their (first) parent
        as the population holds it (lexicographic fitness: stage reached, then score)."""
        known = {m.uid: m.fitness.values for m in self.population}
        for child in children:
            c = child.candidate
            op = c.operator.removeprefix("crossover+")
            if op in ("seed", "random", "crossover") or not c.parents or c.parents[0] not in known:
                continue
            record = self.operator_record.setdefault(op, [0, 0])
            record[0] += 1
            record[1] += int(child.fitness.values > known[c.parents[0]])

    def mutation_rates(self) -> dict[str, float]:
        """The rates mutation draws operators by: the configured ones, each scaled (with
        ``adapt_rates``) by its operator's success rate over the mean success rate, both with a
        Beta(1, 1) prior, clipped to [0.25, 4]: probability matching with a floor, so no
        operator dies of a few unlucky children."""
        rates = resolve_rates(self.config.mutation_rates)
        if not self.config.adapt_rates or not self.operator_record:
            return rates
        told = sum(r[0] for r in self.operator_record.values())
        better = sum(r[1] for r in self.operator_record.values())
        mean = (better + 1) / (told + 2)
        out = {}
        for name, rate in rates.items():
            n, k = self.operator_record.get(name, (0, 0))
            out[name] = rate * min(4.0, max(0.25, (k + 1) / (n + 2) / mean))
        return out

    # -- variation ---------------------------------------------------------------------------
    def _uid(self, index: int) -> str:
        return f"g{self.generation}-{index:02d}"

    def _initial(self) -> list[Candidate]:
        """The seeds, then ``initial_random`` random genomes, then the seeds at the ``lr_screen``
        multiples of their lr, then mutations of the seeds, up to the population."""
        batch = [Candidate(self._uid(i), g, 0, "seed") for i, g in enumerate(self.seeds)]
        self.seen |= {g.hash for g in self.seeds}
        for _ in range(min(self.config.initial_random, self.config.population - len(batch))):
            made = self._novel(lambda: (random_genome(self.rng, self.config.max_terms).canonical(),
                                        "random genome", "random"))
            self.structures.add(made[0].structure)
            batch.append(Candidate(self._uid(len(batch)), made[0], 0, "random", (), made[1]))
        for i, seed in enumerate(self.seeds):  # a seed's default lr is not tuned for this task
            made = (seed.canonical(), "", "lr_screen")
            batch += self._screened(made, (batch[i].uid,), len(batch),
                                    self.config.population - len(batch), with_itself=False)
        while len(batch) < self.config.population:
            parent = batch[int(self.rng.integers(len(self.seeds)))]
            made = self._novel(lambda p=parent: self._mutation(p.genome))
            batch += self._screened(made, (parent.uid,), len(batch),
                                    self.config.population - len(batch))
        return batch

    def _offspring(self) -> list[Candidate]:
        p = self.config.population
        n = max(1, p // 2) if self.config.selection == "regularized" else p - self.config.elitism
        batch: list[Candidate] = []
        surrogate = self._surrogate()
        while len(batch) < n:
            made, parents = self._child()
            if surrogate is not None:  # propose more children, pay for the one ranked best
                pool = [(made, parents)] + [self._child()
                                            for _ in range(self.config.surrogate_pool - 1)]
                scores = surrogate.predict([genome_features(m[0]) for m, _ in pool])
                made, parents = pool[int(np.argmax(scores))]
            batch += self._screened(made, parents, len(batch), n - len(batch))
        return batch

    def _surrogate(self) -> KNNSurrogate | None:
        if self.config.surrogate_pool <= 1 or len(self.told) < self.config.surrogate_after:
            return None
        return KNNSurrogate().fit([f for f, _ in self.told], [y for _, y in self.told])

    def _child(self) -> tuple[_Made, tuple[str, ...]]:
        """One child of tournament-selected parents: (genome, change, operator), parent uids."""
        cfg = self.config
        if len(self.population) >= 2 and self.rng.random() < cfg.crossover_rate:
            a, b = self._tournament(), self._tournament()
            for _ in range(4):  # a crossover of an individual with itself is a wasted child
                if b.uid != a.uid:
                    break
                b = self._tournament()
            return self._novel(lambda: self._crossover(a, b)), (a.uid, b.uid)
        a = self._tournament()
        return self._novel(lambda: self._mutation(a.candidate.genome)), (a.uid,)

    def _mutation(self, genome: Genome) -> _Made:
        m = mutate_op(genome, self.rng, self.mutation_rates(), max_terms=self.config.max_terms)
        return m.child.canonical(), m.change, m.operator

    def _crossover(self, a: Member, b: Member) -> _Made:
        child, change = crossover(a.candidate.genome, b.candidate.genome, self.rng,
                                  max_terms=self.config.max_terms)
        child = child.canonical()
        if child.hash in (a.candidate.genome.hash, b.candidate.genome.hash):
            child, more, op = self._mutation(child)
            return child, f"{change}; mutation: {more}", f"crossover+{op}"
        return child, change, "crossover"

    def _screened(self, made: _Made, parents: tuple[str, ...], index: int, room: int,
                  with_itself: bool = True) -> list[Candidate]:
        """The child, plus (Lion's practice) the same genome at the ``lr_screen`` multiples of
        its lr when its structure is new, so a structure is not judged by one lr it did not
        choose. At most ``room`` candidates; ``with_itself=False`` leaves the child out (a seed,
        which is proposed already)."""
        genome, change, op = made
        batch = [Candidate(self._uid(index), genome, self.generation, op, parents, change)]
        if genome.structure in self.structures:
            return batch if with_itself else []
        self.structures.add(genome.structure)
        if not with_itself:
            batch = []
        for factor in self.config.lr_screen:
            if len(batch) >= room:
                break
            try:
                sibling = genome.with_lr(genome.lr * factor)
            except GenomeError:  # outside the valid lr range
                continue
            if sibling.hash in self.seen:
                continue
            self.seen.add(sibling.hash)
            batch.append(Candidate(self._uid(index + len(batch)), sibling, self.generation, op,
                                   parents, "; ".join(filter(None, (change, f"lr ×{factor:g}")))))
        return batch

    def _tournament(self) -> Member:
        k = min(self.config.tournament_size, len(self.population))
        picks = self.rng.choice(len(self.population), size=k, replace=False)
        return tools.selBest([self.population[int(i)] for i in picks], 1)[0]

    def _novel(self, make: Callable[[], _Made], tries: int = 8) -> _Made:
        """A child whose canonical hash was never proposed before, if one is found in time."""
        for _ in range(tries):
            made = make()
            if made[0].hash not in self.seen:
                break
        self.seen.add(made[0].hash)
        return made

    # -- state -------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """JSON-able state: resuming from it reproduces every later ask exactly."""
        return {
            "generation": self.generation,
            "rng": copy.deepcopy(self.rng.bit_generator.state),
            "seen": sorted(self.seen),
            "structures": sorted(self.structures),
            "operator_record": {k: list(v) for k, v in sorted(self.operator_record.items())},
            "told": [[f, y] for f, y in self.told],
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
        strategy.structures = set(state.get("structures", ()))
        strategy.operator_record = {k: [int(v[0]), int(v[1])]
                                    for k, v in state.get("operator_record", {}).items()}
        strategy.told = [(dict(f), float(y)) for f, y in state.get("told", ())]
        strategy.population = [Member(_candidate_from(d), tuple(d["fitness"]))
                               for d in state["population"]]
        return strategy


def _candidate_dict(c: Candidate) -> dict[str, Any]:
    return {"uid": c.uid, "genome": c.genome.to_dict(), "generation": c.generation,
            "operator": c.operator, "parents": list(c.parents), "change": c.change}


def _candidate_from(d: dict[str, Any]) -> Candidate:
    return Candidate(d["uid"], Genome.from_dict(d["genome"]), d["generation"], d["operator"],
                     tuple(d["parents"]), d["change"])
