"""Baselines: lr sweep on val, best re-run on fresh seeds, CSV/JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from evoopt.fitness import FitnessRunner, load_task
from evoopt.fitness.baselines import FRESH_SEED_OFFSET, run_baselines


@pytest.fixture(scope="module")
def tiny(data_dir: Path) -> FitnessRunner:
    return FitnessRunner(load_task("cifar10-tiny"), data_dir=data_dir)


def test_sweep_picks_a_working_lr_and_reruns_on_fresh_seeds(tiny: FitnessRunner,
                                                            tmp_path: Path) -> None:
    # factor 1e4 makes Adam diverge (lr 10), 1e6 is beyond the genome's lr range (lr 1000 ->
    # invalid genome, status error): neither may be the tuned lr
    report = run_baselines(tiny.task, ["adam", "lion"], [1.0, 1e4, 1e6], sweep_seeds=2,
                           runner=tiny)
    s = report.summary.set_index("optimizer")
    assert list(s.index) == ["adam", "lion"]
    assert (s["lr_factor"] == 1.0).all() and (s["n_failed"] == 0).all()
    assert s.loc["adam", "best_lr"] == pytest.approx(1e-3)
    sweep = report.sweep.set_index(["optimizer", "lr_factor"])
    assert sweep.loc[("adam", 1e4), "n_failed"] == 2
    assert sweep.loc[("adam", 1e6), "n_failed"] == 2
    adam_runs = report.runs[report.runs.optimizer == "adam"]
    by_lr = adam_runs.groupby(adam_runs.lr.round(6)).status.agg(set)
    assert by_lr[10.0] == {"diverged"} and by_lr[1000.0] == {"error"}
    runs = report.runs
    sweep_seeds = set(runs[runs.phase == "sweep"].seed)
    final = runs[runs.phase == "final"]
    assert sweep_seeds == {0, 1}
    assert set(final.seed) == {FRESH_SEED_OFFSET, FRESH_SEED_OFFSET + 1}
    assert (final.split == "val").all() and (runs[runs.phase == "sweep"].split == "val").all()
    adam_final = final[final.optimizer == "adam"]
    assert s.loc["adam", "fitness_mean"] == pytest.approx(adam_final.fitness.mean())

    csv_path, json_path = report.write(tmp_path / "base.csv")
    assert csv_path.name == "base.csv" and json_path.name == "base.json"
    assert pd.read_csv(csv_path)["optimizer"].tolist() == ["adam", "lion"]
    d = json.loads(json_path.read_text())
    assert d["task"]["name"] == "cifar10-tiny" and len(d["runs"]) == len(runs)


def test_overlapping_final_seeds_are_rejected(tiny: FitnessRunner) -> None:
    with pytest.raises(ValueError, match="fresh"):
        run_baselines(tiny.task, ["adam"], [1.0], sweep_seeds=[0, 1000], runner=tiny)


def test_cli_baselines(data_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from evoopt.cli import _register, app

    _register()
    out = CliRunner().invoke(app, [
        "baselines", "--task", "cifar10-tiny", "--optimizers", "adamw,nesterov",
        "--lr-grid", "0.3,1", "--seeds", "1", "--split", "test", "--data-dir", str(data_dir),
        "-o", str(tmp_path / "bl")])
    assert out.exit_code == 0, out.output
    table = pd.read_csv(tmp_path / "bl.csv")
    assert table["optimizer"].tolist() == ["adamw", "nesterov"]
    assert (table["split"] == "test").all() and (table["seeds"].astype(str) == "1000").all()
    runs = json.loads((tmp_path / "bl.json").read_text())["runs"]
    assert len(runs) == 2 * (2 + 1)
