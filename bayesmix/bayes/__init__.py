"""The Bayesian side: the PyMC model of a fit, its priors, posterior sampling routes, and the frequentist/Bayesian comparison (the only layer that imports PyMC, ArviZ, nutpie and numba)."""

from bayesmix.bayes.compare import compare
from bayesmix.bayes.pymc_model import Prior, build_pymc_model
from bayesmix.bayes.sampling import sample
from bayesmix.errors import PriorError, SamplingError

__all__ = ["Prior", "PriorError", "SamplingError", "build_pymc_model", "compare", "sample"]
