"""Variation operators: mutation and crossover of genomes, through the primitive registry.

Every operator takes a :class:`~evoopt.genome.Genome` and an explicit ``numpy.random.Generator``
and returns ``(child, change)``: a new, valid genome and a short human-readable description of
what changed, e.g. ``"momentum.beta 0.9→0.931"`` or ``"+term sign_grad (w=0.42)"``. Nothing here
touches a global RNG (neither :mod:`random` nor ``np.random.*`` module functions), so the same
generator state always gives the same child and change.

Children are valid by construction: kinds and hyperparameters come from the registry
(:mod:`evoopt.genome.primitives`) through :mod:`evoopt.genome.sampling`; after a structural change
:func:`~evoopt.genome.sampling.complete` adds the state tables the terms need and drops the ones
they no longer use, and every child is round-tripped through :meth:`Genome.from_dict`, which
checks each hyperparameter against its valid bounds. An operator that does not apply to a genome
(removing the only term, ...) or keeps failing falls back to a plain hyperparameter perturbation.

A genome whose ``[matrix]`` table gives the matrices other rules (parameter roles) is varied
one role's rules at a time: an operator changes the matrices' rules or the others' (the change
then reads ``matrix: ...``), except the operators on the split itself (``split_roles``,
``merge_roles``, ``swap_roles``) and those on the group-wide blocks (``toggle_clip``), which both
roles share at the top level. Crossover takes the split, or its absence, from either parent.

Each mutation operator is registered once, with :func:`mutation_operator`, on its implementation:
its name, default rate, applicability predicate, whether it changes the genome's structure, and
its docstring as documentation. :data:`OPERATORS` is that registry; :data:`DEFAULT_MUTATION_RATES`
and :data:`STRUCTURAL_OPERATORS` are derived from it. A campaign's rates are merged with the
defaults by :func:`resolve_rates`, so an empty table means the defaults, not "perturb only".

DEAP's variation helpers (``cxUniform``, ``mutPolynomialBounded``) draw from the global
:mod:`random` module, so they are deliberately not used here; the equivalent per-slot coin flips
and Gaussian steps on each hyperparameter's search scale use the explicit generator instead.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np

from evoopt.genome.genome import STATE_SLOTS, Block, Genome
from evoopt.genome.primitives import BLOCK_SLOTS, MAX_TERMS, REGISTRY, GenomeError
from evoopt.genome.sampling import complete, perturb_hparam, random_block

__all__ = [
    "CROSSOVER_SLOTS",
    "DEFAULT_MUTATION_RATES",
    "OPERATORS",
    "STRUCTURAL_OPERATORS",
    "WEIGHT_DECAY_MODES",
    "Mutation",
    "MutationOperator",
    "applicable_operators",
    "crossover",
    "mutate",
    "mutate_op",
    "mutation_operator",
    "resolve_rates",
]


#: Slots a crossover picks from one parent or the other, besides ``lr`` and the terms.
CROSSOVER_SLOTS = BLOCK_SLOTS
#: Weight-decay modes: ``none`` (no table) or a ``weight_decay`` kind of the registry.
WEIGHT_DECAY_MODES = ("none", *sorted(REGISTRY["weight_decay"]))
#: Transform modes: ``none`` (the terms are applied as they are) or a ``transform`` kind.
TRANSFORM_MODES = ("none", *sorted(REGISTRY["transform"]))

_TRIES = 8  # attempts of a structural operator before falling back to a perturbation
_MUTATE_TRIES = 10  # draws of mutate() looking for a child whose canonical hash differs

_Parts = dict  # keyword arguments of Genome (without name and description)


# ----------------------------------------------------------------------------------------------
# Helpers.
def _parts(g: Genome) -> _Parts:
    """The genome's fields as keyword arguments; name and description are not inherited."""
    return {"lr": g.lr, "terms": g.terms, "matrix": g.matrix,
            **{slot: getattr(g, slot) for slot in BLOCK_SLOTS}}


def _group_wide(g: Genome) -> dict[str, Block]:
    """The blocks that act on the whole group (global-norm clipping): they stay at the top level
    whichever rules the matrices follow."""
    return {slot: getattr(g, slot) for slot in BLOCK_SLOTS
            if getattr(g, slot) is not None and getattr(g, slot).primitive.group_wide}


def _others(g: Genome) -> Genome:
    """The rules of the parameters that are not matrices (all of them when there is no split)."""
    return Genome(**(_parts(g) | {"matrix": None}))


