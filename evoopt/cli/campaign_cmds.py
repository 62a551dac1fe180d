"""CLI commands for the campaign stage."""

from __future__ import annotations

from evoopt.cli import app  # noqa: F401
