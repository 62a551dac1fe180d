"""User objectives as fitness runs: ``ObjectiveRunner(objective, ...).evaluate(genome, seed)``.

An objective is a function of a :class:`Trial` that trains with ``trial.make_optimizer(...)``
(the candidate genome's optimizer) and returns one number, or a :class:`Score`::

    def objective(trial) -> float:
        model = torch.nn.Linear(4, 1)                   # global RNG: seeded per (task, seed)
        opt = trial.make_optimizer(model.parameters())
        g = trial.generator("data")
        for step in range(trial.total_steps):
            x = torch.randn(32, 4, generator=g)
            loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
            opt.zero_grad(); trial.backward(loss); opt.step()
            trial.report(step, loss.item())
        return loss.item()
    objective.direction = "minimize"

``evaluate`` never raises (``KeyboardInterrupt`` aside) and guards the user's code
(docs/design-user-tasks.md §4): exceptions and ``SystemExit`` become ``error`` with the user's
file:line and a trimmed traceback; bad returns are ``error``, non-finite ones ``diverged``; the
time limit is enforced by checks in the trial's calls plus a watchdog (``SIGALRM`` on the main
thread, an asynchronous exception elsewhere); stops raise :class:`TrialStopped`, a
``BaseException`` that a user's ``except Exception:`` cannot swallow. Global ``torch``/``numpy``/
``random`` are seeded per (task, seed) before every call and restored after, so evaluation
order cannot matter and every genome sees the same initial weights on a seed.
"""

from __future__ import annotations

import ctypes
import gc
import math
import numbers
import operator
import os
import random
import signal
import site
import sysconfig
import threading
import time
import traceback
import types
import warnings
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext, suppress
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from evoopt.fitness.curves import PruneRule, StepCurve, prune_rule
from evoopt.fitness.orientation import (
    Score,
    canonical_fitness,
    check_direction,
    check_value_range,
)
from evoopt.fitness.runner import (
    WORST_FITNESS,
    SeedResult,
    derive_seed,
    deterministic_mode,
    double_backward_attention,
    genome_optimizer_factory,
    resolve_device,
)
from evoopt.genome.interpreter import backpropagate

T = TypeVar("T")
OptimizerFactory = Callable[[Iterable[Any], int], torch.optim.Optimizer]
SPLITS = ("val", "test")


# ---------------------------------------------------------------------------------- stops
class TrialStopped(BaseException):
    """A run stopped by evoopt's guards. A ``BaseException``: ``except Exception:`` in the
    user's objective cannot swallow it. ``status`` is the run's status."""

    status = "error"


class TrialTimeout(TrialStopped):
    """The run's time limit passed."""

    status = "timeout"


class TrialDiverged(TrialStopped):
    """A reported value was non-finite, or grew past the divergence limit."""

    status = "diverged"


class TrialBudgetExceeded(TrialStopped):
    """An optimizer took more than ``total_steps`` steps: a recipe must not buy budget."""

    status = "error"


class TrialPruned(TrialStopped):
    """The run's reported curve fell behind the campaign's reference run on the same seed
    (:class:`~evoopt.fitness.curves.PruneRule`); an objective may also raise it itself."""

    status = "pruned"


class _AsyncTimeout(TrialTimeout):
    """What the off-main-thread watchdog injects (a class, raised without arguments; the
    message is on the trial)."""


# ---------------------------------------------------------------------------------- cache
_CACHE: dict[tuple[str, Hashable], Any] = {}


def clear_cache(task_name: str | None = None) -> None:
    """Forget :meth:`Trial.cache` entries: all, or those of ``task_name``."""
    for k in [k for k in _CACHE if task_name is None or k[0] == task_name]:
        del _CACHE[k]


# ---------------------------------------------------------------------------------- tracebacks
_EVOOPT_DIR = str(Path(__file__).resolve().parents[1]) + os.sep


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    with suppress(AttributeError):  # a virtualenv's old site module
        dirs |= set(site.getsitepackages()) | {site.getusersitepackages()}
    return tuple(os.path.realpath(d) + os.sep for d in dirs if d)


_LIBRARY_DIRS = _library_dirs()


