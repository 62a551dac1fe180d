"""A small deterministic float64 training problem for comparing optimizer trajectories."""

from __future__ import annotations

from collections.abc import Callable

import torch


def make_params(seed: int = 0) -> list[torch.Tensor]:
    """An MLP's weights and biases and a conv kernel: 2-D, 1-D and 4-D parameters."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(8, 6), (8,), (3, 8), (3,), (3, 2, 3, 3)]
    return [
        (torch.randn(s, generator=gen, dtype=torch.float64) * 0.5).requires_grad_() for s in shapes
    ]


def trajectory(
    make_optimizer: Callable[[list], torch.optim.Optimizer],
    steps: int = 60,
    seed: int = 0,
    param_groups: bool = False,
    late_start: int = 0,
) -> torch.Tensor:
    """Train a tiny MLP beside a conv layer on fixed random batches; return the final
    flattened parameters.

    With ``late_start=k`` the first layer's bias gets no gradient (``grad is None``) for the
    first ``k`` steps, so its per-parameter step count lags the others'."""
    params = make_params(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(steps, 16, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (steps, 16), generator=gen)
    images = torch.randn(steps, 16, 2, 4, 4, generator=gen, dtype=torch.float64)
    opt = make_optimizer(
        [{"params": params[:2]}, {"params": params[2:]}] if param_groups else params
    )
    for t in range(steps):
        opt.zero_grad()
        bias = params[1] if t >= late_start else params[1].detach()
        h = torch.tanh(x[t] @ params[0].T + bias)
        conv = torch.tanh(torch.nn.functional.conv2d(images[t], params[4])).mean(dim=(2, 3))
        loss = torch.nn.functional.cross_entropy(h @ params[2].T + params[3] + conv, y[t])
        loss.backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in params])


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))
