"""A straight-line tensor program: what the interpreter runs and the exporter prints.

Primitives (:mod:`evoopt.genome.primitives`) emit a :class:`Program` for a genome: scalar
definitions (``lets``; those that read the per-parameter ``step`` are evaluated per parameter,
the others once per group and step) and tensor operations (``ops``, applied to every
parameter). One table (:data:`OP_TABLE`) says what each op is on the per-tensor path and the
``torch._foreach_*`` path; :func:`render_step_functions` renders a program as the two step
functions, which the interpreter compiles and runs and :mod:`evoopt.genome.export` prints, so
exported code is numerically what was evaluated.

Scalar expressions are Python source written by the primitives in this package (never text
from a genome file); genome numbers reach them only as hyperparameter values.
"""

from __future__ import annotations

import ast
import functools
import inspect
import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import torch

import evoopt.genome.runtime as runtime


@dataclass(frozen=True)
class OpKind:
    """One kind of tensor operation, defined once: its operands and its source text on the
    per-tensor path and the ``torch._foreach_*`` path. Operands are ``{0}``..``{2}``, the scalar
    ``{s}``; in-place kinds (trailing underscore) modify their first operand, the others bind a
    new tensor. ``into`` is the per-tensor form that writes into a dead tensor ``{into}``
    instead of allocating (the foreach path allocates; on CUDA the caching allocator makes that
    cheap)."""

    name: str
    arity: int
    has_scalar: bool
    single: str
    foreach: str
    into: str | None = None
    helper: Callable[..., Any] | None = None  # the runtime helper the templates call, if any

    @property
    def new(self) -> bool:
        return not self.name.endswith("_")


