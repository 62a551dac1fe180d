"""Golden identities of today's genome language (step 0 of docs/design-chain-of-blocks.md §7).

Before genomes become chains of blocks, this pins what must not change for every shipped seed,
the reference genome, the genomes in ``tests/data/``, 40 random genomes and hand-written genomes
for the options sampling rarely draws (parameter roles, curvature, factored moments,
transforms, canonical-form corner cases). Per genome, ``tests/data/legacy_identities/*.json``
holds its file-layout dict and:

* ``identity``: hash, structure, canonical dict, formula, ``needs_graph``, ``has_schedule``,
  the exported arguments (in order, with defaults), the state keys, the behaviour hash;
* ``digests``: sha256 of the rendered step functions and of the exported module (the evoopt
  version blanked), which steps 1–2 may re-record deliberately;
* ``trajectories``: fingerprints of the float64 parameters after 60 steps of
  :func:`tests.optim_problem.trajectory` with two param groups (the second at half the lr) and
  a bias whose gradient starts at step 4, on the per-tensor and foreach paths. The exported
  class must match the interpreter bit for bit on both.

A fingerprint is the sha256 of the parameters' bytes plus 8 fixed random projections. On the
machine kind that recorded them (same torch, CPU architecture and capability, CPU model and
libc; one intra-op thread) trajectories must be bit-identical. Elsewhere BLAS kernels and libm
may round differently, and 60 steps amplify that, so the projections are compared with a
relative tolerance of max(1e-12, 1000·s), where s is the genome's recorded sensitivity: the
relative change of its trajectory when every initial parameter moves up by one ulp.

Record everything (then review the diff: every change is a change of behaviour)::

    EVOOPT_RECORD_IDENTITIES=1 python -m tests.test_legacy_identities

or only the text digests, keeping identities and trajectories::

    EVOOPT_RECORD_IDENTITIES=digests python -m tests.test_legacy_identities
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import platform
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from evoopt import __version__
from evoopt.genome import REGISTRY, Genome, GenomeOptimizer, load_genome, seed_genome, seed_names
from evoopt.genome.behaviour import behaviour_hash
from evoopt.genome.export import export_genome, load_exported_class
from evoopt.genome.program import render_step_functions
from evoopt.genome.sampling import random_genome
from evoopt.paths import GENOMES_DIR
from tests.optim_problem import relative_error, trajectory

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data" / "legacy_identities"
FILES = ("files", "random", "handwritten")
STEPS, LATE_START, SECOND_GROUP_LR = 60, 4, 0.5
RANDOM_SEEDS = range(40)
PROJECTIONS = 8
CLASS_NAME = "Exported"
MIN_RTOL, SENSITIVITY_FACTOR = 1e-12, 1e3

# ----------------------------------------------------------------------------------------------
# Hand-written genomes: options random_genome draws rarely or never.
_EMA = {"kind": "ema", "beta": 0.9, "bias_correction": True}
_ADAM = {"kind": "adam", "beta": 0.999, "eps": 1e-8}
_M_NORM = {"kind": "momentum", "weight": 1.0, "normalize": True}
_MUON = {"lr": 0.02, "momentum": {"kind": "ema", "beta": 0.95, "bias_correction": False},
         "transform": {"kind": "orthogonalize"}, "terms": [{"kind": "nesterov", "weight": 1.0}]}
_ADAMW_RULES = {"lr": 3e-4, "momentum": _EMA, "second_moment": _ADAM, "terms": [_M_NORM]}

HANDWRITTEN: dict[str, tuple[str, dict[str, Any]]] = {
    "orthogonalize-unsplit": (
        "orthogonalize with no [matrix] split (vectors' update untouched); weight 2 is not "
        "folded past a scale-free transform",
        {"lr": 0.02, "momentum": {"kind": "ema", "beta": 0.95, "bias_correction": False},
         "transform": {"kind": "orthogonalize"},
         "terms": [{"kind": "nesterov", "weight": 2.0}]}),
    "matrix-adafactor": (
        "[matrix] with factored second moment and relative_step (its vector branch dead); "
        "matrix_ argument prefix",
        {**_ADAMW_RULES,
         "matrix": {"lr": 1e-2, "second_moment": {"kind": "factored", "decay_rate": -0.8},
                    "transform": {"kind": "relative_step", "clip_threshold": 1.0, "eps2": 1e-3},
                    "terms": [{"kind": "grad", "weight": 1.0, "normalize": True}]}}),
    "matrix-factored-for-others": (
        "factored second moment for the others only (its matrix branch dead); heavy-ball SGD "
        "for matrices",
        {"lr": 1e-2, "second_moment": {"kind": "factored", "decay_rate": -0.6},
         "terms": [{"kind": "grad", "weight": 1.0, "normalize": True}],
         "matrix": {"lr": 0.05, "momentum": {"kind": "heavy_ball", "beta": 0.9},
                    "terms": [{"kind": "momentum", "weight": 1.0}]}}),
    "matrix-curvature": (
        "curvature (hessian, power 0.5) in the matrix role only: needs_graph via [matrix]",
        {**_ADAMW_RULES,
         "matrix": {"lr": 0.05, "momentum": _EMA,
                    "second_moment": {"kind": "hessian", "beta": 0.999, "eps": 1e-4,
                                      "power": 0.5},
                    "terms": [_M_NORM]}}),
    "matrix-same-as-others": (
        "[matrix] rules equal to the others': canonically no split (adam's hash)",
        {"lr": 1e-3, "momentum": _EMA, "second_moment": _ADAM, "terms": [_M_NORM],
         "matrix": {"lr": 1e-3, "momentum": _EMA, "second_moment": _ADAM,
                    "terms": [_M_NORM]}}),
    "matrix-lr-only": (
        "[matrix] differing only in lr: the split stays",
        {"lr": 1e-3, "momentum": _EMA, "second_moment": _ADAM, "terms": [_M_NORM],
         "matrix": {"lr": 3e-3, "momentum": _EMA, "second_moment": _ADAM,
                    "terms": [_M_NORM]}}),
    "matrix-schedules-and-diff": (
        "both roles with grad_diff (prev_grad and exp_avg_diff shared alike), different "
        "schedules per role, adan second moment, proximal decay",
        {"lr": 2e-3, "schedule": {"kind": "linear_warmup", "warmup_fraction": 0.1},
         "weight_decay": {"kind": "proximal", "value": 0.01},
         "momentum": {"kind": "ema", "beta": 0.98, "bias_correction": True},
         "grad_diff": {"kind": "ema", "beta": 0.92, "bias_correction": True},
         "second_moment": {"kind": "adan", "beta": 0.99, "eps": 1e-8, "diff_coef": 0.92},
         "terms": [_M_NORM, {"kind": "grad_diff", "weight": 0.5, "normalize": True}],
         "matrix": {"lr": 0.01,
                    "schedule": {"kind": "cosine", "final_lr_fraction": 0.1},
                    "momentum": {"kind": "heavy_ball", "beta": 0.8},
                    "grad_diff": {"kind": "ema", "beta": 0.8, "bias_correction": False},
                    "terms": [{"kind": "grad_diff", "weight": 1.0},
                              {"kind": "momentum", "weight": 0.3}]}}),
    "matrix-lamb-clip": (
        "top-level clip over both roles; LAMB (update decay, trust ratio) for matrices; "
        "coupled decay and update momentum for the others",
        {"lr": 1e-3, "clip": {"kind": "global_norm", "max_norm": 1.0},
         "weight_decay": {"kind": "coupled", "value": 0.01}, "momentum": _EMA,
         "second_moment": {"kind": "rmsprop", "beta": 0.99, "eps": 1e-8},
         "transform": {"kind": "momentum", "beta": 0.9}, "terms": [_M_NORM],
         "matrix": {"lr": 2e-3, "weight_decay": {"kind": "update", "value": 0.01},
                    "momentum": _EMA, "second_moment": _ADAM,
                    "transform": {"kind": "trust_ratio"}, "terms": [_M_NORM]}}),
    "matrix-muon-lion": (
        "Muon for matrices, Lion (a pre_state term) with decoupled decay for the others",
        {"lr": 1e-4, "weight_decay": {"kind": "decoupled", "value": 0.1},
         "momentum": {"kind": "ema", "beta": 0.99, "bias_correction": False},
         "terms": [{"kind": "lion", "weight": 1.0, "beta": 0.9}], "matrix": _MUON}),
    "hessian-power": (
        "top-level curvature with hessian power 0.5, a nesterov term and a warmup-cosine "
        "schedule",
        {"lr": 0.05,
         "schedule": {"kind": "warmup_cosine", "warmup_fraction": 0.1,
                      "final_lr_fraction": 0.05},
         "momentum": _EMA,
         "second_moment": {"kind": "hessian", "beta": 0.999, "eps": 1e-4, "power": 0.5},
         "terms": [{"kind": "nesterov", "weight": 1.0, "normalize": True}]}),
    "nadam-twice": (
        "two nadam terms (argument and scalar-state suffixes), radam denominator",
        {"lr": 2e-3, "momentum": _EMA,
         "second_moment": {"kind": "radam", "beta": 0.999, "eps": 1e-8},
         "terms": [{"kind": "nadam", "weight": 1.0, "normalize": True, "momentum_decay": 4e-3},
                   {"kind": "nadam", "weight": 0.5, "normalize": False,
                    "momentum_decay": 0.02}]}),
    "nesterov-heavy-ball": (
        "nesterov over heavy-ball momentum (torch.optim.SGD's), normalized, with sign(m)",
        {"lr": 0.01, "momentum": {"kind": "heavy_ball", "beta": 0.9},
         "second_moment": {"kind": "rmsprop", "beta": 0.99, "eps": 1e-8},
         "terms": [{"kind": "nesterov", "weight": 1.0, "normalize": True},
                   {"kind": "sign_momentum", "weight": 0.1}]}),
    "nesterov-bias-corrected": (
        "nesterov over a bias-corrected EMA (bias_correction1_next) beside m̂ and g; amsgrad",
        {"lr": 1e-3, "momentum": _EMA,
         "second_moment": {"kind": "amsgrad", "beta": 0.999, "eps": 1e-8},
         "terms": [{"kind": "nesterov", "weight": 1.0, "normalize": True},
                   {"kind": "momentum", "weight": 0.2, "normalize": False},
                   {"kind": "grad", "weight": 0.3, "normalize": True}]}),
    "duplicate-kinds": (
        "repeated term kinds (merged, or kept apart by normalize: grad1_weight), a negative "
        "weight, a zero-weight term and the momentum it alone read (both dropped)",
        {"lr": 1e-3, "momentum": _EMA, "second_moment": _ADAM,
         "terms": [{"kind": "grad", "weight": 1.5, "normalize": True},
                   {"kind": "grad", "weight": -0.2, "normalize": False},
                   {"kind": "grad", "weight": 0.5, "normalize": True},
                   {"kind": "sign_grad", "weight": 0.41},
                   {"kind": "sign_grad", "weight": 0.32},
                   {"kind": "momentum", "weight": 0.0, "normalize": True}]}),
    "dead-state": (
        "momentum, grad_diff and second moment no term reads, and zero decay: all dropped",
        {"lr": 1e-3, "weight_decay": {"kind": "coupled", "value": 0.0},
         "momentum": {"kind": "heavy_ball", "beta": 0.9},
         "grad_diff": {"kind": "ema", "beta": 0.9, "bias_correction": True},
         "second_moment": {"kind": "centered", "beta": 0.99, "eps": 1e-8},
         "terms": [{"kind": "sign_grad", "weight": 1.0}]}),
    "fold-out-of-range": (
        "a weight whose fold would push lr past 10: the scale stays where it is",
        {"lr": 8.0, "weight_decay": {"kind": "decoupled", "value": 0.001},
         "momentum": {"kind": "ema", "beta": 0.9, "bias_correction": False},
         "second_moment": {"kind": "infinity_norm", "beta": 0.999, "eps": 1e-8},
         "terms": [{"kind": "momentum", "weight": 4.0, "normalize": True}]}),
    "fold-proximal": (
        "a folded weight divides proximal decay (lr_scaled); Adagrad's sum denominator",
        {"lr": 1e-3, "weight_decay": {"kind": "proximal", "value": 0.3},
         "second_moment": {"kind": "sum", "eps": 1e-10},
         "terms": [{"kind": "grad", "weight": 3.0, "normalize": True}]}),
    "update-decay-alone": (
        "decay added to the update with nothing transforming it: canonically decoupled, "
        "and folded",
        {"lr": 1e-3, "weight_decay": {"kind": "update", "value": 0.02}, "momentum": _EMA,
         "second_moment": _ADAM, "terms": [{**_M_NORM, "weight": 2.0}]}),
    "update-decay-with-momentum": (
        "decay added to the update, then update momentum (no alone_as); unnormalized terms",
        {"lr": 0.01, "weight_decay": {"kind": "update", "value": 0.01},
         "transform": {"kind": "momentum", "beta": 0.8},
         "terms": [{"kind": "grad", "weight": 1.0, "normalize": False},
                   {"kind": "sign_grad", "weight": 0.5}]}),
    "relative-step-scheduled": (
        "relative_step (step size min(lr_t, 1/√t)) under a schedule, factored moment with "
        "a first moment and coupled decay",
        {"lr": 0.01,
         "schedule": {"kind": "warmup_cosine", "warmup_fraction": 0.1,
                      "final_lr_fraction": 0.05},
         "weight_decay": {"kind": "coupled", "value": 0.001}, "momentum": _EMA,
         "second_moment": {"kind": "factored", "decay_rate": -0.5},
         "transform": {"kind": "relative_step", "clip_threshold": 2.0, "eps2": 1e-4},
         "terms": [_M_NORM]}),
    "adan-shared-diff": (
        "adan second moment and a grad_diff moment sharing one gradient difference; clip "
        "and linear decay",
        {"lr": 1e-3, "schedule": {"kind": "linear_decay", "final_lr_fraction": 0.1},
         "clip": {"kind": "global_norm", "max_norm": 0.5}, "momentum": _EMA,
         "grad_diff": {"kind": "ema", "beta": 0.9, "bias_correction": False},
         "second_moment": {"kind": "adan", "beta": 0.99, "eps": 1e-8, "diff_coef": 0.5},
         "terms": [_M_NORM, {"kind": "grad_diff", "weight": 0.7, "normalize": True},
                   {"kind": "grad", "weight": 0.1, "normalize": False}]}),
    "lion-decay-clip": (
        "lion beside sign(m), coupled decay, clip and warmup",
        {"lr": 1e-4, "schedule": {"kind": "linear_warmup", "warmup_fraction": 0.05},
         "clip": {"kind": "global_norm", "max_norm": 2.0},
         "weight_decay": {"kind": "coupled", "value": 0.01},
         "momentum": {"kind": "ema", "beta": 0.99, "bias_correction": False},
         "terms": [{"kind": "lion", "weight": 1.0, "beta": 0.95},
                   {"kind": "sign_momentum", "weight": 0.3}]}),
    "trust-ratio-scheduled": (
        "trust ratio with update decay under warmup; weight 2 kept (scale-free); adadelta",
        {"lr": 1e-3, "schedule": {"kind": "linear_warmup", "warmup_fraction": 0.2},
         "weight_decay": {"kind": "update", "value": 0.01}, "momentum": _EMA,
         "second_moment": {"kind": "adadelta", "beta": 0.9, "eps": 1e-6},
         "transform": {"kind": "trust_ratio"},
         "terms": [{**_M_NORM, "weight": 2.0},
                   {"kind": "grad", "weight": -0.5, "normalize": False}]}),
}


# ----------------------------------------------------------------------------------------------
# What is recorded.
def identity(genome: Genome) -> dict[str, Any]:
    """Everything that names or describes the genome, and its behaviour hash."""
    builder = genome.build()
    return {
        "hash": genome.hash,
        "structure": genome.structure,
        "canonical": genome.canonical().to_dict(),
        "formula": genome.formula(),
        "needs_graph": genome.needs_graph,
        "has_schedule": genome.has_schedule,
        "args": [[name, value] for name, (_, value) in builder.args.items()],
        "state": builder.program.state_names,
        "behaviour_hash": behaviour_hash(genome),
    }


@functools.cache
def _export_source(genome: Genome, name: str) -> str:
    """The exported module (``name`` keys the cache: genomes compare equal whatever their
    names, which the module quotes)."""
    return export_genome(genome, CLASS_NAME)


@functools.cache
def _exported_class(genome: Genome, name: str) -> type:
    """The class :func:`_export_source` defines."""
    return load_exported_class(_export_source(genome, name), CLASS_NAME)


def digests(genome: Genome) -> dict[str, str]:
    """sha256 (16 hex) of the rendered step functions and of the exported module."""
    builder = genome.build()
    steps = "\n".join(render_step_functions(builder.program, list(builder.args)))
    module = _export_source(genome, genome.name).replace(
        f"'evoopt_version': {__version__!r}", "'evoopt_version': '<version>'")
    return {"step_functions": _sha(steps.encode()), "export": _sha(module.encode())}


def run(genome: Genome, exported: bool, foreach: bool, nudge: bool = False) -> torch.Tensor:
    """Final parameters of the recorded problem (``nudge``: every initial parameter one ulp up)."""
    kwargs: dict[str, Any] = {"foreach": foreach}
    if genome.has_schedule:
        kwargs["total_steps"] = STEPS
    cls = _exported_class(genome, genome.name) if exported else None

    def make(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        if nudge:
            with torch.no_grad():
                for p in (p for g in groups for p in g["params"]):
                    p.copy_(torch.nextafter(p, torch.full_like(p, math.inf)))
        groups = [groups[0], {**groups[1], "lr": SECOND_GROUP_LR * genome.lr}]
        return cls(groups, **kwargs) if cls else GenomeOptimizer(groups, genome, **kwargs)

    return trajectory(make, STEPS, param_groups=True, late_start=LATE_START)


def fingerprint(x: torch.Tensor) -> dict[str, Any]:
    """sha256 of the float64 bytes, non-finite positions, max |x| and fixed projections."""
    x = x.detach().double().contiguous()
    finite = torch.isfinite(x)
    clean = torch.where(finite, x, torch.zeros_like(x))
    return {"sha256": _sha(_bits(x), 32),
            "nonfinite": torch.nonzero(~finite).flatten().tolist(),
            "max_abs": float(clean.abs().max()),
            "projections": (_projections(len(x)) @ clean).tolist()}


def _projections(n: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).standard_normal((PROJECTIONS, n)))


def _bits(x: torch.Tensor) -> bytes:
    return x.detach().double().contiguous().numpy().astype("<f8").tobytes()


def _sha(data: bytes, digits: int = 16) -> str:
    return hashlib.sha256(data).hexdigest()[:digits]


def machine() -> dict[str, str]:
    """What decides whether float64 results can be bit-identical to the recording's."""
    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if "model name" in line),
               platform.processor())
    return {"torch": torch.__version__, "arch": platform.machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": cpu,
            "libc": " ".join(platform.libc_ver())}


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def features(genome: dict[str, Any]) -> set[str]:
    """The kinds and switch values a genome dict uses (``[matrix]`` tables also as such)."""
    out: set[str] = set()

    def tables(rules: dict[str, Any], where: str) -> None:
        for slot, value in rules.items():
            for table in value if slot == "terms" else [value]:
                if not isinstance(table, dict) or "kind" not in table:
                    continue
                out.update({f"{slot}.{table['kind']}", f"{where}{slot}.{table['kind']}"})
                out.update(f"{slot}.{table['kind']}.{k}={str(v).lower()}"
                           for k, v in table.items() if isinstance(v, bool))

    tables(genome, "")
    if "matrix" in genome:
        tables(genome["matrix"], "matrix.")
    return out


