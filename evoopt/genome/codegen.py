"""The one optimizer shell: a genome rendered as a standalone ``torch.optim.Optimizer`` module.

:func:`render` writes the module the exporter prints (:func:`evoopt.genome.export.export_genome`)
and the interpreter executes (:class:`evoopt.genome.interpreter.GenomeOptimizer` derives from
the class it defines), so there is one shell, and what is evaluated is what is exported. The
module imports only torch and the standard library and follows ``torch/optim/adam.py``:
validated constructor arguments whose defaults are the genome's values, lazy per-parameter
state in ``_init_group``, and a single-tensor and a ``torch._foreach_*`` implementation, both
rendered from the genome's program (:mod:`evoopt.genome.program`). Every hyperparameter of a
param group is checked when the group is added and when state is loaded; ``load_state_dict``
refuses state of another genome or optimizer, or state out of range, before anything changes.

Text from genome files (name, description) only enters the module as ``repr`` literals, never
as code or docstring text.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import pprint
import re
import textwrap

from evoopt import __version__
from evoopt.genome.chain import ChainGenome
from evoopt.genome.genome import Genome
from evoopt.genome.primitives import HParam
from evoopt.genome.program import (
    Swap,
    indent,
    plural,
    render_buffer_shape,
    render_step_functions,
)
from evoopt.genome.runtime import USES

#: Names a rendered module defines or imports at module level: its class may take none of them
#: (nor a builtin's, a keyword or a dunder), or the module breaks.
MODULE_NAMES = frozenset({
    "annotations", "math", "Callable", "Iterable", "Mapping", "Any", "torch", "Tensor",
    "Optimizer", "__all__", "PROVENANCE", "GENOME", "_HYPERPARAMETERS", "_BUFFERS",
    "_SCALAR_STATE", "_finite", "_invalid", "_is_step_count", "_check_hyperparameters",
    "_single_tensor_step", "_multi_tensor_step", "_LAYOUTS", "_buffer_shape",
    *USES,  # the runtime helpers the module may vendor
})


#: What the shell renders: a slot genome or a chain genome (the chain language's, for what the
#: slot language cannot express).
AnyGenome = Genome | ChainGenome


def check_class_name(name: str) -> str:
    """``name`` if it can name a rendered optimizer class, else ``ValueError`` saying why."""
    if not isinstance(name, str) or not name.isidentifier() or not name.isascii() \
            or keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise ValueError(f"--class-name: {name!r} is not a valid Python class name")
    if name in MODULE_NAMES or hasattr(builtins, name) or name.startswith("__"):
        raise ValueError(f"--class-name: {name!r} is a name the exported module already uses "
                         "(an import, a module constant or function, or a builtin); "
                         "choose another")
    return name


def class_name_for(genome: AnyGenome) -> str:
    """A CamelCase class name from the genome's name (``Evolved...`` when it has none)."""
    words = re.findall(r"[A-Za-z0-9]+", genome.name or "")
    name = "".join(w[:1].upper() + w[1:] for w in words)
    if not name or not name[0].isalpha():
        name = f"Evolved{name}"
    if name in MODULE_NAMES or hasattr(builtins, name):
        name = f"{name}Optimizer"
    return name


