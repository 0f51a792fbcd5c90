"""Generalized linear mixed models: PIRLS for the conditional modes, the Laplace and adaptive Gauss-Hermite objectives.

As lme4's ``glmer``: penalized iteratively reweighted least squares (PIRLS, with step
halving) finds the conditional modes u* for given θ (and β); the Laplace approximation
to -2 log L is ``log|L|² + ||u*||² + family aic`` (the aic carrying the family's
normalizing constants); nAGQ > 1 replaces it by adaptive Gauss-Hermite quadrature for
a single scalar random-effects term.  Every weighted least-squares solve reuses the
blocked Cholesky of :mod:`bayesmix.engine.lmm`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import norm

from bayesmix.engine.glmm_polish import newton_polish
from bayesmix.engine.lmm import (
    CrossProducts,
    ProfiledDeviance,
)
from bayesmix.engine.nested import NestedChain
from bayesmix.engine.optimize import (
    OptSummary,
    central_gradient,
    convergence_messages,
    is_singular,
    minimize_bounded,
    stencil_derivatives,
)
from bayesmix.engine.pirls_warm import ModeMemory, NewtonRate, modes_settled
from bayesmix.engine.weighted_system import WeightedSystem
from bayesmix.errors import ConvergenceWarning, FitError, PirlsError, warn


@dataclass
class PirlsState:
    """The conditional modes at one (θ, β) and everything the objectives need there."""

    theta: np.ndarray
    beta: np.ndarray
    u: np.ndarray
    eta: np.ndarray
    mu: np.ndarray
    working_weights: np.ndarray
    factorization: object
    deviance_obj: ProfiledDeviance | NestedChain  # PIRLS's system: solve, fixef_covariance_unscaled
    pdev: float  # sum of deviance residuals + ||u||^2


class GlmmObjective:
    """The Laplace (or AGQ) deviance as a function of θ (nAGQ = 0) or of (θ, β)."""

    nested: NestedChain | None = None  # set by __init__ where it applies (subclasses may not call it)

    def __init__(self, compiled, family, nAGQ: int = 1, tol: float = 1e-12, maxit: int = 60):
        self.compiled = compiled
        self.family = family
        self.nAGQ = nAGQ
        self.system = WeightedSystem(compiled)
        self.tol = tol
        # > 1 while a rough optimum will do (the nAGQ = 0 stage before the Laplace one): PIRLS's
        # stopping tolerances are multiplied by it (predicted error in the modes 1e-9 -> 1e-7:
        # the criterion is then off by ~1e-5, far below the 1e-6 |f| that stage resolves)
        self.rough_factor = 1.0
        self.maxit = maxit
        y, wt = compiled.y, compiled.weights
        self.y = y
        self.prior_weights = wt
        # R's binomial family: n (trials) is 1 for proportions given with weights, or cbind counts.
        self.n_trials = compiled.response_trials if compiled.response_trials is not None else np.ones_like(y)
        self.eta_start = family.link.linkfun(family.initialize(y, wt)[2])
        self._aic_offset = self._constant_aic_offset(family.initialize(y, wt)[2])
        self._u_warm = np.zeros(sum(t.q for t in compiled.terms))
        self._beta_warm = None
        self._no_columns = np.zeros((compiled.n, 0))
        self._structure: dict = {}  # Schur-block structure, learned once for all PIRLS systems
        # nested scalar terms: PIRLS's systems eliminated on their tree (AGQ reads engine.lmm's blocks)
        self.nested = NestedChain.of(compiled.terms) if nAGQ <= 1 else None
        self._newton_rate = NewtonRate()
        # modes (and β for nAGQ = 0) at the points evaluated, to predict the next PIRLS start
        self.memory_theta = ModeMemory(np.ones(compiled.ntheta))
        self.memory_joint = ModeMemory(np.ones(compiled.ntheta + compiled.p))
        self.ntheta = compiled.ntheta
        self.p = compiled.p
        if nAGQ > 1:
            self.gh_z, self.gh_w, self.gh_ldnorm = gauss_hermite_rule(nAGQ)

    def _constant_aic_offset(self, mu_start: np.ndarray) -> float | None:
        """``aic - deviance`` when it does not depend on μ (binomial with whole successes, Poisson), else None.

        The family's aic recomputes its normalizing constants (log-gamma functions of the
        data) at every evaluation: 2.4 ms of a 20k-row binomial Laplace evaluation.  Where
        the aic is the deviance plus a constant of the data, that constant is found once;
        it is checked at two different means, so families whose aic involves μ otherwise
        (a dispersion estimated from the deviance) keep computing it in full.
        """
        fam, y, n, wt = self.family, self.y, self.n_trials, self.prior_weights
        offsets = []
        for share in (0.5, 0.25):  # means between the start's and their average: valid, and not y itself
            mu = share * mu_start + (1.0 - share) * mu_start.mean()
            with np.errstate(all="ignore"):
                dev = float(fam.dev_resids(y, mu, wt).sum())
                offsets.append(fam.aic(y, n, mu, wt, dev) - dev)
        if not np.all(np.isfinite(offsets)) or abs(offsets[0] - offsets[1]) > 1e-9 * max(1.0, abs(offsets[0])):
            return None
        return offsets[0]

    # --- PIRLS ------------------------------------------------------------------------

    def pirls(self, theta: np.ndarray, beta: np.ndarray | None = None, u0: np.ndarray | None = None,
              beta0: np.ndarray | None = None) -> PirlsState:
        """Conditional modes of u (and of β too when ``beta`` is None: lme4's nAGQ = 0 step).

        PIRLS starts from the warm modes (the last success, or ``u0`` and ``beta0``); when
        that fails it retries once from a cold start (u = 0, β from the family's initialize)
        before the evaluation counts as failed: one bad warm start must not fail every later
        evaluation.  Only a success becomes the next warm start.
        """
        theta = np.asarray(theta, dtype=float)
        warm_u = self._u_warm if u0 is None else u0
        warm_beta = self._beta_warm if beta0 is None else beta0
        warm_is_cold = not np.any(warm_u) and (beta is not None or warm_beta is None)
        try:
            state = self._pirls_from(theta, beta, warm_u.copy(), cold=False, beta0=warm_beta)
        except PirlsError as warm_failure:
            if warm_is_cold:
                raise
            try:
                state = self._pirls_from(theta, beta, np.zeros_like(warm_u), cold=True)
            except PirlsError as cold_failure:
                raise PirlsError(f"{cold_failure} (a warm start failed too: {warm_failure.reason})",
                                 theta=theta, iteration=cold_failure.iteration,
                                 reason=cold_failure.reason) from None
        self._u_warm = state.u
        if beta is None:
            self._beta_warm = state.beta
        return state

    def _pirls_from(self, theta, beta, u, cold: bool, beta0=None) -> PirlsState:
        """PIRLS iterations from the modes ``u`` and (nAGQ = 0) ``beta0``, or from zero with β from initialize when ``cold``."""
        c = self.compiled
        u_only = beta is not None
        if u_only:
            eta = c.offset + c.X @ beta + self.system.z_lambda_u(theta, u)
        elif beta0 is not None and not cold:
            beta = np.array(beta0, dtype=float)
            eta = c.offset + c.X @ beta + self.system.z_lambda_u(theta, u)
        else:
            eta = self.eta_start.copy()
            u = np.zeros_like(u)
            beta = np.zeros(self.p)
        mu = self.family.link.linkinv(eta)
        # a warm start has a penalized deviance to compare the first step with (a cold start's
        # η comes from the family's initialize, matching no (u, β)): then PIRLS can stop after
        # one step, which is all a well-predicted start needs
        old_pdev = np.inf if (cold or not np.any(u)) else self._pdev(mu, u)
        fixed = beta if u_only else None
        u, beta, (eta, mu), pdev, (w, dev, f) = self.iterate(
            theta, beta, u, (eta, mu), old_pdev, u_only, lambda at: self.weighted_system(theta, *at, fixed),
            self._penalized_at(theta), lambda at, w: _not_positive_definite(*at, w))
        return PirlsState(theta, beta, u, eta, mu, w, f, dev, pdev)

    def iterate(self, theta, beta, u, at, old_pdev: float, u_only: bool, system_at, penalized, not_pd):
        """PIRLS's iterations (lme4's pwrssUpdate) from the modes ``u`` (and β) whose linear predictor is ``at``.

        ``at`` is where the rows' weights come from: (η, μ) in memory, a pass's sums on Dask.
        ``system_at(at)`` gives (weights, system, factor); ``penalized`` tries a step (see
        :func:`halve_steps`) and gives its ``at``; ``not_pd(at, weights)`` says why a system is not
        positive definite.  Returns u, β, ``at``, the penalized deviance and the system refactored at
        the final modes' weights (lme4's L: a factor whose weights are a 1e-9 step old measurably
        roughens the objective for the optimizer's differences).
        """
        previous_du = None
        for iteration in range(1, self.maxit + 1):
            w, dev, f = system_at(at)
            if f is None:
                raise _pirls_error(theta, iteration, not_pd(at, w), _NOT_PD_ADVICE)
            beta_new, u_new = dev.solve(f)
            if u_only:
                beta_new = beta
            full_step = u_new
            pdev, at_new, u_new, beta_new = halve_steps(penalized, u, beta, u_new, beta_new, old_pdev, theta, iteration)
            du = float(np.max(np.abs(u_new - u), initial=0))
            converged = self.step_converged(old_pdev, pdev, du, previous_du, full_step is u_new)
            previous_du = du
            u, beta, at, old_pdev = u_new, beta_new, at_new, pdev
            if converged:
                break
        else:
            raise pirls_not_converged(theta, self.maxit, du, pdev)
        w, dev, f = system_at(at)
        if f is None:
            raise _pirls_error(theta, iteration, not_pd(at, w), _NOT_PD_ADVICE)
        return u, beta, at, old_pdev, (w, dev, f)

    def step_converged(self, old_pdev: float, pdev: float, du: float, previous_du: float | None,
                       full_step: bool) -> bool:
        """Whether PIRLS may stop after a step of size ``du`` (the in-memory and the Dask loops alike).

        A full Newton step, at the rate PIRLS has shown, leaves an error ~C du² in the modes
        (:class:`NewtonRate`): then it stops, even where the step itself moved the penalized
        deviance by more than ``tol`` (that change measures the step taken, not the error left).
        Otherwise lme4's test on the change, together with a step that has settled.
        """
        self._newton_rate.observe(previous_du, du, full_step)
        loose = self.rough_factor
        if full_step and self._newton_rate.settled(du, loose):
            return True
        return abs(old_pdev - pdev) <= loose * self.tol * abs(pdev) and modes_settled(du, previous_du, loose * 1e-9)

    def weighted_system(self, theta, eta, mu, fixed_beta=None, general: bool = False):
        """PIRLS's weighted least-squares system at (η, μ), factored at θ: (weights, system, factor).

        With ``fixed_beta`` the system is in u alone (Xβ moved into the working response);
        without it, in u and β jointly.  A chain of nested scalar terms is eliminated on its tree
        (:mod:`engine.nested`) unless ``general``: the blocked Cholesky of engine.lmm, whose
        factor the results read (:meth:`general_state`).
        """
        fam, c = self.family, self.compiled
        mu_eta = fam.link.mu_eta(eta)
        w = self.prior_weights * mu_eta**2 / fam.variance(mu)
        z = eta - c.offset + (self.y - mu) / mu_eta
        if fixed_beta is not None:
            X_used, response = self._no_columns, z - c.X @ fixed_beta
        else:
            X_used, response = c.X, z
        if self.nested is not None and not general:
            return w, self.nested, self.nested.factor(theta, w, X_used, response)
        dev = self._deviance(X_used, self.system.cross(w, X_used, response))
        return w, dev, dev.factorize(theta)

    def general_state(self, state: PirlsState, fixed_beta=None) -> PirlsState:
        """``state`` with engine.lmm's factorization at its weights (the results' conditional variances
        read its blocks), where PIRLS used the nested chain's."""
        if self.nested is None:
            return state
        w, dev, f = self.weighted_system(state.theta, state.eta, state.mu, fixed_beta, general=True)
        if f is None:
            raise _pirls_error(state.theta, 0, _not_positive_definite(state.eta, state.mu, w), _NOT_PD_ADVICE)
        return replace(state, working_weights=w, factorization=f, deviance_obj=dev)

    def _penalized_at(self, theta):
        """``(u, β) -> (penalized deviance, (η, μ))`` at θ: the trials of :func:`halve_steps` in memory."""
        c = self.compiled

        def penalized(u, beta):
            eta = c.offset + c.X @ beta + self.system.z_lambda_u(theta, u)
            mu = self.family.link.linkinv(eta)
            return self._pdev(mu, u), (eta, mu)

        return penalized

    def _pdev(self, mu, u) -> float:
        """The penalized deviance: deviance residuals plus ``||u||²``."""
        return float(self.family.dev_resids(self.y, mu, self.prior_weights).sum() + u @ u)

    def _deviance(self, X_used, cross: CrossProducts) -> ProfiledDeviance:
        return ProfiledDeviance(self.compiled.terms, X_used, None, None, reml=False, cross=cross,
                                structure=self._structure)

    # --- objectives -------------------------------------------------------------------

    def laplace(self, state: PirlsState) -> float:
        fam = self.family
        dev = state.pdev - state.u @ state.u  # PIRLS's last step summed the deviance residuals at μ
        aic = dev + self._aic_offset if self._aic_offset is not None else fam.aic(
            self.y, self.n_trials, state.mu, self.prior_weights, dev)
        return float(state.factorization.ldL2 + state.u @ state.u + aic)

    def agq(self, state: PirlsState) -> float:
        """lme4's glmerAGQ: per-level quadrature around the conditional modes (one scalar term)."""
        fam = self.family
        term = self.compiled.terms[0]
        codes = term.factor.codes
        nl = term.nlevels
        f = state.factorization
        sd = 1.0 / f.l1[:, 0, 0]
        devc0 = np.bincount(codes, fam.dev_resids(self.y, state.mu, self.prior_weights), minlength=nl) + state.u**2
        mult = np.zeros(nl)
        base = self.compiled.offset + self.compiled.X @ state.beta
        lam = state.theta[0]
        for z, w, ldn in zip(self.gh_z, self.gh_w, self.gh_ldnorm):
            if z == 0:
                mult += w
                continue
            uk = state.u + z * sd
            mu_k = fam.link.linkinv(base + term.columns[:, 0] * lam * uk[codes])
            devc = np.bincount(codes, fam.dev_resids(self.y, mu_k, self.prior_weights), minlength=nl) + uk**2
            # lme4's glmerAGQ: exp(-ldn)/√(2π) = exp(z²/2), the centre node's weight convention
            mult += np.exp(-0.5 * (devc - devc0) - ldn) * w / np.sqrt(2.0 * np.pi)
        return float(devc0.sum() + f.ldL2 - 2.0 * np.log(mult).sum())

    def objective(self, state: PirlsState) -> float:
        return self.agq(state) if self.nAGQ > 1 else self.laplace(state)

    def theta_only(self, theta: np.ndarray) -> float:
        """nAGQ = 0: β from PIRLS together with u."""
        theta = np.asarray(theta, dtype=float)
        predicted = self.memory_theta.predict(theta)
        try:
            if predicted is None:
                state = self.pirls(theta)
            else:
                state = self.pirls(theta, u0=predicted[self.p :], beta0=predicted[: self.p])
        except PirlsError:
            return np.inf
        self.memory_theta.remember(theta, np.concatenate([state.beta, state.u]))
        return self.laplace(state)

    def theta_beta(self, par: np.ndarray) -> float:
        par = np.asarray(par, dtype=float)
        try:
            state = self.pirls(par[: self.ntheta], par[self.ntheta :], u0=self.memory_joint.predict(par))
        except PirlsError:
            return np.inf
        self.memory_joint.remember(par, state.u)
        return self.objective(state)


