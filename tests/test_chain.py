"""The chain of blocks, step 1 (docs/design-chain-of-blocks.md §7): the block registry wraps
every legacy primitive, ``legacy.from_slots``/``to_slots`` convert, and the chain compiler
emits exactly the slot genome's program. Naming fixes §1.3's silently shared double EMA."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evoopt.genome import Genome, GenomeError, load_genome, seed_genome
from evoopt.genome import genome as genome_module
from evoopt.genome.blocks import REGISTRY as BLOCKS
from evoopt.genome.blocks import STAGES
from evoopt.genome.canonical import canonical
from evoopt.genome.chain import (
    MATRIX_PREFIX,
    MATRIX_ROLE,
    Block,
    ChainGenome,
    Rules,
    build_chain,
    compile_chain,
)
from evoopt.genome.legacy import from_slots, slot_equivalent, to_slots
from evoopt.genome.primitives import PHASES
from evoopt.genome.primitives import REGISTRY as SLOT_REGISTRY
from evoopt.genome.program import compile_step_functions, render_step_functions
from evoopt.genome.sampling import random_genome
from evoopt.paths import GENOMES_DIR
from evoopt.strategy.operators import OPERATORS
from tests.test_architecture import FORBIDDEN, PACKAGE, imports_of

DATA = Path(__file__).resolve().parent / "data" / "legacy_identities"
B = Block.make


def _golden() -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    for file in ("files", "random", "handwritten"):
        records |= json.loads((DATA / f"{file}.json").read_text())["genomes"]
    return records


GOLDEN = _golden()


def _golden_genome(key: str) -> Genome:
    return Genome.from_dict(GOLDEN[key]["genome"], source=key)


def assert_same_program(g: Genome) -> None:
    """The chain compiles to the slot genome's program and arguments (in constructor order)."""
    chain, want = build_chain(from_slots(g)), g.build()
    assert chain.program == want.program
    assert list(chain.args.items()) == list(want.args.items())


def assert_round_trip(g: Genome) -> None:
    back = to_slots(from_slots(g))
    assert back == g
    assert back.to_dict() == g.to_dict()
    assert back.hash == g.hash and back.structure == g.structure


# ----------------------------------------------------------------------------------------------
# The registry.
def test_every_legacy_primitive_is_wrapped_once() -> None:
    wrapped: list[tuple[str, str]] = []
    for spec in BLOCKS.values():
        if spec.legacy_of:
            wrapped += [(spec.legacy[0], kind) for _, kind in spec.legacy_of]  # type: ignore
        elif spec.legacy is not None:
            wrapped.append(spec.legacy)
    legacy = [(slot, kind) for slot, kinds in SLOT_REGISTRY.items() for kind in kinds]
    assert sorted(wrapped) == sorted(legacy)
    assert len(wrapped) == len(set(wrapped))


def test_specs_reuse_the_legacy_emit_and_hparams() -> None:
    for spec in BLOCKS.values():
        if spec.legacy is None or spec.legacy_of:
            continue
        prim = SLOT_REGISTRY[spec.legacy[0]][spec.legacy[1]]
        assert spec.emit is prim.emit
        assert spec.stage == prim.phase
        assert all(h in prim.hparams for h in spec.hparams)
        assert {s.name for s in spec.state} == set(prim.buffers) - {"prev_grad"}
    assert (*PHASES[:-1], "apply", PHASES[-1]) == STAGES
    assert (MATRIX_ROLE, MATRIX_PREFIX) == (genome_module.MATRIX_ROLE,
                                            genome_module.MATRIX_PREFIX)


# ----------------------------------------------------------------------------------------------
# (1) Program equality on every golden genome.
def test_golden_records_are_all_here() -> None:
    assert len(GOLDEN) == 85


@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_golden_genome_compiles_to_its_program(key: str) -> None:
    """Program and arguments equal to today's slot genome's, and to what step 0 recorded: the
    state keys, the arguments with their defaults and the step functions' digest."""
    g = _golden_genome(key)
    assert_same_program(g)
    assert_round_trip(g)
    built = build_chain(from_slots(g))
    assert built.program.state_names == GOLDEN[key]["identity"]["state"]
    assert [[k, v] for k, (_, v) in built.args.items()] == GOLDEN[key]["identity"]["args"]
    text = "\n".join(render_step_functions(built.program, list(built.args)))
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == GOLDEN[key]["digests"][
        "step_functions"]


