"""The report's view model: plain data computed from a campaign store, which the figures
(:mod:`evoopt.report.figures`) and the template (:mod:`evoopt.report.render`) only read.

:func:`build_view` gathers it into a :class:`ReportView`: the comparison rows, the winner's
lineage, per-generation stats, the structure table (its parts from the genome's own keys, so
every slot of the registry shows), the verdicts, the operators and what the fitness measures
(from the campaign's task, or its mix of tasks).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from evoopt.campaign.common import TASK_INFO_META
from evoopt.campaign.operator_stats import improved, operator_success
from evoopt.campaign.store import CampaignStore
from evoopt.fitness import TaskSpec, load_task
from evoopt.fitness.multitask import TaskMix, mix_labels, weights_for
from evoopt.genome.genome import TOP_LEVEL_KEYS, genome_from_dict
from evoopt.report.lineage import LineStep, format_fitness, format_value, iter_tree, line_steps
from evoopt.stats import mean_std

EXPORT_NAME = "best_optimizer.py"
# how each comparison kind is labelled in the tables
KIND_LABELS = {
    "winner": "winner",
    "seed": "seeded",
    "tuned": "tuned",
    "budget_matched": "budget-matched",
}
VERDICTS = ("better", "worse", "indistinguishable")
#: the genome's key holding its rules for matrices (parameters of 2 or more dims)
MATRIX_PART = "matrix"
#: the parts of a genome's update rule, in the genome's order: its top-level keys (``lr``, every
#: slot of the primitive registry, ``terms``, ``matrix``) less its name and description
RULE_PARTS = tuple(k for k in TOP_LEVEL_KEYS if k not in ("name", "description"))
PART_LABELS = {"terms": "terms (kind · weight · normalized)",
               MATRIX_PART: "matrix (rules for parameters of 2+ dims)"}
NO_SPLIT, SPLIT, SAME_RULES = "no split", "split: rules below", "(same as above)"
#: levels of ancestors the report's ancestry tree and figure show (the line of genome changes
#: covers the whole first-parent line); ``evoopt lineage --depth`` shows more
TREE_DEPTH = 40
#: the label of a fitness whose task cannot be read any more
UNKNOWN_FITNESS_LABEL = "fitness (↑ better)"


@dataclass
class ReportView:
    """Everything the report shows, as plain values (dicts, lists, strings, numbers)."""

    title: str
    directory: str
    state: str
    started_at: Any
    finished_at: Any
    wall_time_s: float | None
    config_rows: list[tuple[str, str]]
    counts: dict[str, Any]
    n_generations: int
    generations: list[dict]
    individuals: list[dict]
    winner: dict | None
    winner_summary: dict[str, Any]
    tree: dict[str, Any] | None
    steps: list[dict]
    improved_by: dict[str, bool | None]
    improving_steps: list[tuple[str, Any]]
    comparison: list[dict]
    task_names: list[str]
    heldout: list[dict]
    funnel: dict | None
    structure: dict[str, Any] | None
    verdicts: list[dict] | None
    operators: list[dict]
    operators_source: str
    timings: dict | None
    code: str | None
    export_name: str
    curves: list[tuple[str, list[list[float | None]]]]
    fitness: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """The fields by name (shallow: the template reads the same objects)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


# -- what the fitness measures ---------------------------------------------------------------


def _load_tasks(names: Any) -> list[TaskSpec] | None:
    """The tasks of a stored config's list of names or paths; None when one cannot be read."""
    if not (isinstance(names, list | tuple) and names and all(isinstance(n, str) for n in names)):
        return None
    try:
        return [load_task(n) for n in names]
    except (ValueError, OSError):  # TaskError: moved, deleted or edited since the run
        return None


def _stored_view(names: Any, heldout: Any, task_info: Any, split: str
                 ) -> dict[str, Any] | None:
    """:func:`fitness_view` from stored task labels; None unless they cover every task."""
    refs = [*(names or []), *(heldout if isinstance(heldout, list | tuple) else [])]
    if not (isinstance(task_info, dict) and names and all(
            isinstance(r, str) and isinstance(task_info.get(r), dict) for r in refs)):
        return None
    try:
        selection = [task_info[r] for r in names]
        label, description = mix_labels(selection)
        labels = {task_info[r]["name"]: mix_labels([task_info[r]])[0] for r in refs}
    except (KeyError, TypeError):
        return None
    return {"label": f"fitness = {split} {label} (↑ better)", "description": description,
            "split": split, "task_labels": labels}


