"""Workloads: what differs between fitness tasks, one class per dataset.

A :class:`Workload` stages a task's data once on the task's device and then answers the few
questions a training run asks; :class:`~evoopt.fitness.runner.FitnessRunner` owns everything else
(seeding, the training loop, divergence and time guards, scoring, result records):

* ``build_model(generator)``: a fresh model of the task's ``model`` kind, weights from
  ``generator`` only;
* ``train_batches(generator)``: an endless stream of ``(inputs, targets)`` training batches, its
  randomness from ``generator`` only;
* ``split_data(split)`` / ``eval_batches(data)``: a scored split (``val``, or ``test``) and its
  fixed ``(inputs, targets)`` batches;
* ``train_loss(outputs, targets)``: the training loss of one batch (a scalar tensor);
* ``score(data, outputs)``: a scored split's :class:`SplitScore` (accuracy or None, mean loss,
  fitness) from the model's ``(outputs, targets)`` batches;
* ``fitness(accuracy, loss)``: a classification workload's score to maximise, in [0, 1].

The classification workloads share the defaults: model outputs are logits over the last
dimension, targets class ids of the same leading shape (images: ``(N, 10)`` / ``(N,)``;
characters: ``(N, T, vocab)`` / ``(N, T)``), so one cross-entropy and one accuracy serve both.
The regression workload (``teacher_mlp``) trains on the mean squared error and scores the
fraction of the split's target variance explained (no accuracy). :data:`WORKLOADS` maps each
dataset of :data:`evoopt.fitness.task.DATASET_MODELS` to its class.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evoopt.fitness.data import DataError, load_cifar10, make_splits
from evoopt.fitness.mlp import DEFAULT_TRAIN_SAMPLES, build_mlp, teacher_splits
from evoopt.fitness.model import build_model
from evoopt.fitness.task import TaskSpec
from evoopt.fitness.text_data import CharCorpus, load_shakespeare
from evoopt.fitness.transformer import CharTransformer, VisionTransformer, build_seeded

SPLITS = ("val", "test")
# CIFAR-10 channel statistics of the training set, on 0..1 pixel values.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

Batch = tuple[torch.Tensor, torch.Tensor]
DataDir = str | os.PathLike[str] | None


@dataclass(frozen=True)
class SplitScore:
    """A scored split: ``accuracy`` (None for regression), mean ``loss`` (cross-entropy in nats,
    or the mean squared error per target element), and ``fitness`` in [0, 1]."""

    accuracy: float | None
    loss: float
    fitness: float


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


class Workload(ABC):
    """A task's data staged on ``device``, its model and its batches (see the module docstring).

    ``models`` lists the model kinds the workload builds (``DATASET_MODELS`` of its dataset);
    ``data_root`` is where its data was read from. ``score_label`` (a short name) and
    ``score_description`` (the definition) say what :meth:`score`'s fitness measures, for reports.
    """

    models: ClassVar[tuple[str, ...]]
    score_label: ClassVar[str] = "accuracy"
    score_description: ClassVar[str] = "the classification accuracy (fraction of targets right)"

    def __init__(self, task: TaskSpec, device: torch.device) -> None:
        self.task, self.device = task, device
        self.data_root: Path = Path()

    @classmethod
    @abstractmethod
    def check_data(cls, task: TaskSpec, data_dir: DataDir = None) -> None:
        """Raise :class:`DataError` when ``task`` cannot run on the data in ``data_dir``: files
        missing or broken, or splits too small for the task (loads and caches the data)."""

    @abstractmethod
    def build_model(self, generator: torch.Generator) -> nn.Module:
        """A freshly initialised model on the device (weights from ``generator`` only)."""

    @abstractmethod
    def train_batches(self, generator: torch.Generator) -> Iterator[Batch]:
        """Endless ``(inputs, targets)`` training batches; order and augmentation from
        ``generator`` only."""

    @abstractmethod
    def split_data(self, split: str) -> Any:
        """The staged scored split ``val`` or ``test`` (``ValueError`` for any other name)."""

    @abstractmethod
    def eval_batches(self, data: Any) -> Iterator[Batch]:
        """The fixed ``(inputs, targets)`` batches of a split from :meth:`split_data`."""

    def train_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One training batch's loss: cross-entropy of logits over the last dimension (with the
        task's label smoothing), computed in fp32."""
        return F.cross_entropy(outputs.float().flatten(0, -2), targets.flatten(),
                               label_smoothing=self.task.label_smoothing)

    def score(self, data: Any, outputs: Iterable[Batch]) -> SplitScore:
        """Accuracy and mean cross-entropy (nats, no smoothing) over every target of a scored
        split, from its fp32 ``(logits, targets)`` batches; fitness :meth:`fitness`."""
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        total_loss = torch.zeros((), device=self.device, dtype=torch.float64)
        n = 0
        for out, yb in outputs:
            out, yb = out.flatten(0, -2), yb.flatten()
            total_loss += F.cross_entropy(out, yb, reduction="sum").double()
            correct += (out.argmax(-1) == yb).sum()
            n += yb.numel()
        accuracy, loss = float(correct) / n, float(total_loss) / n
        return SplitScore(accuracy, loss, self.fitness(accuracy, loss))

    def fitness(self, accuracy: float, loss: float) -> float:
        """The score to maximise from the scored split's accuracy and mean loss (nats)."""
        return accuracy