# ----------------------------------------------------------------------------------------------
# (2) to_slots ∘ from_slots = id, over random genomes (split by roles a third of the time) and
# the shipped files.
def _random(seed: int, split: bool) -> Genome:
    g = random_genome(np.random.default_rng(seed))
    return OPERATORS["split_roles"](g, np.random.default_rng(seed + 3))[0] if split else g


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.booleans())
def test_round_trip_and_program_on_random_genomes(seed: int, split: bool) -> None:
    g = _random(seed, split)
    assert_round_trip(g)
    assert_same_program(g)


def _shipped() -> list[Path]:
    return sorted(GENOMES_DIR.glob("*.toml")) + sorted((GENOMES_DIR / "reference").glob("*.toml"))


def _shipped_slot_genomes() -> list[Path]:
    return [p for p in _shipped() if isinstance(load_genome(p), Genome)]


def _shipped_chain_genomes() -> list[Path]:
    return [p for p in _shipped() if isinstance(load_genome(p), ChainGenome)]


@pytest.mark.parametrize("path", _shipped_slot_genomes(), ids=lambda p: p.stem)
def test_round_trip_on_shipped_genomes(path: Path) -> None:
    g = load_genome(path)
    assert_round_trip(g)
    assert to_slots(from_slots(g)).name == g.name
    assert_same_program(g)


@pytest.mark.parametrize("path", _shipped_chain_genomes(), ids=lambda p: p.stem)
def test_shipped_chain_genomes_round_trip_and_have_no_slot_form(path: Path) -> None:
    """A shipped format-2 seed the slot language cannot express loads as a chain: its dict
    reads back equal, its canonical form is a fixpoint with the same hash, and its hash is
    in the chain domain (no slot genome has it)."""
    g = load_genome(path)
    assert g.name == path.stem
    assert ChainGenome.from_dict(g.to_dict()) == g
    assert canonical(canonical(g)) == canonical(g)
    assert canonical(g).hash == g.hash
    assert slot_equivalent(g) is None and slot_equivalent(canonical(g)) is None
    assert g.program().ops


def test_seed_conversion_reads_as_the_design_writes_it() -> None:
    adam = from_slots(seed_genome("adam"))
    assert adam.rules.chain == (B("ema", beta=0.9, bias_correction=True),
                                B("adam_v", beta=0.999, eps=1e-8),
                                B("add", of="m", by="v", weight=1.0))
    muon = from_slots(seed_genome("muon"))
    assert muon.matrix is not None
    assert [b.kind for b in muon.matrix.chain] == ["ema", "nesterov", "orthogonalize"]


# ----------------------------------------------------------------------------------------------
# (3) The double EMA of §1.3: refused unnamed, distinct state when one is named.
def _ademamix(slow_name: str | None) -> ChainGenome:
    slow = B("ema", name=slow_name, beta=0.9999, bias_correction=False)
    return ChainGenome(Rules(1e-3, (
        B("ema", beta=0.9, bias_correction=True), B("adam_v", beta=0.999, eps=1e-8), slow,
        B("add", of="m", by="v"), B("add", of=slow_name or "m", by="v", weight=5.0))))


def test_two_unnamed_emas_are_refused_naming_both() -> None:
    with pytest.raises(GenomeError, match=r"chain\[0\] ema and chain\[2\] ema both produce 'm'"
                       r".*name one of them"):
        _ademamix(None)


def test_two_unnamed_blocks_sharing_state_are_refused() -> None:
    with pytest.raises(GenomeError, match=r"chain\[1\] update_momentum and chain\[2\] "
                       r"update_momentum would share the state 'update_buf': name one of them"):
        ChainGenome(Rules(1e-2, (B("add"), B("update_momentum"), B("update_momentum"))))