def fitness_view(config: Mapping[str, Any], task_info: Any = None) -> dict[str, Any]:
    """What the campaign's fitness measures, from its task(s) (the fitness package's
    :attr:`TaskMix.score_label`): ``label`` (an axis title), ``description`` (None when the
    tasks cannot be read), ``split`` and ``task_labels`` (each selection and held-out task's own
    score, by task name). ``task_info`` (the store's meta of that name: each task's labels, by
    the config's task reference) is used when it covers the tasks, so the report imports no
    task code; older stores fall back to loading the tasks."""
    split = config.get("split") if isinstance(config.get("split"), str) else "val"
    names = config.get("tasks") or ([config["task"]] if "task" in config else None)
    stored = _stored_view(names, config.get("final_heldout_tasks"), task_info, split)
    if stored is not None:
        return stored
    tasks = _load_tasks(names)
    mix = None
    if tasks:
        weights = config.get("task_weights") or ()
        try:
            mix = TaskMix(tuple(tasks), weights_for([t.name for t in tasks], weights))
        except (ValueError, TypeError):
            mix = None
    labels = {}
    heldout = config.get("final_heldout_tasks")
    for name in heldout if isinstance(heldout, list | tuple) else []:
        held = _load_tasks([name])
        if held:
            labels[held[0].name] = TaskMix.single(held[0]).score_label
    if mix is None:
        return {"label": UNKNOWN_FITNESS_LABEL, "description": None, "split": split,
                "task_labels": labels}
    labels |= {t.name: TaskMix.single(t).score_label for t in mix.tasks}
    return {"label": f"fitness = {split} {mix.score_label} (↑ better)",
            "description": mix.score_description, "split": split, "task_labels": labels}


# -- comparison rows -------------------------------------------------------------------------


def per_seed_from_evaluations(
    store: CampaignStore, ind: dict, prefer: str | None = None
) -> dict[str, Any]:
    """Per-seed fitness of an individual at its highest evaluated stage (val split), or at
    stage ``prefer`` when it has evaluations there."""
    h = ind.get("hash")
    evals = store.evaluations(hash=h) if h else []
    evals = [e for e in evals if (e.get("split") or "val") == "val"]
    if not evals:
        return {"per_seed": [], "stage": None, "curves": []}
    stage = ind.get("stage_reached") or evals[-1]["stage"]
    if prefer is not None and any(e["stage"] == prefer for e in evals):
        stage = prefer
    picked = [e for e in evals if e["stage"] == stage] or evals
    picked.sort(key=lambda e: e["seed"])
    return {
        "per_seed": [e["fitness"] for e in picked],
        "seed_ids": [e["seed"] for e in picked],
        "val_accuracy": [e["val_accuracy"] for e in picked if e.get("val_accuracy") is not None],
        "curves": [e["train_loss_curve"] for e in picked if e.get("train_loss_curve")],
        "stage": picked[0]["stage"],
    }


def _row_kind(row: dict) -> str:
    """A comparison row's kind: its ``kind`` field, or (older stores) guessed from its name."""
    kind = row.get("kind")
    if kind == "seeded":
        return "seed"
    if kind in KIND_LABELS:
        return str(kind)
    name = str(row.get("name"))
    return "winner" if name == "winner" else "tuned" if "(tuned" in name else "seed"


