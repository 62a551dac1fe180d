"""CLI commands for campaigns: run, resume, status."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from evoopt.cli import app
from evoopt.cli.genome_cmds import fail

console = Console()


def _estimated_evaluations(config: Any) -> int:
    per_candidate = sum(len(s.seeds) for s in config.stages)
    children = config.population - config.elitism if config.selection == "tournament" \
        else max(1, config.population // 2)
    n = max(config.population, len(config.seeds)) + children * (config.generations - 1)
    finals = (config.final_top_k + len(config.final_compare)) * len(config.final_seeds)
    tuned = len(config.final_tuned) * (len(config.final_lr_grid) * len(config.stages[-1].seeds)
                                       + len(config.final_seeds))
    return n * per_candidate + (finals + tuned) * (2 if config.final_test_split else 1)


def _run(config: Any, out: Path, data_dir: str | None, address: str | None,
         serial: bool) -> None:
    from evoopt.campaign.runner import CampaignRunner, make_evaluator

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    best = {"fitness": None}
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("starting", total=_estimated_evaluations(config))

        def hook(info: dict[str, Any]) -> None:
            last = info.get("last")
            if last and last.get("status") == "ok" and (
                    best["fitness"] is None or last["fitness"] > best["fitness"]):
                best["fitness"] = last["fitness"]
            gen = info["generation"]
            where = "final re-evaluation" if info["phase"] == "final" else (
                f"gen {gen + 1}/{info['generations']}" if gen is not None else "")
            if where:
                hook.where = where  # type: ignore[attr-defined]
            progress.update(task, completed=info["done"] + info["cached"] + info["saved"],
                            description=(
                                f"{getattr(hook, 'where', '')} · done {info['done']} · "
                                f"running {info['running']} · cached {info['cached']} · "
                                f"saved {info['saved']} · best {_fmt(best['fitness'])}"))

        evaluator = make_evaluator(config, data_dir, address=address, serial=serial)
        try:
            runner = CampaignRunner(config, out, data_dir=data_dir, evaluator=evaluator,
                                    progress=hook)
            summary = runner.run()
        finally:
            evaluator.close()
    _print_summary(out, summary)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _verdict(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Difference of mean validation fitness and whether it exceeds twice its standard error."""
    delta = a["fitness_mean"] - b["fitness_mean"]
    se = (((a["fitness_std"] or 0) ** 2) / max(1, a["n_seeds"] - 1)
          + ((b["fitness_std"] or 0) ** 2) / max(1, b["n_seeds"] - 1)) ** 0.5
    if abs(delta) <= 2 * se:
        word = "indistinguishable: |Δ| ≤ 2 SE"
    else:
        word = "better: Δ > 2 SE" if delta > 0 else "worse: Δ < −2 SE"
    return f"{delta:+.4f} (SE {se:.4f}; {word})"


def _print_summary(out: Path, summary: dict[str, Any]) -> None:
    table = Table(title=f"{out}: winner vs seeds on fresh seeds (validation split)")
    for col in ("", "uid", "val fitness (mean ± std)", "test accuracy", "seeds"):
        table.add_column(col)
    for row in summary["comparison"]:
        test = row.get("test_accuracy_mean")
        table.add_row(row["name"], row["uid"] or "-",
                      f"{row['fitness_mean']:.4f} ± {row['fitness_std'] or 0:.4f}",
                      "" if test is None else f"{test:.4f}", str(row["n_seeds"]))
    console.print(table)
    rows = {row["name"].split(" (tuned")[0] + (" (tuned)" if "tuned" in row["name"] else ""):
            row for row in summary["comparison"]}
    winner = rows["winner"]
    for name in ("adam", "adan", "adam (tuned)"):
        if name in rows and winner["fitness_mean"] is not None:
            console.print(f"winner − {name}: {_verdict(winner, rows[name])}", highlight=False)
    console.print(f"winner {summary['winner']['uid']}: {summary['winner']['formula']}",
                  markup=False, highlight=False)
    console.print(f"evaluations: {summary['evaluations_done']} paid, "
                  f"{summary['evaluations_cached']} cached, "
                  f"{summary['evaluations_saved_by_hurdles']} saved by hurdles; exported "
                  f"{out / summary['exported']}", markup=False, highlight=False)


@app.command()
def run(
    config_file: Path = typer.Argument(..., help="Campaign config (experiments/*.toml)."),
    out: Path | None = typer.Option(None, "--out", help="Campaign dir (default runs/<name>)."),
    data_dir: str | None = typer.Option(None, "--data-dir", help="Where cifar-10-batches-py is."),
    address: str | None = typer.Option(None, "--address", help="Join this Ray cluster."),
    serial: bool = typer.Option(False, "--serial", help="Evaluate in-process, without Ray."),
) -> None:
    """Run an evolution campaign; results are committed to DIR/campaign.sqlite as they arrive."""
    from evoopt.campaign.config import ConfigError, load_config

    try:
        config = load_config(config_file)
    except ConfigError as e:
        raise fail(str(e)) from None
    out = out or Path("runs") / config.name
    if (out / "campaign.sqlite").exists():
        raise fail(f"{out} already holds a campaign: `evoopt resume {out}` continues it")
    t0 = time.time()
    try:
        _run(config, out, data_dir, address, serial)
    except (ValueError, FileNotFoundError) as e:
        raise fail(str(e)) from None
    console.print(f"wall time {time.time() - t0:.1f} s", highlight=False)


@app.command()
def resume(
    directory: Path = typer.Argument(..., help="A campaign directory."),
    data_dir: str | None = typer.Option(None, "--data-dir"),
    address: str | None = typer.Option(None, "--address"),
    serial: bool = typer.Option(False, "--serial"),
) -> None:
    """Resume an interrupted campaign: finished evaluations are kept, none is repeated."""
    from evoopt.campaign.config import CampaignConfig
    from evoopt.campaign.status import campaign_status
    from evoopt.campaign.store import CampaignStore

    try:
        status = campaign_status(directory)
    except FileNotFoundError as e:
        raise fail(str(e)) from None
    if status["state"] == "running":
        raise fail(f"{directory} is still running (pid alive)")
    with CampaignStore(directory, readonly=True) as store:
        config = CampaignConfig.from_dict(store.get_meta("config"))
        data_dir = data_dir or store.get_meta("data_dir")
    _run(config, directory, data_dir, address, serial)


@app.command()
def status(
    directory: Path = typer.Argument(..., help="A campaign directory."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
) -> None:
    """Where a campaign stands: state, generation, evaluations, best so far."""
    from evoopt.campaign.status import campaign_status

    try:
        info = campaign_status(directory)
    except FileNotFoundError as e:
        raise fail(str(e)) from None
    if as_json:
        print(json.dumps({k: v for k, v in info.items() if k != "summary"}))
        return
    table = Table(title=f"campaign {info['name']} ({directory})")
    table.add_column("field")
    table.add_column("value")
    for key in ("state", "generation", "generations", "individuals", "evaluations_done",
                "evaluations_cached", "evaluations_saved_by_hurdles", "wall_time_s"):
        table.add_row(key, str(info[key]))
    if info["best"]:
        table.add_row("best", f"{info['best']['uid']} {info['best']['fitness']:.4f}")
        table.add_row("formula", info["best"]["formula"])
    console.print(table)