def test_a_named_second_ema_has_its_own_state_scalars_and_arguments() -> None:
    built = build_chain(_ademamix("m_slow"))
    program = built.program
    assert program.buffers == ["exp_avg", "exp_avg_sq", "m_slow_exp_avg"]
    assert list(built.args) == ["lr", "beta1", "m_slow_beta", "beta2", "eps", "momentum_weight",
                                "momentum1_weight"]
    lerps = [(o.args[0], o.scalar) for o in program.ops if o.kind == "lerp_"]
    assert lerps == [("exp_avg", "1 - beta1"), ("m_slow_exp_avg", "1 - m_slow_beta")]
    # the slow EMA is not bias-corrected; the fast one's correction is its own
    assert dict(program.lets)["momentum1_step"] == "-lr * momentum1_weight"
    assert dict(program.lets)["momentum_step"] == "-lr * momentum_weight / bias_correction1"


@pytest.mark.usefixtures("float64")
def test_the_named_double_ema_computes_ademamix() -> None:
    """(m̂ + α·m_slow)/(√v̂ + ε), m_slow an EMA of β₃ without bias correction, step by step."""
    built = build_chain(_ademamix("m_slow"))
    fns = compile_step_functions(built.program, list(built.args))
    hp = {name: value for name, (_, value) in built.args.items()}
    torch.manual_seed(0)
    p = torch.randn(5)
    state = [torch.zeros(5) for _ in range(3)]
    step = torch.tensor(0.0)
    want, m, v, s = p.clone(), torch.zeros(5), torch.zeros(5), torch.zeros(5)
    for t in range(1, 6):
        g = torch.randn(5)
        fns["single"]([p], [g], *[[x] for x in state], [step], **hp, maximize=False)
        m, v, s = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g, 0.9999 * s + 1e-4 * g
        denom = (v / (1 - 0.999 ** t)).sqrt() + 1e-8
        want = want - 1e-3 * (m / (1 - 0.9 ** t) + 5.0 * s) / denom
        torch.testing.assert_close(p, want, rtol=1e-12, atol=0)
    torch.testing.assert_close(state[2], s, rtol=1e-12, atol=0)


def test_a_named_instance_of_every_chain_kind_compiles_apart() -> None:
    """Each kind, named, beside its unnamed twin where that is allowed: their state keys,
    scalars and arguments are disjoint."""
    cases = {
        "heavy_ball": (B("heavy_ball"), B("heavy_ball", name="hb"), B("add", of="hb")),
        "diff_ema": (B("diff_ema"), B("diff_ema", name="dd"), B("add", of="dd")),
        "factored": (B("factored", name="fa"), B("add", by="fa")),
        "nadam": (B("ema"), B("nadam"), B("nadam", name="na")),
        "update_momentum": (B("add"), B("update_momentum"), B("update_momentum", name="um")),
        "relative_step": (B("adam_v"), B("add", by="v"), B("relative_step", name="rs")),
    }
    for kind, chain in cases.items():
        built = build_chain(ChainGenome(Rules(1e-3, chain)))
        named = [b.name for b in chain if b.name][0]
        spec = BLOCKS[kind]
        assert all(f"{named}_{s.name}" in built.program.buffers for s in spec.state), kind
        assert all(f"{named}_{h.name}" in built.args for h in spec.hparams if not h.is_bool)
        compile_step_functions(built.program, list(built.args))
    factored = build_chain(ChainGenome(Rules(1e-3, cases["factored"]))).program
    assert factored.layouts["fa_row_var"].reduced == -1


def test_a_term_sharing_a_scalar_of_another_decay_is_refused() -> None:
    """Two unnamed Nesterov terms over two bias-corrected EMAs would share one
    bias_correction1_next (a slot genome cannot ask for this; a chain must not get it
    silently)."""
    chain = ChainGenome(Rules(1e-3, (B("ema"), B("ema", name="slow", beta=0.99), B("nesterov"),
                                     B("nesterov", of="slow"))))
    with pytest.raises(GenomeError, match=r"chain\[3\] nesterov: would share the scalar "
                       r"bias_correction1_next.*name one of them"):
        compile_chain(chain)
    fixed = ChainGenome(Rules(1e-3, (*chain.rules.chain[:3],
                                     B("nesterov", of="slow", name="ns"))))
    lets = dict(compile_chain(fixed).lets)
    assert lets["ns_bias_correction1_next"] == "1 - slow_beta ** (step + 1)"
    assert lets["bias_correction1_next"] == "1 - beta1 ** (step + 1)"


