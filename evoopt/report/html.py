"""The campaign report: one self-contained HTML file (plotly.js inlined, nothing fetched).

Every string that comes from the store goes through jinja2 autoescape (or plotly's JSON
encoding); the only raw HTML inserted is plotly's own output.
"""

from __future__ import annotations

import html
import json
import statistics
import time
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from plotly.offline import get_plotlyjs

from evoopt.campaign.operator_stats import improved, operator_success
from evoopt.campaign.store import CampaignStore
from evoopt.fileio import atomic_write_text
from evoopt.report.lineage import format_value, iter_tree, line_steps
from evoopt.stats import mean_std

REPORT_NAME = "report.html"
EXPORT_NAME = "best_optimizer.py"
# Fitness is validation accuracy, maximised; evoopt.fitness.WORST_FITNESS (-1.0) marks a failed
# run (kept local: importing evoopt.fitness would pull in torch just to render a report).
FITNESS_LABEL = "fitness = val accuracy (↑ better)"
WORST_FITNESS = -1.0

_PLOT_CONFIG = {"displaylogo": False, "responsive": True}
_WINNER_COLOR = "#d62728"
_SEED_COLOR = "#1f77b4"
_TUNED_COLOR = "#2ca02c"
_BUDGET_COLOR = "#9467bd"
_KIND_COLORS = {
    "winner": _WINNER_COLOR,
    "seed": _SEED_COLOR,
    "tuned": _TUNED_COLOR,
    "budget_matched": _BUDGET_COLOR,
}
# how each comparison kind is labelled in the tables
KIND_LABELS = {
    "winner": "winner",
    "seed": "seeded",
    "tuned": "tuned",
    "budget_matched": "budget-matched",
}
# the genome's parts, in the order the structure table lists them
STRUCTURE_PARTS = (
    ("terms", "terms (kind · weight · normalized)"),
    ("momentum", "momentum"),
    ("grad_diff", "grad_diff"),
    ("second_moment", "second moment"),
    ("schedule", "schedule"),
    ("weight_decay", "weight decay"),
    ("clip", "clip"),
    ("lr", "lr"),
)
VERDICTS = ("better", "worse", "indistinguishable")


def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("evoopt.report", "templates"),
        autoescape=select_autoescape(["html", "j2", "html.j2"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fit"] = _fmt_fit
    env.filters["val"] = format_value
    env.filters["pm"] = _fmt_pm
    env.filters["when"] = _fmt_time
    env.filters["duration"] = _fmt_duration
    env.filters["signed"] = _fmt_signed
    env.filters["pvalue"] = _fmt_p
    env.filters["pct"] = _fmt_pct
    return env


def _fmt_fit(v: Any) -> str:
    return "—" if v is None else f"{v:.4f}"


def _fmt_pm(mean: Any, std: Any) -> str:
    if mean is None:
        return "—"
    return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}"


def _fmt_signed(v: Any) -> str:
    return "—" if v is None else f"{v:+.4f}".replace("-", "−")


def _fmt_p(p: Any) -> str:
    if p is None:
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _fmt_pct(v: Any) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _fmt_time(ts: Any) -> str:
    if ts is None:
        return "—"
    if isinstance(ts, int | float):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    return str(ts)


def _fmt_duration(s: Any) -> str:
    if s is None:
        return "—"
    s = float(s)
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _fig_html(fig: go.Figure, div_id: str) -> Markup:
    html = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=_PLOT_CONFIG)
    return Markup(html)  # noqa: S704 -- plotly output; data strings are JSON-encoded by plotly


def _t(s: Any, n: int = 70) -> str:
    """A store string for plotly text: shortened and entity-escaped (plotly text is HTML-ish)."""
    s = "" if s is None else str(s)
    return html.escape(s if len(s) <= n else s[: n - 1] + "…", quote=False)


def _jitter(uid: Any) -> float:
    """Deterministic horizontal offset in [-0.15, 0.15) so dots of one generation spread out."""
    return ((zlib.crc32(str(uid).encode()) % 1000) / 1000 - 0.5) * 0.3


