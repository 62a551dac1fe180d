"""Training throughput of the fitness loop vs a straightforward PyTorch loop, side by side.

For each CPU task (``--task``, or ``--all-tasks``) every mode trains the task's own model with
``torch.optim.Adam`` on the task's data for the task's step budget, and the script prints
evaluations/second of each mode and its ratio to the straightforward loop:

* **plain**: the loop written the obvious way. Images (CNN, ViT): ``DataLoader(TensorDataset(x,
  y), shuffle=True)`` over NCHW tensors, an NCHW model, flip and translation applied per batch
  (per-image crop of a reflect-padded batch). Characters: ``DataLoader`` over a dataset of all
  ``context + 1``-character windows of the train split, shuffled;
* **fp32**: ``FitnessRunner.evaluate_with`` as the fitness path runs it (data staged once, one
  gather per batch for augmentation or windows, channels_last CNN, deterministic kernels),
  with ``bf16 = false``;
* **bf16**: the same with ``bf16 = true`` (bf16 autocast on the CPU);
* **K=k**: k models of the task trained at once on the same batches (k genomes evaluated on the
  same seed: the same initial weights and batches) with ``torch.func``: the k parameter sets
  stacked, ``vmap(grad(functional_call))`` for the forward and backward of all of them, and
  k independent ``Adam`` optimizers over per-model leaf parameters that alias the stacked
  storage. Its evaluations/second counts k evaluations per run. It also reports whether model
  0's final train loss is bit-identical with k = 1 (vmap alone) and with the fitness loop: if
  not, a genome's result would depend on the group it was batched with.

Times are of the training loop alone (data staging and scoring excluded in every mode). Modes
alternate (plain, fp32, bf16, K=2, ..., then again) and medians are reported, since other
processes may share the CPU. Also prints seconds per evaluation of the seed genome ``adam``.

    python benchmarks/fitness_throughput.py --data-dir ../shared/data [--task cifar10-cpu |
        --all-tasks] [--repeats 3] [--threads 1] [--k 2,4,8] [--modes plain,fp32,bf16,k]
        [--set steps=50 ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad_and_value, stack_module_state, vmap
from torch.utils.data import DataLoader, Dataset, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoopt.fitness import FitnessRunner, load_task  # noqa: E402
from evoopt.fitness.runner import (  # noqa: E402
    derive_seed,
    deterministic_mode,
    downsample_curve,
)

CPU_TASKS = ("cifar10-cpu", "cifar10-vit-cpu", "shakespeare-char-cpu")


class Windows(Dataset):
    """Every ``context + 1``-character window of a 1-D id tensor: (inputs, next characters)."""

    def __init__(self, ids: torch.Tensor, context: int) -> None:
        self.ids, self.context = ids, context

    def __len__(self) -> int:
        return len(self.ids) - self.context

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.ids[i:i + self.context + 1]
        return w[:-1], w[1:]


def plain_loop(runner: FitnessRunner, lr: float, seed: int) -> float:
    """Seconds to train ``task.steps`` steps the straightforward way."""
    task, work = runner.task, runner.workload
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = work.build_model(g)
    if task.dataset == "cifar10":
        pad, s = task.translate, task.image_size
        x = work.train.x[:, pad:pad + s, pad:pad + s, :].permute(0, 3, 1, 2).contiguous()
        data: Dataset = TensorDataset(x, work.train.y)
        model = model.to(memory_format=torch.contiguous_format)
    else:
        data = Windows(work.train, task.context)
    loader = DataLoader(data, batch_size=task.batch_size, shuffle=True, drop_last=True,
                        generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    step, t0 = 0, time.perf_counter()
    while step < task.steps:
        for xb, yb in loader:
            if task.dataset == "cifar10":
                xb = augment(xb, task.flip, task.translate, g)
            out = model(xb)
            loss = F.cross_entropy(out.flatten(0, -2), yb.flatten(),
                                   label_smoothing=task.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step == task.steps:
                break
    return time.perf_counter() - t0


def augment(xb: torch.Tensor, flip: bool, pad: int, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and ±``pad`` px translation of an NCHW batch, the obvious way."""
    if flip:
        f = torch.rand(len(xb), generator=g) < 0.5
        xb = torch.where(f[:, None, None, None], xb.flip(-1), xb)
    if pad:
        s = xb.shape[-1]
        xp = F.pad(xb, (pad,) * 4, mode="reflect")
        dy, dx = torch.randint(0, 2 * pad + 1, (2, len(xb)), generator=g).tolist()
        xb = torch.stack([xp[i, :, a:a + s, b:b + s]
                          for i, (a, b) in enumerate(zip(dy, dx, strict=True))])
    return xb


