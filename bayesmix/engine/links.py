"""GLM link functions with R's numerics (``stats::make.link``), and each link's inverse for a PyMC graph.

Every function is a module-level function (no lambdas), so links — and the families and
fits holding them — pickle.  ``Link.pytensor_inverse(pt, eta)`` builds the inverse link in
PyTensor with the ``pytensor.tensor`` module passed in: the engine never imports PyTensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import expit, ndtr, ndtri

_EPS = np.finfo(float).eps
_THRESH = 30.0  # R's logit link clamps eta to [-30, 30] (src/library/stats/src/family.c)
_PROBIT_THRESH = 8.125890664701906  # -qnorm(DBL_EPSILON)
_SQRT2 = float(np.sqrt(2.0))


@dataclass(frozen=True)
class Link:
    """A link function g with its inverse and dμ/dη, clamped as R clamps them; ``pt_linkinv`` the PyTensor inverse."""

    name: str
    linkfun: Callable[[np.ndarray], np.ndarray]
    linkinv: Callable[[np.ndarray], np.ndarray]
    mu_eta: Callable[[np.ndarray], np.ndarray]
    pt_linkinv: Callable
    identity: bool = False  # μ = η: the response's own scale is the link scale

    def pytensor_inverse(self, pt, eta):
        """μ = g⁻¹(η) as a PyTensor expression; ``pt`` is ``pytensor.tensor``."""
        return self.pt_linkinv(pt, eta)


# --- logit -----------------------------------------------------------------------------------

def _logit(mu):
    return np.log(mu / (1 - mu))


def _logit_inv(eta):
    return expit(np.clip(eta, -_THRESH, _THRESH))


def _logit_mu_eta(eta):
    e = np.exp(-np.abs(eta))
    out = e / (1.0 + e) ** 2
    return np.where(np.abs(eta) > _THRESH, _EPS, out)


def _pt_logit_inv(pt, eta):
    return pt.sigmoid(eta)


# --- probit ----------------------------------------------------------------------------------

def _probit_inv(eta):
    return ndtr(np.clip(eta, -_PROBIT_THRESH, _PROBIT_THRESH))


def _probit_mu_eta(eta):
    return np.maximum(np.exp(-0.5 * eta * eta) / np.sqrt(2 * np.pi), _EPS)


def _pt_probit_inv(pt, eta):
    return 0.5 * pt.erfc(-eta / _SQRT2)


# --- cauchit ---------------------------------------------------------------------------------

def _cauchit(mu):
    return np.tan(np.pi * (mu - 0.5))


def _cauchit_inv(eta):
    return np.clip(0.5 + np.arctan(eta) / np.pi, _EPS, 1 - _EPS)


def _cauchit_mu_eta(eta):
    return np.maximum(1.0 / (np.pi * (1.0 + eta * eta)), _EPS)


def _pt_cauchit_inv(pt, eta):
    return 0.5 + pt.arctan(eta) / np.pi


# --- cloglog ---------------------------------------------------------------------------------

def _cloglog(mu):
    return np.log(-np.log1p(-mu))


def _cloglog_inv(eta):
    return np.clip(-np.expm1(-np.exp(np.minimum(eta, 700.0))), _EPS, 1.0 - _EPS)


def _cloglog_mu_eta(eta):
    e = np.minimum(eta, 700.0)
    return np.maximum(np.exp(e) * np.exp(-np.exp(e)), _EPS)


def _pt_cloglog_inv(pt, eta):
    return -pt.expm1(-pt.exp(eta))


# --- log -------------------------------------------------------------------------------------

def _log_inv(eta):
    return np.maximum(np.exp(eta), _EPS)


def _pt_log_inv(pt, eta):
    return pt.exp(eta)


# --- identity --------------------------------------------------------------------------------

def _identity(x):
    return np.asarray(x, float)


def _ones(eta):
    return np.ones_like(eta, dtype=float)


def _pt_identity(pt, eta):
    return eta


# --- inverse, sqrt, 1/mu^2 -------------------------------------------------------------------

def _reciprocal(x):
    return 1.0 / x


def _inverse_mu_eta(eta):
    return -1.0 / (eta * eta)


def _pt_reciprocal(pt, eta):
    return 1.0 / eta


def _square(eta):
    return eta * eta


def _twice(eta):
    return 2.0 * eta


def _pt_square(pt, eta):
    return eta**2


def _inverse_square(mu):
    return 1.0 / (mu * mu)


def _inverse_sqrt(eta):
    return 1.0 / np.sqrt(eta)


def _inverse_square_mu_eta(eta):
    return -1.0 / (2.0 * eta**1.5)


def _pt_inverse_sqrt(pt, eta):
    return 1.0 / pt.sqrt(eta)


LINKS: dict[str, Link] = {
    "logit": Link("logit", _logit, _logit_inv, _logit_mu_eta, _pt_logit_inv),
    "probit": Link("probit", ndtri, _probit_inv, _probit_mu_eta, _pt_probit_inv),
    "cauchit": Link("cauchit", _cauchit, _cauchit_inv, _cauchit_mu_eta, _pt_cauchit_inv),
    "cloglog": Link("cloglog", _cloglog, _cloglog_inv, _cloglog_mu_eta, _pt_cloglog_inv),
    "log": Link("log", np.log, _log_inv, _log_inv, _pt_log_inv),
    "identity": Link("identity", _identity, _identity, _ones, _pt_identity, identity=True),
    "inverse": Link("inverse", _reciprocal, _reciprocal, _inverse_mu_eta, _pt_reciprocal),
    "sqrt": Link("sqrt", np.sqrt, _square, _twice, _pt_square),
    "1/mu^2": Link("1/mu^2", _inverse_square, _inverse_sqrt, _inverse_square_mu_eta, _pt_inverse_sqrt),
}
