"""A genome as a chain of blocks (docs/design-chain-of-blocks.md §2, step 1 of §7).

A :class:`ChainGenome` holds one :class:`Rules` (and optionally a second one for matrices) and a
top-level clip. A rules body is a few global blocks (``schedule``, ``weight_decay``, ``apply``)
and an ordered ``chain`` of block instances (:class:`Block`), whose kinds come from the block
registry (:mod:`evoopt.genome.blocks`).

**Wiring.** A block reads signals through its ports: ``of`` (a tensor: the gradient ``g`` or a
producer's output) and ``by`` (a denominator). An unnamed producer outputs its kind's default
signal (``m``, ``d``, ``v``); a producer named N outputs ``N``. A read resolves to an earlier
producer in the chain, or to a later, state-backed one only when the reader reads the previous
step's value (``reads_previous``: Lion). Every error names the block.

**Stages.** The compiler emits blocks by stage rank (:data:`evoopt.genome.blocks.STAGES`), then
by chain order: the slot genome's phase loop with any number of instances. Terms add their
direction to p (or to the update u, when some block acts on the whole update) at the sum point,
after the ``update`` stage. Update blocks (decay term, trust ratio, ...) come after the terms.

**Naming** (fixes the silently shared state of §1.3). An unnamed instance keeps the legacy
state keys, scalar names and argument names (``exp_avg``, ``bias_correction1``, ``beta1``); an
instance named N prefixes all of them (``N_exp_avg``, ``N_bias_correction1``, ``N_beta``).
Two unnamed instances with the same default output, or the same state, are refused with a
message that says to name one of them.

In step 1 the slot genome (:class:`evoopt.genome.genome.Genome`) stays authoritative;
:mod:`evoopt.genome.legacy` converts between the two, and :func:`compile_chain` of a converted
genome is exactly the slot genome's program.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from evoopt.fileio import TextForms
from evoopt.genome.blocks import CHAIN_CATEGORIES, REGISTRY, STAGES, BlockSpec
from evoopt.genome.blocks import spec as block_spec
from evoopt.genome.primitives import LR, Builder, GenomeError, KeyedValues, describe_value
from evoopt.genome.program import Op, Program, merge_roles, other_role

#: The parameter role a genome's ``matrix`` rules apply to, and the prefix of its arguments
#: (the same as the slot genome's ``MATRIX_ROLE``/``MATRIX_PREFIX``).
MATRIX_ROLE, MATRIX_PREFIX = "matrix", "matrix_"
#: At most this many blocks in a rules body's chain, and this many terms.
MAX_BLOCKS, MAX_CHAIN_TERMS = 16, 8
NAME = re.compile(r"[a-z][a-z0-9_]{0,15}")
#: Names an instance cannot take: the built-in signals, and ``matrix`` (the matrix rules'
#: argument prefix).
RESERVED_NAMES = frozenset({"g", "p", "u", "lr", "step", "d", "matrix"})
#: Tensor slots every block shares: a named instance writing them does not rename them.
SHARED_SLOTS = frozenset({"grad", "param", "hessian", "update"})
_UPDATE_IN = "_update_in"

Value = float | bool


@dataclass(frozen=True)
class Block(KeyedValues):
    """One block instance: its kind, hyperparameter values (sorted by name), the signals its
    ports read (``None``: the kind's default) and its instance name (``None``: unnamed)."""

    kind: str
    values: tuple[tuple[str, Value], ...] = ()
    of: str | None = None
    by: str | None = None
    name: str | None = None

    @classmethod
    def make(cls, kind: str, *, of: str | None = None, by: str | None = None,
             name: str | None = None, **values: Value) -> Block:
        """A block of ``kind`` with ``values`` checked and the missing ones at their
        defaults."""
        spec = block_spec(kind)
        known = {h.name for h in spec.hparams}
        for key in values:
            if key not in known:
                raise GenomeError(f"{kind}.{key}: unknown field (allowed: "
                                  f"{', '.join(sorted(known)) or 'none'})")
        checked = {h.name: h.check(values.get(h.name, h.default), f"{kind}.{h.name}")
                   for h in spec.hparams}
        return cls(kind, tuple(sorted(checked.items())), of, by, name)

    @property
    def spec(self) -> BlockSpec:
        return block_spec(self.kind)


    def to_dict(self) -> dict[str, Any]:
        """The block as the file writes it (§2.5): ``kind``, the wiring that is set (``name``,
        ``of``, ``by``), then the values."""
        out: dict[str, Any] = {"kind": self.kind}
        out |= {port: getattr(self, port) for port in PORT_KEYS
                if getattr(self, port) is not None}
        return out | dict(self.values)


@dataclass(frozen=True)
class Rules:
    """What one parameter role runs: its lr, its chain and its global blocks."""

    lr: float
    chain: tuple[Block, ...]
    schedule: Block = Block("constant")
    weight_decay: Block | None = None
    apply: Block = Block("sgd")

    def to_dict(self) -> dict[str, Any]:
        """The rules as the file writes them: ``lr``, the global tables that differ from their
        defaults, then ``chain``."""
        out: dict[str, Any] = {"lr": self.lr}
        if self.schedule != DEFAULT_SCHEDULE:
            out["schedule"] = self.schedule.to_dict()
        if self.weight_decay is not None:
            out["weight_decay"] = self.weight_decay.to_dict()
        if self.apply != DEFAULT_APPLY:
            out["apply"] = self.apply.to_dict()
        out["chain"] = [b.to_dict() for b in self.chain]
        return out


DEFAULT_SCHEDULE, DEFAULT_APPLY = Rules.schedule, Rules.apply


@dataclass(frozen=True)
class ChainGenome(TextForms):
    """A genome as a chain of blocks: the rules (for every parameter, or with ``matrix`` for
    the others), the matrix rules, and the group-wide clip. Validated on construction."""

    rules: Rules
    matrix: Rules | None = None
    clip: Block | None = None
    step_count: str = "param"
    name: str = field(default="", compare=False)
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.step_count not in STEP_COUNTS:
            raise GenomeError(f"step_count: {describe_value(self.step_count)} (choose one of: "
                              f"{', '.join(STEP_COUNTS)})")
        _plan(self.rules, "", self.clip)
        if self.matrix is not None:
            _plan(self.matrix, "matrix.", None)

    def build(self) -> Builder:
        return build_chain(self)

    def program(self) -> Program:
        return compile_chain(self)

    # -- what the optimizer shell asks (as of the slot genome) -------------------------------
    @property
    def lr(self) -> float:
        """The base learning rate of the rules (of the others' rules, with a split)."""
        return self.rules.lr

    @property
    def schedule(self) -> Block:
        """The learning-rate schedule of the rules (of the others' rules, with a split)."""
        return self.rules.schedule

    @property
    def has_schedule(self) -> bool:
        """Whether the rules (of either role) schedule the lr (then ``total_steps`` is needed)."""
        return any(r.schedule.kind != "constant" for r in self.all_rules())

    @property
    def needs_graph(self) -> bool:
        """Whether some block reads the curvature: the step needs
        ``loss.backward(create_graph=True)``."""
        return any(b.spec.curvature for r in self.all_rules() for b in r.chain)

    def all_rules(self) -> tuple[Rules, ...]:
        """The rules bodies: the others' (or everyone's), then the matrices', if split."""
        return (self.rules,) if self.matrix is None else (self.rules, self.matrix)

    def formula(self) -> str:
        """One line: the update rule (the slot genome's formula when the slot language
        expresses this chain; else the blocks' fragments in chain order)."""
        return _upper("chain_formula")(self)

    # -- the file format (design §2.5) -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict in file layout (TOML/JSON-able): ``format = 2``, the name and description
        when set, the global tables, ``chain``, then ``matrix`` as a nested rules table.
        :meth:`from_dict` inverts it exactly."""
        out: dict[str, Any] = {"format": FORMAT}
        if self.name:
            out["name"] = self.name
        if self.description:
            out["description"] = self.description
        if self.step_count != "param":
            out["step_count"] = self.step_count
        rules = self.rules.to_dict()
        out["lr"] = rules.pop("lr")
        if self.clip is not None:
            out["clip"] = self.clip.to_dict()
        out |= rules
        if self.matrix is not None:
            out["matrix"] = self.matrix.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: object, source: str = "genome") -> ChainGenome:
        """A chain genome from a plain dict (parsed TOML/JSON): the chain layout (``format =
        2``, or no ``format`` and a ``chain``), or a legacy slot-layout dict (no ``format``, slot
        keys such as ``terms``), which is read as a slot genome and converted
        (:func:`evoopt.genome.legacy.from_slots`). Errors name ``source`` and the field path
        (``chain[2].beta``, ``matrix.chain[0].kind``)."""
        try:
            if isinstance(data, Mapping) and is_legacy_dict(data):
                return _upper("from_legacy_dict")(data, source)
            return _from_dict(data)
        except GenomeError as e:
            message = str(e)
            raise GenomeError(message if message.startswith(f"{source}: ")
                              else f"{source}: {message}") from None

    # -- identity (hash policy A, design §3.2) ------------------------------------------------
    @property
    def hash(self) -> str:
        """16 hex digits: the slot genome's hash when the slot language expresses this chain
        (or its canonical form), else sha256 of the canonical chain's dict
        (:func:`evoopt.genome.legacy.chain_hash`)."""
        return _upper("chain_hash")(self)

    @property
    def structure(self) -> str:
        """16 hex digits of the canonical form's structure (kinds, switches, wiring; no
        number), by the same policy (:func:`evoopt.genome.legacy.chain_structure`)."""
        return _upper("chain_structure")(self)


# ----------------------------------------------------------------------------------------------
# Reading the file format.
#: The chain file format's number; a legacy slot-layout file has no ``format`` key.
FORMAT = 2
#: A block table's keys besides its kind and values: its instance name and its read ports.
PORT_KEYS = ("name", "of", "by")
#: Keys of a rules table, of the genome around it, and the keys only a legacy slot-layout file
#: has (a dict with one of them and no ``format``/``chain``/``apply`` is read as legacy).
RULES_KEYS = ("lr", "schedule", "weight_decay", "apply", "chain")
TOP_LEVEL_KEYS = ("format", "name", "description", "step_count", "lr", "schedule", "clip",
                  "weight_decay", "apply", "chain", "matrix")
#: How ``step`` counts in a genome's scalars (bias corrections, ...): ``param``, per parameter
#: (torch.optim: a parameter whose gradient starts late has its own count), or ``group``, the
#: optimizer's steps of the parameter's group (pytorch-optimizer's ``group["step"]``).
STEP_COUNTS = ("param", "group")
LEGACY_ONLY_KEYS = ("terms", "momentum", "grad_diff", "second_moment", "transform")
CHAIN_ONLY_KEYS = ("format", "chain", "apply", "step_count")
#: The functions of the layers above this one (the canonical form, the slot conversion and
#: hash policy A), which :mod:`evoopt.genome.legacy` installs when it is imported: this module
#: imports nothing above it (design §4's layer order: chain, canonical, legacy, genome).
UPPER: dict[str, Callable[..., Any]] = {}


def _upper(name: str) -> Callable[..., Any]:
    fn = UPPER.get(name)
    if fn is None:  # pragma: no cover - legacy is imported by whoever converts or hashes
        raise GenomeError(f"{name}: import evoopt.genome.legacy first (it installs the slot "
                          "conversion and the hash policy)")
    return fn


def is_legacy_dict(data: Mapping[str, Any]) -> bool:
    """Whether ``data`` is a legacy slot-layout genome: slot keys and no chain-only key. A dict
    with both is refused, naming them."""
    legacy = [k for k in LEGACY_ONLY_KEYS if k in data]
    chain = [k for k in CHAIN_ONLY_KEYS if k in data]
    if legacy and chain:
        raise GenomeError(f"{legacy[0]}: a slot-layout field beside {chain[0]!r}: a genome is "
                          "either a chain (format 2) or slot tables, not both")
    return bool(legacy)


def _from_dict(data: object) -> ChainGenome:
    if not isinstance(data, Mapping):
        raise GenomeError(f"expected a table of genome fields, got {describe_value(data)}")
    fmt = data.get("format", FORMAT)
    if isinstance(fmt, bool) or fmt != FORMAT:
        raise GenomeError(f"format: {describe_value(fmt)}: this evoopt reads format {FORMAT} "
                          "(a slot-layout genome has no format key)")
    _check_keys(data, TOP_LEVEL_KEYS, "")
    for key in ("name", "description"):
        if not isinstance(data.get(key, ""), str):
            raise GenomeError(f"{key}: expected a string, got {describe_value(data[key])}")
    clip = _parse_block(data["clip"], "clip", ("clip",)) if "clip" in data else None
    rules = _parse_rules(data, "")
    matrix = None
    if "matrix" in data:
        table = data["matrix"]
        if not isinstance(table, Mapping):
            raise GenomeError("matrix: expected a table of the rules for matrices, got "
                              f"{describe_value(table)}")
        if "matrix" in table:
            raise GenomeError("matrix.matrix: the rules for matrices cannot split again")
        if "clip" in table:
            raise GenomeError("matrix.clip: the clip acts on every parameter of a group: set it "
                              "at the top level")
        _check_keys(table, RULES_KEYS, "matrix.")
        matrix = _parse_rules(table, "matrix.")
    step_count = data.get("step_count", "param")
    if step_count not in STEP_COUNTS:
        raise GenomeError(f"step_count: {describe_value(step_count)} (choose one of: "
                          f"{', '.join(STEP_COUNTS)})")
    return ChainGenome(rules, matrix, clip, step_count, name=data.get("name", ""),
                       description=data.get("description", ""))


def _check_keys(table: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
    for key in table:
        if key not in allowed:
            raise GenomeError(f"{path}{key}: unknown field (allowed: {', '.join(allowed)})")


def _parse_rules(table: Mapping[str, Any], path: str) -> Rules:
    if "lr" not in table:
        raise GenomeError(f"{path}lr: missing (the base learning rate)")
    lr = LR.check(table["lr"], f"{path}lr")
    raw = table.get("chain")
    if not isinstance(raw, list) or not raw:
        raise GenomeError(f"{path}chain: expected a non-empty list of blocks, got "
                          f"{describe_value(raw)}")
    if len(raw) > MAX_BLOCKS:
        raise GenomeError(f"{path}chain: at most {MAX_BLOCKS} blocks, got {len(raw)}")
    chain = tuple(_parse_block(b, f"{path}chain[{i}]", CHAIN_CATEGORIES)
                  for i, b in enumerate(raw))
    parts: dict[str, Any] = {}
    for key in ("schedule", "weight_decay", "apply"):
        if key in table:
            parts[key] = _parse_block(table[key], f"{path}{key}", (key,))
    return Rules(lr, chain, **parts)


def _parse_block(table: object, where: str, categories: tuple[str, ...]) -> Block:
    """A block from its table; missing values take their defaults. ``categories``: what may
    stand here (a global field's own category, or the chain's)."""
    if not isinstance(table, Mapping):
        raise GenomeError(f"{where}: expected a table, got {describe_value(table)}")
    kind = table.get("kind")
    if not isinstance(kind, str):
        raise GenomeError(f"{where}.kind: missing or not a string (got {describe_value(kind)})")
    known = [k for k, s in REGISTRY.items() if s.category in categories]
    if kind not in known:
        other = REGISTRY.get(kind)
        article = "an" if other is not None and other.category[0] in "aeiou" else "a"
        what = (f"{kind!r} is {article} {other.category} block, which cannot stand here"
                if other is not None else f"unknown kind {kind!r}")
        raise GenomeError(f"{where}.kind: {what} (known: {', '.join(known)})")
    spec = REGISTRY[kind]
    hparams = {h.name: h for h in spec.hparams}
    wiring: dict[str, str] = {}
    for key, value in table.items():
        if key == "kind" or key in hparams:
            continue
        if key == "name" and categories == CHAIN_CATEGORIES or key in spec.ports:
            if not isinstance(value, str):
                raise GenomeError(f"{where}.{key}: expected a "
                                  f"{'name' if key == 'name' else 'signal name'} (a string), "
                                  f"got {describe_value(value)}")
            wiring[key] = value
            continue
        allowed = [*spec.ports, *(["name"] if categories == CHAIN_CATEGORIES else []), *hparams]
        raise GenomeError(f"{where}.{key}: unknown field for kind {kind!r} (allowed: "
                          f"{', '.join(sorted(allowed)) or 'none'})")
    values = {name: h.check(table.get(name, h.default), f"{where}.{name}")
              for name, h in hparams.items()}
    return Block(kind, tuple(sorted(values.items())), **wiring)


# ----------------------------------------------------------------------------------------------
# Validation and wiring: a plan of every block of one rules body.
@dataclass(frozen=True)
class Signal:
    """A signal of a rules body: ``g`` (``producer`` None) or a producer's output."""

    name: str
    family: str
    type: str  # "tensor" | "denominator"
    producer: int | None  # the producer's chain index
    state: bool  # the producer keeps it as state (so it has a previous-step value)


