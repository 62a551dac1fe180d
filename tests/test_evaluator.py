"""Evaluator stage: serial and Ray evaluators on the real tiny fitness task.

One Ray instance (2 one-CPU actors) serves the whole module. Data: ``shared/data/cifar10-mini``
beside the checkout, or ``EVOOPT_TEST_DATA``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from evoopt.evaluator import (
    EvalOutcome,
    EvalRequest,
    FitnessWorker,
    RayEvaluator,
    SerialEvaluator,
    task_cache_key,
)
from evoopt.fitness import WORST_FITNESS, FitnessRunner, TaskSpec, load_task
from evoopt.genome import seed_genome

DATA = Path(
    os.environ.get("EVOOPT_TEST_DATA")
    or Path(__file__).resolve().parents[2] / "shared/data/cifar10-mini"
)
pytestmark = pytest.mark.skipif(not DATA.exists(), reason=f"test data not found at {DATA}")

TINY = load_task("cifar10-tiny")
TASK = TINY.to_dict()
# 15x the tiny task's steps (a few seconds): long enough to be killed mid-run.
LONG_TASK = TINY.with_overrides(name=f"{TINY.name}-long", steps=TINY.steps * 15).to_dict()
ADAM = seed_genome("adam").to_dict()
SGD = seed_genome("sgd-momentum").to_dict()


def req(key: str, genome: dict = ADAM, task: dict = TASK, seed: int = 0) -> EvalRequest:
    return EvalRequest(key=key, genome=genome, task=task, seed=seed, split="val")


def same_result(a: dict, b: dict) -> bool:
    """Equal up to timings."""
    keys = ("fitness", "val_accuracy", "val_loss", "status", "steps", "train_loss_curve")
    return all(a[k] == b[k] for k in keys)


@pytest.fixture(scope="module")
def serial() -> SerialEvaluator:
    # One thread, like a one-CPU Ray actor: the thread count changes float summation order.
    with SerialEvaluator(data_dir=DATA, num_threads=1) as ev:
        yield ev


@pytest.fixture(scope="module")
def ray_ev() -> RayEvaluator:
    ev = RayEvaluator(num_workers=2, data_dir=DATA, cpus_per_worker=1)
    try:
        yield ev
    finally:
        ev.close()


@pytest.fixture(scope="module")
def serial_adam_seeds(serial: SerialEvaluator) -> dict[int, dict]:
    """Serial results of Adam on the tiny task, seeds 0 and 1."""
    outs = serial.evaluate_all([req("serial/adam/0"), req("serial/adam/1", seed=1)])
    return {o.request.seed: o.result for o in outs}


# -- requests and the in-process worker -------------------------------------------------------


def test_request_validation_and_conversion() -> None:
    r = EvalRequest("k", seed_genome("adam"), TINY, seed=3)  # objects become plain dicts
    assert r.genome == ADAM and r.task == TASK and r.split == "val"
    assert EvalRequest.from_dict(r.to_dict()) == r
    with pytest.raises(ValueError):
        EvalRequest("", ADAM, TASK)
    with pytest.raises(TypeError):
        EvalRequest("k", ADAM, TASK, seed=1.5)
    with pytest.raises(TypeError):
        EvalRequest("k", "adam", TASK)


def test_worker_caches_runner_per_canonical_task() -> None:
    worker = FitnessWorker(data_dir=DATA)
    runner = worker.runner_for(TASK)
    assert worker.runner_for(dict(reversed(list(TASK.items())))) is runner
    assert task_cache_key(TASK) == task_cache_key(dict(reversed(list(TASK.items()))))
    assert worker.runner_for(LONG_TASK) is not runner
    assert worker.cached_tasks == 2


def test_evaluator_imports_no_later_stage() -> None:
    code = (
        "import sys, evoopt.evaluator; "
        "bad = [m for m in sys.modules if m.startswith(('evoopt.strategy', 'evoopt.campaign'))]; "
        "assert not bad, bad"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


# -- serial evaluator ---------------------------------------------------------------------


def test_serial_matches_fitness_runner(serial_adam_seeds: dict[int, dict]) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the thread count moves the loss curve in the last bits
    try:
        direct = FitnessRunner(TaskSpec.from_dict(TASK), data_dir=DATA).evaluate(ADAM, seed=0)
    finally:
        torch.set_num_threads(threads)
    assert direct.status == "ok"
    assert same_result(serial_adam_seeds[0], direct.to_dict())


def test_serial_pending_and_submit_while_iterating(serial: SerialEvaluator) -> None:
    serial.submit(req("s/a"))
    serial.submit(req("s/b", genome=SGD))
    assert serial.pending == 2
    with pytest.raises(ValueError, match="already pending"):
        serial.submit(req("s/a"))
    keys = []
    for out in serial.results():
        keys.append(out.key)
        assert out.worker == f"serial:pid{os.getpid()}"
        if out.key == "s/a":
            assert serial.pending == 1
            serial.submit(req("s/c", seed=1))
            assert serial.pending == 2
    assert keys == ["s/a", "s/b", "s/c"] and serial.pending == 0


def test_serial_malformed_genome_is_an_error_result(serial: SerialEvaluator) -> None:
    bad = {**ADAM, "terms": [{"kind": "no-such-term", "weight": 1.0}]}
    (out,) = serial.evaluate_all([req("s/bad", genome=bad)])
    assert out.status == "error" and out.fitness == WORST_FITNESS and out.result["message"]


# -- Ray evaluator ------------------------------------------------------------------------


def test_ray_pool_sized_and_labelled(ray_ev: RayEvaluator) -> None:
    workers = ray_ev.workers()
    assert len(workers) == 2 and all(w["pid"] for w in workers)
    assert len({w["pid"] for w in workers}) == 2
    assert all(w["label"] == f"ray:{w['label'].split(':')[1]}:pid{w['pid']}" for w in workers)


def test_ray_more_gpus_than_the_instance_has_fail_at_once(ray_ev: RayEvaluator) -> None:
    """num_workers x gpus_per_worker beyond the local instance's GPUs is a ValueError at once
    (it used to leave the actors unscheduled until the 300 s startup timeout)."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0.0)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="GPUs"):
        # tiny CPU share: only the GPU request can be what does not fit
        RayEvaluator(num_workers=int(gpus) + 1, gpus_per_worker=1.0, cpus_per_worker=0.01,
                     data_dir=DATA, startup_timeout_s=60)
    assert time.perf_counter() - t0 < 30
    # the shared instance (not this evaluator's) is still up and serving
    assert ray.is_initialized()
    (ok,) = ray_ev.evaluate_all([req("gpu-check/after")])
    assert ok.status == "ok"


