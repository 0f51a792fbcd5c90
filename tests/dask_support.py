"""What the Dask test modules share: one in-process LocalCluster per module, and data frames cut
into chosen partitions (importing this skips a module where Dask is not installed)."""

import warnings

import pandas as pd
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """Imported into a test module, every test there runs on this module's cluster."""
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as lc, \
            distributed.Client(lc) as client:
        yield client


def partitioned(df: pd.DataFrame, bounds) -> "dd.DataFrame":
    """``df`` cut at ``bounds`` into partitions; equal neighbours make empty partitions."""
    cuts = [0, *bounds, len(df)]
    parts = [dask.delayed(df.iloc[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    return dd.from_delayed(parts, meta=df.iloc[:0])


def fit_both(fit, formula: str, df: pd.DataFrame, bounds, **kwargs):
    """``fit`` (bm.lmer or bm.glmer) on ``df`` cut at ``bounds`` and in memory, as (dask fit, in-memory fit);
    both must raise the same warnings."""
    with warnings.catch_warnings(record=True) as w_mem:
        warnings.simplefilter("always")
        m = fit(formula, df, **kwargs)
    with warnings.catch_warnings(record=True) as w_dask:
        warnings.simplefilter("always")
        d = fit(formula, partitioned(df, bounds), **kwargs)
    assert sorted(str(w.message) for w in w_dask) == sorted(str(w.message) for w in w_mem)
    return d, m