def halve_steps(penalized, u, beta, u_new, beta_new, old_pdev: float, theta, iteration: int = 0):
    """Step halving (lme4's pwrssUpdate): shrink the step from (u, β) until the penalized deviance drops.

    ``penalized(u, β) -> (penalized deviance, what the caller keeps of the trial)``: η and μ in
    memory, a pass's sums over Dask partitions.  Returns (penalized deviance, that, u, β) at the
    accepted point; a PirlsError after 12 halvings.
    """
    for _ in range(12):
        pdev, kept = penalized(u_new, beta_new)
        if np.isfinite(pdev) and pdev <= old_pdev + 1e-10 * abs(old_pdev if np.isfinite(old_pdev) else 0):
            return pdev, kept, u_new, beta_new
        u_new = 0.5 * (u + u_new)
        beta_new = 0.5 * (beta + beta_new)
    raise _pirls_error(
        theta, iteration,
        f"step-halvings failed to reduce the penalized deviance below {old_pdev:.6g} "
        f"(last trial: {pdev:.6g})", "try rescaling covariates or nAGQ=0")


def pirls_not_converged(theta, maxit: int, du: float, pdev: float) -> PirlsError:
    """PIRLS ran out of iterations (in memory or over Dask partitions: one message)."""
    return _pirls_error(theta, maxit, f"did not converge in {maxit} iterations (last change in the modes {du:.3g}, "
                        f"penalized deviance {pdev:.6g})", "try rescaling covariates, a different link, or nAGQ=0")