def registry_features() -> list[str]:
    """Every kind of the registry and every value of its switches."""
    out = []
    for slot, kinds in REGISTRY.items():
        for kind, prim in kinds.items():
            out.append(f"{slot}.{kind}")
            out += [f"{slot}.{kind}.{h.name}={v}" for h in prim.hparams if h.is_bool
                    for v in ("false", "true")]
    return out


# ----------------------------------------------------------------------------------------------
# The genomes.
def golden_genomes() -> Iterator[tuple[str, str, dict[str, Any], Genome]]:
    """``(file, id, provenance, genome)`` for every recorded genome."""
    for name in seed_names():
        yield "files", f"seed/{name}", {"file": f"genomes/{name}.toml"}, seed_genome(name)
    for path in sorted((GENOMES_DIR / "reference").glob("*.toml")):
        yield ("files", f"reference/{path.stem}", {"file": f"genomes/reference/{path.name}"},
               load_genome(path))
    for path in sorted((REPO / "tests" / "data").glob("*.toml")):
        if "campaign" not in tomllib.loads(path.read_text()):
            yield ("files", f"data/{path.stem}", {"file": f"tests/data/{path.name}"},
                   load_genome(path))
    for seed in RANDOM_SEEDS:
        genome = random_genome(np.random.default_rng(seed))
        yield "random", f"random/{seed:02d}", {"random_genome_seed": seed}, genome
    for name, (covers, data) in HANDWRITTEN.items():
        yield ("handwritten", f"hand/{name}", {"covers": covers},
               Genome.from_dict({"name": name, **data}, source=name))


