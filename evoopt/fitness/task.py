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
from evoopt.fitness.orientation import DIRECTIONS
from evoopt.paths import FITNESS_DIR

DEFAULT_TASK = "cifar10-cpu"
DEVICES = ("auto", "cpu", "cuda")
#: ``dataset`` -> the built-in task class it names when a task has no ``entry`` (the shorthand of
#: every shipped task file; ``dataset`` omitted is ``cifar10``, as before entries existed)
BUILTIN_ENTRIES = {
    "cifar10": "evoopt.fitness.workloads:CifarTask",
    "shakespeare_char": "evoopt.fitness.workloads:CharTask",
    "teacher_mlp": "evoopt.fitness.workloads:TeacherMLPTask",
}
DEFAULT_DATASET = "cifar10"

#: The stage override that scales each task's own ``steps`` (see ``TaskSpec.with_overrides``).
STEPS_FRACTION = "steps_fraction"


class TaskError(ValueError):
    """An invalid task spec; ``field`` names the offending field (or None for the file itself)."""

    def __init__(self, field: str | None, message: str) -> None:
        self.field = field
        super().__init__(f"task field '{field}': {message}" if field else message)


@dataclass(frozen=True)
class TaskSpec:
    """One fitness task: what evoopt needs to run it (budget, guards, device) plus the task's
    own fields (``params``), validated by the task it names.

    The task is ``entry`` (``"pkg.mod:name"`` or ``"path/to/file.py:name"``: a
    :class:`~evoopt.fitness.training_task.TrainingTask` subclass or an objective function), or,
    without one, the built-in task of the ``dataset`` field (:data:`BUILTIN_ENTRIES`). Every
    field that is not one of this class's is a task field: a ``TrainingTask``'s ``Params``
    dataclass validates them (an instance is stored), an objective's ``params`` dict of
    defaults checks their names and types, and without either they are kept as given (a dict).
    Task fields read as attributes too (``spec.width``); :meth:`to_dict` is flat.
    """

    name: str
    description: str = ""
    entry: str | None = None        # the task's code; None: the built-in task of `dataset`
    direction: str | None = None    # maximize | minimize the task's value; None: the task's own
    steps: int = 100                # optimizer steps; the genome's schedule sees this as total
    seeds: int = 1                  # default number of seeds (0..seeds-1) per evaluation
    time_limit_s: float = 60.0      # wall-clock limit of one (genome, seed) run
    divergence_factor: float = 5.0  # loss > factor x first-step loss (or non-finite) = diverged
    check_every: int = 1            # divergence/time check interval in steps (GPU: avoid syncs)
    device: str = "auto"            # auto | cpu | cuda
    bf16: bool | None = None        # bf16 autocast: omitted (None) = on CUDA only; true = on
                                    # every device, the CPU included; false = never
    threads: int = 0                # torch CPU threads during a run; 0 = leave as the caller set
    task_dir: str | None = None     # folder the task's relative paths resolve against (its file's)
    params: Any = dataclasses.field(default=None, hash=False)  # the task's own fields

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name != "params":
                check_type(f.name, getattr(self, f.name), f.type)
        if not self.name:
            raise TaskError("name", "must be a non-empty string")
        if self.device not in DEVICES:
            raise TaskError("device", f"must be one of {DEVICES}, got {self.device!r}")
        for name in ("steps", "seeds", "check_every"):
            if getattr(self, name) < 1:
                raise TaskError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.threads < 0:
            raise TaskError("threads", f"must be >= 0 (0 = as given), got {self.threads}")
        if not (math.isfinite(self.time_limit_s) and self.time_limit_s > 0):
            raise TaskError("time_limit_s", f"must be a positive number, got {self.time_limit_s}")
        if not (math.isfinite(self.divergence_factor) and self.divergence_factor > 1.0):
            raise TaskError("divergence_factor", f"must be > 1, got {self.divergence_factor}")
        raw = None  # the task's fields as given, when they still need validating
        if self.params is None or isinstance(self.params, dict):
            raw = dict(self.params or {})
            if self.entry is None:
                raw.setdefault("dataset", DEFAULT_DATASET)
                if raw["dataset"] not in BUILTIN_ENTRIES:
                    raise TaskError("dataset", f"unknown dataset {raw['dataset']!r} (built-in: "
                                               f"{', '.join(BUILTIN_ENTRIES)}; or give the "
                                               "task's code as entry = \"module:name\")")
            object.__setattr__(self, "params", raw)  # names the entry: `target` reads it
        target = self.target
        if raw is not None:
            object.__setattr__(self, "params", validate_params(target, raw))
        declared = task_direction(target)
        if self.direction is None:
            object.__setattr__(self, "direction", declared)
        elif self.direction not in DIRECTIONS:
            raise TaskError("direction", f"must be one of {DIRECTIONS}, got {self.direction!r}")
        elif declares_direction(target) and self.direction != declared:
            raise TaskError("direction", f"the task's code ({self.entry_text}) declares "
                                         f"{declared!r}, the task says {self.direction!r}")

    def __getattr__(self, name: str) -> Any:
        """A task field of ``params`` (``spec.width``), read as an attribute."""
        if name.startswith("__") or name == "params":
            raise AttributeError(name)
        params = self.__dict__.get("params")
        if isinstance(params, dict):
            if name in params:
                return params[name]
        elif params is not None and name in param_names(params):
            return getattr(params, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def entry_text(self) -> str:
        """The entry of the task's code: ``entry``, or the built-in task of its ``dataset``."""
        if self.entry is not None:
            return self.entry
        return BUILTIN_ENTRIES[self.params_dict().get("dataset", DEFAULT_DATASET)]

    @property
    def target(self) -> Any:
        """The task's code: a ``TrainingTask`` subclass or an objective function (imported)."""
        return resolve_entry(self.entry_text, self.task_dir)

    def params_dict(self) -> dict[str, Any]:
        """The task's own fields as a plain dict."""
        p = self.params
        if p is None:
            return {}
        return dict(p) if isinstance(p, dict) else {n: getattr(p, n) for n in param_names(p)}

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-able, flat dict: this class's fields, then the task's own."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "params"}
        return {**d, **self.params_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        """Build and validate from a flat dict such as :meth:`to_dict` or a parsed TOML file."""
        if not isinstance(d, dict):
            raise TaskError(None, f"a task spec must be a table/dict, got {type(d).__name__}")
        if "name" not in d:
            raise TaskError("name", "missing")
        own = {k: v for k, v in d.items() if k in GENERIC_FIELDS}
        params = {k: v for k, v in d.items() if k not in GENERIC_FIELDS}
        if "params" in d:
            raise TaskError("params", "task fields go at the top level of a task, not under "
                                      "'params'")
        return cls(**own, params=params)

    def with_overrides(self, **kw: Any) -> TaskSpec:
        """A copy with some fields replaced (validated, :meth:`check_host` included).

        ``steps_fraction = F`` (0 < F <= 1, not a field) runs ``max(1, round(F * steps))``
        steps: a fidelity stage relative to each task's own budget, so one stage of a task mix
        screens every task at the same fraction of its schedule."""
        kw = dict(kw)
        fraction = kw.pop(STEPS_FRACTION, None)
        own = {k: v for k, v in kw.items() if k in GENERIC_FIELDS}
        task_fields = {k: v for k, v in kw.items() if k not in GENERIC_FIELDS}
        params: Any = self.params  # validated already, unless it changes
        if task_fields or "entry" in own:
            params = {**self.params_dict(), **task_fields}
        spec = dataclasses.replace(self, **own, params=params)
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


#: the fields of :class:`TaskSpec` itself; every other field of a task is the task's own
GENERIC_FIELDS = frozenset(f.name for f in fields(TaskSpec) if f.name != "params")


def _annotation_text(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation.replace("Optional[", "").strip()
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def check_type(name: str, value: Any, annotation: Any) -> None:
    """:class:`TaskError` naming ``name`` unless ``value`` fits ``annotation`` (``int``,
    ``float``, ``bool``, ``str``, each optionally ``| None``; a type or its string form; other
    annotations accept any value)."""
    ann = _annotation_text(annotation)
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
    elif ann.startswith("str"):
        ok = isinstance(value, str)
        kind = "a string"
    else:
        return
    if not ok:
        raise TaskError(name, f"must be {kind}, got {value!r}")


# ------------------------------------------------------------------ the task's code
def resolve_entry(entry: str, task_dir: str | None) -> Any:
    """The object an entry names (imported once per process; see :mod:`evoopt.fitness.entry`)."""
    from evoopt.fitness.entry import load_entry

    base = Path(task_dir) if task_dir else None
    return load_entry(entry, base)


def is_task_class(target: Any) -> bool:
    """Whether a task's code is a ``TrainingTask`` subclass (else an objective function)."""
    from evoopt.fitness.training_task import TrainingTask

    return isinstance(target, type) and issubclass(target, TrainingTask)


def task_direction(target: Any) -> str:
    """The direction a task's code declares (``direction``; ``"maximize"`` if it declares none)."""
    direction = getattr(target, "direction", None) or "maximize"
    if direction not in DIRECTIONS:
        raise TaskError("direction", f"the task's code declares direction {direction!r}; "
                                     f"expected one of {DIRECTIONS}")
    return direction


def declares_direction(target: Any) -> bool:
    """Whether the task's code fixes its direction: a task class always does (its score is its
    own), an objective when it has a ``direction`` attribute (else its task file may say)."""
    return is_task_class(target) or getattr(target, "direction", None) is not None


def param_names(params: Any) -> tuple[str, ...]:
    """The field names of a task's validated params (a dataclass instance or a dict)."""
    if isinstance(params, dict):
        return tuple(params)
    return tuple(f.name for f in fields(params))


def param_names_of(target: Any) -> frozenset[str] | None:
    """The task fields ``target`` accepts, or None when it accepts any."""
    schema = params_schema(target)
    if schema is None:
        return None
    if isinstance(schema, dict):
        return frozenset(schema)
    return frozenset(f.name for f in fields(schema))


def params_schema(target: Any) -> Any:
    """What validates a task's own fields: a ``TrainingTask``'s ``Params`` dataclass, an
    objective's ``params`` dict of defaults, or None (any fields, kept as given)."""
    attr, kinds = ("Params", "a dataclass") if is_task_class(target) else (
        "params", "a dataclass or a dict")
    schema = getattr(target, attr, None)
    if schema is None or isinstance(schema, dict) or dataclasses.is_dataclass(schema):
        return schema
    raise TaskError("entry", f"{getattr(target, '__qualname__', target)!r}: {attr} must be "
                             f"{kinds}, got {type(schema).__name__}")


def validate_params(target: Any, raw: dict[str, Any]) -> Any:
    """The task's own fields ``raw`` validated by its code (:func:`params_schema`):
    :class:`TaskError` naming the field for an unknown, missing or ill-typed one."""
    if not (is_task_class(target) or callable(target)):
        raise TaskError("entry", f"{target!r} is neither a TrainingTask subclass nor a function "
                                 "taking a trial")
    schema = params_schema(target)
    known = sorted(GENERIC_FIELDS | set(param_names_of(target) or ()))
    if schema is None:
        return dict(raw)
    if isinstance(schema, dict):
        for key, value in raw.items():
            if key not in schema:
                raise TaskError(key, f"unknown field (known: {', '.join(known)})")
            default = schema[key]
            if default is not None:
                check_type(key, value, type(default).__name__)
        return {**schema, **raw}
    names = {f.name: f for f in fields(schema)}
    for key in raw:
        if key not in names:
            raise TaskError(key, f"unknown field (known: {', '.join(known)})")
    for f in names.values():
        if f.name in raw:
            check_type(f.name, raw[f.name], f.type)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise TaskError(f.name, "missing (the task requires it)")
    try:
        return schema(**raw)
    except TaskError:
        raise
    except (ValueError, TypeError) as e:
        raise TaskError(None, f"task fields: {e}") from None


def available_tasks() -> list[str]:
    """Names of the task specs shipped in ``fitness/``."""
    return sorted(p.stem for p in FITNESS_DIR.glob("*.toml"))


#: attribute of a task's code (an objective function or a TrainingTask class) with the task
#: settings it runs with when no task file gives them: ``{"steps": 300, "seeds": 2, ...}``
TASK_DEFAULTS = "task_defaults"


def entry_task(entry: str, base_dir: str | os.PathLike[str] | None = None,
               fields_: dict[str, Any] | None = None) -> TaskSpec:
    """The task of an entry (``pkg.mod:objective``, ``./my_task.py:MyTask``): its code's
    :data:`TASK_DEFAULTS`, then ``fields_`` (a task file's), the name defaulting to the
    entry's last name. A relative file resolves against ``base_dir`` (else the cwd) and is
    stored absolute, so workers and resumed campaigns find it from any directory."""
    from evoopt.fitness.entry import load_entry, parse_entry

    ref = parse_entry(entry, base_dir)
    if ref is None:
        raise TaskError("entry", f"{entry!r} is not an entry: write MODULE:NAME or FILE.py:NAME "
                                 "(e.g. my_task.py:objective)")
    target = load_entry(ref)
    defaults = getattr(target, TASK_DEFAULTS, None) or {}
    if not isinstance(defaults, dict):
        raise TaskError("entry", f"{ref.text}: {TASK_DEFAULTS} must be a dict of task fields, "
                                 f"got {type(defaults).__name__}")
    data = {"name": ref.attr.rsplit(".", 1)[-1], **defaults, **(fields_ or {}),
            "entry": ref.text}
    if base_dir is not None and "task_dir" not in data:
        data["task_dir"] = str(Path(base_dir).expanduser().resolve())
    return TaskSpec.from_dict(data)


def load_task(name_or_path: str | os.PathLike[str] | TaskSpec = DEFAULT_TASK,
              base_dir: str | os.PathLike[str] | None = None) -> TaskSpec:
    """A task by shipped name (``fitness/<name>.toml``), by path to a TOML file, or by entry
    (``pkg.mod:objective``, ``./my_task.py:objective``). Relative paths resolve against
    ``base_dir`` (the folder of the file naming the task) when given, else the cwd; a task
    file's own ``entry`` resolves against the task file's folder."""
    from evoopt.fitness.entry import is_entry

    if isinstance(name_or_path, TaskSpec):
        return name_or_path
    raw = str(name_or_path)
    if is_entry(raw):
        return entry_task(raw, base_dir).check_host()
    if names_a_path(raw):  # a bare name is the shipped task, even beside a file of that name
        try:
            path = Path(raw).expanduser()
            if base_dir is not None and not path.is_absolute():
                path = Path(base_dir).expanduser() / path
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
        if "entry" in data:
            entry = data.pop("entry")
            if not isinstance(entry, str):
                raise TaskError("entry", f"must be a string (MODULE:NAME or FILE.py:NAME), got "
                                         f"{entry!r}")
            return entry_task(entry, path.parent, data).check_host()
        return TaskSpec.from_dict(data).check_host()
    except TaskError as e:
        located = TaskError(None, f"{path}: {e}")
        located.field = e.field
        raise located from None


__all__ = ["BUILTIN_ENTRIES", "DEFAULT_TASK", "DIRECTIONS", "GENERIC_FIELDS", "TASK_DEFAULTS",
           "TaskError", "TaskSpec", "available_tasks", "check_type", "entry_task", "is_task_class",
           "load_task",
           "params_schema", "validate_params"]
