"""The report's plotly figures, built from the view model (:class:`ReportView`) alone.

Every string from the store goes into a figure shortened and entity-escaped (plotly text is
HTML-ish) or as JSON, which plotly encodes; :func:`report_figures` returns each figure's HTML
snippet (no plotly.js: the page inlines it once).
"""

from __future__ import annotations

import html
import statistics
import zlib
from collections import defaultdict
from typing import Any

import plotly.graph_objects as go
from markupsafe import Markup
from plotly.offline import get_plotlyjs

from evoopt.report.formatting import fmt_pct
from evoopt.report.lineage import format_fitness, iter_tree
from evoopt.report.view_model import ReportView, scored_individuals

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
WINNER_COLOR = "#d62728"
SEED_COLOR = "#1f77b4"
KIND_COLORS = {
    "winner": WINNER_COLOR,
    "seed": SEED_COLOR,
    "tuned": "#2ca02c",
    "budget_matched": "#9467bd",
}


def figure_html(fig: go.Figure, div_id: str) -> Markup:
    """A figure as an HTML snippet in a ``div`` with id ``div_id`` (plotly.js not included)."""
    out = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG)
    return Markup(out)  # noqa: S704 -- plotly output; data strings are JSON-encoded by plotly


def plotly_js() -> Markup:
    """The plotly.js bundle, for the page to inline once."""
    return Markup(get_plotlyjs())  # noqa: S704 -- the plotly.js bundle itself


def _t(s: Any, n: int = 70) -> str:
    """A store string for plotly text: shortened and entity-escaped (plotly text is HTML-ish)."""
    s = "" if s is None else str(s)
    return html.escape(s if len(s) <= n else s[: n - 1] + "…", quote=False)


def _jitter(uid: Any) -> float:
    """Deterministic horizontal offset in [-0.15, 0.15) so dots of one generation spread out."""
    return ((zlib.crc32(str(uid).encode()) % 1000) / 1000 - 0.5) * 0.3


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def fitness_figure(generations: list[dict], individuals: list[dict], label: str) -> go.Figure:
    """Best / median fitness per generation, the individuals' interquartile band, every dot.

    Best and median come from the ``generations`` table; the band and the dots from the
    individuals (failed runs are left out so they do not squash the axis). ``label``: the
    y axis title, what the fitness measures.
    """
    fig = go.Figure()
    scored = scored_individuals(individuals)
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
    symbols = {"evaluated": "circle", "cached": "circle-open", "stopped_at_hurdle": "x-thin-open",
               "pruned": "triangle-down-open"}
    colors = {"evaluated": "#1f77b4", "cached": "#2ca02c", "stopped_at_hurdle": "#ff7f0e",
              "pruned": "#9467bd"}
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
                line={"color": WINNER_COLOR, "width": 3},
                customdata=[[_t(g.get("best_uid"))] for g in generations],
                hovertemplate="gen %{x}: best %{y:.4f}<br>%{customdata[0]}<extra></extra>",
            )
        )
    fig.update_layout(
        xaxis_title="generation",
        yaxis_title=label,
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
                    connectgaps=True,  # a sparse reporter's empty bins
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
                connectgaps=True,
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
                    format_fitness(nodes[u].get("fitness")),
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


def seeds_figure(rows: list[dict], label: str) -> go.Figure:
    """Per-seed fitness of the winner and every comparison entry (box + points); ``label``: the
    y axis title."""
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
                marker={"color": KIND_COLORS.get(row.get("kind", ""), SEED_COLOR)},
                hovertemplate="%{y:.4f}<extra>" + _t(row["name"]) + "</extra>",
            )
        )
    fig.update_layout(
        template="plotly_white",
        yaxis_title=label,
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
            text=[fmt_pct(r.get("success_rate")) for r in rows],
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


def report_figures(view: ReportView) -> dict[str, Markup | None]:
    """The report's figures as HTML snippets, by name (None: nothing to plot)."""
    label = view.fitness["label"]
    winner = view.winner["uid"] if view.winner else None
    return {
        "fitness": figure_html(fitness_figure(view.generations, view.individuals, label),
                               "fig-fitness"),
        "ancestry": (figure_html(ancestry_figure(view.tree, winner), "fig-ancestry")
                     if view.tree else None),
        "seeds": (figure_html(seeds_figure(view.comparison, label), "fig-seeds")
                  if view.comparison else None),
        "curves": figure_html(curves_figure(view.curves), "fig-curves") if view.curves else None,
        "operators": (figure_html(operators_figure(view.operators), "fig-operators")
                      if view.operators else None),
    }


__all__ = ["ancestry_figure", "curves_figure", "figure_html", "fitness_figure",
           "operators_figure", "plotly_js", "report_figures", "seeds_figure"]
