"""bayesmix: lme4's lmer and glmer in Python, with the same model in PyMC one call away."""

from bayesmix.datasets import list_datasets, load_dataset

__all__ = ["list_datasets", "load_dataset"]
__version__ = "0.1.0"
