"""The runtime helpers of generated optimizer code, as real (linted, type-hinted) functions.

The step functions that :mod:`evoopt.genome.program` renders call these helpers; the renderer
*vendors* them: it copies the source of the helpers a program needs, and of the helpers those
call (:data:`USES`, declared by :class:`helper`), into the rendered text, without the decorator
line. So the interpreter runs the same text the exporter prints, and an exported module stays
standalone (it never imports evoopt). This module therefore imports only torch and typing, and
each helper may name only ``torch``, ``Tensor``, ``math``, builtins and other helpers.
"""

# The helpers' text is what generated modules print, pinned byte for byte by the golden digests
# of tests/test_legacy_identities.py; the exported modules are checked without SIM rules.
# ruff: noqa: SIM108

from __future__ import annotations

from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor


class _Function(Protocol):
    __name__: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


_F = TypeVar("_F", bound=_Function)

#: Every helper's name -> the names of the helpers it calls, in the order they are vendored
#: (before it).
USES: dict[str, tuple[str, ...]] = {}


class helper:
    """Decorator: registers a function as a runtime helper that calls the helpers ``uses``
    (which must be registered before it, so that the dependency graph has no cycle)."""

    def __init__(self, *, uses: tuple[_Function, ...] = ()) -> None:
        missing = [f.__name__ for f in uses if f.__name__ not in USES]
        if missing:
            raise ValueError(f"helper uses unregistered helpers {missing}")
        self.uses = tuple(f.__name__ for f in uses)

    def __call__(self, function: _F) -> _F:
        if function.__name__ in USES:
            raise ValueError(f"helper {function.__name__} is registered twice")
        USES[function.__name__] = self.uses
        return function