@dataclass
class _Entry:
    """One block of a rules body, planned: where it is, what its ports resolved to, its state
    keys and its exported argument names (hparam name -> unprefixed argument name)."""

    where: str
    block: Block
    spec: BlockSpec
    index: int | None = None  # chain index; None for a global block
    term_index: int | None = None
    inputs: dict[str, Signal] = field(default_factory=dict)
    state_keys: tuple[str, ...] = ()
    args: dict[str, str] = field(default_factory=dict)


def label(block: Block, where: str) -> str:
    """How errors name a block: its place, kind and instance name."""
    return f"{where} {block.kind}" + (f" {block.name!r}" if block.name else "")


def _check_block(block: object, where: str, categories: tuple[str, ...]) -> BlockSpec:
    if not isinstance(block, Block):
        raise GenomeError(f"{where}: expected a block, got {describe_value(block)}")
    try:
        spec = block_spec(block.kind)
    except GenomeError as e:
        raise GenomeError(f"{where}: {e}") from None
    if spec.category not in categories:
        article = "an" if spec.category[0] in "aeiou" else "a"
        raise GenomeError(f"{label(block, where)}: {article} {spec.category} block cannot stand "
                          "here "
                          f"(expected: {' or '.join(categories)})")
    where = label(block, where)
    names = [k for k, _ in block.values]
    known = [h.name for h in spec.hparams]
    for k in names:
        if k not in known:
            raise GenomeError(f"{where}.{k}: unknown field (allowed: "
                              f"{', '.join(sorted(known)) or 'none'})")
    if len(set(names)) != len(names) or names != sorted(names):
        raise GenomeError(f"{where}: values must be sorted by name, each once")
    for h in spec.hparams:
        if h.name not in names:
            raise GenomeError(f"{where}.{h.name}: missing (Block.make fills in defaults)")
        h.check(block[h.name], f"{where}.{h.name}")
    for port in ("of", "by"):
        if getattr(block, port) is not None and port not in spec.ports:
            raise GenomeError(f"{where}.{port}: {block.kind} has no {port} port "
                              f"(ports: {', '.join(spec.ports) or 'none'})")
    if block.name is not None:
        if categories[0] not in CHAIN_CATEGORIES:
            raise GenomeError(f"{where}.name: a global block takes no name")
        if not isinstance(block.name, str) or not NAME.fullmatch(block.name):
            raise GenomeError(f"{where}.name: {block.name!r} is not a name "
                              "([a-z][a-z0-9_]{0,15})")
        if block.name in RESERVED_NAMES:
            raise GenomeError(f"{where}.name: {block.name!r} is reserved "
                              f"({', '.join(sorted(RESERVED_NAMES))})")
    return spec


