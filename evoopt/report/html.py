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

from evoopt.campaign.store import CampaignStore
from evoopt.report.lineage import format_value, iter_tree, line_steps

REPORT_NAME = "report.html"
EXPORT_NAME = "best_optimizer.py"
# Fitness is validation accuracy, maximised; evoopt.fitness.WORST_FITNESS (-1.0) marks a failed
# run (kept local: importing evoopt.fitness would pull in torch just to render a report).
FITNESS_LABEL = "fitness = val accuracy (↑ better)"
WORST_FITNESS = -1.0

_PLOT_CONFIG = {"displaylogo": False, "responsive": True}
_WINNER_COLOR = "#d62728"
_SEED_COLOR = "#1f77b4"


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
    return env


def _fmt_fit(v: Any) -> str:
    return "—" if v is None else f"{v:.4f}"


def _fmt_pm(mean: Any, std: Any) -> str:
    if mean is None:
        return "—"
    return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}"


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


def _mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


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
    colors = {"winner": _WINNER_COLOR, "seeded": _SEED_COLOR, "tuned": "#2ca02c"}
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
                marker={"color": colors.get(row.get("kind", ""), _SEED_COLOR)},
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


# -- data ------------------------------------------------------------------------------------


def _per_seed_from_evaluations(store: CampaignStore, ind: dict) -> dict[str, Any]:
    """Per-seed fitness of an individual at its highest evaluated stage (val split)."""
    h = ind.get("hash")
    evals = store.evaluations(hash=h) if h else []
    evals = [e for e in evals if (e.get("split") or "val") == "val"]
    if not evals:
        return {"per_seed": [], "stage": None, "curves": []}
    stage = ind.get("stage_reached") or evals[-1]["stage"]
    picked = [e for e in evals if e["stage"] == stage] or evals
    picked.sort(key=lambda e: e["seed"])
    return {
        "per_seed": [e["fitness"] for e in picked],
        "seed_ids": [e["seed"] for e in picked],
        "val_accuracy": [e["val_accuracy"] for e in picked if e.get("val_accuracy") is not None],
        "curves": [e["train_loss_curve"] for e in picked if e.get("train_loss_curve")],
        "stage": picked[0]["stage"],
    }


def _comparison(store: CampaignStore, summary: dict, winner: dict | None) -> list[dict]:
    """Comparison rows: summary's (winner + seeded baselines), tuned baselines, or fallback."""
    def kind(name: str) -> str:
        return "winner" if name == "winner" else "tuned" if "(tuned" in name else "seeded"

    rows = [dict(r, kind=kind(str(r.get("name")))) for r in summary.get("comparison") or []]
    if not rows:  # campaign still running: derive from the evaluations paid so far
        cands = ([("winner", winner)] if winner else []) + [
            (i["uid"], i) for i in store.individuals() if i.get("operator") == "seed"
        ]
        for name, ind in cands:
            d = _per_seed_from_evaluations(store, ind)
            m, s = _mean_std(d["per_seed"])
            am, _ = _mean_std(d.get("val_accuracy") or [])
            rows.append(
                {
                    "name": name,
                    "uid": ind["uid"],
                    "fitness_mean": m,
                    "fitness_std": s,
                    "val_accuracy_mean": am,
                    "n_seeds": len(d["per_seed"]),
                    "per_seed": d["per_seed"],
                    "kind": "winner" if name == "winner" else "seeded",
                }
            )
    baselines = store.get_meta("baselines") or []
    if isinstance(baselines, dict):
        baselines = [dict(v, name=v.get("name", k)) for k, v in baselines.items()]
    shown = {r.get("name") for r in rows}
    for b in baselines:
        name = str(b.get("name", "baseline"))
        name = name if "tuned" in name else f"{name} (tuned)"
        if name not in shown:  # the runner also lists its tuned baselines in the summary
            rows.append(dict(b, name=name, kind="tuned"))
    for r in rows:
        if r.get("fitness_mean") is None and r.get("per_seed"):
            r["fitness_mean"], r["fitness_std"] = _mean_std(list(r["per_seed"]))
        r.setdefault("n_seeds", len(r.get("per_seed") or []))
    best = max((r["fitness_mean"] for r in rows if r.get("fitness_mean") is not None), default=None)
    for r in rows:
        r["is_best"] = best is not None and r.get("fitness_mean") == best
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
    winner_summary = dict(summary.get("winner") or {})
    if winner and not winner_summary:
        d = _per_seed_from_evaluations(store, winner)
        m, s = _mean_std(d["per_seed"])
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
    config = meta.get("config") or {}
    wall = summary.get("wall_time_s", meta.get("wall_time_s"))
    if wall is None and generations:
        wall = sum(g.get("wall_time_s") or 0.0 for g in generations)
    figs = {
        "fitness": _fig_html(fitness_figure(generations, individuals), "fig-fitness"),
        "ancestry": _fig_html(ancestry_figure(tree, winner_uid), "fig-ancestry") if tree else None,
        "seeds": _fig_html(seeds_figure(comparison), "fig-seeds") if comparison else None,
        "curves": None,
    }
    curves = []
    for row in comparison:
        ind = store.get_individual(row["uid"]) if row.get("uid") else None
        if ind is not None:
            cs = _per_seed_from_evaluations(store, ind)["curves"]
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
        "steps": steps,
        "comparison": comparison,
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
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(html, "utf-8")
    return target


__all__ = ["render_report", "report_context", "write_report"]