def _for_matrices(rules: Genome) -> Genome:
    """``rules`` as a [matrix] table: without the group-wide blocks."""
    return Genome(**(_parts(rules) | dict.fromkeys(_group_wide(rules))))


def _split(others: Genome, matrix: Genome | None, top: Genome) -> Genome:
    """A genome with ``others``' rules (and ``top``'s group-wide blocks) and ``matrix``'s."""
    return Genome(**(_parts(others) | dict.fromkeys(_group_wide(others)) | _group_wide(top)
                     | {"matrix": matrix}))


def _fmt(v: float | bool | None) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return str(v).lower()
    return f"{v:.4g}"


def _arrow(old: float | bool, new: float | bool) -> str:
    a, b = _fmt(old), _fmt(new)
    if a == b and old != new:  # tiny step: show enough digits to see it
        a, b = f"{old:.8g}", f"{new:.8g}"
    return f"{a}→{b}"


def _state_changes(parent: Genome, child: Genome) -> str:
    """`` (+momentum ema, −second_moment)`` for state tables complete() added or dropped."""
    notes = []
    for slot in STATE_SLOTS:
        old, new = getattr(parent, slot), getattr(child, slot)
        if old is None and new is not None:
            notes.append(f"+{slot} {new.kind}")
        elif old is not None and new is None:
            notes.append(f"−{slot}")
    return f" ({', '.join(notes)})" if notes else ""


def _term_label(t: Block) -> str:
    extra = [f"w={_fmt(t['weight'])}"]
    extra += [f"{h.name}={_fmt(t[h.name])}" for h in t.primitive.hparams
              if not h.is_bool and h.name != "weight"]
    if t.get("normalize"):
        extra.append("normalized")
    return f"{t.kind} ({', '.join(extra)})"


def _rekind(block: Block, kind: str, rng: np.random.Generator) -> Block:
    """``block`` as another kind of its slot: shared hyperparameters keep their values when they
    are valid for the new kind, the others are sampled from their search ranges."""
    fresh = random_block(block.slot, rng, kind)
    values = dict(fresh.values)
    for h in fresh.primitive.hparams:
        old = block.get(h.name)
        if old is None:
            continue
        with contextlib.suppress(GenomeError):  # invalid for the new kind: keep the sample
            values[h.name] = h.check(old, h.name)
    return Block(block.slot, kind, tuple(sorted(values.items())))


def _other_kind(slot: str, current: str | None, rng: np.random.Generator,
                among: tuple[str, ...] | None = None) -> str:
    kinds = [k for k in (among or sorted(REGISTRY[slot])) if k != current]
    return kinds[int(rng.integers(len(kinds)))]


def _valid(child: Genome) -> Genome:
    """Round trip through from_dict: checks every hyperparameter against its bounds."""
    Genome.from_dict(child.to_dict())
    return child


def _safe_hash(g: Genome) -> str | None:
    try:
        return g.hash
    except GenomeError:  # e.g. every term weight 0: no canonical form
        return None


# ----------------------------------------------------------------------------------------------
# Registry. One registration per operator: name, implementation, applicability, default rate,
# documentation (the function's docstring) and whether it changes the genome's structure.
Impl = Callable[[Genome, np.random.Generator], tuple[Genome, str] | None]
Applies = Callable[[Genome, int], bool]  # (genome, max_terms) -> does the operator apply?


def _always(genome: Genome, max_terms: int) -> bool:
    return True


