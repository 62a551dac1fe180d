"""User tasks in real campaigns (issue 19, S6): a task module outside the package, in a tmp
folder (an objective function and a ``TrainingTask`` class), runs tiny campaigns on the serial
evaluator and on a local 2-worker Ray pool; a module only the driver has fails the Ray preflight
before any evaluation; ``make_evaluator`` wires ``hard_timeout_s``."""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import shutil
import statistics
import sys
import textwrap
import time
import tomllib
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evoopt.campaign import orchestrator
from evoopt.campaign.config import load_config, parse_config
from evoopt.campaign.orchestrator import CampaignRunner, make_evaluator
from evoopt.campaign.status import campaign_status
from evoopt.campaign.store import CampaignStore
from evoopt.campaign.tasks import CampaignTasks
from evoopt.evaluator import PreflightError, SerialEvaluator
from evoopt.fitness import load_task
from evoopt.fitness.entry import USER_PACKAGE, load_entry
from evoopt.fitness.runner import task_info
from evoopt.genome import Genome
from tests.conftest_campaign import with_changes

#: A user's task file: a synthetic linear regression (20 steps, minimised) as an objective
#: function, the same regression as a ``TrainingTask`` class, and helpers the CLI and API tests
#: use (an objective that raises on the test split).
TASK_SOURCE = '''
"""A user's synthetic linear-regression task, outside the evoopt package."""
from dataclasses import dataclass

import torch
from torch import nn

import evoopt


@evoopt.objective(direction="minimize", steps=20, seeds=1, time_limit_s=30,
                  params={"dim": 4, "noise": 0.1})
def objective(trial):
    return train(trial, trial.params["dim"], trial.params["noise"])


def train(trial, dim, noise):
    g = trial.generator("data")
    w_true = torch.randn(dim, 1, generator=g)
    model = nn.Linear(dim, 1)
    opt = trial.make_optimizer(model.parameters())
    for step in range(trial.total_steps):
        x = torch.randn(32, dim, generator=g)
        y = x @ w_true + noise * torch.randn(32, 1, generator=g)
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        trial.backward(loss)
        opt.step()
        trial.report(step, loss.item())
    xv = torch.randn(256, dim, generator=trial.generator(trial.split))
    with torch.no_grad():
        return ((model(xv) - xv @ w_true) ** 2).mean().item()


@evoopt.objective(direction="minimize", steps=20, seeds=1, time_limit_s=30)
def fails_on_test(trial):
    if trial.split == "test":
        raise ValueError("no test data in this recipe")  # FAILS_ON_TEST_LINE
    return train(trial, 4, 0.1)


def plain(trial):
    """An undecorated objective: maximised, the task's defaults."""
    return -train(trial, 4, 0.1)


@evoopt.objective(direction="minimize", steps=20, time_limit_s=30)
def raises(trial):
    raise RuntimeError("user bug here")  # RAISES_LINE


@dataclass(frozen=True)
class LinRegParams:
    dim: int = 4
    batch_size: int = 32
    val_size: int = 256


class LinRegTask(evoopt.TrainingTask):
    """The same regression as a task class: evoopt runs the training loop."""

    Params = LinRegParams
    direction = "minimize"
    reports_accuracy = False
    score_label = "val MSE"
    score_description = "the mean squared error on the scored split"
    loss_label = "loss (MSE)"
    task_defaults = {"steps": 20, "seeds": 1, "time_limit_s": 30}

    def __init__(self, params, ctx):
        super().__init__(params, ctx)
        g = torch.Generator().manual_seed(1234)
        self.w_true = torch.randn(params.dim, 1, generator=g)
        self.splits = {}
        for split in ("val", "test"):
            x = torch.randn(params.val_size, params.dim, generator=g)
            self.splits[split] = (x, x @ self.w_true)

    def build_model(self, generator):
        model = nn.Linear(self.params.dim, 1)
        with torch.no_grad():
            model.weight.copy_(torch.randn(model.weight.shape, generator=generator) * 0.1)
            model.bias.zero_()
        return model

    def train_batches(self, generator):
        while True:
            x = torch.randn(self.params.batch_size, self.params.dim, generator=generator)
            yield x, x @ self.w_true

    def split_data(self, split):
        return self.splits[split]

    def eval_batches(self, data):
        return [data]

    def train_loss(self, outputs, targets):
        return ((outputs.float() - targets) ** 2).mean()

    def score(self, data, outputs):
        sse, n = 0.0, 0
        for out, y in outputs:
            sse += float(((out.double() - y.double()) ** 2).sum())
            n += y.numel()
        return evoopt.Score(sse / n, loss=sse / n)
'''