def record_genome(genome: Genome) -> dict[str, Any]:
    """The whole record of one genome."""
    single, foreach = run(genome, False, False), run(genome, False, True)
    sensitivity = relative_error(run(genome, False, False, nudge=True), single)
    trajectories = {"single": fingerprint(single), "foreach": fingerprint(foreach)}
    for path, ref in (("single", single), ("foreach", foreach)):
        out = run(genome, True, path == "foreach")
        if _bits(out) != _bits(ref):  # the test asserts equality; keep what export does
            trajectories[f"export_{path}"] = fingerprint(out)
    return {"genome": genome.to_dict(), "identity": identity(genome),
            "digests": digests(genome), "trajectories": trajectories,
            "sensitivity": sensitivity if math.isfinite(sensitivity) else None}


def record(only_digests: bool = False) -> None:
    """Write ``tests/data/legacy_identities/*.json`` (``only_digests``: refresh the digests)."""
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    DATA.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, Any]] = {f: {} for f in FILES}
    for file, key, provenance, genome in [] if only_digests else golden_genomes():
        out[file][key] = {**provenance, **record_genome(genome)}
        print(key, flush=True)
    for file in FILES:
        path = DATA / f"{file}.json"
        if only_digests:
            data = json.loads(path.read_text())
            for key, rec in data["genomes"].items():
                rec["digests"] = digests(Genome.from_dict(rec["genome"], source=key))
        else:
            data = {"meta": {"machine": machine(), "evoopt": __version__, "steps": STEPS,
                             "late_start": LATE_START, "second_group_lr": SECOND_GROUP_LR,
                             "registry": registry_features()},
                    "genomes": out[file]}
        path.write_text(_dumps(data) + "\n")
        print(f"{path}: {len(data['genomes'])} genomes, {path.stat().st_size} bytes")
    covered = set().union(*(features(r["genome"]) for f in FILES for r in out[f].values()))
    missing = [f for f in registry_features() if f not in covered]
    if missing and not only_digests:
        print("NOT COVERED:", ", ".join(missing))


