"""Fixed-pattern sparse blocks of the blocked factorization (engine/lmm.py's blocked path).

Zrest'WZ1, the block of the cross-products between the first random-effects term and the
others, keeps its sparsity pattern for every θ (and, in PIRLS, for every weight vector).
What is found from that pattern once lives here, so that a deviance evaluation is
arithmetic on fixed arrays instead of scipy.sparse products and constructions:

* :class:`GramPattern` / :class:`PatternMatrix`: a sparse matrix's values on its pattern
  and ``M M'`` as one ``bincount`` over entry pairs (scalar terms throughout; PIRLS);
* :class:`BlockPattern` / :class:`BlockColumns`: the same matrix as whole k-wide level blocks
  for a vector-valued first term, so ``M blockdiag(m1)`` is k² multiply-adds;
* :class:`LevelGram`: ``M blockdiag(P_1, ..., P_L) M'`` for per-level symmetric k x k
  matrices P as one sparse matrix-vector product with matrices built once from the pattern
  and values (the Schur complement's costliest term on crossed designs).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import scipy.sparse as sp

try:  # SciPy's numeric sparse-product kernels (see SparseGram, PatternMatrix); bincounts serve without them
    from scipy.sparse._sparsetools import csr_matmat as _csr_matmat
    from scipy.sparse._sparsetools import csr_matvecs as _csr_matvecs
except ImportError:  # pragma: no cover - a SciPy that moved its kernels
    _csr_matmat = _csr_matvecs = None


def csr_times_dense(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, shape: tuple[int, int],
                    dense: np.ndarray) -> np.ndarray:
    """``A @ dense`` for the CSR matrix A = (data, indices, indptr) without building a scipy object.

    PIRLS forms such products from fixed patterns with new values hundreds of times; the scipy
    matrix's construction and checks cost more than the product (SciPy's numeric kernel is called
    directly where it is available; ``indptr`` and ``indices`` must share one integer type).
    """
    rhs = np.ascontiguousarray(dense, dtype=float)
    if _csr_matvecs is None:  # pragma: no cover - a SciPy that moved its kernels
        return np.asarray(sp.csr_matrix((data, indices, indptr), shape=shape) @ rhs)
    out = np.zeros((shape[0], rhs.shape[1]))
    _csr_matvecs(shape[0], shape[1], rhs.shape[1], indptr, indices, np.ascontiguousarray(data, dtype=float),
                 rhs.ravel(), out.ravel())
    return out


@dataclass
class GramPattern:
    """The fixed sparsity pattern of a CSR matrix M, with the entry pairs that share a column.

    ``M M'`` then costs one ``np.bincount`` over those pairs, far less than a dense
    product when M is sparse (e.g. nested grouping factors: one entry per column).
    """

    rows: np.ndarray  # row of each stored entry, CSR order
    cols: np.ndarray
    pair_a: np.ndarray
    pair_b: np.ndarray
    target: np.ndarray  # flat index rows[a] * nrows + rows[b]
    nrows: int

    @classmethod
    def from_csr(cls, m: sp.csr_matrix) -> GramPattern:
        coo_rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
        cols = m.indices
        by_col = np.argsort(cols, kind="stable")
        counts = np.bincount(cols, minlength=m.shape[1])
        starts = np.concatenate([[0], np.cumsum(counts)])
        # all ordered pairs (a, b) of entries within each column
        sizes = counts**2
        col_of_pair = np.repeat(np.arange(m.shape[1]), sizes)
        within = np.arange(sizes.sum()) - np.repeat(np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
        cnt = counts[col_of_pair]
        a = by_col[starts[col_of_pair] + within // np.maximum(cnt, 1)]
        b = by_col[starts[col_of_pair] + within % np.maximum(cnt, 1)]
        return cls(coo_rows, cols, a, b, coo_rows[a] * m.shape[0] + coo_rows[b], m.shape[0])

    def worthwhile(self, ncols: int) -> bool:
        """Pairs cost ~20 times a dense multiply-add; use them when there are far fewer."""
        return 20 * len(self.pair_a) < self.nrows * self.nrows * ncols

    @cached_property
    def lower(self) -> LowerPairs:
        """The pairs of ``M M'``'s lower triangle (row a >= row b), by distinct entry (built at first use)."""
        keep = self.rows[self.pair_a] >= self.rows[self.pair_b]
        keys, slot = np.unique(self.target[keep], return_inverse=True)
        return LowerPairs(self.pair_a[keep], self.pair_b[keep], slot, keys // self.nrows, keys % self.nrows)

    @cached_property
    def csr_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(indptr, indices) of the pattern in CSR form, one index dtype."""
        indices = np.asarray(self.cols)
        indptr = np.searchsorted(self.rows, np.arange(self.nrows + 1)).astype(indices.dtype)
        return indptr, indices

    def gram(self, values: np.ndarray) -> np.ndarray:
        q = self.nrows
        return np.bincount(self.target, values[self.pair_a] * values[self.pair_b], minlength=q * q).reshape(q, q)