def module_level_names(source: str) -> set[str]:
    """Names bound at the top level of a rendered module other than by its class (imports,
    assignments, functions); :data:`MODULE_NAMES` must hold them all."""
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def render(genome: AnyGenome, class_name: str, *,
           provenance: dict[str, str | float | int] | None = None) -> str:
    """Python source of a module defining one ``Optimizer`` subclass ``class_name`` for
    ``genome`` (a name :func:`check_class_name` accepts; it is not checked here)."""
    builder = genome.build()
    program = builder.program
    args = builder.args
    hp_names = list(args)
    # decided once, here: the learning-rate schedule (total_steps), and the curvature (the
    # Hessian-vector products and their probes' seed)
    schedule, curvature = genome.has_schedule, program.curvature
    extra = ["total_steps"] if schedule else []
    seed = ["seed"] if curvature else []
    buffers = program.buffers
    lists = program.step_function_lists()
    init_lists = [x for x in lists if x != "hessians"]  # the step computes those
    counters = program.counters()
    step_lets = program.step_lets()

    doc_args = [line for n, (spec, value) in args.items() for line in textwrap.wrap(
        f"        {n}: {spec.doc} (default: {value!r}).", 100, subsequent_indent=" " * 12,
        break_on_hyphens=False)]
    if schedule:
        doc_args.append("        total_steps: length of the run; the learning-rate schedule "
                        f"({genome.schedule.kind}) is a function of step / total_steps.")
    sig = [f"        {n}: float = {value!r}," for n, (_, value) in args.items()]
    kw_sig = (["        total_steps: int | None = None,"] if schedule else []) + [
        "        foreach: bool | None = None,",
        "        maximize: bool = False,",
        *(["        seed: int = 0,"] if curvature else []),
    ]
    call_kw = [f'                {n}=group["{n}"],' for n in hp_names]
    call_kw += [f'                {n}=group["{"step" if n == "group_step" else n}"],'
                for n in counters]
    call_kw += [f'                {n}=group["{n}"],' for n in program.group_state]
    init_lines = program.state_init("p")
    state_init = indent(init_lines, 16) if init_lines else []
    # a buffer of one role's parameters is None in the others' lists
    state_lists = [f'            {plural(b)}.append(state.get("{b}"))'
                   if b in program.layouts and program.layouts[b].role else
                   f'            {plural(b)}.append(state["{b}"])'
                   for b in [*buffers, *program.scalars]]
    if program.uses_step:
        state_lists.append('            state_steps.append(state["step"])')
    group_lets = [f"    {n} = {e}" for n, e in program.group_lets()]
    algorithm = indent([
        "once per group and step (group_step counts the optimizer's steps):",
        *(group_lets or ["    (nothing)"]),
        "for each parameter:",
        *(["    step = its own step count, plus one"] if program.uses_step else []),
        *(["    hessian = z * Hz, the Hutchinson estimate of its Hessian diagonal (conv kernels:",
           "        averaged over their spatial dims; _hutchinson_diagonals)"]
          if curvature else []),
        *[f"    {s} = its own running value (initially {v!r}), updated below"
          for s, v in program.scalars.items()],
        *[f"    {n} = {e}" for n, e in step_lets],
        *indent([op.render(foreach=False) for op in program.ops], 4)], 8)
    formula = _wrap_formula(genome.formula(), indent=4)
    meta = {"evoopt_version": __version__, "genome_hash": genome.hash,
            "genome_structure": genome.structure, **(provenance or {})}
    genome_literal = _literal(genome.to_dict() | {"name": genome.name}, len("GENOME = "))

    source = "\n".join([
        f'"""{class_name}: an optimizer exported by evoopt from genome {genome.hash}.',
        "",
        "Update rule:",
        "",
        *formula,
        "",
        "See the class docstring for the algorithm; GENOME holds the genome it was built from.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import math",
        "from collections.abc import Callable, Iterable, Mapping",
        "from typing import Any",
        "",
        "import torch",
        "from torch import Tensor",
        "from torch.optim import Optimizer",
        "",
        f'__all__ = ["{class_name}"]',
        "",
        f"PROVENANCE = {_literal(meta, len('PROVENANCE = '))}",
        f"GENOME = {genome_literal}",
        f"_HYPERPARAMETERS = {_literal((*hp_names, *extra, *seed), len('_HYPERPARAMETERS = '))}",
        f"_BUFFERS = {_literal(tuple(program.state_names), len('_BUFFERS = '))}",
        f"_SCALAR_STATE = {_literal(tuple(program.scalar_state_names), len('_SCALAR_STATE = '))}",
        *(render_buffer_shape(program) if program.layouts else []),
        *_CHECK_FUNCTIONS,
        "",
        "",
        'def _check_hyperparameters(values: Mapping[str, Any], where: str = "") -> dict[str, Any]:',
        '    """The hyperparameters in values, checked (the numbers as floats), or ValueError',
        '    naming the first out of range; where says whose they are (" in param group 1")."""',
        *_hyperparameter_checks(args, schedule, curvature),
        "",
        "",
        f"class {class_name}(Optimizer):",
        f'    """Optimizer exported by evoopt from genome {genome.hash}.',
        "",
        *indent(formula, 4),
        "",
        "    Algorithm (one step, per parameter group; steps count from 1)::",
        "",
        *algorithm,
        "",
        "    Args:",
        "        params: iterable of parameters or dicts defining parameter groups.",
        *doc_args,
        "        foreach: use the torch._foreach_* implementation; None picks it on CUDA and",
        "            the per-tensor loop elsewhere (the faster one on CPU).",
        "        maximize: maximize the objective instead of minimizing it.",
        *(_CURVATURE_DOC if curvature else []),
        "",
        "    A param group may override any hyperparameter; add_param_group checks them all.",
        '    """',
        *(["", "    needs_graph = True  # step() takes Hessian-vector products"]
          if curvature else []),
        *(["", "    evaluates_other_weights = True  # eval() before scoring, train() after"]
          if program.swap else []),
        "",
        "    def __init__(",
        "        self,",
        "        params: Iterable[Any],",
        *sig,
        "        *,",
        *kw_sig,
        "    ) -> None:",
        "        defaults = dict(",
        *[f"            {n}={n}," for n in [*hp_names, *extra]],
        "            foreach=foreach,",
        "            maximize=maximize,",
        *(["            seed=seed,"] if curvature else []),
        "        )",
        "        defaults.update(_check_hyperparameters(defaults))",
        "        super().__init__(params, defaults)",
        "",
        *_ADD_PARAM_GROUP,
        *[f'        group.setdefault("{n}", {v!r})' for n, v in program.group_state.items()],
        *(['        group.setdefault("train_mode", True)'] if program.swap else []),
        "",
        *(_swap_methods(program.swap, hp_names) if program.swap else []),
        *_state_methods(bool(program.layouts)),
        "",
        "    def _init_group(",
        "        self,",
        "        group: dict[str, Any],",
        *[f"        {x}: list[Tensor]," for x in init_lists],
        "    ) -> None:",
        '        for p in group["params"]:',
        "            if p.grad is None:",
        "                continue",
        "            if p.grad.is_sparse:",
        f'                raise RuntimeError("{class_name} does not support sparse gradients")',
        "            params.append(p)",
        "            grads.append(p.grad)",
        *(["            state = self.state[p]",
           "            if len(state) == 0:", *state_init, *state_lists]
          if state_init else []),
        "",
        "    @torch.no_grad()",
        "    def step(self, closure: Callable[[], float] | None = None) -> float | None:",
        '        """Perform a single optimization step.',
        "",
        "        Args:",
        "            closure: a closure that reevaluates the model and returns the loss.",
        '        """',
        "        loss = None",
        "        if closure is not None:",
        "            with torch.enable_grad():",
        "                loss = closure()",
        *(["        diagonals = _hessian_diagonals(self)"] if curvature else []),
        "        for group in self.param_groups:",
        *[f"            {x}: list[Tensor] = []" for x in init_lists],
        *_call("self._init_group", ["group", *init_lists], 12),
        "            if not params:",
        "                continue",
        *(["            hessians = [diagonals[p] for p in params]"] if curvature else []),
        '            group["step"] += 1',
        '            foreach = group["foreach"]',
        "            if foreach is None:",
        "                foreach = all(p.is_cuda for p in params)",
        "            func = _multi_tensor_step if foreach else _single_tensor_step",
        "            group.update(func(" if program.group_state else "            func(",
        *[f"                {x}," for x in lists],
        *call_kw,
        '                maximize=group["maximize"],',
        "            ))" if program.group_state else "            )",
        "        return loss",
        "",
        "",
        *render_step_functions(program, hp_names),
        "",
    ])
    return source


