"""The built-in tasks: CIFAR-10 images, tiny Shakespeare characters and a teacher-student
regression, each a :class:`~evoopt.fitness.training_task.TrainingTask` like any user's, with a
``Params`` dataclass of its own fields (validated, with the checks that name the field).

A task file without ``entry`` names one of them by ``dataset`` (the shorthand of every shipped
task file: :data:`evoopt.fitness.task.BUILTIN_ENTRIES`). The classification tasks share the
defaults (logits, cross-entropy, accuracy); the regression task trains on the mean squared
error and scores the fraction of the split's target variance explained (no accuracy).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evoopt.fitness.data import DataError, load_cifar10, make_splits
from evoopt.fitness.mlp import DEFAULT_TRAIN_SAMPLES, build_mlp, teacher_splits
from evoopt.fitness.model import build_model
from evoopt.fitness.orientation import Score
from evoopt.fitness.task import TaskError
from evoopt.fitness.text_data import CharCorpus, load_shakespeare
from evoopt.fitness.training_task import SPLITS, TaskContext, TrainingTask, check_split
from evoopt.fitness.transformer import CharTransformer, VisionTransformer, build_seeded

IMAGE_SIZES = (16, 32)
#: hidden activations of the MLPs of a ``teacher_mlp`` task (teacher and student)
ACTIVATIONS = ("relu", "tanh", "gelu")
# CIFAR-10 channel statistics of the training set, on 0..1 pixel values.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

Batch = tuple[torch.Tensor, torch.Tensor]


def check_positive(params: Any, *names: str) -> None:
    """:class:`TaskError` naming the first of ``names`` whose value is below 1."""
    for name in names:
        if getattr(params, name) < 1:
            raise TaskError(name, f"must be >= 1, got {getattr(params, name)}")


def check_choice(name: str, value: Any, choices: tuple[Any, ...], what: str = "") -> None:
    """:class:`TaskError` naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise TaskError(name, what or f"must be one of {choices}, got {value!r}")


def check_fraction(params: Any) -> None:
    """``label_smoothing`` in [0, 1); ``train_size`` >= 1 or omitted."""
    if params.train_size is not None and params.train_size < 1:
        raise TaskError("train_size", f"must be >= 1 or omitted, got {params.train_size}")
    if not 0.0 <= params.label_smoothing < 1.0:
        raise TaskError("label_smoothing", f"must be in [0, 1), got {params.label_smoothing}")


def check_heads(params: Any) -> None:
    """Attention heads that divide the width."""
    if params.width % params.heads:
        raise TaskError("heads", f"must divide width ({params.width}), got {params.heads}")


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


def min_train_images(params: Any) -> int:
    """Fewest training images a task may be left with by its validation split: one batch (or
    the task's ``train_size``, when that is smaller)."""
    return min(params.batch_size, params.train_size or params.batch_size)


@dataclass(frozen=True)
class CifarParams:
    """The fields of a CIFAR-10 task."""

    dataset: str = "cifar10"
    model: str = "cnn"              # cnn (airbench-style) | vit
    image_size: int = 16            # 16 (2x2 average-pooled) or 32 px
    train_size: int | None = None   # training images (class-stratified), None = all non-val
    val_size: int = 1000            # validation images held out of the training batches
    split_seed: int = 0             # seed of the val split and of the training subset
    batch_size: int = 250
    width: int = 16                 # cnn: channels of the first block (x (1, 2, 4)); vit: width
    layers: int = 2                 # vit: pre-LN blocks
    heads: int = 4                  # vit: attention heads (must divide width)
    patch_size: int = 4             # vit: patch side in pixels (must divide image_size)
    label_smoothing: float = 0.0
    flip: bool = True               # random horizontal flip
    translate: int = 1              # random translation, in pixels (reflect-padded); 0 = none
    eval_batch_size: int = 1000

    MODELS: ClassVar[tuple[str, ...]] = ("cnn", "vit")

    def __post_init__(self) -> None:
        check_choice("model", self.model, self.MODELS, f"model {self.model!r} cannot train on "
                     f"dataset {self.dataset!r} (valid: {', '.join(self.MODELS)})")
        check_choice("image_size", self.image_size, IMAGE_SIZES,
                     f"must be one of {IMAGE_SIZES}, got {self.image_size}")
        check_positive(self, "val_size", "batch_size", "width", "layers", "heads",
                       "patch_size", "eval_batch_size")
        if self.model == "vit":
            check_heads(self)
            if self.image_size % self.patch_size:
                raise TaskError("patch_size", f"must divide image_size ({self.image_size}), "
                                              f"got {self.patch_size}")
        check_fraction(self)
        if not 0 <= self.translate <= self.image_size // 4:
            raise TaskError("translate", f"must be in [0, {self.image_size // 4}]")


