"""Build hook: ship the top-level ``genomes/``, ``fitness/`` and ``experiments/`` in the wheel.

The three folders stay at the repository top level (the design card's layout; a checkout and
an editable install read them there). A built wheel carries copies at ``evoopt/_shipped/<name>/``
(``evoopt.paths`` looks there when there is no checkout), copied by this ``build_py`` step.
Not ``data-files`` (they would land in the environment's prefix, outside the package) and not a
``package-dir`` mapping (that would need every subpackage listed by hand instead of found);
this copies whatever the folders hold, ``genomes/reference/`` included. All other settings are
in pyproject.toml; MANIFEST.in puts the folders in the sdist so a wheel built from it has them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("genomes", "fitness", "experiments")


class BuildPyWithShippedResources(build_py):
    """``build_py`` plus a copy of each shipped folder into ``evoopt/_shipped/``."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's folders directly
            return
        for name in SHIPPED:
            target = Path(self.build_lib) / "evoopt" / "_shipped" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(ROOT / name, target,
                            ignore=shutil.ignore_patterns("__pycache__", ".*"))


setup(cmdclass={"build_py": BuildPyWithShippedResources})