def _tuning_items(row: dict) -> list[dict[str, Any]]:
    """A tuned/budget-matched row's tuned hyperparameters: ``[{name, value, at_edge}]``.

    Reads ``row["tuning"]`` (``best``/``best_point``/``params``: the chosen point, a dict or a
    bare lr; ``at_grid_edge``: a bool, a list of names or a ``{name: bool}`` dict), falling
    back to the older top-level ``lr`` / ``at_grid_edge`` fields.
    """
    tuning = row.get("tuning") if isinstance(row.get("tuning"), dict) else {}
    best: Any = None
    for key in ("best", "best_point", "best_params", "params"):
        if tuning.get(key) is not None:
            best = tuning[key]
            break
    if best is None and row.get("lr") is not None and _row_kind(row) != "winner":
        best = {"lr": row["lr"]}
    if best is None:
        return []
    if not isinstance(best, dict):
        best = {"lr": best}
    edge = tuning.get("at_grid_edge", row.get("at_grid_edge"))
    items = []
    for name, value in best.items():
        if isinstance(edge, dict):
            at_edge = bool(edge.get(name))
        elif isinstance(edge, list | tuple | set):
            at_edge = name in edge
        else:  # one flag for the whole point: the grid is over lr
            at_edge = bool(edge) and (name == "lr" or len(best) == 1)
        items.append({"name": str(name), "value": format_value(value), "at_edge": at_edge})
    return items


def _tuning_notes(row: dict) -> list[str]:
    """Search bookkeeping of a tuned row: Optuna trials, pruned trials, paid evaluations, grid."""
    tuning = row.get("tuning") if isinstance(row.get("tuning"), dict) else {}
    notes = []
    for key, label in (("n_trials", "trials"), ("pruned", "pruned"), ("paid", "evaluations paid")):
        if tuning.get(key) is not None:
            notes.append(f"{format_value(tuning[key])} {label}")
    grid = tuning.get("grid") or tuning.get("lr_grid")
    if isinstance(grid, dict) and grid:  # per dimension, as the campaign runner stores it
        notes.append("grid " + "; ".join(
            f"{name} ∈ {{{', '.join(format_value(v) for v in values)}}}"
            for name, values in grid.items() if isinstance(values, list | tuple)))
    elif isinstance(grid, list | tuple) and grid:
        notes.append("grid " + ", ".join(format_value(g) for g in grid))
    elif isinstance(row.get("sweep"), dict) and row["sweep"]:
        notes.append("grid " + ", ".join(map(str, row["sweep"])))
    return notes


def comparison_rows(store: CampaignStore, summary: dict, winner: dict | None) -> list[dict]:
    """Comparison rows: summary's (winner, seeds, tuned, budget-matched), tuned baselines meta
    (older stores), or (running campaign) the evaluations paid so far."""
    rows = [dict(r, kind=_row_kind(r)) for r in summary.get("comparison") or []]
    if not rows:  # campaign still running: derive from the evaluations paid so far
        cands = ([("winner", winner)] if winner else []) + [
            (i["uid"], i) for i in store.individuals() if i.get("operator") == "seed"
        ]
        for name, ind in cands:
            d = per_seed_from_evaluations(store, ind)
            m, s = mean_std(d["per_seed"])
            am, _ = mean_std(d.get("val_accuracy") or [])
            rows.append(
                {
                    "name": name,
                    "uid": ind["uid"],
                    "fitness_mean": m,
                    "fitness_std": s,
                    "val_accuracy_mean": am,
                    "n_seeds": len(d["per_seed"]),
                    "per_seed": d["per_seed"],
                    "seed_numbers": d.get("seed_ids"),
                    "kind": "winner" if name == "winner" else "seed",
                }
            )
    # older stores list tuned baselines only in the "baselines" meta; a summary whose rows carry
    # a "kind" lists every compared optimizer itself
    new_schema = any("kind" in r for r in summary.get("comparison") or [])
    baselines = [] if new_schema else store.get_meta("baselines") or []
    if isinstance(baselines, dict):
        baselines = [dict(v, name=v.get("name", k)) for k, v in baselines.items()]
    shown = {r.get("name") for r in rows} | {r.get("key") for r in rows if r.get("key")}
    for b in baselines:
        if b.get("key") and b["key"] in shown:
            continue
        name = str(b.get("name", "baseline"))
        name = name if "tuned" in name else f"{name} (tuned)"
        if name not in shown:  # the runner also lists its tuned baselines in the summary
            kind = _row_kind(b) if b.get("kind") in KIND_LABELS else "tuned"
            rows.append(dict(b, name=name, kind=kind))
    for r in rows:
        if r.get("fitness_mean") is None and r.get("per_seed"):
            r["fitness_mean"], r["fitness_std"] = mean_std(list(r["per_seed"]))
        r.setdefault("n_seeds", len(r.get("per_seed") or []))
        r["kind_label"] = KIND_LABELS.get(r["kind"], r["kind"])
        seeds = r.get("seed_numbers") or []
        per_seed = r.get("per_seed") or []
        r["seed_pairs"] = list(
            zip(seeds if len(seeds) == len(per_seed) else [None] * len(per_seed), per_seed,
                strict=True)
        )
        r["tuned_params"] = _tuning_items(r)
        r["tuning_notes"] = _tuning_notes(r)
    best = max((r["fitness_mean"] for r in rows if r.get("fitness_mean") is not None), default=None)
    for r in rows:
        r["is_best"] = best is not None and r.get("fitness_mean") == best
    return rows


