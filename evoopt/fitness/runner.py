"""The fitness run: train a task's model with a genome's optimizer, score it on a held-out split.

``FitnessRunner`` stages the task's data once on the task's device through the task's
:class:`~evoopt.fitness.workloads.Workload` (CIFAR-10 images, tiny Shakespeare characters) and
then evaluates one (genome, seed) at a time:

* **fitness** = the workload's score on the evaluated split (validation unless
  ``split="test"``), a number in [0, 1] to maximise: accuracy for CIFAR-10, the fraction of the
  uniform prediction's loss removed for characters, the fraction of the target variance
  explained (R², clipped to [0, 1]) for the teacher–student regression; a run that diverges,
  times out or fails gets ``WORST_FITNESS`` (-1.0). The workload owns the training loss
  (cross-entropy, or MSE) and the scoring.
* **common random numbers**: initial weights, data order and augmentation come from generators
  seeded by (task name, seed) only, so two genomes evaluated with the same seed see the same
  network and the same batches.
* never raises: any exception becomes ``status="error"`` with the message.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from evoopt.fitness.curves import CURVE_POINTS, PruneRule, bin_edges, downsample_curve, prune_rule
from evoopt.fitness.orientation import Score, canonical_fitness
from evoopt.fitness.task import TaskError, TaskSpec, is_task_class, load_task
from evoopt.fitness.training_task import TaskContext, TrainingTask
from evoopt.genome.interpreter import backpropagate
from evoopt.stats import mean_std

WORST_FITNESS = -1.0
"""Fitness of any run whose status is not ``ok`` (finite, below every ok fitness). "Failed" is
decided by status; the number only orders (a failure ranks below every ok run)."""

#: The lowest fitness an ok run can have: the double just above :data:`WORST_FITNESS`.
OK_FLOOR = math.nextafter(WORST_FITNESS, 0.0)


def ok_floor(x: float) -> float:
    """An ok run's fitness kept above :data:`WORST_FITNESS` (``max(x, OK_FLOOR)``), so every ok
    fitness is > -1 and a bare per-seed number ``<= WORST_FITNESS`` means a failure, exactly."""
    return max(x, OK_FLOOR)

#: A run's status: ``pruned`` is a run a :class:`~evoopt.fitness.curves.PruneRule` stopped.
STATUSES = ("ok", "diverged", "timeout", "pruned", "error")

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter], int], torch.optim.Optimizer]


def _finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass
class SeedResult:
    """The outcome of one (genome, seed) training run."""

    seed: int
    fitness: float = WORST_FITNESS
    val_accuracy: float | None = None   # accuracy on ``split`` (val, or test when asked); for
                                        # characters: next-character accuracy; regression: None
    val_loss: float | None = None       # mean cross-entropy (nats, no smoothing) on ``split``;
                                        # regression: mean squared error per target element
    status: str = "error"
    message: str = ""
    steps: int = 0                      # optimizer steps completed
    wall_time_s: float = 0.0            # whole run: build, train, evaluate
    train_time_s: float = 0.0           # the training loop alone
    train_loss_curve: list[float | None] = field(default_factory=list)  # <= 50 bin means
    split: str = "val"
    # the optimizer read the curvature: each step backpropagated with create_graph=True and
    # took a Hessian-vector product (about twice a plain step's cost, in train_time_s)
    create_graph: bool = False
    # torch's CPU threads during the run (torch.get_num_threads() inside it; 0: no run, e.g. an
    # invalid genome). Fitness is deterministic per thread count, not across counts.
    threads: int = 0
    # the task's own number, in its own units and orientation (a loss to minimise, a score to
    # maximise); ``fitness`` is derived from it (evoopt.fitness.orientation). None: no score.
    value: float | None = None
    direction: str = "maximize"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (non-finite numbers become None)."""
        d = asdict(self)
        d["train_loss_curve"] = [_finite_or_none(v) for v in self.train_loss_curve]
        for k in ("val_accuracy", "val_loss", "value"):
            d[k] = _finite_or_none(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SeedResult:
        return cls(**d)


@dataclass
class EvaluationResult:
    """Seeds aggregated: mean and (population) std over seeds.

    ``fitness`` is the mean per-seed fitness if every seed is ``ok``; otherwise the status is
    the first failing seed's and ``fitness == WORST_FITNESS``. Accuracy/loss means are over the
    seeds that finished (None if none did).
    """

    fitness: float
    fitness_std: float
    val_accuracy: float | None
    val_accuracy_std: float | None
    val_loss: float | None
    val_loss_std: float | None
    status: str
    message: str
    wall_time_s: float
    split: str
    task: str
    seeds: list[SeedResult]
    threads: int = 0  # torch CPU threads the seeds ran with (the most, should they differ)
    value: float | None = None      # mean of the seeds' task values (None unless all are ok)
    value_std: float | None = None
    direction: str = "maximize"

    @classmethod
    def from_seeds(cls, results: Sequence[SeedResult], task: str, split: str) -> EvaluationResult:
        if not results:
            raise ValueError("no seed results to aggregate")
        bad = [r for r in results if r.status != "ok"]
        # accuracy and loss: over the seeds that report them (a regression task has no accuracy)
        acc, acc_std = mean_std([r.val_accuracy for r in results if r.val_accuracy is not None])
        loss, loss_std = mean_std([r.val_loss for r in results if r.val_loss is not None])
        fit, fit_std = mean_std([r.fitness for r in results])
        values = [r.value for r in results]
        value, value_std = (None, None) if bad or None in values else mean_std(values)
        return cls(
            fitness=WORST_FITNESS if bad else float(fit),
            fitness_std=0.0 if bad else float(fit_std),
            val_accuracy=acc, val_accuracy_std=acc_std, val_loss=loss, val_loss_std=loss_std,
            status=bad[0].status if bad else "ok",
            message="; ".join(f"seed {r.seed}: {r.status}: {r.message}" for r in bad),
            wall_time_s=float(sum(r.wall_time_s for r in results)),
            split=split, task=task, seeds=list(results),
            threads=max(r.threads for r in results),
            value=value, value_std=value_std, direction=results[0].direction,
        )

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "seeds"}
        for k in ("val_accuracy", "val_accuracy_std", "val_loss", "val_loss_std", "value",
                  "value_std"):
            d[k] = _finite_or_none(d[k])
        d["seeds"] = [r.to_dict() for r in self.seeds]
        return d


