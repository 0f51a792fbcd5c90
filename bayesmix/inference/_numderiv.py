"""Richardson-extrapolated finite differences as R's numDeriv (``hessian``, ``jacobian``), which lmerTest and pbkrtest use."""

from __future__ import annotations

import numpy as np

_ZERO_TOL = float(np.sqrt(np.finfo(float).eps / 7e-7))


def _initial_steps(x: np.ndarray, d: float, eps: float) -> np.ndarray:
    return np.abs(d * x) + eps * (np.abs(x) < _ZERO_TOL)


def _richardson(approx: list, r: int):
    """Combine estimates at steps h, h/2, h/4, ... (numDeriv's v = 2: error terms in h², h⁴, ...)."""
    a = list(approx)
    for m in range(1, r):
        a = [(a[k + 1] * 4.0**m - a[k]) / (4.0**m - 1.0) for k in range(r - m)]
    return a[0]


def hessian(func, x, d: float = 0.1, eps: float = 1e-4, r: int = 4, v: float = 2.0) -> np.ndarray:
    """numDeriv's ``hessian(func, x)`` (method "Richardson", its default arguments)."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    f0 = float(func(x))
    h0 = _initial_steps(x, d, eps)
    diag = np.zeros(n)
    for i in range(n):
        h = h0.copy()
        est = []
        for _ in range(r):
            e = np.zeros(n)
            e[i] = h[i]
            est.append((func(x + e) - 2.0 * f0 + func(x - e)) / h[i] ** 2)
            h = h / v
        diag[i] = _richardson(est, r)
    H = np.diag(diag)
    for i in range(n):
        for j in range(i):
            h = h0.copy()
            est = []
            for _ in range(r):
                e = np.zeros(n)
                e[i], e[j] = h[i], h[j]
                est.append((func(x + e) - 2.0 * f0 + func(x - e) - diag[i] * h[i] ** 2 - diag[j] * h[j] ** 2)
                           / (2.0 * h[i] * h[j]))
                h = h / v
            H[i, j] = H[j, i] = _richardson(est, r)
    return H


def jacobian(func, x, d: float = 1e-4, eps: float = 1e-4, r: int = 4, v: float = 2.0) -> np.ndarray:
    """numDeriv's ``jacobian(func, x)``: rows are the (flattened) outputs, columns the inputs."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    h = _initial_steps(x, d, eps)
    per_step = []
    for _ in range(r):
        cols = []
        for i in range(n):
            e = np.zeros(n)
            e[i] = h[i]
            cols.append((np.ravel(func(x + e)) - np.ravel(func(x - e))) / (2.0 * h[i]))
        per_step.append(np.column_stack(cols))
        h = h / v
    return _richardson(per_step, r)
