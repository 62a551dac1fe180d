"""A straight-line tensor program: what the interpreter runs and the exporter prints.

Primitives (:mod:`evoopt.genome.primitives`) emit a :class:`Program` for a genome: scalar
definitions (``lets``, evaluated once per parameter group and step) and tensor operations
(``ops``, applied to every parameter). Two executors run it — one tensor at a time and with
``torch._foreach_*`` kernels — and :mod:`evoopt.genome.export` renders the very same ops as
source code for both paths, so exported code is numerically what was evaluated.

Scalar expressions are Python source written by the primitives in this package (never text
from a genome file); genome numbers reach them only as hyperparameter values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

# Tensor op vocabulary: kind -> (arity of tensor operands, has scalar, writes a new tensor).
# In-place ops (trailing underscore) modify their first operand; the others bind ``out``.
OP_KINDS: dict[str, tuple[int, bool, bool]] = {
    "clone": (1, False, True),  # out = x.clone()
    "neg": (1, False, True),  # out = -x
    "sqrt": (1, False, True),  # out = sqrt(x)
    "sign": (1, False, True),  # out = sign(x)
    "sub": (2, False, True),  # out = x - y
    "add": (2, True, True),  # out = x + s * y
    "mul_": (1, True, False),  # x *= s
    "div_": (1, True, False),  # x /= s
    "adds_": (1, True, False),  # x += s
    "add_": (2, True, False),  # x += s * y
    "lerp_": (2, True, False),  # x += s * (y - x)
    "addcmul_": (3, True, False),  # x += s * y * z
    "addcdiv_": (3, True, False),  # x += s * y / z
    "copy_": (2, False, False),  # x <- y
}


@dataclass(frozen=True)
class Op:
    """One tensor operation. ``args`` are slot names; ``scalar`` a scalar expression or None."""

    kind: str
    out: str | None
    args: tuple[str, ...]
    scalar: str | None = None
    when: str | None = None  # scalar condition: the op runs only when it is true
    # A dead tensor the per-tensor path writes the result into (``out=``) instead of allocating;
    # the foreach path allocates (on CUDA the caching allocator makes that cheap).
    into: str | None = None

    def __post_init__(self) -> None:
        arity, has_scalar, new = OP_KINDS[self.kind]
        if len(self.args) != arity or (self.scalar is not None) != has_scalar:
            raise ValueError(f"malformed op {self}")
        if new != (self.out is not None):
            raise ValueError(f"op {self.kind} {'needs' if new else 'takes no'} output slot")
        if self.into is not None and self.kind not in _INTO:
            raise ValueError(f"op {self.kind} cannot write into an existing tensor")


@dataclass
class Program:
    """Scalar definitions, per-parameter tensor ops and the state buffers they use."""

    lets: list[tuple[str, str]] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    buffers: list[str] = field(default_factory=list)  # per-parameter state, zero-initialized
    clip: str | None = None  # hyperparameter name of the global-norm clip, if any

    def let(self, name: str, expr: str) -> str:
        self.lets.append((name, expr))
        return name

    def op(self, kind: str, *args: str, out: str | None = None, scalar: str | None = None,
           when: str | None = None, into: str | None = None) -> str | None:
        self.ops.append(Op(kind, out, tuple(args), scalar, when, into))
        return out

    def buffer(self, name: str) -> str:
        if name not in self.buffers:
            self.buffers.append(name)
        return name


# ----------------------------------------------------------------------------------------------
# Scalars
SCALAR_GLOBALS: dict[str, object] = {"__builtins__": {}, "math": math, "min": min, "max": max}


class ScalarEvaluator:
    """Evaluates a program's scalar expressions (compiled once) in an environment of floats."""

    def __init__(self, program: Program) -> None:
        exprs = {e for _, e in program.lets}
        exprs |= {o.scalar for o in program.ops if o.scalar is not None}
        exprs |= {o.when for o in program.ops if o.when is not None}
        self._code = {e: compile(e, f"<scalar {e}>", "eval") for e in exprs}
        self._lets = program.lets

    def environment(self, hparams: dict[str, float]) -> dict[str, float]:
        env = dict(hparams)
        for name, expr in self._lets:
            env[name] = self(expr, env)
        return env

    def __call__(self, expr: str, env: dict[str, float]) -> float:
        return eval(self._code[expr], SCALAR_GLOBALS, env)  # noqa: S307 - package-authored source


# ----------------------------------------------------------------------------------------------
# Executors: the same ops on one tensor at a time, or on lists with torch._foreach_* kernels.
Tensors = dict[str, torch.Tensor]
TensorLists = dict[str, list[torch.Tensor]]