# -- why: structure, verdicts, operators -----------------------------------------------------


def _block_str(block: Any) -> str:
    """``kind (hp=value, ...)`` for one genome table; ``—`` when the genome has none."""
    if not isinstance(block, dict) or not block:
        return "—"
    rest = [f"{k}={format_value(v)}" for k, v in block.items() if k != "kind"]
    kind = str(block.get("kind", "?"))
    return f"{kind} ({', '.join(rest)})" if rest else kind


def _term_str(term: Any) -> str:
    if not isinstance(term, dict):
        return format_value(term)
    extra = [
        f"{k}={format_value(v)}"
        for k, v in term.items()
        if k not in ("kind", "weight", "normalize")
    ]
    parts = [str(term.get("kind", "?")), f"weight {format_value(term.get('weight', 1.0))}"]
    parts.append("normalized" if term.get("normalize") else "not normalized")
    return " · ".join(parts) + (f" ({', '.join(extra)})" if extra else "")


def _part_cell(genome: Mapping[str, Any], part: str) -> str | list[str]:
    """One part of a genome (or of its rules for matrices) as a structure-table cell."""
    value = genome.get(part)
    if part == MATRIX_PART:
        return SPLIT if isinstance(value, dict) else NO_SPLIT
    if part == "terms" or isinstance(value, list):
        return [_term_str(t) for t in value or []] or ["—"]
    if isinstance(value, dict) or value is None:
        return _block_str(value)
    return format_value(value)


def _formula_of(genome: dict) -> str | None:
    """The genome's one-line formula; None when the stored genome does not load."""
    try:
        return genome_from_dict(genome).formula()
    except Exception:
        return None


def structure_view(store: CampaignStore, comparison: list[dict]) -> dict[str, Any] | None:
    """The winner's genome against each compared optimizer's, part by part (:data:`RULE_PARTS`),
    with a row per part of the rules for matrices when any of them has such rules.

    Genomes come from each comparison row's ``genome`` (a ``Genome.to_dict()``) or, when the
    row has none, from the store's individual with the row's uid.
    """
    columns = []
    for row in comparison:
        genome, formula = row.get("genome"), row.get("formula")
        ind = store.get_individual(row["uid"]) if row.get("uid") else None
        if not isinstance(genome, dict) and ind is not None:
            genome = ind.get("genome")
        if not isinstance(genome, dict):
            continue
        if formula is None and ind is not None and ind.get("genome") == genome:
            formula = ind.get("formula")
        if formula is None:
            formula = _formula_of(genome)
        cells = {part: _part_cell(genome, part) for part in RULE_PARTS}
        matrix = genome.get(MATRIX_PART)
        for part in RULE_PARTS:
            if part != MATRIX_PART:
                cells[f"{MATRIX_PART}.{part}"] = (
                    _part_cell(matrix, part) if isinstance(matrix, dict) else SAME_RULES)
        columns.append({"name": row.get("name"), "kind": row["kind"],
                        "kind_label": row["kind_label"], "formula": formula, "cells": cells})
    if not columns:
        return None
    parts = [(p, PART_LABELS.get(p, p.replace("_", " "))) for p in RULE_PARTS]
    if any(c["cells"][MATRIX_PART] == SPLIT for c in columns):
        parts += [(f"{MATRIX_PART}.{p}", f"matrices: {label}") for p, label in parts
                  if p != MATRIX_PART]
    ref = next((c for c in columns if c["kind"] == "winner"), None)
    rows = []
    for part, label in parts:
        cells = [
            {"value": c["cells"][part], "differs": ref is not None and c is not ref
             and c["cells"][part] != ref["cells"][part]}
            for c in columns
        ]
        rows.append({"part": part, "label": label, "cells": cells})
    missing = [r.get("name") for r in comparison if r.get("name") not in
               {c["name"] for c in columns}]
    return {"columns": columns, "rows": rows, "missing": missing, "has_winner": ref is not None}


