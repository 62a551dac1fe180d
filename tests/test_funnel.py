"""The finish's funnel: finalists, in selection rank order, must not be significantly worse than
tuned AdamW-cosine on any held-out task before one is named the winner. The decision logic on
constructed comparisons, the config, the CLI and report views, and a small real campaign (the
CIFAR-10 tiny task selected on, a teacher–student regression task held out)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from evoopt.campaign.config import ConfigError, parse_config
from evoopt.campaign.finish import (
    FUNNEL_NONE_PASSED,
    FUNNEL_PASSED,
    funnel_outcome,
    funnel_task_check,
    run_funnel,
)
from evoopt.campaign.orchestrator import CampaignRunner
from evoopt.campaign.store import CampaignStore
from evoopt.evaluator import SerialEvaluator
from evoopt.genome import seed_genome
from tests.conftest_campaign import tiny_config

REF = [0.80, 0.81, 0.79, 0.80]


# -- the decision, on constructed comparisons ---------------------------------------------------
def _finalist(uid: str, per_task: dict[str, list[float]]) -> dict[str, Any]:
    checks = {t: funnel_task_check(scores, REF) for t, scores in per_task.items()}
    return {"uid": uid, "tasks": checks, "passed": all(c["passed"] for c in checks.values())}


def test_a_task_check_fails_only_when_significantly_worse() -> None:
    worse = funnel_task_check([0.70, 0.72, 0.69, 0.71], REF)
    assert worse["verdict"] == "worse" and not worse["passed"]
    assert worse["mean_diff"] == pytest.approx(-0.095) and worse["paired_se"] > 0
    assert worse["fitness_mean"] == pytest.approx(0.705)
    assert worse["reference_fitness_mean"] == pytest.approx(0.80)
    # slightly lower but within 2 paired SE: indistinguishable, passes
    close = funnel_task_check([0.80, 0.79, 0.80, 0.79], REF)
    assert close["verdict"] == "indistinguishable" and close["passed"]
    better = funnel_task_check([0.85, 0.86, 0.84, 0.86], REF)
    assert better["verdict"] == "better" and better["passed"]


def test_a_finalist_worse_on_one_task_is_skipped() -> None:
    good = [0.85, 0.86, 0.84, 0.86]
    bad = [0.70, 0.72, 0.69, 0.71]
    examined = [_finalist("f1", {"t1": good, "t2": bad}),   # wins one task, loses the other
                _finalist("f2", {"t1": REF, "t2": good})]
    assert [f["passed"] for f in examined] == [False, True]
    assert funnel_outcome(examined) == (1, FUNNEL_PASSED)
    assert funnel_outcome(examined[1:]) == (0, FUNNEL_PASSED)


def test_when_none_passes_the_best_ranked_is_flagged() -> None:
    bad = [0.70, 0.72, 0.69, 0.71]
    examined = [_finalist("f1", {"t1": bad}), _finalist("f2", {"t1": bad})]
    assert funnel_outcome(examined) == (0, FUNNEL_NONE_PASSED)
    with pytest.raises(ValueError, match="no finalist"):
        funnel_outcome([])


# -- the config ---------------------------------------------------------------------------------
def test_the_funnel_is_on_by_default_with_heldout_tasks() -> None:
    assert not parse_config(tiny_config()).funnel  # no held-out task: no funnel
    held = {"heldout_tasks": ["teacher-mlp-heldout-cpu"]}
    assert parse_config(tiny_config(final=held)).funnel
    assert not parse_config(tiny_config(final={**held, "funnel": False})).funnel
    with pytest.raises(ConfigError, match="final.funnel: .*heldout_tasks"):
        parse_config(tiny_config(final={"funnel": True}))
    with pytest.raises(ConfigError, match="final.funnel: expected true/false"):
        parse_config(tiny_config(final={**held, "funnel": "yes"}))


# -- the CLI and report views -------------------------------------------------------------------
def _record(outcome: str) -> dict[str, Any]:
    bad = [0.70, 0.72, 0.69, 0.71]
    f1 = {**_finalist("g1-01", {"held": bad}), "rank": 0, "lost_on": ["held"],
          "selection_fitness": 0.5}
    f2 = {**_finalist("g1-02", {"held": REF if outcome == FUNNEL_PASSED else bad}), "rank": 1,
          "selection_fitness": 0.4}
    f2["lost_on"] = [] if f2["passed"] else ["held"]
    winner = f2 if outcome == FUNNEL_PASSED else f1
    return {"reference": "adamw-cosine", "tasks": ["held"], "outcome": outcome,
            "winner_uid": winner["uid"], "winner_rank": winner["rank"],
            "finalists": [f1, f2], "not_examined": ["g1-03"] if f2["passed"] else []}


@pytest.mark.parametrize("outcome", [FUNNEL_PASSED, FUNNEL_NONE_PASSED])
def test_cli_and_report_say_what_the_funnel_did(outcome: str,
                                                capsys: pytest.CaptureFixture) -> None:
    from evoopt.cli.campaign_cmds import print_funnel
    from evoopt.report.html import funnel_view

    record = _record(outcome)
    print_funnel(record)
    out = capsys.readouterr().out
    assert "skipped: worse on held" in out
    if outcome == FUNNEL_PASSED:
        assert "funnel: winner g1-02, finalist #2" in out and "g1-03" in out
    else:
        assert "NO FINALIST SURVIVED" in out and "g1-01" in out
    view = funnel_view({"funnel": record})
    assert view is not None and view["winner_lost_on"] == (
        [] if outcome == FUNNEL_PASSED else ["held"])
    assert [c is not None for f in view["finalists"] for c in f["cells"]] == [True, True]
    assert funnel_view({}) is None and funnel_view({"funnel": {"finalists": "x"}}) is None


# -- a small real campaign ----------------------------------------------------------------------
HELD = """name = "teacher-small"
dataset = "teacher_mlp"
model = "mlp"
input_dim = 8
output_dim = 2
teacher_width = 16
teacher_layers = 2
teacher_seed = 3
activation = "tanh"
noise = 0.1
width = 32
layers = 2
train_size = 512
val_size = 256
steps = 60
batch_size = 64
eval_batch_size = 256
device = "cpu"
threads = 1
"""


def _config(tmp_path: Path) -> Path:
    (tmp_path / "teacher-small.toml").write_text(HELD)
    config = tmp_path / "funnel.toml"
    config.write_text(f"""
