"""Variation operators: validity, what each operator changes, determinism, crossover provenance."""

from __future__ import annotations

import dataclasses
import inspect
import math
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from evoopt.campaign.config import CampaignConfig, ConfigError, load_config, parse_config
from evoopt.genome import MAX_TERMS, Genome, seed_genome, seed_names
from evoopt.genome.genome import STATE_SLOTS
from evoopt.genome.primitives import LR, REGISTRY, GenomeError
from evoopt.genome.sampling import random_genome
from evoopt.strategy.operators import (
    CROSSOVER_SLOTS,
    DEFAULT_MUTATION_RATES,
    OPERATORS,
    STRUCTURAL_OPERATORS,
    MutationOperator,
    applicable_operators,
    crossover,
    mutate,
    mutate_op,
    resolve_rates,
)
from evoopt.strategy.strategy import Strategy, StrategyConfig

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**32 - 1)
SEEDS = seed_names(slot_only=True)  # the search mutates slot genomes (issue 18 step 5)
GENOMES = {name: seed_genome(name) for name in SEEDS}


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def only(*names: str) -> dict[str, float]:
    """Rates that switch every operator off but ``names`` (rates merge with the defaults)."""
    return {n: float(n in names) for n in OPERATORS}


def random_split_genome(seed: int) -> Genome:
    """A random genome whose matrices follow rules of their own (parameter roles)."""
    return OPERATORS["split_roles"](random_genome(rng(seed)), rng(seed + 3))[0]


def any_genome(seed: int, which: int) -> Genome:
    """A seed genome (which < len(SEEDS)), a random one, or a random one split by roles."""
    if which < len(SEEDS):
        return GENOMES[SEEDS[which]]
    return random_split_genome(seed) if which == len(SEEDS) + 3 else random_genome(rng(seed))


genome_choice = st.integers(0, len(SEEDS) + 3)  # about half seed genomes, half random ones


def assert_valid(g: Genome) -> None:
    assert isinstance(g, Genome)
    again = Genome.from_dict(g.to_dict())  # checks kinds, consistency and every bound
    assert again == g
    assert 1 <= len(g.terms) <= MAX_TERMS
    assert math.isfinite(g.lr) and LR.check(g.lr, "lr") == g.lr
    for block in g.blocks():
        for h in block.primitive.hparams:
            assert h.check(block[h.name], f"{block.slot}.{h.name}") == block[h.name]
    g.canonical()
    g.build()  # the program emits


# ----------------------------------------------------------------------------------------------
# Validity of mutate and crossover.
@SETTINGS
@given(seeds, genome_choice)
def test_mutate_gives_valid_genomes(seed: int, which: int) -> None:
    parent = any_genome(seed, which)
    child, change = mutate(parent, rng(seed + 1))
    assert_valid(child)
    assert isinstance(change, str) and change.strip()
    assert child.name == "" and child.description == ""


@SETTINGS
@given(seeds, genome_choice)
def test_mutation_chains_stay_valid(seed: int, which: int) -> None:
    g = any_genome(seed, which)
    r = rng(seed)
    for _ in range(10):
        g, change = mutate(g, r)
        assert_valid(g)
        assert change


@SETTINGS
@given(seeds, genome_choice, genome_choice)
def test_crossover_gives_valid_children_built_from_parents(seed: int, i: int, j: int) -> None:
    a, b = any_genome(seed, i), any_genome(seed + 7, j)
    child, change = crossover(a, b, rng(seed))
    assert_valid(child)
    assert change.startswith("crossover: ")
    assert child.lr in (a.lr, b.lr)
    for slot in CROSSOVER_SLOTS:
        block = getattr(child, slot)
        if block in (getattr(a, slot), getattr(b, slot)):
            continue
        if block is None:  # state the child's terms do not use is dropped
            assert slot in STATE_SLOTS
            continue
        # only complete() may add a block: a state table neither parent has
        assert slot in STATE_SLOTS and getattr(a, slot) is None and getattr(b, slot) is None, slot
        assert f"+{slot} " in change
    parent_terms = set(a.terms) | set(b.terms)
    assert all(t in parent_terms for t in child.terms)
    used = set().union(*(t.primitive.uses for t in child.terms))
    if any(t.get("normalize") for t in child.terms):
        used.add("second_moment")
    assert {s for s in STATE_SLOTS if getattr(child, s) is not None} == used
    keys = [(t.kind, bool(t.get("normalize", False))) for t in child.terms]
    assert len(keys) == len(set(keys))  # deduplicated by kind + normalize
    assert child.matrix in (a.matrix, b.matrix)


