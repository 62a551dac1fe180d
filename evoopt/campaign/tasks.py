"""The tasks a campaign's evaluations run: each fidelity stage's mix and each held-out task."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from evoopt.campaign.config import CampaignConfig
from evoopt.fitness import check_task_data, load_task
from evoopt.fitness.multitask import TaskMix, weights_for


def stage_tasks(config: CampaignConfig) -> list[TaskMix]:
    """The tasks of each fidelity stage (each selection task with the campaign's overrides, then
    the stage's), weighted as the config says."""
    names = config.fitness.selection_tasks
    base = TaskMix(tuple(load_task(n) for n in names), weights_for(names, config.fitness.weights))
    base = base.with_overrides(**config.fitness.overrides)
    return [base.with_overrides(**s.overrides) for s in config.stages]


def heldout_tasks(config: CampaignConfig) -> list[TaskMix]:
    """Each held-out task (``final.heldout_tasks``) as shipped, a mix of one."""
    return [TaskMix.single(load_task(n)) for n in config.final.heldout_tasks]


def check_stage_data(mixes: Sequence[TaskMix], data_dir: str | None) -> None:
    """The data each distinct task reads is present, readable and large enough for its split
    (DataError otherwise); the data is loaded once and cached for later runs."""
    tasks = [t for mix in mixes for t in mix.tasks]
    for task in {json.dumps(t.to_dict(), sort_keys=True): t for t in tasks}.values():
        check_task_data(task, data_dir)


@dataclass(frozen=True)
class CampaignTasks:
    """A campaign's tasks, loaded once: one mix per fidelity stage, one per held-out task."""

    stages: tuple[TaskMix, ...]
    heldout: tuple[TaskMix, ...]

    @classmethod
    def load(cls, config: CampaignConfig) -> CampaignTasks:
        """Load every task ``config`` names (TaskError, a ``ValueError``, when one is bad)."""
        return cls(tuple(stage_tasks(config)), tuple(heldout_tasks(config)))

    @property
    def final(self) -> TaskMix:
        """The last stage's mix: where the finish re-measures candidates."""
        return self.stages[-1]

    def task_dicts(self) -> list[dict]:
        """Each distinct task the campaign runs (every stage's and held-out), as a dict."""
        tasks = [t for mix in (*self.stages, *self.heldout) for t in mix.tasks]
        return list({json.dumps(t.to_dict(), sort_keys=True): t.to_dict()
                     for t in tasks}.values())

    def check_data(self, data_dir: str | None) -> None:
        """:func:`check_stage_data` for every stage and held-out task."""
        check_stage_data([*self.stages, *self.heldout], data_dir)


__all__ = ["CampaignTasks", "check_stage_data", "heldout_tasks", "stage_tasks"]
