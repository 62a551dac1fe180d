"""Optimizer step time: exported genomes vs torch.optim, the interpreter, a third-party Adan.

    python benchmarks/optimizer_step.py [--params-millions 7] [--repeats 7] [--steps 5]
                                        [--device auto|cpu|cuda] [--threads N]

Builds a convnet + MLP stack of about ``--params-millions`` million parameters (several dozen
tensors of mixed sizes), sets every gradient once to a fixed random tensor, and times only
``opt.step()`` for each optimizer, side by side in one process. On CPU a repeat is ``--steps``
rounds of one step of every optimizer, in a fresh random order each round, so that load from
other processes hits all of them alike; on CUDA it is a block of ``--steps`` steps per optimizer
(random order), timed with CUDA events. Reported: the median ms/step over repeats, each ratio as
the median of the per-repeat ratios (paired within a repeat), and the ratio of the best repeats.

Optimizers (each on its own copy of the model, so state and memory traffic are not shared):
* ``torch Adam`` vs the exported Adam genome, each at its default code path (``foreach=None``:
  the per-tensor loop on CPU, ``torch._foreach_*`` on CUDA) and with ``foreach=True``;
* the exported Adan genome vs ``GenomeOptimizer`` (the interpreter) on the same genome;
* the exported Adafactor genome vs ``torch.optim.Adafactor(lr=1e-2)``, both per-tensor (torch's
  default, on every device) and both with ``foreach=True``;
* the exported Muon genome (parameter roles) vs ``torch.optim.Muon(lr=0.02, momentum=0.95)`` on
  the parameters of 2 or more dims (as their (out, -1) views: torch's Muon takes 2-D ones only)
  beside ``torch.optim.AdamW(lr=3e-4, betas=(0.9, 0.95), weight_decay=0)`` on the others, both
  per-tensor (torch's Muon has no foreach path; its AdamW gets ``foreach=False``);
* the exported Adan genome vs ``pytorch_optimizer.Adan`` (``pip install pytorch-optimizer``;
  skipped when not installed) with betas=(0.98, 0.92, 0.99), weight_decay=0.02 and
  ``weight_decouple=False``, i.e. the proximal decay of the official Adan that the genome uses.
  Its default (``foreach=None``) is the foreach path on every device, CPU included.

Before timing, a short check on a small model asserts that each pair computes the same update.

On a small shared CPU box, torch's intra-op threads wait on each other whenever another process
holds a core, so timings with the default thread count swing with the load; ``--threads 1`` is
the steadier comparison there. CPU step times of these memory-bound updates also depend on the
C allocator (see docs/benchmarks-optimizer.md): the ``MALLOC_*`` variables in effect are printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoopt.genome import GenomeOptimizer, seed_genome  # noqa: E402
from evoopt.genome.export import export_genome, load_exported_class  # noqa: E402

try:
    from pytorch_optimizer import Adan as ThirdPartyAdan
except ImportError:  # optional comparison
    ThirdPartyAdan = None

INSTALL_HINT = ("pytorch_optimizer is not installed: `pip install pytorch-optimizer` "
                "(kozistr/pytorch_optimizer) to add the third-party Adan rows")
ADAN_KW = {"betas": (0.98, 0.92, 0.99), "weight_decay": 0.02, "weight_decouple": False,
           "eps": 1e-8, "lr": 1e-3}

OptFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


class TorchMuonAdamW:
    """torch.optim.Muon on each parameter of 2 or more dims, as its (out, -1) view (sharing
    storage; its gradient viewed alike), and torch.optim.AdamW on the others."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.views = [(p, p.detach().view(len(p), -1).requires_grad_())
                      for p in params if p.dim() >= 2]
        self.muon = torch.optim.Muon([v for _, v in self.views], lr=0.02, weight_decay=0.0,
                                     momentum=0.95, nesterov=True)
        self.adamw = torch.optim.AdamW([p for p in params if p.dim() < 2], lr=3e-4,
                                       betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0,
                                       foreach=False)

    def step(self) -> None:
        for p, view in self.views:
            view.grad = p.grad.view(view.shape)
        self.muon.step()
        self.adamw.step()


# ----------------------------------------------------------------------------------------------
# Model