@lru_cache(maxsize=4096)
def _frame_kind(filename: str) -> str:
    """``"evoopt"`` (the package, its generated genome programs), ``"library"`` (stdlib,
    site-packages, frozen modules) or ``"user"``."""
    if filename.startswith("<"):
        if filename.startswith("<genome"):
            return "evoopt"
        return "library" if filename.startswith("<frozen") else "user"
    real = os.path.realpath(filename)
    if real.startswith(_EVOOPT_DIR):
        return "evoopt"
    return "library" if real.startswith(_LIBRARY_DIRS) else "user"


def _clip(text: str, max_chars: int, sep: str = "\n") -> str:
    """``text`` cut to at most ``max_chars``, keeping its head and tail (the cut marked
    between two ``sep``)."""
    if len(text) <= max_chars:
        return text
    marker = f"{sep}... {len(text)} characters omitted ...{sep}"
    room = max_chars - len(marker)
    if room < 2:
        return text[:max(max_chars, 0)]
    head = room // 2
    tail = room - head
    marker = f"{sep}... {len(text) - head - tail} characters omitted ...{sep}"  # no longer
    return text[:head] + marker + text[len(text) - tail:]


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a user exception's broken __str__
        return "<unprintable>"


def user_traceback(exc: BaseException, max_frames: int = 20, max_chars: int = 4096) -> str:
    """``exc``'s traceback from its first frame outside evoopt's own files, with the exception
    line; more than ``max_frames`` frames keep the first and last halves, and the text is cut
    to ``max_chars`` (head and tail)."""
    frames = traceback.extract_tb(exc.__traceback__)
    start = next((i for i, f in enumerate(frames) if _frame_kind(f.filename) != "evoopt"), 0)
    frames = traceback.StackSummary.from_list(frames[start:])
    max_frames = max(int(max_frames), 0)
    if len(frames) > max_frames:
        head = (max_frames + 1) // 2
        tail = max_frames - head
        body = (traceback.StackSummary.from_list(frames[:head]).format()
                + [f"  ... {len(frames) - max_frames} frames omitted ...\n"]
                + traceback.StackSummary.from_list(frames[len(frames) - tail:]).format())
    else:
        body = frames.format()
    try:
        last = traceback.format_exception_only(type(exc), exc)
    except Exception:  # noqa: BLE001
        last = [f"{type(exc).__name__}: <unprintable>\n"]
    text = "".join(["Traceback (most recent call last):\n", *body, *last]).rstrip("\n")
    return _clip(text, max_chars)


def _where(tb: types.TracebackType | None) -> str:
    """``file.py:42 in name`` of the deepest user frame (else the deepest outside evoopt, else
    the deepest); empty without a traceback."""
    frames = traceback.extract_tb(tb)
    if not frames:
        return ""
    pick = next((f for f in reversed(frames) if _frame_kind(f.filename) == "user"), None)
    if pick is None:
        pick = next((f for f in reversed(frames) if _frame_kind(f.filename) != "evoopt"),
                    frames[-1])
    return f"{os.path.basename(pick.filename)}:{pick.lineno} in {pick.name}"


def error_message(exc: BaseException) -> str:
    """``"<Type>: <msg> (at file.py:42 in fn)"`` plus :func:`user_traceback` on the next
    lines."""
    text = _safe_str(exc)
    text = " ".join(text.split("\n"))  # one line
    head = _clip(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, 1000, " ")
    where = _where(exc.__traceback__)
    return (f"{head} (at {where})" if where else head) + "\n" + user_traceback(exc)


# ---------------------------------------------------------------------------------- values
def _number(x: object) -> float | None:
    """``x`` as a float when it is one real number (int, float, numpy scalar or 0-dim array,
    0-dim tensor); None otherwise (bool, None, str, sequences, larger tensors, ...)."""
    if isinstance(x, bool | np.bool_):
        return None
    if isinstance(x, torch.Tensor):
        if x.dim() != 0 or x.dtype == torch.bool or x.is_complex():
            return None
        try:
            return float(x.item())
        except (RuntimeError, ValueError):  # a meta tensor, ...
            return None
    if isinstance(x, np.ndarray):
        return float(x) if x.ndim == 0 and x.dtype.kind in "iuf" else None
    if isinstance(x, numbers.Real):
        try:
            return float(x)
        except OverflowError:  # an int beyond float's range
            return math.inf if x > 0 else -math.inf
    return None


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor | np.ndarray):
        kind = "tensor" if isinstance(x, torch.Tensor) else "numpy array"
        return f"a {kind} of shape {tuple(x.shape)} ({x.dtype})"
    return "None" if x is None else type(x).__name__


