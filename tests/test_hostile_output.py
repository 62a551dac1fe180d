"""Issue 20, area A: outputs that are not plain files, OSError at the CLI, signals, terminal
escapes and seed names. One test (or parametrized case) per reported case; each hung, destroyed
a file, printed a traceback or a raw escape sequence, or read the wrong genome before the fix.

Most commands run in-process (typer's CliRunner, under an alarm where a hang was the defect);
the signal tests run ``python -m evoopt`` in a real subprocess.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import tomli_w

from evoopt.campaign.store import DB_NAME
from evoopt.fileio import OutputError, atomic_output, is_sqlite_file
from tests.conftest_campaign import run_tiny, tiny_config
from tests.test_fuzz_cli import alarm
from tests.test_hostile_input import assert_clear_error, cli

REPO = Path(__file__).resolve().parents[1]
ADAM = REPO / "genomes" / "adam.toml"
HANG_S = 20  # a command refusing an output answers at once; past this it hung
QUICK_S = 8  # a hang that the alarm cut short (its TimeoutError is an OSError, which a
# careless ``except OSError`` swallows) shows as a call that took this long

#: A campaign of a few one-second evaluations: two seeds, one stage, no refinement, one
#: finalist on one seed, nothing compared.
MINI: dict[str, object] = {
    "campaign": {"name": "mini", "population": 2, "generations": 3, "seeds": ["adam", "adan"]},
    "fitness": {"overrides": {"steps": 20, "width": 8, "batch_size": 64}},
    "stages": [{"name": "full", "seeds": [0]}],
    "refine": {"evaluations": 0},
    "final": {"top_k": 1, "seeds": [100], "selection_seeds": [300], "compare": [],
              "test_split": False, "baselines": [], "budget_matched": "none"},
}


@pytest.fixture(scope="module")
def mini_campaign(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A finished mini campaign (read it; never written by a test)."""
    out = tmp_path_factory.mktemp("mini") / "mini"
    run_tiny(out, data_dir, **MINI)
    return out


def output_command(command: str, campaign: Path) -> list[object]:
    """The arguments of ``command`` before its ``-o``."""
    return {"export": ["export", ADAM], "report": ["report", campaign],
            "history": ["history", campaign, "-f", "json"]}[command]


# -- items 1-3: outputs that are not plain files ------------------------------------------------

def device_node(kind: str, tmp_path: Path) -> Path:
    """A device node to write to. Root gets its own copy of /dev/null (or of loop device 7)
    in ``tmp_path``: a command that replaced it would destroy that copy, not the system's (as
    the unfixed code did to /dev/null and /dev/loop*). Anyone else gets the system's node,
    which they cannot replace."""
    char = kind == "character device"
    if os.geteuid() == 0:
        path = tmp_path / ("null" if char else "loop7")
        os.mknod(path, (stat.S_IFCHR if char else stat.S_IFBLK) | 0o600,
                 os.makedev(1, 3) if char else os.makedev(7, 7))
        return path
    if char:
        return Path("/dev/null")
    device = next((p for p in sorted(Path("/dev").glob("*")) if p.is_block_device()), None)
    if device is None:
        pytest.skip("no block device in /dev")
    return device


def special_output(kind: str, tmp_path: Path) -> Path:
    """An existing output path of ``kind`` that no command may replace."""
    if kind.endswith("device"):
        return device_node(kind, tmp_path)
    path = tmp_path / "target.out"
    if kind == "FIFO":
        os.mkfifo(path)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(path))
    elif kind == "symbolic link":
        (tmp_path / "real.txt").write_text("keep me")
        path.symlink_to(tmp_path / "real.txt")
    elif kind == "dangling symbolic link":
        path.symlink_to(tmp_path / "absent.txt")
    return path


SPECIAL_KINDS = ["FIFO", "character device", "block device", "socket", "symbolic link",
                 "dangling symbolic link"]