def test_a_name_that_clashes_with_a_legacy_identifier_is_refused() -> None:
    with pytest.raises(GenomeError, match="would share the state 'max_exp_avg_sq'"):
        ChainGenome(Rules(1e-3, (B("amsgrad"), B("adam_v", name="max"), B("add", by="v"))))
    with pytest.raises(GenomeError, match="'momentum_weight' is another block's"):
        ChainGenome(Rules(1e-3, (B("ema"), B("add", of="m"), B("add", of="m", name="momentum"))))


# ----------------------------------------------------------------------------------------------
# Stage scheduling: the chain is the logical order, stages decide the emission.
def test_lion_may_stand_before_the_momentum_it_reads_last_steps_value_of() -> None:
    lion = seed_genome("lion")
    converted = from_slots(lion)
    moved = ChainGenome(Rules(converted.rules.lr, converted.rules.chain[::-1],
                              converted.rules.schedule, converted.rules.weight_decay))
    assert compile_chain(moved) == lion.build().program
    assert to_slots(moved) == lion


def test_state_tables_in_another_order_convert_to_the_same_slots() -> None:
    adam = from_slots(seed_genome("adam"))
    swapped = (adam.rules.chain[1], adam.rules.chain[0], adam.rules.chain[2])
    assert to_slots(ChainGenome(Rules(1e-3, swapped))) == seed_genome("adam")


# ----------------------------------------------------------------------------------------------
# (4) Wiring errors name the offending block.
@pytest.mark.parametrize(("chain", "message"), [
    ((B("ema"), B("add", of="m_slow")),
     r"chain\[1\] add\.of: 'm_slow': no block of this chain produces it \(signals: g, m\)"),
    ((B("ema"), B("add", of="m", by="m")), r"chain\[1\] add\.by: 'm' is a tensor, not a "
                                           "denominator"),
    ((B("add", of="m"), B("ema")), r"chain\[0\] add\.of: reads 'm' before chain\[1\] ema "
                                   "produces it"),
    ((B("adam_v"), B("nesterov", of="v")), r"chain\[1\] nesterov\.of: 'v' .* is not what "
                                           "nesterov reads"),
    ((B("adam_v"), B("nesterov")), r"chain\[1\] nesterov\.of: 'm': no block"),
    ((B("diff_ema"), B("sign", of="d")), r"chain\[1\] sign\.of: 'd' .* not what sign reads"),
    ((B("ema", of="g"), B("add")), r"chain\[0\] ema\.of: ema has no of port"),
    ((B("ema"), B("lion", by="v")), r"chain\[1\] lion\.by: lion has no by port"),
    ((B("add"), B("trust_ratio"), B("add")), r"chain\[2\] add: a term after an update block "
                                             r"\(chain\[1\] trust_ratio\)"),
    ((B("decay_term"), B("add")), r"chain\[0\] decay_term: an update block needs a term"),
    ((B("ema"),), r"chain: no term"),
    ((B("ema", name="m2"), B("ema", name="m2"), B("add")),
     r"chain\[1\] ema 'm2': the name 'm2' is taken by chain\[0\] ema 'm2'"),
    ((B("ema", name="step"), B("add")), r"chain\[0\] ema 'step'\.name: 'step' is reserved"),
    ((B("ema", name="Slow"), B("add")), r"chain\[0\] ema 'Slow'\.name: 'Slow' is not a name"),
    ((B("ema", name="v"), B("adam_v"), B("add")),
     r"chain\[1\] adam_v: its output 'v' is already a signal \(chain\[0\] ema 'v'\)"),
    ((Block("ema", (("beta", 0.9),)), B("add")),
     r"chain\[0\] ema\.bias_correction: missing"),
    ((Block("ema", (("beta", 1.5), ("bias_correction", True))), B("add")),
     r"chain\[0\] ema\.beta: 1\.5 is outside"),
    ((Block("nope"), B("add")), r"chain\[0\]: unknown block kind 'nope'"),
    ((B("constant"), B("add")), r"chain\[0\] constant: a schedule block cannot stand here"),
])
def test_wiring_errors_name_the_block(chain: tuple[Block, ...], message: str) -> None:
    with pytest.raises(GenomeError, match=message):
        ChainGenome(Rules(1e-3, chain))


