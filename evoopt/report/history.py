"""History export: a campaign's individuals and evaluations as pandas tables.

File convention (``evoopt history DIR --format F -o FILE``):

* ``json``: one file ``FILE``: ``{"individuals": [...], "evaluations": [...]}``; JSON columns
  (``parents``, ``genome``, ``train_loss_curve``, ``tasks``) stay nested.
* ``csv`` / ``parquet``: two files next to ``FILE``, named ``<stem>-individuals.<ext>`` and
  ``<stem>-evaluations.<ext>`` (``-o out/h.csv`` gives ``out/h-individuals.csv`` and
  ``out/h-evaluations.csv``). In CSV, ``parents``, ``genome``, ``train_loss_curve`` and
  ``tasks`` are JSON strings; in Parquet ``parents`` is a list of strings and the others are
  JSON strings.

All JSON written is strict JSON (RFC 8259): a NaN or infinite number anywhere in it (a
diverged loss curve, an infinite fitness) is written as ``null``. CSV and Parquet number
columns keep such values as the format writes them (Parquet: the float itself; CSV: empty
for NaN, ``inf``/``-inf``).
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


#: Columns holding JSON values, written as JSON strings in CSV and Parquet.
JSON_COLUMNS = {"individuals": ("genome",), "evaluations": ("train_loss_curve", "tasks")}


def _json_str(v: Any) -> str | None:
    return None if v is None else json.dumps(finite_json(v), sort_keys=True, allow_nan=False)


def finite_json(value: Any) -> Any:
    """``value`` (nested dicts and lists) with every NaN or infinite float replaced by None,
    so that strict JSON can hold it; walked without recursion, so any depth."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return dict(v)
        if isinstance(v, list | tuple):
            return list(v)
        return v

    root = clean(value)
    stack = [root]
    while stack:
        container = stack.pop()
        if not isinstance(container, dict | list):
            continue
        keys = container.keys() if isinstance(container, dict) else range(len(container))
        for k in keys:
            container[k] = clean(container[k])
            stack.append(container[k])
    return root


def write_history(store: CampaignStore, fmt: str, out: str | Path) -> list[Path]:
    """Write the history tables; returns the paths written (see module docstring). Each file is
    written to a temporary file beside it and renamed into place (never half written)."""
    paths = output_paths(out, fmt)
    inds, evals = history_tables(store)
    if fmt == "json":
        doc = finite_json({"individuals": _records(inds), "evaluations": _records(evals)})
        atomic_write_text(paths[0], json.dumps(doc, indent=1, ensure_ascii=False,
                                               allow_nan=False) + "\n")
        return paths
    inds = inds.assign(**{c: inds[c].map(_json_str) for c in JSON_COLUMNS["individuals"]})
    evals = evals.assign(**{c: evals[c].map(_json_str) for c in JSON_COLUMNS["evaluations"]})
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