# -- figures ---------------------------------------------------------------------------------


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def fitness_figure(generations: list[dict], individuals: list[dict]) -> go.Figure:
    """Best / median fitness per generation, the individuals' interquartile band, every dot.

    Best and median come from the ``generations`` table; the band and the dots from the
    individuals (failed runs at ``WORST_FITNESS`` are left out so they do not squash the axis).
    """
    fig = go.Figure()
    scored = [
        i
        for i in individuals
        if i.get("fitness") is not None
        and i["fitness"] > WORST_FITNESS
        and i.get("status") != "failed"
    ]
    by_gen: dict[int, list[float]] = defaultdict(list)
    for ind in scored:
        by_gen[ind["generation"]].append(ind["fitness"])
    band_gens = sorted(by_gen)
    if band_gens:
        q1 = [_quantile(by_gen[g], 0.25) for g in band_gens]
        q3 = [_quantile(by_gen[g], 0.75) for g in band_gens]
        fig.add_trace(
            go.Scatter(
                x=band_gens + band_gens[::-1],
                y=q3 + q1[::-1],
                fill="toself",
                fillcolor="rgba(31,119,180,0.13)",
                line={"width": 0},
                hoverinfo="skip",
                name="interquartile range",
            )
        )
    by_status: dict[str, list[dict]] = defaultdict(list)
    for ind in scored:
        by_status[ind.get("status") or "evaluated"].append(ind)
    symbols = {"evaluated": "circle", "cached": "circle-open", "stopped_at_hurdle": "x-thin-open"}
    colors = {"evaluated": "#1f77b4", "cached": "#2ca02c", "stopped_at_hurdle": "#ff7f0e"}
    for status, inds in sorted(by_status.items()):
        fig.add_trace(
            go.Scatter(
                x=[i["generation"] + _jitter(i["uid"]) for i in inds],
                y=[i["fitness"] for i in inds],
                mode="markers",
                marker={
                    "symbol": symbols.get(status, "circle"),
                    "size": 7,
                    "opacity": 0.6,
                    "color": colors.get(status, "#7f7f7f"),
                    "line": {"width": 1.5, "color": colors.get(status, "#7f7f7f")},
                },
                name=f"individual ({status.replace('_', ' ')})",
                customdata=[
                    [_t(i["uid"]), _t(i.get("operator")), _t(i.get("formula"))] for i in inds
                ],
                hovertemplate="%{customdata[0]} (%{customdata[1]})<br>fitness %{y:.4f}"
                "<br>%{customdata[2]}<extra></extra>",
            )
        )
    if generations:
        gens = [g["generation"] for g in generations]
        fig.add_trace(
            go.Scatter(
                x=gens,
                y=[g["median"] for g in generations],
                mode="lines+markers",
                name="median",
                line={"color": "#555", "dash": "dash"},
            )
        )
        fig.add_trace(
            go.Scatter(
                x=gens,
                y=[g["best"] for g in generations],
                mode="lines+markers",
                name="best",
                line={"color": _WINNER_COLOR, "width": 3},
                customdata=[[_t(g.get("best_uid"))] for g in generations],
                hovertemplate="gen %{x}: best %{y:.4f}<br>%{customdata[0]}<extra></extra>",
            )
        )
    fig.update_layout(
        xaxis_title="generation",
        yaxis_title=FITNESS_LABEL,
        template="plotly_white",
        height=430,
        margin={"l": 60, "r": 20, "t": 20, "b": 50},
        legend={"orientation": "h", "y": -0.2},
    )
    fig.update_xaxes(dtick=1)
    return fig


def curves_figure(curves: list[tuple[str, list[list[float | None]]]]) -> go.Figure:
    """Training-loss curves (one thin line per seed, bold mean) for each compared optimizer."""
    fig = go.Figure()
    palette = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    for k, (name, seed_curves) in enumerate(curves):
        color = palette[k % len(palette)]
        n = max((len(c) for c in seed_curves), default=0)
        if n == 0:
            continue
        xs = [(j + 0.5) / n for j in range(n)]
        for c in seed_curves:
            fig.add_trace(
                go.Scatter(
                    x=xs[: len(c)],
                    y=c,
                    mode="lines",
                    line={"color": color, "width": 1},
                    opacity=0.35,
                    legendgroup=name,
                    showlegend=False,
                    hoverinfo="skip",
                )
            )
        mean = []
        for j in range(n):
            vals = [c[j] for c in seed_curves if j < len(c) and c[j] is not None]
            mean.append(statistics.fmean(vals) if vals else None)
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=mean,
                mode="lines",
                line={"color": color, "width": 3},
                name=_t(name),
                legendgroup=name,
                hovertemplate="%{y:.4f}<extra>" + _t(name) + "</extra>",
            )
        )
    fig.update_layout(
        template="plotly_white",
        xaxis_title="fraction of training",
        yaxis_title="training loss (bin mean)",
        height=360,
        margin={"l": 60, "r": 20, "t": 20, "b": 50},
    )
    return fig


