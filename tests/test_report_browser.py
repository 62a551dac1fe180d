"""The HTML report in a real headless Chromium: no console errors, every plot rendered offline."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from evoopt.report.html import write_report

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install -y chromium)"
)
FIGURES = ("fig-fitness", "fig-seeds", "fig-curves", "fig-ancestry")


def _chromium(url: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on ``url`` with networking off; console messages go to stderr."""
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        "--window-size=1280,2400",
        *args,
        url,
    ]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ, TZ="UTC")
    )


def _console(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln]


def test_console_capture_works(tmp_path: Path) -> None:
    """Canary: a page with a console error and an uncaught exception is caught by `_console`."""
    page = tmp_path / "bad.html"
    page.write_text("<script>console.error('canary'); notDefined();</script>", "utf-8")
    proc = _chromium(page.as_uri(), tmp_path, "--dump-dom")
    logged = "\n".join(_console(proc.stderr))
    assert "canary" in logged and "Uncaught ReferenceError" in logged, proc.stderr[-2000:]


def test_report_renders_without_errors(tiny_campaign: Path, tmp_path: Path) -> None:
    report = write_report(tiny_campaign, tmp_path / "report.html")
    proc = _chromium(report.as_uri(), tmp_path, "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _console(proc.stderr) == []
    dom = proc.stdout
    starts = sorted((dom.index(f'<div id="{fig}"'), fig) for fig in FIGURES)
    for (start, fig), (end, _) in zip(starts, [*starts[1:], (len(dom), "")], strict=True):
        drawn = dom[start:end]  # plotly adds these nodes only when it renders the figure
        assert 'class="plot-container' in drawn and 'class="main-svg"' in drawn, f"{fig} blank"
    assert dom.count('class="scatterlayer') >= 3

    shot = tmp_path / "report.png"
    proc = _chromium(report.as_uri(), tmp_path, f"--screenshot={shot}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _console(proc.stderr) == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
