"""``GenomeOptimizer``: a ``torch.optim.Optimizer`` that runs any genome's program."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from evoopt.genome.genome import Genome
from evoopt.genome.program import compile_step_functions


class GenomeOptimizer(torch.optim.Optimizer):
    """Interpret a :class:`Genome` as an optimizer.

    Hyperparameters are stored per parameter group under the names the exporter gives its
    constructor arguments (``lr``, ``beta1``, ``eps``, ``momentum_weight``, ...), so a group can
    override any of them. As in torch.optim, ``step`` is counted per parameter (``state["step"]``,
    when the genome reads it); ``group["step"]`` counts the optimizer's steps and drives the
    learning-rate schedule. Per-parameter state holds only what this genome uses.
    ``total_steps`` is required when the genome has a learning-rate schedule. ``foreach=None``
    picks ``torch._foreach_*`` kernels on CUDA and the per-tensor loop elsewhere (faster on
    CPU), as torch does. It runs the step functions the exporter prints
    (:func:`evoopt.genome.program.render_step_functions`).
    """

    def __init__(self, params: Iterable[Any], genome: Genome, *, total_steps: int | None = None,
                 foreach: bool | None = None, maximize: bool = False) -> None:
        if genome.has_schedule and (total_steps is None or total_steps < 1):
            raise ValueError(f"genome {genome.name or genome.hash} has a "
                             f"{genome.schedule.kind} schedule: pass total_steps >= 1")
        builder = genome.build()
        self.genome = genome
        self.program = builder.program
        self._functions = compile_step_functions(self.program, list(builder.args))
        self._counters = self.program.counters()
        self._uses_step = self.program.uses_step
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
                    grads: list[torch.Tensor], buffers: dict[str, list[torch.Tensor]]) -> None:
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("GenomeOptimizer does not support sparse gradients")
            state = self.state[p]
            if len(state) == 0:
                if self._uses_step:
                    state["step"] = torch.tensor(0.0, dtype=torch.float64)
                for name in self.program.buffers:
                    state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            for name, values in buffers.items():
                values.append(state[name])

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
            names = [*self.program.buffers, *(["step"] if self._uses_step else [])]
            buffers: dict[str, list[torch.Tensor]] = {name: [] for name in names}
            self._init_group(group, params, grads, buffers)
            if not params:
                continue
            group["step"] += 1
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.is_cuda for p in params)
            counters = {"group_step": group["step"], "total_steps": group["total_steps"]}
            self._functions["foreach" if foreach else "single"](
                params, grads, *buffers.values(),
                **{name: group[name] for name in self._specs},
                **{name: counters[name] for name in self._counters},
                maximize=group["maximize"])
        return loss
