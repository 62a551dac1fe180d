"""Report stage: HTML report, lineage tree and history tables, on the store of a real tiny campaign.

The campaign is conftest's ``tiny_campaign`` (the real runner, once per session); every
expectation is read from its store (the winner, its line back to a seed through the parents,
the operators recorded, the summary's rows), so a change in the store the runner writes
shows up here. Tests that need what a tiny run cannot produce (hostile strings, a budget-matched
Optuna row, hours of search, an older store's layout) change a copy of it, as said where they do.
"""

from __future__ import annotations

import copy
import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from markupsafe import escape
from typer.testing import CliRunner

import evoopt.cli
from evoopt.campaign.store import CampaignStore
from evoopt.report.history import output_paths, write_history
from evoopt.report.html import write_report
from evoopt.report.lineage import ABSENT, FieldChange, format_value, genome_diff, iter_tree
from evoopt.strategy.operators import OPERATORS
from tests.conftest_campaign import copy_campaign
from tests.test_report_structure import figure_axis_titles

evoopt.cli.register_commands()
runner = CliRunner()

HOSTILE = "<script>alert('x')</script>"
HOSTILE_NAME = "tiny-test <campaign>"
# a line appended to the exported source: the report must show it escaped, verbatim
EXPORT_MARKER = "# <b>not bold</b> & 1 < 2"
# how the report labels each comparison kind
KIND_LABELS = {"winner": "winner", "seed": "seeded", "tuned": "tuned",
               "budget_matched": "budget-matched"}
# where a child's fitness stands: further through the fidelity stages counts first
COUNTED = ("evaluated", "stopped_at_hurdle", "failed")


@dataclass(frozen=True)
class Campaign:
    """A campaign directory and what its store holds."""

    dir: Path
    individuals: dict[str, dict[str, Any]]
    evaluations: list[dict[str, Any]]
    meta: dict[str, Any]

    @property
    def summary(self) -> dict[str, Any]:
        return self.meta["summary"]

    @property
    def winner(self) -> str:
        return self.summary["winner"]["uid"]

    @property
    def stage_order(self) -> dict[str, int]:
        """Stage name -> index; the finish's "final" stage ranks with the last search stage."""
        names = [s["name"] for s in self.meta["config"]["stages"]]
        return {name: k for k, name in enumerate(names)} | {"final": len(names) - 1}


def read_campaign(directory: Path) -> Campaign:
    with CampaignStore(directory, readonly=True) as store:
        return Campaign(directory, {r["uid"]: r for r in store.individuals()},
                        store.evaluations(), store.all_meta())


def first_parent_line(individuals: Mapping[str, dict], uid: str) -> list[str]:
    """``uid``'s chain of first parents back to a seed, seed first."""
    line = [uid]
    while individuals[line[-1]]["parents"]:
        line.append(individuals[line[-1]]["parents"][0])
        assert len(line) <= len(individuals), "a cycle in the parents"
    return line[::-1]


def ancestors(individuals: Mapping[str, dict], uid: str) -> set[str]:
    """``uid`` and every individual it descends from, through all parents."""
    found: set[str] = set()
    todo = [uid]
    while todo:
        u = todo.pop()
        if u not in found:
            found.add(u)
            todo += individuals[u]["parents"]
    return found


def rank(row: Mapping[str, Any], order: Mapping[str, int]) -> tuple[int, float]:
    return order[row["stage_reached"]], row["fitness"]


def best_parent(individuals: Mapping[str, dict], uid: str,
                order: Mapping[str, int]) -> dict[str, Any]:
    return max((individuals[p] for p in individuals[uid]["parents"]),
               key=lambda r: rank(r, order))


def beats_best_parent(individuals: Mapping[str, dict], uid: str,
                      order: Mapping[str, int]) -> bool:
    """The child got further through the stages than its best parent, or scored higher there."""
    return rank(individuals[uid], order) > rank(best_parent(individuals, uid, order), order)


def _signed(x: float) -> str:
    return f"{x:+.4f}".replace("-", "−")


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


_UNITS = {"s": (1.0, 0.05), "min": (60.0, 3.0), "h": (3600.0, 18.0)}  # factor, half a last digit


def _seconds_match(card: str, seconds: float) -> bool:
    """Whether a duration card (``42.5 s``, ``2.1 min``, ``2.50 h``) shows ``seconds``."""
    number, unit = card.split()
    factor, tolerance = _UNITS[unit]
    return abs(float(number) * factor - seconds) <= tolerance + 1e-9


def _card(head: str, label: str) -> str:
    m = re.search(rf'<div class="v">([^<]*)</div><div class="k">{re.escape(label)}</div>', head)
    assert m, f"no card {label!r}"
    return m.group(1)


