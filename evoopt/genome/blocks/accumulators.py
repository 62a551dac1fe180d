"""Accumulator blocks: the state moments of the slot genome's ``momentum``, ``grad_diff`` and
``second_moment`` tables (their signals ``m``, ``d`` and the denominator ``v``)."""

from __future__ import annotations

from evoopt.genome.blocks.base import wrap
from evoopt.genome.primitives import REGISTRY as SLOT_REGISTRY
from evoopt.genome.program import Layout

_M = {"category": "accumulate", "default_out": "m", "out_family": "momentum"}
wrap("momentum", "ema", **_M)
wrap("momentum", "heavy_ball", **_M)
wrap("grad_diff", "ema", chain_kind="diff_ema", category="accumulate", default_out="d",
     out_family="grad_diff")

#: Second-moment kinds keep their legacy names, but Adam's, which is ``adam_v`` as in the
#: design's genome files (``adam`` names the optimizer).
SECOND_MOMENT_KINDS = {kind: "adam_v" if kind == "adam" else kind
                       for kind in SLOT_REGISTRY["second_moment"]}
_FACTORED = {"row_var": Layout("matrix", -1), "col_var": Layout("matrix", -2),
             "variance": Layout("vector")}
for _kind, _chain_kind in SECOND_MOMENT_KINDS.items():
    wrap("second_moment", _kind, chain_kind=_chain_kind, category="accumulate",
         default_out="v", out_type="denominator", out_family="second_moment",
         layouts=_FACTORED if _kind == "factored" else None)
