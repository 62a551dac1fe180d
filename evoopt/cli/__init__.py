"""The ``evoopt`` command line: with the campaign runner, the only place tying the stages."""

from __future__ import annotations

import errno
from typing import Any

import typer
from typer.core import TyperGroup


class _Commands(TyperGroup):
    """The command group, around every command: an OSError that no command caught (a
    read-only folder, a name too long, a full disk) ends it with ``error: PATH: reason`` and
    exit code 2; a usage error's message (which may quote a path) has its control characters
    escaped before typer prints it."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except OSError as e:
            if e.errno == errno.EPIPE:  # `evoopt ... | head`: click ends quietly
                raise
            from evoopt.cli.errors import fail, os_error_message

            raise fail(os_error_message(e)) from None
        except typer.TyperException as e:  # click's usage errors (BadParameter, ...)
            if isinstance(getattr(e, "message", None), str):
                from evoopt.cli.errors import terminal_safe

                e.message = terminal_safe(e.message, newlines=True)
            raise


app = typer.Typer(
    name="evoopt",
    help="Evolutionary discovery of PyTorch optimizers.",
    cls=_Commands,
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
