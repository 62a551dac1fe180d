"""Tiny Shakespeare (karpathy/char-rnn) for character-level language modelling.

The corpus is one file, ``input.txt`` (1,115,394 ASCII characters, 65 distinct), found like
CIFAR-10: in the data directory (``--data-dir``, else ``EVOOPT_DATA_DIR``, else the user cache
directory, :func:`evoopt.fitness.data.resolve_data_dir`) under ``tinyshakespeare/input.txt``, or
directly as ``input.txt`` when the data directory is the ``tinyshakespeare`` folder itself. When
it is missing and the network is reachable it is downloaded there; its sha256 is checked on every
load.

Splits, by characters: **train** the first 90 %, **val** the first half of the last 10 % (the
only split fitness sees), **test** the second half. The vocabulary is the sorted set of the
characters of the whole file.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evoopt.fitness.data import DataError, download_to_temp, locate_or_download, resolve_data_dir

SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_FOLDER = "tinyshakespeare"
SHAKESPEARE_FILE = "input.txt"
SHAKESPEARE_BYTES = 1_115_394
#: Largest corpus file read (a few times tiny Shakespeare's size): a huge file is refused by
#: its size before any of it is read.
MAX_CORPUS_BYTES = 4 << 20
TEXT_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class CharCorpus:
    """A character corpus as ids: ``ids[i]`` is the index of character ``i`` in ``vocab``."""

    path: Path
    ids: np.ndarray     # int64 (N,), read-only
    vocab: str          # sorted distinct characters

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def split(self, name: str) -> np.ndarray:
        """The ids of split ``name`` (train, val or test): a contiguous slice of :attr:`ids`."""
        train, val, test = split_bounds(len(self.ids))
        bounds = dict(zip(TEXT_SPLITS, (train, val, test), strict=True))
        if name not in bounds:
            raise ValueError(f"split must be one of {TEXT_SPLITS}, got {name!r}")
        start, stop = bounds[name]
        return self.ids[start:stop]


def split_bounds(n: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """``(start, stop)`` of train, val and test for a corpus of ``n`` characters: the first
    90 % (rounded down), then the first half of the rest (rounded down), then what is left."""
    n_train = n * 9 // 10
    n_val = (n - n_train) // 2
    return (0, n_train), (n_train, n_train + n_val), (n_train + n_val, n)


# Loaded corpora, shared by every runner of the process; keyed by the resolved file path.
_CACHE: dict[Path, CharCorpus] = {}
_CACHE_LOCK = threading.Lock()


def find_shakespeare(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The ``input.txt`` under ``data_dir/tinyshakespeare`` or directly in ``data_dir``, else
    None."""
    base = resolve_data_dir(data_dir)
    for cand in (base / SHAKESPEARE_FOLDER, base):
        if (cand / SHAKESPEARE_FILE).is_file():
            return (cand / SHAKESPEARE_FILE).resolve()
    return None


def _target_folder(base: Path) -> Path:
    return base if base.name == SHAKESPEARE_FOLDER else base / SHAKESPEARE_FOLDER


def _missing_message(base: Path, reason: str) -> str:
    target = _target_folder(base)
    return (
        f"tiny Shakespeare not found under {base} ({reason}).\n"
        f"Put {SHAKESPEARE_FILE} in:\n    {target}\n"
        f"e.g. download {SHAKESPEARE_URL} (sha256 {SHAKESPEARE_SHA256}) elsewhere and copy it "
        f"there, or pass --data-dir / set EVOOPT_DATA_DIR to a folder that holds "
        f"{SHAKESPEARE_FOLDER}/{SHAKESPEARE_FILE}."
    )


def _broken_file(path: Path, reason: str) -> DataError:
    return DataError(
        f"{path}: broken tiny Shakespeare file ({reason}). Delete it and run again with network "
        f"access (it is downloaded again and checksummed), or replace it with {SHAKESPEARE_URL} "
        f"(sha256 {SHAKESPEARE_SHA256}).")


