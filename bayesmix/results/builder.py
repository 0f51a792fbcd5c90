"""The one result builder (lme4's ``mkMerMod``): engine output in, a fit object out, diagnostics issued.

lmer, glmer, ML refits and bootstrap refits all come through here, so every fit gets the
same convergence, singularity and separation checks, with the same warning classes.
"""

from __future__ import annotations

import numpy as np

from bayesmix.engine.response import sigma_ml
from bayesmix.errors import (
    ConvergenceWarning,
    FitError,
    SeparationWarning,
    SingularFitWarning,
    warn,
)
from bayesmix.results.glmer import GlmerResult
from bayesmix.results.lmer import LmerResult
from bayesmix.spec.terms import b_from_u

SINGULAR_MESSAGE = "boundary (singular) fit: see help('isSingular')"
# lme4's isSingular tolerance: a diagonal element of θ within 1e-4 of its zero bound.
SINGULAR_TOL = 1e-4


def build_lmer(compiled, fit, *, data_name: str = "df", diagnose: bool = True, result_class=LmerResult) -> LmerResult:
    """An LmerResult from an ``engine.fit.LmmFit`` (``result_class``: a subclass, e.g. a Dask fit's)."""
    _require_finite(fit.criterion, fit.theta, fit.beta, fit.sigma)
    messages = _optimizer_messages(fit.optsum, compiled, fit.theta)
    result = result_class(
        compiled, fit.theta, fit.beta, fit.b, fit.sigma, fit.vcov, fit.criterion,
        method="REML" if fit.reml else "ML", optimizer_messages=messages, converged=fit.optsum.converged,
        data_name=data_name, deviance_obj=fit.deviance, factorization=fit.factorization, optsum=fit.optsum,
    )
    if diagnose:
        _warn_about(result)
    return result


def build_glmer(compiled, family, fit, *, data_name: str = "df", diagnose: bool = True,
                result_class=GlmerResult) -> GlmerResult:
    """A GlmerResult from an ``engine.glmm.GlmmFit`` (``result_class``: a subclass, e.g. a Dask fit's)."""
    _require_finite(fit.criterion, fit.theta, fit.beta)
    sigma = 1.0
    if family.has_scale:
        sigma = sigma_ml(family, compiled.y, fit.state.mu, compiled.weights, fit.state.u)
    b = b_from_u(compiled.terms, fit.theta, fit.state.u)
    method = "Laplace" if fit.objective.nAGQ == 1 else "AGQ"
    # the RX fallback is unscaled: lme4's vcov is sigma² (RX'RX)⁻¹ then, as vcov_rx() gives
    vcov = fit.vcov * sigma**2 if fit.vcov_source == "RX" else fit.vcov
    messages = list(fit.messages)
    if _is_singular(compiled, fit.theta):
        messages.append(SINGULAR_MESSAGE)
    result = result_class(compiled, fit.theta, fit.beta, b, sigma, vcov, fit.criterion, method=method,
                         optimizer_messages=messages, converged=fit.converged, data_name=data_name,
                         nAGQ=fit.objective.nAGQ, family=family, fit=fit, optsum=fit.optsum)
    if diagnose:
        _warn_about(result)
    return result


def _require_finite(criterion, *arrays) -> None:
    if not np.isfinite(criterion) or not all(np.all(np.isfinite(a)) for a in arrays):
        raise FitError(
            "the fit ended without a finite criterion or finite estimates "
            f"(criterion {criterion}); check the data for extreme values and the model for terms it cannot identify"
        )


def _is_singular(compiled, theta) -> bool:
    lower = compiled.theta_lower()
    return bool(np.any(np.asarray(theta)[lower == 0] < SINGULAR_TOL))


def _optimizer_messages(optsum, compiled, theta) -> list[str]:
    """The lines summary() prints under the fit, as lme4's ``.prt.warn``."""
    messages = []
    if not optsum.converged:
        messages.append(f"optimizer ({optsum.optimizer}) convergence code: 1 (did not converge)")
    checks = [m for m in optsum.messages if not m.startswith("optimizer (")]  # lme4's checkConv findings
    if (checks or _is_singular(compiled, theta)) and not messages:
        messages.append(f"optimizer ({optsum.optimizer}) convergence code: 0 (OK)")
    messages += checks
    if _is_singular(compiled, theta):
        messages.append(SINGULAR_MESSAGE)
    return messages


def _warn_about(result) -> None:
    """Warn as lme4 does, at the user's line: non-convergence, a singular fit, separation."""
    for message in result.optimizer_messages:
        if "convergence code: 1" in message:
            warn(f"optimizer did not converge: {message}", ConvergenceWarning)
        elif message.startswith("optimizer (") or message == SINGULAR_MESSAGE:
            continue
        else:
            warn(message, ConvergenceWarning)
    if result.singular:
        warn(SINGULAR_MESSAGE, SingularFitWarning)
    if not result.is_lmm and result.family.response_is_probability:
        _warn_if_separated(result)


# Within 1e-12 of 0 or 1: R's glm.fit warns when its logit link clamps (|eta| > 30,
# probabilities 1e-13 from the bounds); 1e-12 is |eta| > 27.6.
_NUMERICALLY_0_OR_1 = 1e-12
# A fixed effect moving the log-odds by more than this on those rows is running off to infinity.
_EXTREME_LINK_CONTRIBUTION = 10.0


def _warn_if_separated(result) -> None:
    """Warn as R's glm does when fitted probabilities are numerically 0 or 1, naming the
    fixed effects whose estimates run off towards infinity (complete separation)."""
    n_extreme, nobs, contribution = result.extreme_fits(_NUMERICALLY_0_OR_1)
    if not n_extreme:
        return
    beta, se = result.fixef, result.se
    culprits = [name for name, c in zip(beta.index, contribution) if c > _EXTREME_LINK_CONTRIBUTION]
    named = ", ".join(f"{name} (estimate {beta[name]:.4g}, SE {se[name]:.3g})" for name in culprits)
    warn(
        f"fitted probabilities numerically 0 or 1 occurred for {n_extreme} of {nobs} observations: "
        "complete or quasi-complete separation"
        + (f"; the estimates of {named} run off towards infinity, so they and their tests are not meaningful"
           if culprits else "")
        + ". Consider removing or merging the levels of the separating effect(s), or a fit with a weakly "
        "informative prior (e.g. the Bayesian model).",
        SeparationWarning,
    )