def test_crossover_adds_and_removes_role_splits() -> None:
    muon, adam = GENOMES["muon"], GENOMES["adam"]
    children = [crossover(muon, adam, rng(seed)) for seed in range(40)]
    assert {c.matrix for c, _ in children} == {None, muon.matrix}
    assert any("matrix rules from parent 1" in change for c, change in children
               if c.matrix is not None)
    flipped = [crossover(adam, muon, rng(seed)) for seed in range(40)]
    assert any("matrix rules from parent 2" in change for _, change in flipped)


@SETTINGS
@given(seeds)
def test_crossover_of_seed_genomes(seed: int) -> None:
    r = rng(seed)
    for name_a in SEEDS:
        name_b = SEEDS[int(r.integers(len(SEEDS)))]
        child, change = crossover(GENOMES[name_a], GENOMES[name_b], r)
        assert_valid(child)
        assert change


def test_crossover_takes_from_both_parents() -> None:
    a, b = GENOMES["adam"], GENOMES["sgd-momentum"]
    lrs, momenta = set(), set()
    for seed in range(60):
        child, _ = crossover(a, b, rng(seed))
        lrs.add(child.lr)
        if child.momentum is not None:
            momenta.add(child.momentum.kind)
    assert lrs == {a.lr, b.lr}
    assert momenta == {"ema", "heavy_ball"}


# ----------------------------------------------------------------------------------------------
# Each operator does what it says.
def _same_except(parent: Genome, child: Genome, slots: set[str]) -> None:
    for slot in ("lr", *CROSSOVER_SLOTS):
        if slot not in slots:
            assert getattr(child, slot) == getattr(parent, slot), slot


def _float_values(g: Genome) -> dict[str, float]:
    out = {"lr": g.lr}
    for slot in CROSSOVER_SLOTS:
        block = getattr(g, slot)
        if block is not None:
            out |= {f"{slot}.{k}": v for k, v in block.values if not isinstance(v, bool)}
    for i, t in enumerate(g.terms):
        out |= {f"terms[{i}].{k}": v for k, v in t.values if not isinstance(v, bool)}
    return out


def check_perturb_hparam(p: Genome, c: Genome, change: str) -> None:
    assert [(b.slot, b.kind) for b in c.blocks()] == [(b.slot, b.kind) for b in p.blocks()]
    before, after = _float_values(p), _float_values(c)
    assert before.keys() == after.keys()
    differ = [k for k in before if before[k] != after[k]]
    path = change.split(" ")[0]
    assert path in before
    assert set(differ) <= {path}
    assert "→" in change


def check_add_term(p: Genome, c: Genome, change: str) -> None:
    assert len(c.terms) == len(p.terms) + 1 and c.terms[:-1] == p.terms
    assert change.startswith(f"+term {c.terms[-1].kind} ")
    _same_except(p, c, set(STATE_SLOTS))


def check_remove_term(p: Genome, c: Genome, change: str) -> None:
    assert len(c.terms) == len(p.terms) - 1
    i = int(change.split("[")[1].split("]")[0])
    assert c.terms == p.terms[:i] + p.terms[i + 1:]
    assert change.startswith(f"−terms[{i}] {p.terms[i].kind}")
    _same_except(p, c, set(STATE_SLOTS))


def check_swap_term_kind(p: Genome, c: Genome, change: str) -> None:
    assert len(c.terms) == len(p.terms)
    differ = [i for i, (x, y) in enumerate(zip(p.terms, c.terms, strict=True)) if x != y]
    assert len(differ) == 1
    i = differ[0]
    old, new = p.terms[i], c.terms[i]
    assert old.kind != new.kind and new["weight"] == old["weight"]
    if "normalize" in dict(old.values) and "normalize" in dict(new.values):
        assert new["normalize"] == old["normalize"]
    assert change.startswith(f"terms[{i}] {old.kind}→{new.kind}")
    _same_except(p, c, set(STATE_SLOTS))


