"""GLM families with R's numerics (``stats::family``, ``MASS::negative.binomial``) and all their behaviour.

A family owns everything that depends on the response distribution: the variance function,
deviance residuals, AIC and start values PIRLS needs; the per-observation log-likelihood;
simulation of new responses; the response's distribution in a PyMC model (the ``pm``/``pt``
modules are passed in: the engine never imports PyMC); and the pieces of the fast sampler's
log density (``glm_data``, ``glm_terms``, ``glm_score``, ``kernel_code``).  Nothing outside
this module switches on a family's or a link's name; a new family is one new class here.

Prior weights follow lme4: binomial weights are numbers of trials (the response is then
the proportion of successes), Poisson and negative-binomial weights multiply the
log-likelihood, and gaussian, Gamma and inverse-Gaussian weights scale the precision
(variance ``σ² V(μ) / w``).
"""

from __future__ import annotations

import re

import numpy as np
from scipy.special import digamma, expit, gammaln, log_ndtr, xlogy

from bayesmix.engine.links import LINKS, Link
from bayesmix.errors import DataWarning, FamilyError, warn
from bayesmix.rformat import r_format_number, r_round

_LOG_2PI = float(np.log(2.0 * np.pi))

# codes of the likelihoods bayesmix.bayes.fastdens compiles (its numba kernels switch on them)
KERNEL_BINOMIAL_LOGIT, KERNEL_POISSON_LOG = 0, 1


