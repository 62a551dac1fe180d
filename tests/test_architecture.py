"""Imports point one way, down the pipeline: checked on the source, module by module, and at
runtime, stage by stage, in a fresh interpreter."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
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


def stage_modules(stage: str) -> list[str]:
    """Every module of a stage, by dotted name."""
    names = []
    for path in sorted((PACKAGE / stage).rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.mark.parametrize("stage", sorted(FORBIDDEN))
def test_stage_loads_no_later_stage_at_runtime(stage: str) -> None:
    """Importing every module of a stage, alone in a fresh interpreter, loads no later stage
    (through any chain of imports) and meets no import cycle (an ImportError there)."""
    later = [f for f in FORBIDDEN[stage] if f.startswith("evoopt.") or f == "ray"]
    code = ("import importlib, json, sys\n"
            f"for name in {stage_modules(stage)!r}:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps(sorted(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PACKAGE.parent, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = json.loads(proc.stdout.splitlines()[-1])
    bad = sorted({m for m in loaded for f in later if m == f or m.startswith(f + ".")})
    assert not bad, f"importing evoopt.{stage} loads {bad}"
