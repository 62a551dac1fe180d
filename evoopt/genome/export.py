"""Export a genome as a standalone, readable ``torch.optim.Optimizer`` module.

The module imports only torch and the standard library and follows ``torch/optim/adam.py``:
validated constructor arguments whose defaults are the genome's values, lazy state in
``_init_group``, and a single-tensor and a ``torch._foreach_*`` implementation, both rendered
from the same program the interpreter runs (:mod:`evoopt.genome.program`), so the exported
class computes what was evaluated. Text from genome files (name, description) only enters the
module as ``repr`` literals, never as code or docstring text.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import pprint
import re
import textwrap

from evoopt import __version__
from evoopt.genome.genome import Genome
from evoopt.genome.program import indent, plural, render_buffer_shape, render_step_functions
from evoopt.genome.runtime import USES

#: Names an exported module defines or imports at module level: its class may take none of them
#: (nor a builtin's, a keyword or a dunder), or the module breaks.
MODULE_NAMES = frozenset({
    "annotations", "math", "Callable", "Iterable", "Any", "torch", "Tensor", "Optimizer",
    "__all__", "PROVENANCE", "GENOME", "_HYPERPARAMETERS", "_BUFFERS", "_SCALAR_STATE",
    "_is_number",
    "_check_hyperparameters",
    "_single_tensor_step", "_multi_tensor_step", "_LAYOUTS", "_buffer_shape",
    *USES,  # the runtime helpers the module may vendor
})


def check_class_name(name: str) -> str:
    """``name`` if it can name an exported optimizer class, else ``ValueError`` saying why."""
    if not isinstance(name, str) or not name.isidentifier() or not name.isascii() \
            or keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise ValueError(f"--class-name: {name!r} is not a valid Python class name")
    if name in MODULE_NAMES or hasattr(builtins, name) or name.startswith("__"):
        raise ValueError(f"--class-name: {name!r} is a name the exported module already uses "
                         "(an import, a module constant or function, or a builtin); "
                         "choose another")
    return name


def class_name_for(genome: Genome) -> str:
    """A CamelCase class name from the genome's name (``Evolved...`` when it has none)."""
    words = re.findall(r"[A-Za-z0-9]+", genome.name or "")
    name = "".join(w[:1].upper() + w[1:] for w in words)
    if not name or not name[0].isalpha():
        name = f"Evolved{name}"
    if name in MODULE_NAMES or hasattr(builtins, name):
        name = f"{name}Optimizer"
    return name


