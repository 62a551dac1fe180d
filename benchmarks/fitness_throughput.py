"""Training throughput of the fitness loop vs a straightforward PyTorch loop, side by side.

Both train the same ``SmallCNN`` with ``torch.optim.Adam`` on the same task data (the task's
training subset, image size and batch size) for the task's step budget:

* **fitness loop**: ``FitnessRunner.evaluate_with`` (data staged once as NHWC tensors,
  channels_last model, one gather per batch for flip + translation);
* **straightforward loop**: ``DataLoader(TensorDataset(x, y), shuffle=True)`` over NCHW tensors,
  an NCHW model, flip and translation applied per batch (per-image crop of a padded batch).

Runs alternate (A, B, A, B, ...) and medians are reported, since other processes may share the
CPU. Also prints seconds per evaluation of the seed genome at the task (Adam via GenomeOptimizer).

    python benchmarks/fitness_throughput.py [--task cifar10-cpu] [--repeats 3] [--threads N]
                                            [--set image_size=32 --set steps=50 ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tomllib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoopt.fitness import FitnessRunner, load_task  # noqa: E402
from evoopt.fitness.model import SmallCNN  # noqa: E402


def plain_loop(runner: FitnessRunner, lr: float, seed: int) -> float:
    """Seconds to train ``task.steps`` steps the straightforward way."""
    task = runner.task
    pad = task.translate
    # the same images, NCHW, unpadded
    train = runner.workload.train
    x = train.x[:, pad:pad + task.image_size, pad:pad + task.image_size, :]
    x = x.permute(0, 3, 1, 2).contiguous()
    y = train.y
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(TensorDataset(x, y), batch_size=task.batch_size, shuffle=True,
                        drop_last=True, generator=g)
    torch.manual_seed(seed)
    model = SmallCNN(task.width)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    step, t0 = 0, time.perf_counter()
    while step < task.steps:
        for xb, yb in loader:
            if task.flip:
                flip = torch.rand(len(xb), generator=g) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            if pad:
                xp = F.pad(xb, (pad,) * 4, mode="reflect")
                dy, dx = torch.randint(0, 2 * pad + 1, (2, len(xb)), generator=g).tolist()
                s = task.image_size
                xb = torch.stack([xp[i, :, a:a + s, b:b + s] for i, (a, b) in
                                  enumerate(zip(dy, dx, strict=True))])
            loss = F.cross_entropy(model(xb), yb, label_smoothing=task.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step == task.steps:
                break
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="cifar10-cpu")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = as given)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="task override, e.g. --set image_size=32 --set steps=50")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {k: tomllib.loads(f"v = {v}")["v"] for k, _, v in
                 (item.partition("=") for item in args.set)}
    task = load_task(args.task).with_overrides(threads=0, **overrides)
    if task.model != "cnn":
        sys.exit(f"task {task.name}: this benchmark compares CNN loops; model is {task.model!r}")
    runner = FitnessRunner(task, data_dir=args.data_dir)
    n_train = len(runner.workload.train)
    images = task.steps * min(task.batch_size, n_train)
    print(f"task {task.name}: {n_train} train images, {task.image_size} px, "
          f"width {task.width}, batch {task.batch_size}, {task.steps} steps; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    def adam(params, total_steps):
        return torch.optim.Adam(params, lr=args.lr)

    # warm-up (oneDNN primitive caches) for both paths
    runner.evaluate_with(adam, seed=99)
    plain_loop(runner, args.lr, seed=99)
    fast, plain = [], []
    for r in range(args.repeats):
        rec = runner.evaluate_with(adam, seed=r)
        fast.append(rec.train_time_s)
        plain.append(plain_loop(runner, args.lr, seed=r))
        print(f"  repeat {r}: fitness loop {images / fast[-1]:8.0f} img/s   "
              f"straightforward {images / plain[-1]:8.0f} img/s", flush=True)
    f_med, p_med = statistics.median(fast), statistics.median(plain)
    print(f"fitness loop      {images / f_med:8.0f} img/s  (median train time {f_med:.2f} s)")
    print(f"straightforward   {images / p_med:8.0f} img/s  (median train time {p_med:.2f} s)")
    print(f"speed-up          {p_med / f_med:.2f}x")

    from evoopt.genome import seed_genome

    g = seed_genome("adam")
    evals = [runner.evaluate(g, seed=s) for s in range(args.repeats)]
    walls = [e.wall_time_s for e in evals]
    accs = [e.val_accuracy for e in evals]
    print(f"seconds per evaluation (seed genome adam, {task.name}): median "
          f"{statistics.median(walls):.2f} s  [{', '.join(f'{w:.2f}' for w in walls)}]; "
          f"val accuracy {', '.join(f'{a:.3f}' if a is not None else 'n/a' for a in accs)}")


if __name__ == "__main__":
    main()
