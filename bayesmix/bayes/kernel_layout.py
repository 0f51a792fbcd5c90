"""Where the LMM kernel of :mod:`bayesmix.bayes.fastdens` finds things: the columns' blocks and levels, and the
structure of A = Λ'MΛ/σ² + I (its envelope and the index lists its loops run over), found once per model.

Pure NumPy, so that it can be read and tested without numba.
"""

from __future__ import annotations

import numpy as np


def dense_ztz(lik) -> np.ndarray:
    """Z'WZ of a single term from its per-level blocks (CollapsedLmm keeps only those then)."""
    ix = lik.blocks.index[0]
    out = np.zeros((lik.q, lik.q))
    for lvl in range(ix.shape[0]):
        out[np.ix_(ix[lvl], ix[lvl])] = lik.ztz_blocks[lvl]
    return out


def columns(blk_nlev, blk_k) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of u (kernel order): its block, the first column of its level, its position within the level."""
    blk = np.concatenate([np.full(n * k, b) for b, (n, k) in enumerate(zip(blk_nlev, blk_k))]).astype(np.int64)
    pos = np.concatenate([np.tile(np.arange(k), n) for n, k in zip(blk_nlev, blk_k)]).astype(np.int64)
    first = np.arange(len(pos), dtype=np.int64) - pos
    return blk, first, pos


def envelope(ztz, blk_start, blk_nlev, blk_k) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A = Λ'MΛ/σ² + I's structure for the kernel: ``first`` (per row, its first structurally non-zero
    column: the envelope the Cholesky factor keeps) and three index lists as (ptr (3, q+1), idx).

    Λ mixes columns within a level only, so A's pattern is M's closed over levels.  The lists:
    0. per row, the columns of A's pattern, ascending (M, MΛ, A and the entries of A⁻¹ the gradient reads);
    1. per column j, the rows i > j whose envelope reaches j (the factor's column j);
    2. per column j, the rows i >= j where W = C⁻¹ can be non-zero: W[i, j] sums C[i, m] W[m, j] over
       first[i] <= m < i, so row i joins as soon as it reaches back to a row already there.
    """
    level_of = np.empty(ztz.shape[0], dtype=np.int64)
    level_first = []
    for start, nlev, k in zip(blk_start, blk_nlev, blk_k):
        for lvl in range(nlev):
            level_of[start + lvl * k : start + (lvl + 1) * k] = len(level_first)
            level_first.append(start + lvl * k)
    nlevels = len(level_first)
    touches = np.zeros((nlevels, nlevels), dtype=bool)
    rows, cols = np.nonzero(ztz)
    touches[level_of[rows], level_of[cols]] = True
    touches |= np.eye(nlevels, dtype=bool)
    first = np.array(level_first, dtype=np.int64)[np.argmax(touches, axis=1)][level_of]
    q = len(first)
    pattern = [np.flatnonzero(row) for row in touches[level_of][:, level_of]]
    factor_columns = [j + 1 + np.flatnonzero(first[j + 1 :] <= j) for j in range(q)]
    inverse_columns = []
    for j in range(q):
        reach, last = [j], j
        for i in range(j + 1, q):
            if first[i] <= last:  # the rows already reached are all below i: their maximum is the last
                reach.append(i)
                last = i
        inverse_columns.append(np.array(reach, dtype=np.int64))
    lists = (pattern, factor_columns, inverse_columns)
    ends = np.cumsum([0] + [len(x) for lst in lists for x in lst])  # list l's row j: ends[l*q + j : l*q + j + 2]
    ptr = np.stack([ends[lst * q : lst * q + q + 1] for lst in range(3)]).astype(np.int64)
    idx = np.concatenate([x for lst in lists for x in lst]).astype(np.int64)
    return first, np.ascontiguousarray(ptr), idx
