"""One-line CLI messages: ``say`` on stdout, ``fail`` on stderr, and the guards that turn bad
input into ``fail`` (no traceback)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console

_stdout = Console(soft_wrap=True)


def say(text: str) -> None:
    """Print one plain line on stdout: no markup, no highlighting, and never wrapped at the
    terminal width (paths and formulas stay whole for copy-paste and for grep)."""
    _stdout.print(text, markup=False, highlight=False)


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr (no traceback) and return the exit (code 2) to raise."""
    text = str(message).encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates
    Console(stderr=True, soft_wrap=True).print(f"error: {text}", style="bold red", markup=False,
                                               highlight=False)
    return typer.Exit(code=2)


@contextmanager
def store_errors(directory: Path) -> Iterator[None]:
    """Around a command reading a campaign store: a corrupt, foreign or damaged store (or a
    value of the wrong shape in it) becomes one error line naming the store file."""
    from evoopt.campaign.store import StoreError, db_path

    try:
        yield
    except StoreError as e:
        raise fail(str(e)) from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as e:
        raise fail(f"{db_path(directory)}: unexpected content (damaged, or written by another "
                   f"program): {type(e).__name__}: {e}"[:1000]) from None


def checked_output(path: Path, inputs: tuple[Path, ...] = (), option: str = "-o") -> Path:
    """``path`` when writing it destroys nothing (:func:`evoopt.fileio.check_output`), else a
    one-line error."""
    from evoopt.fileio import OutputError, check_output

    try:
        return check_output(path, inputs, option)
    except OutputError as e:
        raise fail(str(e)) from None
