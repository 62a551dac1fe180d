"""Fair baselines: every hand-designed optimizer gets its learning rate tuned like a winner would.

Protocol (``run_baselines``):

1. for each seed genome (adam, adamw, adan, lion, nesterov, ...), sweep the learning rate over a
   log grid around its own lr (default ``lr x {1/10, 1/3, 1, 3, 10}``) on the **validation**
   split with the sweep seeds (0..n-1);
2. pick the lr with the best mean fitness (ties: the smaller lr); flag it if it lies on the edge
   of the grid (the grid should then be widened);
3. re-run that lr on **fresh** seeds (1000..1000+n-1 by default, never used by the sweep) on the
   requested split (``val``, or ``test`` for a final report) and report mean +- std.

The genome's own schedule (if any) is kept: tuning only the lr, on the same budget and split as
evolved genomes get, is what makes the comparison fair.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evoopt.fitness.runner import WORST_FITNESS, FitnessRunner, SeedResult
from evoopt.fitness.task import TaskSpec, load_task

DEFAULT_OPTIMIZERS = ("adam", "adamw", "adan", "lion", "nesterov")
DEFAULT_LR_FACTORS = (0.1, 1 / 3, 1.0, 3.0, 10.0)
FRESH_SEED_OFFSET = 1000

# progress(optimizer, phase, lr, seed, result) after every run: phase is "sweep" or "final".
ProgressFn = Callable[[str, str, float, int, SeedResult], None]


@dataclass
class BaselineReport:
    """``summary``: one row per optimizer; ``sweep``: one row per (optimizer, lr);
    ``runs``: one row per training run (both phases)."""

    task: TaskSpec
    split: str
    summary: pd.DataFrame
    sweep: pd.DataFrame
    runs: pd.DataFrame = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        def records(df: pd.DataFrame) -> list[dict[str, Any]]:
            return json.loads(df.to_json(orient="records"))

        return {"task": self.task.to_dict(), "split": self.split,
                "summary": records(self.summary), "sweep": records(self.sweep),
                "runs": records(self.runs)}

    def write(self, out: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``<out>.csv`` (summary table) and ``<out>.json`` (everything); a ``.csv`` or
        ``.json`` suffix on ``out`` is dropped first. Returns both paths."""
        base = Path(out)
        if base.suffix in (".csv", ".json"):
            base = base.with_suffix("")
        base.parent.mkdir(parents=True, exist_ok=True)
        csv_path = base.with_name(base.name + ".csv")
        json_path = base.with_name(base.name + ".json")
        self.summary.to_csv(csv_path, index=False)
        json_path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return csv_path, json_path


