"""Evaluator stage: run (genome, task, seed) evaluations serially or on a Ray actor pool.

Imports ``evoopt.fitness`` (what a worker runs) lazily; never the strategy or campaign stages.
"""

from evoopt.evaluator.base import (
    EvalOutcome,
    EvalRequest,
    Evaluator,
    EvaluatorStats,
    PreflightError,
    error_result,
    task_cache_key,
)
from evoopt.evaluator.ray_evaluator import RayEvaluator
from evoopt.evaluator.serial import SerialEvaluator
from evoopt.evaluator.worker import FitnessWorker

__all__ = [
    "EvalOutcome",
    "EvalRequest",
    "Evaluator",
    "EvaluatorStats",
    "FitnessWorker",
    "PreflightError",
    "RayEvaluator",
    "SerialEvaluator",
    "error_result",
    "task_cache_key",
]
