"""One-line CLI messages: ``say`` on stdout, ``fail`` on stderr, and the guards that turn bad
input (or a signal) into a clean exit with one line (no traceback).

Whatever reaches the terminal has its control characters escaped (ESC prints as ``\\x1b``):
a genome name, a path or a campaign name can never move the cursor, retitle the window or
forge a line (:func:`terminal_safe`, :class:`SafeConsole`).
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.segment import Segment

if TYPE_CHECKING:
    from evoopt.genome import Genome

#: C0 controls but tab, DEL and C1 controls (0x9b is CSI), and the bidirectional overrides.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def terminal_safe(text: object, newlines: bool = False) -> str:
    """``text`` with control characters escaped (``\\x1b``, ``\\n`` unless ``newlines``) and
    lone surrogates as ``\\udXXX``: safe to print on a terminal."""
    text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    return (_CONTROL_BUT_NEWLINE if newlines else _CONTROL).sub(_escape, text)


class SafeConsole(Console):
    """A rich Console that escapes control characters in the text it renders (tables, trees,
    progress descriptions); its own styles and cursor movements are kept."""

    def render(self, renderable: Any, options: Any = None) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control or not _CONTROL_BUT_NEWLINE.search(segment.text):
                yield segment
            else:
                yield Segment(terminal_safe(segment.text, newlines=True), segment.style)


_stdout = SafeConsole(soft_wrap=True)


def say(text: str) -> None:
    """Print one plain line on stdout: no markup, no highlighting, control characters escaped,
    and never wrapped at the terminal width (paths and formulas stay whole for copy-paste and
    for grep)."""
    _stdout.print(terminal_safe(text), markup=False, highlight=False)


def stop(message: str, code: int, style: str = "bold red") -> typer.Exit:
    """Print ``message`` as one line on stderr and return the exit (``code``) to raise."""
    SafeConsole(stderr=True, soft_wrap=True).print(terminal_safe(message), style=style,
                                                   markup=False, highlight=False)
    return typer.Exit(code=code)


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr (no traceback) and return the exit (code 2) to raise."""
    return stop(f"error: {message}", 2)


def os_error_message(error: OSError) -> str:
    """``path: reason`` of an OSError (the reason alone when it names no path)."""
    reason = error.strerror or str(error)
    return reason if error.filename is None else f"{os.fsdecode(error.filename)}: {reason}"


def nonempty_path(option: str) -> Callable[[str], Path]:
    """A typer ``parser`` for a path option or argument that refuses an empty value (which
    would otherwise mean the current folder)."""
    def parse(value: str) -> Path:
        if not value:
            raise fail(f"{option}: empty path; give a file or folder name")
        return Path(value)
    return parse


#: Parsers of the commands' output options (``-o FILE``, ``--out DIR``).
parse_output_file = nonempty_path("-o")
parse_out_dir = nonempty_path("--out")


@contextmanager
def store_errors(directory: Path) -> Iterator[None]:
    """Around a command using a campaign store: a corrupt, foreign or damaged store (or a value
    of the wrong shape in it), and a sound one that is locked, read-only, on a full disk or in
    use by another evoopt process, becomes one error line saying which (naming the store)."""
    from evoopt.campaign.store import StoreError, db_path
    from evoopt.fileio import OutputError

    try:
        yield
    except (StoreError, OutputError) as e:
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


#: Help text of every "seed name or genome file" argument.
GENOME_ARGUMENT_HELP = (
    "A seed genome's bare name (adam, lion, ...), or a genome file written as a path (with a "
    "/, ending in .toml/.json, or starting with . or ~: ./lion reads the file lion, a bare name "
    "never does).")


def genome_argument(text: str) -> Genome:
    """The genome a "seed name or genome file" argument names
    (:func:`evoopt.campaign.common.resolve_seed`: a bare name is the seed), else one error line
    (pointing to ``./NAME`` when a file of that bare name is here)."""
    from evoopt.campaign.common import resolve_seed
    from evoopt.fileio import bare_name_hint
    from evoopt.genome import GenomeError

    try:
        return resolve_seed(text)
    except GenomeError as e:
        message = str(e) if str(e).startswith(text) else f"{text}: {e}"
        raise fail(message + bare_name_hint(text)) from None


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: the command unwound (stores closed, Ray shut down) and ends
    with one line instead of a traceback or a crash dump. ``saved``: whether its work was
    saved before it stopped."""

    def __init__(self, signum: int, saved: bool = False) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.saved = saved

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


_INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class InterruptGuard:
    """What :func:`signals_interrupt` yields: the signal received (if any), whether the work
    was saved (set by the command), and :meth:`install` to put the handlers back after a
    library replaced them (``ray.init`` does: Ray's dumps a native stack trace and aborts)."""

    received: int | None = None
    saved: bool = False

    def _interrupt(self, signum: int, frame: object) -> None:
        self.received = signum
        for sig in _INTERRUPTS:  # a second signal while unwinding ends the process at once
            signal.signal(sig, signal.SIG_DFL)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():  # else signal.signal raises
            for sig in _INTERRUPTS:
                signal.signal(sig, self._interrupt)

    def unwinding(self, cleanup: Callable[[], object]) -> None:
        """Run ``cleanup``; after a signal its errors (Ray torn mid-call) are dropped, so the
        interrupt, not a follow-on error, ends the command."""
        try:
            cleanup()
        except Exception:
            if self.received is None:
                raise


@contextmanager
def signals_interrupt() -> Iterator[InterruptGuard]:
    """Within the block SIGINT and SIGTERM unwind the stack (a KeyboardInterrupt, which Ray
    too passes on, as a new one) and leave it as :class:`Interrupted` naming the signal (as
    does any error raised after a signal); the previous handlers are restored afterwards."""
    previous = {sig: signal.getsignal(sig) for sig in _INTERRUPTS}
    guard = InterruptGuard()
    guard.install()
    try:
        yield guard
    except (KeyboardInterrupt, Exception) as e:
        # after a signal any error is its consequence (a Ray call cut short, say)
        if isinstance(e, KeyboardInterrupt) or guard.received is not None:
            raise Interrupted(guard.received or signal.SIGINT, guard.saved) from None
        raise
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in previous.items():
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)
