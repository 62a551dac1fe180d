"""The Python API (issue 19, S7): ``evoopt.run_campaign`` on a user's objective, end to end on
the serial evaluator; objectives workers could not import are refused; ``import evoopt`` stays
light."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import evoopt
from evoopt.campaign.store import CampaignStore
from evoopt.fitness.task import TaskError
from tests.test_campaign_user_task import (
    TASK_SOURCE,
    isolated_imports,
    micro_config,
    squash,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def user_module(tmp_path: Path) -> Iterator[ModuleType]:
    """The user's task file imported as a plain module (a real name and ``__file__``) from a
    folder on ``sys.path``, as in a user's project."""
    folder = tmp_path / "project"
    folder.mkdir()
    name = f"user_api_task_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(textwrap.dedent(TASK_SOURCE))
    with isolated_imports(folder):
        sys.path.insert(0, str(folder))
        yield importlib.import_module(name)


def small_config(**changes: dict[str, Any]) -> dict[str, Any]:
    """The micro campaign without the test split or tuned baselines."""
    return micro_config("replaced-by-run_campaign", final={"test_split": False, "baselines": []},
                        **changes)


def test_run_campaign_on_an_imported_objective_end_to_end(user_module: ModuleType,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "campaign"
    result = evoopt.run_campaign(user_module.objective, small_config(), serial=True, out=out,
                                 overrides={"steps": 12})
    assert result.directory == out
    assert result.exported == out / "best_optimizer.py" and result.exported.is_file()
    assert result.summary["winner"]["class_name"] in result.exported.read_text()
    assert result.report is not None and result.report.is_file()
    assert result.summary["winner"]["uid"] in result.report.read_text()
    with CampaignStore(out, readonly=True) as store:
        config, summary = store.get_meta("config"), store.get_meta("summary")
        evals, state = store.evaluations(), store.get_meta("state")
    assert state == "finished" and summary == result.summary
    # the task is handed to workers as the module entry; the overrides are the campaign's
    assert config["task"] == f"{user_module.__name__}:objective"
    assert config["task_overrides"] == {"steps": 12}
    ok = [e for e in evals if e["status"] == "ok"]
    assert len(evals) > 10 and len(ok) >= len(evals) // 2
    assert {e["steps"] for e in ok if e["stage"] == "full"} == {12}
    assert {e["steps"] for e in ok if e["stage"] == "screen"} == {6}
    assert all(e["fitness"] == pytest.approx(squash(e["value"]), rel=1e-12) for e in ok)
    assert result.summary["evaluations_done"] == len(evals)


def _outer() -> Any:
    def nested(trial: Any) -> float:
        return 0.0

    return nested


@pytest.mark.parametrize(("objective", "why"), [
    (lambda trial: 0.0, "a lambda has no name workers can import"),
    (_outer(), "`_outer.<locals>.nested` is defined inside a function"),
])
def test_objectives_workers_cannot_import_are_refused(objective: Any, why: str,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "never"
    with pytest.raises(TaskError) as caught:
        evoopt.run_campaign(objective, small_config(), serial=True, out=out)
    assert why in str(caught.value) and "at module level" in str(caught.value)
    assert caught.value.field == "entry"
    assert not out.exists()  # refused before a store (or a worker) exists


def test_a_script_entry_guarded_by_main(tmp_path: Path) -> None:
    """A script defining its objective and calling ``run_campaign`` under
    ``if __name__ == "__main__":`` runs; its objective goes to workers as ``/abs/script.py:NAME``
    (the guard keeps the re-import from starting another campaign)."""
    script = tmp_path / "train_script.py"
    config = small_config(campaign={"generations": 1, "population": 2})
    script.write_text(textwrap.dedent(TASK_SOURCE) + textwrap.dedent(f'''

        if __name__ == "__main__":
            import json
            result = evoopt.run_campaign(objective, {config!r}, serial=True,
                                         out={str(tmp_path / "out")!r}, report=False)
            print(json.dumps({{"exported": str(result.exported), "report": result.report}}))
        '''))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert printed == {"exported": str(tmp_path / "out" / "best_optimizer.py"), "report": None}
    with CampaignStore(tmp_path / "out", readonly=True) as store:
        assert store.get_meta("config")["task"] == f"{script.resolve()}:objective"
        assert store.get_meta("state") == "finished"
        assert len(store.generations()) == 1


def test_import_evoopt_alone_does_not_import_torch_or_ray() -> None:
    code = ("import sys, json, evoopt\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray', 'numpy'})\n"
            "assert callable(evoopt.objective)\n"  # the public API, imported on first use
            "print(json.dumps([heavy, 'torch' in sys.modules]))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    before, after = json.loads(proc.stdout)
    assert before == [] and after is True
