"""The fitness run: train the small CNN with a genome's optimizer, score it on a held-out split.

``FitnessRunner`` stages the task's data once as tensors on the task's device (NHWC, normalised,
reflect-padded for translation) and then evaluates one (genome, seed) at a time:

* **fitness** = accuracy on the evaluated split (validation unless ``split="test"``), a number in
  [0, 1] to maximise; a run that diverges, times out or fails gets ``WORST_FITNESS`` (-1.0).
* **common random numbers**: initial weights, data order and augmentation come from generators
  seeded by (task name, seed) only, so two genomes evaluated with the same seed see the same
  network and the same batches.
* never raises: any exception becomes ``status="error"`` with the message.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from evoopt.fitness.data import load_cifar10, make_splits
from evoopt.fitness.model import build_model
from evoopt.fitness.task import TaskSpec, load_task
from evoopt.stats import mean_std

WORST_FITNESS = -1.0
"""Fitness of any run whose status is not ``ok`` (finite, below every accuracy)."""

STATUSES = ("ok", "diverged", "timeout", "error")
CURVE_POINTS = 50
SPLITS = ("val", "test")
# CIFAR-10 channel statistics of the training set, on 0..1 pixel values.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter], int], torch.optim.Optimizer]


def _finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass
class SeedResult:
    """The outcome of one (genome, seed) training run."""

    seed: int
    fitness: float = WORST_FITNESS
    val_accuracy: float | None = None   # accuracy on ``split`` (val, or test when asked)
    val_loss: float | None = None       # mean cross-entropy (no smoothing) on ``split``
    status: str = "error"
    message: str = ""
    steps: int = 0                      # optimizer steps completed
    wall_time_s: float = 0.0            # whole run: build, train, evaluate
    train_time_s: float = 0.0           # the training loop alone
    train_loss_curve: list[float | None] = field(default_factory=list)  # <= 50 bin means
    split: str = "val"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (non-finite numbers become None)."""
        d = asdict(self)
        d["train_loss_curve"] = [_finite_or_none(v) for v in self.train_loss_curve]
        for k in ("val_accuracy", "val_loss"):
            d[k] = _finite_or_none(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SeedResult:
        return cls(**d)


@dataclass
class EvaluationResult:
    """Seeds aggregated: mean and (population) std over seeds.

    ``fitness`` is the mean per-seed accuracy if every seed is ``ok``; otherwise the status is
    the first failing seed's and ``fitness == WORST_FITNESS``. Accuracy/loss means are over the
    seeds that finished (None if none did).
    """

    fitness: float
    fitness_std: float
    val_accuracy: float | None
    val_accuracy_std: float | None
    val_loss: float | None
    val_loss_std: float | None
    status: str
    message: str
    wall_time_s: float
    split: str
    task: str
    seeds: list[SeedResult]

    @classmethod
    def from_seeds(cls, results: Sequence[SeedResult], task: str, split: str) -> EvaluationResult:
        if not results:
            raise ValueError("no seed results to aggregate")
        bad = [r for r in results if r.status != "ok"]
        done = [r for r in results if r.val_accuracy is not None]

        acc, acc_std = mean_std([r.val_accuracy for r in done])
        loss, loss_std = mean_std([r.val_loss for r in done if r.val_loss is not None])
        fit, fit_std = mean_std([r.fitness for r in results])
        return cls(
            fitness=WORST_FITNESS if bad else float(fit),
            fitness_std=0.0 if bad else float(fit_std),
            val_accuracy=acc, val_accuracy_std=acc_std, val_loss=loss, val_loss_std=loss_std,
            status=bad[0].status if bad else "ok",
            message="; ".join(f"seed {r.seed}: {r.status}: {r.message}" for r in bad),
            wall_time_s=float(sum(r.wall_time_s for r in results)),
            split=split, task=task, seeds=list(results),
        )

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "seeds"}
        for k in ("val_accuracy", "val_accuracy_std", "val_loss", "val_loss_std"):
            d[k] = _finite_or_none(d[k])
        d["seeds"] = [r.to_dict() for r in self.seeds]
        return d