def _range(spec: HParam) -> str:
    """The valid range of ``spec``, as :meth:`HParam.check` writes it (``(0.0, 10.0]``)."""
    lo, hi = ("(" if spec.open_low else "["), (")" if spec.open_high else "]")
    return f"{lo}{spec.low}, {spec.high}{hi}"


def _hyperparameter_checks(args: dict[str, tuple[HParam, float | bool]], schedule: bool,
                           curvature: bool) -> list[str]:
    """The body of ``_check_hyperparameters``: each number finite and in its range (as
    :meth:`HParam.check` has it), ``total_steps`` (with a schedule) an integer >= 1, ``seed``
    (with curvature) an integer in [0, 2**31)."""
    lines: list[str] = []
    for n, (spec, _) in args.items():
        what = "learning rate lr" if n == "lr" else f"{n} value"
        condition = spec.condition(n)
        test = f"{n} is None" if condition == f"math.isfinite({n})" else \
            f"{n} is None or not {condition}"
        lines += [f'    {n} = _finite(values["{n}"])',
                  f"    if {test}:",
                  *_call("raise _invalid", [f'"{what}"', f'values["{n}"]', "where",
                                            f'"a finite number in {_range(spec)}"'], 8)]
    if schedule:
        lines += ['    total_steps = values["total_steps"]',
                  "    if isinstance(total_steps, bool) or not isinstance(total_steps, int) "
                  "or total_steps < 1:",
                  '        raise _invalid("total_steps", total_steps, where,',
                  '                       "an integer >= 1: this optimizer has a learning-rate '
                  'schedule")']
    if curvature:
        lines += ['    seed = values["seed"]',
                  "    if isinstance(seed, bool) or not isinstance(seed, int) "
                  "or not 0 <= seed < 2**31:",
                  '        raise _invalid("seed", seed, where, "an integer in [0, 2**31)")']
    names = [*args, *(["total_steps"] if schedule else []), *(["seed"] if curvature else [])]
    return [*lines, "    return {", *[f'        "{n}": {n},' for n in names], "    }"]