class Family:
    """An exponential family as R's ``family`` object, with its behaviour (see the module docstring)."""

    name: str = ""
    default_link: str = ""
    allowed_links: tuple[str, ...] = ()
    has_scale: bool = False
    # the response may be given as cbind(successes, failures), a two-level factor or
    # proportions with trials as weights (and fitted values near 0 or 1 mean separation)
    response_is_probability: bool = False
    # parameters beyond β, θ (and σ) that lme4 counts in logLik's df (the negative-binomial θ)
    extra_df: int = 0
    # links the fast sampler's GLM log density (glm_terms) evaluates
    fast_links: tuple[str, ...] = ()

    def __init__(self, link: str | None = None):
        link = self.default_link if link is None else str(link).strip().strip("\"'")
        if link not in self.allowed_links:
            raise FamilyError(
                f"link '{link}' is not available for the {self.name} family; "
                f"choose one of {', '.join(repr(k) for k in self.allowed_links)}"
            )
        self.link: Link = LINKS[link]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(link={self.link.name!r})"

    @property
    def hands_glmer_to_lmer(self) -> bool:
        """lme4's glmer fits this family by lmer instead (gaussian with the identity link)."""
        return False

    # Nakagawa & Schielzeth's R² and the ICC need the distribution-specific variance on the link
    # scale (R's performance package); a family that has one overrides these two.
    needs_null_intercept: bool = False

    def _lognormal_variance(self, null_intercept: float) -> float:
        """log(1 + V(λ)/λ²) at λ = exp(β₀ of the null model): Nakagawa et al. (2017)'s lognormal
        approximation for log links (Poisson: log(1 + 1/λ); negative binomial: log(1 + 1/λ + 1/θ))."""
        lam = float(np.exp(null_intercept))
        return float(np.log1p(self.variance(np.array([lam]))[0] / lam**2))

    def distribution_variance(self, null_intercept: float | None = None) -> float:
        """The observation-level variance on the link scale (performance's ``get_variance_distribution``)."""
        if self.link.name == "log" and self.needs_null_intercept and null_intercept is not None:
            return self._lognormal_variance(null_intercept)
        raise FamilyError(f"ICC and R² are available for LMMs and binomial/Poisson GLMMs (as performance's), "
                          f"not the {self.name} family with the {self.link.name} link")

    @property
    def comparable_name(self) -> str:
        """Fits whose families share this name (and link) have likelihoods a test may compare."""
        return self.name

    @classmethod
    def from_call(cls, args: list[str], kwargs: dict[str, str]) -> Family:
        """The family from the arguments of an R call such as ``poisson(link = "sqrt")``."""
        link = _argument("link", args, kwargs)
        _no_more(cls.name, args, kwargs)
        return cls(link)

    # --- what PIRLS and the Laplace deviance need ---------------------------------------------

    def variance(self, mu):
        raise NotImplementedError

    def dev_resids(self, y, mu, wt):
        raise NotImplementedError

    def aic(self, y, n, mu, wt, dev):
        """R's ``family$aic``: −2 log-likelihood (plus 2 for a scale parameter, as R adds)."""
        raise NotImplementedError

    def initialize(self, y, wt):
        """R's ``family$initialize``: (y, weights, mustart)."""
        return y, wt, np.asarray(y, float).copy()

    def check_response(self, y, weights) -> None:
        """Raise (or warn) before fitting when the response cannot come from this family."""

    # --- the response distribution ------------------------------------------------------------

    def loglik(self, y, mu, weights, sigma=1.0) -> np.ndarray:
        """log p(y_i | μ_i) per observation, with lme4's use of prior weights (module docstring)."""
        raise NotImplementedError

    def simulate(self, mu, weights, sigma, rng: np.random.Generator) -> np.ndarray:
        """One new response per observation with means ``mu`` (on the scale of the model's response)."""
        raise NotImplementedError

    def pymc_likelihood(self, pm, pt, name: str, mu, observed, weights, sigma, params: dict) -> None:
        """Add the observed response to the current PyMC model; ``mu`` is a PyTensor tensor.

        ``params`` holds the PyMC variables of :meth:`bayes_parameters`.
        """
        raise NotImplementedError

    def bayes_parameters(self) -> dict[str, tuple[str, dict]]:
        """Family parameters the Bayesian model samples: name -> default prior (PyMC distribution, parameters)."""
        return {}

    def parameter_estimates(self) -> dict[str, float]:
        """The fit's estimates of :meth:`bayes_parameters`, under the same names."""
        return {}

    def with_parameters(self, values: dict[str, float]) -> Family:
        """This family with :meth:`bayes_parameters` set to ``values`` (one draw of them)."""
        return self

    # --- the fast sampler's log density -------------------------------------------------------

    def fast_route(self) -> str | None:
        """Which of the fast sampler's likelihoods serves this family: "glm" (glm_terms) or None.

        A family with :meth:`bayes_parameters` is taken with the random effects kept (not integrated
        out), its parameters' scores from :meth:`glm_parameter_scores`.
        """
        return "glm" if self.link.name in self.fast_links else None

    def glm_data(self, y, w) -> tuple[dict, float]:
        """The response as :meth:`glm_terms` needs it, and the log density's constant."""
        raise NotImplementedError

    def glm_terms(self, eta, data: dict):
        """Per observation: log p(y | η) less constants, its derivative in η, and the Fisher information.

        ``eta`` may carry trailing axes (quadrature nodes); the data broadcast along them.
        """
        raise NotImplementedError

    def glm_parameter_scores(self, eta, data: dict) -> dict[str, np.ndarray]:
        """Per observation: the derivative of log p(y | η) (constants included) in each of :meth:`bayes_parameters`."""
        return {}

    def glm_score(self, eta, data: dict):
        """:meth:`glm_terms`'s derivative and Fisher information only (mode searches need no log density)."""
        _, d1, info = self.glm_terms(eta, data)
        return d1, info

    @property
    def kernel_code(self) -> int | None:
        """The code of bayesmix.bayes.fastdens's compiled likelihood for this family, None if it has none."""
        return None

    def kernel_arrays(self, data: dict) -> tuple[np.ndarray, np.ndarray]:
        """The two per-observation arrays the compiled likelihood reads."""
        raise NotImplementedError


def _argument(name: str, args: list, kwargs: dict):
    """R's argument matching for one formal: by name, else the next positional argument."""
    if name in kwargs:
        return kwargs.pop(name)
    return args.pop(0) if args else None


def _no_more(name: str, args: list, kwargs: dict) -> None:
    if args or kwargs:
        extra = [*args, *(f"{k} = {v}" for k, v in kwargs.items())]
        raise FamilyError(f"the {name} family does not take the argument(s) {', '.join(extra)}")


def _extra(data: dict, key: str, eta) -> np.ndarray:
    """``data[key]`` broadcast against ``eta``'s trailing (quadrature) axes."""
    return data[key][(slice(None),) + (None,) * (np.ndim(eta) - 1)]


def _xlog(a, log_b):
    return np.where(a == 0, 0.0, a * log_b)


def _whole_trials(weights) -> np.ndarray:
    if np.any(np.abs(weights - np.round(weights)) > 1e-8):
        raise FamilyError("binomial responses need whole numbers of trials (weights); these are not")
    return np.round(weights)


