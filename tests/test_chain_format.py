"""The chain of blocks, the additive half of step 4 (docs/design-chain-of-blocks.md §2.5, §3):
the chain file format (``format = 2``; legacy slot dicts converted on read), the canonical
chain (evoopt/genome/canonical.py) and hash policy A (``ChainGenome.hash``: the legacy hash
whenever the slot language expresses the chain or its canonical form)."""

from __future__ import annotations

import contextlib
import json
import math
import tomllib
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evoopt.genome import Genome, GenomeError, seed_genome
from evoopt.genome import chain as chain_module
from evoopt.genome import genome as genome_module
from evoopt.genome.blocks import REGISTRY as BLOCKS
from evoopt.genome.canonical import canonical, canonical_hash, round12, structure_dict
from evoopt.genome.chain import FORMAT, Block, ChainGenome, Rules
from evoopt.genome.legacy import (
    chain_hash,
    from_legacy_dict,
    from_slots,
    slot_equivalent,
    to_slots,
)
from evoopt.genome.sampling import random_genome
from evoopt.strategy.operators import OPERATORS
from tests.test_chain import GOLDEN, _golden_genome

B = Block.make
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _random(seed: int, split: bool) -> Genome:
    g = random_genome(np.random.default_rng(seed))
    return OPERATORS["split_roles"](g, np.random.default_rng(seed + 3))[0] if split else g


def assert_file_round_trip(c: ChainGenome) -> None:
    """to_dict/from_dict, TOML (tomli_w, as Genome.to_toml writes, read by tomllib) and JSON."""
    d = c.to_dict()
    assert d["format"] == FORMAT
    assert list(d)[:1] == ["format"]
    for back in (ChainGenome.from_dict(d), ChainGenome.from_dict(tomllib.loads(c.to_toml())),
                 ChainGenome.from_dict(json.loads(c.to_json()))):
        assert back == c
        assert (back.name, back.description) == (c.name, c.description)
        assert back.to_dict() == d


def assert_hash_policy(g: Genome) -> None:
    c = from_slots(g)
    assert c.hash == g.hash and c.structure == g.structure
    cc = canonical(c)
    assert canonical(cc) == cc and canonical(cc).to_dict() == cc.to_dict()
    slots = slot_equivalent(cc)
    assert slots is not None  # canonicalising a slot genome's chain stays within the slots
    assert slots.hash == g.hash and slots.structure == g.structure


# ----------------------------------------------------------------------------------------------
# (1) The file format: round trips over the golden genomes and random ones.
@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_golden_genomes_round_trip_and_keep_their_hash(key: str) -> None:
    g = _golden_genome(key)
    c = from_slots(g)
    assert_file_round_trip(c)
    assert ChainGenome.from_dict(GOLDEN[key]["genome"]) == c  # the legacy layout, converted
    assert_hash_policy(g)
    assert c.hash == GOLDEN[key]["identity"]["hash"]
    assert c.structure == GOLDEN[key]["identity"]["structure"]


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.booleans())
def test_random_genomes_round_trip_and_keep_their_hash(seed: int, split: bool) -> None:
    g = _random(seed, split)
    c = from_slots(g)
    assert_file_round_trip(c)
    legacy = g.to_dict()
    assert ChainGenome.from_dict(legacy) == from_slots(Genome.from_dict(legacy))
    assert ChainGenome.from_dict(tomllib.loads(tomli_w.dumps(legacy))) == c
    assert_hash_policy(g)


def test_the_design_files_read_as_the_converted_seeds() -> None:
    """§2.5's adam.toml (inline tables, no format key) and muon.toml; ``[[chain]]`` sections
    mean the same as inline tables."""
    adam = tomllib.loads("""
lr = 1e-3
chain = [{kind="ema", beta=0.9, bias_correction=true}, {kind="adam_v", beta=0.999, eps=1e-8},
         {kind="add", of="m", by="v", weight=1.0}]
""")
    assert ChainGenome.from_dict(adam) == from_slots(seed_genome("adam"))
    sections = tomllib.loads("""
format = 2
lr = 1e-3
[[chain]]
kind = "ema"
[[chain]]
kind = "adam_v"
[[chain]]
kind = "add"
of = "m"
by = "v"
""")
    assert ChainGenome.from_dict(sections) == from_slots(seed_genome("adam"))
    muon = tomllib.loads("""
lr = 3e-4
chain = [{kind="ema", beta=0.9, bias_correction=true}, {kind="adam_v", beta=0.95, eps=1e-8},
         {kind="add", of="m", by="v"}]
matrix = {lr=0.02, chain=[{kind="ema", beta=0.95, bias_correction=false},
                          {kind="nesterov", of="m"}, {kind="orthogonalize"}]}
""")
    read = ChainGenome.from_dict(muon)
    assert to_slots(read) == seed_genome("muon")
    assert read.hash == seed_genome("muon").hash


