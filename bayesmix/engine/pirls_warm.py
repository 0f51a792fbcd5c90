"""What PIRLS carries from one criterion evaluation to the next: predicted starts and its convergence rate.

An optimizer (and a finite-difference stencil) evaluates glmer's criterion at points close
to ones already evaluated; the conditional modes there are predictable (:class:`ModeMemory`),
and PIRLS, being Newton's method with a rate it has shown before (:class:`NewtonRate`),
can then stop after one step.  Pure numpy; used by :mod:`bayesmix.engine.glmm`.
"""

from __future__ import annotations

import numpy as np


class ModeMemory:
    """The PIRLS solutions at the last points evaluated, to predict a good start at the next.

    Optimizers and finite differences revisit neighbourhoods: a linear fit over the points
    remembered, weighted by inverse squared distance, predicts the modes far better than
    the last point's (one PIRLS step then often suffices).  Distances are in ``metric``
    units, so that parameters of different scales count alike.  Central-difference
    Hessians need their centre and 2m axis points remembered to predict their m(m-1)
    cross points well, hence the size.
    """

    def __init__(self, metric: np.ndarray):
        self.metric = np.asarray(metric, dtype=float)
        self.size = max(16, 3 * len(self.metric) + 4)
        # the last ``size`` points and their modes, as rows of two arrays filled in turn (a ring:
        # stacking lists of arrays at each prediction cost more than the prediction's arithmetic)
        self._pars: np.ndarray | None = None
        self._values: np.ndarray | None = None
        self._count = 0

    @property
    def pars(self) -> list[np.ndarray]:
        """The points remembered, oldest first."""
        if self._pars is None:
            return []
        n = min(self._count, self.size)
        order = (np.arange(n) + (self._count - n)) % self.size
        return list(self._pars[order])

    def predict(self, par: np.ndarray) -> np.ndarray | None:
        if not self._count:
            return None
        n = min(self._count, self.size)
        values = self._values[:n]
        offsets = (self._pars[:n] - par) * self.metric
        dist = np.sqrt((offsets**2).sum(axis=1))
        nearest = values[int(np.argmin(dist))].copy()
        if n < len(par) + 2 or dist.min() == 0:  # a point seen before: its own modes
            return nearest
        weights = 1.0 / np.maximum(dist, 1e-12 * max(dist.max(), 1e-300)) ** 2
        weights /= weights.max()
        design = np.column_stack([np.ones(n), offsets]) * weights[:, None]
        # only the intercept of the least-squares fit is wanted: row 0 of the pseudo-inverse V S⁺ U'
        # (numpy's pinv cutoff), applied to the values (lstsq with every mode as a right-hand side cost 2 ms)
        u, s, vt = np.linalg.svd(design, full_matrices=False)
        keep = s > 1e-15 * s.max()
        row = (u[:, keep] * (vt[keep, 0] / s[keep])).sum(axis=1)
        predicted = (row * weights) @ values
        return predicted if np.all(np.isfinite(predicted)) else nearest

    def remember(self, par: np.ndarray, value: np.ndarray) -> None:
        if self._pars is None:
            self._pars = np.empty((self.size, len(par)))
            self._values = np.empty((self.size, len(value)))
        slot = self._count % self.size
        self._pars[slot] = par
        self._values[slot] = value
        self._count += 1


def modes_settled(du: float, previous_du: float | None, tol: float = 1e-9) -> bool:
    """Whether the modes are within ~1e-9 of converged after a PIRLS step of size ``du``.

    Converging at least linearly with the observed rate ρ = du/previous_du, the next step
    would be about ρ·du; with PIRLS's Newton (quadratic) convergence it is far smaller.
    Stopping here rather than after one more confirming step saves a factorization per
    evaluation; the objective is then computed from a refactorization at these modes.
    """
    if du < tol:
        return True
    if previous_du is None or previous_du == 0:
        return False
    rate = du / previous_du
    return rate < 0.1 and rate * du < tol


class NewtonRate:
    """PIRLS's observed quadratic convergence constant C (step_{i+1} ≈ C step_i²), for stopping early.

    PIRLS is Newton's method, so once a step du is small the next one is about C du²;
    C is a property of the model near its modes, learned from the full (not halved)
    steps of recent PIRLS runs (the largest of them, to be safe).  With it PIRLS can stop
    after a single step from a well-predicted start, where the linear-rate test of
    :func:`modes_settled` needs a second step to measure a rate.
    """

    _WINDOW = 24
    TOL = 1e-11  # predicted size of the step not taken (the linear-rate test allows 1e-9)

    def __init__(self):
        self.observed: list[float] = []

    def observe(self, previous_du: float | None, du: float, full_step: bool) -> None:
        # steps below ~1e-7 are at the noise floor of the next one: their ratio says nothing
        if full_step and previous_du is not None and 1e-7 < previous_du < 1e-1:
            self.observed.append(du / previous_du**2)
            del self.observed[: -self._WINDOW]

    def settled(self, du: float, loose: float = 1.0) -> bool:
        if len(self.observed) < 4:
            return False
        return max(self.observed) * du * du < loose * self.TOL
