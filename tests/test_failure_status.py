"""Failures by status, not by number (docs/design-user-tasks.md §3, item 3; stage S1).

A run that is not ``ok`` is stored at ``WORST_FITNESS`` (-1.0), but "failed" is decided from
the rows' statuses; :func:`combine` keeps every ok fitness above -1 (``ok_floor``), so the few
places that see bare per-seed numbers (baselines, the budget-matched search) stay exact. An ok
multi-task row whose every task scored 0 is an evaluated individual, not a failure.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest

from evoopt.campaign.common import WallClock, aggregate_fitness, aggregate_ok
from evoopt.campaign.config import parse_config
from evoopt.campaign.evaluation import EvaluationService
from evoopt.campaign.finish import ranked_individuals
from evoopt.campaign.runner import SearchRunner
from evoopt.campaign.store import CampaignStore
from evoopt.campaign.tasks import CampaignTasks
from evoopt.evaluator import SerialEvaluator
from evoopt.fitness import WORST_FITNESS, load_task
from evoopt.fitness.multitask import TaskMix, combine
from evoopt.fitness.runner import ok_floor
from evoopt.genome import Genome, seed_genome
from evoopt.report.view_model import scored_individuals
from tests.conftest_campaign import tiny_config

CIFAR, CHARS = load_task("cifar10-tiny"), load_task("shakespeare-char-cpu")
MIX = TaskMix((CIFAR, CHARS), (1.0, 3.0))
ABOVE_WORST = math.nextafter(WORST_FITNESS, 0.0)


def _result(fitness: float, status: str = "ok", seed: int = 0) -> dict[str, Any]:
    """One task's result, ``SeedResult.to_dict()`` shape."""
    return {"fitness": fitness, "status": status, "message": "" if status == "ok" else "boom",
            "val_accuracy": 0.5, "val_loss": 1.0, "steps": 10, "wall_time_s": 0.01,
            "train_time_s": 0.01, "train_loss_curve": [], "seed": seed, "split": "val",
            "threads": 1}


# -- combine: every ok fitness is above the failure marker ------------------------------------
def test_an_ok_mix_whose_every_task_scored_zero_is_ok_and_above_the_marker() -> None:
    results = {"cifar10-tiny": _result(0.0), "shakespeare-char-cpu": _result(0.0)}
    row = combine(MIX, results, {"cifar10-tiny": 0.4, "shakespeare-char-cpu": 0.3})
    assert row["status"] == "ok"
    assert row["fitness"] > WORST_FITNESS
    assert row["fitness"] == ABOVE_WORST  # the floor, nothing more: still the worst ok score
    assert row["tasks"]["cifar10-tiny"]["fitness"] == 0.0  # each task's own score is kept


def test_ok_floor_moves_only_what_would_reach_the_marker() -> None:
    assert ok_floor(-1.0) == ABOVE_WORST and ok_floor(-3.5) == ABOVE_WORST
    for x in (ABOVE_WORST, -0.5, 0.0, 0.25, 1.0, 7.0):
        assert ok_floor(x) == x


def test_a_failed_task_still_fails_the_mix_at_the_marker() -> None:
    results = {"cifar10-tiny": _result(0.0), "shakespeare-char-cpu": _result(-1.0, "timeout")}
    row = combine(MIX, results, None)
    assert row["status"] == "timeout" and row["fitness"] == WORST_FITNESS


def test_every_ok_fitness_combine_produces_is_above_the_marker() -> None:
    """Property-style: random mixes, scores (zeros and near-zeros included) and references."""
    rng = random.Random(20240519)
    tasks = [load_task(n) for n in ("cifar10-tiny", "shakespeare-char-cpu", "cifar10-cpu")]
    zeros = (0.0, 5e-324, 1e-300, 1e-17, 1e-16)
    n_ok = n_zero = 0
    for _ in range(2000):
        k = rng.randint(1, len(tasks))
        picked = rng.sample(tasks, k)
        mix = TaskMix(tuple(picked), tuple(rng.choice((1.0, 0.5, 3.0, rng.uniform(0.01, 10)))
                                           for _ in picked))
        all_zero = rng.random() < 0.3
        results = {}
        for t in picked:
            f = rng.choice(zeros) if all_zero or rng.random() < 0.2 else rng.random()
            status = "ok" if rng.random() < 0.9 else rng.choice(("diverged", "timeout", "error"))
            results[t.name] = _result(f if status == "ok" else WORST_FITNESS, status)
        reference = {t.name: rng.choice((1.0, rng.uniform(1e-3, 1.0))) for t in picked}
        row = combine(mix, results, reference)
        if all(r["status"] == "ok" for r in results.values()):
            n_ok += 1
            n_zero += all_zero and mix.multi
            assert row["status"] == "ok"
            assert math.isfinite(row["fitness"]) and row["fitness"] > WORST_FITNESS, (
                mix.names, results, reference, row["fitness"])
        else:
            assert row["status"] != "ok" and row["fitness"] == WORST_FITNESS
    assert n_ok > 1000 and n_zero > 100  # the loop did exercise the edge


# -- aggregate_ok -----------------------------------------------------------------------------
def test_aggregate_ok_goes_by_status() -> None:
    ok, failed = {"status": "ok", "fitness": WORST_FITNESS}, {"status": "error", "fitness": 0.3}
    assert aggregate_ok([ok, ok]) and not aggregate_ok([ok, failed]) and not aggregate_ok([])
    assert aggregate_fitness([{"status": "ok", "fitness": 0.2}] * 2) == 0.2
    assert aggregate_fitness([ok, failed]) == WORST_FITNESS


# -- the search: an individual is failed by its rows' statuses ---------------------------------
ADAM, ADAN = seed_genome("adam"), seed_genome("adan")


