"""The task-class form of a fitness task: the user's data, model, batches and score; evoopt owns
the training loop, its guards (divergence, time) and bf16.

A :class:`TrainingTask` is built once per worker with its validated fields (``params``, an
instance of its ``Params`` dataclass) and a :class:`TaskContext`, stages its data, and then
answers the few questions a training run asks
(:class:`~evoopt.fitness.runner.FitnessRunner` does the rest):

* ``build_model(generator)``: a fresh model, its weights from ``generator`` only;
* ``train_batches(generator)``: an endless stream of ``(inputs, targets)`` training batches,
  their randomness from ``generator`` only (common random numbers: every genome on a seed sees
  the same network and the same batches);
* ``forward(model, inputs)``: the model's outputs (run inside the task's autocast);
* ``train_loss(outputs, targets)``: one batch's training loss (a scalar tensor);
* ``split_data(split)`` / ``eval_batches(data)``: a scored split (``val``; ``test`` for final
  reports only) and its fixed ``(inputs, targets)`` batches;
* ``score(data, outputs)``: the split's :class:`~evoopt.fitness.orientation.Score` from the
  model's fp32 ``(outputs, targets)`` batches: ``value`` (to maximise, or to minimise when
  the class says ``direction = "minimize"``), optionally ``accuracy`` and ``loss``.

The defaults are a classifier's: outputs are logits over the last dimension, targets class ids
of the same leading shape; the loss is the fp32 cross-entropy and the score its accuracy. The
built-in tasks (:mod:`evoopt.fitness.workloads`) are subclasses like any user's.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from evoopt.fitness.orientation import Score

SPLITS = ("val", "test")
Batch = tuple[Any, Any]


def check_split(split: str) -> None:
    """``ValueError`` unless ``split`` is ``val`` or ``test``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


@dataclass(frozen=True)
class TaskContext:
    """Where a task runs: its name, torch device, the data folder it was given (``--data-dir``;
    None: the task's own default), the folder its task file is in (relative paths in its
    fields resolve there) and whether data may be downloaded."""

    task_name: str
    device: torch.device
    data_dir: str | os.PathLike[str] | None = None
    task_dir: str | None = None
    download: bool = True

    def path(self, name: str | os.PathLike[str]) -> Path:
        """``name`` as a path: ``~`` expanded, a relative one against the task file's folder
        (else the working directory)."""
        p = Path(name).expanduser()
        return p if p.is_absolute() or self.task_dir is None else Path(self.task_dir) / p


class TrainingTask(ABC):
    """A task whose training loop evoopt runs (see the module docstring).

    Class attributes: ``Params`` (a dataclass of the task's own fields, validated from the task
    file and ``--set``; None: the fields are kept as a dict), ``direction`` of the score's
    value, ``value_range`` (``(lo, hi)`` when the value is bounded: fitness is then the affine
    map to [0, 1]), and the labels reports show: ``score_label`` (a short name of the value),
    ``score_description`` (its definition), ``loss_label``, ``reports_accuracy``.
    """

    Params: ClassVar[type | None] = None
    direction: ClassVar[str] = "maximize"
    value_range: ClassVar[tuple[float, float] | None] = None
    score_label: ClassVar[str] = "accuracy"
    score_description: ClassVar[str] = "the classification accuracy (fraction of targets right)"
    loss_label: ClassVar[str] = "loss"
    reports_accuracy: ClassVar[bool] = True

    def __init__(self, params: Any, ctx: TaskContext) -> None:
        self.params, self.ctx, self.device = params, ctx, ctx.device
        #: where the task's data was read from (for messages); the task sets it
        self.data_root: Path = Path()

    @classmethod
    def check_data(cls, params: Any, ctx: TaskContext) -> None:
        """Raise (e.g. :class:`~evoopt.fitness.data.DataError`) when the task cannot run on its
        data, before any run is paid for. Default: nothing to check."""
        return None

    @classmethod
    def result_extras(cls, result: dict[str, Any]) -> dict[str, Any]:
        """Extra keys of a result dict (``evaluate --json``, per seed and summed up) derived
        from its other keys; default none."""
        return {}

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
    def eval_batches(self, data: Any) -> Iterable[Batch]:
        """The fixed ``(inputs, targets)`` batches of a split from :meth:`split_data`."""

    def forward(self, model: nn.Module, inputs: Any) -> Any:
        """The model's outputs for one batch (inside the task's autocast)."""
        return model(inputs)

    def train_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One training batch's loss: cross-entropy of logits over the last dimension, in
        fp32 (with ``label_smoothing`` when the task has that field)."""
        return F.cross_entropy(outputs.float().flatten(0, -2), targets.flatten(),
                               label_smoothing=getattr(self.params, "label_smoothing", 0.0))

    def score(self, data: Any, outputs: Iterable[Batch]) -> Score:
        """Accuracy and mean cross-entropy (nats, no smoothing) over every target of a scored
        split, from its fp32 ``(logits, targets)`` batches; the value is
        :meth:`value_from` (default: the accuracy)."""
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        total_loss = torch.zeros((), device=self.device, dtype=torch.float64)
        n = 0
        for out, yb in outputs:
            out, yb = out.flatten(0, -2), yb.flatten()
            total_loss += F.cross_entropy(out, yb, reduction="sum").double()
            correct += (out.argmax(-1) == yb).sum()
            n += yb.numel()
        accuracy, loss = float(correct) / n, float(total_loss) / n
        return Score(self.value_from(accuracy, loss), accuracy=accuracy, loss=loss)

    def value_from(self, accuracy: float, loss: float) -> float:
        """The default :meth:`score`'s value from the split's accuracy and mean loss (nats)."""
        return accuracy


__all__ = ["SPLITS", "Batch", "TaskContext", "TrainingTask", "check_split"]
