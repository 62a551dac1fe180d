"""What an evaluation worker runs: a FitnessRunner per task, kept loaded between requests."""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from evoopt.evaluator.base import EvalRequest, error_result, task_cache_key

# (task dict, data_dir) -> an object with evaluate(genome, seed=, split=[, prune=]) ->
# SeedResult-like.
RunnerFactory = Callable[[dict[str, Any], "str | Path | None"], Any]


def default_runner_factory(task: dict[str, Any], data_dir: str | Path | None) -> Any:
    """``make_runner(TaskSpec.from_dict(task), data_dir)``: a ``FitnessRunner`` for a task
    class, an ``ObjectiveRunner`` for an objective function."""
    from evoopt.fitness import TaskSpec, make_runner

    return make_runner(TaskSpec.from_dict(task), data_dir=data_dir)


class FitnessWorker:
    """Evaluates requests in this process, caching one runner per task (canonical JSON key).

    The runner cache is LRU-bounded by ``max_runners`` (each runner holds its staged data).
    ``evaluate`` never raises: any exception becomes a ``status="error"`` result.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        num_threads: int | None = None,
        runner_factory: RunnerFactory | None = None,
        max_runners: int = 4,
        label: str | None = None,
    ) -> None:
        if num_threads is not None:
            import torch

            torch.set_num_threads(max(1, int(num_threads)))
        self.data_dir = data_dir
        self.runner_factory: RunnerFactory = runner_factory or default_runner_factory
        self.max_runners = max(1, int(max_runners))
        self.label = label or f"serial:pid{os.getpid()}"
        self._runners: OrderedDict[str, Any] = OrderedDict()

    def runner_for(self, task: Mapping[str, Any]) -> Any:
        """The cached runner for ``task``, building (and loading data for) it on first use."""
        key = task_cache_key(task)
        runner = self._runners.get(key)
        if runner is None:
            runner = self.runner_factory(dict(task), self.data_dir)
            self._runners[key] = runner
            while len(self._runners) > self.max_runners:
                self._runners.popitem(last=False)
        else:
            self._runners.move_to_end(key)
        return runner

    def evaluate(self, request: EvalRequest) -> dict[str, Any]:
        """Run one request; returns the result dict (``SeedResult.to_dict()`` shape)."""
        t0 = time.perf_counter()
        try:
            runner = self.runner_for(request.task)
            # a prune rule only when there is one: a custom runner need not take the keyword
            extra = {"prune": request.prune} if request.prune is not None else {}
            rec = runner.evaluate(request.genome, seed=request.seed, split=request.split,
                                  **extra)
            result = rec.to_dict() if hasattr(rec, "to_dict") else dict(rec)
            if "fitness" not in result or "status" not in result:
                raise ValueError(f"runner returned a result without fitness/status: {result!r}")
            return result
        except Exception as exc:  # never fatal: an evaluation error is a result
            tb = traceback.format_exc(limit=-3)
            message = f"evaluation raised {type(exc).__name__}: {exc}\n{tb}"
            return error_result(request, message, time.perf_counter() - t0)

    def preflight(self, tasks: list[dict[str, Any]]) -> list[str]:
        """Import every task's code and validate its fields, here, before any evaluation is
        paid for: one line per task that cannot be (naming this worker), none when all can."""
        from evoopt.fitness import TaskSpec

        problems = []
        for task in {task_cache_key(t): t for t in tasks}.values():
            try:
                TaskSpec.from_dict(dict(task))
            except Exception as exc:  # noqa: BLE001 - reported to the driver, not raised here
                problems.append(f"task {task.get('name')!r} on worker {self.label} (host "
                                f"{socket.gethostname()}): {type(exc).__name__}: {exc}")
        return problems

    @property
    def cached_tasks(self) -> int:
        return len(self._runners)