@dataclass
class LowerPairs:
    """The distinct entries (row, col), row >= col, of a GramPattern's ``M M'`` and the pairs summed into each."""

    pair_a: np.ndarray
    pair_b: np.ndarray
    slot: np.ndarray  # entry of each pair
    row: np.ndarray  # per entry
    col: np.ndarray

    def values(self, m_values: np.ndarray) -> np.ndarray:
        """``(M M')[row, col]`` per entry for M with these values."""
        return np.bincount(self.slot, m_values[self.pair_a] * m_values[self.pair_b], minlength=len(self.row))


@dataclass
class PatternMatrix:
    """A sparse matrix on a fixed :class:`GramPattern`: new values build no scipy object.

    PIRLS updates Zrest'WZ1 hundreds of times; constructing a scipy matrix each time
    cost more than the arithmetic.
    """

    values: np.ndarray  # one per pattern entry, CSR order
    pattern: GramPattern
    ncols: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.pattern.nrows, self.ncols

    def rescaled(self, row_scale: np.ndarray, col_scale: np.ndarray) -> PatternMatrix:
        """``diag(row_scale) M diag(col_scale)``."""
        p = self.pattern
        return replace(self, values=self.values * row_scale[p.rows] * col_scale[p.cols])  # keeps a subclass

    def gram(self) -> np.ndarray:
        """``M M'``, dense."""
        return self.pattern.gram(self.values)

    def lower_gram(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``M M'``'s lower triangle as (rows, cols, values) on the pattern's entry pairs (None: form it by gram())."""
        lower = self.pattern.lower
        return lower.row, lower.col, lower.values(self.values)

    def times_transpose_of(self, dense: np.ndarray) -> np.ndarray:
        """``M dense'`` for a dense (m, ncols) matrix."""
        p = self.pattern
        indptr, indices = p.csr_index  # one sparse product: a bincount per row of dense cost ~4x more
        return csr_times_dense(indptr, indices, self.values, (p.nrows, self.ncols), dense.T)

    def transpose_times(self, v: np.ndarray) -> np.ndarray:
        """``M' v``."""
        p = self.pattern
        return np.bincount(p.cols, self.values * v[p.rows], minlength=self.ncols)

    def toarray(self) -> np.ndarray:
        out = np.zeros(self.shape)
        np.add.at(out, (self.pattern.rows, self.pattern.cols), self.values)
        return out

    def tocsr(self) -> sp.csr_matrix:
        """The scipy matrix (what sums of cross-products over data chunks add, each chunk with its own pattern)."""
        p = self.pattern
        return sp.csr_matrix((self.values, (p.rows, p.cols)), shape=self.shape)


@dataclass
class BlockPattern:
    """Where a CSR matrix's entries go in its k-wide level blocks (see BlockColumns); fixed per sparsity pattern."""

    entry_block: np.ndarray  # block of each stored entry
    entry_column: np.ndarray  # its column within the block
    block_rows: np.ndarray
    block_levels: np.ndarray
    indices: np.ndarray  # CSR column indices of the block pattern
    indptr: np.ndarray
    shape: tuple[int, int]
    source: tuple[np.ndarray, np.ndarray]  # the matrix's own (indices, indptr), to recognise it

    @classmethod
    def from_csr(cls, a: sp.csr_matrix, k: int) -> BlockPattern:
        levels = a.shape[1] // k
        rows = np.repeat(np.arange(a.shape[0], dtype=np.int64), np.diff(a.indptr))
        keys, inverse = np.unique(rows * levels + a.indices // k, return_inverse=True)  # sorted by row, then level
        # 32-bit indices: half the memory on 1M rows, and scipy keeps them without a conversion copy
        block_rows, block_levels = (keys // levels).astype(np.int32), (keys % levels).astype(np.int32)
        indices = (block_levels[:, None] * k + np.arange(k, dtype=np.int32)[None, :]).ravel()
        indptr = np.concatenate([[0], np.cumsum(np.bincount(block_rows, minlength=a.shape[0]) * k)]).astype(np.int32)
        return cls(inverse.astype(np.int32), (a.indices % k).astype(np.int32), block_rows, block_levels, indices,
                   indptr, a.shape, (a.indices.copy(), a.indptr.copy()))

    def matches(self, a: sp.csr_matrix) -> bool:
        return (a.shape == self.shape and a.nnz == len(self.entry_block) and np.array_equal(a.indptr, self.source[1])
                and np.array_equal(a.indices, self.source[0]))

    @cached_property
    def sparse_gram(self) -> SparseGram | None:
        """The SparseGram of matrices on the block pattern (built at first use, shared by PIRLS's systems;
        None where SciPy's kernel is not available)."""
        return SparseGram.build(self.indices, self.indptr, self.shape)


class SparseGram:
    """``C C'`` as a dense array for CSR matrices C on one fixed pattern (given by their values).

    PIRLS forms the rest rows of L21 on one pattern at every iteration.  SciPy's product
    ``C @ C.T`` each time converts C' to CSR, sizes the result in a symbolic pass as long as
    the product itself, and builds two scipy objects: 1.2 of its 2.2 ms on glmm_20k's rest
    rows (200 x 2000, 40k entries).  Here the transpose's pattern and a permutation of the
    values into it, and the result's size and where its entries go, are found once; each
    call runs SciPy's numeric kernel into preallocated arrays.
    """

    def __init__(self, indices, indptr, shape, t_indices, t_indptr, t_order, nnz):
        self.indices, self.indptr, self.shape = indices, indptr, shape
        self.t_indices, self.t_indptr, self.t_order = t_indices, t_indptr, t_order
        self.nnz = nnz

    @classmethod
    def build(cls, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]) -> SparseGram | None:
        if _csr_matmat is None:
            return None
        indices, indptr = np.asarray(indices, np.int32), np.asarray(indptr, np.int32)
        rows = np.repeat(np.arange(shape[0], dtype=np.int32), np.diff(indptr))
        t_order = np.lexsort((rows, indices))  # by column, rows ascending within: the CSR of C'
        t_indptr = np.concatenate([[0], np.cumsum(np.bincount(indices, minlength=shape[1]))]).astype(np.int32)
        probe = sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=shape)
        nnz = (probe @ probe.T).nnz
        if nnz >= 2**31:
            return None
        return cls(indices, indptr, shape, rows[t_order], t_indptr, t_order, nnz)

    def dense(self, values: np.ndarray) -> np.ndarray:
        """``C C'`` for the C with these values (in the pattern's CSR order)."""
        n = self.shape[0]
        # fresh outputs per call: the samplers' chains share one pattern across threads, and SciPy's
        # kernel runs without the GIL
        cp, cj, cx = np.empty(n + 1, dtype=self.indptr.dtype), np.empty(self.nnz, dtype=self.indptr.dtype), np.empty(self.nnz)
        _csr_matmat(n, n, self.indptr, self.indices, values, self.t_indptr, self.t_indices, values[self.t_order],
                    cp, cj, cx)
        out = np.zeros((n, n))
        nnz = int(cp[-1])
        rows = np.repeat(np.arange(n), np.diff(cp))
        out[rows, cj[:nnz]] = cx[:nnz]
        return out


@dataclass
class BlockColumns:
    """A sparse (q2, levels·k) matrix whose stored entries come in whole k-wide level blocks.

    Zrest'WZ1 for a vector-valued first term: one row of k values per (row, level) pair
    that occurs.  ``diag(s) M blockdiag(m1)`` is then k² multiply-adds over those rows
    and one CSR construction on a fixed pattern, instead of two sparse products with
    their format conversions (crossed slopes on 100k rows: most of the evaluation).
    """

    values: np.ndarray  # (blocks, k)
    pattern: BlockPattern

    @classmethod
    def from_csr(cls, a: sp.csr_matrix, k: int, pattern: BlockPattern | None = None) -> BlockColumns:
        a = sp.csr_matrix(a)
        if pattern is None or not pattern.matches(a):
            pattern = BlockPattern.from_csr(a, k)
        values = np.zeros((len(pattern.block_rows), k))
        values[pattern.entry_block, pattern.entry_column] = a.data  # one entry per (block, column)
        return cls(values, pattern)

    def tocsr(self) -> sp.csr_matrix:
        """The CSR matrix these blocks were laid out from (its own entries and pattern: what sums of
        cross-products over data chunks add, each chunk with its own pattern)."""
        p = self.pattern
        indices, indptr = p.source
        return sp.csr_matrix((self.values[p.entry_block, p.entry_column], indices, indptr), shape=p.shape)

    def times_block_diag(self, m1: np.ndarray, row_scale: np.ndarray | None = None) -> sp.csr_matrix:
        k = m1.shape[1]
        pat = self.pattern
        m = m1[pat.block_levels]
        out = np.empty(self.values.shape)
        for col in range(k):
            acc = self.values[:, 0] * m[:, 0, col]
            for j in range(1, k):
                acc += self.values[:, j] * m[:, j, col]
            out[:, col] = acc
        if row_scale is not None:
            out *= row_scale[pat.block_rows][:, None]
        return sp.csr_matrix((out.ravel(), pat.indices, pat.indptr), shape=pat.shape)


# Largest LevelGram kept (its arrays, in bytes): crossed slopes on 1M rows need 270 MB
# (9.6M entry pairs); past this a dense Zrest'WZ1 or the product of the rest rows of L21
# with their transpose (memory proportional to the nonzeros of Zrest'WZ1) is used instead.
_LEVEL_GRAM_BYTES = 512 * 2**20
_PAIRS_PER_CHUNK = 1 << 18  # entry pairs generated at once while building (bounds the temporaries)


@dataclass
class LevelGram:
    """``A blockdiag(P_1, ..., P_L) A'`` for a fixed sparse A (q2, L·k) and per-level symmetric k x k P.

    In the blocked factorization A is Zrest'WZ1 and P_ℓ = M_ℓ M_ℓ' with M_ℓ = T1 L_ℓ^{-T}
    (the first term's level ℓ), so the result is the rest rows of L21 times their
    transpose without forming L21: entry (r, s) is ``Σ_ℓ Σ_ij a_rℓi P_ℓij a_sℓj``, linear
    in P.  The data-only coefficients ``a_rℓi a_sℓj (+ a_rℓj a_sℓi)`` of each pair of
    rows r <= s that share a level ℓ are computed once, as one sparse (q2², L) matrix per
    entry (i <= j) of P, and each evaluation is k(k+1)/2 sparse matrix-vector products
    (crossed slopes on 100k rows: 960k pairs, three products of ~1 ms each, against ~20 ms
    for the sparse matrix product they replace; the matrices share one index array).
    """

    parts: list[sp.csr_matrix]  # one per entry (i, j), i <= j, of P; rows s·q2 + r (r <= s: the lower triangle)
    entries: list[tuple[int, int]]
    q2: int

    @classmethod
    def from_blocks(cls, values: np.ndarray, rows: np.ndarray, levels: np.ndarray, nlevels: int,
                    q2: int) -> LevelGram | None:
        """From A's k-wide level blocks: their values (blocks, k), row and level; None where too large."""
        k = values.shape[1]
        order = np.argsort(levels, kind="stable")  # by level; rows stay ascending within a level
        rows = rows[order].astype(np.int32)  # r·q2 + s < 2³¹ (checked below)
        columns = [values[order, i] for i in range(k)]
        del order
        counts = np.bincount(levels, minlength=nlevels).astype(np.int64)
        npairs = counts * (counts + 1) // 2
        entries = [(i, j) for i in range(k) for j in range(i, k)]
        total = int(npairs.sum())
        if q2 * q2 >= 2**31 or total >= 2**31 or total * (8 * len(entries) + 4) > _LEVEL_GRAM_BYTES:
            return None
        indptr = np.concatenate([[0], np.cumsum(npairs)])  # pairs level by level (a CSC layout)
        starts = np.concatenate([[0], np.cumsum(counts)])
        shape = (q2 * q2, nlevels)

        def pairs():
            for lo, hi in _level_chunks(npairs, _PAIRS_PER_CHUNK):
                yield from _pairs_within_levels(counts, starts, indptr, lo, hi)

        targets = np.empty(total, np.int32)
        for slots, a, b in pairs():
            targets[slots] = rows[b] * q2 + rows[a]  # (s, r) with r <= s: the lower triangle
        # CSR order (a row-wise product gathers instead of scattering: 0.97 ms per product
        # against 1.42 in CSC on 100k rows) by scipy's counting sort of the pair numbers;
        # the values are then computed straight into place (no second copy of them)
        by_row = sp.csc_matrix((np.arange(total, dtype=np.int32), targets, indptr.astype(np.int32)),
                               shape=shape).tocsr()
        del targets
        place = np.empty(total, np.int32)
        place[by_row.data] = np.arange(total, dtype=np.int32)
        by_row.data = None
        data = [np.empty(total) for _ in entries]
        for slots, a, b in pairs():
            where = place[slots]
            for e, (i, j) in enumerate(entries):
                v = columns[i][a] * columns[j][b]
                if i != j:
                    v += columns[j][a] * columns[i][b]
                data[e][where] = v
        return cls([sp.csr_matrix((d, by_row.indices, by_row.indptr), shape=shape) for d in data], entries, q2)

    def gram(self, m: np.ndarray) -> np.ndarray:
        """The dense (q2, q2) ``A blockdiag(P) A'`` for ``P_ℓ = m_ℓ m_ℓ'``, m (levels, k, k)."""
        return self.subtracted_from(np.zeros((self.q2, self.q2)), m, scale=-1.0)

    def subtracted_from(self, a: np.ndarray, m: np.ndarray, scale: float = 1.0, out: np.ndarray | None = None,
                        lower_only: bool = False) -> np.ndarray:
        """``scale·(a - A blockdiag(P) A')`` for a symmetric (q2, q2) ``a``, into ``out`` (a view may do).

        The pairs give the product's lower triangle L; the result is the scaled copy of a
        minus L, and minus L' above the diagonal too unless ``lower_only``: then the entries
        above the diagonal stay ``scale·a`` (the Cholesky factorization reads the lower
        triangle only).  Two or three passes over the q2² entries (the Schur block of
        InstEval's 1128 lecturers is 10 MB; the transposed one is the slowest); building the
        symmetric product first and subtracting and scaling it afterwards took seven.
        """
        q2 = self.q2
        lower = None
        for part, (i, j) in zip(self.parts, self.entries):
            p_ij = m[:, i, 0] * m[:, j, 0]
            for col in range(1, m.shape[2]):
                p_ij += m[:, i, col] * m[:, j, col]
            product = part @ (scale * p_ij)
            lower = product if lower is None else np.add(lower, product, out=lower)
        lower = lower.reshape(q2, q2)
        out = np.multiply(a, scale, out=out)
        out -= lower
        if not lower_only:
            out -= lower.T
            diagonal = np.arange(q2)
            out[diagonal, diagonal] += np.diagonal(lower)  # the diagonal was taken twice
        return out


def _level_chunks(sizes: np.ndarray, limit: int):
    """Consecutive level ranges [lo, hi) whose ``sizes`` sum to at most ``limit`` (at least one level each)."""
    ends = np.cumsum(sizes)
    lo = 0
    while lo < len(sizes):
        base = ends[lo - 1] if lo else 0
        hi = max(lo + 1, int(np.searchsorted(ends, base + limit, side="right")))
        yield lo, hi
        lo = hi


def _pairs_within_levels(counts, starts, indptr, lo: int, hi: int):
    """Per distinct level size: (slots, a, b) for every pair a <= b of blocks within each level of [lo, hi).

    ``a``, ``b`` are positions in the level-sorted blocks; ``slots`` where the pair goes in
    the level's column (its place from ``indptr``).  Levels of one size share one
    ``triu_indices`` template: broadcasting only, no division per pair.
    """
    sizes = counts[lo:hi]
    for c in np.unique(sizes):
        if c == 0:
            continue
        level = lo + np.flatnonzero(sizes == c)
        iu, ju = np.triu_indices(int(c))
        base = starts[level][:, None]
        slots = indptr[level][:, None] + np.arange(len(iu))
        yield slots.ravel(), (base + iu).ravel(), (base + ju).ravel()