def _plan(rules: Rules, path: str, clip: Block | None) -> list[_Entry]:
    """Check one rules body and resolve its wiring; the entries come in emission order within a
    stage (the global blocks, the chain, the apply). ``path``: ``""`` or ``"matrix."``."""
    if not isinstance(rules, Rules):
        raise GenomeError(f"{path or 'rules'}: expected rules, got {describe_value(rules)}")
    LR.check(rules.lr, f"{path}lr")
    entries: list[_Entry] = []
    for where, block, category in (("schedule", rules.schedule, "schedule"),
                                   ("clip", clip, "clip"),
                                   ("weight_decay", rules.weight_decay, "weight_decay")):
        if block is not None or where == "schedule":
            spec = _check_block(block, f"{path}{where}", (category,))
            entries.append(_Entry(f"{path}{where}", block, spec))  # type: ignore[arg-type]
    chain = rules.chain
    if not isinstance(chain, tuple) or not 1 <= len(chain) <= MAX_BLOCKS:
        raise GenomeError(f"{path}chain: expected a tuple of 1 to {MAX_BLOCKS} blocks, got "
                          f"{describe_value(chain)}")
    terms = 0
    first_update: _Entry | None = None
    for i, block in enumerate(chain):
        spec = _check_block(block, f"{path}chain[{i}]", CHAIN_CATEGORIES)
        entry = _Entry(label(block, f"{path}chain[{i}]"), block, spec, index=i)
        if spec.is_term:
            if first_update is not None:
                raise GenomeError(f"{entry.where}: a term after an update block "
                                  f"({first_update.where}); sum points after update blocks "
                                  "come in a later step: move the term before it")
            entry.term_index, terms = terms, terms + 1
        elif spec.category == "update":
            if not terms:
                raise GenomeError(f"{entry.where}: an update block needs a term before it")
            first_update = first_update or entry
        entries.append(entry)
    if not terms:
        raise GenomeError(f"{path}chain: no term; the rules make no update")
    if terms > MAX_CHAIN_TERMS:
        raise GenomeError(f"{path}chain: at most {MAX_CHAIN_TERMS} terms, got {terms}")
    apply_spec = _check_block(rules.apply, f"{path}apply", ("apply",))
    entries.append(_Entry(f"{path}apply", rules.apply, apply_spec))
    chained = [e for e in entries if e.index is not None]
    _name_and_wire(chained)
    _name_args(entries)
    return entries


