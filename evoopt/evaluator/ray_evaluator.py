"""Ray evaluator: a pool of long-lived actors, each a FitnessWorker with its data kept loaded.

Actors, not tasks: Ray tasks that ask for GPUs get a fresh process each (re-import torch,
re-init CUDA, reload data); actors keep all of that (docs/background.md, "Ray facts").
Each actor holds at most ``max_inflight_per_worker`` requests; results are taken in completion
order with ``ray.wait(num_returns=1)``. A request whose actor died is re-queued on a fresh actor,
up to ``max_attempts`` dispatches, then recorded as an error result.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evoopt.evaluator.base import (
    EvalOutcome,
    EvalRequest,
    Evaluator,
    EvaluatorStats,
    PreflightError,
    error_result,
)
from evoopt.evaluator.ray_cluster import ensure_ray
from evoopt.evaluator.worker import FitnessWorker, RunnerFactory

log = logging.getLogger(__name__)


class FitnessActor:
    """The body of a Ray actor: a FitnessWorker labelled ``ray:<actor id>:pid<pid>``."""

    def __init__(
        self,
        data_dir: str | Path | None,
        num_threads: int,
        runner_factory: RunnerFactory | None,
    ) -> None:
        import ray

        actor_id = ray.get_runtime_context().get_actor_id() or "noactor"
        # Actor ids end in the job id; the leading hex digits are the distinguishing part.
        self.label = f"ray:{actor_id[:8]}:pid{os.getpid()}"
        self.worker = FitnessWorker(
            data_dir, num_threads=num_threads, runner_factory=runner_factory, label=self.label
        )

    def info(self) -> dict[str, Any]:
        import torch

        return {"label": self.label, "pid": os.getpid(), "torch_threads": torch.get_num_threads()}

    def evaluate(self, request: EvalRequest) -> tuple[dict[str, Any], str]:
        return self.worker.evaluate(request), self.label

    def preflight(self, tasks: list[dict[str, Any]]) -> list[str]:
        return self.worker.preflight(tasks)


@dataclass
class _Slot:
    """One place in the pool: the current actor handle and what it is running."""

    index: int
    handle: Any
    label: str = "ray:starting"
    pid: int | None = None
    inflight: int = 0
    generation: int = 0  # bumped each time the actor is replaced
    info_ref: Any = None  # pending info() call of a replacement actor


@dataclass
class _Job:
    request: EvalRequest
    attempts: int = 0  # dispatches so far


@dataclass
class _Running:
    """An in-flight call: where it went, to which incarnation of the slot, and when."""

    slot: _Slot
    job: _Job
    generation: int
    label: str
    started: float = field(default_factory=time.monotonic)


class RayEvaluator(Evaluator):
    """Evaluates on a pool of Ray actors; yields outcomes in completion order.

    Args:
        num_workers: pool size; default ``CPUs // cpus_per_worker`` of the Ray cluster (and at
            most ``GPUs / gpus_per_worker`` when ``gpus_per_worker > 0``), at least 1.
        address: join an existing cluster (``HOST:PORT`` of its head, or ``"auto"``);
            ``None`` starts a private local instance sized to this machine (unless Ray is
            already up in this process). See ``evoopt.evaluator.ray_cluster``.
        data_dir: passed to every worker's FitnessRunner.
        cpus_per_worker: Ray ``num_cpus`` per actor; also the actor's torch thread count.
        gpus_per_worker: Ray ``num_gpus`` per actor; fractional values share one GPU
            (e.g. 0.25: four evaluations per GPU; Ray packs but does not isolate them). On a
            local instance ``num_workers`` x ``cpus_per_worker`` / ``gpus_per_worker`` must fit
            its CPUs / GPUs (``ValueError`` at once otherwise, not a startup timeout).
        max_restarts: how many dead actors may be replaced over the evaluator's life
            (``None``: unlimited; each request still dies at most ``max_attempts`` times).
        max_attempts: dispatches per request before a dead-worker error result is recorded.
        max_inflight_per_worker: requests queued on one actor at once (1: strict; 2 hides the
            dispatch round trip at the cost of re-running both requests if that actor dies).
        runner_factory: alternative to ``FitnessRunner`` (picklable), for other backends/tests.
        hard_timeout_s: wall seconds after dispatch before a call is abandoned: its actor is
            killed and replaced and the result is ``status="timeout"`` (not retried). A backstop
            for hangs; the task's own ``time_limit_s`` is the normal limit. ``None``: off.
        startup_timeout_s: how long the constructor waits for the actors to come up.
        runtime_env: the Ray job's runtime environment, set when this evaluator starts or joins
            Ray (``ValueError`` if Ray is already up in this process): e.g. the user's task
            files as ``working_dir`` (``evoopt.campaign.orchestrator.user_code_env``); a
            relative ``data_dir`` is then made absolute, as workers run in that folder.

    The constructor blocks until every actor is up (so an import error surfaces here).
    Ray is shut down in ``close()`` only if this evaluator started it.
    """

    def __init__(
        self,
        num_workers: int | None = None,
        address: str | None = None,
        data_dir: str | Path | None = None,
        cpus_per_worker: float = 1,
        gpus_per_worker: float = 0.0,
        max_restarts: int | None = None,
        *,
        max_attempts: int = 3,
        max_inflight_per_worker: int = 1,
        runner_factory: RunnerFactory | None = None,
        hard_timeout_s: float | None = None,
        startup_timeout_s: float = 300.0,
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        if cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be > 0, got {cpus_per_worker}")
        if gpus_per_worker < 0:
            raise ValueError(f"gpus_per_worker must be >= 0, got {gpus_per_worker}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if max_inflight_per_worker < 1:
            raise ValueError("max_inflight_per_worker must be >= 1")

        t0 = time.perf_counter()
        # before `import ray`: see configure_token_auth
        self._owns_ray = ensure_ray(address, runtime_env)
        self.ray_init_s = time.perf_counter() - t0
        import ray

        resources = ray.cluster_resources()
        if num_workers is None:
            num_workers = max(1, int(resources.get("CPU", 1) // cpus_per_worker))
            if gpus_per_worker > 0:
                gpus = resources.get("GPU", 0.0)
                if gpus <= 0:
                    self._shutdown_ray_if_owned()
                    raise ValueError("gpus_per_worker > 0 but the Ray cluster has no GPU")
                num_workers = min(num_workers, max(1, int(math.floor(gpus / gpus_per_worker))))
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if address is None and num_workers * cpus_per_worker > resources.get("CPU", 0) + 1e-9:
            self._shutdown_ray_if_owned()
            raise ValueError(
                f"{num_workers} workers x {cpus_per_worker} CPUs exceed the {resources.get('CPU')}"
                " CPUs of the local Ray instance (lower num_workers or cpus_per_worker)"
            )
        # Same for GPUs: actors asking for more than the instance has would wait, unscheduled,
        # until startup_timeout_s (300 s) and then fail with a bare timeout.
        gpus_needed = num_workers * gpus_per_worker
        if address is None and gpus_needed > resources.get("GPU", 0) + 1e-9:
            self._shutdown_ray_if_owned()
            raise ValueError(
                f"{num_workers} workers x {gpus_per_worker:g} GPUs need {gpus_needed:g} GPUs; the "
                f"local Ray instance has {resources.get('GPU', 0):g} (lower num_workers or "
                "gpus_per_worker; 1/N packs N workers on one GPU)"
            )

        self.num_workers = int(num_workers)
        self.data_dir = str(data_dir) if data_dir is not None else None
        if runtime_env and runtime_env.get("working_dir") and self.data_dir is not None:
            self.data_dir = str(Path(self.data_dir).resolve())  # workers run in working_dir
        self.cpus_per_worker = cpus_per_worker
        self.gpus_per_worker = gpus_per_worker
        self.max_restarts = max_restarts
        self.max_attempts = max_attempts
        self.max_inflight_per_worker = max_inflight_per_worker
        self.hard_timeout_s = hard_timeout_s
        self._runner_factory = runner_factory
        self.runtime_env = runtime_env
        self._actor_cls = ray.remote(FitnessActor).options(
            num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker,
            max_restarts=0,  # replacement is explicit (see _replace) so retries are counted here
            max_task_retries=0,
        )
        self._queue: deque[_Job] = deque()
        self._inflight: dict[Any, _Running] = {}
        self._keys: set[str] = set()
        self._stats = EvaluatorStats()
        self._closed = False

        t1 = time.perf_counter()
        self._slots = [_Slot(i, self._new_actor()) for i in range(self.num_workers)]
        try:
            refs = [s.handle.info.remote() for s in self._slots]
            infos = ray.get(refs, timeout=startup_timeout_s)
        except Exception:
            self.close()
            raise
        for slot, info in zip(self._slots, infos, strict=True):
            slot.label, slot.pid = info["label"], info["pid"]
        self.actor_start_s = time.perf_counter() - t1

    # -- pool management -------------------------------------------------------------------

    def _new_actor(self) -> Any:
        threads = max(1, int(self.cpus_per_worker))
        return self._actor_cls.remote(self.data_dir, threads, self._runner_factory)

    def _replace(self, slot: _Slot) -> bool:
        """Kill ``slot``'s actor and start a fresh one; False when the restart budget is spent."""
        import ray

        with contextlib.suppress(Exception):  # already gone
            ray.kill(slot.handle, no_restart=True)
        slot.generation += 1
        slot.inflight = 0
        if self.max_restarts is not None and self._stats.worker_replacements >= self.max_restarts:
            slot.handle = None
            slot.label = f"{slot.label} (dead)"
            return False
        slot.handle = self._new_actor()
        slot.label, slot.pid = "ray:starting", None
        slot.info_ref = slot.handle.info.remote()
        self._stats.worker_replacements += 1
        return True

    def preflight(self, tasks: list[dict[str, Any]]) -> None:
        """Every live worker imports each task's code and validates its fields
        (:class:`PreflightError` listing the failures otherwise). A replacement actor runs in
        the same environment; should it fail to import a task after all, its evaluations are
        errors with the message."""
        import ray

        tasks = [dict(t) for t in tasks]
        reports = ray.get([s.handle.preflight.remote(tasks) for s in self._live_slots()])
        problems = [p for report in reports for p in report]
        if problems:
            raise PreflightError(problems)

    def _live_slots(self) -> list[_Slot]:
        return [s for s in self._slots if s.handle is not None]

    def _dispatch(self) -> None:
        """Hand queued jobs to actors with spare capacity (least loaded first)."""
        if self._queue:
            self._refresh_info()
        while self._queue:
            free = [s for s in self._live_slots() if s.inflight < self.max_inflight_per_worker]
            if not free:
                return
            slot = min(free, key=lambda s: (s.inflight, s.pid is None, s.index))
            job = self._queue.popleft()
            job.attempts += 1
            ref = slot.handle.evaluate.remote(job.request)
            slot.inflight += 1
            self._inflight[ref] = _Running(slot, job, slot.generation, slot.label)

    def _refresh_info(self) -> None:
        """Take the label and pid of replacement actors that have come up (non-blocking)."""
        import ray

        for slot in self._slots:
            if slot.info_ref is not None and ray.wait([slot.info_ref], timeout=0)[0]:
                with contextlib.suppress(Exception):  # died while starting: results() sees it
                    info = ray.get(slot.info_ref)
                    slot.label, slot.pid = info["label"], info["pid"]
                slot.info_ref = None

    def workers(self) -> list[dict[str, Any]]:
        """Current actors: ``{"index", "label", "pid", "inflight", "generation"}`` each.

        A replacement actor's label and pid are ``"ray:starting"``/``None`` until it is up.
        """
        self._refresh_info()
        return [
            {
                "index": s.index,
                "label": s.label,
                "pid": s.pid,
                "inflight": s.inflight,
                "generation": s.generation,
            }
            for s in self._slots
        ]

    # -- Evaluator interface ---------------------------------------------------------------

    def submit(self, request: EvalRequest) -> None:
        self._accept(request)
        self._queue.append(_Job(request))
        self._dispatch()

    def results(self) -> Iterator[EvalOutcome]:
        import ray
        from ray.exceptions import RayError, RayTaskError

        while self._queue or self._inflight:
            self._dispatch()
            if not self._inflight:
                # No live actor left (restart budget spent): fail what is queued.
                job = self._queue.popleft()
                message = "worker died: no live Ray worker left (max_restarts reached)"
                yield self._finish(job, error_result(job.request, message), "ray:none")
                continue
            ready, _ = ray.wait(list(self._inflight), num_returns=1, timeout=self._wait_timeout())
            if not ready:
                outcome = self._expire_overdue()
                if outcome is not None:
                    self._dispatch()
                    yield outcome
                continue
            ref = ready[0]
            run = self._inflight.pop(ref)
            current = run.generation == run.slot.generation
            if current:
                run.slot.inflight -= 1
            try:
                result, label = ray.get(ref)
                if current:
                    run.slot.label = label
            except RayTaskError as exc:  # the worker catches everything; this is a safety net
                result, label = error_result(run.job.request, f"worker raised: {exc}"), run.label
            except RayError as exc:  # actor died (RayActorError), object lost, ...
                outcome = self._on_worker_died(run, exc, current)
                if outcome is not None:
                    self._dispatch()
                    yield outcome
                continue
            self._dispatch()  # keep actors busy while the caller handles this outcome
            yield self._finish(run.job, result, label)

    def _wait_timeout(self) -> float | None:
        if self.hard_timeout_s is None:
            return None
        oldest = min(run.started for run in self._inflight.values())
        return max(0.0, oldest + self.hard_timeout_s - time.monotonic()) + 0.01

    def _expire_overdue(self) -> EvalOutcome | None:
        """Kill the actor of the oldest call past ``hard_timeout_s``; its result is a timeout."""
        assert self.hard_timeout_s is not None
        ref, run = min(self._inflight.items(), key=lambda item: item[1].started)
        if time.monotonic() - run.started < self.hard_timeout_s:
            return None
        del self._inflight[ref]
        # Other calls queued on the same actor go back to the queue without using an attempt.
        for other_ref, other in list(self._inflight.items()):
            if other.slot is run.slot and other.generation == run.generation:
                del self._inflight[other_ref]
                other.job.attempts -= 1
                self._queue.appendleft(other.job)
        if run.generation == run.slot.generation:
            self._stats.worker_deaths += 1
            self._replace(run.slot)
        message = (
            f"hard timeout: no result after {self.hard_timeout_s:g}s; worker {run.label} killed"
        )
        log.warning("%s on %s", message, run.job.request.key)
        return self._finish(
            run.job, error_result(run.job.request, message, status="timeout"), run.label
        )

    def _on_worker_died(self, run: _Running, exc: Exception, current: bool) -> EvalOutcome | None:
        """Replace the dead actor (once per death) and re-queue the job, or give up on it."""
        job = run.job
        if current:
            self._stats.worker_deaths += 1
            self._replace(run.slot)
        if job.attempts < self.max_attempts:
            log.warning(
                "worker %s died on %s (attempt %d); retrying",
                run.label,
                job.request.key,
                job.attempts,
            )
            self._stats.retries += 1
            self._queue.appendleft(job)
            return None
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        message = (
            f"worker died: the worker process died on each of {job.attempts} attempts "
            f"(last {run.label}: {type(exc).__name__}: {first_line})"
        )
        return self._finish(job, error_result(job.request, message), run.label)

    def _finish(self, job: _Job, result: dict[str, Any], label: str) -> EvalOutcome:
        self._keys.discard(job.request.key)
        self._stats.completed += 1
        self._stats.errors += result.get("status") == "error"
        return EvalOutcome(job.request.key, job.request, result, label, max(1, job.attempts))

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._inflight)

    @property
    def stats(self) -> EvaluatorStats:
        return self._stats

    def _shutdown_ray_if_owned(self) -> None:
        import ray

        self._closed = True
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()

    def close(self) -> None:
        """Kill the actors; shut Ray down if this evaluator started it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        import ray

        self._queue.clear()
        self._inflight.clear()
        self._keys.clear()
        if ray.is_initialized():
            for slot in getattr(self, "_slots", []):
                if slot.handle is not None:
                    with contextlib.suppress(Exception):
                        ray.kill(slot.handle, no_restart=True)
                    slot.handle = None
        self._shutdown_ray_if_owned()

    def __del__(self) -> None:  # best effort; close() is the real API
        try:
            if not getattr(self, "_closed", True) and self._owns_ray:
                self.close()
        except Exception:
            pass
