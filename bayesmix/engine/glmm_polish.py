"""The Newton polish that ends glmer's joint (θ, β) optimization, ending where its gradient was measured.

``engine.optimize``'s polish takes every Newton step that lowers the criterion, so its last
step usually moves off the point of its last gradient, and lme4's convergence check then
needs a fresh central gradient there (2m evaluations, each a PIRLS run).  Here a step is
taken only when the quadratic model predicts a gain above the criterion's resolution;
otherwise the search stops at the current point, whose central gradient (and the Hessian
of the first iteration, lme4's ``deriv12`` stencil) is already in hand for the convergence
check and the fixed effects' covariance.  Parameters held at a bound stay there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bayesmix.engine.optimize import (
    OptimizeResult,
    halving_line_search,
    newton_step,
    stencil_derivatives,
)

# a predicted gain below this (relative to the criterion) is not worth a step: it is the
# resolution at which engine.optimize's polish, too, calls a point stationary
_GAIN_TOL = 1e-10


@dataclass
class _Best:
    """Counts evaluations and keeps the lowest point seen (a stencil point can beat the centre)."""

    fun: object
    x: np.ndarray
    f: float
    calls: int = 0

    def __call__(self, x) -> float:
        self.calls += 1
        f = float(self.fun(x))
        if f < self.f:
            self.x, self.f = np.array(x, dtype=float), f
        return f


def newton_polish(fun, start: OptimizeResult, lower, max_steps: int = 8) -> OptimizeResult:
    """Newton steps from ``start`` (a search's result) on the parameters not at their lower bound.

    The Hessian is computed once, at the start, and kept while its steps succeed; each
    accepted step costs a central gradient (2m evaluations).  The result's gradient is the
    one at its ``x`` whenever the polish stops on a small predicted gain.
    """
    x, fx = np.array(start.x, dtype=float), float(start.fun)
    lower = np.asarray(lower, dtype=float)
    best = _Best(fun, x.copy(), fx)
    x, fx = _onto_near_bounds(best, x, fx, lower)
    free = ~np.isclose(x, lower, atol=1e-10, rtol=0)
    idx = np.flatnonzero(free)
    out = {"hessian": None, "hessian_at": None, "hessian_free": free, "gradient": None, "gradient_at": None}
    improved = stationary = False
    H = g = None
    for _ in range(max_steps if len(idx) else 0):
        if H is None:
            h = _steps(x, idx, lower)
            g, H = (None, None) if h is None else stencil_derivatives(best, x, fx, idx, h)
            if g is None:
                break
            out.update(hessian=H, hessian_at=x.copy())
            fresh = True
        out.update(gradient=_full(g, idx, len(x)), gradient_at=x.copy())
        step = newton_step(H, g)
        if step is None:
            break
        if -0.5 * g @ step < _GAIN_TOL * max(1.0, abs(fx)):
            stationary = True
            break
        trial = halving_line_search(best, x, fx, idx, step, lower)
        if trial is None:
            if fresh:
                stationary = True  # at the criterion's noise floor
                break
            H = None  # the kept Hessian may be stale: refresh it once before giving up
            continue
        x, fx = trial
        improved, fresh = True, False
        h = _steps(x, idx, lower)
        g = None if h is None else _central_gradient(best, x, idx, h)
        if g is None:
            out.update(gradient=None, gradient_at=None)
            break
    if best.f < fx:  # a stencil or line-search point beat the last accepted one
        x, fx = best.x.copy(), best.f
    return OptimizeResult(x, fx, start.nfev + best.calls, bool(start.converged or improved or stationary),
                          start.message, **out)


# a parameter this close to its finite lower bound (0 for a relative SD) is tried on it first
_NEAR_BOUND_ROOM = 1e-2


def _onto_near_bounds(fun, x, fx, lower):
    """``(x, fx)`` with the parameters within ``_NEAR_BOUND_ROOM`` of their bound put on it, where ``fun`` is no higher.

    Near a singular optimum the criterion is flat in a variance parameter (it depends on
    θ² there) and a search can stop a little off the bound (an unidentifiable Poisson model:
    θ = 1.7e-3), where the stencil Hessian is indefinite: the line search halved θ once and
    stopped with 4.7e-5 of criterion left.  On the bound the polish holds the parameter and
    finishes the others, as lme4's fit ends singular there.  One evaluation; kept only if no
    worse.  (Where the optimum is inside but this close, ``f(0) - f(θ*)`` is O(θ*⁴): below
    1e-8 of the criterion.)  Parameters without a finite bound (glmer's β) are never moved.
    """
    near = np.isfinite(lower) & (x > lower) & (x - lower < _NEAR_BOUND_ROOM)
    if not near.any():
        return x, fx
    trial = np.where(near, lower, x)
    f = float(fun(trial))
    return (trial, f) if f <= fx else (x, fx)


def _steps(x, idx, lower):
    """engine.optimize's central-difference steps: 1e-4 max(|x|, 10), at most half the room to the bound."""
    h = 1e-4 * np.maximum(np.abs(x[idx]), 10.0)
    room = x[idx] - lower[idx]
    if np.any(room < 2 * h):
        h = np.minimum(h, room / 2.0)
        if np.any(h <= 1e-9):
            return None
    return h


def _central_gradient(fun, x, idx, h):
    g = np.empty(len(idx))
    for a, i in enumerate(idx):
        e = np.zeros_like(x)
        e[i] = h[a]
        g[a] = (fun(x + e) - fun(x - e)) / (2 * h[a])
    return g if np.all(np.isfinite(g)) else None


def _full(g, idx, m):
    out = np.full(m, np.nan)
    out[idx] = g
    return out