def _stack(width: int, blocks: int = 3) -> nn.Sequential:
    """Three conv stages (widths w, 2w, 4w) of ``blocks`` conv+BN layers, then a 3-layer MLP."""
    layers: list[nn.Module] = []
    cin = 3
    for stage in range(3):
        cout = width << stage
        for _ in range(blocks):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU()]
            cin = cout
    hidden = 2 * cin
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(cin),
               nn.Linear(cin, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
               nn.Linear(hidden, 10)]
    return nn.Sequential(*layers)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_model(params_millions: float, device: torch.device) -> nn.Sequential:
    """The stack whose width puts its parameter count closest to ``params_millions`` million."""
    target = params_millions * 1e6
    lo, hi = 2, 4096  # the count grows with the width: bisect for the first width >= target
    with torch.device("meta"):
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if _count(_stack(mid)) < target else (lo, mid)
        width = min((max(lo - 1, 2), lo), key=lambda w: abs(_count(_stack(w)) - target))
    torch.manual_seed(0)
    return _stack(width).to(device)


def set_fixed_grads(model: nn.Module, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = (torch.randn(p.shape, generator=gen) * 1e-2).to(p.device)


# ----------------------------------------------------------------------------------------------
# Optimizers


def candidates() -> dict[str, OptFactory]:
    adam_cls = load_exported_class(export_genome(seed_genome("adam"), "ExportedAdam"),
                                   "ExportedAdam")
    adan_cls = load_exported_class(export_genome(seed_genome("adan"), "ExportedAdan"),
                                   "ExportedAdan")
    adafactor_cls = load_exported_class(
        export_genome(seed_genome("adafactor"), "ExportedAdafactor"), "ExportedAdafactor")
    muon_cls = load_exported_class(export_genome(seed_genome("muon"), "ExportedMuon"),
                                   "ExportedMuon")
    adan = seed_genome("adan")
    out: dict[str, OptFactory] = {
        "torch Adam": lambda ps: torch.optim.Adam(ps, lr=1e-3),
        "torch Adam foreach": lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True),
        "exported Adam": lambda ps: adam_cls(ps),
        "exported Adam foreach": lambda ps: adam_cls(ps, foreach=True),
        "interpreter Adan": lambda ps: GenomeOptimizer(ps, adan),
        "interpreter Adan foreach": lambda ps: GenomeOptimizer(ps, adan, foreach=True),
        "exported Adan": lambda ps: adan_cls(ps),
        "exported Adan foreach": lambda ps: adan_cls(ps, foreach=True),
        "torch Adafactor": lambda ps: torch.optim.Adafactor(ps, lr=1e-2),
        "torch Adafactor foreach": lambda ps: torch.optim.Adafactor(ps, lr=1e-2, foreach=True),
        "exported Adafactor": lambda ps: adafactor_cls(ps, foreach=False),
        "exported Adafactor foreach": lambda ps: adafactor_cls(ps, foreach=True),
        "torch Muon + AdamW": TorchMuonAdamW,  # type: ignore[dict-item]
        "exported Muon": lambda ps: muon_cls(ps, foreach=False),
    }
    if ThirdPartyAdan is not None:
        out["pytorch_optimizer Adan"] = lambda ps: ThirdPartyAdan(ps, **ADAN_KW)
        out["pytorch_optimizer Adan per-tensor"] = lambda ps: ThirdPartyAdan(
            ps, foreach=False, **ADAN_KW)
    return out


# (label, numerator, denominator, goal ratio or None); rows whose optimizers are absent are skipped
RATIOS: list[tuple[str, str, str, float | None]] = [
    ("exported Adam / torch Adam (defaults)", "exported Adam", "torch Adam", 1.05),
    ("exported Adam / torch Adam (foreach)", "exported Adam foreach", "torch Adam foreach", None),
    ("exported Adan / interpreter Adan (defaults)", "exported Adan", "interpreter Adan", None),
    ("interpreter Adan / exported Adan (defaults)", "interpreter Adan", "exported Adan", None),
    ("exported Adan / interpreter Adan (foreach)", "exported Adan foreach",
     "interpreter Adan foreach", None),
    ("interpreter Adan / exported Adan (foreach)", "interpreter Adan foreach",
     "exported Adan foreach", None),
    ("exported Adafactor / torch Adafactor (per-tensor)", "exported Adafactor",
     "torch Adafactor", None),
    ("exported Adafactor / torch Adafactor (foreach)", "exported Adafactor foreach",
     "torch Adafactor foreach", None),
    ("exported Muon / torch Muon + AdamW (per-tensor)", "exported Muon", "torch Muon + AdamW",
     None),
    ("exported Adan / pytorch_optimizer Adan (defaults)", "exported Adan",
     "pytorch_optimizer Adan", 1.0),
    ("exported Adan / pytorch_optimizer Adan (both foreach)", "exported Adan foreach",
     "pytorch_optimizer Adan", 1.0),
    ("exported Adan / pytorch_optimizer Adan (both per-tensor)", "exported Adan",
     "pytorch_optimizer Adan per-tensor", 1.0),
]


