"""Guards of the objective runner (user code): exceptions, returns, reports, time limit,
budget, threads, common random numbers; and ``canonical_fitness``. Serial, CPU, tiny models."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import sys
import threading
import time

import numpy as np
import pytest
import torch

from evoopt.fitness.objective import (
    ObjectiveRunner,
    Trial,
    clear_cache,
    user_traceback,
)
from evoopt.fitness.orientation import DIRECTIONS, Score, canonical_fitness
from evoopt.fitness.runner import WORST_FITNESS, SeedResult
from evoopt.genome import seed_genome

ADAM = seed_genome("adam")
SGD = seed_genome("sgd-momentum")
HERE = "test_objective_guards.py"


#: a stopped run returns well inside this (1 s limit; unstopped runs sleep 120 s or loop
#: forever), with room for a loaded machine: the bound shows the stop, not its speed
STOPPED_WITHIN_S = 20.0

def run(objective, *, seed: int = 0, genome=ADAM, split: str = "val", **kw) -> SeedResult:
    kw.setdefault("steps", 5)
    kw.setdefault("time_limit_s", 30.0)
    runner = ObjectiveRunner(objective, name="guards", threads=1, device="cpu", **kw)
    return runner.evaluate(genome, seed, split)


def train_linear(trial: Trial) -> float:
    """The design's example: a linear regression trained with the candidate optimizer."""
    model = torch.nn.Linear(4, 1)
    opt = trial.make_optimizer(model.parameters())
    g = trial.generator("data")
    loss = torch.tensor(0.0)
    for step in range(trial.total_steps):
        x = torch.randn(32, 4, generator=g)
        loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
        opt.zero_grad()
        trial.backward(loss)
        opt.step()
        trial.report(step, loss.item())
    return loss.item()


train_linear.direction = "minimize"  # type: ignore[attr-defined]


def returning(value):
    def objective(trial: Trial):
        return value
    return objective


# ---------------------------------------------------------------------------------- exceptions
def _fail_deep() -> None:
    raise ValueError("boom")


_BOOM_LINE = _fail_deep.__code__.co_firstlineno + 1


def raising(trial: Trial) -> float:
    _fail_deep()
    return 0.0


def test_exception_names_the_user_line_and_drops_evoopt_frames():
    res = run(raising)
    assert res.status == "error" and res.fitness == WORST_FITNESS and res.value is None
    first, rest = res.message.split("\n", 1)
    assert first == f"ValueError: boom (at {HERE}:{_BOOM_LINE} in _fail_deep)"
    lines = rest.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert HERE in lines[1] and "in raising" in lines[1]  # the first frame is the user's
    assert "evoopt" not in rest
    assert lines[-1] == "ValueError: boom"


def recursing(trial: Trial, depth: int = 0) -> float:
    if depth == 60:
        raise RuntimeError("x" * 10_000)
    return recursing(trial, depth + 1)


def test_traceback_is_trimmed_to_frames_and_chars():
    res = run(recursing)
    assert res.status == "error"
    first, rest = res.message.split("\n", 1)
    assert first.startswith("RuntimeError: xxx") and first.endswith("in recursing)")
    assert len(first) < 1100 and len(rest) <= 4096
    try:
        recursing(None)  # type: ignore[arg-type]
    except RuntimeError as e:
        frames = user_traceback(e, max_chars=100_000)
        short = user_traceback(e, max_frames=4, max_chars=300)
    lines = frames.splitlines()
    assert "  ... 42 frames omitted ..." in lines  # this test's frame + 61, 20 kept
    assert "in test_traceback_is_trimmed_to_frames_and_chars" in lines[1]
    assert lines[-3].endswith("in recursing") and lines[-2].strip().startswith("raise")
    assert len(short) <= 300 and "characters omitted" in short
    assert short.startswith("Traceback") and short.endswith("x")


def exiting(trial: Trial) -> float:
    sys.exit(3)


def test_system_exit_is_an_error():
    res = run(exiting)
    assert res.status == "error"
    assert res.message.startswith(f"SystemExit: 3 (at {HERE}:")