def check_toggle_bias_correction(p: Genome, c: Genome, change: str) -> None:
    slot = change.split(" ")[0].split(".")[0]
    assert slot in ("momentum", "grad_diff", "second_moment")
    old, new = getattr(p, slot), getattr(c, slot)
    if slot == "second_moment":
        assert {old.kind, new.kind} == {"adam", "rmsprop"}
        assert dict(old.values) == dict(new.values)
    else:
        assert new.kind == old.kind and new["bias_correction"] is not old["bias_correction"]
        assert new["beta"] == old["beta"]
    _same_except(p, c, {slot})
    assert c.terms == p.terms


def check_toggle_normalize(p: Genome, c: Genome, change: str) -> None:
    differ = [i for i, (x, y) in enumerate(zip(p.terms, c.terms, strict=True)) if x != y]
    assert len(differ) == 1
    i = differ[0]
    assert c.terms[i] == p.terms[i].replace(normalize=not p.terms[i]["normalize"])
    assert change.startswith(f"terms[{i}].normalize ")
    assert (c.second_moment is not None) == any(t.get("normalize") for t in c.terms)
    _same_except(p, c, {"second_moment"})


def check_change_normalization(p: Genome, c: Genome, change: str) -> None:
    old, new = p.second_moment, c.second_moment
    assert new.kind != old.kind and new.kind in REGISTRY["second_moment"]
    shared = set(dict(old.values)) & set(dict(new.values))
    # every kind but factored (the dtype's machine epsilon) has an eps: it is kept
    assert "eps" in shared or "factored" in (old.kind, new.kind)
    assert all(new[k] == old[k] for k in shared)
    assert change == f"second_moment {old.kind}→{new.kind}"
    _same_except(p, c, {"second_moment"})
    assert c.terms == p.terms


def check_change_schedule(p: Genome, c: Genome, change: str) -> None:
    old, new = p.schedule, c.schedule
    assert new.kind != old.kind
    for k, v in old.values:  # shared hyperparameters keep their values
        if k in dict(new.values):
            assert new[k] == v
    assert change.startswith(f"schedule {old.kind}→{new.kind}")
    _same_except(p, c, {"schedule"})


def check_change_weight_decay(p: Genome, c: Genome, change: str) -> None:
    old, new = p.weight_decay, c.weight_decay
    mode = lambda b: "none" if b is None else b.kind  # noqa: E731
    assert mode(old) != mode(new)
    assert change.startswith(f"weight_decay {mode(old)}→{mode(new)}")
    if new is not None:
        assert new["value"] > 0
        if old is not None and old["value"] != 0:
            assert new["value"] == old["value"]
    _same_except(p, c, {"weight_decay"})


def check_toggle_clip(p: Genome, c: Genome, change: str) -> None:
    assert (p.clip is None) != (c.clip is None)
    assert change.startswith("+clip" if p.clip is None else "−clip")
    _same_except(p, c, {"clip"})


def _others(g: Genome) -> Genome:
    return dataclasses.replace(g, matrix=None)


def _without_clip(g: Genome) -> Genome:
    return dataclasses.replace(g, clip=None)


def check_split_roles(p: Genome, c: Genome, change: str) -> None:
    assert p.matrix is None and c.matrix is not None and c.matrix.clip is None
    assert _others(c) == p
    assert change.startswith("+matrix rules: ")


def check_merge_roles(p: Genome, c: Genome, change: str) -> None:
    assert p.matrix is not None and c.matrix is None
    if change == "−matrix rules (the others' rules for all)":
        assert c == _others(p)
    else:
        assert change == "−matrix rules (the matrices' rules for all)"
        assert c == dataclasses.replace(p.matrix, clip=p.clip)


def check_swap_roles(p: Genome, c: Genome, change: str) -> None:
    assert change == "matrix rules ⇄ the others'"
    assert c.matrix == _without_clip(_others(p))
    assert _others(c) == dataclasses.replace(p.matrix, clip=p.clip)