@dataclass(frozen=True)
class MutationOperator:
    """A registered mutation operator; calling it gives ``(child, change)``.

    ``apply(genome, rng)`` is the raw implementation: it assumes ``applies(genome, max_terms)``
    and may return None or raise :class:`GenomeError`. Calling the operator
    (``op(genome, rng, max_terms=...)``) wraps it: bounded retries, validation of the child, and
    a fallback to a hyperparameter perturbation when the operator does not apply.
    """

    name: str
    apply: Impl
    applies: Applies
    default_rate: float
    doc: str
    structural: bool = True
    on_roles: bool = False  # changes the role split itself, not one role's rules
    group_wide: bool = False  # changes only group-wide blocks, shared by both roles (top level)

    def __call__(self, genome: Genome, rng: np.random.Generator,
                 max_terms: int = MAX_TERMS) -> tuple[Genome, str]:
        return _run(self, genome, rng, max_terms)

    def roles(self, genome: Genome, max_terms: int = MAX_TERMS) -> list[bool]:
        """The rules it applies to: ``[False]`` for a genome without a split (and for the
        operators on the split), else among ``False`` (the others') and ``True`` (the
        matrices'); empty when it applies to none. A group-wide operator applies to both roles
        or to none, as the top-level rules say: the blocks it changes are both roles'."""
        if self.on_roles or genome.matrix is None:
            return [False] if self.applies(genome, max_terms) else []
        if self.group_wide:
            return [False, True] if self.applies(_others(genome), max_terms) else []
        return [in_matrix for in_matrix, rules in ((False, _others(genome)),
                                                   (True, genome.matrix))
                if self.applies(rules, max_terms)]

    def apply_to_role(self, genome: Genome, rng: np.random.Generator,
                      roles: list[bool]) -> tuple[Genome, str] | None:
        """:attr:`apply` to one of the ``roles``' rules (drawn when there are two). A group-wide
        operator changes the top-level rules whichever role is drawn: a [matrix] table cannot
        hold a group-wide block (the role is still drawn, so the generator's stream is that of
        any other operator on a split genome)."""
        if self.on_roles or genome.matrix is None:
            return self.apply(genome, rng)
        in_matrix = roles[int(rng.integers(len(roles)))] and not self.group_wide
        out = self.apply(genome.matrix if in_matrix else _others(genome), rng)
        if out is None:
            return None
        rules, change = out
        if in_matrix:
            return replace(_others(genome), matrix=rules, name="", description=""), \
                f"matrix: {change}"
        return _split(rules, genome.matrix, rules), change


#: Every mutation operator by name (registration order): ``OPERATORS[name](genome, rng)``.
OPERATORS: dict[str, MutationOperator] = {}


def mutation_operator(name: str, *, default_rate: float, structural: bool = True,
                      applies: Applies = _always, on_roles: bool = False,
                      group_wide: bool = False) -> Callable[[Impl], Impl]:
    """Register the decorated function as mutation operator ``name``; its docstring is the doc.

    ``group_wide``: the operator changes only blocks that act on the whole group (global-norm
    clipping); on a genome split by roles it changes them at the top level, never in the
    [matrix] table (where they are invalid).
    """
    if not (math.isfinite(default_rate) and default_rate >= 0):
        raise ValueError(f"{name}: default_rate must be a finite number ≥ 0, got {default_rate!r}")

    def register(impl: Impl) -> Impl:
        if name in OPERATORS:
            raise ValueError(f"mutation operator {name!r} is registered twice")
        if not impl.__doc__:
            raise ValueError(f"mutation operator {name!r} needs a docstring")
        OPERATORS[name] = MutationOperator(name, impl, applies, float(default_rate),
                                           inspect.cleandoc(impl.__doc__), structural, on_roles,
                                           group_wide)
        return impl

    return register


# ----------------------------------------------------------------------------------------------
# Operators. Each ``_op`` may assume its ``applies`` predicate holds (and may still return None).
_PERTURB_LOG_SIGMA = (math.log(0.02), math.log(0.3))


@mutation_operator("perturb_hparam", default_rate=0.35, structural=False)
def _perturb(g: Genome, rng: np.random.Generator) -> tuple[Genome, str]:
    """Perturb one float hyperparameter, chosen uniformly among :meth:`Genome.tunable` (lr
    included; the weight that only rescales lr is not), by a Gaussian step on its declared
    scale, bounded by its search and valid ranges.
    The step's width is itself drawn log-uniformly (2%–30% of the search range), so the same
    operator both explores and refines a promising genome."""
    candidates = g.tunable()
    path, h, old = candidates[int(rng.integers(len(candidates)))]
    sigma = float(np.exp(rng.uniform(*_PERTURB_LOG_SIGMA)))
    new = perturb_hparam(h, old, rng, sigma)
    return g.with_values({path: new}), f"{path} {_arrow(old, new)}"


@mutation_operator("add_term", default_rate=0.10,
                   applies=lambda g, max_terms: len(g.terms) < max_terms)
def _add_term(g: Genome, rng: np.random.Generator) -> tuple[Genome, str]:
    """Append a random term (up to max_terms); complete() adds the state it needs."""
    term = random_block("terms", rng)
    parts = _parts(g)
    parts["terms"] = (*g.terms, term)
    child = complete(parts, rng)
    return child, f"+term {_term_label(term)}{_state_changes(g, child)}"


