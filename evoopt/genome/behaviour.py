"""Behavioural hash: genomes that compute the same updates get the same hash.

Following AutoML-Zero's functional-equivalence check, the genome's optimizer is run on a fixed
synthetic problem (a noisy ill-conditioned quadratic, fixed seed, float64) and the rounded
parameter trajectory is hashed. Two genomes that differ only in ways the update cannot see
(dead state, term order, a merged duplicate term, an unused schedule parameter) collide.
"""

from __future__ import annotations

import hashlib

import torch

from evoopt.genome.genome import Genome
from evoopt.genome.interpreter import GenomeOptimizer, backpropagate

PROBE_STEPS = 24
SIGNIFICANT_DIGITS = 7


def probe_trajectory(genome: Genome, steps: int = PROBE_STEPS) -> torch.Tensor:
    """Parameters after each step of ``genome`` on the fixed probe problem, (steps, n)."""
    gen = torch.Generator().manual_seed(20240611)
    shapes = [(6, 5), (5,), (3, 2, 2)]
    targets = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    scales = [torch.rand(s, generator=gen, dtype=torch.float64) * 9 + 0.1 for s in shapes]
    noise = [[torch.randn(s, generator=gen, dtype=torch.float64) * 0.1 for s in shapes]
             for _ in range(steps)]
    params = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in shapes]
    opt = GenomeOptimizer(params, genome, total_steps=steps)
    trajectory = []
    for t in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = sum((c * (p - x) ** 2).sum() for p, x, c in zip(params, targets, scales,
                                                                strict=True))
        backpropagate(loss, params, opt.needs_graph)
        for p, n in zip(params, noise[t], strict=True):
            p.grad.add_(n)
        opt.step()
        trajectory.append(torch.cat([p.detach().flatten() for p in params]))
    return torch.stack(trajectory)


def behaviour_hash(genome: Genome, steps: int = PROBE_STEPS) -> str:
    """16-hex hash of the rounded trajectory of ``genome`` on the fixed probe problem."""
    values = probe_trajectory(genome, steps)
    if not torch.isfinite(values).all():
        text = "non-finite:" + ",".join(str(int(torch.isfinite(v).all())) for v in values)
    else:
        text = ",".join(f"{v:.{SIGNIFICANT_DIGITS - 1}e}" for v in values.flatten().tolist())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def numerically_equivalent(a: Genome, b: Genome, rtol: float = 1e-9) -> bool:
    """Whether two genomes follow the same probe trajectory to a relative error of ``rtol``."""
    ta, tb = probe_trajectory(a), probe_trajectory(b)
    if not (torch.isfinite(ta).all() and torch.isfinite(tb).all()):
        return bool(torch.equal(torch.isfinite(ta), torch.isfinite(tb)))
    scale = tb.abs().max().clamp_min(1e-300)
    return bool(((ta - tb).abs().max() / scale) <= rtol)
