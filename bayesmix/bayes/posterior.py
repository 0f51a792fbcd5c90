"""The posterior of the fast route: log density and gradient on one unconstrained vector, and which models it takes."""

from __future__ import annotations

import numpy as np

from bayesmix.bayes.densities import (
    COLLAPSE_MAX_Q,
    BetaPrior,
    CollapsedLmm,
    FullModel,
    ScalarTermGlmm,
    VarianceBlock,
    prior_logp,
    spherical_effects,
)
from bayesmix.bayes.pymc_model import (
    ModelPriors,
    filled_params,
    term_infos,
)

_H = 1e-20  # complex-step size (as bayesmix.bayes.densities'): derivatives exact to rounding


def fast_route_reason(result, priors: ModelPriors) -> str | None:
    """Why the fast route cannot take this model (None when it can)."""
    family = result.response_family
    if family.fast_route() is None:
        return f"the {family.name} family with the {family.link.name} link"
    if family.response_is_probability:
        w, y = result.compiled.weights, result.compiled.y
        if np.any(np.abs(w - np.round(w)) > 1e-7) or np.any(np.abs(y * w - np.round(y * w)) > 1e-7):
            return "non-integer binomial counts"
    if not priors.all_fast():
        return "a prior outside the fast route's distributions"
    return None


# --- the posterior on the unconstrained scale ---------------------------------------------------

class FastPosterior:
    """Log posterior density and gradient on the unconstrained vector ``[β, u (full model only), variance]``."""

    def __init__(self, result, priors: ModelPriors, collapsed: bool):
        self.result = result
        self.infos = term_infos(result)
        self.priors = priors
        self.p = result.compiled.p
        self.collapsed = collapsed
        self.integrate_beta = collapsed and result.is_lmm and all(b.dist == "Normal" for b in priors.beta)
        if not collapsed:
            self.lik = FullModel(result)
        elif result.is_lmm:
            normal = [filled_params(b) for b in priors.beta] if self.integrate_beta else None
            beta_prior = (np.array([b["mu"] for b in normal]), np.array([b["sigma"] for b in normal])) if normal else None
            self.lik = collapsed_lmm(result.compiled, beta_prior, rowless_cross_products(result))
        else:
            self.lik = ScalarTermGlmm(result)
        if self.integrate_beta:
            self.p = 0
        self.q = 0 if collapsed else self.lik.q
        self.variance = VarianceBlock(self.infos, priors)
        self.beta_prior = BetaPrior([] if self.integrate_beta else priors.beta)
        self.family = FamilyBlock(result.response_family, priors.family)
        if self.family.size and collapsed:
            raise ValueError("the family's sampled parameters need the random effects kept (collapse=False)")
        self.dim = self.p + self.q + self.variance.size + self.family.size
        self.evaluations = 0
        self.kernel = compiled_kernel(self)

    def logp_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """The log density and gradient: the numba kernel where it covers the model, else NumPy."""
        if self.kernel is not None:
            return self.kernel(x)
        return self.numpy_logp_and_grad(x)

    def split(self, x):
        """(β, u, variance block): the family's parameters, if any, follow (``family_part``)."""
        p, q = self.p, self.q
        return x[..., :p], x[..., p : p + q], x[..., p + q : p + q + self.variance.size]

    def family_part(self, x):
        return x[..., self.dim - self.family.size :]

    def family_draws(self, x) -> dict[str, np.ndarray]:
        """The family's sampled parameters (``nb_theta``) per row of x, on their natural scale."""
        return self.family.values(self.family_part(x))

    def numpy_logp_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        # nutpie calls from its own thread, where the caller's np.errstate does not reach
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._logp_and_grad(x)

    def _logp_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        self.evaluations += 1
        beta, u, v = self.split(x)
        (sigma, Ls, lp_v), (d_sigma_dv, d_L_dv, d_lp_dv) = self.variance.with_derivatives(v)
        lp_beta, d_lp_beta = self.beta_prior(beta)
        f = self.family_part(x)
        if self.family.size:
            self.lik.set_family(self.family.at(f))
        try:
            if self.collapsed:
                value, d_beta, d_sigma, d_Ls = self.lik.value_and_grad(beta, sigma, Ls)
                d_u = np.zeros(0)
            else:
                value, d_beta, d_sigma, d_Ls, d_u = self.lik.value_and_grad(beta, sigma, Ls, u)
        except np.linalg.LinAlgError:  # a numerically singular system: no density there
            return -np.inf, np.zeros_like(x)
        grad_v = d_lp_dv.copy()
        if sigma is not None:
            grad_v += d_sigma * d_sigma_dv
        for dL, dL_dv in zip(d_Ls, d_L_dv):
            grad_v += np.einsum("iab,ab->i", dL_dv, dL)
        total = value + lp_v + lp_beta
        grad = np.concatenate([d_beta + d_lp_beta, d_u, grad_v])
        if self.family.size:
            lp_f, d_lp_f = self.family.log_prior(f)
            d_f = self.family.chain(f, self.lik.parameter_grad(beta, Ls, u))
            total += lp_f
            grad = np.concatenate([grad, d_f + d_lp_f])
        if not np.isfinite(total) or not np.all(np.isfinite(grad)):
            return -np.inf, np.zeros_like(x)
        return float(total), grad

    def start(self) -> np.ndarray:
        r = self.result
        v0 = self.variance.start(r)
        if self.collapsed:
            return np.concatenate([r.beta_values[: self.p], v0])
        _, Ls, _ = self.variance.evaluate(v0)
        return np.concatenate([r.beta_values, *(u.ravel() for u in spherical_effects(r, Ls)), v0, self.family.start()])

    def jitter_scale(self) -> np.ndarray:
        se = np.sqrt(np.diag(self.result.vcov_values))[: self.p]
        return np.concatenate([se, np.full(self.q, 0.3), np.full(self.variance.size, 0.3), np.full(self.family.size, 0.1)])