@pytest.mark.parametrize("command", ["export", "report", "history"])
@pytest.mark.parametrize("kind", SPECIAL_KINDS)
def test_output_that_is_no_plain_file_is_refused(kind: str, command: str, mini_campaign: Path,
                                                  tmp_path: Path) -> None:
    """A FIFO hung the command (a blocking open); a device node or a symlink was replaced by
    a regular file."""
    target = special_output(kind, tmp_path)
    before = target.lstat()
    t0 = time.monotonic()
    with alarm(HANG_S):
        result = cli(*output_command(command, mini_campaign), "-o", target)
    assert time.monotonic() - t0 < QUICK_S, "the command waited on the output"
    assert_clear_error(result, str(target), kind.removeprefix("dangling "))
    after = target.lstat()
    assert (after.st_mode, after.st_ino, after.st_rdev) == (
        before.st_mode, before.st_ino, before.st_rdev), f"{target} was replaced"
    if kind == "symbolic link":
        assert (tmp_path / "real.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".*.tmp")), "a temporary file was left behind"


def test_is_sqlite_file_never_blocks_on_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    with alarm(HANG_S):
        assert not is_sqlite_file(fifo)
    assert time.monotonic() - t0 < QUICK_S, "is_sqlite_file waited on the FIFO"
    assert not is_sqlite_file(Path("/dev/null"))


@pytest.mark.parametrize("swap", ["FIFO", "symbolic link"])
def test_atomic_output_rechecks_the_target_before_replacing(swap: str, tmp_path: Path) -> None:
    """A target that became a FIFO or a symlink while the output was written is not replaced."""
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(OutputError, match=swap), atomic_output(target) as tmp:
        tmp.write_text("new")
        target.unlink()
        if swap == "FIFO":
            os.mkfifo(target)
        else:
            target.symlink_to(tmp_path / "elsewhere.txt")
    assert stat.S_ISFIFO(target.lstat().st_mode) if swap == "FIFO" else target.is_symlink()
    assert not (tmp_path / "elsewhere.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


# -- item 4: OSError at every CLI entry ---------------------------------------------------------

@pytest.fixture
def unwritable_dir(tmp_path: Path) -> Path:
    """A folder no file can be created in: a tmp dir without write permission, or (as root,
    whom permissions do not stop) /sys, which is read-only even for root."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        for candidate in (folder, Path("/sys")):
            try:
                fd, probe = tempfile.mkstemp(dir=candidate)
            except OSError:
                yield candidate
                return
            os.close(fd)
            os.unlink(probe)
        pytest.skip("no folder here refuses writes (root, and /sys is writable)")
    finally:
        folder.chmod(0o700)


def ray_config(tmp_path: Path) -> Path:
    """The mini campaign on a local Ray instance (so a late failure would start Ray)."""
    path = tmp_path / "ray.toml"
    path.write_text(tomli_w.dumps(tiny_config(**MINI, ray={"enabled": True, "num_workers": 1})))
    return path


def test_unwritable_outputs_give_one_error_line(unwritable_dir: Path, mini_campaign: Path,
                                                tmp_path: Path) -> None:
    cases = {
        "report": ["report", mini_campaign, "-o", unwritable_dir / "r.html"],
        "history": ["history", mini_campaign, "-o", unwritable_dir / "h.json"],
        "export": ["export", ADAM, "-o", unwritable_dir / "a.py"],
        "init": ["init", unwritable_dir / "configs"],
    }
    for name, args in cases.items():
        out = assert_clear_error(cli(*args), str(args[-1]))
        assert "denied" in out or "not permitted" in out, (name, out)
    assert not list(mini_campaign.glob("*.tmp"))


def test_run_into_an_unwritable_folder_fails_before_ray_starts(unwritable_dir: Path,
                                                               tmp_path: Path,
                                                               data_dir: Path) -> None:
    import ray

    out = unwritable_dir / "campaign"
    t0 = time.time()
    result = cli("run", ray_config(tmp_path), "--out", out, "--data-dir", data_dir)
    assert_clear_error(result, str(out))
    assert not ray.is_initialized(), "Ray was started before the folder was found unwritable"
    assert time.time() - t0 < 10


@pytest.mark.parametrize("command", ["run", "report", "history", "export", "init"])
def test_over_long_name_gives_one_error_line(command: str, mini_campaign: Path,
                                             tmp_path: Path) -> None:
    long = tmp_path / ("x" * 300)
    args = {"run": ["run", ray_config(tmp_path), "--out", long],
            "report": ["report", mini_campaign, "-o", long],
            "history": ["history", mini_campaign, "-o", long],
            "export": ["export", ADAM, "-o", long],
            "init": ["init", long]}[command]
    assert_clear_error(cli(*args), str(long), "File name too long")


# -- item 5: empty output paths ---------------------------------------------------------------

@pytest.mark.parametrize("command", ["run", "export", "report", "history", "baselines", "init"])
def test_empty_output_path_is_refused(command: str, mini_campaign: Path, tmp_path: Path,
                                      data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--out ""`` wrote the campaign into the current folder."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    args = {"run": ["run", ray_config(tmp_path), "--out", "", "--serial", "--data-dir", data_dir],
            "export": ["export", ADAM, "-o", ""],
            "report": ["report", mini_campaign, "-o", ""],
            "history": ["history", mini_campaign, "-o", ""],
            "baselines": ["baselines", "-t", "cifar10-tiny", "-o", ""],
            "init": ["init", ""]}[command]
    option = {"run": "--out", "init": "DIRECTORY"}.get(command, "-o")
    assert_clear_error(cli(*args), option, "empty")
    assert not list(cwd.iterdir()), "something was written into the current folder"


# -- item 6: SIGTERM and Ctrl-C end a campaign cleanly ------------------------------------------

def _read_store(out: Path, sql: str) -> list[tuple]:
    """Rows of ``sql`` on the campaign's store, read-only ([] while it cannot be read); the
    connection is closed at once (a reader left open would keep the writer's WAL alive)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{out / DB_NAME}?mode=ro", uri=True)) as db:
            return db.execute(sql).fetchall()
    except sqlite3.Error:
        return []


def _evaluations(out: Path) -> list[tuple]:
    return _read_store(out, "SELECT hash, stage, seed, split, fitness FROM evaluations "
                            "ORDER BY id")


def run_until_first_evaluation(command: list[str], out: Path, sig: signal.Signals,
                               env: dict[str, str]) -> subprocess.CompletedProcess:
    """Start ``command`` (a campaign into ``out``) in its own process group; once an evaluation
    is stored, send ``sig``: SIGINT to the whole group (as a terminal's Ctrl-C does), SIGTERM to
    the process alone (as ``kill PID`` does); wait for the end."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not _evaluations(out):
        time.sleep(0.1)
    if proc.poll() is None:
        (os.killpg if sig == signal.SIGINT else os.kill)(proc.pid, sig)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"still running 120 s after {sig.name}:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def check_interrupted(proc: subprocess.CompletedProcess, out: Path, sig: signal.Signals) -> None:
    """One line saying how to resume, the exit code 128 + signal, no traceback or crash dump,
    and a closed store (its WAL checkpointed into the one file)."""
    assert proc.returncode == 128 + sig, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and "***" not in proc.stderr, proc.stderr[-3000:]
    assert f"interrupted ({sig.name}): campaign saved in {out}; continue with: " \
           f"evoopt resume {out}" in " ".join(proc.stderr.split()), proc.stderr[-3000:]
    assert not (out / f"{DB_NAME}-wal").exists(), "the store was not closed"
    (state,), = _read_store(out, "SELECT value FROM meta WHERE key = 'state'")
    assert json.loads(state) == "interrupted"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_ends_a_serial_campaign_cleanly_and_resume_finishes_it(
        sig: signal.Signals, tmp_path: Path, data_dir: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(tomli_w.dumps(tiny_config(**MINI)))
    out = tmp_path / "c"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "evoopt"]
    proc = run_until_first_evaluation(
        [*base, "run", str(config), "--out", str(out), "--serial", "--data-dir", str(data_dir)],
        out, sig, env)
    check_interrupted(proc, out, sig)
    stored = _evaluations(out)
    assert stored
    if sig == signal.SIGINT:
        return  # resuming is the same after either signal: once is enough
    resumed = subprocess.run([*base, "resume", str(out), "--serial"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _evaluations(out)
    assert after[:len(stored)] == stored, "a stored evaluation was lost or changed"
    assert len(after) > len(stored)


def test_sigterm_ends_a_ray_campaign_cleanly(tmp_path: Path, data_dir: Path) -> None:
    """On a local Ray instance: Ray's own SIGTERM handler and crash dump are replaced by ours,
    and Ray is shut down (no worker left behind)."""
    out = tmp_path / "c"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = run_until_first_evaluation(
        [sys.executable, "-m", "evoopt", "run", str(ray_config(tmp_path)), "--out", str(out),
         "--data-dir", str(data_dir)], out, signal.SIGTERM, env)
    check_interrupted(proc, out, signal.SIGTERM)


# -- item 7: control characters never reach the terminal raw ------------------------------------

HOSTILE_NAME = "\x1b]0;pwned\x07\x1b[2J\x9b31m"


def hostile_genome(tmp_path: Path) -> Path:
    path = tmp_path / "hostile.toml"
    path.write_text(ADAM.read_text().replace('name = "adam"', f"name = {json.dumps(HOSTILE_NAME)}"))
    return path


def assert_no_control_characters(text: str) -> None:
    raw = [c for c in text if (ord(c) < 32 and c not in "\n\t") or 0x7f <= ord(c) < 0xa0]
    assert not raw, f"raw control characters {raw!r} in {text!r}"


def test_genome_name_is_escaped_on_the_terminal(tmp_path: Path) -> None:
    genome = hostile_genome(tmp_path)
    shown = cli("show", genome)
    assert shown.exit_code == 0, shown.output
    assert_no_control_characters(shown.output)
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m" in shown.output
    assert len(shown.output.splitlines()) > 3, "show's multi-line TOML lost its lines"
    exported = cli("export", genome, "-o", tmp_path / "o.py")
    assert exported.exit_code == 0, exported.output
    assert_no_control_characters(exported.output)


def test_error_lines_escape_control_characters(tmp_path: Path) -> None:
    missing = tmp_path / "\x1b[31mmissing\x1b[0m.toml"
    out = assert_clear_error(cli("show", missing), "\\x1b[31mmissing")
    assert_no_control_characters(out)
    forged = tmp_path / "g\nerror: a forged line.toml"
    out = assert_clear_error(cli("show", forged), "g\\nerror: a forged line")
    assert len(out.strip().splitlines()) == 1, out
    folder = tmp_path / "\x1b[31mcampaign"  # a usage error (typer's panel) quoting a path
    folder.mkdir()
    result = cli("lineage", folder)
    assert result.exit_code == 2 and "\\x1b[31m" in result.output, result.output
    assert_no_control_characters(result.output)


def test_tables_and_written_paths_escape_control_characters(tmp_path: Path, data_dir: Path,
                                                            mini_campaign: Path) -> None:
    result = cli("evaluate", hostile_genome(tmp_path), "--task", "cifar10-tiny", "--seeds", "1",
                 "--data-dir", data_dir, "--set", "steps=2")
    assert result.exit_code == 0, result.output
    assert_no_control_characters(result.output)
    assert "\\x1b]0;pwned" in result.output
    report = tmp_path / "\x1b[31mreport.html"
    result = cli("report", mini_campaign, "-o", report)
    assert result.exit_code == 0, result.output
    assert_no_control_characters(result.output)
    assert report.exists()


# -- item 8: a bare seed name means the seed ----------------------------------------------------

@pytest.fixture
def impostor_lion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A current folder holding a file named ``lion`` (an Adam genome named "impostor")."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "lion"
    path.write_text(ADAM.read_text().replace('name = "adam"', 'name = "impostor"'))
    return path


def test_show_and_export_of_a_bare_seed_name_use_the_seed(impostor_lion: Path) -> None:
    shown = cli("show", "lion")
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("lion "), shown.output
    as_path = cli("show", "./lion")
    assert as_path.exit_code == 0 and as_path.output.startswith("impostor "), as_path.output
    exported = cli("export", "lion", "-o", "lion.py")
    assert exported.exit_code == 0, exported.output
    assert "(lion:" in exported.output and "impostor" not in Path("lion.py").read_text()
    exported = cli("export", "./lion", "-o", "impostor.py")
    assert exported.exit_code == 0 and "(impostor:" in exported.output, exported.output


def test_evaluate_of_a_bare_seed_name_uses_the_seed(impostor_lion: Path, data_dir: Path) -> None:
    result = cli("evaluate", "lion", "--task", "cifar10-tiny", "--seeds", "1", "--data-dir",
                 data_dir, "--set", "steps=2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["genome"]["name"] == "lion"


def test_a_bare_name_that_is_no_seed_points_to_the_path(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("mygenome").write_text(ADAM.read_text())
    assert_clear_error(cli("show", "mygenome"), "unknown seed genome 'mygenome'", "./mygenome")


def test_campaign_seeds_written_as_paths_are_files(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A seed path without .toml/.json (``sub/g``, ``~/g``) was looked up as a seed name."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "g").write_text(ADAM.read_text())
    (tmp_path / "home.toml").write_text(ADAM.read_text().replace('name = "adam"', 'name = "home"'))
    Path("lion").write_text("not a genome")  # a bare seed name never reads this file
    config = tmp_path / "c.toml"
    config.write_text(tomli_w.dumps(tiny_config(
        campaign={"seeds": ["adam", "adan", "lion", "sub/g", "~/home.toml"],
                  "population": 5})))
    result = cli("check", config)
    assert result.exit_code == 0, result.output
    shown = cli("show", "~/home.toml")
    assert shown.exit_code == 0 and shown.output.startswith("home "), shown.output


def test_help_documents_the_seed_name_rule() -> None:
    for command in ("show", "export", "evaluate"):
        text = " ".join(cli(command, "--help").output.split())
        assert "bare name" in text and "./" in text, (command, text)


def test_a_bare_task_name_is_the_shipped_task(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``--task cifar10-tiny`` with a file of that name in the current folder read the file."""
    from evoopt.fitness import TaskError, load_task

    monkeypatch.chdir(tmp_path)
    Path("cifar10-tiny").write_text('name = "impostor"\ndataset = "nonsense"\n')
    assert load_task("cifar10-tiny").name == "cifar10-tiny"
    with pytest.raises(TaskError, match="dataset"):
        load_task("./cifar10-tiny")


def test_a_bare_campaign_name_is_the_shipped_campaign(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``evoopt check quickstart`` with a file ``quickstart`` in the current folder read it."""
    from evoopt.campaign.config import campaign_config_path

    monkeypatch.chdir(tmp_path)
    Path("quickstart").write_text("not a campaign\n")
    assert campaign_config_path("quickstart").name == "quickstart.toml"
    assert campaign_config_path("./quickstart") == Path("quickstart")
    assert_clear_error(cli("check", "./quickstart"), "quickstart")
    assert cli("check", "quickstart").exit_code == 0


@pytest.mark.parametrize("args", [["--bad\x1b]0;title\x07"], ["\x1b[31mnocommand"]])
def test_top_level_usage_errors_are_escaped(args: list[str]) -> None:
    """A usage error raised before any command is chosen (an unknown option or command name)
    quoted the user's text raw."""
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert_no_control_characters(result.output)
    assert "\\x1b" in result.output, result.output