def test_invalid_genome_is_an_error():
    res = run(returning(1.0), genome={"lr": 1.0})
    assert res.status == "error" and res.message.startswith("invalid genome:")


# ---------------------------------------------------------------------------------- returns
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, torch.tensor(math.nan)])
def test_non_finite_return_is_diverged(value):
    res = run(returning(value))
    assert res.status == "diverged" and res.fitness == WORST_FITNESS
    assert "non-finite value" in res.message


@pytest.mark.parametrize(("value", "named"), [
    ("abc", "str"), (None, "None"), (True, "bool"), ([1], "list"), ((1.0,), "tuple"),
    (torch.ones(2), "a tensor of shape (2,)"), (np.ones(3), "a numpy array of shape (3,)"),
    (torch.tensor(True), "a tensor of shape ()"), (1 + 2j, "complex"),
])
def test_bad_returns_are_errors(value, named):
    res = run(returning(value))
    assert res.status == "error"
    assert res.message.startswith(f"objective returned {named}")
    assert "return one number (or evoopt Score)" in res.message


@pytest.mark.parametrize(("value", "expected"), [
    (np.float32(0.25), 0.25), (np.int64(3), 3.0), (torch.tensor(0.5), 0.5),
    (np.array(0.75), 0.75), (2, 2.0), (-1.5, -1.5),
])
def test_numbers_are_accepted(value, expected):
    res = run(returning(value))
    assert res.status == "ok" and res.message == ""
    assert res.value == expected and isinstance(res.value, float)
    assert res.direction == "maximize" and res.val_loss is None
    assert res.fitness == canonical_fitness(expected, "maximize")


def test_score_fills_accuracy_and_loss():
    res = run(returning(Score(0.9, accuracy=0.9, loss=torch.tensor(0.3))), value_range=(0, 1))
    assert res.status == "ok"
    assert (res.value, res.fitness, res.val_accuracy) == (0.9, 0.9, 0.9)
    assert res.val_loss == pytest.approx(0.3)
    assert run(returning(Score("x"))).status == "error"
    assert run(returning(Score(1.0, loss=math.nan))).status == "diverged"


def test_value_outside_the_range_is_an_error():
    res = run(returning(1.5), value_range=(0, 1))
    assert res.status == "error" and "outside value_range" in res.message


def test_minimised_number_is_the_val_loss():
    res = run(returning(2.0), direction="minimize")
    assert res.status == "ok" and res.direction == "minimize"
    assert res.val_loss == 2.0 and res.fitness == pytest.approx(0.5 / 3)


# ---------------------------------------------------------------------------------- reports
def reporting(*pairs):
    def objective(trial: Trial) -> float:
        for step, value in pairs:
            trial.report(step, value)
        return 1.0
    return objective


def test_non_finite_report_is_diverged_at_once():
    res = run(reporting((0, 1.0), (1, math.nan), (2, 1.0)))
    assert res.status == "diverged" and "reported value nan at step 1" in res.message
    assert HERE in res.message  # where it stopped


def test_decreasing_step_is_an_error():
    res = run(reporting((3, 1.0), (2, 1.0)))
    assert res.status == "error" and "must not decrease" in res.message


def test_float_step_is_a_type_error():
    res = run(reporting((0.5, 3)))
    assert res.status == "error" and res.message.startswith("TypeError: report(step, value)")
    assert f"(at {HERE}:" in res.message.splitlines()[0]


def swallowing_bad_report(trial: Trial) -> float:
    with contextlib.suppress(TypeError):  # a user hiding the mistake
        trial.report(0.5, 3)  # type: ignore[arg-type]
    return 1.0


def test_a_swallowed_bad_report_is_still_an_error():
    res = run(swallowing_bad_report)
    assert res.status == "error" and "TypeError" in res.message


def test_divergence_factor_when_minimising_from_a_positive_value():
    pairs = ((0, 1.0), (1, 6.0))
    res = run(reporting(*pairs), direction="minimize")
    assert res.status == "diverged" and "5.0 x first value" in res.message
    assert run(reporting(*pairs)).status == "ok"  # maximising: no factor rule
    assert run(reporting((0, -1.0), (1, 60.0)), direction="minimize").status == "ok"