def _stats(xs: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [x for x in xs if x is not None and math.isfinite(x)]
    if not vals:
        return None, None
    a = np.asarray(vals, dtype=np.float64)
    return float(a.mean()), float(a.std())


def _seed_list(seeds: int | Sequence[int], offset: int = 0) -> list[int]:
    return list(range(offset, offset + seeds)) if isinstance(seeds, int) else [int(s) for s in
                                                                              seeds]


def _with_lr(genome: Any, lr: float) -> Any:
    """``genome.with_lr(lr)``; an lr the genome rejects becomes an invalid genome dict, which the
    runner scores as ``status="error"`` (so a too-wide grid is recorded, not fatal)."""
    try:
        return genome.with_lr(lr)
    except ValueError:
        return {**genome.to_dict(), "lr": lr}


def run_baselines(
    task: TaskSpec | str,
    optimizers: Sequence[str] = DEFAULT_OPTIMIZERS,
    lr_factors: Sequence[float] = DEFAULT_LR_FACTORS,
    sweep_seeds: int | Sequence[int] = 2,
    final_seeds: int | Sequence[int] | None = None,
    split: str = "val",
    data_dir: str | os.PathLike[str] | None = None,
    runner: FitnessRunner | None = None,
    progress: ProgressFn | None = None,
) -> BaselineReport:
    """Tune each seed genome's lr on val, re-run the best on fresh seeds; see module docstring.

    ``final_seeds`` defaults to as many seeds as the sweep, numbered from 1000; explicit final
    seeds must not overlap the sweep seeds.
    """
    from evoopt.genome import seed_genome

    spec = load_task(task)
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    if not lr_factors or any(not (f > 0 and math.isfinite(f)) for f in lr_factors):
        raise ValueError(f"lr factors must be positive numbers, got {list(lr_factors)}")
    sweep = _seed_list(sweep_seeds)
    n_final = len(sweep) if final_seeds is None else final_seeds
    final = _seed_list(n_final, FRESH_SEED_OFFSET)
    if set(sweep) & set(final):
        raise ValueError(f"final seeds {final} overlap the sweep seeds {sweep}: use fresh ones")
    runner = runner or FitnessRunner(spec, data_dir=None if data_dir is None else str(data_dir))
    factors = sorted(set(float(f) for f in lr_factors))

    run_rows: list[dict[str, Any]] = []
    sweep_rows: list[dict[str, Any]] = []
    summary_rows: list[dict[str, Any]] = []

    def run(name: str, phase: str, genome: Any, lr: float, seeds: list[int], on: str,
            ) -> list[SeedResult]:
        out = []
        for s in seeds:
            r = runner.evaluate(genome, s, split=on)
            out.append(r)
            run_rows.append({"optimizer": name, "phase": phase, "lr": lr, "seed": s,
                             "split": on, "fitness": r.fitness, "accuracy": r.val_accuracy,
                             "loss": r.val_loss, "status": r.status, "steps": r.steps,
                             "wall_time_s": r.wall_time_s, "message": r.message})
            if progress is not None:
                progress(name, phase, lr, s, r)
        return out

    for name in optimizers:
        base = seed_genome(name)
        best: tuple[float, float, float] | None = None  # (mean fitness, lr, factor)
        for f in factors:
            lr = base.lr * f
            rs = run(name, "sweep", _with_lr(base, lr), lr, sweep, "val")
            fit = [r.fitness for r in rs]
            mean_fit = WORST_FITNESS if any(r.status != "ok" for r in rs) else float(np.mean(fit))
            acc, acc_std = _stats([r.val_accuracy for r in rs])
            sweep_rows.append({"optimizer": name, "lr": lr, "lr_factor": f,
                               "fitness_mean": mean_fit, "val_accuracy_mean": acc,
                               "val_accuracy_std": acc_std,
                               "n_failed": sum(r.status != "ok" for r in rs)})
            if best is None or mean_fit > best[0]:
                best = (mean_fit, lr, f)
        assert best is not None
        sweep_fit, best_lr, best_f = best
        rs = run(name, "final", _with_lr(base, best_lr), best_lr, final, split)
        fit_mean, fit_std = _stats([r.fitness for r in rs])
        acc, acc_std = _stats([r.val_accuracy for r in rs])
        loss, loss_std = _stats([r.val_loss for r in rs])
        n_failed = sum(r.status != "ok" for r in rs)
        summary_rows.append({
            "optimizer": name, "base_lr": base.lr, "best_lr": best_lr, "lr_factor": best_f,
            "at_grid_edge": len(factors) > 1 and best_f in (factors[0], factors[-1]),
            "sweep_fitness": sweep_fit, "split": split,
            "seeds": " ".join(map(str, final)), "n_failed": n_failed,
            "fitness_mean": WORST_FITNESS if n_failed else fit_mean,
            "fitness_std": 0.0 if n_failed else fit_std,
            "accuracy_mean": acc, "accuracy_std": acc_std, "loss_mean": loss,
            "loss_std": loss_std,
            "wall_time_s": float(sum(r.wall_time_s for r in rs)),
        })
    return BaselineReport(task=spec, split=split, summary=pd.DataFrame(summary_rows),
                          sweep=pd.DataFrame(sweep_rows), runs=pd.DataFrame(run_rows))


__all__ = ["DEFAULT_LR_FACTORS", "DEFAULT_OPTIMIZERS", "FRESH_SEED_OFFSET", "BaselineReport",
           "run_baselines"]
