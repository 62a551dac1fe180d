"""The campaign report's rendering: the view model and its figures through the jinja2 template
into one self-contained HTML file (plotly.js inlined, nothing fetched).

Every string that comes from the store goes through jinja2 autoescape (or plotly's JSON
encoding); the only raw HTML inserted is plotly's own output.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from evoopt.campaign.store import CampaignStore
from evoopt.fileio import atomic_write_text
from evoopt.report.figures import plotly_js, report_figures
from evoopt.report.formatting import fmt_duration, fmt_p, fmt_pct, fmt_pm, fmt_signed, fmt_time
from evoopt.report.lineage import format_fitness, format_value
from evoopt.report.view_model import TREE_DEPTH, build_view

REPORT_NAME = "report.html"
TEMPLATE = "report.html.j2"


def environment() -> Environment:
    """The jinja2 environment of the report's templates (autoescaped, with its filters)."""
    env = Environment(
        loader=PackageLoader("evoopt.report", "templates"),
        autoescape=select_autoescape(["html", "j2", "html.j2"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(fit=format_fitness, val=format_value, pm=fmt_pm, when=fmt_time,
                       duration=fmt_duration, signed=fmt_signed, pvalue=fmt_p, pct=fmt_pct)
    return env


def report_context(store: CampaignStore) -> dict[str, Any]:
    """Everything the template needs: the store's view, its figures and plotly.js."""
    view = build_view(store)
    return {
        **view.as_dict(),
        "figs": report_figures(view),
        "tree_depth": TREE_DEPTH,
        "plotlyjs": plotly_js(),
        "generated_at": time.time(),
    }


def render_report(store: CampaignStore) -> str:
    """The report as an HTML string."""
    return environment().get_template(TEMPLATE).render(**report_context(store))


def write_report(campaign_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render ``campaign_dir``'s report to ``out`` (default ``campaign_dir/report.html``)."""
    with CampaignStore(campaign_dir, readonly=True) as store:
        page = render_report(store)
        target = Path(out) if out is not None else store.directory / REPORT_NAME
    atomic_write_text(target, page)
    return target


__all__ = ["REPORT_NAME", "environment", "render_report", "report_context", "write_report"]
