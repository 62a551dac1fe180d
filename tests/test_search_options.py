"""Search options of issue 17 in real micro campaigns (serial evaluator, a user task class in a
tmp folder): seeds that face a stage's hurdle (``[[stages]] seeds_exempt``) and selection on a
lower confidence bound (``[selection] confidence``)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from evoopt.campaign.config import ConfigError, parse_config
from evoopt.campaign.orchestrator import CampaignRunner
from evoopt.campaign.store import CampaignStore
from tests.test_campaign_user_task import micro_config, user_task_folder


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from user_task_folder(tmp_path_factory, "search-options-task")


def test_seeds_face_the_hurdle_when_not_exempt_except_the_pruning_reference(
        task_dir: Path, tmp_path: Path) -> None:
    """``seeds_exempt = false``: a seed scoring below the full stage's median hurdle at the
    screen stops there, like any candidate; adam, the pruning reference, always goes on."""
    entry = f"{task_dir / 'my_task.py'}:LinRegTask"
    seeds = ["adam", "adan", "lion", "sgd-momentum", "rmsprop", "adagrad"]
    stages = [{"name": "screen", "seeds": [0], "overrides": {"steps_fraction": 0.5}},
              {"name": "full", "seeds": [0, 1], "hurdle": "median", "seeds_exempt": False}]
    config = parse_config(micro_config(
        entry, campaign={"seeds": seeds, "population": 8, "generations": 1},
        stages=stages, pruning={"reference": "adam"},
        final={"test_split": False, "baselines": []}))
    assert [s.seeds_exempt for s in config.stages] == [True, False]
    with CampaignRunner(config, tmp_path / "c") as runner:
        runner.run()
    with CampaignStore(tmp_path / "c", readonly=True) as store:
        gen0 = store.individuals(0)
        screen = {e["uid"]: e["fitness"] for e in store.evaluations() if e["stage"] == "screen"}
    median = float(np.median([screen[r["uid"]] for r in gen0]))
    by_name = {r["genome"].get("name"): r for r in gen0 if r["operator"] == "seed"}
    assert by_name["adam"]["stage_reached"] == "full"
    below = [n for n, r in by_name.items() if n != "adam" and screen[r["uid"]] < median]
    assert below, "some seed should score below the median here"
    for name in below:
        assert by_name[name]["status"] == "stopped_at_hurdle", name
    with pytest.raises(ConfigError, match="seeds_exempt"):
        parse_config(micro_config(entry, stages=[{"name": "s", "seeds_exempt": 1}]))


def test_selection_ranks_on_a_lower_confidence_bound(task_dir: Path, tmp_path: Path) -> None:
    """``confidence = k``: the strategy is told mean - k x SE over the seeds of the stage each
    candidate reached (the store keeps the mean); one seed has no SE, so its mean is told."""
    entry = f"{task_dir / 'my_task.py'}:LinRegTask"
    k = 2.0
    config = parse_config(micro_config(
        entry, campaign={"generations": 1}, selection={"confidence": k},
        final={"test_split": False, "baselines": []}))
    assert config.strategy.confidence == k
    with CampaignRunner(config, tmp_path / "c") as runner:
        runner.run()
    with CampaignStore(tmp_path / "c", readonly=True) as store:
        state = store.get_meta("strategy_state")
        individuals = {r["uid"]: r for r in store.individuals()}
        evals = store.evaluations()
    spread = 0
    for member in state["population"]:
        ind = individuals[member["uid"]]
        rows = [e for e in evals if e["hash"] == ind["hash"] and e["stage"] == ind["stage_reached"]
                and e["split"] == "val"]
        values = [e["fitness"] for e in rows]
        mean = statistics.fmean(values)
        assert ind["fitness"] == pytest.approx(mean, rel=1e-12)  # stored: the mean
        se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
        assert member["fitness"][1] == pytest.approx(mean - k * se, rel=1e-12, abs=1e-15)
        spread += se > 0
    assert spread, "some member should have reached the 2-seed stage"
    with pytest.raises(ConfigError, match="selection.confidence"):
        parse_config(micro_config(entry, selection={"confidence": -1.0}))
