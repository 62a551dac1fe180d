"""Global blocks: one per field of a genome's rules (schedule, weight decay, apply) or of the
genome itself (clip). Each wraps its legacy primitive; the ``sgd`` apply is the line the slot
genome wrote inline at the end of its transform phase."""

from __future__ import annotations

from typing import Any

from evoopt.genome.blocks.base import BlockSpec, register, wrap
from evoopt.genome.primitives import REGISTRY as SLOT_REGISTRY
from evoopt.genome.primitives import Builder

for _kind in SLOT_REGISTRY["schedule"]:
    wrap("schedule", _kind, category="schedule")
wrap("clip", "global_norm", category="clip")
for _kind in ("coupled", "decoupled", "proximal"):
    wrap("weight_decay", _kind, category="weight_decay")


def _sgd(b: Builder, block: Any, a: dict[str, str]) -> None:
    """p -= step_size·u once the update u is built (terms add straight into p otherwise)."""
    if b.update is not None:
        b.program.op("add_", "param", b.update, scalar=f"-{b.step_size or b.lr}")


register(BlockSpec("sgd", "apply", "apply", "apply the update: p -= lr·u (or step_size·u)",
                   "p ← p − lr·u", _sgd))
