"""Conversion between the slot genome and the chain genome (docs/design-chain-of-blocks.md §3.3).

:func:`from_slots` writes a slot genome as a chain: the state tables in slot order (momentum,
grad_diff, second moment), then the terms in their order, then the decay term (the legacy
``weight_decay.update``), then the transform; ``lr``, ``schedule``, the other weight decays,
``clip`` and ``matrix`` become the same globals. In this order the chain compiler emits exactly
``Genome.build()``'s program. :func:`to_slots` inverts it for every chain the slot language can
express (the tables' order in the chain does not matter, the terms' and the update blocks' do)
and raises :class:`GenomeError` for the others.

Hash policy A (design §3.2) lives here, above the canonical form: :func:`chain_hash` is the
slot genome's hash of ``to_slots(c)`` when that exists, else of ``to_slots(canonical(c))``,
else sha256 of the canonical chain dict (which has ``format``, so the two domains cannot
collide); :func:`chain_structure` follows the same rule. Importing this module installs them
(and the legacy-dict reader of ``ChainGenome.from_dict``) as ``ChainGenome.hash``,
``.structure`` and ``from_dict``'s slot-layout branch, since the chain layer cannot import the
layers above it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from evoopt.genome.blocks import REGISTRY as BLOCKS
from evoopt.genome.blocks import BlockSpec
from evoopt.genome.canonical import canonical, canonical_hash, canonical_structure
from evoopt.genome.chain import UPPER, Block, ChainGenome, Rules, label
from evoopt.genome.genome import CHAIN_READER, Genome
from evoopt.genome.genome import Block as SlotBlock
from evoopt.genome.primitives import NORMALIZE, GenomeError

#: (slot, legacy kind) -> chain kind, for every legacy primitive but the terms that ``add`` and
#: ``sign`` stand for (see :data:`TERMS`).
KINDS: dict[tuple[str, str], str] = {
    s.legacy: s.kind for s in BLOCKS.values() if s.legacy is not None and not s.legacy_of}
#: legacy term kind -> (chain kind, the signal its ``of`` reads, or None for the default)
TERMS: dict[str, tuple[str, str | None]] = {}
for _spec in BLOCKS.values():
    for _family, _kind in _spec.legacy_of:
        _of = {"g": "g", "momentum": "m", "grad_diff": "d"}[_family]
        TERMS[_kind] = (_spec.kind, None if _of == _spec.default_of else _of)
for _spec in BLOCKS.values():
    if _spec.is_term and not _spec.legacy_of and _spec.legacy is not None:
        TERMS[_spec.legacy[1]] = (_spec.kind, None)
#: The chain order of the slot tables (§3.3): state, then the terms, then these.
_STATE_SLOTS = ("momentum", "grad_diff", "second_moment")


def from_slots(genome: Genome) -> ChainGenome:
    """The chain genome of a slot genome (name and description kept)."""
    clip = _block(genome.clip) if genome.clip is not None else None
    matrix = _rules(genome.matrix) if genome.matrix is not None else None
    return ChainGenome(_rules(genome), matrix, clip, name=genome.name,
                       description=genome.description)


def _block(block: SlotBlock, **wiring: str | None) -> Block:
    kind = KINDS[(block.slot, block.kind)] if block.slot != "terms" else TERMS[block.kind][0]
    values = tuple((k, v) for k, v in block.values if k != NORMALIZE.name)
    return Block(kind, values, **wiring)


def _rules(g: Genome) -> Rules:
    chain = [_block(b) for b in (getattr(g, s) for s in _STATE_SLOTS) if b is not None]
    for t in g.terms:
        of = TERMS[t.kind][1]
        chain.append(_block(t, of=of, by="v" if t.get("normalize") else None))
    decay, wd = g.weight_decay, None
    if decay is not None and decay.kind == "update":
        chain.append(_block(decay))
    elif decay is not None:
        wd = _block(decay)
    if g.transform is not None:
        chain.append(_block(g.transform))
    return Rules(g.lr, tuple(chain), _block(g.schedule), wd)


def to_slots(genome: ChainGenome) -> Genome:
    """The slot genome of ``genome``; :class:`GenomeError` names the first block the slot
    language cannot express (a named instance, a second instance of one slot, a wiring the
    legacy terms do not have)."""
    if genome.step_count != "param":
        raise GenomeError(f"step_count: {genome.step_count!r}: the slot genome counts steps per "
                          "parameter; no slot genome expresses it")
    top = _slot_parts(genome.rules, "")
    if genome.clip is not None:
        top["clip"] = _slot_block(genome.clip, "clip", BLOCKS[genome.clip.kind])
    matrix = None
    if genome.matrix is not None:
        matrix = Genome(**_slot_parts(genome.matrix, "matrix."))
    return Genome(**top, matrix=matrix, name=genome.name, description=genome.description)


def _slot_block(block: Block, where: str, spec: BlockSpec, kind: str | None = None,
                normalize: bool | None = None) -> SlotBlock:
    assert spec.legacy is not None
    values = dict(block.values)
    if normalize is not None:
        values[NORMALIZE.name] = normalize
    return SlotBlock(spec.legacy[0], kind or spec.legacy[1], tuple(sorted(values.items())))


def _slot_parts(rules: Rules, path: str) -> dict:
    def refuse(block: Block, where: str, why: str) -> GenomeError:
        return GenomeError(f"{label(block, where)}: {why}; no slot genome expresses it")

    parts: dict = {"lr": rules.lr, "schedule": _slot_block(rules.schedule, f"{path}schedule",
                                                           BLOCKS[rules.schedule.kind])}
    if rules.apply.kind != "sgd":
        raise refuse(rules.apply, f"{path}apply", "another apply than sgd")
    if rules.weight_decay is not None:
        parts["weight_decay"] = _slot_block(rules.weight_decay, f"{path}weight_decay",
                                            BLOCKS[rules.weight_decay.kind])
    terms = []
    transform: str | None = None  # where the transform stands
    for i, block in enumerate(rules.chain):
        where, spec = f"{path}chain[{i}]", BLOCKS[block.kind]
        if block.name is not None:
            raise refuse(block, where, "a named instance")
        if spec.legacy is None:
            raise refuse(block, where, "a block with no legacy kind")
        if spec.category == "update" and spec.legacy[0] == "weight_decay" and transform:
            raise refuse(block, where, f"a decay term after the transform ({transform}); the "
                         "slot genome adds the decay to the update before it")
        if spec.category == "update" and spec.legacy[0] == "transform":
            transform = label(block, where)
        if spec.is_term:
            of = block.of or spec.default_of
            family = {"g": "g", "m": "momentum", "d": "grad_diff"}.get(of or "")
            kind = spec.legacy_kind(family)
            if kind is None:
                raise refuse(block, where, f"a {block.kind} of {of!r}")
            if block.by not in (None, "v"):
                raise refuse(block, where, f"a division by {block.by!r}")
            if block.by is not None and "by" not in spec.ports:
                raise refuse(block, where, "a division")
            normalize = block.by is not None if NORMALIZE in \
                spec.legacy_primitive(family).hparams else None  # type: ignore[union-attr]
            terms.append(_slot_block(block, where, spec, kind, normalize))
            continue
        slot = spec.legacy[0]
        if slot in parts:
            raise refuse(block, where, f"a second {slot} block")
        parts[slot] = _slot_block(block, where, spec)
    parts["terms"] = tuple(terms)
    return parts


# ----------------------------------------------------------------------------------------------
# Hash policy A (design §3.2) and the legacy layout of ChainGenome.from_dict.
def slot_equivalent(genome: ChainGenome) -> Genome | None:
    """``to_slots(genome)``, or None when the slot language does not express it."""
    try:
        return to_slots(genome)
    except GenomeError:
        return None


def _legacy_of(genome: ChainGenome) -> Genome | None:
    """The slot genome whose hash and structure are ``genome``'s: ``to_slots(genome)``, else
    ``to_slots(canonical(genome))``; None when neither exists."""
    slots = slot_equivalent(genome)
    return slots if slots is not None else slot_equivalent(canonical(genome))


def chain_hash(genome: ChainGenome) -> str:
    """Policy A: the legacy hash of ``to_slots(genome)`` when it exists, else of
    ``to_slots(canonical(genome))`` when that exists, else sha256 of the canonical chain dict
    (16 hex digits each)."""
    slots = _legacy_of(genome)
    return slots.hash if slots is not None else canonical_hash(genome)


def chain_structure(genome: ChainGenome) -> str:
    """The structure hash by the same policy as :func:`chain_hash`."""
    slots = _legacy_of(genome)
    return slots.structure if slots is not None else canonical_structure(genome)


def from_legacy_dict(data: Mapping[str, Any], source: str = "genome") -> ChainGenome:
    """A slot-layout genome dict, read as a slot genome and converted."""
    return from_slots(Genome.from_dict(data, source=source))


def read_chain_dict(data: Mapping[str, Any], source: str = "genome") -> Genome | ChainGenome:
    """A chain-layout dict as the slot genome it expresses (name and description kept), or as
    the chain genome when the slot language cannot express it."""
    chain = ChainGenome.from_dict(data, source)
    slots = slot_equivalent(chain)
    if slots is None:
        return chain
    return replace(slots, name=chain.name, description=chain.description)


CHAIN_READER["read"] = read_chain_dict


def chain_formula(genome: ChainGenome) -> str:
    """The slot genome's formula when the slot language expresses ``genome``; else each rules
    body's blocks, in chain order, as their formula fragments (``p ← p − lr·u`` from the
    terms' sum, then what the update blocks do to it)."""
    slots = slot_equivalent(genome)
    if slots is not None:
        return slots.formula()
    text = "; ".join(("matrices: " if i else "") + _rules_formula(r)
                     for i, r in enumerate(genome.all_rules()))
    return text + ("; steps counted per group" if genome.step_count == "group" else "")


