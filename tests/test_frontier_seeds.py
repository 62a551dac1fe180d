"""The frontier seeds match their references (issue 18; the matrix of tests/frontier.py)."""

from __future__ import annotations

import ast
import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_optimizer as po
import torch

from evoopt.genome import GenomeOptimizer, seed_genome
from tests.frontier import CASES, STEPS, assert_matches, exported_class
from tests.optim_problem import relative_error, trajectory

#: seed name -> (the reference at the seed's hyperparameters, relative tolerance)
REFERENCES = {
    "ademamix": (lambda ps: po.AdEMAMix(ps), 1e-10),
    "schedule-free-adamw": (lambda ps: po.ScheduleFreeAdamW(ps), 1e-10),
}

pytestmark = pytest.mark.usefixtures("float64")


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize(("groups", "late_start"), CASES)
def test_seed_matches_its_reference(name: str, groups: bool, late_start: int) -> None:
    reference, tolerance = REFERENCES[name]
    assert_matches(name, reference, tolerance, groups=groups, late_start=late_start)


def test_the_package_never_imports_a_reference() -> None:
    """pytorch-optimizer and schedulefree are test dependencies: no module of evoopt imports
    them."""
    package = Path(__file__).resolve().parents[1] / "evoopt"
    bad = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{path.name}: {n}" for n in names
                    if n.split(".")[0] in ("pytorch_optimizer", "schedulefree")]
    assert not bad, bad


def _trained(factory: Callable[[list], torch.optim.Optimizer], groups: bool, late_start: int
             ) -> tuple[torch.optim.Optimizer, torch.Tensor]:
    """The optimizer after the problem's steps, and the training weights it left."""
    made: list[torch.optim.Optimizer] = []

    def make(ps: list) -> torch.optim.Optimizer:
        made.append(factory(ps))
        return made[-1]

    y = trajectory(make, STEPS, param_groups=groups, late_start=late_start)
    return made[0], y


def _weights(opt: torch.optim.Optimizer) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for g in opt.param_groups for p in g["params"]])


@pytest.mark.parametrize(("groups", "late_start"), CASES)
@pytest.mark.parametrize("foreach", [False, True])
def test_schedule_free_evaluates_the_reference_average(groups: bool, late_start: int,
                                                       foreach: bool) -> None:
    """After eval(), the interpreter and the export hold the reference's averaged weights x
    (not the training weights y), and train() brings back y."""
    reference, y_ref = _trained(lambda ps: po.ScheduleFreeAdamW(ps), groups, late_start)
    reference.eval()
    x_ref = _weights(reference)
    assert relative_error(x_ref, y_ref) > 1e-4, "x and y must differ for the test to mean much"
    genome, cls = seed_genome("schedule-free-adamw"), exported_class("schedule-free-adamw")
    for factory in (lambda ps: GenomeOptimizer(ps, genome, foreach=foreach),
                    lambda ps: cls(ps, foreach=foreach)):
        opt, y = _trained(factory, groups, late_start)
        assert opt.evaluates_other_weights
        opt.eval()
        opt.eval()  # a second eval() is a no-op
        assert relative_error(_weights(opt), x_ref) <= 1e-10
        opt.train()
        assert relative_error(_weights(opt), y) <= 1e-12


def test_schedule_free_state_dict_round_trips_across_eval() -> None:
    """The group-scope state (the averaging weights' sum, the max lr, train_mode) is in the
    state_dict: a copy loaded from it in eval mode continues exactly as the original."""
    genome = seed_genome("schedule-free-adamw")
    opt, _ = _trained(lambda ps: GenomeOptimizer(ps, genome), True, 4)
    opt.eval()
    saved = copy.deepcopy(opt.state_dict())
    assert {"sf_weight_sum", "sf_lr_max", "train_mode"} <= set(saved["param_groups"][0])
    assert saved["param_groups"][0]["train_mode"] is False
    params = [p.detach().clone().requires_grad_() for g in opt.param_groups for p in g["params"]]
    twin = GenomeOptimizer([{"params": params[:2]}, {"params": params[2:]}], genome)
    twin.load_state_dict(saved)
    for o in (opt, twin):
        o.train()
        for p in (q for g in o.param_groups for q in g["params"]):
            p.grad = torch.ones_like(p)
        o.step()
    assert torch.equal(_weights(opt), _weights(twin))


def test_optimizers_that_train_where_they_evaluate_have_no_op_eval() -> None:
    adam = seed_genome("adam")
    opt = GenomeOptimizer([torch.nn.Parameter(torch.ones(3))], adam)
    assert not opt.evaluates_other_weights
    before = _weights(opt)
    opt.eval()
    opt.train()
    assert torch.equal(_weights(opt), before)
