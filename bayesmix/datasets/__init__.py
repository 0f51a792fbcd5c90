"""Data sets: lme4's own data (with R's factor levels restored) and the simulated pbDat."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

_DATA_DIR = Path(__file__).parent / "data"

# lme4's data sets, as exported by R (see tests/reference/SOURCE.md); pbDat is simulated here.
_SIMULATED = ("pbDat",)


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    shipped = sorted(p.name.removesuffix(".schema.json") for p in _DATA_DIR.glob("*.schema.json"))
    return shipped + list(_SIMULATED)


def load_dataset(name: str) -> pd.DataFrame:
    """Load a data set by name, with factors as pandas categoricals in R's level order.

    The first level of each categorical is R's reference level, so treatment contrasts
    give lme4's column names and order.  A fresh copy is returned on every call.
    """
    if name == "pbDat":
        return simulate_pbdat()
    lookup = {n.lower(): n for n in list_datasets()}
    if name not in lookup.values():
        if name.lower() in lookup:
            name = lookup[name.lower()]
        else:
            raise ValueError(f"unknown data set {name!r}; available: {', '.join(list_datasets())}")
    return _load_shipped(name).copy()


@lru_cache(maxsize=None)
def _load_shipped(name: str) -> pd.DataFrame:
    schema = json.loads((_DATA_DIR / f"{name}.schema.json").read_text())
    csv = _DATA_DIR / f"{name}.csv"
    if not csv.exists():
        csv = _DATA_DIR / f"{name}.csv.gz"
    # Factor cells are labels ("308", "2"), so read every factor column as text.
    dtypes = {c["name"]: str for c in schema["columns"] if c["type"] in ("factor", "ordered")}
    frame = pd.read_csv(csv, dtype=dtypes, keep_default_na=True, na_values=[""])
    for col in schema["columns"]:
        name_, kind = col["name"], col["type"]
        if kind in ("factor", "ordered"):
            frame[name_] = pd.Categorical(frame[name_], categories=col["levels"], ordered=kind == "ordered")
        elif kind == "logical":
            frame[name_] = frame[name_].astype(bool)
        elif kind == "integer" and not frame[name_].isna().any():
            frame[name_] = frame[name_].astype(np.int64)
    return frame


def simulate_pbdat(seed: int = 20160401) -> pd.DataFrame:
    """A simulated stand-in for pbnm's ``pbDat`` (which is not distributed anywhere we can reach).

    It has the shape the seed article uses: 100 rows, a 0/1 response ``bin``, numeric
    covariates ``x1`` and ``x2``, and a grouping factor ``g1`` with 12 levels.  The values
    are drawn from a random-intercept logistic model with parameters close to those the
    article's ``glmer(bin ~ x1 + x2 + (1|g1), family=binomial)`` printed
    (intercept 0.17, slopes 0.50 and -1.52, random-intercept SD 2.06); the estimates from
    this simulated sample differ from the article's numbers.
    """
    rng = np.random.default_rng(seed)
    n, n_groups = 100, 12
    g1 = np.concatenate([np.arange(n_groups), rng.integers(0, n_groups, n - n_groups)])
    rng.shuffle(g1)
    x1 = rng.normal(0.0, 1.0, n).round(3)
    x2 = rng.normal(0.0, 1.0, n).round(3)
    group_effect = rng.normal(0.0, 2.06, n_groups)
    eta = 0.17 + 0.50 * x1 - 1.52 * x2 + group_effect[g1]
    bin_ = rng.binomial(1, 1.0 / (1.0 + np.exp(-eta)))
    levels = [str(i + 1) for i in range(n_groups)]
    return pd.DataFrame(
        {
            "bin": bin_.astype(np.int64),
            "x1": x1,
            "x2": x2,
            "g1": pd.Categorical([levels[i] for i in g1], categories=levels),
        }
    )
