"""Lineage: genome diffs along a line of descent and the ancestry tree for the terminal."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from rich.tree import Tree

from evoopt.campaign.store import CampaignStore


class _Absent:
    """Marks a field that one side of a diff does not have."""

    def __repr__(self) -> str:
        return "∅"


ABSENT: Any = _Absent()


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts/lists into ``{"a.b[0].c": leaf}`` (an empty container is a leaf)."""
    out: dict[str, Any] = {}
    if isinstance(value, dict) and value:
        for key in value:
            out.update(flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list | tuple) and value:
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
    else:
        out[prefix] = value
    return out


@dataclass(frozen=True)
class FieldChange:
    """One changed genome field: ``old``/``new`` are ``ABSENT`` when added/removed."""

    path: str
    old: Any
    new: Any

    @property
    def kind(self) -> str:
        if self.old is ABSENT:
            return "added"
        if self.new is ABSENT:
            return "removed"
        return "changed"

    def __str__(self) -> str:
        return f"{self.path}: {format_value(self.old)} → {format_value(self.new)}"


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _same(a: Any, b: Any) -> bool:
    if _is_num(a) and _is_num(b):
        return a == b or (math.isnan(a) and math.isnan(b))
    return type(a) is type(b) and a == b


def genome_diff(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[FieldChange]:
    """Fields that differ between two genome dicts, in the new genome's field order."""
    a, b = flatten(old or {}), flatten(new or {})
    changes = [
        FieldChange(p, a.get(p, ABSENT), v)
        for p, v in b.items()
        if p not in a or not _same(a[p], v)
    ]
    changes += [FieldChange(p, v, ABSENT) for p, v in a.items() if p not in b]
    return changes


def format_value(v: Any) -> str:
    """Compact human rendering of a genome leaf or a fitness."""
    if v is ABSENT:
        return "∅"
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_fitness(v: float | None) -> str:
    return "—" if v is None else f"{v:.4f}"


@dataclass
class LineStep:
    """One step along a line of descent: ``individual`` and how it differs from ``parent``."""

    individual: dict[str, Any]
    parent: dict[str, Any] | None
    changes: list[FieldChange] = field(default_factory=list)

    @property
    def other_parents(self) -> list[str]:
        return list(self.individual.get("parents") or [])[1:]


def line_steps(store: CampaignStore, uid: str) -> list[LineStep]:
    """The first-parent line from a seed down to ``uid``, each step diffed against its parent."""
    chain = store.line(uid)
    steps: list[LineStep] = []
    for i, ind in enumerate(chain):
        parent = chain[i - 1] if i else None
        changes = genome_diff(parent["genome"], ind["genome"]) if parent else []
        steps.append(LineStep(ind, parent, changes))
    return steps


def iter_tree(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Depth-first over an ``ancestry()`` tree (root first, parents in order); iterative, so a
    lineage of any depth is walked."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.get("ancestors", [])))


#: Levels of ancestors ``ancestry_tree`` shows when no depth is given: a terminal tree indents
#: each level, so deeper ones are unreadable (and slow to draw); ``--depth`` shows more.
SHOWN_DEPTH = 100


def _node_label(node: dict[str, Any], winner: str | None) -> Text:
    if node.get("missing"):
        return Text.assemble((node["uid"], "bold red"), (" (not in store)", "red"))
    text = Text()
    if node["uid"] == winner:
        text.append("★ ", style="bold yellow")
    text.append(str(node["uid"]), style="bold yellow" if node["uid"] == winner else "bold")
    text.append(f"  {node.get('operator') or '?'}", style="cyan")
    text.append(f"  gen {node.get('generation')}", style="dim")
    text.append(f"  fitness {format_fitness(node.get('fitness'))}", style="green")
    if node.get("status") and node["status"] != "evaluated":
        text.append(f"  [{node['status']}]", style="magenta")
    if node.get("repeated"):
        text.append("  (ancestry shown above)", style="dim italic")
        return text
    if node.get("formula"):
        text.append(f"\n{node['formula']}", style="white")
    if node.get("change"):
        text.append(f"\nchanged: {node['change']}", style="italic")
    if node.get("truncated"):
        text.append(f"\n… (deeper ancestors cut by --depth, default {SHOWN_DEPTH})", style="dim")
    return text


def ancestry_tree(store: CampaignStore, uid: str, depth: int | None = None) -> Tree:
    """``uid``'s ancestry as a ``rich.tree.Tree`` (root = ``uid``, children = parents), at most
    ``depth`` levels deep (:data:`SHOWN_DEPTH` when None)."""
    root = store.ancestry(uid, depth=SHOWN_DEPTH if depth is None else depth)
    winner = store.best_uid()
    tree = Tree(_node_label(root, winner), guide_style="dim")
    stack = [(tree, root)]  # iterative: a lineage may be thousands of generations deep
    while stack:
        branch, node = stack.pop()
        for parent in node["ancestors"]:
            stack.append((branch.add(_node_label(parent, winner)), parent))
    return tree