class FamilyBlock:
    """The family's sampled parameters (the negative binomial's θ of a glmer_nb fit) on the log scale.

    Each enters x as log θ, with its prior and the log-Jacobian log θ added, as PyMC's log transform does.
    """

    def __init__(self, family, priors: dict):
        self.family = family
        self.names = list(priors)
        self.priors = [(priors[n].dist, filled_params(priors[n])) for n in self.names]
        self.size = len(self.names)

    def values(self, f) -> dict[str, np.ndarray]:
        return {name: np.exp(f[..., i]) for i, name in enumerate(self.names)}

    def at(self, f):
        """The family at one point f."""
        return self.family.with_parameters({n: float(v) for n, v in self.values(f).items()})

    def log_prior(self, f) -> tuple[float, np.ndarray]:
        """Σ log prior(e^f) + f and its gradient in f (complex step)."""
        total, grad = 0.0, np.zeros(self.size)
        for i, (dist, params) in enumerate(self.priors):
            z = f[i] + 1j * _H
            lp = prior_logp(dist, params, np.exp(z)) + z
            total += float(np.real(lp))
            grad[i] = float(np.imag(lp)) / _H
        return total, grad

    def chain(self, f, grads: dict[str, float]) -> np.ndarray:
        """d/df of the likelihood from its derivatives in the parameters (θ = e^f)."""
        return np.array([grads[name] * np.exp(f[i]) for i, name in enumerate(self.names)])

    def start(self) -> np.ndarray:
        estimates = self.family.parameter_estimates()
        return np.log(np.array([estimates[name] for name in self.names], dtype=float))


def dense_collapsible(compiled) -> bool:
    return sum(t.q for t in compiled.terms) <= COLLAPSE_MAX_Q


def blocked_collapsible(compiled) -> bool:
    from bayesmix.bayes import blockedlmm

    return blockedlmm.applicable(compiled)


def rowless_cross_products(result):
    """The cross-products of a fit whose rows stay on a cluster (bayesmix.distributed), else None:
    the collapsed LMM densities need nothing else."""
    return result.profiled_deviance.cross if getattr(result.compiled, "rowless", False) else None


def collapsed_lmm(compiled, beta_prior, cross=None):
    """The dense collapsed density for a few hundred random effects, the blocked one beyond
    (``cross``: a rowless fit's cross-products, used instead of the rows)."""
    if dense_collapsible(compiled) or not blocked_collapsible(compiled):
        return CollapsedLmm(compiled, beta_prior, cross=cross)
    from bayesmix.bayes.blockedlmm import BlockedCollapsedLmm

    return BlockedCollapsedLmm(compiled, beta_prior, cross=cross)


def compiled_kernel(post: FastPosterior):
    """bayesmix.bayes.fastdens's compiled density for ``post`` (None where it does not cover the model).

    numba comes with PyMC (pytensor depends on it); should it fail to import, NumPy serves.
    """
    try:
        from bayesmix.bayes import fastdens
    except ImportError:
        return None
    return fastdens.compile_posterior(post)
