"""Multi-layer perceptrons and the synthetic teacher–student regression data of ``teacher_mlp``.

A ``teacher_mlp`` task has no files: a fixed random **teacher** MLP (``input_dim`` →
``teacher_layers`` hidden layers of ``teacher_width`` → ``output_dim``, weights from a generator
seeded by ``teacher_seed`` only) maps standard Gaussian inputs to targets; each output is
standardised to zero mean and unit variance (by the train split's clean outputs), then Gaussian
label noise of std ``noise`` is added. The train (``train_size`` samples), val and test
(``val_size`` each) splits draw their inputs and noise from generators seeded by
(``split_seed``, split name) only, so every process builds the same data bit for bit. The
**student** is an MLP of ``layers`` hidden layers of ``width`` with the same activation, its
weights drawn by PyTorch's default ``nn.Linear`` init from the run's generator.

The teacher is initialised "critically" (weights N(0, gain²/fan_in) with the activation's gain,
biases N(0, 1)) so its function stays non-linear through its depth; with unit-variance targets
the best possible val R² is about ``1 / (1 + noise²)``.
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import nn

#: activation name -> module class (``evoopt.fitness.task.ACTIVATIONS``)
ACTIVATION_MODULES: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh,
                                                  "gelu": nn.GELU}
#: teacher weight gain per activation (torch.nn.init.calculate_gain; GELU as ReLU)
TEACHER_GAIN = {"relu": math.sqrt(2.0), "tanh": 5.0 / 3.0, "gelu": math.sqrt(2.0)}
#: training samples of a teacher_mlp task whose ``train_size`` is omitted
DEFAULT_TRAIN_SAMPLES = 4096
SPLIT_NAMES = ("train", "val", "test")


class MLP(nn.Sequential):
    """``layers`` hidden ``Linear → activation`` layers of ``width``, then a linear head."""

    def __init__(self, d_in: int, width: int, layers: int, d_out: int,
                 activation: str = "relu") -> None:
        mods: list[nn.Module] = []
        d = d_in
        for _ in range(layers):
            mods += [nn.Linear(d, width), ACTIVATION_MODULES[activation]()]
            d = width
        mods.append(nn.Linear(d, d_out))
        super().__init__(*mods)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator, gain: float | None = None) -> None:
        """Re-initialise every layer from ``generator``: torch's default ``nn.Linear`` init
        (Kaiming-uniform with a = sqrt(5), bias U(±1/sqrt(fan_in))), or with ``gain`` the
        teacher's: weights N(0, gain² / fan_in), biases N(0, 1)."""
        for m in self.modules():
            if not isinstance(m, nn.Linear):
                continue
            fan_in = m.weight.shape[1]
            if gain is None:
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                bound = 1.0 / math.sqrt(fan_in)
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
            else:
                nn.init.normal_(m.weight, 0.0, gain / math.sqrt(fan_in), generator=generator)
                nn.init.normal_(m.bias, 0.0, 1.0, generator=generator)


def build_mlp(d_in: int, width: int, layers: int, d_out: int, activation: str,
              generator: torch.Generator, device: torch.device | str = "cpu",
              gain: float | None = None) -> MLP:
    """A freshly initialised MLP (weights from ``generator`` only; global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):  # default init draws from the global RNG: isolate it
        model = MLP(d_in, width, layers, d_out, activation)
    model.reset_parameters(generator, gain)
    return model.to(device)


def seeded_generator(*parts: object) -> torch.Generator:
    """A CPU generator whose 63-bit seed depends only on ``parts``."""
    h = hashlib.sha256("|".join(["evoopt-teacher", *map(str, parts)]).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & (2**63 - 1))


@torch.no_grad()
def teacher_splits(input_dim: int, output_dim: int, teacher_width: int, teacher_layers: int,
                   activation: str, noise: float, teacher_seed: int, split_seed: int,
                   sizes: dict[str, int]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{split: (x, y)}`` float32 CPU tensors for the splits of ``sizes`` (``train`` needed:
    its clean outputs set the standardisation); see the module docstring."""
    teacher = build_mlp(input_dim, teacher_width, teacher_layers, output_dim, activation,
                        seeded_generator("weights", teacher_seed), gain=TEACHER_GAIN[activation])
    clean, eps = {}, {}
    for split in SPLIT_NAMES:
        if split not in sizes:
            continue
        g = seeded_generator("split", split_seed, split)
        x = torch.randn(sizes[split], input_dim, generator=g)
        eps[split] = (x, torch.randn(sizes[split], output_dim, generator=g))
        clean[split] = teacher(x)
    mu = clean["train"].mean(0, keepdim=True)
    sd = clean["train"].std(0, keepdim=True).clamp_min(1e-8)
    return {split: (x, (clean[split] - mu) / sd + noise * e) for split, (x, e) in eps.items()}


__all__ = ["ACTIVATION_MODULES", "DEFAULT_TRAIN_SAMPLES", "MLP", "TEACHER_GAIN", "build_mlp",
           "seeded_generator", "teacher_splits"]
