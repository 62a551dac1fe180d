"""The exactness matrix of the frontier seeds (issue 18): a seed genome against a reference
implementation nobody on the project wrote (pytorch-optimizer, schedulefree, torch.optim),
in float64 over 60 steps, for the interpreter and the exported class, on the per-tensor and
the foreach path, with and without param groups, and with a parameter whose gradient starts
late (step 4). References are test dependencies only: the package never imports them."""

from __future__ import annotations

from collections.abc import Callable

import torch

from evoopt.genome import GenomeOptimizer, seed_genome
from evoopt.genome.export import export_genome, load_exported_class
from tests.optim_problem import make_params, relative_error, trajectory

STEPS = 60
#: The cases of the matrix: (param groups, late start).
CASES = [(False, 0), (True, 0), (True, 4)]

Factory = Callable[[list], torch.optim.Optimizer]


def exported_class(name: str) -> type:
    """The class ``evoopt export`` writes for seed ``name``."""
    source = export_genome(seed_genome(name), class_name="Exported")
    return load_exported_class(source, "Exported")


def seed_errors(name: str, reference: Factory, *, groups: bool, late_start: int,
                run: Callable[..., torch.Tensor] = trajectory) -> dict[str, float]:
    """Relative errors of seed ``name`` against ``reference`` after :data:`STEPS` steps: for
    the interpreter and the export, each per tensor and with foreach (keys like
    ``export/foreach``). Asserts that the problem moves the parameters."""
    expected = run(reference, STEPS, param_groups=groups, late_start=late_start)
    start = torch.cat([p.detach().flatten() for p in make_params()])
    assert relative_error(expected, start) > 1e-3, "the problem must move the parameters"
    genome, cls = seed_genome(name), exported_class(name)
    errors = {}
    for foreach in (False, True):
        path = "foreach" if foreach else "per-tensor"
        got = run(lambda ps, f=foreach: GenomeOptimizer(ps, genome, foreach=f), STEPS,
                  param_groups=groups, late_start=late_start)
        errors[f"interpreter/{path}"] = relative_error(got, expected)
        got = run(lambda ps, f=foreach: cls(ps, foreach=f), STEPS, param_groups=groups,
                  late_start=late_start)
        errors[f"export/{path}"] = relative_error(got, expected)
    return errors


def assert_matches(name: str, reference: Factory, tolerance: float, *, groups: bool,
                   late_start: int, run: Callable[..., torch.Tensor] = trajectory) -> None:
    """Every path of seed ``name`` within ``tolerance`` of ``reference``."""
    errors = seed_errors(name, reference, groups=groups, late_start=late_start, run=run)
    bad = {k: v for k, v in errors.items() if not v <= tolerance}
    assert not bad, f"{name} departs from its reference (tolerance {tolerance:g}): {bad}"