def _name_and_wire(chained: list[_Entry]) -> None:
    """Signals, state keys and the resolution of every read port, in chain order."""
    signals = {"g": Signal("g", "g", "tensor", None, False)}
    producers: dict[str, _Entry] = {}
    names: dict[str, _Entry] = {}
    owners: dict[str, _Entry] = {}
    for e in chained:
        name, spec = e.block.name, e.spec
        if name is not None:
            if name in names:
                raise GenomeError(f"{e.where}: the name {name!r} is taken by {names[name].where}")
            names[name] = e
        if spec.produces:
            out = name or spec.default_out
            assert out is not None and spec.out_family is not None
            if out in signals:
                other = producers.get(out)
                if name is None and other is not None and other.block.name is None:
                    raise GenomeError(
                        f"{other.where} and {e.where} both produce {out!r}, and would share "
                        f"their state: name one of them (name=\"{e.block.kind}2\", then read it "
                        f"with of=\"{e.block.kind}2\")")
                raise GenomeError(f"{e.where}: its output {out!r} is already a signal"
                                  + (f" ({other.where})" if other else ""))
            signals[out] = Signal(out, spec.out_family, spec.out_type, e.index,
                                  bool(spec.state))
            producers[out] = e
        e.state_keys = tuple(f"{name}_{s.name}" if name else s.name for s in spec.state)
        for key in e.state_keys:
            if key in owners:
                raise GenomeError(f"{owners[key].where} and {e.where} would share the state "
                                  f"{key!r}: name one of them")
            owners[key] = e
    by_index = {e.index: e for e in chained}
    for e in chained:
        for port in e.spec.ports:
            ref = getattr(e.block, port) or (e.spec.default_of if port == "of" else None)
            if ref is None:
                continue
            sig = signals.get(ref)
            if sig is None:
                raise GenomeError(f"{e.where}.{port}: {ref!r}: no block of this chain produces "
                                  f"it (signals: {', '.join(signals)})")
            if port == "by" and sig.type != "denominator":
                raise GenomeError(f"{e.where}.by: {ref!r} is a {sig.type}, not a denominator")
            if port == "of" and (sig.type != "tensor" or sig.family not in e.spec.accepts):
                raise GenomeError(f"{e.where}.of: {ref!r} ({_describe(sig)}) is not what "
                                  f"{e.block.kind} reads ({_accepts(e.spec)})")
            if sig.producer is not None:
                producer = by_index[sig.producer]
                assert e.index is not None
                if sig.producer > e.index and not (e.spec.reads_previous and sig.state):
                    raise GenomeError(f"{e.where}.{port}: reads {ref!r} before "
                                      f"{producer.where} produces it: move it after")
                if sig.producer < e.index and not e.spec.reads_previous and (
                        STAGES.index(e.spec.stage) < STAGES.index(producer.spec.stage)):
                    raise GenomeError(f"{e.where}.{port}: runs in the {e.spec.stage} stage, "
                                      f"before {producer.where} ({producer.spec.stage})")
            e.inputs[port] = sig


