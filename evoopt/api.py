"""The Python API: evolve an optimizer for your own task from a script or a notebook.

```python
import evoopt

@evoopt.objective(direction="minimize", steps=200, seeds=2)
def objective(trial: evoopt.Trial) -> float:
    ...                                   # build the model, train with
    opt = trial.make_optimizer(params)    # the candidate optimizer, return a loss

if __name__ == "__main__":               # workers import this file: guard the campaign
    result = evoopt.run_campaign(objective, "quickstart")
    print(result.exported)                # runs/quickstart/best_optimizer.py
```

``run_campaign`` does what ``evoopt run CONFIG --task ENTRY`` does, without the progress display.
The task is handed to workers as an entry (``module:name`` or ``/abs/file.py:name``) that they
import, so it must be defined at module level.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evoopt.campaign.config import CampaignConfig, anchor_task, load_config, parse_config
from evoopt.campaign.orchestrator import CampaignRunner, make_evaluator, preflight
from evoopt.fitness.entry import entry_of


@dataclass(frozen=True)
class CampaignResult:
    """A finished campaign: its summary (what ``evoopt run`` prints), its directory, the
    exported winner (``best_optimizer.py``, None when there is none) and the HTML report."""

    summary: dict[str, Any]
    directory: Path
    exported: Path | None
    report: Path | None


def _task_entry(task: Any) -> str:
    """A task for the config: a string as given, else a function or class as its entry."""
    return str(task) if isinstance(task, str | Path) else entry_of(task)


def _config(config: str | Path | Mapping[str, Any], task: str,
            overrides: Mapping[str, Any] | None) -> CampaignConfig:
    """The campaign ``config`` names or holds, selecting on ``task``."""
    if isinstance(config, Mapping):
        data = copy.deepcopy(dict(config))
        fitness = data.setdefault("fitness", {})
        for key in ("tasks", "weights"):
            fitness.pop(key, None)
        fitness["task"] = anchor_task(str(task), None)
        if overrides:
            fitness["overrides"] = {**fitness.get("overrides", {}), **overrides}
        return parse_config(data, "run_campaign config", Path.cwd())
    return load_config(config, task=str(task), task_overrides=dict(overrides or {}))


def run_campaign(task: Callable[..., Any] | type | str,
                 config: str | Path | Mapping[str, Any] = "quickstart", *,
                 out: str | Path | None = None, data_dir: str | Path | None = None,
                 address: str | None = None, serial: bool = False,
                 overrides: Mapping[str, Any] | None = None, report: bool = True,
                 progress: Callable[[dict[str, Any]], None] | None = None) -> CampaignResult:
    """Run a campaign that selects on ``task`` and return its result.

    ``task``: an objective function, a ``TrainingTask`` subclass (either defined at module
    level), or a task name, task file or entry string. ``config``: a shipped campaign's name,
    a campaign file, or a dict of its tables (``{"campaign": {...}, "stages": [...]}``); its
    selection task(s) are replaced by ``task``. ``overrides``: task fields for every stage
    (``{"steps": 100}``). ``out``: the campaign directory (default ``runs/<name>``).
    ``serial``: evaluate in this process instead of a local Ray pool. ``progress``: called
    with counters as evaluations finish. Raises what ``evoopt run`` reports as errors
    (``ValueError`` subclasses for bad configs, tasks and data)."""
    cfg = _config(config, _task_entry(task), overrides)
    directory = Path(out) if out is not None else Path("runs") / cfg.name
    data = None if data_dir is None else str(data_dir)
    preflight(cfg, data)
    evaluator = make_evaluator(cfg, data, address=address, serial=serial)
    try:
        with CampaignRunner(cfg, directory, data_dir=data, evaluator=evaluator,
                            progress=progress) as runner:
            summary = runner.run()
    finally:
        evaluator.close()
    written = None
    if report:
        from evoopt.report.html import write_report

        written = write_report(directory)
    exported = directory / "best_optimizer.py"
    return CampaignResult(summary, directory, exported if exported.is_file() else None,
                          written)


__all__ = ["CampaignResult", "run_campaign"]