# --- binomial ------------------------------------------------------------------------------------

def _binomial_logit_terms(eta, n, k):
    mu = expit(eta)  # k log μ + (n - k) log(1 - μ) = k η - n log(1 + e^η)
    return k * eta - n * np.logaddexp(0.0, eta), k - n * mu, n * mu * (1.0 - mu)


def _binomial_probit_terms(eta, n, k):
    log_mu, log_1m = log_ndtr(eta), log_ndtr(-eta)
    log_phi = -0.5 * eta * eta - 0.5 * _LOG_2PI
    d1 = k * np.exp(log_phi - log_mu) - (n - k) * np.exp(log_phi - log_1m)
    return _xlog(k, log_mu) + _xlog(n - k, log_1m), d1, n * np.exp(2 * log_phi - log_mu - log_1m)


def _binomial_cloglog_terms(eta, n, k):
    e = np.exp(eta)
    log_1m = -e
    log_mu = np.log(-np.expm1(-e))
    d1 = k * e * np.exp(-e - log_mu) - (n - k) * e
    return _xlog(k, log_mu) + _xlog(n - k, log_1m), d1, n * e * e * np.exp(log_1m - log_mu)


_BINOMIAL_TERMS = {"logit": _binomial_logit_terms, "probit": _binomial_probit_terms,
                   "cloglog": _binomial_cloglog_terms}


class Binomial(Family):
    response_is_probability = True
    _DISTRIBUTION_VARIANCE = {"logit": np.pi**2 / 3, "probit": 1.0, "cloglog": np.pi**2 / 6}

    def distribution_variance(self, null_intercept=None):
        if self.link.name not in self._DISTRIBUTION_VARIANCE:
            return super().distribution_variance(null_intercept)
        return float(self._DISTRIBUTION_VARIANCE[self.link.name])
    name, default_link = "binomial", "logit"
    allowed_links = ("logit", "probit", "cauchit", "log", "cloglog")
    fast_links = ("logit", "probit", "cloglog")

    def variance(self, mu):
        return mu * (1.0 - mu)

    def dev_resids(self, y, mu, wt):
        if np.all((y == 0.0) | (y == 1.0)):  # 0/1 outcomes: one term of each row vanishes (an exact +0.0),
            # so the other alone is the same sum to the bit, at a third of the time (PIRLS's step halving
            # computes this at every trial: 7% of a 20k-row binary fit)
            return 2.0 * wt * xlogy(1.0, np.where(y == 1.0, 1.0 / mu, 1.0 / (1.0 - mu)))
        return 2.0 * wt * (xlogy(y, y / mu) + xlogy(1.0 - y, (1.0 - y) / (1.0 - mu)))

    def aic(self, y, n, mu, wt, dev):
        m = n if np.any(n > 1) else wt
        k = np.round(m * y)
        mr = np.round(m)
        logpmf = gammaln(mr + 1) - gammaln(k + 1) - gammaln(mr - k + 1) + xlogy(k, mu) + xlogy(mr - k, 1.0 - mu)
        scale = np.where(m > 0, wt / np.where(m > 0, m, 1.0), 0.0)
        return float(-2.0 * np.sum(scale * logpmf))

    def initialize(self, y, wt):
        return y, wt, (wt * y + 0.5) / (wt + 1.0)

    def check_response(self, y, weights) -> None:
        if np.any((y < 0) | (y > 1)):
            bad = np.flatnonzero((y < 0) | (y > 1))
            raise FamilyError(
                f"binomial response must lie in [0, 1] (a 0/1 outcome, a proportion with weights=trials, "
                f"or cbind(successes, failures)); {len(bad)} value(s) outside, e.g. {float(y[bad[0]]):g} in row {bad[0]}"
            )
        successes = y * weights
        if np.any(np.abs(successes - np.round(successes)) > 1e-7):
            warn("non-integer #successes in a binomial glm (response × weights is not a whole number)", DataWarning)

    def loglik(self, y, mu, weights, sigma=1.0):
        n, k = np.round(weights), np.round(y * weights)
        return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1) + xlogy(k, mu) + xlogy(n - k, 1.0 - mu)

    def simulate(self, mu, weights, sigma, rng):
        trials = _whole_trials(weights).astype(np.int64)
        return rng.binomial(trials, mu) / np.maximum(trials, 1)

    def pymc_likelihood(self, pm, pt, name, mu, observed, weights, sigma, params):
        trials, successes = np.round(weights), observed * weights
        if np.any(np.abs(successes - np.round(successes)) > 1e-7) or np.any(np.abs(weights - trials) > 1e-7):
            raise FamilyError("the Bayesian binomial model needs whole numbers of trials and successes "
                              "(response × weights); these are not")
        pm.Binomial(name, n=trials.astype(int), p=mu, observed=np.round(successes).astype(int))

    def glm_data(self, y, w):
        trials, successes = np.round(w), np.round(y * w)
        const = float(np.sum(gammaln(trials + 1) - gammaln(successes + 1) - gammaln(trials - successes + 1)))
        return {"n": trials, "k": successes}, const

    def glm_terms(self, eta, data):
        return _BINOMIAL_TERMS[self.link.name](eta, _extra(data, "n", eta), _extra(data, "k", eta))

    def glm_score(self, eta, data):
        if self.link.name == "logit":  # the common case, without the log density
            mu, n = expit(eta), _extra(data, "n", eta)
            return _extra(data, "k", eta) - n * mu, n * mu * (1.0 - mu)
        return super().glm_score(eta, data)

    @property
    def kernel_code(self):
        return KERNEL_BINOMIAL_LOGIT if self.link.name == "logit" else None

    def kernel_arrays(self, data):
        return data["n"], data["k"]