def module_level_names(source: str) -> set[str]:
    """Names bound at the top level of an exported module other than by its class (imports,
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


def export_genome(genome: Genome, class_name: str | None = None, *,
                  provenance: dict[str, str | float | int] | None = None) -> str:
    """Python source of a module defining one ``Optimizer`` subclass for ``genome``."""
    class_name = check_class_name(class_name or class_name_for(genome))
    builder = genome.build()
    program = builder.program
    args = builder.args
    hp_names = list(args)
    extra = ["total_steps"] if genome.has_schedule else []
    seed = ["seed"] if program.curvature else []  # of the Hessian-vector products' probes
    buffers = program.buffers
    lists = program.step_function_lists()
    init_lists = [x for x in lists if x != "hessians"]  # the step computes those
    counters = program.counters()
    conditions = {n: spec.condition(n) for n, (spec, _) in args.items()}
    uses_math = any("math." in e for _, e in program.lets) or any(
        "math." in c for c in conditions.values())
    step_lets = program.step_lets()

    doc_args = [line for n, (spec, value) in args.items() for line in textwrap.wrap(
        f"        {n}: {spec.doc} (default: {value!r}).", 100, subsequent_indent=" " * 12,
        break_on_hyphens=False)]
    if extra:
        doc_args.append("        total_steps: length of the run; the learning-rate schedule "
                        f"({genome.schedule.kind}) is a function of step / total_steps.")
    checks = []
    for n in hp_names:
        label = "learning rate" if n == "lr" else f"{n} value"
        checks += [f'    {n} = values["{n}"]',
                   f"    if not _is_number({n}) or not {conditions[n]}:",
                   f'        raise ValueError(f"Invalid {label}: {{{n}!r}}")']
    if extra:
        checks += ['    total_steps = values["total_steps"]',
                   "    if isinstance(total_steps, bool) or not isinstance(total_steps, int) "
                   "or total_steps < 1:",
                   '        raise ValueError(f"Invalid total_steps: {total_steps!r} '
                   '(this optimizer has a learning-rate schedule)")']
    if program.curvature:
        checks += ['    seed = values["seed"]',
                   "    if isinstance(seed, bool) or not isinstance(seed, int) "
                   "or not 0 <= seed < 2**31:",
                   '        raise ValueError(f"Invalid seed: {seed!r}")']
    sig = [f"        {n}: float = {value!r}," for n, (_, value) in args.items()]
    kw_sig = (["        total_steps: int | None = None,"] if extra else []) + [
        "        foreach: bool | None = None,",
        "        maximize: bool = False,",
        *(["        seed: int = 0,"] if program.curvature else []),
    ]
    call_kw = [f'                {n}=group["{n}"],' for n in hp_names]
    call_kw += [f'                {n}=group["{"step" if n == "group_step" else n}"],'
                for n in counters]
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
          if program.curvature else []),
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
        *(["import math"] if uses_math else []),
        "from collections.abc import Callable, Iterable",
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
        "",
        "",
        "def _is_number(x: object) -> bool:",
        "    return isinstance(x, (int, float)) and not isinstance(x, bool)",
        "",
        "",
        "def _check_hyperparameters(values: dict[str, Any]) -> None:",
        '    """Raise ValueError unless every hyperparameter in values is in its valid range."""',
        *checks,
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
        *(_CURVATURE_DOC if program.curvature else []),
        '    """',
        *(["", "    needs_graph = True  # step() takes Hessian-vector products"]
          if program.curvature else []),
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
        *(["            seed=seed,"] if program.curvature else []),
        "        )",
        "        _check_hyperparameters(defaults)",
        "        super().__init__(params, defaults)",
        "",
        *_state_methods(bool(program.layouts)),
        "",
        "    def add_param_group(self, param_group: dict[str, Any]) -> None:",
        "        super().add_param_group(param_group)",
        '        self.param_groups[-1].setdefault("step", 0)',
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
        *(["        diagonals = _hessian_diagonals(self)"] if program.curvature else []),
        "        for group in self.param_groups:",
        *[f"            {x}: list[Tensor] = []" for x in init_lists],
        *_call("self._init_group", ["group", *init_lists], 12),
        "            if not params:",
        "                continue",
        *(["            hessians = [diagonals[p] for p in params]"] if program.curvature else []),
        '            group["step"] += 1',
        '            foreach = group["foreach"]',
        "            if foreach is None:",
        "                foreach = all(p.is_cuda for p in params)",
        "            func = _multi_tensor_step if foreach else _single_tensor_step",
        "            func(",
        *[f"                {x}," for x in lists],
        *call_kw,
        '                maximize=group["maximize"],',
        "            )",
        "        return loss",
        "",
        "",
        *render_step_functions(program, hp_names),
        "",
    ])
    if class_name in module_level_names(source):  # a name MODULE_NAMES lacks: keep it whole
        raise ValueError(f"--class-name: {class_name!r} is a name the exported module uses")
    return source