def test_ray_matches_serial_in_completion_order(
    ray_ev: RayEvaluator, serial_adam_seeds: dict[int, dict]
) -> None:
    # The long run goes first to one actor; both short ones finish on the other before it.
    ray_ev.submit(req("r/long", task=LONG_TASK))
    ray_ev.submit(req("r/adam/0"))
    ray_ev.submit(req("r/adam/1", seed=1))
    assert ray_ev.pending == 3
    outs: list[EvalOutcome] = []
    for out in ray_ev.results():
        outs.append(out)
        assert ray_ev.pending == 3 - len(outs)
    assert [o.key for o in outs] == ["r/adam/0", "r/adam/1", "r/long"]
    by_key = {o.key: o for o in outs}
    for seed in (0, 1):
        out = by_key[f"r/adam/{seed}"]
        assert out.status == "ok" and out.attempts == 1 and out.worker.startswith("ray:")
        assert same_result(out.result, serial_adam_seeds[seed])  # deterministic on CPU
    assert by_key["r/long"].status == "ok"
    assert by_key["r/long"].worker != by_key["r/adam/0"].worker


def test_ray_submit_while_iterating(ray_ev: RayEvaluator) -> None:
    ray_ev.submit(req("w/0"))
    ray_ev.submit(req("w/1", genome=SGD))
    with pytest.raises(ValueError, match="already pending"):
        ray_ev.submit(req("w/0"))
    seen, added = [], False
    for out in ray_ev.results():
        seen.append(out.key)
        if not added:
            added = True
            ray_ev.submit(req("w/2", seed=1))
            ray_ev.submit(req("w/3", genome=SGD, seed=1))
            assert ray_ev.pending == 3
    assert sorted(seen) == ["w/0", "w/1", "w/2", "w/3"] and ray_ev.pending == 0