def _section(page: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', page, re.S)
    assert m, f"no section {sid}"
    return m.group(1)


def _rows(table_html: str) -> list[list[str]]:
    """Table rows as lists of cell texts (tags stripped, entities decoded)."""
    out = []
    for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", table_html, re.S):
        cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", tr, re.S)
        out.append([" ".join(html.unescape(re.sub(r"<[^>]+>", " ", c)).split()) for c in cells])
    return out


def _is_mutation(operator: str) -> bool:
    return operator in OPERATORS


def _is_crossover(operator: str) -> bool:
    return operator == "crossover" or operator.startswith("crossover+")


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(tiny_campaign: Path) -> Campaign:
    """The session campaign's store, as the runner left it (read only)."""
    return read_campaign(tiny_campaign)


@pytest.fixture(scope="module")
def hostile(real: Campaign, tmp_path_factory: pytest.TempPathFactory) -> Campaign:
    """A copy of the real campaign with markup in its strings, written into the store after
    the run: a campaign name, change descriptions and a formula (standing for a genome's name or
    description, which a user writes), and a line appended to the exported file."""
    d = copy_campaign(real.dir, tmp_path_factory.mktemp("hostile") / "tiny")
    inds = real.individuals
    line = first_parent_line(inds, real.winner)
    elsewhere = next(u for u in inds if u not in ancestors(inds, real.winner))
    with CampaignStore(d) as store:
        store.set_meta("config", {**real.meta["config"], "name": HOSTILE_NAME})
        store.update_individual(line[0], change=HOSTILE)  # the seed: no change of its own
        store.update_individual(real.winner, change=f"{inds[real.winner]['change']} {HOSTILE}")
        store.update_individual(elsewhere, formula=f"{inds[elsewhere]['formula']}  {HOSTILE}")
    with (d / "best_optimizer.py").open("a", encoding="utf-8") as f:
        f.write(f"\n{EXPORT_MARKER}\n")
    return read_campaign(d)


@pytest.fixture(scope="module")
def report_html(hostile: Campaign) -> str:
    result = runner.invoke(evoopt.cli.app, ["report", str(hostile.dir)])
    assert result.exit_code == 0, result.output
    path = hostile.dir / "report.html"
    assert f"wrote {path}" in result.output
    return path.read_text("utf-8")


# -- the fixture campaign -----------------------------------------------------------------------


def test_the_campaign_shows_what_the_report_shows(real: Campaign) -> None:
    """The session campaign has every kind of individual and outcome the report renders (a
    runner change that loses one makes the report tests below vacuous: this says which)."""
    inds = real.individuals.values()
    statuses = {r["status"] for r in inds}
    assert {"evaluated", "cached", "stopped_at_hurdle", "failed"} <= statuses, statuses
    children = [r for r in inds if r["operator"] != "seed" and r["status"] in COUNTED]
    assert any(_is_mutation(r["operator"]) for r in children), "no mutation child evaluated"
    assert any(_is_crossover(r["operator"]) for r in children), "no crossover child evaluated"
    assert all(r["parents"] and r["change"] for r in children)
    line = first_parent_line(real.individuals, real.winner)
    assert len(line) >= 2, (f"the winner {real.winner} is a seed: no line of changes to show "
                            "(pick another campaign seed in conftest_campaign.SESSION_CHANGES)")
    assert any(e["status"] == "diverged" for e in real.evaluations)
    kinds = {r["kind"] for r in real.summary["comparison"]}
    assert kinds == {"winner", "seed", "tuned"} and real.summary["verdicts"]
    assert (real.dir / real.summary["exported"]).is_file()


# -- genome diff ------------------------------------------------------------------------------


def test_genome_diff() -> None:
    old = {"lr": 1e-3, "m": {"beta": 0.9, "bc": True}, "terms": [{"k": "a"}], "wd": 0.0}
    new = {"lr": 2e-3, "m": {"beta": 0.9, "bc": 1}, "terms": [{"k": "a"}, {"k": "b"}], "x": {}}
    changes = {c.path: c for c in genome_diff(old, new)}
    assert set(changes) == {"lr", "m.bc", "terms[1].k", "x", "wd"}
    assert (changes["lr"].old, changes["lr"].new, changes["lr"].kind) == (1e-3, 2e-3, "changed")
    assert changes["m.bc"].kind == "changed"  # True and 1 are different genome values
    assert changes["terms[1].k"] == FieldChange("terms[1].k", ABSENT, "b")
    assert changes["terms[1].k"].kind == "added" and changes["wd"].kind == "removed"
    assert str(changes["lr"]) == "lr: 0.001 → 0.002"
    assert genome_diff(new, new) == [] and genome_diff({"a": 1}, {"a": 1.0}) == []


# -- HTML report ------------------------------------------------------------------------------


def test_report_is_self_contained(report_html: str) -> None:
    assert report_html.startswith("<!DOCTYPE html>")
    assert 'src="http' not in report_html and "src='http" not in report_html
    assert not re.search(r"<script[^>]*\ssrc\s*=", report_html, re.I)
    assert not re.search(r"<link[^>]*>", report_html, re.I)
    assert not re.search(r"<(iframe|img)[^>]*\ssrc\s*=\s*[\"']?(https?:)?//", report_html, re.I)
    assert "@import" not in report_html and "url(http" not in report_html
    assert "Plotly.newPlot" in report_html  # figures from plotly, with its JS inlined
    assert len(report_html) > 1_000_000  # the plotly.js bundle itself


def test_report_escapes_database_strings(report_html: str, hostile: Campaign) -> None:
    assert HOSTILE not in report_html
    assert "<campaign>" not in report_html
    assert "tiny-test &lt;campaign&gt;" in report_html
    assert "&lt;script&gt;alert(" in report_html  # shown, as text
    code = _section(report_html, "code")
    assert "# &lt;b&gt;not bold&lt;/b&gt; &amp; 1 &lt; 2" in code
    exported = (hostile.dir / "best_optimizer.py").read_text("utf-8")
    pre = re.search(r'<pre class="code">(.*?)</pre>', code, re.S)
    assert pre and html.unescape(pre.group(1)) == exported  # the whole file, verbatim


def test_report_has_winner_line_back_to_seed(report_html: str, hostile: Campaign) -> None:
    inds, winner = hostile.individuals, hostile.winner
    family = ancestors(inds, winner)
    ancestry = _section(report_html, "ancestry")
    tree_uids = re.findall(r'<span class="uid mono">([^<]+)</span>', ancestry)
    assert set(tree_uids) == family
    with CampaignStore(hostile.dir, readonly=True) as store:
        dfs = [n["uid"] for n in iter_tree(store.ancestry(winner))]
    assert tree_uids == dfs
    for uid in family:
        change = inds[uid]["change"]
        assert not change or str(escape(change)) in ancestry
    # the genome diff walks the first-parent line seed → winner, with each step's field changes
    line = first_parent_line(inds, winner)
    diff = _section(report_html, "diff")
    heads = re.findall(r'<h3>\d+\. <span class="mono">([^<]+)</span>', diff)
    assert heads == line and len(line) >= 2
    assert inds[line[0]]["operator"] == "seed" and inds[line[0]]["parents"] == []
    steps = diff.split("<h3>")[1:]  # one chunk per step, in line order
    for parent, child, step in zip(line[:-1], line[1:], steps[1:], strict=True):
        assert f'<span class="mono">{child}</span> — {inds[child]["operator"]}' in step
        assert f'of <span class="mono">{parent}</span>' in step
        changes = genome_diff(inds[parent]["genome"], inds[child]["genome"])
        assert changes, f"{child} should differ from {parent}"
        for c in changes:
            assert (f'<td class="mono">{escape(c.path)}</td>'
                    f'<td class="mono old">{escape(format_value(c.old))}</td>'
                    f'<td class="mono new">{escape(format_value(c.new))}</td>') in step


def test_report_summary_and_comparison(report_html: str, hostile: Campaign) -> None:
    summary = hostile.summary
    head = _section(report_html, "summary")
    assert f'<div class="v">{summary["evaluations_done"]}</div>' in head
    assert f'<div class="v">{len(hostile.individuals)}</div><div class="k">individuals' in head
    failed = sum(r["status"] == "failed" for r in hostile.individuals.values())
    assert f'<div class="v">{failed}</div><div class="k">failed individuals' in head
    assert _seconds_match(_card(head, "wall time"), hostile.meta["wall_time_s"])
    assert "finished" in report_html.split("</h1>")[0]
    table = _section(report_html, "comparison").split("</table>")[0]
    rows = summary["comparison"]
    best = max(r["fitness_mean"] for r in rows)
    for row in rows:
        css = ("best " if row["fitness_mean"] == best else "") + f"kind-{row['kind']}"
        assert (f'<tr class="{css}"><td>{escape(row["name"])}</td>'
                f'<td>{KIND_LABELS[row["kind"]]}</td><td class="mono">{row["uid"]}</td>') in table
        assert f"{row['fitness_mean']:.4f} ± {row['fitness_std']:.4f}" in table
        for seed, x in zip(row["seed_numbers"], row["per_seed"], strict=True):
            assert f'<span class="muted">{seed}:</span>{x:.4f}' in table
    for fig in ("fig-fitness", "fig-ancestry", "fig-seeds", "fig-curves"):
        assert f'id="{fig}"' in report_html


def test_report_timings_of_the_run(report_html: str, hostile: Campaign) -> None:
    timings = hostile.summary["timings"]
    head = _section(report_html, "summary")
    for key, label in (("search_s", "search"), ("refine_s", "of which TPE refinement"),
                       ("baselines_s", "tuned baselines"),
                       ("budget_matched_s", "budget-matched search"),
                       ("final_s", "final evaluation")):
        assert _seconds_match(_card(head, f"{label} time"), timings[key]), key


def test_report_of_running_campaign_without_summary(tmp_path: Path, real: Campaign) -> None:
    """A campaign still running (no summary, no export) still gets a useful report: here the
    real store as it stood when generation 0 was committed."""
    gen0 = [r for r in real.individuals.values() if r["generation"] == 0]
    with CampaignStore(tmp_path) as store, CampaignStore(real.dir, readonly=True) as old:
        store.set_meta("state", "running")
        store.set_meta("config", real.meta["config"])
        for row in gen0:
            store.add_individual(**row)
            for ev in old.evaluations(uid=row["uid"]):
                store.add_evaluation(**{k: v for k, v in ev.items() if k != "id"})
        store.add_generation(**old.generations()[0])
    # no winner recorded yet: the report shows the best so far (first of equals in store order)
    best = max(gen0, key=lambda r: r["fitness"])["uid"]
    out = write_report(tmp_path, tmp_path / "sub" / "r.html")
    page = out.read_text("utf-8")
    assert "state-running" in page and "No exported file yet." in page
    table = _section(page, "comparison").split("</table>")[0]
    assert re.search(rf'<td>winner</td><td>winner</td><td class="mono">{best}</td>', table)
    for row in gen0:
        if row["operator"] == "seed":
            assert f"<td>{row['uid']}</td><td>seeded</td>" in table
    heads = re.findall(r'<h3>\d+\. <span class="mono">([^<]+)</span>', _section(page, "diff"))
    assert heads == first_parent_line(real.individuals, best)


def test_report_of_empty_campaign(tmp_path: Path) -> None:
    with CampaignStore(tmp_path) as store:
        store.set_meta("state", "running")
    html_text = write_report(tmp_path).read_text("utf-8")
    assert "No individual has been evaluated yet." in html_text
    assert 'id="fig-fitness"' in html_text and 'id="fig-ancestry"' not in html_text


def test_report_cli_errors(tmp_path: Path) -> None:
    result = runner.invoke(evoopt.cli.app, ["report", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    assert "no campaign store" in result.output


# -- the report shows why: verdicts, structure, operators ----------------------------------------

BUDGET_SCHEDULE = {"kind": "warmup_cosine", "warmup_fraction": 0.05, "final_lr_fraction": 0.0}
# hours of search and minutes of Optuna, which the tiny run does not take: the other units
RICH_TIMINGS = {"search_s": 9000.0, "refine_s": 610.0, "baselines_s": 95.0,
                "budget_matched_s": 720.0, "final_s": 42.5}


def _rich_summary(real: Campaign) -> dict[str, Any]:
    """The real summary plus what a tiny run lacks: a budget-matched Optuna row (better than
    every other, on the same final seeds) with its verdict; adan's row without its genome (as
    an older runner wrote it: the report reads it from the store by uid); hours of timings."""
    from evoopt.genome import seed_genome

    summary = copy.deepcopy(real.summary)
    rows = summary["comparison"]
    adan = next(r for r in rows if r["key"] == "adan")
    del adan["genome"], adan["formula"]
    seeds = rows[0]["seed_numbers"]
    assert len(seeds) == 2  # the tiny campaign's final seeds
    per_seed = [0.6101, 0.6145]
    budget = seed_genome("adamw").to_dict() | {"lr": 0.0021, "schedule": BUDGET_SCHEDULE}
    budget["weight_decay"] = {"kind": "decoupled", "value": 0.05}
    rows.append({"name": "adamw (Optuna, budget-matched)", "key": "budget:adamw",
                 "kind": "budget_matched", "uid": None, "genome": budget,
                 "fitness_mean": 0.6123, "fitness_std": 0.003, "val_accuracy_mean": 0.6123,
                 "n_seeds": len(seeds), "per_seed": per_seed, "seed_numbers": seeds,
                 "tuning": {"best": {"lr": 0.0021, "weight_decay": 0.05},
                            "n_trials": 24, "pruned": 9, "paid": 61}})
    summary["verdicts"].append(
        {"against": "budget:adamw", "name": "adamw (Optuna, budget-matched)", "split": "test",
         "n": len(seeds), "mean_diff": -0.0234, "paired_se": 0.002, "ci95": [-0.0320, -0.0148],
         "p_value": 0.0004, "verdict": "worse"})
    summary["timings"] = RICH_TIMINGS
    return summary


@pytest.fixture(scope="module")
def rich(real: Campaign, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A copy of the real campaign with the richer summary of ``_rich_summary`` and an older
    store's ``baselines`` meta (which a summary with kinds must not merge)."""
    d = copy_campaign(real.dir, tmp_path_factory.mktemp("rich") / "tiny")
    summary = _rich_summary(real)
    tuned = next(r for r in real.summary["comparison"] if r["kind"] == "tuned")
    with CampaignStore(d) as store:
        store.set_meta("summary", summary)
        store.set_meta("baselines", [{"name": "adam-tuned", "uid": None,
                                      "fitness_mean": tuned["fitness_mean"],
                                      "fitness_std": tuned["fitness_std"],
                                      "n_seeds": tuned["n_seeds"],
                                      "per_seed": tuned["per_seed"], "lr": 3e-3}])
    return {"dir": d, "summary": summary, "html": write_report(d).read_text("utf-8")}


def test_report_verdicts(rich: dict) -> None:
    sec = _section(rich["html"], "verdicts")
    assert "paired by seed" in sec and "common random numbers" in sec
    assert "|Δ| &gt; 2 paired SE" in sec
    worse = re.search(r'<tr class="verdict-worse"><td>adamw \(Optuna(.*?)</tr>', sec, re.S)
    assert worse, "the worse verdict is not rendered as worse"
    assert '<td class="verdict">worse</td>' in worse.group(1)
    rows = _rows(sec)[1:]
    budget = rows[-1]
    assert budget == ["adamw (Optuna, budget-matched) (budget-matched)", "test", "2", "−0.0234",
                      "0.0020", "[−0.0320, −0.0148]", "< 0.001", "worse"]
    # every verdict of the real run, in order, as the summary has it
    kinds = {r["key"]: KIND_LABELS[r["kind"]] for r in rich["summary"]["comparison"]}
    verdicts = rich["summary"]["verdicts"]
    assert rows == [[f"{v['name']} ({kinds[v['against']]})", v["split"], str(v["n"]),
                     _signed(v["mean_diff"]), f"{v['paired_se']:.4f}",
                     f"[{_signed(v['ci95'][0])}, {_signed(v['ci95'][1])}]", _p(v["p_value"]),
                     v["verdict"]] for v in verdicts]
    assert re.findall(r'<tr class="verdict-(\w+)">', sec) == [v["verdict"] for v in verdicts]


def test_report_structure_table(rich: dict) -> None:
    from evoopt.genome import Genome

    sec = _section(rich["html"], "structure")
    rows = _rows(sec)
    header = rows[0]
    assert header[0] == "part"
    comp = rich["summary"]["comparison"]
    names = [r["name"] for r in comp]
    assert [h.rsplit(" ", 1)[0] for h in header[1:]] == names
    assert header[-1].endswith("budget-matched")
    by_part = {r[0]: r[1:] for r in rows[1:]}
    assert set(by_part) >= {"formula", "terms (kind · weight · normalized)", "momentum",
                            "grad diff", "second moment", "schedule", "weight decay", "clip",
                            "transform", "matrix (rules for parameters of 2+ dims)", "lr"}
    terms = by_part["terms (kind · weight · normalized)"]
    winner_genome = comp[0]["genome"]
    for term in winner_genome["terms"]:
        assert term["kind"] in terms[0]
    assert ("normalized" if winner_genome["terms"][0].get("normalize") else "not normalized"
            ) in terms[0]
    assert by_part["schedule"][-1].startswith("warmup_cosine")
    assert by_part["weight decay"][-1] == "decoupled (value=0.05)"
    tuned = next(r for r in comp if r["kind"] == "tuned")
    assert by_part["lr"][-1] == "0.0021"
    assert by_part["lr"][names.index(tuned["name"])] == format_value(tuned["genome"]["lr"])
    # adan's row has no genome: read from the store by uid (formula too)
    adan_row = next(r for r in comp if r["key"] == "adan")
    with CampaignStore(rich["dir"], readonly=True) as store:
        adan, winner = store.get_individual(adan_row["uid"]), store.get_individual(comp[0]["uid"])
    column = names.index("adan")
    for term in adan["genome"]["terms"]:
        assert f"{term['kind']} · weight {format_value(term.get('weight', 1.0))}" in terms[column]
    assert by_part["formula"][column] == adan["formula"]
    assert by_part["formula"][0] == comp[0]["formula"] == winner["formula"]
    # a baseline that is no individual: its formula is computed from its genome
    assert by_part["formula"][-1] == Genome.from_dict(comp[-1]["genome"]).formula()
    assert "warmup(0.05)+cosine(→0)" in by_part["formula"][-1]
    assert 'class="mono differs"' in sec  # cells that differ from the winner's


@pytest.mark.parametrize("fitness", [{"task": "shakespeare-char-cpu"}, {"task": "teacher-mlp-cpu"},
                                     {"tasks": ["cifar10-tiny", "teacher-mlp-cpu"]}])
def test_report_labels_fitness_as_its_task_scores(real: Campaign, tmp_path: Path,
                                                  fitness: dict) -> None:
    """The real campaign scores CIFAR accuracy; a copy whose config names a character task, a
    regression task or a mix of tasks is labelled with what that task's fitness measures."""
    from evoopt.fitness import load_task
    from evoopt.fitness.multitask import TaskMix

    assert real.meta["config"]["task"] == "cifar10-tiny" and not real.meta["config"]["tasks"]
    real_page = write_report(copy_campaign(real.dir, tmp_path / "real")).read_text("utf-8")
    assert figure_axis_titles(real_page, "fig-fitness") == ["fitness = val accuracy (↑ better)"]
    d = copy_campaign(real.dir, tmp_path / "other")
    with CampaignStore(d) as store:
        store.set_meta("config", {**real.meta["config"], **fitness})
    page = write_report(d).read_text("utf-8")
    names = fitness.get("tasks") or [fitness["task"]]
    mix = TaskMix(tuple(load_task(n) for n in names), (1.0,) * len(names))
    label = f"fitness = val {mix.score_label} (↑ better)"
    assert "accuracy" not in label
    assert figure_axis_titles(page, "fig-fitness") == figure_axis_titles(page, "fig-seeds") == [
        label]
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", _section(page, "fitness"))).split())
    assert f"Fitness is {mix.score_description}, on the val split" in text
    assert "accuracy" not in text


def test_report_comparison_kinds_and_tuning(rich: dict) -> None:
    table = _section(rich["html"], "comparison").split("</table>")[0]
    assert re.search(r'<tr class="best kind-budget_matched"><td>adamw \(Optuna, budget-matched\)'
                     r"</td><td>budget-matched</td>", table)  # the best row, shown distinctly
    comp = rich["summary"]["comparison"]
    tuned = next(r for r in comp if r["kind"] == "tuned")
    assert f'<tr class="kind-tuned"><td>{tuned["name"]}</td><td>tuned</td>' in table
    assert '<tr class="kind-seed"><td>adan</td><td>seeded</td>' in table
    # a summary with kinds lists every baseline itself: the older "baselines" meta is not merged
    assert "adam-tuned" not in table
    rows = {r[0]: r for r in _rows(table)[1:]}
    assert list(rows) == [r["name"] for r in comp]
    lr = tuned["tuning"]["best"]["lr"]
    edge = " ⚠ edge" if tuned["tuning"]["at_grid_edge"]["lr"] else ""
    assert rows[tuned["name"]][-1].startswith(f"lr={format_value(lr)}{edge}")
    # the runner stores the grid per dimension ({"lr": [...]}); the report used to show only a
    # grid stored as a bare list, so a real tuned row never showed what was searched
    grid = tuned["tuning"]["grid"]["lr"]
    assert f"grid lr ∈ {{{', '.join(format_value(g) for g in grid)}}}" in rows[tuned["name"]][-1]
    budget = rows["adamw (Optuna, budget-matched)"]
    assert budget[3] == "0.6123 ± 0.0030"  # the best row
    assert budget[-1].startswith("lr=0.0021, weight_decay=0.05 24 trials · 9 pruned · 61")
    assert "⚠" not in budget[-1]
    assert f"{comp[0]['seed_numbers'][0]}: 0.6101" in budget[7]
    winner = comp[0]
    assert f"{winner['test_per_seed'][0]:.4f}" in rows["winner"][5]


def test_report_timings(rich: dict) -> None:
    head = _section(rich["html"], "summary")
    for value, label in (("2.50 h", "search time"), ("10.2 min", "of which TPE refinement time"),
                         ("95.0 s", "tuned baselines time"),
                         ("12.0 min", "budget-matched search time"),
                         ("42.5 s", "final evaluation time")):
        assert f'<div class="v">{value}</div><div class="k">{label}</div>' in head


def test_report_operators_from_summary(report_html: str, hostile: Campaign) -> None:
    sec = _section(report_html, "operators")
    assert "From the campaign summary." in sec
    rows = _rows(sec.split("</table>")[0])
    assert rows[0] == ["operator", "children evaluated", "improvements", "success rate"]
    ops = sorted(hostile.summary["operators"],
                 key=lambda r: (-r["improvements"], -r["success_rate"], r["operator"]))
    assert rows[1:] == [[r["operator"], str(r["children"]), str(r["improvements"]),
                         f"{100 * r['success_rate']:.1f}%"] for r in ops]
    top = ops[0]["improvements"]
    for r in ops:
        marked = f'<tr class="top-op"><td class="mono">{r["operator"]}</td>' in sec
        assert marked == (top > 0 and r["improvements"] == top), r
    assert 'id="fig-operators"' in sec


def test_report_operators_from_store_and_winner_line(real: Campaign, tmp_path: Path) -> None:
    """Without summary["operators"] the table is computed from the store's individuals; it
    agrees with the runner's own table and with the rule, applied here to the store's rows."""
    d = copy_campaign(real.dir, tmp_path / "c")
    summary = {k: v for k, v in real.summary.items() if k != "operators"}
    with CampaignStore(d) as store:
        store.set_meta("summary", summary)
    page = write_report(d).read_text("utf-8")
    sec = _section(page, "operators")
    assert "Computed from the store" in sec
    rows = _rows(sec.split("</table>")[0])[1:]
    assert rows == [[r["operator"], str(r["children"]), str(r["improvements"]),
                     f"{100 * r['success_rate']:.1f}%"] for r in real.summary["operators"]]
    inds, order = real.individuals, real.stage_order
    tally: dict[str, list[int]] = {}
    for uid, r in inds.items():
        if r["operator"] != "seed" and r["status"] in COUNTED:  # a cached child is not counted
            counts = tally.setdefault(r["operator"], [0, 0])
            counts[0] += 1
            counts[1] += beats_best_parent(inds, uid, order)
    assert {r[0]: [int(r[1]), int(r[2])] for r in rows} == tally
    # the winner's line: each step's operator and whether it improved on its best parent
    line = first_parent_line(inds, real.winner)
    diff = _section(page, "diff")
    table = _rows(diff.split("</table>")[0])[1:]
    assert [r[1] for r in table] == line
    seed = inds[line[0]]
    assert table[0] == ["0", line[0], "seed", f"{seed['fitness']:.4f}", "—", "seed"]
    improving = []
    for k, uid in enumerate(line[1:], 1):
        parent = best_parent(inds, uid, order)
        better = beats_best_parent(inds, uid, order)
        assert table[k] == [str(k), uid, inds[uid]["operator"], f"{inds[uid]['fitness']:.4f}",
                            f"{parent['uid']} ({parent['fitness']:.4f})",
                            "▲ improved" if better else "no"]
        if better:
            improving.append(f"<code>{inds[uid]['operator']}</code> (<code>{uid}</code>)")
    if improving:
        assert f"Improving steps: {', '.join(improving)}." in diff
    else:
        assert "Improving steps" not in diff


def _older(operator: str) -> str:
    """The operator name an older runner recorded."""
    if operator == "seed":
        return operator
    return "crossover" if _is_crossover(operator) else "mutation"


def test_report_of_an_older_store(real: Campaign, tmp_path: Path) -> None:
    """An older store (no verdicts, kinds, genomes, timings or operators in the summary, tuned
    baselines only in the "baselines" meta, every mutation recorded as "mutation"), made from
    the real one, still renders every section."""
    d = copy_campaign(real.dir, tmp_path / "old")
    old_keys = ("name", "uid", "fitness_mean", "fitness_std", "val_accuracy_mean", "n_seeds",
                "per_seed")
    rows = [{k: r[k] for k in old_keys} for r in real.summary["comparison"]
            if r["kind"] in ("winner", "seed")]
    tuned = next(r for r in real.summary["comparison"] if r["kind"] == "tuned")
    summary = {k: v for k, v in real.summary.items()
               if k not in ("verdicts", "timings", "operators")} | {"comparison": rows}
    with CampaignStore(d) as store:
        store.set_meta("summary", summary)
        store.set_meta("baselines", [{k: tuned[k] for k in old_keys if k != "name"}
                                     | {"name": "adam-tuned", "uid": None,
                                        "lr": tuned["genome"]["lr"]}])
        for uid, r in real.individuals.items():
            store.update_individual(uid, operator=_older(r["operator"]))
    page = write_report(d).read_text("utf-8")
    assert 'id="timings"' not in _section(page, "summary")
    verdicts = _section(page, "verdicts")
    assert "No paired verdicts" in verdicts and "<table" not in verdicts
    structure = _section(page, "structure")
    header = _rows(structure)[0]
    assert [h.rsplit(" ", 1)[0] for h in header[1:]] == [r["name"] for r in rows]
    assert "No genome recorded for: adam-tuned." in structure
    assert "<td>adam-tuned</td><td>tuned</td>" in _section(page, "comparison")
    ops = _rows(_section(page, "operators").split("</table>")[0])[1:]
    assert {r[0] for r in ops} == {"mutation", "crossover"}  # older operator names
    line = first_parent_line(real.individuals, real.winner)
    table = _rows(_section(page, "diff").split("</table>")[0])[1:]
    assert [r[2] for r in table] == [_older(real.individuals[u]["operator"]) for u in line]


# -- lineage ----------------------------------------------------------------------------------

WIDE = {"COLUMNS": "1000"}  # no line of the tree wraps


def _uids_in(text: str, known: set[str]) -> list[str]:
    return [t for t in re.findall(r"(?<![\w-])[\w-]+(?![\w-])", text) if t in known]


def test_lineage_agrees_with_store(real: Campaign) -> None:
    d = str(real.dir)
    known = set(real.individuals)
    result = runner.invoke(evoopt.cli.app, ["lineage", d, "--best"], env=WIDE)
    assert result.exit_code == 0, result.output
    with CampaignStore(d, readonly=True) as store:
        tree = store.ancestry(real.winner)
    lines = [ln for ln in result.output.splitlines() if re.search(r"\bgen \d", ln)]
    nodes = list(iter_tree(tree))
    assert {n["uid"] for n in nodes} == ancestors(real.individuals, real.winner)
    assert len(lines) == len(nodes)
    for ln, node in zip(lines, nodes, strict=True):
        assert _uids_in(ln, known) == [node["uid"]]
        assert f"  {node['operator']}  gen {node['generation']}" in ln
        assert f"fitness {node['fitness']:.4f}" in ln
    assert f"★ {real.winner}" in result.output
    for node in nodes:
        assert node["formula"] in result.output
        if node.get("change"):
            assert f"changed: {node['change']}" in result.output
    # default is the winner too; an explicit uid gives that individual's tree
    default = runner.invoke(evoopt.cli.app, ["lineage", d], env=WIDE)
    assert default.output == result.output
    other = next(u for u, r in real.individuals.items()
                 if u != real.winner and r["operator"] != "seed")
    sub = runner.invoke(evoopt.cli.app, ["lineage", d, other], env=WIDE)
    with CampaignStore(d, readonly=True) as store:
        expected = [n["uid"] for n in iter_tree(store.ancestry(other))]
    assert set(expected) == ancestors(real.individuals, other)
    assert _uids_in(sub.output, known) == expected


def test_lineage_depth_and_errors(real: Campaign) -> None:
    d = str(real.dir)
    inds, winner = real.individuals, real.winner
    known = set(inds)
    result = runner.invoke(evoopt.cli.app, ["lineage", d, "--depth", "0"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert _uids_in(result.output, known) == [winner]
    assert "cut by --depth" in result.output  # the winner has parents
    result = runner.invoke(evoopt.cli.app, ["lineage", d, "--depth", "1"], env=WIDE)
    assert _uids_in(result.output, known) == [winner, *inds[winner]["parents"]]
    cut = any(inds[p]["parents"] for p in inds[winner]["parents"])
    assert ("cut by --depth" in result.output) == cut
    bad = runner.invoke(evoopt.cli.app, ["lineage", d, "nobody"])
    assert bad.exit_code == 2 and "no individual 'nobody'" in bad.output
    both = runner.invoke(evoopt.cli.app, ["lineage", d, winner, "--best"])
    assert both.exit_code == 2


# -- history ----------------------------------------------------------------------------------


def _store_rows(campaign: Campaign) -> tuple[list[dict], list[dict]]:
    with CampaignStore(campaign.dir, readonly=True) as store:
        return store.individuals(), store.evaluations()


def test_history_json_agrees_with_store(real: Campaign, tmp_path: Path) -> None:
    out = tmp_path / "h.json"
    result = runner.invoke(
        evoopt.cli.app, ["history", str(real.dir), "--format", "json", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text("utf-8"))
    inds, evals = _store_rows(real)
    assert len(evals) == real.summary["evaluations_done"]
    assert doc["individuals"] == inds
    assert doc["evaluations"] == evals
    for row in doc["individuals"]:
        assert {"uid", "generation", "operator", "parents", "hash", "fitness"} <= set(row)
    for row in doc["evaluations"]:
        assert {"uid", "seed", "stage", "fitness", "status", "wall_time_s"} <= set(row)


def test_history_csv_two_files(real: Campaign, tmp_path: Path) -> None:
    out = tmp_path / "exp" / "hist.csv"
    result = runner.invoke(
        evoopt.cli.app, ["history", str(real.dir), "-f", "csv", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    ind_path, ev_path = (
        tmp_path / "exp" / "hist-individuals.csv",
        tmp_path / "exp" / "hist-evaluations.csv",
    )
    assert output_paths(out, "csv") == [ind_path, ev_path]
    inds, evals = _store_rows(real)
    di, de = pd.read_csv(ind_path), pd.read_csv(ev_path)
    assert list(di["uid"]) == [r["uid"] for r in inds]
    assert [json.loads(p) for p in di["parents"]] == [r["parents"] for r in inds]
    assert [json.loads(g) for g in di["genome"]] == [r["genome"] for r in inds]
    assert list(di["hash"]) == [r["hash"] for r in inds]
    fits = [None if pd.isna(f) else f for f in di["fitness"]]
    assert fits == [r["fitness"] for r in inds]
    assert len(de) == len(evals)
    assert list(zip(de["uid"], de["stage"], de["seed"], de["fitness"], strict=True)) == [
        (r["uid"], r["stage"], r["seed"], r["fitness"]) for r in evals
    ]


def test_history_parquet(real: Campaign, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    with CampaignStore(real.dir, readonly=True) as store:
        paths = write_history(store, "parquet", tmp_path / "h.parquet")
    assert [p.name for p in paths] == ["h-individuals.parquet", "h-evaluations.parquet"]
    inds, evals = _store_rows(real)
    di, de = pd.read_parquet(paths[0]), pd.read_parquet(paths[1])
    assert [list(p) for p in di["parents"]] == [r["parents"] for r in inds]
    assert list(de["status"]) == [r["status"] for r in evals]
    assert list(de["wall_time_s"]) == [r["wall_time_s"] for r in evals]


def test_history_bad_format(real: Campaign, tmp_path: Path) -> None:
    result = runner.invoke(evoopt.cli.app, ["history", str(real.dir), "-f", "xlsx"])
    assert result.exit_code == 2
    assert not list(tmp_path.iterdir())
