"""The block registry's entry, :class:`BlockSpec`, and the registry itself.

A block is one instance in a genome's chain (:class:`evoopt.genome.chain.Block`); its kind is
defined once here: its hyperparameters, the state it owns, what it reads (the ``of`` and ``by``
ports and the implicit inputs), what it produces, the stage it runs in, and the tensor program
it emits. Step 1 of docs/design-chain-of-blocks.md registers one spec per legacy primitive of
:mod:`evoopt.genome.primitives` and reuses that primitive's own ``emit`` (``legacy`` names the
``(slot, kind)`` it converts from), so a chain converted from a slot genome emits exactly the
slot genome's program. The slot genome stays authoritative until step 4.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from evoopt.genome.primitives import (
    BLOCK_SLOTS,
    NORMALIZE,
    PHASES,
    Builder,
    GenomeError,
    HParam,
    Primitive,
)
from evoopt.genome.primitives import (
    REGISTRY as SLOT_REGISTRY,
)
from evoopt.genome.program import Layout

#: Stage ranks, lowest first: the compiler emits blocks by stage, then by chain order. These
#: are the legacy ``PHASES`` with the apply (``p -= step_size·u``, which the slot genome wrote
#: inline at the end of its transform phase) as a stage of its own.
STAGES = (*PHASES[:PHASES.index("proximal")], "apply", "proximal")

#: Categories of the genome's global fields (one block each, in :class:`Rules` or at the top
#: level) and of the blocks a chain holds.
GLOBAL_CATEGORIES = ("schedule", "clip", "weight_decay", "apply")
CHAIN_CATEGORIES = ("grad", "accumulate", "term", "update")

#: Signal families: what a read port can be wired to. ``g`` is the gradient (after clipping and
#: coupled decay); the others are named by the legacy slot whose table produced them.
FAMILIES = ("g", "momentum", "grad_diff", "second_moment")


@dataclass(frozen=True)
class StateDecl:
    """A per-parameter state buffer a block owns, by its local name: an unnamed instance keeps
    it as its state key (the legacy key), an instance named N holds it as ``N_<name>``."""

    name: str
    init: str = "zeros"
    scope: str = "param"
    layout: Layout = Layout()


@dataclass(frozen=True)
class BlockSpec:
    """One kind of block, defined once (design §2.2; the fields later steps add are left out).

    ``ports``: the read ports a chain may wire (``of``: a tensor signal of a family in
    ``accepts``, by default ``default_of``; ``by``: a denominator). ``default_out``: the signal an
    unnamed instance produces (``m``, ``d``, ``v``; a named instance produces its name), of type
    ``out_type``. ``reads_previous``: reads the producer's value of the previous step (Lion), so
    its producer may stand later in the chain. ``reads_diff``: reads g − g_prev, whose state
    ``prev_grad`` every reader shares. ``legacy``: the ``(slot, kind)`` of the slot genome it
    converts from; ``legacy_of``: for a term that several legacy kinds map to (``add``,
    ``sign``), the legacy kind by the family of its ``of`` input. ``arg_rank``: where its
    exported arguments come in the constructor (the legacy slot order, terms last).
    ``emit(builder, block, args)`` is the legacy primitive's emit (``args``: hparam name →
    exported argument name).
    """

    kind: str
    category: str
    stage: str
    summary: str
    formula: str
    emit: Callable[[Builder, Any, dict[str, str]], Any]
    hparams: tuple[HParam, ...] = ()
    state: tuple[StateDecl, ...] = ()
    ports: tuple[str, ...] = ()
    default_of: str | None = None
    accepts: tuple[str, ...] = ()
    default_out: str | None = None
    out_type: str = "tensor"
    out_family: str | None = None
    reads_previous: bool = False
    reads_diff: bool = False
    curvature: bool = False
    builds_update: bool = False
    scale_free: bool = False
    sets_step_size: bool = False
    lr_scaled: tuple[str, ...] = ()
    alone_as: str = ""
    group_wide: bool = False
    legacy: tuple[str, str] | None = None
    legacy_of: tuple[tuple[str, str], ...] = ()
    arg_rank: int = len(BLOCK_SLOTS)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"{self.kind}: unknown stage {self.stage!r}")
        if self.category not in (*GLOBAL_CATEGORIES, *CHAIN_CATEGORIES):
            raise ValueError(f"{self.kind}: unknown category {self.category!r}")
        if not set(self.ports) <= {"of", "by"}:
            raise ValueError(f"{self.kind}: unknown ports {self.ports}")
        if ("of" in self.ports) != (self.default_of is not None):
            raise ValueError(f"{self.kind}: an of port needs a default_of, and only it")

    @property
    def is_term(self) -> bool:
        return self.category == "term"

    @property
    def produces(self) -> bool:
        return self.default_out is not None

    def hparam(self, name: str) -> HParam:
        for h in self.hparams:
            if h.name == name:
                return h
        raise KeyError(name)

    def legacy_kind(self, family: str | None) -> str | None:
        """The legacy kind of this block when its ``of`` input has ``family`` (``None`` when it
        has no legacy kind for that input)."""
        if self.legacy_of:
            return dict(self.legacy_of).get(family or "")
        return self.legacy[1] if self.legacy else None

    def legacy_primitive(self, family: str | None = None) -> Primitive | None:
        kind = self.legacy_kind(family)
        if kind is None or self.legacy is None:
            return None
        return SLOT_REGISTRY[self.legacy[0]][kind]


REGISTRY: dict[str, BlockSpec] = {}


def register(spec: BlockSpec) -> BlockSpec:
    if spec.kind in REGISTRY:
        raise ValueError(f"block kind {spec.kind!r} registered twice")
    REGISTRY[spec.kind] = spec
    return spec


def spec(kind: str) -> BlockSpec:
    """The spec of block ``kind``; :class:`GenomeError` lists the kinds when there is none."""
    try:
        return REGISTRY[kind]
    except KeyError:
        raise GenomeError(f"unknown block kind {kind!r} (choose one of: "
                          f"{', '.join(sorted(REGISTRY))})") from None


def kinds(category: str) -> list[str]:
    """The kinds of ``category``, in registration order."""
    return [k for k, s in REGISTRY.items() if s.category == category]


def wrap(slot: str, kind: str, *, chain_kind: str | None = None, category: str,
         layouts: Mapping[str, Layout] | None = None, **fields: Any) -> BlockSpec:
    """Register the legacy primitive ``REGISTRY[slot][kind]`` as a block spec: its docs, its
    hyperparameters (but ``normalize``, which becomes the ``by`` port), its buffers as owned
    state (but the shared ``prev_grad`` of g − g_prev), its flags and its own emit function."""
    prim = SLOT_REGISTRY[slot][kind]
    layouts = layouts or {}
    shared = ("prev_grad",)
    state = tuple(StateDecl(b, layout=layouts.get(b, Layout())) for b in prim.buffers
                  if b not in shared)
    base: dict[str, Any] = {
        "kind": chain_kind or kind, "category": category, "stage": prim.phase,
        "summary": prim.summary, "formula": prim.formula, "emit": prim.emit,
        "hparams": tuple(h for h in prim.hparams if h is not NORMALIZE),
        "state": state, "reads_diff": "prev_grad" in prim.buffers,
        "curvature": prim.curvature, "builds_update": prim.builds_update,
        "scale_free": prim.update_scale_free, "sets_step_size": prim.sets_step_size,
        "lr_scaled": prim.lr_scaled, "alone_as": prim.alone_as, "group_wide": prim.group_wide,
        "legacy": (slot, kind),
        "arg_rank": BLOCK_SLOTS.index(slot) if slot in BLOCK_SLOTS else len(BLOCK_SLOTS),
    }
    if NORMALIZE in prim.hparams:
        fields.setdefault("ports", ("of", "by"))
    return register(BlockSpec(**(base | fields)))
