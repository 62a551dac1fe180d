"""CLI commands for campaigns: run, resume, status, init."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
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
from rich.text import Text

from evoopt.cli import app
from evoopt.cli.errors import (
    Interrupted,
    SafeConsole,
    fail,
    nonempty_path,
    parse_out_dir,
    say,
    signals_interrupt,
    stop,
    store_errors,
)

console = SafeConsole()


def _estimated_evaluations(config: Any) -> int:
    from evoopt.campaign.config import FUNNEL_REFERENCE
    from evoopt.fitness.baselines import get_baseline

    strategy, final = config.strategy, config.final
    per_candidate = sum(len(s.seeds) for s in config.stages)
    children = strategy.population - strategy.elitism if strategy.selection == "tournament" \
        else max(1, strategy.population // 2)
    n = max(strategy.population, len(config.seeds)) + children * (config.generations - 1)
    search = n * per_candidate
    if config.max_evaluations:  # the search stops at the generation boundary past its budget
        search = min(search, config.max_evaluations + children * per_candidate)
    splits = len(final.splits)
    n_final = len(final.seeds)
    finals = (final.top_k + len(final.compare)) * n_final * splits
    specs = [get_baseline(b, final.lr_factors) for b in final.baselines]
    tuned = sum(len(s.points()) for s in specs) * len(config.stages[-1].seeds) \
        + len(specs) * n_final * splits
    optuna = 0
    if final.budget_matched == "optuna":
        optuna = (final.budget_matched_budget or search) + n_final * splits
    # held out: the winner's lr grid (5 points) and every baseline's, per held-out task
    heldout = len(final.heldout_tasks) * (
        (len(final.lr_factors or ()) or 5) * len(config.stages[-1].seeds)
        + n_final * splits + tuned)
    # the funnel: tuned AdamW-cosine on each held-out task (unless a baseline already), and at
    # least one finalist (the winner, whose evaluations the held-out transfer then reuses)
    if config.funnel and FUNNEL_REFERENCE not in final.baselines:
        spec = get_baseline(FUNNEL_REFERENCE, final.lr_factors)
        heldout += len(final.heldout_tasks) * (
            len(spec.points()) * len(config.stages[-1].seeds) + n_final)
    return search + finals + tuned + optuna + heldout


def _run(config: Any, out: Path, data_dir: str | None, address: str | None,
         serial: bool, resuming: bool = False) -> None:
    from evoopt.campaign.orchestrator import CampaignRunner, make_evaluator, preflight

    # seeds (a resume uses the stored ones), tasks, data: before a store or a worker exists
    preflight(config, data_dir, seeds=not resuming)
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
            phase = info["phase"]
            where = ("final re-evaluation" if phase == "final" else
                     f"held out: {phase.removeprefix('heldout:')}"
                     if phase.startswith("heldout:") else
                     f"gen {gen + 1}/{info['generations']}" if gen is not None else "")
            if where:
                hook.where = where  # type: ignore[attr-defined]
            progress.update(task, completed=info["done"] + info["cached"] + info["saved"],
                            description=(
                                f"{getattr(hook, 'where', '')} · done {info['done']} · "
                                f"running {info['running']} · cached {info['cached']} · "
                                f"saved {info['saved']} · best {_fmt(best['fitness'])}"))

        # SIGINT/SIGTERM unwind (the runner closes the store, the evaluator shuts Ray down)
        with signals_interrupt() as guard:
            evaluator = make_evaluator(config, data_dir, address=address, serial=serial)
            guard.install()  # over ray.init's own SIGTERM handler (a native dump, an abort)
            try:
                with CampaignRunner(config, out, data_dir=data_dir, evaluator=evaluator,
                                    progress=hook) as runner:
                    try:
                        summary = runner.run()
                    finally:
                        if guard.received is not None:
                            guard.saved = resuming or _config_stored(runner)
            finally:
                guard.unwinding(evaluator.close)
    _print_summary(out, summary)


def _config_stored(runner: Any) -> bool:
    """Whether the runner stored its campaign's config (the campaign began: it resumes). Asked
    of the runner's own writer: a reader opened now would leave SQLite side files behind."""
    try:
        return runner.store.get_meta("config") is not None
    except Exception:  # a store in trouble: do not hide the interrupt behind its error
        return False


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _pm(mean: float | None, std: float | None) -> str:
    return "-" if mean is None else f"{mean:.4f} ± {std or 0:.4f}"


