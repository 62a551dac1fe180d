"""Issue 11, item 5: fuzz the CLI with hostile genome, config and store bytes.

Whatever the bytes, a command ends with exit 0 (valid input) or a one-line ``error: ...``
(exit 2): never a traceback, an uncaught exception or a hang, and it changes no file but its
own output. The bulk runs in-process (typer's CliRunner; a subprocess start costs seconds),
under a per-call alarm; a few cases go through ``python -m evoopt`` in a real subprocess.

Inputs: raw random bytes, byte-level mutations (flips, insertions, deletions, duplicated runs)
of valid files, and structure-aware ones (valid JSON/TOML with hostile values).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import evoopt.cli
from evoopt.campaign.store import DB_NAME
from evoopt.genome import seed_genome

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = (REPO / "tests" / "data" / "campaign-tiny.toml").read_bytes()
GENOME_TOML = (REPO / "genomes" / "adan.toml").read_bytes()
GENOME_JSON = seed_genome("adan").to_json().encode()
CALL_TIMEOUT_S = 60  # one in-process call; a hang (a FIFO read, a runaway loop) trips it

# EVOOPT_FUZZ_EXAMPLES=500 fuzzes longer than CI's 25 examples per test
FUZZ = settings(max_examples=int(os.environ.get("EVOOPT_FUZZ_EXAMPLES", "25")), deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

evoopt.cli.register_commands()
_runner = CliRunner()


# -- checking one call ------------------------------------------------------------------------

@contextlib.contextmanager
def alarm(seconds: int) -> Iterator[None]:
    def hung(signum: int, frame: object) -> None:
        raise TimeoutError(f"command still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def run_checked(args: list[object], watched: Path, outputs: tuple[str, ...] = ()) -> str:
    """Run the CLI in-process; assert a clean outcome and no change under ``watched`` other
    than ``outputs`` (names) and SQLite's side files of a read-only open."""
    before = snapshot(watched)
    with alarm(CALL_TIMEOUT_S):
        result = _runner.invoke(evoopt.cli.app, [str(a) for a in args])
    out = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{args}: uncaught {type(result.exception).__name__}: {result.exception}")
    assert "Traceback" not in out, out
    assert result.exit_code in (0, 2), f"{args}: exit {result.exit_code}\n{out}"
    if result.exit_code == 2:
        assert out.lstrip().startswith("error:") or "Invalid value" in out, out
    after = snapshot(watched)
    kept = {k: v for k, v in before.items() if k not in outputs}
    assert {k: after.get(k) for k in kept} == kept, f"{args} changed a file it does not own"
    new = {k for k in after if k not in before} - set(outputs)
    assert new <= {f"{DB_NAME}-wal", f"{DB_NAME}-shm"}, f"{args} created {new}"
    return out


# -- strategies --------------------------------------------------------------------------------

@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with a few byte-level edits."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "repeat", "truncate"]))
        if op == "flip" and i < len(data):
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 16))]
        elif op == "repeat":
            data[i:i] = data[i:i + draw(st.integers(1, 32))] * draw(st.integers(1, 50))
        elif op == "truncate":
            del data[i:]
    return bytes(data)


HOSTILE_TEXT = st.sampled_from(["", "\ud800", "../../etc/passwd", "adam\x00", "[/]", "x" * 5000,
                                "median", "nan", "inf", "🙂", "\\", '"', "GENOME", "torch"])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), HOSTILE_TEXT, st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
GENOME_KEYS = ["name", "description", "lr", "schedule", "clip", "weight_decay", "momentum",
               "grad_diff", "second_moment", "terms", "kind", "beta", "eps", "weight",
               "normalize", "bias_correction"]


@st.composite
def structured_genome(draw: st.DrawFn) -> bytes:
    """Valid JSON of a genome's shape with hostile values (surrogates kept as invalid UTF-8)."""
    d = seed_genome(draw(st.sampled_from(["adam", "adan", "lion", "rmsprop"]))).to_dict()
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from(GENOME_KEYS))
        where = draw(st.sampled_from(["top", "terms", "block"]))
        value = draw(VALUES)
        if where == "terms" and d.get("terms"):
            d["terms"][0][key] = value
        elif where == "block" and isinstance(d.get("momentum"), dict):
            d["momentum"][key] = value
        else:
            d[key] = value
    return json.dumps(d).encode("utf-8", "surrogatepass")


@st.composite
def hostile_labels(draw: st.DrawFn) -> bytes:
    """A valid genome whose name and description are hostile text (markup, escapes, ...)."""
    d = seed_genome(draw(st.sampled_from(["adam", "lion"]))).to_dict()
    d["name"] = draw(st.one_of(HOSTILE_TEXT, st.text(max_size=40)))
    d["description"] = draw(st.one_of(HOSTILE_TEXT, st.text(max_size=40)))
    return json.dumps(d).encode("utf-8", "surrogatepass")


GENOME_BYTES = st.one_of(st.binary(max_size=400), mutated(GENOME_TOML), mutated(GENOME_JSON),
                         structured_genome(), hostile_labels())


