"""CLI commands for the fitness stage: ``evaluate`` and ``baselines``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table
from rich.text import Text

from evoopt.cli import app
from evoopt.cli.errors import (
    GENOME_ARGUMENT_HELP,
    SafeConsole,
    checked_output,
    fail,
    genome_argument,
    parse_output_file,
    say,
)

if TYPE_CHECKING:
    from evoopt.fitness import TaskSpec

console = SafeConsole()
err_console = SafeConsole(stderr=True)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``field=value`` pairs; values parsed as TOML (``steps=200``, ``device="cpu"``)."""
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise fail(f"--set expects field=value, got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except (tomllib.TOMLDecodeError, RecursionError):
            value = raw.strip()
        out[key.strip()] = value
    return out


def _load_task(task: str, overrides: list[str]):
    from evoopt.fitness import TaskError, load_task

    try:
        spec = load_task(task)
        return spec.with_overrides(**parse_overrides(overrides)) if overrides else spec
    except TaskError as e:
        raise fail(str(e)) from None


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None or x != x else f"{x:.{digits}f}"


def _evaluation_threads(spec: TaskSpec, threads: int | None) -> TaskSpec:
    """``spec`` with the torch CPU threads of a CLI evaluation: ``--threads``, else the task's
    own (from its file or ``--set``), else 1, so that an evaluation beside a campaign does not
    oversubscribe the cores (seeds run one after another: one evaluation at a time)."""
    import os

    cpus = os.cpu_count() or 1
    if threads is not None and not 1 <= threads <= cpus:
        raise fail(f"--threads {threads}: expected 1 to this machine's {cpus} CPUs")
    chosen = threads or spec.threads or 1
    return spec if chosen == spec.threads else spec.with_overrides(threads=chosen)


@app.command()
def evaluate(
    genome_file: str = typer.Argument(..., help=GENOME_ARGUMENT_HELP),
    task: str = typer.Option("cifar10-cpu", "--task", "-t",
                             help="Task name in fitness/, a task TOML file, or your own code as "
                             "MODULE:NAME or FILE.py:NAME."),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Folder holding cifar-10-batches-py/ and/or tinyshakespeare/ "
        "(default: $EVOOPT_DATA_DIR, else the user cache dir; downloaded there if missing and "
        "online)."),
    seeds: int | None = typer.Option(None, "--seeds", "-n", min=1,
                                     help="Seeds 0..N-1 (default: the task's count)."),
    split: str = typer.Option("val", "--split", help="val (fitness) or test (final report)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a task field: field=value."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    threads: int | None = typer.Option(
        None, "--threads", help="torch CPU threads per evaluation, 1 to this machine's CPUs "
        "(default: the task's own threads when it sets them, else 1, which never competes with "
        "other jobs for the cores). Fitness is deterministic per thread count."),
) -> None:
    """Train the fitness task with a genome's optimizer and report fitness per seed (and bits
    per character, for character-level tasks)."""
    from evoopt.fitness import DataError, TaskError, evaluate_genome
    from evoopt.fitness.runner import result_extras, task_info

    if split not in ("val", "test"):
        raise fail(f"--split must be val or test, got {split!r}")
    spec = _evaluation_threads(_load_task(task, overrides), threads)
    genome = genome_argument(genome_file)
    try:
        result = evaluate_genome(genome, spec, seeds=seeds, data_dir=data_dir, split=split)
    # missing data; device="cuda" without CUDA; a task's own ValueError while it stages data
    except (DataError, TaskError, ValueError) as e:
        raise fail(str(e)) from None
    d = result.to_dict()
    d["genome"] = {"name": genome.name, "hash": genome.hash, "formula": genome.formula()}
    for record in (d, *d["seeds"]):  # the task's own extras: bits per character, ...
        record.update(result_extras(spec, record))
    extras = [k for k in result_extras(spec, d) if k.startswith("val_")]
    if as_json:
        print(json.dumps(d))
        return
    info = task_info(spec)
    # a user task's own value beside fitness (a built-in's value is its fitness)
    show_value = info["value_range"] != [0.0, 1.0] or info["direction"] != "maximize"
    accuracy = info["reports_accuracy"]
    table = Table(title=Text(f"{genome.name or genome.hash} on {spec.name} ({split}): "
                             f"fitness = {info['score_label']}"
                             f"{f' ({arrow(info)} better)' if show_value else ''}"))
    cols = ("seed", "status", "fitness", *(("value",) * show_value),
            *(("accuracy",) * accuracy), info["loss_label"],
            *(k.removeprefix("val_") for k in extras), "steps", "time s", "message")
    for col in cols:
        table.add_column(col, justify="left" if col in ("status", "message") else "right")
    for r, s in zip(result.seeds, d["seeds"], strict=True):
        table.add_row(str(r.seed), r.status, f"{r.fitness:.4f}",
                      *((_fmt(r.value),) * show_value), *((_fmt(r.val_accuracy),) * accuracy),
                      _fmt(r.val_loss), *(_fmt(s[k]) for k in extras), str(r.steps),
                      f"{r.wall_time_s:.2f}", r.message)
    console.print(table)
    parts = [f"fitness {result.fitness:.4f} ± {result.fitness_std:.4f}"]
    if show_value:
        parts.append(f"value {_fmt(result.value)} ± {_fmt(result.value_std)}")
    if accuracy:
        parts.append(f"accuracy {_fmt(result.val_accuracy)} ± {_fmt(result.val_accuracy_std)}")
    else:
        parts.append(f"{info['loss_label']} {_fmt(result.val_loss)} ± "
                     f"{_fmt(result.val_loss_std)}")
    parts += [f"{k.removeprefix('val_')} {_fmt(d[k])}" for k in extras]
    say("   ".join([*parts, f"status {result.status}",
                    f"{result.wall_time_s:.1f} s on {result.threads} thread(s)"]))


def arrow(info: dict) -> str:
    """↑ for a value to maximise, ↓ for one to minimise."""
    return "↑" if info["direction"] == "maximize" else "↓"


@app.command()
def baselines(
    task: str = typer.Option("cifar10-cpu", "--task", "-t",
                             help="Task name in fitness/, a task TOML file, or your own code as "
                             "MODULE:NAME or FILE.py:NAME."),
    optimizers: str = typer.Option(
        "adam,adamw-cosine,lion-cosine,nesterov-cosine", "--optimizers",
        help="Comma-separated fair baselines (evoopt.fitness.baselines.FAIR_BASELINES); "
             "empty with --search optuna to run the search alone."),
    lr_grid: str | None = typer.Option(
        None, "--lr-grid", help="Comma-separated multipliers of each baseline's centre lr "
        "(default 0.25,0.5,1,2,4: 5 points a factor 2 apart)."),
    seeds: int = typer.Option(2, "--seeds", "-n", min=1,
                              help="Seeds for the sweep (0..N-1) and, fresh, for the re-run "
                                   "of the best point (1000..1000+N-1)."),
    split: str = typer.Option("val", "--split",
                              help="Split of the final re-run (the sweep always uses val)."),
    search: str = typer.Option("none", "--search",
                               help="none, or optuna: also run the budget-matched Optuna "
                                    "AdamW search (needs --budget)."),
    budget: int = typer.Option(0, "--budget", min=0,
                               help="Paid training runs of the Optuna search."),
    search_seed: int = typer.Option(0, "--search-seed", help="Seed of the TPE sampler."),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Folder holding cifar-10-batches-py/ and/or tinyshakespeare/."),
    overrides: list[str] = typer.Option([], "--set", help="Override a task field: field=value."),
    output: Path | None = typer.Option(
        None, "-o", "--output", parser=parse_output_file,
        help="Write OUTPUT.csv (summary) and OUTPUT.json (all); the Optuna study goes to "
        "OUTPUT.optuna.sqlite (a rerun resumes it)."),
) -> None:
    """Tune the fair baselines on val, re-run the best on fresh seeds, tabulate mean ± std."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from evoopt.fitness import DataError
    from evoopt.fitness.baselines import get_baseline, run_baselines

    if split not in ("val", "test"):
        raise fail(f"--split must be val or test, got {split!r}")
    if search not in ("none", "optuna"):
        raise fail(f"--search must be none or optuna, got {search!r}")
    if search == "optuna" and budget < 1:
        raise fail("--search optuna needs --budget N (paid training runs, N ≥ 1)")
    if search == "none" and budget:
        raise fail("--budget applies to --search optuna only")
    spec = _load_task(task, overrides)
    if output is not None:
        from evoopt.fitness.baselines import report_paths

        task_file = (Path(task),) if Path(task).is_file() else ()
        for path in report_paths(output):
            checked_output(path, task_file)
    names = [s.strip() for s in optimizers.split(",") if s.strip()]
    if not names and search == "none":
        raise fail("--optimizers: no baseline named")
    try:
        factors = None if lr_grid is None else [float(x) for x in lr_grid.split(",")
                                                if x.strip()]
    except ValueError as e:
        raise fail(f"--lr-grid: {e}") from None
    try:
        specs = [get_baseline(n, factors) for n in names]
    except ValueError as e:
        raise fail(f"--optimizers / --lr-grid: {e}") from None
    storage = None
    if search == "optuna" and output is not None:
        base = output.with_suffix("") if output.suffix in (".csv", ".json") else output
        storage = base.with_name(base.name + ".optuna.sqlite")
        storage.parent.mkdir(parents=True, exist_ok=True)
    total = sum(len(s.points()) + 1 for s in specs) * seeds + (budget + seeds) * (
        search == "optuna")
    with Progress("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console) as bar:
        job = bar.add_task("baselines", total=total)

        def tick(key: str, on: str, seed: int, r: Any) -> None:
            bar.update(job, advance=1, description=f"{key} {on} seed={seed}: {r.status}")

        try:
            report = run_baselines(spec, names, factors, sweep_seeds=seeds, split=split,
                                   data_dir=data_dir, progress=tick,
                                   search_budget=budget if search == "optuna" else 0,
                                   search_storage=storage, search_seed=search_seed)
        except (DataError, ValueError) as e:
            raise fail(str(e)) from None
    table = Table(title=f"baselines on {spec.name}: tuned on val, best re-run on fresh seeds "
                        f"({split})")
    for col in ("optimizer", "kind", "best lr", "wd", "schedule", "fitness", "accuracy", "loss",
                "failed"):
        table.add_column(col, justify="left" if col in ("optimizer", "kind", "schedule")
                         else "right")
    for row in report.summary.to_dict(orient="records"):
        edge = f" (grid edge: {row['grid_edge']})" if row.get("grid_edge") else ""
        wd = row.get("best_weight_decay")
        table.add_row(
            row["optimizer"] + edge, row["kind"], f"{row['best_lr']:.3g}",
            "-" if wd is None or wd != wd else f"{wd:.3g}", row["schedule"],
            f"{_fmt(row['fitness_mean'])} ± {_fmt(row['fitness_std'])}",
            f"{_fmt(row['accuracy_mean'])} ± {_fmt(row['accuracy_std'])}",
            f"{_fmt(row['loss_mean'])} ± {_fmt(row['loss_std'])}", str(row["n_failed"]))
    console.print(table)
    if report.search is not None:
        sr = report.search
        say(f"optuna-adamw: {sr['n_trials']} trials ({sr['n_pruned']} pruned), "
            f"{sr['paid']} paid runs of budget {sr['budget']}; best trial "
            f"{sr['best_trial']}: {sr['formula']}")
    if output is not None:
        csv_path, json_path = report.write(output)
        say(f"wrote {csv_path} and {json_path}")