# ------------------------------------------------------------------ CIFAR-10 images
class ImageSplit:
    """One split staged on the device: padded NHWC images (train) or plain NHWC (eval)."""

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


class CifarWorkload(Workload):
    """CIFAR-10: class-stratified train/val split of the training batches, the official test
    batch, random translation and flip; the airbench-style CNN or a small ViT."""

    models = ("cnn", "vit")

    def __init__(self, task: TaskSpec, device: torch.device, data_dir: DataDir = None,
                 download: bool = True) -> None:
        super().__init__(task, device)
        arrays = load_cifar10(data_dir, download=download)
        self.data_root = arrays.root
        train_idx, val_idx = make_splits(
            arrays.train_y, task.val_size, task.train_size, task.split_seed,
            min_train=min_train_images(task),
        )
        self._pad = task.translate
        self.train = ImageSplit(
            stage_images(arrays.train_x[train_idx], task.image_size, device, pad=self._pad),
            torch.from_numpy(arrays.train_y[train_idx]).to(device),
        )
        self.val = self._eval_split(arrays.train_x[val_idx], arrays.train_y[val_idx])
        self._arrays = arrays
        self._test: ImageSplit | None = None
        self.train_indices, self.val_indices = train_idx, val_idx

    @classmethod
    def check_data(cls, task: TaskSpec, data_dir: DataDir = None) -> None:
        arrays = load_cifar10(data_dir)
        make_splits(arrays.train_y, task.val_size, task.train_size, task.split_seed,
                    min_train=min_train_images(task))

    def _eval_split(self, x: np.ndarray, y: np.ndarray) -> ImageSplit:
        return ImageSplit(stage_images(x, self.task.image_size, self.device),
                          torch.from_numpy(np.array(y, dtype=np.int64)).to(self.device))

    @property
    def test_staged(self) -> bool:
        """Whether the official test batch has been staged (only a ``test`` request does)."""
        return self._test is not None

    def split_data(self, split: str) -> ImageSplit:
        """The staged evaluation split; the official test set is staged only on first request."""
        _check_split(split)
        if split == "val":
            return self.val
        if self._test is None:
            self._test = self._eval_split(self._arrays.test_x, self._arrays.test_y)
        return self._test

    def build_model(self, generator: torch.Generator) -> nn.Module:
        t = self.task
        if t.model == "cnn":
            return build_model(t.width, generator, self.device, channels_last=True)
        return build_seeded(
            lambda: VisionTransformer(t.image_size, t.patch_size, t.width, t.layers, t.heads),
            generator, self.device)

    def train_batches(self, generator: torch.Generator) -> Iterator[Batch]:
        """Epochs of a random permutation (the last partial batch dropped); each epoch draws its
        order, flips and shifts from ``generator``; one gather does translation and flip and
        yields a channels_last NCHW batch."""
        dev, task = self.device, self.task
        x_all, y_all = self.train.x, self.train.y
        n = len(y_all)
        bs = min(task.batch_size, n)
        size, pad = task.image_size, self._pad
        ar = torch.arange(size, device=dev)
        while True:
            perm = torch.randperm(n, generator=generator).to(dev)
            flip = (torch.rand(n, generator=generator) < 0.5) if task.flip else None
            shift = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
            rows_all = (shift[0].to(dev)[:, None] + ar)            # (n, size)
            cols_all = (shift[1].to(dev)[:, None] + ar)
            if flip is not None:
                cols_all = torch.where(flip.to(dev)[:, None], cols_all.flip(1), cols_all)
            for pos in range(0, n - bs + 1, bs):
                idx = perm[pos:pos + bs]
                rows, cols = rows_all[idx], cols_all[idx]
                # (B,H,W,C) contiguous == channels_last NCHW
                xb = x_all[idx[:, None, None], rows[:, :, None], cols[:, None, :]]
                yield xb.permute(0, 3, 1, 2), y_all[idx]

    def eval_batches(self, data: ImageSplit) -> Iterator[Batch]:
        step = self.task.eval_batch_size
        for i in range(0, len(data), step):
            yield data.x[i:i + step].permute(0, 3, 1, 2), data.y[i:i + step]