def _describe(sig: Signal) -> str:
    return "the gradient" if sig.family == "g" else f"a {sig.type} of a {sig.family} block"


def _accepts(spec: BlockSpec) -> str:
    names = {"g": "g", "momentum": "a momentum", "grad_diff": "a gradient-difference moment",
             "second_moment": "a second moment"}
    return " or ".join(names[f] for f in spec.accepts)


def _name_args(entries: list[_Entry]) -> None:
    """The exported argument names, registered as the slot genome does: ``lr``, then by
    ``arg_rank`` (the legacy slot order, terms last) and chain order. An unnamed block keeps its
    hyperparameter's legacy ``arg``; an unnamed term ``{legacy kind}_{hparam}`` (with its term
    index when that is taken); an instance named N ``N_{hparam}``."""
    taken = {LR.arg}
    for e in sorted(entries, key=lambda e: e.spec.arg_rank):
        name = e.block.name
        for h in e.spec.hparams:
            if h.is_bool:
                continue
            if name is not None:
                arg = f"{name}_{h.name}"
            elif e.spec.is_term:
                of = e.inputs.get("of")
                stem = e.spec.legacy_kind(of.family if of else None) or e.spec.kind
                arg = f"{stem}_{h.name}"
                if arg in taken:
                    arg = f"{stem}{e.term_index}_{h.name}"
            else:
                arg = h.arg
            if arg in taken:
                raise GenomeError(f"{e.where}: its argument {arg!r} is another block's: name "
                                  "one of them")
            taken.add(arg)
            e.args[h.name] = arg