def check_equivalence(factories: dict[str, OptFactory], device: torch.device) -> list[str]:
    """Max |Δparam| after 5 steps for each compared pair, on a small model (fresh grads each step;
    pytorch_optimizer's Adan negates ``p.grad`` in place)."""
    pairs = [("exported Adam", "torch Adam"), ("exported Adam foreach", "torch Adam foreach"),
             ("exported Adan", "interpreter Adan"), ("exported Adan", "exported Adan foreach"),
             ("exported Adafactor", "torch Adafactor"),
             ("exported Adafactor foreach", "torch Adafactor foreach"),
             ("exported Muon", "torch Muon + AdamW"),
             ("exported Adan", "pytorch_optimizer Adan"),
             ("exported Adan", "pytorch_optimizer Adan per-tensor")]
    lines = []
    for a, b in pairs:
        if a not in factories or b not in factories:
            continue
        finals = []
        for name in (a, b):
            torch.manual_seed(0)
            model = _stack(4, blocks=1).to(device)
            params = list(model.parameters())
            opt = factories[name](params)
            gen = torch.Generator().manual_seed(2)
            for _ in range(5):
                for p in params:
                    p.grad = torch.randn(p.shape, generator=gen).to(device)
                opt.step()
            finals.append(torch.cat([p.detach().flatten() for p in params]))
        diff = (finals[0] - finals[1]).abs().max().item()
        if not diff < 1e-5:
            raise AssertionError(f"{a} and {b} disagree: max |Δparam| = {diff:.3g}")
        lines.append(f"  {a:<24} == {b:<34} max |Δparam| {diff:.1e}")
    return lines


# ----------------------------------------------------------------------------------------------
# Timing


def _timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    if device.type == "cuda":
        def cuda_ms(run: Callable[[], object]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            run()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end)
        return cuda_ms

    def cpu_ms(run: Callable[[], object]) -> float:
        t = time.perf_counter()
        run()
        return (time.perf_counter() - t) * 1e3
    return cpu_ms


def benchmark(factories: dict[str, OptFactory], args: argparse.Namespace,
              device: torch.device) -> dict[str, list[float]]:
    opts = {}
    for name, make in factories.items():
        model = build_model(args.params_millions, device)
        set_fixed_grads(model)
        opts[name] = make(list(model.parameters()))
    timer = _timer(device)
    names = list(opts)
    for name in names:  # warm-up: lazy state, allocator, first-step branches
        for _ in range(args.warmup):
            opts[name].step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    rng = random.Random(0)
    ms: dict[str, list[float]] = {n: [] for n in names}
    started = time.perf_counter()
    for rep in range(args.repeats):
        if device.type == "cuda":  # a block of steps per optimizer, timed with CUDA events
            order = rng.sample(names, len(names))
            for name in order:
                step = opts[name].step

                def run(step: Callable[[], object] = step) -> None:
                    for _ in range(args.steps):
                        step()
                ms[name].append(timer(run) / args.steps)
        else:  # CPU: round-robin one step at a time, so a repeat's pairs share the same load
            total = dict.fromkeys(names, 0.0)
            for _ in range(args.steps):
                for name in rng.sample(names, len(names)):
                    total[name] += timer(opts[name].step)
            for name in names:
                ms[name].append(total[name] / args.steps)
        elapsed = time.perf_counter() - started
        print(f"  repeat {rep + 1}/{args.repeats} done ({elapsed:.0f} s)", file=sys.stderr,
              flush=True)
        if elapsed > args.max_seconds and rep + 1 >= 3 and rep + 1 < args.repeats:
            print(f"(stopped after {rep + 1} of {args.repeats} repeats: over --max-seconds "
                  f"{args.max_seconds:g})")
            break
    return ms


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return None


