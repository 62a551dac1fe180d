"""The HTML report's structure table, fitness labels and module layout, on small stores built here.

Each store is a real SQLite campaign store holding real genomes (seed genomes' ``to_dict()``) and
a summary of the shape the campaign's finish writes; nothing is trained, so every test is fast.
The structure table's parts come from the genome registry and the fitness label from the task,
so the tests iterate the registry and ask the fitness package what each task's score is.
"""

from __future__ import annotations

import ast
import html
import json
import re
from pathlib import Path
from typing import Any

import pytest

from evoopt.campaign.store import CampaignStore
from evoopt.fitness import load_task
from evoopt.fitness.multitask import REFERENCE_SEED, TaskMix
from evoopt.genome import BLOCK_SLOTS, Genome, seed_genome
from evoopt.genome.genome import TOP_LEVEL_KEYS
from evoopt.report.html import write_report
from evoopt.report.lineage import format_value

REPORT = Path(__file__).resolve().parents[1] / "evoopt" / "report"
#: the genome's keys that are no part of its update rule
NOT_RULES = ("name", "description")
SEEDS = (100, 101)


def _row(name: str, kind: str, genome: Genome, uid: str | None, fitness: float) -> dict:
    """A comparison row as the finish writes it (genome and formula included)."""
    per_seed = [fitness, fitness + 0.01]
    return {"name": name, "key": name, "kind": kind, "uid": uid, "genome": genome.to_dict(),
            "formula": genome.formula(), "fitness_mean": fitness + 0.005,
            "fitness_std": 0.007, "val_accuracy_mean": None, "n_seeds": len(SEEDS),
            "per_seed": per_seed, "seed_numbers": list(SEEDS)}


def make_store(directory: Path, config: dict[str, Any],
               entries: list[tuple[str, str, Genome]]) -> Path:
    """A finished campaign store: each entry ``(name, kind, genome)`` a generation-0 individual
    and a comparison row (the first is the winner), with one evaluation per final seed."""
    rows = []
    with CampaignStore(directory) as store:
        store.set_meta("config", {"name": "structure", "stages": [{"name": "full"}], **config})
        store.set_meta("state", "finished")
        for k, (name, kind, genome) in enumerate(entries):
            uid = f"g0-{k}"
            fitness = 0.5 - 0.05 * k
            store.add_individual(uid=uid, generation=0, operator="seed", genome=genome.to_dict(),
                                 hash=genome.hash, formula=genome.formula(), fitness=fitness,
                                 stage_reached="full", status="evaluated")
            for seed in SEEDS:
                store.add_evaluation(uid=uid, hash=genome.hash, stage="final", seed=seed,
                                     split="val", fitness=fitness, status="ok")
            rows.append(_row(name, kind, genome, uid, fitness))
        store.set_meta("winner_uid", "g0-0")
        store.set_meta("summary", {"winner": {"uid": "g0-0", "formula": rows[0]["formula"],
                                              "fitness_mean": rows[0]["fitness_mean"],
                                              "fitness_std": 0.007,
                                              "seeds": rows[0]["per_seed"]},
                                   "comparison": rows})
    return directory