# ---------------------------------------------------------------------------------- RNG
def _global_rng_state() -> tuple[Any, ...]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return torch.random.get_rng_state(), cuda, np.random.get_state(), random.getstate()


def _set_global_rng_state(state: tuple[Any, ...]) -> None:
    cpu, cuda, np_state, py_state = state
    torch.random.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(np_state)
    random.setstate(py_state)


def _seed_global(seed: int) -> None:
    torch.manual_seed(seed)  # CUDA too
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextmanager
def _isolated_global_rng(seed: int) -> Iterator[None]:
    """The global generators seeded with ``seed`` inside, as they were after."""
    state = _global_rng_state()
    _seed_global(seed)
    try:
        yield
    finally:
        _set_global_rng_state(state)


# ---------------------------------------------------------------------------------- watchdog
def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` in thread ``thread_id`` at its next bytecode (None: clear a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None)


def _alarm_available() -> bool:
    """``SIGALRM`` is ours to use: the main thread, its default handler, no timer running."""
    return (hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGALRM) is signal.SIG_DFL
            and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0))


class _Watchdog:
    """Interrupts a run at the trial's deadline: ``SIGALRM`` (``setitimer``) on the main thread
    (it interrupts ``time.sleep`` and bytecode), else a thread that injects
    :class:`_AsyncTimeout` with ``PyThreadState_SetAsyncExc`` (between bytecodes only). Fires
    at most once; paused while a :meth:`Trial.cache` fills; :meth:`stop` is idempotent and
    leaves nothing pending."""

    def __init__(self, trial: Trial) -> None:
        self._trial = trial
        self._mode: str | None = None
        self._active = False
        self._fired = False
        self._thread_id = threading.get_ident()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._prev_handler: Any = None

    def start(self) -> None:
        if _alarm_available():
            self._prev_handler = signal.signal(signal.SIGALRM, self._on_alarm)
            self._mode, self._active = "signal", True
            self._arm()
        else:
            self._mode, self._active = "thread", True
            threading.Thread(target=self._watch, name="evoopt-trial-watchdog",
                             daemon=True).start()

    def _arm(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, max(self._trial._remaining(), 1e-3))

    def _on_alarm(self, signum: int, frame: Any) -> None:
        trial = self._trial
        if not self._active or trial._paused:
            return  # stopped, or a cache fill (resume re-arms)
        if trial._remaining() > 0:  # the deadline moved (a cache fill)
            self._arm()
            return
        raise trial._stop(TrialTimeout(trial._timeout_message()))

    def _watch(self) -> None:
        while True:
            with self._lock:
                trial = self._trial
                if not self._active:
                    return
                remaining = trial._remaining()
                if not trial._paused and remaining <= 0:
                    trial._stop(TrialTimeout(trial._timeout_message()))
                    self._fired = True
                    _set_async_exc(self._thread_id, _AsyncTimeout)
                    return
            self._done.wait(min(max(remaining, 1e-3), 0.25))

    def pause(self) -> None:
        if self._mode == "signal":
            signal.setitimer(signal.ITIMER_REAL, 0)

    def resume(self) -> None:
        if self._mode == "signal" and self._active:
            self._arm()

    def stop(self) -> None:
        if self._mode == "signal":
            self._active = False  # from here on the handler does nothing
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._prev_handler)
        elif self._mode == "thread":
            with self._lock:
                self._active = False
                if self._fired:
                    _set_async_exc(self._thread_id, None)
            self._done.set()
        self._mode = None


# ---------------------------------------------------------------------------------- trial
class _Counted:
    """An optimizer made by a trial and its step count."""

    __slots__ = ("opt", "steps")

    def __init__(self, opt: torch.optim.Optimizer) -> None:
        self.opt, self.steps = opt, 0


class Trial:
    """What an objective receives: the candidate optimizer, the run's seed, streams and
    budget, and the guards' hooks. Made by :class:`ObjectiveRunner`, one per run."""

    def __init__(self, *, task_name: str, seed: int, split: str, total_steps: int,
                 device: torch.device, threads: int, params: Mapping[str, Any],
                 direction: str, bf16: bool | None, divergence_factor: float,
                 time_limit_s: float, optimizer_factory: OptimizerFactory,
                 prune: PruneRule | None = None) -> None:
        self.task_name = task_name
        self.seed = seed
        self.split = split
        self.total_steps = total_steps
        self.device = device
        self.threads = threads
        self.params: Mapping[str, Any] = types.MappingProxyType(dict(params))
        self.direction = direction
        self._bf16 = bf16
        self._factory = optimizer_factory
        self._factor = divergence_factor
        self._time_limit_s = time_limit_s
        self._deadline = time.perf_counter() + time_limit_s
        self._paused = 0
        self._cache_time = 0.0
        self._optimizers: list[_Counted] = []
        self._report_steps: list[int] = []
        self._reported: list[float] = []
        self._curve = StepCurve(total_steps)
        self._prune = prune
        self._stopped: TrialStopped | None = None  # the first stop (even if swallowed)
        self._misuse: Exception | None = None      # the first bad report() (likewise)
        self._watchdog: _Watchdog | None = None

    # -- optimizers -----------------------------------------------------------------------
    def make_optimizer(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        """The candidate optimizer over ``params`` (a ``GenomeOptimizer`` seeing
        ``total_steps``). Each optimizer may take at most ``total_steps`` steps; with several
        (e.g. a GAN's two), the run's ``steps`` is the most any of them took."""
        self._check_time()
        opt = self._factory(params, self.total_steps)
        counted = _Counted(opt)
        original = opt.step
        trial = self

        def step(_self: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
            trial._before_step(counted)
            out = original(*args, **kwargs)
            counted.steps += 1
            return out

        # a bound method, as LR schedulers expect (they wrap ``opt.step.__func__``)
        opt.step = types.MethodType(step, opt)  # type: ignore[method-assign]
        self._optimizers.append(counted)
        return opt

    def _before_step(self, counted: _Counted) -> None:
        self._check_time()
        if isinstance(self._stopped, TrialPruned):
            raise self._stopped
        if counted.steps >= self.total_steps:
            raise self._stop(TrialBudgetExceeded(
                f"optimizer step {counted.steps + 1} > total_steps={self.total_steps}: a recipe "
                f"must not buy budget (loop over range(trial.total_steps))"))

    @property
    def steps(self) -> int:
        """Optimizer steps taken so far (the most of any optimizer made)."""
        return max((c.steps for c in self._optimizers), default=0)

    @property
    def create_graph(self) -> bool:
        """Whether an optimizer made reads the curvature (needs gradients with their graph)."""
        return any(bool(getattr(c.opt, "needs_graph", False)) for c in self._optimizers)

    def backward(self, loss: torch.Tensor) -> None:
        """Gradients of ``loss`` as the optimizers need them: with their graph when one reads
        the curvature (then into every optimizer's parameters, replacing ``.grad``); plain
        ``loss.backward()`` otherwise, or before any optimizer is made."""
        if not self._optimizers or not self.create_graph:
            loss.backward()
            return
        params: list[torch.Tensor] = []
        seen: set[int] = set()
        for c in self._optimizers:
            for group in c.opt.param_groups:
                for p in group["params"]:
                    if p.requires_grad and id(p) not in seen:
                        seen.add(id(p))
                        params.append(p)
        backpropagate(loss, params, True)

    @contextmanager
    def autocast(self) -> Iterator[None]:
        """The task's precision for the forward pass: bf16 autocast when ``bf16`` asks for it
        (unset: on CUDA only), except for curvature optimizers (fp32, and attention on the
        math kernel, whose backward is differentiable)."""
        create_graph = self.create_graph
        on = self.device.type == "cuda" if self._bf16 is None else self._bf16
        amp = (torch.autocast(self.device.type, dtype=torch.bfloat16)
               if on and not create_graph else nullcontext())
        with amp, double_backward_attention(create_graph):
            yield

    # -- streams --------------------------------------------------------------------------
    def generator(self, purpose: str = "data", device: str | torch.device = "cpu"
                  ) -> torch.Generator:
        """A ``torch.Generator`` seeded by (task name, seed, ``purpose``): the same stream for
        every genome on a seed."""
        if not isinstance(purpose, str):
            raise TypeError(f"generator: purpose must be a str, got {purpose!r}")
        g = torch.Generator(device=device)
        g.manual_seed(derive_seed(self.task_name, self.seed, purpose))
        return g

    def numpy_rng(self, purpose: str = "data") -> np.random.Generator:
        """A ``numpy.random.Generator`` seeded by (task name, seed, ``purpose``)."""
        if not isinstance(purpose, str):
            raise TypeError(f"numpy_rng: purpose must be a str, got {purpose!r}")
        return np.random.default_rng(derive_seed(self.task_name, self.seed, purpose))

    # -- reports and stops ----------------------------------------------------------------
    def report(self, step: int, value: float) -> None:
        """An intermediate value at ``step`` (an int >= 0, non-decreasing): the run's curve. A
        non-finite value stops the run as ``diverged``; so does, when minimising from a
        positive first value, one above ``divergence_factor`` x the first. Values are read
        in the objective's direction (a loss when minimising), as the campaign's pruning
        compares them with its reference run's at the same steps (see :meth:`should_stop`)."""
        self._check_time()
        if isinstance(self._stopped, TrialPruned):
            raise self._stopped
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise self._misused(TypeError(
                f"report(step, value): step must be an int >= 0, got {type(step).__name__} "
                f"{step!r} (the order is report(step, value), not Optuna's report(value, "
                f"step))"))
        step = int(step)
        if step < 0:
            raise self._misused(ValueError(f"report: step must be >= 0, got {step}"))
        if self._report_steps and step < self._report_steps[-1]:
            raise self._misused(ValueError(
                f"report: step {step} after step {self._report_steps[-1]}: steps must not "
                f"decrease"))
        v = _number(value)
        if v is None:
            raise self._misused(TypeError(
                f"report: value must be one number, got {_describe(value)}"))
        self._report_steps.append(step)
        self._reported.append(v)
        complete = self._curve.completed
        self._curve.add(step, v)
        if not math.isfinite(v):
            raise self._stop(TrialDiverged(f"reported value {v} at step {step}"))
        first = self._reported[0]
        if self.direction == "minimize" and first > 0:
            limit = self._factor * max(first, 1e-3)
            if v > limit:
                raise self._stop(TrialDiverged(
                    f"reported value {v:.4g} at step {step} (limit {limit:.4g} = "
                    f"{self._factor} x first value)"))
        if self._prune is not None and self._curve.completed > complete:  # a bin completed
            verdict = self._prune.verdict(self._curve.values(), self._curve.completed)
            if verdict is not None:
                self._stop(TrialPruned(verdict))

    def should_stop(self) -> bool:
        """Whether the campaign has pruned this run: its reported values fell behind the
        reference optimizer's on the same seed (``[pruning]`` in the campaign config; never
        without it). Then return at once (or ``raise evoopt.TrialPruned``); the run is scored
        ``pruned`` whatever it returns, and its next ``report`` or optimizer step raises
        :class:`TrialPruned`, so an objective that never asks still stops."""
        return isinstance(self._stopped, TrialPruned)

    def _stop(self, exc: TrialStopped) -> TrialStopped:
        if self._stopped is None:
            self._stopped = exc
        return exc

    def _misused(self, exc: Exception) -> Exception:
        if self._misuse is None:
            self._misuse = exc
        return exc

    # -- time -----------------------------------------------------------------------------
    def _remaining(self) -> float:
        return self._deadline - time.perf_counter()

    def _check_time(self) -> None:
        if not self._paused and self._remaining() < 0:
            raise self._stop(TrialTimeout(self._timeout_message()))

    def _timeout_message(self) -> str:
        return f"time limit {self._time_limit_s:g}s hit after {self.steps} steps"

    def cache(self, key: Hashable, fn: Callable[[], T]) -> T:
        """``fn()``, memoised per process under (task name, ``key``): staged data, say. The
        fill runs with the global generators seeded from the key (and restored after), so it
        neither depends on nor shifts the run's streams; its time is not counted against the
        time limit (nor in ``train_time_s``)."""
        full = (self.task_name, key)
        try:
            if full in _CACHE:
                return _CACHE[full]
        except TypeError:
            raise TypeError(f"cache: key must be hashable, got {type(key).__name__}") from None
        self._paused += 1
        if self._paused == 1 and self._watchdog is not None:
            self._watchdog.pause()
        t = time.perf_counter()
        try:
            with _isolated_global_rng(derive_seed(self.task_name, 0, f"cache|{key!r}")):
                value = fn()
        finally:
            self._paused -= 1
            if not self._paused:
                elapsed = time.perf_counter() - t
                self._deadline += elapsed
                self._cache_time += elapsed
                if self._watchdog is not None:
                    self._watchdog.resume()
        _CACHE[full] = value
        return value


# ---------------------------------------------------------------------------------- runner
_threads_warned = False


def _warn_threads(before: int, after: int) -> None:
    global _threads_warned
    if not _threads_warned:
        _threads_warned = True
        warnings.warn(f"the objective changed torch's CPU threads from {before} to {after}; "
                      f"restored (set the task's threads instead)", RuntimeWarning,
                      stacklevel=3)


def _check_int(x: object, name: str, low: int) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {x!r}")
    return int(x)


def _check_positive(x: object, name: str, above: float = 0.0) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not (
            math.isfinite(x) and x > above):
        raise ValueError(f"{name}: expected a finite number > {above:g}, got {x!r}")
    return float(x)


class ObjectiveRunner:
    """Runs a user objective as a fitness run: ``evaluate(genome, seed, split)`` ->
    :class:`SeedResult` (``value``: the objective's number, ``fitness``: its
    :func:`canonical_fitness`). The same contract as ``FitnessRunner``; never raises.

    ``direction``: the argument, else ``objective.direction``, else ``"maximize"`` (both given
    and different: :class:`ValueError`). ``params``: the user's fields, over the defaults in
    ``objective.params``. ``time_limit_s`` covers the whole call.
    """

    def __init__(self, objective: Callable[[Trial], Any], *, name: str, steps: int,
                 time_limit_s: float = 60.0, direction: str | None = None,
                 params: Mapping[str, Any] | None = None, threads: int = 0,
                 device: str = "auto", bf16: bool | None = None,
                 divergence_factor: float = 5.0,
                 value_range: tuple[float, float] | None = None) -> None:
        if not callable(objective):
            raise TypeError(f"objective: expected a callable, got {type(objective).__name__}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: expected a non-empty string, got {name!r}")
        declared = getattr(objective, "direction", None)
        if declared is not None:
            check_direction(declared, "direction (objective.direction)")
        if direction is not None:
            check_direction(direction)
            if declared is not None and declared != direction:
                raise ValueError(f"direction: {direction!r} given, but the objective declares "
                                 f"{declared!r}")
        defaults = getattr(objective, "params", None) or {}
        for what, m in (("objective.params", defaults), ("params", params or {})):
            if not isinstance(m, Mapping) or not all(isinstance(k, str) for k in m):
                raise ValueError(f"{what}: expected a mapping of field names to values")
        if bf16 is not None and not isinstance(bf16, bool):
            raise ValueError(f"bf16: expected true, false or unset, got {bf16!r}")
        self.objective = objective
        self.task_name = name
        self.direction = direction or declared or "maximize"
        self.steps = _check_int(steps, "steps", 1)
        self.time_limit_s = _check_positive(time_limit_s, "time_limit_s")
        self.params: Mapping[str, Any] = types.MappingProxyType({**defaults, **(params or {})})
        self.threads = _check_int(threads, "threads", 0)
        self.device = resolve_device(device)
        self.bf16 = bf16
        self.divergence_factor = _check_positive(divergence_factor, "divergence_factor", 1.0)
        self.value_range = check_value_range(value_range)

    @classmethod
    def from_task(cls, objective: Callable[[Trial], Any], task: Any) -> ObjectiveRunner:
        """The runner of an objective task (a :class:`~evoopt.fitness.task.TaskSpec` whose
        entry is ``objective``): its budget, guards, direction and validated fields."""
        return cls(objective, name=task.name, steps=task.steps, time_limit_s=task.time_limit_s,
                   direction=task.direction, params=task.params_dict(), threads=task.threads,
                   device=task.device, bf16=task.bf16, divergence_factor=task.divergence_factor,
                   value_range=getattr(objective, "value_range", None))

    # ------------------------------------------------------------------ public API
    def evaluate(self, genome: Any, seed: int, split: str = "val", *,
                 prune: PruneRule | dict[str, Any] | None = None) -> SeedResult:
        """Run the objective with ``genome`` (a ``Genome`` or its dict) on ``seed``; never
        raises. With ``prune`` (a :class:`~evoopt.fitness.curves.PruneRule` or its dict), a
        run whose reported values fall behind the rule's reference stops as ``pruned``."""
        t0 = time.perf_counter()
        try:
            from evoopt.genome import Genome

            g = Genome.from_dict(genome) if isinstance(genome, dict) else genome
            if not isinstance(g, Genome):
                raise TypeError(f"expected a Genome or its dict, got {type(g).__name__}")
            factory = genome_optimizer_factory(g)
        except Exception as e:  # noqa: BLE001 - an invalid genome is a scored failure
            res = self._result(seed, split)
            res.message = f"invalid genome: {type(e).__name__}: {e}"
            res.wall_time_s = time.perf_counter() - t0
            return res
        return self.evaluate_with(factory, seed, split, prune=prune, _t0=t0)

    def evaluate_with(self, make_optimizer: OptimizerFactory, seed: int, split: str = "val", *,
                      prune: PruneRule | dict[str, Any] | None = None,
                      _t0: float | None = None) -> SeedResult:
        """Like :meth:`evaluate` for any ``make_optimizer(params, total_steps)``; never
        raises."""
        t0 = time.perf_counter() if _t0 is None else _t0
        res = self._result(seed, split)
        try:
            if isinstance(seed, bool):
                raise TypeError(f"seed: expected an integer, got {seed!r}")
            seed = operator.index(seed)
            if split not in SPLITS:
                raise ValueError(f"split: expected 'val' or 'test', got {split!r}")
            rule = prune_rule(prune, self.steps)
            self._run(make_optimizer, seed, split, res, rule)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - evoopt's own failure, or a late stop
            res.status = e.status if isinstance(e, TrialStopped) else "error"
            res.message = f"{type(e).__name__}: {_safe_str(e)}"
        res.wall_time_s = time.perf_counter() - t0
        if res.status != "ok":
            res.fitness, res.value = WORST_FITNESS, None
        return res

    # ------------------------------------------------------------------ internals
    def _result(self, seed: object, split: object) -> SeedResult:
        s = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0
        return SeedResult(seed=int(s), status="error", split=str(split),
                          direction=self.direction)

    def _run(self, factory: OptimizerFactory, seed: int, split: str, res: SeedResult,
             rule: PruneRule | None = None) -> None:
        rng_state = _global_rng_state()
        grad = torch.is_grad_enabled()
        amp = {d: torch.is_autocast_enabled(d) for d in {"cpu", self.device.type}}
        try:
            with deterministic_mode(self.device, self.threads):
                threads = torch.get_num_threads()
                res.threads = threads
                _seed_global(derive_seed(self.task_name, seed, "global"))
                trial = Trial(task_name=self.task_name, seed=seed, split=split,
                              total_steps=self.steps, device=self.device, threads=threads,
                              params=self.params, direction=self.direction, bf16=self.bf16,
                              divergence_factor=self.divergence_factor,
                              time_limit_s=self.time_limit_s, optimizer_factory=factory,
                              prune=rule)
                try:
                    self._call(trial, res)
                finally:
                    after = torch.get_num_threads()
                    if after != threads:
                        torch.set_num_threads(threads)
                        res.threads = max(threads, after)
                        _warn_threads(threads, after)
        finally:
            # a stop between a context's __enter__ and its with-block can skip its __exit__
            torch.set_grad_enabled(grad)
            for d, on in amp.items():
                if torch.is_autocast_enabled(d) != on:
                    torch.set_autocast_enabled(d, on)
            _set_global_rng_state(rng_state)
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def _call(self, trial: Trial, res: SeedResult) -> None:
        watchdog = _Watchdog(trial)
        trial._watchdog = watchdog
        failure: BaseException | None = None
        ret: Any = None
        t = time.perf_counter()
        try:
            try:
                watchdog.start()
                ret = self.objective(trial)
            finally:
                watchdog.stop()
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001 - the user's code: every failure is scored
            failure = e
        finally:
            watchdog.stop()  # again: a stop landing in the inner finally skips it
            elapsed = time.perf_counter() - t
            res.train_time_s = elapsed - trial._cache_time
            res.steps = trial.steps
            res.create_graph = trial.create_graph
            res.train_loss_curve = trial._curve.values()
        if failure is None:  # a stop or a bad report() that the objective swallowed
            failure = trial._stopped or trial._misuse
        if failure is None and res.train_time_s > self.time_limit_s:
            failure = trial._stop(TrialTimeout(trial._timeout_message()))
        if failure is not None:
            res.status, res.message = self._failure(failure, trial)
            return
        self._score(ret, res)

    @staticmethod
    def _failure(exc: BaseException, trial: Trial) -> tuple[str, str]:
        if isinstance(exc, TrialStopped):
            stop = trial._stopped or exc
            where = _where(exc.__traceback__)
            text = _safe_str(stop) or trial._timeout_message()
            return stop.status, f"{text} (at {where})" if where else text
        message = error_message(exc)
        if isinstance(exc, torch.OutOfMemoryError):
            message += "\n(out of accelerator memory: try a smaller batch or model)"
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return "error", message

    def _score(self, ret: Any, res: SeedResult) -> None:
        accuracy = loss = None
        if isinstance(ret, Score):
            value = _number(ret.value)
            extras = {"accuracy": ret.accuracy, "loss": ret.loss}
            for k, x in extras.items():
                if x is not None and _number(x) is None:
                    res.message = (f"objective returned a Score whose {k} is {_describe(x)}; "
                                   f"expected one number or None")
                    return
            if value is None:
                res.message = (f"objective returned a Score whose value is "
                               f"{_describe(ret.value)}; expected one number")
                return
            accuracy = None if ret.accuracy is None else _number(ret.accuracy)
            loss = None if ret.loss is None else _number(ret.loss)
        else:
            value = _number(ret)
            if value is None:
                res.message = (f"objective returned {_describe(ret)}; return one number "
                               f"(or evoopt Score)")
                return
            loss = value if self.direction == "minimize" else None
        numbers_ = {"value": value, "accuracy": accuracy, "loss": loss}
        bad = next((k for k, x in numbers_.items() if x is not None and not math.isfinite(x)),
                   None)
        if bad is not None:
            res.status = "diverged"
            res.message = f"objective returned a non-finite {bad} ({numbers_[bad]})"
            return
        try:
            fitness = canonical_fitness(value, self.direction, self.value_range)
        except ValueError as e:
            res.message = f"objective returned {value!r}: {e}"
            return
        res.value, res.val_accuracy, res.val_loss = value, accuracy, loss
        res.fitness, res.status, res.message = fitness, "ok", ""


def objective(fn: Callable[[Trial], Any] | None = None, *, direction: str | None = None,
              params: Mapping[str, Any] | None = None, **task_defaults: Any) -> Any:
    """Mark a function ``fn(trial) -> number`` as an evoopt objective: ``direction``
    (``"maximize"``, the default, or ``"minimize"``), ``params`` (the task's own fields and
    their defaults, read as ``trial.params``; a task file or ``--set`` may override them) and
    task settings used when no task file gives them (``steps=300, seeds=2, time_limit_s=60``,
    any field of :class:`~evoopt.fitness.task.TaskSpec`). Works bare (``@evoopt.objective``)
    or with arguments; returns ``fn`` itself, with those attributes set."""
    from evoopt.fitness.task import GENERIC_FIELDS, TASK_DEFAULTS

    unknown = sorted(set(task_defaults) - GENERIC_FIELDS)
    if unknown:
        raise TypeError(f"objective(): unknown task setting(s) {', '.join(unknown)} (task "
                        f"settings: {', '.join(sorted(GENERIC_FIELDS))}; the task's own fields "
                        "go in params={...})")
    if direction is not None:
        check_direction(direction)

    def mark(f: Callable[[Trial], Any]) -> Callable[[Trial], Any]:
        if not callable(f):
            raise TypeError(f"objective(): expected a function, got {type(f).__name__}")
        if direction is not None:
            f.direction = direction  # type: ignore[attr-defined]
        if params is not None:
            f.params = dict(params)  # type: ignore[attr-defined]
        setattr(f, TASK_DEFAULTS, dict(task_defaults))
        return f

    return mark if fn is None else mark(fn)


__all__ = [
    "ObjectiveRunner", "Score", "Trial", "TrialBudgetExceeded", "TrialDiverged",
    "TrialPruned", "TrialStopped", "TrialTimeout", "clear_cache", "error_message", "objective",
    "user_traceback",
]