def _warn_if_loaded(device: torch.device, *loads: float | None) -> None:
    known = [x for x in loads if x is not None]
    if not known:
        return
    print(f"\n1-min load average before/after timing: "
          f"{' / '.join(f'{x:.2f}' for x in known)} on {os.cpu_count()} CPUs")
    threads = torch.get_num_threads()
    # the load average counts this process's own threads: more runnable threads than CPUs
    if device.type == "cpu" and threads > 1 and max(known) > (os.cpu_count() or 1) + 0.5:
        print(f"warning: the machine was busy; with {threads} intra-op threads the step times "
              "above may measure scheduler waits rather than the optimizers (try --threads 1)")


def report(ms: dict[str, list[float]], args: argparse.Namespace, device: torch.device,
           n_params: int, n_tensors: int) -> None:
    repeats = len(next(iter(ms.values())))
    print(f"\n## device {device} | {n_params / 1e6:.2f}M params in {n_tensors} tensors | "
          f"{repeats} repeats x {args.steps} steps | torch {torch.__version__} | "
          f"threads {torch.get_num_threads()}")
    width = max(map(len, ms))
    print(f"\n{'optimizer':<{width}}  {'median ms/step':>14}  {'min':>8}  {'max':>8}")
    for name, xs in ms.items():
        print(f"{name:<{width}}  {statistics.median(xs):>14.2f}  {min(xs):>8.2f}  {max(xs):>8.2f}")
    rows = [(label, a, b, goal) for label, a, b, goal in RATIOS if a in ms and b in ms]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'ratio (median of per-repeat ratios)':<{width}}  {'ratio':>6}  {'range':>11}  "
          f"{'best':>5}  goal")
    for label, a, b, goal in rows:
        per_rep = [x / y for x, y in zip(ms[a], ms[b], strict=True)]
        r = statistics.median(per_rep)
        best = min(ms[a]) / min(ms[b])
        verdict = "" if goal is None else f"<= {goal:.2f} {'ok' if r <= goal else 'MISSED'}"
        print(f"{label:<{width}}  {r:>6.3f}  {min(per_rep):>5.2f}-{max(per_rep):<5.2f}  "
              f"{best:>5.3f}  {verdict}".rstrip())
    if ThirdPartyAdan is None:
        print(f"\n(skipped the third-party Adan rows) {INSTALL_HINT}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params-millions", type=float, default=7.0,
                    help="model size in millions of parameters (default 7)")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved repeats (default 7)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per repeat (default 5)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    ap.add_argument("--max-seconds", type=float, default=75.0,
                    help="stop repeating (after at least 3 repeats) once a device's timing has "
                         "taken this long (default 75)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="auto: CPU, and CUDA too when available (default)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (default: leave torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch.cuda.is_available() is False")
    devices = [torch.device(args.device)] if args.device != "auto" else (
        [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else []))

    factories = candidates()
    malloc_env = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items())
                          if k.startswith("MALLOC_"))
    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}"
          + (f", {malloc_env}" if malloc_env else ""))
    if ThirdPartyAdan is None:
        print(INSTALL_HINT)
    else:
        import pytorch_optimizer
        version = getattr(pytorch_optimizer, "__version__", None)
        if version is None:
            from importlib.metadata import version as _v
            version = _v("pytorch-optimizer")
        kw = ", ".join(f"{k}={v}" for k, v in ADAN_KW.items())
        print(f"pytorch_optimizer {version}: Adan({kw})")
    for device in devices:
        print(f"\nequivalence on {device} (5 steps, small model):")
        print("\n".join(check_equivalence(factories, device)))
        model = build_model(args.params_millions, torch.device("meta"))
        n_params, n_tensors = _count(model), len(list(model.parameters()))
        print(f"timing on {device}: {n_params / 1e6:.2f}M params, {n_tensors} tensors, "
              f"{len(factories)} optimizers", flush=True)
        load_before = _load()
        ms = benchmark(factories, args, device)
        report(ms, args, device, n_params, n_tensors)
        _warn_if_loaded(device, load_before, _load())


if __name__ == "__main__":
    main()