@mutation_operator("remove_term", default_rate=0.06,
                   applies=lambda g, max_terms: len(g.terms) >= 2)
def _remove_term(g: Genome, rng: np.random.Generator) -> tuple[Genome, str]:
    """Remove a random term (keeping at least one); unused state is dropped."""
    i = int(rng.integers(len(g.terms)))
    parts = _parts(g)
    parts["terms"] = g.terms[:i] + g.terms[i + 1:]
    child = complete(parts, rng)
    return child, f"−terms[{i}] {g.terms[i].kind}{_state_changes(g, child)}"


@mutation_operator("swap_term_kind", default_rate=0.08)
def _swap_term_kind(g: Genome, rng: np.random.Generator) -> tuple[Genome, str]:
    """Change one term's kind, keeping its weight (and normalize when the new kind has it);
    state is completed."""
    i = int(rng.integers(len(g.terms)))
    old = g.terms[i]
    new = _rekind(old, _other_kind("terms", old.kind, rng), rng)
    parts = _parts(g)
    parts["terms"] = (*g.terms[:i], new, *g.terms[i + 1:])
    child = complete(parts, rng)
    note = ", normalized" if new.get("normalize") and not old.get("normalize") else ""
    return child, f"terms[{i}] {old.kind}→{new.kind}{note}{_state_changes(g, child)}"


def _bias_correction_targets(g: Genome) -> list[str]:
    blocks = {slot: getattr(g, slot) for slot in ("momentum", "grad_diff")}
    targets = [slot for slot, block in blocks.items()
               if block is not None and "bias_correction" in dict(block.values)]
    if g.second_moment is not None and g.second_moment.primitive.bias_twin:
        targets.append("second_moment")
    return targets


@mutation_operator("toggle_bias_correction", default_rate=0.05,
                   applies=lambda g, max_terms: bool(_bias_correction_targets(g)))
def _toggle_bias_correction(g: Genome, rng: np.random.Generator) -> tuple[Genome, str]:
    """Flip bias_correction of the momentum or grad_diff EMA, or swap the second moment for its
    ``bias_twin`` (adam↔rmsprop)."""
    targets = _bias_correction_targets(g)
    slot = targets[int(rng.integers(len(targets)))]
    block: Block = getattr(g, slot)
    parts = _parts(g)
    if slot == "second_moment":
        kind = block.primitive.bias_twin
        parts[slot] = _rekind(block, kind, rng)
        return Genome(**parts), f"second_moment {block.kind}→{kind}"
    old = bool(block["bias_correction"])
    parts[slot] = block.replace(bias_correction=not old)
    return Genome(**parts), f"{slot}.bias_correction {_arrow(old, not old)}"


def _normalizable(g: Genome) -> list[int]:
    return [i for i, t in enumerate(g.terms) if "normalize" in dict(t.values)]


@mutation_operator("toggle_normalize", default_rate=0.05,
                   applies=lambda g, max_terms: bool(_normalizable(g)))
def _toggle_normalize(g: Genome, rng: np.random.Generator) -> tuple[Genome, str]:
    """Flip one term's normalize flag (adding or dropping the second moment as needed)."""
    indices = _normalizable(g)
    i = indices[int(rng.integers(len(indices)))]
    term = g.terms[i]
    old = bool(term["normalize"])
    parts = _parts(g)
    parts["terms"] = (*g.terms[:i], term.replace(normalize=not old), *g.terms[i + 1:])
    child = complete(parts, rng)
    return child, f"terms[{i}].normalize {_arrow(old, not old)}{_state_changes(g, child)}"


@mutation_operator("change_normalization", default_rate=0.05,
                   applies=lambda g, max_terms: g.second_moment is not None)
def _change_normalization(g: Genome, rng: np.random.Generator) -> tuple[Genome, str]:
    """Change the second moment's kind, keeping the hyperparameters both share (beta, eps)."""
    block = g.second_moment
    assert block is not None
    kind = _other_kind("second_moment", block.kind, rng)
    parts = _parts(g)
    parts["second_moment"] = _rekind(block, kind, rng)
    return Genome(**parts), f"second_moment {block.kind}→{kind}"


