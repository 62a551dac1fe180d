"""Schedule-Free AdamW (Defazio et al. 2024, "The Road Less Scheduled"), as blocks.

Training runs at y, an interpolation of the base sequence z (SGD steps on the normalized
gradient) and the average x of the z's; the averaged weights are the ones to evaluate. The
parameters hold y while training; ``eval()`` moves them to x and ``train()`` back (the
generated class's :class:`~evoopt.genome.program.Swap`). With β the interpolation weight and
c_t the averaging weight w_t/Σw (w_t = t^r · max lr^power):

    y ← (1 − c_t)·y + c_t·z + lr·(β(1 − c_t) − 1)·u;   z ← z − lr·u

where u is the update the chain's terms build (Schedule-Free AdamW: g/(√(v/(1−β₂ᵗ) + ε_in) + ε),
the ``adam_v_before_sqrt`` denominator). x = (y − (1 − β)·z)/β is what ``eval()`` sets.
"""

from __future__ import annotations

from typing import Any

from evoopt.genome.blocks.base import BlockSpec, StateDecl, register
from evoopt.genome.primitives import EPS, Builder, GenomeError, HParam
from evoopt.genome.program import Swap

_BETA2 = HParam("beta", 0.999, 0.0, 1.0, open_high=True, search=(0.9, 0.9999), scale="log1m",
                arg="beta2", doc="decay of the second moment")
EPS_INSIDE = HParam("eps_inside", 1e-15, 0.0, 1.0, search=(1e-30, 1e-8), scale="log",
                    arg="eps_inside", doc="added to the corrected second moment, inside the "
                                          "square root")


def _adam_v_before_sqrt(b: Builder, block: Any, a: dict[str, str]) -> None:
    """v = EMA of g²; the denominator √(v/(1 − β^t) + ε_in) + ε (pytorch-optimizer's
    apply_ams_bound on the corrected v, as its ScheduleFreeAdamW computes it)."""
    p = b.program
    v = p.buffer("exp_avg_sq")
    p.op("mul_", v, scalar=a["beta"])
    p.op("addcmul_", v, "grad", "grad", scalar=f"1 - {a['beta']}")
    bc = b.bias_correction("bias_correction2", a["beta"])
    denom = p.op("clone", v, out="denom")
    p.op("div_", denom, scalar=bc)
    p.op("adds_", denom, scalar=a["eps_inside"])
    p.op("sqrt_", denom)
    p.op("adds_", denom, scalar=a["eps"])
    b.denom = denom


register(BlockSpec(
    "adam_v_before_sqrt", "accumulate", "state",
    "Adam's v corrected before the root: √(v/(1−β^t) + ε_in) + ε (Schedule-Free AdamW's)",
    "v=EMA[{beta}](g²)", _adam_v_before_sqrt, hparams=(_BETA2, EPS, EPS_INSIDE),
    state=(StateDecl("exp_avg_sq"),), default_out="v", out_type="denominator",
    out_family="second_moment"))

_SF_BETA = HParam("beta", 0.9, 0.0, 1.0, open_low=True, open_high=True, search=(0.5, 0.99),
                  scale="log1m", arg="sf_beta",
                  doc="β: where y sits between the average x and the base sequence z")
_SF_R = HParam("r", 0.0, 0.0, 10.0, search=(0.0, 2.0), arg="sf_r",
               doc="r: the averaging weight grows as step^r")
_SF_POWER = HParam("weight_lr_power", 2.0, 0.0, 10.0, search=(0.0, 4.0), arg="sf_weight_lr_power",
                   doc="the averaging weight grows as (max lr so far)^power")


def _schedule_free(b: Builder, block: Any, a: dict[str, str]) -> None:
    if b.prefix:
        raise GenomeError("matrix.apply: schedule_free averages with weights shared by the whole "
                          "group: set it at the top level")
    p, u, lr = b.program, b.update, b.lr
    assert u is not None  # the spec builds the update
    z = p.param_copy("z")
    p.group_scalar("sf_lr_max", -1.0, f"max({lr}, sf_lr_max)")
    p.let("sf_weight", f"group_step ** {a['r']} * sf_lr_max ** {a['weight_lr_power']}")
    p.group_scalar("sf_weight_sum", 0.0, "sf_weight_sum + sf_weight")
    p.let("sf_checkpoint", "sf_weight / sf_weight_sum if sf_weight_sum != 0.0 else 0.0")
    p.op("lerp_", "param", z, scalar="sf_checkpoint")
    p.let("sf_y_step", f"{lr} * ({a['beta']} * (1.0 - sf_checkpoint) - 1)")
    p.op("add_", "param", u, scalar="sf_y_step")
    p.let("sf_z_step", f"-{lr}")
    p.op("add_", z, u, scalar="sf_z_step")
    p.swap = Swap("z", to_eval=f"1.0 - 1.0 / {a['beta']}", to_train=f"1.0 - {a['beta']}",
                  doc="y ↔ x: eval() sets x = lerp(y, z, 1 − 1/β), train() y = lerp(x, z, 1 − β)")


register(BlockSpec(
    "schedule_free", "apply", "apply",
    "Schedule-Free averaging: train at y = lerp(x, z, 1 − β), z the SGD sequence on u, x its "
    "average weighted by step^r·max(lr)^power; eval() switches to x",
    "schedule_free(β={beta})", _schedule_free, hparams=(_SF_BETA, _SF_R, _SF_POWER),
    state=(StateDecl("z", init="param"),), builds_update=True, scale_free=True))
