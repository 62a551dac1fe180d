"""Evaluator interface: requests, outcomes and the protocol both evaluators implement."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# Statuses a result dict may carry (mirrors evoopt.fitness; "error" is what this stage adds).
ERROR_STATUS = "error"


def _plain(obj: Any, what: str) -> dict[str, Any]:
    """A plain dict from a dict or an object with ``to_dict()`` (Genome, TaskSpec)."""
    if hasattr(obj, "to_dict") and not isinstance(obj, Mapping):
        obj = obj.to_dict()
    if not isinstance(obj, Mapping):
        raise TypeError(f"EvalRequest.{what} must be a dict (or have to_dict()), got {type(obj)!r}")
    return dict(obj)


class PreflightError(ValueError):
    """A worker cannot run a task (its code does not import there, or its fields are invalid);
    raised before any evaluation is paid for. ``problems``: one line per (worker, task)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        shown = "; ".join(self.problems[:3])
        more = f" (and {len(self.problems) - 3} more)" if len(self.problems) > 3 else ""
        super().__init__(f"cannot run the campaign's tasks: {shown}{more}. No evaluation was "
                         "run")


@dataclass(frozen=True)
class EvalRequest:
    """One (genome, task, seed, split) evaluation; plain, picklable data.

    ``key`` identifies the evaluation to the caller (e.g. ``"uid/stage/seed"``) and must be
    unique among the requests pending in one evaluator. ``genome`` and ``task`` are the
    ``to_dict()`` forms of a Genome and a TaskSpec (objects with ``to_dict`` are converted).
    ``prune``: a :class:`~evoopt.fitness.curves.PruneRule`'s dict (the reference run's curve on
    this task and seed), or None to run to the end.
    """

    key: str
    genome: dict[str, Any]
    task: dict[str, Any]
    seed: int = 0
    split: str = "val"
    prune: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise ValueError(f"EvalRequest.key must be a non-empty string, got {self.key!r}")
        object.__setattr__(self, "genome", _plain(self.genome, "genome"))
        object.__setattr__(self, "task", _plain(self.task, "task"))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"EvalRequest.seed must be an int, got {self.seed!r}")
        if not isinstance(self.split, str) or not self.split:
            raise ValueError(f"EvalRequest.split must be a non-empty string, got {self.split!r}")
        if self.prune is not None:
            object.__setattr__(self, "prune", _plain(self.prune, "prune"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "genome": self.genome,
            "task": self.task,
            "seed": self.seed,
            "split": self.split,
            "prune": self.prune,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvalRequest:
        return cls(
            key=d["key"],
            genome=d["genome"],
            task=d["task"],
            seed=d.get("seed", 0),
            split=d.get("split", "val"),
            prune=d.get("prune"),
        )


@dataclass(frozen=True)
class EvalOutcome:
    """A finished evaluation.

    ``result`` is ``SeedResult.to_dict()`` (or an error result of the same shape), whose
    ``threads`` is the torch CPU thread count the run trained with (fitness is deterministic
    per thread count; 0 when no run started), for the caller to store with the evaluation;
    ``worker`` names the process that produced it (``"serial:pid123"``,
    ``"ray:1a2b3c4d:pid456"``); ``attempts`` counts dispatches (>1 after a worker died).
    """

    key: str
    request: EvalRequest
    result: dict[str, Any]
    worker: str
    attempts: int = 1

    @property
    def fitness(self) -> float:
        return float(self.result["fitness"])

    @property
    def status(self) -> str:
        return str(self.result.get("status", ERROR_STATUS))


def task_cache_key(task: Mapping[str, Any]) -> str:
    """Canonical JSON of a task dict: the key under which workers cache a FitnessRunner."""
    return json.dumps(task, sort_keys=True, separators=(",", ":"), default=str)


def worst_fitness() -> float:
    """``evoopt.fitness.WORST_FITNESS`` (imported lazily: torch is heavy for a driver)."""
    from evoopt.fitness import WORST_FITNESS

    return float(WORST_FITNESS)


def error_result(
    request: EvalRequest, message: str, wall_time_s: float = 0.0, status: str = ERROR_STATUS
) -> dict[str, Any]:
    """``SeedResult.to_dict()`` of a failed run (``status`` "error" or "timeout", worst
    fitness)."""
    from evoopt.fitness import SeedResult

    rec = SeedResult(
        seed=request.seed,
        status=status,
        message=message,
        split=request.split,
        wall_time_s=float(wall_time_s),
    )
    rec.fitness = worst_fitness()
    return rec.to_dict()


@dataclass
class EvaluatorStats:
    """Counters an evaluator keeps (for campaign timings)."""

    submitted: int = 0
    completed: int = 0
    errors: int = 0
    retries: int = 0
    worker_deaths: int = 0
    worker_replacements: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "submitted": self.submitted,
            "completed": self.completed,
            "errors": self.errors,
            "retries": self.retries,
            "worker_deaths": self.worker_deaths,
            "worker_replacements": self.worker_replacements,
        }


class Evaluator(ABC):
    """Runs EvalRequests and yields EvalOutcomes in completion order.

    ``submit`` queues a request (never blocks on an evaluation); ``results()`` yields an
    outcome per submitted request until nothing is pending, including requests submitted
    while iterating; ``pending`` counts requests submitted but not yet yielded.
    """

    num_workers: int = 1

    @abstractmethod
    def submit(self, request: EvalRequest) -> None: ...

    @abstractmethod
    def results(self) -> Iterator[EvalOutcome]: ...

    @property
    @abstractmethod
    def pending(self) -> int: ...

    @abstractmethod
    def close(self) -> None: ...

    @property
    @abstractmethod
    def stats(self) -> EvaluatorStats: ...

    def preflight(self, tasks: list[dict[str, Any]]) -> None:
        """Raise :class:`PreflightError` unless every worker can import each task's code and
        validate its fields (``tasks``: ``TaskSpec.to_dict()`` forms), before any evaluation
        is submitted. The default checks nothing; both evaluators override it."""
        return None

    def _accept(self, request: EvalRequest) -> None:
        """Checks shared by every ``submit``: open evaluator, key not already pending."""
        if self._closed:
            raise RuntimeError("evaluator is closed")
        if request.key in self._keys:
            raise ValueError(f"request key {request.key!r} is already pending")
        self._keys.add(request.key)
        self._stats.submitted += 1

    def submit_many(self, requests: Iterable[EvalRequest]) -> None:
        for request in requests:
            self.submit(request)

    def evaluate_all(self, requests: Iterable[EvalRequest]) -> list[EvalOutcome]:
        """Submit ``requests`` and collect every pending outcome (completion order)."""
        self.submit_many(requests)
        return list(self.results())

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