@mutation_operator("change_schedule", default_rate=0.10)
def _change_schedule(g: Genome, rng: np.random.Generator) -> tuple[Genome, str]:
    """Change the lr schedule's kind, keeping the hyperparameters both share."""
    old = g.schedule
    kind = _other_kind("schedule", old.kind, rng)
    parts = _parts(g)
    parts["schedule"] = new = _rekind(old, kind, rng)
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in new.values)
    return Genome(**parts), f"schedule {old.kind}→{kind}" + (f" ({shown})" if shown else "")


@mutation_operator("change_weight_decay", default_rate=0.10)
def _change_weight_decay(g: Genome, rng: np.random.Generator) -> tuple[Genome, str]:
    """Change the weight-decay mode among none/coupled/decoupled/proximal, keeping the value
    (sampling one when decay is added)."""
    old = g.weight_decay
    current = "none" if old is None else old.kind
    mode = _other_kind("weight_decay", current, rng, among=WEIGHT_DECAY_MODES)
    parts = _parts(g)
    if mode == "none":
        parts["weight_decay"] = None
        return Genome(**parts), f"weight_decay {current}→none"
    if old is None or old["value"] == 0.0:  # a zero decay is no decay: sample a value
        new = random_block("weight_decay", rng, mode)
    else:
        new = _rekind(old, mode, rng)
    parts["weight_decay"] = new
    return Genome(**parts), f"weight_decay {current}→{mode} ({_fmt(new['value'])})"


@mutation_operator("change_transform", default_rate=0.04)
def _change_transform(g: Genome, rng: np.random.Generator) -> tuple[Genome, str]:
    """Add a transform of the whole update (a trust ratio), change its kind, or remove it."""
    old = g.transform
    current = "none" if old is None else old.kind
    mode = _other_kind("transform", current, rng, among=TRANSFORM_MODES)
    parts = _parts(g)
    parts["transform"] = None if mode == "none" else (
        random_block("transform", rng, mode) if old is None else _rekind(old, mode, rng))
    return Genome(**parts), f"transform {current}→{mode}"


@mutation_operator("toggle_clip", default_rate=0.06, group_wide=True)
def _toggle_clip(g: Genome, rng: np.random.Generator) -> tuple[Genome, str]:
    """Add global-norm gradient clipping (sampled max_norm) or remove it; on a genome split by
    roles, at the top level (the clipping of the whole group, matrices included)."""
    parts = _parts(g)
    if g.clip is not None:
        parts["clip"] = None
        return Genome(**parts), f"−clip ({g.clip.kind}, max_norm={_fmt(g.clip['max_norm'])})"
    parts["clip"] = new = random_block("clip", rng)
    return Genome(**parts), f"+clip ({new.kind}, max_norm={_fmt(new['max_norm'])})"


@mutation_operator("split_roles", default_rate=0.03, on_roles=True,
                   applies=lambda g, max_terms: g.matrix is None)
def _split_roles(g: Genome, rng: np.random.Generator) -> tuple[Genome, str]:
    """Give the matrices (parameters of 2 or more dims) rules of their own: the genome's
    rules (without group-wide clipping) changed by one mutation; the others keep the genome's."""
    m = mutate_op(_for_matrices(g), rng, {n: 0.0 for n, op in OPERATORS.items() if op.on_roles})
    matrix = _for_matrices(m.child)
    return replace(_others(g), matrix=matrix, name="", description=""), \
        f"+matrix rules: {m.change}"


@mutation_operator("merge_roles", default_rate=0.02, on_roles=True,
                   applies=lambda g, max_terms: g.matrix is not None)
def _merge_roles(g: Genome, rng: np.random.Generator) -> tuple[Genome, str]:
    """Drop the split: every parameter follows the others' rules or the matrices' (drawn)."""
    assert g.matrix is not None
    if rng.random() < 0.5:
        return _others(g), "−matrix rules (the others' rules for all)"
    return _split(g.matrix, None, g), "−matrix rules (the matrices' rules for all)"


@mutation_operator("swap_roles", default_rate=0.01, on_roles=True,
                   applies=lambda g, max_terms: g.matrix is not None)
def _swap_roles(g: Genome, rng: np.random.Generator) -> tuple[Genome, str]:
    """Exchange the matrices' rules and the others' (group-wide clipping stays as it is)."""
    assert g.matrix is not None
    return _split(g.matrix, _for_matrices(_others(g)), g), "matrix rules ⇄ the others'"


#: Default relative rates of the operators, derived from their registrations (read-only).
DEFAULT_MUTATION_RATES: Mapping[str, float] = MappingProxyType(
    {name: op.default_rate for name, op in OPERATORS.items()})