def _section(page: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', page, re.S)
    assert m, f"no section {sid}"
    return m.group(1)


def _text(cell_html: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", cell_html)).split())


def structure_rows(page: str) -> dict[str, list[str]]:
    """The structure table's rows by part (the ``part-…`` class): the label, then one cell text
    per compared optimizer."""
    out = {}
    table = _section(page, "structure")
    for part, body in re.findall(r'<tr class="part-([^"]+)">(.*?)</tr>', table, re.S):
        out[part] = [_text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", body, re.S)]
    return out


def rule_parts(genome_keys: tuple[str, ...] = TOP_LEVEL_KEYS) -> list[str]:
    """Every part of an update rule, as the genome defines them (its top-level keys)."""
    return [k for k in genome_keys if k not in NOT_RULES]


def _adam() -> Genome:
    return seed_genome("adam")


def _lamb_like() -> Genome:
    """LAMB with a decoupled decay instead of the update's: still a trust-ratio transform."""
    d = seed_genome("lamb").to_dict()
    d["name"] = "lamb-like"
    return Genome.from_dict(d)


@pytest.fixture(scope="module")
def muon_page(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = make_store(tmp_path_factory.mktemp("muon"), {"task": "cifar10-tiny"},
                   [("winner", "winner", seed_genome("muon")), ("lamb", "seed", _lamb_like()),
                    ("adam", "seed", _adam())])
    return write_report(d).read_text("utf-8")


# -- defect 1: the structure table shows every part the genome has --------------------------------


def test_structure_shows_muon_matrix_rules_and_lamb_transform(muon_page: str) -> None:
    rows = structure_rows(muon_page)
    muon, lamb, adam = seed_genome("muon"), _lamb_like(), _adam()
    # LAMB's trust ratio is its transform; its decay is added to the update
    assert rows["transform"][2] == "trust_ratio"
    assert rows["weight_decay"][2] == "update (value=0.01)"
    assert rows["transform"][3] == "—" and rows["transform"][1] == "—"  # adam, muon's others
    # Muon's rules for matrices: their own lr, momentum, orthogonalizing transform and terms
    matrix = muon.matrix
    assert matrix is not None and matrix.transform is not None
    assert rows["matrix.transform"][1] == "orthogonalize"
    assert rows["matrix.lr"][1] == format_value(matrix.lr) == "0.02"
    assert rows["matrix.momentum"][1] == f"ema (beta=0.95, bias_correction={format_value(False)})"
    assert rows["matrix.terms"][1] == "nesterov · weight 1 · not normalized"
    # a genome without [matrix] rules uses its one rule for every parameter
    for part in rule_parts():
        if part != "matrix":
            assert rows[f"matrix.{part}"][2:] == ["(same as above)"] * 2, part
    assert rows["matrix"][1:] == ["split: rules below", "no split", "no split"]
    assert lamb.matrix is None and adam.matrix is None


def test_structure_lists_every_part_of_the_registry(muon_page: str) -> None:
    """Every slot of the registry (and every other part of a genome) has a row, and so does
    each part of the rules for matrices: a slot added to the registry shows up here or fails."""
    rows = structure_rows(muon_page)
    assert set(BLOCK_SLOTS) <= set(rule_parts())
    for part in rule_parts():
        assert part in rows, f"the structure table has no row for {part!r}"
        if part != "matrix":
            assert f"matrix.{part}" in rows, f"no row for matrix.{part}"
    for slot in BLOCK_SLOTS:  # a block's cell names the block's kind, for whoever has one
        for column, genome in enumerate((seed_genome("muon"), _lamb_like(), _adam()), 1):
            block = getattr(genome, slot)
            assert rows[slot][column].split(" ")[0] == (block.kind if block else "—"), slot
    assert set(rows) == {*rule_parts(), *(f"matrix.{p}" for p in rule_parts() if p != "matrix")}


def test_structure_without_any_matrix_rules_has_one_matrix_row(tmp_path: Path) -> None:
    d = make_store(tmp_path, {"task": "cifar10-tiny"},
                   [("winner", "winner", _lamb_like()), ("adam", "seed", _adam())])
    rows = structure_rows(write_report(d).read_text("utf-8"))
    assert rows["matrix"][1:] == ["no split", "no split"]
    assert not [p for p in rows if p.startswith("matrix.")]
    assert set(rows) == set(rule_parts())


# -- defect 2: the fitness label comes from the task ---------------------------------------------


def figure_axis_titles(page: str, div_id: str) -> list[str]:
    """The y-axis titles of one plotly figure, read from its JSON layout in the page."""
    m = re.search(rf'Plotly\.newPlot\(\s*"{div_id}",\s*(\[.*?\]),\s*(\{{.*?\}}),\s*\{{"',
                  page, re.S)
    assert m, f"no figure {div_id}"
    layout = json.loads(m.group(2))
    return [v["title"]["text"] for k, v in layout.items() if k.startswith("yaxis") and "title" in v]


def _label_page(tmp_path: Path, config: dict[str, Any]) -> str:
    d = make_store(tmp_path, config, [("winner", "winner", seed_genome("adamw")),
                                      ("adam", "seed", _adam())])
    return write_report(d).read_text("utf-8")


@pytest.mark.parametrize(("config", "expect", "shown"), [
    ({"task": "cifar10-tiny"}, "accuracy", "fitness = val accuracy (↑ better)"),
    ({"task": "shakespeare-char-cpu"}, "uniform", None),
    ({"task": "teacher-mlp-cpu"}, "R²", None),
    ({"tasks": ["cifar10-tiny", "teacher-mlp-cpu"], "task_weights": [1.0, 2.0]}, REFERENCE_SEED,
     None),
])
def test_fitness_label_comes_from_the_task(tmp_path: Path, config: dict, expect: str,
                                           shown: str | None) -> None:
    names = config.get("tasks") or [config["task"]]
    mix = TaskMix(tuple(load_task(n) for n in names), tuple(config.get("task_weights") or [1.0]))
    assert expect in mix.score_label and mix.score_description
    page = _label_page(tmp_path, config)
    label = f"fitness = val {mix.score_label} (↑ better)"
    assert shown is None or label == shown
    assert figure_axis_titles(page, "fig-fitness") == [label]
    assert figure_axis_titles(page, "fig-seeds") == [label]
    fitness = _text(_section(page, "fitness"))
    assert f"Fitness is {mix.score_description}, on the val split; higher is better" in fitness
    if expect != "accuracy":  # the old label, wrong for every other task
        assert "val accuracy" not in fitness and "validation accuracy" not in fitness
        assert "fitness = val accuracy" not in page


def test_multitask_per_task_columns_name_each_tasks_score(tmp_path: Path) -> None:
    d = make_store(tmp_path, {"tasks": ["cifar10-tiny", "shakespeare-char-cpu"]},
                   [("winner", "winner", seed_genome("adamw")), ("adam", "seed", _adam())])
    names = ("cifar10-tiny", "shakespeare-char-cpu")
    with CampaignStore(d) as store:
        summary = store.get_meta("summary")
        for row in summary["comparison"]:
            row["tasks"] = {n: {"fitness_mean": 0.3} for n in names}
        store.set_meta("summary", summary)
    comparison = _section(write_report(d).read_text("utf-8"), "comparison")
    per_task = comparison.split("<h3>Per task</h3>")[1].split("</table>")[0]
    header = [_text(c) for c in re.findall(r"<th[^>]*>(.*?)</th>", per_task, re.S)]
    assert header == ["optimizer", *(f"{n} {TaskMix.single(load_task(n)).score_label}"
                                     for n in names)]


@pytest.mark.parametrize("config", [{"task": "/nowhere/gone.toml"}, {"task": 5},
                                    {"tasks": "cifar10-tiny"}, {"tasks": [None]},
                                    {"task": "cifar10-tiny", "split": ["val"]}])
def test_fitness_label_of_an_unreadable_task(tmp_path: Path, config: dict) -> None:
    """A store whose task cannot be read now (moved, or a config edited by hand) still gets a
    report, with a plain label that claims no particular score."""
    page = _label_page(tmp_path, config)
    assert figure_axis_titles(page, "fig-fitness") in (["fitness (↑ better)"],
                                                        ["fitness = val accuracy (↑ better)"])
    if "split" not in config:
        assert figure_axis_titles(page, "fig-fitness") == ["fitness (↑ better)"]
        assert "fitness = val accuracy" not in page


# -- defect 3: view model, figures and rendering are separate modules ------------------------------


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] if not a.name.startswith("evoopt") else a.name
                      for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module if node.module.startswith("evoopt") else
                      node.module.split(".")[0])
    return names


def test_report_modules_split_data_figures_and_rendering() -> None:
    view, figures, render = (_imports(REPORT / f"{m}.py") for m in ("view_model", "figures",
                                                                    "render"))
    assert not view & {"plotly", "jinja2", "markupsafe", "evoopt.report.figures",
                       "evoopt.report.render"}, "the view model is plain data"
    assert "plotly" in figures and not figures & {"jinja2", "evoopt.campaign.store",
                                                  "evoopt.report.render"}
    assert "jinja2" in render and "plotly" not in render  # figures come ready-made
    assert (REPORT / "html.py").stat().st_size < 3000, "html.py only re-exports"


def test_report_modules_use_no_private_names_of_each_other() -> None:
    for path in sorted(REPORT.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                    "evoopt"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"


def test_html_module_keeps_its_public_names() -> None:
    import evoopt.report.html as report_html
    from evoopt.report import render, view_model

    for name in ("REPORT_NAME", "write_report", "render_report", "report_context",
                 "funnel_view"):
        assert hasattr(report_html, name), name
    assert report_html.write_report is render.write_report
    assert report_html.funnel_view is view_model.funnel_view


def test_view_model_is_plain_data(tmp_path: Path) -> None:
    """The view of a store is computed without plotly or jinja: rows and per-generation stats
    as plain values, which the figures and the template only read."""
    from evoopt.report.figures import report_figures
    from evoopt.report.view_model import build_view

    d = make_store(tmp_path, {"task": "teacher-mlp-cpu"},
                   [("winner", "winner", seed_genome("muon")), ("adam", "seed", _adam())])
    with CampaignStore(d, readonly=True) as store:
        view = build_view(store)
    assert [r["name"] for r in view.comparison] == ["winner", "adam"]
    assert view.winner is not None and view.winner["uid"] == "g0-0"
    assert view.structure is not None and "matrix.transform" in {
        r["part"] for r in view.structure["rows"]}
    assert "R²" in view.fitness["label"]
    figs = report_figures(view)
    assert {k for k, v in figs.items() if v} == {"fitness", "seeds", "ancestry"}
    assert 'id="fig-fitness"' in figs["fitness"]


# -- a lineage deeper than any recursion -------------------------------------------------------


def test_report_of_a_very_deep_lineage(tmp_path: Path) -> None:
    """A winner 1,200 generations below its seed (a long campaign): the report renders, its
    ancestry tree shows the nearest levels and says the rest is cut, and the genome changes
    along the line cover every step."""
    from evoopt.report.view_model import TREE_DEPTH

    depth = 1200
    with CampaignStore(tmp_path) as store:
        store.set_meta("config", {"name": "deep", "task": "cifar10-tiny"})
        for i in range(depth):
            genome = {**_adam().to_dict(), "lr": 1e-3 * (1 + i % 7)}
            store.add_individual(uid=f"g{i}", generation=i, operator="seed" if i == 0 else
                                 "mutate_lr", parents=[f"g{i - 1}"] if i else [], genome=genome,
                                 fitness=0.1 + i / (2 * depth), status="evaluated")
    page = write_report(tmp_path).read_text("utf-8")
    tree = _section(page, "ancestry")
    shown = re.findall(r'<span class="uid mono">([^<]+)</span>', tree)
    assert shown == [f"g{depth - 1 - k}" for k in range(TREE_DEPTH + 1)]
    assert tree.count("deeper ancestors not shown") == 1
    steps = re.findall(r'<h3>\d+\. <span class="mono">([^<]+)</span>', _section(page, "diff"))
    assert steps == [f"g{i}" for i in range(depth)]
