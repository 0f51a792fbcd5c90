"""Fit drivers: a compiled model in, estimates out as arrays (lme4's ``optimizeLmer``).

No pandas and no result objects here: ``results.builder`` wraps what these return.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bayesmix.engine.lmm import ProfiledDeviance
from bayesmix.engine.optimize import (
    OptSummary,
    convergence_messages,
    final_derivatives,
    is_singular,
    minimize_bounded,
)
from bayesmix.engine.threads import blas_threads_for, dense_dimension
from bayesmix.errors import FitError
from bayesmix.spec.terms import canonical_theta


@dataclass
class LmmFit:
    """The optimum of the profiled (RE)ML deviance and what was computed there."""

    theta: np.ndarray
    beta: np.ndarray
    b: np.ndarray
    sigma: float
    vcov: np.ndarray
    criterion: float
    reml: bool
    optsum: OptSummary
    deviance: ProfiledDeviance
    factorization: object


def fit_lmm(compiled, REML: bool = True, *, deviance: ProfiledDeviance | None = None, theta0=None) -> LmmFit:
    """Optimize the profiled deviance of a compiled model.

    ``deviance`` (a ProfiledDeviance of these data) and ``theta0`` (a starting θ) let
    refits to new responses reuse cross-products and start near the optimum.
    """
    with blas_threads_for(dense_dimension(compiled)):
        if deviance is None:
            deviance = ProfiledDeviance(compiled.terms, compiled.X, compiled.y - compiled.offset, compiled.weights,
                                        reml=REML)
        start = compiled.theta_start() if theta0 is None else np.asarray(theta0, dtype=float)
        # small systems have an exact gradient (the dense path): L-BFGS-B then needs far fewer
        # evaluations than BOBYQA (Pixel 328 → ~40, kb07-like 20 θ 1651 → ~100)
        exact = deviance.value_and_gradient if deviance.gradient_is_cheap else None
        # BOBYQA from lme4's start (θ = 1 on the diagonal) with a first trust region of 0.5: θ
        # is typically O(0.1-1), and NLopt's default radius cost more evaluations (InstEval ML
        # 53 -> 48, crossed slopes 100k rows 122 -> 110; 10k rows 95 -> 100); a given start is
        # near the optimum already and keeps NLopt's
        opt = minimize_bounded(deviance, start, compiled.theta_lower(), value_and_gradient=exact,
                               fold=lambda theta: canonical_theta(compiled.terms, theta),
                               initial_step=_FIRST_TRUST_RADIUS if theta0 is None else None)
        theta = opt.x
        f = deviance.factorize(theta)
        if f is None or not np.isfinite(opt.fun):
            raise FitError(
                f"the fit ended without a finite criterion (criterion {opt.fun}, theta = {np.round(theta, 6).tolist()}): "
                "the response's scale may be extreme (rescale it), or the model may not be identifiable")
        beta, u = deviance.solve(f)
        b = deviance.b_from_u(theta, u)
        dof = deviance.n - (compiled.p if REML else 0)
        sigma = float(np.sqrt(f.pwrss / dof))
        vcov = sigma**2 * deviance.fixef_covariance_unscaled(f)
        optsum = OptSummary.from_result(opt, start, compiled.theta_lower(),
                                        optimizer="L-BFGS-B" if exact is not None else "bobyqa")
        # inside the BLAS limit too: its evaluations otherwise ran on two OpenBLAS threads, which
        # spin under CPU contention (crossed slopes 10k: 8 evaluations took 1.9 s, the whole fit 0.8 s)
        _check_convergence(deviance, opt, optsum, compiled.theta_lower())
        deviance.release_workspace()  # a second fit in the same process peaked 450 MiB higher with it kept
    return LmmFit(theta, beta, b, sigma, vcov, float(opt.fun), REML, optsum, deviance, f)


_FIRST_TRUST_RADIUS = 0.5


def _check_convergence(deviance, opt, optsum: OptSummary, lower) -> None:
    """lme4's checkConv at the optimum (skipped for singular fits, as lme4 does), into the record."""
    if is_singular(opt.x, lower):
        return
    exact = (lambda x: deviance.value_and_gradient(x)[1]) if deviance.gradient_is_cheap else None
    optsum.gradient, optsum.hessian = final_derivatives(deviance, opt, lower, exact_gradient=exact)
    optsum.messages = convergence_messages(optsum.gradient, optsum.hessian, len(opt.x), opt.fun)
