"""Bounded minimization of a smooth criterion: BOBYQA (as lme4), then Newton steps to polish.

lme4 minimizes with NLopt's BOBYQA and can stop a little short of the optimum; the same
derivative-free search gets close in few evaluations (finite-difference gradients would
cost several evaluations each), and a few Newton steps from a central-difference Hessian
then land on the optimum to the criterion's precision.  Parameters sitting on their
bound (a singular fit) stay exactly there, once probes have shown the bound is optimal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nlopt
import numpy as np
from scipy.optimize import Bounds, minimize


@dataclass
class OptimizeResult:
    x: np.ndarray
    fun: float
    nfev: int
    converged: bool
    message: str
    hessian: np.ndarray | None = None  # last central-difference Hessian of the polish (free parameters)
    hessian_at: np.ndarray | None = None  # the point it was computed at
    hessian_free: np.ndarray | None = None  # mask of the parameters it covers
    gradient: np.ndarray | None = None  # central-difference gradient at the end (NaN where held at a bound)
    gradient_at: np.ndarray | None = None  # the point it was computed at


@dataclass
class OptSummary:
    """What the optimizer did (lme4's ``optinfo``, MixedModels.jl's ``OptSummary``).

    ``optimizer`` names what actually ran; ``feval`` counts criterion evaluations of every
    stage; ``gradient`` and ``hessian`` are the central differences at the end (free
    parameters), from which the convergence checks in ``messages`` are made.
    """

    optimizer: str
    initial: np.ndarray
    lower: np.ndarray
    final: np.ndarray
    fmin: float
    feval: int
    converged: bool
    gradient: np.ndarray | None = None
    hessian: np.ndarray | None = None
    messages: list[str] = field(default_factory=list)
    newton_polish: bool = False  # whether Newton steps on a central-difference Hessian finished the search

    @classmethod
    def from_result(cls, res: OptimizeResult, initial, lower, optimizer: str = "bobyqa") -> OptSummary:
        return cls(optimizer, np.asarray(initial, float), np.asarray(lower, float), np.asarray(res.x, float), float(res.fun),
                   int(res.nfev), bool(res.converged), res.gradient, res.hessian,
                   newton_polish=res.hessian is not None)


def minimize_bounded(fun, x0, lower, upper=None, *, max_newton: int = 4, ftol: float = 1e-12,
                     maxiter: int = 1000, initial_step: float | None = None,
                     value_and_gradient=None, fold=None) -> OptimizeResult:
    """Minimize ``fun`` over ``lower <= x <= upper`` (infinite bounds allowed).

    ``max_newton=0`` skips the polish (a rough optimum, e.g. a start for a second stage);
    ``initial_step`` sets BOBYQA's first trust-region radius (small when ``x0`` is close).
    ``value_and_gradient(x) -> (f, g)``, where the exact gradient is cheap, replaces BOBYQA
    by L-BFGS-B and the polish's central differences of ``fun`` by differences of ``g``.
    ``fold(x)``: a point inside the bounds with the same criterion for any x (the profiled
    deviance is even in each column of a relative covariance factor), so L-BFGS-B can
    search without bounds: on a variance parameter's bound 0 the gradient vanishes
    (the criterion depends on θ² there), and a projected gradient search that touches
    it stays stuck there even where the optimum is inside.
    """
    x0 = np.asarray(x0, dtype=float)
    lower = np.asarray(lower, dtype=float)
    upper = np.full_like(x0, np.inf) if upper is None else np.asarray(upper, dtype=float)
    counter = _Counter(fun, value_and_gradient)
    if value_and_gradient is None:
        def search(start, step=None):
            return _bobyqa(counter, start, lower, upper, ftol, maxiter, step)
        derivatives = _FunctionDifferences(counter, lower, upper)
    else:
        def search(start, step=None):
            return _lbfgsb(counter, start, lower, upper, ftol, maxiter, fold)
        derivatives = _GradientDifferences(counter, lower, upper)
    res = search(x0, initial_step)
    if counter.best_x is None:  # the criterion was infinite everywhere it looked
        return OptimizeResult(x0, np.inf, counter.calls, False, res.message)
    x, fx = counter.best_x.copy(), counter.best_f
    # A variance parameter can end on (or just off) its bound while the optimum lies inside:
    # the criterion is flat there (it depends on θ² near 0), so gradients do not show it,
    # and a singular local optimum can trap the search.  Probe inward, and restart once from
    # inside even without a better probe.
    blind_restart_done = False
    for _ in range(3):
        near = np.flatnonzero(np.isfinite(lower) & (x - lower < _NEAR_BOUND))
        if not len(near):
            break
        start = _probe_off_bounds(counter, x, fx, lower, upper, near)
        if start is None:
            if blind_restart_done:
                break
            start = x.copy()
            start[near] = np.minimum(lower[near] + 0.5, upper[near])
            blind_restart_done = True
        again = search(start)
        if counter.best_f >= fx - 1e-10 * max(1.0, abs(fx)):
            break
        res, x, fx = again, counter.best_x.copy(), counter.best_f
    polish = _newton_polish(counter, x, fx, lower, upper, max_newton, derivatives)
    if value_and_gradient is not None and polish.hessian is not None:
        _refine_on_gradient(counter, polish, lower, upper)
    converged = bool(res.success or polish.improved or polish.stationary) and np.isfinite(polish.fx)
    return OptimizeResult(polish.x, polish.fx, counter.calls, converged, res.message,
                          polish.hessian, polish.hessian_at, polish.hessian_free, polish.gradient, polish.gradient_at)


@dataclass
class _SearchResult:
    success: bool
    message: str


def _bobyqa(counter, x0, lower, upper, ftol: float, maxeval: int, initial_step: float | None = None) -> _SearchResult:
    """NLopt's BOBYQA from ``x0``; the best point seen is kept by ``counter``."""
    opt = nlopt.opt(nlopt.LN_BOBYQA, len(x0))
    opt.set_min_objective(lambda x, grad: counter(x))
    opt.set_lower_bounds(np.where(np.isfinite(lower), lower, -np.inf))
    opt.set_upper_bounds(np.where(np.isfinite(upper), upper, np.inf))
    opt.set_ftol_rel(ftol)
    opt.set_ftol_abs(1e-10)
    opt.set_xtol_abs(1e-8)
    opt.set_maxeval(maxeval)
    if initial_step is not None:
        opt.set_initial_step(initial_step)
    try:
        opt.optimize(np.clip(x0, lower, upper))
        code = opt.last_optimize_result()
        return _SearchResult(code > 0 and code != nlopt.MAXEVAL_REACHED, f"NLopt BOBYQA code {code}")
    except (nlopt.RoundoffLimited, RuntimeError, ValueError) as exc:  # keep the best point seen
        return _SearchResult(False, f"NLopt BOBYQA stopped: {exc}")