#: The op table: the only place an op's meaning is written. The executors and the exporter
#: both render these templates (:func:`render_step_functions`).
OP_TABLE: dict[str, OpKind] = {k.name: k for k in (
    OpKind("clone", 1, False, "{0}.clone()", "[t.clone() for t in {0}]"),
    OpKind("neg", 1, False, "{0}.neg()", "torch._foreach_neg({0})"),
    OpKind("sqrt", 1, False, "{0}.sqrt()", "torch._foreach_sqrt({0})",
           into="torch.sqrt({0}, out={into})"),
    OpKind("sign", 1, False, "{0}.sign()", "torch._foreach_sign({0})"),
    OpKind("abs", 1, False, "{0}.abs()", "torch._foreach_abs({0})"),
    OpKind("adds", 1, True, "{0}.add({s})", "torch._foreach_add({0}, {s})"),
    OpKind("muls", 1, True, "{0}.mul({s})", "torch._foreach_mul({0}, {s})"),
    OpKind("div", 2, False, "{0}.div({1})", "torch._foreach_div({0}, {1})"),
    OpKind("sub", 2, False, "{0}.sub({1})", "torch._foreach_sub({0}, {1})",
           into="torch.sub({0}, {1}, out={into})"),
    OpKind("add", 2, True, "{0}.add({1}, alpha={s})", "torch._foreach_add({0}, {1}, alpha={s})",
           into="torch.add({0}, {1}, alpha={s}, out={into})"),
    OpKind("mul_", 1, True, "{0}.mul_({s})", "torch._foreach_mul_({0}, {s})"),
    OpKind("div_", 1, True, "{0}.div_({s})", "torch._foreach_div_({0}, {s})"),
    OpKind("adds_", 1, True, "{0}.add_({s})", "torch._foreach_add_({0}, {s})"),
    OpKind("add_", 2, True, "{0}.add_({1}, alpha={s})", "torch._foreach_add_({0}, {1}, alpha={s})"),
    OpKind("lerp_", 2, True, "{0}.lerp_({1}, {s})", "torch._foreach_lerp_({0}, {1}, {s})"),
    OpKind("lerp", 2, True, "{0}.lerp({1}, {s})", "torch._foreach_lerp({0}, {1}, {s})"),
    OpKind("addcmul", 3, True, "{0}.addcmul({1}, {2}, value={s})",
           "torch._foreach_addcmul({0}, {1}, {2}, value={s})"),
    OpKind("addcmul_", 3, True, "{0}.addcmul_({1}, {2}, value={s})",
           "torch._foreach_addcmul_({0}, {1}, {2}, value={s})"),
    OpKind("addcdiv_", 3, True, "{0}.addcdiv_({1}, {2}, value={s})",
           "torch._foreach_addcdiv_({0}, {1}, {2}, value={s})"),
    OpKind("copy_", 2, False, "{0}.copy_({1})", "torch._foreach_copy_({0}, {1})"),
    OpKind("maximum_", 2, False, "torch.maximum({0}, {1}, out={0})",
           "torch._foreach_maximum_({0}, {1})"),
    # per-tensor scalars: 0-dim tensors (no host sync), one per parameter on the foreach path
    OpKind("norm", 1, False, "torch.linalg.vector_norm({0})", "torch._foreach_norm({0})"),
    OpKind("ratio_or_one", 2, False, "torch.where(({0} > 0) & ({1} > 0), {0} / {1}, 1.0)",
           "[torch.where((a > 0) & (b > 0), a / b, 1.0)\n"
           "    for a, b in zip({0}, {1}, strict=True)]"),
    OpKind("mult_", 2, False, "{0}.mul_({1})", "torch._foreach_mul_({0}, {1})"),
    OpKind("divt_", 2, False, "{0}.div_({1})", "torch._foreach_div_({0}, {1})"),
    OpKind("mul", 2, False, "{0}.mul({1})", "torch._foreach_mul({0}, {1})"),
    OpKind("sqrt_", 1, False, "{0}.sqrt_()", "torch._foreach_sqrt_({0})"),
    OpKind("pow_", 1, True, "{0}.pow_({s})", "torch._foreach_pow_({0}, {s})"),
    OpKind("clamp_min_", 1, True, "{0}.clamp_(min={s})", "torch._foreach_clamp_min_({0}, {s})"),
    OpKind("rms", 1, False, "torch.linalg.vector_norm({0}) / {0}.numel() ** 0.5",
           "torch._foreach_div(\n    torch._foreach_norm({0}), [t.numel() ** 0.5 for t in {0}]\n)"),
    # reductions over the dim {s}, kept with size 1 (factored moments: rows -1, columns -2)
    OpKind("mean_sq", 1, True, "{0}.norm(dim={s}, keepdim=True).square_().div_({0}.size({s}))",
           "[t.norm(dim={s}, keepdim=True).square_().div_(t.size({s})) for t in {0}]"),
    OpKind("mean", 1, True, "{0}.mean(dim={s}, keepdim=True)",
           "[t.mean(dim={s}, keepdim=True) for t in {0}]"),
    OpKind("matmul", 2, False, "{0} @ {1}", "[a @ b for a, b in zip({0}, {1}, strict=True)]"),
    OpKind("orthogonalize", 1, False, "_orthogonalize({0})", "[_orthogonalize(t) for t in {0}]",
           helper=runtime._orthogonalize),
)}



def register_op(kind: OpKind) -> OpKind:
    """Add an op kind to :data:`OP_TABLE` (a block module defining the ops only it emits)."""
    existing = OP_TABLE.get(kind.name)
    if existing is not None and existing != kind:
        raise ValueError(f"op kind {kind.name!r} registered twice, differently")
    OP_TABLE[kind.name] = kind
    return kind


#: Parameter roles: ops and buffers of a role apply only to its parameters. ``matrix``: the
#: parameters of two or more dims (weights, conv kernels); ``vector``: the others (biases,
#: norms, scalars). Each role's test on the number of dims ``{ndim}``; on the foreach path the
#: parts hold parameters of one role, and ``matrix`` is the part's flag.
ROLES: dict[str, tuple[str, str]] = {
    "matrix": ("{ndim} >= 2", "matrix"),
    "vector": ("{ndim} < 2", "not matrix"),
}


