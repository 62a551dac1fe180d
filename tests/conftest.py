"""Shared fixtures: the CIFAR-10 mini copy and tiny Shakespeare, located beside the repository
(as in CI), and the tiny campaign the real runner makes once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _shared_data(env: str, folder: str) -> Path:
    """``$env``, else ``../shared/data/<folder>`` beside the checkout (as in CI)."""
    value = os.environ.get(env)
    return Path(value) if value else REPO.parent / "shared" / "data" / folder


def _required(path: Path, marker: str, what: str, env: str) -> Path:
    if not (path / marker).exists():
        pytest.fail(f"{what} not found in {path} (set {env})")
    return path


def mini_data_dir() -> Path:
    return _shared_data("EVOOPT_TEST_DATA", "cifar10-mini")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _required(mini_data_dir(), "cifar-10-batches-py", "CIFAR-10 mini copy",
                     "EVOOPT_TEST_DATA")


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
    return _shared_data("EVOOPT_TEST_TEXT_DATA", "tinyshakespeare")


@pytest.fixture(scope="session")
def text_dir() -> Path:
    """The folder holding tiny Shakespeare's ``input.txt``."""
    return _required(text_data_dir(), "input.txt", "tiny Shakespeare (input.txt)",
                     "EVOOPT_TEST_TEXT_DATA")


@pytest.fixture
def float64():
    """Run a test with float64 as torch's default dtype (trajectory comparisons)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
