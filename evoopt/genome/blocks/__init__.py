"""The block registry (docs/design-chain-of-blocks.md §2.2): every kind of block a genome's
chain or global fields can hold, as a :class:`BlockSpec`. In step 1 each wraps a legacy
primitive of :mod:`evoopt.genome.primitives` and emits through that primitive's own emit."""

from evoopt.genome.blocks import (  # noqa: F401 (they register the specs)
    accumulators,
    global_fields,
    terms,
    transforms,
)

from evoopt.genome.blocks import adopt, cautious, mars, schedule_free  # noqa: F401, E402  isort: skip
from evoopt.genome.blocks.base import (
    CHAIN_CATEGORIES,
    FAMILIES,
    GLOBAL_CATEGORIES,
    REGISTRY,
    STAGES,
    BlockSpec,
    StateDecl,
    kinds,
    register,
    spec,
)

__all__ = ["CHAIN_CATEGORIES", "FAMILIES", "GLOBAL_CATEGORIES", "REGISTRY", "STAGES",
           "BlockSpec", "StateDecl", "kinds", "register", "spec"]