def _pirls_error(theta, iteration: int, reason: str, advice: str) -> PirlsError:
    """A PirlsError that says where (θ, iteration) and what diverged, and what to try."""
    theta_text = np.array2string(np.asarray(theta), precision=6, separator=", ")
    return PirlsError(f"PIRLS failed at theta = {theta_text}, iteration {iteration}: {reason}; {advice}",
                      theta=np.asarray(theta, dtype=float), iteration=iteration, reason=reason)


_NOT_PD_ADVICE = "try the family's default link, rescaling covariates, or nAGQ=0"


def _not_positive_definite(eta, mu, w) -> str:
    """What made the weighted least-squares system not positive definite."""
    bad_mu = int(np.sum(~np.isfinite(mu)))
    bad_w = int(np.sum(~np.isfinite(w) | (w <= 0)))
    eta_range = f"[{np.nanmin(eta):.4g}, {np.nanmax(eta):.4g}]" if np.isfinite(eta).any() else "not finite"
    return ("the weighted least-squares system is not positive definite (fitted means outside the range the "
            f"family allows?): {bad_w} working weights not positive and finite, {bad_mu} fitted means not finite, "
            f"linear predictor in {eta_range}")


def gauss_hermite_rule(n: int):
    """lme4's GHrule: nodes z, weights w for the N(0, 1) density (summing to 1), and log φ(z)."""
    z, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / np.sqrt(2.0 * np.pi)
    z[np.abs(z) < 1e-12] = 0.0
    return z, w, norm.logpdf(z)