def test_to_dict_writes_the_design_layout() -> None:
    muon = from_slots(seed_genome("muon"))
    d = muon.to_dict()
    assert list(d) == ["format", "name", "description", "lr", "chain", "matrix"]
    assert d["chain"][2] == {"kind": "add", "of": "m", "by": "v", "weight": 1.0}
    assert d["matrix"] == {"lr": 0.02, "chain": [
        {"kind": "ema", "beta": 0.95, "bias_correction": False},
        {"kind": "nesterov", "weight": 1.0}, {"kind": "orthogonalize"}]}
    named = ChainGenome(Rules(1e-3, (B("ema", name="slow"), B("add", of="slow"))),
                        clip=B("global_norm"))
    assert list(named.to_dict()["chain"][0]) == ["kind", "name", "beta", "bias_correction"]
    assert named.to_dict()["clip"] == {"kind": "global_norm", "max_norm": 1.0}
    scheduled = replace(named, rules=replace(named.rules, schedule=B("cosine")))
    assert scheduled.to_dict()["schedule"] == {"kind": "cosine", "final_lr_fraction": 0.0}
    assert_file_round_trip(named)
    assert_file_round_trip(scheduled)


def test_no_hyperparameter_shadows_a_wiring_key() -> None:
    for spec in BLOCKS.values():
        assert not {h.name for h in spec.hparams} & {"kind", *chain_module.PORT_KEYS}


def test_the_legacy_module_installs_the_upper_layers() -> None:
    assert chain_module.UPPER["chain_hash"] is chain_hash
    assert chain_module.UPPER["from_legacy_dict"] is from_legacy_dict


# ----------------------------------------------------------------------------------------------
# (2) Malformed input: every error names the offending field.
_ADAM_CHAIN = [{"kind": "ema"}, {"kind": "adam_v"}, {"kind": "add", "of": "m", "by": "v"}]


def _file(**changes: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"format": 2, "lr": 1e-3, "chain": [dict(b) for b in _ADAM_CHAIN]}
    for key, value in changes.items():
        if value is None:
            d.pop(key, None)
        else:
            d[key] = value
    return d


def _chain(i: int, **fields: Any) -> list[dict[str, Any]]:
    chain = [dict(b) for b in _ADAM_CHAIN]
    chain[i] = {k: v for k, v in (chain[i] | fields).items() if v is not None}
    return chain


