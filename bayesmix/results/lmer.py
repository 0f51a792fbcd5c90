"""Linear mixed model fits (lme4's ``lmerMod``)."""

from __future__ import annotations

import numpy as np
import scipy.linalg as la

from bayesmix.engine import deviance
from bayesmix.results.base import MixedModelResult


class LmerResult(MixedModelResult):
    """A linear mixed model fitted by REML or ML (lme4's ``lmerMod``)."""

    def __init__(self, *args, deviance_obj=None, factorization=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.profiled_deviance = deviance_obj  # engine.lmm.ProfiledDeviance of these data
        self.factorization = factorization  # its blocked Cholesky factorization at the estimate

    @property
    def REML(self) -> bool:
        return self.method == "REML"

    @property
    def reml_criterion(self) -> float | None:
        return self.criterion_value if self.REML else None

    @property
    def deviance(self) -> float:
        """-2 log-likelihood at the estimates (for a REML fit: the ML deviance at the REML θ, profiled over σ)."""
        if not self.REML:
            return self.criterion_value
        f, dev = self.factorization, self.profiled_deviance
        n = dev.n
        return deviance.profiled(f, n, 0, False, dev.cross.sum_log_weights)

    def ranef_condvar(self) -> dict[str, np.ndarray]:
        """Conditional variances of the random effects given θ and β (lme4's ``condVar``).

        Keyed by term (``group_labels()``), each an array (levels, k, k).
        """
        return conditional_variances(self.factorization, self.compiled.terms, self.group_labels(),
                                     self.relative_factors(), self.sigma**2)


def conditional_variances(f, terms, labels, factors, scale: float) -> dict[str, np.ndarray]:
    """``scale · T (L L')⁻¹ T'`` level by level, from a blocked factorization of Λ'Z'WZΛ + I (LMM or,
    at the converged PIRLS weights, GLMM: lme4's ``condVar`` for both)."""
    q1 = f.l1.shape[0] * f.l1.shape[1]
    k1 = f.l1.shape[1]
    l1_inv = np.linalg.inv(f.l1)  # (levels, k, k)
    blocks_u1 = np.einsum("lji,ljk->lik", l1_inv, l1_inv)
    out_u = []
    if f.q2:
        l_rr = f.l_s[: f.q2, : f.q2]
        c_r = f.c_r.toarray() if hasattr(f.c_r, "toarray") else np.asarray(f.c_r)
        c_r_l1inv = np.einsum("rla,lab->rlb", c_r.reshape(f.q2, -1, k1), l1_inv).reshape(f.q2, q1)
        w = la.solve_triangular(l_rr, c_r_l1inv, lower=True)
        wb = w.reshape(f.q2, -1, k1)
        blocks_u1 = blocks_u1 + np.einsum("rla,rlb->lab", wb, wb)
        l_rr_inv = la.solve_triangular(l_rr, np.eye(f.q2), lower=True)
        m_rr = l_rr_inv.T @ l_rr_inv
        start = 0
        for term in terms[1:]:
            idx = start + np.arange(term.q).reshape(term.nlevels, term.k)
            out_u.append(m_rr[idx[:, :, None], idx[:, None, :]])
            start += term.q
    return {
        label: scale * np.einsum("ab,lbc,dc->lad", T, vu, T)
        for label, T, vu in zip(labels, factors, [blocks_u1] + out_u)
    }
