"""The campaign store: round trips, idempotence, dedupe keys, lineage, durability, read-only."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from evoopt.campaign.store import DB_NAME, SCHEMA_VERSION, CampaignStore, StoreError

REPO = Path(__file__).resolve().parents[1]


def _ind(uid: str, parents: list[str] | None = None, gen: int = 0, **kw) -> dict:
    return dict(
        uid=uid,
        generation=gen,
        operator="seed" if not parents else "mutation",
        parents=parents or [],
        genome={"lr": 1e-3, "momentum": {"beta": 0.9}, "terms": [{"kind": "m"}]},
        hash=f"h-{uid}",
        behaviour_hash=f"b-{uid}",
        formula=f"p ← p − lr·{uid}",
        **kw,
    )


def test_creates_file_in_directory_with_wal(tmp_path: Path) -> None:
    with CampaignStore(tmp_path / "camp") as store:
        assert store.path == tmp_path / "camp" / DB_NAME
        assert store.directory == tmp_path / "camp"
    con = sqlite3.connect(tmp_path / "camp" / DB_NAME)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "individuals", "evaluations", "generations"} <= tables
    indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "idx_evaluations_uid" in indexes and "idx_individuals_generation" in indexes
    con.close()


def test_path_is_directory_or_file(tmp_path: Path) -> None:
    with CampaignStore(tmp_path / "run.v2") as store:  # a dotted directory name
        assert store.path == tmp_path / "run.v2" / DB_NAME
    with CampaignStore(tmp_path / "run.v2" / DB_NAME, readonly=True) as store:
        assert store.directory == tmp_path / "run.v2"
    with CampaignStore(tmp_path / "other.sqlite") as store:
        assert store.path == tmp_path / "other.sqlite"


def test_meta_round_trip(tmp_path: Path) -> None:
    values = {
        "config": {"name": "c", "stages": [{"name": "screen", "seeds": 1}], "x": None},
        "state": "running",
        "started_at": 1.5,
        "n": 3,
        "flag": True,
    }
    with CampaignStore(tmp_path) as store:
        for k, v in values.items():
            store.set_meta(k, v)
        store.set_meta("state", "finished")
        assert store.get_meta("missing") is None
        assert store.get_meta("missing", {"d": 1}) == {"d": 1}
    with CampaignStore(tmp_path) as store:
        assert store.all_meta() == dict(values, state="finished", schema_version=SCHEMA_VERSION)
        assert store.get_meta("config") == values["config"]


def test_individual_round_trip_and_idempotence(tmp_path: Path) -> None:
    with CampaignStore(tmp_path) as store:
        assert store.add_individual(**_ind("a", fitness=0.5, status="evaluated"))
        assert not store.add_individual(**_ind("a", fitness=0.1, status="failed"))
        assert store.add_individual(**_ind("b", ["a"], gen=1, change="lr 0.001→0.002"))
        a, b = store.individuals()
        assert a["fitness"] == 0.5 and a["status"] == "evaluated"  # first write kept
        assert a["parents"] == [] and b["parents"] == ["a"]
        assert a["genome"] == {"lr": 1e-3, "momentum": {"beta": 0.9}, "terms": [{"kind": "m"}]}
        assert b["status"] == "pending" and b["fitness"] is None and b["change"] == "lr 0.001→0.002"
        assert b["created_at"] > 0
        store.update_individual(
            "b", fitness=0.7, status="cached", cached_from="a", cache_kind="hash"
        )
        got = store.get_individual("b")
        assert (got["fitness"], got["status"], got["cached_from"], got["cache_kind"]) == (
            0.7,
            "cached",
            "a",
            "hash",
        )
        assert store.get_individual("nope") is None
        assert [i["uid"] for i in store.individuals(generation=1)] == ["b"]


def test_bad_writes_raise(tmp_path: Path) -> None:
    with CampaignStore(tmp_path) as store:
        with pytest.raises(StoreError, match="unknown individuals column"):
            store.add_individual(uid="x", fitnes=1.0)
        with pytest.raises(StoreError, match="no individual"):
            store.update_individual("ghost", fitness=1.0)
        with pytest.raises(StoreError, match="needs hash"):
            store.add_evaluation(uid="x", stage="screen", seed=0)
        with pytest.raises(StoreError, match="unknown generations column"):
            store.add_generation(generation=0, bestt=1.0)


def test_evaluation_unique_key_dedupes(tmp_path: Path) -> None:
    ev = dict(
        uid="a",
        hash="h1",
        stage="screen",
        seed=0,
        split="val",
        fitness=0.4,
        val_accuracy=0.4,
        val_loss=1.7,
        status="ok",
        message="",
        steps=100,
        wall_time_s=2.0,
        worker="w0",
        train_loss_curve=[2.3, 1.9, None],
    )
    with CampaignStore(tmp_path) as store:
        assert store.add_evaluation(**ev)
        assert not store.add_evaluation(**dict(ev, uid="b", fitness=0.9))  # same key
        assert store.add_evaluation(**dict(ev, seed=1, fitness=0.45))
        assert store.add_evaluation(**dict(ev, split="test", fitness=0.41))
        assert store.add_evaluation(**dict(ev, stage="full", fitness=0.5))
        rows = store.find_evaluations("h1", "screen", "val")
        assert [(r["seed"], r["fitness"], r["uid"]) for r in rows] == [
            (0, 0.4, "a"),
            (1, 0.45, "a"),
        ]
        assert rows[0]["train_loss_curve"] == [2.3, 1.9, None]
        assert [r["split"] for r in store.find_evaluations("h1", "screen", "test")] == ["test"]
        assert len(store.evaluations()) == 4
        assert len(store.evaluations(uid="a", stage="screen")) == 3
        assert store.evaluations(hash="other") == []


def test_generations_replace(tmp_path: Path) -> None:
    with CampaignStore(tmp_path) as store:
        store.add_generation(generation=1, best=0.5, median=0.4, best_uid="x")
        store.add_generation(generation=0, best=0.3, median=0.2, best_uid="y", n_cached=2)
        store.add_generation(generation=1, best=0.6, median=0.45, best_uid="z")
        gens = store.generations()
        assert [(g["generation"], g["best"], g["best_uid"]) for g in gens] == [
            (0, 0.3, "y"),
            (1, 0.6, "z"),
        ]
        assert gens[0]["n_cached"] == 2 and gens[1]["finished_at"] > 0


def _family(store: CampaignStore) -> None:
    store.add_individual(**_ind("adam"))
    store.add_individual(**_ind("adan"))
    store.add_individual(**_ind("m1", ["adam"], gen=1, fitness=0.5))
    store.add_individual(**_ind("x2", ["m1", "adan"], gen=2, fitness=0.6))
    store.add_individual(**_ind("x3", ["x2", "m1"], gen=3, fitness=0.7))  # m1 shared
    store.add_individual(**_ind("orphan", ["lost"], gen=1))


def test_ancestry_tree_back_to_seeds(tmp_path: Path) -> None:
    with CampaignStore(tmp_path) as store:
        _family(store)
        tree = store.ancestry("x3")
        assert tree["uid"] == "x3" and [a["uid"] for a in tree["ancestors"]] == ["x2", "m1"]
        x2 = tree["ancestors"][0]
        assert [a["uid"] for a in x2["ancestors"]] == ["m1", "adan"]
        m1 = x2["ancestors"][0]
        assert [a["uid"] for a in m1["ancestors"]] == ["adam"]
        assert m1["ancestors"][0]["operator"] == "seed" and m1["ancestors"][0]["ancestors"] == []
        repeated = tree["ancestors"][1]  # m1 again: expanded once only
        assert repeated["repeated"] and repeated["ancestors"] == []

        shallow = store.ancestry("x3", depth=1)
        assert [a["uid"] for a in shallow["ancestors"]] == ["x2", "m1"]
        assert shallow["ancestors"][0]["ancestors"] == [] and shallow["ancestors"][0]["truncated"]
        assert store.ancestry("x3", depth=0)["ancestors"] == []

        lost = store.ancestry("orphan")["ancestors"][0]
        assert lost == {"uid": "lost", "missing": True, "ancestors": [], "parents": []}
        with pytest.raises(KeyError):
            store.ancestry("nobody")
        assert [i["uid"] for i in store.line("x3")] == ["adam", "m1", "x2", "x3"]


def test_best_uid_fallbacks(tmp_path: Path) -> None:
    with CampaignStore(tmp_path) as store:
        assert store.best_uid() is None
        _family(store)
        assert store.best_uid() == "x3"  # highest fitness
        store.set_meta("summary", {"winner": {"uid": "x2"}})
        assert store.best_uid() == "x2"
        store.set_meta("winner_uid", "m1")
        assert store.best_uid() == "m1"


def test_readonly(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no campaign store"):
        CampaignStore(tmp_path / "none", readonly=True)
    writer = CampaignStore(tmp_path)
    writer.add_individual(**_ind("a"))
    # a reader opened while the writer is live sees committed rows, and new ones later
    with CampaignStore(tmp_path, readonly=True) as reader:
        assert [i["uid"] for i in reader.individuals()] == ["a"]
        writer.add_individual(**_ind("b", ["a"]))
        assert [i["uid"] for i in reader.individuals()] == ["a", "b"]
        for write in (
            lambda: reader.set_meta("state", "x"),
            lambda: reader.add_individual(**_ind("c")),
            lambda: reader.add_evaluation(hash="h", stage="s", seed=0),
        ):
            with pytest.raises(StoreError, match="read-only"):
                write()
    writer.close()
    with CampaignStore(tmp_path, readonly=True) as reader:  # after the writer closed too
        assert len(reader.individuals()) == 2


_KILLED_WRITER = """
import os, signal, sys
from evoopt.campaign.store import CampaignStore
store = CampaignStore(sys.argv[1])
store.set_meta("state", "running")
for i in range(400):
    store.add_individual(uid=f"u{i}", generation=i // 10, operator="mutation",
                         parents=[f"u{i - 1}"] if i else [], genome={"lr": i})
    store.add_evaluation(uid=f"u{i}", hash=f"h{i}", stage="screen", seed=0, fitness=i / 400)
    if i % 10 == 9:
        store.add_generation(generation=i // 10, best=i / 400)
    print(i, flush=True)
    if i == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sigkilled_writer_loses_nothing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_KILLED_WRITER), str(tmp_path), "237"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    last = int(proc.stdout.split()[-1])
    assert last == 237
    assert (tmp_path / (DB_NAME + "-wal")).exists()  # died without checkpointing the WAL
    with CampaignStore(tmp_path, readonly=True) as store:  # a reader recovers from the WAL
        assert store.get_meta("state") == "running"
        assert len(store.individuals()) == 238
        assert len(store.evaluations()) == 238
        assert [g["generation"] for g in store.generations()] == list(range(23))
    with CampaignStore(tmp_path) as store:  # and a writer resumes where it stopped
        assert store.get_individual("u237")["genome"] == {"lr": 237}
        assert [i["uid"] for i in store.line("u237")][:2] == ["u0", "u1"]
        assert store.add_individual(uid="u238", generation=23, parents=["u237"])