def _tomlable(value: object) -> bool:
    try:
        tomli_w.dumps({"v": value})
        return True
    except (TypeError, ValueError):
        return False


@st.composite
def structured_config(draw: st.DrawFn) -> bytes:
    """The tiny campaign config with a few values replaced by hostile ones."""
    data = tomllib.loads(TINY_CONFIG.decode())
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from(sorted(data)))
        table = data[section]
        if isinstance(table, list):  # [[stages]]
            table = table[draw(st.integers(0, len(table) - 1))]
        key = draw(st.one_of(st.sampled_from(sorted(table) or ["x"]), st.text(max_size=6)))
        value = draw(VALUES.filter(_tomlable))
        table[key] = value
    try:
        return tomli_w.dumps(data).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError):
        return TINY_CONFIG


CONFIG_BYTES = st.one_of(st.binary(max_size=300), mutated(TINY_CONFIG), structured_config())


@pytest.fixture(scope="module")
def store_bytes(tiny_campaign: Path) -> bytes:
    """The session's real campaign store (every table filled; closed by its writer, so all of
    it is in the one file: a WAL a reader left beside it is empty)."""
    wal = tiny_campaign / f"{DB_NAME}-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    return (tiny_campaign / DB_NAME).read_bytes()


@st.composite
def store_edits(draw: st.DrawFn) -> list[tuple[float, bytes]]:
    """Edits to a store: (relative offset, bytes written there); offsets favour the header and
    the first pages, where one byte can change the meaning of the whole file."""
    edits = []
    for _ in range(draw(st.integers(1, 6))):
        where = draw(st.one_of(st.floats(0, 0.02), st.floats(0, 1)))
        edits.append((where, draw(st.binary(min_size=1, max_size=16))))
    return edits


# -- the fuzz tests ------------------------------------------------------------------------------

@FUZZ
@given(data=GENOME_BYTES, suffix=st.sampled_from([".toml", ".json"]))
def test_show_any_genome_bytes(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"g{suffix}"
        path.write_bytes(data)
        out = run_checked(["show", path], Path(tmp))
        if "error:" in out:
            assert str(path) in " ".join(out.split()), out  # the error names the file


@FUZZ
@given(data=GENOME_BYTES)
def test_export_any_genome_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.toml"
        path.write_bytes(data)
        run_checked(["export", path, "-o", Path(tmp) / "o.py"], Path(tmp), outputs=("o.py",))


@FUZZ
@given(data=CONFIG_BYTES)
def test_check_any_config_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        path.write_bytes(data)
        out = run_checked(["check", path], Path(tmp))
        if "error:" in out:
            assert str(path) in " ".join(out.split()), out


@FUZZ
@given(edits=store_edits(), command=st.sampled_from(["status", "status --json", "lineage",
                                                     "history", "report"]))
def test_read_commands_on_any_store_bytes(store_bytes: bytes, edits: list[tuple[float, bytes]],
                                          command: str) -> None:
    data = bytearray(store_bytes)
    for where, chunk in edits:
        at = min(int(where * len(data)), len(data) - 1)
        data[at:at + len(chunk)] = chunk
    with tempfile.TemporaryDirectory() as tmp:
        campaign = Path(tmp) / "camp"
        campaign.mkdir()
        (campaign / DB_NAME).write_bytes(bytes(data))
        args: list[object] = command.split() + [campaign]
        outputs: tuple[str, ...] = ()
        if command in ("history", "report"):
            args += ["-o", campaign / "out.x"]
            outputs = ("out.x",)
        out = run_checked(args, campaign, outputs)
        if "error:" in out:
            assert str(campaign / DB_NAME) in " ".join(out.split()), out


@FUZZ
@given(data=st.one_of(st.binary(max_size=2000), st.just(b"")))
def test_status_of_random_store_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / DB_NAME).write_bytes(data)
        out = run_checked(["status", tmp], Path(tmp))
        assert "error:" in out and DB_NAME in out


# -- a few through the real CLI in a subprocess -------------------------------------------------

SUBPROCESS_CASES = {
    "genome: 5000 nested arrays": ("show", "g.json", b"[" * 5000 + b"]" * 5000),
    "config: population 10**9": ("check", "c.toml",
                                 TINY_CONFIG.replace(b"population = 4", b"population = 10**9")
                                 .replace(b"10**9", b"1000000000")),
    "store: truncated": ("status", "campaign.sqlite", None),
}


@pytest.mark.parametrize("case", sorted(SUBPROCESS_CASES))
def test_real_cli_subprocess(case: str, store_bytes: bytes, tmp_path: Path) -> None:
    command, name, data = SUBPROCESS_CASES[case]
    path = tmp_path / name
    path.write_bytes(store_bytes[: len(store_bytes) // 2] if data is None else data)
    target = tmp_path if command == "status" else path
    before = snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "evoopt", command, str(target)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.startswith("error:") and str(path) in proc.stderr
    after = snapshot(tmp_path)
    assert {k: after.get(k) for k in before} == before
    assert set(after) - set(before) <= {f"{DB_NAME}-wal", f"{DB_NAME}-shm"}
