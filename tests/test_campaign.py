"""Campaigns end to end on the real tiny task: store, dedupe, hurdles, finish, SIGKILL resume."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evoopt.campaign.config import ConfigError, load_config, parse_config
from evoopt.campaign.orchestrator import CampaignRunner
from evoopt.campaign.status import campaign_status
from evoopt.campaign.store import DB_NAME, CampaignStore
from evoopt.evaluator import EvalOutcome, SerialEvaluator
from evoopt.genome import Genome, load_genome, seed_genome
from evoopt.genome.export import load_exported_class
from tests.conftest_campaign import TINY, run_killed_after_first_generation, run_tiny, tiny_config

REPO = Path(__file__).resolve().parents[1]


def test_campaign_store_is_complete_and_consistent(tiny_campaign: Path) -> None:
    with CampaignStore(tiny_campaign, readonly=True) as store:
        individuals = {r["uid"]: r for r in store.individuals()}
        evaluations = store.evaluations()
        generations = store.generations()
        summary = store.get_meta("summary")
        state = store.get_meta("state")
    assert state == "finished"
    assert [g["generation"] for g in generations] == [0, 1]
    seeds = [r for r in individuals.values() if r["operator"] == "seed"]
    assert {r["hash"] for r in seeds} >= {seed_genome("adam").hash, seed_genome("adan").hash}
    for r in individuals.values():
        assert all(p in individuals for p in r["parents"])
        assert (r["operator"] == "seed") == (r["parents"] == [])
        assert r["fitness"] is not None and r["status"] != "pending"
    keys = [(e["hash"], e["stage"], e["seed"], e["split"]) for e in evaluations]
    assert len(keys) == len(set(keys)), "an evaluation was paid twice"
    assert {e["stage"] for e in evaluations} == {"screen", "full", "selection", "final"}
    assert all(e["split"] == "val" for e in evaluations if e["stage"] != "final")
    # The winner is picked among the top-k on the selection seeds; the final seeds, which no
    # selection saw, are paid only for the winner, the compared seeds and the baselines.
    selection = summary["winner"]["selection"]
    refined = [r for r in individuals.values() if r["operator"] == "tpe_refine"]
    assert selection["seeds"] == [300, 301]
    assert len(selection["candidates"]) == 2 + len(refined)  # top_k and the refined trials
    best = max(selection["candidates"], key=lambda c: c["fitness_mean"])
    assert summary["winner"]["uid"] == best["uid"]
    assert {e["seed"] for e in evaluations if e["stage"] == "selection"} == {300, 301}
    finalists = {e["hash"] for e in evaluations if e["stage"] == "final"
                 and not e["uid"].startswith("baseline:")}
    assert len(finalists) <= 3  # winner, adam, adan (a seed may be the winner)
    assert all(r["status"] != "pending" for r in refined)
    # Adam learns on the tiny task: its full-stage validation accuracy is above chance.
    adam = next(r for r in seeds if r["hash"] == seed_genome("adam").hash)
    assert adam["stage_reached"] == "full" and adam["fitness"] > 0.15
    names = [row["name"] for row in summary["comparison"]]
    assert names[0] == "winner" and {"adam", "adan"} <= set(names)
    assert all(row["n_seeds"] == 2 and row["test_accuracy_mean"] is not None
               for row in summary["comparison"])


def test_refinement_tunes_the_best_structure_within_the_search_budget(tiny_campaign: Path) -> None:
    """[refine]: a TPE search over the best individual's hyperparameters, structure fixed,
    starting at the incumbent; its runs are the search's (the budget-matched search gets them)."""
    from evoopt.campaign.finish import search_paid

    with CampaignStore(tiny_campaign, readonly=True) as store:
        refine = store.get_meta("refine")
        summary = store.get_meta("summary")
        evaluations = store.evaluations()
        individuals = {r["uid"]: r for r in store.individuals()}
        paid = search_paid(store)
    assert refine["incumbent"] in individuals and refine["budget"] == 6
    assert refine["paid"] >= 6 and refine["n_trials"] >= 2
    runs = [e for e in evaluations if e["uid"].startswith("refine:trial-")]
    assert runs and {e["stage"] for e in runs} <= {"screen", "full"}
    assert paid == sum(1 for e in evaluations if e["stage"] in ("screen", "full")
                       and not e["uid"].startswith(("baseline:", "optuna:")))
    incumbent = Genome.from_dict(individuals[refine["incumbent"]]["genome"])
    trials = [Genome.from_dict(g) for g in refine_genomes(tiny_campaign)]
    assert trials[0].hash == incumbent.hash  # the study starts at the incumbent
    assert all(t.structure == incumbent.structure for t in trials)
    # The best refined trials (other than the incumbent, whose score on these seeds is
    # inflated by its selection) join the top candidates, judged on fresh selection seeds.
    refined = [r for r in individuals.values() if r["operator"] == "tpe_refine"]
    assert 1 <= len(refined) <= 2
    for r in refined:
        assert r["parents"] == [refine["incumbent"]] and r["stage_reached"] == "full"
        assert r["hash"] != incumbent.hash and r["change"].startswith("TPE trial")
    selected = {c["uid"] for c in summary["winner"]["selection"]["candidates"]}
    assert {r["uid"] for r in refined} <= selected


