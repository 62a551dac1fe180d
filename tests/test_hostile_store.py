"""Issue 20, the campaign store: circumstance is told from corruption, one writer per campaign,
lineages as deep as the config allows, and history that is always valid JSON.

Everything here is real: SQLite files and connections, second processes, a read-only bind mount
and a full tmpfs (in a user namespace, where ``unshare`` allows it), and the CLI in-process.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import evoopt.cli
from evoopt.campaign import store as store_module
from evoopt.campaign.config import parse_config
from evoopt.campaign.status import campaign_status
from evoopt.campaign.store import (
    DB_NAME,
    LOCK_NAME,
    CampaignInUseError,
    CampaignStore,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreLockedError,
    StoreReadOnlyError,
    campaign_lock,
)
from evoopt.report.history import write_history
from evoopt.report.lineage import ancestry_tree, iter_tree, line_steps
from tests.conftest_campaign import TINY, tiny_config
from tests.test_hostile_input import assert_clear_error, cli

REPO = Path(__file__).resolve().parents[1]

evoopt.cli.register_commands()

#: The phrase each kind of trouble is reported with; each message holds its own and no other.
PHRASES = {"locked": "is locked", "read-only": "read-only", "full": "disk full",
           "corrupt": "corrupt", "in use": "in use by another evoopt process"}


def assert_only(message: str, kind: str) -> None:
    """``message`` says ``kind`` of trouble and none of the others."""
    message = " ".join(message.split())
    assert PHRASES[kind] in message, message
    others = [k for k, phrase in PHRASES.items() if k != kind and phrase in message]
    assert not others, f"{message!r} also says {others}"


def make_campaign(directory: Path, state: str = "interrupted") -> Path:
    """A small real store holding the tiny campaign's config (a campaign that started)."""
    with CampaignStore(directory) as store:
        store.set_meta("config", parse_config(tiny_config()).to_dict())
        store.set_meta("state", state)
        store.add_individual(uid="a", generation=0, operator="seed", genome={"lr": 0.1},
                             fitness=0.5, status="evaluated")
    return directory


