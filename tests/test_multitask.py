"""Multi-task fitness and held-out transfer: the aggregation, the config, the store, and a real
multi-task campaign (two selection tasks, one held out) killed with SIGKILL and resumed."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from evoopt.campaign.config import ConfigError, parse_config
from evoopt.campaign.finish import search_paid, transfer_verdict
from evoopt.campaign.store import CampaignStore
from evoopt.fitness import WORST_FITNESS, load_task
from evoopt.fitness.data import DataError, find_batches_dir
from evoopt.fitness.multitask import TaskMix, combine
from evoopt.genome import seed_genome
from tests.conftest_campaign import run_killed_after_first_generation, tiny_config

CIFAR, CHARS = load_task("cifar10-tiny"), load_task("shakespeare-char-cpu")
MIX = TaskMix((CIFAR, CHARS), (1.0, 3.0))


def _result(fitness: float, status: str = "ok", **kw: object) -> dict:
    return {"fitness": fitness, "status": status, "message": "" if status == "ok" else "boom",
            "val_accuracy": 0.5, "val_loss": 1.0, "steps": 10, "wall_time_s": 1.5,
            "seed": 0, "split": "val", **kw}


def test_combine_weights_each_task_relative_to_the_reference() -> None:
    results = {"cifar10-tiny": _result(0.44), "shakespeare-char-cpu": _result(0.42)}
    row = combine(MIX, results, {"cifar10-tiny": 0.40, "shakespeare-char-cpu": 0.40})
    assert row["status"] == "ok"
    assert row["fitness"] == pytest.approx((1 * 0.1 + 3 * 0.05) / 4)
    assert row["tasks"]["cifar10-tiny"]["fitness"] == 0.44  # each task's own score is kept
    assert row["steps"] == 20 and row["wall_time_s"] == 3.0 and row["val_accuracy"] is None
    # the reference itself scores exactly 0
    assert combine(MIX, results, {n: r["fitness"] for n, r in results.items()})["fitness"] == 0


def test_a_failure_on_any_task_fails_the_evaluation() -> None:
    results = {"cifar10-tiny": _result(0.9), "shakespeare-char-cpu": _result(-1.0, "diverged")}
    row = combine(MIX, results, None)  # no reference needed for a failure
    assert row["fitness"] == WORST_FITNESS and row["status"] == "diverged"
    assert "shakespeare-char-cpu: diverged" in row["message"]


def test_combine_refuses_what_it_cannot_normalise() -> None:
    results = {"cifar10-tiny": _result(0.4), "shakespeare-char-cpu": _result(0.4)}
    with pytest.raises(ValueError, match="reference"):
        combine(MIX, results, None)
    with pytest.raises(ValueError, match="shakespeare-char-cpu: the reference fitness must be"):
        combine(MIX, results, {"cifar10-tiny": 0.4, "shakespeare-char-cpu": 0.0})
    with pytest.raises(ValueError, match="no result for task"):
        combine(MIX, {"cifar10-tiny": _result(0.4)}, None)
    one = TaskMix.single(CIFAR)
    assert combine(one, {"cifar10-tiny": _result(0.4)})["fitness"] == 0.4  # unchanged


@pytest.mark.parametrize("tasks, weights, message", [
    ((), (), "at least one task"),
    ((CIFAR, CHARS), (1.0,), "one weight per task"),
    ((CIFAR, CHARS), (1.0, 0.0), "positive"),
    ((CIFAR, CIFAR), (1.0, 1.0), "repeat"),
])
def test_task_mix_rejects_bad_mixes(tasks: tuple, weights: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TaskMix(tasks, weights)


MULTI_ERRORS = [
    ({"fitness": {"task": "cifar10-tiny", "tasks": ["cifar10-tiny", "cifar10-cpu"]}},
     "fitness.tasks: give fitness.task (one task) or fitness.tasks (several), not both"),
    ({"fitness": {"tasks": ["cifar10-tiny", "nope"]}}, "fitness.tasks[1]: unknown task 'nope'"),
    ({"fitness": {"tasks": ["cifar10-tiny", "cifar10-tiny"]}}, "fitness.tasks: names repeat"),
    ({"fitness": {"tasks": ["cifar10-tiny", "cifar10-cpu"], "weights": [1.0]}},
     "fitness.weights: expected one positive weight per task"),
    ({"fitness": {"tasks": ["cifar10-tiny", "cifar10-cpu"], "weights": [1.0, -2.0]}},
     "fitness.weights: expected one positive weight per task"),
    ({"fitness": {"weights": [1.0]}}, "fitness.weights: weights are for several tasks"),
    ({"final": {"heldout_tasks": ["cifar10-tiny"]}},
     "final.heldout_tasks[0]: 'cifar10-tiny' is selected on"),
    ({"final": {"heldout_tasks": ["vit-nope"]}}, "final.heldout_tasks[0]: unknown task"),
    ({"final": {"heldout_tasks": []}}, "final.heldout_tasks: expected a non-empty list"),
]


@pytest.mark.parametrize("changes, message", MULTI_ERRORS)
def test_multi_task_config_errors_name_the_field(changes: dict, message: str) -> None:
    base = tiny_config()
    for section, values in changes.items():
        table = dict(base.get(section, {}))
        if "tasks" in values and "task" not in values:
            table.pop("task", None)
        base[section] = {**table, **values}
    with pytest.raises(ConfigError, match=None) as err:
        parse_config(base, "c.toml")
    assert message in str(err.value)


def test_shipped_multitask_campaign_parses() -> None:
    from evoopt.campaign.config import load_config

    cfg = load_config("discover-multitask-cpu")
    assert len(cfg.selection_tasks) == 2 and cfg.final.heldout_tasks
    assert not set(cfg.selection_tasks) & set(cfg.final.heldout_tasks)


def test_a_data_folder_of_several_datasets_is_searched_one_level_down(
        tmp_path: Path, data_dir: Path) -> None:
    batches = data_dir / "cifar-10-batches-py"
    (tmp_path / "cifar10-mini").mkdir()
    (tmp_path / "cifar10-mini" / "cifar-10-batches-py").symlink_to(batches)
    assert find_batches_dir(tmp_path) == batches.resolve()
    (tmp_path / "another").mkdir()
    (tmp_path / "another" / "cifar-10-batches-py").symlink_to(batches)
    with pytest.raises(DataError, match="several CIFAR-10 copies"):
        find_batches_dir(tmp_path)


def test_transfer_verdict_counts_the_val_verdicts() -> None:
    v = [{"split": "val", "verdict": "better"}, {"split": "val", "verdict": "indistinguishable"},
         {"split": "test", "verdict": "worse"}]
    assert transfer_verdict(v).startswith("transfers: better than 1 of 2")
    assert transfer_verdict(v, "test").startswith("does not transfer: worse than 1 of 1")
    assert transfer_verdict(v[1:2]).startswith("transfers only as well")


# -- a real multi-task campaign -----------------------------------------------------------------
SMALL_CHARS = """name = "chars-small"
dataset = "shakespeare_char"
model = "transformer"
layers = 1
width = 32
heads = 2
context = 32
val_size = 40
steps = 12
batch_size = 16
eval_batch_size = 40
threads = 1
device = "cpu"
"""
SMALL_VIT = """name = "vit-small"
dataset = "cifar10"
model = "vit"
image_size = 16
patch_size = 4
layers = 1
width = 32
heads = 2
train_size = 512
val_size = 200
steps = 15
batch_size = 64
eval_batch_size = 500
threads = 1
device = "cpu"
"""


def _multitask_setup(tmp_path: Path, data_dir: Path, text_dir: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"  # one folder holding both datasets, each in its own folder
    data.mkdir()
    (data / "cifar10-mini").symlink_to(data_dir)
    (data / "tinyshakespeare").symlink_to(text_dir)
    (tmp_path / "chars-small.toml").write_text(SMALL_CHARS)
    (tmp_path / "vit-small.toml").write_text(SMALL_VIT)
    config = tmp_path / "multi.toml"
    config.write_text(f"""