def derive_seed(task_name: str, seed: int, purpose: str) -> int:
    """A 63-bit generator seed that depends only on (task name, seed, purpose)."""
    h = hashlib.sha256(f"evoopt|{task_name}|{int(seed)}|{purpose}".encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("task asks for device='cuda' but CUDA is not available")
    return torch.device(device)


@contextmanager
def deterministic_mode(device: torch.device, threads: int = 0):
    """Deterministic kernels (and ``threads`` CPU threads if > 0) for the duration of a run;
    restores the previous global settings."""
    prev_threads = torch.get_num_threads()
    if threads:  # at most this machine's CPUs (a spec checked on a bigger driver)
        torch.set_num_threads(min(threads, os.cpu_count() or threads))
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_fill = torch.utils.deterministic.fill_uninitialized_memory
    prev_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # deterministic mode NaN-fills every torch.empty (10k fills per run here, ~9% of the time);
    # every buffer the run reads is written first, so skip that.
    torch.utils.deterministic.fill_uninitialized_memory = False
    if device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)
        torch.utils.deterministic.fill_uninitialized_memory = prev_fill
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev_cudnn
        if threads:
            torch.set_num_threads(prev_threads)


def downsample_curve(losses: np.ndarray, points: int = CURVE_POINTS) -> list[float]:
    """Means of ``losses`` over at most ``points`` equal-size consecutive bins."""
    if len(losses) == 0:
        return []
    bins = np.array_split(losses.astype(np.float64), min(points, len(losses)))
    with np.errstate(invalid="ignore", over="ignore"):
        return [float(b.mean()) for b in bins]


def genome_optimizer_factory(genome: Any) -> OptimizerFactory:
    """Optimizer factory for a ``Genome`` (or its dict form) via ``GenomeOptimizer``."""
    from evoopt.genome import Genome, GenomeOptimizer

    g = Genome.from_dict(genome) if isinstance(genome, dict) else genome

    def make(params: Iterable[torch.nn.Parameter], total_steps: int) -> torch.optim.Optimizer:
        return GenomeOptimizer(params, g, total_steps=total_steps)

    return make