def _pm_value(mean: float | None, std: float | None) -> str:
    """A task's own value (any scale: a loss of 1e-5 or of 300) and its std, to 4 digits."""
    return "-" if mean is None else f"{mean:.4g} ± {std or 0:.2g}"


def _print_verdicts(verdicts: list[dict[str, Any]]) -> None:
    for v in verdicts:
        p = "-" if v["p_value"] is None else f"{v['p_value']:.3g}"
        say(f"winner − {v['name']} ({v['split']}): {v['mean_diff']:+.4f} (paired SE "
            f"{v['paired_se']:.4f}, p={p}, n={v['n']}): {v['verdict']}")


def _print_tasks(comparison: list[dict[str, Any]]) -> None:
    """A multi-task campaign's per-task scores (each task's own fitness, not normalised)."""
    names = next((list(r["tasks"]) for r in comparison if r.get("tasks")), None)
    if not names:
        return
    table = Table(title="per task, final seeds, val (each task's own fitness; the fitness "
                        "above is the weighted mean gain over the seeded Adam)")
    table.add_column("")
    for name in names:
        table.add_column(name)
    for row in comparison:
        tasks = row.get("tasks") or {}
        table.add_row(row["name"], *(_fmt(tasks.get(n, {}).get("fitness_mean")) for n in names))
    console.print(table)


def _funnel_cell(check: dict[str, Any]) -> str:
    return (f"{_fmt(check['fitness_mean'])} vs {_fmt(check['reference_fitness_mean'])}: "
            f"{check['mean_diff']:+.4f} ± {check['paired_se']:.4f} {check['verdict']}")


def print_funnel(funnel: dict[str, Any] | None) -> None:
    """The funnel: each finalist examined against tuned AdamW-cosine per held-out task, and
    which one survived (or that none did)."""
    if not funnel:
        return
    ref = funnel["reference"]
    table = Table(title=f"funnel: finalists (selection rank order) vs tuned {ref} on each "
                        "held-out task; each lr tuned there; final seeds, val: finalist vs "
                        f"{ref}: Δ ± paired SE, verdict")
    table.add_column("finalist")
    for name in funnel["tasks"]:
        table.add_column(name)
    table.add_column("funnel")
    for f in funnel["finalists"]:
        outcome = "passed" if f["passed"] else f"skipped: worse on {', '.join(f['lost_on'])}"
        table.add_row(f"#{f['rank'] + 1} {f['uid']}",
                      *(_funnel_cell(f["tasks"][n]) for n in funnel["tasks"]), outcome)
    console.print(table)
    examined = funnel["finalists"]
    if funnel["outcome"] == "none passed":
        say(f"funnel: NO FINALIST SURVIVED: each of the {len(examined)} finalists is worse than "
            f"tuned {ref} on at least one held-out task; the best-ranked, "
            f"{funnel['winner_uid']}, is reported as the winner anyway (flagged: none passed)")
    elif funnel["winner_rank"] > 0:
        skipped = [f"{f['uid']} (worse on {', '.join(f['lost_on'])})" for f in examined[:-1]]
        say(f"funnel: winner {funnel['winner_uid']}, finalist #{funnel['winner_rank'] + 1} on "
            f"the selection seeds; skipped, better on selection but worse than tuned {ref} on a "
            f"held-out task: {', '.join(skipped)}")
    else:
        say(f"funnel: the best-ranked finalist {funnel['winner_uid']} passed (not worse than "
            f"tuned {ref} on any held-out task)")
    if funnel.get("not_examined"):
        say(f"funnel: not examined (a better-ranked finalist passed): "
            f"{', '.join(funnel['not_examined'])}")