# --- fitting ------------------------------------------------------------------------------


@dataclass
class GlmmFit:
    theta: np.ndarray
    beta: np.ndarray
    state: PirlsState
    criterion: float
    vcov: np.ndarray
    vcov_source: str
    converged: bool
    messages: list[str]
    objective: GlmmObjective
    optsum: OptSummary | None = None


def fit_glmm(compiled, family, nAGQ: int = 1, *, objective: GlmmObjective | None = None) -> GlmmFit:
    """lme4's two-stage glmer optimization: θ with β in PIRLS (nAGQ = 0), then θ and β together.

    1. The fast stage (lme4's nAGQ = 0, MixedModels.jl's ``fast=true``): BOBYQA over θ alone,
       PIRLS finding u and β; for nAGQ > 0 only roughly (ftol 1e-6, PIRLS's tolerances
       loosened 100-fold), since it serves as the start of stage 2.
    2. The joint stage over (θ, β), β whitened by its stage-1 covariance: one diagonal Newton
       step in β alone (the nAGQ = 0 β can lie SEs away), BOBYQA from there with a small
       trust region, then the Newton polish of :mod:`engine.glmm_polish`, whose lme4-stencil
       Hessian also gives the fixed effects' covariance.
    Each criterion evaluation starts PIRLS from modes predicted by :class:`ModeMemory`.
    ``objective``: a GlmmObjective built elsewhere (bayesmix.distributed's, whose rows stay
    on a cluster); by default one over ``compiled``'s rows.
    """
    # trial points far out (separation, huge steps) overflow harmlessly: they are rejected as
    # infinite objectives, and the user gets one clear warning afterwards, not numpy's noise
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return _fit_glmm(compiled, family, nAGQ, objective)


