"""``glmer`` on a Dask DataFrame: PIRLS with one pass over the persisted partitions per iteration.

Pass 1 learns the model-frame state (as for ``lmer``); pass 2 compiles every partition once
(X, y, offset, prior weights, trials, the random-effects terms' codes and columns) and
*persists* those designs on the workers, reducing what the client needs from them: X's R
factor (the rank check), the terms' layout, the row moments, the response checks.

PIRLS then runs on the client from reduced sums only.  Each pass (:func:`_pirls_partition`)
takes a point (β, b), recomputes every row's linear predictor there on the workers, and
returns the sums a PIRLS iteration needs: the penalized deviance's residual sum (for step
halving), the family's AIC sum (the Laplace objective), and the cross-products
``[Z X z]' W [Z X z]`` at the working weights and working response of that point (the next
iteration's system).  So one pass per iteration: the sums at the accepted step are the next
system, and at the converged modes they are the final system and the objective.  The
optimizer stages are ``engine.glmm.fit_glmm``'s own, with :class:`DaskGlmmObjective` in place
of the in-memory objective.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from types import SimpleNamespace

import numpy as np
import pandas as pd

from bayesmix.distributed.frame import model_rows
from bayesmix.distributed.model import RowlessModel, RowMoments
from bayesmix.distributed.passes import compile_partition, learn_frame, reduce_parts
from bayesmix.engine.blocked import BlockColumns
from bayesmix.engine.glmm import GlmmObjective, PirlsState, fit_glmm, gauss_hermite_rule
from bayesmix.engine.lmm import CrossProducts, PatternMatrix
from bayesmix.engine.pirls_warm import ModeMemory, NewtonRate
from bayesmix.engine.weighted_system import WeightedSystem
from bayesmix.errors import ArgumentError, DataError, RowsRequiredError, warn
from bayesmix.spec.design import FrameState, drop_rank_deficient
from bayesmix.spec.model import check_terms
from bayesmix.spec.terms import b_from_u, z_times

# --- the persisted designs ------------------------------------------------------------------------


@dataclass
class PartitionDesign:
    """One partition's model rows, compiled once and kept on its worker for every PIRLS pass."""

    X: np.ndarray  # every column of X (the rank check's choice is applied per pass)
    y: np.ndarray
    offset: np.ndarray
    weights: np.ndarray  # prior weights times trials, as ``CompiledModel.weights``
    trials: np.ndarray  # binomial trials (cbind) or ones: the family's aic ``n``
    terms: list
    eta_start: np.ndarray  # the family's initialize() on the link scale
    fixef_names: list
    system: object = None  # engine.weighted_system's WeightedSystem of these rows: index arrays, bincounts per pass

    def cross(self, w: np.ndarray, X: np.ndarray, z: np.ndarray) -> CrossProducts:
        """``[Z X z]' W [Z X z]`` of these rows, in a form partitions' sums can add (no PatternMatrix or
        BlockColumns, whose patterns are this partition's own)."""
        if self.system is None:
            return CrossProducts.from_data(self.terms, X, z, w)
        cross = self.system.cross(w, X, z)
        if isinstance(cross.a_r1, PatternMatrix | BlockColumns):
            cross = replace(cross, a_r1=cross.a_r1.tocsr())
        return cross


def design_partition(df: pd.DataFrame, spec, state: FrameState, family) -> PartitionDesign | None:
    rows, _ = model_rows(df, spec)
    if not len(rows):
        return None
    c = compile_partition(rows, spec, state, binomial_response=family.response_is_probability)
    trials = c.response_trials if c.response_trials is not None else np.ones_like(c.y)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta_start = family.link.linkfun(family.initialize(c.y, c.weights)[2])
    return PartitionDesign(c.X, c.y, c.offset, c.weights, trials, list(c.terms), eta_start, list(c.fixef_names),
                           _weighted_system(c.terms))