_MATRIX = {"lr": 0.02, "chain": [{"kind": "add"}]}
MALFORMED = [
    ("beta-range", _file(chain=_chain(1, beta=1.5)), r"chain\[1\]\.beta: 1\.5 is outside"),
    ("beta-bool", _file(chain=_chain(0, beta=True)), r"chain\[0\]\.beta: expected a number"),
    ("beta-string", _file(chain=_chain(0, beta="0.9")), r"chain\[0\]\.beta: expected a number"),
    ("switch-number", _file(chain=_chain(0, bias_correction=1)),
     r"chain\[0\]\.bias_correction: expected true or false"),
    ("kind-unknown", _file(chain=_chain(1, kind="emaa")),
     r"chain\[1\]\.kind: unknown kind 'emaa' \(known: ema, heavy_ball, .*add, .*decay_term"),
    ("kind-missing", _file(chain=_chain(0, kind=None)),
     r"chain\[0\]\.kind: missing or not a string"),
    ("kind-schedule-in-chain", _file(chain=_chain(0, kind="cosine")),
     r"chain\[0\]\.kind: 'cosine' is a schedule block, which cannot stand here"),
    ("kind-chain-as-decay", _file(weight_decay={"kind": "decay_term"}),
     r"weight_decay\.kind: 'decay_term' is an update block.*\(known: coupled, decoupled, "
     r"proximal\)"),
    ("unknown-field", _file(chain=_chain(0, gamma=0.5)),
     r"chain\[0\]\.gamma: unknown field for kind 'ema' \(allowed: beta, bias_correction, "
     r"name\)"),
    ("port-on-portless", _file(chain=_chain(0, of="g")),
     r"chain\[0\]\.of: unknown field for kind 'ema'"),
    ("port-not-string", _file(chain=_chain(2, of=1)),
     r"chain\[2\]\.of: expected a signal name \(a string\), got 1"),
    ("name-not-string", _file(chain=_chain(0, name=["m2"])),
     r"chain\[0\]\.name: expected a name \(a string\)"),
    ("name-invalid", _file(chain=_chain(0, name="Slow")),
     r"chain\[0\] ema 'Slow'\.name: 'Slow' is not a name"),
    ("name-on-global", _file(weight_decay={"kind": "decoupled", "name": "wd"}),
     r"weight_decay\.name: unknown field for kind 'decoupled' \(allowed: value\)"),
    ("no-producer", _file(chain=_chain(2, of="m_slow")),
     r"chain\[2\] add\.of: 'm_slow': no block of this chain produces it \(signals: g, m, v\)"),
    ("by-a-tensor", _file(chain=_chain(2, by="m")),
     r"chain\[2\] add\.by: 'm' is a tensor, not a denominator"),
    ("block-not-table", _file(chain=[3]), r"chain\[0\]: expected a table, got 3"),
    ("chain-missing", _file(chain=None), r"chain: expected a non-empty list of blocks, got None"),
    ("chain-empty", _file(chain=[]), r"chain: expected a non-empty list of blocks, got \[\]"),
    ("chain-table", _file(chain={"kind": "add"}), r"chain: expected a non-empty list"),
    ("chain-too-long", _file(chain=[{"kind": "add"}] * 17), r"chain: at most 16 blocks, got 17"),
    ("no-term", _file(chain=[{"kind": "ema"}]), r"chain: no term"),
    ("lr-missing", _file(lr=None), r"lr: missing \(the base learning rate\)"),
    ("lr-string", _file(lr="fast"), r"lr: expected a number, got 'fast'"),
    ("lr-range", _file(lr=-1.0), r"lr: -1\.0 is outside"),
    ("format-3", _file(format=3), r"format: 3: this evoopt reads format 2"),
    ("format-bool", _file(format=True), r"format: True: this evoopt reads format 2"),
    ("format-string", _file(format="2"), r"format: '2': this evoopt reads format 2"),
    ("top-unknown", _file(frobnicate=1),
     r"frobnicate: unknown field \(allowed: format, name, description, step_count, lr"),
    ("top-name", _file(name=3), r"name: expected a string, got 3"),
    ("mixed-layouts", _file(terms=[{"kind": "grad"}]),
     r"terms: a slot-layout field beside 'format'"),
    ("schedule-not-table", _file(schedule="cosine"), r"schedule: expected a table, got 'cosine'"),
    ("schedule-value", _file(schedule={"kind": "cosine", "final_lr_fraction": 2.0}),
     r"schedule\.final_lr_fraction: 2\.0 is outside"),
    ("clip-value", _file(clip={"kind": "global_norm", "max_norm": -1.0}),
     r"clip\.max_norm: -1\.0 is outside"),
    ("apply-kind", _file(apply={"kind": "schedule_freee"}),
     r"apply\.kind: unknown kind 'schedule_freee' \(known: sgd, schedule_free\)"),
    ("apply-chain-kind", _file(apply={"kind": "ema"}),
     r"apply\.kind: 'ema' is an accumulate block, which cannot stand here"),
    ("step-count", _file(step_count="epoch"),
     r"step_count: 'epoch' \(choose one of: param, group\)"),
    ("matrix-not-table", _file(matrix=[1]), r"matrix: expected a table of the rules for matrices"),
    ("matrix-clip", _file(matrix=_MATRIX | {"clip": {"kind": "global_norm"}}),
     r"matrix\.clip: the clip acts on every parameter of a group"),
    ("matrix-matrix", _file(matrix=_MATRIX | {"matrix": _MATRIX}),
     r"matrix\.matrix: the rules for matrices cannot split again"),
    ("matrix-unknown", _file(matrix=_MATRIX | {"name": "x"}),
     r"matrix\.name: unknown field \(allowed: lr, schedule, weight_decay, apply, chain\)"),
    ("matrix-lr", _file(matrix={"chain": [{"kind": "add"}]}), r"matrix\.lr: missing"),
    ("matrix-kind", _file(matrix={"lr": 0.02, "chain": [{"kind": "emaa"}]}),
     r"matrix\.chain\[0\]\.kind: unknown kind 'emaa'"),
    ("matrix-wiring", _file(matrix={"lr": 0.02, "chain": [{"kind": "nesterov"}]}),
     r"matrix\.chain\[0\] nesterov\.of: 'm': no block"),
    ("two-unnamed-emas", _file(chain=[*_ADAM_CHAIN, {"kind": "ema"}]),
     r"chain\[0\] ema and chain\[3\] ema both produce 'm'.*name one of them"),
    ("legacy-kind", {"lr": 1e-3, "terms": [{"kind": "gradd"}]}, r"terms\[0\]"),
    ("legacy-field", {"lr": 1e-3, "momentum": {"kind": "ema", "beta": 2.0},
                      "terms": [{"kind": "momentum"}]}, r"momentum\.beta: 2\.0 is outside"),
    ("not-a-table", [1, 2], r"expected a table of genome fields, got \[1, 2\]"),
]


