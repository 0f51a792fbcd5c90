"""glmer on a Dask DataFrame: PIRLS over persisted partitions, timed per pass, checked against the in-memory fit.

A logistic GLMM ``y ~ x + (1 | g)`` (``--groups`` levels, ``--rows`` rows) is fitted in memory
and on a LocalCluster of ``--workers`` worker processes (the rows cut into ``--partitions``
partitions).  Each PIRLS iteration is one pass over the partitions, so the cluster's time is
(passes) x (time per pass): the report gives both, the pass 1/2 times, and the largest
relative differences from the in-memory fit.

    .venv/bin/python benchmarks/bench_dask_glmer.py --rows 1000000 --groups 5000

Not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

FORMULA = "y ~ x + (1 | g)"


def data(rows: int, groups: int, seed: int = 15) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, rows)
    x = rng.normal(size=rows)
    eta = -0.5 + 0.8 * x + rng.normal(scale=0.7, size=groups)[g]
    return pd.DataFrame({"g": g.astype(np.int32), "x": x, "y": (rng.uniform(size=rows) < 1 / (1 + np.exp(-eta))) * 1.0})


def _import_bayesmix() -> None:
    import bayesmix.distributed.glmer_result  # noqa: F401


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--groups", type=int, default=5_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="4GB")
    args = ap.parse_args(argv)

    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    import bayesmix as bm

    frame = data(args.rows, args.groups)
    t = time.perf_counter()
    memory_fit = bm.glmer(FORMULA, frame)
    memory_seconds = time.perf_counter() - t
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, memory_limit=args.memory_limit,
                      processes=True, dashboard_address=":0") as cluster, Client(cluster) as client:
        client.run(_import_bayesmix)
        ddf = client.persist(dd.from_pandas(frame, npartitions=args.partitions))  # the rows live on the workers
        t = time.perf_counter()
        fit = bm.glmer(FORMULA, ddf)
        dask_seconds = time.perf_counter() - t
    passes = fit.pass_seconds
    per_pass = passes["pirls"] / passes["pirls_passes"]
    print(f"{args.rows:,} rows, {args.groups:,} groups, {args.partitions} partitions, {args.workers} workers")
    print(f"in memory {memory_seconds:.1f} s; on the cluster {dask_seconds:.1f} s: pass 1 (model frame) "
          f"{passes['learn_frame']:.2f} s, pass 2 (designs persisted) {passes['designs']:.2f} s, "
          f"{passes['pirls_passes']} PIRLS passes {passes['pirls']:.1f} s ({1000 * per_pass:.0f} ms each)")

    def rel(a, b):
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))

    print("largest relative differences, cluster vs in memory: "
          + ", ".join(f"{k} {v:.1e}" for k, v in {
              "theta": rel(fit.theta_values, memory_fit.theta_values), "beta": rel(fit.beta_values, memory_fit.beta_values),
              "se": rel(fit.se, memory_fit.se), "criterion": rel(fit.criterion_value, memory_fit.criterion_value),
              "b": float(np.max(np.abs(fit.b - memory_fit.b)) / np.max(np.abs(memory_fit.b)))}.items()))


if __name__ == "__main__":
    main()
