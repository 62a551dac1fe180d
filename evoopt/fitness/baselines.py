"""Fair baselines: hand-designed optimizers tuned by one protocol, wherever they are run.

``evoopt baselines`` (in-process, :func:`run_baselines`) and a campaign's finish (through its
evaluator and store) both call :func:`tune_baselines`; only the :data:`EvaluateFn` differs.

Baselines (:data:`FAIR_BASELINES`): the grids have 5 lr points a factor 2 apart, centred where
issue 8 measured each optimizer's best lr on the ``cifar10-cpu`` task (150 steps):

=================  ===========================================================  ==========
name               optimizer                                                    lr centre
=================  ===========================================================  ==========
adam               Adam (genomes/adam.toml), constant lr                        5e-3
adamw-cosine       AdamW, warmup_cosine schedule; lr × decoupled wd ∈ {0.01,     5e-3
                   0.05, 0.2}
lion-cosine        Lion (genomes/lion.toml), warmup_cosine schedule             2e-3
nesterov-cosine    SGD-Nesterov (genomes/nesterov.toml), warmup_cosine          0.03
evolved-marfinet…  the published evolved optimizer (genomes/reference/), its own  4.36e-3
                   warmup + cosine and decay; a reference, never a seed
=================  ===========================================================  ==========

Schedules: ``warmup_cosine`` with ``warmup_fraction = 0.05`` and ``final_lr_fraction = 0.0``.
Weight decay of AdamW (decoupled, ``p *= 1 - lr·wd`` as ``torch.optim.AdamW``): 0.01 is
torch.optim.AdamW's default, 0.05 the value of the DeiT / ConvNeXt training recipes (Touvron et
al. 2021; Liu et al. 2022), 0.2 the upper end of the usual sweeps; about a factor 4 apart.

Protocol (:func:`tune_baselines`):

1. evaluate every grid point on the **sweep seeds**, validation split, at the full budget;
   an lr the genome rejects is recorded as ``invalid`` (never run, never picked);
2. pick the best mean fitness; any failed seed makes the point the worst (``WORST_FITNESS``);
   ties go to the smaller lr (then the smaller value of the other dimensions);
3. flag ``at_grid_edge`` per tuned dimension: the best value at either end of a dimension with
   more than one value (widen the grid then);
4. re-run the best point on **fresh** final seeds (never used by the sweep) for each requested
   split; report per-seed fitness and mean ± std (:func:`evoopt.stats.mean_std`).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from evoopt.fileio import atomic_output, atomic_write_text
from evoopt.fitness.protocol import EvaluateFn, RunnerEvaluate, RunProgressFn, check_results
from evoopt.fitness.runner import WORST_FITNESS, FitnessRunner, make_runner
from evoopt.fitness.task import TaskSpec, load_task
from evoopt.genome import ChainGenome, Genome, genome_from_dict, load_genome, seed_genome
from evoopt.stats import mean_std

FRESH_SEED_OFFSET = 1000
DEFAULT_LR_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
WARMUP_COSINE = {"kind": "warmup_cosine", "warmup_fraction": 0.05, "final_lr_fraction": 0.0}
ADAMW_WEIGHT_DECAYS = (0.01, 0.05, 0.2)
SPLITS = ("val", "test")
# the grid dimensions a spec may tune, in tie-breaking order (smaller wins)
GRID_DIMS = ("lr", "weight_decay")


def _build(seed: str, name: str, description: str, lr: float,
           schedule: Mapping[str, Any] | None = None, weight_decay: float | None = None,
           ) -> Genome | ChainGenome:
    d = seed_genome(seed).to_dict()
    d.update(name=name, description=description)
    _scale_lrs(d, lr / d["lr"])
    if schedule is not None:
        d["schedule"] = dict(schedule)
        if "matrix" in d:  # both roles follow the schedule
            d["matrix"]["schedule"] = dict(schedule)
    if weight_decay is not None:
        d["weight_decay"] = {"kind": "decoupled", "value": weight_decay}
    return genome_from_dict(d, source=f"baseline {name}")


def _scale_lrs(d: dict[str, Any], factor: float) -> None:
    """Scale every lr of a genome dict by ``factor``: its own and, with a split, the matrices'
    (Muon's grid moves both lrs together)."""
    d["lr"] = float(f"{d['lr'] * factor:.6g}")
    if "matrix" in d and "lr" in d["matrix"]:
        d["matrix"] = {**d["matrix"], "lr": float(f"{d['matrix']['lr'] * factor:.6g}")}


def _reference(stem: str) -> Genome:
    """A published optimizer kept for comparison (``genomes/reference/``), in canonical form
    (largest |term weight| 1, so its lr is the step size that acts)."""
    from evoopt.paths import GENOMES_DIR

    genome = load_genome(GENOMES_DIR / "reference" / f"{stem}.toml")
    return replace(genome.canonical(), name=genome.name, description=genome.description)


def _lr_grid(centre: float, factors: Sequence[float] = DEFAULT_LR_FACTORS) -> tuple[float, ...]:
    return tuple(sorted({float(f"{centre * f:.6g}") for f in factors}))


@dataclass(frozen=True)
class BaselineSpec:
    """A baseline: its (centre) genome and the grid its hyperparameters are tuned over.

    ``base()`` builds the genome at the grid's centre; ``grid`` maps a dimension of
    :data:`GRID_DIMS` (``lr``; ``weight_decay``: the decoupled decay's value) to its values.
    """

    name: str
    description: str
    base: Callable[[], Genome | ChainGenome] = field(compare=False)
    grid: dict[str, tuple[float, ...]] = field(compare=False)

    def __post_init__(self) -> None:
        for dim, values in self.grid.items():
            if dim not in GRID_DIMS:
                raise ValueError(f"baseline {self.name}: unknown grid dimension {dim!r} "
                                 f"(allowed: {', '.join(GRID_DIMS)})")
            if not values or any(not (v > 0 and math.isfinite(v)) for v in values):
                raise ValueError(f"baseline {self.name}: grid {dim} needs positive numbers, "
                                 f"got {list(values)}")
        if "lr" not in self.grid:
            raise ValueError(f"baseline {self.name}: the grid must tune lr")

    def with_lr_factors(self, factors: Sequence[float]) -> BaselineSpec:
        """The same baseline with lr grid ``centre × factors`` (centre: ``base().lr``)."""
        if not factors or any(not (f > 0 and math.isfinite(f)) for f in factors):
            raise ValueError(f"lr factors must be positive numbers, got {list(factors)}")
        return replace(self, grid={**self.grid, "lr": _lr_grid(self.base().lr, factors)})

    def points(self) -> list[dict[str, float]]:
        """Every grid point, dimensions in :data:`GRID_DIMS` order, values ascending."""
        dims = [d for d in GRID_DIMS if d in self.grid]
        values = [sorted(set(self.grid[d])) for d in dims]
        return [dict(zip(dims, combo, strict=True)) for combo in itertools.product(*values)]

    def genome_at(self, point: Mapping[str, float]) -> Genome | ChainGenome:
        """The base genome at ``point``; ValueError (GenomeError) when the genome rejects it."""
        d = self.base().to_dict()
        _scale_lrs(d, point["lr"] / d["lr"])
        d["lr"] = point["lr"]
        if "weight_decay" in point:
            if "weight_decay" not in d:
                raise ValueError(f"baseline {self.name}: no weight_decay table to tune")
            d["weight_decay"] = {**d["weight_decay"], "value": point["weight_decay"]}
        return genome_from_dict(d, source=f"baseline {self.name} at {_label(point)}")


def _label(point: Mapping[str, float]) -> str:
    return ",".join(f"{k}={v:.4g}" for k, v in point.items())


FAIR_BASELINES: dict[str, BaselineSpec] = {
    spec.name: spec for spec in (
        BaselineSpec(
            "adam", "Adam, constant lr; lr tuned",
            functools.partial(_build, "adam", "adam", "Adam, constant lr", 5e-3),
            {"lr": _lr_grid(5e-3)}),
        BaselineSpec(
            "adamw-cosine", "AdamW, warmup + cosine schedule; lr × decoupled weight decay tuned",
            functools.partial(_build, "adamw", "adamw-cosine", "AdamW, warmup + cosine", 5e-3,
                              WARMUP_COSINE, 0.05),
            {"lr": _lr_grid(5e-3), "weight_decay": ADAMW_WEIGHT_DECAYS}),
        BaselineSpec(
            "lion-cosine", "Lion, warmup + cosine schedule; lr tuned",
            functools.partial(_build, "lion", "lion-cosine", "Lion, warmup + cosine", 2e-3,
                              WARMUP_COSINE),
            {"lr": _lr_grid(2e-3)}),
        BaselineSpec(
            "evolved-marfinetz-2025",
            "the published evolved optimizer of Marfinetz 2025 (arXiv 2512.11853), its own "
            "schedule and decay; lr tuned. A reference to beat, never a campaign seed",
            functools.partial(_reference, "evolved-marfinetz-2025"),
            {"lr": _lr_grid(_reference("evolved-marfinetz-2025").lr)}),
        BaselineSpec(
            "nesterov-cosine", "SGD with Nesterov momentum, warmup + cosine schedule; lr tuned",
            functools.partial(_build, "nesterov", "nesterov-cosine",
                              "SGD-Nesterov, warmup + cosine", 0.03, WARMUP_COSINE),
            {"lr": _lr_grid(0.03)}),
        # the 2024-26 frontier (issue 18), each the exact seed of its reference
        BaselineSpec(
            "muon-cosine", "Muon for matrices, AdamW for the others, warmup + cosine; both lrs "
            "tuned together (each grid factor scales both)",
            functools.partial(_build, "muon", "muon-cosine", "Muon + AdamW, warmup + cosine",
                              3e-4, WARMUP_COSINE),
            {"lr": _lr_grid(3e-4)}),
        BaselineSpec(
            "schedule-free-adamw", "Schedule-Free AdamW (no lr decay: it averages); lr tuned; "
            "scored at its averaged weights",
            functools.partial(_build, "schedule-free-adamw", "schedule-free-adamw",
                              "Schedule-Free AdamW", 2.5e-3),
            {"lr": _lr_grid(2.5e-3)}),
        BaselineSpec(
            "ademamix-cosine", "AdEMAMix, warmup + cosine; lr tuned over 7 points (x1/8 to x8: "
            "issue 18 found its best lr at the edge of 5)",
            functools.partial(_build, "ademamix", "ademamix-cosine", "AdEMAMix, warmup + cosine",
                              2e-3, WARMUP_COSINE),
            {"lr": _lr_grid(2e-3, (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0))}),
    )
}
#: The frontier baselines (issue 18): the bar a 2026 reader applies. Discovery campaigns list
#: them; they are not defaults (each adds 20-40 runs per task to a finish).
FRONTIER_BASELINES = ("muon-cosine", "schedule-free-adamw", "ademamix-cosine")
#: The hand-designed baselines every comparison gets (the published evolved optimizer is asked
#: for by name: it is a reference, not a fair-baseline default).
DEFAULT_BASELINES = ("adam", "adamw-cosine", "lion-cosine", "nesterov-cosine")


def get_baseline(name: str, lr_factors: Sequence[float] | None = None) -> BaselineSpec:
    """A spec of :data:`FAIR_BASELINES` by name (ValueError naming the choices otherwise)."""
    if name not in FAIR_BASELINES:
        raise ValueError(f"unknown baseline {name!r} (choose from: "
                         f"{', '.join(FAIR_BASELINES)})")
    spec = FAIR_BASELINES[name]
    return spec if lr_factors is None else spec.with_lr_factors(lr_factors)


@dataclass
class TunedBaseline:
    """The outcome of the protocol for one baseline (see the module docstring)."""

    name: str
    key: str  # the item key of the final re-runs ("baseline:<name>")
    description: str
    genome: Genome | ChainGenome  # the tuned genome
    best: dict[str, float]
    at_grid_edge: dict[str, bool]
    sweep: list[dict[str, Any]]  # one row per grid point: key, point, per_seed, mean, status
    sweep_seeds: list[int]
    final_seeds: list[int]
    final: dict[str, list[float]]  # split -> per-seed fitness on final_seeds

    @property
    def sweep_fitness(self) -> float:
        return next(r["fitness_mean"] for r in self.sweep if r["point"] == self.best)

    def mean_std(self, split: str = "val") -> tuple[float | None, float | None]:
        return mean_std(self.final[split])

    def to_dict(self) -> dict[str, Any]:
        stats = {s: self.mean_std(s) for s in self.final}
        return {"name": self.name, "key": self.key, "description": self.description,
                "genome": self.genome.to_dict(), "formula": self.genome.formula(),
                "best": dict(self.best), "at_grid_edge": dict(self.at_grid_edge),
                "sweep_fitness": self.sweep_fitness, "sweep": self.sweep,
                "sweep_seeds": list(self.sweep_seeds), "final_seeds": list(self.final_seeds),
                "final": {s: list(v) for s, v in self.final.items()},
                "mean": {s: m for s, (m, _) in stats.items()},
                "std": {s: sd for s, (_, sd) in stats.items()}}


def _failed(x: float) -> bool:
    """Whether a per-seed fitness from an ``EvaluateFn`` is a failed run's. The number is the
    only signal here, and an exact one: a failure is stored at ``WORST_FITNESS`` and every ok
    fitness is above it (:func:`~evoopt.fitness.runner.ok_floor`)."""
    return x <= WORST_FITNESS


def _sweep_key(point: Mapping[str, float]) -> tuple:
    return tuple(point[d] for d in GRID_DIMS if d in point)


def select_best(spec: BaselineSpec, rows: Sequence[Mapping[str, Any]]
                ) -> tuple[dict[str, float], dict[str, bool]]:
    """(best point, at_grid_edge per dimension) from sweep rows (``point``, ``fitness_mean``,
    ``status``): best mean, ties to the smaller lr (then smaller other values); invalid points
    are never picked."""
    valid = [r for r in rows if r["status"] != "invalid"]
    if not valid:
        raise ValueError(f"baseline {spec.name}: the genome rejects every grid point "
                         f"({', '.join(_label(r['point']) for r in rows)})")
    best = min(valid, key=lambda r: (-r["fitness_mean"], _sweep_key(r["point"])))["point"]
    edge = {}
    for dim, values in spec.grid.items():
        vs = sorted(set(values))
        edge[dim] = len(vs) > 1 and best[dim] in (vs[0], vs[-1])
    return dict(best), edge


def _seed_list(seeds: int | Sequence[int], offset: int = 0) -> list[int]:
    if isinstance(seeds, int):
        return list(range(offset, offset + seeds))
    return [int(s) for s in seeds]


def _check_seeds(sweep: Sequence[int], final: Sequence[int], splits: Sequence[str]) -> None:
    if not sweep or not final:
        raise ValueError("the protocol needs at least one sweep seed and one final seed")
    overlap = sorted(set(sweep) & set(final))
    if overlap:
        raise ValueError(f"final seeds {list(final)} overlap the sweep seeds {list(sweep)} "
                         f"({overlap}): the re-run must use fresh seeds")
    if not splits or any(s not in SPLITS for s in splits):
        raise ValueError(f"splits must be among {SPLITS}, got {list(splits)}")


def tune_baselines(specs: Sequence[BaselineSpec], evaluate: EvaluateFn,
                   sweep_seeds: Sequence[int], final_seeds: Sequence[int],
                   splits: Sequence[str] = ("val",)) -> list[TunedBaseline]:
    """The protocol (module docstring) for several baselines; every sweep goes to ``evaluate``
    in one call (a parallel evaluator runs them together), then the finals once per split."""
    sweep, final = [int(s) for s in sweep_seeds], [int(s) for s in final_seeds]
    _check_seeds(sweep, final, splits)
    if len({s.name for s in specs}) != len(specs):
        raise ValueError(f"baselines repeat: {[s.name for s in specs]}")
    rows: dict[str, list[dict[str, Any]]] = {}
    items: list[tuple[str, Genome]] = []
    for spec in specs:
        rows[spec.name] = []
        for point in spec.points():
            key = f"baseline:{spec.name}@{_label(point)}"
            row: dict[str, Any] = {"key": key, "point": point, "per_seed": [],
                                   "fitness_mean": WORST_FITNESS, "n_failed": 0,
                                   "status": "invalid", "message": ""}
            try:
                items.append((key, spec.genome_at(point)))
            except ValueError as e:  # outside the genome's valid range: recorded, not run
                row["message"] = str(e)
            rows[spec.name].append(row)
    results = evaluate(items, sweep, "val") if items else {}
    check_results(items, sweep, results)
    tuned = []
    for spec in specs:
        for row in rows[spec.name]:
            if row["key"] not in results:
                continue
            per_seed = [float(x) for x in results[row["key"]]]
            n_failed = sum(_failed(x) for x in per_seed)
            row.update(per_seed=per_seed, n_failed=n_failed,
                       status="failed" if n_failed else "ok",
                       fitness_mean=WORST_FITNESS if n_failed else mean_std(per_seed)[0])
        best, edge = select_best(spec, rows[spec.name])
        tuned.append(TunedBaseline(
            name=spec.name, key=f"baseline:{spec.name}", description=spec.description,
            genome=spec.genome_at(best), best=best, at_grid_edge=edge, sweep=rows[spec.name],
            sweep_seeds=sweep, final_seeds=final, final={}))
    for split in splits:
        finals = [(t.key, t.genome) for t in tuned]
        got = evaluate(finals, final, split)
        check_results(finals, final, got)
        for t in tuned:
            t.final[split] = [float(x) for x in got[t.key]]
    return tuned


def tune_baseline(spec: BaselineSpec, evaluate: EvaluateFn, sweep_seeds: Sequence[int],
                  final_seeds: Sequence[int], splits: Sequence[str] = ("val",)) -> TunedBaseline:
    """The protocol for one baseline (see :func:`tune_baselines`)."""
    return tune_baselines([spec], evaluate, sweep_seeds, final_seeds, splits)[0]


# -- the CLI's report --------------------------------------------------------------------------
@dataclass
class BaselineReport:
    """``summary``: one row per baseline; ``sweep``: one row per (baseline, grid point);
    ``runs``: one row per training run (sweep, search and final phases)."""

    task: TaskSpec
    split: str
    summary: pd.DataFrame
    sweep: pd.DataFrame
    runs: pd.DataFrame = field(repr=False)
    tuned: list[TunedBaseline] = field(default_factory=list, repr=False)
    search: dict[str, Any] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        def records(df: pd.DataFrame) -> list[dict[str, Any]]:
            return json.loads(df.to_json(orient="records"))

        return {"task": self.task.to_dict(), "split": self.split,
                "summary": records(self.summary), "sweep": records(self.sweep),
                "runs": records(self.runs), "tuned": [t.to_dict() for t in self.tuned],
                "search": self.search}

    def write(self, out: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``<out>.csv`` (summary table) and ``<out>.json`` (everything) atomically; a
        ``.csv`` or ``.json`` suffix on ``out`` is dropped first. Returns both paths."""
        csv_path, json_path = report_paths(out)
        with atomic_output(csv_path) as tmp:
            self.summary.to_csv(tmp, index=False)
        atomic_write_text(json_path, json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        return csv_path, json_path


def report_paths(out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The ``(csv, json)`` files :meth:`BaselinesReport.write` writes for ``out``."""
    base = Path(out)
    if base.suffix in (".csv", ".json"):
        base = base.with_suffix("")
    return base.with_name(base.name + ".csv"), base.with_name(base.name + ".json")


def _summary_row(name: str, kind: str, key: str, genome: Genome, split: str,
                 final_seeds: Sequence[int], runs: list[dict[str, Any]]) -> dict[str, Any]:
    rs = [r for r in runs if r["key"] == key and r["split"] == split
          and r["seed"] in set(final_seeds)]
    fit_mean, fit_std = mean_std([r["fitness"] for r in rs])
    acc, acc_std = mean_std([r["accuracy"] for r in rs])
    loss, loss_std = mean_std([r["loss"] for r in rs])
    wd = genome.weight_decay["value"] if genome.weight_decay is not None else None
    return {"optimizer": name, "kind": kind, "best_lr": genome.lr, "best_weight_decay": wd,
            "schedule": genome.schedule.kind, "split": split,
            "seeds": " ".join(map(str, final_seeds)),
            "n_failed": sum(r["status"] != "ok" for r in rs),
            "fitness_mean": fit_mean, "fitness_std": fit_std, "accuracy_mean": acc,
            "accuracy_std": acc_std, "loss_mean": loss, "loss_std": loss_std,
            "wall_time_s": float(sum(r["wall_time_s"] for r in rs)),
            "formula": genome.formula()}


def run_baselines(
    task: TaskSpec | str,
    names: Sequence[str] = DEFAULT_BASELINES,
    lr_factors: Sequence[float] | None = None,
    sweep_seeds: int | Sequence[int] = 2,
    final_seeds: int | Sequence[int] | None = None,
    split: str = "val",
    data_dir: str | os.PathLike[str] | None = None,
    runner: FitnessRunner | None = None,
    progress: RunProgressFn | None = None,
    search_budget: int = 0,
    search_storage: str | os.PathLike[str] | None = None,
    search_seed: int = 0,
) -> BaselineReport:
    """Tune the named :data:`FAIR_BASELINES` in this process, re-run the best on fresh seeds.

    ``lr_factors`` replaces each spec's lr grid by ``centre × factors``. ``final_seeds`` defaults
    to as many seeds as the sweep, numbered from 1000; they must not overlap the sweep seeds.
    ``search_budget > 0`` also runs the budget-matched Optuna AdamW search
    (:func:`evoopt.fitness.optuna_search.cli_search`) on the sweep seeds and re-runs its best
    trial on the final seeds (summary row ``optuna-adamw``).
    """
    spec_task = load_task(task)
    if split not in SPLITS:
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    specs = [get_baseline(n, lr_factors) for n in names]
    sweep = _seed_list(sweep_seeds)
    final = _seed_list(len(sweep) if final_seeds is None else final_seeds, FRESH_SEED_OFFSET)
    _check_seeds(sweep, final, (split,))
    runner = runner or make_runner(spec_task, data_dir=None if data_dir is None
                                   else str(data_dir))
    evaluate = RunnerEvaluate(runner, progress=progress)
    tuned = tune_baselines(specs, evaluate, sweep, final, (split,)) if specs else []
    summary, sweep_rows = [], []
    for t in tuned:
        row = _summary_row(t.name, "tuned", t.key, t.genome, split, final, evaluate.runs)
        centre = FAIR_BASELINES[t.name].base().lr
        summary.append({**row, "lr_factor": t.best["lr"] / centre,
                        "at_grid_edge": any(t.at_grid_edge.values()),
                        "grid_edge": ",".join(d for d, e in t.at_grid_edge.items() if e),
                        "sweep_fitness": t.sweep_fitness})
        for r in t.sweep:
            sweep_rows.append({"optimizer": t.name, **r["point"],
                               "lr_factor": r["point"]["lr"] / centre,
                               "fitness_mean": r["fitness_mean"], "n_failed": r["n_failed"],
                               "status": r["status"],
                               "per_seed": " ".join(f"{x:.4f}" for x in r["per_seed"])})
    search = None
    if search_budget > 0:
        from evoopt.fitness.optuna_search import cli_search

        result, final_scores = cli_search(spec_task, runner, evaluate, sweep, final, split,
                                          budget=search_budget, storage_path=search_storage,
                                          seed=search_seed)
        search = result.to_dict()
        if result.genome is not None:
            row = _summary_row("optuna-adamw", "budget_matched", result.final_key,
                               result.genome, split, final, evaluate.runs)
            summary.append({**row, "lr_factor": None, "at_grid_edge": False, "grid_edge": "",
                            "sweep_fitness": result.best_value})
            search["final"] = {split: final_scores}
    phases: dict[str, tuple[str, str, float]] = {}
    for t in tuned:
        phases[t.key] = (t.name, "final", t.genome.lr)
        for r in t.sweep:
            phases[r["key"]] = (t.name, "sweep", r["point"]["lr"])
    runs = []
    for r in evaluate.runs:
        name, phase, lr = phases.get(r["key"], ("optuna-adamw", "search", None))
        if phase == "search" and r["seed"] in set(final):
            phase = "final"
        runs.append({"optimizer": name, "phase": phase, "lr": lr, **r})
    return BaselineReport(task=spec_task, split=split, summary=pd.DataFrame(summary),
                          sweep=pd.DataFrame(sweep_rows), runs=pd.DataFrame(runs), tuned=tuned,
                          search=search)


__all__ = ["ADAMW_WEIGHT_DECAYS", "DEFAULT_BASELINES", "DEFAULT_LR_FACTORS", "FAIR_BASELINES",
           "FRESH_SEED_OFFSET", "GRID_DIMS", "BaselineReport", "BaselineSpec", "EvaluateFn",
           "TunedBaseline", "get_baseline", "report_paths", "run_baselines", "select_best",
           "tune_baseline", "tune_baselines"]