def test_no_report_is_scored_on_the_return_value():
    res = run(returning(0.125))
    assert res.status == "ok" and res.value == 0.125 and res.train_loss_curve == []


def test_reports_fill_the_curve_by_step():
    """The curve bins the budget's steps (50 bins of 4 here), so it lines up with any other
    run of the task; a bin no report fell in is empty, and reports past the budget fall in
    the last bin."""
    res = run(reporting(*((i, float(i)) for i in range(200))), steps=200)
    assert res.status == "ok" and len(res.train_loss_curve) == 50
    assert res.train_loss_curve[0] == pytest.approx(1.5)
    sparse = run(reporting((0, 1.0), (9, 3.0), (500, 7.0)), steps=200).train_loss_curve
    assert sparse[:3] == [1.0, None, 3.0] and sparse[-1] == 7.0 and len(sparse) == 50


# ---------------------------------------------------------------------------------- time limit
def sleeping(trial: Trial) -> float:
    time.sleep(120)
    return 1.0


def sleeping_in_try(trial: Trial) -> float:
    try:
        time.sleep(120)
    except Exception:  # noqa: BLE001 - the point: it must not swallow the stop
        return 1.0
    return 2.0


def busy(trial: Trial) -> float:
    while True:
        pass


def busy_swallowing_everything(trial: Trial) -> float:
    try:
        while True:
            pass
    except BaseException:  # noqa: BLE001 - even this cannot turn a stop into a score
        return 1.0


@pytest.mark.parametrize("objective", [sleeping, sleeping_in_try, busy,
                                       busy_swallowing_everything])
def test_time_limit(objective):
    t = time.perf_counter()
    res = run(objective, time_limit_s=1.0)
    assert time.perf_counter() - t < STOPPED_WITHIN_S
    assert res.status == "timeout" and res.fitness == WORST_FITNESS
    assert res.message.startswith("time limit 1s hit after 0 steps")
    import signal

    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL  # restored
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_time_limit_off_the_main_thread():
    out: list[SeedResult] = []
    t = time.perf_counter()
    worker = threading.Thread(target=lambda: out.append(run(busy, time_limit_s=1.0)))
    worker.start()
    worker.join(60)
    assert not worker.is_alive()
    assert time.perf_counter() - t < STOPPED_WITHIN_S
    assert out[0].status == "timeout"
    time.sleep(0.1)  # nothing pending is left for the thread that ran it
    assert not any(t.name == "evoopt-trial-watchdog" for t in threading.enumerate())


def test_steps_are_checked_against_the_deadline():
    def stepping(trial: Trial) -> float:
        model = torch.nn.Linear(2, 1)
        opt = trial.make_optimizer(model.parameters())
        for _ in range(trial.total_steps):
            time.sleep(0.3)
            model(torch.ones(1, 2)).sum().backward()
            opt.step()
        return 1.0

    res = ObjectiveRunner(stepping, name="guards", steps=10, time_limit_s=0.5,
                          device="cpu").evaluate(ADAM, 0)
    assert res.status == "timeout" and 0 < res.steps < 10


_FILLS: list[int] = []


def caching(trial: Trial) -> float:
    def fill() -> float:
        _FILLS.append(1)
        time.sleep(1.2)
        return float(torch.rand(()).item())  # the global RNG inside a fill: isolated

    x = trial.cache("slow", fill)
    _FIRST_WEIGHTS.append(torch.nn.Linear(3, 1).weight.detach().clone())
    return x


def test_cache_fill_time_is_not_counted():
    clear_cache("guards")
    _FILLS.clear()
    _FIRST_WEIGHTS.clear()
    first = run(caching, time_limit_s=1.0)
    second = run(caching, time_limit_s=1.0)
    assert first.status == second.status == "ok" and first.value == second.value
    assert len(_FILLS) == 1 and first.train_time_s < 0.5
    assert torch.equal(_FIRST_WEIGHTS[0], _FIRST_WEIGHTS[1])  # the fill did not shift the seed


# ---------------------------------------------------------------------------------- budget
def stepping_once_more(trial: Trial) -> float:
    model = torch.nn.Linear(2, 1)
    opt = trial.make_optimizer(model.parameters())
    for _ in range(trial.total_steps + 1):
        opt.zero_grad()
        trial.backward(model(torch.ones(1, 2)).sum())
        opt.step()
    return 1.0