# ------------------------------------------------------------------ tiny Shakespeare characters
class TextSplit:
    """A scored split as fixed windows: ``x`` (W, T) input ids, ``y`` (W, T) next ids."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)


def eval_windows(ids: np.ndarray, context: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The non-overlapping windows of ``context`` characters tiling ``ids`` (inputs, and the
    targets one character later), or ``limit`` of them evenly spaced when there are more."""
    count = (len(ids) - 1) // context
    if count < 1:
        raise DataError(f"context={context} is longer than the {len(ids)}-character split "
                        "(it needs context + 1 characters): lower context")
    chosen = np.arange(count)
    if limit < count:
        chosen = np.linspace(0, count - 1, limit).round().astype(np.int64)
    starts = chosen * context
    idx = starts[:, None] + np.arange(context + 1)
    windows = ids[idx]
    return np.ascontiguousarray(windows[:, :-1]), np.ascontiguousarray(windows[:, 1:])


def train_chars(corpus: CharCorpus, task: TaskSpec) -> np.ndarray:
    """The training characters of ``task``: the first ``train_size`` of the train split (all of
    it when None); :class:`DataError` when fewer than ``context + 1`` (one window)."""
    ids = corpus.split("train")[:task.train_size]
    if len(ids) < task.context + 1:
        raise DataError(f"train_size={task.train_size} leaves {len(ids)} training characters; "
                        f"one window needs context + 1 = {task.context + 1}: raise train_size "
                        "or lower context")
    return ids