_CURVATURE_DOC = [
    "        seed: seed of the Rademacher probes of the Hessian-vector products (with the",
    "            parameter's index and step count, so runs are reproducible and resumable).",
    "",
    "    step() takes a Hessian-vector product through the gradients' graph (Hutchinson's",
    "    estimate of the Hessian diagonal), as AdaHessian does: call",
    "    loss.backward(create_graph=True) before step(), and zero_grad() (set_to_none) after.",
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
    '        hyperparameters out of range, raises ValueError before anything changes."""',
    '        structure = state_dict.get("evoopt_structure")',
    '        if structure is not None and structure != PROVENANCE["genome_structure"]:',
    "            raise ValueError(",
    '                f"state of another genome (structure {structure!r}; this optimizer\'s is "',
    '                f"{PROVENANCE[\'genome_structure\']!r})"',
    "            )",
    '        for i, group in enumerate(state_dict["param_groups"]):',
    "            missing = [n for n in _HYPERPARAMETERS if n not in group]",
    "            if missing:",
    "                raise ValueError(",
    '                    f"state of another optimizer: a param group lacks {missing}"',
    "                )",
    "            _check_hyperparameters(group)",
    '            step = group.get("step", 0)',
    "            if isinstance(step, bool) or not isinstance(step, int) or step < 0:",
    "                raise ValueError(",
    '                    f"param group {i} step: expected an integer >= 0, got {step!r}"',
    "                )",
    '        saved = [p for group in state_dict["param_groups"] for p in group["params"]]',
    '        mine = [p for group in self.param_groups for p in group["params"]]',
    "        shapes = {key: p.shape for key, p in zip(saved, mine, strict=False)}",
    '        for key, state in state_dict["state"].items():',
    "            for name, buffer in state.items():",
    "                if name not in _BUFFERS:",
    "                    raise ValueError(",
    '                        f"state of another optimizer: buffer {name!r} (this one has "',
    '                        f"{list(_BUFFERS)})"',
    "                    )",
    "                if name in _SCALAR_STATE:",
    "                    if buffer.dim() != 0:",
    '                        raise ValueError(f"{name} of parameter {key} is not a scalar")',
    '                    if name == "step" and (buffer.is_complex() or not (',
    '                            0 <= buffer.item() < float("inf") and buffer.item() % 1 == 0)):',
    "                        raise ValueError(",
    '                            f"step of parameter {key}: expected an integer >= 0, got "',
    '                            f"{buffer.item()!r}"',
    "                        )",
    "                elif key in shapes and tuple(buffer.shape) != tuple(shapes[key]):",
    "                    raise ValueError(",
    '                        f"buffer {name} of parameter {key} has shape "',
    '                        f"{tuple(buffer.shape)}, the parameter {tuple(shapes[key])}"',
    "                    )",
    '        super().load_state_dict({k: v for k, v in state_dict.items()',
    '                                 if k != "evoopt_structure"})',
]

# the shape check when some buffer is held by one role only or shaped unlike the parameter
_LAYOUT_CHECK = [
    "                elif key in shapes:",
    "                    expected = _buffer_shape(name, tuple(shapes[key]))",
    "                    if tuple(buffer.shape) != expected:",
    "                        raise ValueError(",
    '                            f"buffer {name} of parameter {key} has shape "',
    '                            f"{tuple(buffer.shape)}, not {expected} (the parameter\'s is "',
    '                            f"{tuple(shapes[key])})"',
    "                        )",
]


def _state_methods(layouts: bool) -> list[str]:
    """``state_dict`` and ``load_state_dict``; with ``layouts``, saved buffers are checked
    against ``_buffer_shape`` (None, for a buffer of another role, matches no shape)."""
    if not layouts:
        return _STATE_METHODS
    start = _STATE_METHODS.index(
        "                elif key in shapes and tuple(buffer.shape) != tuple(shapes[key]):")
    return [*_STATE_METHODS[:start], *_LAYOUT_CHECK, *_STATE_METHODS[start + 5:]]


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


def load_exported_class(source: str, class_name: str) -> type:
    """Execute exported source in a fresh namespace and return the optimizer class."""
    namespace: dict[str, object] = {"__name__": f"evoopt_exported_{class_name}"}
    exec(compile(source, f"<exported {class_name}>", "exec"), namespace)  # noqa: S102
    return namespace[class_name]  # type: ignore[return-value]
