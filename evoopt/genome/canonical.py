"""The canonical chain (docs/design-chain-of-blocks.md §3.1): one representative of the chains
that make the same optimizer, so that they share one hash.

:func:`canonical` applies, to each rules body:

1. **Fill.** Every block re-made with its values checked, defaulted and sorted (an int becomes
   its float), and a read port equal to its kind's default left unset.
2. **Dead blocks.** Zero weight decay (a global ``weight_decay`` or a ``decay_term`` of value 0)
   is dropped; terms whose merged weight is 0 are dropped; then, until a fixpoint, every
   accumulator whose output nothing reads (now or as a previous-step read).
3. **Sum runs.** The terms (one sum run: a term cannot follow an update block) merge when they
   are equal but for their weight and name (kind, resolved ``of`` and ``by``, other values), by
   adding their weights in chain order, as the slot genome's ``_canonical_rules`` does; a
   merged term is named if one of its parts was.
4. **Scale.** The largest |weight| is folded into lr, dividing the weights and the values a
   block declares ``lr_scaled`` (decoupled and proximal decay, the decay term), rounded to 12
   significant digits (:func:`round12`, the slot genome's rule); skipped when a ``scale_free``
   block (trust ratio, orthogonalize, relative step) acts on the update, or when a folded value
   would leave its range.
5. **Commutation.** The chain is rewritten in the least topological order of its dependence
   graph: a reader after the producer it reads (a previous-step read adds no edge: the stage
   ranks already run it before its producer's update, whatever the chain order), the sum run
   (one node, its terms sorted by kind, canonical inputs and values) after the producers its
   terms read, and the update blocks after it in their program order. Ready blocks are taken by
   (stage, kind, named or not, values, canonical inputs, what reads them), so independent
   accumulators written in either order come out alike, while ``decay_term`` then
   ``trust_ratio`` and the reverse do not.
6. **Alpha-renaming.** Explicit names become ``{default output}{k}`` (``m1``, ``v1``; ``u{k}``
   for a block with no output) in canonical order, and every read follows, so a label never
   changes the hash.
7. **Equivalences** (the slot genome's): a decay term that is the only block acting on the
   update, with no global weight decay, is ``weight_decay = decoupled`` (``alone_as``); matrix
   rules equal to the others' (and no clip) are no split.

Name and description are cleared. The form is incomplete (equivalence is undecidable in
general); the behaviour hash stays the functional backstop. Every rule above is one the slot
genome's canonical form also applies to what it expresses, so for a chain the slot language
expresses, the legacy hash of ``to_slots(canonical(c))`` is that of ``to_slots(c)``
(design §3.2, risk 4: canonicalise less rather than move a legacy hash).
"""

from __future__ import annotations

import hashlib
import heapq
import json
from dataclasses import dataclass, field
from typing import Any

from evoopt.genome.blocks import REGISTRY, STAGES, kinds
from evoopt.genome.chain import Block, ChainGenome, Rules, compile_chain
from evoopt.genome.primitives import LR, GenomeError

#: Term kinds in registration order: the first key of a term's place in its sum run.
_TERM_RANK = {kind: i for i, kind in enumerate(kinds("term"))}
#: The name stem of a named block that produces no signal (a term, an update block).
NO_OUTPUT_STEM = "u"


def round12(x: float) -> float:
    """12 significant digits: folding a scale must not split one optimizer over hashes by an ulp.
    The slot genome's rule (``genome._round``), which this layer cannot import."""
    return float(f"{x:.12g}")


def canonical(genome: ChainGenome) -> ChainGenome:
    """The canonical form of ``genome`` (rules 1–7 of the module docstring); idempotent.
    :class:`GenomeError` when every term of a rules body has weight 0."""
    clip = _fill(genome.clip) if genome.clip is not None else None
    rules = canonical_rules(genome.rules, clip, "")
    matrix = None
    if genome.matrix is not None:
        matrix = canonical_rules(genome.matrix, None, "matrix.")
        if clip is None and matrix == rules:
            matrix = None
    step_count = genome.step_count
    if step_count != "param" and not compile_chain(ChainGenome(rules, matrix, clip)).uses_step:
        step_count = "param"  # rule 7: nothing reads the step count
    return ChainGenome(rules, matrix, clip, step_count)