def bits_per_char(loss: float | None) -> float | None:
    """A mean cross-entropy in nats per character as bits per character (None stays None)."""
    return None if loss is None else loss / math.log(2)


#: Training batches the BatchNorm statistics are re-estimated on before an optimizer that
#: evaluates other weights than it trains at (Schedule-Free) is scored.
BN_RECALIBRATION_BATCHES = 10


def derive_seed(task_name: str, seed: int, purpose: str) -> int:
    """A 63-bit generator seed that depends only on (task name, seed, purpose)."""
    h = hashlib.sha256(f"evoopt|{task_name}|{int(seed)}|{purpose}".encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


def resolve_device(device: str) -> torch.device:
    """The torch device of a task's ``device`` field; :class:`TaskError` naming the field when it
    asks for CUDA on a machine without it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise TaskError("device", "the task asks for 'cuda' but CUDA is not available on this "
                                  "machine (override it: --set device=\"cpu\" or \"auto\")")
    return torch.device(device)


@contextmanager
def deterministic_mode(device: torch.device, threads: int = 0):
    """Deterministic kernels (and ``threads`` CPU threads if > 0) for the duration of a run;
    restores the previous global settings."""
    prev_threads = torch.get_num_threads()
    if threads:  # at most this machine's CPUs (a spec checked on a bigger driver)
        torch.set_num_threads(min(threads, os.cpu_count() or threads))
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_fill = torch.utils.deterministic.fill_uninitialized_memory
    prev_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # deterministic mode NaN-fills every torch.empty (10k fills per run here, ~9% of the time);
    # every buffer the run reads is written first, so skip that.
    torch.utils.deterministic.fill_uninitialized_memory = False
    if device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)
        torch.utils.deterministic.fill_uninitialized_memory = prev_fill
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev_cudnn
        if threads:
            torch.set_num_threads(prev_threads)


def double_backward_attention(enabled: bool):
    """With ``enabled``, attention (``scaled_dot_product_attention``) runs torch's math kernel,
    whose backward can itself be differentiated (Hessian-vector products, AdaHessian); the
    fused CPU and CUDA kernels have no double backward."""
    if not enabled:
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def genome_optimizer_factory(genome: Any) -> OptimizerFactory:
    """Optimizer factory for a genome (slot or chain, or its dict form) via
    ``GenomeOptimizer``."""
    from evoopt.genome import GenomeOptimizer, genome_from_dict

    g = genome_from_dict(genome) if isinstance(genome, dict) else genome

    def make(params: Iterable[torch.nn.Parameter], total_steps: int) -> torch.optim.Optimizer:
        return GenomeOptimizer(params, g, total_steps=total_steps)

    return make


def check_task_data(task: TaskSpec, data_dir: str | None = None) -> None:
    """Raise :class:`~evoopt.fitness.data.DataError` now, before any run is paid for, when
    ``task`` cannot run on the data: missing or broken files, or a split that leaves too little
    to train on (the task class's ``check_data``, whose context has the CPU as its device; it
    may load and cache the data for this process's later runs). An objective has no data
    check: importing it (done to validate the spec) is its preflight."""
    target = task.target
    if is_task_class(target):
        target.check_data(task.params, TaskContext(task.name, torch.device("cpu"), data_dir,
                                                   task.task_dir))


def task_info(task: TaskSpec) -> dict[str, Any]:
    """What reports say about a task's score, from its code: ``entry``, ``direction``,
    ``value_range``, ``score_label`` (a short name of the value), ``score_description`` (its
    definition), ``loss_label``, ``reports_accuracy``. A task class declares these as class
    attributes; an objective function may set any of them as function attributes."""
    target = task.target
    if is_task_class(target):
        labels = {k: getattr(target, k) for k in ("value_range", "score_label",
                                                  "score_description", "loss_label",
                                                  "reports_accuracy")}
    else:
        noun = "loss" if task.direction == "minimize" else "score"
        labels = {"value_range": getattr(target, "value_range", None),
                  "score_label": getattr(target, "score_label", f"the objective's {noun}"),
                  "score_description": getattr(target, "score_description",
                                               f"the value the objective returns (a {noun} to "
                                               f"{task.direction})"),
                  "loss_label": getattr(target, "loss_label", "loss"),
                  "reports_accuracy": bool(getattr(target, "reports_accuracy", False))}
    vr = labels["value_range"]
    return {**labels, "entry": task.entry_text, "direction": task.direction,
            "value_range": None if vr is None else [float(vr[0]), float(vr[1])]}


def curve_direction(task: TaskSpec) -> str:
    """The direction of a task's run curve: a task class's is its training loss (minimised);
    an objective's is the values it reports, read in the objective's direction."""
    return "minimize" if is_task_class(task.target) else task.direction


def result_extras(task: TaskSpec, result: dict[str, Any]) -> dict[str, Any]:
    """The task's extra keys of a result dict (a task class's ``result_extras``: e.g. a
    character task's ``val_bpc``); none for an objective."""
    target = task.target
    return target.result_extras(result) if is_task_class(target) else {}


def make_runner(task: TaskSpec | str, data_dir: str | None = None, download: bool = True
                ) -> Any:
    """The runner of a task's code: a :class:`FitnessRunner` for a task class, an
    :class:`~evoopt.fitness.objective.ObjectiveRunner` for an objective function. Both have
    ``evaluate(genome, seed, split) -> SeedResult`` and never raise from it."""
    spec = load_task(task)
    if is_task_class(spec.target):
        return FitnessRunner(spec, data_dir=data_dir, download=download)
    from evoopt.fitness.objective import ObjectiveRunner

    return ObjectiveRunner.from_task(spec.target, spec)


class FitnessRunner:
    """Builds a task class once (its data staged); ``evaluate(genome, seed)`` trains and scores.

    Built-in data is cached per process (keyed by resolved path), so several runners, e.g. for
    fidelity stages, share it; each runner's task (``workload``, a :class:`TrainingTask`)
    stages its own subset on its device.
    """

    def __init__(self, task: TaskSpec | str, data_dir: str | None = None,
                 download: bool = True) -> None:
        self.task = load_task(task)
        target = self.task.target
        if not is_task_class(target):
            raise TaskError("entry", f"{self.task.entry_text} is an objective function, not a "
                                     "TrainingTask: run it with make_runner (ObjectiveRunner)")
        self.device = resolve_device(self.task.device)
        self.data_dir = data_dir
        self.value_range = target.value_range
        ctx = TaskContext(self.task.name, self.device, data_dir, self.task.task_dir, download)
        self.workload: TrainingTask = target(self.task.params, ctx)
        self.data_root = self.workload.data_root

    def split_data(self, split: str) -> Any:
        """The staged evaluation split (``val`` or ``test``; the test split is staged only on
        first request)."""
        return self.workload.split_data(split)

    # ------------------------------------------------------------------ public API
    def evaluate(self, genome: Any, seed: int, split: str = "val", *,
                 prune: PruneRule | dict[str, Any] | None = None) -> SeedResult:
        """Train with ``genome`` (a ``Genome`` or its dict) on ``seed``; never raises. With
        ``prune`` (a :class:`~evoopt.fitness.curves.PruneRule` or its dict), a run whose
        training-loss curve falls behind the rule's reference stops as ``pruned``."""
        t0 = time.perf_counter()
        try:
            factory = genome_optimizer_factory(genome)
        except Exception as e:  # noqa: BLE001 - invalid genome is a scored failure
            return SeedResult(seed=int(seed), status="error", split=split,
                              message=f"invalid genome: {type(e).__name__}: {e}",
                              wall_time_s=time.perf_counter() - t0)
        return self.evaluate_with(factory, seed, split, prune=prune, _t0=t0)

    def evaluate_with(self, make_optimizer: OptimizerFactory, seed: int, split: str = "val", *,
                      prune: PruneRule | dict[str, Any] | None = None,
                      _t0: float | None = None) -> SeedResult:
        """Like :meth:`evaluate` for any ``make_optimizer(params, total_steps)``; never raises."""
        t0 = time.perf_counter() if _t0 is None else _t0
        res = SeedResult(seed=int(seed), split=split)
        try:
            rule = prune_rule(prune, self.task.steps)
            with deterministic_mode(self.device, self.task.threads):
                res.threads = torch.get_num_threads()
                self._run(make_optimizer, int(seed), split, t0, res, rule)
        except Exception as e:  # noqa: BLE001 - a fitness run never raises
            tb = traceback.extract_tb(e.__traceback__)
            where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
            res.status, res.fitness = "error", WORST_FITNESS
            res.message = f"{type(e).__name__}: {e}{where}"
        res.wall_time_s = time.perf_counter() - t0
        if res.status != "ok":
            res.fitness = WORST_FITNESS
        return res

    # ------------------------------------------------------------------ internals
    def _autocast(self, create_graph: bool = False):
        """bf16 autocast when the task's ``bf16`` asks for it (omitted: on CUDA only), except in
        runs that take Hessian-vector products (``create_graph``): those stay fp32. Measured
        (AdaHessian, cifar10-cpu, seeds 0-9): bf16 left the time unchanged (77 vs 75 s) and
        lost 0.15 fitness on average (one run diverged, two fell by 0.09), where fp32 runs
        were all within 0.41-0.46."""
        on = self.device.type == "cuda" if self.task.bf16 is None else self.task.bf16
        if on and not create_graph:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _run(self, make_optimizer: OptimizerFactory, seed: int, split: str, t0: float,
             res: SeedResult, rule: PruneRule | None = None) -> None:
        task, work = self.task, self.workload
        eval_data = work.split_data(split)  # validate split before training
        g_init = torch.Generator().manual_seed(derive_seed(task.name, seed, "init"))
        g_data = torch.Generator().manual_seed(derive_seed(task.name, seed, "data"))
        model = work.build_model(g_init)
        opt = make_optimizer(model.parameters(), task.steps)
        res.create_graph = bool(getattr(opt, "needs_graph", False))
        params = [p for p in model.parameters() if p.requires_grad]

        batches = work.train_batches(g_data)
        losses = torch.empty(task.steps, device=self.device, dtype=torch.float32)
        first_loss: float | None = None
        checked = 0
        edges = bin_edges(task.steps) if rule is not None else []
        bins: list[float | None] = []  # the curve's complete bins so far (with a prune rule)
        t_train = time.perf_counter()
        model.train()
        for step in range(task.steps):
            xb, yb = next(batches)
            with self._autocast(res.create_graph), double_backward_attention(res.create_graph):
                out = work.forward(model, xb)
            loss = work.train_loss(out, yb)  # the task's: cross-entropy, MSE, ...
            opt.zero_grad(set_to_none=True)
            backpropagate(loss, params, res.create_graph)
            opt.step()
            losses[step] = loss.detach()
            res.steps = step + 1
            if res.steps % task.check_every == 0 or res.steps == task.steps:
                window = losses[checked:res.steps]
                checked = res.steps
                if first_loss is None:
                    first_loss = float(window[0])
                worst = float(window.max()) if bool(torch.isfinite(window).all()) else math.inf
                limit = task.divergence_factor * max(first_loss, 1e-3)
                if not math.isfinite(first_loss) or worst > limit:
                    res.status = "diverged"
                    res.message = (f"train loss {worst:.4g} at step <= {res.steps} "
                                   f"(limit {limit:.4g} = {task.divergence_factor} x first loss)")
                    break
                if time.perf_counter() - t0 > task.time_limit_s:
                    res.status = "timeout"
                    res.message = f"time limit {task.time_limit_s}s hit after {res.steps} steps"
                    break
                if rule is not None and res.steps < task.steps:
                    complete = len(bins)
                    while len(bins) + 1 < len(edges) and edges[len(bins) + 1] <= res.steps:
                        a, b = edges[len(bins)], edges[len(bins) + 1]
                        bins.append(float(losses[a:b].double().mean()))
                    # the verdict changes only when a bin completes
                    verdict = rule.verdict(bins, len(bins)) if len(bins) > complete else None
                    if verdict is not None:
                        res.status, res.message = "pruned", verdict
                        break
        res.train_time_s = time.perf_counter() - t_train
        # a pruned run keeps the bins of the whole budget it compared (they line up with the
        # reference's); any other run's steps are binned as they ran
        res.train_loss_curve = (bins if res.status == "pruned"
                                else downsample_curve(losses[:res.steps].cpu().numpy()))
        if res.status in ("diverged", "timeout", "pruned"):
            return
        if getattr(opt, "evaluates_other_weights", False):  # Schedule-Free: score the average
            opt.eval()
            self._recalibrate_batchnorm(model, seed)
        score = self._score(model, eval_data, res.create_graph)
        if isinstance(score, numbers.Real) and not isinstance(score, bool):
            score = Score(float(score))
        if not isinstance(score, Score):
            raise TypeError(f"{type(work).__name__}.score returned {type(score).__name__}; "
                            "return a number or an evoopt Score")
        if not (math.isfinite(score.value) and (score.loss is None or math.isfinite(score.loss))):
            res.status, res.message = "diverged", f"non-finite {split} score or loss"
            return
        res.val_accuracy, res.val_loss = score.accuracy, score.loss
        res.value, res.direction = float(score.value), task.direction
        res.fitness = canonical_fitness(score.value, task.direction, self.value_range)
        res.status, res.message = "ok", ""

    @torch.no_grad()
    def _recalibrate_batchnorm(self, model: torch.nn.Module, seed: int) -> None:
        """Recompute the BatchNorm statistics at the weights about to be scored (the averaged
        weights of an optimizer that trained elsewhere), as the schedulefree README prescribes:
        running statistics reset and re-estimated as a plain average over
        :data:`BN_RECALIBRATION_BATCHES` training batches, drawn from a generator of their own
        (the training data order is untouched). A model without BatchNorm is left as it is."""
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                 and m.track_running_stats]
        if not norms:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches below
        model.train()
        g = torch.Generator().manual_seed(derive_seed(self.task.name, seed, "bn"))
        batches = self.workload.train_batches(g)
        for _ in range(BN_RECALIBRATION_BATCHES):
            xb, _ = next(batches)
            with self._autocast():
                self.workload.forward(model, xb)
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum

    @torch.no_grad()
    def _score(self, model: torch.nn.Module, data: Any, create_graph: bool = False
               ) -> Score | float:
        """The task's score of a staged split (accuracy and mean cross-entropy in nats, or
        MSE and variance explained), the model run in the precision the training ran in (see
        :meth:`_autocast`), its outputs scored in fp32."""
        model.eval()

        def outputs() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for xb, yb in self.workload.eval_batches(data):
                with self._autocast(create_graph):
                    out = model(xb).float()
                yield out, yb

        return self.workload.score(data, outputs())


#: Seeds are below 2**63: stored as SQLite integers, hashed into generator seeds.
SEED_LIMIT = 2**63


def seed_list(seeds: object, default: int) -> list[int]:
    """The seeds ``seeds`` asks for: a count n >= 1 (seeds 0..n-1), a non-empty sequence of
    distinct integers in [0, 2**63), or None (``default`` seeds). :class:`ValueError` naming
    ``seeds`` otherwise: a bool, a float, a string, 0, a negative or repeated seed."""
    if seeds is None:
        return list(range(default))
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if not 1 <= seeds < SEED_LIMIT:
            raise ValueError(f"seeds: expected a count >= 1 (seeds 0..n-1) or a list of seeds, "
                             f"got {seeds!r}")
        return list(range(seeds))
    if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence) or not seeds:
        raise ValueError(f"seeds: expected a count >= 1 or a non-empty list of seeds "
                         f"(integers >= 0), got {seeds!r}")
    for s in seeds:  # numpy integers are integers too
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or not 0 <= s < SEED_LIMIT:
            raise ValueError(f"seeds: expected integers in [0, 2**63), got {s!r} in "
                             f"{list(seeds)!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: seeds repeat in {list(seeds)!r}")
    return [int(s) for s in seeds]


def evaluate_genome(genome: Any, task: TaskSpec | str, seeds: int | Sequence[int] | None = None,
                    data_dir: str | None = None, split: str = "val") -> EvaluationResult:
    """Evaluate ``genome`` on ``seeds``: a count n (seeds 0..n-1), a list of distinct seeds, or
    None (the task's count). Bad seeds raise :class:`ValueError` before any data is read."""
    spec = load_task(task)
    seeds = seed_list(seeds, spec.seeds)
    runner = make_runner(spec, data_dir=data_dir)
    results = [runner.evaluate(genome, s, split=split) for s in seeds]
    return EvaluationResult.from_seeds(results, task=spec.name, split=split)


__all__ = [
    "CURVE_POINTS", "EvaluationResult", "FitnessRunner", "OK_FLOOR", "OptimizerFactory",
    "STATUSES", "SeedResult", "WORST_FITNESS", "bits_per_char", "check_task_data",
    "curve_direction", "derive_seed",
    "double_backward_attention", "downsample_curve", "evaluate_genome",
    "genome_optimizer_factory", "is_task_class", "make_runner", "ok_floor", "resolve_device",
    "result_extras", "seed_list", "task_info",
]