[campaign]
name = "funnel"
seed = 3
population = 4
generations = 2
seeds = ["adam", "adan", "lion"]

[fitness]
task = "cifar10-tiny"
overrides = {{ steps = 15 }}

[[stages]]
name = "full"
seeds = [0]

[final]
top_k = 3
seeds = [100, 101, 102]
selection_seeds = [200]
compare = ["adam"]
test_split = false
baselines = ["adam"]
lr_factors = [0.5, 2.0]
heldout_tasks = ["{tmp_path / 'teacher-small.toml'}"]

[ray]
enabled = false
""")
    return config


class CountingEvaluator(SerialEvaluator):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.submitted = 0

    def submit(self, request: Any) -> None:
        self.submitted += 1
        super().submit(request)


def test_a_real_campaign_passes_its_finalists_through_the_funnel(
        tmp_path: Path, data_dir: Path) -> None:
    config = _config(tmp_path)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "evoopt", "run", str(config), "--out", str(out),
                           "--serial", "--data-dir", str(data_dir)], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "funnel:" in done.stdout and "funnel: finalists" in done.stdout

    with CampaignStore(out, readonly=True) as store:
        summary = store.get_meta("summary")
        evaluations = store.evaluations()
    funnel = summary["funnel"]
    assert funnel["reference"] == "adamw-cosine" and funnel["tasks"] == ["teacher-small"]
    assert summary["winner"]["uid"] == funnel["winner_uid"]
    assert summary["winner"]["funnel"] == funnel["outcome"]
    examined = funnel["finalists"]
    assert examined and [f["rank"] for f in examined] == list(range(len(examined)))
    # in selection rank order; stopped at the first that passed
    ranked = sorted(summary["winner"]["selection"]["candidates"],
                    key=lambda c: c["fitness_mean"], reverse=True)
    assert [f["uid"] for f in examined] == [c["uid"] for c in ranked][:len(examined)]
    assert all(not f["passed"] for f in examined[:-1])
    if funnel["outcome"] == FUNNEL_PASSED:
        assert examined[-1]["passed"] and funnel["winner_uid"] == examined[-1]["uid"]
    else:
        assert funnel["winner_uid"] == examined[0]["uid"] and "NO FINALIST" in done.stdout
    check = examined[0]["tasks"]["teacher-small"]
    assert set(check) >= {"fitness_mean", "reference_fitness_mean", "mean_diff", "paired_se",
                          "verdict", "passed", "lr", "per_seed", "reference_per_seed"}
    assert len(check["per_seed"]) == 3 and 0.0 <= check["reference_fitness_mean"] <= 1.0
    # every funnel evaluation is stored under the held-out stage; AdamW-cosine tuned there
    held = [e for e in evaluations if e["stage"] == "heldout:teacher-small"]
    assert any(e["uid"].startswith("baseline:adamw-cosine") for e in held)
    assert any(e["uid"].startswith("baseline:finalist-") for e in held)
    assert all(e["val_accuracy"] is None and e["status"] == "ok" for e in held)
    # the per-task transfer table for the winner is as before (its baselines only)
    [transfer] = summary["heldout"]
    assert [r["name"] for r in transfer["rows"]] == ["winner (lr tuned)", "adam (tuned)"]

    report = subprocess.run([sys.executable, "-m", "evoopt", "report", str(out)], env=env,
                            capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    html = (out / "report.html").read_text()
    assert 'id="funnel"' in html and "teacher-small" in html

    # finishing again (a resume of a finished campaign) pays for nothing: all stored
    cfg = parse_config(__import__("tomllib").loads(config.read_text()))
    with CountingEvaluator(data_dir=str(data_dir), num_threads=1) as ev, \
            CampaignRunner(cfg, out, data_dir=str(data_dir), evaluator=ev) as runner:
        again = runner.run()
        assert ev.submitted == 0
        assert again["funnel"]["finalists"] == examined

        # the funnel itself on constructed finalists, through the real evaluator: a finalist
        # far worse than tuned AdamW-cosine on the held-out task is skipped, the next passes
        slow = seed_genome("adam").with_lr(1e-6)
        fine = seed_genome("adam").with_lr(1e-2)
        record = run_funnel(runner.service, runner.config, runner.tasks.heldout,
                            [(slow.hash, {"uid": "slow", "genome": slow.to_dict()}),
                             (fine.hash, {"uid": "fine", "genome": fine.to_dict()}),
                             ("x", {"uid": "never", "genome": fine.to_dict()})])
    assert [f["passed"] for f in record["finalists"]] == [False, True]
    assert record["finalists"][0]["lost_on"] == ["teacher-small"]
    assert record["winner_uid"] == "fine" and record["outcome"] == FUNNEL_PASSED
    assert record["not_examined"] == ["never"]