#: Module-level functions of every rendered module: what the checks of hyperparameters and of
#: loaded step counts share.
_CHECK_FUNCTIONS = [
    "",
    "",
    "def _finite(x: object) -> float | None:",
    '    """x as a float if it is a finite real number (not a bool), else None."""',
    "    if isinstance(x, bool) or not isinstance(x, (int, float)):",
    "        return None",
    "    try:",
    "        value = float(x)",
    "    except OverflowError:",
    "        return None",
    "    return value if math.isfinite(value) else None",
    "",
    "",
    "def _invalid(what: str, value: object, where: str, expected: str) -> ValueError:",
    '    return ValueError(f"Invalid {what}{where}: {value!r} (expected {expected})")',
    "",
    "",
    "def _is_step_count(step: Tensor) -> bool:",
    '    """Whether a parameter\'s step count (a 0-dim real tensor, as torch keeps it) is a whole',
    '    number >= 0."""',
    "    if step.dim() != 0 or step.is_complex() or step.dtype == torch.bool:",
    "        return False",
    "    value = step.item()",
    "    return math.isfinite(value) and value >= 0 and value == int(value)",
]

_CURVATURE_DOC = [
    "        seed: seed of the Rademacher probes of the Hessian-vector products (with the",
    "            parameter's index and step count, so runs are reproducible and resumable).",
    "",
    "    step() takes a Hessian-vector product through the gradients' graph (Hutchinson's",
    "    estimate of the Hessian diagonal), as AdaHessian does: call",
    "    loss.backward(create_graph=True) before step(), and zero_grad() (set_to_none) after.",
]

_ADD_PARAM_GROUP = [
    "    def add_param_group(self, param_group: dict[str, Any]) -> None:",
    '        """Add a param group; its hyperparameters (the defaults for those it does not set)',
    '        must be in range, else ValueError names the first that is not, and no group is',
    '        added."""',
    '        where = f" in param group {len(self.param_groups)}"',
    "        super().add_param_group(param_group)",
    "        group = self.param_groups[-1]",
    "        try:",
    "            group.update(_check_hyperparameters(group, where))",
    "        except ValueError:",
    "            self.param_groups.pop()",
    "            raise",
    '        group.setdefault("step", 0)',
]

