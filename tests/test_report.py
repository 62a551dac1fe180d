"""Report stage: HTML report, lineage tree and history tables, on a real small campaign store."""

from __future__ import annotations

import copy
import html
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from markupsafe import escape
from typer.testing import CliRunner

import evoopt.cli
from evoopt.campaign.operator_stats import operator_success
from evoopt.campaign.store import CampaignStore
from evoopt.report.history import output_paths, write_history
from evoopt.report.html import write_report
from evoopt.report.lineage import ABSENT, FieldChange, genome_diff, iter_tree
from tests.conftest_campaign import HOSTILE, WINNER, WINNER_ANCESTORS, WINNER_LINE, build_campaign

evoopt.cli.register_commands()
runner = CliRunner()


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return build_campaign(tmp_path_factory.mktemp("campaign") / "tiny")


@pytest.fixture(scope="module")
def report_html(campaign: dict) -> str:
    result = runner.invoke(evoopt.cli.app, ["report", str(campaign["dir"])])
    assert result.exit_code == 0, result.output
    path = campaign["dir"] / "report.html"
    assert f"wrote {path}" in result.output
    return path.read_text("utf-8")


def _section(html: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', html, re.S)
    assert m, f"no section {sid}"
    return m.group(1)


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


def test_report_escapes_database_strings(report_html: str, campaign: dict) -> None:
    assert HOSTILE not in report_html
    assert "<campaign>" not in report_html
    assert "tiny-test &lt;campaign&gt;" in report_html
    assert "&lt;script&gt;alert(" in report_html  # shown, as text
    code = _section(report_html, "code")
    assert "# &lt;b&gt;not bold&lt;/b&gt; &amp; 1 &lt; 2" in code
    exported = (campaign["dir"] / "best_optimizer.py").read_text("utf-8")
    pre = re.search(r'<pre class="code">(.*?)</pre>', code, re.S)
    assert pre and html.unescape(pre.group(1)) == exported  # the whole file, verbatim


def test_report_has_winner_line_back_to_seed(report_html: str, campaign: dict) -> None:
    inds = campaign["individuals"]
    ancestry = _section(report_html, "ancestry")
    tree_uids = re.findall(r'<span class="uid mono">([^<]+)</span>', ancestry)
    assert set(tree_uids) == WINNER_ANCESTORS
    with CampaignStore(campaign["dir"], readonly=True) as store:
        dfs = [n["uid"] for n in iter_tree(store.ancestry(WINNER))]
    assert tree_uids == dfs
    for uid in WINNER_ANCESTORS - {WINNER}:
        assert inds[uid]["change"] is None or str(escape(inds[uid]["change"])) in ancestry
    # the genome diff walks the first-parent line seed → winner, with each step's field changes
    diff = _section(report_html, "diff")
    heads = re.findall(r'<h3>\d+\. <span class="mono">([^<]+)</span>', diff)
    assert heads == WINNER_LINE
    assert inds[WINNER_LINE[0]]["operator"] == "seed" and inds[WINNER_LINE[0]]["parents"] == []
    for parent, child in zip(WINNER_LINE, WINNER_LINE[1:], strict=False):
        changes = genome_diff(inds[parent]["genome"], inds[child]["genome"])
        assert changes, f"{child} should differ from {parent}"
        step = diff.split(f'<span class="mono">{child}</span>', 1)[1]
        for c in changes:
            assert f'<td class="mono">{c.path}</td>' in step
    winner_step = diff.split(f'<span class="mono">{WINNER}</span>', 1)[1]
    assert re.search(
        r'<td class="mono">lr</td><td class="mono old">0.001</td>'
        r'<td class="mono new">0.0015</td>',
        winner_step,
    )


def test_report_summary_and_comparison(report_html: str, campaign: dict) -> None:
    with CampaignStore(campaign["dir"], readonly=True) as store:
        summary = store.get_meta("summary")
        baselines = store.get_meta("baselines")
    head = _section(report_html, "summary")
    assert f'<div class="v">{summary["evaluations_done"]}</div>' in head
    assert '<div class="v">2.1 min</div>' in head  # 123.4 s
    assert "finished" in report_html.split("</h1>")[0]
    table = _section(report_html, "comparison").split("</table>")[0]
    for row in summary["comparison"] + baselines:
        assert f"{row['fitness_mean']:.4f} ± {row['fitness_std']:.4f}" in table
        for x in row["per_seed"]:
            assert f"{x:.4f}" in table
    assert re.search(r"<td>adan</td><td>seeded</td>", table)
    assert re.search(r"<td>adam-tuned</td><td>tuned</td>", table)
    assert re.search(r'<tr class="best kind-winner"><td>winner</td>', table)
    for fig in ("fig-fitness", "fig-ancestry", "fig-seeds", "fig-curves"):
        assert f'id="{fig}"' in report_html


def test_report_of_running_campaign_without_summary(tmp_path: Path, campaign: dict) -> None:
    """A campaign still running (no summary, no export) still gets a useful report."""
    src = campaign["individuals"]
    with CampaignStore(tmp_path) as store, CampaignStore(campaign["dir"], readonly=True) as old:
        store.set_meta("state", "running")
        store.set_meta("config", {"name": "live"})
        for uid in ("adam", "adan", "g0-0"):
            store.add_individual(**{k: v for k, v in src[uid].items()})
            for ev in old.evaluations(uid=uid):
                store.add_evaluation(**{k: v for k, v in ev.items() if k != "id"})
        store.add_generation(
            generation=0,
            best=0.54,
            median=0.52,
            mean=0.52,
            std=0.01,
            best_uid="g0-0",
            n_individuals=3,
        )
    out = write_report(tmp_path, tmp_path / "sub" / "r.html")
    html = out.read_text("utf-8")
    assert "state-running" in html and "No exported file yet." in html
    table = _section(html, "comparison").split("</table>")[0]
    assert re.search(r"<td>winner</td><td>winner</td><td class=\"mono\">g0-0</td>", table)
    assert "<td>adam</td>" in table and "<td>adan</td>" in table
    heads = re.findall(r'<h3>\d+\. <span class="mono">([^<]+)</span>', _section(html, "diff"))
    assert heads == ["adam", "g0-0"]


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

# specific operator names, as newer runners record them (the base fixture has "mutation")
OPERATORS = {
    "g0-0": "perturb_hparam",
    "g0-1": "add_term",
    "g1-0": "crossover+perturb_hparam",
    "g1-1": "change_schedule",
    "g1-2": "perturb_hparam",  # cached: not counted
    "g1-3": "add_term",  # failed
    "g2-0": "perturb_hparam",
    "g2-1": "crossover",
    "g2-2": "add_term",
}
# the report's stage order: "final" (re-evaluation) ranks with the last search stage
STAGE_ORDER = {"screen": 0, "full": 1, "final": 1}
SUMMARY_OPERATORS = [
    {"operator": "add_term", "children": 8, "improvements": 1, "success_rate": 0.125},
    {"operator": "perturb_hparam", "children": 12, "improvements": 5, "success_rate": 5 / 12},
    {"operator": "crossover+change_schedule", "children": 3, "improvements": 2,
     "success_rate": 2 / 3},
]
BUDGET_SCHEDULE = {"kind": "warmup_cosine", "warmup_fraction": 0.05, "final_lr_fraction": 0.0}


def _copy_campaign(campaign: dict, dst: Path) -> Path:
    shutil.copytree(campaign["dir"], dst)
    (dst / "report.html").unlink(missing_ok=True)
    return dst


def _rename_operators(store: CampaignStore) -> None:
    for uid, op in OPERATORS.items():
        store.update_individual(uid, operator=op)


def _rich_summary(store: CampaignStore) -> dict[str, Any]:
    """The base summary plus every field the newer campaign summary carries."""
    from evoopt.genome import seed_genome

    summary = copy.deepcopy(store.get_meta("summary"))
    inds = {r["uid"]: r for r in store.individuals()}
    rows = []
    for r in summary["comparison"]:
        key = "winner" if r["name"] == "winner" else f"seed:{r['name']}"
        row = dict(r, key=key, kind="winner" if key == "winner" else "seed",
                   seed_numbers=[100, 101, 102], test_accuracy_mean=r["fitness_mean"] - 0.01,
                   test_per_seed=[x - 0.01 for x in r["per_seed"]])
        if r["name"] != "adan":  # adan's genome is left out: read from the store by uid
            row["genome"] = inds[r["uid"]]["genome"]
        rows.append(row)
    tuned = copy.deepcopy(inds["adam"]["genome"]) | {"lr": 0.003}
    rows.append({"name": "adam (tuned lr=0.003)", "key": "tuned:adam", "kind": "tuned",
                 "uid": None, "genome": tuned, "fitness_mean": 0.565, "fitness_std": 0.004,
                 "val_accuracy_mean": 0.565, "n_seeds": 3, "per_seed": [0.561, 0.565, 0.569],
                 "seed_numbers": [100, 101, 102],
                 "tuning": {"best": {"lr": 0.003}, "at_grid_edge": True,
                            "grid": [0.0003, 0.001, 0.003]}})
    budget = seed_genome("adamw").to_dict() | {"lr": 0.0021, "schedule": BUDGET_SCHEDULE}
    budget["weight_decay"] = {"kind": "decoupled", "value": 0.05}
    rows.append({"name": "adamw (Optuna, budget-matched)", "key": "budget:adamw",
                 "kind": "budget_matched", "uid": None, "genome": budget,
                 "fitness_mean": 0.6123, "fitness_std": 0.003, "val_accuracy_mean": 0.6123,
                 "n_seeds": 3, "per_seed": [0.6101, 0.6123, 0.6145],
                 "seed_numbers": [100, 101, 102],
                 "tuning": {"best": {"lr": 0.0021, "weight_decay": 0.05},
                            "n_trials": 24, "pruned": 9, "paid": 61}})
    verdict = {"split": "val", "n": 3, "paired_se": 0.002, "p_value": 0.004}
    summary.update(
        comparison=rows,
        verdicts=[
            dict(verdict, against="seed:adam", name="adam", mean_diff=0.0712,
                 ci95=[0.0626, 0.0798], verdict="better"),
            dict(verdict, against="tuned:adam", name="adam (tuned lr=0.003)", mean_diff=0.0021,
                 paired_se=0.0031, ci95=[-0.0112, 0.0154], p_value=0.57,
                 verdict="indistinguishable"),
            dict(verdict, against="budget:adamw", name="adamw (Optuna, budget-matched)",
                 split="test", mean_diff=-0.0234, ci95=[-0.0320, -0.0148], p_value=0.0004,
                 verdict="worse"),
        ],
        timings={"search_s": 9000.0, "baselines_s": 95.0, "budget_matched_s": 720.0,
                 "final_s": 42.5},
        operators=SUMMARY_OPERATORS,
    )
    return summary


@pytest.fixture(scope="module")
def rich(campaign: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The fixture campaign with the newer summary (kinds, genomes, verdicts, timings, ...)."""
    d = _copy_campaign(campaign, tmp_path_factory.mktemp("rich") / "tiny")
    with CampaignStore(d) as store:
        _rename_operators(store)
        summary = _rich_summary(store)
        store.set_meta("summary", summary)
    return {"dir": d, "summary": summary, "html": write_report(d).read_text("utf-8")}


def _rows(table_html: str) -> list[list[str]]:
    """Table rows as lists of cell texts (tags stripped, entities decoded)."""
    out = []
    for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", table_html, re.S):
        cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", tr, re.S)
        out.append([" ".join(html.unescape(re.sub(r"<[^>]+>", " ", c)).split()) for c in cells])
    return out


def test_report_verdicts(rich: dict) -> None:
    sec = _section(rich["html"], "verdicts")
    assert "paired by seed" in sec and "common random numbers" in sec
    assert "|Δ| &gt; 2 paired SE" in sec
    worse = re.search(r'<tr class="verdict-worse">(.*?)</tr>', sec, re.S)
    assert worse, "the worse verdict is not rendered as worse"
    assert "adamw (Optuna, budget-matched)" in worse.group(1)
    assert '<td class="verdict">worse</td>' in worse.group(1)
    rows = {r[0]: r for r in _rows(sec)[1:]}
    assert rows["adam (seeded)"] == ["adam (seeded)", "val", "3", "+0.0712", "0.0020",
                                     "[+0.0626, +0.0798]", "0.004", "better"]
    budget = rows["adamw (Optuna, budget-matched) (budget-matched)"]
    assert budget[1:] == ["test", "3", "−0.0234", "0.0020", "[−0.0320, −0.0148]", "< 0.001",
                          "worse"]
    assert rows["adam (tuned lr=0.003) (tuned)"][-1] == "indistinguishable"
    assert re.search(r'<tr class="verdict-better">', sec)
    assert re.search(r'<tr class="verdict-indistinguishable">', sec)


def test_report_structure_table(rich: dict) -> None:
    sec = _section(rich["html"], "structure")
    rows = _rows(sec)
    header = rows[0]
    assert header[0] == "part"
    assert [h.rsplit(" ", 1)[0] for h in header[1:]] == [r["name"] for r in
                                                        rich["summary"]["comparison"]]
    assert header[-1].endswith("budget-matched")
    by_part = {r[0]: r[1:] for r in rows[1:]}
    assert set(by_part) >= {"formula", "terms (kind · weight · normalized)", "momentum",
                            "grad_diff", "second moment", "schedule", "weight decay", "clip",
                            "lr"}
    comp = rich["summary"]["comparison"]
    winner_genome = comp[0]["genome"]
    winner_terms = by_part["terms (kind · weight · normalized)"][0]
    for term in winner_genome["terms"]:
        assert term["kind"] in winner_terms
    assert ("normalized" if winner_genome["terms"][0].get("normalize") else "not normalized"
            ) in winner_terms
    assert by_part["schedule"][-1].startswith("warmup_cosine")
    assert by_part["weight decay"][-1] == "decoupled (value=0.05)"
    assert by_part["lr"][-1] == "0.0021" and by_part["lr"][-2] == "0.003"
    # adan's row has no genome: read from the store by uid (formula too)
    with CampaignStore(rich["dir"], readonly=True) as store:
        adan, winner = store.get_individual("adan"), store.get_individual(WINNER)
    assert "grad_diff · weight 0.92" in by_part["terms (kind · weight · normalized)"][2]
    assert by_part["formula"][2] == adan["formula"]
    assert by_part["formula"][0] == winner["formula"]
    # a baseline that is no individual: its formula is computed from its genome
    from evoopt.genome import Genome

    assert by_part["formula"][-1] == Genome.from_dict(comp[-1]["genome"]).formula()
    assert "warmup(0.05)+cosine(→0)" in by_part["formula"][-1]
    assert 'class="mono differs"' in sec  # cells that differ from the winner's


def test_report_comparison_kinds_and_tuning(rich: dict) -> None:
    table = _section(rich["html"], "comparison").split("</table>")[0]
    assert re.search(r'<tr class="best kind-budget_matched"><td>adamw \(Optuna, budget-matched\)'
                     r"</td><td>budget-matched</td>", table)  # the best row, shown distinctly
    assert re.search(r'<tr class="kind-tuned"><td>adam \(tuned lr=0.003\)</td><td>tuned</td>',
                     table)
    assert re.search(r'<tr class="kind-seed"><td>adan</td><td>seeded</td>', table)
    # a summary with kinds lists every baseline itself: the older "baselines" meta is not merged
    assert "adam-tuned" not in table
    rows = {r[0]: r for r in _rows(table)[1:]}
    assert rows["adam (tuned lr=0.003)"][-1].startswith("lr=0.003 ⚠ edge")
    budget = rows["adamw (Optuna, budget-matched)"]
    assert budget[3] == "0.6123 ± 0.0030"  # the best row
    assert budget[-1].startswith("lr=0.0021, weight_decay=0.05 24 trials · 9 pruned · 61")
    assert "⚠" not in budget[-1]
    assert "100: 0.6101" in budget[7]
    winner = rich["summary"]["comparison"][0]
    assert f"{winner['test_per_seed'][0]:.4f}" in rows["winner"][5]


def test_report_timings(rich: dict) -> None:
    head = _section(rich["html"], "summary")
    for value, label in (("2.50 h", "search time"), ("95.0 s", "tuned baselines time"),
                         ("12.0 min", "budget-matched search time"),
                         ("42.5 s", "final evaluation time")):
        assert f'<div class="v">{value}</div><div class="k">{label}</div>' in head


def test_report_operators_from_summary(rich: dict) -> None:
    sec = _section(rich["html"], "operators")
    assert "From the campaign summary." in sec
    rows = _rows(sec.split("</table>")[0])
    assert rows[0] == ["operator", "children evaluated", "improvements", "success rate"]
    assert rows[1] == ["perturb_hparam", "12", "5", "41.7%"]  # most improvements first
    assert re.search(r'<tr class="top-op"><td class="mono">perturb_hparam</td>', sec)
    assert [r[0] for r in rows[1:]] == ["perturb_hparam", "crossover+change_schedule",
                                        "add_term"]
    assert 'id="fig-operators"' in sec


def test_report_operators_from_store_and_winner_line(campaign: dict, tmp_path: Path) -> None:
    """Without summary["operators"] the table is computed from the store's individuals."""
    d = _copy_campaign(campaign, tmp_path / "c")
    with CampaignStore(d) as store:
        _rename_operators(store)
        expected = operator_success(store.individuals(), STAGE_ORDER)
    html_text = write_report(d).read_text("utf-8")
    sec = _section(html_text, "operators")
    assert "Computed from the store" in sec
    rows = _rows(sec.split("</table>")[0])[1:]
    assert rows == [[r["operator"], str(r["children"]), str(r["improvements"]),
                     f"{100 * r['success_rate']:.1f}%"] for r in expected]
    assert rows[0] == ["perturb_hparam", "2", "2", "100.0%"]  # g1-2 is cached: not counted
    assert ["add_term", "3", "0", "0.0%"] in rows
    # the winner's line: each step's operator and whether it improved on its best parent
    diff = _section(html_text, "diff")
    line = {r[1]: r for r in _rows(diff.split("</table>")[0])[1:]}
    assert line["adam"][2:] == ["seed", "0.5200", "—", "seed"]
    assert line["g0-0"][2] == "perturb_hparam" and line["g0-0"][-1] == "▲ improved"
    assert line["g1-0"][2:] == ["crossover+perturb_hparam", "0.5600", "g0-0 (0.5400)",
                                "▲ improved"]
    assert line["g2-0"][-1] == "▲ improved"
    assert "Improving steps: <code>perturb_hparam</code> (<code>g0-0</code>)" in diff


def test_report_without_new_fields(report_html: str) -> None:
    """An older store (no verdicts, kinds, genomes, timings or operators) still renders all."""
    assert 'id="timings"' not in _section(report_html, "summary")
    verdicts = _section(report_html, "verdicts")
    assert "No paired verdicts" in verdicts and "<table" not in verdicts
    structure = _section(report_html, "structure")
    header = _rows(structure)[0]
    assert [h.rsplit(" ", 1)[0] for h in header[1:]] == ["winner", "adam", "adan"]
    assert "No genome recorded for: adam-tuned." in structure
    ops = _rows(_section(report_html, "operators").split("</table>")[0])[1:]
    assert {r[0] for r in ops} == {"mutation", "crossover"}  # older operator names
    diff = _section(report_html, "diff")
    assert "mutation" in diff and "▲ improved" in diff


# -- lineage ----------------------------------------------------------------------------------


def _uids_in(text: str, known: set[str]) -> list[str]:
    return [t for t in re.findall(r"(?<![\w-])[\w-]+(?![\w-])", text) if t in known]


def test_lineage_agrees_with_store(campaign: dict) -> None:
    d = str(campaign["dir"])
    known = set(campaign["individuals"])
    result = runner.invoke(evoopt.cli.app, ["lineage", d, "--best"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    with CampaignStore(d, readonly=True) as store:
        tree = store.ancestry(WINNER)
    lines = [ln for ln in result.output.splitlines() if re.search(r"\bgen \d", ln)]
    nodes = list(iter_tree(tree))
    assert len(lines) == len(nodes)
    for ln, node in zip(lines, nodes, strict=True):
        assert _uids_in(ln, known) == [node["uid"]]
        assert f"  {node['operator']}  gen {node['generation']}" in ln
        assert f"fitness {node['fitness']:.4f}" in ln
    assert "★ g2-0" in result.output
    for node in nodes:
        assert node["formula"] in result.output
        if node.get("change"):
            assert f"changed: {node['change']}" in result.output
    # default is the winner too; an explicit uid gives that individual's tree
    default = runner.invoke(evoopt.cli.app, ["lineage", d], env={"COLUMNS": "200"})
    assert default.output == result.output
    sub = runner.invoke(evoopt.cli.app, ["lineage", d, "g0-0"], env={"COLUMNS": "200"})
    assert _uids_in(sub.output, known) == ["g0-0", "adam"]


def test_lineage_depth_and_errors(campaign: dict) -> None:
    d = str(campaign["dir"])
    known = set(campaign["individuals"])
    result = runner.invoke(evoopt.cli.app, ["lineage", d, "--depth", "1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert _uids_in(result.output, known) == ["g2-0", "g1-0"]
    assert "cut by --depth" in result.output
    bad = runner.invoke(evoopt.cli.app, ["lineage", d, "nobody"])
    assert bad.exit_code == 2 and "no individual 'nobody'" in bad.output
    both = runner.invoke(evoopt.cli.app, ["lineage", d, "g1-0", "--best"])
    assert both.exit_code == 2


# -- history ----------------------------------------------------------------------------------


def _store_rows(campaign: dict) -> tuple[list[dict], list[dict]]:
    with CampaignStore(campaign["dir"], readonly=True) as store:
        return store.individuals(), store.evaluations()


def test_history_json_agrees_with_store(campaign: dict, tmp_path: Path) -> None:
    out = tmp_path / "h.json"
    result = runner.invoke(
        evoopt.cli.app, ["history", str(campaign["dir"]), "--format", "json", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text("utf-8"))
    inds, evals = _store_rows(campaign)
    assert len(evals) == campaign["evaluations"]
    assert doc["individuals"] == inds
    assert doc["evaluations"] == evals
    for row in doc["individuals"]:
        assert {"uid", "generation", "operator", "parents", "hash", "fitness"} <= set(row)
    for row in doc["evaluations"]:
        assert {"uid", "seed", "stage", "fitness", "status", "wall_time_s"} <= set(row)


def test_history_csv_two_files(campaign: dict, tmp_path: Path) -> None:
    out = tmp_path / "exp" / "hist.csv"
    result = runner.invoke(
        evoopt.cli.app, ["history", str(campaign["dir"]), "-f", "csv", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    ind_path, ev_path = (
        tmp_path / "exp" / "hist-individuals.csv",
        tmp_path / "exp" / "hist-evaluations.csv",
    )
    assert output_paths(out, "csv") == [ind_path, ev_path]
    inds, evals = _store_rows(campaign)
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


def test_history_parquet(campaign: dict, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    with CampaignStore(campaign["dir"], readonly=True) as store:
        paths = write_history(store, "parquet", tmp_path / "h.parquet")
    assert [p.name for p in paths] == ["h-individuals.parquet", "h-evaluations.parquet"]
    inds, evals = _store_rows(campaign)
    di, de = pd.read_parquet(paths[0]), pd.read_parquet(paths[1])
    assert [list(p) for p in di["parents"]] == [r["parents"] for r in inds]
    assert list(de["status"]) == [r["status"] for r in evals]
    assert list(de["wall_time_s"]) == [r["wall_time_s"] for r in evals]


def test_history_bad_format(campaign: dict, tmp_path: Path) -> None:
    result = runner.invoke(evoopt.cli.app, ["history", str(campaign["dir"]), "-f", "xlsx"])
    assert result.exit_code == 2
    assert not list(tmp_path.iterdir())
