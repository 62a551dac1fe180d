"""The GPU path: evaluations/minute with 1, 2, 4, 8 workers packed on one GPU; CPU/GPU agreement.

    python benchmarks/gpu_throughput.py [--task cifar10-gpu] [--data-dir DIR] [--workers 1,2,4,8]
        [--evals 16] [--genome adam] [--genome2 lion] [--seeds N] [--cpus-per-worker 1]
        [--set field=value ...] [--agree-steps 50] [--agree-seed 0] [--strict-fp32]
        [--skip-throughput] [--skip-agreement] [--json results.json] [--allow-cpu]

``--task`` is any task name (``cifar10-gpu``, ``shakespeare-char-gpu``, ``cifar10-vit-gpu``, ...)
or task file; ``--set`` overrides its fields like the other benchmarks (value parsed as TOML; a
bare word is taken as a string). Prints the device name, torch and Ray versions, then:

1. **Throughput.** For each N of ``--workers``: the project's ``RayEvaluator`` with N actors of
   ``gpus_per_worker = 1/N`` (Ray's fractional GPUs: the N actors share the one GPU, each with
   its own CUDA context and its own copy of the task's data staged on the GPU by its
   ``FitnessRunner``) and ``--cpus-per-worker`` CPUs (also its torch thread count). First one
   warm-up evaluation per actor (it loads and stages the data, initialises CUDA), excluded;
   then ``--evals`` real fitness evaluations (``--genome``, and ``--genome2`` alternating with it
   when given, over seeds 0..N-1 of the task's ``seeds`` or ``--seeds``) submitted at once.
   Table: workers, evaluations, wall seconds (first submit to last outcome), evaluations per
   minute, speed-up vs the smallest N, mean seconds per evaluation inside a worker, failed
   evaluations, warm-up seconds and, on CUDA, the memory in use on the whole GPU after the batch.
   The task runs with ``device = "cuda"`` (a worker that cannot see the GPU fails loudly instead
   of training on its CPU); a packed worker's evaluation takes longer than a lone one's, so
   watch the ``failed`` column for runs past the task's ``time_limit_s``.

2. **CPU vs GPU agreement.** In this process, one short run (``--agree-steps``, default 50 or
   the task's steps if fewer; time limit lifted to an hour so the CPU run cannot time out) of
   ``--genome`` on seed ``--agree-seed``, with the task on ``device="cpu"`` in fp32
   (``bf16=false``: a GPU spec's ``bf16 = true`` would autocast on the CPU too), on ``"cuda"`` with
   ``bf16=false`` (twice) and on ``"cuda"`` with ``bf16=true``; all other fields the same. It
   prints fitness, validation accuracy and loss, final train loss (the last point of the train
   loss curve: with <= 50 steps, the last step's batch) and wall seconds of each run, and for
   each pair the absolute differences and PASS/FAIL:

   ===========================  ===========  ==========================
   pair                         |Δ fitness|  |Δ final train loss|
   ===========================  ===========  ==========================
   cpu vs cuda fp32             <= 0.02      <= 5 % of the CPU run's
   cpu vs cuda bf16             <= 0.04      <= 10 % of the CPU run's
   cuda fp32 vs cuda fp32 rerun <= 0.02      <= 5 % of the first run's
   ===========================  ===========  ==========================

   Why these tolerances: with one seed both devices start from the same weights (drawn on the
   CPU from the seeded generator, then moved) and see the same batches, flips and shifts (CPU
   generator; only the indices move to the device), so the runs differ only by rounding:
   other kernels and summation orders (cuDNN/cuBLAS vs oneDNN; the genome's optimizer runs its
   ``torch._foreach_*`` path on CUDA and its per-tensor path on CPU), TF32 in cuDNN
   convolutions (PyTorch's default ``torch.backends.cudnn.allow_tf32 = True``; ``--strict-fp32``
   turns it off here) and, with bf16 autocast, activations rounded to an 8-bit mantissa.
   Training amplifies rounding, so after tens of steps they are two nearby trajectories, not
   equal numbers. Fitness is an accuracy (CIFAR-10) or a fraction of loss removed
   (characters), in [0, 1]: on ``cifar10-gpu``'s 5,000 validation images the binomial sd of an
   accuracy near 0.5 is 0.007, so 0.02 is about three sd of two equally good models, while a
   real fault of the GPU path (wrong data or augmentation on the device, autocast breaking the
   loss, a foreach op differing from its per-tensor twin) moves fitness by far more. bf16
   keeps 8 significant bits (TF32 11, fp32 24), hence twice the room. The final train loss
   is one batch's, the same batch on both devices: 5 % / 10 % relative. The rerun pair
   measures the GPU's own run-to-run noise (atomics in max-pool and attention backward, cuBLAS
   workspaces; ``torch.use_deterministic_algorithms`` only warns about them): if it fails, the
   GPU is not reproducible at the tolerance and the other pairs cannot be judged tighter than
   that. Any run whose status is not ``ok`` fails its pairs.

Exit status: 0 when every pair passes and every timed evaluation was ``ok``; 1 otherwise; 2
when CUDA is not available. ``--json PATH`` also writes every number (for docs/fitness.md).

Without CUDA it prints one line and exits 2, unless ``--allow-cpu``: a smoke run of the same
code path on the CPU, with small settings (5 steps, a small training subset and validation
split, small batches, workers 1,2, 4 evaluations, ``device="cpu"``; ``--set`` still overrides),
where the "GPU" side of each agreement pair is the CPU again (identical runs: Δ = 0). Its
numbers measure nothing about GPUs.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoopt.evaluator import EvalRequest, RayEvaluator  # noqa: E402
from evoopt.evaluator.ray_cluster import ensure_ray  # noqa: E402
from evoopt.fitness import FitnessRunner, TaskSpec, load_task  # noqa: E402
from evoopt.genome import Genome, load_genome, seed_genome  # noqa: E402

AGREE_STEPS = 50
AGREE_TIME_LIMIT_S = 3600.0
#: pair -> (max |Δ fitness|, max |Δ final train loss| relative to the first run's)
TOLERANCES = {"fp32": (0.02, 0.05), "bf16": (0.04, 0.10)}
#: smoke mode (--allow-cpu without CUDA): small settings per dataset, before --set
SMOKE = {
    "cifar10": {"steps": 5, "train_size": 1000, "val_size": 500, "batch_size": 100,
                "eval_batch_size": 500},
    "shakespeare_char": {"steps": 5, "train_size": 20000, "val_size": 16, "batch_size": 8,
                         "eval_batch_size": 16},
}
SMOKE_WORKERS, SMOKE_EVALS = "1,2", 4


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``field=value`` pairs; the value parsed as TOML, else kept as a string (``device=cpu``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            sys.exit(f"--set {item!r}: expected FIELD=VALUE")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value
    return out


def genome_of(name_or_path: str) -> Genome:
    path = Path(name_or_path)
    return load_genome(path) if path.exists() else seed_genome(name_or_path)


def device_info(accel: str) -> dict[str, Any]:
    # Ray's version without importing it: ensure_ray must come first (it sets RAY_AUTH_MODE,
    # which Ray reads once, on import).
    info: dict[str, Any] = {"torch": torch.__version__, "ray": importlib.metadata.version("ray"),
                            "python": platform.python_version(), "cpus": os.cpu_count()}
    if accel == "cuda":
        props = torch.cuda.get_device_properties(0)
        info |= {"device": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
                 "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                 "gpu_count": torch.cuda.device_count(),
                 "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                 "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}
    else:
        info["device"] = f"cpu ({platform.processor() or platform.machine()}; smoke mode, no CUDA)"
    return info


def gpu_memory_used_gib() -> float:
    """Memory in use on the whole GPU (every process: the workers and this driver)."""
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**30


# -- 1. throughput ------------------------------------------------------------------------------


def requests(prefix: str, genomes: list[Genome], task: dict[str, Any], seeds: list[int],
             n: int) -> list[EvalRequest]:
    """``n`` evaluations: the genomes alternate, the seeds advance every len(genomes)."""
    out = []
    for i in range(n):
        g = genomes[i % len(genomes)]
        seed = seeds[(i // len(genomes)) % len(seeds)]
        out.append(EvalRequest(f"{prefix}/{i}/{g.name or g.hash}/{seed}", g.to_dict(), task,
                               seed=seed))
    return out


def measure(n: int, accel: str, task: dict[str, Any], genomes: list[Genome], seeds: list[int],
            args: argparse.Namespace) -> dict[str, Any]:
    """One row of the throughput table: N packed workers, warm, ``args.evals`` evaluations."""
    gpus = 1.0 / n if accel == "cuda" else 0.0
    row: dict[str, Any] = {"workers": n, "gpus_per_worker": gpus}
    with RayEvaluator(num_workers=n, data_dir=args.data_dir, cpus_per_worker=args.cpus_per_worker,
                      gpus_per_worker=gpus) as ev:
        row["actor_start_s"] = ev.actor_start_s
        # Warm-up: one request per actor (the least-loaded dispatch gives each idle actor one).
        t = time.perf_counter()
        warm = ev.evaluate_all(requests(f"warm{n}", genomes[:1], task, seeds[:1] * n, n))
        row["warmup_s"] = time.perf_counter() - t
        warmed = {o.worker for o in warm}
        if len(warmed) != n:
            print(f"  warning: the warm-up reached {len(warmed)} of {n} workers", flush=True)
        bad = [o for o in warm if o.status != "ok"]
        if bad:
            row["warmup_failed"] = len(bad)
            print(f"  warm-up: {len(bad)} of {n} failed: {bad[0].status}: "
                  f"{bad[0].result.get('message', '')[:300]}", flush=True)
        t = time.perf_counter()
        outs = ev.evaluate_all(requests(f"n{n}", genomes, task, seeds, args.evals))
        row["wall_s"] = time.perf_counter() - t
        if accel == "cuda":
            row["gpu_memory_used_gib"] = gpu_memory_used_gib()
    ok = [o for o in outs if o.status == "ok"]
    row["evaluations"] = len(outs)
    row["failed"] = len(outs) - len(ok)
    row["failed_statuses"] = sorted({o.status for o in outs if o.status != "ok"})
    row["evals_per_min"] = 60.0 * len(outs) / row["wall_s"]
    inside = [o.result["wall_time_s"] for o in ok]
    row["eval_s_in_worker"] = statistics.mean(inside) if inside else None
    fits: dict[str, list[float]] = {}
    for o in ok:
        fits.setdefault(o.key.split("/")[2], []).append(o.fitness)  # prefix/i/genome/seed
    row["mean_fitness"] = {k: statistics.mean(v) for k, v in fits.items()}
    if row["failed"]:
        first = next(o for o in outs if o.status != "ok")
        print(f"  {row['failed']} of {len(outs)} evaluations failed; first: {first.status}: "
              f"{first.result.get('message', '')[:300]}", flush=True)
    return row


def print_table(rows: list[dict[str, Any]], accel: str) -> None:
    rows = [r for r in rows if "error" not in r]
    base = rows[0]["evals_per_min"] if rows else 1.0
    mem = accel == "cuda"
    print(f"{'workers':>7} {'GPU/worker':>10} {'evals':>5} {'wall s':>8} {'evals/min':>9} "
          f"{'speed-up':>8} {'s/eval in worker':>16} {'failed':>6} {'warm-up s':>9}"
          + (f" {'GPU mem GiB':>11}" if mem else ""))
    for r in rows:
        r["speedup"] = r["evals_per_min"] / base
        inside = f"{r['eval_s_in_worker']:.2f}" if r["eval_s_in_worker"] is not None else "n/a"
        print(f"{r['workers']:>7} {r['gpus_per_worker']:>10.3g} {r['evaluations']:>5} "
              f"{r['wall_s']:>8.1f} {r['evals_per_min']:>9.2f} {r['speedup']:>7.2f}x "
              f"{inside:>16} {r['failed']:>6} {r['warmup_s']:>9.1f}"
              + (f" {r['gpu_memory_used_gib']:>11.1f}" if mem else ""))


def throughput(accel: str, task: TaskSpec, genomes: list[Genome], seeds: list[int],
               workers: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    import ray

    owns = ensure_ray(None)  # one private Ray instance for every pool size
    rows = []
    try:
        for n in workers:
            print(f"  {n} worker(s) ...", flush=True)
            try:
                rows.append(measure(n, accel, task.to_dict(), genomes, seeds, args))
            except Exception as e:  # noqa: BLE001 - e.g. a pool that does not fit: next size
                print(f"  {n} worker(s): not measured: {type(e).__name__}: {e}", flush=True)
                rows.append({"workers": n, "error": f"{type(e).__name__}: {e}"})
    finally:
        if owns and ray.is_initialized():
            ray.shutdown()
    print_table(rows, accel)
    return rows


# -- 2. agreement -------------------------------------------------------------------------------


def run_summary(rec: Any) -> dict[str, Any]:
    curve = [v for v in rec.train_loss_curve if v is not None]
    return {"status": rec.status, "message": rec.message, "fitness": rec.fitness,
            "val_accuracy": rec.val_accuracy, "val_loss": rec.val_loss,
            "final_train_loss": curve[-1] if curve else None, "steps": rec.steps,
            "wall_time_s": rec.wall_time_s}


def compare(name: str, a: dict[str, Any], b: dict[str, Any], kind: str) -> dict[str, Any]:
    tol_fit, tol_rel = TOLERANCES[kind]
    out: dict[str, Any] = {"pair": name, "tolerance": {"fitness": tol_fit, "loss_rel": tol_rel}}
    if a["status"] != "ok" or b["status"] != "ok":
        return out | {"pass": False, "reason": f"status {a['status']} / {b['status']}"}
    d_fit = abs(a["fitness"] - b["fitness"])
    d_acc = abs(a["val_accuracy"] - b["val_accuracy"])
    la, lb = a["final_train_loss"], b["final_train_loss"]
    d_loss = abs(la - lb) if la is not None and lb is not None else math.inf
    limit = tol_rel * abs(la) if la is not None else 0.0
    ok = d_fit <= tol_fit and d_loss <= limit
    return out | {"d_fitness": d_fit, "d_val_accuracy": d_acc, "d_final_train_loss": d_loss,
                  "loss_limit": limit, "pass": ok}


def agreement(accel: str, task: TaskSpec, genome: Genome, args: argparse.Namespace,
              ) -> dict[str, Any]:
    steps = args.agree_steps or min(AGREE_STEPS, task.steps)
    base = task.with_overrides(steps=steps,
                               time_limit_s=max(task.time_limit_s, AGREE_TIME_LIMIT_S))
    print(f"  {genome.name or genome.hash}, seed {args.agree_seed}, {steps} steps; "
          f"runs in this process (torch {torch.get_num_threads()} CPU threads)", flush=True)
    if accel == "cuda" and args.strict_fp32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    variants = {  # run name -> task overrides
        "cpu": {"device": "cpu", "bf16": False},
        f"{accel} fp32": {"device": accel, "bf16": False},
        f"{accel} fp32 rerun": {"device": accel, "bf16": False},
        f"{accel} bf16": {"device": accel, "bf16": True},
    }
    runners: dict[str, FitnessRunner] = {}
    runs: dict[str, dict[str, Any]] = {}
    for name, kw in variants.items():
        spec = base.with_overrides(**kw)
        key = json.dumps(spec.to_dict(), sort_keys=True)  # the rerun reuses its twin's runner
        runners[key] = runners.get(key) or FitnessRunner(spec, data_dir=args.data_dir)
        rec = runners[key].evaluate(genome, seed=args.agree_seed)
        runs[name] = run_summary(rec)
        r = runs[name]
        fmt = (lambda v: "n/a" if v is None else f"{v:.4f}")  # noqa: E731
        print(f"  {name:<16} {r['status']:<8} fitness {fmt(r['fitness'])}  val acc "
              f"{fmt(r['val_accuracy'])}  val loss {fmt(r['val_loss'])}  final train loss "
              f"{fmt(r['final_train_loss'])}  ({r['wall_time_s']:.1f} s)"
              + (f"  {r['message'][:200]}" if r["message"] else ""), flush=True)
    pairs = [
        compare(f"cpu vs {accel} fp32", runs["cpu"], runs[f"{accel} fp32"], "fp32"),
        compare(f"cpu vs {accel} bf16", runs["cpu"], runs[f"{accel} bf16"], "bf16"),
        compare(f"{accel} fp32 vs rerun", runs[f"{accel} fp32"], runs[f"{accel} fp32 rerun"],
                "fp32"),
    ]
    for p in pairs:
        tol = p["tolerance"]
        if "reason" in p:
            print(f"  {p['pair']:<22} FAIL ({p['reason']})")
            continue
        print(f"  {p['pair']:<22} |Δ fitness| {p['d_fitness']:.4f} (<= {tol['fitness']})  "
              f"|Δ val acc| {p['d_val_accuracy']:.4f}  |Δ final train loss| "
              f"{p['d_final_train_loss']:.4f} (<= {p['loss_limit']:.4f} = "
              f"{tol['loss_rel']:.0%})  {'PASS' if p['pass'] else 'FAIL'}")
    return {"steps": steps, "seed": args.agree_seed, "genome": genome.name or genome.hash,
            "strict_fp32": bool(args.strict_fp32), "runs": runs, "pairs": pairs}


# -- main ---------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="cifar10-gpu", help="task name or TOML file")
    ap.add_argument("--data-dir", default=os.environ.get("EVOOPT_DATA_DIR"))
    ap.add_argument("--workers", default=None, help="pool sizes, comma-separated (1,2,4,8)")
    ap.add_argument("--evals", type=int, default=None, help="timed evaluations per pool (16)")
    ap.add_argument("--genome", default="adam", help="seed genome name or genome file")
    ap.add_argument("--genome2", default=None, help="a second genome, alternating with the first")
    ap.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default: the task's)")
    ap.add_argument("--cpus-per-worker", type=float, default=1.0)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="task override, e.g. --set steps=200 --set bf16=false")
    ap.add_argument("--agree-steps", type=int, default=None,
                    help=f"steps of the agreement runs (default {AGREE_STEPS} or the task's)")
    ap.add_argument("--agree-seed", type=int, default=0)
    ap.add_argument("--strict-fp32", action="store_true",
                    help="agreement: no TF32 in cuDNN convolutions or matmuls")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-agreement", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--allow-cpu", action="store_true",
                    help="without CUDA: a smoke run of the same code on the CPU, small settings")
    args = ap.parse_args()

    smoke = not torch.cuda.is_available()
    if smoke and not args.allow_cpu:
        print(f"gpu_throughput: CUDA is not available (torch {torch.__version__}); nothing "
              "measured (--allow-cpu runs a CPU smoke test of the same code)", file=sys.stderr)
        return 2
    accel = "cpu" if smoke else "cuda"
    workers = [int(w) for w in (args.workers or ("1,2,4,8" if not smoke else SMOKE_WORKERS))
               .split(",")]
    args.evals = args.evals or (16 if not smoke else SMOKE_EVALS)

    spec = load_task(args.task)
    base: dict[str, Any] = {"device": accel}
    if smoke:
        base |= SMOKE.get(spec.dataset, {"steps": 5})
    task = spec.with_overrides(**(base | parse_overrides(args.set)))
    genomes = [genome_of(args.genome)] + ([genome_of(args.genome2)] if args.genome2 else [])
    seeds = list(range(args.seeds or task.seeds))
    if smoke:
        torch.set_num_threads(1)  # the agreement runs: keep a smoke run light

    info = device_info(accel)
    print(f"device: {info['device']}; torch {info['torch']}"
          + (f" (CUDA {info['cuda']}), {info['gpu_count']} GPU(s) of {info['gpu_memory_gib']} "
             f"GiB; cudnn.allow_tf32={info['cudnn_allow_tf32']}" if accel == "cuda" else "")
          + f"; Ray {info['ray']}; {info['cpus']} CPUs")
    print(f"task {task.name}: {task.dataset}/{task.model}, {task.steps} steps x batch "
          f"{task.batch_size}, width {task.width}, device {task.device}, bf16 {task.bf16}, "
          f"time limit {task.time_limit_s:g} s; genomes "
          f"{', '.join(g.name or g.hash for g in genomes)}; seeds {seeds}")
    if smoke:
        print("SMOKE MODE (--allow-cpu, no CUDA): CPU only, small settings; these numbers say "
              "nothing about GPUs")
    result: dict[str, Any] = {"info": info, "smoke": smoke, "task": task.to_dict(),
                              "genomes": [g.name or g.hash for g in genomes], "seeds": seeds}
    failed = False

    if not args.skip_throughput:
        print(f"\n[1] throughput: {args.evals} evaluations per pool, pools of {workers} "
              f"worker(s) x {args.cpus_per_worker:g} CPU"
              + (", GPU share 1/N each" if accel == "cuda" else "") + "; warm-up excluded")
        rows = throughput(accel, task, genomes, seeds, workers, args)
        result["throughput"] = rows
        failed |= any("error" in r or r["failed"] or r.get("warmup_failed") for r in rows)

    if not args.skip_agreement:
        print(f"\n[2] agreement: the same genome and seed on cpu and {accel}")
        agree = agreement(accel, task, genomes[0], args)
        result["agreement"] = agree
        failed |= not all(p["pass"] for p in agree["pairs"])

    result["exit_code"] = int(failed)
    print(f"\n{'FAIL' if failed else 'PASS'}" + (" (smoke mode)" if smoke else ""))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(f"wrote {args.json}")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