_READER = """
import json, sys
from evoopt.campaign.store import CampaignStore
with CampaignStore(sys.argv[1], readonly=True) as s:
    print(json.dumps([len(s.individuals()), s.get_meta("state")]))
"""


def test_other_process_reads_while_campaign_runs(tmp_path: Path) -> None:
    with CampaignStore(tmp_path) as store:
        store.set_meta("state", "running")
        for i in range(5):
            store.add_individual(**_ind(f"u{i}"))
        out = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_READER), str(tmp_path)],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            timeout=60,
            check=True,
        ).stdout
        assert json.loads(out) == [5, "running"]
        store.add_individual(**_ind("after"))  # the writer is not blocked by the reader
        assert len(store.individuals()) == 6


def test_a_version_1_store_is_read_and_upgraded_by_a_writer(tmp_path: Path) -> None:
    """A store of schema version 1 (no ``tasks`` column) reads as it is; a writer adds the
    column and stamps the current version, and rows written before read the column as None."""
    with CampaignStore(tmp_path) as store:
        store.add_evaluation(uid="a", hash="h", stage="s", seed=0, split="val", fitness=0.5)
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.execute("ALTER TABLE evaluations DROP COLUMN tasks")
        conn.execute("ALTER TABLE evaluations DROP COLUMN threads")
        conn.execute("ALTER TABLE evaluations DROP COLUMN value")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with CampaignStore(tmp_path, readonly=True) as store:
        [row] = store.evaluations()
        assert row["fitness"] == 0.5 and "tasks" not in row and "threads" not in row
        assert "value" not in row
    with CampaignStore(tmp_path) as store:
        assert store.get_meta("schema_version") == SCHEMA_VERSION == 4
        store.add_evaluation(uid="b", hash="h", stage="s", seed=1, split="val", fitness=0.1,
                             tasks={"t": {"fitness": 0.1}}, threads=1, value=2.5)
        old, new = store.evaluations()
        assert old["tasks"] is None and new["tasks"] == {"t": {"fitness": 0.1}}
        assert old["threads"] is None and new["threads"] == 1
        assert old["value"] is None and new["value"] == 2.5
