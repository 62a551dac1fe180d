"""The cautious mask (Liang et al. 2024, "Cautious Optimizers"): an update block."""

from __future__ import annotations
