"""One shell (docs/design-chain-of-blocks.md §4, step 3): the interpreter runs the module the
exporter prints, so both have the same source, the same checks and interchangeable state."""

from __future__ import annotations

import copy
import linecache
import traceback

import numpy as np
import pytest
import torch

from evoopt.genome import Genome, GenomeOptimizer, codegen, interpreter, seed_genome, seed_names
from evoopt.genome.export import export_genome, load_exported_class
from evoopt.genome.sampling import random_genome
from tests.optim_problem import make_params

RANDOM = [random_genome(np.random.default_rng(seed)) for seed in range(12)]
GENOMES = [*(seed_genome(n) for n in seed_names()), *RANDOM]
IDS = [*seed_names(), *(f"random{i}" for i in range(len(RANDOM)))]


def executed_source(opt: torch.optim.Optimizer) -> str:
    """The text of the module the interpreter executed for ``opt`` (as linecache holds it)."""
    filename = type(opt)._evoopt_generated.__init__.__code__.co_filename
    assert filename.startswith("<evoopt genome ")
    return "".join(linecache.getlines(filename))


def stepped(make, genome: Genome, steps: int, params: list[torch.Tensor] | None = None):
    """An optimizer from ``make`` after ``steps`` steps on a fixed quadratic."""
    params = make_params() if params is None else params
    opt = make(params)
    run(opt, params, steps)
    return opt, params


def run(opt: torch.optim.Optimizer, params: list[torch.Tensor], steps: int) -> None:
    gen = torch.Generator().manual_seed(3)
    targets = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    for _ in range(steps):
        opt.zero_grad()
        loss = sum(((p - t) ** 2).sum() + (p ** 4).sum() for p, t in zip(params, targets,
                                                                          strict=True))
        loss.backward(create_graph=getattr(opt, "needs_graph", False))
        opt.step()


@pytest.mark.parametrize("genome", GENOMES, ids=IDS)
def test_interpreter_executes_the_exported_source(genome: Genome) -> None:
    opt = GenomeOptimizer(make_params(), genome, total_steps=10)
    assert executed_source(opt) == export_genome(genome, interpreter.CLASS_NAME)
    assert isinstance(opt, GenomeOptimizer) and opt.genome is genome
    assert opt.needs_graph == genome.needs_graph
    assert type(opt).__doc__ == type(opt)._evoopt_generated.__doc__


def test_a_different_name_is_a_different_source() -> None:
    """The module quotes the genome's name; equal genomes with other names get their own."""
    import dataclasses

    adam = seed_genome("adam")
    renamed = dataclasses.replace(adam, name="other")
    assert renamed == adam
    one, two = GenomeOptimizer(make_params(), adam), GenomeOptimizer(make_params(), renamed)
    assert type(one) is not type(two)
    assert "'name': 'other'" in executed_source(two)


@pytest.mark.parametrize("make", ["exported", "interpreter"])
@pytest.mark.parametrize("bad", [-1.0, 0.0, 20.0, float("nan"), float("inf"), True, "0.1",
                                 None, 10**400], ids=repr)
def test_add_param_group_refuses_an_invalid_hyperparameter(make: str, bad: object) -> None:
    """A group's lr out of range (or not a finite number) is refused with an error naming lr,
    the group and the range, and the group is not added; construction refuses it alike."""
    adam = seed_genome("adam")
    p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    if make == "exported":
        cls = load_exported_class(export_genome(adam, "Opt"), "Opt")
        opt = cls([p])
        with pytest.raises(ValueError, match=r"^Invalid learning rate lr: "):
            cls([q], lr=bad)
    else:
        opt = GenomeOptimizer([p], adam)
    with pytest.raises(ValueError, match=r"^Invalid learning rate lr in param group 1: ") as info:
        opt.add_param_group({"params": [q], "lr": bad})
    assert repr(bad) in str(info.value) and "(0.0, 10.0]" in str(info.value)
    assert len(opt.param_groups) == 1
    with pytest.raises(ValueError, match=r"Invalid learning rate lr in param group 0: "):
        GenomeOptimizer([{"params": [q], "lr": bad}], adam)
    opt.add_param_group({"params": [q], "lr": 1})  # an int is a number: kept as a float
    assert opt.param_groups[1]["lr"] == 1.0 and isinstance(opt.param_groups[1]["lr"], float)


def test_every_hyperparameter_of_a_group_is_checked() -> None:
    """Not only lr: each override is checked against its own range, by name."""
    opt = load_exported_class(export_genome(seed_genome("adan"), "Opt"), "Opt")(
        [torch.nn.Parameter(torch.ones(3))])
    for name in [n for n in opt.defaults if n not in ("foreach", "maximize")]:
        with pytest.raises(ValueError, match=rf"Invalid .*\b{name}\b.* in param group 1: 1000\.0"):
            opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))], name: 1000.0})
    assert len(opt.param_groups) == 1


def test_construction_on_a_cache_hit_does_not_render(monkeypatch: pytest.MonkeyPatch) -> None:
    renders: list[str] = []
    render = codegen.render

    def counting(genome: Genome, class_name: str, **kwargs) -> str:
        renders.append(class_name)
        return render(genome, class_name, **kwargs)

    monkeypatch.setattr(codegen, "render", counting)
    adam = seed_genome("adam")
    first = GenomeOptimizer(make_params(), adam)
    before = len(renders)
    assert before <= 1
    second = GenomeOptimizer(make_params(), seed_genome("adam"))  # an equal genome, new object
    assert len(renders) == before and type(second) is type(first)
    fresh = adam.with_lr(1.234567e-3)  # not seen before: rendered once, then cached
    GenomeOptimizer(make_params(), fresh)
    GenomeOptimizer(make_params(), fresh)
    assert len(renders) == before + 1
    interpreter.cache_clear()
    GenomeOptimizer(make_params(), adam)
    assert len(renders) == before + 2