# ----------------------------------------------------------------------------------------------
# The compiler.
@dataclass
class Emitter(Builder):
    """The legacy :class:`Builder` the wrapped emits write into, plus the block being emitted:
    its resolved inputs and its name for errors. A scalar a block would share by name with
    another block whose value differs (a bias correction of another β) is refused."""

    inputs: dict[str, Signal] = field(default_factory=dict)
    where: str = ""
    values: dict[str, Any] = field(default_factory=dict)  # signal -> its emitted value
    named_ids: dict[str, str] = field(default_factory=dict)  # identifier -> named block

    def bias_correction(self, name: str, beta_arg: str, offset: str = "") -> str:
        step = f"(step + {offset})" if offset else "step"
        existing = dict(self.program.lets).get(name)
        if existing is not None and existing != f"1 - {beta_arg} ** {step}":
            raise GenomeError(f"{self.where}: would share the scalar {name} = {existing} with "
                              "another block, for another decay: name one of them")
        return super().bias_correction(name, beta_arg, offset)


def compile_chain(genome: ChainGenome) -> Program:
    """The tensor program of ``genome``: for a genome converted from slots
    (:func:`evoopt.genome.legacy.from_slots`), equal to the slot genome's
    ``build().program``."""
    return build_chain(genome).program


def build_chain(genome: ChainGenome) -> Builder:
    """The program and the exported arguments (in constructor order) of ``genome``, as
    :meth:`Genome.build` returns them: with a ``matrix`` split, each role's rules are compiled
    for its parameters (the matrix rules' arguments prefixed ``matrix_``) and merged."""
    if genome.matrix is None:
        built: Builder = _build_rules(genome.rules, genome.clip, Emitter())
    else:
        built = _build_split(genome)
    if genome.step_count == "group":
        built.program.count_steps_by_group()
    return built


