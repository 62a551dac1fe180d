"""Does bf16 autocast on the CPU change fitness? Paired fp32 vs bf16 runs of the CPU tasks.

For each task and seed genome, every seed is run twice through ``FitnessRunner.evaluate`` with
the task as shipped except ``bf16`` (``false``, then ``true``: autocast on the CPU); the same
seed gives both runs the same initial weights and the same batches, so the per-seed fitness
differences are paired. Printed per (task, genome): mean fitness of each, the mean difference
bf16 − fp32 with its paired SE, 95 % interval and verdict (``evoopt.stats.paired_comparison``,
|Δ| ≤ 2 SE = indistinguishable), the seed-to-seed std of the fp32 fitness for scale, and the
median train time of each (alternating runs). Seed 0 is also run a second time in bf16: the two
runs must agree exactly (bf16 runs are deterministic like fp32 ones).

    python benchmarks/cpu_bf16_accuracy.py --data-dir ../shared/data [--tasks T1,T2]
        [--genomes adam,lion] [--seeds 10] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoopt.fitness import FitnessRunner, load_task  # noqa: E402
from evoopt.genome import seed_genome  # noqa: E402
from evoopt.stats import mean_std, paired_comparison  # noqa: E402

CPU_TASKS = ("cifar10-cpu", "cifar10-vit-cpu", "shakespeare-char-cpu")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default=",".join(CPU_TASKS))
    ap.add_argument("--genomes", default="adam,lion")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="the tasks' threads (0 = as given)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", default=None, help="write every per-seed number here")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, {args.threads} thread(s), "
          f"seeds 0..{args.seeds - 1}", flush=True)
    out: dict[str, dict[str, dict]] = {}
    for name in args.tasks.split(","):
        task = load_task(name).with_overrides(threads=args.threads)
        runners = {mode: FitnessRunner(task.with_overrides(bf16=mode == "bf16"),
                                       data_dir=args.data_dir) for mode in ("fp32", "bf16")}
        out[name] = {}
        for gname in args.genomes.split(","):
            genome = seed_genome(gname)
            fit: dict[str, list[float]] = {"fp32": [], "bf16": []}
            times: dict[str, list[float]] = {"fp32": [], "bf16": []}
            first = None
            for seed in range(args.seeds):
                for mode, runner in runners.items():
                    rec = runner.evaluate(genome, seed)
                    if rec.status != "ok":
                        sys.exit(f"{name} {gname} seed {seed} {mode}: {rec.status} "
                                 f"{rec.message}")
                    fit[mode].append(rec.fitness)
                    times[mode].append(rec.train_time_s)
                    if seed == 0 and mode == "bf16":
                        first = rec
            again = runners["bf16"].evaluate(genome, 0)
            same = first is not None and (again.fitness, again.val_loss, again.train_loss_curve
                                          ) == (first.fitness, first.val_loss,
                                                first.train_loss_curve)
            cmp = paired_comparison(fit["bf16"], fit["fp32"])
            _, sd = mean_std(fit["fp32"])
            lo, hi = cmp.ci95 or (float("nan"), float("nan"))
            tf, tb = statistics.median(times["fp32"]), statistics.median(times["bf16"])
            print(f"{name:22s} {gname:5s} fp32 {statistics.fmean(fit['fp32']):.4f}  "
                  f"bf16 {statistics.fmean(fit['bf16']):.4f}  "
                  f"bf16 − fp32 {cmp.mean_diff:+.4f} (paired SE {cmp.paired_se:.4f}, "
                  f"95 % CI [{lo:+.4f}, {hi:+.4f}], p={cmp.p_value:.3g}, n={cmp.n}): "
                  f"{cmp.verdict}; fp32 seed std {sd:.4f}; train time fp32 {tf:.2f} s, "
                  f"bf16 {tb:.2f} s ({tf / tb:.2f}x); bf16 rerun identical: {same}",
                  flush=True)
            out[name][gname] = {"fitness": fit, "train_time_s": times,
                                "comparison": cmp.to_dict(), "bf16_rerun_identical": same}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
