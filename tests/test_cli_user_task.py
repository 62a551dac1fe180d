"""The CLI on a user's own task (issue 19, S7): ``evaluate --task FILE.py:NAME`` (JSON keys,
``--set`` on user fields, errors), task TOMLs with an ``entry``, ``check`` and ``run --task``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import evoopt.cli
from evoopt.campaign.store import CampaignStore
from tests.test_campaign_user_task import (
    MICRO_TOML,
    isolated_imports,
    line_of,
    squash,
    user_task_folder,
    write_task,
)

REFERENCE = Path(__file__).parent / "data" / "builtin_reference" / "cifar10-tiny.json"
#: keys a result has beyond the built-in reference's (recorded before user tasks)
ADDED_TOP, ADDED_SEED = {"value", "value_std", "direction"}, {"value", "direction"}

evoopt.cli.register_commands()


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder outside the package with the user's ``my_task.py``."""
    yield from user_task_folder(tmp_path_factory, "cli-task")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(evoopt.cli.app, list(args))


def evaluate_json(*args: str) -> dict[str, Any]:
    result = invoke("evaluate", "adam", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def evoopt_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m evoopt ARGS`` in a fresh process (as a user runs it)."""
    return subprocess.run([sys.executable, "-m", "evoopt", *args], cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})


def test_evaluate_json_has_the_builtin_key_set(task_dir: Path) -> None:
    """A user objective's ``--json`` has the built-in reference's keys, plus its value and
    direction, at the top and per seed; the numbers are the objective's."""
    reference = json.loads(REFERENCE.read_text())
    d = evaluate_json("--task", f"{task_dir / 'my_task.py'}:objective", "-n", "2")
    assert set(d) == set(reference) | ADDED_TOP
    assert len(d["seeds"]) == 2
    for seed in d["seeds"]:
        assert set(seed) == set(reference["seeds"][0]) | ADDED_SEED
    assert (d["task"], d["direction"], d["status"]) == ("objective", "minimize", "ok")
    assert [s["seed"] for s in d["seeds"]] == [0, 1]
    for s in d["seeds"]:
        assert s["status"] == "ok" and s["steps"] == 20 and len(s["train_loss_curve"]) == 20
        assert s["value"] == s["val_loss"] > 0 and s["val_accuracy"] is None
        assert s["fitness"] == pytest.approx(squash(s["value"]), rel=1e-12)
    assert d["value"] == pytest.approx((d["seeds"][0]["value"] + d["seeds"][1]["value"]) / 2)
    assert d["value_std"] > 0 and d["genome"]["name"] == "adam"


def test_set_changes_a_user_field_and_refuses_unknown_ones(task_dir: Path) -> None:
    entry = f"{task_dir / 'my_task.py'}:objective"
    default = evaluate_json("--task", entry)["value"]
    assert evaluate_json("--task", entry, "--set", "dim=4")["value"] == default
    wider = evaluate_json("--task", entry, "--set", "dim=8")
    assert wider["status"] == "ok" and wider["value"] != default
    quiet = evaluate_json("--task", entry, "--set", "noise=0.0", "--set", "steps=7")
    assert quiet["value"] != default and quiet["seeds"][0]["steps"] == 7
    unknown = invoke("evaluate", "adam", "--task", entry, "--set", "hidden_units=3")
    assert unknown.exit_code == 2
    assert "'hidden_units'" in unknown.output and "unknown field" in unknown.output
    assert "dim" in unknown.output and "Traceback" not in unknown.output
    typed = invoke("evaluate", "adam", "--task", entry, "--set", 'dim="wide"')
    assert typed.exit_code == 2 and "'dim'" in typed.output and "integer" in typed.output


def test_a_task_toml_with_an_entry_and_a_user_field(task_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``entry = "./my_task.py:objective"`` resolves against the task file (not the cwd); its
    user field and steps are the run's."""
    folder = tmp_path / "tasks"
    write_task(folder)
    toml = folder / "wide.toml"
    toml.write_text('name = "linreg-wide"\nentry = "./my_task.py:objective"\nsteps = 15\n'
                    'dim = 8\n')
    monkeypatch.chdir(tmp_path)  # no my_task.py here
    with isolated_imports(folder):
        d = evaluate_json("--task", str(toml.relative_to(tmp_path)))
        same = evaluate_json("--task", f"{task_dir / 'my_task.py'}:objective", "--set", "dim=8",
                             "--set", "steps=15")
    assert d["task"] == "linreg-wide" and d["seeds"][0]["steps"] == 15
    assert d["status"] == "ok" and d["direction"] == "minimize"
    # streams are seeded by the task's name: the same fields under the entry's name agree
    renamed = folder / "objective.toml"
    renamed.write_text('name = "objective"\nentry = "./my_task.py:objective"\nsteps = 15\n'
                       'dim = 8\n')
    with isolated_imports(folder):
        again = evaluate_json("--task", str(renamed))
    assert again["value"] == same["value"]


def test_a_raising_objective_prints_the_users_file_and_line(task_dir: Path) -> None:
    entry = f"{task_dir / 'my_task.py'}:raises"
    where = f"my_task.py:{line_of('RAISES_LINE')}"
    d = evaluate_json("--task", entry)
    assert d["status"] == "error" and d["seeds"][0]["status"] == "error"
    assert "RuntimeError: user bug here" in d["seeds"][0]["message"]
    assert where in d["seeds"][0]["message"] and where in d["message"]
    assert d["value"] is None and d["seeds"][0]["value"] is None
    table = evoopt_cli("evaluate", "adam", "--task", entry, cwd=task_dir)  # 200 columns
    assert table.returncode == 0, table.stderr
    assert f"RuntimeError: user bug here (at {where} in raises)" in table.stdout
    assert "status error" in table.stdout


def test_a_missing_task_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.py"
    for command in (["evaluate", "adam"], ["run", "quickstart", "--serial", "--out",
                                           str(tmp_path / "out")]):
        result = invoke(*command, "--task", f"{missing}:objective")
        assert result.exit_code == 2, result.output
        assert f"file not found: {missing}" in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # refused before a store was made


def test_check_a_campaign_with_a_user_task(task_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "campaign"
    write_task(folder)
    good = folder / "good.toml"
    good.write_text(MICRO_TOML.format(task="./my_task.py:objective"))
    result = invoke("check", str(good))
    assert result.exit_code == 0, result.output
    assert "campaign 'user-micro' is valid" in result.output and "2 stage(s)" in result.output
    bad = folder / "bad.toml"
    bad.write_text(MICRO_TOML.format(task="./my_task.py:objective").replace(
        "[fitness]\n", "[fitness]\noverrides = { width = 3 }\n"))
    result = invoke("check", str(bad))
    assert result.exit_code == 2 and "'width'" in result.output and "unknown field" in (
        result.output)
    gone = folder / "gone.toml"
    gone.write_text(MICRO_TOML.format(task="./missing.py:objective"))
    result = invoke("check", str(gone))
    assert result.exit_code == 2 and f"file not found: {folder / 'missing.py'}" in result.output


def test_run_quickstart_on_a_user_task_end_to_end(task_dir: Path, tmp_path: Path) -> None:
    """``evoopt run quickstart --task FILE.py:objective --set steps=10 --serial``, from the
    task's folder, as the README has it (about a minute)."""
    out = tmp_path / "qs"
    proc = evoopt_cli("run", "quickstart", "--task", "./my_task.py:objective", "--set",
                      "steps=10", "--serial", "--out", str(out), cwd=task_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with CampaignStore(out, readonly=True) as store:
        config, state = store.get_meta("config"), store.get_meta("state")
        evals, summary = store.evaluations(), store.get_meta("summary")
        generations = store.generations()
    assert state == "finished" and len(generations) == 5
    assert config["task"] == f"{task_dir / 'my_task.py'}:objective"
    assert config["task_overrides"] == {"steps": 10}
    assert {e["steps"] for e in evals if e["stage"] == "full" and e["status"] == "ok"} == {10}
    assert {e["steps"] for e in evals if e["stage"] == "screen" and e["status"] == "ok"} == {5}
    ok = [e for e in evals if e["status"] == "ok"]
    assert len(ok) > 50 and all(e["value"] == e["val_loss"] > 0 for e in ok)
    assert (out / "best_optimizer.py").is_file()
    assert f"evaluations: {summary['evaluations_done']} paid" in proc.stdout
    assert summary["evaluations_done"] == len(evals)
    assert f"winner {summary['winner']['uid']}" in proc.stdout


def test_run_stores_the_users_file_and_line_of_a_failure(task_dir: Path, tmp_path: Path) -> None:
    """An objective that raises on the test split: the campaign finishes (test takes no part in
    selection) and the stored test runs hold the user's file:line."""
    folder = tmp_path / "campaign"
    write_task(folder)
    toml = folder / "micro.toml"
    toml.write_text(MICRO_TOML.format(task="./my_task.py:objective"))
    out = tmp_path / "out"
    proc = evoopt_cli("run", str(toml), "--task", "./my_task.py:fails_on_test", "--serial",
                      "--out", str(out), cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with CampaignStore(out, readonly=True) as store:
        evals = store.evaluations()
    tests = [e for e in evals if e["split"] == "test"]
    where = f"my_task.py:{line_of('FAILS_ON_TEST_LINE')} in fails_on_test"
    assert tests and all(e["status"] == "error" and e["value"] is None for e in tests)
    assert all(where in e["message"] and "no test data" in e["message"] for e in tests)
    assert all(e["status"] == "ok" for e in evals if e["split"] == "val" and e["stage"] == "final")