def canonical_dict(genome: ChainGenome) -> dict[str, Any]:
    """The canonical form's file dict (it has ``format``, which no legacy dict has)."""
    return canonical(genome).to_dict()


def canonical_hash(genome: ChainGenome) -> str:
    """16 hex digits of sha256 of the canonical chain dict (policy A's last resort)."""
    return _digest(canonical_dict(genome))


def canonical_structure(genome: ChainGenome) -> str:
    """16 hex digits of sha256 of the canonical chain's structure: the kinds, switches and
    wiring of its blocks, without any number."""
    return _digest(structure_dict(canonical(genome)))


def structure_dict(genome: ChainGenome) -> dict[str, Any]:
    """``genome.to_dict()`` with every number (lr, float values) left out."""
    def shape(block: Block) -> dict[str, Any]:
        d = block.to_dict()
        return {k: v for k, v in d.items() if isinstance(v, (str, bool))}

    def rules(r: Rules) -> dict[str, Any]:
        out: dict[str, Any] = {"schedule": shape(r.schedule), "apply": shape(r.apply),
                               "chain": [shape(b) for b in r.chain]}
        if r.weight_decay is not None:
            out["weight_decay"] = shape(r.weight_decay)
        return out

    out: dict[str, Any] = {"format": genome.to_dict()["format"], **rules(genome.rules)}
    if genome.step_count != "param":
        out["step_count"] = genome.step_count
    if genome.clip is not None:
        out["clip"] = shape(genome.clip)
    if genome.matrix is not None:
        out["matrix"] = rules(genome.matrix)
    return out


def _digest(data: dict[str, Any]) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
def _fill(block: Block) -> Block:
    """Rule 1: values checked, defaulted and sorted; a port at its default unset."""
    spec = block.spec
    of = None if block.of == spec.default_of else block.of
    return Block.make(block.kind, of=of, by=block.by, name=block.name, **dict(block.values))


def _of(block: Block) -> str | None:
    return block.of or block.spec.default_of


def _out(block: Block) -> str | None:
    """The signal ``block`` produces (its name, or its kind's default output), if any."""
    spec = block.spec
    return (block.name or spec.default_out) if spec.produces else None


def _reads(block: Block) -> list[tuple[str, str]]:
    """``(port, signal)`` for every port of ``block`` that reads a signal."""
    out = []
    for port in block.spec.ports:
        ref = _of(block) if port == "of" else block.by
        if ref is not None:
            out.append((port, ref))
    return out


def _is_zero_decay(block: Block) -> bool:
    spec = block.spec
    return spec.legacy is not None and spec.legacy[0] == "weight_decay" and block["value"] == 0.0


def canonical_rules(rules: Rules, clip: Block | None, path: str) -> Rules:
    """The canonical form of one rules body (``clip``: the genome's, which a fold must see)."""
    chain = [_fill(b) for b in rules.chain]
    schedule, apply = _fill(rules.schedule), _fill(rules.apply)
    wd = _fill(rules.weight_decay) if rules.weight_decay is not None else None
    # rule 3 (merge) and 2 (zeros), then 2 (dead accumulators)
    chain = _merge_terms(chain)
    if not any(b.spec.is_term for b in chain):
        raise GenomeError(f"{path}chain: every term has weight 0; the rules make no update")
    if wd is not None and _is_zero_decay(wd):
        wd = None
    chain = [b for b in chain if not _is_zero_decay(b)]
    chain = _drop_dead(chain)
    # rule 7: a decay term alone on the update is decoupled decay
    acting = [b for b in chain if b.spec.builds_update]
    if wd is None and len(acting) == 1 and acting[0].spec.alone_as:
        term = acting[0]
        wd = Block.make(term.spec.alone_as, **dict(term.values))
        chain.remove(term)
    # rule 4
    lr, chain, wd = _fold_scale(rules.lr, chain, wd, [schedule, apply, *([clip] if clip else [])],
                                path)
    # rules 5 and 6
    chain = _rename(_order(chain))
    return Rules(lr, tuple(chain), schedule, wd, apply)


