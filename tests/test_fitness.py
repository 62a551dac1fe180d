"""Fitness stage: task specs, training runs (determinism, CRN, failures), aggregation, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from evoopt.fitness import (
    WORST_FITNESS,
    EvaluationResult,
    FitnessRunner,
    SeedResult,
    TaskError,
    TaskSpec,
    available_tasks,
    evaluate_genome,
    load_task,
)
from evoopt.fitness.runner import derive_seed, downsample_curve
from evoopt.genome import seed_genome

TIMING_KEYS = ("wall_time_s", "train_time_s")


@pytest.fixture(scope="module")
def tiny(data_dir: Path) -> FitnessRunner:
    return FitnessRunner(load_task("cifar10-tiny"), data_dir=data_dir)


def _strip_times(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in TIMING_KEYS}


# ---------------------------------------------------------------- task specs
def test_shipped_tasks_load_and_round_trip() -> None:
    assert {"cifar10-cpu", "cifar10-gpu", "cifar10-tiny"} <= set(available_tasks())
    for name in available_tasks():
        task = load_task(name)
        assert task.name == name
        again = TaskSpec.from_dict(json.loads(json.dumps(task.to_dict())))
        assert again == task
    assert load_task("cifar10-gpu").train_size is None  # airbench: all non-val images
    assert load_task("cifar10-gpu").image_size == 32


def test_with_overrides_validates() -> None:
    task = load_task("cifar10-tiny")
    assert task.with_overrides(steps=7).steps == 7 and task.steps != 7
    with pytest.raises(TaskError, match="'steps'"):
        task.with_overrides(steps=0)
    with pytest.raises(TaskError, match="'stepz'"):
        task.with_overrides(stepz=3)


@pytest.mark.parametrize(
    ("field", "value"),
    [("steps", "ten"), ("image_size", 24), ("device", "tpu"), ("label_smoothing", 1.5),
     ("divergence_factor", 0.5), ("flip", 1), ("train_size", -5), ("batch_size", 2.5),
     ("nonsense", 1)],
)
def test_malformed_spec_names_the_field(field: str, value: object) -> None:
    with pytest.raises(TaskError, match=f"'{field}'") as info:
        TaskSpec.from_dict({"name": "bad", field: value})
    assert info.value.field == field


def test_malformed_toml_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('name = "broken"\nwidth = "wide"\n')
    with pytest.raises(TaskError, match="'width'"):
        load_task(path)
    with pytest.raises(TaskError, match="cifar10-cpu"):  # unknown name lists shipped tasks
        load_task("no-such-task")


# ---------------------------------------------------------------- training runs
def test_same_seed_same_metrics(tiny: FitnessRunner) -> None:
    g = seed_genome("adam")
    a, b = tiny.evaluate(g, seed=3), tiny.evaluate(g, seed=3)
    assert a.status == "ok", a.message
    assert _strip_times(a.to_dict()) == _strip_times(b.to_dict())
    c = tiny.evaluate(g, seed=4)
    assert c.train_loss_curve != a.train_loss_curve


def test_common_random_numbers(tiny: FitnessRunner) -> None:
    """Different optimizers, same seed: same initial weights and the same first batch."""
    inits: list[list[torch.Tensor]] = []

    def recording(lr: float):
        def make(params, total_steps):
            params = list(params)
            inits.append([p.detach().clone() for p in params])
            return torch.optim.SGD(params, lr=lr)
        return make

    r1 = tiny.evaluate_with(recording(0.01), seed=5)
    r2 = tiny.evaluate_with(recording(0.3), seed=5)
    r3 = tiny.evaluate_with(recording(0.01), seed=6)
    assert all(torch.equal(x, y) for x, y in zip(inits[0], inits[1], strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(inits[0], inits[2], strict=True))
    # 30 steps -> one curve point per step: the first loss is before any update
    assert r1.train_loss_curve[0] == r2.train_loss_curve[0] != r3.train_loss_curve[0]
    assert r1.train_loss_curve[1] != r2.train_loss_curve[1]  # the optimizers do differ
    assert derive_seed("a", 1, "init") != derive_seed("b", 1, "init")


def test_absurd_lr_diverges_with_worst_fitness(tiny: FitnessRunner) -> None:
    # genomes cap lr at 10 (GenomeError above); torch Adam takes 1e6 as is
    for rec in (tiny.evaluate(seed_genome("adam").with_lr(10.0), seed=0),
                tiny.evaluate_with(lambda p, n: torch.optim.Adam(p, lr=1e6), seed=0)):
        assert rec.status == "diverged", rec.message
        assert rec.fitness == WORST_FITNESS and rec.val_accuracy is None
        assert rec.steps < tiny.task.steps
        json.dumps(rec.to_dict(), allow_nan=False)  # JSON-safe even with inf/nan losses


def test_nan_parameters_diverge(tiny: FitnessRunner) -> None:
    class Poison(torch.optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {})

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    p.fill_(float("nan"))

    rec = tiny.evaluate_with(lambda params, n: Poison(params), seed=0)
    assert rec.status == "diverged" and rec.fitness == WORST_FITNESS and rec.steps == 2


def test_exceptions_become_error_status(tiny: FitnessRunner) -> None:
    def boom(params, total_steps):
        raise RuntimeError("kaboom")

    rec = tiny.evaluate_with(boom, seed=0)
    assert rec.status == "error" and "kaboom" in rec.message and rec.fitness == WORST_FITNESS
    bad = tiny.evaluate({"name": "x", "lr": "fast"}, seed=0)
    assert bad.status == "error" and bad.fitness == WORST_FITNESS and "genome" in bad.message
    wrong_split = tiny.evaluate(seed_genome("adam"), seed=0, split="train")
    assert wrong_split.status == "error" and "split" in wrong_split.message


def test_time_limit_gives_timeout(data_dir: Path) -> None:
    runner = FitnessRunner(load_task("cifar10-tiny").with_overrides(time_limit_s=1e-4),
                           data_dir=data_dir)
    rec = runner.evaluate(seed_genome("adam"), seed=0)
    assert rec.status == "timeout" and rec.fitness == WORST_FITNESS and rec.steps == 1


def test_test_split_is_separate(tiny: FitnessRunner) -> None:
    assert not tiny.workload.test_staged  # the official test set is not even staged for fitness
    rec = tiny.evaluate(seed_genome("adam"), seed=0, split="test")
    assert rec.status == "ok" and rec.split == "test"
    assert len(tiny.split_data("test")) == 1017 and len(tiny.split_data("val")) == 200
    assert not set(tiny.workload.train_indices) & set(tiny.workload.val_indices)


def test_curve_is_downsampled() -> None:
    assert len(downsample_curve(np.arange(1000.0))) == 50
    assert downsample_curve(np.arange(4.0)) == [0.0, 1.0, 2.0, 3.0]
    assert downsample_curve(np.arange(100.0))[0] == 0.5


def test_aggregation_over_seeds(data_dir: Path) -> None:
    res = evaluate_genome(seed_genome("adam").to_dict(), "cifar10-tiny", seeds=[0, 1],
                          data_dir=data_dir)
    assert [r.seed for r in res.seeds] == [0, 1] and res.status == "ok"
    accs = [r.val_accuracy for r in res.seeds]
    assert res.fitness == pytest.approx(np.mean(accs)) and res.val_accuracy_std == pytest.approx(
        np.std(accs, ddof=1))  # one std convention everywhere: evoopt.stats.mean_std
    failed = SeedResult(seed=2, status="diverged", message="boom")
    mixed = EvaluationResult.from_seeds([*res.seeds, failed], task="t", split="val")
    assert mixed.status == "diverged" and mixed.fitness == WORST_FITNESS
    assert mixed.val_accuracy == pytest.approx(res.val_accuracy)  # over finished seeds
    json.dumps(mixed.to_dict(), allow_nan=False)


def test_adam_clearly_above_chance_at_cpu_default(data_dir: Path) -> None:
    # Seen on cifar10-mini: val accuracy 0.43-0.45 for seeds 0-3 (chance is 0.10), ~3 s/seed
    # on 2 idle cores. One thread keeps it fast when the machine is shared.
    task = load_task("cifar10-cpu").with_overrides(threads=1)
    rec = FitnessRunner(task, data_dir=data_dir).evaluate(seed_genome("adam"), seed=0)
    assert rec.status == "ok", rec.message
    assert rec.val_accuracy > 0.30
    assert rec.steps == task.steps and len(rec.train_loss_curve) == 50
    assert rec.train_loss_curve[-1] < rec.train_loss_curve[0] - 0.3


# ---------------------------------------------------------------- CLI
def test_cli_evaluate_json(data_dir: Path) -> None:
    from typer.testing import CliRunner

    from evoopt.cli import app, register_commands

    register_commands()
    out = CliRunner().invoke(app, ["evaluate", "adam", "--task", "cifar10-tiny", "--data-dir",
                                   str(data_dir), "--seeds", "2", "--json"])
    assert out.exit_code == 0, out.output
    d = json.loads(out.stdout)
    for key in ("fitness", "val_accuracy", "val_loss", "status", "wall_time_s", "seeds"):
        assert key in d
    assert d["status"] == "ok" and [s["seed"] for s in d["seeds"]] == [0, 1]
    assert math.isclose(d["fitness"], np.mean([s["fitness"] for s in d["seeds"]]))
    bad = CliRunner().invoke(app, ["evaluate", "adam", "--task", "cifar10-tiny",
                                   "--set", "steps=0", "--data-dir", str(data_dir)])
    assert bad.exit_code == 2 and "steps" in bad.output