def _weighted_system(terms):
    """The in-memory PIRLS's per-model index arrays for these rows (its cross-products by bincount are
    several times faster than sparse products); None, and CrossProducts.from_data, if it cannot be built
    from the terms alone."""
    try:
        return WeightedSystem(SimpleNamespace(terms=terms))
    except (AttributeError, TypeError):
        return None


@dataclass
class DesignSummary:
    """What the client needs from the designs: the layout, the rank, the response's checks."""

    r_x: np.ndarray
    fixef_names: list
    terms: list  # on zero rows: levels and columns' names
    moments: RowMoments
    low: np.ndarray  # column-wise min and max of [y trials]: a constant response is refused
    high: np.ndarray
    many_trials: bool  # any trials > 1: R's binomial aic then counts trials, not weights
    warnings: dict = field(default_factory=dict)  # the family's response warnings: message -> category


def _describe(d: PartitionDesign | None, family) -> DesignSummary | None:
    if d is None:
        return None
    with warnings.catch_warnings(record=True) as caught:  # a worker's warnings would be lost: bring them back
        warnings.simplefilter("always")
        family.check_response(d.y, d.weights)
    yt = np.column_stack([d.y, d.trials])
    x = d.X
    return DesignSummary(np.linalg.qr(x, mode="r"), d.fixef_names, [t.subset(np.zeros(0, dtype=np.int64)) for t in d.terms],
                         RowMoments.of(x, [t.columns for t in d.terms], d.y, d.offset, d.weights), yt.min(axis=0), yt.max(axis=0),
                         bool(np.any(d.trials > 1)), {str(w.message): w.category for w in caught})


def _merge_summaries(*parts: DesignSummary | None) -> DesignSummary | None:
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    first = parts[0]
    moments = first.moments
    for p in parts[1:]:
        moments = moments.merge(p.moments)
    return DesignSummary(np.linalg.qr(np.vstack([p.r_x for p in parts]), mode="r"), first.fixef_names, first.terms,
                         moments, np.min([p.low for p in parts], axis=0), np.max([p.high for p in parts], axis=0),
                         any(p.many_trials for p in parts), {k: v for p in parts for k, v in p.warnings.items()})


def persist_designs(ddf, spec, state: FrameState, family):
    """Pass 2: every partition compiled and persisted on the workers; their summary reduced."""
    import dask

    lazy = [dask.delayed(design_partition, pure=True)(part, spec, state, family) for part in ddf.to_delayed()]
    designs = list(dask.persist(*lazy))
    summary, seconds = reduce_parts(designs, _describe, _merge_summaries, family)
    return designs, lazy, summary, seconds


# --- one PIRLS pass -----------------------------------------------------------------------------


@dataclass
class PassSums:
    """The sums one pass brings back: a PIRLS system at a point, and what the objectives need there."""

    cross: CrossProducts | None
    dev: float  # Σ deviance residuals
    aic: float  # the family's aic, summed
    bad_w: int  # working weights not positive and finite
    bad_mu: int  # fitted means not finite
    eta_low: float
    eta_high: float

    def __add__(self, other: PassSums) -> PassSums:
        cross = self.cross if other.cross is None else other.cross if self.cross is None else self.cross + other.cross
        return PassSums(cross, self.dev + other.dev, self.aic + other.aic, self.bad_w + other.bad_w, self.bad_mu + other.bad_mu,
                        np.fmin(self.eta_low, other.eta_low), np.fmax(self.eta_high, other.eta_high))


def _sum_passes(*parts):
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def linear_predictor(d: PartitionDesign, keep, point) -> np.ndarray:
    """Every row's η at ``point`` = (β, b), or the family's start when ``point`` is None."""
    if point is None:
        return d.eta_start
    beta, b = point
    return d.offset + d.X[:, keep] @ beta + z_times(d.terms, b)