class CharWorkload(Workload):
    """Tiny Shakespeare: random ``context``-character windows of the train split; the val (or
    test) split as fixed windows; a causal character transformer. Fitness is the fraction of the
    uniform prediction's loss ``ln(vocab)`` removed: ``max(0, 1 - loss / ln(vocab))``."""

    models = ("transformer",)
    score_label = "fraction of the uniform loss removed"
    score_description = ("the fraction of the uniform prediction's loss ln(vocab) removed, "
                         "max(0, 1 − loss / ln(vocab)), from the cross-entropy in nats")

    def __init__(self, task: TaskSpec, device: torch.device, data_dir: DataDir = None,
                 download: bool = True) -> None:
        super().__init__(task, device)
        corpus = load_shakespeare(data_dir, download=download)
        self.data_root = corpus.path.parent
        self.vocab_size = corpus.vocab_size
        self.train = torch.tensor(train_chars(corpus, task), device=device)  # a copy
        self._corpus = corpus
        self._splits: dict[str, TextSplit] = {}
        self.val = self.split_data("val")

    @classmethod
    def check_data(cls, task: TaskSpec, data_dir: DataDir = None) -> None:
        corpus = load_shakespeare(data_dir)
        train_chars(corpus, task)
        eval_windows(corpus.split("val"), task.context, task.val_size)

    def split_data(self, split: str) -> TextSplit:
        _check_split(split)
        if split not in self._splits:
            x, y = eval_windows(self._corpus.split(split), self.task.context, self.task.val_size)
            self._splits[split] = TextSplit(torch.from_numpy(x).to(self.device),
                                            torch.from_numpy(y).to(self.device))
        return self._splits[split]

    def build_model(self, generator: torch.Generator) -> nn.Module:
        t = self.task
        return build_seeded(
            lambda: CharTransformer(self.vocab_size, t.context, t.width, t.layers, t.heads),
            generator, self.device)

    def train_batches(self, generator: torch.Generator) -> Iterator[Batch]:
        """Each batch: ``batch_size`` windows at uniformly random starts in the train split."""
        t, data = self.task, self.train
        offsets = torch.arange(t.context + 1, device=self.device)
        while True:
            starts = torch.randint(0, len(data) - t.context, (t.batch_size,), generator=generator)
            windows = data[starts.to(self.device)[:, None] + offsets]
            yield windows[:, :-1], windows[:, 1:]

    def eval_batches(self, data: TextSplit) -> Iterator[Batch]:
        step = self.task.eval_batch_size
        for i in range(0, len(data), step):
            yield data.x[i:i + step], data.y[i:i + step]

    def fitness(self, accuracy: float, loss: float) -> float:
        return max(0.0, 1.0 - loss / math.log(self.vocab_size))


