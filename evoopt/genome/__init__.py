"""Genome core: primitive registry, genome value, interpreter, exporter, behavioural hash.

This package knows nothing of fitness, evaluation or campaigns.
"""

from evoopt.genome.chain import ChainGenome
from evoopt.genome.genome import (
    Block,
    Genome,
    genome_from_dict,
    load_genome,
    seed_genome,
    seed_names,
)
from evoopt.genome.interpreter import GenomeOptimizer
from evoopt.genome.primitives import (
    BLOCK_SLOTS,
    MAX_TERMS,
    REGISTRY,
    GenomeError,
    HParam,
    Primitive,
)

# the chain language's conversions: importing them fills chain.UPPER (ChainGenome.hash and
# reading legacy dicts need the slot genome, which chain.py sits below)
from evoopt.genome import legacy as _legacy  # noqa: E402, F401  isort: skip

__all__ = [
    "BLOCK_SLOTS",
    "MAX_TERMS",
    "REGISTRY",
    "Block",
    "ChainGenome",
    "Genome",
    "GenomeError",
    "GenomeOptimizer",
    "HParam",
    "Primitive",
    "genome_from_dict",
    "load_genome",
    "seed_genome",
    "seed_names",
]
