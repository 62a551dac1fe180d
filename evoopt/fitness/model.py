"""A small fast CNN in the spirit of airbench (Keller Jordan's CIFAR-10 speedruns).

conv-BN-GELU stem, then three blocks of ``conv -> maxpool -> BN -> GELU -> conv -> BN -> GELU``
with widths ``width x (1, 2, 4)``, a global max-pool and a linear head (airbench also scales
the logits by 1/9; at Adam-like learning rates that hurt here, so the head is unscaled). At
``width=16`` it has ~75k parameters.
"""

from __future__ import annotations

import math

import torch
from torch import nn

BN_MOMENTUM = 0.4  # airbench's BatchNorm(momentum=0.6) in its own convention; helps short runs


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


class ConvBlock(nn.Sequential):
    """airbench ConvGroup: conv, 2x2 max-pool, BN, GELU, conv, BN, GELU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            _bn(c_out),
            nn.GELU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            _bn(c_out),
            nn.GELU(),
        )


class SmallCNN(nn.Module):
    """CIFAR-10 classifier; input (N, 3, H, W) with H = W in {16, 32}."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        w = (width, width, 2 * width, 4 * width)
        self.stem = nn.Sequential(
            nn.Conv2d(3, w[0], 3, padding=1, bias=False), _bn(w[0]), nn.GELU()
        )
        self.blocks = nn.Sequential(*(ConvBlock(w[i], w[i + 1]) for i in range(3)))
        self.head = nn.Linear(w[3], num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        x = torch.amax(x, dim=(2, 3))
        return self.head(x)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Re-initialise every weight from ``generator`` (PyTorch's default init laws)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                # Kaiming-uniform with a = sqrt(5): torch's default for Conv/Linear.
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()


def build_model(width: int, generator: torch.Generator, device: torch.device | str = "cpu",
                channels_last: bool = True) -> SmallCNN:
    """A freshly initialised model (weights from ``generator`` only; global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):  # default init draws from the global RNG: isolate it
        model = SmallCNN(width)
    model.reset_parameters(generator)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


__all__ = ["ConvBlock", "SmallCNN", "build_model"]
