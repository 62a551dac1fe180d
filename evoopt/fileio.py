"""Careful file input and output shared by every stage (imports nothing from evoopt).

* :func:`read_text_file`: read a small text input (genome, config, task): regular files only,
  a size limit, strict UTF-8; a FIFO, a device or a huge file is refused, not read forever.
* :func:`read_toml_file`: the same, parsed as TOML (invalid or too deeply nested: an error).
* :func:`check_output`: refuse an ``-o`` that would destroy data: a directory, anything but a
  plain file (a FIFO, a device, a socket, a symlink), a campaign store (any SQLite database or
  ``campaign.sqlite*``), or the command's own input. It never opens the path blocking.
* :func:`check_writable_directory`: a directory can be created (or is there) and written to.
* :func:`atomic_write_text` / :func:`atomic_output`: write to a temporary file in the target's
  directory, then rename it over the target (checked again just before), so a reader (or a
  crash) never sees half a file.
* :func:`names_a_path`: whether a "name or file" argument is written as a path.

Errors are :class:`InputError` / :class:`OutputError` (both ``ValueError``) naming the path.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import tomllib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

#: Default size limit of a text input (genome, campaign config, task file).
MAX_TEXT_BYTES = 1 << 20
SQLITE_MAGIC = b"SQLite format 3\x00"
_WAL_MAGICS = (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83")
#: Outputs never written over: a campaign store and its SQLite side files.
STORE_NAME_PREFIX = "campaign.sqlite"


class TextForms:
    """``to_toml()`` and ``to_json()`` of a value with a ``to_dict()`` (genomes, chains)."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    def to_json(self) -> str:
        import json

        return json.dumps(self.to_dict(), indent=2)


class InputError(ValueError):
    """An input file that cannot be read safely; the message names the file."""


class OutputError(ValueError):
    """An output path that must not be written; the message names the path."""


def _open_regular(path: str | os.PathLike[str]) -> BinaryIO | None:
    """``path`` opened for reading when it is a regular file, else None. Opened non-blocking
    and checked again once open: a FIFO or device (even one swapped in after the first check)
    is never waited on. OSError (ValueError for a NUL byte) when it cannot be examined."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        return None
    f = os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb")
    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
        f.close()
        return None
    return f


def read_text_file(path: str | os.PathLike[str], what: str = "file",
                   limit: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes; :class:`InputError` else."""
    p = Path(path)
    try:
        f = _open_regular(p)
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise InputError(f"{p}: cannot read {what} ({reason})") from None
    if f is None:
        raise InputError(f"{p}: not a regular file (a {what} must be a plain file)")
    try:
        with f:
            data = f.read(limit + 1)
    except OSError as e:
        raise InputError(f"{p}: cannot read {what} ({e.strerror or e})") from None
    if len(data) > limit:
        raise InputError(f"{p}: {what} larger than {limit} bytes; refusing to read it")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{p}: {what} is not UTF-8 text (bad byte at offset {e.start})") from None


def is_sqlite_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an existing SQLite database (or WAL journal) by its first bytes.

    Only a regular file is read, opened non-blocking: a FIFO (even one swapped in after the
    check) or a device is never waited on."""
    try:
        f = _open_regular(path)
        if f is None:
            return False
        with f:
            head = f.read(len(SQLITE_MAGIC))
    except (OSError, ValueError):
        return False
    return head == SQLITE_MAGIC or head[:4] in _WAL_MAGICS


#: What a path is, by its ``st_mode`` file type, for the special files no output may replace.
_SPECIAL_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                  (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                  (stat.S_ISSOCK, "a socket"))


def special_file_kind(path: str | os.PathLike[str]) -> str | None:
    """What ``path`` is when it exists and is neither a regular file nor a directory ("a FIFO
    (named pipe)", "a symbolic link", ...); None otherwise. The link itself is examined."""
    try:
        mode = os.lstat(path).st_mode
    except (OSError, ValueError):
        return None
    return next((kind for is_kind, kind in _SPECIAL_KINDS if is_kind(mode)), None)


def _refuse_special(path: Path, option: str) -> None:
    kind = special_file_kind(path)
    if kind is not None:
        raise OutputError(f"{option} {path}: is {kind}, not a regular file; refusing to "
                          "replace it (give the path of a plain file)")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except (OSError, ValueError):
        return False


def check_directory(path: str | os.PathLike[str], what: str = "directory") -> Path:
    """``path`` usable as a directory to create or fill: no part of it is an existing file."""
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists() or q.is_symlink():
            if not q.is_dir():
                raise OutputError(f"{q}: is a file, but a {what} is expected there")
            break
    return p


def read_toml_file(path: str | os.PathLike[str], what: str = "file",
                   limit: int = MAX_TEXT_BYTES) -> dict[str, Any]:
    """The table of a TOML file read by :func:`read_text_file`; :class:`InputError` naming the
    file when it cannot be read, is not valid TOML, or is nested too deeply to parse."""
    text = read_text_file(path, what, limit)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML: {e}") from None
    except RecursionError:
        raise InputError(f"{path}: nested too deeply to be a {what}") from None


def check_output(path: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]] = (),
                 option: str = "-o") -> Path:
    """``path`` if writing it destroys nothing, else :class:`OutputError` naming it.

    Refused: a directory; a FIFO, device, socket or symbolic link; a campaign store
    (``campaign.sqlite*``) or any existing SQLite file; one of the command's ``inputs``; a path
    under an existing file.
    """
    p = Path(path)
    _refuse_special(p, option)
    if p.is_dir():
        raise OutputError(f"{option} {p}: is a directory; give a file name")
    if p.name.startswith(STORE_NAME_PREFIX) or is_sqlite_file(p):
        raise OutputError(f"{option} {p}: refusing to overwrite a campaign store "
                          "(an SQLite database)")
    for source in inputs:
        if _same_file(p, Path(source)):
            raise OutputError(f"{option} {p}: is the command's own input; choose another file")
    check_directory(p.parent, f"directory for {option}")
    return p


