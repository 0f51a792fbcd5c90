"""bayesmix: lme4's lmer and glmer in Python, with the same model in PyMC one call away."""

from importlib import import_module

from bayesmix.api import ConvergenceWarning, SeparationWarning, SingularFitWarning, glmer, lmer
from bayesmix.datasets import list_datasets, load_dataset
from bayesmix.design import DataError
from bayesmix.formula import FormulaError

# Loaded on first use, so that `import bayesmix` and a fit cost no more than they need:
# the Bayesian side pulls in PyMC, ArviZ and matplotlib, inference pulls in scipy.stats.
_LAZY = {
    "anova": "bayesmix.inference",
    "exact_rlrt": "bayesmix.inference",
    "pb_test": "bayesmix.inference",
    "compare": "bayesmix.bayes",
    "SamplingError": "bayesmix.bayes",
    "Prior": "bayesmix.pymc_model",
    "PriorError": "bayesmix.pymc_model",
}
_LAZY_MODULES = {"families", "plots", "inference", "bayes", "pymc_model"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
    elif name in _LAZY_MODULES:
        value = import_module(f"bayesmix.{name}")
    else:
        raise AttributeError(f"module 'bayesmix' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | _LAZY_MODULES)


__all__ = [
    "ConvergenceWarning",
    "DataError",
    "FormulaError",
    "Prior",
    "PriorError",
    "SamplingError",
    "SeparationWarning",
    "SingularFitWarning",
    "anova",
    "compare",
    "exact_rlrt",
    "families",
    "glmer",
    "lmer",
    "list_datasets",
    "load_dataset",
    "pb_test",
    "plots",
]
__version__ = "0.1.0"
