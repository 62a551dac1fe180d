"""History export: a campaign's individuals and evaluations as pandas tables.

File convention (``evoopt history DIR --format F -o FILE``):

* ``json``: one file ``FILE``: ``{"individuals": [...], "evaluations": [...]}``; JSON columns
  (``parents``, ``genome``, ``train_loss_curve``) stay nested.
* ``csv`` / ``parquet``: two files next to ``FILE``, named ``<stem>-individuals.<ext>`` and
  ``<stem>-evaluations.<ext>`` (``-o out/h.csv`` gives ``out/h-individuals.csv`` and
  ``out/h-evaluations.csv``). In CSV, ``parents``, ``genome`` and ``train_loss_curve`` are JSON
  strings; in Parquet ``parents`` is a list of strings and the other two are JSON strings.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from evoopt.campaign.store import EVALUATION_COLUMNS, INDIVIDUAL_COLUMNS, CampaignStore
from evoopt.fileio import atomic_output, atomic_write_text

FORMATS = ("csv", "parquet", "json")


def history_tables(store: CampaignStore) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(individuals, evaluations)`` DataFrames with the store's columns (JSON decoded)."""
    inds = pd.DataFrame(store.individuals(), columns=list(INDIVIDUAL_COLUMNS))
    evals = pd.DataFrame(store.evaluations(), columns=list(EVALUATION_COLUMNS))
    return inds, evals


def output_paths(out: str | Path, fmt: str) -> list[Path]:
    """The file(s) ``write_history`` writes for ``out`` in format ``fmt``."""
    out = Path(out)
    if fmt == "json":
        return [out]
    if fmt not in FORMATS:
        raise ValueError(f"unknown history format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return [out.with_name(f"{out.stem}-{t}.{fmt}") for t in ("individuals", "evaluations")]


def _json_str(v: Any) -> str | None:
    return None if v is None else json.dumps(v, sort_keys=True)


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_history(store: CampaignStore, fmt: str, out: str | Path) -> list[Path]:
    """Write the history tables; returns the paths written (see module docstring). Each file is
    written to a temporary file beside it and renamed into place (never half written)."""
    paths = output_paths(out, fmt)
    inds, evals = history_tables(store)
    if fmt == "json":
        doc = {
            "individuals": [{k: _jsonable(v) for k, v in r.items()} for r in _records(inds)],
            "evaluations": [{k: _jsonable(v) for k, v in r.items()} for r in _records(evals)],
        }
        atomic_write_text(paths[0], json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        return paths
    inds = inds.assign(genome=inds["genome"].map(_json_str))
    evals = evals.assign(train_loss_curve=evals["train_loss_curve"].map(_json_str))
    if fmt == "csv":
        inds = inds.assign(parents=inds["parents"].map(_json_str))
    else:
        inds = inds.assign(parents=inds["parents"].map(lambda v: list(v or [])))
    for frame, path in zip((inds, evals), paths, strict=True):
        with atomic_output(path) as tmp:
            if fmt == "csv":
                frame.to_csv(tmp, index=False)
            else:
                frame.to_parquet(tmp, index=False)
    return paths


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain dicts with pandas missing values mapped to None."""
    return [
        {k: (None if _is_missing(v) else v) for k, v in row.items()}
        for row in df.astype(object).to_dict(orient="records")
    ]


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA
