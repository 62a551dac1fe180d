"""ADOPT (Taniguchi et al. 2024, "ADOPT: Modified Adam Can Converge with Any β2 with the Optimal
Rate"): the gradient normalized by the *previous* step's second moment, as a gradient block.

ADOPT's step (pytorch_optimizer.ADOPT, with t the step count)::

    t = 1:  v ← g²                                   (nothing else: the parameters stay)
    t > 1:  n ← clamp(g / max(√v, ε), −t^¼, t^¼)      (v of step t − 1)
            m ← β₁·m + (1 − β₁)·n;   p ← p − lr·m
            v ← β₂·v + (1 − β₂)·g²

The block ``adopt_normalize`` is the first and last lines: it owns v, and from it on the
chain's gradient signal ``g`` is n (a zero gradient at step 1, when only v is set). ADOPT is
then the block, an ``ema`` of that gradient without bias correction and an ``add`` of m::

    chain = [{kind="adopt_normalize"}, {kind="ema", bias_correction=false}, {kind="add", of="m"}]

The zero gradient of step 1 keeps m at 0 (lerp of 0 towards 0), so the ``add`` moves no
parameter: the step-1 "only initialise v" holds on both paths without guarding the other
blocks. Any block that reads g after it (a momentum, a sign, Lion, Nesterov's look-ahead)
reads n. It runs in the ``grad`` stage, after the group's clip and coupled decay (which feed
its g and its v, as the reference's coupled decay does) and before every accumulator.

An unnamed instance keeps its state as ``adopt_exp_avg_sq`` and its arguments as
``adopt_beta2``/``adopt_eps``, which no other block uses, so ADOPT's normalization composes
with Adam's moments without a name; an instance named N holds ``N_adopt_exp_avg_sq`` and
takes ``N_beta``/``N_eps``.
"""

from __future__ import annotations

from typing import Any

from evoopt.genome.blocks.base import BlockSpec, StateDecl, register
from evoopt.genome.primitives import BLOCK_SLOTS, Builder, HParam
from evoopt.genome.program import OpKind, register_op

#: A new zero tensor shaped like the operand (the gradient ADOPT passes on at step 1: the
#: parameter's own gradient is left as it is).
ZEROS_LIKE = register_op(OpKind("zeros_like", 1, False, "torch.zeros_like({0})",
                                "[torch.zeros_like(t) for t in {0}]"))
#: In place, x ← clamp(x, −s, s): the scalar ``s`` must be a name (the emits pass a let), as
#: it is negated in the text. Both paths give min(max(x, −s), s).
CLAMP_SYM = register_op(OpKind("clamp_sym_", 1, True, "{0}.clamp_(-{s}, {s})",
                               "torch._foreach_clamp_min_({0}, -{s})\n"
                               "torch._foreach_clamp_max_({0}, {s})"))

BETA = HParam("beta", 0.9999, 0.0, 1.0, open_high=True, search=(0.9, 0.99999), scale="log1m",
              arg="adopt_beta2", doc="decay of ADOPT's second moment v")
EPS = HParam("eps", 1e-6, 0.0, 1.0, open_low=True, search=(1e-10, 1e-3), scale="log",
             arg="adopt_eps", doc="floor of ADOPT's denominator: g / max(sqrt(v), eps)")
CLIP = HParam("clip", True, doc="clip ADOPT's normalized gradient to [-step**0.25, step**0.25]")

#: The step count from which ADOPT normalizes (before it, the step only sets v = g²).
_LATER, _FIRST = "step > 1", "step == 1"


def _adopt_normalize(b: Builder, block: Any, a: dict[str, str]) -> None:
    """g ← clamp(g / max(√v_{t−1}, ε), ±t^¼) for t > 1, 0 at t = 1; then v ← g² at t = 1, else
    v ← β·v + (1 − β)·g² (with the g the block received). ``step`` is the group's step count
    under ``step_count = "group"`` (pytorch-optimizer's ``group['step']``), so step 1 is the
    optimizer's first step for every parameter there, as in the reference."""
    p = b.program
    v = p.buffer("adopt_exp_avg_sq")
    denom = "adopt_denom"
    p.op("sqrt", v, out=denom, when=_LATER)  # v of the previous step
    p.op("addcmul_", v, "grad", "grad", scalar="1.0", when=_FIRST)
    p.op("mul_", v, scalar=a["beta"], when=_LATER)
    p.op("addcmul_", v, "grad", "grad", scalar=f"1 - {a['beta']}", when=_LATER)
    p.op("clamp_min_", denom, scalar=a["eps"], when=_LATER)
    p.op("div", "grad", denom, out="grad", when=_LATER)
    if block["clip"]:
        bound = p.let("adopt_clip", "step ** 0.25")
        p.op("clamp_sym_", "grad", scalar=bound, when=_LATER)
    p.op("zeros_like", "grad", out="grad", when=_FIRST)


register(BlockSpec(
    "adopt_normalize", "grad", "grad",
    "ADOPT's normalized gradient: g / max(√v, ε) with v of the previous step, clipped to "
    "±step^¼, zero at step 1 (which only sets v = g²); v = EMA[β](g²) of the raw g",
    "g=clip(g/max(√v₋₁,{eps}),±t^¼)[{clip}], 0 at t=1, v=EMA[{beta}](g²)",
    _adopt_normalize, hparams=(BETA, EPS, CLIP), state=(StateDecl("adopt_exp_avg_sq"),),
    arg_rank=BLOCK_SLOTS.index("second_moment")))
