"""Ray dispatch overhead of the evaluator: Ray start-up, per-evaluation round trip, vs serial.

    python benchmarks/ray_dispatch.py [--task cifar10-tiny] [--evals 10] [--noop 300] [--json out]

Measures, on this machine:
* ``ray_init_s``: ``ray.init`` of a local instance; ``actor_start_s``: the pool coming up
  (each actor imports torch and evoopt);
* ``noop_roundtrip_ms``: submit one request, wait for its outcome, with a runner that does no
  work (pure dispatch: pickling the genome/task dicts, actor call, ``ray.wait``/``ray.get``);
  ``noop_batched_ms``: the same per request when ``--noop`` requests are submitted at once;
* ``serial_eval_s`` vs ``ray1_eval_s``: median seconds per real evaluation of the task,
  in-process with one thread vs one one-CPU actor, runners warm, alternated; ``overhead_ms`` is
  the median paired difference (noisy on a loaded machine: trust ``noop_roundtrip_ms`` first);
* ``ray_pool_eval_s``: wall seconds per evaluation with the default (machine-sized) pool.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoopt.evaluator import EvalRequest, RayEvaluator, SerialEvaluator  # noqa: E402


class _NoopRunner:
    """Returns a fixed ok result at once: isolates the dispatch cost."""

    def __init__(self, task: dict[str, Any], data_dir: Any) -> None:
        from evoopt.fitness import SeedResult

        self._result = SeedResult(seed=0, fitness=0.5, status="ok", steps=1)

    def evaluate(self, genome: Any, seed: int = 0, split: str = "val") -> Any:
        return self._result


def _noop_factory(task: dict[str, Any], data_dir: Any) -> _NoopRunner:
    return _NoopRunner(task, data_dir)


def _requests(prefix: str, genome: dict, task: dict, n: int) -> list[EvalRequest]:
    return [EvalRequest(f"{prefix}/{i}", genome, task, seed=i % 2) for i in range(n)]


def _one_by_one(ev: Any, reqs: list[EvalRequest]) -> list[float]:
    times = []
    for r in reqs:
        t = time.perf_counter()
        ev.submit(r)
        (out,) = list(ev.results())
        times.append(time.perf_counter() - t)
        assert out.status == "ok", out.result["message"]
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="cifar10-tiny")
    ap.add_argument("--genome", default="adam")
    ap.add_argument("--data-dir", default=os.environ.get("EVOOPT_DATA_DIR"))
    ap.add_argument("--evals", type=int, default=10, help="real evaluations per measurement")
    ap.add_argument("--noop", type=int, default=300, help="no-op round trips")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()

    from evoopt.fitness import load_task
    from evoopt.genome import seed_genome

    task = load_task(args.task).to_dict()
    genome = seed_genome(args.genome).to_dict()
    out: dict[str, Any] = {"task": args.task, "cpus": os.cpu_count(), "evals": args.evals}

    # Serial (one thread, like a one-CPU actor) and one Ray actor, runners warm, alternated
    # evaluation by evaluation so both see the same machine load; overhead = median difference.
    t = time.perf_counter()
    ray1 = RayEvaluator(num_workers=1, data_dir=args.data_dir)
    out["ray_init_s"], out["actor_start_s"] = ray1.ray_init_s, ray1.actor_start_s
    out["ray_evaluator_ready_s"] = time.perf_counter() - t
    try:
        with SerialEvaluator(data_dir=args.data_dir, num_threads=1) as serial:
            for ev in (serial, ray1):
                _one_by_one(ev, _requests("warm", genome, task, 1))
            pairs = [
                (
                    _one_by_one(serial, _requests(f"s{i}", genome, task, 1))[0],
                    _one_by_one(ray1, _requests(f"r{i}", genome, task, 1))[0],
                )
                for i in range(args.evals)
            ]
    finally:
        ray1.close()  # also shuts Ray down: the next evaluator starts its own
    out["serial_eval_s"] = statistics.median(p[0] for p in pairs)
    out["ray1_eval_s"] = statistics.median(p[1] for p in pairs)
    out["overhead_ms"] = 1000 * statistics.median(p[1] - p[0] for p in pairs)

    with RayEvaluator(num_workers=1, runner_factory=_noop_factory) as ev:
        _one_by_one(ev, _requests("nwarm", genome, task, 5))
        rt = _one_by_one(ev, _requests("noop", genome, task, args.noop))
        out["noop_roundtrip_ms"] = 1000 * statistics.median(rt)
        out["noop_roundtrip_p90_ms"] = 1000 * sorted(rt)[int(0.9 * len(rt))]
        t = time.perf_counter()
        ev.evaluate_all(_requests("nbatch", genome, task, args.noop))
        out["noop_batched_ms"] = 1000 * (time.perf_counter() - t) / args.noop

    with RayEvaluator(data_dir=args.data_dir) as ev:
        out["pool_workers"] = ev.num_workers
        ev.evaluate_all(_requests("pwarm", genome, task, ev.num_workers))
        t = time.perf_counter()
        outs = ev.evaluate_all(_requests("pool", genome, task, args.evals))
        out["ray_pool_eval_s"] = (time.perf_counter() - t) / args.evals
        assert all(o.status == "ok" for o in outs)

    text = json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()})
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
