"""Ask/tell strategy on a synthetic fitness (no training): determinism, state, selection."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from evoopt.genome import seed_genome
from evoopt.strategy.operators import OPERATORS
from evoopt.strategy.strategy import Strategy, StrategyConfig

SEEDS = [seed_genome(n) for n in ("adam", "adan", "lion")]


def score(genome) -> tuple[float, float]:
    """Best at lr = 10**-2.5: a smooth synthetic landscape over one hyperparameter."""
    return (0.0, -abs(math.log10(genome.lr) + 2.5))


def run(strategy: Strategy, generations: int) -> list[list[tuple[str, str, tuple]]]:
    history = []
    for _ in range(generations):
        batch = strategy.ask()
        history.append([(c.uid, c.genome.hash, c.parents) for c in batch])
        strategy.tell([(c.uid, score(c.genome)) for c in batch])
    return history


@pytest.mark.parametrize("selection", ["tournament", "regularized"])
def test_same_seed_same_campaign_and_state_round_trip(selection: str) -> None:
    config = StrategyConfig(population=6, selection=selection, elitism=2 if selection ==
                            "tournament" else 0)
    straight = run(Strategy(config, SEEDS, rng_seed=3), 6)
    assert straight == run(Strategy(config, SEEDS, rng_seed=3), 6)
    assert straight != run(Strategy(config, SEEDS, rng_seed=4), 6)
    first = Strategy(config, SEEDS, rng_seed=3)
    head = run(first, 3)
    state = json.loads(json.dumps(first.get_state()))  # what the store keeps
    tail = run(Strategy.from_state(config, SEEDS, state), 3)
    assert head + tail == straight


def test_lineage_fields_and_seeds() -> None:
    strategy = Strategy(StrategyConfig(population=6), SEEDS, rng_seed=0)
    batch = strategy.ask()
    assert [c.operator for c in batch[:3]] == ["seed"] * 3 and len(batch) == 6
    assert all(c.parents and c.parents[0] in {s.uid for s in batch[:3]} for c in batch[3:])
    assert len({c.uid for c in batch}) == 6
    strategy.tell([(c.uid, score(c.genome)) for c in batch])
    children = strategy.ask()
    known = {m.uid for m in strategy.population}
    operators = set(OPERATORS) | {"crossover"} | {f"crossover+{op}" for op in OPERATORS}
    assert all(set(c.parents) <= known and c.operator in operators and c.change
               for c in children)


def test_new_structures_are_screened_at_several_lrs() -> None:
    """Lion's practice: a structure first proposed is also tried at each lr_screen multiple;
    a structure seen before is proposed once."""
    config = StrategyConfig(population=16, selection="regularized", elitism=0,
                            lr_screen=(1 / 3, 3.0))
    strategy = Strategy(config, SEEDS, rng_seed=5)
    seen_structures: set[str] = set()
    screened = 0
    for _ in range(4):
        batch = strategy.ask()
        by_structure: dict[str, list] = {}
        for c in batch:
            by_structure.setdefault(c.genome.structure, []).append(c)
        for structure, group in by_structure.items():
            if structure in seen_structures or any(c.operator == "seed" for c in group):
                assert not any(c.change.endswith(("lr ×0.333333", "lr ×3")) for c in group
                               if c.operator != "lr_screen")
                seen_structures.add(structure)
                continue
            lrs = sorted(c.genome.lr for c in group)
            if len(lrs) == 3:  # the child and its two screened siblings (room permitting)
                screened += 1
                assert lrs[0] == pytest.approx(lrs[1] / 3) and lrs[2] == pytest.approx(3 * lrs[1])
                assert len({c.parents for c in group}) == 1
            seen_structures.add(structure)
        strategy.tell([(c.uid, score(c.genome)) for c in batch])
    assert screened >= 5
    seeds_screened = [c for c in Strategy(config, SEEDS, rng_seed=5).ask()
                      if c.operator == "lr_screen"]
    assert len(seeds_screened) == 2 * len(SEEDS)


def test_children_are_canonical() -> None:
    """Children come in canonical form (largest |weight| 1, folded into lr): one optimizer,
    one genome, so search and dedupe see one thing."""
    strategy = Strategy(StrategyConfig(population=12), SEEDS, rng_seed=2)
    for _ in range(3):
        batch = strategy.ask()
        for c in batch:
            if c.operator != "seed":
                assert c.genome == c.genome.canonical()
                assert max(abs(t["weight"]) for t in c.genome.terms) == 1.0
        strategy.tell([(c.uid, score(c.genome)) for c in batch])


def test_elites_survive_and_fitness_improves() -> None:
    strategy = Strategy(StrategyConfig(population=8, elitism=2), SEEDS, rng_seed=1)
    best = []
    for _ in range(30):
        batch = strategy.ask()
        strategy.tell([(c.uid, score(c.genome)) for c in batch])
        best.append(strategy.best().fitness.values[1])
    assert all(b >= a for a, b in zip(best, best[1:], strict=False)), "elitism lost the best"
    assert best[-1] > best[0]


def test_stage_reached_ranks_before_score() -> None:
    strategy = Strategy(StrategyConfig(population=4, elitism=1), SEEDS, rng_seed=0)
    batch = strategy.ask()
    values = {batch[0].uid: (1.0, 0.2), batch[1].uid: (0.0, 0.9)}
    strategy.tell([(c.uid, values.get(c.uid, (0.0, 0.1))) for c in batch])
    assert strategy.best().uid == batch[0].uid


def test_tell_rejects_missing_or_non_finite() -> None:
    strategy = Strategy(StrategyConfig(population=4), SEEDS, rng_seed=0)
    batch = strategy.ask()
    with pytest.raises(ValueError, match="no fitness"):
        strategy.tell([(batch[0].uid, (0.0, 0.5))])
    with pytest.raises(ValueError, match="bad tell"):
        strategy.tell([(c.uid, (0.0, float("nan"))) for c in batch])


def test_initial_random_genomes_beside_the_seeds() -> None:
    """``initial_random``: generation 0 holds that many random genomes (operator "random", no
    parents), all distinct from each other and the seeds, none lr-screened; the rest as before."""
    config = StrategyConfig(population=14, lr_screen=(0.5, 2.0), initial_random=4)
    batch = Strategy(config, SEEDS, rng_seed=1).ask()
    randoms = [c for c in batch if c.operator == "random"]
    assert len(batch) == 14 and len(randoms) == 4
    assert all(not c.parents and c.generation == 0 for c in randoms)
    assert len({c.genome.hash for c in batch}) == 14
    # the seeds come first, then the random genomes, then the seeds' lr screens, then mutations
    assert [c.operator for c in batch[:3]] == ["seed"] * 3
    assert all(c.operator == "random" for c in batch[3:7])
    assert [c.operator for c in batch[7:13]] == ["lr_screen"] * 6
    assert batch[13].parents and batch[13].operator not in ("seed", "random")
    plain = Strategy(StrategyConfig(population=14, lr_screen=(0.5, 2.0)), SEEDS, rng_seed=1).ask()
    assert not any(c.operator == "random" for c in plain)
    assert [c.genome.hash for c in plain[3:9]] == [c.genome.hash for c in batch[7:13]]
    other = Strategy(config, SEEDS, rng_seed=2).ask()
    assert {c.genome.hash for c in randoms} != {c.genome.hash for c in other[3:7]}
    # a small population gives the random genomes their room before the screens
    small = Strategy(StrategyConfig(population=8, lr_screen=(0.5, 2.0), initial_random=4),
                     SEEDS, rng_seed=1).ask()
    assert [c.operator for c in small] == ["seed"] * 3 + ["random"] * 4 + ["lr_screen"]


def _told(strategy: Strategy, wins: set[str]) -> None:
    """One generation told: children of the operators in ``wins`` beat their parent, the rest
    fall below every member."""
    batch = strategy.ask()
    known = {m.uid: m.fitness.values for m in strategy.population}
    results = []
    for c in batch:
        op = c.operator.removeprefix("crossover+")
        parent = known.get(c.parents[0]) if c.parents else None
        if parent is None:
            results.append((c.uid, score(c.genome)))
        else:
            results.append((c.uid, (parent[0], parent[1] + 1.0) if op in wins
                            else (parent[0], -100.0)))
    strategy.tell(results)


def test_adapted_rates_follow_measured_success_and_survive_resume() -> None:
    config = StrategyConfig(population=10, selection="regularized", elitism=0, adapt_rates=True,
                            crossover_rate=0.0)
    strategy = Strategy(config, SEEDS, rng_seed=0)
    base = Strategy(StrategyConfig(population=10), SEEDS, rng_seed=0).mutation_rates()
    assert strategy.mutation_rates() == base  # nothing measured yet: the configured rates
    _told(strategy, set())
    for _ in range(8):
        _told(strategy, {"perturb_hparam"})
    record = strategy.operator_record
    assert record["perturb_hparam"][0] > 0 and record["perturb_hparam"][1] == \
        record["perturb_hparam"][0]
    rates = strategy.mutation_rates()
    assert rates["perturb_hparam"] > base["perturb_hparam"]
    losers = [op for op, (n, k) in record.items() if n >= 3 and k == 0]
    assert losers and all(rates[op] < base[op] for op in losers)
    assert all(0.25 * base[op] - 1e-12 <= rates[op] <= 4 * base[op] + 1e-12 for op in base)
    # the record is part of the state: a resumed strategy draws the same operators
    state = json.loads(json.dumps(strategy.get_state()))
    resumed = Strategy.from_state(config, SEEDS, state)
    assert resumed.operator_record == record and resumed.mutation_rates() == rates
    assert [c.genome.hash for c in resumed.ask()] == [c.genome.hash for c in strategy.ask()]
    # without adapt_rates the same record changes nothing
    fixed = Strategy.from_state(StrategyConfig(population=10, selection="regularized",
                                               elitism=0), SEEDS, state)
    assert fixed.mutation_rates() == base


def test_surrogate_keeps_the_child_it_ranks_best() -> None:
    """With ``surrogate_pool``, each paid child is the best-predicted of that many proposals:
    on a landscape the k-NN surrogate can learn (fitness = closeness of lr to 10**-2.5), the
    children paid for are better than those of the same strategy without it."""
    from evoopt.strategy.surrogate import KNNSurrogate, genome_features

    def mean_child_score(pool: int) -> float:
        config = StrategyConfig(population=12, selection="regularized", elitism=0,
                                surrogate_pool=pool, surrogate_after=12)
        strategy = Strategy(config, SEEDS, rng_seed=5)
        scores = []
        for gen in range(8):
            batch = strategy.ask()
            if gen >= 2:
                scores += [score(c.genome)[1] for c in batch]
            strategy.tell([(c.uid, score(c.genome)) for c in batch])
        state = json.loads(json.dumps(strategy.get_state()))
        assert len(state["told"]) == len(strategy.told)
        return float(np.mean(scores))

    assert mean_child_score(6) > mean_child_score(1) + 0.1
    # the surrogate itself: nearer genomes predict nearer scores
    near, far = seed_genome("adam").with_lr(3e-3), seed_genome("adam").with_lr(0.3)
    model = KNNSurrogate(k=1).fit([genome_features(near), genome_features(far)], [1.0, 0.0])
    assert model.predict([genome_features(seed_genome("adam").with_lr(2e-3))])[0] > 0.9
