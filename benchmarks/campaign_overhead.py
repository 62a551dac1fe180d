"""Campaign overhead: Ray dispatch + SQLite storage as a % of evaluation time; work avoided.

    python benchmarks/campaign_overhead.py --data-dir ../shared/data/cifar10-mini \
        [--campaign runs/quickstart] [--evals 8]

Live part (measured side by side in one run, on the CPU-default fitness task):
* one evaluation at a time through a one-actor Ray pool: driver round trip vs the time the
  worker spent inside the evaluation (``wall_time_s`` of the result): the difference is Ray's
  dispatch overhead (pickling, actor call, ray.wait/get);
* the SQLite commit of each finished evaluation (WAL, one transaction per row) into a fresh
  campaign store;
both as a percentage of the mean evaluation time.

Campaign part (``--campaign DIR``, a finished campaign such as the quickstart's): evaluations
paid, reused by dedupe and avoided by hurdles, and how busy the workers were (time inside
evaluations / (campaign wall time x workers)).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoopt.campaign.status import campaign_status  # noqa: E402
from evoopt.campaign.store import CampaignStore  # noqa: E402
from evoopt.evaluator import EvalRequest, RayEvaluator  # noqa: E402
from evoopt.fitness import load_task  # noqa: E402
from evoopt.genome import seed_genome  # noqa: E402


def live(data_dir: str, task_name: str, n: int) -> None:
    task = load_task(task_name).to_dict()
    genome = seed_genome("adam").to_dict()
    round_trips, inside, commits = [], [], []
    with tempfile.TemporaryDirectory() as tmp, CampaignStore(tmp) as store, \
            RayEvaluator(num_workers=1, data_dir=data_dir) as ev:
        for i in range(n + 1):  # the first one warms the actor's data cache
            t = time.perf_counter()
            ev.submit(EvalRequest(f"adam/{i}", genome, task, seed=i))
            (out,) = list(ev.results())
            rt = time.perf_counter() - t
            r = out.result
            t = time.perf_counter()
            store.add_evaluation(uid=f"g0-{i:02d}", hash=f"h{i}", stage="full", seed=i,
                                 split="val", fitness=r["fitness"],
                                 val_accuracy=r["val_accuracy"], val_loss=r["val_loss"],
                                 status=r["status"], message=r["message"], steps=r["steps"],
                                 wall_time_s=r["wall_time_s"], worker=out.worker,
                                 train_loss_curve=r["train_loss_curve"], created_at=time.time())
            commit = time.perf_counter() - t
            if i:
                round_trips.append(rt)
                inside.append(r["wall_time_s"])
                commits.append(commit)
    eval_s = statistics.median(inside)
    dispatch_s = statistics.median(a - b for a, b in zip(round_trips, inside, strict=True))
    commit_s = statistics.median(commits)
    print(f"live, {task_name}, {n} evaluations one at a time through a 1-actor Ray pool:")
    print(f"  evaluation (inside the worker)   {eval_s * 1e3:9.1f} ms")
    print(f"  Ray dispatch (round trip - eval) {dispatch_s * 1e3:9.2f} ms  "
          f"= {100 * dispatch_s / eval_s:.3f}% of an evaluation")
    print(f"  SQLite commit of the result      {commit_s * 1e3:9.2f} ms  "
          f"= {100 * commit_s / eval_s:.3f}% of an evaluation")
    print(f"  overhead total                                 "
          f"= {100 * (dispatch_s + commit_s) / eval_s:.3f}%")


def from_campaign(directory: Path) -> None:
    info = campaign_status(directory)
    with CampaignStore(directory, readonly=True) as store:
        evaluations = store.evaluations()
    paid, cached = info["evaluations_done"], info["evaluations_cached"]
    saved = info["evaluations_saved_by_hurdles"]
    inside = sum(e["wall_time_s"] or 0.0 for e in evaluations)
    workers = len({e["worker"].split(":pid")[0] for e in evaluations}) or 1
    wall = info["wall_time_s"] or float("nan")
    asked = paid + cached + saved
    print(f"campaign {info['name']} ({directory}): state {info['state']}, wall {wall:.1f} s")
    print(f"  evaluations paid {paid}, reused by dedupe {cached}, avoided by hurdles {saved}: "
          f"{100 * (cached + saved) / asked:.1f}% of {asked} avoided")
    print(f"  time inside evaluations {inside:.1f} s over {workers} worker(s): workers busy "
          f"{100 * inside / (wall * workers):.1f}% of the campaign's wall time (the rest: Ray "
          f"start-up, behavioural hashing, waiting for a generation's last evaluation, export)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("EVOOPT_DATA_DIR"))
    parser.add_argument("--task", default="cifar10-cpu")
    parser.add_argument("--evals", type=int, default=8)
    parser.add_argument("--campaign", type=Path, default=None)
    args = parser.parse_args()
    live(args.data_dir, args.task, args.evals)
    if args.campaign:
        from_campaign(args.campaign)


if __name__ == "__main__":
    main()