# --- Poisson -------------------------------------------------------------------------------------

class Poisson(Family):
    name, default_link = "poisson", "log"
    allowed_links = ("log", "identity", "sqrt")
    fast_links = ("log",)

    @property
    def needs_null_intercept(self) -> bool:  # the lognormal approximation uses the null model's mean
        return self.link.name == "log"

    def distribution_variance(self, null_intercept=None):
        if self.link.name == "sqrt":
            return 0.25
        return super().distribution_variance(null_intercept)

    def variance(self, mu):
        return mu

    def dev_resids(self, y, mu, wt):
        r = mu * wt
        pos = y > 0
        r = np.where(pos, wt * (xlogy(y, np.where(pos, y, 1.0) / mu) - (y - mu)), r)
        return 2.0 * r

    def aic(self, y, n, mu, wt, dev):
        logpmf = xlogy(y, mu) - mu - gammaln(y + 1)
        return float(-2.0 * np.sum(logpmf * wt))

    def initialize(self, y, wt):
        return y, wt, y + 0.1

    def check_response(self, y, weights) -> None:
        if np.any(y < 0):
            raise FamilyError(f"negative values are not allowed for the poisson family "
                              f"({int(np.sum(y < 0))} negative response value(s), e.g. {float(y[y < 0][0]):g})")
        _warn_if_not_counts(y, "poisson")

    def loglik(self, y, mu, weights, sigma=1.0):
        return weights * (xlogy(y, mu) - mu - gammaln(y + 1))

    def simulate(self, mu, weights, sigma, rng):
        return rng.poisson(mu).astype(float)

    def pymc_likelihood(self, pm, pt, name, mu, observed, weights, sigma, params):
        if np.allclose(weights, 1.0):
            pm.Poisson(name, mu=mu, observed=observed)
        else:
            pm.Potential(f"{name}_weighted", pt.sum(weights * pm.logp(pm.Poisson.dist(mu=mu), observed)))

    def glm_data(self, y, w):
        return {"y": y, "w": w}, -float(np.sum(w * gammaln(y + 1)))

    def glm_terms(self, eta, data):
        y, w = _extra(data, "y", eta), _extra(data, "w", eta)
        mu = np.exp(eta)
        return w * (y * eta - mu), w * (y - mu), w * mu

    @property
    def kernel_code(self):
        return KERNEL_POISSON_LOG if self.link.name == "log" else None

    def kernel_arrays(self, data):
        return data["w"], data["y"]


def _warn_if_not_counts(y, name: str) -> None:
    if np.any(np.abs(y - np.round(y)) > 1e-7):
        warn(f"non-integer response values for the {name} family: the log-likelihood "
             "uses lgamma(y+1) as R does, but counts are expected", DataWarning)


# --- families with a scale parameter ---------------------------------------------------------------

def _require_positive(y, rule: str) -> None:
    """Raise the family's ``rule`` (R's wording) with the count of responses ≤ 0 breaking it."""
    if np.any(y <= 0):
        raise FamilyError(f"{rule} ({int(np.sum(y <= 0))} response value(s) ≤ 0)")


