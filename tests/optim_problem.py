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


LossAt = Callable[[int, list[torch.Tensor], bool], torch.Tensor]


def _train(make_optimizer: Callable[[list], torch.optim.Optimizer], params: list[torch.Tensor],
           loss_at: LossAt, steps: int, param_groups: bool, late_start: int) -> torch.Tensor:
    """Run ``steps`` steps of ``loss_at(t, params, bias_trains)`` (the first layer's bias,
    ``params[1]``, gets a gradient only from step ``late_start``); the final flat parameters."""
    opt = make_optimizer(
        [{"params": params[:2]}, {"params": params[2:]}] if param_groups else params
    )
    for t in range(steps):
        opt.zero_grad()
        loss = loss_at(t, params, t >= late_start)
        loss.backward(create_graph=getattr(opt, "needs_graph", False))
        opt.step()
    return torch.cat([p.detach().flatten() for p in params])


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
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(steps, 16, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (steps, 16), generator=gen)
    images = torch.randn(steps, 16, 2, 4, 4, generator=gen, dtype=torch.float64)

    def loss_at(t: int, params: list[torch.Tensor], bias_trains: bool) -> torch.Tensor:
        bias = params[1] if bias_trains else params[1].detach()
        h = torch.tanh(x[t] @ params[0].T + bias)
        conv = torch.tanh(torch.nn.functional.conv2d(images[t], params[4])).mean(dim=(2, 3))
        return torch.nn.functional.cross_entropy(h @ params[2].T + params[3] + conv, y[t])

    return _train(make_optimizer, make_params(seed), loss_at, steps, param_groups, late_start)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def quadratic_diagonals(seed: int = 0) -> list[torch.Tensor]:
    """The Hessian diagonal of :func:`quadratic_trajectory`'s loss, one tensor per parameter."""
    gen = torch.Generator().manual_seed(seed + 2)
    return [torch.rand(p.shape, generator=gen, dtype=torch.float64) * 4 + 0.1
            for p in make_params(seed)]


def quadratic_trajectory(
    make_optimizer: Callable[[list], torch.optim.Optimizer],
    steps: int = 60,
    seed: int = 0,
    param_groups: bool = False,
    late_start: int = 0,
) -> torch.Tensor:
    """Like :func:`trajectory` on a diagonal quadratic with a moving target: the loss at step
    t is sum(h * (p - x_t)^2) / 2 over every parameter, so the Hessian is diag(h)
    (:func:`quadratic_diagonals`) at every step and z * Hz = h exactly for any z of +-1s."""
    params = make_params(seed)
    diagonals = quadratic_diagonals(seed)
    gen = torch.Generator().manual_seed(seed + 3)
    targets = [[torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
               for _ in range(steps)]

    def loss_at(t: int, params: list[torch.Tensor], bias_trains: bool) -> torch.Tensor:
        return sum((h * (p - x) ** 2).sum() / 2
                   for i, (p, h, x) in enumerate(zip(params, diagonals, targets[t], strict=True))
                   if i != 1 or bias_trains)

    return _train(make_optimizer, params, loss_at, steps, param_groups, late_start)
