"""Shared fixtures: the CIFAR-10 mini copy and tiny Shakespeare, located beside the repository
(as in CI), and the tiny campaign the real runner makes once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def mini_data_dir() -> Path:
    env = os.environ.get("EVOOPT_TEST_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data" / "cifar10-mini"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = mini_data_dir()
    if not (path / "cifar-10-batches-py").is_dir():
        pytest.fail(f"CIFAR-10 mini copy not found at {path} (set EVOOPT_TEST_DATA)")
    return path


@pytest.fixture(scope="session")
def tiny_campaign(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The directory of a tiny campaign run to the end by the real runner (serial evaluator):
    seeds, mutation and crossover children, cached duplicates, hurdle stops, a failure, TPE
    refinement, the finish (selection, comparison, verdicts, a tuned baseline) and the export.
    Shared by the whole session: read it, or change a copy (``copy_campaign``)."""
    from tests.conftest_campaign import SESSION_CHANGES, run_tiny  # the runner: only on demand

    out = tmp_path_factory.mktemp("tiny-campaign") / "tiny"
    run_tiny(out, data_dir, **SESSION_CHANGES)
    return out


def text_data_dir() -> Path:
    env = os.environ.get("EVOOPT_TEST_TEXT_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data" / "tinyshakespeare"


@pytest.fixture(scope="session")
def text_dir() -> Path:
    """The folder holding tiny Shakespeare's ``input.txt``."""
    path = text_data_dir()
    if not (path / "input.txt").is_file():
        pytest.fail(f"tiny Shakespeare (input.txt) not found in {path} "
                    "(set EVOOPT_TEST_TEXT_DATA)")
    return path


@pytest.fixture
def float64():
    """Run a test with float64 as torch's default dtype (trajectory comparisons)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