def _print_summary(out: Path, summary: dict[str, Any]) -> None:
    table = Table(title=f"{out}: winner vs seeds and baselines on the final seeds")
    # several tasks: the test split's fitness (normalised as the val one), else its accuracy;
    # a regression task has no accuracy: its test fitness (R²)
    multi = any(row.get("tasks") for row in summary["comparison"])
    no_accuracy = all(row.get("test_accuracy_mean") is None for row in summary["comparison"])
    by_fitness = multi or no_accuracy
    test_field = "test_fitness_mean" if by_fitness else "test_accuracy_mean"
    # a user task's own value (its loss, ...) beside fitness; a built-in's value is its fitness
    values = any(row.get("value_mean") is not None and row["value_mean"] != row["fitness_mean"]
                 for row in summary["comparison"])
    for col in ("", "kind", "uid", "val fitness (mean ± std)",
                *(("val value (mean ± std)",) * values),
                "test fitness" if by_fitness else "test accuracy",
                *(("test value",) * values), "seeds"):
        table.add_column(col)
    for row in summary["comparison"]:
        test = row.get(test_field)
        table.add_row(row["name"], row.get("kind", ""), row["uid"] or "-",
                      _pm(row["fitness_mean"], row["fitness_std"]),
                      *((_pm_value(row.get("value_mean"), row.get("value_std")),) * values),
                      "" if test is None else f"{test:.4f}",
                      *(("-" if row.get("test_value_mean") is None else
                         f"{row['test_value_mean']:.4g}",) * values), str(row["n_seeds"]))
    console.print(table)
    _print_tasks(summary["comparison"])
    _print_verdicts(summary.get("verdicts") or [])
    print_funnel(summary.get("funnel"))
    for held in summary.get("heldout") or []:
        table = Table(title=f"held-out task {held['task']} (never selected on): each lr tuned "
                            "on its val split, then the final seeds")
        for col in ("", "lr", "val fitness (mean ± std)", "test fitness"):
            table.add_column(col)
        for row in held["rows"]:
            test = row.get("test_fitness_mean")
            table.add_row(row["name"], f"{row['lr']:.3g}",
                          _pm(row["fitness_mean"], row["fitness_std"]),
                          "" if test is None else f"{test:.4f}")
        console.print(table)
        _print_verdicts(held["verdicts"])
        say(f"held-out {held['task']}: the winner {held['transfer']} (val); test: "
            f"{held['transfer_test']}")
    operators = [o for o in summary.get("operators") or [] if o.get("improvements")]
    if operators:
        say("improvements by operator: " + ", ".join(
            f"{o['operator']} {o['improvements']}/{o['children']}" for o in operators))
    timings = summary.get("timings")
    if timings:
        say("time: " + ", ".join(f"{k.removesuffix('_s')} {v:.1f} s"
                                 for k, v in timings.items()))
    flag = ""
    if summary["winner"].get("funnel") == "none passed":
        lost = next((f["lost_on"] for f in (summary.get("funnel") or {}).get("finalists", [])
                     if f["uid"] == summary["winner"]["uid"]), [])
        flag = (" [funnel: none passed; worse than tuned AdamW-cosine on "
                f"{', '.join(lost) or 'a held-out task'}]")
    say(f"winner {summary['winner']['uid']}{flag}: {summary['winner']['formula']}")
    curvature = summary.get("search_curvature") or {}
    if curvature.get("evaluations"):
        share = curvature["wall_time_s"] / max(curvature["search_wall_time_s"], 1e-9)
        say(f"curvature: {curvature['evaluations']} of {curvature['search_evaluations']} search "
            f"evaluations took Hessian-vector products ({share:.0%} of the search's evaluation "
            "time; compared at equal steps, not equal compute)")
    say(f"evaluations: {summary['evaluations_done']} paid, "
        f"{summary['evaluations_cached']} cached, "
        f"{summary['evaluations_saved_by_hurdles']} saved by hurdles; exported "
        f"{out / summary['exported']}")