def train_k(runner: FitnessRunner, k: int, lr: float, seed: int,
            ) -> tuple[float, list[float]]:
    """Train ``k`` models at once on the fitness loop's batches for ``seed`` (vmap over stacked
    parameters, one Adam per model); (seconds, model 0's train loss curve as the fitness loop
    records it)."""
    task, work = runner.task, runner.workload
    with deterministic_mode(runner.device, task.threads):
        models = [work.build_model(torch.Generator().manual_seed(
            derive_seed(task.name, seed, "init"))) for _ in range(k)]
        stacked, buffers = stack_module_state(models)
        params = {n: p.detach() for n, p in stacked.items()}  # plain tensors, updated in place
        names = list(params)
        leaves = [[torch.nn.Parameter(params[n][i]) for n in names] for i in range(k)]
        opts = [torch.optim.Adam(ps, lr=lr) for ps in leaves]
        base = copy.deepcopy(models[0]).to("meta")

        def loss_fn(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor,
                    y: torch.Tensor) -> torch.Tensor:
            out = functional_call(base, (p, b), (x,))
            return F.cross_entropy(out.flatten(0, -2), y.flatten(),
                                   label_smoothing=task.label_smoothing)

        step_fn = vmap(grad_and_value(loss_fn), in_dims=(0, 0, None, None))
        batches = work.train_batches(torch.Generator().manual_seed(
            derive_seed(task.name, seed, "data")))
        curve = torch.empty(task.steps)
        t0 = time.perf_counter()
        for step in range(task.steps):
            xb, yb = next(batches)
            grads, losses = step_fn(params, buffers, xb, yb)
            for i in range(k):
                for leaf, n in zip(leaves[i], names, strict=True):
                    leaf.grad = grads[n][i]
                opts[i].step()
            curve[step] = losses[0]
        return time.perf_counter() - t0, downsample_curve(curve.numpy())


def parse_sets(items: list[str]) -> dict[str, Any]:
    return {k: tomllib.loads(f"v = {v}")["v"] for k, _, v in (s.partition("=") for s in items)}