[campaign]
name = "multi"
seed = 2
population = 4
generations = 2
seeds = ["adam", "adan", "lion"]

[variation]
lr_screen = [3.0]

[fitness]
tasks = ["cifar10-tiny", "{tmp_path / 'chars-small.toml'}"]
weights = [1.0, 2.0]
overrides = {{ steps = 10 }}

[[stages]]
name = "screen"
seeds = [0]

[[stages]]
name = "full"
seeds = [0, 1]
hurdle = "median"

[final]
top_k = 2
seeds = [100, 101]
selection_seeds = [200]
compare = ["adam", "adan"]
baselines = ["adam"]
lr_factors = [0.5, 2.0]
heldout_tasks = ["{tmp_path / 'vit-small.toml'}"]

[ray]
enabled = false
""")
    return config, data


def _fingerprint(directory: Path) -> tuple[list, list]:
    with CampaignStore(directory, readonly=True) as store:
        individuals = sorted((r["uid"], r["hash"], r["fitness"], r["status"])
                             for r in store.individuals())
        evaluations = sorted((e["hash"], e["stage"], e["seed"], e["split"], e["fitness"],
                              tuple(sorted((n, t["fitness"], t["status"])  # not the timings
                                           for n, t in (e["tasks"] or {}).items())))
                             for e in store.evaluations())
    return individuals, evaluations


def test_multi_task_campaign_scores_resumes_and_reports_transfer(
        tmp_path: Path, data_dir: Path, text_dir: Path) -> None:
    config, data = _multitask_setup(tmp_path, data_dir, text_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "evoopt"]
    straight = tmp_path / "straight"
    done = subprocess.run([*base, "run", str(config), "--out", str(straight), "--serial",
                           "--data-dir", str(data)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "held-out vit-small: the winner" in done.stdout

    with CampaignStore(straight, readonly=True) as store:
        evaluations = store.evaluations()
        summary = store.get_meta("summary")
        adam = seed_genome("adam").hash
        search = [e for e in evaluations if e["stage"] in ("screen", "full")
                  and not e["uid"].startswith("baseline:")]  # the baselines' sweeps run there
        # every search evaluation ran both tasks; the reference scores exactly 0
        assert search and all(set(e["tasks"]) == {"cifar10-tiny", "chars-small"}
                              for e in search)
        reference = {(e["stage"], e["seed"], e["split"]): e["tasks"] for e in evaluations
                     if e["hash"] == adam and e["tasks"]}
        assert all(e["fitness"] == 0.0 for e in evaluations if e["hash"] == adam and e["tasks"])
        checked = 0
        for e in evaluations:
            if e["tasks"] and e["status"] == "ok" and e["hash"] != adam:
                ref = reference[(e["stage"], e["seed"], e["split"])]
                want = (1.0 * (e["tasks"]["cifar10-tiny"]["fitness"]
                               / ref["cifar10-tiny"]["fitness"] - 1)
                        + 2.0 * (e["tasks"]["chars-small"]["fitness"]
                                 / ref["chars-small"]["fitness"] - 1)) / 3.0
                assert math.isclose(e["fitness"], want, rel_tol=1e-12, abs_tol=1e-15)
                checked += 1
        assert checked >= 10
        # the held-out task: its own fitness, never in the search's budget
        held = [e for e in evaluations if e["stage"] == "heldout:vit-small"]
        assert held and all(e["tasks"] is None for e in held)
        assert search_paid(store) == len(search)
    [transfer] = summary["heldout"]
    assert [r["name"] for r in transfer["rows"]] == ["winner (lr tuned)", "adam (tuned)"]
    assert {v["split"] for v in transfer["verdicts"]} == {"val", "test"}
    assert transfer["transfer"].split(":")[0] in ("transfers", "does not transfer",
                                                  "transfers only as well")
    winner_row = summary["comparison"][0]
    assert set(winner_row["tasks"]) == {"cifar10-tiny", "chars-small"}

    report = subprocess.run([*base, "report", str(straight)], env=env, capture_output=True,
                            text=True)
    assert report.returncode == 0, report.stderr
    html = (straight / "report.html").read_text()
    assert "Held-out transfer" in html and "vit-small" in html and "Per task" in html

    # killed mid-search with SIGKILL, resumed: the same campaign, no finished evaluation lost
    killed = tmp_path / "killed"
    code = run_killed_after_first_generation(
        [*base, "run", str(config), "--out", str(killed), "--serial", "--data-dir", str(data)],
        killed, env)
    assert code == -signal.SIGKILL, "the campaign ended before it could be killed"
    before = _fingerprint(killed)[1]
    resumed = subprocess.run([*base, "resume", str(killed), "--serial"], env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _fingerprint(killed)
    assert set(before) <= set(after[1]), "a finished evaluation was lost"
    assert after == _fingerprint(straight)


def test_a_stage_can_scale_each_tasks_own_steps() -> None:
    """``steps_fraction`` screens every task of a mix at the same fraction of its own steps
    (an absolute ``steps`` would cut a 1000-step task to a CNN's 75); bad values name it."""
    from evoopt.fitness import TaskError, load_task
    from evoopt.fitness.multitask import TaskMix

    mix = TaskMix((load_task("cifar10-cpu"), load_task("teacher-mlp-cpu")), (1.0, 1.0))
    half = mix.with_overrides(steps_fraction=0.5)
    assert [t.steps for t in half.tasks] == [75, 500]
    assert [t.steps for t in mix.with_overrides(steps=75).tasks] == [75, 75]
    for bad in (0, 1.5, "x", True):
        with pytest.raises(TaskError, match="steps_fraction"):
            mix.with_overrides(steps_fraction=bad)
    with pytest.raises(TaskError, match="not both"):
        mix.with_overrides(steps_fraction=0.5, steps=10)
