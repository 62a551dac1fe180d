"""Fitness stage: CIFAR-10 data and splits, the small CNN, task specs, training runs, baselines.

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
    check_task_data,
    evaluate_genome,
)
from evoopt.fitness.task import DEFAULT_TASK, TaskError, TaskSpec, available_tasks, load_task

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
    "check_task_data",
    "evaluate_genome",
    "load_cifar10",
    "load_task",
    "make_splits",
]
