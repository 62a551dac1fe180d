"""CLI commands for the genome stage."""

from __future__ import annotations

from evoopt.cli import app  # noqa: F401