_STATE_METHODS = [
    "    def state_dict(self) -> dict[str, Any]:",
    '        """The optimizer state, tagged with the genome structure it belongs to."""',
    "        state = super().state_dict()",
    '        state["evoopt_structure"] = PROVENANCE["genome_structure"]',
    "        return state",
    "",
    "    def load_state_dict(self, state_dict: dict[str, Any]) -> None:",
    '        """Load a state_dict of this optimizer; state of another optimizer, or with',
    '        values out of range, raises ValueError before anything changes."""',
    "        self._check_state(state_dict)",
    "        super().load_state_dict(",
    '            {k: v for k, v in state_dict.items() if k != "evoopt_structure"}',
    "        )",
    "",
    "    def _check_state(self, sd: Any) -> None:",
    '        """Raise ValueError unless sd is a state_dict of this optimizer, in range."""',
    "",
    "        def bad(message: str) -> ValueError:",
    '            return ValueError(f"load_state_dict: {message}")',
    "",
    "        if not (",
    "            isinstance(sd, Mapping)",
    '            and isinstance(sd.get("param_groups"), list)',
    '            and isinstance(sd.get("state"), Mapping)',
    "        ):",
    "            raise bad(",
    "                \"expected an optimizer state_dict (a dict with 'state' and 'param_groups')\"",
    "            )",
    '        structure = sd.get("evoopt_structure")',
    '        if structure is not None and structure != PROVENANCE["genome_structure"]:',
    "            raise bad(",
    '                f"state of another genome (structure {structure!r}; this optimizer\'s "',
    '                f"genome {PROVENANCE[\'genome_hash\']} is "',
    '                f"{PROVENANCE[\'genome_structure\']!r})"',
    "            )",
    "        saved: list[Any] = []",
    '        for i, group in enumerate(sd["param_groups"]):',
    '            if not isinstance(group, Mapping) or not isinstance(group.get("params"), list):',
    "                raise bad(f\"param group {i} is not a dict with a 'params' list\")",
    "            missing = [name for name in _HYPERPARAMETERS if name not in group]",
    "            if missing:",
    "                raise bad(",
    '                    f"param group {i} lacks {\', \'.join(missing)}: state of another "',
    '                    "optimizer (this one\'s hyperparameters: "',
    '                    f"{\', \'.join(_HYPERPARAMETERS)})"',
    "                )",
    "            try:",
    '                _check_hyperparameters(group, f" in param group {i}")',
    "            except ValueError as e:",
    "                raise bad(str(e)) from None",
    '            step = group.get("step", 0)',
    "            if isinstance(step, bool) or not isinstance(step, int) or step < 0:",
    '                raise bad(f"param group {i} step: expected an integer >= 0, got {step!r}")',
    '            saved += group["params"]',
    '        mine = [p for group in self.param_groups for p in group["params"]]',
    "        shapes = {key: tuple(p.shape) for key, p in zip(saved, mine, strict=False)}",
    '        for key, state in sd["state"].items():',
    "            if not isinstance(state, Mapping):",
    '                raise bad(f"state of parameter {key!r} is not a dict")',
    "            unknown = sorted(map(str, set(state) - set(_BUFFERS)))",
    "            if unknown:",
    "                raise bad(",
    '                    f"state holds {\', \'.join(unknown)}, not buffers of this optimizer "',
    '                    f"({\', \'.join(sorted(_BUFFERS)) or \'none\'}): state of another "',
    '                    "optimizer"',
    "                )",
    "            for name, buffer in state.items():",
    "                if not isinstance(buffer, Tensor):",
    '                    raise bad(f"buffer {name} of parameter {key!r} is not a tensor")',
    "                if name in _SCALAR_STATE:",
    "                    if buffer.dim() != 0:",
    '                        raise bad(f"{name} of parameter {key!r} is not a scalar tensor")',
    '                    if name == "step" and not _is_step_count(buffer):',
    "                        raise bad(",
    '                            f"step of parameter {key!r}: expected an integer >= 0, got "',
    '                            f"{buffer.item()!r}"',
    "                        )",
    "                    continue",
    "                if key not in shapes:",
    "                    continue",
    "                expected = shapes[key]",
    "                if tuple(buffer.shape) != expected:",
    "                    raise bad(",
    '                        f"buffer {name} of parameter {key!r} has shape "',
    '                        f"{tuple(buffer.shape)}, not the parameter\'s {expected}"',
    "                    )",
]