def test_one_step_too_many_is_an_error():
    res = run(stepping_once_more, steps=3)
    assert res.status == "error" and "must not buy budget" in res.message
    assert res.steps == 3


def two_optimizers(trial: Trial) -> float:
    a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    opt_a = trial.make_optimizer(a.parameters())
    opt_b = trial.make_optimizer(b.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt_a, lambda s: 0.5)
    for _ in range(trial.total_steps):
        for opt, m in ((opt_a, a), (opt_b, b)):
            opt.zero_grad()
            trial.backward(m(torch.ones(1, 2)).pow(2).sum())
            opt.step()
        sched.step()
    return 1.0


def test_two_optimizers_each_get_the_budget():
    res = run(two_optimizers, steps=3)
    assert res.status == "ok" and res.steps == 3


def test_curvature_optimizer_gets_graph_gradients():
    res = run(train_linear, genome=seed_genome("adahessian"), steps=3)
    assert res.status == "ok" and res.create_graph and res.steps == 3


# ---------------------------------------------------------------------------------- threads
def changing_threads(trial: Trial) -> float:
    torch.set_num_threads(7)
    return 1.0


@pytest.mark.filterwarnings("ignore:the objective changed torch's CPU threads")
def test_changed_threads_are_restored_and_recorded():
    before = torch.get_num_threads()
    res = run(changing_threads)
    assert res.status == "ok" and res.threads == 7
    assert torch.get_num_threads() == before


def precision(trial: Trial) -> float:
    with trial.autocast():
        on = torch.is_autocast_enabled("cpu")
    return float(on) + 2 * float(torch.is_grad_enabled())


def test_autocast_is_off_on_the_cpu_unless_asked():
    assert run(precision).value == 2.0
    assert run(precision, bf16=True).value == 3.0
    assert not torch.is_autocast_enabled("cpu")


# ---------------------------------------------------------------------------------- seeds
_FIRST_WEIGHTS: list[torch.Tensor] = []


def capturing(trial: Trial) -> float:
    model = torch.nn.Linear(4, 1)
    _FIRST_WEIGHTS.append(model.weight.detach().clone())
    x = torch.randn(8, 4, generator=trial.generator("data"))
    noise = float(trial.numpy_rng("noise").normal()) + random.random()
    opt = trial.make_optimizer(model.parameters())
    for _ in range(trial.total_steps):
        opt.zero_grad()
        trial.backward(model(x).pow(2).mean())
        opt.step()
    return model(x).pow(2).mean().item() + noise


def test_common_random_numbers():
    _FIRST_WEIGHTS.clear()
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = run(capturing, seed=0)
    other = run(capturing, seed=1)
    b = run(capturing, seed=0, genome=SGD)
    again = run(capturing, seed=0)
    assert a.status == b.status == again.status == other.status == "ok"
    assert a.value == again.value  # the same seed: the same value, whatever ran between
    assert a.value != b.value
    w_a, w_other, w_b, w_again = _FIRST_WEIGHTS
    assert torch.equal(w_a, w_b) and torch.equal(w_a, w_again)  # same init across genomes
    assert not torch.equal(w_a, w_other)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's stream untouched


def test_a_real_minimisation_trains():
    adam = run(train_linear, steps=60, genome=dataclasses.replace(ADAM, lr=0.05))
    sgd = run(train_linear, steps=60, genome=SGD)
    for res in (adam, sgd):
        assert res.status == "ok" and res.direction == "minimize" and res.steps == 60
        assert res.train_loss_curve[-1] < 0.5 * res.train_loss_curve[0]
        assert res.val_loss == res.value
        assert res.fitness == canonical_fitness(res.value, "minimize")
        assert res.train_time_s > 0 and res.wall_time_s >= res.train_time_s
    assert (adam.value < sgd.value) == (adam.fitness > sgd.fitness)
    assert adam.to_dict()["value"] == adam.value