def _dumps(value: Any, depth: int = 0) -> str:
    """JSON with one line per record field: tables nested deeper than a record's fields (a
    genome, a canonical dict, a fingerprint) stay on one line."""
    if not isinstance(value, dict) or depth > 3 or not value:
        return json.dumps(value, ensure_ascii=False)
    pad = " " * (depth + 1)
    items = [f"{pad}{json.dumps(k)}: {_dumps(v, depth + 1)}" for k, v in value.items()]
    return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"


# ----------------------------------------------------------------------------------------------
# The tests.
def _load() -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    for file in FILES:
        path = DATA / f"{file}.json"
        if path.exists():
            data = json.loads(path.read_text())
            records |= {key: {**rec, "meta": data["meta"]} for key, rec in data["genomes"].items()}
    return records


RECORDS = _load()
FILE_BACKED = [key for key, rec in RECORDS.items() if "file" in rec]

pytestmark = [
    pytest.mark.usefixtures("float64", "one_thread"),
    pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True"),
]


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread, as recorded: deterministic reductions, and no oversubscription."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _genome(key: str) -> Genome:
    return Genome.from_dict(RECORDS[key]["genome"], source=key)


def test_records_exist_and_cover_the_registry() -> None:
    assert set(FILES) <= {p.stem for p in DATA.glob("*.json")}, (
        "record them: EVOOPT_RECORD_IDENTITIES=1 python -m tests.test_legacy_identities")
    covered = set().union(*(features(r["genome"]) for r in RECORDS.values()))
    registry = next(iter(RECORDS.values()))["meta"]["registry"]
    assert not [f for f in registry if f not in covered]
    assert any("matrix" in r["genome"] for r in RECORDS.values())


