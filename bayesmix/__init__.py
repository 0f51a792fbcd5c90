"""bayesmix: lme4's lmer and glmer in Python, with the same model in PyMC one call away.

Layers, each importing only those below it (enforced by import-linter, see pyproject.toml):
``api`` / ``plots`` → ``inference`` | ``bayes`` (siblings) → ``results`` → ``engine`` →
``spec`` → ``rformat`` / ``errors``.
"""

from importlib import import_module

from bayesmix.api import glmer, glmer_nb, lmer
from bayesmix.datasets import list_datasets, load_dataset
from bayesmix.errors import (
    ArgumentError,
    BayesmixError,
    BayesmixWarning,
    ConvergenceWarning,
    DataError,
    FitError,
    FormulaError,
    PirlsError,
    SeparationWarning,
    SingularFitWarning,
)

# Loaded on first use, so that `import bayesmix` and a fit cost no more than they need:
# the Bayesian side pulls in PyMC, ArviZ and matplotlib, inference pulls in scipy.stats.
_LAZY = {
    "anova": "bayesmix.inference",
    "exact_rlrt": "bayesmix.inference",
    "hausman": "bayesmix.inference",
    "pb_test": "bayesmix.inference",
    "compare": "bayesmix.bayes",
    "predictions": "bayesmix.results.conditional",
    "plot_predictions": "bayesmix.plots_predictions",
    "Prior": "bayesmix.bayes",
    "SamplingError": "bayesmix.errors",
    "PriorError": "bayesmix.errors",
    "InferenceError": "bayesmix.errors",
}
_LAZY_MODULES = {"families": "bayesmix.engine.families", "plots": "bayesmix.plots",
                 "inference": "bayesmix.inference", "bayes": "bayesmix.bayes"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
    elif name in _LAZY_MODULES:
        value = import_module(_LAZY_MODULES[name])
    else:
        raise AttributeError(f"module 'bayesmix' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_LAZY_MODULES))


__all__ = [
    "ArgumentError",
    "BayesmixError",
    "BayesmixWarning",
    "ConvergenceWarning",
    "DataError",
    "FitError",
    "FormulaError",
    "InferenceError",
    "PirlsError",
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
    "glmer_nb",
    "hausman",
    "lmer",
    "list_datasets",
    "load_dataset",
    "pb_test",
    "plot_predictions",
    "plots",
    "predictions",
]
__version__ = "0.1.0"
