"""Fitness task specs: a frozen, validated ``TaskSpec`` loaded from ``fitness/<name>.toml``.

A TOML task file is a flat table of :class:`TaskSpec` fields; missing fields take the defaults
below, unknown or ill-typed ones raise :class:`TaskError` naming the field. Fidelity stages of a
campaign are ``task.with_overrides(steps=..., train_size=...)`` of one spec.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from evoopt.fileio import InputError, bare_name_hint, names_a_path, read_toml_file
from evoopt.paths import FITNESS_DIR

DEFAULT_TASK = "cifar10-cpu"
DEVICES = ("auto", "cpu", "cuda")
IMAGE_SIZES = (16, 32)
#: dataset -> the models a task may train on it (a task names its ``model``; default "cnn")
DATASET_MODELS = {"cifar10": ("cnn", "vit"), "shakespeare_char": ("transformer",),
                  "teacher_mlp": ("mlp",)}
#: datasets whose tasks predict characters: their loss is also reported in bits per character
CHAR_DATASETS = ("shakespeare_char",)
TRANSFORMERS = ("vit", "transformer")
#: datasets whose tasks regress real-valued targets (MSE; no accuracy: ``val_accuracy`` None)
REGRESSION_DATASETS = ("teacher_mlp",)
#: hidden activations of the MLPs of a ``teacher_mlp`` task (teacher and student)
ACTIVATIONS = ("relu", "tanh", "gelu")


#: The stage override that scales each task's own ``steps`` (see ``TaskSpec.with_overrides``).
STEPS_FRACTION = "steps_fraction"

class TaskError(ValueError):
    """An invalid task spec; ``field`` names the offending field (or None for the file itself)."""

    def __init__(self, field: str | None, message: str) -> None:
        self.field = field
        super().__init__(f"task field '{field}': {message}" if field else message)


@dataclass(frozen=True)
class TaskSpec:
    """One fitness task: data, model, training budget and guards. All fields are plain values."""

    name: str
    description: str = ""
    dataset: str = "cifar10"        # cifar10 | shakespeare_char | teacher_mlp
    model: str = "cnn"              # cifar10: cnn | vit; shakespeare_char: transformer;
                                    # teacher_mlp: mlp
    image_size: int = 16            # 16 (2x2 average-pooled) or 32 px
    train_size: int | None = None   # cifar10: training images (class-stratified), None = all
                                    # non-val; shakespeare_char: first N train characters;
                                    # teacher_mlp: training samples, None = 4096
    val_size: int = 1000            # cifar10: validation images held out of the training
                                    # batches; shakespeare_char: at most N validation windows;
                                    # teacher_mlp: validation samples (and as many test ones)
    split_seed: int = 0             # seed of the val split and of the training subset
                                    # (cifar10); of every split's inputs and noise (teacher_mlp)
    steps: int = 100                # optimizer steps; the genome's schedule sees this as total
    batch_size: int = 250           # images, or windows of `context` characters
    width: int = 16                 # cnn: channels of the first block (blocks width x (1, 2, 4));
                                    # vit/transformer: embedding width; mlp: hidden width
    layers: int = 2                 # vit/transformer: pre-LN blocks; mlp: hidden layers
    heads: int = 4                  # vit/transformer: attention heads (must divide width)
    context: int = 64               # transformer: characters per window
    patch_size: int = 4             # vit: patch side in pixels (must divide image_size)
    label_smoothing: float = 0.0    # classification tasks only (teacher_mlp: must be 0)
    input_dim: int = 32             # teacher_mlp: Gaussian input dimensions
    output_dim: int = 8             # teacher_mlp: regression targets per input
    teacher_width: int = 64         # teacher_mlp: hidden width of the fixed random teacher
    teacher_layers: int = 2         # teacher_mlp: hidden layers of the teacher
    teacher_seed: int = 0           # teacher_mlp: seed of the teacher's weights
    activation: str = "relu"        # teacher_mlp: hidden activation of teacher and student
    noise: float = 0.1              # teacher_mlp: label noise std (clean targets standardised
                                    # to unit variance per output)
    flip: bool = True               # random horizontal flip
    translate: int = 1              # random translation, in pixels (reflect-padded); 0 = none
    seeds: int = 1                  # default number of seeds (0..seeds-1) per evaluation
    time_limit_s: float = 60.0      # wall-clock limit of one (genome, seed) run
    divergence_factor: float = 5.0  # loss > factor x first-step loss (or non-finite) = diverged
    check_every: int = 1            # divergence/time check interval in steps (GPU: avoid syncs)
    eval_batch_size: int = 1000
    device: str = "auto"            # auto | cpu | cuda
    bf16: bool | None = None        # bf16 autocast: omitted (None) = on CUDA only; true = on
                                    # every device, the CPU included; false = never
    threads: int = 0                # torch CPU threads during a run; 0 = leave as the caller set

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        if not self.name:
            raise TaskError("name", "must be a non-empty string")
        if self.dataset not in DATASET_MODELS:
            raise TaskError("dataset", f"unknown dataset {self.dataset!r} (known: "
                                       f"{', '.join(DATASET_MODELS)})")
        models = DATASET_MODELS[self.dataset]
        if self.model not in models:
            raise TaskError("model", f"model {self.model!r} cannot train on dataset "
                                     f"{self.dataset!r} (valid: {', '.join(models)})")
        if self.image_size not in IMAGE_SIZES:
            raise TaskError("image_size", f"must be one of {IMAGE_SIZES}, got {self.image_size}")
        if self.device not in DEVICES:
            raise TaskError("device", f"must be one of {DEVICES}, got {self.device!r}")
        positive = ("val_size", "steps", "batch_size", "width", "layers", "heads", "context",
                    "patch_size", "seeds", "check_every", "eval_batch_size", "input_dim",
                    "output_dim", "teacher_width", "teacher_layers")
        for name in positive:
            if getattr(self, name) < 1:
                raise TaskError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.model in TRANSFORMERS and self.width % self.heads:
            raise TaskError("heads", f"must divide width ({self.width}), got {self.heads}")
        if self.model == "vit" and self.image_size % self.patch_size:
            raise TaskError("patch_size", f"must divide image_size ({self.image_size}), "
                                          f"got {self.patch_size}")
        if self.threads < 0:
            raise TaskError("threads", f"must be >= 0 (0 = as given), got {self.threads}")
        if self.train_size is not None and self.train_size < 1:
            raise TaskError("train_size", f"must be >= 1 or omitted, got {self.train_size}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise TaskError("label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.translate <= self.image_size // 4:
            raise TaskError("translate", f"must be in [0, {self.image_size // 4}]")
        if not (math.isfinite(self.time_limit_s) and self.time_limit_s > 0):
            raise TaskError("time_limit_s", f"must be a positive number, got {self.time_limit_s}")
        if self.activation not in ACTIVATIONS:
            raise TaskError("activation", f"must be one of {ACTIVATIONS}, got {self.activation!r}")
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise TaskError("noise", f"must be a number >= 0, got {self.noise}")
        if self.teacher_seed < 0:
            raise TaskError("teacher_seed", f"must be >= 0, got {self.teacher_seed}")
        if self.regression and self.label_smoothing:
            raise TaskError("label_smoothing", "a regression task (MSE) has no labels to "
                                               "smooth: must be 0")
        if not (math.isfinite(self.divergence_factor) and self.divergence_factor > 1.0):
            raise TaskError("divergence_factor", f"must be > 1, got {self.divergence_factor}")

    @property
    def char_level(self) -> bool:
        """Whether the task predicts characters (its loss is also reported in bits/char)."""
        return self.dataset in CHAR_DATASETS

    @property
    def regression(self) -> bool:
        """Whether the task regresses real-valued targets (MSE loss, no accuracy)."""
        return self.dataset in REGRESSION_DATASETS

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-able dict (``train_size`` may be None)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        """Build and validate from a dict such as :meth:`to_dict` or a parsed TOML file."""
        if not isinstance(d, dict):
            raise TaskError(None, f"a task spec must be a table/dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        for key in d:
            if key not in known:
                raise TaskError(key, f"unknown field (known: {', '.join(sorted(known))})")
        if "name" not in d:
            raise TaskError("name", "missing")
        return cls(**d)

    def with_overrides(self, **kw: Any) -> TaskSpec:
        """A copy with some fields replaced (validated, :meth:`check_host` included).

        ``steps_fraction = F`` (0 < F <= 1, not a field) runs ``max(1, round(F * steps))``
        steps: a fidelity stage relative to each task's own budget, so one stage of a task mix
        screens every task at the same fraction of its schedule."""
        kw = dict(kw)
        fraction = kw.pop(STEPS_FRACTION, None)
        known = {f.name for f in fields(self)}
        for key in kw:
            if key not in known:
                raise TaskError(key, "unknown field")
        spec = dataclasses.replace(self, **kw)
        if fraction is not None:
            if "steps" in kw:
                raise TaskError(STEPS_FRACTION, "give steps or steps_fraction, not both")
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
                    0.0 < fraction <= 1.0):
                raise TaskError(STEPS_FRACTION, f"must be a number in (0, 1], got {fraction!r}")
            spec = dataclasses.replace(spec, steps=max(1, round(fraction * spec.steps)))
        return spec.check_host()

    def check_host(self) -> TaskSpec:
        """``self`` if its machine-dependent fields suit this machine (``threads`` at most its
        CPU count), else :class:`TaskError`. Checked where a spec is written (a task file, an
        override), not where a worker rebuilds one, which may run on a smaller machine (there
        the run uses at most that machine's CPUs)."""
        cpus = os.cpu_count() or 1
        if self.threads > cpus:
            raise TaskError("threads", f"must be at most this machine's {cpus} CPUs (0 = as "
                                       f"given), got {self.threads}")
        return self


def _check_type(name: str, value: Any, annotation: Any) -> None:
    ann = str(annotation)
    optional = "None" in ann
    if value is None:
        if optional:
            return
        raise TaskError(name, "must not be empty")
    if ann.startswith("int"):
        ok = isinstance(value, int) and not isinstance(value, bool)
        kind = "an integer"
    elif ann.startswith("float"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        kind = "a number"
    elif ann.startswith("bool"):
        ok = isinstance(value, bool)
        kind = "true or false"
    else:
        ok = isinstance(value, str)
        kind = "a string"
    if not ok:
        raise TaskError(name, f"must be {kind}, got {value!r}")


def available_tasks() -> list[str]:
    """Names of the task specs shipped in ``fitness/``."""
    return sorted(p.stem for p in FITNESS_DIR.glob("*.toml"))


def load_task(name_or_path: str | os.PathLike[str] | TaskSpec = DEFAULT_TASK) -> TaskSpec:
    """A task by name (``fitness/<name>.toml``) or by path to a TOML file."""
    if isinstance(name_or_path, TaskSpec):
        return name_or_path
    raw = str(name_or_path)
    if names_a_path(raw):  # a bare name is the shipped task, even beside a file of that name
        try:
            path = Path(raw).expanduser()
            is_file = path.is_file()
        except (ValueError, RuntimeError, OSError) as e:  # a NUL byte, an unknown ~user
            raise TaskError(None, f"task {raw!r}: not a usable name or path ({e})") from None
        if not is_file:
            raise TaskError(None, f"task file not found: {path}")
    else:
        path = FITNESS_DIR / f"{raw}.toml"
        if not path.is_file():
            raise TaskError(None, f"unknown task {raw!r}; shipped tasks: "
                                  f"{', '.join(available_tasks())}{bare_name_hint(raw)}")
    try:
        data = read_toml_file(path, "task file")
    except InputError as e:
        raise TaskError(None, str(e)) from None
    data.setdefault("name", path.stem)
    try:
        return TaskSpec.from_dict(data).check_host()
    except TaskError as e:
        located = TaskError(None, f"{path}: {e}")
        located.field = e.field
        raise located from None


__all__ = ["ACTIVATIONS", "DATASET_MODELS", "DEFAULT_TASK", "REGRESSION_DATASETS", "TaskError",
           "TaskSpec", "available_tasks", "load_task"]
