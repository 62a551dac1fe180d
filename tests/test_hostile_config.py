"""Issue 20: campaign configs that would fail late (hours in) or mislead are refused up front, by
``load_config`` and so by ``evoopt run`` and ``evoopt check``, each with a one-line error naming
the field. Every case passed validation before the fix; each is checked through load_config and
through the real ``evoopt check`` command (in-process, typer's CliRunner)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import evoopt.cli
from evoopt.campaign.config import MAX_REFINE_EVALUATIONS, ConfigError, load_config
from evoopt.fitness import load_task
from tests.conftest_campaign import tiny_config

evoopt.cli.register_commands()
_runner = CliRunner()

def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml_value(x)}' for k, x in v.items()) + " }"
    return repr(v)


def _toml_lines(table: dict[str, Any]) -> list[str]:
    return [f"{k} = {_toml_value(v)}" for k, v in table.items()]


def write_toml(path: Path, data: dict[str, Any], *, sections: bool = True) -> Path:
    """``data`` as a TOML file: a campaign's sections (and ``[[stages]]``), or with
    ``sections=False`` one flat table (a task file); the few value kinds these hold."""
    if not sections:
        lines = _toml_lines(data)
    else:
        lines = []
        for section, table in data.items():
            for t in table if section == "stages" else [table]:
                lines += [f"[[{section}]]" if section == "stages" else f"[{section}]",
                          *_toml_lines(t)]
    path.write_text("\n".join(lines) + "\n")
    assert tomllib.loads(path.read_text()) == data  # the writer wrote what was meant
    return path


def task_file(path: Path, spec: dict[str, Any]) -> str:
    """A task file of ``spec`` (a TaskSpec dict; None fields left out)."""
    write_toml(path, {k: v for k, v in spec.items() if v is not None}, sections=False)
    return str(path)


# (changes to the tiny campaign, fragments of the error) per refused case
CASES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "lr factor 1e308": ({"final": {"lr_factors": [0.5, 1e308]}},
                        ["final.lr_factors:", "[0.001, 1000]", "1e+308"]),
    "lr factor too small": ({"final": {"lr_factors": [1e-300, 1.0]}},
                            ["final.lr_factors:", "[0.001, 1000]"]),
    "lr factor makes a baseline's lr invalid": (
        {"final": {"lr_factors": [1.0, 1000.0], "baselines": ["nesterov-cosine"]}},
        ["final.lr_factors:", "nesterov-cosine", "not a usable lr"]),
    "mutation rates that overflow": (
        {"variation": {"mutation_rates": {"perturb_hparam": 1e308, "add_term": 1e308}}},
        ["variation.mutation_rates:", "sum to inf"]),
    "two identical stages": (
        {"stages": [{"name": "a", "seeds": [0], "overrides": {"steps": 20}},
                    {"name": "b", "seeds": [0], "overrides": {"steps": 20}, "hurdle": "median"}]},
        ["stages[1]:", "same evaluations as stages[0]", "'a'"]),
    "identical stages, seeds reordered and an override that changes nothing": (
        {"stages": [{"name": "a", "seeds": [0, 1]},
                    {"name": "b", "seeds": [1, 0], "overrides": {"steps": 40}}]},
        ["stages[1]:", "same evaluations as stages[0]"]),
    "budget_matched_budget without optuna": (
        {"final": {"budget_matched_budget": 50}},
        ["final.budget_matched_budget:", 'final.budget_matched = "optuna"']),
    "unbounded refine.evaluations": (
        {"refine": {"evaluations": 10**18}},
        ["refine.evaluations:", f"[0, {MAX_REFINE_EVALUATIONS}]"]),
    "refine.evaluations above the search budget": (
        {"campaign": {"max_evaluations": 100}, "refine": {"evaluations": 500}},
        ["refine.evaluations:", "campaign.max_evaluations (100)"]),
}


def check(path: Path) -> Result:
    return _runner.invoke(evoopt.cli.app, ["check", str(path)])


def assert_refused(tmp_path: Path, data: dict[str, Any], fragments: list[str]) -> None:
    path = write_toml(tmp_path / "c.toml", data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    result = check(path)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    flat = " ".join(result.output.split())
    assert "Traceback" not in flat and "error:" in flat
    for fragment in fragments:
        assert " ".join(fragment.split()) in flat, (fragment, result.output)


@pytest.mark.parametrize("case", list(CASES))
def test_a_config_that_would_fail_late_or_mislead_is_refused(case: str, tmp_path: Path) -> None:
    changes, fragments = CASES[case]
    assert_refused(tmp_path, tiny_config(**changes), fragments)


def test_a_renamed_copy_of_the_selection_task_is_not_held_out(tmp_path: Path) -> None:
    """The selection task's spec under another name (and description) is refused as held out:
    as shipped, and as the campaign's overrides make it (steps 40, width 16, batch 128)."""
    shipped = load_task("cifar10-tiny")
    copies = {"fresh-task": shipped,
              "other": shipped.with_overrides(steps=40, width=16, batch_size=128)}
    for name, spec in copies.items():
        path = task_file(tmp_path / f"{name}.toml",
                         {**spec.to_dict(), "name": name, "description": "held out (really?)"})
        assert load_task(path).name == name
        assert_refused(tmp_path, tiny_config(final={"heldout_tasks": [path]}),
                       ["final.heldout_tasks[0]:", f"{name!r}", "under another name"])


def test_the_bounds_leave_sane_configs_alone(tmp_path: Path) -> None:
    """Near the bounds, and the cases' fixes, load and check."""
    for changes in ({"final": {"lr_factors": [0.001, 1000.0]}},
                    {"variation": {"mutation_rates": {"perturb_hparam": 1e300}}},
                    {"stages": [{"name": "a", "seeds": [0], "overrides": {"steps": 20}},
                                {"name": "b", "seeds": [0], "hurdle": "median"}]},
                    {"final": {"budget_matched": "optuna", "budget_matched_budget": 50}},
                    {"campaign": {"max_evaluations": 100}, "refine": {"evaluations": 100}},
                    {"refine": {"evaluations": MAX_REFINE_EVALUATIONS}},
                    {"final": {"heldout_tasks": ["teacher-mlp-heldout-cpu"]}}):
        path = write_toml(tmp_path / "ok.toml", tiny_config(**changes))
        load_config(path)
        result = check(path)
        assert result.exit_code == 0, (changes, result.output)
