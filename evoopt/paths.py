"""Where the project's shipped resources live (seed genomes, fitness tasks, campaigns).

In a source checkout (and so in an editable install) they are the repository's top-level
``genomes/``, ``fitness/`` and ``experiments/``; a built wheel carries copies of them at
``evoopt/_shipped/`` (copied there by setup.py's build step).
"""

from __future__ import annotations

import os
from pathlib import Path

SHIPPED_FOLDERS = ("genomes", "fitness", "experiments")

_PACKAGE_DIR = Path(__file__).resolve().parent


def _resources_dir() -> Path:
    """The checkout when this package sits in one, else the wheel's ``evoopt/_shipped``."""
    checkout = _PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file() and all(
            (checkout / name).is_dir() for name in SHIPPED_FOLDERS):
        return checkout
    return _PACKAGE_DIR / "_shipped"


RESOURCES_DIR = _resources_dir()
GENOMES_DIR = RESOURCES_DIR / "genomes"
FITNESS_DIR = RESOURCES_DIR / "fitness"
EXPERIMENTS_DIR = RESOURCES_DIR / "experiments"


def shipped_campaigns() -> list[str]:
    """Names of the campaign configs shipped in ``experiments/``."""
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.toml"))


def default_data_dir() -> Path:
    """Data directory: ``EVOOPT_DATA_DIR`` if set, else a per-user cache directory."""
    env = os.environ.get("EVOOPT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "evoopt" / "data"
