"""CIFAR-10 in the official python layout: locate, download (checksummed), load, split.

The data directory is ``--data-dir`` if given, else ``EVOOPT_DATA_DIR``, else a per-user cache
directory (:func:`evoopt.paths.default_data_dir`). It may point either at the folder that holds
``cifar-10-batches-py/`` or at ``cifar-10-batches-py`` itself.

Splits: the *validation* split is carved from the five training batches (stratified by class,
fixed seed); fitness only ever sees ``train``/``val``. The official ``test_batch`` is read only
when ``split="test"`` is asked for explicitly (a final evaluation).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import socket
import tarfile
import tempfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evoopt.paths import default_data_dir

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
NUM_CLASSES = 10
CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


class DataError(FileNotFoundError):
    """The dataset is missing, incomplete or corrupt (the message says where it was looked for)."""


@dataclass(frozen=True)
class Cifar10Arrays:
    """Raw CIFAR-10 arrays: ``train_x``/``test_x`` uint8 (N, 32, 32, 3) HWC, labels int64 (N,)."""

    root: Path
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


# Loaded arrays, shared by every FitnessRunner of the process; keyed by the resolved batches dir.
_CACHE: dict[Path, Cifar10Arrays] = {}
_CACHE_LOCK = threading.Lock()


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data dir to use: the argument, else ``EVOOPT_DATA_DIR``, else the user cache dir."""
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def find_batches_dir(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The complete ``cifar-10-batches-py`` folder under (or equal to) ``data_dir``, else the
    one in a sub-folder of it (a data folder holding several datasets, each in its own folder:
    ``data/cifar10-mini/cifar-10-batches-py`` beside ``data/tinyshakespeare``), else None.
    Two such sub-folders are ambiguous: :class:`DataError` names them."""
    base = resolve_data_dir(data_dir)

    def complete(cand: Path) -> bool:
        return all((cand / f).is_file() for f in (*TRAIN_FILES, TEST_FILE))

    for cand in (base / CIFAR10_FOLDER, base):
        if complete(cand):
            return cand.resolve()
    try:
        nested = sorted(c for c in base.glob(f"*/{CIFAR10_FOLDER}") if complete(c))
    except OSError:
        return None
    if len(nested) > 1:
        raise DataError(f"several CIFAR-10 copies under {base} ({', '.join(map(str, nested))}); "
                        "pass --data-dir the one to use")
    return nested[0].resolve() if nested else None


def _missing_message(base: Path, reason: str) -> str:
    target = base if base.name == CIFAR10_FOLDER else base / CIFAR10_FOLDER
    files = ", ".join((*TRAIN_FILES, TEST_FILE))
    return (
        f"CIFAR-10 not found under {base} ({reason}).\n"
        f"Put the official python-version files ({files}) in:\n    {target}\n"
        f"e.g. download {CIFAR10_URL} (md5 {CIFAR10_MD5}) elsewhere and run\n"
        f"    tar -xzf cifar-10-python.tar.gz -C {target.parent}\n"
        "or pass --data-dir / set EVOOPT_DATA_DIR to a folder that holds cifar-10-batches-py/."
    )


def network_reachable(url: str = CIFAR10_URL, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the download host can be opened."""
    host = urllib.request.urlparse(url).hostname
    if host is None:  # file:// URLs (tests) need no network
        return True
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_to_temp(url: str, folder: Path, suffix: str, label: str, progress: bool = True,
                     ) -> Path:
    """Stream ``url`` into a new temporary file in ``folder`` (a progress bar on stderr unless
    ``progress`` is false) and return its path; the caller verifies, uses and removes it. Nothing
    is left behind when the download fails."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    fd, tmp_name = tempfile.mkstemp(suffix=suffix, dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with Progress(
                "[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TimeRemainingColumn(), disable=not progress,
                console=Console(stderr=True),
            ) as bar:
                job = bar.add_task(label, total=total)
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
                    bar.advance(job, len(chunk))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def download_cifar10(
    data_dir: str | os.PathLike[str],
    url: str = CIFAR10_URL,
    md5: str = CIFAR10_MD5,
    progress: bool = True,
) -> Path:
    """Download the tarball into ``data_dir``, verify its md5, extract; return the batches dir."""
    base = Path(data_dir).expanduser()
    if base.name == CIFAR10_FOLDER:
        base = base.parent
    base.mkdir(parents=True, exist_ok=True)
    tmp = download_to_temp(url, base, ".tar.gz", "CIFAR-10", progress)
    try:
        got = _md5(tmp)
        if got != md5:
            raise DataError(f"checksum mismatch for {url}: md5 {got}, expected {md5}")
        with tarfile.open(tmp, "r:gz") as tar:
            tar.extractall(base, filter="data")
    finally:
        tmp.unlink(missing_ok=True)
    found = find_batches_dir(base)
    if found is None:
        raise DataError(_missing_message(base, f"the archive from {url} lacked the batch files"))
    return found


def locate_or_download(
    data_dir: str | os.PathLike[str] | None, find: Callable[[Path], Path | None],
    fetch: Callable[[Path], Path], url: str, missing: Callable[[Path, str], str],
    download: bool = True,
) -> Path:
    """What ``find`` locates under the data dir, else what ``fetch`` downloads there when
    ``download`` is on, ``EVOOPT_OFFLINE`` is unset and ``url``'s host is reachable; otherwise a
    :class:`DataError` with ``missing(base, reason)``, which names the folder to fill."""
    base = resolve_data_dir(data_dir)
    found = find(base)
    if found is not None:
        return found
    if not download:
        raise DataError(missing(base, "download disabled"))
    if os.environ.get("EVOOPT_OFFLINE") or not network_reachable(url):
        host = urllib.parse.urlsplit(url).hostname
        raise DataError(missing(base, f"offline: cannot reach {host or url}"))
    return fetch(base)


def ensure_cifar10(
    data_dir: str | os.PathLike[str] | None = None, download: bool = True, progress: bool = True,
) -> Path:
    """Return the batches dir, downloading the dataset if missing and the network is reachable.

    Raises :class:`DataError` naming the exact folder to put the files in otherwise.
    """
    return locate_or_download(data_dir, find_batches_dir,
                              lambda base: download_cifar10(base, progress=progress),
                              CIFAR10_URL, _missing_message, download)


#: The only globals a CIFAR-10 batch pickle may name: numpy's array reconstruction
#: (``numpy.core`` in pickles made with numpy < 2, as the official files are; ``numpy._core``
#: from numpy 2; ``_frombuffer`` in protocol-5 pickles) and the codec Python 3 uses for bytes in
#: protocol-2 pickles. Anything else (``os.system``, ``builtins.eval``, ...) is refused, so a
#: crafted batch file cannot run code.
SAFE_PICKLE_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _BatchUnpickler(pickle.Unpickler):
    """Plain containers, bytes and numpy arrays only (:data:`SAFE_PICKLE_GLOBALS`)."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in SAFE_PICKLE_GLOBALS:
            raise _RefusedGlobal(f"{module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module.removeprefix("numpy.core.")  # numpy 2 name
        return super().find_class(module, name)


def _broken_batch(path: Path, reason: str) -> DataError:
    return DataError(
        f"{path}: broken CIFAR-10 batch file ({reason}). Delete it and run again with network "
        f"access (the dataset is downloaded again and checksummed), or replace it with the "
        f"file from the official {CIFAR10_URL} (md5 {CIFAR10_MD5}).")


#: Images in an official batch file (data_batch_1..5 and test_batch hold 10,000 each).
BATCH_IMAGES = 10_000
IMAGE_VALUES = 3 * 32 * 32
#: Largest batch file read: an official one is 31,035,704 bytes (test_batch 31,035,526); the
#: limit leaves room for another pickle protocol. A pickle's objects are bounded by its size,
#: so a small file cannot unpickle into a huge array.
MAX_BATCH_BYTES = 32 << 20


def _unpickle_batch(path: Path) -> object:
    """The unpickled object of a batch file of at most :data:`MAX_BATCH_BYTES` bytes."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_BATCH_BYTES:
                raise _broken_batch(path, f"{size} bytes, more than any official batch "
                                          f"({BATCH_IMAGES} images, about 31 MB); refused "
                                          "without reading it")
            return _BatchUnpickler(f, encoding="bytes").load()
    except DataError:
        raise
    except _RefusedGlobal as e:
        raise _broken_batch(path, f"it names {e}, which a CIFAR-10 batch never does; refused "
                                  "without running it") from None
    except OSError as e:
        raise _broken_batch(path, f"cannot read it: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - every globals is vetted: any error = a broken file
        reason = "empty or truncated" if isinstance(e, EOFError) else f"{type(e).__name__}: {e}"
        raise _broken_batch(path, f"not a readable pickle: {reason}"[:300]) from None


def _checked_pixels(path: Path, data: object) -> np.ndarray:
    """``data`` as the (N, 3072) uint8 array of a batch: a numpy array of at most
    :data:`BATCH_IMAGES` rows of integers in 0..255, else :class:`DataError` naming the file."""
    if not isinstance(data, np.ndarray):
        raise _broken_batch(path, f"b'data' is a {type(data).__name__}, not a numpy array of "
                                  "uint8 pixels")
    if data.ndim != 2 or data.shape[1] != IMAGE_VALUES:
        raise _broken_batch(path, f"b'data' has shape {data.shape}, not (N, {IMAGE_VALUES})")
    if len(data) > BATCH_IMAGES:
        raise _broken_batch(path, f"b'data' holds {len(data)} images; an official batch holds "
                                  f"at most {BATCH_IMAGES}")
    if data.dtype == np.uint8:
        return data
    if data.dtype.kind not in "iu":
        raise _broken_batch(path, f"b'data' holds {data.dtype} values, not uint8 pixels")
    low, high = (int(data.min()), int(data.max())) if data.size else (0, 0)
    if low < 0 or high > 255:
        raise _broken_batch(path, f"b'data' values outside 0..255 ({low}..{high})")
    return data.astype(np.uint8)


def _checked_labels(path: Path, labels: object, images: int) -> np.ndarray:
    """``labels`` as the int64 labels of ``images`` images: one integer in 0..9 each."""
    if not isinstance(labels, list | tuple | np.ndarray):
        raise _broken_batch(path, f"b'labels' is a {type(labels).__name__}, not a list of "
                                  "integers 0..9")
    if len(labels) != images:
        raise _broken_batch(path, f"{len(labels)} labels for {images} images")
    try:
        values = np.asarray(labels)
    except (ValueError, TypeError) as e:  # ragged nested lists
        raise _broken_batch(path, f"b'labels' is not a list of integers 0..9 ({e})"[:300]) \
            from None
    if values.ndim != 1 or values.dtype.kind not in "iu":
        raise _broken_batch(path, f"b'labels' holds {values.dtype} values of shape "
                                  f"{values.shape}, not integers 0..9")
    if values.size and (values.min() < 0 or values.max() >= NUM_CLASSES):
        raise _broken_batch(path, f"labels outside 0..{NUM_CLASSES - 1} "
                                  f"({values.min()}..{values.max()})")
    return values.astype(np.int64)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) HWC uint8 and labels (N,) of one batch file, every value checked
    (:class:`DataError` naming the file)."""
    d = _unpickle_batch(path)
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise _broken_batch(path, "not a CIFAR-10 batch: need b'data' and b'labels' in a dict")
    data = _checked_pixels(path, d[b"data"])
    labels = _checked_labels(path, d[b"labels"], len(data))
    # (N, 3072) = (N, C=3, 32, 32) row-major planes -> HWC
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def load_cifar10(
    data_dir: str | os.PathLike[str] | None = None, download: bool = True, progress: bool = True,
) -> Cifar10Arrays:
    """Load (and cache process-wide) the raw arrays; downloads when missing and online."""
    root = ensure_cifar10(data_dir, download=download, progress=progress)
    with _CACHE_LOCK:
        hit = _CACHE.get(root)
        if hit is None:
            parts = [_read_batch(root / f) for f in TRAIN_FILES]
            test_x, test_y = _read_batch(root / TEST_FILE)
            hit = Cifar10Arrays(
                root=root,
                train_x=np.concatenate([p[0] for p in parts]),
                train_y=np.concatenate([p[1] for p in parts]),
                test_x=test_x,
                test_y=test_y,
            )
            for a in (hit.train_x, hit.train_y, hit.test_x, hit.test_y):
                a.setflags(write=False)
            _CACHE[root] = hit
    return hit


def clear_cache() -> None:
    """Forget every cached dataset (tests)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _stratified_take(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` items of ``labels`` with per-class counts proportional to class sizes.

    Largest-remainder allocation, ties broken by class id; within a class a seeded random choice.
    """
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / len(labels)
    take = np.floor(quota).astype(np.int64)
    short = n - int(take.sum())
    if short:
        order = np.lexsort((classes, -(quota - take)))  # largest remainder first
        take[order[:short]] += 1
    picked = []
    for c, k in zip(classes, take, strict=True):
        idx = np.flatnonzero(labels == c)
        picked.append(rng.permutation(idx)[:k])
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, np.int64)


def make_splits(
    labels: np.ndarray, val_size: int, train_size: int | None = None, seed: int = 0,
    min_train: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint, class-stratified ``(train_idx, val_idx)`` into the official training batches.

    ``val_size`` images are held out first (from ``seed``); the training subset is then
    ``train_size`` images (stratified) of the remainder, or all of it when ``train_size`` is None
    or larger than what is left. Both are sorted and depend on (labels, sizes, seed) only.
    A ``val_size`` leaving fewer than ``min_train`` images to train on raises :class:`DataError`.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if not 0 < val_size < n:
        raise DataError(f"val_size={val_size} must be between 1 and {n - 1} for {n} images")
    if n - val_size < min_train:
        raise DataError(f"val_size={val_size} leaves {n - val_size} of the {n} training images "
                        f"to train on; at least {min_train} are needed (one batch): lower "
                        "val_size")
    rng = np.random.default_rng([seed, 0x5EED])
    val_idx = _stratified_take(labels, val_size, rng)
    rest = np.setdiff1d(np.arange(n), val_idx, assume_unique=True)
    if train_size is not None and train_size < len(rest):
        sub = _stratified_take(labels[rest], train_size, np.random.default_rng([seed, 0x7EA1]))
        rest = rest[sub]
    return rest, val_idx


def write_fake_cifar10(root: str | os.PathLike[str], n_train: int = 60, n_test: int = 30,
                       seed: int = 0) -> Path:
    """Write a tiny random dataset in the official layout under ``root`` (for tests/examples)."""
    out = Path(root) / CIFAR10_FOLDER
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, n in (*((f, n_train) for f in TRAIN_FILES), (TEST_FILE, n_test)):
        labels = (np.arange(n) % NUM_CLASSES).tolist()
        d = {b"batch_label": name.encode(), b"labels": labels,
             b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)}
        with open(out / name, "wb") as f:
            pickle.dump(d, f, protocol=4)
    with open(out / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES]}, f, protocol=4)
    return out


__all__ = [
    "CIFAR10_MD5", "CIFAR10_URL", "CLASSES", "Cifar10Arrays", "DataError", "clear_cache",
    "download_cifar10", "download_to_temp", "ensure_cifar10", "find_batches_dir",
    "load_cifar10", "make_splits", "network_reachable", "resolve_data_dir",
    "write_fake_cifar10",
]