def verdict_rows(summary: dict, comparison: list[dict]) -> list[dict] | None:
    """The summary's paired verdicts, or None when the summary has none (nothing is computed)."""
    raw = summary.get("verdicts")
    if not raw:
        return None
    names = {r.get("key"): r.get("name") for r in comparison if r.get("key")}
    kinds = {r.get("key"): r.get("kind_label") for r in comparison if r.get("key")}
    rows = []
    for v in raw:
        ci = v.get("ci95") or [None, None]
        verdict = str(v.get("verdict") or "")
        rows.append(
            dict(
                v,
                opponent=v.get("name") or names.get(v.get("against")) or v.get("against"),
                opponent_kind=kinds.get(v.get("against")),
                ci_lo=ci[0] if len(ci) > 0 else None,
                ci_hi=ci[1] if len(ci) > 1 else None,
                verdict=verdict,
                css=verdict if verdict in VERDICTS else "unknown",
            )
        )
    return rows


def _task_names(comparison: list[dict]) -> list[str]:
    """The tasks of a multi-task campaign's comparison rows (none for one task)."""
    return next((list(r["tasks"]) for r in comparison if isinstance(r.get("tasks"), dict)), [])


def heldout_view(summary: dict) -> list[dict]:
    """The held-out tasks' tables: rows as the comparison's, verdicts as the main ones."""
    out = []
    for held in summary.get("heldout") or []:
        rows = [dict(r, kind_label=KIND_LABELS.get(str(r.get("kind")), r.get("kind")),
                     tuned_params=_tuning_items(r)) for r in held.get("rows") or []]
        out.append(dict(held, rows=rows,
                        verdicts=verdict_rows({"verdicts": held.get("verdicts")}, rows) or []))
    return out


def _count(x: Any) -> int:
    """A non-negative integer from a summary field (0 when it is not one)."""
    return x if isinstance(x, int) and not isinstance(x, bool) and x >= 0 else 0


def funnel_view(summary: dict) -> dict | None:
    """The funnel's record (finalists against tuned AdamW-cosine per held-out task), with one
    cell per task for each finalist; None when the campaign ran none (or it is malformed)."""
    funnel = summary.get("funnel")
    if not isinstance(funnel, dict) or not isinstance(funnel.get("finalists"), list):
        return None
    tasks = [str(t) for t in funnel.get("tasks") or []]
    finalists = []
    for f in funnel["finalists"]:
        if not isinstance(f, dict):
            continue
        checks = f.get("tasks") if isinstance(f.get("tasks"), dict) else {}
        finalists.append(dict(f, rank=_count(f.get("rank")), lost_on=list(f.get("lost_on") or []),
                              cells=[checks.get(t) if isinstance(checks.get(t), dict) else None
                                     for t in tasks]))
    lost = next((f["lost_on"] for f in finalists if f.get("uid") == funnel.get("winner_uid")), [])
    return dict(funnel, tasks=tasks, finalists=finalists, winner_lost_on=lost,
                winner_rank=_count(funnel.get("winner_rank")),
                reference=str(funnel.get("reference") or "adamw-cosine"))


def stage_order(config: Any, store: CampaignStore) -> dict[str, int]:
    """Fidelity stage name -> index, in the config's order.

    The reserved "final" stage (the re-evaluation at the last stage's budget on the final
    seeds) ranks with the last stage, so an individual re-evaluated at the end is not counted
    as further along than one that merely reached the last search stage.
    """
    stages = config.get("stages") if isinstance(config, dict) else None
    names = [s.get("name") for s in stages or [] if isinstance(s, dict) and s.get("name")]
    if not names:  # no config: the order stages first appear in the evaluations
        names = list(dict.fromkeys(e["stage"] for e in store.evaluations() if e.get("stage")))
        names = [n for n in names if n != "final"]
    order = {n: k for k, n in enumerate(names)}
    order.setdefault("final", max(len(order) - 1, 0))
    return order


