"""Sampling and perturbing genomes through the registry's declared ranges and scales.

The genome space is defined once, by :func:`random_genome` and :func:`random_block`, as a
define-by-run sequence of named choices made through a :class:`Choices`: :class:`RngChoices`
draws them from an explicit ``numpy.random.Generator`` (random search, the strategy's operators,
property-based tests); an Optuna trial can make the same named choices
(``evoopt.fitness.optuna_search.TrialChoices``), so TPE searches exactly the space random search
samples. Nothing touches a global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from evoopt.genome.genome import Block, Genome
from evoopt.genome.primitives import LR, MAX_TERMS, REGISTRY, HParam

_TO = {"linear": lambda x: x, "log": math.log, "log1m": lambda x: math.log(1.0 - x)}
_FROM = {"linear": lambda y: y, "log": math.exp, "log1m": lambda y: 1.0 - math.exp(y)}


class Choices(Protocol):
    """The named choices the genome space is made of. ``name`` identifies a choice by its path
    in the space (``term1.momentum.weight``): the same name always means the same distribution,
    as a define-by-run Optuna space requires."""

    def integer(self, name: str, low: int, high: int) -> int:
        """An integer in ``[low, high]``, uniform."""

    def category(self, name: str, options: Sequence[str]) -> str:
        """One of ``options``, uniform."""

    def flag(self, name: str, p: float) -> bool:
        """True with probability ``p``."""

    def uniform(self, name: str, low: float, high: float) -> float:
        """A float in ``[low, high]``, uniform (callers pass bounds on a hyperparameter's scale)."""


class RngChoices:
    """:class:`Choices` drawn from a ``numpy.random.Generator`` (names are ignored)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def integer(self, name: str, low: int, high: int) -> int:
        return int(self.rng.integers(low, high + 1))

    def category(self, name: str, options: Sequence[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def flag(self, name: str, p: float) -> bool:
        return bool(self.rng.random() < p)

    def uniform(self, name: str, low: float, high: float) -> float:
        return float(self.rng.uniform(low, high))


def as_choices(source: Choices | np.random.Generator) -> Choices:
    """``source`` itself, or a Generator wrapped in :class:`RngChoices`."""
    return RngChoices(source) if isinstance(source, np.random.Generator) else source


def _search_bounds(h: HParam) -> tuple[float, float]:
    assert h.search is not None, f"{h.name} has no search range"
    return _TO[h.scale](h.search[0]), _TO[h.scale](h.search[1])


def _clamp_valid(h: HParam, x: float) -> float:
    lo, hi = h.search  # type: ignore[misc]
    return float(min(max(x, min(lo, h.low if math.isfinite(h.low) else lo)),
                     max(hi, h.high if math.isfinite(h.high) else hi)))


def choose_hparam(h: HParam, choices: Choices, name: str) -> float | bool:
    """A value of ``h`` uniform on its scale over its search range (a linear range starting at
    0 gives exactly 0 three times in ten), chosen as ``name``."""
    if h.is_bool:
        return choices.flag(name, 0.5)
    a, b = sorted(_search_bounds(h))
    if (h.scale == "linear" and h.search and h.search[0] == 0.0
            and choices.flag(f"{name}.zero", 0.3)):
        return 0.0
    return float(_FROM[h.scale](choices.uniform(name, a, b)))


def sample_hparam(h: HParam, rng: np.random.Generator) -> float | bool:
    """A value drawn uniformly on the hyperparameter's scale over its search range."""
    return choose_hparam(h, RngChoices(rng), h.name)


def perturb_hparam(h: HParam, value: float | bool, rng: np.random.Generator,
                   sigma: float = 0.25) -> float | bool:
    """A Gaussian step of ``sigma`` × (search range width) on the hyperparameter's scale."""
    if h.is_bool:
        return not value
    a, b = sorted(_search_bounds(h))
    if (h.scale == "log" and value <= 0.0) or (h.scale == "log1m" and value >= 1.0):
        return sample_hparam(h, rng)  # no finite position on this scale: start afresh
    try:
        y = _TO[h.scale](float(value))
    except ValueError:  # e.g. log of 0: restart from a fresh sample
        return sample_hparam(h, rng)
    y += rng.normal(0.0, sigma * (b - a))
    x = _FROM[h.scale](min(max(y, a - (b - a)), b + (b - a)))
    x = _clamp_valid(h, x)
    try:
        return h.check(x, h.name)
    except ValueError:
        return sample_hparam(h, rng)


def random_block(slot: str, source: Choices | np.random.Generator, kind: str | None = None,
                 name: str | None = None) -> Block:
    """A block of ``slot`` (of ``kind``, or a kind chosen as ``<name>.kind``) with every
    hyperparameter chosen on its scale; a term's ``normalize`` is true half the time more."""
    choices, name = as_choices(source), name or slot
    kinds = sorted(REGISTRY[slot])
    kind = kind or choices.category(f"{name}.kind", kinds)
    prim = REGISTRY[slot][kind]
    values = {h.name: choose_hparam(h, choices, f"{name}.{kind}.{h.name}")
              for h in prim.hparams}
    if slot == "terms" and "normalize" in values and choices.flag(f"{name}.{kind}.normalize+",
                                                                  0.5):
        values["normalize"] = True
    return Block(slot, kind, tuple(sorted(values.items())))


def complete(genome_parts: dict, source: Choices | np.random.Generator) -> Genome:
    """Add the state tables the terms need (random kinds) and drop the ones they don't."""
    choices = as_choices(source)
    terms: tuple[Block, ...] = genome_parts["terms"]
    needed = set().union(*(t.needs() for t in terms))
    for slot in ("momentum", "grad_diff", "second_moment"):
        if slot in needed and genome_parts.get(slot) is None:
            genome_parts[slot] = random_block(slot, choices)
        elif slot not in needed:
            genome_parts[slot] = None
    return Genome(**genome_parts)


def random_genome(source: Choices | np.random.Generator, max_terms: int = MAX_TERMS) -> Genome:
    """A random valid genome: 1..max_terms terms, the state they need, optional decay, clipping
    and transform. The genome space of random search and of TPE over genomes."""
    c = as_choices(source)
    n_terms = c.integer("terms", 1, max_terms)
    parts: dict = {
        "lr": float(choose_hparam(LR, c, "lr")),
        "terms": tuple(random_block("terms", c, name=f"term{i}") for i in range(n_terms)),
        "schedule": random_block("schedule", c),
        "weight_decay": random_block("weight_decay", c) if c.flag("weight_decay", 0.5) else None,
        "clip": random_block("clip", c) if c.flag("clip", 0.2) else None,
        "transform": random_block("transform", c) if c.flag("transform", 0.1) else None,
    }
    return complete(parts, c)