ADDRESS_HELP = ("Join this Ray cluster: HOST:PORT of its head, or 'auto' (the cluster started on "
                "this machine by `ray start`). Default: a private local Ray instance.")


#: The campaign ``run`` and ``check`` take when given none: the shipped quickstart.
DEFAULT_CAMPAIGN = "quickstart"
CAMPAIGN_ARGUMENT_HELP = (
    "A campaign config file (written as a path: ./name, x.toml), or the name of a shipped "
    f"campaign (quickstart, discover-cpu, ...). Default: {DEFAULT_CAMPAIGN}, the embedded "
    "default campaign.")


@app.command()
def run(
    config_file: str = typer.Argument(DEFAULT_CAMPAIGN, help=CAMPAIGN_ARGUMENT_HELP),
    out: Path | None = typer.Option(None, "--out", parser=parse_out_dir,
                                    help="Campaign dir (default runs/<name>)."),
    data_dir: str | None = typer.Option(
        None, "--data-dir",
        help="Folder holding the tasks' data (cifar-10-batches-py/, tinyshakespeare/)."),
    address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
    serial: bool = typer.Option(False, "--serial", help="Evaluate in-process, without Ray."),
    task: str | None = typer.Option(
        None, "--task", "-t", help="Select on this task instead of the campaign's: a shipped "
        "name, a task TOML, or your own code as MODULE:NAME or FILE.py:NAME (an objective "
        "function or a TrainingTask class)."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a field of the selection task(s): field=value."),
) -> None:
    """Run an evolution campaign; results are committed to DIR/campaign.sqlite as they arrive."""
    from evoopt.campaign.config import ConfigError, load_config
    from evoopt.cli.fitness_cmds import parse_overrides

    try:
        config = load_config(config_file, task=task, task_overrides=parse_overrides(overrides))
    except ConfigError as e:
        raise fail(str(e)) from None
    out = out or Path("runs") / config.name
    _check_new_campaign_dir(out)
    t0 = time.time()
    _run_or_fail(config, out, data_dir, address, serial)
    say(f"wall time {time.time() - t0:.1f} s")


def _check_new_campaign_dir(out: Path) -> None:
    """``out`` may hold a new campaign: no file in the way, writable (checked before Ray
    starts), and no store of a campaign that started (a store left by a start that failed
    before its config was stored is reused)."""
    from evoopt.campaign.store import DB_NAME, CampaignStore

    _check_writable(out, "campaign directory (--out)")
    if (out / DB_NAME).exists():
        with store_errors(out), CampaignStore(out, readonly=True) as store:
            started = store.get_meta("config") is not None
        if started:
            raise fail(f"{out} already holds a campaign: `evoopt resume {out}` continues it")


def _check_writable(directory: Path, what: str) -> None:
    from evoopt.fileio import OutputError, check_writable_directory

    try:
        check_writable_directory(directory, what)
    except OutputError as e:
        raise fail(str(e)) from None


def _run_or_fail(config: Any, out: Path, data_dir: str | None, address: str | None,
                 serial: bool, resuming: bool = False) -> None:
    from evoopt.campaign.store import StoreError, campaign_lock

    try:  # the campaign's writer lock first: a second run/resume is refused before preflight
        with campaign_lock(out):
            _run(config, out, data_dir, address, serial, resuming)
    except (ValueError, FileNotFoundError, ConnectionError, StoreError) as e:
        raise fail(str(e)) from None
    except Interrupted as e:
        raise _interrupted(out, e) from None


def _interrupted(out: Path, interrupt: Interrupted) -> typer.Exit:
    """The line ending a campaign stopped by SIGINT/SIGTERM (how to resume it, when it had
    started), and the exit 128 + signal number."""
    message = (f"interrupted ({interrupt.name}): campaign saved in {out}; continue with: "
               f"evoopt resume {out}" if interrupt.saved else
               f"interrupted ({interrupt.name}) before the campaign started; nothing was saved")
    return stop(message, 128 + interrupt.signum, style="bold yellow")


@app.command()
def check(
    config_file: str = typer.Argument(DEFAULT_CAMPAIGN, help=CAMPAIGN_ARGUMENT_HELP),
    data_dir: str | None = typer.Option(
        None, "--data-dir", help="Also check the data there (present, readable, large enough)."),
) -> None:
    """Validate a campaign config (and, with --data-dir, its data) without running anything."""
    from evoopt.campaign.config import ConfigError, load_config
    from evoopt.campaign.orchestrator import preflight

    try:
        config = load_config(config_file)
        if data_dir is not None:
            preflight(config, data_dir)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        raise fail(str(e)) from None
    say(f"{config_file}: campaign {config.name!r} is valid: population "
        f"{config.strategy.population}, {config.generations} generations, "
        f"{len(config.stages)} stage(s), about {_estimated_evaluations(config)} "
        "evaluations")


_parse_init_dir = nonempty_path("DIRECTORY")


@app.command()
def init(
    directory: Path = typer.Argument(..., parser=_parse_init_dir,
                                     help="Folder to copy the shipped campaigns into."),
) -> None:
    """Copy the shipped campaign configs into DIRECTORY to edit (never overwrites a file)."""
    from evoopt.campaign.config import copy_shipped_campaigns

    written = copy_shipped_campaigns(directory)  # an OSError: one line (evoopt.cli._Commands)
    for path in written:
        say(f"wrote {path}")
    example = next((p for p in written if p.stem == "quickstart"), written[0])
    say(f"edit one, then: evoopt run {example}")


@app.command()
def resume(
    directory: Path = typer.Argument(..., help="A campaign directory."),
    data_dir: str | None = typer.Option(None, "--data-dir"),
    address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
    serial: bool = typer.Option(False, "--serial"),
) -> None:
    """Resume an interrupted campaign: finished evaluations are kept, none is repeated."""
    from evoopt.campaign.config import CampaignConfig, ConfigError
    from evoopt.campaign.status import campaign_status
    from evoopt.campaign.store import CampaignStore

    with store_errors(directory):
        status = campaign_status(directory)
        if status["state"] == "not started":
            raise fail(f"{directory}: this campaign never started (its store holds no config), "
                       f"so there is nothing to resume; start it with `evoopt run CONFIG --out "
                       f"{directory}`")
        if status["state"] == "running":
            raise fail(f"{directory} is still running (pid alive)")
        with CampaignStore(directory, readonly=True) as store:
            try:
                config = CampaignConfig.from_dict(store.get_meta("config"))
            except ConfigError as e:
                raise fail(f"{store.path}: stored config: {e}") from None
            data_dir = data_dir or store.get_meta("data_dir")
    if data_dir is not None and not isinstance(data_dir, str):
        raise fail(f"{directory}: stored data_dir {data_dir!r} is not a path; pass --data-dir")
    _check_writable(directory, "campaign directory")  # before Ray starts
    _run_or_fail(config, directory, data_dir, address, serial, resuming=True)


@app.command()
def status(
    directory: Path = typer.Argument(..., help="A campaign directory."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
) -> None:
    """Where a campaign stands: state, generation, evaluations, best so far."""
    from evoopt.campaign.status import campaign_status

    with store_errors(directory):
        info = campaign_status(directory)
        if as_json:
            print(json.dumps({k: v for k, v in info.items() if k != "summary"}))
            return
        # Text, not markup: names and formulas come from the store
        table = Table(title=Text(f"campaign {info['name']} ({directory})"))
        table.add_column("field")
        table.add_column("value")
        for key in ("state", "generation", "generations", "individuals", "evaluations_done",
                    "evaluations_cached", "evaluations_saved_by_hurdles", "wall_time_s"):
            table.add_row(key, Text(str(info[key])))
        if info["best"]:
            table.add_row("best", Text(f"{info['best']['uid']} {info['best']['fitness']:.4f}"))
            table.add_row("formula", Text(str(info["best"]["formula"])))
    console.print(table)
