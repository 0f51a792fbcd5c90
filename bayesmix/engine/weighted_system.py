"""PIRLS's weighted least-squares problem for one model: the index arrays that turn working weights into
cross-products, built once (:class:`WeightedSystem`).  Used by :mod:`bayesmix.engine.glmm`."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from bayesmix.engine.blocked import BlockColumns, BlockPattern
from bayesmix.engine.lmm import _DENSE_LIMIT, CrossProducts, GramPattern, PatternMatrix
from bayesmix.spec.terms import b_from_u


class WeightedSystem:
    """The data structures of the weighted least-squares problem, built once per model.

    Only the working weights change between PIRLS iterations, so every cross-product is
    a weighted sum over observations into a fixed pattern: ``np.bincount`` over index
    arrays computed here once, rather than sparse products rebuilt each iteration.
    """

    def __init__(self, compiled):
        self.compiled = compiled
        self.terms = compiled.terms
        first = self.terms[0]
        self.z1 = first.columns
        self.k1 = first.k
        self.nlevels1 = first.nlevels
        self.codes1 = first.factor.codes
        self.J1 = first.indicator()
        self.z1_outer = (self.z1[:, :, None] * self.z1[:, None, :]).reshape(len(self.z1), -1)
        self.Z_full = sp.hstack([t.z_matrix() for t in self.terms], format="csr")
        self.Z_full_T = self.Z_full.T.tocsr()
        self.all_scalar = all(t.k == 1 for t in self.terms)
        self.nlevels = [t.nlevels for t in self.terms]
        rest = self.terms[1:]
        self.q2 = sum(t.q for t in rest)
        self._no_rest = sp.csr_matrix((0, first.q))  # built once: sparse constructors are slow
        if rest:
            self._init_rest(rest, first)

    def _init_rest(self, rest, first):
        """Index arrays of Zrest'WZrest, Zrest'WZ1 (dense, or CSR on a fixed pattern) per observation."""
        q1, q2, n = first.q, self.q2, len(self.codes1)
        cols, vals, offset = [], [], 0
        for t in rest:
            cols.append(t.factor.codes[:, None] * t.k + np.arange(t.k) + offset)
            vals.append(t.columns)
            offset += t.q
        rest_cols, rest_vals = np.hstack(cols), np.hstack(vals)  # (n, m): each row's entries of Zrest
        self.rr_index = (rest_cols[:, :, None] * q2 + rest_cols[:, None, :]).reshape(n, -1)
        self.rr_vals = (rest_vals[:, :, None] * rest_vals[:, None, :]).reshape(n, -1)
        first_cols = self.codes1[:, None] * self.k1 + np.arange(self.k1)
        r1_key = (rest_cols[:, :, None] * q1 + first_cols[:, None, :]).reshape(n, -1)
        self.r1_vals = (rest_vals[:, :, None] * self.z1[:, None, :]).reshape(n, -1)
        self.r1_dense = q1 * q2 <= _DENSE_LIMIT
        if self.r1_dense:
            self.r1_index = r1_key
        else:  # fixed sparsity pattern, CSR order (keys sort row-major)
            keys, self.r1_index = np.unique(r1_key.ravel(), return_inverse=True)
            self.r1_index = self.r1_index.reshape(n, -1)
            self.r1_indices = (keys % q1).astype(np.int32)
            self.r1_indptr = np.searchsorted(keys // q1, np.arange(q2 + 1)).astype(np.int32)
            self.r1_nnz = len(keys)
        self.r1_pattern = self.r1_blocks = None
        if not self.r1_dense:
            probe = sp.csr_matrix((np.ones(self.r1_nnz), self.r1_indices, self.r1_indptr), shape=(q2, q1))
            if self.k1 > 1:
                # summed straight into the k-wide level blocks the factorization works on (BlockColumns):
                # the same sums, without a CSR matrix rearranged at every system
                self.r1_blocks = BlockPattern.from_csr(probe, self.k1)
                slot = self.r1_blocks.entry_block.astype(np.int64) * self.k1 + self.r1_blocks.entry_column
                self.r1_block_index = slot[self.r1_index].ravel()
            else:
                self.r1_pattern = GramPattern.from_csr(probe)
        elif self.k1 == 1:
            keys = np.unique(r1_key.ravel())
            probe = sp.csr_matrix((np.ones(len(keys)), (keys // q1, keys % q1)), shape=(q2, q1))
            pattern = GramPattern.from_csr(probe)
            if pattern.worthwhile(q1):  # sparse enough: store on the pattern instead of densely
                self.r1_dense = False
                self.r1_index = np.searchsorted(keys, r1_key)
                self.r1_indices, self.r1_indptr, self.r1_nnz = probe.indices, probe.indptr, len(keys)
                self.r1_pattern = pattern
        # values on the pattern without scipy objects: scalar terms only (Λ diagonal)
        self.r1_as_pattern = bool(self.r1_pattern is not None and all(t.k == 1 for t in self.terms)
                                  and self.r1_pattern.worthwhile(q1))
        self.Zrest_T = sp.hstack([t.z_matrix() for t in rest], format="csr").T.tocsr()

    def cross(self, w: np.ndarray, X: np.ndarray, response: np.ndarray) -> CrossProducts:
        n, k1, nl = len(w), self.k1, self.nlevels1
        xy = np.column_stack([X, response])
        wxy = w[:, None] * xy
        if k1 == 1:
            a11 = np.bincount(self.codes1, w * self.z1_outer[:, 0], minlength=nl).reshape(nl, 1, 1)
        else:
            a11 = (self.J1 @ (w[:, None] * self.z1_outer)).reshape(nl, k1, k1)
        if k1 == 1:  # [X y]'WZ for every term at once: one sparse product (a bincount per column cost more)
            by_column = self.Z_full_T @ wxy
            a_x1 = np.ascontiguousarray(by_column[: self.q1].T)[:, :, None]
        else:
            wxz = (wxy[:, :, None] * self.z1[:, None, :]).reshape(n, -1)
            a_x1 = (self.J1 @ wxz).reshape(nl, xy.shape[1], k1).transpose(1, 0, 2)
        q2 = self.q2
        if q2:
            a_rr = np.bincount(self.rr_index.ravel(), (w[:, None] * self.rr_vals).ravel(), minlength=q2 * q2)
            a_rr = a_rr.reshape(q2, q2)
            r1 = (w[:, None] * self.r1_vals).ravel()
            if self.r1_dense:
                a_r1 = np.bincount(self.r1_index.ravel(), r1, minlength=q2 * self.q1).reshape(q2, self.q1)
            elif self.r1_blocks is not None:
                size = len(self.r1_blocks.block_rows) * k1
                values = np.bincount(self.r1_block_index, r1, minlength=size).reshape(-1, k1)
                a_r1 = BlockColumns(values, self.r1_blocks)
            else:
                data = np.bincount(self.r1_index.ravel(), r1, minlength=self.r1_nnz)
                if self.r1_as_pattern:
                    a_r1 = PatternMatrix(data, self.r1_pattern, self.q1)
                else:
                    a_r1 = sp.csr_matrix((data, self.r1_indices, self.r1_indptr), shape=(q2, self.q1))
            a_xr = by_column[self.q1 :].T if k1 == 1 else np.asarray(self.Zrest_T @ wxy).T
        else:
            a_r1 = self._no_rest
            a_rr = np.zeros((0, 0))
            a_xr = np.zeros((xy.shape[1], 0))
        a_xx = xy.T @ wxy
        return CrossProducts(np.ascontiguousarray(a11), np.ascontiguousarray(a_x1), a_r1, a_rr, a_xr, a_xx, n, 0.0)

    @property
    def q1(self) -> int:
        return self.terms[0].q

    def z_lambda_u(self, theta: np.ndarray, u: np.ndarray) -> np.ndarray:
        """``Z Λ(θ) u``: the random effects' contribution to the linear predictor."""
        if self.all_scalar:  # Λ is diagonal: θ_t repeated over term t's levels
            return self.Z_full @ (np.repeat(theta, self.nlevels) * u)
        return self.Z_full @ b_from_u(self.terms, theta, u)