#: Names of the operators that change a genome's structure (all but ``perturb_hparam``).
STRUCTURAL_OPERATORS: tuple[str, ...] = tuple(n for n, op in OPERATORS.items() if op.structural)


def _check_max_terms(max_terms: int) -> None:
    if isinstance(max_terms, bool) or not isinstance(max_terms, int) or not (
            1 <= max_terms <= MAX_TERMS):
        raise ValueError(f"max_terms must be an integer in [1, {MAX_TERMS}], got {max_terms!r}")


def _run(op: MutationOperator, g: Genome, rng: np.random.Generator,
         max_terms: int = MAX_TERMS) -> tuple[Genome, str]:
    """Apply ``op`` (bounded retries), falling back to a hyperparameter perturbation."""
    _check_max_terms(max_terms)
    roles = op.roles(g, max_terms)
    if roles:
        for _ in range(_TRIES):
            try:
                out = op.apply_to_role(g, rng, roles)
                if out is None:  # does not apply to this genome after all
                    break
                return _valid(out[0]), out[1]
            except GenomeError:
                continue
    perturb = OPERATORS["perturb_hparam"]
    for _ in range(_TRIES):
        try:
            child, change = perturb.apply_to_role(g, rng, perturb.roles(g, max_terms))  # type: ignore[misc]
            return _valid(child), change
        except GenomeError:
            continue
    raise GenomeError(f"{op.name}: no valid variation of genome {g.formula()}")


def applicable_operators(genome: Genome, max_terms: int = MAX_TERMS) -> list[str]:
    """Names of the operators that apply to ``genome`` (the others fall back to a perturbation)."""
    return [name for name, op in OPERATORS.items() if op.roles(genome, max_terms)]


def resolve_rates(config_rates: Mapping[str, float] | None = None) -> dict[str, float]:
    """The operators' rates: :data:`DEFAULT_MUTATION_RATES` updated by ``config_rates``.

    A config reweights an operator or switches it off with 0; ``None`` and ``{}`` both mean the
    defaults. Unknown operator names, negative or non-finite rates, and rates that are all zero
    raise :class:`ValueError`.
    """
    config_rates = dict(config_rates or {})
    unknown = sorted(set(config_rates) - set(OPERATORS))
    if unknown:
        raise ValueError(f"unknown mutation operator(s) {', '.join(unknown)} "
                         f"(choose among: {', '.join(OPERATORS)})")
    for name, rate in config_rates.items():
        if isinstance(rate, bool) or not (isinstance(rate, (int, float))
                                          and math.isfinite(rate) and rate >= 0):
            raise ValueError(f"mutation rate of {name} must be a finite number ≥ 0, got {rate!r}")
    rates = dict(DEFAULT_MUTATION_RATES) | {k: float(v) for k, v in config_rates.items()}
    if not any(rates.values()):
        raise ValueError("every mutation rate is 0: give at least one operator a positive rate")
    return rates


# ----------------------------------------------------------------------------------------------
# Mutation.
@dataclass(frozen=True)
class Mutation:
    """A mutation's result: the child, the operator that made it, and what changed."""

    child: Genome
    operator: str
    change: str


def mutate_op(genome: Genome, rng: np.random.Generator,
              rates: Mapping[str, float] | None = None,
              max_terms: int = MAX_TERMS) -> Mutation:
    """Like :func:`mutate`, also naming the operator that made the child."""
    rates = resolve_rates(rates)
    _check_max_terms(max_terms)
    parent_hash = _safe_hash(genome)
    names = [n for n in applicable_operators(genome, max_terms) if rates[n] > 0]
    weights = np.array([rates[n] for n in names])
    if not names:  # no operator with a positive rate applies: perturb a hyperparameter
        names, weights = ["perturb_hparam"], np.ones(1)
    weights = weights / weights.sum()
    first: Mutation | None = None
    for _ in range(_MUTATE_TRIES):
        name = names[int(rng.choice(len(names), p=weights))]
        child, change = OPERATORS[name](genome, rng, max_terms)
        result = Mutation(child, name, change)
        child_hash = _safe_hash(child)
        if child_hash is None:
            continue
        first = first or result
        if child_hash != parent_hash:
            return result
    if first is None:  # no child had a canonical form (all weights zero)
        child, change = _run(OPERATORS["perturb_hparam"], genome, rng, max_terms)
        first = Mutation(child, "perturb_hparam", change)
    return first


