"""The LMM deviance from one factorization: the formula of Bates et al. (2015), written once.

A factorization at θ gives log|L|² (``ldL2``), log|R_X|² (``ldRX2``) and the penalized
weighted residual sum of squares (``pwrss``); the deviance follows with σ either profiled
out (what the optimizer minimizes) or given (what profiles and lmerTest's Hessian need).
"""

from __future__ import annotations

import numpy as np

_LOG_2PI = float(np.log(2.0 * np.pi))


def profiled(f, n: int, p: int, reml: bool, sum_log_weights: float = 0.0) -> float:
    """−2 log-likelihood (or the REML criterion) at θ with σ² = pwrss / (n − p·REML)."""
    dof = n - p if reml else n
    value = f.ldL2 + dof * (1.0 + _LOG_2PI + np.log(f.pwrss / dof)) - sum_log_weights
    return value + f.ldRX2 if reml else value


def at_sigma(f, n: int, p: int, sigma: float, reml: bool, sum_log_weights: float = 0.0) -> float:
    """The same criterion at a given σ (not profiled): ldL2 + pwrss/σ² + (n − p·REML) log(2πσ²)."""
    s2 = sigma * sigma
    dof = n - p if reml else n
    value = f.ldL2 + f.pwrss / s2 + dof * (_LOG_2PI + np.log(s2)) - sum_log_weights
    return value + f.ldRX2 if reml else value
