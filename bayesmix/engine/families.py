"""GLM families and links with R's numerics (``stats::family``): variance, deviance residuals, AIC, start values."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import expit, gammaln, ndtr, xlogy

from bayesmix.errors import DataWarning, FamilyError, warn

_EPS = np.finfo(float).eps
_THRESH = 30.0  # R's logit link clamps eta to [-30, 30] (src/library/stats/src/family.c)
_PROBIT_THRESH = 8.125890664701906  # -qnorm(DBL_EPSILON)


@dataclass(frozen=True)
class Link:
    """A link function g with its inverse and dμ/dη, clamped as R clamps them."""

    name: str
    linkfun: Callable[[np.ndarray], np.ndarray]
    linkinv: Callable[[np.ndarray], np.ndarray]
    mu_eta: Callable[[np.ndarray], np.ndarray]

    def __reduce__(self):  # the functions may be lambdas: pickle by name, unpickle as LINKS[name]
        return (_link_named, (self.name,))


def _link_named(name: str) -> Link:
    return LINKS[name]


def _logit_inv(eta):
    return expit(np.clip(eta, -_THRESH, _THRESH))


def _logit_mu_eta(eta):
    e = np.exp(-np.abs(eta))
    out = e / (1.0 + e) ** 2
    return np.where(np.abs(eta) > _THRESH, _EPS, out)


def _cloglog_inv(eta):
    return np.clip(-np.expm1(-np.exp(np.minimum(eta, 700.0))), _EPS, 1.0 - _EPS)


def _cloglog_mu_eta(eta):
    e = np.minimum(eta, 700.0)
    return np.maximum(np.exp(e) * np.exp(-np.exp(e)), _EPS)


def _dnorm(x):
    return np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)


def _qnorm(p):
    from scipy.special import ndtri
    return ndtri(p)


LINKS: dict[str, Link] = {
    "logit": Link("logit", lambda mu: np.log(mu / (1 - mu)), _logit_inv, _logit_mu_eta),
    "probit": Link("probit", _qnorm,
                   lambda eta: ndtr(np.clip(eta, -_PROBIT_THRESH, _PROBIT_THRESH)),
                   lambda eta: np.maximum(_dnorm(eta), _EPS)),
    "cauchit": Link("cauchit", lambda mu: np.tan(np.pi * (mu - 0.5)),
                    lambda eta: np.clip(0.5 + np.arctan(eta) / np.pi, _EPS, 1 - _EPS),
                    lambda eta: np.maximum(1.0 / (np.pi * (1.0 + eta * eta)), _EPS)),
    "cloglog": Link("cloglog", lambda mu: np.log(-np.log1p(-mu)), _cloglog_inv, _cloglog_mu_eta),
    "log": Link("log", np.log, lambda eta: np.maximum(np.exp(eta), _EPS),
                lambda eta: np.maximum(np.exp(eta), _EPS)),
    "identity": Link("identity", lambda mu: np.asarray(mu, float), lambda eta: np.asarray(eta, float),
                     lambda eta: np.ones_like(eta, dtype=float)),
    "inverse": Link("inverse", lambda mu: 1.0 / mu, lambda eta: 1.0 / eta, lambda eta: -1.0 / (eta * eta)),
    "sqrt": Link("sqrt", np.sqrt, lambda eta: eta * eta, lambda eta: 2.0 * eta),
    "1/mu^2": Link("1/mu^2", lambda mu: 1.0 / (mu * mu), lambda eta: 1.0 / np.sqrt(eta),
                   lambda eta: -1.0 / (2.0 * eta**1.5)),
}


class Family:
    """An exponential family as R's ``family`` object: the pieces PIRLS and the Laplace deviance need."""

    name: str = ""
    default_link: str = ""
    allowed_links: tuple[str, ...] = ()
    has_scale: bool = False
    # the response may be given as cbind(successes, failures), a two-level factor or
    # proportions with trials as weights (and fitted values near 0 or 1 mean separation)
    response_is_probability: bool = False

    def __init__(self, link: str | None = None):
        link = self.default_link if link is None else str(link).strip().strip("\"'")
        if link not in self.allowed_links:
            raise FamilyError(
                f"link '{link}' is not available for the {self.name} family; "
                f"choose one of {', '.join(repr(k) for k in self.allowed_links)}"
            )
        self.link = LINKS[link]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(link={self.link.name!r})"

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


class Binomial(Family):
    response_is_probability = True
    name, default_link = "binomial", "logit"
    allowed_links = ("logit", "probit", "cauchit", "log", "cloglog")

    def variance(self, mu):
        return mu * (1.0 - mu)

    def dev_resids(self, y, mu, wt):
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


class Poisson(Family):
    name, default_link = "poisson", "log"
    allowed_links = ("log", "identity", "sqrt")

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
        if np.any(np.abs(y - np.round(y)) > 1e-7):
            warn("non-integer response values for the poisson family: the log-likelihood "
                          "uses lgamma(y+1) as R does, but counts are expected", DataWarning)


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


class Gaussian(Family):
    name, default_link = "gaussian", "identity"
    allowed_links = ("identity", "log", "inverse")
    has_scale = True

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


# R spells these names in several ways; accept them all.
_FAMILIES: dict[str, type[Family]] = {
    "binomial": Binomial, "poisson": Poisson, "gamma": Gamma, "inverse.gaussian": InverseGaussian,
    "inverse_gaussian": InverseGaussian, "inversegaussian": InverseGaussian, "gaussian": Gaussian,
}


def binomial(link: str | None = None) -> Binomial:
    return Binomial(link)


def poisson(link: str | None = None) -> Poisson:
    return Poisson(link)


def gaussian(link: str | None = None) -> Gaussian:
    return Gaussian(link)


def inverse_gaussian(link: str | None = None) -> InverseGaussian:
    return InverseGaussian(link)


def get_family(spec) -> Family:
    """A family from an object, a name ("binomial") or an R call ("Gamma(link = 'log')", "poisson(sqrt)")."""
    if isinstance(spec, Family):
        return spec
    if isinstance(spec, type) and issubclass(spec, Family):
        return spec()
    if not isinstance(spec, str):
        raise FamilyError(f"family must be a name such as 'binomial' or a bm.families object, got {spec!r}")
    match = re.fullmatch(r"\s*([A-Za-z_.]+)\s*(?:\((.*)\))?\s*", spec)
    if not match:
        raise FamilyError(f"cannot read family {spec!r}; write e.g. 'binomial', 'poisson' or 'Gamma(link=\"log\")'")
    name, args = match.group(1), (match.group(2) or "").strip()
    cls = _FAMILIES.get(name.lower())
    if cls is None:
        raise FamilyError(f"unknown family '{name}'; available: binomial, poisson, Gamma, inverse.gaussian, gaussian")
    link = None
    if args:
        link = re.sub(r"^link\s*=\s*", "", args).strip().strip("\"'")
    return cls(link)
