"""The tiny real campaign that the campaign, report and hostile-input tests share.

``run_tiny`` runs tests/data/campaign-tiny.toml (some values changed) through the real runner on
the serial evaluator. conftest.py's session fixture ``tiny_campaign`` runs it once with
``SESSION_CHANGES``; a test that changes the store works on a copy (``copy_campaign``).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

from evoopt.campaign.config import parse_config
from evoopt.campaign.orchestrator import CampaignRunner
from evoopt.evaluator import SerialEvaluator

DATA = Path(__file__).resolve().parent / "data"
#: The tiny real campaign the campaign and hostile-input tests start from.
TINY = DATA / "campaign-tiny.toml"

#: The session campaign's seeds: adam and adan; adam written as another genome with the same
#: hash, and one that computes the same updates (both cached, never paid); adam at lr=10, which
#: diverges (a failed individual).
SESSION_SEEDS = ["adam", "adan", str(DATA / "adam-split-terms.toml"),
                 str(DATA / "adam-warmup-noop.toml"), str(DATA / "adam-diverging.toml")]
#: Room for one more member in generation 0 (adam at 3x its lr, lr_screen) and five children
#: in generation 1 (mutations and crossovers, some stopped at the median hurdle). The campaign
#: seed is one whose winner is a child, not a seed (so the report has a line of changes to
#: show); the draws depend on the operator and primitive registries, so a change there can make
#: a seed win: test_the_campaign_shows_what_the_report_shows then says so, and another seed
#: (seeds 1-3 qualified when the transform slot was added) mends it.
SESSION_CHANGES: dict[str, dict[str, Any]] = {
    "campaign": {"seeds": SESSION_SEEDS, "population": 6, "seed": 1},
    "variation": {"lr_screen": [3.0]},
}


def tiny_config(**changes: dict) -> dict:
    """The tiny campaign's config as a dict, with some sections' values changed (``stages``
    replaced whole)."""
    return with_changes(tomllib.loads(TINY.read_text()), changes)


def with_changes(data: dict, changes: dict) -> dict:
    """A config dict with some sections' values changed (``stages`` replaced whole)."""
    for section, values in changes.items():
        if section == "stages":
            data["stages"] = values
        else:
            data.setdefault(section, {}).update(values)
    return data


def run_tiny(out: Path, data_dir: Path, **changes: dict) -> dict[str, Any]:
    """Run the tiny campaign (with ``changes``) to the end in ``out``; returns its summary."""
    config = parse_config(tiny_config(**changes))
    # leaving the runner closes its store, which checkpoints the WAL: the directory can then be
    # copied as plain files
    with SerialEvaluator(data_dir=str(data_dir), num_threads=1) as evaluator, \
            CampaignRunner(config, out, data_dir=str(data_dir), evaluator=evaluator) as runner:
        return runner.run()


def run_killed_after_first_generation(command: list[str], out: Path,
                                      env: dict[str, str]) -> int:
    """Start ``command`` (an ``evoopt run`` into ``out``) and SIGKILL it once generation 0 is
    committed (generation 1 under way); returns its exit code (``-SIGKILL`` when killed)."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            with sqlite3.connect(f"file:{out / 'campaign.sqlite'}?mode=ro", uri=True) as db:
                committed = db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
        except sqlite3.Error:
            continue
        if committed >= 1:
            os.kill(proc.pid, signal.SIGKILL)
            break
    return proc.wait()


def copy_campaign(source: Path, target: Path) -> Path:
    """A copy of a campaign directory, for a test that changes the store or writes into it."""
    shutil.copytree(source, target)
    return target