# ---------------------------------------------------------------------------------- runner
def test_direction_resolution():
    assert ObjectiveRunner(train_linear, name="t", steps=1).direction == "minimize"
    assert ObjectiveRunner(returning(1), name="t", steps=1).direction == "maximize"
    assert ObjectiveRunner(returning(1), name="t", steps=1,
                           direction="minimize").direction == "minimize"
    with pytest.raises(ValueError, match="^direction"):
        ObjectiveRunner(train_linear, name="t", steps=1, direction="maximize")
    with pytest.raises(ValueError, match="^direction"):
        ObjectiveRunner(returning(1), name="t", steps=1, direction="down")


def test_trial_attributes():
    seen: dict = {}

    def looking(trial: Trial) -> float:
        seen.update(steps=trial.total_steps, seed=trial.seed, split=trial.split,
                    device=trial.device, threads=trial.threads, params=trial.params)
        with pytest.raises(TypeError):
            trial.params["width"] = 1  # type: ignore[index]
        return float(trial.should_stop())

    looking.params = {"width": 8, "depth": 2}  # type: ignore[attr-defined]
    res = run(looking, seed=4, split="test", params={"width": 16})
    assert res.status == "ok" and res.split == "test" and res.seed == 4
    assert seen == {"steps": 5, "seed": 4, "split": "test", "device": torch.device("cpu"),
                    "threads": 1, "params": {"width": 16, "depth": 2}}
    assert run(looking, split="train").status == "error"


# ---------------------------------------------------------------------------------- orientation
def test_canonical_fitness_is_monotone_and_inside_the_unit_interval():
    values = [-1e300, -1e8, -1e3, -2.5, -1e-9, 0.0, 1e-9, 0.5, 1.0, 2.3, 1e4, 1e8, 1e300]
    up = [canonical_fitness(v, "maximize") for v in values]
    down = [canonical_fitness(v, "minimize") for v in values]
    assert all(a < b for a, b in zip(up, up[1:], strict=False))
    assert all(a > b for a, b in zip(down, down[1:], strict=False))
    assert all(0.0 < f < 1.0 for f in up + down)
    assert canonical_fitness(0.0, "minimize") == 0.5
    for v in (-3.0, -0.2, 0.7, 40.0):
        for d, x in (("maximize", v), ("minimize", -v)):
            assert canonical_fitness(v, d) == pytest.approx(0.5 + 0.5 * x / (1 + abs(x)))
    # a 10 % better loss of 0.010 is still resolved
    assert canonical_fitness(0.009, "minimize") > canonical_fitness(0.010, "minimize")


def test_canonical_fitness_with_a_range():
    assert canonical_fitness(3.0, "maximize", (2, 6)) == 0.25
    assert canonical_fitness(3.0, "minimize", (2, 6)) == 0.75
    assert canonical_fitness(6.0, "minimize", (2, 6)) == 0.0
    rng = np.random.default_rng(0)
    for v in [0.0, 1.0, *rng.random(100).tolist()]:
        f = canonical_fitness(v, "maximize", (0, 1))
        assert f == v and type(f) is float  # the built-ins' identity, bit for bit
    with pytest.raises(ValueError, match="outside value_range"):
        canonical_fitness(1.0000001, "maximize", (0, 1))
    with pytest.raises(ValueError, match="value_range"):
        canonical_fitness(0.5, "maximize", (1, 0))
    with pytest.raises(ValueError, match="^direction"):
        canonical_fitness(0.5, "max")
    with pytest.raises(ValueError, match="finite"):
        canonical_fitness(math.nan, "maximize")
    assert DIRECTIONS == ("maximize", "minimize")


def test_time_limit_when_sigalrm_is_taken():
    import signal

    def mine(signum, frame):  # someone else's handler: the watchdog falls back to a thread
        raise AssertionError("not ours")

    previous = signal.signal(signal.SIGALRM, mine)
    try:
        t = time.perf_counter()
        res = run(busy, time_limit_s=1.0)
        assert time.perf_counter() - t < STOPPED_WITHIN_S
        assert res.status == "timeout" and f"(at {HERE}:" in res.message
        assert signal.getsignal(signal.SIGALRM) is mine
    finally:
        signal.signal(signal.SIGALRM, previous)
