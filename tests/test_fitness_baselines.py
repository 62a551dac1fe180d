"""Fair baselines: one protocol (grid sweep on val, best re-run on fresh seeds), CLI output."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest

from evoopt.fitness import WORST_FITNESS, FitnessRunner, load_task
from evoopt.fitness.baselines import (
    DEFAULT_BASELINES,
    FAIR_BASELINES,
    FRESH_SEED_OFFSET,
    FRONTIER_BASELINES,
    get_baseline,
    run_baselines,
    tune_baseline,
    tune_baselines,
)
from evoopt.genome import Genome, seed_genome, seed_names


@pytest.fixture(scope="module")
def tiny(data_dir: Path) -> FitnessRunner:
    return FitnessRunner(load_task("cifar10-tiny"), data_dir=data_dir)


def test_frontier_baselines_are_their_exact_seeds_on_the_same_protocol() -> None:
    """Muon's grid scales both of its lrs (a factor f moves AdamW's lr and the matrices' lr
    together); Schedule-Free keeps a constant lr (its averaging replaces the decay); AdEMAMix
    gets 7 points; each is its shipped seed at the centre, with warmup + cosine but SF."""
    assert FRONTIER_BASELINES == ("muon-cosine", "schedule-free-adamw", "ademamix-cosine")
    muon = FAIR_BASELINES["muon-cosine"]
    seed = seed_genome("muon")
    for point in muon.points():
        g = muon.genome_at(point)
        f = point["lr"] / seed.lr
        assert g.lr == pytest.approx(seed.lr * f) and g.matrix.lr == pytest.approx(
            seed.matrix.lr * f)
        assert g.schedule.kind == g.matrix.schedule.kind == "warmup_cosine"
    sf = FAIR_BASELINES["schedule-free-adamw"]
    assert sf.base().schedule.kind == "constant"
    assert sf.base().rules.chain == seed_genome("schedule-free-adamw").rules.chain
    ademamix = FAIR_BASELINES["ademamix-cosine"]
    lrs = ademamix.grid["lr"]
    assert len(lrs) == 7 and lrs[3] == pytest.approx(2e-3) == ademamix.base().lr
    assert ademamix.base().schedule.kind == "warmup_cosine"
    assert ademamix.genome_at({"lr": lrs[0]}).rules.chain == seed_genome("ademamix").rules.chain


def test_registry_grids_are_centred_on_the_measured_best_lr() -> None:
    assert DEFAULT_BASELINES == ("adam", "adamw-cosine", "lion-cosine", "nesterov-cosine")
    assert set(FAIR_BASELINES) == {*DEFAULT_BASELINES, "evolved-marfinetz-2025",
                                   *FRONTIER_BASELINES}
    assert FAIR_BASELINES["adam"].grid["lr"] == (1.25e-3, 2.5e-3, 5e-3, 1e-2, 2e-2)
    for name, centre in (("adam", 5e-3), ("adamw-cosine", 5e-3), ("lion-cosine", 2e-3),
                         ("nesterov-cosine", 0.03)):
        spec = FAIR_BASELINES[name]
        lrs = spec.grid["lr"]
        assert len(lrs) == 5 and lrs[2] == pytest.approx(centre) == spec.base().lr
        assert all(b / a == pytest.approx(2.0) for a, b in zip(lrs, lrs[1:], strict=False))
        sched = spec.base().schedule
        assert sched.kind == ("constant" if name == "adam" else "warmup_cosine")
    adamw = FAIR_BASELINES["adamw-cosine"]
    assert adamw.grid["weight_decay"] == (0.01, 0.05, 0.2) and len(adamw.points()) == 15
    assert adamw.base().weight_decay.kind == "decoupled"
    assert get_baseline("lion-cosine", [1, 2]).grid["lr"] == (2e-3, 4e-3)
    # The published evolved optimizer is a reference, compared in canonical form, never a seed.
    evolved = FAIR_BASELINES["evolved-marfinetz-2025"].base()
    assert evolved.lr == pytest.approx(1.2e-3 * 3.63) and evolved.schedule.kind == "warmup_cosine"
    assert "evolved-marfinetz-2025" not in seed_names()
    with pytest.raises(ValueError, match="unknown baseline 'adamw'.*adamw-cosine"):
        get_baseline("adamw")


def scripted(best_lr: float, fail: set[float] = frozenset(), flat: bool = False):
    """A deterministic EvaluateFn (a test input): fitness peaks at ``best_lr`` (log distance),
    seed adds 0.01·seed, weight decay 0.05 scores best; lrs in ``fail`` fail on the last seed."""
    calls: list[tuple[list[str], list[int], str]] = []

    def evaluate(items: list[tuple[str, Genome]], seeds: Sequence[int], split: str,
                 stage: int = -1) -> dict[str, list[float]]:
        calls.append(([k for k, _ in items], list(seeds), split))
        out = {}
        for key, g in items:
            base = 0.5 if flat else 0.5 - 0.05 * abs(math.log2(g.lr / best_lr))
            if g.weight_decay is not None:
                base -= 0.01 * abs(math.log(g.weight_decay["value"] / 0.05))
            out[key] = [WORST_FITNESS if g.lr in fail and i == len(seeds) - 1
                        else base + 0.01 * s for i, s in enumerate(seeds)]
        return out

    evaluate.calls = calls  # type: ignore[attr-defined]
    return evaluate


def test_protocol_selection_edges_ties_failures_and_invalid_lrs() -> None:
    # lr 5e-3 × {0.25, 1, 4, 4000}: 20 is beyond the genome's lr range (invalid, never run);
    # the best (1.25e-2 would be) is 2e-2 but it fails one seed -> worst; 5e-3 wins.
    spec = get_baseline("adam", [0.25, 1, 4, 4000])
    ev = scripted(best_lr=3e-2, fail={2e-2})
    t = tune_baseline(spec, ev, sweep_seeds=[0, 1], final_seeds=[100, 101], splits=("val",
                                                                                   "test"))
    rows = {r["point"]["lr"]: r for r in t.sweep}
    assert rows[20.0]["status"] == "invalid" and rows[20.0]["per_seed"] == []
    assert rows[2e-2]["status"] == "failed" and rows[2e-2]["fitness_mean"] == WORST_FITNESS
    assert t.best == {"lr": 5e-3} and t.genome.lr == 5e-3
    assert t.at_grid_edge == {"lr": False}
    assert t.key == "baseline:adam" and t.final_seeds == [100, 101]
    assert set(t.final) == {"val", "test"} and len(t.final["test"]) == 2
    # sweep on val with the sweep seeds (invalid point not sent), finals once per split
    assert ev.calls[0][1:] == ([0, 1], "val") and len(ev.calls[0][0]) == 3
    assert ev.calls[1] == (["baseline:adam"], [100, 101], "val")
    assert ev.calls[2] == (["baseline:adam"], [100, 101], "test")
    m, s = t.mean_std("val")
    assert m == pytest.approx(sum(t.final["val"]) / 2) and s > 0
    assert json.loads(json.dumps(t.to_dict()))["best"] == {"lr": 5e-3}

    # ties go to the smaller lr, which here is the grid's lower edge
    flat = tune_baseline(get_baseline("adam", [1, 2, 4]), scripted(1.0, flat=True), [0], [9])
    assert flat.best["lr"] == 5e-3 and flat.at_grid_edge == {"lr": True}

    # two dimensions: edge flagged per dimension
    adamw = FAIR_BASELINES["adamw-cosine"]
    both = tune_baseline(adamw, scripted(best_lr=1.0), [0], [9])  # lr wants the top edge
    assert both.best == {"lr": 2e-2, "weight_decay": 0.05}
    assert both.at_grid_edge == {"lr": True, "weight_decay": False}
    assert both.genome.weight_decay["value"] == 0.05 and both.genome.schedule.kind == \
        "warmup_cosine"


def test_protocol_rejects_reused_seeds_and_all_invalid_grids() -> None:
    with pytest.raises(ValueError, match="fresh"):
        tune_baseline(FAIR_BASELINES["adam"], scripted(5e-3), [0, 1], [1, 2])
    with pytest.raises(ValueError, match="rejects every grid point"):
        tune_baseline(get_baseline("adam", [1e4]), scripted(5e-3), [0], [9])
    with pytest.raises(ValueError, match="one fitness per seed"):
        tune_baselines([FAIR_BASELINES["adam"]], lambda items, seeds, split, stage=-1: {},
                       [0], [9])


def test_real_runs_on_the_tiny_task(tiny: FitnessRunner, tmp_path: Path) -> None:
    """The protocol on the real FitnessRunner: 1 sweep seed, 1 fresh seed, a 2-point grid."""
    report = run_baselines(tiny.task, ["adam"], [0.2, 1.0], sweep_seeds=1, runner=tiny)
    s = report.summary.set_index("optimizer")
    assert list(s.index) == ["adam"] and s.loc["adam", "kind"] == "tuned"
    assert s.loc["adam", "n_failed"] == 0 and s.loc["adam", "fitness_mean"] > 0.15
    assert s.loc["adam", "best_lr"] in (1e-3, 5e-3)
    runs = report.runs
    assert set(runs[runs.phase == "sweep"].seed) == {0}
    final = runs[runs.phase == "final"]
    assert list(final.seed) == [FRESH_SEED_OFFSET] and (final.split == "val").all()
    assert s.loc["adam", "fitness_mean"] == pytest.approx(final.fitness.mean())
    assert len(report.sweep) == 2 and (report.sweep.status == "ok").all()
    csv_path, json_path = report.write(tmp_path / "base.csv")
    assert csv_path.name == "base.csv" and json_path.name == "base.json"
    assert pd.read_csv(csv_path)["optimizer"].tolist() == ["adam"]
    d = json.loads(json_path.read_text())
    assert d["task"]["name"] == "cifar10-tiny" and len(d["runs"]) == 3
    assert d["tuned"][0]["best"]["lr"] == s.loc["adam", "best_lr"]


def test_cli_baselines(data_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from evoopt.cli import app, register_commands

    register_commands()
    out = CliRunner().invoke(app, [
        "baselines", "--task", "cifar10-tiny", "--optimizers", "adam,nesterov-cosine",
        "--lr-grid", "0.5,1", "--seeds", "1", "--split", "test", "--data-dir", str(data_dir),
        "-o", str(tmp_path / "bl")])
    assert out.exit_code == 0, out.output
    table = pd.read_csv(tmp_path / "bl.csv")
    assert table["optimizer"].tolist() == ["adam", "nesterov-cosine"]
    assert (table["split"] == "test").all() and (table["seeds"].astype(str) == "1000").all()
    runs = json.loads((tmp_path / "bl.json").read_text())["runs"]
    assert len(runs) == 2 * (2 + 1)
    bad = CliRunner().invoke(app, ["baselines", "--optimizers", "adam,adamw"])
    assert bad.exit_code == 2 and "unknown baseline 'adamw'" in bad.output