def mutate(genome: Genome, rng: np.random.Generator,
           rates: Mapping[str, float] | None = None,
           max_terms: int = MAX_TERMS) -> tuple[Genome, str]:
    """One mutation: an operator drawn by relative rates (:func:`resolve_rates`: the defaults,
    updated by ``rates``) among those that apply to ``genome`` with at most ``max_terms`` terms.

    Redraws (up to a few times) until the child's canonical hash differs from the parent's;
    returns ``(child, change)``.
    """
    m = mutate_op(genome, rng, rates, max_terms)
    return m.child, m.change


# ----------------------------------------------------------------------------------------------
# Crossover.
def crossover(a: Genome, b: Genome, rng: np.random.Generator,
              max_terms: int = MAX_TERMS) -> tuple[Genome, str]:
    """Uniform crossover of two genomes; returns ``(child, change)``.

    ``lr`` and each table (schedule, clip, weight_decay, momentum, grad_diff, second_moment) come
    from ``a`` or ``b`` with probability 0.5 each. The terms are a random subset (1..max_terms) of
    the union of both parents' terms, deduplicated by (kind, normalize). State tables the terms
    need come from the chosen parent, else from the other one; only when neither parent has one
    does :func:`complete` sample it. Tables the terms do not use are dropped. When a parent gives
    its matrices rules of their own (``[matrix]``), the child's matrices follow either parent's
    (with probability 0.5 each, so the split is kept, dropped or taken over whole).
    """
    _check_max_terms(max_terms)
    parents = (a, b)
    take = rng.random(1 + len(CROSSOVER_SLOTS)) < 0.5  # True: from parent 2
    parts: _Parts = {"lr": parents[int(take[0])].lr}
    from_b = ["lr"] if take[0] and a.lr != b.lr else []
    for flip, slot in zip(take[1:], CROSSOVER_SLOTS, strict=True):
        first, second = (b, a) if flip else (a, b)
        block = getattr(first, slot)
        if slot in STATE_SLOTS and block is None:  # prefer a parent's table to a random one
            block = getattr(second, slot)
            flip = not flip
        parts[slot] = block
        if flip and block != getattr(a, slot):
            from_b.append(slot)

    pool = [(p, i, t) for p, parent in enumerate(parents) for i, t in enumerate(parent.terms)]
    chosen: dict[tuple[str, bool], tuple[int, int, Block]] = {}
    for j in rng.permutation(len(pool)):
        p, i, t = pool[int(j)]
        chosen.setdefault((t.kind, bool(t.get("normalize", False))), (p, i, t))
    unique = list(chosen.values())  # in random order
    n = int(rng.integers(1, min(max_terms, len(unique)) + 1))
    picked = sorted(unique[:n], key=lambda x: (x[0], x[1]))
    parts["terms"] = tuple(t for _, _, t in picked)
    matrix_from = None  # the parent whose [matrix] rules (or their absence) the child takes
    if a.matrix is not None or b.matrix is not None:
        matrix_from = int(rng.random() < 0.5)
        parts["matrix"] = parents[matrix_from].matrix
    try:
        child = _valid(complete(parts, rng))
    except GenomeError:  # not expected: parents' blocks are valid; keep a valid child anyway
        return _run(OPERATORS["perturb_hparam"], a, rng, max_terms)

    terms_a = [f"terms[{i}]" for p, i, _ in picked if p == 0]
    terms_b = [f"terms[{i}]" for p, i, _ in picked if p == 1]
    items = [s if s == "lr" or getattr(child, s) is not None else f"no {s}" for s in from_b
             if s not in STATE_SLOTS or getattr(child, s) is not None] + terms_b
    if matrix_from is not None and a.matrix != b.matrix:
        items.append("matrix rules" if parts["matrix"] is not None else "no matrix rules")
        if not matrix_from:
            items.pop()
            terms_a.append("matrix rules" if parts["matrix"] is not None
                           else "no matrix rules")
    pieces = [f"{', '.join(items)} from parent 2" if items else "nothing from parent 2"]
    if terms_a:
        pieces.append(f"{', '.join(terms_a)} from parent 1")
    added = [f"+{s} {getattr(child, s).kind} (new)" for s in STATE_SLOTS
             if getattr(child, s) is not None and getattr(a, s) is None and getattr(b, s) is None]
    return child, "crossover: " + "; ".join(pieces + added)