def _fit_glmm(compiled, family, nAGQ: int, objective=None) -> GlmmFit:
    obj = GlmmObjective(compiled, family, nAGQ=nAGQ) if objective is None else objective
    lower_theta = compiled.theta_lower()
    # with nAGQ > 0 stage 1 only provides a start for stage 2: a rough optimum will do, and
    # BOBYQA's first trust region is lme4's rhobeg (0.2 max|θ0|) rather than NLopt's 0.75
    # (glmm_20k 45 -> 35 evaluations; the joint stage's search then also ends closer)
    rough = {"max_newton": 0, "ftol": 1e-6, "initial_step": 0.2} if nAGQ > 0 else {}
    obj.rough_factor = 100.0 if nAGQ > 0 else 1.0
    stage1 = minimize_bounded(obj.theta_only, compiled.theta_start(), lower_theta, **rough)
    obj.rough_factor = 1.0
    state0 = obj.pirls(stage1.x)
    messages = []
    if nAGQ == 0:
        theta, beta, state, crit = stage1.x, state0.beta, obj.general_state(state0), stage1.fun
        converged = stage1.converged
        hess = None
        optsum = OptSummary.from_result(stage1, compiled.theta_start(), lower_theta)
    else:
        # optimize (θ, β) with β whitened by its stage-1 covariance, so every direction has unit scale
        unscaled = state0.deviance_obj.fixef_covariance_unscaled(state0.factorization)
        scale = np.linalg.cholesky(unscaled + 1e-12 * np.eye(len(unscaled)) * np.trace(unscaled))
        obj.memory_joint.metric = np.concatenate([np.ones(obj.ntheta), 1.0 / np.sqrt(np.diag(unscaled))])
        beta0 = state0.beta

        def whitened(par):
            return obj.theta_beta(np.concatenate([par[: obj.ntheta], beta0 + scale @ par[obj.ntheta :]]))

        x0 = np.concatenate([stage1.x, np.zeros(obj.p)])
        lower = np.concatenate([lower_theta, np.full(obj.p, -np.inf)])
        # the search only needs to reach the Newton polish's basin; the polish finishes the job.
        # Stage 1 leaves θ within a few hundredths of the optimum and, after a Newton step in
        # β alone, β within a few hundredths of an SE: a small first trust region saves
        # BOBYQA evaluations (0.02 saved a few more, but then missed a singular optimum
        # that test_trust's unidentifiable Poisson case finds with 0.05)
        stage2 = _joint_stage(obj, whitened, x0, lower)
        # the record speaks of (θ, whitened β); evaluations of both stages are counted
        optsum = OptSummary.from_result(stage2, x0, lower, optimizer="bobyqa")
        optsum.feval += stage1.nfev
        theta = stage2.x[: obj.ntheta]
        beta = beta0 + scale @ stage2.x[obj.ntheta :]
        state = obj.pirls(theta, beta)
        crit = obj.objective(state)
        converged = stage2.converged
        hess = _reuse_polish_hessian(stage2, scale, obj.ntheta)
        if hess is None:
            hess = _hessian(obj.theta_beta, np.concatenate([theta, beta]), lower)
        if not is_singular(theta, lower_theta):  # lme4's checkConv, in (θ, β) as lme4 computes it
            optsum.gradient = _raw_gradient(whitened, stage2, lower, scale, obj.ntheta)
            optsum.hessian = hess
            messages += convergence_messages(optsum.gradient, hess, obj.ntheta, crit)
    vcov, source = _glmm_vcov(obj, state, hess)
    if source != "hessian" and nAGQ > 0:
        warn("variance-covariance matrix from the finite-difference Hessian is not positive definite: "
             "falling back to the one estimated from RX", ConvergenceWarning)
    if not converged:
        messages.append("optimizer (bobyqa) convergence code: 1 (did not converge)")
    optsum.messages = list(messages)
    if nAGQ != 0:
        state = obj.general_state(state, fixed_beta=beta)
    return GlmmFit(theta, beta, state, crit, vcov, source, converged, messages, obj, optsum)


