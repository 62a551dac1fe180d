"""bf16 autocast as a task field: omitted = CUDA only, true = every device (the CPU included)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evoopt.fitness import FitnessRunner, TaskError, TaskSpec, load_task
from evoopt.genome import seed_genome

TIMING_KEYS = ("wall_time_s", "train_time_s")
VIT_SHORT = {"steps": 12, "train_size": 1000, "val_size": 300, "threads": 1}


def _strip_times(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in TIMING_KEYS}


def test_bf16_field_default_shipped_values_and_validation(tmp_path: Path) -> None:
    assert TaskSpec(name="x").bf16 is None  # omitted: on CUDA only, as before
    for name in ("cifar10-gpu", "cifar10-vit-gpu", "shakespeare-char-gpu"):
        assert load_task(name).bf16 is True
    assert load_task("cifar10-tiny").bf16 is None
    for name in ("cifar10-cpu", "cifar10-vit-cpu", "shakespeare-char-cpu"):  # accuracy held
        assert load_task(name).bf16 is True
    with pytest.raises(TaskError, match="'bf16'.*true or false") as info:
        TaskSpec.from_dict({"name": "bad", "bf16": "yes"})
    assert info.value.field == "bf16"
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\nbf16 = 1\n')
    with pytest.raises(TaskError, match="'bf16'"):
        load_task(path)


@pytest.mark.parametrize(("name", "overrides", "floor"), [
    ("cifar10-tiny", {}, 0.18),            # seen, seeds 0-2: 0.25-0.26 fp32, 0.23-0.27 bf16
    ("cifar10-vit-cpu", VIT_SHORT, 0.15),  # seen: 0.19-0.22 fp32, 0.18-0.22 bf16; chance 0.10
])
def test_bf16_on_cpu_is_deterministic_above_chance_and_really_applied(
        name: str, overrides: dict, floor: float, data_dir: Path) -> None:
    task = load_task(name).with_overrides(device="cpu", **overrides)
    runners = {b: FitnessRunner(task.with_overrides(bf16=b), data_dir=data_dir)
               for b in (None, False, True)}
    g = seed_genome("adam").with_lr(3e-3)
    a, b = runners[True].evaluate(g, seed=1), runners[True].evaluate(g, seed=1)
    assert a.status == "ok", a.message
    assert _strip_times(a.to_dict()) == _strip_times(b.to_dict())   # run to run: identical
    assert a.val_accuracy > floor
    fp32, omitted = runners[False].evaluate(g, seed=1), runners[None].evaluate(g, seed=1)
    assert _strip_times(omitted.to_dict()) == _strip_times(fp32.to_dict())  # omitted: fp32 on CPU
    assert a.train_loss_curve != fp32.train_loss_curve    # autocast really ran in bf16


def test_runs_with_hessian_vector_products_stay_fp32(data_dir: Path) -> None:
    """A curvature genome's run ignores bf16: measured on cifar10-cpu (seeds 0-9), AdaHessian
    in bf16 was no faster and lost 0.15 fitness on average (one run diverged)."""
    task = load_task("cifar10-tiny").with_overrides(device="cpu")
    adahessian = seed_genome("adahessian").with_lr(0.05)
    runs = {b: FitnessRunner(task.with_overrides(bf16=b), data_dir=data_dir).evaluate(
        adahessian, seed=0) for b in (False, True)}
    assert runs[True].create_graph and runs[True].status == "ok", runs[True].message
    assert _strip_times(runs[True].to_dict()) == _strip_times(runs[False].to_dict())