def _build_split(genome: ChainGenome) -> Builder:
    others = _build_rules(genome.rules, genome.clip,
                          Emitter(Program(role=other_role(MATRIX_ROLE))))
    matrix = _build_rules(genome.matrix, None, Emitter(Program(role=MATRIX_ROLE),
                                                       prefix=MATRIX_PREFIX,
                                                       role_doc="for matrices"))
    merged = merge_roles({MATRIX_ROLE: matrix.program, others.program.role: others.program},
                         {MATRIX_ROLE: MATRIX_PREFIX})
    return Builder(merged, args=matrix.args | others.args)


def _build_rules(rules: Rules, clip: Block | None, b: Emitter) -> Emitter:
    entries = _plan(rules, "", clip)
    b.lr = b.arg(LR, rules.lr)
    names: dict[int, dict[str, str]] = {}
    for e in sorted(entries, key=lambda e: e.spec.arg_rank):
        names[id(e)] = {h: b.arg(e.spec.hparam(h), e.block[h], arg)  # type: ignore[arg-type]
                        for h, arg in e.args.items()}
    if any(e.spec.builds_update for e in entries):
        b.update = "update"
    by_index = {e.index: e for e in entries if e.index is not None}
    directions: dict[int, tuple[str, str | None]] = {}
    for stage in STAGES:
        for e in entries:
            if e.spec.stage == stage:
                result = _emit(b, e, names[id(e)], by_index, names)
                if e.spec.is_term:
                    assert e.index is not None
                    directions[e.index] = result
        if stage == "state":
            b.finish_state()
        elif stage == "update":
            for e in entries:
                if e.spec.is_term:
                    assert e.index is not None
                    _contribute(b, names[id(e)]["weight"], directions[e.index],
                                b.values[e.inputs["by"].name] if "by" in e.inputs else None,
                                first=e.term_index == 0)
    return b


def _emit(b: Emitter, e: _Entry, args: dict[str, str], by_index: dict[int, _Entry],
          names: dict[int, dict[str, str]]) -> Any:
    """Emit one block through its spec's (the legacy primitive's) emit, with the builder's
    slot-keyed fields pointing at the producers its ports resolved to."""
    b.inputs, b.where = e.inputs, e.where
    for sig in e.inputs.values():
        if sig.producer is None or sig.family not in ("momentum", "grad_diff"):
            continue
        producer = by_index[sig.producer]
        if sig.family == "momentum":
            prim = producer.spec.legacy_primitive()
            assert prim is not None
            if producer.block.name is not None:
                prim = replace(prim, buffers=producer.state_keys)
            b.declared["momentum"] = (prim, names[id(producer)])
        if sig.name in b.values:  # a previous-step read (Lion) runs before its producer
            b.moments[sig.family] = b.values[sig.name]
    result = (_emit_direct if e.block.name is None else _emit_named)(b, e, args)
    if e.spec.produces:
        out = e.block.name or e.spec.default_out
        assert out is not None and e.spec.out_family is not None
        b.values[out] = (b.denom if e.spec.out_type == "denominator"
                         else b.moments[e.spec.out_family])
    return result


def _emit_direct(b: Emitter, e: _Entry, args: dict[str, str]) -> Any:
    """An unnamed block writes straight into the program, as the slot genome's primitives do."""
    p = b.program
    lets, ops, buffers, scalars = len(p.lets), len(p.ops), len(p.buffers), set(p.scalars)
    result = e.spec.emit(b, e.block, args)
    defined = {*p.buffers[buffers:], *(n for n, _ in p.lets[lets:]),
               *(set(p.scalars) - scalars), *(o.out for o in p.ops[ops:] if o.out)}
    clash = sorted(defined & set(b.named_ids))
    if clash:
        raise GenomeError(f"{e.where}: defines {clash[0]}, as {b.named_ids[clash[0]]} does: "
                          "rename that one")
    return result