@pytest.mark.parametrize("key", sorted(RECORDS))
def test_identity(key: str) -> None:
    """Hash, structure, canonical dict, formula, arguments, state keys and behaviour hash."""
    got, want = identity(_genome(key)), RECORDS[key]["identity"]
    for field in want:
        assert got[field] == want[field], f"{key}: {field} changed"
    assert set(got) == set(want)


@pytest.mark.parametrize("key", sorted(FILE_BACKED))
def test_shipped_file_keeps_its_identity(key: str) -> None:
    """The genome file itself (rewritten in another layout later) still means the record."""
    path = REPO / RECORDS[key]["file"]
    live = seed_genome(path.stem) if key.startswith("seed/") else load_genome(path)
    assert live == _genome(key) and live.name == _genome(key).name
    assert live.hash == RECORDS[key]["identity"]["hash"]
    assert _bits(run(live, False, False)) == _bits(run(_genome(key), False, False))


@pytest.mark.parametrize("key", sorted(RECORDS))
def test_rendered_source(key: str) -> None:
    """Digests of the step functions and the exported module: a deliberate change of the text
    re-records them (EVOOPT_RECORD_IDENTITIES=digests) once identities and trajectories hold."""
    assert digests(_genome(key)) == RECORDS[key]["digests"], (
        f"{key}: rendered source changed")