class Gamma(Family):
    name, default_link = "Gamma", "inverse"
    allowed_links = ("inverse", "identity", "log")
    has_scale = True

    def variance(self, mu):
        return mu * mu

    def dev_resids(self, y, mu, wt):
        ratio = np.where(y == 0, 1.0, y / mu)
        return -2.0 * wt * (np.log(ratio) - (y - mu) / mu)

    def aic(self, y, n, mu, wt, dev):
        disp = dev / np.sum(wt)
        shape = 1.0 / disp
        scale = mu * disp
        logpdf = (shape - 1) * np.log(y) - y / scale - gammaln(shape) - shape * np.log(scale)
        return float(-2.0 * np.sum(logpdf * wt) + 2.0)

    def check_response(self, y, weights) -> None:
        _require_positive(y, "non-positive values are not allowed for the Gamma family")

    def loglik(self, y, mu, weights, sigma=1.0):
        shape = weights / sigma**2  # lme4: Var(y) = σ² μ² / w
        rate = shape / mu
        return shape * np.log(rate) - gammaln(shape) + (shape - 1.0) * np.log(y) - rate * y

    def simulate(self, mu, weights, sigma, rng):
        # lme4 uses shape σ·w, which does not give the fitted variance σ² μ² / w; this does
        shape = weights / sigma**2
        return rng.gamma(shape, mu / shape)

    def pymc_likelihood(self, pm, pt, name, mu, observed, weights, sigma, params):
        shape = weights / sigma**2
        pm.Gamma(name, alpha=shape, beta=shape / mu, observed=observed)


class InverseGaussian(Family):
    name, default_link = "inverse.gaussian", "1/mu^2"
    allowed_links = ("1/mu^2", "inverse", "identity", "log")
    has_scale = True

    def variance(self, mu):
        return mu**3

    def dev_resids(self, y, mu, wt):
        return wt * (y - mu) ** 2 / (y * mu * mu)

    def aic(self, y, n, mu, wt, dev):
        return float(np.sum(wt) * (np.log(dev / np.sum(wt) * 2 * np.pi) + 1) + 3 * np.sum(np.log(y) * wt) + 2)

    def check_response(self, y, weights) -> None:
        _require_positive(y, "positive values only are allowed for the inverse.gaussian family")

    def loglik(self, y, mu, weights, sigma=1.0):
        lam = weights / sigma**2  # Var(y) = σ² μ³ / w
        return 0.5 * (np.log(lam) - _LOG_2PI - 3.0 * np.log(y)) - lam * (y - mu) ** 2 / (2.0 * mu * mu * y)

    def simulate(self, mu, weights, sigma, rng):
        return rng.wald(mu, weights / sigma**2)

    def pymc_likelihood(self, pm, pt, name, mu, observed, weights, sigma, params):
        pm.Wald(name, mu=mu, lam=weights / sigma**2, observed=observed)


class Gaussian(Family):
    name, default_link = "gaussian", "identity"
    allowed_links = ("identity", "log", "inverse")
    has_scale = True

    @property
    def hands_glmer_to_lmer(self) -> bool:
        return self.link.name == "identity"

    def variance(self, mu):
        return np.ones_like(mu, dtype=float)

    def dev_resids(self, y, mu, wt):
        return wt * (y - mu) ** 2

    def aic(self, y, n, mu, wt, dev):
        nobs = len(y)
        return float(nobs * (np.log(2 * np.pi * dev / nobs) + 1) + 2 - np.sum(np.log(wt)))

    def check_response(self, y, weights) -> None:
        if self.link.name == "log" and np.any(y <= 0):
            raise FamilyError("cannot find valid starting values: the gaussian family with a log link "
                              "needs a positive response")
        if self.link.name == "inverse" and np.any(y == 0):
            raise FamilyError("cannot find valid starting values: the gaussian family with an inverse link "
                              "needs a non-zero response")

    def loglik(self, y, mu, weights, sigma=1.0):
        return 0.5 * (np.log(weights) - _LOG_2PI) - np.log(sigma) - 0.5 * weights * (y - mu) ** 2 / sigma**2

    def simulate(self, mu, weights, sigma, rng):
        return mu + sigma / np.sqrt(weights) * rng.standard_normal(np.shape(mu))

    def pymc_likelihood(self, pm, pt, name, mu, observed, weights, sigma, params):
        pm.Normal(name, mu=mu, sigma=sigma / np.sqrt(weights), observed=observed)

    def fast_route(self):
        """The identity-link gaussian has its own fast densities (collapsed or not): "normal"."""
        return "normal" if self.link.identity else None


