"""A real Ray cluster: `ray start --head`, a campaign joined with --address, clear failures.

The head runs in its own temp dir with its own token (HOME points at a folder holding
``.ray/auth_token``, Ray's default place); the test stops only that head's processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from evoopt.evaluator.ray_cluster import check_reachable, parse_address

REPO = Path(__file__).resolve().parents[1]
MICRO_CAMPAIGN = REPO / "tests" / "data" / "campaign-micro.toml"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def evoopt_env(home: Path, **extra: str) -> dict[str, str]:
    """This environment with HOME replaced and no Ray address or auth variable set."""
    drop = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "HOME": str(home), "PYTHONPATH": str(REPO), "EVOOPT_OFFLINE": "1",
            "COLUMNS": "200", **extra}


def run_evoopt(args: list, home: Path, cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evoopt", *map(str, args)], cwd=cwd,
                          env=evoopt_env(home, **extra), capture_output=True, text=True,
                          timeout=600)


def test_malformed_and_dead_addresses_fail_clearly_within_seconds(tmp_path: Path,
                                                                  data_dir: Path) -> None:
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        parse_address("headnode")
    assert parse_address("[::1]:6379") == ("::1", 6379)
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=f"no Ray cluster answers at 127.0.0.1:{port}"):
        check_reachable("127.0.0.1", port)
    assert time.monotonic() - t0 < 6
    proc = run_evoopt(["run", MICRO_CAMPAIGN, "--out", tmp_path / "c", "--data-dir",
                       data_dir, "--address", f"127.0.0.1:{port}"], Path.home(), tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"no Ray cluster answers at 127.0.0.1:{port}" in " ".join(proc.stderr.split())
    assert not (tmp_path / "c" / "campaign.sqlite").exists()


# -- a real head ---------------------------------------------------------------------------


@dataclass
class Head:
    address: str
    temp_dir: Path  # Ray's temp dir for this head alone: its processes name it
    home: Path  # HOME of the head, holding .ray/auth_token


def head_processes(temp_dir: Path) -> set[int]:
    """Pids of the head's processes (their command lines name its session folder) and of
    every descendant (workers, agents)."""
    parents: dict[int, int] = {}
    roots: set[int] = set()
    tag = f"{temp_dir}/session".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        if tag in cmdline:
            roots.add(pid)
    found = set(roots)
    while True:
        more = {pid for pid, ppid in parents.items() if ppid in found} - found
        if not more:
            return found
        found |= more


def stop_head(temp_dir: Path) -> set[int]:
    """SIGTERM the head's processes, SIGKILL what is left after 10 s; returns survivors."""
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        pids = head_processes(temp_dir)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while head_processes(temp_dir) and time.monotonic() < deadline:
            time.sleep(0.5)
    return head_processes(temp_dir)


@pytest.fixture(scope="module")
def head(tmp_path_factory) -> Iterator[Head]:
    """`ray start --head` with token authentication, its token in HOME/.ray/auth_token."""
    home = tmp_path_factory.mktemp("head-home")
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    # short: Ray's socket paths under it must stay within the 107-byte limit
    temp_dir = Path(tempfile.mkdtemp(prefix="evoopt-ray-", dir="/tmp"))
    port = free_port()
    ray_cli = Path(sys.executable).with_name("ray")
    env = evoopt_env(home, RAY_AUTH_MODE="token")  # the head's own setting, not evoopt's
    try:
        proc = subprocess.run(
            [str(ray_cli if ray_cli.exists() else "ray"), "start", "--head", f"--port={port}",
             f"--temp-dir={temp_dir}", "--num-cpus=2", "--include-dashboard=false",
             "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        yield Head(f"127.0.0.1:{port}", temp_dir, home)
    finally:
        survivors = stop_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not survivors, f"head processes left running: {sorted(survivors)}"


def worker_pids(directory: Path) -> set[int]:
    """Pids of the workers that evaluated a campaign (from the store's worker labels)."""
    from evoopt.campaign.store import CampaignStore

    with CampaignStore(directory, readonly=True) as store:
        labels = {e["worker"] for e in store.evaluations()}
    assert labels and all(label.startswith("ray:") for label in labels), labels
    return {int(label.rsplit(":pid", 1)[1]) for label in labels}


def head_worker_pids(head: Head) -> set[int]:
    """Pids of the worker processes the head started (from its workers' log file names)."""
    logs = next(head.temp_dir.glob("session_2*")) / "logs"
    return {int(m.group(1)) for p in logs.iterdir()
            if (m := re.fullmatch(r"worker-\w+-\w+-(\d+)\.(?:out|err)", p.name))}


@pytest.mark.slow
def test_campaign_joins_a_running_cluster_and_only_on_request(head: Head, tmp_path: Path,
                                                              data_dir: Path) -> None:
    # --address HOST:PORT joins; the token is found where Ray keeps it (no variable set)
    joined = run_evoopt(["run", MICRO_CAMPAIGN, "--out", tmp_path / "joined", "--data-dir",
                         data_dir, "--address", head.address], head.home, tmp_path)
    assert joined.returncode == 0, joined.stderr[-3000:]
    assert "Token authentication is enabled" not in joined.stdout + joined.stderr
    status = run_evoopt(["status", tmp_path / "joined", "--json"], head.home, tmp_path)
    assert json.loads(status.stdout)["state"] == "finished"
    on_head = worker_pids(tmp_path / "joined")
    assert on_head <= head_worker_pids(head)

    # without --address a run starts its own instance, even with RAY_ADDRESS naming the head
    alone = run_evoopt(["run", MICRO_CAMPAIGN, "--out", tmp_path / "alone", "--data-dir",
                        data_dir], head.home, tmp_path, RAY_ADDRESS=head.address)
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert f"RAY_ADDRESS={head.address} is ignored" in alone.stderr
    assert "Token authentication is enabled" not in alone.stdout + alone.stderr
    assert not worker_pids(tmp_path / "alone") & head_worker_pids(head)


@pytest.mark.slow
def test_a_cluster_whose_token_is_missing_says_how_to_supply_it(head: Head, tmp_path: Path,
                                                                data_dir: Path) -> None:
    elsewhere = tmp_path / "home-without-token"
    elsewhere.mkdir()
    proc = run_evoopt(["run", MICRO_CAMPAIGN, "--out", tmp_path / "c", "--data-dir", data_dir,
                       "--address", head.address], elsewhere, tmp_path)
    message = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"could not join the Ray cluster at {head.address}" in message
    assert "no Ray token was found on this machine" in message
    assert "ray get-auth-token" in message and "~/.ray/auth_token" in message