@pytest.mark.parametrize(("data", "message"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed_input_names_the_field(data: Any, message: str) -> None:
    with pytest.raises(GenomeError, match=f"^genome: {message}") as info:
        ChainGenome.from_dict(data)
    with pytest.raises(GenomeError, match=f"^x.toml: {message}"):
        ChainGenome.from_dict(data, source="x.toml")
    assert "genome: genome:" not in str(info.value)


_JUNK = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.floats()
                     | st.text(max_size=6), lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.sampled_from(["kind", "of", "by", "name", "beta",
                                                         "weight", "lr", "chain"]), inner,
                                       max_size=3), max_leaves=6)


@SETTINGS
@given(st.sampled_from(["lr", "chain", "schedule", "weight_decay", "clip", "apply", "matrix",
                        "format", "name"]), st.integers(0, 2), st.sampled_from(
    ["kind", "of", "by", "name", "beta", "weight", "eps"]), _JUNK)
def test_junk_anywhere_is_a_genome_error_or_a_genome(key: str, i: int, field: str,
                                                     junk: Any) -> None:
    """A junk value at the top or in a block's field raises GenomeError, never another
    exception."""
    for data in (_file(**{key: junk}), _file(chain=_chain(i, **{field: junk}))):
        with contextlib.suppress(GenomeError):
            ChainGenome.from_dict(data)


# ----------------------------------------------------------------------------------------------
# (3) Hash policy A on chains with no slot equivalent: AdEMAMix, a second, named EMA.
def _ademamix(name: str = "m_slow", *, beta3: float = 0.9999, alpha: float = 5.0,
              order: str = "mvs") -> ChainGenome:
    blocks = {"m": B("ema", beta=0.9, bias_correction=True), "v": B("adam_v", beta=0.999),
              "s": B("ema", name=name, beta=beta3, bias_correction=False)}
    terms = (B("add", of="m", by="v"), B("add", of=name, by="v", weight=alpha))
    return ChainGenome(Rules(1e-3, (*(blocks[k] for k in order), *terms)))


def test_ademamix_has_no_slot_equivalent_and_hashes_its_canonical_dict() -> None:
    c = _ademamix()
    assert slot_equivalent(c) is None and slot_equivalent(canonical(c)) is None
    assert c.hash == canonical_hash(c)
    assert canonical(c).to_dict()["format"] == FORMAT
    names = [b.name for b in canonical(c).rules.chain]
    assert names == [None, None, "m1", None, None]  # adam_v, ema, ema 'm1', then the terms


@pytest.mark.parametrize("order", ["mvs", "msv", "vms", "vsm", "smv", "svm"])
@pytest.mark.parametrize("name", ["m_slow", "slow", "a", "z9"])
def test_hash_ignores_the_name_and_the_order_of_independent_blocks(order: str,
                                                                   name: str) -> None:
    assert _ademamix(name, order=order).hash == _ademamix().hash
    assert _ademamix(name, order=order).structure == _ademamix().structure
    assert canonical(_ademamix(name, order=order)) == canonical(_ademamix())


