"""The campaign report: one self-contained HTML file (plotly.js inlined, nothing fetched).

Built in three steps, each its own module: :mod:`evoopt.report.view_model` (plain data from the
store), :mod:`evoopt.report.figures` (plotly figures from that data) and
:mod:`evoopt.report.render` (the jinja2 template into the file). This module keeps the names
callers import (``write_report``, ``REPORT_NAME``, ...).
"""

from __future__ import annotations

from evoopt.report.figures import (
    ancestry_figure,
    curves_figure,
    fitness_figure,
    operators_figure,
    seeds_figure,
)
from evoopt.report.render import REPORT_NAME, render_report, report_context, write_report
from evoopt.report.view_model import EXPORT_NAME, KIND_LABELS, VERDICTS, funnel_view

__all__ = ["EXPORT_NAME", "KIND_LABELS", "REPORT_NAME", "VERDICTS", "ancestry_figure",
           "curves_figure", "fitness_figure", "funnel_view", "operators_figure",
           "render_report", "report_context", "seeds_figure", "write_report"]