def ancestry_figure(tree: dict[str, Any], winner: str | None) -> go.Figure:
    """The ancestry DAG as a network: x = generation, nodes coloured by fitness."""
    nodes: dict[str, dict] = {}
    edges: list[tuple[str, str]] = []
    for node in iter_tree(tree):
        if node.get("missing"):
            continue
        nodes.setdefault(node["uid"], node)
        for parent in node.get("ancestors", []):
            if not parent.get("missing"):
                edges.append((parent["uid"], node["uid"]))
    edges = list(dict.fromkeys(edges))
    # lay out: one column per generation; rows in depth-first order (keeps lines together)
    columns: dict[int, list[str]] = defaultdict(list)
    for uid, node in nodes.items():
        columns[node.get("generation") or 0].append(uid)
    pos: dict[str, tuple[float, float]] = {}
    height = max((len(c) for c in columns.values()), default=1)
    for gen, uids in columns.items():
        for row, uid in enumerate(uids):
            pos[uid] = (gen, (len(uids) - 1) / 2 - row)

    fig = go.Figure()
    ex, ey, mx, my, mtext, mhover = [], [], [], [], [], []
    for a, b in edges:
        (x0, y0), (x1, y1) = pos[a], pos[b]
        ex += [x0, x1, None]
        ey += [y0, y1, None]
        child = nodes[b]
        mx.append((x0 + x1) / 2)
        my.append((y0 + y1) / 2)
        mtext.append(_t(child.get("operator")))
        change = child.get("change") or "(no description)"
        mhover.append(f"{_t(child.get('operator'))}: {_t(change, 120)}")
    fig.add_trace(
        go.Scatter(
            x=ex,
            y=ey,
            mode="lines",
            line={"color": "#999", "width": 1.5},
            hoverinfo="skip",
            showlegend=False,
        )
    )
    fig.add_trace(
        go.Scatter(
            x=mx,
            y=my,
            mode="text",
            text=mtext,
            textfont={"size": 10, "color": "#555"},
            hovertext=mhover,
            hoverinfo="text",
            showlegend=False,
        )
    )
    uids = list(nodes)
    fits = [nodes[u].get("fitness") for u in uids]
    symbols = [
        "star" if u == winner else "diamond" if nodes[u].get("operator") == "seed" else "circle"
        for u in uids
    ]
    fig.add_trace(
        go.Scatter(
            x=[pos[u][0] for u in uids],
            y=[pos[u][1] for u in uids],
            mode="markers+text",
            text=[_t(u) for u in uids],
            textposition="top center",
            textfont={"size": 12},
            marker={
                "size": [22 if u == winner else 15 for u in uids],
                "symbol": symbols,
                "color": [f if f is not None else float("nan") for f in fits],
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": {"text": "fitness"}},
                "line": {"width": [2 if u == winner else 0.5 for u in uids], "color": "#333"},
            },
            customdata=[
                [
                    _t(nodes[u].get("operator")),
                    _fmt_fit(nodes[u].get("fitness")),
                    _t(nodes[u].get("formula"), 90),
                    _t(nodes[u].get("change"), 90) or "—",
                ]
                for u in uids
            ],
            hovertemplate="<b>%{text}</b> (%{customdata[0]})<br>fitness %{customdata[1]}"
            "<br>%{customdata[2]}<br>change: %{customdata[3]}<extra></extra>",
            showlegend=False,
        )
    )
    fig.update_layout(
        template="plotly_white",
        height=max(320, 70 * height + 120),
        margin={"l": 30, "r": 20, "t": 20, "b": 50},
        xaxis={"title": "generation", "dtick": 1, "zeroline": False},
        yaxis={"visible": False},
    )
    return fig


def seeds_figure(rows: list[dict]) -> go.Figure:
    """Per-seed fitness of the winner and every comparison entry (box + points)."""
    fig = go.Figure()
    for row in rows:
        per_seed = [x for x in row.get("per_seed") or [] if x is not None]
        if not per_seed:
            continue
        fig.add_trace(
            go.Box(
                y=per_seed,
                name=_t(row["name"]),
                boxpoints="all",
                jitter=0.3,
                pointpos=0,
                marker={"color": _KIND_COLORS.get(row.get("kind", ""), _SEED_COLOR)},
                hovertemplate="%{y:.4f}<extra>" + _t(row["name"]) + "</extra>",
            )
        )
    fig.update_layout(
        template="plotly_white",
        yaxis_title=FITNESS_LABEL,
        height=360,
        showlegend=False,
        margin={"l": 60, "r": 20, "t": 20, "b": 40},
    )
    return fig


