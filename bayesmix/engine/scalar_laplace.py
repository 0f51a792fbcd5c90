"""The Laplace deviance of a GLMM with one scalar random-effects term, as a function of (θ, β).

The levels decouple, so PIRLS is a vectorized Newton iteration over all levels at once:
far cheaper than the general engine for the many evaluations a profile makes.  It is the
same criterion as ``engine.glmm`` (tests compare the two); it lives here, beside it, so the
engine keeps one home for PIRLS-type computations.
"""

from __future__ import annotations

import numpy as np


class ScalarLaplace:
    """The Laplace deviance for one scalar random-effects term: the levels decouple, so PIRLS is vectorized Newton."""

    @staticmethod
    def applies(fit) -> bool:
        return len(fit.compiled.terms) == 1 and fit.compiled.terms[0].k == 1 and fit.nAGQ == 1

    def __init__(self, compiled, family):
        term = compiled.terms[0]
        self.codes = term.factor.codes
        self.nl = term.nlevels
        self.z = term.columns[:, 0]
        self.X = compiled.X
        self.offset = compiled.offset
        self.y = compiled.y
        self.pw = compiled.weights
        self.trials = compiled.response_trials if compiled.response_trials is not None else np.ones_like(self.y)
        self.family = family
        self.u = np.zeros(self.nl)

    def _level_sum(self, values):
        return np.bincount(self.codes, values, minlength=self.nl)

    def __call__(self, theta, beta) -> float:
        fam, link = self.family, self.family.link
        tz = theta[0] * self.z
        eta0 = self.offset + self.X @ beta
        u = self.u.copy()
        mu = link.linkinv(eta0 + tz * u[self.codes])
        pdev = self._level_sum(fam.dev_resids(self.y, mu, self.pw)) + u**2
        for _ in range(60):
            mu_eta = link.mu_eta(eta0 + tz * u[self.codes])
            w = self.pw * mu_eta**2 / fam.variance(mu)
            working = tz * u[self.codes] + (self.y - mu) / mu_eta
            u_new = self._level_sum(w * tz * working) / (1.0 + self._level_sum(w * tz**2))
            for _halving in range(30):
                mu_new = link.linkinv(eta0 + tz * u_new[self.codes])
                pdev_new = self._level_sum(fam.dev_resids(self.y, mu_new, self.pw)) + u_new**2
                worse = ~(pdev_new <= pdev + 1e-12 * np.abs(pdev))
                if not worse.any():
                    break
                u_new = np.where(worse, 0.5 * (u + u_new), u_new)
            step = np.max(np.abs(u_new - u))
            u, mu, pdev = u_new, mu_new, pdev_new
            if step < 1e-11:
                break
        if not np.all(np.isfinite(u)):
            return np.inf
        self.u = u
        mu_eta = link.mu_eta(eta0 + tz * u[self.codes])
        w = self.pw * mu_eta**2 / fam.variance(mu)
        ldL2 = np.sum(np.log1p(self._level_sum(w * tz**2)))
        dev = fam.dev_resids(self.y, mu, self.pw).sum()
        return float(ldL2 + u @ u + fam.aic(self.y, self.trials, mu, self.pw, dev))
