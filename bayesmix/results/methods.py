"""The one door from results up to inference and bayes: the methods a fit offers that live in those layers.

lme4 registers ``confint``, ``profile``, ``simulate`` and ``bootMer`` as S3 methods so the
model class never imports them; Python has no such dispatch, so the result classes call
these thin functions, and this module alone imports upward (lazily, so that a fit loads
neither scipy.stats-heavy inference code nor PyMC until asked).  The import-layers
contract in pyproject.toml names this module as its single exception.
"""

from __future__ import annotations


def summary_with_ddf(result, ddf: str) -> str:
    from bayesmix.inference.ddf import format_summary

    return format_summary(result, ddf)


def confint(result, **kwargs):
    from bayesmix.inference.profiles import confint as _confint

    return _confint(result, **kwargs)


def profile(result, **kwargs):
    from bayesmix.inference.profiles import profile as _profile

    return _profile(result, **kwargs)


def simulate(result, **kwargs):
    from bayesmix.inference.parametric_bootstrap import simulate as _simulate

    return _simulate(result, **kwargs)


def refit(result, new_response):
    from bayesmix.inference.parametric_bootstrap import refit as _refit

    return _refit(result, new_response)


def bootstrap(result, func, **kwargs):
    from bayesmix.inference.parametric_bootstrap import bootstrap as _bootstrap

    return _bootstrap(result, func, **kwargs)


def anova_table(result, **kwargs):
    from bayesmix.inference.ddf import anova_table as _anova_table

    return _anova_table(result, **kwargs)


def pymc_model(result, priors=None):
    from bayesmix.bayes.pymc_model import build_pymc_model

    return build_pymc_model(result, priors)


def sample(result, **kwargs):
    from bayesmix.bayes.sampling import sample as _sample

    return _sample(result, **kwargs)


def is_posterior(value) -> bool:
    """A posterior from ``m.sample()`` (an ArviZ DataTree / InferenceData with a posterior group)."""
    children = getattr(value, "children", None)
    return children is not None and "posterior" in children


def posterior_predict(result, post, **kwargs):
    from bayesmix.bayes.predictive import predict

    return predict(result, post, **kwargs)


def log_likelihood(result, post, **kwargs):
    from bayesmix.bayes.predictive import log_likelihood as _log_likelihood

    return _log_likelihood(result, post, **kwargs)


def sample_posterior_predictive(result, post, **kwargs):
    from bayesmix.bayes.predictive import (
        sample_posterior_predictive as _sample_posterior_predictive,
    )

    return _sample_posterior_predictive(result, post, **kwargs)


def tidy_posterior(result, post, **kwargs):
    from bayesmix.bayes.compare import tidy_posterior as _tidy_posterior

    return _tidy_posterior(result, post, **kwargs)


def posterior_variance(result, post, which: str):
    from bayesmix.bayes.variance import posterior_icc, posterior_r2

    return posterior_icc(result, post) if which == "icc" else posterior_r2(result, post)


def sample_prior_predictive(result, **kwargs):
    from bayesmix.bayes.predictive import (
        sample_prior_predictive as _sample_prior_predictive,
    )

    return _sample_prior_predictive(result, **kwargs)
