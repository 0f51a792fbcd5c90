"""bayesmix: lme4's lmer and glmer in Python, with the same model in PyMC one call away."""

from bayesmix.api import ConvergenceWarning, SingularFitWarning, glmer, lmer
from bayesmix.datasets import list_datasets, load_dataset
from bayesmix.design import DataError
from bayesmix.formula import FormulaError

__all__ = [
    "ConvergenceWarning",
    "DataError",
    "FormulaError",
    "SingularFitWarning",
    "list_datasets",
    "glmer",
    "lmer",
    "load_dataset",
]
__version__ = "0.1.0"
