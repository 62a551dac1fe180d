"""Curvature (AdaHessian): the Hutchinson Hessian-diagonal primitive, its probes, exported and
interpreted optimizers that take Hessian-vector products, and the fitness runner's handling."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from evoopt.fitness import FitnessRunner
from evoopt.genome import Genome, GenomeOptimizer, seed_genome
from evoopt.genome.export import export_genome, load_exported_class
from evoopt.genome.program import compile_step_functions
from tests.optim_problem import make_params, relative_error, trajectory

pytestmark = [pytest.mark.usefixtures("float64"),
              pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph")]

ADAHESSIAN = seed_genome("adahessian")


def exported_adahessian() -> type:
    return load_exported_class(export_genome(ADAHESSIAN, "Exported"), "Exported")


def hessian_diagonals(opt: GenomeOptimizer) -> dict[torch.Tensor, torch.Tensor]:
    """The estimates the optimizer's next step would use (the program's own function)."""
    builder = ADAHESSIAN.build()
    return compile_step_functions(builder.program, list(builder.args))["hessian_diagonals"](opt)


def test_hutchinson_estimate_is_unbiased_on_a_dense_hessian() -> None:
    """E[z * Hz] = diag(H) for Rademacher z; each probe's estimate differs from it by
    sum_{j != i} H_ij z_i z_j, so the probes must be +-1 and independent across seeds."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, generator=gen)
    h = a @ a.T + torch.eye(6)
    p = torch.randn(6, generator=gen, requires_grad=True)
    opt = GenomeOptimizer([p], ADAHESSIAN)
    estimates = []
    for seed in range(2000):
        opt.zero_grad()
        (0.5 * p @ h @ p).backward(create_graph=True)  # one Hessian-vector product a graph
        opt.param_groups[0]["seed"] = seed
        d = hessian_diagonals(opt)[p]
        off = (d - h.diagonal()).abs()
        assert torch.all(off <= (h - torch.diag(h.diagonal())).abs().sum(1) + 1e-9)
        estimates.append(d)
    estimates = torch.stack(estimates)
    mean, se = estimates.mean(0), estimates.std(0) / len(estimates) ** 0.5
    assert torch.all((mean - h.diagonal()).abs() <= 4 * se), (mean, h.diagonal(), se)
    assert torch.all(estimates.std(0) > 0.1), "the probes must vary with the seed"


def test_conv_kernels_are_averaged_over_their_spatial_dims() -> None:
    kernel = torch.randn(3, 2, 3, 3, requires_grad=True)
    h = torch.rand(3, 2, 3, 3) + 0.5
    opt = GenomeOptimizer([kernel], ADAHESSIAN)
    (0.5 * (h * kernel**2).sum()).backward(create_graph=True)
    d = hessian_diagonals(opt)[kernel]
    assert d.shape == kernel.shape
    assert torch.allclose(d, h.mean(dim=(2, 3), keepdim=True).expand_as(h), rtol=0, atol=1e-15)


@pytest.mark.parametrize("make", ["interpreted", "exported"])
def test_gradients_without_a_graph_are_a_clear_error(make: str) -> None:
    p = torch.randn(4, requires_grad=True)
    opt = (GenomeOptimizer([p], ADAHESSIAN) if make == "interpreted"
           else exported_adahessian()([p]))
    (p**2).sum().backward()  # no create_graph
    with pytest.raises(RuntimeError, match=r"no graph: call loss.backward\(create_graph=True\)"):
        opt.step()
    assert opt.needs_graph and not GenomeOptimizer([p], seed_genome("adam")).needs_graph


@pytest.mark.parametrize("foreach", [False, True])
def test_interpreter_and_export_draw_the_same_probes(foreach: bool) -> None:
    """On a problem whose Hessian is not diagonal the probes matter: the interpreted and the
    exported optimizer agree exactly, per seed, and the seed changes the trajectory."""
    ref = trajectory(lambda ps: GenomeOptimizer(ps, ADAHESSIAN, seed=7, foreach=foreach), 30,
                     param_groups=True)
    cls = exported_adahessian()
    out = trajectory(lambda ps: cls(ps, seed=7, foreach=foreach), 30, param_groups=True)
    assert relative_error(out, ref) <= 1e-12
    other = trajectory(lambda ps: GenomeOptimizer(ps, ADAHESSIAN, seed=8), 30, param_groups=True)
    assert relative_error(other, ref) > 1e-8