def _joint_stage(obj: GlmmObjective, whitened, x0: np.ndarray, lower: np.ndarray):
    """Stage 2 over (θ, whitened β): see :func:`fit_glmm`.

    Adaptive quadrature (nAGQ > 1: one scalar term, cheap evaluations) keeps the search
    it had before the β step and this polish, so that its estimates stay as they were.
    """
    if obj.nAGQ > 1:
        return minimize_bounded(whitened, x0, lower, ftol=1e-8, initial_step=0.05)
    start, stepped = _beta_newton_step(whitened, x0, obj.ntheta)
    stage2 = minimize_bounded(whitened, start, lower, ftol=1e-8, initial_step=0.05, max_newton=0)
    stage2.nfev += stepped
    return newton_polish(whitened, stage2, lower)


def _beta_newton_step(fun, x0: np.ndarray, ntheta: int, h: float = 0.5) -> tuple[np.ndarray, int]:
    """Move the whitened β of ``x0`` (θ fixed) by one diagonal Newton step; the better point and the evaluations used.

    The nAGQ = 0 fixed effects can lie a few standard errors from the Laplace ones (glmm_20k:
    1.9), where BOBYQA's trust region would take dozens of evaluations to walk.  In whitened
    coordinates the β-Hessian is near 2I, so central differences at ±h per coordinate
    (2p + 2 evaluations) give a step that lands within a few hundredths of an SE.
    """
    f0 = fun(x0)
    x = x0.copy()
    for j in range(ntheta, len(x0)):
        e = np.zeros_like(x0)
        e[j] = h
        fp, fm = fun(x0 + e), fun(x0 - e)
        curvature = (fp - 2 * f0 + fm) / h**2
        if np.isfinite(curvature) and curvature > 0:
            x[j] = x0[j] - (fp - fm) / (2 * h * curvature)
    evaluations = 2 + 2 * (len(x0) - ntheta)
    return (x if fun(x) < f0 else x0), evaluations


