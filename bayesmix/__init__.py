"""bayesmix: lme4's lmer and glmer in Python, with the same model in PyMC one call away."""

from bayesmix.api import ConvergenceWarning, SingularFitWarning, glmer, lmer
from bayesmix.datasets import list_datasets, load_dataset
from bayesmix.design import DataError
from bayesmix.formula import FormulaError
from bayesmix.inference import anova, exact_rlrt, pb_test

__all__ = [
    "ConvergenceWarning",
    "DataError",
    "FormulaError",
    "SingularFitWarning",
    "anova",
    "exact_rlrt",
    "list_datasets",
    "glmer",
    "lmer",
    "load_dataset",
    "pb_test",
]
__version__ = "0.1.0"