def check_change_transform(p: Genome, c: Genome, change: str) -> None:
    mode = lambda b: "none" if b is None else b.kind  # noqa: E731
    assert mode(p.transform) != mode(c.transform)
    assert change == f"transform {mode(p.transform)}→{mode(c.transform)}"
    _same_except(p, c, {"transform"})


CHECKS = {
    "perturb_hparam": check_perturb_hparam,
    "add_term": check_add_term,
    "remove_term": check_remove_term,
    "swap_term_kind": check_swap_term_kind,
    "toggle_bias_correction": check_toggle_bias_correction,
    "toggle_normalize": check_toggle_normalize,
    "change_normalization": check_change_normalization,
    "change_schedule": check_change_schedule,
    "change_weight_decay": check_change_weight_decay,
    "toggle_clip": check_toggle_clip,
    "change_transform": check_change_transform,
    "split_roles": check_split_roles,
    "merge_roles": check_merge_roles,
    "swap_roles": check_swap_roles,
}


def check(name: str, p: Genome, c: Genome, change: str) -> None:
    """CHECKS[name], on the rules of the role it changed when ``p`` is split by roles: the
    matrices' (the change reads "matrix: ...") or the others'; the other role's are kept."""
    if p.matrix is None or OPERATORS[name].on_roles:
        CHECKS[name](p, c, change)
    elif change.startswith("matrix: "):
        assert _others(c) == _others(p)
        CHECKS[name](p.matrix, c.matrix, change.removeprefix("matrix: "))
    else:
        assert c.matrix == p.matrix
        CHECKS[name](_others(p), _others(c), change)


def test_every_operator_is_checked_and_has_a_rate() -> None:
    assert set(CHECKS) == set(OPERATORS) == set(DEFAULT_MUTATION_RATES)
    assert max(DEFAULT_MUTATION_RATES, key=DEFAULT_MUTATION_RATES.get) == "perturb_hparam"


@pytest.mark.parametrize("name", list(OPERATORS))
def test_operator_on_seed_genomes(name: str) -> None:
    applied = 0
    for seed, g in enumerate(GENOMES.values()):
        if name not in applicable_operators(g):
            continue
        child, change = OPERATORS[name](g, rng(seed))
        assert_valid(child)
        check(name, g, child, change)
        applied += 1
    assert applied >= 1


@pytest.mark.parametrize("name", list(OPERATORS))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=seeds)
@example(seed=831)  # a split genome on which toggle_clip fell back to a perturbation
def test_operator_on_random_genomes(name: str, seed: int) -> None:
    g = random_genome(rng(seed)) if seed % 3 else random_split_genome(seed)
    child, change = OPERATORS[name](g, rng(seed + 1))
    assert_valid(child)
    assert change
    if name in applicable_operators(g):
        check(name, g, child, change)
    else:  # falls back to a plain hyperparameter perturbation
        check("perturb_hparam", g, child, change)


@SETTINGS
@given(seeds, genome_choice)
def test_every_role_an_operator_claims_gives_valid_children(seed: int, which: int) -> None:
    """``applies`` is exact: on each role an operator claims, a few tries give a valid child
    (an operator that cannot would silently fall back to a perturbation)."""
    g = any_genome(seed, which)
    for name, op in OPERATORS.items():
        for role in op.roles(g):
            errors = []
            for k in range(8):
                try:
                    out = op.apply_to_role(g, rng(seed + k), [role])
                    assert out is not None, (name, role)
                    Genome.from_dict(out[0].to_dict())
                    break
                except GenomeError as e:
                    errors.append(str(e))
            else:
                raise AssertionError(f"{name} on role {role}: {errors[0]}")


