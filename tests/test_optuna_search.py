"""Budget-matched Optuna AdamW search: real tiny runs, budget accounting, resume after a kill."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from evoopt.fitness import FitnessRunner, load_task
from evoopt.fitness.optuna_search import (
    KEY_PREFIX,
    SCHEDULE_KINDS,
    STUDY_NAME,
    adamw_genome,
    adamw_search_space,
    budget_matched_search,
)
from evoopt.fitness.protocol import RunnerEvaluate
from evoopt.genome import Genome

STAGES = [("screen", [0]), ("full", [1])]


@pytest.fixture(scope="module")
def staged(data_dir: Path) -> RunnerEvaluate:
    task = load_task("cifar10-tiny")
    return RunnerEvaluate([FitnessRunner(task.with_overrides(steps=10), data_dir=data_dir),
                           FitnessRunner(task, data_dir=data_dir)])


def test_search_space_maps_to_valid_adamw_genomes() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    kinds = set()
    for _ in range(40):
        trial = study.ask()
        g = adamw_search_space(trial)
        kinds.add(g.schedule.kind)
        assert 1e-4 <= g.lr <= 1e-1 and 0.8 <= g.momentum["beta"] <= 0.99
        assert 0.9 <= g.second_moment["beta"] <= 0.9999
        assert g.weight_decay.kind == "decoupled" and 1e-5 <= g.weight_decay["value"] <= 0.3
        assert ("warmup_fraction" in trial.params) == (g.schedule.kind == "warmup_cosine")
        study.tell(trial, 0.0)
    assert kinds == set(SCHEDULE_KINDS)
    g = adamw_genome({"lr": 3e-3, "beta1": 0.9, "one_minus_beta2": 1e-3, "weight_decay": 0.01,
                      "schedule": "warmup_cosine", "warmup_fraction": 0.1})
    assert g.schedule["warmup_fraction"] == 0.1 and g.schedule["final_lr_fraction"] == 0.0


def test_tiny_search_then_resume_with_a_bigger_budget(staged: RunnerEvaluate,
                                                      tmp_path: Path) -> None:
    storage = tmp_path / "optuna.sqlite"
    runs0 = len(staged.runs)
    first = budget_matched_search(staged, STAGES, budget=6, storage_path=storage, seed=0,
                                  batch=2, n_startup_trials=1)
    assert first.paid >= 6 and first.paid <= 6 + 1
    assert first.n_trials >= 3 and first.best_trial is not None
    assert isinstance(first.genome, Genome) and first.best_value > 0.1
    best = next(t for t in first.trials if t["number"] == first.best_trial)
    assert best["stage_reached"] == 1 and best["value"] == first.best_value
    assert sum(t["paid"] for t in first.trials) == first.paid
    # every paid run is a real run: RunnerEvaluate saw exactly that many
    assert len(staged.runs) - runs0 == first.paid
    assert {r["key"] for r in staged.runs[runs0:]} <= {f"{KEY_PREFIX}{t['number']}" for t in
                                             first.trials}
    assert json.loads(json.dumps(first.to_dict()))["best_trial"] == first.best_trial

    more = budget_matched_search(staged, STAGES, budget=10, storage_path=storage, seed=0,
                                 batch=2, n_startup_trials=1)
    before = {t["number"]: t for t in first.trials}
    after = {t["number"]: t for t in more.trials}
    assert set(before) < set(after)  # the earlier trials are kept, new ones added
    for n, t in before.items():
        assert after[n]["params"] == t["params"] and after[n]["value"] == t["value"]
    assert more.paid == sum(t["paid"] for t in after.values()) >= 10
    assert more.paid - first.paid == sum(t["paid"] for n, t in after.items() if n not in before)
    assert len(staged.runs) - runs0 == more.paid
    assert more.best_value >= first.best_value
    # the resumed sampler does not replay the first session's draws
    new_params = [t["params"] for n, t in after.items() if n not in before]
    assert all(p not in [t["params"] for t in before.values()] for p in new_params)


class Killed(Exception):
    """Stands in for the process dying mid-trial."""


def test_a_trial_killed_mid_run_is_failed_and_re_asked(staged: RunnerEvaluate,
                                                       tmp_path: Path) -> None:
    storage = tmp_path / "killed.sqlite"
    calls = {"n": 0}

    def dies_in_second_stage(items: list[tuple[str, Genome]], seeds: Sequence[int], split: str,
                             stage: int = -1) -> dict[str, list[float]]:
        calls["n"] += 1
        if calls["n"] == 2:  # first trial's screen is done, the full stage never returns
            raise Killed
        return staged(items, seeds, split, stage)

    with pytest.raises(Killed):
        budget_matched_search(dies_in_second_stage, STAGES, budget=4, storage_path=storage,
                              seed=3, batch=1, n_startup_trials=1)
    study = optuna.load_study(study_name=STUDY_NAME,
                              storage=f"sqlite:///{storage}")
    [running] = study.get_trials(states=(TrialState.RUNNING,))
    assert running.user_attrs["paid"] == 1  # its screen run was paid and is counted

    result = budget_matched_search(staged, STAGES, budget=4, storage_path=storage, seed=3,
                                   batch=1, n_startup_trials=1)
    rows = {t["number"]: t for t in result.trials}
    assert rows[running.number]["state"] == "FAIL"
    retry = next(t for t in rows.values() if t["retry_of"] == running.number)
    assert retry["params"] == running.params and retry["state"] != "RUNNING"
    assert result.paid == sum(t["paid"] for t in rows.values()) >= 4
    assert rows[running.number]["paid"] == 1
    assert not [t for t in rows.values() if t["state"] == "RUNNING"]


def test_cli_search_writes_the_row_and_resumes(data_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from evoopt.cli import app, register_commands

    register_commands()
    args = ["baselines", "--task", "cifar10-tiny", "--optimizers", "", "--search", "optuna",
            "--seeds", "1", "--data-dir", str(data_dir), "-o", str(tmp_path / "bo")]
    out = CliRunner().invoke(app, [*args, "--budget", "4"])
    assert out.exit_code == 0, out.output
    first = json.loads((tmp_path / "bo.json").read_text())
    assert first["summary"][0]["optimizer"] == "optuna-adamw"
    assert first["summary"][0]["kind"] == "budget_matched"
    assert first["search"]["paid"] == 4 and first["search"]["stages"] == [["screen", [0]],
                                                                          ["full", [0]]]
    assert (tmp_path / "bo.optuna.sqlite").exists()
    finals = [r for r in first["runs"] if r["phase"] == "final"]
    assert [r["seed"] for r in finals] == [1000]
    out = CliRunner().invoke(app, [*args, "--budget", "6"])  # resumes the stored study
    assert out.exit_code == 0, out.output
    again = json.loads((tmp_path / "bo.json").read_text())
    assert again["search"]["paid"] == 6 and again["search"]["n_trials"] == 3
    searched = [r for r in again["runs"] if r["phase"] == "search"]
    assert len(searched) == 2  # only the new trial ran
    bad = CliRunner().invoke(app, ["baselines", "--search", "optuna"])
    assert bad.exit_code == 2 and "--budget" in bad.output
