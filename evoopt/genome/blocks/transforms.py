"""Update blocks: they act on the whole update u once the terms are summed into it (LAMB's
decay term and trust ratio, update momentum, Muon's orthogonalization, Adafactor's relative
step)."""

from __future__ import annotations

from evoopt.genome.blocks.base import wrap

wrap("weight_decay", "update", chain_kind="decay_term", category="update")
wrap("transform", "momentum", chain_kind="update_momentum", category="update")
for _kind in ("trust_ratio", "orthogonalize", "relative_step"):
    wrap("transform", _kind, category="update")
