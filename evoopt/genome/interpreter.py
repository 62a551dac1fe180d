"""``GenomeOptimizer``: a ``torch.optim.Optimizer`` that runs any genome's program."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from evoopt.genome.genome import Genome
from evoopt.genome.primitives import GenomeError
from evoopt.genome.program import compile_step_functions

#: Key of :meth:`GenomeOptimizer.state_dict` (and of exported optimizers') naming the genome
#: structure (:attr:`Genome.structure`) the state belongs to.
STRUCTURE_KEY = "evoopt_structure"


def backpropagate(loss: torch.Tensor, params: list[torch.Tensor], create_graph: bool) -> None:
    """Gradients of ``loss`` into the ``params``' ``.grad``. With ``create_graph`` (an optimizer
    that :attr:`~GenomeOptimizer.needs_graph`) they carry their graph; they are taken with
    ``torch.autograd.grad`` then, which avoids ``backward()``'s parameter <-> gradient reference
    cycle (a parameter that the loss does not use gets a zero gradient)."""
    if not create_graph:
        loss.backward()
        return
    grads = torch.autograd.grad(loss, params, create_graph=True, materialize_grads=True)
    for p, g in zip(params, grads, strict=True):
        p.grad = g


def check_total_steps(total_steps: object, where: str = "total_steps") -> int:
    """``total_steps`` if it is an integer >= 1 (a bool, a float or a string is refused)."""
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"{where}: expected an integer >= 1, got {total_steps!r}")
    return total_steps


def check_step_count(step: object, where: str) -> None:
    """Refuse a loaded step count that is not a whole number >= 0: a group's ``step`` (an int)
    or a parameter's (a 0-dim real tensor, as torch keeps it)."""
    if isinstance(step, torch.Tensor):
        real = step.dim() == 0 and not step.is_complex() and step.dtype != torch.bool
        value: object = step.item() if real else step
        ok = real and math.isfinite(value) and value >= 0 and value == int(value)
    else:
        value = step
        ok = isinstance(step, int) and not isinstance(step, bool) and step >= 0
    if not ok:
        raise ValueError(f"{where}: expected an integer >= 0, got {value!r}")


