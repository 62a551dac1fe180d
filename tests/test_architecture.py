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
    "campaign": ("evoopt.report", "evoopt.cli"),
    "report": ("evoopt.evaluator", "evoopt.strategy", "evoopt.cli", "ray"),
}


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in its source (TYPE_CHECKING blocks and function
    bodies included); ``from package import name`` also counts ``package.name``, and relative
    imports are resolved against ``path``'s package."""
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            elif node.module:
                module = node.module
            else:
                continue
            names.add(module)
            names |= {f"{module}.{a.name}" for a in node.names}
    return names


@pytest.mark.parametrize("stage", sorted(FORBIDDEN))
def test_stage_does_not_import_later_stages(stage: str) -> None:
    files = sorted((PACKAGE / stage).rglob("*.py"))
    assert files
    for path in files:
        bad = {name for name in imports_of(path) for f in FORBIDDEN[stage]
               if name == f or name.startswith(f + ".")}
        assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {sorted(bad)}"


#: The genome stage's layer order (docs/design-chain-of-blocks.md §4), lowest first: a layer
#: imports from evoopt only the layers before it (and, for a package such as ``blocks``, its
#: own modules). The runtime helpers import nothing from evoopt (exported modules vendor their
#: source); the chain language (blocks, chain, canonical) sits below the slot genome, which
#: ``legacy`` converts to and from it; the one shell (codegen) renders either.
GENOME_LAYERS = ("runtime", "program", "primitives", "blocks", "chain", "canonical", "genome",
                 "legacy", "codegen", "interpreter", "export", "behaviour", "sampling", "docs")
#: Modules of evoopt outside the genome stage that a genome layer may use.
GENOME_MAY_USE = ("evoopt.fileio", "evoopt.paths", "evoopt.__version__")
_TOP = "evoopt"  # ``from evoopt import __version__`` (codegen's provenance)


def test_genome_layers_import_only_lower_layers() -> None:
    assert {p.stem for p in (PACKAGE / "genome").glob("*.py")} - {"__init__"} \
        | {"blocks"} == set(GENOME_LAYERS), "every genome module has its layer"
    for i, layer in enumerate(GENOME_LAYERS):
        here = PACKAGE / "genome" / layer
        paths = sorted(here.glob("*.py")) if here.is_dir() else [here.with_suffix(".py")]
        below = [f"evoopt.genome.{lower}" for lower in GENOME_LAYERS[:i + (1 if here.is_dir()
                                                                           else 0)]]
        for path in paths:
            bad = {name for name in imports_of(path) if name.split(".")[0] == "evoopt"
                   and name != _TOP and not any(name == m or name.startswith(m + ".")
                                                for m in (*below, *GENOME_MAY_USE))}
            assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {sorted(bad)}"


def test_the_genome_modules_import_each_other_without_a_cycle() -> None:
    """TYPE_CHECKING-only imports included (docs/design-chain-of-blocks.md §4)."""
    cycle = import_cycle("genome")
    assert cycle is None, "import cycle in evoopt/genome: " + " -> ".join(cycle)


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


def import_cycle(stage: str) -> list[str] | None:
    """A cycle among the modules of ``stage`` (each module's imports as :func:`imports_of` finds
    them, TYPE_CHECKING-only ones included), as the modules along it; None when acyclic."""
    modules = set(stage_modules(stage))
    graph = {}
    for path in sorted((PACKAGE / stage).rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = sorted(m for m in imports_of(path) if m in modules and m != name)
    state: dict[str, str] = {}  # module -> "open" (on the current path) or "done"

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in graph[module]:
            if state.get(target) == "open":
                return [*path[path.index(target):], target]
            if target not in state:
                found = visit(target, [*path, target])
                if found:
                    return found
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module, [module])
            if found:
                return found
    return None


def test_the_campaign_modules_import_each_other_without_a_cycle() -> None:
    """The campaign's modules form a DAG (search, refinement and finish meet through the
    evaluation service, not through each other), counting imports made only for type checking."""
    cycle = import_cycle("campaign")
    assert cycle is None, "import cycle in evoopt/campaign: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: two modules importing each other (one only under
    TYPE_CHECKING) are reported."""
    package = tmp_path / "evoopt"
    (package / "demo").mkdir(parents=True)
    (package / "demo" / "__init__.py").write_text("")
    (package / "demo" / "a.py").write_text("from evoopt.demo.b import f\n")
    (package / "demo" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    (package / "demo" / "c.py").write_text("import evoopt.demo.a\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    assert import_cycle("demo") == ["evoopt.demo.a", "evoopt.demo.b", "evoopt.demo.a"]
    (package / "demo" / "b.py").write_text("def f() -> None: ...\n")
    assert import_cycle("demo") is None
