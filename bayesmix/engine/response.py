"""The response side of a fit (lme4's ``respModule``): residuals of every type and the Pearson scale.

One home for what lmer and glmer results, the result builder and inference all need from
(y, μ, η, prior weights, family); an LMM is the Gaussian family with the identity link here.
"""

from __future__ import annotations

import numpy as np

from bayesmix.errors import ArgumentError

RESIDUAL_TYPES = ("deviance", "pearson", "response", "working")


def residuals(family, y, mu, eta, weights, type: str) -> np.ndarray:
    """R's ``residuals.glm`` types, which ``residuals.merMod`` follows.

    "working" is (y − μ) / (dμ/dη): for an identity link, y − μ whatever the weights (lme4).
    """
    if type == "response":
        return y - mu
    if type == "pearson":
        return (y - mu) * np.sqrt(weights) / np.sqrt(family.variance(mu))
    if type == "deviance":
        return np.sign(y - mu) * np.sqrt(np.maximum(family.dev_resids(y, mu, weights), 0.0))
    if type == "working":
        return (y - mu) / family.link.mu_eta(eta)
    raise ArgumentError(f"unknown residual type {type!r}; use one of {', '.join(map(repr, RESIDUAL_TYPES))}")


def sigma_ml(family, y, mu, weights, u) -> float:
    """lme4's ``sigmaML`` of a GLMM with a scale: sqrt(pwrss / n), pwrss = Pearson RSS + ||u||²."""
    pearson = (y - mu) ** 2 * weights / family.variance(mu)
    return float(np.sqrt((pearson.sum() + u @ u) / len(y)))