def _lbfgsb(counter, x0, lower, upper, ftol: float, maxeval: int, fold=None) -> _SearchResult:
    """SciPy's L-BFGS-B on the exact gradient from ``x0``; BOBYQA from its best point if it fails.

    A criterion that is infinite somewhere (a system not positive definite) breaks the
    line search: the derivative-free search then finishes from the best point seen.
    With ``fold`` the search is unbounded and the best point is folded back inside, then
    parameters within rounding of their bound are put on it (a singular fit's exact 0).
    """
    def value_and_gradient(x):
        f, g = counter.value_and_gradient(x)
        if not (np.isfinite(f) and np.all(np.isfinite(g))):
            raise _NotFinite
        return f, g

    if fold is None:
        bounds = Bounds(np.where(np.isfinite(lower), lower, -np.inf), np.where(np.isfinite(upper), upper, np.inf))
    else:
        bounds = None
    try:
        # extreme responses give gradients whose squared norm overflows inside SciPy: the search
        # then stops, and the finiteness checks of the fit decide, without a NumPy warning
        with np.errstate(over="ignore", invalid="ignore"):
            res = minimize(value_and_gradient, np.clip(x0, lower, upper), jac=True, method="L-BFGS-B", bounds=bounds,
                           options={"ftol": _LBFGSB_FTOL, "gtol": _LBFGSB_GTOL, "maxfun": maxeval, "maxiter": maxeval})
        if fold is not None:
            _fold_best(counter, fold, lower)
        # a line search that fails at the criterion's rounding floor ("ABNORMAL") next to a
        # stationary point is the end of the search too: the Newton polish finishes it
        at_bound = bounds is not None and (np.isclose(res.x, lower, atol=1e-10, rtol=0)
                                           | np.isclose(res.x, upper, atol=1e-10, rtol=0))
        stalled = res.status == 2 and np.max(np.abs(res.jac[~at_bound]), initial=0) <= GRADIENT_TOL
        if res.success or stalled:
            return _SearchResult(True, f"L-BFGS-B: {res.message}")
    except _NotFinite:
        if fold is not None and counter.best_x is not None:
            _fold_best(counter, fold, lower)
    if counter.best_x is None:
        return _SearchResult(False, "L-BFGS-B: the criterion was not finite at the start")
    return _bobyqa(counter, counter.best_x.copy(), lower, upper, ftol, maxeval)


