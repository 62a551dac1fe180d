"""CIFAR-10 loading (mini copy and a generated file), download checks, and the val split."""

from __future__ import annotations

import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from evoopt.fitness import data as D
from evoopt.fitness.data import DataError, load_cifar10, make_splits

FIRST_LABELS = [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]  # official data_batch_1, per the mini README


def _write_batches(root: Path, n: int = 40, n_test: int = 20) -> Path:
    """A dataset written by hand in the official layout (no b'filenames', like the mini copy)."""
    out = root / "cifar-10-batches-py"
    out.mkdir(parents=True)
    rng = np.random.default_rng(123)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        m = n_test if name == "test_batch" else n
        data = rng.integers(0, 256, size=(m, 3072), dtype=np.uint8)
        data[0, :1024], data[0, 1024:2048], data[0, 2048:] = 10 + k, 20, 30  # planes: R, G, B
        with open(out / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": [(i + k) % 10 for i in
                                                                    range(m)], b"data": data}, f)
    return out


def test_mini_copy_loads(data_dir: Path) -> None:
    arrays = load_cifar10(data_dir, download=False)
    assert arrays.train_x.shape == (5 * 1017, 32, 32, 3) and arrays.train_x.dtype == np.uint8
    assert arrays.test_x.shape == (1017, 32, 32, 3)
    assert arrays.train_y[:10].tolist() == FIRST_LABELS
    assert sorted(np.unique(arrays.train_y).tolist()) == list(range(10))
    assert not arrays.train_x.flags.writeable  # shared between runners: read-only


def test_batches_dir_itself_is_accepted_and_cached(data_dir: Path) -> None:
    a = load_cifar10(data_dir, download=False)
    b = load_cifar10(data_dir / "cifar-10-batches-py", download=False)
    assert a is b  # same resolved path -> same cached arrays


def test_generated_file_layout(tmp_path: Path) -> None:
    _write_batches(tmp_path)
    arrays = load_cifar10(tmp_path, download=False)
    assert arrays.train_x.shape == (200, 32, 32, 3) and arrays.test_x.shape == (20, 32, 32, 3)
    # the first image of batch k has planes R=10+k, G=20, B=30: HWC channel order is right
    assert arrays.train_x[0, 5, 7].tolist() == [10, 20, 30]
    assert arrays.train_x[40, 0, 0].tolist() == [11, 20, 30]
    assert arrays.test_x[0, 31, 31].tolist() == [15, 20, 30]
    assert arrays.train_y[40:43].tolist() == [1, 2, 3]


def test_env_var_picks_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_batches(tmp_path / "envdata")
    monkeypatch.setenv("EVOOPT_DATA_DIR", str(tmp_path / "envdata"))
    assert D.resolve_data_dir(None) == tmp_path / "envdata"
    assert load_cifar10(None, download=False).train_x.shape[0] == 200


def test_malformed_batch_is_a_data_error(tmp_path: Path) -> None:
    out = _write_batches(tmp_path)
    with open(out / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 3072), np.uint8)}, f)  # no labels
    with pytest.raises(DataError, match="data_batch_3"):
        load_cifar10(tmp_path, download=False)


def test_offline_missing_data_names_the_path(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(D, "network_reachable", lambda *a, **k: False)
    where = tmp_path / "nothing-here"
    with pytest.raises(DataError) as info:
        load_cifar10(where)
    msg = str(info.value)
    assert "offline" in msg
    assert str(where / "cifar-10-batches-py") in msg and "data_batch_1" in msg


def _tarball(tmp_path: Path) -> tuple[Path, str]:
    src = tmp_path / "src"
    _write_batches(src)
    tar_path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return tar_path, hashlib.md5(tar_path.read_bytes()).hexdigest()


def test_download_verifies_checksum_and_extracts(tmp_path: Path) -> None:
    tar_path, md5 = _tarball(tmp_path)
    dest = tmp_path / "dest"
    got = D.download_cifar10(dest, url=tar_path.as_uri(), md5=md5, progress=False)
    assert got == (dest / "cifar-10-batches-py").resolve()
    assert load_cifar10(dest, download=False).train_x.shape[0] == 200
    assert not list(dest.glob("*.tar.gz"))  # the archive is removed after extraction


def test_download_rejects_bad_checksum(tmp_path: Path) -> None:
    tar_path, _ = _tarball(tmp_path)
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="checksum mismatch"):
        D.download_cifar10(dest, url=tar_path.as_uri(), md5="0" * 32, progress=False)
    assert D.find_batches_dir(dest) is None and not list(dest.glob("*"))


def _labels(n: int = 5085, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10, size=n)


def test_splits_disjoint_stratified_stable(data_dir: Path) -> None:
    y = load_cifar10(data_dir, download=False).train_y
    tr, va = make_splits(y, val_size=1000, train_size=4000, seed=0)
    assert len(va) == 1000 and len(tr) == 4000
    assert not set(tr) & set(va)
    for idx, n in ((va, 1000), (tr, 4000)):
        pool = y if idx is va else np.delete(y, va)
        want = np.bincount(pool, minlength=10) * n / len(pool)
        got = np.bincount(y[idx], minlength=10)
        assert np.all(np.abs(got - want) < 1.0 + 1e-9), (got, want)  # stratified to within one
    tr2, va2 = make_splits(y, val_size=1000, train_size=4000, seed=0)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    _, va3 = make_splits(y, val_size=1000, train_size=4000, seed=1)
    assert not np.array_equal(va, va3)


def test_split_without_train_size_uses_the_rest() -> None:
    y = _labels()
    tr, va = make_splits(y, val_size=500, train_size=None)
    assert len(tr) + len(va) == len(y) and not set(tr) & set(va)
    tr_big, _ = make_splits(y, val_size=500, train_size=10**6)  # capped at what is left
    assert np.array_equal(tr, tr_big)


def test_split_sizes_are_checked() -> None:
    with pytest.raises(DataError, match="val_size"):
        make_splits(_labels(100), val_size=100)
