"""Export a genome as a standalone, readable ``torch.optim.Optimizer`` module.

The module is the one shell of :mod:`evoopt.genome.codegen`, which the interpreter
(:class:`evoopt.genome.interpreter.GenomeOptimizer`) executes too, so the exported class
computes what was evaluated, with the same checks. It imports only torch and the standard
library and follows ``torch/optim/adam.py``: validated constructor arguments whose defaults are
the genome's values, lazy state in ``_init_group``, and a single-tensor and a
``torch._foreach_*`` implementation. Text from genome files (name, description) only enters the
module as ``repr`` literals, never as code or docstring text.
"""

from __future__ import annotations

import evoopt.genome.codegen as codegen
from evoopt.genome.codegen import (
    MODULE_NAMES,
    AnyGenome,
    check_class_name,
    class_name_for,
    module_level_names,
)

__all__ = ["MODULE_NAMES", "check_class_name", "class_name_for", "export_genome",
           "load_exported_class", "module_level_names"]


def export_genome(genome: AnyGenome, class_name: str | None = None, *,
                  provenance: dict[str, str | float | int] | None = None) -> str:
    """Python source of a module defining one ``Optimizer`` subclass for ``genome``
    (:func:`evoopt.genome.codegen.render`); ``provenance`` adds entries to its ``PROVENANCE``."""
    class_name = check_class_name(class_name or class_name_for(genome))
    source = codegen.render(genome, class_name, provenance=provenance)
    if class_name in module_level_names(source):  # a name MODULE_NAMES lacks: keep it whole
        raise ValueError(f"--class-name: {class_name!r} is a name the exported module uses")
    return source


def load_exported_class(source: str, class_name: str) -> type:
    """Execute exported source in a fresh namespace and return the optimizer class."""
    namespace: dict[str, object] = {"__name__": f"evoopt_exported_{class_name}"}
    exec(compile(source, f"<exported {class_name}>", "exec"), namespace)  # noqa: S102
    return namespace[class_name]  # type: ignore[return-value]