def _emit_named(b: Emitter, e: _Entry, args: dict[str, str]) -> Any:
    """A block named N emits into a program of its own, whose every definition (state, scalars,
    temporaries) then takes the prefix ``N_`` as it joins the rules' program."""
    n = e.block.name
    if e.spec.reads_diff:
        b.diff()  # g − g_prev is every reader's: its prev_grad stays unprefixed
    main = b.program
    # the update it reads goes in under a name of its own: the block's own state may have the
    # same local name (a named update momentum after an unnamed one: both "update_buf")
    update_in = _UPDATE_IN if b.update is not None else None
    s = Emitter(Program(role=main.role, dead=main.dead), args=b.args, lr=b.lr,
                moments=dict(b.moments), declared=dict(b.declared), denom=b.denom,
                update=update_in, step_size=b.step_size, prefix=b.prefix, role_doc=b.role_doc,
                _diff=b._diff, inputs=b.inputs, where=b.where)
    result = e.spec.emit(s, e.block, args)
    sp = s.program
    outs = {o.out for o in sp.ops if o.out} - SHARED_SLOTS - {update_in}
    defined = {*sp.buffers, *(k for k, _ in sp.lets), *sp.scalars, *outs}
    mapping = {x: f"{n}_{x}" for x in defined}
    existing = {*main.buffers, *(k for k, _ in main.lets), *main.scalars,
                *(o.out for o in main.ops if o.out), *b.named_ids}
    clash = sorted(set(mapping.values()) & existing)
    if clash:
        raise GenomeError(f"{e.where}: its name makes {clash[0]!r} clash with another block's: "
                          "choose another name")
    if update_in is not None:
        mapping[update_in] = b.update  # type: ignore[assignment]
    pattern = (re.compile(r"\b(" + "|".join(map(re.escape, sorted(mapping, key=len,
                                                                  reverse=True))) + r")\b")
               if mapping else None)

    def rn(x: Any) -> Any:
        return mapping.get(x, x) if isinstance(x, str) else x

    def rn_expr(x: str | None) -> str | None:
        if x is None or pattern is None:
            return x
        return pattern.sub(lambda m: mapping[m.group(1)], x)

    main.lets += [(rn(k), rn_expr(v)) for k, v in sp.lets]  # type: ignore[misc]
    main.scalars |= {rn(k): v for k, v in sp.scalars.items()}
    main.ops += [Op(o.kind, rn(o.out), tuple(rn(a) for a in o.args), rn_expr(o.scalar),
                    rn_expr(o.when), rn(o.into), o.role) for o in sp.ops]
    for buf in sp.buffers:
        main.buffers.append(rn(buf))
        if buf in sp.layouts:
            main.layouts[rn(buf)] = sp.layouts[buf]
    main.curvature = main.curvature or sp.curvature
    b.named_ids |= {x: e.where for k, x in mapping.items() if k != update_in}
    b.update, b.step_size = rn(s.update), rn(s.step_size)
    if e.spec.produces:
        assert e.spec.out_family is not None
        if e.spec.out_type == "denominator":
            b.denom = rn(s.denom)
        else:
            b.moments[e.spec.out_family] = tuple(rn(x) for x in s.moments[e.spec.out_family])
    return tuple(rn(x) for x in result) if isinstance(result, tuple) else result


def _contribute(b: Builder, weight: str, direction: tuple[str, str | None], denom: str | None,
                first: bool) -> None:
    """The sum point of one term: p -= lr·w·direction [/denominator]; or, when the update is
    built first, u += w·... (the first term creates u). As the slot genome's
    ``Genome._emit_update``, with the denominator the term's ``by`` resolved to."""
    slot, bc = direction
    p, stem = b.program, weight.removesuffix("_weight")
    if b.update is None:
        coef = p.let(f"{stem}_step", f"-{b.lr} * {weight}" + (f" / {bc}" if bc else ""))
        if denom is not None:
            p.op("addcdiv_", "param", slot, denom, scalar=coef)
        else:
            p.op("add_", "param", slot, scalar=coef)
        return
    coef = p.let(f"{stem}_coef", weight + (f" / {bc}" if bc else ""))
    if first and denom is not None:
        p.op("div", slot, denom, out=b.update)
        p.op("mul_", b.update, scalar=coef)
    elif first:
        p.op("muls", slot, out=b.update, scalar=coef)
    elif denom is not None:
        p.op("addcdiv_", b.update, slot, denom, scalar=coef)
    else:
        p.op("add_", b.update, slot, scalar=coef)


__all__ = ["FORMAT", "MATRIX_PREFIX", "MATRIX_ROLE", "Block", "ChainGenome", "Emitter", "Rules",
           "Signal", "build_chain", "compile_chain", "is_legacy_dict", "label"]