# --- negative binomial ---------------------------------------------------------------------------

NB_THETA = "nb_theta"  # the shape's name in the Bayesian model (lme4's getME(m, "glmer.nb.theta"))
# brms's default prior for the negative-binomial shape: proper, nearly flat on log θ over θ ∈ (0.01, 100)
NB_THETA_PRIOR = ("Gamma", {"alpha": 0.01, "beta": 0.01})


class NegativeBinomial(Family):
    """MASS's ``negative.binomial(theta)``: Var(y) = μ + μ²/θ with the shape θ known.

    ``estimated=True`` marks a θ that ``glmer_nb`` estimated: the Bayesian model then gives θ a
    prior (``Gamma(0.01, 0.01)``, brms's default) instead of holding it fixed.
    """

    default_link = "log"
    allowed_links = ("log", "identity", "sqrt")
    fast_links = ("log",)
    extra_df = 1  # lme4 1.1-31's npar.merMod counts θ for any "Negative Binomial" family, fixed or not

    @property
    def needs_null_intercept(self) -> bool:  # ICC/R²: the lognormal approximation at the null model's mean
        return self.link.name == "log"

    def __init__(self, theta, link: str | None = None, estimated: bool = False):
        try:
            value = float(theta)
        except (TypeError, ValueError):
            raise FamilyError(f"negative.binomial: theta must be a positive number, got {theta!r}") from None
        if not np.isfinite(value) or value <= 0:
            raise FamilyError(f"negative.binomial: theta must be a positive number, got {theta!r}")
        self.theta = value
        self.estimated = bool(estimated)
        # MASS: paste0("Negative Binomial(", format(round(theta, 4)), ")")
        self.name = f"Negative Binomial({r_format_number(r_round(value, 4))})"
        super().__init__(link)

    def __repr__(self) -> str:
        return f"NegativeBinomial(theta={self.theta!r}, link={self.link.name!r})"

    @property
    def comparable_name(self) -> str:
        """Negative-binomial fits compare whatever their θ (lme4's anova of two glmer.nb fits)."""
        return "Negative Binomial"

    @classmethod
    def from_call(cls, args, kwargs):
        theta = _argument("theta", args, kwargs)
        if theta is None:
            raise FamilyError("negative.binomial needs its shape, e.g. 'negative.binomial(theta = 2)'; "
                              "bm.glmer_nb estimates it")
        link = _argument("link", args, kwargs)
        _no_more("negative.binomial", args, kwargs)
        return cls(theta, link)

    def variance(self, mu):
        return mu + mu * mu / self.theta

    def dev_resids(self, y, mu, wt):
        th = self.theta
        return 2.0 * wt * (xlogy(y, np.maximum(1.0, y) / mu) - (y + th) * np.log((y + th) / (mu + th)))

    def aic(self, y, n, mu, wt, dev):
        return float(-2.0 * np.sum(self.loglik(y, mu, wt)))

    def initialize(self, y, wt):
        return y, wt, y + (y == 0) / 6.0

    def check_response(self, y, weights) -> None:
        if np.any(y < 0):
            raise FamilyError(f"negative values are not allowed for the negative binomial family "
                              f"({int(np.sum(y < 0))} negative response value(s), e.g. {float(y[y < 0][0]):g})")
        _warn_if_not_counts(y, "negative binomial")

    def loglik(self, y, mu, weights, sigma=1.0):
        th = self.theta
        logpmf = (gammaln(th + y) - gammaln(th) - gammaln(y + 1) + th * (np.log(th) - np.log(th + mu))
                  + xlogy(y, mu) - xlogy(y, th + mu))
        return weights * logpmf

    def simulate(self, mu, weights, sigma, rng):
        th = self.theta
        return rng.negative_binomial(th, th / (th + mu)).astype(float)

    def pymc_likelihood(self, pm, pt, name, mu, observed, weights, sigma, params):
        alpha = params.get(NB_THETA, self.theta)  # PyMC's alpha is θ: Var = μ + μ²/α
        if np.allclose(weights, 1.0):
            pm.NegativeBinomial(name, mu=mu, alpha=alpha, observed=observed)
        else:
            dist = pm.NegativeBinomial.dist(mu=mu, alpha=alpha)
            pm.Potential(f"{name}_weighted", pt.sum(weights * pm.logp(dist, observed)))

    def bayes_parameters(self):
        return {NB_THETA: NB_THETA_PRIOR} if self.estimated else {}

    def parameter_estimates(self):
        return {NB_THETA: self.theta} if self.estimated else {}

    def with_parameters(self, values):
        return self.with_theta(values[NB_THETA]) if NB_THETA in values else self

    def glm_data(self, y, w):
        th = self.theta
        const = float(np.sum(w * (gammaln(th + y) - gammaln(th) - gammaln(y + 1) + th * np.log(th))))
        return {"y": y, "w": w}, const

    def glm_terms(self, eta, data):
        y, w = _extra(data, "y", eta), _extra(data, "w", eta)
        th = self.theta
        mu = np.exp(eta)
        log_th_mu = np.logaddexp(np.log(th), eta)  # log(θ + μ) without overflow
        return w * (y * eta - (th + y) * log_th_mu), w * th * (y - mu) / (th + mu), w * th * mu / (th + mu)

    def glm_parameter_scores(self, eta, data):
        if not self.estimated:
            return {}
        y, w = _extra(data, "y", eta), _extra(data, "w", eta)
        th = self.theta
        log_th_mu = np.logaddexp(np.log(th), eta)
        score = digamma(th + y) - digamma(th) + np.log(th) + 1.0 - log_th_mu - (y + th) * np.exp(-log_th_mu)
        return {NB_THETA: w * score}

    def with_theta(self, theta, estimated: bool | None = None) -> NegativeBinomial:
        """The same family (link) with another shape."""
        return NegativeBinomial(theta, self.link.name, self.estimated if estimated is None else estimated)