def refine_genomes(directory: Path) -> list[dict]:
    import optuna

    study = optuna.load_study(study_name="evoopt-refine",
                              storage=f"sqlite:///{directory / 'refine.sqlite'}")
    return [t.user_attrs["genome"] for t in sorted(study.trials, key=lambda t: t.number)
            if "genome" in t.user_attrs]


def test_summary_rows_verdicts_and_baselines(tiny_campaign: Path) -> None:
    """The summary schema the report and the lead rely on; baselines via the shared protocol."""
    from evoopt.fitness.baselines import get_baseline
    from evoopt.stats import paired_comparison

    with CampaignStore(tiny_campaign, readonly=True) as store:
        summary = store.get_meta("summary")
        meta_baselines = store.get_meta("baselines")
        evaluations = store.evaluations()
    rows = {row["key"]: row for row in summary["comparison"]}
    assert list(rows) == ["winner", "adam", "adan", "baseline:adam"]
    assert [rows[k]["kind"] for k in rows] == ["winner", "seed", "seed", "tuned"]
    for row in rows.values():
        assert row["seed_numbers"] == [100, 101] and len(row["per_seed"]) == 2
        assert len(row["test_per_seed"]) == 2 and row["genome"]["terms"]
        assert row["formula"] and row["n_seeds"] == 2
    tuned = rows["baseline:adam"]
    assert tuned["name"] == "adam (tuned)" and tuned["uid"] == "baseline:adam"
    grid = get_baseline("adam", [0.5, 1.0, 2.0]).grid["lr"]
    sweep = tuned["tuning"]["sweep"]
    assert [r["point"]["lr"] for r in sweep] == list(grid) and tuned["n_seeds"] == 2
    best = max(sweep, key=lambda r: (r["fitness_mean"], -r["point"]["lr"]))
    assert tuned["tuning"]["best"] == best["point"] == {"lr": tuned["genome"]["lr"]}
    assert tuned["tuning"]["at_grid_edge"] == {"lr": best["point"]["lr"] in (grid[0], grid[-1])}
    assert meta_baselines == [tuned]
    # the sweep ran at the last stage on its seeds (val), the re-run on the final seeds
    sweep_evals = [e for e in evaluations if e["uid"].startswith("baseline:adam@")]
    assert {(e["stage"], e["seed"], e["split"]) for e in sweep_evals} <= {
        ("full", 0, "val"), ("full", 1, "val")}
    finals = {(e["seed"], e["split"]) for e in evaluations if e["uid"] == "baseline:adam"}
    assert finals <= {(s, sp) for s in (100, 101) for sp in ("val", "test")}
    # verdicts: the winner against every other row, paired by seed, on val and test
    verdicts = summary["verdicts"]
    assert {(v["against"], v["split"]) for v in verdicts} == {
        (k, sp) for k in ("adam", "adan", "baseline:adam") for sp in ("val", "test")}
    for v in verdicts:
        field = "per_seed" if v["split"] == "val" else "test_per_seed"
        expected = paired_comparison(rows["winner"][field], rows[v["against"]][field])
        assert v["mean_diff"] == pytest.approx(expected.mean_diff)
        assert v["paired_se"] == pytest.approx(expected.paired_se) and v["n"] == 2
        assert v["verdict"] in ("better", "worse", "indistinguishable")
    assert set(summary["timings"]) == {"search_s", "refine_s", "baselines_s", "funnel_s",
                                       "heldout_s", "budget_matched_s", "final_s"}
    # no held-out task: no funnel
    assert summary["funnel"] is None and summary["winner"]["funnel"] == "off"
    assert summary["timings"]["funnel_s"] == 0
    assert summary["timings"]["search_s"] > 0 and summary["timings"]["budget_matched_s"] == 0
    assert isinstance(summary["operators"], list)
    assert all(set(o) >= {"operator", "children", "improvements", "success_rate"}
               for o in summary["operators"])