def download_shakespeare(data_dir: str | os.PathLike[str], url: str = SHAKESPEARE_URL,
                         sha256: str = SHAKESPEARE_SHA256, progress: bool = True) -> Path:
    """Download ``input.txt`` into ``data_dir/tinyshakespeare`` (or ``data_dir`` when it is that
    folder), verify its sha256 and return its path; nothing is kept on a mismatch."""
    folder = _target_folder(Path(data_dir).expanduser())
    folder.mkdir(parents=True, exist_ok=True)
    tmp = download_to_temp(url, folder, ".txt", "tiny Shakespeare", progress)
    try:
        try:
            _, got = _read_checksummed(tmp)
        except ValueError as e:
            raise DataError(f"download of {url}: {e}") from None
        if got != sha256:
            raise DataError(f"checksum mismatch for {url}: sha256 {got}, expected {sha256}")
        final = folder / SHAKESPEARE_FILE
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final.resolve()


def ensure_shakespeare(data_dir: str | os.PathLike[str] | None = None, download: bool = True,
                       progress: bool = True) -> Path:
    """The path of ``input.txt``, downloading it if missing and the network is reachable.

    Raises :class:`DataError` naming the folder to put the file in otherwise.
    """
    return locate_or_download(data_dir, find_shakespeare,
                              lambda base: download_shakespeare(base, progress=progress),
                              SHAKESPEARE_URL, _missing_message, download)


def _read_checksummed(path: Path) -> tuple[bytes, str]:
    """The bytes of the file at ``path`` and their sha256, streamed through the hash in 1 MiB
    chunks as they are read (once). A file of more than :data:`MAX_CORPUS_BYTES` bytes is
    refused unread: :class:`ValueError` saying so (``OSError`` when it cannot be read)."""
    digest, chunks, size_read = hashlib.sha256(), [], 0
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_CORPUS_BYTES:
            raise ValueError(f"{size} bytes, far more than tiny Shakespeare ({SHAKESPEARE_BYTES} "
                             "bytes); refused without reading it")
        for chunk in iter(lambda: f.read(1 << 20), b""):
            size_read += len(chunk)
            if size_read > MAX_CORPUS_BYTES:  # it grew while being read
                raise ValueError(f"more than {MAX_CORPUS_BYTES} bytes; refused")
            digest.update(chunk)
            chunks.append(chunk)
    return b"".join(chunks), digest.hexdigest()


def _read_corpus(path: Path, sha256: str) -> CharCorpus:
    """The corpus in ``path``, read once through its checksum: UTF-8 text whose sha256 is
    ``sha256`` (:class:`DataError` naming the file otherwise)."""
    try:
        raw, got = _read_checksummed(path)
    except ValueError as e:
        raise _broken_file(path, str(e)) from None
    except OSError as e:
        raise _broken_file(path, f"cannot read it: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _broken_file(path, f"not UTF-8 text: {e.reason} at byte {e.start}") from None
    if got != sha256:
        raise _broken_file(path, f"sha256 {got}, expected {sha256}: truncated or edited")
    vocab = "".join(sorted(set(text)))
    lookup = np.zeros(max(map(ord, vocab)) + 1, dtype=np.int64)
    lookup[[ord(c) for c in vocab]] = np.arange(len(vocab))
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    ids = lookup[codes]
    ids.setflags(write=False)
    return CharCorpus(path=path, ids=ids, vocab=vocab)


def load_shakespeare(data_dir: str | os.PathLike[str] | None = None, download: bool = True,
                     progress: bool = True) -> CharCorpus:
    """Load (checksummed; cached process-wide) the corpus; downloads when missing and online."""
    path = ensure_shakespeare(data_dir, download=download, progress=progress)
    with _CACHE_LOCK:
        hit = _CACHE.get(path)
        if hit is None:
            hit = _CACHE[path] = _read_corpus(path, SHAKESPEARE_SHA256)
    return hit


def clear_cache() -> None:
    """Forget every cached corpus (tests)."""
    with _CACHE_LOCK:
        _CACHE.clear()


__all__ = [
    "SHAKESPEARE_SHA256", "SHAKESPEARE_URL", "TEXT_SPLITS", "CharCorpus", "clear_cache",
    "download_shakespeare", "ensure_shakespeare", "find_shakespeare", "load_shakespeare",
    "split_bounds",
]
