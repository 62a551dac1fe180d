"""The ``evoopt`` command line: with the campaign runner, the only place tying the stages."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="evoopt",
    help="Evolutionary discovery of PyTorch optimizers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def register_commands() -> None:
    """Add every command to ``app`` (imported lazily so `evoopt --help` stays fast)."""
    from evoopt.cli import campaign_cmds, fitness_cmds, genome_cmds, report_cmds  # noqa: F401


def main() -> None:
    register_commands()
    app()
