"""evoopt: evolutionary discovery of PyTorch optimizers.

Pipeline (imports point down it, never up):
genome (primitive registry) -> interpreter / exporter -> fitness task -> evaluator (serial or Ray)
-> strategy (ask/tell, DEAP operators) -> campaign store (SQLite) -> export, lineage report.
"""

__version__ = "0.1.0"