def bench_task(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every mode of one task, alternating; medians and ratios to the plain loop."""
    task = load_task(name).with_overrides(threads=0, **parse_sets(args.set))
    runners = {b: FitnessRunner(task.with_overrides(bf16=b), data_dir=args.data_dir)
               for b in (False, True)}
    runner = runners[False]
    n_train = len(runner.workload.train)
    per_step = min(task.batch_size, n_train) if task.dataset == "cifar10" else task.batch_size
    unit = "img" if task.dataset == "cifar10" else "windows"
    print(f"\ntask {task.name}: model {task.model}, {n_train} train "
          f"{'images' if unit == 'img' else 'characters'}, batch {task.batch_size}, "
          f"{task.steps} steps; torch {torch.__version__}, {torch.get_num_threads()} threads",
          flush=True)

    def adam(params, total_steps):
        return torch.optim.Adam(params, lr=args.lr)

    modes = args.modes.split(",")
    ks = [int(k) for k in args.k.split(",")] if "k" in modes else []
    runs: dict[str, Any] = {}
    if "plain" in modes:
        runs["plain"] = lambda s: plain_loop(runner, args.lr, s)
    if "fp32" in modes:
        runs["fp32"] = lambda s: runners[False].evaluate_with(adam, s).train_time_s
    if "bf16" in modes:
        runs["bf16"] = lambda s: runners[True].evaluate_with(adam, s).train_time_s
    for k in ks:
        runs[f"K={k}"] = lambda s, k=k: train_k(runner, k, args.lr, s)[0]
    evals = {m: int(m[2:]) if m.startswith("K=") else 1 for m in runs}
    for fn in runs.values():  # warm-up (oneDNN primitive caches, first-call costs)
        fn(99)
    times: dict[str, list[float]] = {m: [] for m in runs}
    for r in range(args.repeats):
        for m, fn in runs.items():
            times[m].append(fn(r))
        print(f"  repeat {r}: " + "  ".join(f"{m} {evals[m] / times[m][-1]:.3f}"
                                           for m in runs) + "  eval/s", flush=True)
    med = {m: statistics.median(t) for m, t in times.items()}
    rate = {m: evals[m] / med[m] for m in runs}
    ref = rate.get("plain")
    print(f"  {'mode':10s} {'eval/s':>8s} {unit + '/s':>12s} {'s/eval':>8s}  vs plain")
    for m in runs:
        ratio = f"{rate[m] / ref:.2f}x" if ref else "n/a"
        print(f"  {m:10s} {rate[m]:8.3f} {rate[m] * per_step * task.steps:12,.0f} "
              f"{1 / rate[m]:8.2f}  {ratio}")
    same: dict[str, Any] = {}
    if ks:  # is model 0's run independent of its group? (train loss curves, bit for bit)
        alone = runners[False].evaluate_with(adam, 0).train_loss_curve
        curves = {k: train_k(runner, k, args.lr, 0)[1] for k in [1, *ks]}
        same = {f"K={k}": {"same_as_fitness_loop": c == alone, "same_as_k1": c == curves[1],
                           "last_bin_loss": c[-1]} for k, c in curves.items()}
        print(f"  model 0's train loss curve, seed 0 (last bin; = / != the fitness loop's "
              f"{alone[-1]:.6f}): " + ", ".join(
                  f"{m} {v['last_bin_loss']:.6f} {'=' if v['same_as_fitness_loop'] else '!='}"
                  for m, v in same.items()))
    from evoopt.genome import seed_genome

    g = seed_genome("adam")
    shipped = task.bf16 is True  # the task as given: bf16 autocast on the CPU or not
    recs = [runners[shipped].evaluate(g, seed=s) for s in range(args.repeats)]
    walls = [e.wall_time_s for e in recs]
    print(f"  seconds per evaluation (seed genome adam, {'bf16' if shipped else 'fp32'}): median "
          f"{statistics.median(walls):.2f} s  [{', '.join(f'{w:.2f}' for w in walls)}]; "
          f"fitness {', '.join(f'{e.fitness:.3f}' for e in recs)}")
    return {"task": task.name, "threads": torch.get_num_threads(), "times_s": times,
            "evals_per_run": evals, "evals_per_s": rate,
            "ratio_to_plain": {m: rate[m] / ref for m in runs} if ref else None,
            "group_invariance": same, "seconds_per_eval_adam": walls}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--task", default="cifar10-cpu")
    which.add_argument("--all-tasks", action="store_true", help=", ".join(CPU_TASKS))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = as given)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--modes", default="plain,fp32,bf16,k")
    ap.add_argument("--k", default="2,4,8", help="models per group in the K mode")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="task override, e.g. --set image_size=32 --set steps=50")
    ap.add_argument("--json", default=None, help="write every timing here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = [bench_task(t, args) for t in (CPU_TASKS if args.all_tasks else [args.task])]
    if len(results) > 1 and all(r["ratio_to_plain"] for r in results):
        modes = list(results[0]["ratio_to_plain"])
        print("\nevaluations/second relative to the plain loop (medians):")
        print(f"  {'task':22s} " + " ".join(f"{m:>7s}" for m in modes))
        for r in results:
            print(f"  {r['task']:22s} " + " ".join(f"{r['ratio_to_plain'][m]:6.2f}x"
                                                    for m in modes))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
