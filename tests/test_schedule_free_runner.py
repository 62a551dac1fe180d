"""The fitness runner scores an optimizer that evaluates other weights than it trains at
(Schedule-Free) at its evaluated weights: ``eval()`` after training, then the BatchNorm
statistics recomputed at those weights (the schedulefree README's protocol)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evoopt.fitness import FitnessRunner, load_task
from evoopt.genome import GenomeOptimizer, seed_genome


@pytest.fixture(scope="module")
def tiny(data_dir: Path) -> FitnessRunner:
    return FitnessRunner(load_task("cifar10-tiny").with_overrides(steps=40), data_dir=data_dir)


def _factory(calls: list[str], swap: bool = True):
    genome = seed_genome("schedule-free-adamw")

    def make(params, total_steps: int) -> torch.optim.Optimizer:
        opt = GenomeOptimizer(params, genome, total_steps=total_steps)
        if not swap:
            opt.evaluates_other_weights = False  # as if it evaluated where it trains
        real_eval = opt.eval

        def spy() -> None:
            calls.append("eval")
            real_eval()

        opt.eval = spy
        return opt

    return make


def test_schedule_free_is_scored_at_its_evaluated_weights(tiny: FitnessRunner) -> None:
    calls: list[str] = []
    at_x = tiny.evaluate_with(_factory(calls), seed=0)
    assert at_x.status == "ok", at_x.message
    assert calls == ["eval"]
    at_y = tiny.evaluate_with(_factory([], swap=False), seed=0)
    assert at_y.status == "ok"
    assert at_x.train_loss_curve == at_y.train_loss_curve  # the same training
    assert at_x.val_loss != at_y.val_loss  # scored at other weights


def test_batchnorm_statistics_are_recomputed_at_the_evaluated_weights(
        tiny: FitnessRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the recalibration the score differs: the running statistics the training left
    belong to the training weights."""
    with_bn = tiny.evaluate_with(_factory([]), seed=1)
    monkeypatch.setattr(FitnessRunner, "_recalibrate_batchnorm", lambda self, model, seed: None)
    without = tiny.evaluate_with(_factory([]), seed=1)
    assert with_bn.status == without.status == "ok"
    assert with_bn.val_loss != without.val_loss


def test_a_chain_genome_dict_is_evaluated(tiny: FitnessRunner) -> None:
    """Workers get genomes as dicts: a chain genome's (format 2) is read as a chain."""
    res = tiny.evaluate(seed_genome("ademamix").to_dict(), seed=0)
    assert res.status == "ok", res.message
    again = tiny.evaluate(seed_genome("ademamix"), seed=0)
    assert again.fitness == res.fitness
