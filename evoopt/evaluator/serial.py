"""In-process evaluator: runs requests one at a time, lazily, in submission order."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path

from evoopt.evaluator.base import (
    EvalOutcome,
    EvalRequest,
    Evaluator,
    EvaluatorStats,
    PreflightError,
)
from evoopt.evaluator.worker import FitnessWorker, RunnerFactory


class SerialEvaluator(Evaluator):
    """Evaluates in this process when ``results()`` is iterated (completion = submission order).

    ``num_threads`` (optional) sets torch's intra-op thread count for the evaluations and
    restores the previous value afterwards.
    """

    num_workers = 1

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        num_threads: int | None = None,
        runner_factory: RunnerFactory | None = None,
    ) -> None:
        self.num_threads = num_threads
        self.worker = FitnessWorker(data_dir, runner_factory=runner_factory)
        self._queue: deque[EvalRequest] = deque()
        self._keys: set[str] = set()
        self._stats = EvaluatorStats()
        self._closed = False

    def preflight(self, tasks: list[dict]) -> None:
        problems = self.worker.preflight(tasks)
        if problems:
            raise PreflightError(problems)

    def submit(self, request: EvalRequest) -> None:
        self._accept(request)
        self._queue.append(request)

    def results(self) -> Iterator[EvalOutcome]:
        while self._queue:
            request = self._queue.popleft()
            result = self._run(request)
            self._keys.discard(request.key)
            self._stats.completed += 1
            self._stats.errors += result.get("status") == "error"
            yield EvalOutcome(request.key, request, result, self.worker.label)

    def _run(self, request: EvalRequest) -> dict:
        if self.num_threads is None:
            return self.worker.evaluate(request)
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(max(1, int(self.num_threads)))
        try:
            return self.worker.evaluate(request)
        finally:
            torch.set_num_threads(before)

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def stats(self) -> EvaluatorStats:
        return self._stats

    def close(self) -> None:
        self._closed = True
        self._queue.clear()
        self._keys.clear()