# L-BFGS-B's stops (projected gradient; relative decrease per step): the Newton polish on
# exact gradients finishes from there, in one or two steps
_LBFGSB_GTOL = 1e-5
_SNAP = 1e-6  # a folded parameter this close to its bound is tried on it


def _fold_best(counter, fold, lower) -> None:
    """Fold the best point inside the bounds; put parameters within ``_SNAP`` of a bound on it if no worse."""
    x = fold(counter.best_x)
    near = np.isfinite(lower) & (x - lower < _SNAP) & (x != lower)
    counter.best_x = x
    if near.any():
        trial = np.where(near, lower, x)
        f_trial = counter(trial)
        if f_trial <= counter.best_f:  # a tie too: the criterion is flat to rounding there
            counter.best_x, counter.best_f = trial, f_trial
# (1e-12 spent its last evaluations where the Newton steps that follow gain the same in fewer:
# Pixel 54 -> 49 evaluations, kb07-like 131 -> 113, criteria equal to 1e-12 relative)
_LBFGSB_FTOL = 1e-10


class _NotFinite(Exception):
    """The criterion or its gradient was not finite (L-BFGS-B cannot go on from there)."""


_PROBE_STEPS = (1e-2, 0.1, 0.5, 1.0)


_NEAR_BOUND = 1e-4  # lme4's isSingular tolerance


def _probe_off_bounds(fun, x, fx, lower, upper, near) -> np.ndarray | None:
    """A point with a lower criterion found by moving parameters at a finite bound inward."""
    best_x, best_f = None, fx - 1e-10 * max(1.0, abs(fx))
    for i in near:
        for step in _PROBE_STEPS:
            trial = x.copy()
            trial[i] = min(lower[i] + step, upper[i])
            f_trial = fun(trial)
            if f_trial < best_f:
                best_x, best_f = trial, f_trial
    return best_x


class _Counter:
    """Counts calls and remembers the best point seen (line searches can pass it)."""

    def __init__(self, fun, value_and_gradient=None):
        self.fun = fun
        self.with_gradient = value_and_gradient
        self.calls = 0
        self.best_f = np.inf
        self.best_x = None

    def __call__(self, x):
        self.calls += 1
        return self._keep(x, float(self.fun(x)))

    def value_and_gradient(self, x):
        self.calls += 1
        f, g = self.with_gradient(x)
        return self._keep(x, float(f)), np.asarray(g, dtype=float)

    def gradient(self, x):
        return self.value_and_gradient(x)[1]

    def _keep(self, x, f):
        if f < self.best_f:
            self.best_f, self.best_x = f, np.array(x, dtype=float)
        return f


@dataclass
class _Polish:
    x: np.ndarray
    fx: float
    improved: bool
    stationary: bool  # a positive definite Hessian and no Newton step could lower the criterion
    hessian: np.ndarray | None
    hessian_at: np.ndarray | None
    hessian_free: np.ndarray | None
    gradient: np.ndarray | None = None
    gradient_at: np.ndarray | None = None