class CifarTask(TrainingTask):
    """CIFAR-10: class-stratified train/val split of the training batches, the official test
    batch, random translation and flip; the airbench-style CNN or a small ViT."""

    Params = CifarParams
    value_range = (0.0, 1.0)

    def __init__(self, params: CifarParams, ctx: TaskContext) -> None:
        super().__init__(params, ctx)
        device = self.device
        arrays = load_cifar10(ctx.data_dir, download=ctx.download)
        self.data_root = arrays.root
        train_idx, val_idx = make_splits(
            arrays.train_y, params.val_size, params.train_size, params.split_seed,
            min_train=min_train_images(params),
        )
        self._pad = params.translate
        self.train = ImageSplit(
            stage_images(arrays.train_x[train_idx], params.image_size, device, pad=self._pad),
            torch.from_numpy(arrays.train_y[train_idx]).to(device),
        )
        self.val = self._eval_split(arrays.train_x[val_idx], arrays.train_y[val_idx])
        self._arrays = arrays
        self._test: ImageSplit | None = None
        self.train_indices, self.val_indices = train_idx, val_idx

    @classmethod
    def check_data(cls, params: CifarParams, ctx: TaskContext) -> None:
        arrays = load_cifar10(ctx.data_dir)
        make_splits(arrays.train_y, params.val_size, params.train_size, params.split_seed,
                    min_train=min_train_images(params))

    def _eval_split(self, x: np.ndarray, y: np.ndarray) -> ImageSplit:
        return ImageSplit(stage_images(x, self.params.image_size, self.device),
                          torch.from_numpy(np.array(y, dtype=np.int64)).to(self.device))

    @property
    def test_staged(self) -> bool:
        """Whether the official test batch has been staged (only a ``test`` request does)."""
        return self._test is not None

    def split_data(self, split: str) -> ImageSplit:
        """The staged evaluation split; the official test set is staged only on first request."""
        check_split(split)
        if split == "val":
            return self.val
        if self._test is None:
            self._test = self._eval_split(self._arrays.test_x, self._arrays.test_y)
        return self._test

    def build_model(self, generator: torch.Generator) -> nn.Module:
        t = self.params
        if t.model == "cnn":
            return build_model(t.width, generator, self.device, channels_last=True)
        return build_seeded(
            lambda: VisionTransformer(t.image_size, t.patch_size, t.width, t.layers, t.heads),
            generator, self.device)

    def train_batches(self, generator: torch.Generator) -> Iterator[Batch]:
        """Epochs of a random permutation (the last partial batch dropped); each epoch draws its
        order, flips and shifts from ``generator``; one gather does translation and flip and
        yields a channels_last NCHW batch."""
        dev, task = self.device, self.params
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
        step = self.params.eval_batch_size
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


def train_chars(corpus: CharCorpus, params: Any) -> np.ndarray:
    """The training characters of a task: the first ``train_size`` of the train split (all of
    it when None); :class:`DataError` when fewer than ``context + 1`` (one window)."""
    ids = corpus.split("train")[:params.train_size]
    if len(ids) < params.context + 1:
        raise DataError(f"train_size={params.train_size} leaves {len(ids)} training characters; "
                        f"one window needs context + 1 = {params.context + 1}: raise train_size "
                        "or lower context")
    return ids


@dataclass(frozen=True)
class CharParams:
    """The fields of a tiny Shakespeare (character-level) task."""

    dataset: str = "shakespeare_char"
    model: str = "transformer"      # a causal pre-LN character transformer
    train_size: int | None = None   # the first N train characters, None = all
    val_size: int = 1000            # at most N validation (and test) windows
    batch_size: int = 250           # windows of `context` characters
    width: int = 16                 # embedding width
    layers: int = 2                 # pre-LN blocks
    heads: int = 4                  # attention heads (must divide width)
    context: int = 64               # characters per window
    label_smoothing: float = 0.0
    eval_batch_size: int = 1000

    MODELS: ClassVar[tuple[str, ...]] = ("transformer",)

    def __post_init__(self) -> None:
        check_choice("model", self.model, self.MODELS, f"model {self.model!r} cannot train on "
                     f"dataset {self.dataset!r} (valid: {', '.join(self.MODELS)})")
        check_positive(self, "val_size", "batch_size", "width", "layers", "heads", "context",
                       "eval_batch_size")
        check_heads(self)
        check_fraction(self)