# --- construction from names and R calls ---------------------------------------------------------

# R spells these names in several ways; accept them all.
_FAMILIES: dict[str, type[Family]] = {
    "binomial": Binomial, "poisson": Poisson, "gamma": Gamma, "inverse.gaussian": InverseGaussian,
    "inverse_gaussian": InverseGaussian, "inversegaussian": InverseGaussian, "gaussian": Gaussian,
    "negative.binomial": NegativeBinomial, "negative_binomial": NegativeBinomial,
}


def binomial(link: str | None = None) -> Binomial:
    return Binomial(link)


def poisson(link: str | None = None) -> Poisson:
    return Poisson(link)


def gaussian(link: str | None = None) -> Gaussian:
    return Gaussian(link)


def inverse_gaussian(link: str | None = None) -> InverseGaussian:
    return InverseGaussian(link)


def negative_binomial(theta, link: str | None = None) -> NegativeBinomial:
    """MASS's ``negative.binomial(theta, link = "log")``: the negative binomial with θ fixed."""
    return NegativeBinomial(theta, link)


def _call_arguments(text: str) -> tuple[list[str], dict[str, str]]:
    """The positional and named arguments of an R call's argument list, as stripped strings."""
    args, kwargs = [], {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        if eq:
            kwargs[key.strip()] = value.strip().strip("\"'")
        else:
            args.append(part.strip("\"'"))
    return args, kwargs


def get_family(spec) -> Family:
    """A family from an object, a name ("binomial") or an R call ("Gamma(link = 'log')", "negative.binomial(2)")."""
    if isinstance(spec, Family):
        return spec
    if isinstance(spec, type) and issubclass(spec, Family):
        if spec is NegativeBinomial:
            raise FamilyError("the negative binomial needs its shape: bm.families.negative_binomial(theta=2); "
                              "bm.glmer_nb estimates it")
        return spec()
    if not isinstance(spec, str):
        raise FamilyError(f"family must be a name such as 'binomial' or a bm.families object, got {spec!r}")
    match = re.fullmatch(r"\s*(?:MASS::)?([A-Za-z_.]+)\s*(?:\((.*)\))?\s*", spec)
    if not match:
        raise FamilyError(f"cannot read family {spec!r}; write e.g. 'binomial', 'poisson' or 'Gamma(link=\"log\")'")
    name, args = match.group(1), (match.group(2) or "").strip()
    cls = _FAMILIES.get(name.lower())
    if cls is None:
        raise FamilyError(f"unknown family '{name}'; available: binomial, poisson, Gamma, inverse.gaussian, gaussian, "
                          "negative.binomial(theta)")
    return cls.from_call(*_call_arguments(args))