def _newton_polish(fun, x, fx, lower, upper, max_steps, derivatives) -> _Polish:
    """Newton steps on the parameters not held at a bound; each step must lower ``fun``.

    The Hessian (central differences: m(m+1)/2·2 evaluations of ``fun``, or 2m of an exact
    gradient) is computed once and kept while its steps keep lowering ``fun``; later steps
    need only a gradient (2m evaluations of ``fun``, or one exact gradient).
    """
    improved_once = stationary = False
    last_h = last_at = last_free = None
    H = None
    gradient = gradient_at = None
    for _ in range(2 * max_steps):
        free = ~(np.isclose(x, lower, atol=1e-10, rtol=0) | np.isclose(x, upper, atol=1e-10, rtol=0))
        if not free.any():
            break
        fresh = H is None or last_free is None or not np.array_equal(free, last_free)
        if fresh:
            g, H = derivatives.both(x, fx, free)
            if g is None:
                break
            last_h, last_at, last_free = H, x.copy(), free
        else:
            g = derivatives.gradient(x, free)
            if g is None:
                break
        gradient = np.full(len(x), np.nan)
        gradient[free] = g
        gradient_at = x.copy()
        step = newton_step(H, g)
        if step is None:
            break
        if -0.5 * g @ step < _UNRESOLVED_GAIN * max(1.0, abs(fx)):
            # a predicted gain the criterion's values cannot show (their rounding is ~1e-12 of
            # them): a line search would compare noise (InstEval: 7e-8 of 237585, three evaluations)
            stationary = True
            break
        accepted = halving_line_search(fun, x, fx, free, step, lower, upper)
        if accepted is None:
            if not fresh:  # the kept Hessian may be stale: refresh it once before giving up
                H = None
                continue
            stationary = True  # at the criterion's noise floor
            break
        gain = fx - accepted[1]
        x, fx = accepted
        improved_once = True
        if gain < 1e-10 * max(1.0, abs(fx)):
            stationary = True
            break
    # the bound may be optimal for a parameter the polish moved towards it: keep best seen
    if fun.best_f < fx:
        x, fx = fun.best_x.copy(), fun.best_f
    return _Polish(x, fx, improved_once, stationary, last_h, last_at, last_free, gradient, gradient_at)


_UNRESOLVED_GAIN = 1e-12


def halving_line_search(fun, x, fx, free, step, lower, upper=None):
    """``x`` moved by ``s·step`` on the ``free`` parameters (clipped to the bounds) for s = 1, 1/2, 1/4:
    the first point that lowers ``fun`` below ``fx``, as (point, value); None if none does."""
    for scale in (1.0, 0.5, 0.25):
        trial = x.copy()
        moved = x[free] + scale * step
        trial[free] = np.clip(moved, lower[free], upper[free]) if upper is not None else np.maximum(moved, lower[free])
        ft = fun(trial)
        if ft < fx:
            return trial, ft
    return None


def newton_step(H: np.ndarray, g: np.ndarray) -> np.ndarray | None:
    """``-H⁻¹g``, or None where H is not positive definite (no descent promised) or singular."""
    try:
        if np.linalg.eigvalsh(H).min() <= 0:
            return None
        return -np.linalg.solve(H, g)
    except np.linalg.LinAlgError:
        return None