class _Split:
    """One split staged on the device: padded NHWC images (train) or plain NCHW views (eval)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)


def stage_images(x_uint8: np.ndarray, image_size: int, device: torch.device, pad: int = 0,
                 ) -> torch.Tensor:
    """uint8 HWC images -> normalised float32 NHWC tensor on ``device``, avg-pooled to size,
    reflect-padded by ``pad`` pixels."""
    x = torch.from_numpy(np.array(x_uint8, dtype=np.uint8, order="C")).to(device)
    x = x.permute(0, 3, 1, 2).float().div_(255)          # NCHW view
    mean = torch.tensor(CIFAR10_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, device=device).view(1, 3, 1, 1)
    x = (x - mean) / std
    if image_size != x.shape[-1]:
        x = F.avg_pool2d(x, x.shape[-1] // image_size)
    if pad:
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    return x.permute(0, 2, 3, 1).contiguous()            # NHWC storage


def min_train_images(task: TaskSpec) -> int:
    """Fewest training images a task may be left with by its validation split: one batch (or
    the task's ``train_size``, when that is smaller)."""
    return min(task.batch_size, task.train_size or task.batch_size)


def check_task_data(task: TaskSpec, data_dir: str | None = None) -> None:
    """Raise :class:`~evoopt.fitness.data.DataError` now, before any run is paid for, when
    ``task`` cannot run on the data: missing or broken files, or a split that leaves too little
    to train on. Loads the arrays (cached for this process's later runs)."""
    arrays = load_cifar10(data_dir)
    make_splits(arrays.train_y, task.val_size, task.train_size, task.split_seed,
                min_train=min_train_images(task))


class FitnessRunner:
    """Loads and stages a task's data once; ``evaluate(genome, seed)`` trains and scores.

    The raw arrays are cached per process (keyed by resolved path), so several runners, e.g. for
    fidelity stages, share them; each runner stages its own subset on its device.
    """

    def __init__(self, task: TaskSpec | str, data_dir: str | None = None,
                 download: bool = True) -> None:
        self.task = load_task(task)
        self.device = resolve_device(self.task.device)
        self.data_dir = data_dir
        arrays = load_cifar10(data_dir, download=download)
        self.data_root = arrays.root
        train_idx, val_idx = make_splits(
            arrays.train_y, self.task.val_size, self.task.train_size, self.task.split_seed,
            min_train=min_train_images(self.task),
        )
        t = self.task
        self._pad = t.translate
        self.train = _Split(
            stage_images(arrays.train_x[train_idx], t.image_size, self.device, pad=self._pad),
            torch.from_numpy(arrays.train_y[train_idx]).to(self.device),
        )
        self.val = self._eval_split(arrays.train_x[val_idx], arrays.train_y[val_idx])
        self._arrays = arrays
        self._test: _Split | None = None
        self.train_indices, self.val_indices = train_idx, val_idx

    def _eval_split(self, x: np.ndarray, y: np.ndarray) -> _Split:
        return _Split(stage_images(x, self.task.image_size, self.device),
                      torch.from_numpy(np.array(y, dtype=np.int64)).to(self.device))

    def split_data(self, split: str) -> _Split:
        """The staged evaluation split; the official test set is staged only on first request."""
        if split == "val":
            return self.val
        if split == "test":
            if self._test is None:
                self._test = self._eval_split(self._arrays.test_x, self._arrays.test_y)
            return self._test
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")

    # ------------------------------------------------------------------ public API
    def evaluate(self, genome: Any, seed: int, split: str = "val") -> SeedResult:
        """Train with ``genome`` (a ``Genome`` or its dict) on ``seed``; never raises."""
        t0 = time.perf_counter()
        try:
            factory = genome_optimizer_factory(genome)
        except Exception as e:  # noqa: BLE001 - invalid genome is a scored failure
            return SeedResult(seed=int(seed), status="error", split=split,
                              message=f"invalid genome: {type(e).__name__}: {e}",
                              wall_time_s=time.perf_counter() - t0)
        return self.evaluate_with(factory, seed, split, _t0=t0)

    def evaluate_with(self, make_optimizer: OptimizerFactory, seed: int, split: str = "val",
                      _t0: float | None = None) -> SeedResult:
        """Like :meth:`evaluate` for any ``make_optimizer(params, total_steps)``; never raises."""
        t0 = time.perf_counter() if _t0 is None else _t0
        res = SeedResult(seed=int(seed), split=split)
        try:
            with deterministic_mode(self.device, self.task.threads):
                self._run(make_optimizer, int(seed), split, t0, res)
        except Exception as e:  # noqa: BLE001 - a fitness run never raises
            tb = traceback.extract_tb(e.__traceback__)
            where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
            res.status, res.fitness = "error", WORST_FITNESS
            res.message = f"{type(e).__name__}: {e}{where}"
        res.wall_time_s = time.perf_counter() - t0
        if res.status != "ok":
            res.fitness = WORST_FITNESS
        return res

    # ------------------------------------------------------------------ internals
    def _autocast(self):
        if self.device.type == "cuda" and self.task.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _run(self, make_optimizer: OptimizerFactory, seed: int, split: str, t0: float,
             res: SeedResult) -> None:
        task, dev = self.task, self.device
        eval_data = self.split_data(split)  # validate split before training
        g_init = torch.Generator().manual_seed(derive_seed(task.name, seed, "init"))
        g_data = torch.Generator().manual_seed(derive_seed(task.name, seed, "data"))
        model = build_model(task.width, g_init, dev, channels_last=True)
        opt = make_optimizer(model.parameters(), task.steps)

        x_all, y_all = self.train.x, self.train.y
        n = len(y_all)
        bs = min(task.batch_size, n)
        size, pad = task.image_size, self._pad
        ar = torch.arange(size, device=dev)
        losses = torch.empty(task.steps, device=dev, dtype=torch.float32)
        first_loss: float | None = None
        checked = 0
        pos = n  # forces a new epoch at step 0
        t_train = time.perf_counter()
        model.train()
        for step in range(task.steps):
            if pos + bs > n:  # new epoch: order, flips and shifts from the data generator
                perm = torch.randperm(n, generator=g_data).to(dev)
                flip = (torch.rand(n, generator=g_data) < 0.5) if task.flip else None
                shift = torch.randint(0, 2 * pad + 1, (2, n), generator=g_data)
                rows_all = (shift[0].to(dev)[:, None] + ar)            # (n, size)
                cols_all = (shift[1].to(dev)[:, None] + ar)
                if flip is not None:
                    cols_all = torch.where(flip.to(dev)[:, None], cols_all.flip(1), cols_all)
                pos = 0
            idx = perm[pos:pos + bs]
            pos += bs
            rows, cols = rows_all[idx], cols_all[idx]
            # one gather does translation + flip; (B,H,W,C) contiguous == channels_last NCHW
            xb = x_all[idx[:, None, None], rows[:, :, None], cols[:, None, :]]
            xb = xb.permute(0, 3, 1, 2)
            yb = y_all[idx]
            with self._autocast():
                out = model(xb)
            loss = F.cross_entropy(out.float(), yb, label_smoothing=task.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses[step] = loss.detach()
            res.steps = step + 1
            if res.steps % task.check_every == 0 or res.steps == task.steps:
                window = losses[checked:res.steps]
                checked = res.steps
                if first_loss is None:
                    first_loss = float(window[0])
                worst = float(window.max()) if bool(torch.isfinite(window).all()) else math.inf
                limit = task.divergence_factor * max(first_loss, 1e-3)
                if not math.isfinite(first_loss) or worst > limit:
                    res.status = "diverged"
                    res.message = (f"train loss {worst:.4g} at step <= {res.steps} "
                                   f"(limit {limit:.4g} = {task.divergence_factor} x first loss)")
                    break
                if time.perf_counter() - t0 > task.time_limit_s:
                    res.status = "timeout"
                    res.message = f"time limit {task.time_limit_s}s hit after {res.steps} steps"
                    break
        res.train_time_s = time.perf_counter() - t_train
        res.train_loss_curve = downsample_curve(losses[:res.steps].cpu().numpy())
        if res.status in ("diverged", "timeout"):
            return
        acc, vloss = self._score(model, eval_data)
        if not math.isfinite(vloss):
            res.status, res.message = "diverged", f"non-finite {split} loss"
            return
        res.val_accuracy, res.val_loss = acc, vloss
        res.status, res.fitness, res.message = "ok", acc, ""

    @torch.no_grad()
    def _score(self, model: torch.nn.Module, data: _Split) -> tuple[float, float]:
        model.eval()
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        total_loss = torch.zeros((), device=self.device, dtype=torch.float64)
        for i in range(0, len(data), self.task.eval_batch_size):
            xb = data.x[i:i + self.task.eval_batch_size].permute(0, 3, 1, 2)
            yb = data.y[i:i + self.task.eval_batch_size]
            with self._autocast():
                out = model(xb).float()
            total_loss += F.cross_entropy(out, yb, reduction="sum").double()
            correct += (out.argmax(1) == yb).sum()
        n = len(data)
        return float(correct) / n, float(total_loss) / n


def evaluate_genome(genome: Any, task: TaskSpec | str, seeds: int | Sequence[int] | None = None,
                    data_dir: str | None = None, split: str = "val") -> EvaluationResult:
    """Evaluate ``genome`` on ``seeds`` (an int n = seeds 0..n-1; default: the task's count)."""
    spec = load_task(task)
    seed_list = list(range(spec.seeds if seeds is None else seeds)) if (
        seeds is None or isinstance(seeds, int)) else [int(s) for s in seeds]
    runner = FitnessRunner(spec, data_dir=data_dir)
    results = [runner.evaluate(genome, s, split=split) for s in seed_list]
    return EvaluationResult.from_seeds(results, task=spec.name, split=split)


__all__ = [
    "CURVE_POINTS", "EvaluationResult", "FitnessRunner", "OptimizerFactory", "STATUSES",
    "SeedResult", "WORST_FITNESS", "check_task_data", "derive_seed", "downsample_curve",
    "evaluate_genome", "genome_optimizer_factory", "min_train_images", "resolve_device",
]
