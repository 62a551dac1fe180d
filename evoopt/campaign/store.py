"""The campaign store: one SQLite file (``campaign.sqlite``) per campaign directory.

Durability: WAL journal, ``synchronous=NORMAL``, autocommit -- every write is its own committed
transaction, so a writer killed with SIGKILL at any moment loses nothing it had written (only a
power cut/OS crash may lose the last few commits). Readers in other processes may open the file
with ``readonly=True`` while a campaign runs; WAL lets them read without blocking the writer.

All values go in and come out as plain dicts; JSON columns are encoded/decoded here.

Tables
------
``meta(key TEXT PRIMARY KEY, value TEXT)``
    JSON values. ``schema_version`` (:data:`SCHEMA_VERSION`) is written when the store is
    created. Keys used by the runner: ``config`` (campaign config dict), ``state``
    ("running" | "interrupted" | "finished"), ``started_at``, ``finished_at``, ``wall_time_s``,
    ``strategy_state``, ``summary`` (final summary dict, below), ``winner_uid``, ``baselines``
    (optional tuned-baseline records, same shape as ``summary["comparison"]`` rows).

``individuals`` -- one row per candidate the strategy produced:
    ``uid`` TEXT PK; ``generation`` INTEGER; ``operator`` TEXT ("seed", "mutation", "crossover",
    ...); ``parents`` TEXT (JSON list of uids; ``[]`` for seeds); ``genome`` TEXT (JSON dict,
    ``Genome.to_dict()``); ``hash`` TEXT (genome content hash); ``behaviour_hash`` TEXT;
    ``formula`` TEXT (one-line update rule); ``fitness`` REAL NULL (aggregate fitness: validation
    accuracy, higher is better; -1.0 = failed); ``stage_reached`` TEXT NULL (last fidelity stage
    evaluated); ``status`` TEXT (pending | evaluated | cached | stopped_at_hurdle | pruned |
    failed);
    ``cached_from`` TEXT NULL (uid whose results were reused by dedupe); ``cache_kind`` TEXT
    NULL ("hash" | "behaviour"); ``change`` TEXT NULL (what the operator changed, e.g.
    "momentum.beta 0.9→0.93"); ``created_at`` REAL (unix time).

``evaluations`` -- only evaluations actually paid for (cached reuse adds no row):
    ``id`` INTEGER PK AUTOINCREMENT; ``uid`` TEXT (individual that paid for it); ``hash`` TEXT;
    ``stage`` TEXT (fidelity stage name: "screen", "full", "final", ...); ``seed`` INTEGER;
    ``split`` TEXT ("val" | "test"); ``fitness`` REAL; ``val_accuracy`` REAL; ``val_loss`` REAL;
    ``status`` TEXT (ok | diverged | timeout | pruned | error); ``message`` TEXT; ``steps`` INTEGER;
    ``wall_time_s`` REAL; ``worker`` TEXT; ``train_loss_curve`` TEXT (JSON list);
    ``created_at`` REAL; ``tasks`` TEXT NULL (since version 2; JSON: a multi-task evaluation's
    per-task results, ``{task: {fitness, val_accuracy, val_loss, status, message, steps,
    wall_time_s}}``, see :mod:`evoopt.fitness.multitask`; NULL for one task); ``threads``
    INTEGER NULL (since version 3: torch CPU threads the run used; fitness is deterministic
    per thread count, docs/fitness.md).
    ``UNIQUE(hash, stage, seed, split)``.

``generations`` -- one row per finished generation:
    ``generation`` INTEGER PK; ``best``, ``median``, ``mean``, ``std`` REAL (fitness over the
    generation); ``best_uid`` TEXT; ``n_individuals``, ``n_evaluated``, ``n_cached``,
    ``n_saved_by_hurdles`` INTEGER; ``wall_time_s`` REAL; ``finished_at`` REAL.

``summary`` meta shape (written by the runner when the campaign finishes)::

    {"winner": {"uid", "hash", "formula", "fitness_mean", "fitness_std", "seeds": [...]},
     "comparison": [{"name", "uid", "fitness_mean", "fitness_std", "val_accuracy_mean",
                     "n_seeds", "per_seed": [...]}, ...],
     "evaluations_done", "evaluations_cached", "evaluations_saved_by_hurdles", "wall_time_s",
     "exported": "best_optimizer.py"}

Validation on open
------------------
Every open of an existing file checks, before anything else is read or written: the SQLite
header, ``PRAGMA integrity_check``, the four tables with their columns, and ``schema_version``.
A store written before ``schema_version`` existed (evoopt 0.1.0, same tables) is recognised by
its tables and columns and read as version 1. A writer (``resume``) upgrades an older store: it
adds the columns of :data:`ADDED_COLUMNS` and stamps the version. A file that fails
any check, an unknown version, or a value that is not valid JSON raises
:class:`StoreCorruptError` naming the file: never a traceback, never a write.

Trouble that is not corruption
------------------------------
A sound store can still be unusable for a while; each case has its own error (all
:class:`StoreError`), raised by the open or by any later read or write:

* :class:`StoreLockedError`: another program holds an SQLite lock on the file for longer than
  the busy timeout (:data:`BUSY_TIMEOUT_S`; SQLITE_BUSY / SQLITE_LOCKED).
* :class:`StoreReadOnlyError`: a writer on a read-only file, directory or mount (SQLITE_READONLY,
  EACCES, EPERM, EROFS). A reader still reads such a store (opened ``immutable`` when SQLite
  cannot create its side files there and no WAL holds unmerged commits).
* :class:`StoreFullError`: no space left (SQLITE_FULL, ENOSPC, EDQUOT): "disk full writing
  STORE; free space and run `evoopt resume DIR`"; what was committed before is kept.
* :class:`CampaignInUseError`: another evoopt process writes the campaign (below).

One writer per campaign
-----------------------
A writer holds an OS lock (``flock``) on ``campaign.lock`` (:data:`LOCK_NAME`) beside the store
for as long as it is open; the file holds the writer's pid. The kernel drops the lock when the
process ends however it ends, so a crash leaves no stale lock. A second writer in another
process is refused at once with :class:`CampaignInUseError`; readers never take the lock.
Writers in one process share it (it is counted), and :func:`campaign_lock` takes it ahead of
the store (the CLI holds it from before its preflight). The last release removes the lock file,
and the directories the lock created if they are left empty. (No ``fcntl``, as on Windows: no
lock.)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evoopt.fileio import missing_directories

try:
    import fcntl
except ImportError:  # Windows: no flock, so no campaign lock
    fcntl = None  # type: ignore[assignment]

DB_NAME = "campaign.sqlite"
#: The writer's lock file, beside ``campaign.sqlite`` (see "One writer per campaign").
LOCK_NAME = "campaign.lock"
#: How long an SQLite statement waits on another program's lock before StoreLockedError.
BUSY_TIMEOUT_S = 30.0
#: How long a writer retries a campaign lock held elsewhere before refusing (a status probe
#: holds it for microseconds; another writer holds it for its lifetime).
LOCK_RETRY_S = 0.25

INDIVIDUAL_COLUMNS: tuple[str, ...] = tuple(
    [
        "uid",
        "generation",
        "operator",
        "parents",
        "genome",
        "hash",
        "behaviour_hash",
        "formula",
        "fitness",
        "stage_reached",
        "status",
        "cached_from",
        "cache_kind",
        "change",
        "created_at",
    ]
)
EVALUATION_COLUMNS: tuple[str, ...] = tuple(
    [
        "id",
        "uid",
        "hash",
        "stage",
        "seed",
        "split",
        "fitness",
        "val_accuracy",
        "val_loss",
        "status",
        "message",
        "steps",
        "wall_time_s",
        "worker",
        "train_loss_curve",
        "created_at",
        "tasks",
        "threads",
        "value",
    ]
)
GENERATION_COLUMNS: tuple[str, ...] = tuple(
    [
        "generation",
        "best",
        "median",
        "mean",
        "std",
        "best_uid",
        "n_individuals",
        "n_evaluated",
        "n_cached",
        "n_saved_by_hurdles",
        "wall_time_s",
        "finished_at",
    ]
)
INDIVIDUAL_STATUSES = ("pending", "evaluated", "cached", "stopped_at_hurdle", "pruned",
                       "failed")

_JSON_COLUMNS = {"parents", "genome", "train_loss_curve", "tasks"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT
);
CREATE TABLE IF NOT EXISTS individuals (
    uid TEXT PRIMARY KEY,
    generation INTEGER,
    operator TEXT,
    parents TEXT,
    genome TEXT,
    hash TEXT,
    behaviour_hash TEXT,
    formula TEXT,
    fitness REAL,
    stage_reached TEXT,
    status TEXT,
    cached_from TEXT,
    cache_kind TEXT,
    change TEXT,
    created_at REAL
);
CREATE INDEX IF NOT EXISTS idx_individuals_generation ON individuals(generation);
CREATE INDEX IF NOT EXISTS idx_individuals_hash ON individuals(hash);
CREATE INDEX IF NOT EXISTS idx_individuals_behaviour_hash ON individuals(behaviour_hash);
CREATE INDEX IF NOT EXISTS idx_individuals_status ON individuals(status);
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT,
    hash TEXT,
    stage TEXT,
    seed INTEGER,
    split TEXT,
    fitness REAL,
    val_accuracy REAL,
    val_loss REAL,
    status TEXT,
    message TEXT,
    steps INTEGER,
    wall_time_s REAL,
    worker TEXT,
    train_loss_curve TEXT,
    created_at REAL,
    tasks TEXT,
    threads INTEGER,
    value REAL,
    UNIQUE(hash, stage, seed, split)
);
CREATE INDEX IF NOT EXISTS idx_evaluations_uid ON evaluations(uid);
CREATE INDEX IF NOT EXISTS idx_evaluations_stage ON evaluations(stage);
CREATE TABLE IF NOT EXISTS generations (
    generation INTEGER PRIMARY KEY,
    best REAL,
    median REAL,
    mean REAL,
    std REAL,
    best_uid TEXT,
    n_individuals INTEGER,
    n_evaluated INTEGER,
    n_cached INTEGER,
    n_saved_by_hurdles INTEGER,
    wall_time_s REAL,
    finished_at REAL
);
"""