def role_test(role: str, ndim: str) -> str:
    """Source of the test that a parameter with ``ndim`` dims has ``role``."""
    return ROLES[role][0].format(ndim=ndim)


@dataclass(frozen=True)
class Layout:
    """A state buffer that not every parameter holds alike: only the parameters of ``role``
    (every parameter when None) hold it, shaped like the parameter or, with ``reduced`` (a
    negative dim), like the parameter with that dim reduced to size 1 (factored moments)."""

    role: str | None = None
    reduced: int | None = None

    def __post_init__(self) -> None:
        if self.role is not None and self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}")
        if self.reduced is not None and self.reduced >= 0:
            raise ValueError("reduced: a negative dim")

    def zeros(self, p: str) -> str:
        """Source of a zero buffer for parameter ``p``."""
        if self.reduced is None:
            return f"torch.zeros_like({p}, memory_format=torch.preserve_format)"
        d = self.reduced
        rest = "" if d == -1 else f", *{p}.shape[{d + 1}:]"
        return f"{p}.new_zeros((*{p}.shape[:{d}], 1{rest}))"


@dataclass(frozen=True)
class Op:
    """One tensor operation. ``args`` are slot names; ``scalar`` a scalar expression or None."""

    kind: str
    out: str | None
    args: tuple[str, ...]
    scalar: str | None = None
    when: str | None = None  # scalar condition: the op runs only when it is true
    into: str | None = None  # a dead tensor the per-tensor path writes the result into
    role: str | None = None  # a parameter role (:data:`ROLES`): the op runs only on its params

    def __post_init__(self) -> None:
        kind = OP_TABLE[self.kind]
        if self.role is not None and self.role not in ROLES:
            raise ValueError(f"op {self.kind}: unknown role {self.role!r}")
        if len(self.args) != kind.arity or (self.scalar is not None) != kind.has_scalar:
            raise ValueError(f"malformed op {self}")
        if kind.new != (self.out is not None):
            raise ValueError(f"op {self.kind} {'needs' if kind.new else 'takes no'} output slot")
        if self.into is not None and kind.into is None:
            raise ValueError(f"op {self.kind} cannot write into an existing tensor")

    def render(self, foreach: bool) -> str:
        """This op's source line on one path (slots are plural lists on the foreach path)."""
        kind = OP_TABLE[self.kind]
        names = [plural(a) if foreach else a for a in self.args]
        if self.into is not None and not foreach:
            text = kind.into.format(*names, s=self.scalar, into=self.into)  # type: ignore[union-attr]
        else:
            text = (kind.foreach if foreach else kind.single).format(*names, s=self.scalar)
        if self.out is not None:
            text = f"{plural(self.out) if foreach else self.out} = {text}"
        return "\n".join([f"if {self.when}:", *indent([text], 4)]) if self.when else text


def plural(slot: str) -> str:
    """The name of a slot's list on the foreach path."""
    return f"{slot}s"


@dataclass(frozen=True)
class Swap:
    """Weights an optimizer evaluates that differ from those it trains at: ``eval()`` sets
    every parameter p ← lerp(p, state[buffer], to_eval), ``train()`` p ← lerp(p,
    state[buffer], to_train); both are expressions of hyperparameters, and the group's
    ``train_mode`` flag says which weights the parameters hold."""

    buffer: str
    to_eval: str
    to_train: str
    doc: str = ""


