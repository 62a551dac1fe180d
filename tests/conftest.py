"""Shared fixtures: the CIFAR-10 mini copy and tiny Shakespeare, located beside the repository
(as in CI)."""

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