#: A campaign-micro-sized campaign: 2 generations of 4, a half-budget screen then the full task
#: on 2 seeds, one final seed on val and test, Adam tuned on a 2-point grid.
MICRO_TOML = '''
[campaign]
name = "user-micro"
seed = 3
population = 4
generations = 2
seeds = ["adam", "adan"]

[selection]
method = "tournament"
tournament_size = 2
elitism = 1

[fitness]
task = "{task}"

[[stages]]
name = "screen"
seeds = [0]
overrides = {{ steps_fraction = 0.5 }}

[[stages]]
name = "full"
seeds = [0, 1]
hurdle = "median"

[final]
top_k = 1
seeds = [100]
compare = ["adam", "adan"]
test_split = true
baselines = ["adam"]
lr_factors = [0.5, 2.0]

[ray]
enabled = false
'''


#: The fitness axis of a minimised objective in the report (its label from the stored meta).
LABEL = "fitness = val the objective's loss (↓ better)"


def shows(label: str, page: str) -> bool:
    """Whether the report ``page`` shows ``label``: as text, or inside the figures' JSON,
    where plotly escapes non-ASCII (``\\u2193``) unless orjson is installed."""
    return label in page or json.dumps(label)[1:-1] in page


def line_of(marker: str) -> int:
    """The line of ``TASK_SOURCE`` (as written by :func:`write_task`) holding ``marker``."""
    lines = textwrap.dedent(TASK_SOURCE).splitlines()
    return next(i for i, text in enumerate(lines, 1) if marker in text)


def write_task(folder: Path, name: str = "my_task.py") -> Path:
    """Write the user's task file into ``folder``; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(TASK_SOURCE))
    return path


def micro_config(task: str, **changes: dict[str, Any]) -> dict[str, Any]:
    """The micro campaign as a dict selecting on ``task``, some sections' values changed
    (``stages`` replaced whole)."""
    return with_changes(tomllib.loads(MICRO_TOML.format(task=task)), changes)


@contextlib.contextmanager
def isolated_imports(*folders: Path) -> Iterator[None]:
    """Forget, on the way out, the modules loaded from ``folders`` (file entries, modules on
    ``sys.path``) and restore ``sys.path``."""
    saved_path, saved = list(sys.path), set(sys.modules)
    try:
        yield
    finally:
        sys.path[:] = saved_path
        roots = tuple(str(f) for f in folders)
        for name in set(sys.modules) - saved:
            file = getattr(sys.modules[name], "__file__", None) or ""
            if name.startswith(USER_PACKAGE + ".") or file.startswith(roots):
                del sys.modules[name]
        importlib.invalidate_caches()


def evaluations(directory: Path) -> list[dict[str, Any]]:
    with CampaignStore(directory, readonly=True) as store:
        return store.evaluations()


def squash(value: float) -> float:
    """``canonical_fitness`` of a minimised value without a range (0.5 / (1 + v) for v >= 0)."""
    return 0.5 / (1.0 + value) if value >= 0 else 1.0 - 0.5 / (1.0 - value)


def check_user_values(evals: list[dict[str, Any]]) -> None:
    """Every ok evaluation stores the user's (minimised) value, and its fitness is that value
    squashed; failed ones store none."""
    ok = [e for e in evals if e["status"] == "ok"]
    assert len(evals) > 10 and len(ok) >= len(evals) // 2
    for e in ok:
        assert isinstance(e["value"], float) and math.isfinite(e["value"]) and e["value"] > 0
        assert e["fitness"] == pytest.approx(squash(e["value"]), rel=1e-12)
        assert e["val_accuracy"] is None
    for e in evals:
        if e["status"] != "ok":
            assert e["value"] is None


def direct_value(task: str, genome: str, seed: int, split: str = "val") -> float:
    """The value evaluating ``genome`` on ``task`` in this process gives."""
    from evoopt.fitness import load_task, make_runner
    from evoopt.genome import seed_genome

    result = make_runner(load_task(task)).evaluate(seed_genome(genome), seed, split)
    assert result.status == "ok", result.message
    return float(result.value)


def check_export(directory: Path, summary: dict[str, Any], task: str) -> None:
    """The exported optimizer class, run through the user's objective, reproduces the winner's
    stored value on its final seed."""
    import torch

    from evoopt.fitness import load_task, make_runner
    from evoopt.genome.export import load_exported_class

    winner = summary["winner"]
    cls = load_exported_class((directory / "best_optimizer.py").read_text(), winner["class_name"])
    assert issubclass(cls, torch.optim.Optimizer)
    with CampaignStore(directory, readonly=True) as store:
        genome = Genome.from_dict(store.get_individual(winner["uid"])["genome"])
    scheduled = genome.has_schedule

    def make(params: Any, total_steps: int) -> torch.optim.Optimizer:
        return cls(params, total_steps=total_steps) if scheduled else cls(params)

    result = make_runner(load_task(task)).evaluate_with(make, seed=100, split="val")
    stored = [e for e in evaluations(directory)
              if e["hash"] == winner["hash"] and e["seed"] == 100 and e["split"] == "val"]
    assert result.status == "ok" and stored and stored[0]["status"] == "ok"
    assert result.value == pytest.approx(stored[0]["value"], rel=1e-4)


def user_task_folder(factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """A new folder outside the package holding the user's ``my_task.py`` (not on
    ``sys.path``), its imports undone afterwards: the body of a ``task_dir`` fixture."""
    folder = factory.mktemp(name)
    write_task(folder)
    with isolated_imports(folder):
        yield folder


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder outside the package holding the user's ``my_task.py``."""
    yield from user_task_folder(tmp_path_factory, "user-task")


