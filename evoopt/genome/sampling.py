"""Sampling and perturbing genomes through the registry's declared ranges and scales.

All randomness comes from an explicit ``numpy.random.Generator``; nothing touches a global RNG.
Used by the strategy's mutation operators and by property-based tests.
"""

from __future__ import annotations

import math

import numpy as np

from evoopt.genome.genome import Block, Genome
from evoopt.genome.primitives import LR, MAX_TERMS, REGISTRY, HParam

_TO = {"linear": lambda x: x, "log": math.log, "log1m": lambda x: math.log(1.0 - x)}
_FROM = {"linear": lambda y: y, "log": math.exp, "log1m": lambda y: 1.0 - math.exp(y)}


def _search_bounds(h: HParam) -> tuple[float, float]:
    assert h.search is not None, f"{h.name} has no search range"
    return _TO[h.scale](h.search[0]), _TO[h.scale](h.search[1])


def _clamp_valid(h: HParam, x: float) -> float:
    lo, hi = h.search  # type: ignore[misc]
    return float(min(max(x, min(lo, h.low if math.isfinite(h.low) else lo)),
                     max(hi, h.high if math.isfinite(h.high) else hi)))


def sample_hparam(h: HParam, rng: np.random.Generator) -> float | bool:
    """A value drawn uniformly on the hyperparameter's scale over its search range."""
    if h.is_bool:
        return bool(rng.random() < 0.5)
    a, b = sorted(_search_bounds(h))
    if h.scale == "linear" and h.search and h.search[0] == 0.0 and rng.random() < 0.3:
        return 0.0
    return float(_FROM[h.scale](rng.uniform(a, b)))


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


def random_block(slot: str, rng: np.random.Generator, kind: str | None = None) -> Block:
    kinds = sorted(REGISTRY[slot])
    kind = kind or kinds[int(rng.integers(len(kinds)))]
    prim = REGISTRY[slot][kind]
    values = {h.name: sample_hparam(h, rng) for h in prim.hparams}
    if slot == "terms" and "normalize" in values and rng.random() < 0.5:
        values["normalize"] = True
    return Block(slot, kind, tuple(sorted(values.items())))


def complete(genome_parts: dict, rng: np.random.Generator) -> Genome:
    """Add the state tables the terms need (random kinds) and drop the ones they don't."""
    terms: tuple[Block, ...] = genome_parts["terms"]
    needed = set().union(*(t.needs() for t in terms))
    for slot in ("momentum", "grad_diff", "second_moment"):
        if slot in needed and genome_parts.get(slot) is None:
            genome_parts[slot] = random_block(slot, rng)
        elif slot not in needed:
            genome_parts[slot] = None
    return Genome(**genome_parts)


def random_genome(rng: np.random.Generator, max_terms: int = MAX_TERMS) -> Genome:
    """A random valid genome: 1..max_terms terms, the state they need, optional decay/clip."""
    n_terms = int(rng.integers(1, max_terms + 1))
    parts: dict = {
        "lr": float(sample_hparam(LR, rng)),
        "terms": tuple(random_block("terms", rng) for _ in range(n_terms)),
        "schedule": random_block("schedule", rng),
        "weight_decay": random_block("weight_decay", rng) if rng.random() < 0.5 else None,
        "clip": random_block("clip", rng) if rng.random() < 0.2 else None,
        "transform": random_block("transform", rng) if rng.random() < 0.1 else None,
    }
    return complete(parts, rng)