def _raw_gradient(whitened, opt, lower, scale: np.ndarray, ntheta: int) -> np.ndarray | None:
    """The gradient at the optimum in (θ, β): the polish's if taken there, else afresh, from whitened coordinates."""
    g = opt.gradient if opt.gradient_at is not None and np.array_equal(opt.gradient_at, opt.x) else None
    if g is None or not np.all(np.isfinite(g)):
        g = central_gradient(whitened, opt.x, lower)
    if g is None:
        return None
    raw = np.array(g, dtype=float)
    raw[ntheta:] = np.linalg.solve(scale.T, g[ntheta:])  # v = S⁻¹(β - β0): ∂/∂β = S⁻ᵀ ∂/∂v
    return raw


def _reuse_polish_hessian(opt, scale: np.ndarray, ntheta: int) -> np.ndarray | None:
    """The Newton polish's last Hessian, back in (θ, β) coordinates, when it covers every parameter.

    It was computed at (or one converged Newton step from) the optimum, so computing
    another would cost as many evaluations again for the same numbers.
    """
    if opt.hessian is None or not opt.hessian_free.all():
        return None
    # distances the Hessian barely changes over: θ (scale ~1) by 1e-2, and β, whitened so
    # that a unit is one standard error, by 0.1 (SEs agree to 1e-5 with ones computed afresh)
    moved = np.abs(opt.hessian_at - opt.x)
    if moved[:ntheta].max(initial=0) > 1e-2 or moved[ntheta:].max(initial=0) > 0.1:
        return None
    if np.linalg.eigvalsh(opt.hessian).min() <= 0:
        return None  # the polish stopped on a noisy, indefinite Hessian: take lme4's deriv12 one
    m = len(opt.x)
    jac_inv = np.eye(m)
    jac_inv[ntheta:, ntheta:] = np.linalg.inv(scale)  # whitened v = S⁻¹(β - β0)
    return jac_inv.T @ opt.hessian @ jac_inv


def _hessian(fun, x, lower, rel_step: float = 1e-4) -> np.ndarray | None:
    """Central-difference Hessian of ``fun`` at ``x`` (lme4's deriv12, delta = 1e-4)."""
    x = np.asarray(x, dtype=float)
    _, H = stencil_derivatives(fun, x, fun(x), np.arange(len(x)), np.full(len(x), rel_step))
    return H


def _glmm_vcov(obj: GlmmObjective, state: PirlsState, hess) -> tuple[np.ndarray, str]:
    """lme4's vcov.merMod for GLMMs: ``2 H⁻¹`` restricted to β, else the RX-based one."""
    ntheta = obj.ntheta
    if hess is not None:
        try:
            v = 2.0 * np.linalg.inv(hess)[ntheta:, ntheta:]
            v = 0.5 * (v + v.T)
            if np.all(np.isfinite(v)) and np.linalg.eigvalsh(v).min() > 0:
                return v, "hessian"
        except np.linalg.LinAlgError:
            pass
    return rx_vcov(obj, state), "RX"


def rx_vcov(obj: GlmmObjective, state: PirlsState) -> np.ndarray:
    """The Cholesky-based covariance ``(R_X'R_X)⁻¹`` from the joint (u, β) system at the estimates."""
    _, dev, f = obj.weighted_system(state.theta, state.eta, state.mu)
    if f is None:  # the working weights vanish where fitted means reach the family's bounds
        raise FitError(
            "the fixed effects' covariance cannot be computed at the estimates: the weighted least-squares "
            "system is singular (fitted means at the family's bounds: complete separation, or fixed effects "
            f"the data cannot identify); estimates {np.round(state.beta, 4).tolist()}")
    return dev.fixef_covariance_unscaled(f)