def operator_rows(summary: dict, individuals: list[dict], order: dict[str, int]
                  ) -> tuple[list[dict], str]:
    """Per-operator success: the summary's ``operators`` when present, else from the store."""
    raw = summary.get("operators")
    if isinstance(raw, dict):
        raw = [dict(v, operator=v.get("operator", k)) for k, v in raw.items()]
    if isinstance(raw, list) and raw:
        rows, source = [dict(r) for r in raw if isinstance(r, dict)], "summary"
    else:
        rows, source = operator_success(individuals, order), "store"
    for r in rows:
        n, k = r.get("children") or 0, r.get("improvements") or 0
        if r.get("success_rate") is None:
            r["success_rate"] = k / n if n else 0.0
    rows.sort(key=lambda r: (-(r.get("improvements") or 0), -r["success_rate"],
                             str(r.get("operator"))))
    top = rows[0].get("improvements") if rows else None
    for r in rows:
        r["is_top"] = bool(top) and r.get("improvements") == top
    return rows, source


def _improvements(individuals: list[dict], order: dict[str, int]) -> dict[str, bool | None]:
    """uid -> whether it beat its best parent (None: a seed, or never scored)."""
    by_uid = {r["uid"]: r for r in individuals}
    out: dict[str, bool | None] = {}
    for r in individuals:
        parents = [by_uid[p] for p in r.get("parents") or () if p in by_uid]
        out[r["uid"]] = improved(r, parents, order) if parents else None
    return out


def _step_rows(steps: list[LineStep], individuals: list[dict],
               improved_by: dict[str, bool | None], order: dict[str, int]) -> list[dict]:
    """The winner's line with each step's operator and whether it improved on its parents."""
    by_uid = {r["uid"]: r for r in individuals}
    rows = []
    for st in steps:
        ind = st.individual
        scored = [
            by_uid[p] for p in ind.get("parents") or ()
            if p in by_uid and by_uid[p].get("fitness") is not None
        ]
        best = max(
            scored,
            key=lambda r: (order.get(r.get("stage_reached") or "", -1), r["fitness"]),
            default=None,
        )
        rows.append(
            {
                "step": st,
                "operator": ind.get("operator"),
                "improved": improved_by.get(ind["uid"]),
                "best_parent": best,
            }
        )
    return rows


def _tree_nodes(tree: dict[str, Any]) -> dict[str, Any]:
    """Attach jinja-friendly display fields to every ancestry node (in place)."""
    for node in iter_tree(tree):
        node["fitness_str"] = format_fitness(node.get("fitness"))
    return tree


