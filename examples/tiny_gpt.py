"""A small GPT-style byte-level language model on a text file you name, written as a task class:
evoopt owns the training loop, its guards (divergence, time limit) and bf16 (on CUDA).

    evoopt evaluate adam --task examples/tiny_gpt.toml --set text=/path/to/file.txt
    evoopt run quickstart --task examples/tiny_gpt.toml --set text=/path/to/file.txt

``text`` (in ``tiny_gpt.toml``: ``input.txt`` beside it) is any file of at least a few tens of
kB (e.g. tiny Shakespeare's ``input.txt``); a relative path resolves against the task file's
folder. Its last ``2 x held_fraction`` of bytes are held out: validation, then test. The value
is the validation loss in nats per byte (lower is better); ``bpb`` is the same in bits.

The defaults suit a GPU; on a CPU try ``--set width=64 --set layers=2 --set context=64``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

import evoopt
from evoopt.fitness.transformer import CharTransformer, build_seeded
from evoopt.fitness.workloads import eval_windows

VOCAB = 256  # bytes
Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Params:
    """The task's own fields (``tiny_gpt.toml``, ``--set field=value``)."""

    text: str                    # your text file: absolute, or relative to the task file
    context: int = 128           # bytes per window
    width: int = 128             # embedding width
    layers: int = 4              # transformer blocks
    heads: int = 4               # attention heads (must divide width)
    batch_size: int = 32         # windows per training batch
    held_fraction: float = 0.05  # the last 2 x 5 % of the bytes: val, then test
    eval_windows: int = 256      # at most this many windows of each held-out split are scored
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        for name in ("context", "width", "layers", "heads", "batch_size", "eval_windows",
                     "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide width ({self.width})")
        if not 0.0 < self.held_fraction <= 0.25:
            raise ValueError(f"held_fraction must be in (0, 0.25], got {self.held_fraction}")


def read_text(params: Params, ctx: evoopt.TaskContext) -> np.ndarray:
    """The file's bytes; a clear error when it is missing or too short for the task."""
    path = ctx.path(params.text)
    if not path.is_file():
        raise FileNotFoundError(f"{ctx.task_name}: text file not found: {path} (name yours "
                                "with --set text=/path/to/file.txt)")
    ids = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    need = math.ceil((params.context + 1) / params.held_fraction)
    if int(len(ids) * params.held_fraction) <= params.context:
        raise ValueError(f"{ctx.task_name}: text file {path} is too short: {len(ids)} bytes, "
                         f"and context={params.context} with held_fraction="
                         f"{params.held_fraction} needs at least {need} (one window each for "
                         "val and test): use a longer text or a smaller context")
    return ids


class TinyGPT(evoopt.TrainingTask):
    """Random ``context``-byte windows of the training bytes; the held-out splits as fixed
    windows; a causal pre-LN transformer (evoopt's ``CharTransformer``) over 256 bytes."""

    Params = Params
    direction = "minimize"
    score_label = "val loss (nats per byte)"
    score_description = "the mean next-byte cross-entropy of the split, in nats"
    loss_label = "loss (nats/byte)"

    def __init__(self, params: Params, ctx: evoopt.TaskContext) -> None:
        super().__init__(params, ctx)
        ids = torch.from_numpy(read_text(params, ctx).astype(np.int64))
        self.data_root = ctx.path(params.text).parent
        cut = int(len(ids) * params.held_fraction)
        self.train = ids[:len(ids) - 2 * cut].to(self.device)
        self.held = {"val": ids[len(ids) - 2 * cut:len(ids) - cut], "test": ids[len(ids) - cut:]}
        self._splits: dict[str, Batch] = {}

    @classmethod
    def check_data(cls, params: Params, ctx: evoopt.TaskContext) -> None:
        read_text(params, ctx)  # before a campaign pays for any run

    @classmethod
    def result_extras(cls, result: dict[str, Any]) -> dict[str, Any]:
        """The loss in bits per byte, beside nats (``val_bpb``)."""
        loss = result.get("val_loss")
        return {"val_bpb": None if loss is None else loss / math.log(2)}

    def build_model(self, generator: torch.Generator) -> nn.Module:
        p = self.params
        return build_seeded(lambda: CharTransformer(VOCAB, p.context, p.width, p.layers,
                                                    p.heads), generator, self.device)

    def train_batches(self, generator: torch.Generator) -> Iterator[Batch]:
        p, data = self.params, self.train
        offsets = torch.arange(p.context + 1, device=self.device)
        while True:
            starts = torch.randint(0, len(data) - p.context, (p.batch_size,),
                                   generator=generator)
            windows = data[starts.to(self.device)[:, None] + offsets]
            yield windows[:, :-1], windows[:, 1:]

    def split_data(self, split: str) -> Batch:
        if split not in self.held:
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        if split not in self._splits:
            x, y = eval_windows(self.held[split].numpy(), self.params.context,
                                self.params.eval_windows)
            self._splits[split] = (torch.from_numpy(x).to(self.device),
                                   torch.from_numpy(y).to(self.device))
        return self._splits[split]

    def eval_batches(self, data: Batch) -> Iterator[Batch]:
        x, y = data
        step = self.params.eval_batch_size
        for i in range(0, len(y), step):
            yield x[i:i + step], y[i:i + step]

    def value_from(self, accuracy: float, loss: float) -> float:
        return loss  # the default score's value: the mean cross-entropy, not the accuracy


__all__ = ["Params", "TinyGPT", "read_text"]
