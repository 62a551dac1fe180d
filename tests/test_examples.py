"""Smoke tests of the shipped examples (examples/): each task evaluates through the CLI on a
tiny budget, and a text too short for the tiny GPT is a clear error naming the file."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import evoopt.cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY_GPT = ["--task", str(EXAMPLES / "tiny_gpt.toml"), "--set", "device=cpu", "--set", "steps=5",
            "--set", "width=16", "--set", "layers=1", "--set", "heads=2", "--set", "context=32",
            "--set", "batch_size=8", "--set", "eval_windows=16"]

evoopt.cli.register_commands()


def invoke(*args: str) -> Any:
    return CliRunner().invoke(evoopt.cli.app, list(args))


def evaluate_json(*args: str) -> dict[str, Any]:
    result = invoke("evaluate", "adam", *args, "-n", "1", "--threads", "1", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def write_text(path: Path, size: int) -> Path:
    """``size`` bytes of seeded pseudo-English, in lines of words."""
    rng = random.Random(0)
    words = ["the", "king", "shall", "speak", "of", "night", "and", "thou", "art", "my", "lord"]
    lines, n = [], 0
    while n < size:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12))).capitalize() + "."
        lines.append(line)
        n += len(line) + 1
    path.write_text("\n".join(lines)[:size])
    return path


def test_tabular_mlp_evaluates_to_a_finite_minimised_loss() -> None:
    pytest.importorskip("sklearn")
    d = evaluate_json("--task", f"{EXAMPLES / 'tabular_mlp.py'}:objective", "--set", "steps=30")
    (seed,) = d["seeds"]
    assert d["status"] == seed["status"] == "ok", seed["message"]
    assert d["direction"] == "minimize" and d["task"] == "tabular-mlp"
    assert math.isfinite(d["value"]) and 0 < d["value"] < math.log(2) * 2
    assert d["val_loss"] == d["value"] and 0.5 <= d["val_accuracy"] <= 1
    assert seed["steps"] == 30


def test_tiny_gpt_evaluates_on_a_users_text_file(tmp_path: Path) -> None:
    text = write_text(tmp_path / "book.txt", 40_000)
    d = evaluate_json(*TINY_GPT, "--set", f"text={text}")
    (seed,) = d["seeds"]
    assert d["status"] == seed["status"] == "ok", seed["message"]
    assert d["direction"] == "minimize" and d["task"] == "tiny-gpt"
    assert math.isfinite(d["value"]) and 0 < d["value"] < 2 * math.log(256)
    assert d["val_loss"] == d["value"]
    assert d["val_bpb"] == pytest.approx(d["value"] / math.log(2))
    assert seed["steps"] == 5


def short_text_args(tmp_path: Path) -> tuple[Path, list[str]]:
    text = write_text(tmp_path / "short.txt", 500)  # 5 % of 500 bytes < one 32-byte window
    return text, [*TINY_GPT, "--set", f"text={text}"]


def test_tiny_gpt_text_too_short_fails_a_campaign_before_it_starts(tmp_path: Path) -> None:
    text, args = short_text_args(tmp_path)
    out = tmp_path / "campaign"
    result = invoke("run", "quickstart", *args, "--out", str(out))
    assert result.exit_code == 2, result.output
    assert str(text) in result.output and "too short" in result.output
    assert not out.exists()


def test_tiny_gpt_text_too_short_is_a_clear_evaluate_error(tmp_path: Path) -> None:
    text, args = short_text_args(tmp_path)
    result = invoke("evaluate", "adam", *args, "-n", "1")
    assert result.exit_code == 2, result.output
    assert str(text) in result.output and "too short" in result.output


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("heads", "3", "heads (3) must divide width (16)"),
    ("text", "no-such-file.txt", "text file not found"),
])
def test_tiny_gpt_bad_fields_are_clear_errors(field: str, value: str, expected: str) -> None:
    result = invoke("evaluate", "adam", *TINY_GPT, "--set", f"{field}={value}", "-n", "1")
    assert result.exit_code == 2, result.output
    assert expected in result.output
