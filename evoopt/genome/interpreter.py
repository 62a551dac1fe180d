"""``GenomeOptimizer``: a ``torch.optim.Optimizer`` that runs any genome's program.

It runs the one shell (:mod:`evoopt.genome.codegen`): the module that ``export_genome`` prints
is rendered for the genome and executed, from memory (no file is written), and the optimizer
is an instance of a class that derives from the class it defines and from
:class:`GenomeOptimizer`. Modules are cached (an LRU of :data:`CACHE_SIZE`, keyed by the
sha256 of their source), and the source of a genome seen recently is not rendered again.
"""

from __future__ import annotations

import hashlib
import linecache
import threading
import types
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import torch

import evoopt.genome.codegen as codegen
from evoopt.genome.chain import ChainGenome
from evoopt.genome.codegen import AnyGenome
from evoopt.genome.genome import Genome

#: Key of :meth:`GenomeOptimizer.state_dict` (and of exported optimizers') naming the genome
#: structure (:attr:`Genome.structure`) the state belongs to.
STRUCTURE_KEY = "evoopt_structure"


def backpropagate(loss: torch.Tensor, params: list[torch.Tensor], create_graph: bool) -> None:
    """Gradients of ``loss`` into the ``params``' ``.grad``. With ``create_graph`` (an optimizer
    that :attr:`~GenomeOptimizer.needs_graph`) they carry their graph; they are taken with
    ``torch.autograd.grad`` then, which avoids ``backward()``'s parameter <-> gradient reference
    cycle (a parameter that the loss does not use gets a zero gradient)."""
    if not create_graph:
        loss.backward()
        return
    grads = torch.autograd.grad(loss, params, create_graph=True, materialize_grads=True)
    for p, g in zip(params, grads, strict=True):
        p.grad = g


def check_total_steps(total_steps: object, where: str = "total_steps") -> int:
    """``total_steps`` if it is an integer >= 1 (a bool, a float or a string is refused)."""
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"{where}: expected an integer >= 1, got {total_steps!r}")
    return total_steps


#: The class name the interpreter renders its genomes' modules with.
CLASS_NAME = "GenomeProgram"
#: How many rendered modules (and genomes' sources) the interpreter keeps.
CACHE_SIZE = 256


class GenomeOptimizer(torch.optim.Optimizer):
    """Interpret a :class:`Genome` as an optimizer.

    ``GenomeOptimizer(params, genome, ...)`` returns an instance of the genome's class: one
    deriving from the class :func:`evoopt.genome.export.export_genome` prints for the genome
    (rendered and executed once per genome, then cached) and from :class:`GenomeOptimizer`,
    with :attr:`genome` set. So it computes and checks exactly what the exported class does.

    Hyperparameters are stored per parameter group under the names the exporter gives its
    constructor arguments (``lr``, ``beta1``, ``eps``, ``momentum_weight``, ...), so a group can
    override any of them; each group's are checked when it is added. As in torch.optim,
    ``step`` is counted per parameter (``state["step"]``, when the genome reads it);
    ``group["step"]`` counts the optimizer's steps and drives the learning-rate schedule.
    Per-parameter state holds only what this genome uses. ``total_steps`` is required when the
    genome has a learning-rate schedule (checked when given, and unused without a schedule).
    ``foreach=None`` picks ``torch._foreach_*`` kernels on CUDA and the per-tensor loop
    elsewhere (faster on CPU), as torch does.

    A genome that reads the curvature (AdaHessian) takes a Hessian-vector product per step:
    call ``loss.backward(create_graph=True)`` before :meth:`step` (:attr:`needs_graph`). Its
    Rademacher probes come from generators seeded by ``seed`` (per group), the parameter's
    index and its step count, so runs are reproducible and resume exactly.

    A genome's class cannot be pickled (``torch.save(optimizer)``); its ``state_dict()`` can,
    and loads into the exported class, and back.
    """

    #: Whether :meth:`step` needs gradients that carry their graph
    #: (``loss.backward(create_graph=True)``): the genome reads the curvature. A genome's
    #: class that does sets it (the rendered class's ``needs_graph = True``).
    needs_graph: bool = False
    #: Whether the optimizer evaluates other weights than it trains at (Schedule-Free): call
    #: :meth:`eval` before evaluating the model and :meth:`train` before training on. A
    #: genome's class that does defines both (and sets this); here they do nothing.
    evaluates_other_weights: bool = False
    genome: AnyGenome

    def eval(self) -> None:
        """Switch to the weights to evaluate (a no-op: this genome trains at them)."""

    def train(self) -> None:
        """Switch to the weights to train at (a no-op: this genome evaluates them)."""

    def __new__(cls, params: Iterable[Any], genome: AnyGenome, *, total_steps: int | None = None,
                foreach: bool | None = None, maximize: bool = False,
                seed: int = 0) -> GenomeOptimizer:
        return super().__new__(genome_class(genome, cls))

    def __getstate__(self) -> dict[str, Any]:
        """torch's state plus the genome (``copy.deepcopy`` keeps it)."""
        return {**super().__getstate__(), "genome": self.genome}


