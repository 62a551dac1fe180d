"""In-run pruning (issue 19, S8): curve bins, the prune rule, both runners, the evaluation
request, and a real campaign on the serial evaluator with ``[pruning]``."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from evoopt.campaign.config import ConfigError, parse_config
from evoopt.campaign.orchestrator import CampaignRunner
from evoopt.campaign.store import CampaignStore
from evoopt.evaluator.base import EvalRequest
from evoopt.evaluator.worker import FitnessWorker
from evoopt.fitness import WORST_FITNESS, load_task, make_runner
from evoopt.fitness.curves import PruneRule, StepCurve, bin_edges, downsample_curve
from evoopt.fitness.objective import ObjectiveRunner, TrialPruned
from evoopt.fitness.runner import curve_direction
from evoopt.genome import Genome, seed_genome
from tests.test_campaign_user_task import evaluations, micro_config, user_task_folder


def with_lr(name: str, lr: float) -> Genome:
    d = seed_genome(name).to_dict()
    d["lr"] = lr
    return Genome.from_dict(d)


# -- bins and the rule ----------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 7, 49, 50, 51, 120, 1000, 1003])
def test_bin_edges_are_array_split_and_a_dense_step_curve_is_the_downsampled_curve(
        steps: int) -> None:
    values = np.random.default_rng(steps).normal(size=steps)
    sizes = [len(b) for b in np.array_split(values, min(50, steps))]
    assert np.diff(bin_edges(steps)).tolist() == sizes and bin_edges(steps)[-1] == steps
    curve = StepCurve(steps)
    for step, v in enumerate(values):
        curve.add(step, float(v))
    assert curve.values() == pytest.approx(downsample_curve(values), rel=1e-12)
    assert curve.completed == len(sizes) - 1


def test_a_sparse_step_curve_leaves_empty_bins_empty() -> None:
    curve = StepCurve(200)  # 50 bins of 4 steps
    for step in (0, 10, 11, 25):
        curve.add(step, float(step))
    assert curve.values() == [0.0, None, 10.5, None, None, None, 25.0]
    assert curve.completed == 6


def rule(reference: list[float | None], direction: str = "minimize", **kw: float) -> PruneRule:
    return PruneRule(reference=tuple(reference), total_steps=len(reference),
                     direction=direction, label="adam", **kw)


def test_the_rule_prunes_a_run_behind_the_reference_by_more_than_the_margin() -> None:
    ref = [1.0] * 20
    r = rule(ref, margin=0.25, after=0.25, window=2)  # first look after 5 of 20 bins
    behind = [1.3] * 20
    assert r.verdict(behind, 4) is None  # too early
    message = r.verdict(behind, 5)
    assert message and "adam" in message and "after 5 of 20 steps" in message
    assert r.verdict([1.2] * 20, 20) is None  # within the margin
    assert r.verdict([0.5] * 20, 20) is None  # ahead
    # only the last `window` bins count: an early lag that was made up is not pruned
    assert r.verdict([3.0] * 8 + [1.0] * 12, 12) is None
    # maximising: lower is behind
    up = rule([1.0] * 20, "maximize", margin=0.1, after=0.0, window=3)
    assert up.verdict([0.8] * 20, 3) and up.verdict([1.2] * 20, 3) is None


def test_the_rule_compares_only_bins_both_curves_have() -> None:
    ref: list[float | None] = [None if i % 3 else 1.0 for i in range(30)]
    r = rule(ref, margin=0.0, after=0.0, window=2)
    run: list[float | None] = [None] * 30
    assert r.verdict(run, 30) is None  # nothing to compare yet
    run[3] = 5.0  # a bin the reference has
    assert r.verdict(run, 4)
    run2: list[float | None] = [None] * 30
    run2[4] = 5.0  # a bin the reference lacks
    assert r.verdict(run2, 30) is None


def test_a_rule_round_trips_and_refuses_bad_settings_naming_the_field() -> None:
    r = rule([1.0, 2.0, None], margin=0.5, after=0.1, window=2)
    assert PruneRule.from_dict(r.to_dict()) == r
    short = PruneRule(reference=(1.0, 2.0), total_steps=100)  # padded to 50 bins
    assert len(short.reference) == 50 and short.reference[2] is None
    for kw, field in (({"margin": -0.1}, "margin"), ({"after": 1.0}, "after"),
                      ({"window": 0}, "window"), ({"margin": math.nan}, "margin")):
        with pytest.raises(ValueError, match=f"PruneRule.{field}"):
            rule([1.0] * 4, **kw)
    with pytest.raises(ValueError, match="PruneRule.reference"):
        PruneRule(reference=(1.0,) * 5, total_steps=4)
    with pytest.raises(ValueError, match="PruneRule.direction"):
        rule([1.0], "up")
    with pytest.raises(ValueError, match="prune rule for 4 steps given to a run of 5"):
        rule([1.0] * 4).check_steps(5)


# -- the task-class runner --------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher() -> tuple[object, object]:
    task = load_task("teacher-mlp-cpu")
    return task, make_runner(task)


def test_a_task_class_run_behind_adam_is_pruned_and_one_that_is_not_is_unchanged(
        teacher: tuple) -> None:
    task, runner = teacher
    adam = runner.evaluate(seed_genome("adam"), 0)
    assert adam.status == "ok" and len(adam.train_loss_curve) == 50
    r = PruneRule(tuple(adam.train_loss_curve), task.steps, curve_direction(task), label="adam")
    # the reference itself, and a run that is not behind, are bit-identical to unpruned runs
    for genome in (seed_genome("adam"), seed_genome("sgd-momentum")):
        plain, pruned = runner.evaluate(genome, 0), runner.evaluate(genome, 0, prune=r)
        assert pruned.status == plain.status == "ok"
        assert (pruned.fitness, pruned.value, pruned.steps, pruned.train_loss_curve) == (
            plain.fitness, plain.value, plain.steps, plain.train_loss_curve)
    slow = with_lr("adam", 1e-6)
    full, cut = runner.evaluate(slow, 0), runner.evaluate(slow, 0, prune=r.to_dict())
    assert full.status == "ok" and full.steps == task.steps
    assert cut.status == "pruned" and cut.fitness == WORST_FITNESS and cut.value is None
    assert r.first_check * task.steps // 50 <= cut.steps < task.steps
    assert "adam" in cut.message and f"of {task.steps} steps" in cut.message
    # the curve it stored is the unpruned run's bins, up to where it stopped
    n = len(cut.train_loss_curve)
    assert n >= r.first_check
    assert cut.train_loss_curve == pytest.approx(full.train_loss_curve[:n], rel=1e-12)


def test_a_rule_for_another_budget_is_an_error_result_not_a_raise(teacher: tuple) -> None:
    task, runner = teacher
    res = runner.evaluate(seed_genome("adam"), 0, prune=PruneRule((1.0,), task.steps + 1))
    assert res.status == "error" and "prune rule for" in res.message


# -- the objective runner ---------------------------------------------------------------------


def regression(trial, *, ask: bool = True, swallow: bool = False) -> float:
    model = torch.nn.Linear(4, 1)
    opt = trial.make_optimizer(model.parameters())
    g = trial.generator("data")
    loss = torch.tensor(0.0)
    for step in range(trial.total_steps):
        x = torch.randn(32, 4, generator=g)
        loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
        opt.zero_grad()
        trial.backward(loss)
        try:
            opt.step()
        except Exception:  # noqa: BLE001 - a user's blanket except must not swallow a prune
            if not swallow:
                raise
        if step % 10 == 0:
            trial.report(step, loss.item())
            if ask and trial.should_stop():
                return loss.item()
    return loss.item()


def objective_runner(**kw: bool) -> ObjectiveRunner:
    def objective(trial):
        return regression(trial, **kw)

    return ObjectiveRunner(objective, name="linreg", steps=200, direction="minimize")


@pytest.mark.parametrize("kw", [{"ask": True}, {"ask": False}, {"ask": False, "swallow": True}],
                         ids=["asks", "never-asks", "swallows"])
def test_an_objective_behind_the_reference_is_pruned_whether_or_not_it_asks(kw: dict) -> None:
    runner = objective_runner(**kw)
    fast = runner.evaluate(with_lr("adam", 1e-2), 0)
    assert fast.status == "ok"
    r = PruneRule(tuple(fast.train_loss_curve), 200, "minimize", label="adam")
    slow = with_lr("adam", 1e-5)
    full, cut = runner.evaluate(slow, 0), runner.evaluate(slow, 0, prune=r)
    assert full.status == "ok" and full.steps == 200
    assert cut.status == "pruned" and cut.fitness == WORST_FITNESS and cut.value is None
    assert 50 <= cut.steps < 200 and "adam" in cut.message
    # not behind: the same result as without the rule
    again = runner.evaluate(with_lr("adam", 1e-2), 0, prune=r)
    assert (again.status, again.value, again.steps) == (fast.status, fast.value, fast.steps)


def test_should_stop_is_false_without_a_rule_and_an_objective_may_prune_itself() -> None:
    seen = []

    def objective(trial):
        seen.append(trial.should_stop())
        raise TrialPruned("my own early stop")

    res = ObjectiveRunner(objective, name="x", steps=5).evaluate(seed_genome("adam"), 0)
    assert seen == [False] and res.status == "pruned" and "my own early stop" in res.message


# -- requests and workers ---------------------------------------------------------------------


def test_a_request_carries_its_rule_and_a_worker_passes_it_only_when_set() -> None:
    r = rule([1.0, 2.0]).to_dict()
    req = EvalRequest(key="k", genome=seed_genome("adam"), task={"name": "t"}, prune=r)
    assert EvalRequest.from_dict(req.to_dict()) == req and req.prune == r
    calls = []

    class Runner:  # a custom runner that predates pruning: no ``prune`` keyword
        def evaluate(self, genome, seed, split):
            calls.append(seed)
            return {"fitness": 0.5, "status": "ok"}

    class Pruning(Runner):
        def evaluate(self, genome, seed, split, prune=None):
            calls.append(prune)
            return {"fitness": 0.5, "status": "ok"}

    plain = EvalRequest(key="k", genome=seed_genome("adam"), task={"name": "t"}, seed=3)
    assert FitnessWorker(runner_factory=lambda t, d: Runner()).evaluate(plain)["status"] == "ok"
    FitnessWorker(runner_factory=lambda t, d: Pruning()).evaluate(req)
    assert calls == [3, r]


def test_the_pruning_section_is_validated_naming_the_field() -> None:
    base = {"campaign": {"name": "x"}}
    for table, field in (({"reference": "lion"}, "pruning.reference"),
                         ({"reference": "adam", "margin": -1}, "pruning.margin"),
                         ({"reference": "adam", "after": 1}, "pruning.after"),
                         ({"reference": "adam", "window": 0}, "pruning.window"),
                         ({"refrence": "adam"}, "pruning.refrence")):
        with pytest.raises(ConfigError, match=field):
            parse_config({**base, "pruning": table})
    assert not parse_config(base).pruning.enabled
    assert parse_config({**base, "pruning": {"reference": "adam"}}).pruning.enabled


# -- a real campaign --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from user_task_folder(tmp_path_factory, "pruning-task")


def run_micro(entry: str, out: Path, pruning: dict | None) -> dict:
    changes = {"variation": {"initial_random": 4}, "final": {"test_split": False,
                                                             "baselines": []}}
    if pruning is not None:
        changes["pruning"] = pruning
    with CampaignRunner(parse_config(micro_config(entry, **changes)), out) as runner:
        return runner.run()


@pytest.mark.parametrize("name", ["LinRegTask", "objective"])
def test_a_campaign_prunes_only_runs_behind_adam_and_counts_the_steps_they_ran(
        task_dir: Path, tmp_path: Path, name: str) -> None:
    """The same micro campaign (a task class: evoopt's loop and its training-loss curve; an
    objective: the losses it reports) with and without ``[pruning]``: the seeds are never
    pruned; a pruned run stops early as ``pruned`` with the worst fitness, after the steps it
    ran; in generation 0 (the same individuals in both campaigns) every run that was not
    pruned is bit-identical to its unpruned twin, and every pruned one was behind adam's run on
    the same seed by the rule."""
    entry = f"{task_dir / 'my_task.py'}:{name}"
    settings = {"reference": "adam", "margin": 0.0, "after": 0.25, "window": 2}
    run_micro(entry, tmp_path / "plain", None)
    summary = run_micro(entry, tmp_path / "pruned", settings)
    plain, pruned = evaluations(tmp_path / "plain"), evaluations(tmp_path / "pruned")
    with CampaignStore(tmp_path / "pruned", readonly=True) as store:
        individuals = {r["uid"]: r for r in store.individuals()}
        assert store.train_steps() == sum(e["steps"] for e in pruned)
    seeds = {u for u, r in individuals.items() if r["operator"] == "seed"}
    cut = [e for e in pruned if e["status"] == "pruned"]
    assert cut, "margin 0: some random genome should fall behind adam"
    steps = {"screen": 10, "full": 20}
    for e in cut:
        assert e["uid"] not in seeds and e["fitness"] == WORST_FITNESS
        assert e["steps"] < steps[e["stage"]] and "adam" in e["message"]
        assert individuals[e["uid"]]["status"] == "pruned"
    assert {individuals[e["uid"]]["status"] for e in cut} == {"pruned"}
    assert summary["winner"]["uid"] not in {e["uid"] for e in cut}
    from evoopt.report.html import write_report

    assert "individual (pruned)" in write_report(tmp_path / "pruned").read_text()

    key = {(e["hash"], e["stage"], e["seed"]): e for e in plain}
    adam_hash = seed_genome("adam").hash
    gen0 = {u for u, r in individuals.items() if r["generation"] == 0}
    checked = 0
    for e in pruned:
        if e["uid"] not in gen0 or e["stage"] != "screen":
            continue
        twin = key[(e["hash"], e["stage"], e["seed"])]
        if e["status"] != "pruned":
            assert (e["fitness"], e["steps"], e["status"]) == (
                twin["fitness"], twin["steps"], twin["status"])
            continue
        ref = key[(adam_hash, e["stage"], e["seed"])]
        r = PruneRule(tuple(ref["train_loss_curve"]), steps[e["stage"]], "minimize",
                      margin=0.0, after=0.25, window=2, label="adam")
        complete = len(bin_edges(steps[e["stage"]])) - 1
        verdicts = [r.verdict(twin["train_loss_curve"], k) for k in range(complete)]
        assert any(verdicts), (twin["train_loss_curve"], ref["train_loss_curve"])
        checked += 1
    assert checked >= 1