def test_toggle_clip_on_split_genomes_changes_the_top_level_clip() -> None:
    """Regression: on a genome split by roles, toggle_clip drew the matrices' rules as often as
    the others', and a clip in [matrix] is invalid (global-norm clipping acts on the whole
    group): when every retry drew the matrices, it fell back to a perturbation."""
    muon = GENOMES["muon"]
    clipped = Genome.from_dict(muon.to_dict() | {"clip": {"kind": "global_norm", "max_norm": 1.0}})
    assert muon.matrix is not None and muon.clip is None and clipped.clip is not None
    for g in (muon, clipped):
        assert "toggle_clip" in applicable_operators(g)
        assert OPERATORS["toggle_clip"].roles(g) == [False, True]
        for seed in [45, 278, 698, 832, *range(40)]:  # the first four: only matrices drawn
            child, change = OPERATORS["toggle_clip"](g, rng(seed))
            assert_valid(child)
            check("toggle_clip", g, child, change)
            assert child.matrix == g.matrix and (child.clip is None) == (g.clip is not None)
            assert not change.startswith("matrix: ")


def test_inapplicable_operator_falls_back_to_perturbation() -> None:
    g = GENOMES["sgd-momentum"]  # one term, no second moment, no bias correction
    for name in ("remove_term", "change_normalization", "toggle_bias_correction"):
        assert name not in applicable_operators(g)
        child, change = OPERATORS[name](g, rng(0))
        assert_valid(child)
        check_perturb_hparam(g, child, change)


def test_add_term_respects_max_terms() -> None:
    g = GENOMES["adan"]
    r = rng(3)
    while len(g.terms) < MAX_TERMS:
        g, _ = OPERATORS["add_term"](g, r)
    assert "add_term" not in applicable_operators(g)
    for seed in range(20):
        child, _ = mutate(g, rng(seed))
        assert len(child.terms) <= MAX_TERMS


def test_remove_term_drops_unused_state() -> None:
    adan = GENOMES["adan"]  # terms: momentum, grad_diff (both normalized)
    for seed in range(20):
        child, change = OPERATORS["remove_term"](adan, rng(seed))
        if child.terms[0].kind == "momentum":
            assert child.grad_diff is None and "−grad_diff" in change
            return
    raise AssertionError("never removed the grad_diff term")


def test_toggle_bias_correction_examples() -> None:
    child, change = OPERATORS["toggle_bias_correction"](GENOMES["lion"], rng(0))
    assert child.momentum["bias_correction"] is True
    assert change == "momentum.bias_correction false→true"
    child, change = OPERATORS["toggle_bias_correction"](GENOMES["rmsprop"], rng(0))
    assert child.second_moment.kind == "adam" and change == "second_moment rmsprop→adam"


def test_weight_decay_added_with_a_value_and_removed() -> None:
    for seed in range(10):
        child, change = OPERATORS["change_weight_decay"](GENOMES["adam"], rng(seed))
        assert child.weight_decay is not None and 0 < child.weight_decay["value"] <= 10
        child, change = OPERATORS["change_weight_decay"](GENOMES["adamw"], rng(seed))
        if child.weight_decay is None:
            assert change == "weight_decay decoupled→none"
        else:
            assert child.weight_decay["value"] == 1e-2


# ----------------------------------------------------------------------------------------------
# Determinism, rates, hash change rate, global RNG.
@SETTINGS
@given(seeds, genome_choice, genome_choice)
def test_determinism(seed: int, i: int, j: int) -> None:
    a, b = any_genome(seed, i), any_genome(seed + 1, j)
    assert mutate(a, rng(seed)) == mutate(a, rng(seed))
    assert crossover(a, b, rng(seed)) == crossover(a, b, rng(seed))
    for op in OPERATORS.values():
        c1, m1 = op(a, rng(seed))
        c2, m2 = op(a, rng(seed))
        assert c1 == c2 and c1.to_dict() == c2.to_dict() and m1 == m2


def test_mutation_rarely_keeps_the_hash() -> None:
    r = rng(12345)
    differ = 0
    for k in range(200):
        parent = GENOMES[SEEDS[k % len(SEEDS)]] if k % 2 else random_genome(r)
        child, _ = mutate(parent, r)
        differ += child.hash != parent.hash
    assert differ >= 180, differ


