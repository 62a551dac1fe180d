"""Where the project's shipped resources live (seed genomes, fitness tasks, campaigns)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
GENOMES_DIR = PROJECT_ROOT / "genomes"
FITNESS_DIR = PROJECT_ROOT / "fitness"
EXPERIMENTS_DIR = PROJECT_ROOT / "experiments"


def default_data_dir() -> Path:
    """Data directory: ``EVOOPT_DATA_DIR`` if set, else a per-user cache directory."""
    env = os.environ.get("EVOOPT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "evoopt" / "data"
