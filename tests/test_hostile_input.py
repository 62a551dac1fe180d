"""Issue 11: hostile or careless input gets a clear error naming the field or file, and nothing is
lost. One test (or parametrized case) per reported case; each ran into a traceback, a silent
misbehaviour, a hang or a loss of data before the fix.

Commands run in-process through typer's CliRunner (a subprocess start costs seconds); a clear
error is exit code 2, ``error: ...`` naming the file or field, and no traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner, Result

import evoopt.cli
from evoopt.campaign.config import ConfigError, load_config
from evoopt.campaign.store import DB_NAME, SCHEMA_VERSION, CampaignStore
from evoopt.fileio import atomic_output, atomic_write_text, check_output
from evoopt.fitness.data import DataError, clear_cache, load_cifar10, write_fake_cifar10
from evoopt.genome import Genome, GenomeOptimizer, load_genome, seed_genome
from evoopt.genome.export import (
    MODULE_NAMES,
    export_genome,
    load_exported_class,
    module_level_names,
)
from tests.conftest_campaign import TINY, copy_campaign, tiny_config

REPO = Path(__file__).resolve().parents[1]

evoopt.cli.register_commands()
_runner = CliRunner()


def cli(*args: object) -> Result:
    return _runner.invoke(evoopt.cli.app, [str(a) for a in args])


def assert_clear_error(result: Result, *fragments: str) -> str:
    """Exit 2 with ``error: ...`` holding every fragment; no traceback, no stray exception."""
    out = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {type(result.exception).__name__}: {result.exception}\n{out}")
    assert result.exit_code == 2, out
    assert "Traceback" not in out and "error:" in out, out
    flat = " ".join(out.split())
    for fragment in fragments:
        assert " ".join(str(fragment).split()) in flat, f"{fragment!r} not in {out!r}"
    return out


def snapshot(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` (relative path -> digest)."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def assert_unchanged(before: dict[str, str], after: dict[str, str]) -> None:
    """Every file is as it was; new files are at most SQLite's own side files, which a
    read-only open of a WAL store creates (empty WAL, shared-memory index)."""
    assert {k: after.get(k) for k in before} == before, "a file changed"
    assert {k for k in after if k not in before} <= {f"{DB_NAME}-wal", f"{DB_NAME}-shm"}


def write_config(path: Path, **changes: dict) -> Path:
    """The tiny test campaign with some sections' values changed, as a TOML file."""
    import tomli_w

    path.write_text(tomli_w.dumps(tiny_config(**changes)))
    return path


def tiny_stages(hurdle: object) -> list[dict]:
    return [{"name": "screen", "seeds": [0], "overrides": {"steps": 20}},
            {"name": "full", "seeds": [0, 1], "hurdle": hurdle}]


# -- item 2: the whole campaign config is validated before anything runs ---------------------