def _merge_terms(chain: list[Block]) -> list[Block]:
    """Rule 3: equal terms (but for weight and name) merged by adding their weights in chain
    order (from 0.0, as the slot genome sums them), zero sums dropped. The merged terms stand
    where the first term stood; rule 5 puts them in order."""
    merged: dict[tuple, list[Any]] = {}
    first = None
    for i, b in enumerate(chain):
        if not b.spec.is_term:
            continue
        first = i if first is None else first
        rest = tuple((k, v) for k, v in b.values if k != "weight")
        key = (b.kind, _of(b), b.by, rest)
        entry = merged.setdefault(key, [0.0, None])
        entry[0] = entry[0] + float(b["weight"])
        entry[1] = entry[1] or b.name
    terms = [Block(kind, tuple(sorted((*rest, ("weight", w)))),
                   None if of == REGISTRY[kind].default_of else of, by, name)
             for (kind, of, by, rest), (w, name) in merged.items() if w != 0.0]
    others = [b for b in chain if not b.spec.is_term]
    if first is None:
        return others
    before = sum(1 for b in chain[:first] if not b.spec.is_term)
    return others[:before] + terms + others[before:]


def _drop_dead(chain: list[Block]) -> list[Block]:
    """Rule 2: until a fixpoint, drop every accumulator whose output nothing reads (it writes
    only its own state)."""
    while True:
        read = {ref for b in chain for _, ref in _reads(b)}
        alive = [b for b in chain
                 if not (b.spec.category == "accumulate" and _out(b) not in read)]
        if len(alive) == len(chain):
            return chain
        chain = alive


def _fold_scale(lr: float, chain: list[Block], wd: Block | None, others: list[Block],
                path: str) -> tuple[float, list[Block], Block | None]:
    """Rule 4, as the slot genome's ``_fold_scale``: the largest |weight| into lr, out of the
    weights and the ``lr_scaled`` values; nothing when a scale-free block is there or a folded
    value would leave its range."""
    blocks = [*chain, *([wd] if wd is not None else []), *others]
    scale = max(abs(float(b["weight"])) for b in chain if b.spec.is_term)
    if scale == 1.0 or any(b.spec.scale_free for b in blocks):
        return lr, chain, wd

    def fold(block: Block) -> Block:
        spec = block.spec
        values = dict(block.values)
        if spec.is_term:
            values["weight"] = round12(float(values["weight"]) / scale)
        for name in spec.lr_scaled:
            values[name] = spec.hparam(name).check(round12(float(values[name]) / scale),
                                                   f"{path}{block.kind}.{name}")
        return Block(block.kind, tuple(sorted(values.items())), block.of, block.by, block.name)

    try:
        folded_lr = LR.check(round12(lr * scale), f"{path}lr")
        folded = [fold(b) for b in chain]
        folded_wd = fold(wd) if wd is not None else None
    except GenomeError:
        return lr, chain, wd
    return folded_lr, folded, folded_wd


@dataclass
class _Node:
    """A node of the dependence graph: one block, or the sum run (every term)."""

    blocks: list[Block]
    position: int  # in the chain as written: the last tie-break
    deps: set[int] = field(default_factory=set)
    users: set[int] = field(default_factory=set)

    @property
    def is_sum(self) -> bool:
        return self.blocks[0].spec.is_term