@dataclass
class Program:
    """Scalar definitions, per-parameter tensor ops and the state buffers they use."""

    lets: list[tuple[str, str]] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    buffers: list[str] = field(default_factory=list)  # per-parameter state, zero-initialized
    # per-parameter scalar state (a float64 0-dim tensor, like ``step``): name -> initial value
    scalars: dict[str, float] = field(default_factory=dict)
    clip: str | None = None  # hyperparameter name of the global-norm clip, if any
    # reads ``hessian``, the Hutchinson estimate of the Hessian diagonal (AdaHessian): the step
    # needs gradients that carry their graph, and takes Hessian-vector products
    curvature: bool = False
    # buffers that only the parameters of one role hold, or shaped unlike the parameter
    layouts: dict[str, Layout] = field(default_factory=dict)
    # buffers that start as a copy of the parameter (Schedule-Free's z), not as zeros
    copies_param: list[str] = field(default_factory=list)
    # group-scope state: 0-dim values kept in the param group (so state_dict saves them) and
    # updated once per group and step by the lets of the same name (name -> initial value)
    group_state: dict[str, float] = field(default_factory=dict)
    # an optimizer that trains at other weights than it evaluates (Schedule-Free): eval() and
    # train() move every parameter towards one buffer by these weights (see :class:`Swap`)
    swap: Swap | None = None
    role: str | None = None  # the role of the ops and buffers emitted now (see :meth:`only`)
    dead: bool = False  # inside only() of a role other than the program's: nothing is emitted

    def let(self, name: str, expr: str) -> str:
        self.lets.append((name, expr))
        return name

    def op(self, kind: str, *args: str, out: str | None = None, scalar: str | None = None,
           when: str | None = None, into: str | None = None) -> str | None:
        if not self.dead:
            self.ops.append(Op(kind, out, tuple(args), scalar, when, into, self.role))
        return out

    def hessian(self) -> str:
        """The slot of the Hessian-diagonal estimate (``_hessian_diagonals`` of
        :mod:`evoopt.genome.runtime`), an input like ``grad``: computed for every parameter
        before the step functions run."""
        if not self.dead:
            self.curvature = True
        return "hessian"

    def group_scalar(self, name: str, initial: float, update: str) -> str:
        """Declare group-scope state ``name`` (kept in the param group, starting at
        ``initial``), set once per group and step to ``update``, an expression that reads the
        previous value by its own name, hyperparameters and ``group_step``."""
        if not self.dead:
            self.group_state[name] = initial
            self.lets.append((name, update))
        return name

    def param_copy(self, name: str) -> str:
        """Declare a state buffer that starts as a copy of the parameter."""
        self.buffer(name)
        if name not in self.copies_param and not self.dead:
            self.copies_param.append(name)
        return name

    def buffer(self, name: str, reduced: int | None = None) -> str:
        """Declare a zero-initialized state buffer: shaped like the parameter, or like it with
        dim ``reduced`` of size 1; held only by the parameters of the current role, if any."""
        if name not in self.buffers and not self.dead:
            self.buffers.append(name)
            if self.role is not None or reduced is not None:
                self.layouts[name] = Layout(self.role, reduced)
        return name

    @contextmanager
    def only(self, role: str) -> Iterator[None]:
        """Ops and buffers emitted inside apply only to the parameters of ``role``; inside the
        ops of another role (a program for one role's parameters), they are dropped."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        outer, dead = self.role, self.dead
        self.role, self.dead = role, dead or (outer is not None and outer != role)
        try:
            yield
        finally:
            self.role, self.dead = outer, dead

    @property
    def has_roles(self) -> bool:
        """Whether some op or buffer applies to one role only (the foreach path then splits
        the parameters by role as well as by step count)."""
        return any(o.role is not None for o in self.ops) or any(
            lay.role is not None for lay in self.layouts.values())

    def state_init(self, p: str = "p") -> list[str]:
        """Source lines that fill the empty ``state`` of parameter ``p``: the step count,
        scalar states, then the buffers (those of a role under its test)."""
        lines = (['state["step"] = torch.tensor(0.0, dtype=torch.float64)']
                 if self.uses_step else [])
        lines += [f'state["{s}"] = torch.tensor({v!r}, dtype=torch.float64)'
                  for s, v in self.scalars.items()]
        roles = [self.layouts[b].role if b in self.layouts else None for b in self.buffers]
        return lines + _under_roles(
            [(role, f'state["{b}"] = ' + (f"{p}.clone(memory_format=torch.preserve_format)"
                                          if b in self.copies_param
                                          else self.layouts.get(b, Layout()).zeros(p)))
             for b, role in zip(self.buffers, roles, strict=True)], f"{p}.dim()")

    def scalar(self, name: str, initial: float, update: str) -> str:
        """Declare per-parameter scalar state ``name``, starting at ``initial`` and set once per
        step to ``update``: an expression that reads the previous value by the state's own name,
        the step count and hyperparameters (NAdam's running product of momentum coefficients).
        It must be a function of those alone, so that parameters with the same step count hold
        the same value (the foreach path evaluates it once per step count)."""
        self.scalars[name] = initial
        self.lets.append((name, update))
        return name

    def count_steps_by_group(self) -> None:
        """Make ``step`` mean the optimizer's step count of the parameter's group
        (``group_step``, as pytorch-optimizer counts) in every scalar expression, instead of
        the parameter's own count (torch.optim's): the lets that read it are then evaluated once
        per group and step, and no parameter keeps a ``step`` of its own."""
        def rename(expr: str | None) -> str | None:
            return None if expr is None else re.sub(r"\bstep\b", "group_step", expr)

        self.lets = [(n, rename(e)) for n, e in self.lets]  # type: ignore[misc]
        self.ops = [Op(o.kind, o.out, o.args, rename(o.scalar), rename(o.when), o.into, o.role)
                    for o in self.ops]

    def counters(self) -> list[str]:
        """The step counters the scalar expressions read besides the per-parameter ``step``:
        ``group_step`` (the optimizer's step count, for lr schedules) and ``total_steps``."""
        used = set().union(*(_names(e) for e in self._expressions()))
        return [c for c in ("group_step", "total_steps") if c in used]

    def step_lets(self) -> list[tuple[str, str]]:
        """The lets that depend, directly or through other lets, on the per-parameter ``step``
        (torch.optim counts steps per parameter: one whose gradient starts late has its own
        bias correction). The other lets are evaluated once per group and step."""
        dependent: set[str] = {"step", *self.scalars}
        out = []
        for name, expr in self.lets:
            if _names(expr) & dependent:
                dependent.add(name)
                out.append((name, expr))
        return out

    def group_lets(self) -> list[tuple[str, str]]:
        """The lets evaluated once per group and step: those not in :meth:`step_lets`."""
        per_step = self.step_lets()
        return [let for let in self.lets if let not in per_step]

    @property
    def uses_step(self) -> bool:
        """Whether any scalar reads the per-parameter step count (then state holds ``step``)."""
        dependent = {"step"} | {n for n, _ in self.step_lets()}
        return bool(self.scalars) or any(_names(e) & dependent for e in self._expressions())

    @property
    def state_names(self) -> list[str]:
        """Per-parameter state keys: the buffers, the scalar states, and ``step`` when the
        program counts steps."""
        return [*self.buffers, *self.scalar_state_names]

    @property
    def scalar_state_names(self) -> list[str]:
        """The state keys that hold 0-dim tensors, not tensors shaped like the parameter."""
        return [*self.scalars, *(["step"] if self.uses_step else [])]

    def step_function_lists(self) -> list[str]:
        """The list arguments of the step functions, in order: ``params``, ``grads``,
        ``hessians`` when the program reads the curvature, one list per buffer, one per scalar
        state, ``state_steps`` when the program counts steps."""
        inputs = ["params", "grads", *(["hessians"] if self.curvature else [])]
        lists = [*inputs, *(plural(b) for b in [*self.buffers, *self.scalars])]
        return [*lists, *(["state_steps"] if self.uses_step else [])]

    def _expressions(self) -> list[str]:
        return ([e for _, e in self.lets] + [o.scalar for o in self.ops if o.scalar]
                + [o.when for o in self.ops if o.when])


def merge_roles(programs: dict[str, Program], prefixes: dict[str, str]) -> Program:
    """One program that runs ``programs[role]`` (emitted with ``Program(role=role)``) on the
    parameters of each role. The lets and scalar states of a role with a prefix are renamed
    with it (its hyperparameters already carry it), so that roles share no scalar name; tensor
    slots need no renaming (a parameter runs one role's ops). A buffer both roles declare alike
    is every parameter's. A global-norm clip (one role's program at most has one) acts on
    every parameter's gradient, before any role's ops."""
    merged = Program()
    clips = {p.clip for p in programs.values()} - {None}
    if len(clips) > 1:
        raise ValueError("more than one role's program clips")
    merged.clip = clips.pop() if clips else None
    merged.curvature = any(p.curvature for p in programs.values())
    for role, program in programs.items():
        prefix = prefixes.get(role, "")
        names = [n for n in [*dict(program.lets), *program.scalars] if not n.startswith(prefix)]
        pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b") if names else None

        def rename(expr: str | None, pattern: re.Pattern | None = pattern,
                   prefix: str = prefix) -> str | None:
            if expr is None or pattern is None:
                return expr
            return pattern.sub(lambda m: prefix + m.group(1), expr)

        merged.lets += [(rename(n), rename(e)) for n, e in program.lets]  # type: ignore[misc]
        merged.scalars |= {rename(n): v for n, v in program.scalars.items()}  # type: ignore[misc]
        merged.ops += [Op(o.kind, o.out, o.args, rename(o.scalar), rename(o.when), o.into,
                          o.role or role) for o in program.ops]
        for b in program.buffers:
            layout = program.layouts.get(b, Layout(role))
            if b not in merged.buffers:
                merged.buffers.append(b)
                merged.layouts[b] = layout
            elif merged.layouts.get(b) == Layout(layout.role and other_role(layout.role),
                                                  layout.reduced):
                merged.layouts[b] = Layout(None, layout.reduced)  # both roles hold it alike
            else:
                raise ValueError(f"buffer {b}: the roles hold it differently")
    merged.layouts = {b: lay for b, lay in merged.layouts.items() if lay != Layout()}
    return merged


def other_role(role: str) -> str:
    """The role that is not ``role``."""
    return next(r for r in ROLES if r != role)


def _names(expr: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_]\w*", expr))


# ----------------------------------------------------------------------------------------------
# Rendering: the step functions both executors run and the exporter prints.
def render_step_functions(program: Program, hparams: Sequence[str]) -> list[str]:
    """Source of ``_single_tensor_step`` and ``_multi_tensor_step`` (and their helpers) for
    ``program``: the per-tensor loop and the ``torch._foreach_*`` implementation, rendered from
    the same ops. Arguments: ``params``, ``grads``, one list per state buffer, ``state_steps``
    when the program counts steps; keywords: ``hparams``, :meth:`Program.counters`,
    ``maximize``. The text needs ``torch``, ``Tensor`` and ``math`` in its namespace."""
    lists = program.step_function_lists()
    head = [f"    {n} = {e}" for n, e in program.group_lets()]
    per_step = [f"{n} = {e}" for n, e in program.step_lets()]

    def with_scalars(foreach: bool) -> list[str]:
        """The per-step lets, between reading the scalar states (parameter i's; on the foreach
        path the first of a part, whose parameters share a step count) and writing them back."""
        read = [f"{s} = {plural(s)}[{0 if foreach else 'i'}].item()" for s in program.scalars]
        write = [f"for t in {plural(s)}:\n    t.fill_({s})" if foreach
                 else f"{plural(s)}[i].fill_({s})" for s in program.scalars]
        return [*read, *per_step, *write]

    def function(name: str, foreach: bool, body: list[str]) -> list[str]:
        negate = "torch._foreach_neg(grads)" if foreach else "[-g for g in grads]"
        clip = ([f"    grads = _clip_grads_by_global_norm(grads, {program.clip}, "
                 f"foreach={foreach})"] if program.clip else [])
        return [f"def {name}(", *[f"    {x}: list[Tensor]," for x in lists], "    *,",
                *[f"    {n}: float," for n in hparams],
                *[f"    {n}: int," for n in program.counters()],
                *[f"    {n}: float," for n in program.group_state],
                "    maximize: bool,", f") -> {returns}:",
                "    if maximize:", f"        grads = {negate}", *clip, *head, *body, *give_back]

    # group-scope state goes back to the param group (as the updated values)
    returns = "dict[str, float]" if program.group_state else "None"
    give_back = ([f"    return {{{', '.join(f'{n!r}: {n}' for n in program.group_state)}}}"]
                 if program.group_state else [])

    single = ["    for i, param in enumerate(params):", "        grad = grads[i]",
              *(["        hessian = hessians[i]"] if program.curvature else []),
              *[f"        {b} = {plural(b)}[i]" for b in program.buffers]]
    if program.uses_step:
        single += ["        step_t = state_steps[i]", "        step_t += 1",
                   "        step = step_t.item()"]
    single += indent([*with_scalars(False), *_render_ops(program.ops, foreach=False)], 8)
    ops = _render_ops(program.ops, foreach=True)
    if program.has_roles:
        parted = lists[:-1] if program.uses_step else lists
        steps = "state_steps" if program.uses_step else "None"
        multi = ([] if not program.uses_step else ["    torch._foreach_add_(state_steps, 1)"])
        multi += ["    # one part per role (matrices, the others) and step count (several only if"
                  " some", "    # parameter's gradient started late)",
                  *_fit(f"    parts = _by_step_and_role({steps}, ", parted, ")"),
                  f"    for {'step' if program.uses_step else '_'}, matrix, part in parts:",
                  *_fit("        ", parted, " = part", brackets="()"),
                  *indent([*with_scalars(True), *ops], 8)]
    elif program.uses_step:
        multi = ["    torch._foreach_add_(state_steps, 1)",
                 "    # one part per step count: several only if some parameter's gradient started"
                 " late",
                 *_fit("    parts = _by_step(state_steps, ", lists[:-1], ")"),
                 "    for step, part in parts:",
                 *_fit("        ", lists[:-1], " = part", brackets="()"),
                 *indent([*with_scalars(True), *ops], 8)]
    else:
        multi = indent(ops, 4)
    kinds = dict.fromkeys(OP_TABLE[op.kind] for op in program.ops)
    helpers = [*(["_clip_grads_by_global_norm"] if program.clip else []),
               *(["_by_step_and_role"] if program.has_roles else ["_by_step"] if program.uses_step
                 else []),
               *(kind.helper.__name__ for kind in kinds if kind.helper is not None),
               *(["_hessian_diagonals"] if program.curvature else [])]
    return [*function("_single_tensor_step", False, single), "", "",
            *function("_multi_tensor_step", True, multi), *vendor(*helpers)]


def vendor(*names: str) -> list[str]:
    """Source lines of the runtime helpers ``names`` and of the helpers they use, directly or
    not (:func:`evoopt.genome.runtime.closure`), each once and each after two blank lines: the
    helpers' own source, so that the rendered text needs no import of evoopt."""
    return [line for name in runtime.closure(*names) for line in ("", "", *helper_source(name))]


@functools.cache
def helper_source(name: str) -> tuple[str, ...]:
    """The source lines of runtime helper ``name`` from its ``def`` on (without its decorator)."""
    if name not in runtime.USES:
        raise ValueError(f"{name!r} is not a runtime helper")
    source = inspect.getsource(getattr(runtime, name))
    node = ast.parse(source).body[0]
    if not isinstance(node, ast.FunctionDef) or node.name != name:
        raise ValueError(f"runtime helper {name!r}: its source is not its def")
    return tuple(source.splitlines()[node.lineno - 1:])


def _render_ops(ops: Sequence[Op], foreach: bool) -> list[str]:
    return _under_roles([(op.role, op.render(foreach)) for op in ops], "param.dim()", foreach)


def _under_roles(items: Sequence[tuple[str | None, str]], ndim: str,
                 foreach: bool = False) -> list[str]:
    """The source lines of ``items`` (role, text); a run of lines of one role goes under that
    role's test (``ndim``: the parameter's number of dims; the part's flag on the foreach path),
    a run of the other role straight after it is its ``else`` branch."""
    lines: list[str] = []
    open_if: str | None = None  # the role of the if block just written, if any
    for role, run in groupby(items, key=lambda item: item[0]):
        body = [text for _, text in run]
        if role is None:
            lines += body
            open_if = None
            continue
        if open_if is not None and open_if != role:
            lines.append("else:")
            open_if = None
        else:
            lines.append(f"if {ROLES[role][1] if foreach else role_test(role, ndim)}:")
            open_if = role
        lines += indent(body, 4)
    return lines


def _fit(head: str, names: Sequence[str], tail: str, brackets: str = "") -> list[str]:
    """``head`` + the comma-separated names + ``tail`` on one line when it fits in 100
    columns, else one name a line (inside ``brackets`` when the names need them)."""
    line = f"{head}{', '.join(names)}{tail}"
    if len(line) <= 100:
        return [line]
    pad = " " * (len(head) - len(head.lstrip()))
    opening, closing = brackets or ("", "")
    return [f"{head}{opening}".rstrip() if opening else head.rstrip(),
            *[f"{pad}    {n}," for n in names], f"{pad}{closing}{tail.lstrip()}".rstrip()
            if closing else f"{pad}{tail.strip()}"]


def indent(lines: Sequence[str], n: int) -> list[str]:
    """``lines`` (which may hold newlines) split into lines, each non-empty one padded by n."""
    pad = " " * n
    return [pad + ln if ln else ln for ln in "\n".join(lines).split("\n")]


def render_buffer_shape(program: Program) -> list[str]:
    """Source of ``_LAYOUTS`` and ``_buffer_shape(name, shape)``, the shape of a state buffer for
    a parameter of ``shape`` (None when such a parameter holds none): what ``load_state_dict``
    checks saved buffers against, when some buffer has a :class:`Layout`."""
    layouts = {b: (lay.role, lay.reduced) for b, lay in program.layouts.items()}
    tests = [line for role in ROLES for line in (
        f'    if role == "{role}" and not {role_test(role, "len(shape)")}:', "        return None")]
    return [f"_LAYOUTS = {layouts!r}", "", "",
            "def _buffer_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...] | None:",
            '    """The shape of state buffer name for a parameter of this shape (None: such a',
            '    parameter holds none; buffers not in _LAYOUTS are shaped like the parameter)."""',
            "    role, reduced = _LAYOUTS.get(name, (None, None))", *tests,
            "    if reduced is None:", "        return tuple(shape)",
            "    return (*shape[:reduced], 1, *shape[len(shape) + reduced + 1:])"]


def compile_step_functions(program: Program, hparams: Sequence[str]) -> dict[str, Callable]:
    """The rendered step functions, compiled: what the interpreter runs (the exporter prints the
    same text). Returns ``{"single": _single_tensor_step, "foreach": _multi_tensor_step,
    "init_state": fills a parameter's empty state, "buffer_shape": _buffer_shape}``, and for a
    program that reads the curvature ``"hessian_diagonals"`` (optimizer -> {param: estimate})."""
    init = ["def _init_state(p, state):", *indent(program.state_init(), 4), "    return"]
    source = "\n".join([*render_step_functions(program, hparams), "", "", *init, "", "",
                        *render_buffer_shape(program)])
    namespace: dict[str, object] = {"torch": torch, "Tensor": torch.Tensor, "math": math,
                                    "__name__": "evoopt_genome_program"}
    exec(compile(source, "<genome program>", "exec"), namespace)  # noqa: S102 - package-authored
    return {"single": namespace["_single_tensor_step"],  # type: ignore[dict-item]
            "foreach": namespace["_multi_tensor_step"],  # type: ignore[dict-item]
            "init_state": namespace["_init_state"],  # type: ignore[dict-item]
            "buffer_shape": namespace["_buffer_shape"],  # type: ignore[dict-item]
            **({"hessian_diagonals": namespace["_hessian_diagonals"]}  # type: ignore[dict-item]
               if program.curvature else {})}
