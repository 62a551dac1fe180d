"""CLI commands for the report stage: ``report``, ``lineage``, ``history``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from evoopt.cli import app
from evoopt.cli.errors import (
    SafeConsole,
    checked_output,
    fail,
    parse_output_file,
    say,
    store_errors,
)

if TYPE_CHECKING:
    from evoopt.campaign.store import CampaignStore

_DIR = Annotated[
    Path, typer.Argument(help="Campaign directory (holding campaign.sqlite).", show_default=False)
]


def _open(campaign_dir: Path) -> CampaignStore:
    """The campaign's store, read-only; a usage error (exit 2) when there is none, one error
    line naming the file when it is corrupt or foreign."""
    from evoopt.campaign.store import CampaignStore, StoreNotFoundError

    try:
        return CampaignStore(campaign_dir, readonly=True)
    except StoreNotFoundError as exc:
        raise typer.BadParameter(str(exc), param_hint="DIR") from exc


@app.command()
def report(
    campaign_dir: _DIR,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", parser=parse_output_file,
                     help="HTML file to write (default: DIR/report.html)."),
    ] = None,
) -> None:
    """Write the campaign's self-contained HTML report (opens offline)."""
    from evoopt.campaign.store import db_path
    from evoopt.report.html import REPORT_NAME, write_report

    with store_errors(campaign_dir):
        _open(campaign_dir).close()  # clear error for a directory without a store
        store = db_path(campaign_dir)
        target = checked_output(output if output is not None else store.parent / REPORT_NAME,
                                (store,))
        path = write_report(campaign_dir, target)
    say(f"wrote {path}")


@app.command()
def lineage(
    campaign_dir: _DIR,
    uid: Annotated[
        str | None, typer.Argument(help="Individual to trace (default: the winner).")
    ] = None,
    best: Annotated[bool, typer.Option("--best", help="Trace the campaign's winner.")] = False,
    depth: Annotated[
        int | None, typer.Option("--depth", min=0, help="Generations of ancestors to show.")
    ] = None,
) -> None:
    """Show an individual's ancestry back to the seeds as a tree."""
    from evoopt.report.lineage import ancestry_tree

    if uid is not None and best:
        raise typer.BadParameter("give either UID or --best, not both")
    with store_errors(campaign_dir), _open(campaign_dir) as store:
        target = uid or store.best_uid()
        if target is None:
            raise typer.BadParameter(
                "the campaign has no evaluated individual yet", param_hint="DIR"
            )
        if store.get_individual(target) is None:
            raise typer.BadParameter(f"no individual {target!r} in {store.path}", param_hint="UID")
        SafeConsole(soft_wrap=False).print(ancestry_tree(store, target, depth=depth))


@app.command()
def history(
    campaign_dir: _DIR,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="csv | parquet | json.", case_sensitive=False)
    ] = "json",
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            parser=parse_output_file,
            help="Output file (default: DIR/history.FORMAT). json: this file; csv/parquet: two "
            "files, FILE's stem + '-individuals' / '-evaluations' next to it.",
        ),
    ] = None,
) -> None:
    """Export every individual and every paid evaluation as tables."""
    from evoopt.report.history import FORMATS, output_paths, write_history

    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}", param_hint="--format")
    with store_errors(campaign_dir), _open(campaign_dir) as store:
        out = output if output is not None else store.directory / f"history.{fmt}"
        for path in output_paths(out, fmt):
            checked_output(path, (store.path,))
        try:
            written = write_history(store, fmt, out)
        except ImportError as e:  # parquet without pyarrow
            raise fail(f"--format {fmt}: {e}") from None
    for path in written:
        say(f"wrote {path}")