def check_writable_directory(path: str | os.PathLike[str],
                             what: str = "directory") -> Path:
    """``path`` when it is (or can be made) a directory a file can be written in: its missing
    folders and a probe file are created, then removed again. :class:`OutputError` naming it
    and the reason (read-only, name too long, ...) otherwise."""
    p = Path(path)
    missing: list[Path] = []
    try:
        check_directory(p, what)
        missing = missing_directories(p)
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".evoopt-probe.", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"{p}: cannot write a {what} there ({e.strerror or e})") from None
    finally:
        for q in missing:  # deepest first
            with contextlib.suppress(OSError):
                q.rmdir()
    return p


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path``; renamed over ``path`` when the block succeeds,
    removed when it fails (the old ``path``, if any, is then untouched).

    Right before the rename the target is examined again: one that became a FIFO, device,
    socket or symbolic link meanwhile is not replaced (:class:`OutputError`). An OSError of
    the temporary file (a read-only folder, a name too long) names ``path``, not the
    temporary file."""
    target = Path(path)
    check_directory(target.parent)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                        dir=target.parent)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(target)) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        _refuse_special(target, "output")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # once, at import: os.umask is process-wide


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode(encoding))


#: File name endings that make a "name or file" argument a path.
PATH_SUFFIXES = (".toml", ".json")


def names_a_path(text: str) -> bool:
    """Whether an argument that is "a shipped name or a file" is written as a path: it holds a
    path separator, ends in .toml or .json, or starts with ``.`` or ``~``. A bare name
    (``lion``) is the shipped one even when a file of that name is in the current folder."""
    separators = (os.sep, os.altsep or os.sep, "/")
    return (any(sep in text for sep in separators) or text.endswith(PATH_SUFFIXES)
            or text.startswith((".", "~")))


def bare_name_hint(text: str) -> str:
    """For an error about a bare name that names no shipped thing: how to read the file of
    that name in the current folder instead, when there is one (else "")."""
    if names_a_path(text):
        return ""
    try:
        here = os.path.lexists(text)
    except (ValueError, OSError):  # a NUL byte
        return ""
    return f"; to read the file {text} here, write ./{text}" if here else ""


def missing_directories(path: str | os.PathLike[str]) -> list[Path]:
    """``path`` and its ancestors that do not exist yet (not even as a dangling link), deepest
    first: what creating ``path`` makes, and what to remove to undo it."""
    missing: list[Path] = []
    for q in (Path(path), *Path(path).parents):
        if q.exists() or q.is_symlink():
            break
        missing.append(q)
    return missing


__all__ = [
    "InputError", "MAX_TEXT_BYTES", "OutputError", "PATH_SUFFIXES", "atomic_output",
    "atomic_write_bytes", "atomic_write_text", "bare_name_hint", "check_directory",
    "check_output", "missing_directories",
    "check_writable_directory", "is_sqlite_file", "names_a_path", "read_text_file",
    "read_toml_file", "special_file_kind", "TextForms",
]