class CharTask(TrainingTask):
    """Tiny Shakespeare: random ``context``-character windows of the train split; the val (or
    test) split as fixed windows; a causal character transformer. Fitness is the fraction of the
    uniform prediction's loss ``ln(vocab)`` removed: ``max(0, 1 - loss / ln(vocab))``."""

    Params = CharParams
    value_range = (0.0, 1.0)
    score_label = "fraction of the uniform loss removed"
    score_description = ("the fraction of the uniform prediction's loss ln(vocab) removed, "
                         "max(0, 1 − loss / ln(vocab)), from the cross-entropy in nats")

    def __init__(self, params: CharParams, ctx: TaskContext) -> None:
        super().__init__(params, ctx)
        corpus = load_shakespeare(ctx.data_dir, download=ctx.download)
        self.data_root = corpus.path.parent
        self.vocab_size = corpus.vocab_size
        self.train = torch.tensor(train_chars(corpus, params), device=self.device)  # a copy
        self._corpus = corpus
        self._splits: dict[str, TextSplit] = {}
        self.val = self.split_data("val")

    @classmethod
    def check_data(cls, params: CharParams, ctx: TaskContext) -> None:
        corpus = load_shakespeare(ctx.data_dir)
        train_chars(corpus, params)
        eval_windows(corpus.split("val"), params.context, params.val_size)

    @classmethod
    def result_extras(cls, result: dict[str, Any]) -> dict[str, Any]:
        """The loss in bits per character, beside nats (``val_bpc``)."""
        loss = result.get("val_loss")
        return {"val_bpc": None if loss is None else loss / math.log(2)}

    def split_data(self, split: str) -> TextSplit:
        check_split(split)
        if split not in self._splits:
            x, y = eval_windows(self._corpus.split(split), self.params.context,
                                self.params.val_size)
            self._splits[split] = TextSplit(torch.from_numpy(x).to(self.device),
                                            torch.from_numpy(y).to(self.device))
        return self._splits[split]

    def build_model(self, generator: torch.Generator) -> nn.Module:
        t = self.params
        return build_seeded(
            lambda: CharTransformer(self.vocab_size, t.context, t.width, t.layers, t.heads),
            generator, self.device)

    def train_batches(self, generator: torch.Generator) -> Iterator[Batch]:
        """Each batch: ``batch_size`` windows at uniformly random starts in the train split."""
        t, data = self.params, self.train
        offsets = torch.arange(t.context + 1, device=self.device)
        while True:
            starts = torch.randint(0, len(data) - t.context, (t.batch_size,), generator=generator)
            windows = data[starts.to(self.device)[:, None] + offsets]
            yield windows[:, :-1], windows[:, 1:]

    def eval_batches(self, data: TextSplit) -> Iterator[Batch]:
        step = self.params.eval_batch_size
        for i in range(0, len(data), step):
            yield data.x[i:i + step], data.y[i:i + step]

    def value_from(self, accuracy: float, loss: float) -> float:
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


def teacher_sizes(params: Any) -> dict[str, int]:
    """Samples per split of a ``teacher_mlp`` task (train: ``train_size`` or 4096)."""
    return {"train": params.train_size or DEFAULT_TRAIN_SAMPLES, "val": params.val_size,
            "test": params.val_size}


@dataclass(frozen=True)
class TeacherMLPParams:
    """The fields of a teacher-student regression task."""

    dataset: str = "teacher_mlp"
    model: str = "mlp"              # the student: an MLP
    train_size: int | None = None   # training samples, None = 4096
    val_size: int = 1000            # validation samples (and as many test ones)
    split_seed: int = 0             # seed of every split's inputs and noise
    batch_size: int = 250
    width: int = 16                 # the student's hidden width
    layers: int = 2                 # the student's hidden layers
    input_dim: int = 32             # Gaussian input dimensions
    output_dim: int = 8             # regression targets per input
    teacher_width: int = 64         # hidden width of the fixed random teacher
    teacher_layers: int = 2         # hidden layers of the teacher
    teacher_seed: int = 0           # seed of the teacher's weights
    activation: str = "relu"        # hidden activation of teacher and student
    noise: float = 0.1              # label noise std (clean targets standardised to unit
                                    # variance per output)
    eval_batch_size: int = 1000

    MODELS: ClassVar[tuple[str, ...]] = ("mlp",)

    def __post_init__(self) -> None:
        check_choice("model", self.model, self.MODELS, f"model {self.model!r} cannot train on "
                     f"dataset {self.dataset!r} (valid: {', '.join(self.MODELS)})")
        check_positive(self, "val_size", "batch_size", "width", "layers", "eval_batch_size",
                       "input_dim", "output_dim", "teacher_width", "teacher_layers")
        if self.train_size is not None and self.train_size < 1:
            raise TaskError("train_size", f"must be >= 1 or omitted, got {self.train_size}")
        check_choice("activation", self.activation, ACTIVATIONS,
                     f"must be one of {ACTIVATIONS}, got {self.activation!r}")
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise TaskError("noise", f"must be a number >= 0, got {self.noise}")
        if self.teacher_seed < 0:
            raise TaskError("teacher_seed", f"must be >= 0, got {self.teacher_seed}")


