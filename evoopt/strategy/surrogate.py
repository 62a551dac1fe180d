"""Surrogate-assisted screening: a model of every told candidate predicts which child to pay for.

After BANANAS (White et al. 2021) and the predictors of NAS benchmarks: before a child is paid
for, ``pool`` children are proposed and the one the model ranks best is kept. The model is a
distance-weighted k-nearest-neighbour regression over :func:`genome_features`, a sparse encoding
of a genome's structure (one indicator per slot kind and term kind) and hyperparameters (each on
its registry scale, divided by its search range, so a whole range counts as much as a change of
kind). The target is the told fitness ``(stage reached, score)`` folded to ``stage + score``, so
a candidate that earned a later stage ranks above every one that did not.

Pure numpy and the registry: no training, no Ray, no SQLite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from evoopt.genome import Genome
from evoopt.genome.genome import Block
from evoopt.genome.primitives import BLOCK_SLOTS, LR, HParam

Features = dict[str, float]


def _scaled(h: HParam, value: float) -> float | None:
    """``value`` on ``h``'s scale, in units of its search range (None: no position there)."""
    if h.search is None:
        return None
    lo, hi = h.search
    if h.scale == "log":
        if value <= 0 or lo <= 0:
            return None
        return (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
    if h.scale == "log1m":
        if value >= 1:
            return None
        return (math.log(1 - value) - math.log(1 - lo)) / (math.log(1 - hi) - math.log(1 - lo))
    return (value - lo) / (hi - lo) if hi > lo else None


def _block(prefix: str, block: Block, out: Features, weight: float = 1.0) -> None:
    key = f"{prefix}{block.slot}.{block.kind}"
    out[key] = out.get(key, 0.0) + weight
    for h in block.primitive.hparams:
        value = block[h.name]
        name = f"{key}.{h.name}"
        if h.is_bool:
            out[name] = out.get(name, 0.0) + float(bool(value)) * weight
            continue
        x = _scaled(h, float(value))
        if x is not None:
            out[name] = out.get(name, 0.0) + x * weight


def genome_features(genome: Genome, prefix: str = "") -> Features:
    """A sparse feature dict of ``genome`` (see the module docstring); the ``[matrix]`` rules,
    if any, under the prefix ``matrix/``."""
    out: Features = {f"{prefix}lr": _scaled(LR, genome.lr) or 0.0}
    for slot in BLOCK_SLOTS:
        block = getattr(genome, slot)
        if block is not None:
            _block(prefix, block, out)
    for term in genome.terms:  # terms are a sum: their features add up, order does not matter
        _block(prefix, term, out, 1.0 / len(genome.terms))
    if genome.matrix is not None:
        out.update(genome_features(genome.matrix, prefix="matrix/"))
    return out


class KNNSurrogate:
    """Distance-weighted k-nearest-neighbour regression over feature dicts."""

    def __init__(self, k: int = 5) -> None:
        self.k = k
        self.keys: list[str] = []
        self.x = np.zeros((0, 0))
        self.y = np.zeros(0)

    def fit(self, features: Sequence[Features], targets: Sequence[float]) -> KNNSurrogate:
        self.keys = sorted({k for f in features for k in f})
        self.x = self._matrix(features)
        self.y = np.asarray(targets, dtype=float)
        return self

    def _matrix(self, features: Sequence[Features]) -> np.ndarray:
        index = {k: i for i, k in enumerate(self.keys)}
        m = np.zeros((len(features), len(self.keys)))
        for row, f in enumerate(features):
            for k, v in f.items():
                if k in index:
                    m[row, index[k]] = v
        return m

    def predict(self, features: Sequence[Features]) -> np.ndarray:
        """Predicted targets; a feature no told candidate had adds its value to the distance."""
        q = self._matrix(features)
        known = set(self.keys)
        unseen = np.array([sum(v * v for k, v in f.items() if k not in known)
                           for f in features])
        d = np.sqrt(((q[:, None, :] - self.x[None, :, :]) ** 2).sum(-1) + unseen[:, None])
        k = min(self.k, len(self.y))
        near = np.argsort(d, axis=1)[:, :k]
        w = 1.0 / (np.take_along_axis(d, near, axis=1) + 1e-3)
        return (w * self.y[near]).sum(1) / w.sum(1)


__all__ = ["Features", "KNNSurrogate", "genome_features"]