def _pirls_partition(d: PartitionDesign | None, keep, family, point, fixed_beta, many_trials) -> PassSums | None:
    """engine.glmm's weighted_system (working weights and response, cross-products) and the
    objective's sums at ``point``, on one partition's rows."""
    if d is None:
        return None
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        eta = linear_predictor(d, keep, point)
        mu = family.link.linkinv(eta)
        dev = float(family.dev_resids(d.y, mu, d.weights).sum())
        aic = _aic(family, d, mu, dev, many_trials)
        variance = family.variance(mu)
        mu_eta = family.link.mu_eta(eta)
        w = d.weights * mu_eta**2 / variance
        z = eta - d.offset + (d.y - mu) / mu_eta
        X = d.X[:, keep]
        if fixed_beta is not None:  # the system in u alone: Xβ moved into the working response
            X, z = X[:, :0], z - X @ fixed_beta
        cross = d.cross(w, X, z)
        finite = eta[np.isfinite(eta)]
    return PassSums(cross, dev, aic, int(np.sum(~np.isfinite(w) | (w <= 0))), int(np.sum(~np.isfinite(mu))),
                    float(finite.min()) if len(finite) else np.nan, float(finite.max()) if len(finite) else np.nan)


def _aic(family, d: PartitionDesign, mu, dev: float, many_trials: bool) -> float:
    """The family's aic over one partition's rows, so that partitions' values sum to the whole data's.

    R's binomial aic counts trials when *any* row of the data has more than one: a partition
    without such a row gets one more row of zero prior weight and two trials, which
    contributes exactly 0 and makes the partition follow the whole data's rule."""
    y, n, wt = d.y, d.trials, d.weights
    if many_trials and family.response_is_probability and not np.any(n > 1):
        y, n, mu, wt = (np.append(a, v) for a, v in ((y, 0.0), (n, 2.0), (mu, 0.5), (wt, 0.0)))
    return float(family.aic(y, n, mu, wt, dev))


def _agq_partition(d: PartitionDesign | None, keep, family, beta, u, lam, sd, nodes) -> np.ndarray | None:
    """Per level of the (single, scalar) term: Σ deviance residuals at the modes and at each node."""
    if d is None:
        return None
    term = d.terms[0]
    codes, nl = term.factor.codes, term.nlevels
    base = d.offset + d.X[:, keep] @ beta
    out = np.zeros((len(nodes) + 1, nl))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for i, shift in enumerate([0.0, *nodes]):
            mu = family.link.linkinv(base + term.columns[:, 0] * lam * (u + shift * sd)[codes])
            out[i] = np.bincount(codes, family.dev_resids(d.y, mu, d.weights), minlength=nl)
    return out


def _sum_arrays(*parts):
    parts = [p for p in parts if p is not None]
    return sum(parts[1:], parts[0]) if parts else None


# --- the objective ------------------------------------------------------------------------------


@dataclass
class DaskPirlsState(PirlsState):
    sums: PassSums | None = None  # the pass at the modes: the objective's sums and the final system


@dataclass(frozen=True)
class RowPoint:
    """Where every row's linear predictor is: offset + Xβ + ZΛ(θ)u, recomputed on the workers from
    β and b; ``beta`` None is the family's start.  A Dask state's ``eta`` and ``mu``."""

    beta: np.ndarray | None
    u: np.ndarray


