"""CLI commands for the fitness stage: ``evaluate`` and ``baselines``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from evoopt.cli import app

console = Console()
err_console = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err_console.print(f"error: {message}", style="bold red", markup=False, highlight=False)
    return typer.Exit(code=2)


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    """``field=value`` pairs; values parsed as TOML (``steps=200``, ``device="cpu"``)."""
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise _fail(f"--set expects field=value, got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        out[key.strip()] = value
    return out


def _load_task(task: str, overrides: list[str]):
    from evoopt.fitness import TaskError, load_task

    try:
        spec = load_task(task)
        return spec.with_overrides(**_parse_overrides(overrides)) if overrides else spec
    except TaskError as e:
        raise _fail(str(e)) from None


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


@app.command()
def evaluate(
    genome_file: str = typer.Argument(
        ..., help="A genome file (.toml/.json), or the name of a seed genome (adam, lion, ...)."),
    task: str = typer.Option("cifar10-cpu", "--task", "-t",
                             help="Task name in fitness/ or a task TOML file."),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Folder holding cifar-10-batches-py/ (default: "
        "$EVOOPT_DATA_DIR, else the user cache dir; downloaded there if missing and online)."),
    seeds: int | None = typer.Option(None, "--seeds", "-n", min=1,
                                     help="Seeds 0..N-1 (default: the task's count)."),
    split: str = typer.Option("val", "--split", help="val (fitness) or test (final report)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a task field: field=value."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Train the fitness task with a genome's optimizer and report fitness per seed."""
    from evoopt.fitness import DataError, evaluate_genome
    from evoopt.genome import GenomeError, load_genome, seed_genome

    if split not in ("val", "test"):
        raise _fail(f"--split must be val or test, got {split!r}")
    spec = _load_task(task, overrides)
    try:
        path = Path(genome_file)
        genome = load_genome(path) if path.exists() else seed_genome(genome_file)
    except GenomeError as e:
        raise _fail(str(e)) from None
    try:
        result = evaluate_genome(genome, spec, seeds=seeds, data_dir=data_dir, split=split)
    except DataError as e:
        raise _fail(str(e)) from None
    d = result.to_dict()
    d["genome"] = {"name": genome.name, "hash": genome.hash, "formula": genome.formula()}
    if as_json:
        print(json.dumps(d))
        return
    table = Table(title=f"{genome.name or genome.hash} on {spec.name} ({split})")
    for col in ("seed", "status", "fitness", "accuracy", "loss", "steps", "time s", "message"):
        table.add_column(col, justify="left" if col in ("status", "message") else "right")
    for r in result.seeds:
        table.add_row(str(r.seed), r.status, f"{r.fitness:.4f}", _fmt(r.val_accuracy),
                      _fmt(r.val_loss), str(r.steps), f"{r.wall_time_s:.2f}", r.message)
    console.print(table)
    acc_std = _fmt(result.val_accuracy_std)
    console.print(f"fitness {result.fitness:.4f} ± {result.fitness_std:.4f}   "
                  f"accuracy {_fmt(result.val_accuracy)} ± {acc_std}   status {result.status}   "
                  f"{result.wall_time_s:.1f} s", markup=False, highlight=False)


@app.command()
def baselines(
    task: str = typer.Option("cifar10-cpu", "--task", "-t",
                             help="Task name in fitness/ or a task TOML file."),
    optimizers: str = typer.Option("adam,adamw,adan,lion,nesterov", "--optimizers",
                                   help="Comma-separated seed genome names."),
    lr_grid: str = typer.Option("0.1,0.3333,1,3,10", "--lr-grid",
                                help="Comma-separated multipliers of each genome's own lr."),
    seeds: int = typer.Option(2, "--seeds", "-n", min=1,
                              help="Seeds for the sweep (0..N-1) and, fresh, for the re-run "
                                   "of the best lr (1000..1000+N-1)."),
    split: str = typer.Option("val", "--split",
                              help="Split of the final re-run (the sweep always uses val)."),
    data_dir: Path | None = typer.Option(None, "--data-dir",
                                         help="Folder holding cifar-10-batches-py/."),
    overrides: list[str] = typer.Option([], "--set", help="Override a task field: field=value."),
    output: Path | None = typer.Option(None, "-o", "--output",
                                       help="Write OUTPUT.csv (summary) and OUTPUT.json (all)."),
) -> None:
    """Tune each baseline's lr on val, re-run the best on fresh seeds, tabulate mean ± std."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from evoopt.fitness import DataError
    from evoopt.fitness.baselines import run_baselines
    from evoopt.genome import GenomeError, seed_genome

    if split not in ("val", "test"):
        raise _fail(f"--split must be val or test, got {split!r}")
    spec = _load_task(task, overrides)
    names = [s.strip() for s in optimizers.split(",") if s.strip()]
    try:
        factors = [float(x) for x in lr_grid.split(",") if x.strip()]
        for n in names:
            seed_genome(n)
    except ValueError as e:
        raise _fail(f"--lr-grid: {e}") from None
    except GenomeError as e:
        raise _fail(str(e)) from None
    total = len(names) * (len(set(factors)) + 1) * seeds
    with Progress("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console) as bar:
        job = bar.add_task("baselines", total=total)

        def tick(name: str, phase: str, lr: float, seed: int, r: Any) -> None:
            bar.update(job, advance=1,
                       description=f"{name} {phase} lr={lr:.3g} seed={seed}: {r.status}")

        try:
            report = run_baselines(spec, names, factors, sweep_seeds=seeds, split=split,
                                   data_dir=data_dir, progress=tick)
        except (DataError, ValueError) as e:
            raise _fail(str(e)) from None
    table = Table(title=f"baselines on {spec.name}: lr tuned on val, "
                        f"best re-run on fresh seeds ({split})")
    for col in ("optimizer", "best lr", "× own lr", "fitness", "accuracy", "loss", "failed"):
        table.add_column(col, justify="left" if col == "optimizer" else "right")
    for row in report.summary.to_dict(orient="records"):
        edge = " (grid edge)" if row["at_grid_edge"] else ""
        table.add_row(
            row["optimizer"], f"{row['best_lr']:.3g}", f"{row['lr_factor']:.3g}{edge}",
            f"{row['fitness_mean']:.4f} ± {row['fitness_std']:.4f}",
            f"{_fmt(row['accuracy_mean'])} ± {_fmt(row['accuracy_std'])}",
            f"{_fmt(row['loss_mean'])} ± {_fmt(row['loss_std'])}", str(row["n_failed"]))
    console.print(table)
    if output is not None:
        csv_path, json_path = report.write(output)
        console.print(f"wrote {csv_path} and {json_path}", markup=False, highlight=False)