def _order(chain: list[Block]) -> list[Block]:
    """Rule 5: the least topological order of the dependence graph."""
    nodes: list[_Node] = []
    sum_node: _Node | None = None
    for i, b in enumerate(chain):
        if b.spec.is_term:
            if sum_node is None:
                sum_node = _Node([], i)
                nodes.append(sum_node)
            sum_node.blocks.append(b)
        else:
            nodes.append(_Node([b], i))
    producer = {_out(n.blocks[0]): k for k, n in enumerate(nodes)
                if not n.is_sum and _out(n.blocks[0]) is not None}
    readers: dict[int, list[tuple[str, Block]]] = {k: [] for k in range(len(nodes))}
    previous_update = nodes.index(sum_node) if sum_node is not None else None
    for k, n in enumerate(nodes):
        for b in n.blocks:
            for port, ref in _reads(b):
                source = producer.get(ref)
                if source is None:
                    continue
                readers[source].append((port, b))
                if not b.spec.reads_previous:
                    n.deps.add(source)
        if not n.is_sum and n.blocks[0].spec.category == "update":
            assert previous_update is not None  # validation: an update block follows a term
            n.deps.add(previous_update)
            previous_update = k
    for k, n in enumerate(nodes):
        for d in n.deps:
            nodes[d].users.add(k)

    placed: dict[int, int] = {}  # node -> canonical position of its (first) block
    order: list[Block] = []

    def input_id(ref: str) -> tuple:
        source = producer.get(ref)
        if source is None:
            return (-1,)
        if source in placed:
            return (0, placed[source])
        b = nodes[source].blocks[0]  # a previous-step read of a later producer
        return (1, b.kind, repr(b.values))

    def key(k: int) -> tuple:
        n = nodes[k]
        if n.is_sum:
            return (STAGES.index("update"), "", False, "", (), ())
        b = n.blocks[0]
        inputs = tuple((port, input_id(ref)) for port, ref in _reads(b))
        used_by = tuple(sorted((r.kind, port, repr(tuple((k2, v) for k2, v in r.values)))
                               for port, r in readers[k]))
        return (STAGES.index(b.spec.stage), b.kind, b.name is not None, repr(b.values), inputs,
                used_by)

    remaining = {k: len(n.deps) for k, n in enumerate(nodes)}
    ready = [(key(k), n.position, k) for k, n in enumerate(nodes) if not n.deps]
    heapq.heapify(ready)
    while ready:
        _, _, k = heapq.heappop(ready)
        n = nodes[k]
        placed[k] = len(order)
        if n.is_sum:
            order += sorted(n.blocks, key=lambda t: (
                _TERM_RANK[t.kind], tuple((p, input_id(r)) for p, r in _reads(t)),
                repr(tuple((k2, v) for k2, v in t.values if k2 != "weight")),
                float(t["weight"]), t.name is not None))
        else:
            order += n.blocks
        for u in sorted(n.users):
            remaining[u] -= 1
            if remaining[u] == 0:
                heapq.heappush(ready, (key(u), nodes[u].position, u))
    assert len(order) == len(chain), "the dependence graph of a valid chain has no cycle"
    return order


def _rename(chain: list[Block]) -> list[Block]:
    """Rule 6: explicit names become ``{default output}{k}`` in chain order (``u{k}`` for a
    block with no output); the reads follow."""
    mapping: dict[str, str] = {}
    counts: dict[str, int] = {}
    for b in chain:
        if b.name is None:
            continue
        stem = b.spec.default_out or NO_OUTPUT_STEM
        counts[stem] = counts.get(stem, 0) + 1
        mapping[b.name] = f"{stem}{counts[stem]}"

    def rn(ref: str | None) -> str | None:
        return mapping.get(ref, ref) if ref is not None else None

    out = []
    for b in chain:
        spec = b.spec
        of = rn(_of(b)) if "of" in spec.ports else None
        out.append(Block(b.kind, b.values, None if of == spec.default_of else of, rn(b.by),
                         rn(b.name)))
    return out


__all__ = ["canonical", "canonical_dict", "canonical_hash", "canonical_rules",
           "canonical_structure", "round12", "structure_dict"]