# the shape check when some buffer is held by one role only or shaped unlike the parameter
_LAYOUT_CHECK = [
    "                expected = _buffer_shape(name, shapes[key])",
    "                if expected is None:",
    "                    raise bad(",
    '                        f"parameter {key!r} of shape {shapes[key]} holds buffer {name}, "',
    '                        "which only parameters of another role hold"',
    "                    )",
    "                if tuple(buffer.shape) != expected:",
    "                    raise bad(",
    '                        f"buffer {name} of parameter {key!r} has shape "',
    '                        f"{tuple(buffer.shape)}, not {expected} (the parameter\'s is "',
    '                        f"{shapes[key]})"',
    "                    )",
]


def _swap_methods(swap: Swap, hp_names: list[str]) -> list[str]:
    """``eval()`` and ``train()`` of an optimizer that evaluates other weights than it trains
    at (:class:`evoopt.genome.program.Swap`), as schedulefree's optimizers have them."""
    def method(name: str, weight: str, mode: bool, doc: str) -> list[str]:
        used = [n for n in hp_names if re.search(rf"\b{n}\b", weight)]
        return [
            "    @torch.no_grad()",
            f"    def {name}(self) -> None:",
            f'        """{doc}"""',
            "        for group in self.param_groups:",
            f'            if {"not " if mode else ""}group["train_mode"]:',
            *[f'                {n} = group["{n}"]' for n in used],
            '                for p in group["params"]:',
            "                    state = self.state[p]",
            f'                    if "{swap.buffer}" in state:',
            f'                        p.lerp_(state["{swap.buffer}"], {weight})',
            f'                group["train_mode"] = {mode}',
        ]

    return [*method("eval", swap.to_eval, False,
                    "Switch the parameters to the weights to evaluate (call before scoring)."),
            "",
            *method("train", swap.to_train, True,
                    "Switch the parameters back to the weights training runs at."),
            ""]


def _state_methods(layouts: bool) -> list[str]:
    """``state_dict``, ``load_state_dict`` and ``_check_state``; with ``layouts``, saved buffers
    are checked against ``_buffer_shape`` (None: a buffer of another role's parameters)."""
    if not layouts:
        return _STATE_METHODS
    start = _STATE_METHODS.index("                expected = shapes[key]")
    return [*_STATE_METHODS[:start], *_LAYOUT_CHECK]


def _call(func: str, args: list[str], indent: int) -> list[str]:
    pad = " " * indent
    line = f"{pad}{func}({', '.join(args)})"
    if len(line) <= 100:
        return [line]
    return [f"{pad}{func}(", *[f"{pad}    {a}," for a in args], f"{pad})"]


def _literal(value: object, column: int) -> str:
    """A ``repr``-safe literal whose continuation lines line up after ``column``."""
    text = pprint.pformat(value, width=96 - column, sort_dicts=False)
    return text.replace("\n", "\n" + " " * column)


def _wrap_formula(formula: str, indent: int) -> list[str]:
    rule, _, notes = formula.partition("; ")
    pad = " " * indent
    lines = textwrap.wrap(rule, 92 - indent, break_on_hyphens=False) or [rule]
    lines += textwrap.wrap(notes, 92 - indent, break_on_hyphens=False)
    return [pad + ln for ln in lines]