def _refine_on_gradient(counter, polish: _Polish, lower, upper, steps: int = 3) -> None:
    """Newton steps on the exact gradient past the criterion's rounding floor (in place).

    The polish stops once a step gains less than 1e-10 of the criterion: θ is then right
    to about the square root of that.  The exact gradient keeps shrinking where the
    criterion's values no longer resolve the difference, so a step is kept when the
    gradient's norm falls and the criterion stays within rounding; the same data summed in
    another order (a Dask fit) then lands on the same θ to ~1e-10, not ~1e-7.
    """
    x, free, H = polish.x, polish.hessian_free, polish.hessian
    if free is None or not free.any():
        return
    fx, g = counter.value_and_gradient(x)
    for _ in range(steps):
        try:
            step = -np.linalg.solve(H, g[free])
        except np.linalg.LinAlgError:
            return
        if np.max(np.abs(step)) <= 1e-12 * max(1.0, np.max(np.abs(x))):
            return
        trial = x.copy()
        trial[free] = np.clip(x[free] + step, lower[free], upper[free])
        ft, gt = counter.value_and_gradient(trial)
        # the step is a Newton step on the exact gradient, so the criterion cannot truly rise: a rise
        # is rounding, ~1e-12 relative (sleepstudy's ML criterion -226.8 moves by 2.4e-10 between
        # points 1e-8 apart), so 1e-11 of it is allowed; the gradient's norm must fall
        if not (np.isfinite(ft) and ft <= fx + 1e-11 * max(1.0, abs(fx))
                and np.linalg.norm(gt[free]) < np.linalg.norm(g[free])):
            return
        x, fx, g = trial, ft, gt
        polish.x, polish.fx = x, fx
        polish.gradient, polish.gradient_at = np.where(free, g, np.nan), x.copy()


@dataclass
class _FunctionDifferences:
    """Gradient and Hessian of the criterion by central differences of its values."""

    fun: object
    lower: np.ndarray
    upper: np.ndarray

    def both(self, x, fx, free):
        return _central_derivatives(self.fun, x, fx, free, self.lower, self.upper)

    def gradient(self, x, free):
        return _central_gradient(self.fun, x, free, self.lower, self.upper)


@dataclass
class _GradientDifferences:
    """The exact gradient, and the Hessian by central differences of it (2m gradients)."""

    counter: _Counter
    lower: np.ndarray
    upper: np.ndarray

    def gradient(self, x, free):
        g = self.counter.gradient(x)[free]
        return g if np.all(np.isfinite(g)) else None

    def both(self, x, fx, free):
        g = self.gradient(x, free)
        H = gradient_hessian(self.counter.gradient, x, np.flatnonzero(free), self.lower, self.upper)
        return (None, None) if g is None or H is None else (g, H)


def gradient_hessian(gradient, x, idx, lower, upper):
    """The Hessian in the coordinates ``idx`` by central differences of an exact ``gradient`` (None if not finite)."""
    h = _stencil_steps(x, idx, lower, upper)
    if h is None:
        return None
    H = np.zeros((len(idx), len(idx)))
    for a, i in enumerate(idx):
        e = np.zeros_like(x)
        e[i] = h[a]
        H[a] = (gradient(x + e)[idx] - gradient(x - e)[idx]) / (2 * h[a])
    H = 0.5 * (H + H.T)
    return H if np.all(np.isfinite(H)) else None


def _stencil_steps(x, idx, lower, upper):
    """Central-difference steps: at least 1e-3 (see _central_derivatives), inside the bounds."""
    h = 1e-4 * np.maximum(np.abs(x[idx]), 10.0)
    room = np.minimum(x[idx] - lower[idx], upper[idx] - x[idx])
    if np.any(room < 2 * h):
        h = np.minimum(h, room / 2.0)
        if np.any(h <= 1e-9):
            return None
    return h


def _central_gradient(fun, x, free, lower, upper):
    idx = np.flatnonzero(free)
    h = _stencil_steps(x, idx, lower, upper)
    if h is None:
        return None
    g = np.zeros(len(idx))
    for a, i in enumerate(idx):
        e = np.zeros_like(x)
        e[i] = h[a]
        g[a] = (fun(x + e) - fun(x - e)) / (2 * h[a])
    return g if np.all(np.isfinite(g)) else None


def _central_derivatives(fun, x, fx, free, lower, upper):
    idx = np.flatnonzero(free)
    # steps of at least 1e-3: glmer's objective carries PIRLS noise (~1e-9, more with a
    # dispersion family, whose Laplace deviance is first order in u's error), and with a
    # 1e-5 floor the Hessian was noise (indefinite) and the polish stopped short
    h = _stencil_steps(x, idx, lower, upper)
    if h is None:
        return None, None
    return stencil_derivatives(fun, x, fx, idx, h)