def _matches(now: torch.Tensor, recorded: dict[str, Any], rtol: float | None) -> bool:
    """The same fingerprint (``rtol`` None: bit-identical parameters), or the projections
    within ``rtol`` of the largest |x|."""
    got = fingerprint(now)
    if rtol is None:
        return got == recorded
    if got["nonfinite"] != recorded["nonfinite"]:
        return False
    scale = max(recorded["max_abs"], 1e-300) * rtol
    l1 = _projections(len(now)).abs().sum(dim=1).tolist()
    return all(abs(a - b) <= scale * w for a, b, w in
               zip(got["projections"], recorded["projections"], l1, strict=True))


@pytest.mark.parametrize("key", sorted(RECORDS))
def test_trajectory(key: str) -> None:
    """Interpreter on both paths as recorded; the exported class bit-identical to it."""
    rec, genome = RECORDS[key], _genome(key)
    rtol: float | None = None
    if rec["meta"]["machine"] != machine():  # another machine kind: see the module docstring
        s = rec["sensitivity"]
        rtol = math.inf if s is None else max(MIN_RTOL, SENSITIVITY_FACTOR * s)
    for path in ("single", "foreach"):
        interpreted = run(genome, False, path == "foreach")
        exported = run(genome, True, path == "foreach")
        assert _matches(interpreted, rec["trajectories"][path], rtol), (
            f"{key}: the {path} trajectory changed (rtol {rtol})")
        assert _bits(exported) == _bits(interpreted), f"{key}: export != interpreter ({path})"


if __name__ == "__main__":
    mode = os.environ.get("EVOOPT_RECORD_IDENTITIES", "")
    if mode not in ("1", "digests"):
        raise SystemExit("set EVOOPT_RECORD_IDENTITIES=1 (everything) or =digests to record")
    record(only_digests=mode == "digests")