_SINGLE: dict[str, Callable[..., torch.Tensor | None]] = {
    "clone": lambda x: x.clone(),
    "neg": lambda x: x.neg(),
    "sqrt": lambda x: x.sqrt(),
    "sign": lambda x: x.sign(),
    "sub": lambda x, y: x.sub(y),
    "add": lambda x, y, s: x.add(y, alpha=s),
    "mul_": lambda x, s: x.mul_(s),
    "div_": lambda x, s: x.div_(s),
    "adds_": lambda x, s: x.add_(s),
    "add_": lambda x, y, s: x.add_(y, alpha=s),
    "lerp_": lambda x, y, s: x.lerp_(y, s),
    "addcmul_": lambda x, y, z, s: x.addcmul_(y, z, value=s),
    "addcdiv_": lambda x, y, z, s: x.addcdiv_(y, z, value=s),
    "copy_": lambda x, y: x.copy_(y),
}

# New-tensor ops that can write into a dead tensor instead: kind -> torch function
_INTO: dict[str, Callable[..., torch.Tensor]] = {
    "sub": lambda x, y, out: torch.sub(x, y, out=out),
    "add": lambda x, y, s, out: torch.add(x, y, alpha=s, out=out),
    "sqrt": lambda x, out: torch.sqrt(x, out=out),
}

_FOREACH: dict[str, Callable[..., list[torch.Tensor] | None]] = {
    "clone": lambda x: [t.clone() for t in x],
    "neg": lambda x: torch._foreach_neg(x),
    "sqrt": lambda x: torch._foreach_sqrt(x),
    "sign": lambda x: torch._foreach_sign(x),
    "sub": lambda x, y: torch._foreach_sub(x, y),
    "add": lambda x, y, s: torch._foreach_add(x, y, alpha=s),
    "mul_": lambda x, s: torch._foreach_mul_(x, s),
    "div_": lambda x, s: torch._foreach_div_(x, s),
    "adds_": lambda x, s: torch._foreach_add_(x, s),
    "add_": lambda x, y, s: torch._foreach_add_(x, y, alpha=s),
    "lerp_": lambda x, y, s: torch._foreach_lerp_(x, y, s),
    "addcmul_": lambda x, y, z, s: torch._foreach_addcmul_(x, y, z, value=s),
    "addcdiv_": lambda x, y, z, s: torch._foreach_addcdiv_(x, y, z, value=s),
    "copy_": lambda x, y: torch._foreach_copy_(x, y),
}


def _run(program: Program, scalars: ScalarEvaluator, env: dict[str, float], slots: dict,
         table: dict[str, Callable]) -> None:
    for op in program.ops:
        if op.when is not None and not scalars(op.when, env):
            continue
        operands = [slots[a] for a in op.args]
        if op.scalar is not None:
            operands.append(scalars(op.scalar, env))
        if op.into is not None and table is _SINGLE:
            result = _INTO[op.kind](*operands, out=slots[op.into])
        else:
            result = table[op.kind](*operands)
        if op.out is not None:
            slots[op.out] = result


def clip_grads_by_global_norm(grads: Sequence[torch.Tensor], max_norm: float,
                              foreach: bool) -> list[torch.Tensor]:
    """Scaled copies of ``grads`` whose joint L2 norm is at most ``max_norm`` (no host sync)."""
    if foreach:
        norms = torch._foreach_norm(list(grads))
    else:
        norms = [torch.linalg.vector_norm(g) for g in grads]
    total = torch.linalg.vector_norm(torch.stack(norms))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    if foreach:
        return list(torch._foreach_mul(list(grads), coef))
    return [g.mul(coef) for g in grads]


def run_single_tensor(program: Program, scalars: ScalarEvaluator, env: dict[str, float],
                      params: list[torch.Tensor], grads: list[torch.Tensor],
                      state: list[Tensors]) -> None:
    """Apply ``program`` to each parameter in turn."""
    for param, grad, buffers in zip(params, grads, state, strict=True):
        slots: Tensors = {"param": param, "grad": grad, **buffers}
        _run(program, scalars, env, slots, _SINGLE)


def run_foreach(program: Program, scalars: ScalarEvaluator, env: dict[str, float],
                params: list[torch.Tensor], grads: list[torch.Tensor],
                state: list[Tensors]) -> None:
    """Apply ``program`` to all parameters at once with ``torch._foreach_*`` kernels."""
    slots: TensorLists = {"param": params, "grad": grads}
    for name in program.buffers:
        slots[name] = [s[name] for s in state]
    _run(program, scalars, env, slots, _FOREACH)