def closure(*names: str) -> list[str]:
    """The helpers ``names`` and every helper they call, directly or not, each once, in the
    order they are vendored: a helper's ``uses`` (in order) before it, then the next name."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name not in order:
            for used in USES[name]:
                visit(used)
            order.append(name)

    for name in names:
        visit(name)
    return order


# Muon's orthogonalization, as torch.optim.Muon (Keller Jordan's quintic Newton–Schulz
# coefficients, 5 steps in bfloat16, eps 1e-7, adjust_lr_fn "original") for a tensor of 2 or
# more dims taken as its (out, -1) matrix, as Muon treats conv kernels.
@helper()
def _orthogonalize(update: Tensor) -> Tensor:
    """The update as an (out, -1) matrix, orthogonalized by 5 Newton-Schulz steps in bfloat16
    towards U V^T of its SVD U S V^T, scaled by sqrt(max(1, rows / cols)) (torch.optim.Muon's
    learning-rate adjustment), in the update's shape and dtype. An update without elements
    (a dimension 0) is returned as it is: the parameter stays unchanged, as torch.optim.Muon
    leaves a (0, n) matrix (its (n, 0) case divides by zero)."""
    if update.numel() == 0:
        return update
    a, b, c = 3.4445, -4.7750, 2.0315
    x = update.reshape(len(update), -1)
    rows, cols = x.shape
    x = x.bfloat16()
    if rows > cols:
        x = x.T
    x = x.div(x.norm().clamp(min=1e-7))  # spectral norm at most 1
    for _ in range(5):
        gram = x @ x.T
        gram_update = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, gram_update, x, beta=a)
    if rows > cols:
        x = x.T
    return x.reshape(update.shape).to(update.dtype).mul_(max(1, rows / cols) ** 0.5)


# AdaHessian's curvature input (Yao et al. 2021): Hutchinson estimates of the Hessian diagonal
# from Rademacher probes, with the paper's spatial averaging of conv kernels.
@helper()
def _hutchinson_diagonals(
    params: list[Tensor], grads: list[Tensor], probe_seeds: list[int]
) -> list[Tensor]:
    """Hutchinson estimates D = z * (H z) of the Hessian diagonal, one per parameter, with a
    Rademacher probe z (entries +-1) drawn from a generator seeded by probe_seeds[i]; for a
    tensor of 3 or more dims, the mean of |D| over its dims after the second (AdaHessian's
    spatial averaging of conv kernels), in the tensor's shape. H z is the gradient of
    sum(g * z) through the gradients' graph: call loss.backward(create_graph=True) first.
    """
    with_graph = [i for i, g in enumerate(grads) if g.grad_fn is not None]
    if not with_graph:
        raise RuntimeError(
            "this optimizer takes Hessian-vector products but the gradients carry no graph: "
            "call loss.backward(create_graph=True) before step()"
        )
    probes = []
    for p, probe_seed in zip(params, probe_seeds, strict=True):
        generator = torch.Generator(device=p.device).manual_seed(probe_seed)
        bits = torch.randint(0, 2, p.shape, generator=generator, device=p.device)
        probes.append(bits.to(p.dtype).mul_(2).sub_(1))
    with torch.enable_grad():
        products = torch.autograd.grad(
            [grads[i] for i in with_graph],
            params,
            grad_outputs=[probes[i] for i in with_graph],
            materialize_grads=True,
        )
    diagonals = []
    for z, hz in zip(probes, products, strict=True):
        d = hz.mul_(z)
        if d.dim() >= 3:
            d = d.abs_().mean(dim=tuple(range(2, d.dim())), keepdim=True).expand_as(z)
        diagonals.append(d)
    return diagonals


@helper()
def _probe_seed(seed: int, index: int, step: int) -> int:
    """The seed of the Hutchinson probe of the optimizer's parameter index (counting over
    all param groups) at its step (from 1): a function of these alone, so that a run is
    reproducible and resumes exactly from a state_dict."""
    return (seed * 0x9E3779B1 + index * 0x85EBCA6B + step) % 2**63


@helper(uses=(_hutchinson_diagonals, _probe_seed))
def _hessian_diagonals(optimizer: torch.optim.Optimizer) -> dict[Tensor, Tensor]:
    """_hutchinson_diagonals for every parameter of the optimizer that has a gradient, from
    one Hessian-vector product over all its param groups; the probe of a parameter is seeded
    by its group's seed, its index over all groups and its coming step count.
    """
    params, grads, probe_seeds = [], [], []
    index = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                state = optimizer.state[p]
                step = int(state["step"]) + 1 if "step" in state else 1
                params.append(p)
                grads.append(p.grad)
                probe_seeds.append(_probe_seed(group["seed"], index, step))
            index += 1
    if not params:
        return {}
    with torch.enable_grad():
        diagonals = _hutchinson_diagonals(params, grads, probe_seeds)
    return dict(zip(params, diagonals, strict=True))


# The global-norm clip of a genome's ``clip`` table, before any op.
@helper()
def _clip_grads_by_global_norm(
    grads: list[Tensor], max_norm: float, foreach: bool
) -> list[Tensor]:
    """Scaled copies of grads whose joint L2 norm is at most max_norm (no host sync)."""
    if foreach:
        norms = torch._foreach_norm(grads)
    else:
        norms = [torch.linalg.vector_norm(g) for g in grads]
    total = torch.linalg.vector_norm(torch.stack(norms))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    if foreach:
        return list(torch._foreach_mul(grads, coef))
    return [g.mul(coef) for g in grads]


# The foreach path's partition of the parameters: by role (matrix: ``ROLES['matrix']`` of
# evoopt.genome.program) and step count, or by step count alone.
@helper()
def _by_step_and_role(
    steps: list[Tensor] | None, *lists: list[Tensor]
) -> list[tuple[float, bool, tuple[list[Tensor], ...]]]:
    """The lists split by their parameter's role (matrix: 2 or more dims; lists[0] holds
    the parameters) and step count: a part's parameters share one update rule and step."""
    keys = [(0.0 if steps is None else steps[i].item(), p.dim() >= 2)
            for i, p in enumerate(lists[0])]
    parts: dict[tuple[float, bool], list[int]] = {}
    for i, key in enumerate(keys):
        parts.setdefault(key, []).append(i)
    return [(step, matrix, tuple([xs[i] for i in index] for xs in lists))
            for (step, matrix), index in parts.items()]


@helper()
def _by_step(
    steps: list[Tensor], *lists: list[Tensor]
) -> list[tuple[float, tuple[list[Tensor], ...]]]:
    """The lists split by their parameter's step count: one part unless some parameter's
    gradient started late."""
    values = [s.item() for s in steps]
    parts: dict[float, list[int]] = {}
    for i, value in enumerate(values):
        parts.setdefault(value, []).append(i)
    if len(parts) == 1:
        return [(values[0], lists)]
    return [(v, tuple([xs[i] for i in index] for xs in lists)) for v, index in parts.items()]
