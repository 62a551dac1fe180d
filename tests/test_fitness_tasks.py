"""The tiny Shakespeare character model and the CIFAR-10 ViT: data, splits, models, runs, CLI."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from evoopt.fitness import (
    WORST_FITNESS,
    DataError,
    FitnessRunner,
    TaskError,
    TaskSpec,
    check_task_data,
    load_task,
)
from evoopt.fitness import text_data as T
from evoopt.fitness.task import BUILTIN_ENTRIES
from evoopt.fitness.transformer import CharTransformer, VisionTransformer, build_seeded
from evoopt.fitness.workloads import CharTask, CifarTask, TeacherMLPTask
from evoopt.genome import seed_genome

N_CHARS = 1_115_394
TIMING_KEYS = ("wall_time_s", "train_time_s")
# Short versions of the shipped CPU tasks (same task names, so the same seeds' generators).
LM_SHORT = {"steps": 40, "val_size": 40, "threads": 1, "time_limit_s": 600.0}
VIT_SHORT = {"steps": 40, "train_size": 2000, "val_size": 500, "threads": 1,
             "time_limit_s": 600.0}


@pytest.fixture(scope="module")
def lm(text_dir: Path) -> FitnessRunner:
    return FitnessRunner(load_task("shakespeare-char-cpu").with_overrides(**LM_SHORT),
                         data_dir=text_dir)


@pytest.fixture(scope="module")
def vit(data_dir: Path) -> FitnessRunner:
    return FitnessRunner(load_task("cifar10-vit-cpu").with_overrides(**VIT_SHORT),
                         data_dir=data_dir)


def _copy_corpus(text_dir: Path, dest: Path) -> Path:
    """A private copy of input.txt at dest/tinyshakespeare/input.txt (the shared one is never
    touched)."""
    target = dest / "tinyshakespeare" / "input.txt"
    target.parent.mkdir(parents=True)
    target.write_bytes((text_dir / "input.txt").read_bytes())
    return target


# ---------------------------------------------------------------- data
def test_corpus_loads_checksummed_from_either_folder(text_dir: Path) -> None:
    raw = (text_dir / "input.txt").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == T.SHAKESPEARE_SHA256
    corpus = T.load_shakespeare(text_dir, download=False)
    assert len(corpus.ids) == N_CHARS and corpus.vocab_size == 65
    assert list(corpus.vocab) == sorted(set(raw.decode()))
    text = raw.decode()
    assert "".join(corpus.vocab[i] for i in corpus.ids[:2000]) == text[:2000]
    assert "".join(corpus.vocab[i] for i in corpus.ids[-500:]) == text[-500:]
    # the folder holding tinyshakespeare/ works too, and shares the cached corpus
    assert T.load_shakespeare(text_dir.parent, download=False) is corpus


def test_splits_are_90_5_5_contiguous_and_disjoint(text_dir: Path) -> None:
    corpus = T.load_shakespeare(text_dir, download=False)
    train, val, test = (corpus.split(s) for s in T.TEXT_SPLITS)
    assert (len(train), len(val), len(test)) == (1_003_854, 55_770, 55_770)
    assert len(train) == N_CHARS * 9 // 10 and len(val) == len(test)
    assert np.array_equal(np.concatenate([train, val, test]), corpus.ids)  # in order, no gaps
    (a, b), (c, d), (e, f) = T.split_bounds(N_CHARS)
    assert a == 0 and b == c and d == e and f == N_CHARS  # contiguous, so disjoint
    for n in (10, 11, 19, 1001):
        (a, b), (c, d), (e, f) = T.split_bounds(n)
        assert a == 0 and b == c and d == e and f == n and b == n * 9 // 10 and d - c <= f - e
    with pytest.raises(ValueError, match="split"):
        corpus.split("dev")


@pytest.mark.parametrize("damage", ["edited", "truncated", "binary"])
def test_broken_corpus_names_the_file(damage: str, text_dir: Path, tmp_path: Path) -> None:
    path = _copy_corpus(text_dir, tmp_path)
    raw = path.read_bytes()
    broken = {"edited": b"X" + raw[1:], "truncated": raw[:len(raw) // 2],
              "binary": b"\xff\xfe\x00" + raw[3:]}[damage]
    path.write_bytes(broken)
    reason = "not UTF-8 text" if damage == "binary" else "sha256"
    with pytest.raises(DataError, match=reason) as info:
        T.load_shakespeare(tmp_path, download=False)
    message = str(info.value)
    assert str(path.resolve()) in message and "Delete it" in message
    assert T.SHAKESPEARE_URL in message


def test_missing_corpus_names_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVOOPT_OFFLINE", "1")
    with pytest.raises(DataError, match="offline") as info:
        T.load_shakespeare(tmp_path)
    assert str(tmp_path / "tinyshakespeare") in str(info.value)
    task = load_task("shakespeare-char-cpu")
    with pytest.raises(DataError, match="tiny Shakespeare not found"):
        check_task_data(task, str(tmp_path))
    with pytest.raises(DataError, match="tiny Shakespeare not found"):
        FitnessRunner(task, data_dir=str(tmp_path))


def test_download_verifies_checksum(text_dir: Path, tmp_path: Path) -> None:
    url = (text_dir / "input.txt").resolve().as_uri()
    got = T.download_shakespeare(tmp_path / "a", url=url, progress=False)
    assert got == (tmp_path / "a" / "tinyshakespeare" / "input.txt").resolve()
    assert T.find_shakespeare(tmp_path / "a") == got
    with pytest.raises(DataError, match="checksum mismatch"):
        T.download_shakespeare(tmp_path / "b", url=url, sha256="0" * 64, progress=False)
    assert not [p for p in (tmp_path / "b").rglob("*") if p.is_file()]  # nothing kept


def test_check_task_data_covers_the_new_tasks(text_dir: Path, data_dir: Path) -> None:
    check_task_data(load_task("shakespeare-char-cpu"), str(text_dir))
    check_task_data(load_task("cifar10-vit-cpu"), str(data_dir))
    lm_task = load_task("shakespeare-char-cpu")
    with pytest.raises(DataError, match="context"):  # a window longer than the val split
        check_task_data(lm_task.with_overrides(context=60_000), str(text_dir))
    with pytest.raises(DataError, match="train_size"):
        check_task_data(lm_task.with_overrides(train_size=64), str(text_dir))


# ---------------------------------------------------------------- task specs
@pytest.mark.parametrize(
    ("fields", "field"),
    [({"dataset": "mnist"}, "dataset"),
     ({"dataset": "shakespeare_char", "model": "cnn"}, "model"),  # a cnn reads no text
     ({"model": "transformer"}, "model"),                    # nor a character model images
     ({"model": "mlp"}, "model"),
     ({"model": "vit", "width": 30, "heads": 4}, "heads"),
     ({"model": "vit", "patch_size": 5}, "patch_size"),
     ({"model": "vit", "layers": 0}, "layers"),
     ({"dataset": "shakespeare_char", "model": "transformer", "context": 0}, "context"),
     ({"heads": "four"}, "heads"),
     ({"patch_size": 2.0}, "patch_size")],
)
def test_new_task_fields_are_validated_by_name(fields: dict, field: str) -> None:
    with pytest.raises(TaskError, match=f"'{field}'") as info:
        TaskSpec.from_dict({"name": "bad", **fields})
    assert info.value.field == field


def test_builtin_tasks_are_task_classes_named_by_dataset() -> None:
    classes = {"cifar10": CifarTask, "shakespeare_char": CharTask, "teacher_mlp": TeacherMLPTask}
    for dataset, cls in classes.items():
        spec = TaskSpec.from_dict({"name": "x", "dataset": dataset})
        assert spec.target is cls and isinstance(spec.params, cls.Params)
        assert spec.entry is None and spec.entry_text == BUILTIN_ENTRIES[dataset]
        assert spec.direction == "maximize" and cls.value_range == (0.0, 1.0)
        # the explicit entry is the same task: same fields, same spec apart from `entry`
        explicit = TaskSpec.from_dict({"name": "x", "entry": BUILTIN_ENTRIES[dataset]})
        assert explicit.params == spec.params
    old = TaskSpec.from_dict({"name": "old", "width": 16})  # a pre-ViT task file: the CNN
    assert (old.dataset, old.model) == ("cifar10", "cnn")
    for name in ("shakespeare-char-cpu", "shakespeare-char-gpu"):
        assert load_task(name).target is CharTask and load_task(name).model == "transformer"
    for name in ("cifar10-vit-cpu", "cifar10-vit-gpu"):
        assert load_task(name).model == "vit" and load_task(name).target is CifarTask
    assert load_task("cifar10-vit-gpu").device == load_task("shakespeare-char-gpu").device \
        == "cuda"


# ---------------------------------------------------------------- models
def test_char_model_is_causal_and_leaves_the_global_rng_alone() -> None:
    before = torch.get_rng_state()
    g = torch.Generator().manual_seed(0)
    model = build_seeded(lambda: CharTransformer(65, 16, 32, 2, 4), g)
    assert torch.equal(before, torch.get_rng_state())
    again = build_seeded(lambda: CharTransformer(65, 16, 32, 2, 4),
                         torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters(),
                                                  strict=True))
    ids = torch.randint(0, 65, (2, 16), generator=g)
    edited = ids.clone()
    edited[:, 10] = (edited[:, 10] + 1) % 65
    with torch.no_grad():
        a, b = model(ids), model(edited)
    assert a.shape == (2, 16, 65)
    assert torch.equal(a[:, :10], b[:, :10]) and not torch.equal(a[:, 10:], b[:, 10:])


@pytest.mark.parametrize("name", ["cifar10-vit-gpu", "shakespeare-char-gpu"])
def test_gpu_specs_models_build_and_train_a_step_on_cpu(name: str) -> None:
    """The unmeasured GPU specs at least give a model that runs forward and backward."""
    t = load_task(name)
    g = torch.Generator().manual_seed(0)
    if t.model == "vit":
        model = build_seeded(lambda: VisionTransformer(t.image_size, t.patch_size, t.width,
                                                       t.layers, t.heads), g)
        x, classes = torch.randn(2, 3, t.image_size, t.image_size, generator=g), 10
    else:
        model = build_seeded(lambda: CharTransformer(65, t.context, t.width, t.layers, t.heads),
                             g)
        x, classes = torch.randint(0, 65, (2, t.context), generator=g), 65
    out = model(x)
    assert out.shape[-1] == classes and torch.isfinite(out).all()
    out.float().logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_task_without_cuda_names_the_device_field(text_dir: Path) -> None:
    with pytest.raises(TaskError, match="'device'.*CUDA is not available"):
        FitnessRunner(load_task("shakespeare-char-gpu"), data_dir=text_dir)


# ---------------------------------------------------------------- training runs
def _strip_times(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in TIMING_KEYS}


@pytest.mark.parametrize("which", ["lm", "vit"])
def test_same_seed_same_metrics(which: str, request: pytest.FixtureRequest) -> None:
    runner: FitnessRunner = request.getfixturevalue(which)
    short = runner.task.with_overrides(steps=8)
    small = FitnessRunner(short, data_dir=runner.data_dir)
    g = seed_genome("adam")
    a, b, c = small.evaluate(g, seed=3), small.evaluate(g, seed=3), small.evaluate(g, seed=4)
    assert a.status == "ok", a.message
    assert _strip_times(a.to_dict()) == _strip_times(b.to_dict())
    assert c.train_loss_curve != a.train_loss_curve


def test_char_model_learns(lm: FitnessRunner) -> None:
    rec = lm.evaluate(seed_genome("adam").with_lr(3e-3), seed=0)
    assert rec.status == "ok", rec.message
    uniform = math.log(65)
    # seen: val loss 2.60-2.65 nats for seeds 0-2 after 40 steps (uniform prediction: 4.17)
    assert rec.val_loss < 3.0
    assert rec.fitness == pytest.approx(1 - rec.val_loss / uniform) and rec.fitness > 0.28
    assert 0.0 < rec.val_accuracy < 1.0 and rec.steps == 40


def test_vit_learns(vit: FitnessRunner) -> None:
    rec = vit.evaluate(seed_genome("adam").with_lr(3e-3), seed=0)
    assert rec.status == "ok", rec.message
    # seen: val accuracy 0.262-0.266 for seeds 0-2 after 40 steps (chance: 0.10)
    assert rec.val_accuracy > 0.18 and rec.fitness == rec.val_accuracy


@pytest.mark.parametrize("which", ["lm", "vit"])
def test_huge_lr_diverges_with_worst_fitness(which: str, request: pytest.FixtureRequest) -> None:
    runner: FitnessRunner = request.getfixturevalue(which)
    for rec in (runner.evaluate(seed_genome("adam").with_lr(10.0), seed=0),
                runner.evaluate_with(lambda p, n: torch.optim.SGD(p, lr=1e6), seed=0)):
        assert rec.status == "diverged", rec.message
        assert rec.fitness == WORST_FITNESS and rec.val_loss is None
        assert rec.steps < runner.task.steps
        json.dumps(rec.to_dict(), allow_nan=False)


def test_test_split_is_the_second_half(lm: FitnessRunner) -> None:
    val, test = lm.split_data("val"), lm.split_data("test")
    corpus = T.load_shakespeare(lm.data_dir, download=False)
    context = lm.task.context
    assert val.x.shape == test.x.shape == (LM_SHORT["val_size"], context)
    assert torch.equal(val.x[0], torch.tensor(corpus.split("val")[:context]))
    assert torch.equal(test.x[0], torch.tensor(corpus.split("test")[:context]))
    assert torch.equal(val.y[:, :-1], val.x[:, 1:])  # targets: the next characters


# ---------------------------------------------------------------- CLI
def test_cli_evaluate_reports_bits_per_char(text_dir: Path) -> None:
    from typer.testing import CliRunner

    from evoopt.cli import app, register_commands

    register_commands()
    # one --data-dir for every dataset: the folder that holds tinyshakespeare/
    out = CliRunner().invoke(app, ["evaluate", "adam", "--task", "shakespeare-char-cpu",
                                   "--data-dir", str(text_dir.parent), "--seeds", "1",
                                   "--set", "steps=3", "--set", "val_size=8", "--json"])
    assert out.exit_code == 0, out.output
    d = json.loads(out.stdout)
    assert d["status"] == "ok" and d["task"] == "shakespeare-char-cpu"
    assert d["val_bpc"] == pytest.approx(d["val_loss"] / math.log(2))
    assert d["seeds"][0]["val_bpc"] == pytest.approx(d["seeds"][0]["val_loss"] / math.log(2))
