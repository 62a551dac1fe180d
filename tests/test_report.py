"""Report stage: HTML report, lineage tree and history tables, on a real small campaign store."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from markupsafe import escape
from typer.testing import CliRunner

import evoopt.cli
from evoopt.campaign.store import CampaignStore
from evoopt.report.history import output_paths, write_history
from evoopt.report.html import write_report
from evoopt.report.lineage import ABSENT, FieldChange, genome_diff, iter_tree
from tests.conftest_campaign import HOSTILE, WINNER, WINNER_ANCESTORS, WINNER_LINE, build_campaign

evoopt.cli._register()
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
    assert re.search(r'<tr class="best"><td>winner</td>', table)
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