# -- make_evaluator ---------------------------------------------------------------------------


class _RecordingRay:
    """Stands in for RayEvaluator: records its arguments, starts nothing."""

    def __init__(self, **kw: Any) -> None:
        self.kw = kw


def test_make_evaluator_wires_the_hard_timeout_from_every_task(
        task_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``hard_timeout_s = 2 x max(time_limit_s) + 60`` over every stage's task and every
    held-out task; an explicit ``tasks`` is used instead of loading the config's; serial gets
    no pool."""
    held = task_dir / "held.toml"
    held.write_text('entry = "./my_task.py:LinRegTask"\ntime_limit_s = 50\n')
    data = micro_config(f"{task_dir / 'my_task.py'}:objective", ray={"enabled": True},
                        final={"heldout_tasks": [str(held)]})
    data["stages"][1]["overrides"] = {"time_limit_s": 45}
    config = parse_config(data)
    monkeypatch.setattr(orchestrator, "RayEvaluator", _RecordingRay)
    made = make_evaluator(config, None)
    assert made.kw["hard_timeout_s"] == 2 * 50 + 60
    assert made.kw["num_workers"] is None and made.kw["cpus_per_worker"] == 1.0
    # without the held-out task: the full stage's 45 s is the longest
    final = {k: v for k, v in data["final"].items() if k != "heldout_tasks"}
    plain = parse_config({**data, "final": final})
    assert make_evaluator(plain, None).kw["hard_timeout_s"] == 2 * 45 + 60
    # given tasks are the ones measured (here the plain campaign's, for the held-out config)
    given = make_evaluator(config, None, tasks=CampaignTasks.load(plain))
    assert given.kw["hard_timeout_s"] == 2 * 45 + 60
    assert isinstance(make_evaluator(config, None, serial=True), SerialEvaluator)


# -- serial campaigns -------------------------------------------------------------------------


def test_objective_campaign_from_a_toml_relative_to_it_on_the_serial_evaluator(
        task_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``[fitness] task = "./my_task.py:objective"`` resolves against the campaign file, not the
    cwd; the campaign runs to the end, stores the user's values, exports a winner that
    reproduces its value, and its report renders (also once the task file is gone)."""
    from evoopt.report.html import write_report

    folder = tmp_path / "campaign"
    write_task(folder)
    toml = folder / "campaign.toml"
    toml.write_text(MICRO_TOML.format(task="./my_task.py:objective"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    entry = f"{folder / 'my_task.py'}:objective"
    with isolated_imports(folder):
        config = load_config(toml)
        assert config.fitness.task == entry
        out = tmp_path / "out"
        with CampaignRunner(config, out) as runner:
            summary = runner.run()
        assert not (elsewhere / "my_task.py").exists() and not list(elsewhere.iterdir())

        evals = evaluations(out)
        assert summary["evaluations_done"] == len(evals) > 10
        assert {e["worker"].split(":pid")[0] for e in evals} == {"serial"}
        check_user_values(evals)
        # the stored value is what the objective returns for that genome and seed
        adam = next(r for r in summary["comparison"] if r["name"] == "adam")
        full0 = next(e for e in evals if e["uid"] == adam["uid"] and e["stage"] == "full"
                     and e["seed"] == 0)
        assert full0["value"] == direct_value(entry, "adam", 0)
        assert full0["steps"] == 20
        screen = next(e for e in evals if e["uid"] == adam["uid"] and e["stage"] == "screen")
        assert screen["steps"] == 10  # steps_fraction 0.5 of the task's 20
        # the comparison reports the user's value beside fitness: mean over the final seeds
        finals = [e["value"] for e in evals if e["uid"] == adam["uid"] and e["stage"] == "final"
                  and e["split"] == "val"]
        assert finals and adam["value_mean"] == pytest.approx(statistics.mean(finals))
        assert adam["fitness_mean"] == pytest.approx(squash(adam["value_mean"]))
        assert summary["winner"]["uid"] and summary["exported"] == "best_optimizer.py"
        check_export(out, summary, entry)
        with CampaignStore(out, readonly=True) as store:
            assert store.get_meta("state") == "finished"
            info = store.get_meta("task_info")[entry]
        assert info["direction"] == "minimize" and info["entry"] == entry
        assert {k: v for k, v in info.items() if k != "name"} == task_info(load_task(entry))

    page = write_report(out).read_text()
    assert summary["winner"]["uid"] in page and shows(LABEL, page)
    (folder / "my_task.py").unlink()  # the report reads the task's labels from the store
    again = write_report(out, tmp_path / "again.html").read_text()
    assert shows(LABEL, again)


@pytest.mark.parametrize(("name", "direction"), [("objective", "minimize"),
                                                  ("plain", "maximize")])
def test_an_objective_describes_its_direction_in_words(task_dir: Path, name: str,
                                                       direction: str) -> None:
    """The default score description of an objective names its direction as a word (what the
    report and the stored ``task_info`` show)."""
    spec = load_task(f"{task_dir / 'my_task.py'}:{name}")
    assert spec.direction == direction
    description = task_info(spec)["score_description"]
    assert description.endswith(f"to {direction})"), description


def test_training_task_class_campaign_on_the_serial_evaluator(task_dir: Path,
                                                              tmp_path: Path) -> None:
    """The ``TrainingTask`` form: evoopt's loop, the class's score as the stored value."""
    from evoopt.report.html import write_report

    entry = f"{task_dir / 'my_task.py'}:LinRegTask"
    config = parse_config(micro_config(entry, final={"test_split": False, "baselines": []}))
    out = tmp_path / "class"
    with CampaignRunner(config, out) as runner:
        summary = runner.run()
    evals = evaluations(out)
    check_user_values(evals)
    ok = [e for e in evals if e["status"] == "ok"]
    assert all(e["val_loss"] == pytest.approx(e["value"]) for e in ok)
    assert {e["steps"] for e in ok if e["stage"] == "full"} == {20}
    with CampaignStore(out, readonly=True) as store:
        info = store.get_meta("task_info")[entry]
    assert (info["score_label"], info["direction"]) == ("val MSE", "minimize")
    assert (out / "best_optimizer.py").is_file() and summary["winner"]["class_name"]
    assert "val MSE" in write_report(out).read_text()


# -- Ray --------------------------------------------------------------------------------------


def test_objective_campaign_on_a_local_ray_pool_of_two(task_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner's own 2-worker Ray pool: outcomes from both actors, the user's values (the
    same as in this process), the hard timeout wired from the longest stage limit."""
    import ray

    from evoopt.report.html import write_report

    entry = f"{task_dir / 'my_task.py'}:objective"
    data = micro_config(entry, ray={"enabled": True, "num_workers": 2, "cpus_per_worker": 1},
                        final={"test_split": False, "baselines": []})
    data["stages"][1]["overrides"] = {"time_limit_s": 45}
    made: list[Any] = []

    def spy(*args: Any, **kw: Any) -> Any:
        made.append(make_evaluator(*args, **kw))
        return made[-1]

    monkeypatch.setattr(orchestrator, "make_evaluator", spy)
    out = tmp_path / "ray"
    with CampaignRunner(parse_config(data), out) as runner:
        summary = runner.run()
    assert not ray.is_initialized()  # the pool's own instance, shut down
    assert len(made) == 1 and made[0].hard_timeout_s == 2 * 45 + 60

    evals = evaluations(out)
    workers = {e["worker"].split(":pid")[0] for e in evals}
    assert len(workers) == 2 and all(w.startswith("ray:") for w in workers), workers
    assert {e["threads"] for e in evals} == {1}
    assert summary["evaluations_done"] == len(evals)
    check_user_values(evals)
    adam = next(r for r in summary["comparison"] if r["name"] == "adam")
    full0 = next(e for e in evals if e["uid"] == adam["uid"] and e["stage"] == "full"
                 and e["seed"] == 0)
    assert full0["value"] == pytest.approx(direct_value(entry, "adam", 0), rel=1e-5)
    assert (out / "best_optimizer.py").is_file()
    check_export(out, summary, entry)
    assert summary["winner"]["uid"] in write_report(out).read_text()


@pytest.fixture(scope="module")
def driver_only_failure(task_dir: Path, tmp_path_factory: pytest.TempPathFactory
                        ) -> Iterator[dict[str, Any]]:
    """A campaign on a module only this process has (a ``sys.modules`` entry, no file) run on
    the runner's own 2-worker Ray pool; what came of it."""
    import ray

    name = f"evoopt_driver_only_{uuid.uuid4().hex[:8]}"
    module = types.ModuleType(name)
    module.objective = load_entry(f"{task_dir / 'my_task.py'}:objective")  # type: ignore[attr-defined]
    sys.modules[name] = module
    out = tmp_path_factory.mktemp("driver-only") / "c"
    made: list[Any] = []

    def spy(*args: Any, **kw: Any) -> Any:
        made.append(make_evaluator(*args, **kw))
        return made[-1]

    data = micro_config(f"{name}:objective", ray={"enabled": True, "num_workers": 2})
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(orchestrator, "make_evaluator", spy)
            config = parse_config(data)
            with pytest.raises(PreflightError) as caught, CampaignRunner(config, out) as runner:
                runner.run()
        pids = [w["pid"] for w in made[0].workers()] if made else []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        yield {"error": caught.value, "name": name, "out": out, "evaluator": made,
               "tasks": CampaignTasks.load(config).task_dicts(),
               "pids": pids, "ray_up": ray.is_initialized()}
    finally:
        sys.modules.pop(name, None)
        if out.exists():
            shutil.rmtree(out)


def _alive(pid: int | None) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    if pid is None:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_a_module_only_the_driver_has_fails_the_ray_preflight(
        driver_only_failure: dict[str, Any]) -> None:
    """Every worker reports the missing module (naming it and itself) before any evaluation;
    nothing is stored as evaluated and no actor outlives the failure."""
    error, name = driver_only_failure["error"], driver_only_failure["name"]
    assert name in str(error) and "ray:" in str(error) and "No evaluation was run" in str(error)
    tasks = driver_only_failure["tasks"]
    assert len(tasks) == 2  # the screen's half-budget task and the full one
    assert len(error.problems) == 2 * len(tasks)  # every task, on each worker
    labels = {p.split(" on worker ")[1].split()[0] for p in error.problems}
    assert len(labels) == 2 and all(lab.startswith("ray:") for lab in labels)
    assert all(name in p and "not found" in p for p in error.problems)
    with CampaignStore(driver_only_failure["out"], readonly=True) as store:
        assert store.evaluations() == [] and store.individuals() == []
        assert store.generations() == []
    assert len(driver_only_failure["evaluator"]) == 1
    assert driver_only_failure["evaluator"][0]._closed
    assert not driver_only_failure["ray_up"]
    pids = driver_only_failure["pids"]
    assert len(pids) == 2 and not [p for p in pids if _alive(p)], pids


def test_a_failed_preflight_leaves_the_campaign_directory_reusable(
        driver_only_failure: dict[str, Any]) -> None:
    """A campaign whose workers cannot import its task never started: like a data check that
    fails, it must not leave a store claiming a running (or resumable) campaign, so that
    ``evoopt run`` may start it again in the same directory once the task is fixed."""
    out = driver_only_failure["out"]
    with CampaignStore(out, readonly=True) as store:
        state, config = store.get_meta("state"), store.get_meta("config")
    assert (state, config is None) != ("running", False), (
        f"after the preflight failure the store says state={state!r} with its config stored")
    assert campaign_status(out)["state"] == "not started"



# ------------------------------------------------------------------ shipping to cluster workers
def test_user_code_env_ships_the_folder_of_every_task_file(tmp_path: Path) -> None:
    from evoopt.campaign.orchestrator import user_code_env
    from evoopt.fitness.entry import ENTRY_ROOT_VAR

    a, b = write_task(tmp_path / "tasks" / "a"), write_task(tmp_path / "tasks" / "b")
    env = user_code_env([{"entry": f"{a}:objective"}, {"entry": f"{b}:plain"},
                         {"entry": "json:dumps"}, {"entry": None, "dataset": "cifar10"}])
    root = str((tmp_path / "tasks").resolve())
    assert env == {"working_dir": root, "env_vars": {ENTRY_ROOT_VAR: root}}
    assert user_code_env([{"entry": "json:dumps"}, {"dataset": "cifar10"}]) is None


def test_a_ray_worker_reads_a_task_file_from_its_shipped_working_dir(tmp_path: Path) -> None:
    """The entry names a folder the workers do not have (as on a cluster's other machines);
    the file reaches them in Ray's ``working_dir`` and loads from there, with the same value
    as in this process."""
    from evoopt.evaluator import EvalRequest, RayEvaluator
    from evoopt.fitness.entry import ENTRY_ROOT_VAR
    from evoopt.genome import seed_genome

    shipped = tmp_path / "shipped"
    path = write_task(shipped)
    with isolated_imports(shipped):
        task = load_task(f"{path}:objective").with_overrides(steps=5).to_dict()
        expected = make_runner_value(task)
    elsewhere = "/nonexistent-driver-folder"  # the driver's folder, absent on the worker
    task["entry"] = f"{elsewhere}/my_task.py:objective"
    ev = RayEvaluator(num_workers=1, cpus_per_worker=1, runtime_env={
        "working_dir": str(shipped), "env_vars": {ENTRY_ROOT_VAR: elsewhere}})
    try:
        ev.preflight([task])
        [out] = ev.evaluate_all([EvalRequest("k", seed_genome("adam").to_dict(), task, seed=0)])
    finally:
        ev.close()
    assert out.result["status"] == "ok", out.result["message"]
    assert out.result["value"] == expected


def make_runner_value(task: dict[str, Any]) -> float:
    """The value of adam on ``task`` (a dict), seed 0, evaluated in this process."""
    from evoopt.fitness import TaskSpec, make_runner
    from evoopt.genome import seed_genome

    result = make_runner(TaskSpec.from_dict(task)).evaluate(seed_genome("adam"), 0)
    assert result.status == "ok", result.message
    return float(result.value)


def test_a_mix_of_user_tasks_is_normalised_against_the_seeded_adam(task_dir: Path,
                                                                   tmp_path: Path) -> None:
    """Two user tasks of opposite directions (a loss to minimise, a score to maximise) selected
    on together: each evaluation's fitness is the weighted mean of each task's fitness over the
    seeded Adam's on the same seed, minus 1, exactly as for the built-in mixes."""
    path = task_dir / "my_task.py"
    minimised, maximised = f"{path}:objective", f"{path}:plain"
    data = micro_config(minimised)
    data["fitness"] = {"tasks": [minimised, maximised], "weights": [1.0, 3.0]}
    out = tmp_path / "mix"
    with CampaignRunner(parse_config(data), out) as runner:
        summary = runner.run()
    evals = evaluations(out)
    names = [load_task(minimised).name, load_task(maximised).name]
    reference = {(e["stage"], e["seed"], e["split"]): e for e in evals
                 if e["uid"] == next(r["uid"] for r in summary["comparison"]
                                     if r["name"] == "adam")}
    checked = 0
    for e in evals:
        ref = reference.get((e["stage"], e["seed"], e["split"]))
        if e["status"] != "ok" or ref is None:
            continue
        assert e["value"] is None and set(e["tasks"]) == set(names)  # a mix has no one value
        expected = sum(w * (e["tasks"][n]["fitness"] / ref["tasks"][n]["fitness"] - 1)
                       for n, w in zip(names, (1.0, 3.0), strict=True)) / 4.0
        assert e["fitness"] == pytest.approx(expected, rel=1e-12, abs=1e-15)
        assert e["tasks"][names[0]]["fitness"] == pytest.approx(
            squash(e["tasks"][names[0]]["value"]), rel=1e-12)
        checked += 1
    assert checked > 5 and summary["winner"]["uid"]
