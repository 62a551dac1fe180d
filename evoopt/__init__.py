"""evoopt: evolutionary discovery of PyTorch optimizers.

Pipeline (imports point down it, never up):
genome (primitive registry) -> interpreter / exporter -> fitness task -> evaluator (serial or Ray)
-> strategy (ask/tell, DEAP operators) -> campaign store (SQLite) -> export, lineage report.
"""

__version__ = "0.1.0"

#: the public API for user tasks, imported on first use (``import evoopt`` stays light: no
#: torch, no Ray): name -> module
_LAZY = {
    "objective": "evoopt.fitness.objective",
    "Trial": "evoopt.fitness.objective",
    "TrialPruned": "evoopt.fitness.objective",
    "Score": "evoopt.fitness.orientation",
    "TrainingTask": "evoopt.fitness.training_task",
    "TaskContext": "evoopt.fitness.training_task",
    "run_campaign": "evoopt.api",
    "CampaignResult": "evoopt.api",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'evoopt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["CampaignResult", "Score", "TaskContext", "TrainingTask", "Trial", "TrialPruned",
           "objective", "run_campaign"]
