"""Imports point one way, down the pipeline: checked on the source, module by module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "evoopt"

# stage -> modules it must never import (directly, at any point in its source)
FORBIDDEN = {
    "genome": ("evoopt.fitness", "evoopt.evaluator", "evoopt.strategy", "evoopt.campaign",
               "evoopt.report", "evoopt.cli", "ray", "sqlite3", "deap"),
    "fitness": ("evoopt.evaluator", "evoopt.strategy", "evoopt.campaign", "evoopt.report",
                "evoopt.cli", "ray", "sqlite3", "deap"),
    "evaluator": ("evoopt.strategy", "evoopt.campaign", "evoopt.report", "evoopt.cli",
                  "sqlite3", "deap"),
    "strategy": ("evoopt.fitness", "evoopt.evaluator", "evoopt.campaign", "evoopt.report",
                 "evoopt.cli", "ray", "sqlite3", "torch"),
    "report": ("evoopt.evaluator", "evoopt.strategy", "evoopt.cli", "ray"),
}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("stage", sorted(FORBIDDEN))
def test_stage_does_not_import_later_stages(stage: str) -> None:
    files = sorted((PACKAGE / stage).rglob("*.py"))
    assert files
    for path in files:
        bad = {name for name in imports_of(path) for f in FORBIDDEN[stage]
               if name == f or name.startswith(f + ".")}
        assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {sorted(bad)}"
