"""The runtime helpers of generated optimizer code (evoopt/genome/runtime.py): what each one
computes, that the module stays importable into a standalone export (torch and typing only), and
that vendoring a helper brings every helper it calls."""

from __future__ import annotations

import ast
import builtins
import inspect
import symtable
from pathlib import Path

import pytest
import torch

from evoopt.genome import runtime
from evoopt.genome.program import helper_source, role_test, vendor
from evoopt.genome.runtime import (
    USES,
    _by_step,
    _by_step_and_role,
    _clip_grads_by_global_norm,
    _hessian_diagonals,
    _hutchinson_diagonals,
    _orthogonalize,
    _probe_seed,
)

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
SHAPES = [(8, 5), (5, 8), (6, 6), (1, 7), (7, 1), (16, 3, 3, 3)]
#: The names a vendored helper may take from the module it is vendored into.
MODULE_GLOBALS = {"torch": torch, "Tensor": torch.Tensor, "math": __import__("math")}


def _as_matrix(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(len(t), -1)


def _reference_newton_schulz(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The quintic Newton–Schulz iteration written out plainly, in float64: X <- a X + (b A +
    c A^2) X with A = X X^T, on the wide orientation of the (out, -1) matrix, normalized to
    Frobenius norm 1, then scaled by sqrt(max(1, rows / cols))."""
    a, b, c = NS_COEFFICIENTS
    x = _as_matrix(g).double()
    rows, cols = x.shape
    if rows > cols:
        x = x.T
    x = x / x.norm().clamp(min=1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    if rows > cols:
        x = x.T
    return x * max(1, rows / cols) ** 0.5


# ----------------------------------------------------------------------------------------------
# _orthogonalize
@pytest.mark.parametrize("shape", SHAPES)
def test_orthogonalize_agrees_with_a_plain_newton_schulz(shape: tuple[int, ...]) -> None:
    g = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    out = _orthogonalize(g)
    assert out.shape == g.shape and out.dtype == g.dtype
    ref = _reference_newton_schulz(g)
    # the helper iterates in bfloat16 (8 mantissa bits), the reference in float64
    assert (_as_matrix(out).double() - ref).norm() / ref.norm() < 0.05


@pytest.mark.parametrize("shape", SHAPES)
def test_orthogonalize_is_close_to_orthogonal(shape: tuple[int, ...]) -> None:
    """Five quintic steps bring every singular value of the (unscaled) result into about
    (0.7, 1.1): near U V^T, not equal to it, as Muon intends."""
    g = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    rows, cols = _as_matrix(g).shape
    singular = torch.linalg.svdvals(_as_matrix(_orthogonalize(g)).double())
    singular /= max(1, rows / cols) ** 0.5
    assert singular.min() > 0.5 and singular.max() < 1.5


@pytest.mark.parametrize("shape", [s for s in SHAPES if len(s) == 2] + [(16, 27)])
def test_orthogonalize_is_torch_muons_update(shape: tuple[int, ...]) -> None:
    """Bit for bit torch.optim.Muon's orthogonalized update times its "original" lr adjustment
    (the private function it calls; skipped where this torch has none)."""
    muon = pytest.importorskip("torch.optim._muon")
    zeropower = getattr(muon, "_zeropower_via_newtonschulz", None)
    adjust = getattr(muon, "_adjust_lr", None)
    if zeropower is None or adjust is None:
        pytest.skip("this torch has no torch.optim._muon._zeropower_via_newtonschulz")
    g = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    expected = zeropower(g, NS_COEFFICIENTS, 5, 1e-7).to(g.dtype).mul_(
        adjust(1.0, "original", g.shape))
    assert torch.equal(_orthogonalize(g), expected)


def test_orthogonalize_keeps_dtype_and_returns_an_empty_update_as_it_is() -> None:
    g = torch.randn(4, 2, 3, dtype=torch.float64)
    assert _orthogonalize(g).dtype == torch.float64
    empty = torch.zeros(0, 5)
    assert _orthogonalize(empty) is empty


# ----------------------------------------------------------------------------------------------
# _clip_grads_by_global_norm
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_matches_clip_grad_norm(foreach: bool, max_norm: float) -> None:
    gen = torch.Generator().manual_seed(4)
    grads = [torch.randn(3, 4, generator=gen), torch.randn(5, generator=gen),
             torch.randn(2, 2, 2, generator=gen)]
    originals = [g.clone() for g in grads]
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=foreach)
    clipped = _clip_grads_by_global_norm(grads, max_norm, foreach=foreach)
    for c, p in zip(clipped, params, strict=True):
        torch.testing.assert_close(c, p.grad, rtol=1e-6, atol=0.0)
    assert all(torch.equal(g, o) for g, o in zip(grads, originals, strict=True))  # copies
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(c) for c in clipped]))
    assert total <= max_norm * (1 + 1e-6)


# ----------------------------------------------------------------------------------------------
# _hutchinson_diagonals, _probe_seed, _hessian_diagonals
def _graph_grads(params: list[torch.Tensor], curvature: list[torch.Tensor]) -> list[torch.Tensor]:
    """Gradients (with their graph) of sum(h * p^2) / 2 + sum(p): Hessian diag(h)."""
    loss = sum(((h * p.square()).sum() / 2 + p.sum() for p, h in zip(params, curvature,
                                                                     strict=True)),
               torch.tensor(0.0))
    return list(torch.autograd.grad(loss, params, create_graph=True))


def test_hutchinson_is_exact_on_a_diagonal_hessian_and_deterministic_for_a_seed() -> None:
    gen = torch.Generator().manual_seed(5)
    params = [torch.randn(4, 3, generator=gen, requires_grad=True),
              torch.randn(6, generator=gen, requires_grad=True)]
    curvature = [torch.rand(4, 3, generator=gen) + 0.5, torch.rand(6, generator=gen) + 0.5]
    grads = _graph_grads(params, curvature)
    first = _hutchinson_diagonals(params, grads, [11, 12])
    # z * (diag(h) z) = h z^2 = h for every Rademacher probe z
    for d, h in zip(first, curvature, strict=True):
        torch.testing.assert_close(d, h)
    again = _hutchinson_diagonals(params, _graph_grads(params, curvature), [11, 12])
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_hutchinson_probes_depend_on_the_seed_only() -> None:
    """Off the diagonal the estimate is noisy: equal seeds give equal estimates, other seeds
    other ones."""
    gen = torch.Generator().manual_seed(6)
    p = torch.randn(8, generator=gen, requires_grad=True)
    mixing = torch.randn(8, 8, generator=gen)

    def estimate(seed: int) -> torch.Tensor:
        (g,) = torch.autograd.grad((p @ mixing @ p) / 2, [p], create_graph=True)
        return _hutchinson_diagonals([p], [g], [seed])[0]

    assert torch.equal(estimate(3), estimate(3))
    assert not torch.equal(estimate(3), estimate(4))


def test_hutchinson_averages_conv_kernels_spatially() -> None:
    gen = torch.Generator().manual_seed(7)
    p = torch.randn(2, 3, 2, 2, generator=gen, requires_grad=True)
    h = torch.rand(2, 3, 2, 2, generator=gen) + 0.5
    (d,) = _hutchinson_diagonals([p], _graph_grads([p], [h]), [0])
    torch.testing.assert_close(d, h.mean(dim=(2, 3), keepdim=True).expand_as(h))


def test_hutchinson_needs_a_graph() -> None:
    p = torch.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="create_graph=True"):
        _hutchinson_diagonals([p], [torch.ones(3)], [0])


def test_probe_seed_is_a_nonnegative_int64_of_all_its_inputs() -> None:
    seeds = {_probe_seed(s, i, t) for s in (0, 1, 2**62) for i in (0, 1, 7) for t in (1, 2)}
    assert len(seeds) == 18 and all(0 <= s < 2**63 for s in seeds)


def test_hessian_diagonals_seeds_each_probe_by_group_seed_index_and_step() -> None:
    gen = torch.Generator().manual_seed(8)
    params = [torch.randn(3, generator=gen, requires_grad=True) for _ in range(3)]
    mixing = torch.randn(3, 3, generator=gen)
    opt = torch.optim.SGD([{"params": params[:2], "seed": 5}, {"params": params[2:], "seed": 9}],
                          lr=0.1)
    opt.state[params[2]]["step"] = torch.tensor(4.0)

    def graph_grads() -> list[torch.Tensor]:  # params[0] gets no gradient
        loss = sum((p @ mixing @ p) / 2 for p in params[1:])
        return list(torch.autograd.grad(loss, params[1:], create_graph=True))

    for p, g in zip(params[1:], graph_grads(), strict=True):
        p.grad = g
    diagonals = _hessian_diagonals(opt)
    assert list(diagonals) == params[1:]
    expected = _hutchinson_diagonals(params[1:], graph_grads(),
                                     [_probe_seed(5, 1, 1), _probe_seed(9, 2, 5)])
    for p, e in zip(params[1:], expected, strict=True):
        assert torch.equal(diagonals[p], e)
    assert _hessian_diagonals(torch.optim.SGD([torch.zeros(1, requires_grad=True)])) == {}


# ----------------------------------------------------------------------------------------------
# _by_step, _by_step_and_role
def test_by_step_is_one_part_unless_a_gradient_started_late() -> None:
    params = [torch.zeros(2), torch.zeros(3)]
    grads = [torch.ones(2), torch.ones(3)]
    steps = [torch.tensor(3.0), torch.tensor(3.0)]
    ((step, part),) = _by_step(steps, params, grads)
    assert step == 3.0 and part == (params, grads)
    steps[1] = torch.tensor(1.0)
    parts = _by_step(steps, params, grads)
    assert [(s, [len(x) for x in p]) for s, p in parts] == [(3.0, [1, 1]), (1.0, [1, 1])]
    assert parts[0][1][0][0] is params[0] and parts[1][1][1][0] is grads[1]


def test_by_step_and_role_splits_matrices_from_the_others() -> None:
    params = [torch.zeros(2, 2), torch.zeros(3), torch.zeros(2, 1, 1), torch.zeros(())]
    parts = _by_step_and_role(None, params)
    assert [(s, m, [p.dim() for p in part[0]]) for s, m, part in parts] == [
        (0.0, True, [2, 3]), (0.0, False, [1, 0])]
    steps = [torch.tensor(2.0), torch.tensor(2.0), torch.tensor(1.0), torch.tensor(2.0)]
    keys = [(s, m) for s, m, _ in _by_step_and_role(steps, params)]
    assert keys == [(2.0, True), (2.0, False), (1.0, True)]


def test_by_step_and_role_tests_the_matrix_role_as_program_does() -> None:
    """The helper writes out ROLES["matrix"]'s test; a change to the role must change both."""
    assert f", {role_test('matrix', 'p.dim()')})" in "\n".join(helper_source("_by_step_and_role"))


# ----------------------------------------------------------------------------------------------
# The module and vendoring
def test_runtime_imports_only_torch_math_and_typing() -> None:
    tree = ast.parse(Path(runtime.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom)}
    assert imported <= {"torch", "math", "typing", "__future__"}, imported
    relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    assert not relative


def test_every_function_of_runtime_but_closure_is_a_registered_helper() -> None:
    functions = {name for name, f in vars(runtime).items()
                 if inspect.isfunction(f) and f.__module__ == runtime.__name__}
    assert functions - {"closure"} == set(USES)
    assert {"_orthogonalize", "_hutchinson_diagonals", "_probe_seed", "_hessian_diagonals",
            "_clip_grads_by_global_norm", "_by_step_and_role", "_by_step"} <= set(USES)


@pytest.mark.parametrize("name", sorted(USES))
def test_vendored_source_is_the_def_without_its_decorator(name: str) -> None:
    lines = helper_source(name)
    assert lines[0].startswith(f"def {name}(")
    assert not any(line.lstrip().startswith("@") for line in lines)
    assert inspect.getsource(getattr(runtime, name)).rstrip("\n").endswith("\n".join(lines))


def _unresolved(source: str, namespace: dict[str, object]) -> set[str]:
    """The global names the functions of ``source`` (and the module level) read that neither
    ``namespace`` nor builtins define."""
    needed: set[str] = set()
    tables = [symtable.symtable(source, "<vendored>", "exec")]
    while tables:
        table = tables.pop()
        tables += table.get_children()
        for sym in table.get_symbols():
            module_level = table.get_type() == "module"
            if sym.is_referenced() and (not sym.is_assigned() if module_level
                                        else sym.is_global()):
                needed.add(sym.get_name())
    return {n for n in needed if n not in namespace and not hasattr(builtins, n)}


@pytest.mark.parametrize("name", sorted(USES))
def test_a_helpers_vendored_closure_runs_standalone(name: str) -> None:
    """The vendored text of one helper exec's in a namespace holding only what a generated
    module provides (torch, Tensor, math), and every global it reads is defined there: its
    ``uses`` are complete."""
    source = "\n".join(vendor(name))
    namespace: dict[str, object] = dict(MODULE_GLOBALS)
    exec(compile(source, f"<vendored {name}>", "exec"), namespace)  # noqa: S102
    assert callable(namespace[name])
    assert _unresolved(source, namespace) == set()


def test_a_missing_use_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above fails when a helper's uses lack a helper it calls."""
    monkeypatch.setitem(USES, "_hessian_diagonals", ("_probe_seed",))
    source = "\n".join(vendor("_hessian_diagonals"))
    namespace: dict[str, object] = dict(MODULE_GLOBALS)
    exec(compile(source, "<vendored>", "exec"), namespace)  # noqa: S102
    assert _unresolved(source, namespace) == {"_hutchinson_diagonals"}


def test_vendoring_orders_uses_first_and_each_helper_once() -> None:
    assert runtime.closure("_hessian_diagonals", "_probe_seed", "_by_step") == [
        "_hutchinson_diagonals", "_probe_seed", "_hessian_diagonals", "_by_step"]
    text = vendor("_probe_seed", "_hessian_diagonals")
    assert [line for line in text if line.startswith("def ")] == [
        "def _probe_seed(seed: int, index: int, step: int) -> int:", "def _hutchinson_diagonals(",
        "def _hessian_diagonals(optimizer: torch.optim.Optimizer) -> dict[Tensor, Tensor]:"]
    with pytest.raises(ValueError, match="not a runtime helper"):
        helper_source("closure")


def test_a_helper_must_use_registered_helpers() -> None:
    def _unregistered() -> None: ...

    with pytest.raises(ValueError, match="unregistered"):
        runtime.helper(uses=(_unregistered,))
    with pytest.raises(ValueError, match="registered twice"):
        runtime.helper()(_by_step)


def test_an_exported_class_may_not_take_a_helpers_name() -> None:
    """Every helper an exported module may vendor is among the names its class may not take
    (``_orthogonalize`` was missing before the helpers had a registry)."""
    from evoopt.genome.export import MODULE_NAMES, check_class_name

    assert set(USES) <= MODULE_NAMES
    with pytest.raises(ValueError, match="already uses"):
        check_class_name("_orthogonalize")
