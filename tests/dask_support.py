"""What the Dask test modules share: one in-process LocalCluster per module, and data frames cut
into chosen partitions (importing this skips a module where Dask is not installed)."""

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
