"""Campaign status, read from the store (safe while the campaign runs in another process)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from evoopt.campaign.store import (
    CampaignStore,
    StoreCorruptError,
    campaign_lock_holder,
    lock_path,
)


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False  # never signal a process group (pid <= 0) named by a damaged store
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except (OSError, OverflowError):
        return False
    return True


def _writer_alive(store_file: Path, pid: object) -> bool:
    """Whether the campaign's writer still runs: it holds the campaign lock (a pid in the store
    may since belong to another process). A store written before the lock existed has no lock
    file: then the stored pid decides."""
    if lock_path(store_file).exists():
        return campaign_lock_holder(store_file) is not None
    return _alive(pid)


#: Meta values status reads, with the JSON type each must have when present.
_META_TYPES = {"config": dict, "summary": dict, "strategy_state": dict, "state": str}


def campaign_status(directory: str | Path) -> dict[str, Any]:
    """``state`` (not started | running | interrupted | finished), progress counters and the
    best so far; "running" only while the writer process lives. A store whose values have the
    wrong shape raises StoreCorruptError."""
    path = Path(directory)
    with CampaignStore(path, readonly=True) as store:
        meta = store.all_meta()
        generations = store.generations()
        evaluations = store.evaluations()
        individuals = store.individuals()
        for key, kind in _META_TYPES.items():
            if meta.get(key) is not None and not isinstance(meta[key], kind):
                raise StoreCorruptError(f"{store.path}: meta {key!r} is a "
                                        f"{type(meta[key]).__name__}, not a {kind.__name__}")
    state = meta.get("state", "interrupted")
    if meta.get("config") is None:
        state = "not started"  # a start that failed before the campaign's config was stored
    elif state == "running" and not _writer_alive(store.path, meta.get("pid")):
        state = "interrupted"  # killed without a chance to say so (SIGKILL, power loss)
    config = meta.get("config") or {}
    summary = meta.get("summary")
    if summary:
        best = {"uid": summary["winner"]["uid"], "fitness": summary["winner"]["fitness_mean"],
                "formula": summary["winner"]["formula"]}
    else:
        scored = [r for r in individuals if r["fitness"] is not None]
        top = max(scored, key=lambda r: r["fitness"], default=None)
        best = {"uid": top["uid"], "fitness": top["fitness"], "formula": top["formula"]} \
            if top else None
    strategy = meta.get("strategy_state") or {}
    return {
        "name": config.get("name"),
        "state": state,
        "generation": strategy.get("generation", 0),
        "generations": config.get("generations"),
        "individuals": len(individuals),
        "evaluations_done": len(evaluations),
        "evaluations_cached": summary["evaluations_cached"] if summary else
        sum(g["n_cached"] or 0 for g in generations),
        "evaluations_saved_by_hurdles": sum(g["n_saved_by_hurdles"] or 0 for g in generations),
        "wall_time_s": meta.get("wall_time_s"),
        "best": best,
        "summary": summary,
    }