class TeacherMLPTask(TrainingTask):
    """Teacher–student regression (:mod:`evoopt.fitness.mlp`): synthetic data from a fixed random
    teacher MLP, no files; epochs of a random permutation of the training samples; an MLP
    student. Trained on the mean squared error; fitness is the fraction of the scored split's
    target variance explained, ``R² = 1 − SSE / SST`` (SST about the split's per-output means),
    clipped to [0, 1]. ``val_loss`` is the MSE per target element; there is no accuracy."""

    Params = TeacherMLPParams
    value_range = (0.0, 1.0)
    loss_label = "loss (MSE)"
    reports_accuracy = False
    score_label = "R² (target variance explained)"
    score_description = ("R² = 1 − SSE / SST, the fraction of the targets' variance the student "
                         "explains (from its squared error, as MSE), clipped to [0, 1]")

    def __init__(self, params: TeacherMLPParams, ctx: TaskContext) -> None:
        super().__init__(params, ctx)
        self.check_data(params, ctx)
        p, device = params, self.device
        data = teacher_splits(p.input_dim, p.output_dim, p.teacher_width, p.teacher_layers,
                              p.activation, p.noise, p.teacher_seed, p.split_seed,
                              teacher_sizes(p))
        self._splits = {name: RegressionSplit(x.to(device), y.to(device))
                        for name, (x, y) in data.items()}
        self.train = self._splits["train"]
        self.val = self._splits["val"]

    @classmethod
    def check_data(cls, params: TeacherMLPParams, ctx: TaskContext) -> None:
        """No files to read (``data_dir`` is ignored): only the sizes are checked."""
        numbers = sum(teacher_sizes(params).values()) * (params.input_dim + params.output_dim)
        if numbers > MAX_TEACHER_NUMBERS:
            raise DataError(f"task {ctx.task_name}: {numbers:,} numbers of synthetic data (train, "
                            f"val and test samples x (input_dim + output_dim)) exceed "
                            f"{MAX_TEACHER_NUMBERS:,}: lower train_size, val_size or the dims")

    def split_data(self, split: str) -> RegressionSplit:
        check_split(split)
        return self._splits[split]

    def build_model(self, generator: torch.Generator) -> nn.Module:
        t = self.params
        return build_mlp(t.input_dim, t.width, t.layers, t.output_dim, t.activation, generator,
                         self.device)

    def train_batches(self, generator: torch.Generator) -> Iterator[Batch]:
        """Epochs of a random permutation of the training samples (the last partial batch
        dropped), the order drawn from ``generator``."""
        x_all, y_all = self.train.x, self.train.y
        n = len(y_all)
        bs = min(self.params.batch_size, n)
        while True:
            perm = torch.randperm(n, generator=generator).to(self.device)
            for pos in range(0, n - bs + 1, bs):
                idx = perm[pos:pos + bs]
                yield x_all[idx], y_all[idx]

    def eval_batches(self, data: RegressionSplit) -> Iterator[Batch]:
        step = self.params.eval_batch_size
        for i in range(0, len(data), step):
            yield data.x[i:i + step], data.y[i:i + step]

    def train_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the batch's target elements, in fp32."""
        return F.mse_loss(outputs.float(), targets)

    def score(self, data: RegressionSplit, outputs: Iterable[Batch]) -> Score:
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
        return Score(fitness, accuracy=None, loss=total / n)


#: the names these classes had before tasks were public (one release)
Workload = TrainingTask
CifarWorkload, CharWorkload, TeacherMLPWorkload = CifarTask, CharTask, TeacherMLPTask


__all__ = [
    "ACTIVATIONS", "IMAGE_SIZES", "SPLITS", "Batch", "CharParams", "CharTask", "CharWorkload",
    "CifarParams", "CifarTask", "CifarWorkload", "ImageSplit", "RegressionSplit",
    "TeacherMLPParams", "TeacherMLPTask", "TeacherMLPWorkload", "TextSplit", "Workload",
    "eval_windows", "min_train_images", "stage_images", "teacher_sizes", "train_chars",
]
