"""lmer on a Dask DataFrame: a crossed-slopes data set on disk as parquet, fitted on a LocalCluster.

Issue 15's benchmark: ``y ~ x + x2 + (x | g1) + (1 | g2)`` with g1 about 100,000 levels and
g2 200, 20 million rows by default (``--rows`` runs it smaller), fitted on a LocalCluster of
``--workers`` worker processes with ``--memory-limit`` each.  Reports the wall time, the time
of each pass over the data (pass 1: the model-frame state; pass 2: the cross-products) and
of the optimizer on the client, the client's peak memory (its process also runs the
scheduler) and each worker's peak memory.  ``--check-rows N`` (default 2,000,000, at most
``--rows``) fits the first N rows both ways, in memory and on the cluster, and prints the
largest relative differences.

    .venv/bin/python benchmarks/bench_dask.py --rows 2000000 --dir /tmp/crossed
    .venv/bin/python benchmarks/bench_dask.py --rows 20000000 --dir /data/crossed --check-rows 2000000

Not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

FORMULA = "y ~ x + x2 + (x | g1) + (1 | g2)"


def generate(directory: Path, rows: int, g1: int, g2: int, rows_per_file: int, seed: int = 15) -> None:
    """Write the data set as parquet files of ``rows_per_file`` rows (skipped when already there)."""
    marker = directory / "_complete.json"
    spec = {"rows": rows, "g1": g1, "g2": g2, "rows_per_file": rows_per_file, "seed": seed}
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("part-*.parquet"):
        old.unlink()
    rng = np.random.default_rng(seed)
    b1 = rng.normal(scale=[1.0, 0.3], size=(g1, 2))  # intercept and slope of x per g1 level
    b1[:, 1] += 0.5 * b1[:, 0] * 0.3  # correlated
    b2 = rng.normal(scale=0.5, size=g2)
    for i, start in enumerate(range(0, rows, rows_per_file)):
        n = min(rows_per_file, rows - start)
        c1 = rng.integers(0, g1, n)
        c2 = rng.integers(0, g2, n)
        x = rng.normal(size=n)
        x2 = rng.normal(size=n)
        y = 2.0 + 0.7 * x - 0.3 * x2 + b1[c1, 0] + b1[c1, 1] * x + b2[c2] + rng.normal(size=n)
        frame = pd.DataFrame({"y": y, "x": x, "x2": x2, "g1": c1.astype(np.int32), "g2": c2.astype(np.int32)})
        frame.to_parquet(directory / f"part-{i:05d}.parquet", index=False)
    marker.write_text(json.dumps(spec))


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _import_bayesmix() -> None:
    import bayesmix.distributed.lmm  # noqa: F401


def fit_on_cluster(files, workers: int, memory_limit: str, threads: int):
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    import bayesmix as bm

    with LocalCluster(n_workers=workers, threads_per_worker=threads, memory_limit=memory_limit,
                      processes=True, dashboard_address=":0") as cluster, Client(cluster) as client:
        ddf = dd.read_parquet([str(f) for f in files])
        client.run(_import_bayesmix)  # workers' one-time imports are not a pass over the data
        start = time.perf_counter()
        fit = bm.lmer(FORMULA, ddf)
        seconds = time.perf_counter() - start
        worker_peaks = client.run(peak_rss_mb)
    return fit, seconds, sorted(worker_peaks.values())


def compare(dask_fit, memory_fit) -> dict:
    def rel(a, b):
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))

    return {
        "theta": rel(dask_fit.theta_values, memory_fit.theta_values),
        "beta": rel(dask_fit.beta_values, memory_fit.beta_values),
        "se": rel(dask_fit.se, memory_fit.se),
        "sigma": rel(dask_fit.sigma, memory_fit.sigma),
        "criterion": rel(dask_fit.criterion_value, memory_fit.criterion_value),
        "b (max |diff| / max |b|)": float(np.max(np.abs(dask_fit.b - memory_fit.b)) / np.max(np.abs(memory_fit.b))),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--g1", type=int, default=100_000)
    ap.add_argument("--g2", type=int, default=200)
    ap.add_argument("--rows-per-file", type=int, default=1_000_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/bayesmix-crossed"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads-per-worker", type=int, default=1)
    ap.add_argument("--memory-limit", default="4GB")
    ap.add_argument("--check-rows", type=int, default=2_000_000, help="0 skips the in-memory comparison")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    generate(args.dir, args.rows, args.g1, args.g2, args.rows_per_file)
    files = sorted(args.dir.glob("part-*.parquet"))
    print(f"data: {args.rows:,} rows, g1 {args.g1:,} levels, g2 {args.g2} levels, {len(files)} parquet files "
          f"({time.perf_counter() - t0:.1f} s to generate or find)")

    fit, seconds, worker_peaks = fit_on_cluster(files, args.workers, args.memory_limit, args.threads_per_worker)
    passes = fit.pass_seconds
    report = {
        "rows": args.rows, "g1": args.g1, "g2": args.g2, "files": len(files), "workers": args.workers,
        "memory_limit": args.memory_limit, "fit_seconds": seconds, "pass_seconds": passes,
        "client_seconds": seconds - sum(passes.values()), "client_peak_mb": peak_rss_mb(),
        "worker_peak_mb": worker_peaks, "theta": fit.theta_values.tolist(), "beta": fit.beta_values.tolist(),
        "sigma": fit.sigma,
    }
    print(f"fit on {args.workers} workers: {seconds:.1f} s  (pass 1, model frame: {passes['learn_frame']:.1f} s; "
          f"pass 2, cross-products: {passes['cross_products']:.1f} s; optimizer and result on the client: "
          f"{report['client_seconds']:.1f} s)")
    print(f"peak memory: client (and scheduler) {report['client_peak_mb']:.0f} MB; workers "
          + ", ".join(f"{m:.0f} MB" for m in worker_peaks))
    print(fit.summary())

    check = min(args.check_rows, args.rows)
    if check:
        import bayesmix as bm

        subset_files = files[: max(1, -(-check // args.rows_per_file))]
        frame = pd.concat([pd.read_parquet(f) for f in subset_files], ignore_index=True).iloc[:check]
        t = time.perf_counter()
        memory_fit = bm.lmer(FORMULA, frame)
        memory_seconds = time.perf_counter() - t
        sub_dir = args.dir / f"check-{check}"
        sub_dir.mkdir(exist_ok=True)
        for i, start in enumerate(range(0, check, args.rows_per_file)):
            frame.iloc[start:start + args.rows_per_file].to_parquet(sub_dir / f"part-{i:05d}.parquet", index=False)
        dask_fit, dask_seconds, _ = fit_on_cluster(sorted(sub_dir.glob("part-*.parquet")), args.workers,
                                                   args.memory_limit, args.threads_per_worker)
        diffs = compare(dask_fit, memory_fit)
        report.update(check_rows=check, check_memory_seconds=memory_seconds, check_dask_seconds=dask_seconds,
                      check_relative_differences=diffs)
        print(f"check on the first {check:,} rows: in memory {memory_seconds:.1f} s, on the cluster {dask_seconds:.1f} s")
        print("largest relative differences, cluster vs in memory: "
              + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