def stencil_derivatives(fun, x, fx, idx, h):
    """Central-difference gradient and Hessian of ``fun`` in the coordinates ``idx`` with steps ``h``
    (lme4's ``deriv12`` stencil: 2m + m(m−1) evaluations); (None, None) if any value is not finite."""
    m = len(idx)
    g = np.zeros(m)
    H = np.zeros((m, m))
    fp = np.zeros(m)
    fm = np.zeros(m)
    for a in range(m):
        e = np.zeros_like(x)
        e[idx[a]] = h[a]
        fp[a], fm[a] = fun(x + e), fun(x - e)
        g[a] = (fp[a] - fm[a]) / (2 * h[a])
        H[a, a] = (fp[a] - 2 * fx + fm[a]) / h[a] ** 2
    for a in range(m):
        for b in range(a + 1, m):
            e = np.zeros_like(x)
            e[idx[a]], e[idx[b]] = h[a], h[b]
            fpp, fmm = fun(x + e), fun(x - e)
            # f(x+ea+eb) + f(x-ea-eb) = 2f + ha^2 Haa + hb^2 Hbb + 2 ha hb Hab + O(h^4)
            H[a, b] = H[b, a] = (fpp + fmm - 2 * fx - h[a] ** 2 * H[a, a] - h[b] ** 2 * H[b, b]) / (2 * h[a] * h[b])
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(H))):
        return None, None
    return g, H


# --- lme4's convergence checks at the optimum (checkConv, checkHess) ----------------------

GRADIENT_TOL = 2e-3  # lme4's check.conv.grad tol
HESSIAN_TOL = 1e-6  # lme4's check.conv.hess tol


def final_derivatives(fun, opt: OptimizeResult, lower, upper=None, exact_gradient=None):
    """The gradient and Hessian of ``fun`` at ``opt.x`` (all parameters), reusing the polish's when current.

    lme4 computes both afresh at the optimum (deriv12); the polish's Hessian is reused when it
    covers every parameter and was taken within 1e-3 of the optimum (it barely changes there),
    its gradient only when taken at the optimum itself.  ``exact_gradient(x)``, where
    available, gives the gradient and, by its central differences, the Hessian.
    """
    x = np.asarray(opt.x, dtype=float)
    lower = np.asarray(lower, dtype=float)
    upper = np.full_like(x, np.inf) if upper is None else np.asarray(upper, dtype=float)
    free = np.ones(len(x), bool)
    hessian = None
    if opt.hessian is not None and opt.hessian_free is not None and opt.hessian_free.all():
        if np.max(np.abs(opt.hessian_at - x), initial=0) <= 1e-3:
            hessian = opt.hessian
    gradient = None
    if opt.gradient is not None and opt.gradient_at is not None and np.array_equal(opt.gradient_at, x):
        gradient = opt.gradient
    if exact_gradient is not None:
        gradient = np.asarray(exact_gradient(x), dtype=float)
        if hessian is None:
            hessian = gradient_hessian(exact_gradient, x, np.flatnonzero(free), lower, upper)
        return gradient, hessian
    if hessian is None:
        gradient, hessian = _central_derivatives(fun, x, float(fun(x)), free, lower, upper)
    elif gradient is None or not np.all(np.isfinite(gradient)):
        gradient = _central_gradient(fun, x, free, lower, upper)
    return gradient, hessian


SINGULAR_TOL = 1e-4  # lme4's check.conv.singular tol


def is_singular(x, lower) -> bool:
    """lme4's isSingular: a parameter with lower bound 0 (a diagonal θ) within 1e-4 of it."""
    x, lower = np.asarray(x), np.asarray(lower)
    return bool(np.any(x[lower == 0] < SINGULAR_TOL))


def central_gradient(fun, x, lower, upper=None):
    """Central-difference gradient of ``fun`` at ``x`` over every parameter (None if not finite)."""
    x = np.asarray(x, dtype=float)
    upper = np.full_like(x, np.inf) if upper is None else np.asarray(upper, dtype=float)
    return _central_gradient(fun, x, np.ones(len(x), bool), np.asarray(lower, dtype=float), upper)