def _shell_init(self: GenomeOptimizer, params: Iterable[Any], genome: AnyGenome, *,
                total_steps: int | None = None, foreach: bool | None = None,
                maximize: bool = False, seed: int = 0) -> None:
    """``__init__`` of a genome's class: :class:`GenomeOptimizer`'s arguments, passed on to the
    rendered class's constructor (whose defaults are the genome's values)."""
    if genome.has_schedule and total_steps is None:
        raise ValueError(f"genome {genome.name or genome.hash} has a "
                         f"{genome.schedule.kind} schedule: pass total_steps >= 1")
    if total_steps is not None:
        check_total_steps(total_steps)
    self.genome = genome
    shell = type(self)
    options: dict[str, Any] = {"foreach": foreach, "maximize": maximize}
    if shell._evoopt_schedule:
        options["total_steps"] = total_steps
    if shell.needs_graph:
        options["seed"] = seed
    shell._evoopt_generated.__init__(self, params, **options)


def _plain_new(cls: type, *args: Any, **kwargs: Any) -> Any:
    """``__new__`` of a genome's class: a bare instance (``copy.deepcopy`` calls it so)."""
    return object.__new__(cls)


_lock = threading.RLock()
#: (the genome's type, its repr, the class asked for) -> sha256 of the genome's source
_digests: OrderedDict[tuple[type, str, type], str] = OrderedDict()
#: sha256 of a source -> (its module, {the class asked for: the genome's class})
_modules: OrderedDict[str, tuple[types.ModuleType, dict[type, type]]] = OrderedDict()


def genome_class(genome: AnyGenome, base: type = GenomeOptimizer) -> type:
    """The class of ``GenomeOptimizer(params, genome)`` (``base``: a subclass of
    GenomeOptimizer, for its own subclasses): rendered, executed and cached on first use."""
    if not isinstance(genome, (Genome, ChainGenome)):
        raise TypeError(f"GenomeOptimizer: expected a Genome, got {type(genome).__name__}")
    # the repr tells apart what equality does not: names, descriptions, -0.0 (all in the text)
    key = (type(genome), repr(genome), base)
    with _lock:
        digest = _digests.get(key)
        entry = _modules.get(digest) if digest is not None else None
        if entry is None:
            source = codegen.render(genome, CLASS_NAME)
            digest = hashlib.sha256(source.encode()).hexdigest()
            entry = _modules.get(digest) or _load(source, digest, genome)
        _remember(_digests, key, digest)
        _remember(_modules, digest, entry)
        module, classes = entry
        if base not in classes:
            generated = getattr(module, CLASS_NAME)
            classes[base] = type("GenomeOptimizer", (generated, base), {
                "__module__": module.__name__, "__qualname__": "GenomeOptimizer",
                "__doc__": generated.__doc__, "__init__": _shell_init, "__new__": _plain_new,
                "_evoopt_generated": generated, "_evoopt_schedule": genome.has_schedule})
        return classes[base]


def _load(source: str, digest: str, genome: AnyGenome) -> tuple[types.ModuleType, dict[type, type]]:
    """Execute ``source`` as a module, its text registered in :mod:`linecache` (tracebacks show
    it) under the name ``<evoopt genome {hash} {digest}>``."""
    filename = f"<evoopt genome {genome.hash} {digest[:16]}>"
    module = types.ModuleType(f"evoopt_genome_{digest[:16]}")
    module.__file__ = filename
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    exec(compile(source, filename, "exec"), module.__dict__)  # noqa: S102 - package-rendered
    return module, {}


def _remember(cache: OrderedDict, key: Any, value: Any) -> None:
    """Put ``key`` last in the LRU ``cache``; drop the least recently used beyond CACHE_SIZE
    (a dropped module's text leaves linecache too)."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > CACHE_SIZE:
        _, dropped = cache.popitem(last=False)
        if isinstance(dropped, tuple):
            linecache.cache.pop(dropped[0].__file__, None)


def cache_clear() -> None:
    """Forget every cached module and source (tests; the next construction renders again)."""
    with _lock:
        for module, _ in _modules.values():
            linecache.cache.pop(module.__file__, None)
        _modules.clear()
        _digests.clear()