def test_ray_malformed_genome_is_an_error_result(ray_ev: RayEvaluator) -> None:
    bad = {**ADAM, "lr": "not-a-number"}
    ray_ev.submit(req("e/bad", genome=bad))
    ray_ev.submit(req("e/task", task={**TASK, "image_size": 7}))  # invalid task spec
    outs = {o.key: o for o in ray_ev.results()}
    for out in outs.values():
        assert out.status == "error" and out.fitness == WORST_FITNESS
        assert out.result["message"] and out.attempts == 1
    assert ray_ev.stats.worker_deaths == 0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _kill_busy_worker(ev: RayEvaluator, key: str) -> int:
    """Submit a long run, SIGKILL its actor once it is training; return the killed pid."""
    ev.submit(req(key, task=LONG_TASK))
    (busy,) = [w for w in ev.workers() if w["inflight"]]
    pid, cpu0, deadline = busy["pid"], _cpu_seconds(busy["pid"]), time.time() + 60
    while _cpu_seconds(pid) - cpu0 < 0.4 and time.time() < deadline:  # evaluation under way
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return pid


def test_ray_killed_worker_is_replaced_and_request_retried(ray_ev: RayEvaluator) -> None:
    deaths = ray_ev.stats.worker_deaths
    pid = _kill_busy_worker(ray_ev, "k/long")
    (out,) = list(ray_ev.results())
    assert out.key == "k/long" and out.status == "ok" and out.attempts == 2
    assert out.result["steps"] == LONG_TASK["steps"]
    assert f"pid{pid}" not in out.worker
    assert ray_ev.stats.worker_deaths == deaths + 1
    # The pool is whole again: two live actors, the dead one replaced.
    deadline = time.time() + 60
    while not all(w["pid"] for w in ray_ev.workers()) and time.time() < deadline:
        time.sleep(0.2)
    pids = [w["pid"] for w in ray_ev.workers()]
    assert len(set(pids)) == 2 and pid not in pids


def test_ray_gives_up_after_max_attempts(ray_ev: RayEvaluator) -> None:
    old = ray_ev.max_attempts
    ray_ev.max_attempts = 1
    try:
        pid = _kill_busy_worker(ray_ev, "k/doomed")
        (out,) = list(ray_ev.results())
    finally:
        ray_ev.max_attempts = old
    assert out.status == "error" and out.fitness == WORST_FITNESS and out.attempts == 1
    assert "worker died" in out.result["message"] and f"pid{pid}" in out.worker
    # The evaluator still works afterwards.
    (ok,) = ray_ev.evaluate_all([req("k/after")])
    assert ok.status == "ok"


def test_ray_hard_timeout_kills_and_replaces_the_worker(ray_ev: RayEvaluator) -> None:
    ray_ev.hard_timeout_s = 0.5
    try:
        (out,) = ray_ev.evaluate_all([req("t/long", task=LONG_TASK)])
    finally:
        ray_ev.hard_timeout_s = None
    assert out.status == "timeout" and out.fitness == WORST_FITNESS
    assert "hard timeout" in out.result["message"]
    (ok,) = ray_ev.evaluate_all([req("t/after")])
    assert ok.status == "ok"
