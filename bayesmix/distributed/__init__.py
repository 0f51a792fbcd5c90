"""Mixed models on data larger than memory: ``lmer`` on a Dask DataFrame, rows left where Dask keeps them.

``bm.lmer(formula, data=ddf)`` comes here when ``ddf`` is a ``dask.dataframe.DataFrame``.
Dask (``pip install bayesmix[dask]``) is imported only then: ``import bayesmix`` does not
load it.  :mod:`.frame` learns the model-frame state of all partitions, :mod:`.passes`
maps and tree-reduces over them, :mod:`.model` is the compiled model without rows and
:mod:`.lmm` fits and returns the result (:mod:`.glmm` and :mod:`.glmer_result` for ``glmer``: PIRLS, one
pass per iteration over persisted partitions); :mod:`.quantiles` gives the summary's exact quantiles of
the scaled residuals.
"""

from __future__ import annotations


def is_dask_collection(data) -> bool:
    """A Dask DataFrame, recognised without importing Dask (a pandas fit must not pay for it)."""
    return type(data).__module__.split(".")[0] in ("dask", "dask_expr") and hasattr(data, "to_delayed")


def lmer(formula: str, data, REML: bool = True, weights=None, offset=None, *, data_name: str = "ddf"):
    """``bayesmix.lmer`` on a Dask DataFrame (see :func:`bayesmix.distributed.lmm.lmer`)."""
    from bayesmix.distributed.lmm import lmer as fit

    return fit(formula, data, REML=REML, weights=weights, offset=offset, data_name=data_name)


def glmer(formula: str, data, family, weights=None, offset=None, nAGQ: int = 1, *, data_name: str = "ddf"):
    """``bayesmix.glmer`` on a Dask DataFrame (see :func:`bayesmix.distributed.glmer_result.glmer`)."""
    from bayesmix.distributed.glmer_result import glmer as fit

    return fit(formula, data, family, weights=weights, offset=offset, nAGQ=nAGQ, data_name=data_name)