def _rules_formula(rules: Rules) -> str:
    def fragment(block: Block) -> str:
        values = {k: f"{v:.4g}" if not isinstance(v, bool) else str(v).lower()
                  for k, v in block.values}
        try:
            text = BLOCKS[block.kind].formula.format(**values)
        except (KeyError, IndexError, ValueError):
            text = BLOCKS[block.kind].formula
        out = BLOCKS[block.kind].default_out
        if block.name and out and text.startswith(f"{out}="):
            return block.name + text[len(out):]
        return (f"{block.name}=" if block.name else "") + text

    terms, rest = [], []
    for block in rules.chain:
        spec = BLOCKS[block.kind]
        if spec.is_term:
            weight = block.get("weight", 1.0)
            of = block.of or spec.default_of or ""
            text = fragment(block).replace("x", of) if spec.formula.startswith(("x", "sign(x")) \
                else fragment(block)
            by = f"/{block.by}" if block.by else ""
            terms.append((f"{weight:.4g}·" if weight != 1.0 else "") + text + by)
        elif spec.category == "update":
            rest.append(f"then {fragment(block)}")
        else:
            rest.append(fragment(block))
    parts = [f"u = {' + '.join(terms)}", *rest,
             f"p ← p − lr·u (lr={rules.lr:.4g}, {rules.schedule.kind})"]
    if rules.weight_decay is not None:
        parts.append(f"{rules.weight_decay.kind} wd {rules.weight_decay.get('value', 0):.4g}")
    if rules.apply.kind != "sgd":
        parts.append(f"apply {fragment(rules.apply)}")
    return ", ".join(parts)


UPPER.update(chain_hash=chain_hash, chain_structure=chain_structure,
             from_legacy_dict=from_legacy_dict, chain_formula=chain_formula)
