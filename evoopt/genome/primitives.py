"""The primitive registry: every update primitive is defined once, here.

A primitive fills one *slot* of a genome (``schedule``, ``clip``, ``weight_decay``, ``momentum``,
``grad_diff``, ``second_moment``, or one entry of ``terms``). Its definition carries everything
the rest of evoopt needs: the hyperparameters (type, validity bounds, mutation range and scale,
exported argument name), the state buffers, the tensor program it emits (run by the interpreter
and printed by the exporter) and its formula for docs and one-line summaries.

A step of any genome runs these phases, in order::

    scalars      scheduled learning rate, bias corrections           (schedule, moments)
    grad         global-norm clipping, coupled (L2) weight decay     (clip, weight_decay)
    pre_state    directions that read last step's state (Lion)       (terms)
    state        moment buffers: m, d = EMA(g - g_prev), v           (momentum, grad_diff, 2nd)
    decay        decoupled weight decay  p *= 1 - lr*wd              (weight_decay)
    update       p -= lr * sum_i w_i * direction_i [/ (sqrt(v)+eps)] (terms)
    transform    r += wd*p; r *= ||p||/||r||; then p -= lr * r        (weight_decay, transform)
                 (a transform may set the step size in place of lr: Adafactor's min(lr, 1/√t))
    proximal     proximal weight decay   p /= 1 + lr*wd              (weight_decay)

When a primitive acts on the whole update (``builds_update``: a trust ratio, decay added to the
update), the terms are summed into an ``update`` tensor r instead of being applied one by one,
the transform phase acts on r, and then p -= lr * r.

Some ops and buffers apply to one parameter *role* only (:data:`evoopt.genome.program.ROLES`:
matrices of 2 or more dims, and the others): Adafactor's factored second moment keeps row and
column moments for matrices and a full one for the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from evoopt.genome.program import Program

PHASES = ("scalars", "grad", "pre_state", "state", "decay", "update", "transform", "proximal")
BLOCK_SLOTS = ("schedule", "clip", "weight_decay", "momentum", "grad_diff", "second_moment",
               "transform")
MAX_TERMS = 4


class KeyedValues:
    """``block[name]`` and ``block.get(name, default)`` over a block's ``values`` pairs (the
    slot genome's and the chain's blocks)."""

    values: tuple[tuple[str, Any], ...]

    def __getitem__(self, name: str) -> Any:
        for k, v in self.values:
            if k == name:
                return v
        raise KeyError(name)

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default


#: What an emit reads its values from: a block of the slot genome or of a chain (both keyed).
Block = KeyedValues


class GenomeError(ValueError):
    """A genome (or genome file) is malformed; the message names the offending field."""


def describe_value(value: object, limit: int = 200) -> str:
    """A wrong-typed genome value as an error shows it: a TOML date, datetime or time by its
    TOML type (Python's repr would not say what the file holds), anything else by its repr
    (cut at ``limit`` characters)."""
    import datetime

    for kind, name in ((datetime.datetime, "datetime"), (datetime.date, "date"),
                       (datetime.time, "time")):
        if isinstance(value, kind):
            return f"a TOML {name}"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


@dataclass(frozen=True)
class HParam:
    """A hyperparameter of a primitive.

    ``low``/``high`` bound valid values (``open_low``/``open_high`` exclude the bound);
    ``search`` is the range mutation samples from, on ``scale``: ``linear``, ``log``, or
    ``log1m`` (log of 1 - x, for decay rates close to 1). ``arg`` names the exported
    constructor argument; ``bool`` hyperparameters are structural and baked into code.
    """

    name: str
    default: float | bool
    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False
    search: tuple[float, float] | None = None
    scale: str = "linear"
    arg: str = ""
    doc: str = ""
    needs: str = ""  # a switch whose true value needs this slot's table (normalize: the 2nd moment)

    @property
    def is_bool(self) -> bool:
        return isinstance(self.default, bool)

    def check(self, value: object, where: str) -> float | bool:
        """Return ``value`` as this hyperparameter's type or raise a :class:`GenomeError`."""
        if self.is_bool:
            if not isinstance(value, bool):
                raise GenomeError(f"{where}: expected true or false, got "
                                  f"{describe_value(value)}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GenomeError(f"{where}: expected a number, got {describe_value(value)}")
        try:
            x = float(value)
        except OverflowError:
            raise GenomeError(f"{where}: {str(value)[:20]}... is too large a number") from None
        below = x <= self.low if self.open_low else x < self.low
        above = x >= self.high if self.open_high else x > self.high
        if not math.isfinite(x) or below or above:
            lo, hi = ("(" if self.open_low else "["), (")" if self.open_high else "]")
            raise GenomeError(f"{where}: {x!r} is outside {lo}{self.low}, {self.high}{hi}")
        return x

    def condition(self, arg: str) -> str:
        """Python source of the validity check on ``arg`` (for exported constructors)."""
        parts = []
        if math.isfinite(self.low):
            parts.append(f"{self.low!r} {'<' if self.open_low else '<='} {arg}")
        if math.isfinite(self.high):
            parts.append(f"{arg} {'<' if self.open_high else '<='} {self.high!r}")
        if not parts:
            return f"math.isfinite({arg})"
        if len(parts) == 2:
            return f"{parts[0]} {'<' if self.open_high else '<='} {self.high!r}"
        return parts[0]


def _beta(name: str, default: float, arg: str, doc: str) -> HParam:
    return HParam(name, default, 0.0, 1.0, open_high=True, search=(0.5, 0.9999), scale="log1m",
                  arg=arg, doc=doc)


LR = HParam("lr", 1e-3, 0.0, 10.0, open_low=True, search=(1e-5, 1.0), scale="log", arg="lr",
            doc="base learning rate")
EPS = HParam("eps", 1e-8, 0.0, 1.0, open_low=True, search=(1e-10, 1e-4), scale="log", arg="eps",
             doc="added to the denominator, outside the square root")
WEIGHT = HParam("weight", 1.0, -100.0, 100.0, search=(0.05, 4.0), scale="log", arg="weight",
                doc="coefficient of this term in the update")
NORMALIZE = HParam("normalize", False, doc="divide by the second-moment denominator sqrt(v)+eps",
                   needs="second_moment")
BIAS_CORRECTION = HParam("bias_correction", True, doc="divide the moment by 1 - beta**step")


# ----------------------------------------------------------------------------------------------
# The builder: a program under construction plus what primitives need to know of each other.
@dataclass
class Builder:
    """Collects the :class:`Program` and exported arguments while primitives emit."""

    program: Program = field(default_factory=Program)
    args: dict[str, tuple[HParam, float]] = field(default_factory=dict)  # arg -> (spec, value)
    lr: str = "lr"  # name of the (scheduled) learning-rate scalar
    moments: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # slot -> (buf, bc)
    # slot -> (its primitive, hparam name -> exported arg name), known before any emission
    declared: dict[str, tuple[Primitive, dict[str, str]]] = field(default_factory=dict)
    denom: str | None = None
    update: str | None = None  # the update tensor r, when a primitive acts on the whole update
    step_size: str | None = None  # what multiplies r in p -= step_size * r, when not the lr
    # the rules of one parameter role (a genome's [matrix] table): its arguments' name prefix
    # and what their docs say they are for
    prefix: str = ""
    role_doc: str = ""
    _diff: str | None = None

    def arg(self, spec: HParam, value: float, name: str | None = None) -> str:
        """Register a float hyperparameter as an exported argument and return its name."""
        name = self.prefix + (name or spec.arg)
        if self.role_doc:
            spec = replace(spec, doc=f"{spec.doc} ({self.role_doc})")
        self.args[name] = (spec, float(value))
        return name

    def diff(self) -> str:
        """The gradient difference g_t - g_{t-1} (zero at the first step), created once."""
        if self._diff is None:
            p = self.program
            prev = p.buffer("prev_grad")
            p.op("copy_", prev, "grad", when="step == 1")
            # prev_grad is dead from here until finish_state() refills it: reuse its memory
            self._diff = p.op("sub", "grad", prev, out="grad_diff", into=prev)
        return self._diff

    def finish_state(self) -> None:
        if self._diff is not None:
            self.program.op("copy_", "prev_grad", "grad")

    def fresh(self, stem: str) -> str:
        """A temporary slot name not used yet."""
        used = {o.out for o in self.program.ops}
        return stem if stem not in used else next(
            f"{stem}{i}" for i in range(1, 100) if f"{stem}{i}" not in used)

    def moment(self, slot: str) -> tuple[str, str | None]:
        return self.moments[slot]

    def bias_correction(self, name: str, beta_arg: str, offset: str = "") -> str:
        step = f"(step + {offset})" if offset else "step"
        if name not in dict(self.program.lets):
            self.program.let(name, f"1 - {beta_arg} ** {step}")
        return name


@dataclass(frozen=True)
class Primitive:
    """One update primitive, defined once: it drives the interpreter, mutation, export and docs."""

    slot: str
    kind: str
    phase: str
    summary: str
    formula: str  # with {hparam} placeholders, for docs and genome formulas
    hparams: tuple[HParam, ...] = ()
    buffers: tuple[str, ...] = ()
    uses: frozenset[str] = frozenset()  # state slots a term reads
    # hyperparameters that act only through the product lr·x (decay tied to the lr): when the
    # canonical form folds a scale into lr, these are divided by it so the optimizer is unchanged
    lr_scaled: tuple[str, ...] = ()
    # second moments: the denominator's symbol in formulas, and the kind that differs from this
    # one only by bias correction (what toggle_bias_correction swaps it for), if any
    denominator: str = ""
    bias_twin: str = ""
    # momentum: m = β·m + g (torch.optim.SGD's buffer) rather than an EMA; Nesterov's look-ahead
    # then adds β·m to g instead of interpolating
    heavy_ball: bool = False
    # acts on the whole update r (then the terms are summed into r before p -= lr·r)
    builds_update: bool = False
    # the update's overall scale does not act as lr·w alone, so no weight scale can be folded
    # into lr exactly: a trust ratio divides it out (but not where ‖p‖ = 0); Adafactor's
    # relative step clips r by its RMS and caps lr at 1/√t
    update_scale_free: bool = False
    # a transform that sets the step size (p -= step_size·r instead of lr·r)
    sets_step_size: bool = False
    # acts on the whole group at once (global-norm clipping), so one parameter role's rules
    # (a genome's [matrix] table) cannot hold it
    group_wide: bool = False
    # reads the Hutchinson estimate of the Hessian diagonal (AdaHessian): a step takes a
    # Hessian-vector product through the gradients' graph, so the training loop must call
    # loss.backward(create_graph=True), at about the cost of a second backward pass
    curvature: bool = False
    # the kind of this slot that makes the same update when no other primitive acts on the whole
    # update (decay added to r with nothing transforming r is decoupled decay): the canonical
    # form uses that kind, so the two are one optimizer, one hash
    alone_as: str = ""
    emit: Callable[[Builder, Block, dict[str, str]], tuple[str, str | None] | None] | None = None

    def hparam(self, name: str) -> HParam:
        for h in self.hparams:
            if h.name == name:
                return h
        raise KeyError(name)

    def describe(self, values: dict[str, float | bool]) -> str:
        return self.formula.format(**{k: _fmt(v) for k, v in values.items()})


def _fmt(v: float | bool) -> str:
    return str(v).lower() if isinstance(v, bool) else f"{v:.4g}"


REGISTRY: dict[str, dict[str, Primitive]] = {}


def register(p: Primitive) -> Primitive:
    if p.phase not in PHASES:
        raise ValueError(f"unknown phase {p.phase}")
    REGISTRY.setdefault(p.slot, {})[p.kind] = p
    return p


def primitive(slot: str, kind: str) -> Primitive:
    try:
        return REGISTRY[slot][kind]
    except KeyError:
        options = ", ".join(sorted(REGISTRY.get(slot, {})))
        raise GenomeError(f"{slot}.kind: unknown kind {kind!r} (choose one of: {options})"
                          ) from None


# ----------------------------------------------------------------------------------------------
# Learning-rate schedules: scale the base lr by a function of group_step / total_steps, where
# group_step counts the optimizer's steps (as an lr scheduler would), not one parameter's.
WARMUP = HParam("warmup_fraction", 0.05, 0.0, 1.0, open_high=True, search=(0.01, 0.3), scale="log",
                arg="warmup_fraction", doc="fraction of total_steps spent warming up linearly")
FINAL = HParam("final_lr_fraction", 0.0, 0.0, 1.0, search=(0.0, 0.3), arg="final_lr_fraction",
               doc="lr at the end of the decay, as a fraction of the base lr")


def _schedule(factors: Callable[[dict[str, str]], list[tuple[str, str]]]) -> Callable:
    def emit(b: Builder, block: Block, a: dict[str, str]) -> None:
        lets = factors(a)
        for name, expr in lets:
            b.program.let(name, expr)
        b.lr = b.program.let("lr_t", f"{b.lr} * {lets[-1][0]}")

    return emit


def _cosine(a: dict[str, str], progress: str) -> tuple[str, str]:
    f = a["final_lr_fraction"]
    return "lr_factor", f"{f} + (1 - {f}) * 0.5 * (1 + math.cos(math.pi * {progress}))"


register(Primitive("schedule", "constant", "scalars", "constant learning rate", "constant lr",
                   emit=lambda b, block, a: None))
register(Primitive(
    "schedule", "linear_warmup", "scalars", "linear warmup to the base lr, then constant",
    "warmup({warmup_fraction})", (WARMUP,),
    emit=_schedule(lambda a: [
        ("warmup_steps", f"max(1.0, {a['warmup_fraction']} * total_steps)"),
        ("lr_factor", "min(1.0, group_step / warmup_steps)"),
    ])))
register(Primitive(
    "schedule", "cosine", "scalars", "cosine decay from the base lr to final_lr_fraction * lr",
    "cosine(→{final_lr_fraction})", (FINAL,),
    emit=_schedule(lambda a: [
        ("progress", "min(1.0, (group_step - 1) / total_steps)"),
        _cosine(a, "progress"),
    ])))
register(Primitive(
    "schedule", "warmup_cosine", "scalars", "linear warmup, then cosine decay",
    "warmup({warmup_fraction})+cosine(→{final_lr_fraction})", (WARMUP, FINAL),
    emit=_schedule(lambda a: [
        ("warmup_steps", f"max(1.0, {a['warmup_fraction']} * total_steps)"),
        ("progress",
         "min(1.0, max(0.0, group_step - warmup_steps)"
         " / max(1.0, total_steps - warmup_steps))"),
        ("cosine", _cosine(a, "progress")[1]),
        ("lr_factor", "min(1.0, group_step / warmup_steps) * cosine"),
    ])))
register(Primitive(
    "schedule", "linear_decay", "scalars",
    "linear decay from the base lr to final_lr_fraction * lr",
    "linear(→{final_lr_fraction})", (FINAL,),
    emit=_schedule(lambda a: [
        ("lr_factor",
         f"1 - (1 - {a['final_lr_fraction']}) * min(1.0, (group_step - 1) / total_steps)"),
    ])))

# ----------------------------------------------------------------------------------------------
# Gradient clipping and weight decay.
MAX_NORM = HParam("max_norm", 1.0, 0.0, math.inf, open_low=True, search=(0.1, 10.0), scale="log",
                  arg="max_grad_norm", doc="largest joint L2 norm of the group's gradients")
DECAY = HParam("value", 0.0, 0.0, 10.0, search=(1e-5, 0.3), scale="log", arg="weight_decay",
               doc="weight-decay coefficient")


def _clip(b: Builder, block: Block, a: dict[str, str]) -> None:
    b.program.clip = a["max_norm"]


register(Primitive("clip", "global_norm", "grad", "rescale gradients to a joint L2 norm ≤ max_norm",
                   "clip(‖g‖≤{max_norm})", (MAX_NORM,), group_wide=True, emit=_clip))
register(Primitive(
    "weight_decay", "coupled", "grad", "L2 penalty added to the gradient: g += wd·p",
    "L2 {value}", (DECAY,),
    emit=lambda b, block, a: b.program.op("add", "grad", "param", out="grad", scalar=a["value"])))
register(Primitive(
    "weight_decay", "decoupled", "decay", "decoupled (AdamW) decay before the step: p *= 1 − lr·wd",
    "decoupled wd {value}", (DECAY,), lr_scaled=("value",),
    emit=lambda b, block, a: b.program.op(
        "mul_", "param", scalar=b.program.let("decay_factor", f"1 - {b.lr} * {a['value']}"))))
register(Primitive(
    "weight_decay", "proximal", "proximal", "proximal (Adan) decay after the step: p /= 1 + lr·wd",
    "proximal wd {value}", (DECAY,), lr_scaled=("value",),
    emit=lambda b, block, a: b.program.op(
        "div_", "param", scalar=b.program.let("decay_divisor", f"1 + {b.lr} * {a['value']}"))))

register(Primitive(
    "weight_decay", "update", "transform",
    "decay added to the whole update before it is transformed (LAMB): r += wd·p",
    "r+={value}·p", (DECAY,), builds_update=True, lr_scaled=("value",), alone_as="decoupled",
    emit=lambda b, block, a: b.program.op("add_", b.update, "param", scalar=a["value"])))

# ----------------------------------------------------------------------------------------------
# Transforms of the whole update r.


def _trust_ratio(b: Builder, block: Block, a: dict[str, str]) -> None:
    p = b.program
    param_norm = p.op("norm", "param", out="p_norm")
    update_norm = p.op("norm", b.update, out="r_norm")
    p.op("mult_", b.update, p.op("ratio_or_one", param_norm, update_norm, out="trust_ratio"))


def _update_momentum(b: Builder, block: Block, a: dict[str, str]) -> None:
    buf = b.program.buffer("update_buf")
    b.program.op("mul_", buf, scalar=a["beta"])
    b.program.op("add_", buf, b.update, scalar="1")
    b.update = buf


register(Primitive(
    "transform", "momentum", "transform",
    "heavy-ball momentum of the whole update (RMSprop's momentum): b = β·b + r; r = b",
    "b (b={beta}·b+r)", (HParam("beta", 0.9, 0.0, 1.0, open_high=True, search=(0.5, 0.999),
                            scale="log1m", arg="update_momentum",
                            doc="momentum factor of the update"),),
    buffers=("update_buf",), builds_update=True, emit=_update_momentum))
register(Primitive(
    "transform", "trust_ratio", "transform",
    "layer-wise trust ratio (LAMB): r *= ‖p‖/‖r‖ per tensor (1 when either norm is 0)",
    "‖p‖/‖r‖·r", builds_update=True, update_scale_free=True, emit=_trust_ratio))


def _orthogonalize(b: Builder, block: Block, a: dict[str, str]) -> None:
    with b.program.only("matrix"):
        b.program.op("orthogonalize", b.update, out=b.update)


register(Primitive(
    "transform", "orthogonalize", "transform",
    "Muon's orthogonalization of the update of a matrix (2 or more dims, as its (out, −1) "
    "matrix): 5 Newton–Schulz steps in bfloat16 towards U·Vᵀ, times √max(1, rows/cols); "
    "the other parameters' update is left as it is",
    "NS₅(r)·√max(1,rows/cols)", builds_update=True, update_scale_free=True,
    emit=_orthogonalize))


def _relative_step(b: Builder, block: Block, a: dict[str, str]) -> None:
    """Adafactor's update clipping and relative step size (torch.optim.Adafactor):
    r /= max(1, RMS(r)/d); r *= max(eps2, RMS(p)); the step size is min(lr, 1/√t)."""
    p, r = b.program, b.update
    update_rms = p.op("rms", r, out="update_rms")
    p.op("div_", update_rms, scalar=a["clip_threshold"])
    p.op("clamp_min_", update_rms, scalar="1.0")
    scale = p.op("rms", "param", out="param_rms")
    p.op("clamp_min_", scale, scalar=a["eps2"])
    p.op("divt_", scale, update_rms)  # per tensor: one pass over r below
    p.op("mult_", r, scale)
    b.step_size = p.let("relative_step_size", f"min({b.lr}, 1 / step ** 0.5)")


register(Primitive(
    "transform", "relative_step", "transform",
    "Adafactor's update clipping and relative step size: r /= max(1, RMS(r)/d), "
    "r *= max(eps2, RMS(p)) per tensor, and p -= min(lr, 1/√t)·r",
    "min(lr,1/√t)·max({eps2},RMS(p))·r/max(1,RMS(r)/{clip_threshold})",
    (HParam("clip_threshold", 1.0, 1.0, math.inf, search=(1.0, 10.0), scale="log", arg="d",
            doc="clipping threshold: the update's RMS is clipped to at most d"),
     HParam("eps2", 1e-3, 0.0, 1.0, search=(1e-5, 0.1), scale="log", arg="eps2",
            doc="floor of RMS(p) in the relative step size")),
    builds_update=True, update_scale_free=True, sets_step_size=True, emit=_relative_step))

# ----------------------------------------------------------------------------------------------
# State: first moment, gradient-difference moment, second moment.


def _ema_momentum(b: Builder, block: Block, a: dict[str, str]) -> None:
    m = b.program.buffer("exp_avg")
    b.program.op("lerp_", m, "grad", scalar=f"1 - {a['beta']}")
    bc = b.bias_correction("bias_correction1", a["beta"]) if block["bias_correction"] else None
    b.moments["momentum"] = (m, bc)


def _heavy_ball(b: Builder, block: Block, a: dict[str, str]) -> None:
    m = b.program.buffer("momentum_buffer")
    b.program.op("mul_", m, scalar=a["beta"])
    b.program.op("add_", m, "grad", scalar="1")
    b.moments["momentum"] = (m, None)


register(Primitive(
    "momentum", "ema", "state", "exponential moving average of the gradient (Adam's m)",
    "m=EMA[{beta}](g)",
    (_beta("beta", 0.9, "beta1", "decay of the first moment"), BIAS_CORRECTION),
    buffers=("exp_avg",), emit=_ema_momentum))
register(Primitive(
    "momentum", "heavy_ball", "state", "heavy-ball momentum as in torch.optim.SGD: m = β·m + g",
    "m={beta}·m+g", (HParam("beta", 0.9, 0.0, 1.0, open_high=True, search=(0.5, 0.999),
                            scale="log1m", arg="momentum", doc="momentum factor"),),
    buffers=("momentum_buffer",), heavy_ball=True, emit=_heavy_ball))


def _grad_diff_ema(b: Builder, block: Block, a: dict[str, str]) -> None:
    d = b.program.buffer("exp_avg_diff")
    b.program.op("lerp_", d, b.diff(), scalar=f"1 - {a['beta']}")
    bc = b.bias_correction("bias_correction_diff", a["beta"]) if block["bias_correction"] else None
    b.moments["grad_diff"] = (d, bc)


register(Primitive(
    "grad_diff", "ema", "state", "EMA of the gradient difference g_t − g_{t−1} (Adan's d)",
    "d=EMA[{beta}](g−g_prev)",
    (_beta("beta", 0.92, "beta_diff", "decay of the gradient-difference moment"), BIAS_CORRECTION),
    buffers=("exp_avg_diff", "prev_grad"), emit=_grad_diff_ema))


def _second_moment(form: str) -> Callable[[Builder, Block, dict[str, str]], None]:
    """The denominator of normalized terms. ``adam``/``rmsprop``/``adan``: √(EMA of x²) + eps
    (bias-corrected but for rmsprop; adan's x = g + c·Δg); ``amsgrad``: Adam's with the running
    maximum of v (torch.optim.Adam(amsgrad=True)); ``sum``: Adagrad's √(Σ g²) + eps."""
    def emit(b: Builder, block: Block, a: dict[str, str]) -> None:
        p = b.program
        v = p.buffer(REGISTRY["second_moment"][form].buffers[0])
        x = "grad"
        if form == "adan":
            x = p.op("add", "grad", b.diff(), out="grad_mix", scalar=a["diff_coef"])
        if form == "sum":
            p.op("addcmul_", v, x, x, scalar="1")
        else:
            p.op("mul_", v, scalar=a["beta"])
            p.op("addcmul_", v, x, x, scalar=f"1 - {a['beta']}")
        if form == "amsgrad":
            v_max = p.buffer("max_exp_avg_sq")
            p.op("maximum_", v_max, v)
            v = v_max
        denom = p.op("sqrt", v, out="denom", into=x if x != "grad" else None)
        if form in ("adam", "adan", "amsgrad"):
            bc = b.bias_correction("bias_correction2", a["beta"])
            p.let("bias_correction2_sqrt", f"{bc} ** 0.5")
            p.op("div_", denom, scalar="bias_correction2_sqrt")
        p.op("adds_", denom, scalar=a["eps"])
        b.denom = denom

    return emit


def _centered(b: Builder, block: Block, a: dict[str, str]) -> None:
    """Centered RMSprop's √(v − ḡ²) + eps: v and ḡ are EMAs of g² and g (no bias correction)."""
    p = b.program
    v, mean = p.buffer("square_avg"), p.buffer("grad_avg")
    p.op("mul_", v, scalar=a["beta"])
    p.op("addcmul_", v, "grad", "grad", scalar=f"1 - {a['beta']}")
    p.op("lerp_", mean, "grad", scalar=f"1 - {a['beta']}")
    variance = p.op("addcmul", v, mean, mean, out="denom", scalar="-1")
    denom = p.op("sqrt", variance, out="denom", into=variance)
    p.op("adds_", denom, scalar=a["eps"])
    b.denom = denom


def _infinity_norm(b: Builder, block: Block, a: dict[str, str]) -> None:
    """Adamax's u = max(β·u, |g| + eps), used as the denominator as it is."""
    p = b.program
    u = p.buffer("exp_inf")
    p.op("mul_", u, scalar=a["beta"])
    abs_grad = p.op("abs", "grad", out="abs_grad")
    p.op("adds_", abs_grad, scalar=a["eps"])
    p.op("maximum_", u, abs_grad)
    b.denom = u


def _radam(b: Builder, block: Block, a: dict[str, str]) -> None:
    """RAdam's rectified denominator: (√v + eps)/(√(1−β^t)·r_t) once the variance of the
    adaptive lr is tractable (ρ_t > 5), else 1 (the step is then momentum SGD)."""
    p = b.program
    v = p.buffer("exp_avg_sq")
    p.op("mul_", v, scalar=a["beta"])
    p.op("addcmul_", v, "grad", "grad", scalar=f"1 - {a['beta']}")
    denom = p.op("sqrt", v, out="denom")
    p.op("adds_", denom, scalar=a["eps"])
    bc = b.bias_correction("bias_correction2", a["beta"])
    p.let("rho_inf", f"2 / (1 - {a['beta']}) - 1")
    p.let("rho_t", f"rho_inf - 2 * step * {a['beta']} ** step / {bc}")
    p.let("rectification", "((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2)"
                           " * rho_t)) ** 0.5 if rho_t > 5 else 0.0")
    p.let("rectified_scale", f"{bc} ** 0.5 * rectification")
    p.op("div_", denom, scalar="rectified_scale", when="rho_t > 5")
    p.op("mul_", denom, scalar="0.0", when="rho_t <= 5")
    p.op("adds_", denom, scalar="1.0", when="rho_t <= 5")
    b.denom = denom


def _adadelta(b: Builder, block: Block, a: dict[str, str]) -> None:
    """Adadelta's unit-correcting denominator √(v + eps)/√(u + eps), where u is the EMA of the
    squared normalized gradient (the step Adadelta takes, before lr)."""
    p = b.program
    v, u = p.buffer("square_avg"), p.buffer("acc_delta")
    p.op("mul_", v, scalar=a["beta"])
    p.op("addcmul_", v, "grad", "grad", scalar=f"1 - {a['beta']}")
    std = p.op("adds", v, out="std", scalar=a["eps"])
    std = p.op("sqrt", std, out="std_sqrt", into=std)
    unit = p.op("adds", u, out="unit", scalar=a["eps"])
    unit = p.op("sqrt", unit, out="unit_sqrt", into=unit)
    denom = p.op("div", std, unit, out="denom")
    step = p.op("div", "grad", denom, out="unit_step")
    p.op("mul_", u, scalar=a["beta"])
    p.op("addcmul_", u, step, step, scalar=f"1 - {a['beta']}")
    b.denom = denom


def _factored(b: Builder, block: Block, a: dict[str, str]) -> None:
    """Adafactor's second moment, as torch.optim.Adafactor with eps1=None: with the decay
    β̂_t = 1 − t^τ, a matrix (2 or more dims) keeps EMAs of the mean of g² over its rows R and
    its columns C (over the last two dims) and estimates v̂ = R·C / max(mean(R), ε); the other
    parameters keep the EMA of g² itself. The denominator is max(√v̂, ε), ε the machine epsilon
    of the group's first parameter's dtype (torch's eps1=None)."""
    p = b.program
    eps = p.let("eps1", "torch.finfo(params[0].dtype).eps")  # as torch: the first's dtype
    weight = p.let("one_minus_beta2_t", f"step ** {a['decay_rate']}")
    with p.only("matrix"):
        row, col = p.buffer("row_var", reduced=-1), p.buffer("col_var", reduced=-2)
        p.op("lerp_", row, p.op("mean_sq", "grad", out="row_mean", scalar="-1"), scalar=weight)
        p.op("lerp_", col, p.op("mean_sq", "grad", out="col_mean", scalar="-2"), scalar=weight)
        estimate = p.op("matmul", row, col, out="var_estimate")
        row_var_mean = p.op("mean", row, out="row_var_mean", scalar="-2")
        p.op("clamp_min_", row_var_mean, scalar=eps)
        p.op("divt_", estimate, row_var_mean)
    with p.only("vector"):
        variance = p.buffer("variance")
        p.op("lerp_", variance, p.op("mul", "grad", "grad", out="grad_sq"), scalar=weight)
        p.op("clone", variance, out="var_estimate")
    p.op("clamp_min_", "var_estimate", scalar=f"{eps} * {eps}")  # max(√v̂, ε) = √max(v̂, ε²)
    p.op("sqrt_", "var_estimate")
    b.denom = "var_estimate"


def _hessian(b: Builder, block: Block, a: dict[str, str]) -> None:
    """AdaHessian's denominator (Yao et al. 2021): v = EMA of D², D the Hutchinson estimate of
    the Hessian diagonal (conv kernels spatially averaged), bias-corrected; (√v̂)^k + eps."""
    p = b.program
    v = p.buffer("exp_hessian_sq")
    diagonal = p.hessian()
    p.op("mul_", v, scalar=a["beta"])
    p.op("addcmul_", v, diagonal, diagonal, scalar=f"1 - {a['beta']}")
    denom = p.op("sqrt", v, out="denom")
    bc = b.bias_correction("bias_correction2", a["beta"])
    p.let("bias_correction2_sqrt", f"{bc} ** 0.5")
    p.op("div_", denom, scalar="bias_correction2_sqrt")
    p.op("pow_", denom, scalar=a["power"], when=f"{a['power']} != 1.0")
    p.op("adds_", denom, scalar=a["eps"])
    b.denom = denom


_BETA2 = _beta("beta", 0.999, "beta2", "decay of the second moment")
register(Primitive(
    "second_moment", "adam", "state", "Adam's v: EMA of g², bias-corrected; √v̂ + eps",
    "v=EMA[{beta}](g²)", (_BETA2, EPS), buffers=("exp_avg_sq",), denominator="√v̂+ε",
    bias_twin="rmsprop", emit=_second_moment("adam")))
register(Primitive(
    "second_moment", "rmsprop", "state", "RMSprop's v: EMA of g², no bias correction; √v + eps",
    "v=EMA[{beta}](g²)", (_BETA2, EPS), buffers=("exp_avg_sq",), denominator="√v+ε",
    bias_twin="adam", emit=_second_moment("rmsprop")))
register(Primitive(
    "second_moment", "adan", "state", "Adan's n: EMA of (g + c·Δg)², bias-corrected; √n̂ + eps",
    "v=EMA[{beta}]((g+{diff_coef}·Δg)²)",
    (_BETA2, EPS, HParam("diff_coef", 0.92, 0.0, 10.0, search=(0.1, 2.0), scale="log",
                         arg="diff_coef", doc="weight of Δg inside the squared term")),
    buffers=("exp_avg_sq", "prev_grad"), denominator="√v̂+ε", emit=_second_moment("adan")))
register(Primitive(
    "second_moment", "amsgrad", "state",
    "AMSGrad: Adam's v, but the running maximum of it: √(max v)/√(1−β^t) + eps",
    "v=EMA[{beta}](g²), v̄=max(v̄,v)", (_BETA2, EPS), buffers=("exp_avg_sq", "max_exp_avg_sq"),
    denominator="√v̄̂+ε", emit=_second_moment("amsgrad")))
register(Primitive(
    "second_moment", "centered", "state",
    "centered RMSprop: √(v − ḡ²) + eps, with v and ḡ EMAs of g² and g",
    "v=EMA[{beta}](g²), ḡ=EMA[{beta}](g)", (_beta("beta", 0.99, "alpha", "decay of v and ḡ"), EPS),
    buffers=("square_avg", "grad_avg"), denominator="√(v−ḡ²)+ε", emit=_centered))
register(Primitive(
    "second_moment", "infinity_norm", "state",
    "Adamax's exponentially weighted infinity norm: u = max(β·u, |g| + eps)",
    "u=max({beta}·u,|g|+ε)", (_BETA2, EPS), buffers=("exp_inf",), denominator="u",
    emit=_infinity_norm))
register(Primitive(
    "second_moment", "radam", "state",
    "RAdam's rectified √v: (√v + eps)/(√(1−β^t)·r_t) when ρ_t > 5, else 1",
    "v=EMA[{beta}](g²), rectified", (_BETA2, EPS), buffers=("exp_avg_sq",),
    denominator="r(√v+ε)", emit=_radam))
register(Primitive(
    "second_moment", "adadelta", "state",
    "Adadelta's √(v + eps)/√(u + eps): v = EMA of g², u = EMA of the squared step",
    "v=EMA[{beta}](g²), u=EMA[{beta}]((g·√(u+ε)/√(v+ε))²)",
    (_beta("beta", 0.9, "rho", "decay of both running averages"), EPS),
    buffers=("square_avg", "acc_delta"), denominator="√(v+ε)/√(u+ε)", emit=_adadelta))
register(Primitive(
    "second_moment", "factored", "state",
    "Adafactor's factored v: row and column EMAs of g² for matrices (v̂ = R·C/mean(R)), "
    "the EMA of g² for the others, decaying by β̂_t = 1 − t^τ; max(√v̂, ε), ε the machine epsilon",
    "v=factored EMA[1−t^{decay_rate}](g²)",
    (HParam("decay_rate", -0.8, -10.0, 0.0, search=(-1.0, -0.3), arg="beta2_decay",
            doc="τ: the decay of the second moment is β̂_t = 1 − t^τ"),),
    buffers=("row_var", "col_var", "variance"), denominator="max(√v̂,ε)", emit=_factored))
register(Primitive(
    "second_moment", "hessian", "state",
    "AdaHessian's v: EMA of D², D = z⊙Hz the Hutchinson estimate of the Hessian diagonal "
    "(Rademacher z; conv kernels averaged over their spatial dims), bias-corrected; (√v̂)^k + eps",
    "v=EMA[{beta}](D²), D=z⊙Hz",
    (_BETA2, EPS, HParam("power", 1.0, 0.0, 1.0, open_low=True, search=(0.5, 1.0),
                         arg="hessian_power", doc="k: the denominator is (√v̂)^k + eps")),
    buffers=("exp_hessian_sq",), denominator="(√v̂)^k+ε", curvature=True, emit=_hessian))
register(Primitive(
    "second_moment", "sum", "state", "Adagrad's accumulated squares: √(Σ g²) + eps",
    "v=Σg²", (EPS,), buffers=("grad_sq_sum",), denominator="√v+ε", emit=_second_moment("sum")))

# ----------------------------------------------------------------------------------------------
# Terms: update directions; the update is p -= lr * sum_i weight_i * direction_i.
# A term's emit returns (slot holding the direction, bias-correction scalar or None).


def _moment_term(slot: str) -> Callable:
    return lambda b, block, a: b.moment(slot)


def _nesterov(b: Builder, block: Block, a: dict[str, str]) -> tuple[str, str | None]:
    m, bc = b.moment("momentum")
    momentum, args = b.declared["momentum"]
    beta = args["beta"]
    if momentum.heavy_ball:  # torch.optim.SGD(nesterov=True): g + momentum * buf
        return b.program.op("add", "grad", m, out="nesterov", scalar=beta), None
    out = b.program.op("lerp", m, "grad", out="nesterov", scalar=f"1 - {beta}")
    if bc is not None:
        bc = b.bias_correction("bias_correction1_next", beta, offset="1")
    return out, bc


def _sign_of(source: Callable[[Builder], str], out: str) -> Callable:
    def emit(b: Builder, block: Block, a: dict[str, str]) -> tuple[str, None]:
        return b.program.op("sign", source(b), out=b.fresh(out)), None

    return emit


def _lion(b: Builder, block: Block, a: dict[str, str]) -> tuple[str, None]:
    # Runs in the pre_state phase: reads last step's m, before the momentum update.
    m = b.declared["momentum"][0].buffers[0]
    c = b.program.op("clone", m, out=b.fresh("interp"))
    b.program.op("lerp_", c, "grad", scalar=f"1 - {a['beta']}")
    return b.program.op("sign", c, out=c), None


def _nadam(b: Builder, block: Block, a: dict[str, str]) -> tuple[str, None]:
    """NAdam's direction c_m·m + c_g·g (Dozat 2016, as torch.optim.NAdam): with the momentum
    coefficient μ_t = β·(1 − ½·0.96^(t·ψ)) and Π_t = μ_1···μ_t (per-parameter scalar state),
    c_g = (1 − μ_t)/(1 − Π_t) and c_m = μ_{t+1}/(1 − Π_t·μ_{t+1}). m is the raw EMA (the term
    does its own bias correction)."""
    p = b.program
    beta, decay = b.declared["momentum"][1]["beta"], a["momentum_decay"]
    suffix = decay.removesuffix("_momentum_decay").removeprefix("nadam")  # "" for the first
    mu = p.let(f"mu{suffix}", f"{beta} * (1.0 - 0.5 * 0.96 ** (step * {decay}))")
    mu_next = p.let(f"mu_next{suffix}", f"{beta} * (1.0 - 0.5 * 0.96 ** ((step + 1) * {decay}))")
    product = p.scalar(f"mu_product{suffix}", 1.0, f"mu_product{suffix} * {mu}")
    p.let(f"nadam_grad_coef{suffix}", f"(1.0 - {mu}) / (1.0 - {product})")
    p.let(f"nadam_momentum_coef{suffix}", f"{mu_next} / (1.0 - {product} * {mu_next})")
    out = p.op("muls", b.moment("momentum")[0], out=b.fresh("nadam"),
               scalar=f"nadam_momentum_coef{suffix}")
    p.op("add_", out, "grad", scalar=f"nadam_grad_coef{suffix}")
    return out, None


_M = frozenset({"momentum"})
register(Primitive("terms", "grad", "update", "the (processed) gradient", "g", (WEIGHT, NORMALIZE),
                   emit=lambda b, block, a: ("grad", None)))
register(Primitive("terms", "momentum", "update", "the first moment m (m̂ when bias-corrected)",
                   "m", (WEIGHT, NORMALIZE), uses=_M, emit=_moment_term("momentum")))
register(Primitive("terms", "nesterov", "update",
                   "Nesterov look-ahead: the momentum update applied once more to g",
                   "nesterov(m,g)", (WEIGHT, NORMALIZE), uses=_M, emit=_nesterov))
register(Primitive(
    "terms", "nadam", "update",
    "NAdam's Nesterov direction: g and m with momentum coefficients that warm up over steps",
    "nadam(m,g,ψ={momentum_decay})",
    (WEIGHT, NORMALIZE, HParam("momentum_decay", 4e-3, 0.0, 1.0, search=(1e-4, 0.1), scale="log",
                               arg="momentum_decay", doc="ψ: how fast μ_t warms up to β")),
    uses=_M, emit=_nadam))
register(Primitive("terms", "grad_diff", "update", "Adan's gradient-difference moment d",
                   "d", (WEIGHT, NORMALIZE), uses=frozenset({"grad_diff"}),
                   emit=_moment_term("grad_diff")))
register(Primitive("terms", "sign_grad", "update", "sign(g)", "sign(g)", (WEIGHT,),
                   emit=_sign_of(lambda b: "grad", "sign_grad")))
register(Primitive("terms", "sign_momentum", "update", "sign(m)", "sign(m)", (WEIGHT,), uses=_M,
                   emit=_sign_of(lambda b: b.moment("momentum")[0], "sign_momentum")))
register(Primitive(
    "terms", "lion", "pre_state",
    "Lion: sign of an interpolation of last step's m and g: sign(β·m + (1−β)·g)",
    "sign(lerp(m,g,{beta}))",
    (WEIGHT, _beta("beta", 0.9, "beta", "interpolation weight of the momentum")), uses=_M,
    emit=_lion))

TERM_KINDS = tuple(REGISTRY["terms"])