# ------------------------------------------------------------------ teacher-student regression
class RegressionSplit:
    """A scored regression split on the device: inputs ``x`` (N, in), targets ``y`` (N, out) and
    the targets' total sum of squares about their per-output means (float64, on the CPU)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        y64 = y.detach().double().cpu()
        self.total_ss = float(((y64 - y64.mean(0, keepdim=True)) ** 2).sum())

    def __len__(self) -> int:
        return len(self.y)


#: the most float32 numbers a teacher_mlp task may stage (inputs and targets of its 3 splits)
MAX_TEACHER_NUMBERS = 256 * 2**20


def teacher_sizes(task: TaskSpec) -> dict[str, int]:
    """Samples per split of a ``teacher_mlp`` task (train: ``train_size`` or 4096)."""
    return {"train": task.train_size or DEFAULT_TRAIN_SAMPLES, "val": task.val_size,
            "test": task.val_size}


class TeacherMLPWorkload(Workload):
    """Teacher–student regression (:mod:`evoopt.fitness.mlp`): synthetic data from a fixed random
    teacher MLP, no files; epochs of a random permutation of the training samples; an MLP
    student. Trained on the mean squared error; fitness is the fraction of the scored split's
    target variance explained, ``R² = 1 − SSE / SST`` (SST about the split's per-output means),
    clipped to [0, 1]. ``val_loss`` is the MSE per target element; there is no accuracy."""

    models = ("mlp",)
    score_label = "R² (target variance explained)"
    score_description = ("R² = 1 − SSE / SST, the fraction of the targets' variance the student "
                         "explains (from its squared error, as MSE), clipped to [0, 1]")

    def __init__(self, task: TaskSpec, device: torch.device, data_dir: DataDir = None,
                 download: bool = True) -> None:
        super().__init__(task, device)
        self.check_data(task, data_dir)
        data = teacher_splits(task.input_dim, task.output_dim, task.teacher_width,
                              task.teacher_layers, task.activation, task.noise, task.teacher_seed,
                              task.split_seed, teacher_sizes(task))
        self._splits = {name: RegressionSplit(x.to(device), y.to(device))
                        for name, (x, y) in data.items()}
        self.train = self._splits["train"]
        self.val = self._splits["val"]

    @classmethod
    def check_data(cls, task: TaskSpec, data_dir: DataDir = None) -> None:
        """No files to read (``data_dir`` is ignored): only the sizes are checked."""
        numbers = sum(teacher_sizes(task).values()) * (task.input_dim + task.output_dim)
        if numbers > MAX_TEACHER_NUMBERS:
            raise DataError(f"task {task.name}: {numbers:,} numbers of synthetic data (train, "
                            f"val and test samples x (input_dim + output_dim)) exceed "
                            f"{MAX_TEACHER_NUMBERS:,}: lower train_size, val_size or the dims")

    def split_data(self, split: str) -> RegressionSplit:
        _check_split(split)
        return self._splits[split]

    def build_model(self, generator: torch.Generator) -> nn.Module:
        t = self.task
        return build_mlp(t.input_dim, t.width, t.layers, t.output_dim, t.activation, generator,
                         self.device)

    def train_batches(self, generator: torch.Generator) -> Iterator[Batch]:
        """Epochs of a random permutation of the training samples (the last partial batch
        dropped), the order drawn from ``generator``."""
        x_all, y_all = self.train.x, self.train.y
        n = len(y_all)
        bs = min(self.task.batch_size, n)
        while True:
            perm = torch.randperm(n, generator=generator).to(self.device)
            for pos in range(0, n - bs + 1, bs):
                idx = perm[pos:pos + bs]
                yield x_all[idx], y_all[idx]

    def eval_batches(self, data: RegressionSplit) -> Iterator[Batch]:
        step = self.task.eval_batch_size
        for i in range(0, len(data), step):
            yield data.x[i:i + step], data.y[i:i + step]

    def train_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the batch's target elements, in fp32."""
        return F.mse_loss(outputs.float(), targets)

    def score(self, data: RegressionSplit, outputs: Iterable[Batch]) -> SplitScore:
        """MSE per target element (``loss``) and ``fitness = clip(1 − SSE / SST, 0, 1)``; a
        non-finite SSE gives a non-finite loss (the runner calls that diverged)."""
        sse = torch.zeros((), device=self.device, dtype=torch.float64)
        n = 0
        for out, yb in outputs:
            sse += (out.double() - yb.double()).pow(2).sum()
            n += yb.numel()
        total = float(sse)
        r2 = 1.0 - total / data.total_ss if data.total_ss > 0 else 0.0
        fitness = min(1.0, max(0.0, r2)) if math.isfinite(r2) else 0.0
        return SplitScore(None, total / n, fitness)


#: dataset -> its workload class
WORKLOADS: dict[str, type[Workload]] = {
    "cifar10": CifarWorkload,
    "shakespeare_char": CharWorkload,
    "teacher_mlp": TeacherMLPWorkload,
}


def make_workload(task: TaskSpec, device: torch.device, data_dir: DataDir = None,
                  download: bool = True) -> Workload:
    """The workload of ``task``'s dataset, its data loaded and staged on ``device``."""
    cls: Any = WORKLOADS[task.dataset]
    return cls(task, device, data_dir=data_dir, download=download)


__all__ = [
    "SPLITS", "Batch", "CharWorkload", "CifarWorkload", "ImageSplit", "RegressionSplit",
    "SplitScore", "TeacherMLPWorkload", "TextSplit", "WORKLOADS", "Workload", "eval_windows",
    "make_workload", "min_train_images", "stage_images", "teacher_sizes", "train_chars",
]
