"""MARS (Yuan et al. 2024): the variance-reduced, clipped gradient correction."""

from __future__ import annotations