def python(code: str, *args: object, prefix: tuple[str, ...] = (),
           timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (after ``prefix``, e.g. ``unshare``)."""
    return subprocess.run([*prefix, sys.executable, "-c", textwrap.dedent(code),
                           *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def _unshare_works(*flags: str) -> bool:
    try:
        return subprocess.run(["unshare", *flags, "true"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def without_root() -> tuple[str, ...]:
    """A prefix that runs a command without root's power to ignore file permissions: nothing
    for a normal user; for root, a user namespace (there root's files obey their mode bits)."""
    if os.geteuid() != 0:
        return ()
    if not _unshare_works("--user"):
        pytest.skip("running as root, and `unshare --user` is not permitted here: no way to "
                    "make a file read-only for this process")
    return ("unshare", "--user")


def in_mount_namespace() -> tuple[str, ...]:
    """A prefix giving a private mount namespace (to mount a read-only bind or a tmpfs)."""
    if not _unshare_works("--user", "--map-root-user", "--mount"):
        pytest.skip("`unshare --user --map-root-user --mount` is not permitted here")
    return ("unshare", "--user", "--map-root-user", "--mount")


@contextmanager
def sqlite_holder(path: Path, *statements: str) -> Iterator[sqlite3.Connection]:
    """A second real connection to ``path`` that ran ``statements`` (and holds their locks)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for sql in statements:
            conn.execute(sql)
        yield conn
    finally:
        conn.close()


HOLD_WRITER = """
import sys, time
from evoopt.campaign.store import CampaignStore
store = CampaignStore(sys.argv[1])
if len(sys.argv) > 2:
    store.set_meta("state", sys.argv[2])
print("held", flush=True)
time.sleep(300)
"""


@contextmanager
def writer_in_another_process(directory: Path, state: str | None = None
                              ) -> Iterator[subprocess.Popen]:
    """Another real process holding ``directory``'s store open for writing (killed after),
    having set meta ``state`` when given."""
    args = [str(directory)] + ([state] if state else [])
    proc = subprocess.Popen([sys.executable, "-c", HOLD_WRITER, *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.strip() == "held", proc.stderr.read() if proc.stderr else line
        yield proc
    finally:
        proc.kill()
        proc.wait()


# -- 1. locked, read-only, full and corrupt are four different things -------------------------

def test_writer_open_of_a_store_another_connection_locks_says_locked(tmp_path: Path) -> None:
    make_campaign(tmp_path)
    with sqlite_holder(tmp_path / DB_NAME, "BEGIN EXCLUSIVE"):
        t0 = time.monotonic()
        with pytest.raises(StoreLockedError) as info:
            CampaignStore(tmp_path, busy_timeout_s=0.2)
        assert time.monotonic() - t0 < 10
    assert_only(str(info.value), "locked")
    assert str(tmp_path / DB_NAME) in str(info.value)
    with CampaignStore(tmp_path) as store:  # healthy once the lock is released
        assert store.get_meta("state") == "interrupted"


def test_write_while_another_connection_holds_the_lock_says_locked(tmp_path: Path) -> None:
    with CampaignStore(tmp_path, busy_timeout_s=0.2) as store:
        with sqlite_holder(store.path, "BEGIN EXCLUSIVE"), \
                pytest.raises(StoreLockedError) as info:
            store.set_meta("state", "running")
        assert_only(str(info.value), "locked")
        store.set_meta("state", "running")  # and the store goes on once it is released
        assert store.get_meta("state") == "running"


def test_reader_of_an_exclusively_locked_store_says_locked(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    make_campaign(tmp_path)
    holder = ("PRAGMA locking_mode=EXCLUSIVE", "BEGIN EXCLUSIVE",
              "INSERT OR REPLACE INTO meta(key, value) VALUES ('x', '1')", "COMMIT")
    with sqlite_holder(tmp_path / DB_NAME, *holder):
        with pytest.raises(StoreLockedError) as info:
            CampaignStore(tmp_path, readonly=True, busy_timeout_s=0.2)
        assert_only(str(info.value), "locked")
        monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.2)
        message = assert_clear_error(cli("status", tmp_path), str(tmp_path / DB_NAME))
        assert_only(message, "locked")


READ_ONLY_PROBE = """
import json, sys
from typer.testing import CliRunner
import evoopt.cli
from evoopt.campaign.store import CampaignStore, StoreError
directory = sys.argv[1]
out = {}
try:
    CampaignStore(directory).close()
    out["writer"] = "opened"
except StoreError as e:
    out["writer"] = f"{type(e).__name__}: {e}"
with CampaignStore(directory, readonly=True) as store:
    out["reader"] = store.get_meta("state")
evoopt.cli.register_commands()
runner = CliRunner()
for name, args in {"status": ["status", directory, "--json"],
                   "resume": ["resume", directory, "--serial"]}.items():
    result = runner.invoke(evoopt.cli.app, args)
    out[name] = {"exit": result.exit_code, "output": result.output,
                 "exception": None if result.exception is None or
                 isinstance(result.exception, SystemExit) else repr(result.exception)}
print(json.dumps(out))
"""


def _assert_read_only_outcome(proc: subprocess.CompletedProcess, store: Path) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["writer"].startswith("StoreReadOnlyError"), out
    assert_only(out["writer"], "read-only")
    assert str(store) in out["writer"]
    assert out["reader"] == "interrupted"  # readers still read it
    assert out["status"]["exit"] == 0, out["status"]
    assert json.loads(out["status"]["output"])["state"] == "interrupted"
    resume = out["resume"]
    assert resume["exit"] == 2 and resume["exception"] is None, resume
    assert "Traceback" not in resume["output"] and "error:" in resume["output"], resume
    # refused before any preflight, by the CLI's own check of the directory or by the store
    said = " ".join(resume["output"].split())
    assert "read-only" in said.lower() or "cannot write" in said, said
    assert not [k for k, phrase in PHRASES.items() if k != "read-only" and phrase in said], said


def test_read_only_directory_and_file_say_read_only(tmp_path: Path) -> None:
    prefix = without_root()
    directory = make_campaign(tmp_path / "c")
    (directory / DB_NAME).chmod(0o444)
    directory.chmod(0o555)
    try:
        proc = python(READ_ONLY_PROBE, directory, prefix=prefix)
    finally:
        directory.chmod(0o755)
    _assert_read_only_outcome(proc, directory / DB_NAME)


def test_read_only_mount_says_read_only(tmp_path: Path) -> None:
    prefix = in_mount_namespace()
    directory = make_campaign(tmp_path / "c")
    mount = ("sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(directory))
    proc = python(READ_ONLY_PROBE, directory, prefix=(*prefix, *mount))
    _assert_read_only_outcome(proc, directory / DB_NAME)


def _fill(store: CampaignStore, rows: int = 100_000) -> None:
    for i in range(rows):
        store.add_individual(uid=f"filler-{i}", generation=0, genome={"pad": "x" * 4000})


def test_sqlite_page_limit_reached_says_disk_full(tmp_path: Path) -> None:
    """SQLite's own page limit gives a real SQLITE_FULL, as a full disk does."""
    with CampaignStore(tmp_path) as store:
        store.set_meta("state", "running")
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count={pages + 8}")
        with pytest.raises(StoreFullError) as info:
            _fill(store)
    message = str(info.value)
    assert message == (f"disk full writing {tmp_path / DB_NAME}; free space and run "
                       f"`evoopt resume {tmp_path}`")
    assert_only(message, "full")
    with CampaignStore(tmp_path, readonly=True) as store:  # what was written is kept
        assert store.get_meta("state") == "running"
        assert store.individuals()


FULL_DISK_PROBE = """
import json, subprocess, sys
from pathlib import Path
mnt = Path(sys.argv[1])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], check=True)
from evoopt.campaign.store import CampaignStore, StoreError
out = {}
try:
    with CampaignStore(mnt / "c") as store:
        store.set_meta("state", "running")
        for i in range(100000):
            store.add_individual(uid=f"filler-{i}", generation=0, genome={"pad": "x" * 4000})
except StoreError as e:
    out["error"] = f"{type(e).__name__}: {e}"
with CampaignStore(mnt / "c", readonly=True) as store:
    out["kept"] = len(store.individuals())
print(json.dumps(out))
"""


def test_full_filesystem_says_disk_full(tmp_path: Path) -> None:
    prefix = in_mount_namespace()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = python(FULL_DISK_PROBE, mnt, prefix=prefix)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["error"] == (f"StoreFullError: disk full writing {mnt / 'c' / DB_NAME}; free "
                            f"space and run `evoopt resume {mnt / 'c'}`"), out
    assert out["kept"] > 0


def test_corrupt_store_still_says_corrupt(tmp_path: Path) -> None:
    make_campaign(tmp_path)
    path = tmp_path / DB_NAME
    data = bytearray(path.read_bytes())
    for start in range(4096, len(data), 4096):
        data[start:start + 12] = b"\xff" * 12
    path.write_bytes(bytes(data))
    for readonly in (True, False):
        with pytest.raises(StoreCorruptError) as info:
            CampaignStore(tmp_path, readonly=readonly)
        assert_only(str(info.value), "corrupt")
    assert not (tmp_path / LOCK_NAME).exists()


# -- 2. one writer per campaign directory, by an OS lock that dies with its process -----------

def test_second_writer_process_is_refused_at_once(tmp_path: Path) -> None:
    make_campaign(tmp_path)
    with writer_in_another_process(tmp_path, "running") as other:
        t0 = time.monotonic()
        with pytest.raises(CampaignInUseError) as info:
            CampaignStore(tmp_path)
        assert time.monotonic() - t0 < 2
        assert str(info.value).startswith(
            f"campaign {tmp_path} is in use by another evoopt process (pid {other.pid})")
        assert_only(str(info.value), "in use")
        with CampaignStore(tmp_path, readonly=True) as reader:  # readers are not refused
            assert reader.get_meta("state") == "running"
        assert campaign_status(tmp_path)["state"] == "running"
        with pytest.raises(CampaignInUseError), campaign_lock(tmp_path):
            pass


def test_the_lock_dies_with_its_process(tmp_path: Path) -> None:
    make_campaign(tmp_path)
    with writer_in_another_process(tmp_path, "running") as other:
        os.kill(other.pid, signal.SIGKILL)
        other.wait()
    # killed while "running": no stale lock, the campaign is interrupted and a writer may open
    assert campaign_status(tmp_path)["state"] == "interrupted"
    with CampaignStore(tmp_path) as store:
        assert store.get_meta("state") == "running"


def test_a_live_pid_in_the_store_does_not_fake_a_running_campaign(tmp_path: Path) -> None:
    """The pid a dead campaign stored may be reused by another process: the lock decides."""
    make_campaign(tmp_path)
    with writer_in_another_process(tmp_path, "running") as other:
        os.kill(other.pid, signal.SIGKILL)
        other.wait()
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('pid', ?)",
                     (json.dumps(os.getpid()),))
    assert campaign_status(tmp_path)["state"] == "interrupted"


def test_writers_in_one_process_share_the_lock(tmp_path: Path) -> None:
    with CampaignStore(tmp_path) as first:
        with CampaignStore(tmp_path) as second:
            second.set_meta("state", "running")
        # the first writer still holds the directory after the second closed
        proc = python(HOLD_WRITER, tmp_path, timeout=60)
        assert proc.returncode != 0
        assert f"is in use by another evoopt process (pid {os.getpid()})" in proc.stderr
        first.set_meta("state", "finished")
    assert not (tmp_path / LOCK_NAME).exists()  # released with the last writer


def test_a_lock_taken_for_a_new_directory_leaves_nothing_when_released(tmp_path: Path) -> None:
    with campaign_lock(tmp_path / "new" / "campaign"):
        assert (tmp_path / "new" / "campaign" / LOCK_NAME).is_file()
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("command", ["resume", "run"])
def test_cli_refuses_a_campaign_in_use_before_any_preflight(command: str,
                                                            tmp_path: Path) -> None:
    """Two `resume`s seconds apart both used to run: the lock was taken after preflight, and
    the pid written after it. Now the second refuses at once (before it reads any data: the
    missing --data-dir below would otherwise be the error)."""
    directory = tmp_path / "c"
    if command == "resume":
        make_campaign(directory)
        args = ["resume", directory]
    else:
        CampaignStore(directory).close()  # a store that never started: `run` may reuse it
        args = ["run", TINY, "--out", directory]
    with writer_in_another_process(directory) as other:
        t0 = time.monotonic()
        result = cli(*args, "--serial", "--data-dir", tmp_path / "no-data")
        elapsed = time.monotonic() - t0
    message = assert_clear_error(
        result, f"campaign {directory} is in use by another evoopt process (pid {other.pid})")
    assert_only(message, "in use")
    assert elapsed < 5


# -- 3. lineages as deep as the config allows -------------------------------------------------

DEPTH = 12_000


@pytest.fixture(scope="module")
def deep_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real store holding a 12,000-deep chain (each individual the child of the one before),
    plus a crossover child of the last two and of a missing uid."""
    directory = tmp_path_factory.mktemp("deep")
    CampaignStore(directory).close()
    rows = [(f"g{i}", i, "seed" if i == 0 else "mutation",
             json.dumps([] if i == 0 else [f"g{i - 1}"]), json.dumps({"lr": 1e-3 * (i % 7)}),
             f"h{i}", 1.0 - 1.0 / (i + 2), "evaluated", float(i))
            for i in range(DEPTH)]
    rows.append(("x", DEPTH, "crossover", json.dumps([f"g{DEPTH - 1}", f"g{DEPTH - 2}", "lost"]),
                 json.dumps({"lr": 0.5}), "hx", 0.99, "evaluated", float(DEPTH)))
    with sqlite3.connect(directory / DB_NAME) as conn:
        conn.executemany("INSERT INTO individuals(uid, generation, operator, parents, genome, "
                         "hash, fitness, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         rows)
    return directory


def test_deep_lineage_walks_without_recursion(deep_store: Path) -> None:
    with CampaignStore(deep_store, readonly=True) as store:
        line = store.line("x")
        assert [r["uid"] for r in line] == [f"g{i}" for i in range(DEPTH)] + ["x"]
        tree = store.ancestry("x")
        nodes = list(iter_tree(tree))
        # every individual once, in depth-first order (first parent first); the second
        # parent is reached again (repeated) and the lost one is marked missing
        assert [n["uid"] for n in nodes[:3]] == ["x", f"g{DEPTH - 1}", f"g{DEPTH - 2}"]
        assert len(nodes) == DEPTH + 3
        assert nodes[-2]["uid"] == f"g{DEPTH - 2}" and nodes[-2]["repeated"]
        assert nodes[-1] == {"uid": "lost", "missing": True, "ancestors": [], "parents": []}
        assert nodes[DEPTH]["uid"] == "g0" and nodes[DEPTH]["ancestors"] == []
        shallow = list(iter_tree(store.ancestry("x", depth=3)))
        assert [n["uid"] for n in shallow] == ["x", f"g{DEPTH - 1}", f"g{DEPTH - 2}",
                                               f"g{DEPTH - 3}", f"g{DEPTH - 2}", "lost"]
        assert shallow[3]["truncated"]
        steps = line_steps(store, "x")
        assert len(steps) == DEPTH + 1 and steps[0].parent is None
        assert str(steps[1].changes[0]) == "lr: 0 → 0.001"
        ancestry_tree(store, "x")


def test_deep_lineage_cli(deep_store: Path) -> None:
    result = cli("lineage", deep_store, "x", "--depth", "3")
    assert result.exit_code == 0, result.output
    assert "g11997" in result.output and "g11996" not in result.output
    t0 = time.monotonic()
    result = cli("lineage", deep_store, "x")
    assert result.exit_code == 0, result.output
    assert time.monotonic() - t0 < 20
    assert "damaged" not in result.output and "x" in result.output


# -- 4. history is valid JSON whatever the store holds ----------------------------------------

def _strict_json(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def non_finite_store(tmp_path: Path) -> Path:
    directory = tmp_path / "c"
    with CampaignStore(directory) as store:
        store.add_individual(uid="a", generation=0, operator="seed", status="evaluated",
                             genome={"lr": math.nan, "beta": [0.9, math.inf]},
                             fitness=-math.inf)
        store.add_evaluation(uid="a", hash="h", stage="full", seed=0, fitness=math.inf,
                             val_loss=-math.inf, status="diverged",
                             train_loss_curve=[2.0, math.nan, math.inf, -math.inf],
                             tasks={"t": {"fitness": math.nan}})
    return directory


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet"])
def test_history_is_valid_json_with_nan_and_inf(fmt: str, non_finite_store: Path,
                                               tmp_path: Path) -> None:
    with CampaignStore(non_finite_store, readonly=True) as store:
        paths = write_history(store, fmt, tmp_path / f"h.{fmt}")
    if fmt == "json":
        doc = _strict_json(paths[0].read_text())
        ind, ev = doc["individuals"][0], doc["evaluations"][0]
    else:
        if fmt == "csv":
            tables = [list(csv.DictReader(p.open(newline=""))) for p in paths]
        else:
            import pyarrow.parquet as pq

            tables = [pq.read_table(p).to_pylist() for p in paths]
        ind, ev = (t[0] for t in tables)
        for col in ("genome",):
            ind[col] = _strict_json(ind[col])
        for col in ("train_loss_curve", "tasks"):
            ev[col] = _strict_json(ev[col])
    assert ind["genome"] == {"lr": None, "beta": [0.9, None]}
    assert ev["train_loss_curve"] == [2.0, None, None, None]
    assert ev["tasks"] == {"t": {"fitness": None}}
    if fmt == "json":
        assert ind["fitness"] is None and ev["fitness"] is None and ev["val_loss"] is None


def test_history_cli_json_is_strict(non_finite_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "h.json"
    result = cli("history", non_finite_store, "-o", out)
    assert result.exit_code == 0, result.output
    _strict_json(out.read_text())


def test_store_errors_are_store_errors() -> None:
    for kind in (StoreLockedError, StoreReadOnlyError, StoreFullError, CampaignInUseError,
                 StoreCorruptError):
        assert issubclass(kind, StoreError)