def test_rates_select_operators() -> None:
    g = GENOMES["adam"]
    for name in OPERATORS:
        if name not in applicable_operators(g):
            continue
        m = mutate_op(g, rng(1), only(name))
        assert m.operator == name
        CHECKS[name](g, m.child, m.change)
    counts: dict[str, int] = {}
    r = rng(2)
    for _ in range(300):
        op = mutate_op(g, r).operator
        counts[op] = counts.get(op, 0) + 1
    assert max(counts, key=counts.get) == "perturb_hparam"
    assert len(counts) >= 8


def test_bad_rates_rejected() -> None:
    with pytest.raises(ValueError, match="unknown mutation operator.*teleport.*choose among: "
                                         "perturb_hparam, add_term"):
        mutate(GENOMES["adam"], rng(0), {"teleport": 1.0})
    with pytest.raises(ValueError, match="teleport"):
        mutate_op(GENOMES["adam"], rng(0), {"teleport": 1.0, "add_term": 1.0})
    with pytest.raises(ValueError, match="≥ 0"):
        mutate(GENOMES["adam"], rng(0), {"add_term": -1.0})
    with pytest.raises(ValueError, match="every mutation rate is 0"):
        mutate_op(GENOMES["adam"], rng(0), {n: 0 for n in OPERATORS})
    with pytest.raises(ValueError, match="max_terms"):
        mutate_op(GENOMES["adam"], rng(0), max_terms=MAX_TERMS + 1)


def test_rates_merge_with_the_defaults() -> None:
    assert resolve_rates(None) == resolve_rates({}) == dict(DEFAULT_MUTATION_RATES)
    merged = resolve_rates({"add_term": 0, "toggle_clip": 2.5})
    assert merged == dict(DEFAULT_MUTATION_RATES) | {"add_term": 0.0, "toggle_clip": 2.5}
    g = GENOMES["adam"]
    assert mutate_op(g, rng(5), {}) == mutate_op(g, rng(5), None) == mutate_op(g, rng(5))
    r = rng(6)
    ops = {mutate_op(g, r, {"add_term": 0}).operator for _ in range(200)}
    assert "add_term" not in ops and len(ops & set(STRUCTURAL_OPERATORS)) >= 5


def test_only_inapplicable_rates_fall_back_to_perturbation() -> None:
    g = GENOMES["sgd-momentum"]
    for rates in (only("remove_term"), only("remove_term", "change_normalization")):
        m = mutate_op(g, rng(0), rates)
        assert m.operator == "perturb_hparam"
        assert_valid(m.child)
        check_perturb_hparam(g, m.child, m.change)


def test_no_global_rng_is_used() -> None:
    random.seed(7)
    np.random.seed(7)  # noqa: NPY002 - checking the global state stays untouched
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    r = rng(0)
    for name in SEEDS:
        g = GENOMES[name]
        mutate(g, r)
        crossover(g, random_genome(r), r)
        for op in OPERATORS.values():
            op(g, r)
    assert random.getstate() == py_state
    new_np = np.random.get_state()  # noqa: NPY002
    assert new_np[0] == np_state[0] and np.array_equal(new_np[1], np_state[1])
    assert new_np[2:] == np_state[2:]


# ----------------------------------------------------------------------------------------------
# Registry, structural share of shipped campaigns, config validation, max_terms.
def test_registry_is_consistent() -> None:
    assert list(DEFAULT_MUTATION_RATES) == list(OPERATORS)
    for name, op in OPERATORS.items():
        assert isinstance(op, MutationOperator) and op.name == name
        assert op.doc.strip() and op.doc == inspect.cleandoc(op.apply.__doc__)
        assert DEFAULT_MUTATION_RATES[name] == op.default_rate > 0
    assert "perturb_hparam" not in STRUCTURAL_OPERATORS
    assert set(STRUCTURAL_OPERATORS) == set(OPERATORS) - {"perturb_hparam"}
    assert all(OPERATORS[n].structural for n in STRUCTURAL_OPERATORS)
    with pytest.raises(TypeError):
        DEFAULT_MUTATION_RATES["add_term"] = 1.0  # type: ignore[index]
    structural = sum(DEFAULT_MUTATION_RATES[n] for n in STRUCTURAL_OPERATORS)
    assert structural >= 0.5 * sum(DEFAULT_MUTATION_RATES.values())