class StoreError(RuntimeError):
    """Raised for a missing store, a write on a read-only store, or unknown columns."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """A read-only open of a campaign store that does not exist."""


class StoreCorruptError(StoreError):
    """A campaign store that is corrupt, truncated, foreign or of an unknown schema version
    (or holds a value that is not valid JSON); the message names the file."""


class StoreLockedError(StoreError):
    """Another program holds an SQLite lock on a (sound) store past the busy timeout."""


class StoreReadOnlyError(StoreError):
    """A write to, or a writer's open of, a store on a read-only file, directory or mount."""


class StoreFullError(StoreError):
    """No space left to write the store (full disk or quota, or SQLite's page limit)."""


class CampaignInUseError(StoreError):
    """Another evoopt process holds the campaign directory's writer lock (``pid``: its pid,
    None when unknown)."""

    def __init__(self, directory: Path, pid: int | None) -> None:
        self.pid = pid
        super().__init__(f"campaign {directory} is in use by another evoopt process (pid "
                         f"{pid if pid else 'unknown'}); wait for it to end, or stop it, first")


def store_trouble(path: Path, exc: BaseException, busy_timeout_s: float = BUSY_TIMEOUT_S,
                  doing: str | None = None) -> StoreError:
    """The :class:`StoreError` that says truly what ``exc`` (an ``sqlite3.Error`` or an
    ``OSError`` met using the store at ``path``, while ``doing`` something) means: locked,
    read-only, full, corrupt."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        reason = f"{doing}: {reason}" if doing else reason
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return _full(path)
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return _read_only(path, reason)
        return StoreError(f"{path}: cannot use campaign store ({reason})")
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreLockedError(f"{path}: campaign store is locked: another program has held "
                                f"an SQLite lock on it for over {busy_timeout_s:g} s ({exc}); "
                                "try again once it lets go")
    if primary == sqlite3.SQLITE_FULL:
        return _full(path)
    if primary == sqlite3.SQLITE_READONLY or (
            primary in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM) and not _writable(path)):
        return _read_only(path, str(exc))
    if primary == sqlite3.SQLITE_CANTOPEN:
        return StoreError(f"{path}: cannot open campaign store ({exc})")
    if primary == sqlite3.SQLITE_IOERR:
        return StoreError(f"{path}: I/O error on campaign store ({exc}); check the disk")
    if isinstance(exc, sqlite3.DatabaseError):
        return StoreCorruptError(f"{path}: corrupt campaign store ({exc})")
    return StoreError(f"{path}: campaign store error ({exc})")


def _full(path: Path) -> StoreFullError:
    return StoreFullError(f"disk full writing {path}; free space and run "
                          f"`evoopt resume {path.parent}`")


def _read_only(path: Path, reason: str) -> StoreReadOnlyError:
    return StoreReadOnlyError(f"{path}: campaign store is read-only ({reason}: a read-only "
                              "file, directory or mount); `status`, `report`, `lineage` and "
                              "`history` read it, `run` and `resume` need it writable")


def _writable(path: Path) -> bool:
    """Whether the store file (when it exists) and its directory may be written."""
    if path.exists() and not os.access(path, os.W_OK):
        return False
    return os.access(path.parent, os.W_OK | os.X_OK)


#: Version of the layout above, in meta ``schema_version``.
SCHEMA_VERSION = 4
#: Columns added by each version after the first (a writer adds them to an older store, which
#: readers read with those columns missing from its rows).
ADDED_COLUMNS: dict[int, dict[str, dict[str, str]]] = {
    2: {"evaluations": {"tasks": "TEXT"}},
    3: {"evaluations": {"threads": "INTEGER"}},
    4: {"evaluations": {"value": "REAL"}},  # the task's own number (a user task's loss, ...)
}
_TABLES: dict[str, tuple[str, ...]] = {
    "meta": ("key", "value"), "individuals": INDIVIDUAL_COLUMNS,
    "evaluations": EVALUATION_COLUMNS, "generations": GENERATION_COLUMNS,
}
_SQLITE_HEADER = b"SQLite format 3\x00"
_END = object()  # the end of an iterator (a stored parent may be any JSON value, None too)


def db_path(path_or_dir: str | Path) -> Path:
    """The SQLite file for a campaign directory (or the file itself when given one)."""
    p = Path(path_or_dir)
    if p.is_file() or p.suffix in (".sqlite", ".db", ".sqlite3"):
        return p
    return p / DB_NAME


def lock_path(store_file: str | Path) -> Path:
    """The writer's lock file for a store file: ``campaign.lock`` beside ``campaign.sqlite``
    (``NAME.lock`` beside a store of another name)."""
    p = Path(store_file)
    return p.with_name(LOCK_NAME if p.name == DB_NAME else f"{p.name}.lock")


@dataclass
class _HeldLock:
    """A campaign lock this process holds: its file descriptor, how many holders share it, and
    the directories taking it created (removed on release if left empty)."""

    fd: int
    path: Path
    count: int = 1
    created: list[Path] = field(default_factory=list)


_held: dict[str, _HeldLock] = {}
_held_guard = threading.Lock()


def _forget_held_locks_in_child() -> None:
    """A forked child must not keep its parent's campaign locks alive after the parent ends."""
    for held in _held.values():
        with contextlib.suppress(OSError):
            os.close(held.fd)
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_held_locks_in_child)