def convergence_messages(gradient, hessian, ntheta: int, fmin: float = 0.0) -> list[str]:
    """lme4's checkConv for a fit that is not singular (lme4 skips these checks for singular fits).

    The scaled gradient: max over parameters of min(|R⁻¹g|, |g|) (H = R'R, lme4's
    ``solve(chol(H), g)``) above 0.002 means the optimizer stopped short ("failed to converge"); the Hessian (of the
    fixed effects alone for GLMMs, then of all parameters) with a negative eigenvalue is
    "degenerate", with a zero one "numerically singular", with a huge eigenvalue ratio
    "nearly unidentifiable".
    """
    if gradient is None or hessian is None:
        return ["unable to evaluate scaled gradient", "Problem with Hessian check (infinite or missing values?)"]
    gradient, hessian = np.asarray(gradient, float), np.asarray(hessian, float)
    if np.isnan(gradient).any():
        return ["Gradient contains NAs"]
    messages = []
    try:
        scaled = np.linalg.solve(np.linalg.cholesky(hessian).T, gradient)
        worst = np.minimum(np.abs(scaled), np.abs(gradient))
        if not np.all(np.isfinite(scaled)):
            raise np.linalg.LinAlgError
        if worst.max(initial=0) > GRADIENT_TOL:
            messages.append(f"Model failed to converge with max|grad| = {worst.max():.6g} (tol = {GRADIENT_TOL:g}, "
                            f"component {int(np.argmax(worst)) + 1})")
    except np.linalg.LinAlgError:
        # a Hessian that is rounding noise throughout (a criterion that does not depend on the
        # parameters) fails the Cholesky by the noise's sign: the Hessian check below says what it is
        if not _numerically_zero(hessian, _hessian_noise(fmin)):
            messages.append("unable to evaluate scaled gradient")
    tol = _hessian_noise(fmin)
    if len(gradient) > ntheta:
        messages += _hessian_messages(hessian[ntheta:, ntheta:], "fixed-effect ", tol)
    messages += _hessian_messages(hessian, "", tol)
    return list(dict.fromkeys(messages))  # the fixed-effect block and the whole often say the same


def _hessian_noise(fmin: float) -> float:
    """An eigenvalue below the central differences' rounding noise (~100 ε|f|/h², h = 1e-3) is zero:
    a criterion that does not depend on a parameter at all gives such noise, not exactly 0."""
    return max(HESSIAN_TOL, 100 * np.finfo(float).eps * abs(fmin) / 1e-6)


def _numerically_zero(H, tol: float) -> bool:
    return bool(np.all(np.isfinite(H)) and np.max(np.abs(np.linalg.eigvalsh(0.5 * (H + H.T)))) < tol)


def _hessian_messages(H, kind: str, tol: float = HESSIAN_TOL) -> list[str]:
    """lme4's checkHess (``tol`` for its zero and negative eigenvalues)."""
    if not np.all(np.isfinite(H)):
        return ["Problem with Hessian check (infinite or missing values?)"]
    ev = np.linalg.eigvalsh(0.5 * (H + H.T))
    negative = int(np.sum(ev < -tol))
    if negative:
        return [f"Model failed to converge: degenerate {kind}Hessian with {negative} negative eigenvalue"
                + ("s" if negative > 1 else "")]
    try:
        np.linalg.cholesky(H)
        positive_definite = True
    except np.linalg.LinAlgError:
        positive_definite = False
    if np.any(np.abs(ev) < tol) or not positive_definite:
        text = f"{kind}Hessian is numerically singular: parameters are not uniquely determined"
        return [text[:1].upper() + text[1:]]
    out = []
    if ev.max() * HESSIAN_TOL > 1:
        out.append("Model is nearly unidentifiable: very large eigenvalue - Rescale variables?")
    if ev.min() / ev.max() < HESSIAN_TOL:
        out.append("Model is nearly unidentifiable: large eigenvalue ratio - Rescale variables?")
    return out
