"""The passes over a Dask DataFrame's partitions, each a map then a tree reduction.

Pass 1 (:func:`learn_frame`) learns the model-frame state; pass 2 (:func:`cross_products`)
compiles every partition with that state and sums its ``[Z X y]' W [Z X y]`` blocks
(``engine.lmm.CrossProducts``, built for exactly this: sums over rows) and an R factor of
X (for the rank check a pandas fit makes on all of X).  Only these sums travel to the
client; the rows stay where Dask keeps them.  Whatever scheduler is active runs the
graph: a ``dask.distributed`` client (a LocalCluster or a multi-node cluster) or Dask's
local threads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesmix.distributed.frame import (
    FrameRecord,
    ModelSpec,
    learn_partition,
    model_rows,
)
from bayesmix.distributed.model import RowMoments
from bayesmix.engine.lmm import CrossProducts
from bayesmix.spec.design import FrameState
from bayesmix.spec.model import compile_model

SPLIT_EVERY = 8  # partitions' statistics summed per task of the tree reduction


def compile_partition(rows: pd.DataFrame, spec: ModelSpec, state: FrameState, binomial_response: bool = False):
    """``compile_model`` on a partition's model rows with the whole data's frame state (checks
    against the number of rows are the client's, on all rows); ``binomial_response`` as glmer's."""
    return compile_model(spec.formula, rows, weights=spec.weights, offset=spec.offset, check_levels_vs_nobs=False,
                         frame_state=state, binomial_response=binomial_response)


# --- pass 1 ---------------------------------------------------------------------------------------


def _merge_records(*records: FrameRecord) -> FrameRecord:
    out = records[0]
    for r in records[1:]:
        out = out.merge(r)
    return out


def learn_frame(ddf, spec: ModelSpec) -> tuple[FrameRecord, float]:
    """Pass 1: the whole data's distinct factor rows, ``scale()`` moments and missing-value counts."""
    return tree_reduce(ddf, learn_partition, _merge_records, spec)


# --- pass 2 ---------------------------------------------------------------------------------------


@dataclass
class PartitionSums:
    """One partition's (or a subtree's) sufficient statistics, and the model's layout."""

    cross: CrossProducts
    r_x: np.ndarray  # R of a QR of the partition's X: R'R = X'X, and rank as X's
    fixef_names: list[str]  # every column of X, before the rank check
    terms: list  # the random-effects terms on zero rows: their levels and columns' names
    moments: RowMoments  # unweighted row moments (ICC and R² use them)


def _sums_partition(df: pd.DataFrame, spec: ModelSpec, state: FrameState) -> PartitionSums | None:
    rows, _ = model_rows(df, spec)
    if not len(rows):
        return None
    c = compile_partition(rows, spec, state)
    cross = CrossProducts.from_data(c.terms, c.X, c.y - c.offset, c.weights)
    return PartitionSums(cross, _r_factor(c.X), list(c.fixef_names), [t.subset(np.zeros(0, dtype=np.int64)) for t in c.terms],
                         RowMoments.of(c.X, [t.columns for t in c.terms], c.y, c.offset, c.weights))


def _r_factor(x: np.ndarray) -> np.ndarray:
    """R of X = QR (at most p x p), so that stacked R factors give the R of stacked rows (TSQR)."""
    return np.linalg.qr(x, mode="r") if x.shape[0] else np.zeros((0, x.shape[1]))


def _sum_partitions(*parts: PartitionSums | None) -> PartitionSums | None:
    parts = [p for p in parts if p is not None]  # empty partitions add nothing
    if not parts:
        return None
    cross = parts[0].cross
    for p in parts[1:]:
        cross = cross + p.cross
    r_x = _r_factor(np.vstack([p.r_x for p in parts]))
    moments = parts[0].moments
    for p in parts[1:]:
        moments = moments.merge(p.moments)
    return PartitionSums(cross, r_x, parts[0].fixef_names, parts[0].terms, moments)


def cross_products(ddf, spec: ModelSpec, state: FrameState) -> tuple[PartitionSums | None, float]:
    """Pass 2: ``[Z X y]' W [Z X y]`` and R of X over all rows, summed as a tree."""
    return tree_reduce(ddf, _sums_partition, _sum_partitions, spec, state)


# --- the map and the tree -------------------------------------------------------------------------

def tree_reduce(ddf, per_partition, combine, *args):
    """``combine`` over ``per_partition(partition, *args)``, SPLIT_EVERY at a time, on the active
    scheduler; returns the result and the pass's wall time in seconds."""
    return reduce_parts(ddf.to_delayed(), per_partition, combine, *args)


def reduce_parts(parts, per_partition, combine, *args):
    """:func:`tree_reduce` over a list of delayed parts (a DataFrame's partitions, or what was
    computed from them and persisted on the workers)."""
    import dask

    # keys unique to this pass: PIRLS may repeat a pass at the same point, and a key shared with an
    # earlier pass can be released by the scheduler while this one asks for it
    shared = [dask.delayed(a, pure=False) for a in args]  # sent once, not once per partition
    level = [dask.delayed(per_partition, pure=False)(part, *shared) for part in parts]
    while len(level) > 1:
        level = [dask.delayed(combine, pure=False)(*level[i:i + SPLIT_EVERY]) for i in range(0, len(level), SPLIT_EVERY)]
    start = time.perf_counter()
    (out,) = dask.compute(*level)
    return out, time.perf_counter() - start


__all__ = ["ModelSpec", "compile_partition", "cross_products", "learn_frame", "model_rows", "reduce_parts"]
