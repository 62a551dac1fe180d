"""The genome: an immutable, validated description of an optimizer built from registry primitives.

On disk a genome is TOML (or JSON) of this shape::

    name = "adam"                        # label, not part of the identity
    lr = 1e-3
    [schedule]        kind = "constant"  # optional; constant by default
    [momentum]        kind = "ema", beta = 0.9, bias_correction = true
    [second_moment]   kind = "adam", beta = 0.999, eps = 1e-8
    [[terms]]         kind = "momentum", weight = 1.0, normalize = true

Optional tables: ``clip``, ``weight_decay``, ``momentum``, ``grad_diff``, ``second_moment``,
``transform`` (acts on the whole update, e.g. LAMB's trust ratio, Adafactor's relative step).
Every table's ``kind`` and hyperparameters come from :mod:`evoopt.genome.primitives`.

Parameter roles: an optional ``[matrix]`` table holds other rules (its own ``lr``, tables and
``terms``, no ``clip``) for the parameters of 2 or more dims; the rules around it then apply
to the others (Muon for the weight matrices, AdamW for the rest)::

    lr = 3e-4                            # the others: AdamW
    [momentum]        kind = "ema", beta = 0.9
    ...
    [matrix]          lr = 0.02          # matrices: Muon
    [matrix.momentum] kind = "ema", beta = 0.95, bias_correction = false
    [matrix.transform] kind = "orthogonalize"
    [[matrix.terms]]  kind = "nesterov"
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evoopt.fileio import InputError, TextForms, atomic_write_text, read_text_file
from evoopt.genome.primitives import (
    BLOCK_SLOTS,
    LR,
    MAX_TERMS,
    PHASES,
    Builder,
    GenomeError,
    HParam,
    KeyedValues,
    Primitive,
    describe_value,
    primitive,
)
from evoopt.genome.program import Program, merge_roles, other_role

if TYPE_CHECKING:
    from evoopt.genome.chain import ChainGenome

TOP_LEVEL_KEYS = ("name", "description", "lr", *BLOCK_SLOTS, "terms", "matrix")
STATE_SLOTS = ("momentum", "grad_diff", "second_moment")
#: The parameter role a genome's ``matrix`` rules apply to, and the prefix of its exported
#: arguments (the genome's other rules apply to the other role, unprefixed).
MATRIX_ROLE, MATRIX_PREFIX = "matrix", "matrix_"


@dataclass(frozen=True)
class Block(KeyedValues):
    """One primitive with its hyperparameter values (a table of the genome, or one term)."""

    slot: str
    kind: str
    values: tuple[tuple[str, float | bool], ...] = ()

    @property
    def primitive(self) -> Primitive:
        return primitive(self.slot, self.kind)


    def requirements(self) -> list[tuple[str, str]]:
        """``(slot, field)`` for every table this block needs, with the field that needs it:
        ``kind`` for its primitive's ``uses``, a switch's name for a switch that is on (a
        normalized term needs the second moment)."""
        return [*((slot, "kind") for slot in sorted(self.primitive.uses)),
                *((h.needs, h.name) for h in self.primitive.hparams
                  if h.is_bool and h.needs and self.get(h.name))]

    def needs(self) -> set[str]:
        """The tables this block needs (:meth:`requirements` without the fields)."""
        return {slot for slot, _ in self.requirements()}

    def replace(self, **values: float | bool) -> Block:
        merged = dict(self.values) | values
        return Block(self.slot, self.kind, tuple(sorted(merged.items())))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dict(self.values)}

    @classmethod
    def parse(cls, slot: str, table: object, where: str) -> Block:
        """Validate a table from a genome file; missing hyperparameters take their defaults."""
        if not isinstance(table, Mapping):
            raise GenomeError(f"{where}: expected a table, got {describe_value(table)}")
        kind = table.get("kind")
        if not isinstance(kind, str):
            raise GenomeError(f"{where}.kind: missing or not a string (got "
                              f"{describe_value(kind)})")
        try:
            prim = primitive(slot, kind)
        except GenomeError as e:
            raise GenomeError(f"{where}{str(e)[len(slot):]}") from None
        known = {h.name for h in prim.hparams}
        for key in table:
            if key != "kind" and key not in known:
                allowed = ", ".join(sorted(known)) or "none"
                raise GenomeError(f"{where}.{key}: unknown field for kind {kind!r} "
                                  f"(allowed: {allowed})")
        values = {h.name: h.check(table.get(h.name, h.default), f"{where}.{h.name}")
                  for h in prim.hparams}
        return cls(slot, kind, tuple(sorted(values.items())))


@dataclass(frozen=True)
class Genome(TextForms):
    """An optimizer as a value: hashable, comparable, serializable, buildable into a program."""

    lr: float
    terms: tuple[Block, ...]
    schedule: Block = Block("schedule", "constant")
    clip: Block | None = None
    weight_decay: Block | None = None
    momentum: Block | None = None
    grad_diff: Block | None = None
    second_moment: Block | None = None
    transform: Block | None = None
    matrix: Genome | None = None  # other rules for the parameters of 2 or more dims
    name: str = field(default="", compare=False)
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        self._check_consistency()

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: object, source: str = "genome") -> Genome:
        """Validate a plain dict (parsed TOML/JSON); errors name ``source`` and the field."""
        try:
            return cls._from_dict(data)
        except GenomeError as e:
            raise GenomeError(f"{source}: {e}") from None

    @classmethod
    def _from_dict(cls, data: object, role: bool = False) -> Genome:
        """``role``: the rules of one parameter role (a ``[matrix]`` table): no name,
        description or further split."""
        if not isinstance(data, Mapping):
            raise GenomeError(f"expected a table of genome fields, got {type(data).__name__}")
        allowed = [k for k in TOP_LEVEL_KEYS
                   if not role or k not in ("name", "description", "matrix")]
        for key in data:
            if key not in allowed:
                raise GenomeError(f"{key}: unknown field (allowed: {', '.join(allowed)})")
        if "lr" not in data:
            raise GenomeError("lr: missing (the base learning rate)")
        lr = LR.check(data["lr"], "lr")
        raw_terms = data.get("terms")
        if not isinstance(raw_terms, list) or not raw_terms:
            raise GenomeError("terms: expected a non-empty list of tables, got "
                              f"{describe_value(raw_terms)}")
        if len(raw_terms) > 2 * MAX_TERMS:
            raise GenomeError(f"terms: at most {2 * MAX_TERMS} terms, got {len(raw_terms)}")
        terms = tuple(Block.parse("terms", t, f"terms[{i}]") for i, t in enumerate(raw_terms))
        blocks = {slot: Block.parse(slot, data[slot], slot) for slot in BLOCK_SLOTS if slot in data}
        for key in ("name", "description"):
            if not isinstance(data.get(key, ""), str):
                raise GenomeError(f"{key}: expected a string, got {describe_value(data[key])}")
        matrix = None
        if "matrix" in data:
            if not isinstance(data["matrix"], Mapping):
                raise GenomeError("matrix: expected a table of the rules for matrices, got "
                                  f"{describe_value(data['matrix'])}")
            try:
                matrix = cls._from_dict(data["matrix"], role=True)
            except GenomeError as e:
                raise GenomeError(f"matrix.{e}") from None
        return cls(lr=lr, terms=terms, name=data.get("name", ""),
                   description=data.get("description", ""), matrix=matrix, **blocks)

    def _check_consistency(self) -> None:
        if self.matrix is not None:
            if self.matrix.matrix is not None:
                raise GenomeError("matrix.matrix: the rules for matrices cannot split again")
            for block in self.matrix.blocks():
                if block.primitive.group_wide:
                    raise GenomeError(f"matrix.{block.slot}: {block.kind!r} acts on every "
                                      f"parameter of a group: set [{block.slot}] at the top "
                                      "level")
        for i, term in enumerate(self.terms):
            for slot, by in term.requirements():
                if getattr(self, slot) is None:
                    value = repr(term.kind) if by == "kind" else "true"
                    raise GenomeError(f"terms[{i}].{by}: {value} needs a [{slot}] table")
        if self.schedule.slot != "schedule":
            raise GenomeError("schedule: not a schedule block")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in file layout (TOML/JSON-able); ``from_dict`` inverts it exactly."""
        out: dict[str, Any] = {}
        if self.name:
            out["name"] = self.name
        if self.description:
            out["description"] = self.description
        out["lr"] = self.lr
        for slot in BLOCK_SLOTS:
            block = getattr(self, slot)
            if block is not None:
                out[slot] = block.to_dict()
        out["terms"] = [t.to_dict() for t in self.terms]
        if self.matrix is not None:
            out["matrix"] = self.matrix.to_dict()
        return out

    def save(self, path: str | Path) -> Path:
        """Write as JSON (``.json``) or TOML, atomically (temporary file, then rename)."""
        path = Path(path)
        return atomic_write_text(path, self.to_json() if path.suffix == ".json"
                                 else self.to_toml())

    # -- identity --------------------------------------------------------------------------
    def canonical(self) -> Genome:
        """The same optimizer with zero-weight and unused parts dropped and terms merged/sorted.

        Terms of the same kind, normalization and hyperparameters are merged by summing weights
        (``0.41·sign(g) + 0.32·sign(g)`` becomes ``0.73·sign(g)``); state and decay that no
        remaining term needs are removed; a primitive whose ``alone_as`` kind makes the same
        update when nothing else acts on the whole update takes that kind (decay added to the
        update is decoupled decay then); name and description are cleared. Only ``lr·w`` acts,
        so the scale is fixed: the largest |weight| becomes 1 and its factor moves into ``lr``
        (and out of the hyperparameters a primitive declares ``lr_scaled``, such as decoupled
        decay), so "lr 1e-3, weight 4" and "lr 4e-3, weight 1" are one optimizer, one hash.
        A ``matrix`` split whose canonical rules are the others' is no split.
        """
        others = replace(self, matrix=None, name="", description="")._canonical_rules()
        if self.matrix is None:
            return others
        matrix = self.matrix._canonical_rules()
        return others if matrix == others else replace(others, matrix=matrix)

    def _canonical_rules(self) -> Genome:
        merged: dict[tuple, float] = {}
        for t in self.terms:
            rest = tuple((k, v) for k, v in t.values if k != "weight")
            merged[(t.kind, rest)] = merged.get((t.kind, rest), 0.0) + float(t["weight"])
        terms = tuple(
            Block("terms", kind, tuple(sorted((*rest, ("weight", w)))))
            for (kind, rest), w in sorted(merged.items(), key=_term_key) if w != 0.0
        )
        if not terms:
            raise GenomeError("terms: every term has weight 0; the genome makes no update")
        needed = set().union(*(t.needs() for t in terms))
        wd = self.weight_decay
        if wd is not None and wd.primitive.alone_as and not any(
                b.primitive.builds_update for b in self.blocks() if b.slot != wd.slot):
            wd = Block(wd.slot, wd.primitive.alone_as, wd.values)
        return _fold_scale(Genome(
            lr=self.lr,
            terms=terms,
            schedule=self.schedule,
            clip=self.clip,
            weight_decay=wd if wd is not None and wd["value"] != 0.0 else None,
            momentum=self.momentum if "momentum" in needed else None,
            grad_diff=self.grad_diff if "grad_diff" in needed else None,
            second_moment=self.second_moment if "second_moment" in needed else None,
            transform=self.transform,
        ))

    @property
    def hash(self) -> str:
        """Stable content hash (16 hex digits) of the canonical form."""
        text = json.dumps(self.canonical().to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def structure(self) -> str:
        """16-hex hash of the canonical form's structure: the kinds of its tables and terms and
        their switches (normalize, bias correction), without any number. Genomes that differ
        only in lr, betas, weights or decay values share it."""
        def shape(block: Block) -> dict[str, Any]:
            return {"kind": block.kind, **{k: v for k, v in block.values if isinstance(v, bool)}}

        def layout(g: Genome) -> dict[str, Any]:
            out: dict[str, Any] = {slot: shape(getattr(g, slot)) for slot in BLOCK_SLOTS
                                   if getattr(g, slot) is not None}
            out["terms"] = [shape(t) for t in g.terms]
            if g.matrix is not None:
                out["matrix"] = layout(g.matrix)
            return out

        text = json.dumps(layout(self.canonical()), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def has_schedule(self) -> bool:
        """Whether the rules (of either role) schedule the lr (then ``total_steps`` is needed)."""
        return self.schedule.kind != "constant" or (
            self.matrix is not None and self.matrix.has_schedule)

    @property
    def needs_graph(self) -> bool:
        """Whether the rules (of either role) read the curvature (AdaHessian's Hessian
        diagonal): its optimizer's step needs ``loss.backward(create_graph=True)``."""
        return any(block.primitive.curvature for block in self.blocks()) or (
            self.matrix is not None and self.matrix.needs_graph)

    def tunable(self) -> list[tuple[str, HParam, float]]:
        """Every float hyperparameter as ``(path, spec, value)``: ``lr``, the tables' in slot
        order (``momentum.beta``), then the terms' (``terms[1].weight``).

        The weight of the first term with the largest |weight| is left out: only lr·w acts, so
        that term's weight and lr are one degree of freedom (the canonical form fixes it at 1).
        """
        out: list[tuple[str, HParam, float]] = [("lr", LR, self.lr)]
        for slot in BLOCK_SLOTS:
            block = getattr(self, slot)
            if block is not None:
                out += [(f"{slot}.{h.name}", h, float(block[h.name]))
                        for h in block.primitive.hparams if not h.is_bool]
        weights = [abs(float(t["weight"])) for t in self.terms]
        scale_term = weights.index(max(weights))
        for i, t in enumerate(self.terms):
            out += [(f"terms[{i}].{h.name}", h, float(t[h.name]))
                    for h in t.primitive.hparams
                    if not h.is_bool and not (h.name == "weight" and i == scale_term)]
        if self.matrix is not None:
            out += [(f"matrix.{path}", h, v) for path, h, v in self.matrix.tunable()]
        return out

    def with_values(self, values: Mapping[str, float]) -> Genome:
        """This genome with the hyperparameters named by :meth:`tunable` paths replaced; each
        value is checked against its bounds (:class:`GenomeError` names the path)."""
        known = {path: spec for path, spec, _ in self.tunable()}
        parts: dict[str, Any] = {"lr": self.lr, "terms": list(self.terms), "matrix": self.matrix}
        parts |= {slot: getattr(self, slot) for slot in BLOCK_SLOTS}
        for path in values:
            if path not in known:
                raise GenomeError(f"{path}: not a tunable hyperparameter of this genome "
                                  f"(tunable: {', '.join(known)})")
        inner = {path[len("matrix."):]: v for path, v in values.items()
                 if path.startswith("matrix.")}
        if inner:
            assert self.matrix is not None
            try:
                parts["matrix"] = self.matrix.with_values(inner)
            except GenomeError as e:
                raise GenomeError(f"matrix.{e}") from None
        for path, value in values.items():
            if path.startswith("matrix."):
                continue
            checked = known[path].check(value, path)
            if path == "lr":
                parts["lr"] = checked
            elif path.startswith("terms["):
                index, name = int(path[6:path.index("]")]), path.split(".", 1)[1]
                parts["terms"][index] = parts["terms"][index].replace(**{name: checked})
            else:
                slot, name = path.split(".", 1)
                parts[slot] = parts[slot].replace(**{name: checked})
        parts["terms"] = tuple(parts["terms"])
        return Genome(**parts)

    def with_lr(self, lr: float) -> Genome:
        return replace(self, lr=LR.check(lr, "lr"))

    @property
    def builds_update(self) -> bool:
        """Whether some primitive acts on the whole update, so the terms are summed into an
        update tensor r before p -= lr·r."""
        return any(block.primitive.builds_update for block in self.blocks())

    def blocks(self) -> Iterator[Block]:
        """Every block: the tables in slot order, then the terms."""
        for slot in BLOCK_SLOTS:
            block = getattr(self, slot)
            if block is not None:
                yield block
        yield from self.terms

    # -- program and docs ------------------------------------------------------------------
    def build(self) -> Builder:
        """Emit this genome's tensor program, phase by phase (see :mod:`primitives`). With a
        ``matrix`` split, each role's rules are emitted as a program for its parameters (the
        matrix rules' arguments prefixed ``matrix_``), and the two are merged."""
        if self.matrix is None:
            return self._build(Builder())
        others = self._build(Builder(Program(role=other_role(MATRIX_ROLE))))
        matrix = self.matrix._build(Builder(Program(role=MATRIX_ROLE), prefix=MATRIX_PREFIX,
                                            role_doc="for matrices"))
        merged = merge_roles({MATRIX_ROLE: matrix.program, others.program.role: others.program},
                             {MATRIX_ROLE: MATRIX_PREFIX})
        return Builder(merged, args=matrix.args | others.args)

    def _build(self, b: Builder) -> Builder:
        b.lr = b.arg(LR, self.lr)
        blocks = list(self.blocks())
        if self.builds_update:
            b.update = "update"
        first_term = len(blocks) - len(self.terms)
        names = [self._register_args(b, block, i - first_term) for i, block in enumerate(blocks)]
        for block, args in zip(blocks, names, strict=True):
            if block.slot in STATE_SLOTS:
                b.declared[block.slot] = (block.primitive, args)
        directions: dict[int, tuple[str, str | None]] = {}
        for phase in PHASES:
            for i, block in enumerate(blocks):
                prim = block.primitive
                if prim.phase == phase and prim.emit is not None:
                    result = prim.emit(b, block, names[i])
                    if block.slot == "terms":
                        directions[i - first_term] = result
            if phase == "state":
                b.finish_state()
            elif phase == "update":
                for i, term in enumerate(self.terms):
                    self._emit_update(b, term, directions[i], names[first_term + i]["weight"],
                                      first=i == 0)
            elif phase == "transform" and b.update is not None:
                b.program.op("add_", "param", b.update, scalar=f"-{b.step_size or b.lr}")
        return b

    @staticmethod
    def _register_args(b: Builder, block: Block, term_index: int) -> dict[str, str]:
        names: dict[str, str] = {}
        for h in block.primitive.hparams:
            if h.is_bool:
                continue
            name = h.arg
            if block.slot == "terms":
                name = f"{block.kind}_{h.name}"
                if b.prefix + name in b.args:
                    name = f"{block.kind}{term_index}_{h.name}"
            names[h.name] = b.arg(h, block[h.name], name)
        return names

    @staticmethod
    def _emit_update(b: Builder, term: Block, direction: tuple[str, str | None],
                     weight: str, first: bool) -> None:
        """p -= lr·w·direction [/denominator]; or, when the update is built first, r += w·...
        (the first term creates r)."""
        slot, bc = direction
        p, stem = b.program, weight.removesuffix("_weight")
        if b.update is None:
            coef = p.let(f"{stem}_step", f"-{b.lr} * {weight}" + (f" / {bc}" if bc else ""))
            if term.get("normalize"):
                p.op("addcdiv_", "param", slot, b.denom, scalar=coef)
            else:
                p.op("add_", "param", slot, scalar=coef)
            return
        coef = p.let(f"{stem}_coef", weight + (f" / {bc}" if bc else ""))
        if first and term.get("normalize"):
            p.op("div", slot, b.denom, out=b.update)
            p.op("mul_", b.update, scalar=coef)
        elif first:
            p.op("muls", slot, out=b.update, scalar=coef)
        elif term.get("normalize"):
            p.op("addcdiv_", b.update, slot, b.denom, scalar=coef)
        else:
            p.op("add_", b.update, slot, scalar=coef)

    def formula(self) -> str:
        """One line: the update rule, its state, schedule and decay (with a ``matrix`` split,
        the others' and then the matrices')."""
        if self.matrix is None:
            return self._formula()
        return f"{self._formula()}; matrices: {self.matrix._formula()}"

    def _formula(self) -> str:
        parts = []
        m_hat = self.momentum is not None and self.momentum.get("bias_correction", False)
        d_hat = self.grad_diff is not None and self.grad_diff["bias_correction"]
        for t in self.terms:
            sym = t.primitive.describe(dict(t.values))
            if t.kind == "momentum" and m_hat or t.kind == "grad_diff" and d_hat:
                sym += "̂"
            if t.get("normalize"):
                sym = f"{sym}/({self.second_moment.primitive.denominator})"
            w = float(t["weight"])
            parts.append(sym if w == 1.0 else f"{w:.4g}·{sym}")
        rule = "p ← p − lr·(" + " + ".join(parts) + ")" if len(parts) > 1 else \
            f"p ← p − lr·{parts[0]}"
        if self.builds_update:
            t = self.transform
            lr = "" if t is not None and t.primitive.sets_step_size else "lr·"
            rule = (f"p ← p − {lr}{t.primitive.describe(dict(t.values)) if t else 'r'}, "
                    f"r = {' + '.join(parts)}")
        notes = [f"lr={self.lr:.4g}"]
        for slot in ("momentum", "grad_diff", "second_moment", "weight_decay", "clip"):
            block = getattr(self, slot)
            if block is not None:
                notes.append(block.primitive.describe(dict(block.values)))
        if self.has_schedule:
            notes.append(self.schedule.primitive.describe(dict(self.schedule.values)))
        return f"{rule}; " + ", ".join(notes)


def _fold_scale(g: Genome) -> Genome:
    """``g`` with its largest |term weight| folded into lr; ``g`` itself when the folded values
    would leave their valid ranges (the scale is then kept where it is)."""
    scale = max(abs(float(t["weight"])) for t in g.terms)
    if scale == 1.0 or any(b.primitive.update_scale_free for b in g.blocks()):
        return g
    try:
        lr = LR.check(_round(g.lr * scale), "lr")
        terms = tuple(t.replace(weight=_round(float(t["weight"]) / scale)) for t in g.terms)
        blocks = {}
        for slot in BLOCK_SLOTS:
            block = getattr(g, slot)
            if block is not None and block.primitive.lr_scaled:
                spec = block.primitive
                blocks[slot] = block.replace(**{
                    name: spec.hparam(name).check(_round(float(block[name]) / scale),
                                                  f"{slot}.{name}")
                    for name in spec.lr_scaled})
    except GenomeError:
        return g
    return replace(g, lr=lr, terms=terms, **blocks)


def _round(x: float) -> float:
    """12 significant digits: folding a scale must not split one optimizer over hashes by an ulp
    (a relative change of at most 5e-13, far below what any trajectory can show)."""
    return float(f"{x:.12g}")


def _term_key(item: tuple[tuple[str, tuple], float]) -> tuple:
    (kind, rest), _ = item
    from evoopt.genome.primitives import TERM_KINDS

    return (TERM_KINDS.index(kind), rest)


#: Largest genome file read (a genome is a few hundred bytes).
MAX_GENOME_BYTES = 1 << 20


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise GenomeError(f"duplicate key {key!r}")
        out[key] = value
    return out


#: The reader of chain-layout dicts (``format = 2``), which :mod:`evoopt.genome.legacy`
#: installs when it is imported: the chain language sits above this module's layer.
CHAIN_READER: dict[str, Callable[[Mapping[str, Any], str], Any]] = {}
#: Keys only a chain-layout genome has (:data:`evoopt.genome.chain.CHAIN_ONLY_KEYS`).
_CHAIN_KEYS = ("format", "chain", "apply", "step_count")


def genome_from_dict(data: object, source: str = "genome") -> Genome | ChainGenome:
    """A genome from a plain dict of either layout: a slot-layout dict as :class:`Genome`; a
    chain-layout one (``format = 2``) as the slot genome it expresses when there is one (name
    and description kept), else as a :class:`~evoopt.genome.chain.ChainGenome`."""
    if isinstance(data, Mapping) and any(k in data for k in _CHAIN_KEYS):
        reader = CHAIN_READER.get("read")
        if reader is None:  # pragma: no cover - evoopt.genome imports legacy
            raise GenomeError(f"{source}: a chain genome: import evoopt.genome first")
        return reader(data, source)
    return Genome.from_dict(data, source=source)


def parse_genome_text(text: str, fmt: str, source: str) -> Genome | ChainGenome:
    """A genome from TOML or JSON text (``fmt``: "toml" | "json"); errors name ``source``.

    JSON keys may not repeat (TOML already forbids it); text must be valid Unicode (no lone
    surrogate escapes) and nested at most a few hundred levels.
    """
    kind = fmt.upper()
    try:
        if fmt == "json":
            data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        else:
            data = tomllib.loads(text)
        # a lone surrogate (JSON "\ud800") cannot be printed or stored as UTF-8; a TOML date
        # or time (no JSON type: shown as text here) is refused by the field that holds it
        json.dumps(data, ensure_ascii=False, default=str).encode("utf-8")
        return genome_from_dict(data, source=source)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise GenomeError(f"{source}: not valid {kind}: {e}") from None
    except GenomeError as e:
        message = str(e)
        raise GenomeError(message if message.startswith(f"{source}: ")
                          else f"{source}: not a valid {kind} genome: {message}") from None
    except UnicodeEncodeError:
        raise GenomeError(f"{source}: text that is not valid Unicode (a lone surrogate "
                          "escape such as \\ud800)") from None
    except RecursionError:
        raise GenomeError(f"{source}: nested too deeply to be a genome") from None
    except (ValueError, OverflowError) as e:  # e.g. a number too large for a float
        raise GenomeError(f"{source}: not a valid {kind} genome: {e}") from None


def load_genome(path: str | Path) -> Genome | ChainGenome:
    """Read a genome from a ``.toml`` or ``.json`` file; errors name the file and the field.

    Only a regular file of at most :data:`MAX_GENOME_BYTES` bytes of UTF-8 is read.
    """
    path = Path(path)
    try:
        text = read_text_file(path, "genome file", MAX_GENOME_BYTES)
    except InputError as e:
        raise GenomeError(str(e)) from None
    genome = parse_genome_text(text, "json" if path.suffix == ".json" else "toml", str(path))
    if not genome.name:
        genome = replace(genome, name=path.stem)
    return genome


def seed_genome(name: str) -> Genome | ChainGenome:
    """A seeded individual shipped in ``genomes/`` (adam, adamw, adan, lion, sgd-momentum, ...)."""
    from evoopt.paths import GENOMES_DIR

    names = seed_names()
    if name not in names:
        raise GenomeError(f"unknown seed genome {name!r} (shipped: {', '.join(names)})")
    return load_genome(GENOMES_DIR / f"{name}.toml")


def seed_names(*, slot_only: bool = False) -> list[str]:
    """The shipped seed genomes' names; with ``slot_only``, those the slot language expresses
    (the ones a campaign's search can seed and mutate today; the others load as chains)."""
    from evoopt.paths import GENOMES_DIR

    names = sorted(p.stem for p in GENOMES_DIR.glob("*.toml"))
    if slot_only:
        names = [n for n in names if isinstance(load_genome(GENOMES_DIR / f"{n}.toml"), Genome)]
    return names