def test_identical_named_blocks_are_told_apart_by_their_readers() -> None:
    """Two EMAs of one β, named, read with weights 1 and 3: the order they are written in and
    which name goes with which never changes the canonical form."""
    def chain(first_a: bool, a: str, b: str) -> ChainGenome:
        accs = (B("ema", name=a, beta=0.9), B("ema", name=b, beta=0.9))
        return ChainGenome(Rules(1e-3, (*(accs if first_a else accs[::-1]),
                                        B("add", of=a, weight=1.0), B("add", of=b, weight=3.0))))

    forms = {json.dumps(canonical(chain(o, a, b)).to_dict(), sort_keys=True)
             for o in (True, False) for a, b in (("x", "y"), ("y", "x"), ("fast", "slow"))}
    assert len(forms) == 1
    assert json.loads(forms.pop())["chain"][2:] == [
        {"kind": "add", "of": "m1", "weight": 0.333333333333},
        {"kind": "add", "of": "m2", "weight": 1.0}]


def test_hash_changes_with_a_real_hyperparameter() -> None:
    base = _ademamix()
    assert len({base.hash, _ademamix(beta3=0.999).hash, _ademamix(alpha=4.0).hash,
                ChainGenome(replace(base.rules, lr=2e-3)).hash}) == 4
    assert _ademamix(beta3=0.999).structure == base.structure  # no number in the structure
    assert base.hash != seed_genome("adam").hash


def test_the_scale_folds_into_lr_on_chains_too() -> None:
    """lr 1e-3 with weights (2, 10) is lr 1e-2 with weights (0.2, 1)."""
    scaled = ChainGenome(Rules(1e-2, (B("ema"), B("adam_v"),
                                      B("ema", name="s", beta=0.9999, bias_correction=False),
                                      B("add", of="m", by="v", weight=0.2),
                                      B("add", of="s", by="v", weight=1.0))))
    doubled = ChainGenome(Rules(1e-3, (*scaled.rules.chain[:3],
                                       B("add", of="m", by="v", weight=2.0),
                                       B("add", of="s", by="v", weight=10.0))))
    assert doubled.hash == scaled.hash
    assert canonical(doubled).rules.lr == 1e-2


def test_a_scale_free_block_keeps_the_scale() -> None:
    chain = (B("ema"), B("ema", name="s", beta=0.99), B("add", of="m", weight=2.0),
             B("add", of="s"), B("trust_ratio"))
    c = ChainGenome(Rules(1e-3, chain))
    assert canonical(c).rules.lr == 1e-3
    assert max(float(b["weight"]) for b in canonical(c).rules.chain if b.spec.is_term) == 2.0


def test_update_blocks_do_not_commute() -> None:
    """decay then trust ratio (the slot order) and trust ratio then decay are two optimizers;
    the second has no slot equivalent."""
    decay_first = ChainGenome(Rules(1e-3, (B("add"), B("decay_term", value=0.01),
                                           B("trust_ratio"))))
    trust_first = ChainGenome(Rules(1e-3, (B("add"), B("trust_ratio"),
                                           B("decay_term", value=0.01))))
    assert slot_equivalent(decay_first) is not None
    with pytest.raises(GenomeError, match=r"chain\[2\] decay_term: a decay term after the "
                       r"transform \(chain\[1\] trust_ratio\)"):
        to_slots(trust_first)
    assert decay_first.hash != trust_first.hash
    assert [b.kind for b in canonical(trust_first).rules.chain] == ["add", "trust_ratio",
                                                                    "decay_term"]
    one = ChainGenome(Rules(1e-3, (B("add"), B("update_momentum"), B("trust_ratio"))))
    other = ChainGenome(Rules(1e-3, (B("add"), B("trust_ratio"), B("update_momentum"))))
    assert one.hash != other.hash
    assert canonical(one) != canonical(other)


def test_lion_written_before_its_momentum_hashes_as_lion() -> None:
    lion = from_slots(seed_genome("lion"))
    moved = ChainGenome(replace(lion.rules, chain=lion.rules.chain[::-1]))
    assert canonical(moved) == canonical(lion)
    assert moved.hash == lion.hash == seed_genome("lion").hash


