"""``GenomeOptimizer``: a ``torch.optim.Optimizer`` that runs any genome's program."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from evoopt.genome.genome import Genome
from evoopt.genome.program import (
    ScalarEvaluator,
    clip_grads_by_global_norm,
    run_foreach,
    run_single_tensor,
)


class GenomeOptimizer(torch.optim.Optimizer):
    """Interpret a :class:`Genome` as an optimizer.

    Hyperparameters are stored per parameter group under the names the exporter gives its
    constructor arguments (``lr``, ``beta1``, ``eps``, ``momentum_weight``, ...), so a group can
    override any of them. The step counter is per group (``group["step"]``); per-parameter
    state holds only the buffers this genome uses. ``total_steps`` is required when the genome
    has a learning-rate schedule. ``foreach=None`` picks ``torch._foreach_*`` kernels on CUDA
    and the per-tensor loop elsewhere (faster on CPU), as torch does.
    """

    def __init__(self, params: Iterable[Any], genome: Genome, *, total_steps: int | None = None,
                 foreach: bool | None = None, maximize: bool = False) -> None:
        if genome.has_schedule and (total_steps is None or total_steps < 1):
            raise ValueError(f"genome {genome.name or genome.hash} has a "
                             f"{genome.schedule.kind} schedule: pass total_steps >= 1")
        builder = genome.build()
        self.genome = genome
        self.program = builder.program
        self._scalars = ScalarEvaluator(self.program)
        defaults: dict[str, Any] = {name: value for name, (_, value) in builder.args.items()}
        defaults |= {"total_steps": total_steps, "foreach": foreach, "maximize": maximize}
        self._specs = {name: spec for name, (spec, _) in builder.args.items()}
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for name, spec in self._specs.items():
            group[name] = spec.check(group[name], f"param group {name}")
        group.setdefault("step", 0)

    def _init_group(self, group: dict[str, Any], params: list[torch.Tensor],
                    grads: list[torch.Tensor], states: list[dict[str, torch.Tensor]]) -> None:
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("GenomeOptimizer does not support sparse gradients")
            state = self.state[p]
            for name in self.program.buffers:
                if name not in state:
                    state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            states.append({name: state[name] for name in self.program.buffers})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[torch.Tensor] = []
            grads: list[torch.Tensor] = []
            states: list[dict[str, torch.Tensor]] = []
            self._init_group(group, params, grads, states)
            if not params:
                continue
            group["step"] += 1
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.is_cuda for p in params)
            if group["maximize"]:
                grads = list(torch._foreach_neg(grads)) if foreach else [-g for g in grads]
            if self.program.clip is not None:
                grads = clip_grads_by_global_norm(grads, group[self.program.clip], foreach)
            env = self._scalars.environment(
                {name: group[name] for name in self._specs}
                | {"step": group["step"], "total_steps": group["total_steps"]})
            run = run_foreach if foreach else run_single_tensor
            run(self.program, self._scalars, env, params, grads, states)
        return loss