def _config_rows(config: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Flatten the config for a key/value table (lists rendered as JSON)."""
    if isinstance(config, dict):
        rows: list[tuple[str, str]] = []
        for k, v in config.items():
            rows += _config_rows(v, f"{prefix}.{k}" if prefix else str(k))
        return rows
    if isinstance(config, list):
        return [(prefix, json.dumps(config))]
    return [(prefix, format_value(config))]


def _counts(store: CampaignStore, summary: dict, individuals: list[dict]) -> dict[str, Any]:
    statuses: dict[str, int] = defaultdict(int)
    for i in individuals:
        statuses[i.get("status") or "pending"] += 1
    return {
        "individuals": len(individuals),
        "done": summary.get("evaluations_done", len(store.evaluations())),
        "cached": summary.get("evaluations_cached", statuses["cached"]),
        "saved": summary.get("evaluations_saved_by_hurdles", statuses["stopped_at_hurdle"]),
        "failed": statuses["failed"],
        "statuses": dict(statuses),
    }


def _curves(store: CampaignStore, comparison: list[dict]
            ) -> list[tuple[str, list[list[float | None]]]]:
    """Each compared optimizer's training-loss curves (one per seed) at its final stage."""
    curves = []
    for row in comparison:
        ind = store.get_individual(row["uid"]) if row.get("uid") else None
        if ind is None and row.get("hash"):
            ind = {"hash": row["hash"]}
        if ind is not None:
            cs = per_seed_from_evaluations(store, ind, prefer="final")["curves"]
            if cs:
                curves.append((str(row["name"]), cs))
    return curves


def scored_individuals(individuals: list[dict]) -> list[dict]:
    """The individuals with a real score: pending ones and failed runs left out, by status
    (every store labels a failed individual ``failed``; an ok all-zero task mix stored at
    ``WORST_FITNESS`` is a score)."""
    return [i for i in individuals if i.get("fitness") is not None
            and i.get("status") != "failed"]


def build_view(store: CampaignStore) -> ReportView:
    """Everything the report shows, computed from the store (and the exported code file)."""
    meta = store.all_meta()
    summary = meta.get("summary") or {}
    if not isinstance(summary, dict):  # damaged: the CLI's store_errors names the store
        raise ValueError(f"meta 'summary' is a {type(summary).__name__}, not a table")
    individuals = store.individuals()
    generations = store.generations()
    winner_uid = store.best_uid()
    winner = store.get_individual(winner_uid) if winner_uid else None
    tree = _tree_nodes(store.ancestry(winner_uid, depth=TREE_DEPTH)) if winner else None
    steps = line_steps(store, winner_uid) if winner else []
    comparison = comparison_rows(store, summary, winner)
    config = meta.get("config") or {}
    order = stage_order(config, store)
    operators, operators_source = operator_rows(summary, individuals, order)
    improved_by = _improvements(individuals, order)
    winner_summary = dict(summary.get("winner") or {})
    if winner and not winner_summary:
        d = per_seed_from_evaluations(store, winner)
        m, s = mean_std(d["per_seed"])
        winner_summary = {
            "uid": winner_uid,
            "hash": winner.get("hash"),
            "formula": winner.get("formula"),
            "fitness_mean": m,
            "fitness_std": s,
            "seeds": d["per_seed"],
        }
    exported = summary.get("exported")
    # the exported file's name only: a store never points the report at a file elsewhere
    export = store.directory / (Path(exported).name if isinstance(exported, str) and
                                Path(exported).name else EXPORT_NAME)
    code = export.read_text("utf-8", errors="replace") if export.is_file() else None
    wall = summary.get("wall_time_s", meta.get("wall_time_s"))
    if wall is None and generations:
        wall = sum(g.get("wall_time_s") or 0.0 for g in generations)
    name = config.get("name") if isinstance(config, dict) else None
    return ReportView(
        title=f"evoopt campaign {name or store.directory.name}",
        directory=str(store.directory),
        state=meta.get("state", "unknown"),
        started_at=meta.get("started_at"),
        finished_at=meta.get("finished_at"),
        wall_time_s=wall,
        config_rows=_config_rows(config),
        counts=_counts(store, summary, individuals),
        n_generations=len(generations),
        generations=generations,
        individuals=individuals,
        winner=winner,
        winner_summary=winner_summary,
        tree=tree,
        steps=_step_rows(steps, individuals, improved_by, order),
        improved_by=improved_by,
        improving_steps=[
            (st.individual["uid"], st.individual.get("operator"))
            for st in steps
            if improved_by.get(st.individual["uid"])
        ],
        comparison=comparison,
        task_names=_task_names(comparison),
        heldout=heldout_view(summary),
        funnel=funnel_view(summary),
        structure=structure_view(store, comparison),
        verdicts=verdict_rows(summary, comparison),
        operators=operators,
        operators_source=operators_source,
        timings=summary.get("timings") if isinstance(summary.get("timings"), dict) else None,
        code=code,
        export_name=export.name,
        curves=_curves(store, comparison),
        fitness=fitness_view(config if isinstance(config, dict) else {},
                             store.get_meta(TASK_INFO_META)),
    )


__all__ = ["EXPORT_NAME", "KIND_LABELS", "RULE_PARTS", "TREE_DEPTH", "ReportView", "build_view",
           "comparison_rows", "fitness_view", "funnel_view", "heldout_view", "operator_rows",
           "per_seed_from_evaluations", "scored_individuals", "stage_order", "structure_view",
           "VERDICTS", "verdict_rows"]