# ----------------------------------------------------------------------------------------------
# (4) Canonical-form properties.
def _with(c: ChainGenome, *, before: tuple[Block, ...] = (),
          terms: tuple[Block, ...] = ()) -> ChainGenome:
    """``c`` with blocks put first and terms added after its last term."""
    chain = c.rules.chain
    last = max(i for i, b in enumerate(chain) if b.spec.is_term)
    new = (*before, *chain[:last + 1], *terms, *chain[last + 1:])
    return replace(c, rules=replace(c.rules, chain=new))


def test_a_zero_weight_term_or_a_dead_block_does_not_change_the_hash() -> None:
    adam = from_slots(seed_genome("adam"))
    dead = _with(adam, before=(B("ema", name="unused", beta=0.5),))
    zero = _with(adam, terms=(B("sign", weight=0.0),))
    dead_via_zero = _with(adam, before=(B("ema", name="s", beta=0.5),),
                          terms=(B("add", of="s", weight=0.0),))
    for c in (dead, zero, dead_via_zero):
        assert slot_equivalent(c) is None or c is zero
        assert canonical(c) == canonical(adam)
        assert c.hash == adam.hash and c.structure == adam.structure
    ademamix = _ademamix()
    assert _with(ademamix, before=(B("heavy_ball", name="hb"),)).hash == ademamix.hash
    assert _with(ademamix, terms=(B("add", weight=0.0),)).hash == ademamix.hash
    zero_decay = replace(ademamix, rules=replace(ademamix.rules, weight_decay=B("decoupled",
                                                                              value=0.0)))
    assert zero_decay.hash == ademamix.hash


def test_equal_terms_merge() -> None:
    adam = from_slots(seed_genome("adam"))
    halves = ChainGenome(Rules(1e-3, (*adam.rules.chain[:2], B("add", of="m", by="v", weight=0.5),
                                      B("add", of="m", by="v", weight=0.5))))
    assert canonical(halves) == canonical(adam) and halves.hash == adam.hash
    split = _ademamix(alpha=5.0)
    split = ChainGenome(Rules(1e-3, (*split.rules.chain[:4],
                                     B("add", of="m_slow", by="v", weight=2.5),
                                     B("add", of="m_slow", by="v", weight=2.5))))
    assert split.hash == _ademamix().hash
    # opposite weights cancel; every term cancelling is no update
    cancel = _with(_ademamix(), terms=(B("add", weight=0.3), B("add", weight=-0.3)))
    assert cancel.hash == _ademamix().hash
    none_left = ChainGenome(Rules(1e-3, (B("add", weight=0.5), B("add", weight=-0.5))))
    with pytest.raises(GenomeError, match="every term has weight 0"):
        canonical(none_left)


def test_a_lone_decay_term_is_decoupled_decay_and_an_equal_matrix_is_no_split() -> None:
    ademamix = _ademamix()
    as_term = _with(ademamix, terms=(B("decay_term", value=0.01),))
    decoupled = replace(ademamix, rules=replace(ademamix.rules,
                                                weight_decay=B("decoupled", value=0.01)))
    assert canonical(as_term) == canonical(decoupled)
    assert as_term.hash == decoupled.hash
    split = replace(ademamix, matrix=ademamix.rules)
    assert canonical(split) == canonical(ademamix) and split.hash == ademamix.hash
    other = replace(ademamix, matrix=replace(ademamix.rules, lr=0.02))
    assert other.hash != ademamix.hash


def test_canonical_fills_defaults_and_ports() -> None:
    raw = ChainGenome(Rules(1e-3, (Block("ema", (("beta", 0.9), ("bias_correction", True))),
                                   Block("add", (("weight", 1),), of="g"),
                                   Block("nesterov", (("weight", 1),), of="m"))))
    cc = canonical(raw)
    assert cc.rules.chain == (B("ema"), B("add"), B("nesterov"))
    assert all(isinstance(b["weight"], float) for b in cc.rules.chain[1:])
    assert cc.hash == raw.hash == to_slots(raw).hash


def _slow_variant(c: ChainGenome, rng: np.random.Generator) -> ChainGenome:
    """``c`` plus a named slow EMA and a term reading it: no slot equivalent."""
    slow = B("ema", name="slow", beta=float(rng.uniform(0.5, 0.999)),
             bias_correction=bool(rng.integers(2)))
    term = B("add", of="slow", weight=float(rng.uniform(0.1, 3.0)))
    return _with(c, before=(slow,), terms=(term,))