def operators_figure(rows: list[dict]) -> go.Figure:
    """Children evaluated and improvements per variation operator (bar labels: success rate)."""
    ops = [_t(r["operator"], 40) for r in rows]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=ops,
            y=[r.get("children") or 0 for r in rows],
            name="children evaluated",
            marker={"color": "rgba(31,119,180,0.35)"},
            hovertemplate="%{x}: %{y} children evaluated<extra></extra>",
        )
    )
    fig.add_trace(
        go.Bar(
            x=ops,
            y=[r.get("improvements") or 0 for r in rows],
            name="improvements (beat best parent)",
            marker={"color": "#1a7f37"},
            text=[_fmt_pct(r.get("success_rate")) for r in rows],
            textposition="outside",
            hovertemplate="%{x}: %{y} improvements, success rate %{text}<extra></extra>",
        )
    )
    fig.update_layout(
        template="plotly_white",
        barmode="group",
        yaxis_title="children",
        height=340,
        margin={"l": 60, "r": 20, "t": 20, "b": 60},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


# -- data ------------------------------------------------------------------------------------


def _per_seed_from_evaluations(
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


def _comparison(store: CampaignStore, summary: dict, winner: dict | None) -> list[dict]:
    """Comparison rows: summary's (winner, seeds, tuned, budget-matched), tuned baselines meta
    (older stores), or (running campaign) the evaluations paid so far."""
    rows = [dict(r, kind=_row_kind(r)) for r in summary.get("comparison") or []]
    if not rows:  # campaign still running: derive from the evaluations paid so far
        cands = ([("winner", winner)] if winner else []) + [
            (i["uid"], i) for i in store.individuals() if i.get("operator") == "seed"
        ]
        for name, ind in cands:
            d = _per_seed_from_evaluations(store, ind)
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


def _formula_of(genome: dict) -> str | None:
    """The genome's one-line formula (imports the genome package, hence torch: only on demand)."""
    try:
        from evoopt.genome.genome import Genome

        return Genome.from_dict(genome).formula()
    except Exception:
        return None


def _structure(store: CampaignStore, comparison: list[dict]) -> dict[str, Any] | None:
    """The winner's genome against each compared optimizer's, part by part.

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
        cells: dict[str, Any] = {
            "terms": [_term_str(t) for t in genome.get("terms") or []] or ["—"],
            "lr": format_value(genome.get("lr")),
        }
        for part, _ in STRUCTURE_PARTS:
            if part not in cells:
                cells[part] = _block_str(genome.get(part))
        columns.append(
            {
                "name": row.get("name"),
                "kind": row["kind"],
                "kind_label": row["kind_label"],
                "formula": formula,
                "cells": cells,
            }
        )
    if not columns:
        return None
    ref = next((c for c in columns if c["kind"] == "winner"), None)
    rows = []
    for part, label in STRUCTURE_PARTS:
        cells = [
            {"value": c["cells"][part], "differs": ref is not None and c is not ref
             and c["cells"][part] != ref["cells"][part]}
            for c in columns
        ]
        rows.append({"part": part, "label": label, "cells": cells})
    missing = [r.get("name") for r in comparison if r.get("name") not in
               {c["name"] for c in columns}]
    return {"columns": columns, "rows": rows, "missing": missing, "has_winner": ref is not None}


def _verdicts(summary: dict, comparison: list[dict]) -> list[dict] | None:
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


def _heldout(summary: dict) -> list[dict]:
    """The held-out tasks' tables: rows as the comparison's, verdicts as the main ones."""
    out = []
    for held in summary.get("heldout") or []:
        rows = [dict(r, kind_label=KIND_LABELS.get(str(r.get("kind")), r.get("kind")),
                     tuned_params=_tuning_items(r)) for r in held.get("rows") or []]
        out.append(dict(held, rows=rows,
                        verdicts=_verdicts({"verdicts": held.get("verdicts")}, rows) or []))
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


def _stage_order(config: Any, store: CampaignStore) -> dict[str, int]:
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


def _operator_rows(summary: dict, individuals: list[dict], order: dict[str, int]
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


def _step_rows(steps: list, individuals: list[dict], improved_by: dict[str, bool | None],
               order: dict[str, int]) -> list[dict]:
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
        node["fitness_str"] = _fmt_fit(node.get("fitness"))
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
    statuses = defaultdict(int)
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


def report_context(store: CampaignStore) -> dict[str, Any]:
    """Everything the template needs, computed from the store (and the exported code file)."""
    meta = store.all_meta()
    summary = meta.get("summary") or {}
    individuals = store.individuals()
    generations = store.generations()
    winner_uid = store.best_uid()
    winner = store.get_individual(winner_uid) if winner_uid else None
    tree = _tree_nodes(store.ancestry(winner_uid)) if winner else None
    steps = line_steps(store, winner_uid) if winner else []
    comparison = _comparison(store, summary, winner)
    config = meta.get("config") or {}
    order = _stage_order(config, store)
    operators, operators_source = _operator_rows(summary, individuals, order)
    improved_by = _improvements(individuals, order)
    winner_summary = dict(summary.get("winner") or {})
    if winner and not winner_summary:
        d = _per_seed_from_evaluations(store, winner)
        m, s = mean_std(d["per_seed"])
        winner_summary = {
            "uid": winner_uid,
            "hash": winner.get("hash"),
            "formula": winner.get("formula"),
            "fitness_mean": m,
            "fitness_std": s,
            "seeds": d["per_seed"],
        }
    export = store.directory / (summary.get("exported") or EXPORT_NAME)
    code = export.read_text("utf-8", errors="replace") if export.is_file() else None
    wall = summary.get("wall_time_s", meta.get("wall_time_s"))
    if wall is None and generations:
        wall = sum(g.get("wall_time_s") or 0.0 for g in generations)
    figs = {
        "fitness": _fig_html(fitness_figure(generations, individuals), "fig-fitness"),
        "ancestry": _fig_html(ancestry_figure(tree, winner_uid), "fig-ancestry") if tree else None,
        "seeds": _fig_html(seeds_figure(comparison), "fig-seeds") if comparison else None,
        "curves": None,
        "operators": (
            _fig_html(operators_figure(operators), "fig-operators") if operators else None
        ),
    }
    curves = []
    for row in comparison:
        ind = store.get_individual(row["uid"]) if row.get("uid") else None
        if ind is None and row.get("hash"):
            ind = {"hash": row["hash"]}
        if ind is not None:
            cs = _per_seed_from_evaluations(store, ind, prefer="final")["curves"]
            if cs:
                curves.append((str(row["name"]), cs))
    if curves:
        figs["curves"] = _fig_html(curves_figure(curves), "fig-curves")
    name = config.get("name") if isinstance(config, dict) else None
    return {
        "title": f"evoopt campaign {name or store.directory.name}",
        "directory": str(store.directory),
        "state": meta.get("state", "unknown"),
        "started_at": meta.get("started_at"),
        "finished_at": meta.get("finished_at"),
        "wall_time_s": wall,
        "config_rows": _config_rows(config),
        "counts": _counts(store, summary, individuals),
        "n_generations": len(generations),
        "generations": generations,
        "winner": winner,
        "winner_summary": winner_summary,
        "tree": tree,
        "steps": _step_rows(steps, individuals, improved_by, order),
        "improved_by": improved_by,
        "improving_steps": [
            (st.individual["uid"], st.individual.get("operator"))
            for st in steps
            if improved_by.get(st.individual["uid"])
        ],
        "comparison": comparison,
        "task_names": _task_names(comparison),
        "heldout": _heldout(summary),
        "funnel": funnel_view(summary),
        "structure": _structure(store, comparison),
        "verdicts": _verdicts(summary, comparison),
        "operators": operators,
        "operators_source": operators_source,
        "timings": summary.get("timings") if isinstance(summary.get("timings"), dict) else None,
        "code": code,
        "export_name": export.name,
        "figs": figs,
        "plotlyjs": Markup(get_plotlyjs()),  # noqa: S704 -- the plotly.js bundle itself
        "generated_at": time.time(),
    }


def render_report(store: CampaignStore) -> str:
    """The report as an HTML string."""
    return _env().get_template("report.html.j2").render(**report_context(store))


def write_report(campaign_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render ``campaign_dir``'s report to ``out`` (default ``campaign_dir/report.html``)."""
    with CampaignStore(campaign_dir, readonly=True) as store:
        html = render_report(store)
        target = Path(out) if out is not None else store.directory / REPORT_NAME
    atomic_write_text(target, html)
    return target


__all__ = ["funnel_view", "render_report", "report_context", "write_report"]