@pytest.mark.parametrize("make", ["interpreted", "exported"])
def test_state_dict_resume_reproduces_the_probes(make: str) -> None:
    """Probes are seeded by (seed, parameter index, step): a resumed run equals a straight one."""
    cls = exported_adahessian()

    def build(params):
        return (GenomeOptimizer(params, ADAHESSIAN, seed=3) if make == "interpreted"
                else cls(params, seed=3))

    def run(params, opt, steps, start):
        gen = torch.Generator().manual_seed(start)
        for _ in range(steps):
            opt.zero_grad()
            x = torch.randn(5, 6, generator=gen)
            loss = torch.tanh(x @ params[0].T + params[1]).pow(2).sum() + params[4].pow(4).sum()
            loss.backward(create_graph=True)
            opt.step()

    straight = make_params()
    opt = build(straight)
    run(straight, opt, 6, 0)
    run(straight, opt, 6, 1)
    resumed = make_params()
    first = build(resumed)
    run(resumed, first, 6, 0)
    second = build(resumed)  # a fresh optimizer over the same tensors
    second.load_state_dict(first.state_dict())
    run(resumed, second, 6, 1)
    for a, b in zip(resumed, straight, strict=True):
        assert torch.equal(a.detach(), b.detach())


def test_probe_seed_is_validated() -> None:
    p = torch.zeros(2, requires_grad=True)
    for bad in (-1, 2**31, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            GenomeOptimizer([p], ADAHESSIAN, seed=bad)
        with pytest.raises(ValueError, match="Invalid seed"):
            exported_adahessian()([p], seed=bad)


def test_curvature_is_a_property_of_the_primitive_and_either_role() -> None:
    assert ADAHESSIAN.needs_graph and ADAHESSIAN.build().program.curvature
    adam = seed_genome("adam")
    assert not adam.needs_graph and not adam.build().program.curvature
    split = dataclasses.replace(adam, matrix=dataclasses.replace(ADAHESSIAN, name="",
                                                                 description=""))
    assert split.needs_graph and split.build().program.curvature
    assert Genome.from_dict(split.to_dict()) == split


def test_fitness_runner_backpropagates_with_a_graph_only_when_needed(data_dir) -> None:
    """The runner takes gradients with create_graph only for curvature genomes, records it, and
    such a run is real (above chance) and deterministic."""
    torch.set_default_dtype(torch.float32)
    runner = FitnessRunner("cifar10-tiny", data_dir=str(data_dir))
    curvature = runner.evaluate(ADAHESSIAN.with_lr(0.05), seed=0)
    again = runner.evaluate(ADAHESSIAN.with_lr(0.05), seed=0)
    plain = runner.evaluate(seed_genome("adam"), seed=0)
    assert curvature.status == "ok", curvature.message
    assert curvature.create_graph and not plain.create_graph
    assert curvature.fitness == again.fitness and curvature.fitness > 0.15


def test_campaign_summary_counts_what_curvature_genomes_cost(tmp_path) -> None:
    """search_curvature: the search's evaluations of genomes that take Hessian-vector products
    and their wall time, beside the whole search's (finish-stage runs are not search)."""
    from evoopt.campaign.finish import FINAL_STAGE, search_curvature
    from evoopt.campaign.store import CampaignStore

    genomes = {"a": seed_genome("adam"), "h": ADAHESSIAN}
    with CampaignStore(tmp_path) as store:
        for uid, genome in genomes.items():
            store.add_individual(uid=uid, generation=0, operator="seed", parents=[],
                                 genome=genome.to_dict(), hash=genome.hash,
                                 behaviour_hash=uid, formula=genome.formula())
        for uid, stage, seed, seconds in [("a", "full", 0, 2.0), ("a", "full", 1, 2.5),
                                          ("h", "full", 0, 8.0), ("h", FINAL_STAGE, 9, 8.5)]:
            store.add_evaluation(uid=uid, hash=genomes[uid].hash, stage=stage, seed=seed,
                                 split="val", fitness=0.4, status="ok", wall_time_s=seconds)
        cost = search_curvature(store)
    assert cost == {"evaluations": 1, "wall_time_s": 8.0, "search_evaluations": 3,
                    "search_wall_time_s": 12.5}


def test_behaviour_probe_of_a_curvature_genome_is_quiet_and_distinct() -> None:
    """The dedupe probe takes a curvature genome's gradients with their graph without
    backward()'s reference-cycle warning (it reached campaign output), and tells AdaHessian
    from Adam."""
    import warnings

    from evoopt.genome.behaviour import behaviour_hash

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        curvature = behaviour_hash(ADAHESSIAN)
    assert curvature != behaviour_hash(seed_genome("adam").with_lr(ADAHESSIAN.lr))
    assert curvature == behaviour_hash(ADAHESSIAN)