def _lock_pid(fd: int) -> int | None:
    """The pid recorded in a lock file (None when it holds none)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _acquire(lock: Path) -> _HeldLock:
    """Create and flock ``lock`` (and its directory), retrying for :data:`LOCK_RETRY_S` while
    another process holds it; then record this process's pid in it."""
    created = missing_directories(lock.parent)
    deadline = time.monotonic() + LOCK_RETRY_S
    while True:
        lock.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileNotFoundError:  # a releasing holder removed the directory just now
            if time.monotonic() > deadline + 5:
                raise
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _lock_pid(fd)
            os.close(fd)
            if time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            raise CampaignInUseError(lock.parent, pid) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            # a releasing holder unlinks the file: the one locked must still be the one there
            current = os.stat(lock)
            mine = os.fstat(fd)
            if (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
                os.close(fd)
                continue
        except FileNotFoundError:
            os.close(fd)
            continue
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        return _HeldLock(fd, lock, created=created)


def _hold(store_file: Path) -> None:
    """Take (or share, within this process) the writer lock of ``store_file``; an ``OSError``
    on the way becomes the StoreError saying what it is (read-only, full)."""
    lock = lock_path(store_file)
    key = os.path.realpath(lock)
    with _held_guard:
        held = _held.get(key)
        if held is not None:
            held.count += 1
            return
        if fcntl is None:
            lock.parent.mkdir(parents=True, exist_ok=True)
            _held[key] = _HeldLock(-1, lock)
            return
        try:
            _held[key] = _acquire(lock)
        except OSError as e:
            raise store_trouble(store_file, e, doing=f"cannot lock {lock}") from None


def _unhold(store_file: Path) -> None:
    """Drop one holder of ``store_file``'s writer lock; the last removes the lock file (still
    holding the lock, so no other process locks a file about to vanish), unlocks, and removes
    the directories the lock created if they are empty."""
    key = os.path.realpath(lock_path(store_file))
    with _held_guard:
        held = _held.get(key)
        if held is None:
            return
        held.count -= 1
        if held.count > 0:
            return
        del _held[key]
        if held.fd < 0:
            return
        with contextlib.suppress(OSError):
            os.unlink(held.path)
        os.close(held.fd)
        for d in held.created:
            try:
                d.rmdir()
            except OSError:
                break


@contextlib.contextmanager
def campaign_lock(directory: str | Path) -> Iterator[None]:
    """Hold the writer lock of the campaign in ``directory`` for the block (created if need
    be). Raises :class:`CampaignInUseError` at once when another process holds it; a writer
    store opened inside the block shares it."""
    store_file = db_path(directory)
    _hold(store_file)
    try:
        yield
    finally:
        _unhold(store_file)


def campaign_lock_holder(path_or_dir: str | Path) -> int | None:
    """The pid of the process holding the writer lock of a campaign (its directory or store
    file; ``0`` when it recorded none), or None when no process holds it. Takes nothing a
    writer would wait for beyond a moment's shared probe."""
    lock = lock_path(db_path(path_or_dir))
    with _held_guard:
        if os.path.realpath(lock) in _held:
            return os.getpid()
    if fcntl is None:
        return None
    try:
        fd = os.open(lock, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _lock_pid(fd) or 0
    except OSError:
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _check_columns(table: str, cols: Iterable[str], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(cols) - set(allowed))
    if unknown:
        raise StoreError(f"unknown {table} column(s): {', '.join(unknown)}")


def _encode(col: str, value: Any) -> Any:
    if col in _JSON_COLUMNS and value is not None and not isinstance(value, str):
        return json.dumps(value, sort_keys=True)
    return value


def _check_header(path: Path) -> None:
    """Refuse, before SQLite opens it (and adds side files), a file that is no SQLite database."""
    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except OSError as e:
        raise StoreError(f"{path}: cannot read campaign store ({e.strerror or e})") from None
    if not head:
        raise StoreCorruptError(f"{path}: empty file, not a campaign store")
    if len(head) < 100 or not head.startswith(_SQLITE_HEADER):
        raise StoreCorruptError(f"{path}: not an SQLite database (corrupt, truncated or another "
                                "program's file), so not a campaign store")
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    size = path.stat().st_size
    idle = not Path(f"{path}-wal").exists()  # no writer mid-checkpoint growing the file
    if idle and head[24:28] == head[92:96] and size < page_size * pages:  # a valid count
        raise StoreCorruptError(f"{path}: corrupt campaign store (truncated: {size} bytes of the "
                                f"{page_size * pages} its header records)")


class CampaignStore:
    """A campaign's SQLite store. ``CampaignStore(dir_or_file, readonly=False)``; context manager.

    A writer creates the file (and directory) and schema; ``readonly=True`` requires the file to
    exist and never writes. One instance may be shared by threads (calls are serialised). An
    existing file is validated first (see "Validation on open" above).
    """

    def __init__(self, path_or_dir: str | Path, readonly: bool = False,
                 busy_timeout_s: float | None = None) -> None:
        self.path = db_path(path_or_dir)
        self.readonly = readonly
        self.busy_timeout_s = BUSY_TIMEOUT_S if busy_timeout_s is None else busy_timeout_s
        self._version = SCHEMA_VERSION  # of an existing file: read by _validate
        self._lock = threading.RLock()
        self._holds_campaign_lock = False
        path = self.path
        if path.exists() and not path.is_file():
            raise StoreCorruptError(f"{path}: not a file, so not a campaign store")
        if readonly and not path.exists():
            raise StoreNotFoundError(f"no campaign store at {path} (not a campaign directory)")
        if not readonly:  # first: a second writer is refused before it reads anything
            _hold(path)
            self._holds_campaign_lock = True
        try:
            self._open()
        except BaseException:
            self._release_campaign_lock()
            raise

    def _open(self) -> None:
        """Check the header, connect, validate an existing file; a writer then makes it WAL and
        brings the schema up to date. Every failure is a StoreError saying what it is."""
        path = self.path
        existing = path.is_file() and path.stat().st_size > 0
        if self.readonly or existing:
            _check_header(path)
        self._conn = self._connect()
        try:
            try:
                if self.readonly or existing:
                    self._validate()
            except sqlite3.Error as e:
                if not self._may_read_immutable(e):
                    raise
                self._conn.close()
                self._conn = self._connect(immutable=True)
                self._validate()
            if not self.readonly:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.executescript(_SCHEMA)
                self._upgrade()
        except sqlite3.Error as e:
            self._conn.close()
            raise self._trouble(e) from None
        except BaseException:
            self._conn.close()
            raise

    def _connect(self, immutable: bool = False) -> sqlite3.Connection:
        path, timeout = self.path, self.busy_timeout_s
        try:
            if self.readonly:
                flags = "mode=ro&immutable=1" if immutable else "mode=ro"
                conn = sqlite3.connect(f"{path.resolve().as_uri()}?{flags}", uri=True,
                                       isolation_level=None, check_same_thread=False,
                                       timeout=timeout)
            else:
                conn = sqlite3.connect(str(path), isolation_level=None,
                                       check_same_thread=False, timeout=timeout)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        except (OSError, sqlite3.Error) as e:
            raise self._trouble(e) from None
        return conn

    def _may_read_immutable(self, exc: sqlite3.Error) -> bool:
        """Whether a reader that SQLite could not open (it cannot create the WAL's side files
        in a read-only directory or mount) may read the file as immutable: nobody can write
        there, and no WAL holds commits the file lacks."""
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        if not self.readonly or primary not in (sqlite3.SQLITE_CANTOPEN,
                                                sqlite3.SQLITE_READONLY):
            return False
        wal = Path(f"{self.path}-wal")
        unmerged = wal.exists() and wal.stat().st_size > 0
        return not unmerged and not _writable(self.path)

    def _trouble(self, exc: BaseException) -> StoreError:
        return store_trouble(self.path, exc, self.busy_timeout_s)

    def _release_campaign_lock(self) -> None:
        if self._holds_campaign_lock:
            self._holds_campaign_lock = False
            _unhold(self.path)

    def _validate(self) -> None:
        """Integrity, tables and columns, schema version (a pre-version store reads as 1)."""
        rows = [r[0] for r in self._conn.execute("PRAGMA integrity_check").fetchall()]
        if rows != ["ok"]:
            raise StoreCorruptError(f"{self.path}: corrupt campaign store (integrity check: "
                                    f"{'; '.join(map(str, rows[:3]))})")
        for table, columns in _TABLES.items():
            have = {r[1] for r in self._conn.execute(f"PRAGMA table_info({table})")}
            if not have:
                raise StoreCorruptError(f"{self.path}: not an evoopt campaign store (it has no "
                                        f"table {table!r})")
            added = {c for cols in ADDED_COLUMNS.values() for c in cols.get(table, ())}
            missing = [c for c in columns if c not in have and c not in added]
            if missing:
                raise StoreCorruptError(f"{self.path}: not an evoopt campaign store (table "
                                        f"{table!r} lacks {', '.join(missing)})")
        version = self.get_meta("schema_version", 1)
        if version not in range(1, SCHEMA_VERSION + 1) or isinstance(version, bool):
            raise StoreCorruptError(f"{self.path}: schema_version {version!r} is not one this "
                                    f"evoopt reads (1 to {SCHEMA_VERSION}); written by another "
                                    "version?")
        self._version = version

    def _upgrade(self) -> None:
        """Bring an older store to :data:`SCHEMA_VERSION` (a writer only): add the columns later
        versions added; rows written before read them as NULL."""
        for version in range(self._version + 1, SCHEMA_VERSION + 1):
            for table, columns in ADDED_COLUMNS.get(version, {}).items():
                have = {r[1] for r in self._conn.execute(f"PRAGMA table_info({table})")}
                for column, sql_type in columns.items():
                    if column not in have:
                        self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")
        self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                           ("schema_version", json.dumps(SCHEMA_VERSION)))

    # -- lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (checkpointing the WAL) and, for a writer, drop its campaign
        lock. Closing twice does nothing more."""
        with self._lock:
            try:
                self._conn.close()
            finally:
                self._release_campaign_lock()

    def __enter__(self) -> CampaignStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "ro" if self.readonly else "rw"
        return f"CampaignStore({str(self.path)!r}, {mode})"

    @property
    def directory(self) -> Path:
        """The campaign directory holding the store (and ``best_optimizer.py``)."""
        return self.path.parent

    def _write(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        if self.readonly:
            raise StoreError(f"store {self.path} is open read-only")
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(params))
            except sqlite3.Error as e:
                raise self._trouble(e) from None

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as e:
                raise self._trouble(e) from None

    def _json(self, text: Any, what: str) -> Any:
        if not isinstance(text, str):
            raise StoreCorruptError(f"{self.path}: {what} is not JSON text (got {text!r:.60})")
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            raise StoreCorruptError(f"{self.path}: {what} is not valid JSON") from None

    def _decode_row(self, row: sqlite3.Row) -> dict[str, Any]:
        out = dict(row)
        for col in _JSON_COLUMNS.intersection(out):
            if isinstance(out[col], str):
                out[col] = self._json(out[col], f"column {col} of {out.get('uid')!r}")
        if "parents" in out and out["parents"] is None:
            out["parents"] = []
        return out

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        return [self._decode_row(r) for r in self._read(sql, params)]

    # -- meta ----------------------------------------------------------------------------------
    def _insert_or_ignore(self, table: str, cols: dict[str, Any]) -> bool:
        """Insert a row (``created_at`` defaults to now); False if its key already exists."""
        cols.setdefault("created_at", time.time())
        names = list(cols)
        cur = self._write(
            f"INSERT OR IGNORE INTO {table}({', '.join(names)}) "
            f"VALUES ({', '.join('?' * len(names))})",
            (_encode(c, cols[c]) for c in names),
        )
        return cur.rowcount == 1

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-able value under ``key`` (replacing any previous value)."""
        self._write(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value))
        )

    def get_meta(self, key: str, default: Any = None) -> Any:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return default if not rows else self._json(rows[0][0], f"meta {key!r}")

    def all_meta(self) -> dict[str, Any]:
        rows = self._read("SELECT key, value FROM meta ORDER BY key")
        return {str(k): self._json(v, f"meta {k!r}") for k, v in rows}

    # -- individuals ---------------------------------------------------------------------------
    def add_individual(self, **cols: Any) -> bool:
        """Insert an individual (INSERT OR IGNORE on ``uid``); returns whether it was new."""
        if "uid" not in cols:
            raise StoreError("add_individual needs a uid")
        _check_columns("individuals", cols, INDIVIDUAL_COLUMNS)
        cols.setdefault("parents", [])
        cols.setdefault("status", "pending")
        return self._insert_or_ignore("individuals", cols)

    def update_individual(self, uid: str, **cols: Any) -> None:
        """Set the given columns of an existing individual; unknown uid raises StoreError."""
        _check_columns("individuals", cols, INDIVIDUAL_COLUMNS)
        if "uid" in cols:
            raise StoreError("uid cannot be updated")
        if not cols:
            return
        names = list(cols)
        cur = self._write(
            f"UPDATE individuals SET {', '.join(f'{c} = ?' for c in names)} WHERE uid = ?",
            [*(_encode(c, cols[c]) for c in names), uid],
        )
        if cur.rowcount == 0:
            raise StoreError(f"no individual {uid!r}")

    def get_individual(self, uid: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM individuals WHERE uid = ?", (uid,))
        return rows[0] if rows else None

    def individuals(self, generation: int | None = None) -> list[dict[str, Any]]:
        """All individuals (or one generation's), by generation then creation order."""
        where, params = ("", ())
        if generation is not None:
            where, params = ("WHERE generation = ?", (generation,))
        return self._query(
            f"SELECT * FROM individuals {where} ORDER BY generation, created_at, rowid", params
        )

    # -- evaluations ---------------------------------------------------------------------------
    def add_evaluation(self, **cols: Any) -> bool:
        """Record a paid-for evaluation; INSERT OR IGNORE on (hash, stage, seed, split).

        Returns whether the row was inserted (False: that evaluation was already recorded).
        """
        _check_columns("evaluations", cols, EVALUATION_COLUMNS)
        for key in ("hash", "stage", "seed"):
            if cols.get(key) is None:
                raise StoreError(f"add_evaluation needs {key}")
        cols.setdefault("split", "val")
        return self._insert_or_ignore("evaluations", cols)

    def evaluations(
        self, uid: str | None = None, hash: str | None = None, stage: str | None = None
    ) -> list[dict[str, Any]]:
        """Evaluations filtered by any of uid/hash/stage, in insertion order."""
        conds, params = [], []
        for col, val in (("uid", uid), ("hash", hash), ("stage", stage)):
            if val is not None:
                conds.append(f"{col} = ?")
                params.append(val)
        where = f"WHERE {' AND '.join(conds)}" if conds else ""
        return self._query(f"SELECT * FROM evaluations {where} ORDER BY id", params)

    def train_steps(self) -> int:
        """Training steps run by every stored evaluation (their compute, whatever their stage)."""
        rows = self._query("SELECT COALESCE(SUM(steps), 0) AS n FROM evaluations", ())
        return int(rows[0]["n"])

    def find_evaluations(self, hash: str, stage: str, split: str = "val") -> list[dict[str, Any]]:
        """Evaluations already paid for this genome hash at this stage and split (by seed)."""
        return self._query(
            "SELECT * FROM evaluations WHERE hash = ? AND stage = ? AND split = ? ORDER BY seed",
            (hash, stage, split),
        )

    # -- generations ---------------------------------------------------------------------------
    def add_generation(self, **cols: Any) -> None:
        """Record a generation's statistics (INSERT OR REPLACE on ``generation``)."""
        if cols.get("generation") is None:
            raise StoreError("add_generation needs generation")
        _check_columns("generations", cols, GENERATION_COLUMNS)
        cols.setdefault("finished_at", time.time())
        names = list(cols)
        self._write(
            f"INSERT OR REPLACE INTO generations({', '.join(names)}) "
            f"VALUES ({', '.join('?' * len(names))})",
            (cols[c] for c in names),
        )

    def generations(self) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM generations ORDER BY generation")

    # -- lineage -------------------------------------------------------------------------------
    def ancestry(self, uid: str, depth: int | None = None) -> dict[str, Any]:
        """The ancestry tree of ``uid``, walked through ``parents`` back to the seeds.

        Each node is the individual's dict plus ``"ancestors"``: one node per parent, in
        ``parents`` order. ``depth`` limits the levels below the root (``0`` = root only); a
        node cut off by ``depth`` has ``"truncated": True``. An ancestor reached a second time
        (shared by two crossover parents) is expanded only once; later occurrences carry
        ``"repeated": True`` and no ancestors, so the tree stays linear in the population size.
        A parent uid missing from the store becomes ``{"uid": ..., "missing": True,
        "ancestors": []}``. Raises KeyError for an unknown root uid.
        """
        by_uid = {ind["uid"]: ind for ind in self.individuals()}
        if uid not in by_uid:
            raise KeyError(uid)

        expanded: set[str] = set()

        def node_of(u: str, level: int) -> tuple[dict[str, Any], bool]:
            """The node for ``u`` and whether its parents are to be expanded."""
            ind = by_uid.get(u)
            if ind is None:
                return {"uid": u, "missing": True, "ancestors": [], "parents": []}, False
            node = dict(ind, ancestors=[])
            if u in expanded:  # shared ancestor (or a cycle): expanded once, referenced after
                node["repeated"] = True
                return node, False
            expanded.add(u)
            if depth is not None and level >= depth:
                node["truncated"] = bool(ind["parents"])
                return node, False
            return node, True

        # depth first, parents in order, without recursion (a lineage may be 10,000 deep):
        # each stack entry is a node still expanding and the parents it has yet to visit
        root, expand = node_of(uid, 0)
        stack = [(root, iter(by_uid[uid]["parents"]), 0)] if expand else []
        while stack:
            node, parents, level = stack[-1]
            parent = next(parents, _END)
            if parent is _END:
                stack.pop()
                continue
            child, expand = node_of(parent, level + 1)
            node["ancestors"].append(child)
            if expand:
                stack.append((child, iter(by_uid[parent]["parents"]), level + 1))
        return root

    def line(self, uid: str) -> list[dict[str, Any]]:
        """The winner's main line: ``uid``'s first-parent chain, returned seed first."""
        by_uid = {ind["uid"]: ind for ind in self.individuals()}
        if uid not in by_uid:
            raise KeyError(uid)
        chain: list[dict[str, Any]] = []
        seen: set[str] = set()
        cur: str | None = uid
        while cur is not None and cur in by_uid and cur not in seen:
            seen.add(cur)
            ind = by_uid[cur]
            chain.append(ind)
            cur = ind["parents"][0] if ind["parents"] else None
        return chain[::-1]

    def best_uid(self) -> str | None:
        """The winner: meta ``winner_uid``, else the summary winner, else the highest fitness."""
        uid = self.get_meta("winner_uid")
        if uid:
            return uid
        summary = self.get_meta("summary") or {}
        uid = (summary.get("winner") or {}).get("uid")
        if uid:
            return uid
        rows = self._query(
            "SELECT uid FROM individuals WHERE fitness IS NOT NULL "
            "ORDER BY fitness DESC, rowid LIMIT 1"
        )
        return rows[0]["uid"] if rows else None