def check_probe_seed(seed: object, where: str = "seed") -> int:
    """``seed`` (of a curvature genome's Hutchinson probes) if it is an int in [0, 2**31)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise ValueError(f"{where}: expected an integer in [0, 2**31), got {seed!r}")
    return seed


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

    A genome that reads the curvature (AdaHessian) takes a Hessian-vector product per step:
    call ``loss.backward(create_graph=True)`` before :meth:`step` (:attr:`needs_graph`). Its
    Rademacher probes come from generators seeded by ``seed`` (per group), the parameter's
    index and its step count, so runs are reproducible and resume exactly.
    """

    def __init__(self, params: Iterable[Any], genome: Genome, *, total_steps: int | None = None,
                 foreach: bool | None = None, maximize: bool = False, seed: int = 0) -> None:
        if genome.has_schedule and total_steps is None:
            raise ValueError(f"genome {genome.name or genome.hash} has a "
                             f"{genome.schedule.kind} schedule: pass total_steps >= 1")
        if total_steps is not None:
            check_total_steps(total_steps)
        builder = genome.build()
        self.genome = genome
        self.program = builder.program
        self._functions = compile_step_functions(self.program, list(builder.args))
        self._counters = self.program.counters()
        self._state_names = self.program.state_names  # derived from the program: once, here
        self._scalar_names = set(self.program.scalar_state_names)
        defaults: dict[str, Any] = {name: value for name, (_, value) in builder.args.items()}
        defaults |= {"total_steps": total_steps, "foreach": foreach, "maximize": maximize}
        if self.program.curvature:
            defaults["seed"] = seed  # checked by add_param_group, as every group's is
        self._specs = {name: spec for name, (spec, _) in builder.args.items()}
        super().__init__(params, defaults)

    @property
    def needs_graph(self) -> bool:
        """Whether :meth:`step` needs gradients that carry their graph
        (``loss.backward(create_graph=True)``): the genome reads the curvature."""
        return self.program.curvature

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for name, spec in self._specs.items():
            group[name] = spec.check(group[name], f"param group {name}")
        if self.program.curvature:
            group["seed"] = check_probe_seed(group["seed"], "param group seed")
        if group["total_steps"] is not None:
            check_total_steps(group["total_steps"], "param group total_steps")
        group.setdefault("step", 0)

    def state_dict(self) -> dict[str, Any]:
        """torch's optimizer state plus ``STRUCTURE_KEY``: the genome structure it is for."""
        state = super().state_dict()
        state[STRUCTURE_KEY] = self.genome.structure
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict` after checking it belongs to this genome's optimizer."""
        self._check_state(state_dict)
        super().load_state_dict({k: v for k, v in state_dict.items() if k != STRUCTURE_KEY})

    def _check_state(self, sd: Any) -> None:
        def bad(message: str) -> ValueError:
            return ValueError(f"load_state_dict: {message}")

        if not (isinstance(sd, Mapping) and isinstance(sd.get("param_groups"), list)
                and isinstance(sd.get("state"), Mapping)):
            raise bad("expected an optimizer state_dict (a dict with 'state' and "
                      "'param_groups')")
        structure = sd.get(STRUCTURE_KEY)
        if structure is not None and structure != self.genome.structure:
            raise bad(f"state of another genome (structure {structure!r}; this optimizer's "
                      f"genome {self.genome.name or self.genome.hash} is "
                      f"{self.genome.structure!r})")
        saved: list[Any] = []
        for i, group in enumerate(sd["param_groups"]):
            if not isinstance(group, Mapping) or not isinstance(group.get("params"), list):
                raise bad(f"param group {i} is not a dict with a 'params' list")
            missing = [name for name in self._specs if name not in group]
            if missing:
                raise bad(f"param group {i} lacks {', '.join(missing)}: state of another "
                          f"optimizer (this genome's hyperparameters: {', '.join(self._specs)})")
            for name, spec in self._specs.items():
                try:
                    spec.check(group[name], f"param group {i} {name}")
                except GenomeError as e:
                    raise bad(str(e)) from None
            if self.program.curvature:
                check_probe_seed(group.get("seed"), f"load_state_dict: param group {i} seed")
            try:
                check_step_count(group.get("step", 0), f"param group {i} step")
            except ValueError as e:
                raise bad(str(e)) from None
            total = group.get("total_steps")
            if self.genome.has_schedule and (isinstance(total, bool) or not isinstance(
                    total, int) or total < 1):
                raise bad(f"param group {i} total_steps: expected an integer >= 1 (the genome "
                          f"has a {self.genome.schedule.kind} schedule), got {total!r}")
            saved += group["params"]
        current = [p for g in self.param_groups for p in g["params"]]
        shapes = {key: p.shape for key, p in zip(saved, current, strict=False)}
        buffers = set(self._state_names)
        for key, state in sd["state"].items():
            if not isinstance(state, Mapping):
                raise bad(f"state of parameter {key!r} is not a dict")
            unknown = sorted(set(state) - buffers)
            if unknown:
                raise bad(f"state holds {', '.join(map(str, unknown))}, not buffers of this "
                          f"genome ({', '.join(sorted(buffers)) or 'none'}): state of another "
                          "optimizer")
            for name, tensor in state.items():
                if not isinstance(tensor, torch.Tensor):
                    raise bad(f"buffer {name} of parameter {key!r} is not a tensor")
                if name in self._scalar_names:
                    if tensor.dim() != 0:
                        raise bad(f"{name} of parameter {key!r} is not a scalar tensor")
                    if name == "step":
                        try:
                            check_step_count(tensor, f"step of parameter {key!r}")
                        except ValueError as e:
                            raise bad(str(e)) from None
                    continue
                if key not in shapes:
                    continue
                expected = self._functions["buffer_shape"](name, tuple(shapes[key]))
                if expected is None:
                    raise bad(f"parameter {key!r} of shape {tuple(shapes[key])} holds buffer "
                              f"{name}, which only parameters of another role hold")
                if tuple(tensor.shape) != expected:
                    raise bad(f"buffer {name} of parameter {key!r} has shape "
                              f"{tuple(tensor.shape)}, not {expected} (the parameter's is "
                              f"{tuple(shapes[key])})")

    def _init_group(self, group: dict[str, Any], params: list[torch.Tensor],
                    grads: list[torch.Tensor], buffers: dict[str, list[torch.Tensor]]) -> None:
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("GenomeOptimizer does not support sparse gradients")
            state = self.state[p]
            if len(state) == 0:
                self._functions["init_state"](p, state)
            params.append(p)
            grads.append(p.grad)
            for name, values in buffers.items():  # None: a buffer of another role's parameters
                values.append(state.get(name))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        hessians = (self._functions["hessian_diagonals"](self) if self.program.curvature
                    else None)
        for group in self.param_groups:
            params: list[torch.Tensor] = []
            grads: list[torch.Tensor] = []
            buffers: dict[str, list[torch.Tensor]] = {n: [] for n in self._state_names}
            self._init_group(group, params, grads, buffers)
            if not params:
                continue
            group["step"] += 1
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.is_cuda for p in params)
            counters = {"group_step": group["step"], "total_steps": group["total_steps"]}
            inputs = [params, grads, *([[hessians[p] for p in params]] if hessians else [])]
            self._functions["foreach" if foreach else "single"](
                *inputs, *buffers.values(),
                **{name: group[name] for name in self._specs},
                **{name: counters[name] for name in self._counters},
                maximize=group["maximize"])
        return loss