def _renamed(c: ChainGenome, old: str, new: str) -> ChainGenome:
    def rn(b: Block) -> Block:
        return replace(b, name=new if b.name == old else b.name,
                       of=new if b.of == old else b.of, by=new if b.by == old else b.by)

    return replace(c, rules=replace(c.rules, chain=tuple(rn(b) for b in c.rules.chain)))


def _shuffled_accumulators(c: ChainGenome, rng: np.random.Generator) -> ChainGenome:
    """The accumulators (which read only g) in another order, all first; the rest after them in
    their order."""
    chain = c.rules.chain
    acc = [b for b in chain if b.spec.category == "accumulate"]
    rest = [b for b in chain if b.spec.category != "accumulate"]
    order = rng.permutation(len(acc))
    return replace(c, rules=replace(c.rules, chain=(*[acc[i] for i in order], *rest)))


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.booleans())
def test_canonical_properties_on_random_chains(seed: int, split: bool) -> None:
    """On random slot genomes' chains and their variants with a named slow EMA: the canonical
    form is idempotent and a fixpoint of the file format; the hash ignores names, accumulator
    order, dead blocks, zero terms and split terms; and whenever a chain and its canonical form
    both have slot equivalents, their legacy hashes agree."""
    rng = np.random.default_rng(seed)
    g = _random(seed, split)
    base = from_slots(g)
    try:
        assert g.hash
    except GenomeError:  # every term cancels: no update, no hash, on either side
        with pytest.raises(GenomeError):
            assert base.hash
        return
    for c in (base, _slow_variant(base, rng)):
        cc = canonical(c)
        assert canonical(cc) == cc
        assert ChainGenome.from_dict(cc.to_dict()) == cc
        slots, canonical_slots = slot_equivalent(c), slot_equivalent(cc)
        if slots is not None and canonical_slots is not None:
            assert canonical_slots.hash == slots.hash
        h = c.hash
        assert _shuffled_accumulators(c, rng).hash == h
        assert _renamed(c, "slow", "other").hash == h
        assert _with(c, before=(B("diff_ema", name="dead"),)).hash == h
        assert _with(c, terms=(B("sign", weight=0.0),)).hash == h
        term = next(i for i, b in enumerate(c.rules.chain) if b.spec.is_term)
        half = B(c.rules.chain[term].kind, of=c.rules.chain[term].of,
                 by=c.rules.chain[term].by, weight=float(c.rules.chain[term]["weight"]) / 2,
                 **{k: v for k, v in c.rules.chain[term].values if k != "weight"})
        halves = (*c.rules.chain[:term], half, half, *c.rules.chain[term + 1:])
        assert ChainGenome(replace(c.rules, chain=halves), c.matrix, c.clip).hash == h
    slow = _slow_variant(base, rng)
    assert slow.hash != base.hash
    changed = replace(slow, rules=replace(slow.rules, lr=slow.rules.lr * 0.5))
    assert changed.hash != slow.hash


@settings(max_examples=500, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False) | st.floats(1e-12, 1e3))
def test_round12_is_the_slot_genomes_rounding(x: float) -> None:
    assert round12(x) == genome_module._round(x)
    assert round12(x * 3.7) == genome_module._round(x * 3.7)


def test_round12_on_fold_like_values() -> None:
    rng = np.random.default_rng(0)
    for lr, w in zip(10 ** rng.uniform(-6, 0, 2000), rng.uniform(-100, 100, 2000), strict=True):
        assert round12(lr * abs(w)) == genome_module._round(lr * abs(w))
        assert round12(w / 7.3) == genome_module._round(w / 7.3)
    assert round12(0.1 + 0.2) == 0.3 and math.isclose(round12(1 / 3), 1 / 3, rel_tol=1e-12)


def test_structure_dict_has_no_number() -> None:
    def numbers(x: Any) -> list[Any]:
        if isinstance(x, dict):
            return [n for v in x.values() for n in numbers(v)]
        if isinstance(x, list):
            return [n for v in x for n in numbers(v)]
        return [x] if isinstance(x, float) else []

    d = structure_dict(canonical(replace(_ademamix(), matrix=replace(_ademamix().rules,
                                                                     lr=0.02))))
    assert numbers(d) == [] and d["format"] == FORMAT and "matrix" in d