def test_the_cache_is_bounded_and_releases_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(interpreter, "CACHE_SIZE", 2)
    interpreter.cache_clear()
    opts = [GenomeOptimizer(make_params(), seed_genome("adam").with_lr(lr))
            for lr in (1e-3, 2e-3, 3e-3)]
    assert len(interpreter._modules) == 2 and len(interpreter._digests) == 2
    assert not linecache.getlines(type(opts[0])._evoopt_generated.__init__.__code__.co_filename)
    assert executed_source(opts[2])
    run(opts[0], opts[0].param_groups[0]["params"], 2)  # an evicted class still works
    interpreter.cache_clear()


def test_a_traceback_shows_the_generated_source() -> None:
    opt = GenomeOptimizer([torch.nn.Parameter(torch.ones(2))], seed_genome("adam"))
    try:
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))], "beta1": 2.0})
    except ValueError:
        text = traceback.format_exc()
    assert '<evoopt genome 1bacbb4b98d67869' in text
    assert "group.update(_check_hyperparameters(group, where))" in text
    assert 'raise _invalid("beta1 value"' in text


@pytest.mark.parametrize("name", ["adam", "adan", "nadam", "adafactor", "muon", "lamb",
                                  "adahessian"])
@pytest.mark.parametrize("direction", ["interpreter->exported", "exported->interpreter"])
def test_state_dict_round_trip_between_interpreter_and_exported(name: str,
                                                                direction: str) -> None:
    """k steps on one, its state_dict loaded into the other over the same tensors, the rest
    there: bit for bit the run that never stopped (float64)."""
    genome = seed_genome(name)
    cls = load_exported_class(export_genome(genome, "Opt"), "Opt")
    makers = {"interpreter": lambda ps: GenomeOptimizer(ps, genome, seed=5),
              "exported": lambda ps: cls(ps, **({"seed": 5} if genome.needs_graph else {}))}
    source, target = direction.split("->")
    k, n = 4, 9
    _, straight = stepped(makers[source], genome, n)
    first, params = stepped(makers[source], genome, k)
    second = makers[target](params)
    second.load_state_dict(first.state_dict())
    assert second.state_dict()["param_groups"] == first.state_dict()["param_groups"]
    run(second, params, n - k)
    for a, b in zip(straight, params, strict=True):
        assert torch.equal(a.detach(), b.detach())


def test_load_state_dict_messages_name_the_field() -> None:
    opt, _ = stepped(lambda ps: GenomeOptimizer(ps, seed_genome("adam")), seed_genome("adam"), 1)
    good = opt.state_dict()
    cases = [
        ({**good, "param_groups": [{**good["param_groups"][0], "eps": -1.0}]},
         r"^load_state_dict: Invalid eps value in param group 0: -1\.0"),
        ({**good, "param_groups": [{k: v for k, v in good["param_groups"][0].items()
                                    if k != "beta2"}]},
         r"^load_state_dict: param group 0 lacks beta2: state of another optimizer"),
        ({**good, "state": {0: {**good["state"][0], "exp_avg": 3.0}}},
         r"^load_state_dict: buffer exp_avg of parameter 0 is not a tensor"),
        ({**good, "state": {0: {**good["state"][0], "momentum_buffer": torch.zeros(8, 6)}}},
         r"^load_state_dict: state holds momentum_buffer, not buffers of this optimizer"),
        ({**good, "state": {0: {**good["state"][0], "step": torch.zeros(2)}}},
         r"^load_state_dict: step of parameter 0 is not a scalar tensor"),
        ([], r"^load_state_dict: expected an optimizer state_dict"),
    ]
    for state, message in cases:
        with pytest.raises(ValueError, match=message):
            opt.load_state_dict(state)
    opt.load_state_dict(good)


def test_total_steps_and_seed_are_checked_by_the_shell() -> None:
    cosine = Genome.from_dict({"lr": 0.1, "schedule": {"kind": "cosine"},
                               "terms": [{"kind": "grad"}]})
    cls = load_exported_class(export_genome(cosine, "Opt"), "Opt")
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match=r"^Invalid total_steps: None \(expected an integer "
                                         r">= 1: this optimizer has a learning-rate schedule\)"):
        cls([p])
    opt = GenomeOptimizer([p], cosine, total_steps=5)
    with pytest.raises(ValueError, match=r"^Invalid total_steps in param group 1: 0"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))], "total_steps": 0})
    hessian = GenomeOptimizer([p], seed_genome("adahessian"))
    with pytest.raises(ValueError, match=r"^Invalid seed in param group 1: -1 \(expected an "
                                         r"integer in \[0, 2\*\*31\)\)"):
        hessian.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))], "seed": -1})


def test_a_genome_optimizer_deep_copies() -> None:
    opt, params = stepped(lambda ps: GenomeOptimizer(ps, seed_genome("adan")),
                          seed_genome("adan"), 2)
    clone = copy.deepcopy(opt)
    assert type(clone) is type(opt) and clone.genome == opt.genome
    assert clone.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


def test_genome_optimizer_refuses_what_is_not_a_genome() -> None:
    with pytest.raises(TypeError, match="expected a Genome"):
        GenomeOptimizer([torch.nn.Parameter(torch.ones(2))], seed_genome("adam").to_dict())