CONFIG_CASES = {
    "unknown seed genome": ({"campaign": {"seeds": ["adam", "adan", "banana"]}},
                            ["campaign.seeds[2]", "banana"]),
    "final.tuned (no such field)": ({"final": {"tuned": ["banana"]}}, ["final.tuned"]),
    "unknown tuned baseline": ({"final": {"baselines": ["banana"]}},
                               ["final.baselines", "banana"]),
    "compare a genome that is no seed": ({"final": {"compare": ["adam", "lion"]}},
                                         ["final.compare[1]", "lion"]),
    "hurdle banana": ({"stages": tiny_stages("banana")}, ["stages[1].hurdle", "banana"]),
    "hurdle nan": ({"stages": tiny_stages(float("nan"))}, ["stages[1].hurdle", "nan"]),
    "hurdle inf": ({"stages": tiny_stages(float("inf"))}, ["stages[1].hurdle", "inf"]),
    "hurdle names a genome that is no seed": ({"stages": tiny_stages("lion")},
                                              ["stages[1].hurdle", "lion"]),
    "population 10**9": ({"campaign": {"population": 10**9}},
                         ["campaign.population", "1000000000"]),
    "generations 10**9": ({"campaign": {"generations": 10**9}}, ["campaign.generations"]),
    "tournament larger than population": ({"selection": {"tournament_size": 5}},
                                          ["selection.tournament_size", "population=4"]),
    "threads beyond the CPUs": ({"fitness": {"overrides": {"threads": 1000}}},
                                ["fitness.overrides", "threads", "1000"]),
    "stage override out of range": ({"stages": [{"name": "s", "seeds": [0],
                                                 "overrides": {"steps": 0}}]},
                                    ["stages[0].overrides", "steps"]),
    "unknown task": ({"fitness": {"task": "banana"}}, ["fitness.task", "banana"]),
    "name climbs out of runs/": ({"campaign": {"name": "../../etc/evil"}}, ["campaign.name"]),
    "absolute name": ({"campaign": {"name": "/tmp/evil"}}, ["campaign.name"]),
    "name with a separator": ({"campaign": {"name": "a/b"}}, ["campaign.name"]),
    "seed number beyond SQLite": ({"final": {"seeds": [2**63]}}, ["final.seeds"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_is_refused_naming_the_field(case: str, tmp_path: Path) -> None:
    changes, fragments = CONFIG_CASES[case]
    path = write_config(tmp_path / "c.toml", **changes)
    with pytest.raises(ConfigError):
        load_config(path)
    assert_clear_error(cli("check", path), str(path), *fragments)
    # and `run` refuses it before creating anything
    assert_clear_error(cli("run", path, "--out", tmp_path / "out", "--serial"), *fragments)
    assert not (tmp_path / "out").exists()


def test_valid_configs_pass_check() -> None:
    for path in [TINY, *sorted((REPO / "experiments").glob("*.toml"))]:
        result = cli("check", path)
        assert result.exit_code == 0, result.output
        assert "is valid" in result.output


def test_val_size_leaving_one_training_image_is_refused(data_dir: Path, tmp_path: Path) -> None:
    """cifar10-mini has 5,085 training images: val_size=5084 used to train on 1 and say ok."""
    result = cli("evaluate", "adam", "--task", "cifar10-tiny", "--data-dir", data_dir,
                 "--set", "val_size=5084", "--seeds", "1")
    assert_clear_error(result, "val_size=5084 leaves 1 of the 5085", "lower val_size")
    path = write_config(tmp_path / "c.toml", fitness={"overrides": {"val_size": 5084}})
    assert_clear_error(cli("check", path, "--data-dir", data_dir), "val_size=5084")
    out = tmp_path / "out"
    assert_clear_error(cli("run", path, "--out", out, "--serial", "--data-dir", data_dir),
                       "val_size=5084")
    assert not (out / DB_NAME).exists(), "a failed start left a store"


def test_threads_beyond_the_cpus_are_refused(data_dir: Path) -> None:
    result = cli("evaluate", "adam", "--task", "cifar10-tiny", "--data-dir", data_dir,
                 "--set", "threads=1000")
    assert_clear_error(result, "threads", f"{os.cpu_count()} CPUs", "1000")


def test_failed_start_leaves_no_store(tmp_path: Path) -> None:
    """A bad --data-dir (or task, or seed) used to leave a stub campaign.sqlite behind."""
    out = tmp_path / "c"
    env_offline = os.environ.get("EVOOPT_OFFLINE")
    os.environ["EVOOPT_OFFLINE"] = "1"
    try:
        result = cli("run", TINY, "--out", out, "--serial", "--data-dir", tmp_path / "none")
    finally:
        if env_offline is None:
            os.environ.pop("EVOOPT_OFFLINE")
        else:
            os.environ["EVOOPT_OFFLINE"] = env_offline
    assert_clear_error(result, str(tmp_path / "none"))
    assert not (out / DB_NAME).exists()


def test_a_store_that_never_started_is_reused_and_not_resumed(tmp_path: Path) -> None:
    """A stub store (a start that failed before storing its config) no longer blocks `run`;
    `resume` says plainly that the campaign never started (it used to raise TypeError)."""
    out = tmp_path / "c"
    CampaignStore(out).close()
    assert_clear_error(cli("resume", out, "--serial"), "never started", "evoopt run")
    # `run` goes past the store (and now fails only on the missing data)
    os.environ["EVOOPT_OFFLINE"] = "1"
    try:
        result = cli("run", TINY, "--out", out, "--serial", "--data-dir", tmp_path / "none")
    finally:
        os.environ.pop("EVOOPT_OFFLINE")
    out_text = assert_clear_error(result, "CIFAR-10 not found")
    assert "already holds a campaign" not in out_text
    status = cli("status", out, "--json")
    assert status.exit_code == 0 and json.loads(status.output)["state"] == "not started"


# -- item 3: never destroy data ---------------------------------------------------------------

@pytest.fixture
def campaign(tiny_campaign: Path, tmp_path: Path) -> Path:
    """A copy of the session's finished campaign (conftest), for a test to write into."""
    return copy_campaign(tiny_campaign, tmp_path / "camp")


def test_history_may_not_overwrite_the_store(campaign: Path) -> None:
    before = snapshot(campaign)
    store = campaign / DB_NAME
    assert_clear_error(cli("history", campaign, "-f", "json", "-o", store), str(store),
                       "campaign store")
    other = campaign.parent / "copy.db"
    shutil.copy(store, other)
    assert_clear_error(cli("report", campaign, "-o", other), str(other), "SQLite")
    assert_unchanged(before, snapshot(campaign))


def test_export_may_not_overwrite_its_input(tmp_path: Path) -> None:
    genome = tmp_path / "g.toml"
    shutil.copy(REPO / "genomes" / "adam.toml", genome)
    text = genome.read_text()
    assert_clear_error(cli("export", genome, "-o", genome), str(genome), "own input")
    assert_clear_error(cli("export", genome, "-o", tmp_path / "." / "g.toml"), "own input")
    assert genome.read_text() == text


@pytest.mark.parametrize("command", ["export", "report", "history"])
def test_output_that_is_a_directory_or_under_a_file(command: str, campaign: Path,
                                                    tmp_path: Path) -> None:
    source = REPO / "genomes" / "adam.toml" if command == "export" else campaign
    assert_clear_error(cli(command, source, "-o", tmp_path), str(tmp_path), "is a directory")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert_clear_error(cli(command, source, "-o", blocker / "out.x"), str(blocker), "is a file")
    assert blocker.read_text() == "x"


def test_export_of_a_finished_campaign_still_works(campaign: Path, tmp_path: Path) -> None:
    out = tmp_path / "best.py"
    result = cli("export", campaign, "-o", out)
    assert result.exit_code == 0, result.output
    with CampaignStore(campaign, readonly=True) as store:
        class_name = store.get_meta("summary")["winner"]["class_name"]
        winner = Genome.from_dict(store.get_meta("winner_genome"))
    cls = load_exported_class(out.read_text(), class_name)
    kw = {"total_steps": 10} if winner.has_schedule else {}
    assert cls([torch.nn.Parameter(torch.ones(2))], **kw).param_groups[0]["lr"] == winner.lr


def test_campaign_dir_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_clear_error(cli("run", TINY, "--out", blocker, "--serial"), str(blocker), "is a file")
    assert_clear_error(cli("status", blocker), str(blocker))
    assert blocker.read_text() == "x"


def test_writes_are_atomic(tmp_path: Path, campaign: Path) -> None:
    """A write replaces the file (a new inode) instead of rewriting it in place: a hard link
    to the old file keeps the old bytes, and a failed write leaves the target untouched."""
    folder = tmp_path / "w"
    folder.mkdir()
    target = folder / "out.txt"
    target.write_text("old")
    os.link(target, folder / "old-link")
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and (folder / "old-link").read_text() == "old"
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "new"
    assert sorted(p.name for p in folder.iterdir()) == ["old-link", "out.txt"]
    # the commands write that way too: report, history, export leave no temporary file behind
    report = campaign / "report.html"
    report.write_text("old report")
    os.link(report, tmp_path / "report-link")
    assert cli("report", campaign).exit_code == 0
    assert (tmp_path / "report-link").read_text() == "old report"
    assert "<html" in report.read_text()
    for args in (["history", campaign, "-f", "csv"],
                 ["export", REPO / "genomes" / "adam.toml", "-o", campaign / "a.py"]):
        assert cli(*args).exit_code == 0
    assert not [p for p in campaign.iterdir() if p.name.endswith(".tmp")]


# -- item 4: every read path fails cleanly ----------------------------------------------------

def _bad_store(kind: str, directory: Path, good: Path) -> Path:
    """A campaign directory whose store is broken in one way (``good``: a sound store)."""
    directory.mkdir(parents=True)
    path = directory / DB_NAME
    data = good.read_bytes()
    if kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(8192))
    elif kind == "truncated":
        path.write_bytes(data[:len(data) // 3])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "corrupt pages":
        page = 4096
        damaged = bytearray(data)
        for start in range(page, len(damaged), page):  # every b-tree page header but the first
            damaged[start:start + 12] = b"\xff" * 12
        path.write_bytes(bytes(damaged))
    elif kind == "foreign schema":
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE people (name TEXT)")
    elif kind in _STORE_EDITS:  # a real store with one value damaged
        shutil.copy(good, path)
        with sqlite3.connect(path) as conn:
            conn.execute(_STORE_EDITS[kind])
    return directory


_STORE_EDITS = {
    "unknown schema_version": "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
    "config meta not JSON": "UPDATE meta SET value = '{not json' WHERE key = 'config'",
    "genome column not JSON": "UPDATE individuals SET genome = '[[[' WHERE uid = "
                              "(SELECT uid FROM individuals WHERE operator = 'seed' LIMIT 1)",
    "summary of the wrong shape": "UPDATE meta SET value = '[1, 2]' WHERE key = 'summary'",
}


STORE_KINDS = ["random bytes", "truncated", "empty", "corrupt pages", "foreign schema",
               "unknown schema_version", "config meta not JSON", "genome column not JSON",
               "summary of the wrong shape"]
READ_COMMANDS = {
    "status": ["status", "{dir}"],
    "status --json": ["status", "{dir}", "--json"],
    "report": ["report", "{dir}", "-o", "{tmp}/r.html"],
    "lineage": ["lineage", "{dir}"],
    "history": ["history", "{dir}", "-o", "{tmp}/h.json"],
    "resume": ["resume", "{dir}", "--serial"],
    "export": ["export", "{dir}", "-o", "{tmp}/e.py"],
}


#: Damage to one value that a command does not read: there its correct result is success.
UNREAD = {"config meta not JSON": {"lineage", "history"},
          "genome column not JSON": {"export"},
          "summary of the wrong shape": {"lineage", "history"}}


@pytest.fixture(scope="module")
def bad_stores(tiny_campaign: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("stores")
    return {kind: _bad_store(kind, base / kind.replace(" ", "-"), tiny_campaign / DB_NAME)
            for kind in STORE_KINDS}


@pytest.mark.parametrize("command", sorted(READ_COMMANDS))
@pytest.mark.parametrize("kind", STORE_KINDS)
def test_bad_store_gives_one_clear_error(kind: str, command: str, bad_stores: dict[str, Path],
                                         tmp_path: Path) -> None:
    directory = bad_stores[kind]
    before = snapshot(directory)
    args = [a.format(dir=directory, tmp=tmp_path) for a in READ_COMMANDS[command]]
    result = cli(*args)
    if command in UNREAD.get(kind, ()):  # the damaged value is one this command never reads
        assert result.exit_code == 0, result.output
        return
    assert_clear_error(result, str(directory / DB_NAME))
    assert_unchanged(before, snapshot(directory))
    assert not list(tmp_path.iterdir()), "a failed read wrote an output"


def test_store_errors_name_the_problem(bad_stores: dict[str, Path]) -> None:
    expected = {"random bytes": "not an SQLite database", "truncated": "corrupt",
                "empty": "empty file", "corrupt pages": "corrupt",
                "foreign schema": "not an evoopt campaign store",
                "unknown schema_version": "schema_version 99",
                "config meta not JSON": "meta 'config' is not valid JSON"}
    for kind, words in expected.items():
        assert words in cli("status", bad_stores[kind]).output, kind


def test_store_from_before_schema_version_is_still_read(campaign: Path) -> None:
    """Stores written before schema_version existed (same tables) read as version 1; a
    writer stamps them."""
    with sqlite3.connect(campaign / DB_NAME) as conn:
        conn.execute("DELETE FROM meta WHERE key = 'schema_version'")
    result = cli("status", campaign, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["state"] == "finished"
    with CampaignStore(campaign, readonly=True) as store:
        assert store.get_meta("schema_version") is None
    with CampaignStore(campaign) as store:
        assert store.get_meta("schema_version") == SCHEMA_VERSION


@pytest.fixture
def cifar_copy(data_dir: Path, tmp_path: Path) -> Path:
    """A copy of cifar10-mini's batches (symlinks) whose files a test may replace."""
    src = data_dir / "cifar-10-batches-py"
    dst = tmp_path / "data" / "cifar-10-batches-py"
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).symlink_to(f)
    return dst


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_broken_cifar_batch_names_the_file(damage: str, cifar_copy: Path) -> None:
    batch = cifar_copy / "data_batch_3"
    data = batch.read_bytes()
    batch.unlink()
    batch.write_bytes(data[:len(data) // 2] if damage == "truncated" else b"")
    with pytest.raises(DataError, match="data_batch_3"):
        load_cifar10(cifar_copy.parent, download=False)
    result = cli("evaluate", "adam", "--task", "cifar10-tiny", "--data-dir", cifar_copy.parent)
    assert_clear_error(result, str(batch), "broken CIFAR-10 batch", "Delete it",
                       "network access")


class _Exploit:
    """Unpickles to a call of os.system that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def test_crafted_cifar_batch_cannot_run_code(cifar_copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    batch = cifar_copy / "data_batch_1"
    batch.unlink()
    batch.write_bytes(pickle.dumps({b"data": _Exploit(marker), b"labels": [0]}, protocol=2))
    result = cli("evaluate", "adam", "--task", "cifar10-tiny", "--data-dir", cifar_copy.parent)
    assert not marker.exists(), "the batch file ran code"
    assert_clear_error(result, str(batch), "system, which a CIFAR-10 batch never does", "refused")


def test_official_pickle_layouts_still_load(tmp_path: Path) -> None:
    """numpy < 2 (numpy.core, the official files), numpy 2 and protocol 5 pickles all load."""
    root = write_fake_cifar10(tmp_path, n_train=20, n_test=10)
    batch = root / "data_batch_1"
    d = {b"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072), b"labels": [3, 4]}
    for raw in (pickle.dumps(d, protocol=2).replace(b"numpy._core", b"numpy.core"),
                pickle.dumps(d, protocol=5)):
        batch.write_bytes(raw)
        arrays = load_cifar10(tmp_path, download=False)
        assert arrays.train_y[:2].tolist() == [3, 4]
        clear_cache()


def _genome_file(tmp_path: Path, kind: str) -> Path:
    adam = (REPO / "genomes" / "adam.toml").read_text()
    if kind == "fifo":
        path = tmp_path / "g.toml"
        os.mkfifo(path)
        return path
    if kind == "/dev/zero":
        return Path("/dev/zero")
    if kind == "directory":
        return tmp_path
    texts: dict[str, tuple[str, bytes]] = {
        "too large": ("g.toml", adam.encode() + b"\n" + b"#" * (2 << 20)),
        "not UTF-8": ("g.toml", adam.encode().replace(b"adam", b"ad\xffam", 1)),
        "lone surrogate in name": ("g.json", b'{"name": "\\ud800", "lr": 0.001, '
                                             b'"terms": [{"kind": "grad"}]}'),
        "5000 nested arrays (json)": ("g.json", b"[" * 5000 + b"]" * 5000),
        "5000 nested arrays (toml)": ("g.toml", b"x = " + b"[" * 5000 + b"]" * 5000),
        "duplicate key (json)": ("g.json", b'{"lr": 0.001, "lr": 0.1, '
                                           b'"terms": [{"kind": "grad"}]}'),
        "huge number": ("g.json", b'{"lr": 1' + b"0" * 400 + b', "terms": [{"kind": "grad"}]}'),
        "all weights zero": ("g.toml", b'lr = 0.001\n[[terms]]\nkind = "grad"\nweight = 0.0\n'),
    }
    name, data = texts[kind]
    path = tmp_path / name
    path.write_bytes(data)
    return path


GENOME_CASES = {
    "fifo": "not a regular file", "/dev/zero": "not a regular file",
    "directory": "not a regular file", "too large": "larger than",
    "not UTF-8": "not UTF-8", "lone surrogate in name": "not valid Unicode",
    "5000 nested arrays (json)": "nested too deeply", "5000 nested arrays (toml)":
    "nested too deeply", "duplicate key (json)": "duplicate key 'lr'",
    "huge number": "lr: 1000", "all weights zero": "weight 0",
}


@pytest.mark.parametrize("kind", sorted(GENOME_CASES))
def test_hostile_genome_file_gives_clear_error(kind: str, tmp_path: Path) -> None:
    path = _genome_file(tmp_path, kind)
    for command in (["show", path], ["export", path, "-o", tmp_path / "o.py"],
                    ["evaluate", path, "--seeds", "1", "--data-dir", tmp_path / "none"]):
        if kind == "all weights zero" and command[0] != "show":
            continue  # a valid file of an optimizer that makes no update: only `show` hashes it
        if kind == "directory" and command[0] == "export":
            continue  # `export DIR` exports a campaign directory's winner (tested below)
        assert_clear_error(cli(*command), str(path), GENOME_CASES[kind])
    assert not (tmp_path / "o.py").exists()


def test_seed_genome_name_cannot_escape_genomes_dir() -> None:
    from evoopt.genome import GenomeError

    for name in ("../fitness/cifar10-cpu", "/etc/passwd", "adam\x00"):
        with pytest.raises(GenomeError, match="unknown seed genome"):
            seed_genome(name)


# -- load_state_dict refuses state it was not made for ------------------------------------------

def _stepped(make, genome_name: str):
    p = torch.nn.Parameter(torch.ones(3))
    opt = make([p], genome_name)
    p.grad = torch.full((3,), 0.5)
    opt.step()
    return opt


def _interpreted(params, name):
    return GenomeOptimizer(params, seed_genome(name))


def _exported(params, name):
    cls = load_exported_class(export_genome(seed_genome(name), "Opt"), "Opt")
    return cls(params)


@pytest.mark.parametrize("make", [_interpreted, _exported], ids=["interpreter", "exported"])
def test_load_state_dict_refuses_foreign_or_out_of_range_state(make) -> None:
    adam = _stepped(make, "adam")
    good = adam.state_dict()
    fresh = _stepped(make, "adam")
    fresh.load_state_dict(good)  # the same genome: accepted
    assert fresh.param_groups[0]["step"] == 1
    lion = _stepped(make, "lion")
    with pytest.raises(ValueError, match="another genome"):
        lion.load_state_dict(good)
    untagged = {k: v for k, v in good.items() if k != "evoopt_structure"}
    with pytest.raises(ValueError, match="another optimizer"):
        lion.load_state_dict(untagged)  # no tag: its hyperparameters/buffers tell it apart
    bad = adam.state_dict()
    bad["param_groups"][0]["beta1"] = 5.0
    before = [t.clone() for t in adam.state[adam.param_groups[0]["params"][0]].values()]
    with pytest.raises(ValueError, match="beta1"):
        adam.load_state_dict(bad)
    assert adam.param_groups[0]["beta1"] == 0.9  # nothing was loaded
    after = list(adam.state[adam.param_groups[0]["params"][0]].values())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    torch_adam = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))])
    with pytest.raises(ValueError, match="another optimizer"):
        adam.load_state_dict(torch_adam.state_dict())
    shaped = adam.state_dict()
    for buffers in shaped["state"].values():
        buffers["exp_avg"] = torch.zeros(7)
    with pytest.raises(ValueError, match="shape"):
        adam.load_state_dict(shaped)


def test_interpreter_and_exported_state_interchange() -> None:
    interpreted = _stepped(_interpreted, "adan")
    exported = _stepped(_exported, "adan")
    exported.load_state_dict(interpreted.state_dict())
    interpreted.load_state_dict(exported.state_dict())


# -- exported class names ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["torch", "GENOME", "PROVENANCE", "_single_tensor_step",
                                  "_multi_tensor_step", "Tensor", "Optimizer", "math", "class",
                                  "dict", "ValueError", "__init__", "match", "Any"])
def test_export_refuses_class_names_the_module_uses(name: str, tmp_path: Path) -> None:
    out = tmp_path / "o.py"
    assert_clear_error(cli("export", REPO / "genomes" / "adam.toml", "-o", out,
                           "--class-name", name), "--class-name", repr(name))
    assert not out.exists()


def test_module_names_list_is_complete_and_default_names_avoid_it() -> None:
    for name in ("adam", "adan", "lion", "adamw", "nesterov", "rmsprop", "sgd-momentum"):
        source = export_genome(seed_genome(name), "Opt")
        assert module_level_names(source) <= MODULE_NAMES
    from dataclasses import replace

    from evoopt.genome.export import class_name_for

    for clash in ("tensor", "optimizer", "torch", "dict"):
        name = class_name_for(replace(seed_genome("adam"), name=clash))
        source = export_genome(seed_genome("adam"), name)
        assert load_exported_class(source, name).__name__ == name


# -- paths that must not break a file's text ----------------------------------------------------

def test_check_output_refuses_store_names_even_if_absent(tmp_path: Path) -> None:
    from evoopt.fileio import OutputError

    for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"):
        with pytest.raises(OutputError, match="campaign store"):
            check_output(tmp_path / name)
    assert check_output(tmp_path / "fine.json") == tmp_path / "fine.json"


def test_config_file_read_safely(tmp_path: Path) -> None:
    fifo = tmp_path / "c.toml"
    os.mkfifo(fifo)
    assert_clear_error(cli("check", fifo), str(fifo), "not a regular file")
    bad = tmp_path / "b.toml"
    bad.write_bytes(b"[campaign]\nname = \"\xff\"\n")
    assert_clear_error(cli("check", bad), str(bad), "not UTF-8")
    deep = tmp_path / "d.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000)
    assert_clear_error(cli("check", deep), str(deep), "nested too deeply")
    assert load_genome(REPO / "genomes" / "adam.toml").name == "adam"


def test_one_line_messages_do_not_wrap_at_the_terminal_width(tmp_path: Path) -> None:
    """CI checked out into a longer path and `check`'s message wrapped mid-sentence at 80
    columns, breaking both the test above and copy-paste of the path."""
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 6)
    deep.mkdir(parents=True)
    config = deep / "quickstart.toml"
    shutil.copy(REPO / "experiments" / "quickstart.toml", config)
    result = cli("check", config)
    assert result.exit_code == 0, result.output
    line, = result.output.splitlines()
    assert line.startswith(str(config)) and "is valid" in line
