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

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch


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
)}


@dataclass(frozen=True)
class Op:
    """One tensor operation. ``args`` are slot names; ``scalar`` a scalar expression or None."""

    kind: str
    out: str | None
    args: tuple[str, ...]
    scalar: str | None = None
    when: str | None = None  # scalar condition: the op runs only when it is true
    into: str | None = None  # a dead tensor the per-tensor path writes the result into

    def __post_init__(self) -> None:
        kind = OP_TABLE[self.kind]
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
        return f"if {self.when}:\n    {text}" if self.when else text


def plural(slot: str) -> str:
    """The name of a slot's list on the foreach path."""
    return f"{slot}s"


@dataclass
class Program:
    """Scalar definitions, per-parameter tensor ops and the state buffers they use."""

    lets: list[tuple[str, str]] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    buffers: list[str] = field(default_factory=list)  # per-parameter state, zero-initialized
    # per-parameter scalar state (a float64 0-dim tensor, like ``step``): name -> initial value
    scalars: dict[str, float] = field(default_factory=dict)
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

    def scalar(self, name: str, initial: float, update: str) -> str:
        """Declare per-parameter scalar state ``name``, starting at ``initial`` and set once per
        step to ``update``: an expression that reads the previous value by the state's own name,
        the step count and hyperparameters (NAdam's running product of momentum coefficients).
        It must be a function of those alone, so that parameters with the same step count hold
        the same value (the foreach path evaluates it once per step count)."""
        self.scalars[name] = initial
        self.lets.append((name, update))
        return name

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
        """The list arguments of the step functions, in order: ``params``, ``grads``, one list
        per buffer, one per scalar state, ``state_steps`` when the program counts steps."""
        lists = ["params", "grads", *(plural(b) for b in [*self.buffers, *self.scalars])]
        return [*lists, *(["state_steps"] if self.uses_step else [])]

    def _expressions(self) -> list[str]:
        return ([e for _, e in self.lets] + [o.scalar for o in self.ops if o.scalar]
                + [o.when for o in self.ops if o.when])


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
                "    maximize: bool,", ") -> None:",
                "    if maximize:", f"        grads = {negate}", *clip, *head, *body]

    single = ["    for i, param in enumerate(params):", "        grad = grads[i]",
              *[f"        {b} = {plural(b)}[i]" for b in program.buffers]]
    if program.uses_step:
        single += ["        step_t = state_steps[i]", "        step_t += 1",
                   "        step = step_t.item()"]
    single += indent([*with_scalars(False), *(op.render(foreach=False) for op in program.ops)], 8)
    ops = [op.render(foreach=True) for op in program.ops]
    if program.uses_step:
        multi = ["    torch._foreach_add_(state_steps, 1)",
                 "    # one part per step count: several only if some parameter's gradient started"
                 " late",
                 *_fit("    parts = _by_step(state_steps, ", lists[:-1], ")"),
                 "    for step, part in parts:",
                 *_fit("        ", lists[:-1], " = part", brackets="()"),
                 *indent([*with_scalars(True), *ops], 8)]
    else:
        multi = indent(ops, 4)
    return [*function("_single_tensor_step", False, single), "", "",
            *function("_multi_tensor_step", True, multi),
            *(_CLIP_HELPER if program.clip else []), *(_BY_STEP if program.uses_step else [])]


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


_CLIP_HELPER = [
    "",
    "",
    "def _clip_grads_by_global_norm(",
    "    grads: list[Tensor], max_norm: float, foreach: bool",
    ") -> list[Tensor]:",
    '    """Scaled copies of grads whose joint L2 norm is at most max_norm (no host sync)."""',
    "    if foreach:",
    "        norms = torch._foreach_norm(grads)",
    "    else:",
    "        norms = [torch.linalg.vector_norm(g) for g in grads]",
    "    total = torch.linalg.vector_norm(torch.stack(norms))",
    "    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)",
    "    if foreach:",
    "        return list(torch._foreach_mul(grads, coef))",
    "    return [g.mul(coef) for g in grads]",
]

_BY_STEP = [
    "",
    "",
    "def _by_step(",
    "    steps: list[Tensor], *lists: list[Tensor]",
    ") -> list[tuple[float, tuple[list[Tensor], ...]]]:",
    '    """The lists split by their parameter\'s step count: one part unless some parameter\'s',
    '    gradient started late."""',
    "    values = [s.item() for s in steps]",
    "    parts: dict[float, list[int]] = {}",
    "    for i, value in enumerate(values):",
    "        parts.setdefault(value, []).append(i)",
    "    if len(parts) == 1:",
    "        return [(values[0], lists)]",
    "    return [(v, tuple([xs[i] for i in index] for xs in lists)) for v, index in parts.items()]",
]


def compile_step_functions(program: Program, hparams: Sequence[str]) -> dict[str, Callable]:
    """The rendered step functions, compiled: what the interpreter runs (the exporter prints the
    same text). Returns ``{"single": _single_tensor_step, "foreach": _multi_tensor_step}``."""
    source = "\n".join(render_step_functions(program, hparams))
    namespace: dict[str, object] = {"torch": torch, "Tensor": torch.Tensor, "math": math,
                                    "__name__": "evoopt_genome_program"}
    exec(compile(source, "<genome program>", "exec"), namespace)  # noqa: S102 - package-authored
    return {"single": namespace["_single_tensor_step"],  # type: ignore[dict-item]
            "foreach": namespace["_multi_tensor_step"]}  # type: ignore[dict-item]