def test_duplicates_are_never_paid_twice(tiny_campaign: Path) -> None:
    with CampaignStore(tiny_campaign, readonly=True) as store:
        individuals = store.individuals()
        evaluations = store.evaluations()
        generations = store.generations()
    adam_hash = seed_genome("adam").hash
    split = next(r for r in individuals if r["genome"].get("name") == "adam-split-terms")
    noop = next(r for r in individuals if r["genome"].get("name") == "adam-warmup-noop")
    assert split["cache_kind"] == "hash" and split["hash"] == adam_hash
    assert noop["cache_kind"] == "behaviour" and noop["hash"] != adam_hash
    assert split["cached_from"] == noop["cached_from"]
    assert split["fitness"] == noop["fitness"]
    assert not [e for e in evaluations if e["uid"] in (split["uid"], noop["uid"])]
    assert not [e for e in evaluations if e["hash"] == noop["hash"]]
    assert generations[0]["n_cached"] >= 2 * 3  # two duplicates x (1 screen + 2 full) seeds


def test_winner_export_and_status(tiny_campaign: Path, tmp_path: Path) -> None:
    source = (tiny_campaign / "best_optimizer.py").read_text()
    summary = campaign_status(tiny_campaign)["summary"]
    cls = load_exported_class(source, summary["winner"]["class_name"])
    assert issubclass(cls, __import__("torch").optim.Optimizer)
    assert load_genome(tiny_campaign / "best_genome.toml").formula() == summary["winner"]["formula"]
    # The exported class computes what was evaluated: the winner's stored genome, interpreted.
    import torch

    from evoopt.genome import Genome, GenomeOptimizer
    from tests.optim_problem import relative_error, trajectory

    with CampaignStore(tiny_campaign, readonly=True) as store:
        evaluated = Genome.from_dict(store.get_individual(summary["winner"]["uid"])["genome"])
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        kw = {"total_steps": 40} if evaluated.has_schedule else {}
        ref = trajectory(lambda ps: GenomeOptimizer(ps, evaluated, total_steps=40), 40)
        out = trajectory(lambda ps: cls(ps, **kw), 40)
    finally:
        torch.set_default_dtype(old)
    assert relative_error(out, ref) <= 1e-10
    proc = subprocess.run([sys.executable, "-m", "evoopt", "status", str(tiny_campaign), "--json"],
                          capture_output=True, text=True, check=True)
    info = json.loads(proc.stdout)
    assert info["state"] == "finished" and info["generation"] == 2
    assert info["evaluations_done"] == summary["evaluations_done"]
    assert info["evaluations_cached"] >= 6
    assert info["best"]["uid"] == summary["winner"]["uid"]
    out = tmp_path / "best.py"
    proc = subprocess.run([sys.executable, "-m", "evoopt", "export", str(tiny_campaign), "--best",
                           "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert summary["winner"]["class_name"] in out.read_text()


def test_hurdle_stops_candidates_and_counts_savings(tmp_path: Path, data_dir: Path) -> None:
    stages = [{"name": "screen", "seeds": [0], "overrides": {"steps": 20}},
              {"name": "full", "seeds": [0, 1], "hurdle": 0.99}]
    run_tiny(tmp_path / "hurdle", data_dir, stages=stages,
             campaign={"generations": 1}, final={"test_split": False, "baselines": []})
    with CampaignStore(tmp_path / "hurdle", readonly=True) as store:
        rows = store.individuals()
        generation = store.generations()[0]
        full = [e for e in store.evaluations() if e["stage"] == "full"  # baselines' sweeps and
                and not e["uid"].startswith(("baseline:", "refine:"))]  # refinement run there
    stopped = [r for r in rows if r["status"] == "stopped_at_hurdle"]
    assert stopped and all(r["operator"] != "seed" for r in stopped)
    assert all(r["stage_reached"] == "screen" for r in stopped)
    assert generation["n_saved_by_hurdles"] == 2 * len(stopped)
    # Only the seeds (exempt from hurdles) paid for the full stage.
    assert {e["uid"] for e in full} == {r["uid"] for r in rows if r["operator"] == "seed"}


def test_compute_budget_and_promotion_by_rank(tmp_path: Path, data_dir: Path) -> None:
    """``max_train_steps`` ends the search at the first generation boundary at or past that many
    training steps run (a screen costs its own steps); ``hurdle = "top:F"`` sends on exactly the
    best ceil(F·n) of a generation by their screen score (seeds exempt)."""
    budget = 700
    stages = [{"name": "screen", "seeds": [0], "overrides": {"steps": 20}},
              {"name": "full", "seeds": [0, 1], "hurdle": "top:0.25"}]
    run_tiny(tmp_path / "budget", data_dir, stages=stages,
             campaign={"generations": 20, "population": 6, "max_train_steps": budget},
             refine={"evaluations": 0}, final={"test_split": False, "baselines": [],
                                              "top_k": 1})
    with CampaignStore(tmp_path / "budget", readonly=True) as store:
        search = [e for e in store.evaluations() if e["stage"] in ("screen", "full")]
        generations = store.generations()
        individuals = store.individuals()
    assert {e["steps"] for e in search if e["stage"] == "screen"} == {20}
    by_gen: dict[int, int] = {}
    uid_gen = {r["uid"]: r["generation"] for r in individuals}
    for e in search:
        by_gen[uid_gen[e["uid"]]] = by_gen.get(uid_gen[e["uid"]], 0) + e["steps"]
    spent = 0
    for g in sorted(by_gen)[:-1]:
        spent += by_gen[g]
        assert spent < budget  # the search went on only while under the budget
    assert spent + by_gen[max(by_gen)] >= budget and len(generations) < 20
    for g in range(len(generations)):
        rows = [r for r in individuals if r["generation"] == g]
        went_on = [r for r in rows if r["stage_reached"] == "full" and r["operator"] != "seed"]
        screened = sorted((e["fitness"] for e in search if e["stage"] == "screen"
                           and uid_gen[e["uid"]] == g), reverse=True)
        threshold = screened[math.ceil(0.25 * len(rows)) - 1]
        assert 0 < len(went_on) <= sum(1 for x in screened if x >= threshold)


def test_top_fraction_hurdle_and_budgets_are_validated() -> None:
    for bad in ("top:0", "top:1", "top:x", "top:-0.5"):
        stages = [{"name": "a", "seeds": [0]}, {"name": "b", "seeds": [1], "hurdle": bad}]
        with pytest.raises(ConfigError, match=r"stages\[1\].hurdle: \"top:F\" needs a fraction"):
            parse_config(tiny_config(stages=stages), "c.toml")
    with pytest.raises(ConfigError, match="campaign.max_train_steps: must be ≥ 0"):
        parse_config(tiny_config(campaign={"max_train_steps": -1}), "c.toml")
    with pytest.raises(ConfigError,
                       match=r"variation.initial_random: must be in \[0, population=4\]"):
        parse_config(tiny_config(variation={"initial_random": 5}), "c.toml")
    with pytest.raises(ConfigError, match="variation.adapt_rates: expected true/false"):
        parse_config(tiny_config(variation={"adapt_rates": 1}), "c.toml")
    with pytest.raises(ConfigError, match=r"variation.surrogate_pool: must be in \[1, 64\]"):
        parse_config(tiny_config(variation={"surrogate_pool": 0}), "c.toml")


def _fingerprint(directory: Path) -> tuple[list, list]:
    with CampaignStore(directory, readonly=True) as store:
        individuals = sorted((r["uid"], r["hash"], r["operator"], tuple(r["parents"]),
                              r["fitness"], r["status"]) for r in store.individuals())
        evaluations = sorted((e["hash"], e["stage"], e["seed"], e["split"], e["fitness"])
                             for e in store.evaluations())
    return individuals, evaluations


def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path, data_dir: Path) -> None:
    """A real subprocess killed with SIGKILL mid-campaign resumes to the identical result."""
    config = tmp_path / "c.toml"
    config.write_text(TINY.read_text())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "evoopt"]
    straight = tmp_path / "straight"
    subprocess.run([*base, "run", str(config), "--out", str(straight), "--serial",
                    "--data-dir", str(data_dir)], check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    code = run_killed_after_first_generation(
        [*base, "run", str(config), "--out", str(killed), "--serial", "--data-dir",
         str(data_dir)], killed, env)
    assert code == -signal.SIGKILL, "the campaign ended before it could be killed"
    assert campaign_status(killed)["state"] == "interrupted"
    before = _fingerprint(killed)[1]
    with CampaignStore(killed, readonly=True) as store:
        wall_before = store.get_meta("wall_time_s")
    assert wall_before is not None and wall_before > 0  # recorded at generation 0's commit
    t0 = time.time()
    subprocess.run([*base, "resume", str(killed), "--serial"], check=True, env=env,
                   capture_output=True)
    with CampaignStore(killed, readonly=True) as store:
        wall_after = store.get_meta("wall_time_s")
    assert wall_before < wall_after <= wall_before + time.time() - t0  # sessions add up
    after_individuals, after_evaluations = _fingerprint(killed)
    assert set(before) <= set(after_evaluations), "a finished evaluation was lost"
    assert (after_individuals, after_evaluations) == _fingerprint(straight)
    assert campaign_status(killed)["state"] == "finished"


BAD_CONFIGS = [
    ({"campaign": {"seeds": ["adam"]}}, "campaign.seeds: must include adam and adan"),
    ({"campaign": {"population": 1}}, "campaign.population: must be in [2, 10000]"),
    ({"campaign": {"population": "8"}}, "campaign.population: expected an integer"),
    ({"selection": {"method": "roulette"}}, "selection.method: must be"),
    ({"selection": {"elitism": 9}}, "selection.elitism: must be in [0, population=4)"),
    ({"variation": {"crossover_rate": 1.5}}, "variation.crossover_rate: must be in [0, 1]"),
    ({"variation": {"mutaton_rates": {}}}, "variation.mutaton_rates: unknown field"),
    ({"fitness": {"split": "test"}}, "fitness.split"),
    ({"final": {"seeds": [0, 200]}}, "final.seeds: must be fresh seeds"),
    ({"stages": [{"name": "a", "seeds": [0], "hurdle": "median"}]},
     "stages[0].hurdle: the first stage has no hurdle"),
    ({"stages": [{"name": "a", "seeds": []}]}, "stages[0].seeds: expected a non-empty list"),
    ({"stages": [{"name": "a", "seeds": [0], "budget": 3}]}, "stages[0].budget: unknown field"),
    ({"final": {"baselines": ["adam", "adamw"]}},
     "final.baselines: unknown baseline(s) ['adamw'] (choose from: adam, adamw-cosine"),
    ({"final": {"budget_matched": "random"}}, 'final.budget_matched: must be "none" or "optuna"'),
    ({"final": {"budget_matched_budget": -1}}, "final.budget_matched_budget: must be ≥ 0"),
    ({"final": {"lr_factors": [1, 0]}}, "final.lr_factors: expected positive multipliers"),
    ({"final": {"tuned": ["adam"]}}, "final.tuned: unknown field"),
    ({"final": {"selection_seeds": [101, 400]}}, "final.selection_seeds: must be fresh seeds"),
    ({"stages": [{"name": "selection", "seeds": [0]}]}, "stages[0].name: 'selection' is reserved"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_config_errors_name_the_field(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(tiny_config(**changes), "c.toml")
    assert str(info.value).startswith("c.toml: ") and message in str(info.value)


def test_unknown_section_and_shipped_campaigns_parse(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[campaign]\nname = "x"\n[evolution]\npopulation = 3\n')
    with pytest.raises(ConfigError, match=r"\[evolution\]: unknown section"):
        load_config(bad)
    for path in sorted((REPO / "experiments").glob("*.toml")):
        config = load_config(path)
        assert {"adam", "adan"} <= set(config.seeds)


def test_report_lineage_and_history_on_the_real_campaign(tiny_campaign: Path,
                                                         tmp_path: Path) -> None:
    """The report of a campaign produced by the real runner: offline, with the winner's line."""
    import re

    from evoopt.report.html import write_report

    page = write_report(tiny_campaign, tmp_path / "report.html").read_text()
    assert not re.search(r"<(script|link|img)[^>]*(src|href)=\"https?:", page)
    with CampaignStore(tiny_campaign, readonly=True) as store:
        winner = store.get_meta("winner_uid")
        line = store.line(winner)
    assert line[0]["operator"] == "seed" and line[-1]["uid"] == winner
    for row in line:
        assert row["uid"] in page
    proc = subprocess.run([sys.executable, "-m", "evoopt", "lineage", str(tiny_campaign), "--best"],
                          capture_output=True, text=True, check=True)
    assert all(row["uid"] in proc.stdout for row in line)
    out = tmp_path / "history.json"
    subprocess.run([sys.executable, "-m", "evoopt", "history", str(tiny_campaign), "--format",
                    "json", "-o", str(out)], check=True, capture_output=True)
    history = json.loads(out.read_text())
    with CampaignStore(tiny_campaign, readonly=True) as store:
        assert {r["uid"] for r in history["individuals"]} == \
            {r["uid"] for r in store.individuals()}
        assert len(history["evaluations"]) == len(store.evaluations())


def test_budget_matched_optuna_row_and_resume(tmp_path: Path, data_dir: Path) -> None:
    """final.budget_matched = "optuna": AdamW tuned with the campaign's budget, evaluations in
    the store under optuna:trial-N, the study in DIR/optuna.sqlite; a rerun pays nothing more."""
    out = tmp_path / "optuna"
    changes = dict(campaign={"generations": 1, "population": 3},
                   final={"top_k": 1, "test_split": False, "baselines": [],
                          "budget_matched": "optuna", "budget_matched_budget": 6})
    summary = run_tiny(out, data_dir, **changes)
    assert (out / "optuna.sqlite").exists()
    rows = {row["key"]: row for row in summary["comparison"]}
    assert list(rows) == ["winner", "adam", "adan", "optuna-adamw"]
    row = rows["optuna-adamw"]
    assert row["kind"] == "budget_matched" and row["uid"].startswith("optuna:trial-")
    assert row["n_seeds"] == 2 and row["genome"]["weight_decay"]["kind"] == "decoupled"
    tuning = row["tuning"]
    assert 6 <= tuning["paid"] < 6 + 3 and tuning["budget"] == 6
    assert tuning["n_trials"] >= 2 and tuning["best"]["lr"] == row["genome"]["lr"]
    assert {v["against"] for v in summary["verdicts"]} == {"adam", "adan", "optuna-adamw"}
    with CampaignStore(out, readonly=True) as store:
        evals = store.evaluations()
        search = [e for e in evals if e["uid"].startswith("optuna:")]
        assert {e["stage"] for e in search} == {"screen", "full", "final"}
        assert store.get_meta("budget_matched")["paid"] == tuning["paid"]
    assert summary["search_evaluations"] == sum(
        1 for e in evals if e["stage"] not in ("final", "selection")
        and not e["uid"].startswith("optuna:"))
    # rerun the finished campaign: the study and every evaluation are reused
    again = run_tiny(out, data_dir, **changes)
    with CampaignStore(out, readonly=True) as store:
        assert len(store.evaluations()) == len(evals)
    assert again["comparison"][-1]["tuning"]["paid"] == tuning["paid"]
    assert again["comparison"][-1]["per_seed"] == row["per_seed"]
    # budget 0 means: as many paid evaluations as the campaign's search
    config = parse_config(tiny_config(final={"budget_matched": "optuna"}))
    assert config.final.budget_matched_budget == 0


def test_campaign_on_ray_workers(tmp_path: Path, data_dir: Path) -> None:
    """The runner's default path: its own machine-sized Ray pool, results in completion order."""
    config = parse_config(tiny_config(
        campaign={"generations": 1, "population": 3}, ray={"enabled": True, "num_workers": 2},
        final={"top_k": 1, "test_split": False, "baselines": []}))
    summary = CampaignRunner(config, tmp_path / "ray", data_dir=str(data_dir)).run()
    with CampaignStore(tmp_path / "ray", readonly=True) as store:
        workers = {e["worker"].split(":pid")[0] for e in store.evaluations()}
        assert store.get_meta("state") == "finished"
    assert all(w.startswith("ray:") for w in workers) and len(workers) == 2
    # each stored evaluation records the torch threads it ran with: one per 1-CPU worker
    assert {e["threads"] for e in store_evaluations(tmp_path / "ray")} == {1}
    assert summary["evaluations_done"] == len(store_evaluations(tmp_path / "ray"))


def store_evaluations(directory: Path) -> list[dict]:
    with CampaignStore(directory, readonly=True) as store:
        return store.evaluations()


@pytest.mark.slow
def test_quickstart_campaign_end_to_end(tmp_path: Path, data_dir: Path) -> None:
    """The README's main command, for real (minutes): `python -m pytest -m slow`."""
    out = tmp_path / "quickstart"
    proc = subprocess.run([sys.executable, "-m", "evoopt", "run",
                           str(REPO / "experiments/quickstart.toml"), "--out", str(out),
                           "--data-dir", str(data_dir)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = campaign_status(out)
    assert info["state"] == "finished" and info["generation"] == 5
    assert (out / "best_optimizer.py").exists()
    adam = next(r for r in info["summary"]["comparison"] if r["name"] == "adam")
    assert adam["fitness_mean"] > 0.3  # Adam learns: ~0.46 on cifar10-mini at this budget


def test_missing_data_fails_before_any_evaluation(tmp_path: Path) -> None:
    env = {**os.environ, "EVOOPT_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "evoopt", "run", str(TINY), "--out",
                           str(tmp_path / "c"), "--serial", "--data-dir", str(tmp_path / "none")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert str(tmp_path / "none" / "cifar-10-batches-py") in proc.stderr.replace("\n", "")


def test_run_and_check_without_a_campaign_file_use_the_embedded_default(tmp_path: Path) -> None:
    """``evoopt run`` with no campaign argument runs the shipped quickstart (the embedded
    default), and ``evoopt check`` checks it; here the run stops at the missing data, before
    any evaluation."""
    checked = subprocess.run([sys.executable, "-m", "evoopt", "check"], capture_output=True,
                             text=True)
    assert checked.returncode == 0, checked.stderr
    assert "campaign 'quickstart' is valid" in checked.stdout
    env = {**os.environ, "EVOOPT_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "evoopt", "run", "--out", str(tmp_path / "q"),
                           "--serial", "--data-dir", str(tmp_path / "none")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert str(tmp_path / "none" / "cifar-10-batches-py") in proc.stderr.replace("\n", "")


def test_a_campaign_where_every_run_fails_says_so(tmp_path: Path, data_dir: Path) -> None:
    """Failures are recorded as worst fitness (no crash mid-run); the finish names the cause."""
    with pytest.raises(ValueError, match="no candidate of campaign tiny finished.*timeout"):
        run_tiny(tmp_path / "fail", data_dir, campaign={"generations": 1},
                 fitness={"overrides": {"time_limit_s": 1e-6}})
    with CampaignStore(tmp_path / "fail", readonly=True) as store:
        rows = store.individuals()
        assert rows and all(r["fitness"] == -1.0 and r["status"] == "failed" for r in rows)
        assert store.get_meta("state") == "interrupted"


def test_evaluation_estimate_respects_the_search_budget() -> None:
    """discover-cpu's (now discover-cifar10-cpu's) progress bar promised 13,163 evaluations and
    the run made 4,899: the estimate counted every generation although max_evaluations (1,800)
    stops the search. The search part, and the budget-matched Optuna search that gets the same
    budget, are capped."""
    import re

    from typer.testing import CliRunner

    import evoopt.cli

    evoopt.cli.register_commands()
    result = CliRunner().invoke(evoopt.cli.app, ["check", str(REPO / "experiments" /
                                                             "discover-cifar10-cpu.toml")])
    assert result.exit_code == 0, result.output
    estimate = int(re.search(r"about (\d+) evaluations", result.output).group(1))
    config = load_config(REPO / "experiments" / "discover-cifar10-cpu.toml")
    assert config.max_evaluations == 1800 and config.final.budget_matched == "optuna"
    # search + Optuna ≤ 2 × 1,800 (+ a last generation's overshoot); finals and tuning ~1,100
    assert 2 * 1800 < estimate < 2 * 1800 + 1500, estimate


def test_leaving_the_runner_closes_its_store(tiny_campaign: Path, tmp_path: Path) -> None:
    """``CampaignRunner`` is a context manager: leaving it closes the store, so SQLite's WAL is
    checkpointed into the one store file (before, a library caller had to reach into
    ``runner.store`` to close it, or a copy of the store file missed the last writes). The
    store file alone, copied without any side file, holds the finished campaign."""
    shutil.copy(tiny_campaign / DB_NAME, tmp_path / DB_NAME)
    with CampaignStore(tmp_path, readonly=True) as store:
        assert store.get_meta("state") == "finished"
        summary = store.get_meta("summary")
        assert summary is not None
        assert len(store.evaluations()) >= summary["evaluations_done"]


def test_a_store_written_before_a_new_option_still_resumes() -> None:
    """A stored config lacking fields added since (search options, the funnel) is the same
    campaign when the new fields are at their defaults, and a different one otherwise."""
    from evoopt.campaign.config import same_campaign

    config = parse_config(tiny_config(), "c.toml")
    old = {k: v for k, v in config.to_dict().items()
           if k not in ("initial_random", "adapt_rates", "surrogate_pool", "max_train_steps",
                        "final_funnel")}
    assert same_campaign(json.loads(json.dumps(old)), config)
    changed = parse_config(tiny_config(variation={"initial_random": 2}), "c.toml")
    assert not same_campaign(old, changed)
    assert not same_campaign({**old, "bogus": 1}, config)


class _Interrupted(Exception):
    """Raised by :class:`_StopAfter` to interrupt a campaign mid-generation."""


class _StopAfter(SerialEvaluator):
    """A serial evaluator that interrupts the campaign after its first ``n`` results."""

    def __init__(self, n: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.left = n

    def results(self) -> Iterator[EvalOutcome]:
        for outcome in super().results():
            if self.left == 0:
                raise _Interrupted
            self.left -= 1
            yield outcome


def test_resume_evaluates_the_stored_seed_genomes_not_the_edited_files(
        tmp_path: Path, data_dir: Path) -> None:
    """A seed given as a file, edited (then removed) between an interruption and the resume: the
    resumed campaign evaluates the seed as stored when it began (its row's genome and hash), not
    the file's new content; before, the row kept the old genome and hash while its evaluations
    and fitness came from the edited file (and a removed file stopped the resume)."""
    seed_file = tmp_path / "my-seed.toml"
    original = dataclasses.replace(seed_genome("adam").with_lr(3e-3), name="my-seed")
    original.save(seed_file)
    changes = dict(campaign={"seeds": ["adam", "adan", str(seed_file)], "population": 3,
                             "generations": 1},
                   stages=[{"name": "full", "seeds": [0]}], refine={"evaluations": 0},
                   final={"top_k": 1, "seeds": [100], "test_split": False, "baselines": []})
    config = parse_config(tiny_config(**changes))
    out = tmp_path / "run"
    with _StopAfter(1, data_dir=str(data_dir), num_threads=1) as evaluator, \
            CampaignRunner(config, out, data_dir=str(data_dir), evaluator=evaluator) as runner, \
            pytest.raises(_Interrupted):
        runner.run()  # adam's evaluation committed; the file seed's row pending, unevaluated
    with CampaignStore(out, readonly=True) as store:
        row = next(r for r in store.individuals(0) if r["genome"].get("name") == "my-seed")
        assert row["status"] == "pending" and row["hash"] == original.hash
        assert not store.evaluations(uid=row["uid"])
    edited = original.with_lr(1e-2)
    edited.save(seed_file)
    assert edited.hash != original.hash

    run_tiny(out, data_dir, **changes)  # the resume, with the edited file
    with CampaignStore(out, readonly=True) as store:
        after = store.get_individual(row["uid"])
        evals = store.evaluations(uid=row["uid"])
        assert not store.evaluations(hash=edited.hash), "the edited file was evaluated"
        assert store.get_meta("state") == "finished"
    assert after["hash"] == original.hash and after["genome"] == row["genome"]
    assert evals and {e["hash"] for e in evals} == {original.hash}
    full = [e["fitness"] for e in evals if e["stage"] == "full"]
    assert after["fitness"] == pytest.approx(sum(full) / len(full))

    # the seed file removed: `evoopt resume` (the finished campaign's finish, all stored) needs
    # none of the seed files
    seed_file.unlink()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "evoopt", "resume", str(out), "--serial"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    with CampaignStore(out, readonly=True) as store:
        assert not store.evaluations(hash=edited.hash)
        assert store.get_individual(row["uid"])["hash"] == original.hash