class DaskGlmmObjective(GlmmObjective):
    """engine.glmm's objective with every row-wise step a pass over the persisted partitions.

    PIRLS's warm starts, the predicted modes and the optimizer stages are the engine's own
    (inherited); only the steps that read rows are replaced."""

    def __init__(self, compiled, family, designs, keep, many_trials: bool, nAGQ: int = 1, tol: float = 1e-12,
                 maxit: int = 60):
        # GlmmObjective.__init__ reads the rows; this sets what its PIRLS bookkeeping uses instead
        self.compiled, self.family, self.nAGQ, self.tol, self.maxit = compiled, family, nAGQ, tol, maxit
        self.designs, self.keep, self.many_trials = designs, list(keep), bool(many_trials)
        self._u_warm = np.zeros(sum(t.q for t in compiled.terms))
        self._beta_warm = None
        self._structure: dict = {}
        self.rough_factor = 1.0  # fit_glmm loosens PIRLS's stops while a rough optimum will do
        self._newton_rate = NewtonRate()
        self.memory_theta = ModeMemory(np.ones(compiled.ntheta))  # the engine's predicted PIRLS starts
        self.memory_joint = ModeMemory(np.ones(compiled.ntheta + compiled.p))
        self.ntheta = compiled.ntheta
        self.p = compiled.p
        self.passes, self.pass_seconds = 0, 0.0  # PIRLS passes made, and their wall time
        if nAGQ > 1:
            self.gh_z, self.gh_w, self.gh_ldnorm = gauss_hermite_rule(nAGQ)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["designs"] = getattr(self, "lazy_designs", self.designs)  # persisted data stays on the cluster
        return state

    def release(self, lazy) -> None:
        """After the fit: forget the persisted designs (the workers free them); later passes
        (vcov_rx, profiles) compile the partitions again from ``lazy``."""
        self.designs = self.lazy_designs = lazy

    def row_pass(self, theta, point: RowPoint, fixed_beta=None) -> PassSums:
        """One pass over the partitions at ``point``."""
        at = None if point.beta is None else (point.beta, b_from_u(self.compiled.terms, theta, point.u))
        sums, seconds = reduce_parts(self.designs, _pirls_partition, _sum_passes, self.keep, self.family, at,
                                     fixed_beta, self.many_trials)
        self.passes += 1
        self.pass_seconds += seconds
        return sums

    def _system(self, theta, sums: PassSums, p_used: int):
        dev = self._deviance(np.zeros((0, p_used)), sums.cross)
        return dev, dev.factorize(theta)

    def weighted_system(self, theta, eta, mu, fixed_beta=None):
        sums = self.row_pass(theta, eta, fixed_beta)
        dev, f = self._system(theta, sums, 0 if fixed_beta is not None else self.p)
        return None, dev, f

    def _pirls_from(self, theta, beta, u, cold: bool, beta0=None) -> DaskPirlsState:
        """engine.glmm's PIRLS iterations; the pass that checks a step also builds the next system."""
        u_only = beta is not None
        beta0 = self._beta_warm if beta0 is None else beta0
        if u_only or (beta0 is not None and not cold):
            beta = beta if u_only else np.array(beta0, dtype=float)
            point = RowPoint(beta, u)
        else:
            u, beta = np.zeros_like(u), np.zeros(self.p)
            point = RowPoint(None, u)
        fixed = beta if u_only else None
        p_used = 0 if u_only else self.p
        sums = self.row_pass(theta, point, fixed)
        # each trial is a pass, whose sums serve the next iteration (and the last one the final factor)
        u, beta, sums, pdev, (_, dev, f) = self.iterate(
            theta, beta, u, sums, np.inf, u_only, lambda at: (None, *self._system(theta, at, p_used)),
            self._penalized_rows(theta, fixed), lambda at, _: _not_positive_definite(at))
        point = RowPoint(beta, u)
        return DaskPirlsState(theta, beta, u, point, point, None, f, dev, pdev, sums)

    def _penalized_rows(self, theta, fixed):
        """``(u, β) -> (penalized deviance, the pass's sums)`` at θ: the trials of engine.glmm's halve_steps."""
        def penalized(u, beta):
            sums = self.row_pass(theta, RowPoint(beta, u), fixed)
            return float(sums.dev + u @ u), sums

        return penalized

    def laplace(self, state: DaskPirlsState) -> float:
        return float(state.factorization.ldL2 + state.u @ state.u + state.sums.aic)

    def agq(self, state: DaskPirlsState) -> float:
        """engine.glmm's AGQ, the per-level deviance sums at the modes and at each node reduced over partitions."""
        f = state.factorization
        sd = 1.0 / f.l1[:, 0, 0]
        nodes = [z for z in self.gh_z if z != 0]
        devc, seconds = reduce_parts(self.designs, _agq_partition, _sum_arrays, self.keep, self.family, state.beta,
                                     state.u, state.theta[0], sd, nodes)
        self.passes += 1
        self.pass_seconds += seconds
        devc0 = devc[0] + state.u**2
        mult = np.zeros(len(devc0))
        at = iter(devc[1:])
        for z, w, ldn in zip(self.gh_z, self.gh_w, self.gh_ldnorm):
            if z == 0:
                mult += w
                continue
            uk = state.u + z * sd
            mult += np.exp(-0.5 * (next(at) + uk**2 - devc0) - ldn) * w / np.sqrt(2.0 * np.pi)
        return float(devc0.sum() + f.ldL2 - 2.0 * np.log(mult).sum())


