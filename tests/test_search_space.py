"""One genome space for random search and TPE: the same named choices, drawn or suggested."""

from __future__ import annotations

import warnings

import numpy as np
import optuna

from evoopt.fitness.optuna_search import TrialChoices, genome_space
from evoopt.genome.sampling import RngChoices, random_genome


class Recording(RngChoices):
    """RngChoices that records each choice by name, as an Optuna trial would store it."""

    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__(rng)
        self.params: dict[str, object] = {}

    def integer(self, name: str, low: int, high: int) -> int:
        self.params[name] = v = super().integer(name, low, high)
        return v

    def category(self, name: str, options):  # type: ignore[no-untyped-def]
        self.params[name] = v = super().category(name, options)
        return v

    def flag(self, name: str, p: float) -> bool:
        self.params[name] = v = super().flag(name, p)
        return v

    def uniform(self, name: str, low: float, high: float) -> float:
        self.params[name] = v = super().uniform(name, low, high)
        return v


def test_a_trial_making_random_searchs_choices_builds_the_same_genome() -> None:
    """Every genome random search draws is a point of the TPE space: replaying its named
    choices through an Optuna trial gives the identical genome (same hash), and the names
    never repeat within one genome (a define-by-run space needs that)."""
    for seed in range(60):
        rec = Recording(np.random.default_rng(seed))
        drawn = random_genome(rec, max_terms=4)
        replayed = random_genome(TrialChoices(optuna.trial.FixedTrial(rec.params)), 4)
        assert replayed.hash == drawn.hash and replayed.formula() == drawn.formula()


def test_tpe_over_the_genome_space_learns_within_a_real_study() -> None:
    """A real multivariate TPE study over the genome space proposes valid, varied genomes and
    moves towards what it is rewarded for (here: fewer terms, lr near 1e-3)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(
            seed=0, multivariate=True, group=True, n_startup_trials=10))
    space = genome_space(4)
    values = []
    for _ in range(60):
        trial = study.ask()
        g = space(trial)
        value = -abs(np.log10(g.lr) + 3.0) - len(g.terms)
        values.append(value)
        study.tell(trial, value)
    kinds = {t.params.get("term0.kind") for t in study.trials}
    assert len(kinds) >= 4  # structure is searched, not only hyperparameters
    assert np.mean(values[-20:]) > np.mean(values[:10]) + 0.5
