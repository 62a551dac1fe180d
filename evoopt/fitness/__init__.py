"""Fitness stage: task specs, workloads (CIFAR-10 with a small CNN or ViT, tiny Shakespeare with a
character transformer), training runs, baselines.

```python
from evoopt.fitness import load_task, FitnessRunner, evaluate_genome, WORST_FITNESS
runner = FitnessRunner(load_task("cifar10-cpu"))
rec = runner.evaluate(genome, seed=0)          # SeedResult; never raises
```
"""

from evoopt.fitness.data import DataError, load_cifar10, make_splits
from evoopt.fitness.runner import (
    WORST_FITNESS,
    EvaluationResult,
    FitnessRunner,
    SeedResult,
    bits_per_char,
    check_task_data,
    evaluate_genome,
    make_runner,
)
from evoopt.fitness.task import DEFAULT_TASK, TaskError, TaskSpec, available_tasks, load_task
from evoopt.fitness.text_data import load_shakespeare

__all__ = [
    "DEFAULT_TASK",
    "DataError",
    "EvaluationResult",
    "FitnessRunner",
    "SeedResult",
    "TaskError",
    "TaskSpec",
    "WORST_FITNESS",
    "available_tasks",
    "bits_per_char",
    "check_task_data",
    "evaluate_genome",
    "load_cifar10",
    "load_shakespeare",
    "load_task",
    "make_runner",
    "make_splits",
]