def _not_positive_definite(sums: PassSums) -> str:
    """engine.glmm's message, from the counts the pass reduced."""
    eta_range = f"[{sums.eta_low:.4g}, {sums.eta_high:.4g}]" if np.isfinite(sums.eta_low) else "not finite"
    return ("the weighted least-squares system is not positive definite (fitted means outside the range the "
            f"family allows?): {sums.bad_w} working weights not positive and finite, {sums.bad_mu} fitted means "
            f"not finite, linear predictor in {eta_range}")


# --- the fit ------------------------------------------------------------------------------------


def check_family(family) -> None:
    """Families whose Laplace objective is a sum over partitions; a scale family's aic is not (it needs
    the whole data's dispersion in every row's term) and its σ needs the rows."""
    if family.has_scale:
        raise RowsRequiredError(
            f"glmer on a Dask DataFrame is available for the families without a scale parameter (binomial, "
            f"poisson, negative.binomial with theta given), not the {family.name} family: its Laplace objective "
            "needs every row's log density at the whole data's dispersion. Fit rows that fit in memory: "
            "bm.glmer(formula, ddf.compute(), family=...) or a sample, ddf.sample(frac=0.1).compute()")


def rowless_glmm(spec, record, summary: DesignSummary, state: FrameState, nAGQ: int):
    """The model's layout from the reduced summary; X's columns dropped for rank as in memory."""
    nobs = record.rows - record.dropped
    _, names, dropped = drop_rank_deficient(summary.r_x, summary.fixef_names)
    keep = [summary.fixef_names.index(n) for n in names]
    check_terms(summary.terms, nobs, False)
    if np.all(summary.low == summary.high):
        raise DataError(f"Response is constant (every value of {spec.parsed().response!r} is "
                        f"{summary.low[0]:g}): a GLMM cannot be fitted to it")
    if nAGQ > 1 and (len(summary.terms) != 1 or summary.terms[0].k != 1):
        raise ArgumentError(
            f"nAGQ = {nAGQ} > 1 is only available for models with a single, scalar random-effects term; "
            f"this model has {', '.join(f'({t.expr} | {t.group})' for t in summary.terms)}. Use nAGQ=1 (Laplace).")
    model = RowlessModel(
        spec.parsed(), names, summary.terms, nobs=nobs, p=len(names), n_dropped=record.dropped,
        dropped_fixef=dropped, weights_name=spec.weights, offset_name=spec.offset, frame_state=state,
        row_moments=summary.moments.columns(keep), fitter="glmer")
    return model, keep


def fit(spec, ddf, family, nAGQ: int, record, learn_seconds: float):
    """Pass 2 and the optimizer stages; returns (model, fit, keep, pass seconds)."""
    state = record.state()
    designs, lazy, summary, seconds = persist_designs(ddf, spec, state, family)
    for message, category in summary.warnings.items():
        warn(message, category)
    model, keep = rowless_glmm(spec, record, summary, state, nAGQ)
    obj = DaskGlmmObjective(model, family, designs, keep, summary.many_trials, nAGQ=nAGQ)
    try:
        glmm_fit = fit_glmm(model, family, nAGQ=nAGQ, objective=obj)
    finally:
        obj.release(lazy)
    return model, glmm_fit, keep, state, {"learn_frame": learn_seconds, "designs": seconds,
                                          "pirls": obj.pass_seconds, "pirls_passes": obj.passes}


__all__ = ["DaskGlmmObjective", "check_family", "fit", "learn_frame", "persist_designs"]