class _Scripted:
    """A runner that trains nothing: per genome (by hash), a (fitness, status) for every task;
    the reference (adam) scores 0.5. Counts what it was asked to run."""

    def __init__(self, scores: dict[str, tuple[float, str]], calls: list[str]) -> None:
        self.scores, self.calls = scores, calls

    def evaluate(self, genome: dict[str, Any], seed: int = 0, split: str = "val"
                 ) -> dict[str, Any]:
        h = Genome.from_dict(genome).hash
        self.calls.append(h)
        fitness, status = self.scores.get(h, (0.5, "ok"))
        out = _result(fitness, status, seed)
        out["split"] = split
        return out


def _search(tmp_path: Path, scores: dict[str, tuple[float, str]],
            before: list[dict[str, Any]] | None = None) -> tuple[list[dict], list[str]]:
    """One generation of {adam, adan} on a two-task mix through the real search (serial
    evaluator, scripted runner, no data); ``before``: evaluation rows already in the store
    (an older session's). Returns the individuals and the hashes the runner was asked for."""
    data = tiny_config(campaign={"seeds": ["adam", "adan"], "population": 2, "generations": 1},
                       stages=[{"name": "screen", "seeds": [0]}])
    data["fitness"] = {"tasks": ["cifar10-tiny", "shakespeare-char-cpu"], "weights": [1.0, 3.0]}
    config = parse_config(data)
    calls: list[str] = []
    seeds = [Genome.from_dict(g.to_dict()) for g in (ADAM, ADAN)]
    with CampaignStore(tmp_path) as store:
        for row in before or []:
            store.add_evaluation(**row)
        evaluator = SerialEvaluator(runner_factory=lambda task, data_dir: _Scripted(scores, calls))
        service = EvaluationService(store, evaluator, reference=seeds[0], generations=1)
        SearchRunner(config, store, service, CampaignTasks.load(config), seeds,
                     WallClock(store)).run()
        return store.individuals(), calls


def _by_hash(rows: list[dict], genome: Genome) -> dict[str, Any]:
    return next(r for r in rows if r["hash"] == genome.hash)


def test_an_ok_all_zero_mix_individual_counts_as_evaluated(tmp_path: Path) -> None:
    rows, _ = _search(tmp_path, {ADAN.hash: (0.0, "ok")})
    adan = _by_hash(rows, ADAN)
    assert adan["status"] == "evaluated"
    assert adan["fitness"] > WORST_FITNESS
    assert _by_hash(rows, ADAM)["fitness"] == 0.0  # the reference is itself: 0


def test_a_stored_ok_row_at_the_marker_is_not_a_failure(tmp_path: Path) -> None:
    """An older store's all-zero mix row: ok, at exactly -1.0 (combine before the floor). The
    search reuses it (no run) and labels the individual by the row's status."""
    old = {"uid": "g0-old", "hash": ADAN.hash, "stage": "screen", "seed": 0, "split": "val",
           "fitness": WORST_FITNESS, "status": "ok", "message": "", "steps": 20,
           "wall_time_s": 0.02, "train_loss_curve": [], "threads": 1,
           "tasks": {n: {k: _result(0.0).get(k) for k in ("fitness", "val_accuracy", "val_loss",
                                                          "status", "message", "steps",
                                                          "wall_time_s", "threads")}
                     for n in ("cifar10-tiny", "shakespeare-char-cpu")}}
    rows, calls = _search(tmp_path, {}, before=[old])
    assert ADAN.hash not in calls  # reused, not paid again
    adan = _by_hash(rows, ADAN)
    assert adan["fitness"] == WORST_FITNESS and adan["status"] == "evaluated"


def test_a_failed_run_is_still_a_failed_individual(tmp_path: Path) -> None:
    rows, _ = _search(tmp_path, {ADAN.hash: (WORST_FITNESS, "diverged")})
    adan = _by_hash(rows, ADAN)
    assert adan["status"] == "failed" and adan["fitness"] == WORST_FITNESS
    assert _by_hash(rows, ADAM)["status"] == "evaluated"


# -- ranking (finish, report) goes by status ----------------------------------------------------
def _individual(uid: str, fitness: float | None, status: str) -> dict[str, Any]:
    return {"uid": uid, "generation": 0, "operator": "seed", "parents": [], "genome": {},
            "hash": uid, "behaviour_hash": uid, "formula": "", "fitness": fitness,
            "stage_reached": "screen", "status": status, "created_at": 0.0}


ROWS = [_individual("good", 0.1, "evaluated"), _individual("zero-mix", WORST_FITNESS, "evaluated"),
        _individual("broken", WORST_FITNESS, "failed"), _individual("waiting", None, "pending")]


def test_the_finish_ranks_by_status(tmp_path: Path) -> None:
    config = parse_config(tiny_config(stages=[{"name": "screen", "seeds": [0]}]))
    with CampaignStore(tmp_path) as store:
        for row in ROWS:
            store.add_individual(**row)
        ranked = ranked_individuals(config, store)
    assert [r["uid"] for r in ranked] == ["good", "zero-mix"]


def test_the_finish_still_refuses_a_campaign_of_failures(tmp_path: Path) -> None:
    config = parse_config(tiny_config(stages=[{"name": "screen", "seeds": [0]}]))
    with CampaignStore(tmp_path) as store:
        store.add_individual(**_individual("broken", WORST_FITNESS, "failed"))
        with pytest.raises(ValueError, match="finished an evaluation"):
            ranked_individuals(config, store)


def test_the_report_leaves_out_failed_individuals_by_status() -> None:
    assert [r["uid"] for r in scored_individuals(ROWS)] == ["good", "zero-mix"]
