"""Term blocks: the directions the slot genome's ``terms`` list holds. A term adds w·x (or
w·x/``by``) to the update at the sum point (after the update stage, as the slot genome does).
``add`` and ``sign`` read any tensor signal: the legacy kinds ``grad``/``momentum``/
``grad_diff`` and ``sign_grad``/``sign_momentum`` are these two, wired to g, m or d."""

from __future__ import annotations

from typing import Any

from evoopt.genome.blocks.base import wrap
from evoopt.genome.primitives import REGISTRY as SLOT_REGISTRY
from evoopt.genome.primitives import Builder

_TERMS = SLOT_REGISTRY["terms"]


def _by_input(legacy: dict[str, str]) -> Any:
    """An emit that runs the legacy term of the family the ``of`` input belongs to."""
    def emit(b: Builder, block: Any, a: dict[str, str]) -> Any:
        family = b.inputs["of"].family  # type: ignore[attr-defined]
        return _TERMS[legacy[family]].emit(b, block, a)

    return emit


_ADD = {"g": "grad", "momentum": "momentum", "grad_diff": "grad_diff"}
wrap("terms", "grad", chain_kind="add", category="term", default_of="g",
     accepts=tuple(_ADD), legacy_of=tuple(_ADD.items()), emit=_by_input(_ADD),
     summary="w·x, or w·x/by: a signal (the gradient by default) as a direction",
     formula="x")
_SIGN = {"g": "sign_grad", "momentum": "sign_momentum"}
wrap("terms", "sign_grad", chain_kind="sign", category="term", ports=("of",), default_of="g",
     accepts=tuple(_SIGN), legacy_of=tuple(_SIGN.items()), emit=_by_input(_SIGN),
     summary="sign(x) of a signal (the gradient by default)", formula="sign(x)")
for _kind in ("nesterov", "nadam"):
    wrap("terms", _kind, category="term", default_of="m", accepts=("momentum",))
wrap("terms", "lion", category="term", ports=("of",), default_of="m", accepts=("momentum",),
     reads_previous=True)