def _strategy_like_the_runner(cfg: CampaignConfig) -> Strategy:
    """The strategy the runner builds from ``cfg`` (its ``strategy`` group is the strategy's
    own config)."""
    assert isinstance(cfg.strategy, StrategyConfig)
    return Strategy(cfg.strategy, seeds=[seed_genome(s) for s in cfg.seeds], rng_seed=cfg.seed)


def _assert_structure_is_searched(cfg: CampaignConfig, draws: int = 150) -> None:
    strategy = _strategy_like_the_runner(cfg)
    scfg = strategy.config
    counts: dict[str, int] = {}
    for k in range(draws):
        parent = strategy.seeds[k % len(strategy.seeds)]
        m = mutate_op(parent, strategy.rng, scfg.mutation_rates, scfg.max_terms)
        counts[m.operator] = counts.get(m.operator, 0) + 1
    structural = {n: c for n, c in counts.items() if n in STRUCTURAL_OPERATORS}
    assert sum(structural.values()) >= 0.3 * draws, counts
    assert len(structural) >= 5, counts


def test_default_campaign_mutates_structure() -> None:
    cfg = CampaignConfig(name="t")
    assert cfg.seeds == ("adam", "adan")
    _assert_structure_is_searched(cfg)


def test_quickstart_campaign_mutates_structure() -> None:
    _assert_structure_is_searched(load_config(ROOT / "experiments" / "quickstart.toml"))


def test_config_refuses_unknown_operators_and_all_zero_rates() -> None:
    def parse(rates: dict) -> CampaignConfig:
        return parse_config({"campaign": {"name": "t"}, "variation": {"mutation_rates": rates}})

    with pytest.raises(ConfigError, match=r"variation\.mutation_rates\.teleport: unknown "
                                          r"mutation operator \(allowed: perturb_hparam, "):
        parse({"teleport": 1.0})
    with pytest.raises(ConfigError, match=r"variation\.mutation_rates: every operator's rate is 0"):
        parse({n: 0 for n in OPERATORS})
    with pytest.raises(ConfigError, match=r"variation\.mutation_rates\.add_term"):
        parse({"add_term": float("inf")})
    cfg = parse({"perturb_hparam": 0, "add_term": 0.5})
    assert resolve_rates(cfg.strategy.mutation_rates)["perturb_hparam"] == 0


def test_max_terms_bounds_mutation_and_crossover() -> None:
    g = GENOMES["adan"]
    assert len(g.terms) == 2
    partners = [GENOMES[n] for n in SEEDS] + [random_genome(rng(s)) for s in range(10)]
    r = rng(11)
    chain = g
    for k in range(300):
        child, _ = mutate(g, r, {"add_term": 1.0}, max_terms=2)
        assert len(child.terms) <= 2
        chain, _ = mutate(chain, r, only("add_term", "swap_term_kind", "perturb_hparam"),
                          max_terms=2)
        assert len(chain.terms) <= 2
        child, _ = crossover(g, partners[k % len(partners)], r, max_terms=2)
        assert len(child.terms) <= 2
        assert_valid(child)
    one = GENOMES["sgd-momentum"]
    assert len(one.terms) == 1
    assert "add_term" in applicable_operators(one)
    assert "add_term" not in applicable_operators(one, max_terms=1)
    for seed in range(30):
        m = mutate_op(one, rng(seed), only("add_term", "change_schedule"), max_terms=1)
        assert m.operator != "add_term" and len(m.child.terms) == 1
        child, change = OPERATORS["add_term"](one, rng(seed), max_terms=1)
        check_perturb_hparam(one, child, change)  # falls back to a perturbation
        child, _ = crossover(g, random_genome(rng(seed)), rng(seed), max_terms=1)
        assert len(child.terms) == 1


def test_perturb_leaves_a_lone_terms_weight_alone() -> None:
    """Only lr·w acts: perturbing a lone term's weight would only move lr a second way."""
    rng = np.random.default_rng(0)
    adam = seed_genome("adam")
    changes = [OPERATORS["perturb_hparam"](adam, rng)[1] for _ in range(200)]
    assert not any(c.startswith("terms[0].weight") for c in changes)
    assert any(c.startswith("lr ") for c in changes)