def test_matrix_rules_errors_name_the_matrix_rules() -> None:
    with pytest.raises(GenomeError, match=r"matrix\.chain\[1\] nesterov\.of: 'm': no block"):
        ChainGenome(Rules(1e-3, (B("add"),)), matrix=Rules(0.02, (B("adam_v"), B("nesterov"))))
    with pytest.raises(GenomeError, match=r"weight_decay update_momentum: an update block "
                       "cannot stand here"):
        ChainGenome(Rules(1e-3, (B("add"),), weight_decay=B("update_momentum")))


def test_chains_with_no_slot_equivalent_are_refused_by_to_slots() -> None:
    with pytest.raises(GenomeError, match=r"chain\[2\] ema 'm_slow': a named instance; no slot "
                       "genome expresses it"):
        to_slots(_ademamix("m_slow"))
    with pytest.raises(GenomeError, match="a second transform block"):
        to_slots(ChainGenome(Rules(1e-3, (B("add"), B("trust_ratio"), B("orthogonalize")))))
    with pytest.raises(GenomeError, match=r"chain\[1\] decay_term: its argument "
                       "'weight_decay' is another block's"):
        ChainGenome(Rules(1e-3, (B("add"), B("decay_term")), weight_decay=B("decoupled")))
    with pytest.raises(GenomeError, match="a named instance"):
        to_slots(ChainGenome(Rules(1e-3, (B("add"), B("decay_term", name="wd2")),
                                   weight_decay=B("decoupled"))))


def test_block_make_checks_values() -> None:
    assert B("ema") == Block("ema", (("beta", 0.9), ("bias_correction", True)))
    with pytest.raises(GenomeError, match="ema.gamma: unknown field"):
        B("ema", gamma=0.5)
    with pytest.raises(GenomeError, match="ema.beta"):
        B("ema", beta=math.inf)


# ----------------------------------------------------------------------------------------------
# (5) The new modules stay in the genome stage and below the slot genome.
NEW_MODULES = {"blocks": ("evoopt.genome.runtime", "evoopt.genome.program",
                          "evoopt.genome.primitives", "evoopt.genome.blocks"),
               "chain": ("evoopt.genome.runtime", "evoopt.genome.program",
                         "evoopt.genome.primitives", "evoopt.genome.blocks"),
               "canonical": ("evoopt.genome.runtime", "evoopt.genome.program",
                             "evoopt.genome.primitives", "evoopt.genome.blocks",
                             "evoopt.genome.chain"),
               "legacy": ("evoopt.genome.runtime", "evoopt.genome.program",
                          "evoopt.genome.primitives", "evoopt.genome.blocks",
                          "evoopt.genome.chain", "evoopt.genome.canonical",
                          "evoopt.genome.genome")}


@pytest.mark.parametrize("module", sorted(NEW_MODULES))
def test_new_modules_import_only_the_genome_layers_below_them(module: str) -> None:
    base = PACKAGE / "genome" / module
    files = sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
    assert files
    allowed = (*NEW_MODULES[module], "evoopt.fileio")  # the package's file utilities: a leaf
    for path in files:
        names = imports_of(path)
        bad = {n for n in names for f in FORBIDDEN["genome"] if n == f or n.startswith(f + ".")}
        assert not bad, f"{path} imports {sorted(bad)}"
        above = {n for n in names if n.split(".")[0] == "evoopt"
                 and not any(n == m or n.startswith(m + ".") for m in allowed)}
        assert not above, f"{path} imports {sorted(above)}"
