"""Side-by-side speed on the designs of issue 14: vector-valued terms, crossed slopes, a maximal model, big data.

    .venv/bin/python benchmarks/bench_designs.py                       # the default set (1M rows and cold sample off)
    .venv/bin/python benchmarks/bench_designs.py --cases pixel,slopes20 --repeats 11
    .venv/bin/python benchmarks/bench_designs.py --cases crossed_1m --repeats 1 --cold-repeats 1
    .venv/bin/python benchmarks/bench_designs.py --cases sample_cold

Each simulated design is generated here with a fixed seed and written to one CSV that both sides
read (bayesmix in this process, lme4 through ``Rscript benchmarks/lme4_designs.R``), so both fit
identical data; grouping factors are text, everything else numeric (no contrasts to disagree on).
InstEval, grouseticks and VerbAgg are bayesmix's packaged data sets, run through lme4_bench.R as in
bench_lmer.py / bench_glmer.py.  The numbers check (criterion no worse than lme4's, β within the
project tolerance) is printed for every case.  Not a test: nothing here is asserted in tests/.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    BENCH_DIR, REPO, Case, Result, bench_bayesmix_warm, bench_lme4_warm, lme4_available, report, rscript, run_measured,
)

R_DESIGNS = BENCH_DIR / "lme4_designs.R"
DATA_DIR = Path(os.environ.get("BAYESMIX_BENCH_DATA", Path(tempfile.gettempdir()) / "bayesmix_bench_designs"))


# ---------------------------------------------------------------- data generators (fixed seeds)

def pixel() -> pd.DataFrame:
    """nlme's Pixel (102 rows, 10 dogs x 2 sides, days 0-21) exported by R; a simulated twin if nlme is missing."""
    out = DATA_DIR / "pixel_nlme.csv"
    if not out.exists() and rscript():
        subprocess.run([rscript(), "-e", "suppressMessages(library(nlme)); d <- as.data.frame(Pixel); "
                        "d$Dog <- paste0('dog', as.character(d$Dog)); d$Side <- as.character(d$Side); "
                        f"write.csv(d[, c('Dog', 'Side', 'day', 'pixel')], '{out}', row.names = FALSE)"],
                       capture_output=True)
    if out.exists():
        return pd.read_csv(out, dtype={"Dog": str, "Side": str})
    rng = np.random.default_rng(14)  # Pixel-shaped: 10 dogs x 2 sides x ~5 days, quadratic in day
    rows = []
    for dog in range(10):
        b0, b1 = rng.normal(0, 28), rng.normal(0, 2)
        for side in "LR":
            c = rng.normal(0, 16)
            for day in np.sort(rng.choice([0, 1, 2, 4, 6, 10, 14, 21], size=5 if dog % 2 else 6, replace=False)):
                mu = 1073 + b0 + c + (6.1 + b1) * day - 0.37 * day**2
                rows.append((f"dog{dog + 1}", side, day, mu + rng.normal(0, 9)))
    return pd.DataFrame(rows, columns=["Dog", "Side", "day", "pixel"])


def slopes20() -> pd.DataFrame:
    """Two correlated-slope terms on 20 crossed groups (lme4's test-isSingular.R shape), 400 rows.

    The second term's slope has no variance in truth, so the fit is singular there, as in lme4's test.
    """
    rng = np.random.default_rng(101)
    g1, g2 = np.repeat(np.arange(20), 20), np.tile(np.arange(20), 20)
    x1, x2 = rng.normal(size=400), rng.normal(size=400)
    a1 = rng.multivariate_normal([0, 0], [[1.0, 0.3], [0.3, 0.5]], size=20)
    a2 = rng.normal(0, 0.7, size=20)
    y = 1 + a1[g1, 0] + a1[g1, 1] * x1 + a2[g2] + rng.normal(size=400)
    return pd.DataFrame({"y": y, "x1": x1, "x2": x2, "group1": [f"a{i:02d}" for i in g1],
                         "group2": [f"b{i:02d}" for i in g2]})


def crossed(n: int, binary: bool = False) -> pd.DataFrame:
    """``(x|g1) + (1|g2)`` data: g1 with n/20 levels, g2 with 200 levels, crossed at random."""
    rng = np.random.default_rng(n + binary)
    n1 = n // 20
    g1, g2 = np.repeat(np.arange(n1), 20), rng.integers(0, 200, n)
    x, x2 = rng.normal(size=n), rng.normal(size=n)
    b1 = rng.multivariate_normal([0, 0], [[0.6, 0.1], [0.1, 0.2]], size=n1)
    b2 = rng.normal(0, 0.5, size=200)
    eta = 0.2 + 0.5 * x - 0.3 * x2 + b1[g1, 0] + b1[g1, 1] * x + b2[g2]
    df = pd.DataFrame({"x": x, "x2": x2, "g1": [f"s{i:06d}" for i in g1], "g2": [f"i{i:03d}" for i in g2]})
    if binary:
        df["yb"] = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
        return df.rename(columns={"g1": "subj", "g2": "item"})
    df["y"] = eta + rng.normal(size=n)
    return df


def kb07() -> pd.DataFrame:
    """kb07-shaped: 56 subjects x 32 items, three two-level within factors (±0.5) by a Latin square, 1792 rows."""
    rng = np.random.default_rng(7)
    subj, item = np.repeat(np.arange(56), 32), np.tile(np.arange(32), 56)
    cond = (subj + item) % 8
    spkr, prec, load = (cond & 1) - 0.5, ((cond >> 1) & 1) - 0.5, ((cond >> 2) & 1) - 0.5
    s = rng.multivariate_normal(np.zeros(4), _cov([300, 60, 80, 40], 0.4), size=56)
    i = rng.multivariate_normal(np.zeros(4), _cov([350, 40, 150, 20], 0.3), size=32)
    design = np.column_stack([np.ones(len(subj)), spkr, prec, load])
    rt = (2200 + 70 * spkr - 330 * prec + 80 * load + 20 * spkr * prec
          + (design * s[subj]).sum(1) + (design * i[item]).sum(1) + rng.normal(0, 650, len(subj)))
    return pd.DataFrame({"rt": rt, "spkr": spkr, "prec": prec, "load": load,
                         "subj": [f"S{v:02d}" for v in subj], "item": [f"I{v:02d}" for v in item]})


def _cov(sds, rho):
    sds = np.asarray(sds, float)
    corr = np.full((len(sds), len(sds)), rho) + (1 - rho) * np.eye(len(sds))
    return corr * np.outer(sds, sds)


# ---------------------------------------------------------------- cases

@dataclass
class Design:
    case: Case
    make: object = None  # () -> DataFrame for simulated designs; None: bayesmix's packaged data set (case.dataset)
    factors: tuple[str, ...] = ()


def _lmer(name, formula, make, factors, goal, repeats, reml=True):
    return Design(Case(name, name, formula, "lmer", reml=reml, time_goal=goal, default_repeats=repeats), make, factors)


def _glmer(name, formula, make, factors, goal, repeats):
    case = Case(name, name, formula, "glmer", family="binomial", time_goal=goal, default_repeats=repeats,
                tolerance_beta_se=2e-2)
    return Design(case, make, factors)


DESIGNS = {d.case.name: d for d in [
    _lmer("pixel", "pixel ~ day + I(day^2) + (day | Dog) + (1 | Side/Dog)", pixel, ("Dog", "Side"), 0.5, 21),
    _lmer("slopes20", "y ~ 1 + (1 + x1 | group1) + (1 + x2 | group2)", slopes20, ("group1", "group2"), 0.5, 11),
    _lmer("crossed_10k", "y ~ x + x2 + (x | g1) + (1 | g2)", lambda: crossed(10_000), ("g1", "g2"), 0.5, 5),
    _lmer("crossed_100k", "y ~ x + x2 + (x | g1) + (1 | g2)", lambda: crossed(100_000), ("g1", "g2"), 0.3, 3),
    _lmer("crossed_300k", "y ~ x + x2 + (x | g1) + (1 | g2)", lambda: crossed(300_000), ("g1", "g2"), 0.2, 1),
    _lmer("crossed_1m", "y ~ x + x2 + (x | g1) + (1 | g2)", lambda: crossed(1_000_000), ("g1", "g2"), 0.1, 1),
    _lmer("kb07", "rt ~ spkr * prec * load + (1 + spkr + prec + load | subj) + (1 + spkr + prec + load | item)",
          kb07, ("subj", "item"), 0.1, 3),
    Design(Case("insteval", "InstEval", "y ~ service * dept + (1 | s) + (1 | d)", "lmer", reml=False,
                time_goal=0.2, default_repeats=3)),
    _glmer("glmm_20k", "yb ~ x + (1 + x | subj) + (1 | item)", lambda: crossed(20_000, True), ("subj", "item"), 0.2, 3),
    _glmer("glmm_100k", "yb ~ x + (1 + x | subj) + (1 | item)", lambda: crossed(100_000, True), ("subj", "item"),
           0.2, 1),
    Design(Case("grouseticks", "grouseticks", "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)",
                "glmer", family="poisson", time_goal=0.2, default_repeats=5, tolerance_beta_se=2e-2)),
    Design(Case("verbagg", "VerbAgg", "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", "glmer",
                family="binomial", time_goal=0.2, default_repeats=3, tolerance_beta_se=2e-2)),
]}
DEFAULT = [n for n in DESIGNS if n != "crossed_1m"]
EXTRA = ["sample_cold"]  # fresh-process m.sample(), not a side-by-side case


# ---------------------------------------------------------------- running

def csv_for(design: Design) -> Path:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / f"{design.case.name}.csv"
    if not path.exists():
        design.make().to_csv(path, index=False)
    return path


def read_for_python(design: Design, path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={f: str for f in design.factors})


def fit_python(design: Design, data):
    import bayesmix as bm

    c = design.case
    if c.kind == "lmer":
        return bm.lmer(c.formula, data, REML=c.reml)
    return bm.glmer(c.formula, data, family=c.family)


def bench_python(design: Design, repeats: int) -> dict:
    if design.make is None:
        return bench_bayesmix_warm(design.case, repeats)
    data = read_for_python(design, csv_for(design))
    walls, cpus = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fit_python(design, data)
        for _ in range(repeats):
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            model = fit_python(design, data)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    c = design.case
    crit = float(model.reml_criterion) if c.kind == "lmer" and c.reml else float(-2.0 * model.loglik)
    return {"wall": walls, "cpu": cpus, "wall_median": statistics.median(walls), "cpu_median": statistics.median(cpus),
            "criterion": crit, "fixef": dict(model.fixef), "se": dict(model.se),
            "theta": [float(t) for t in model.theta], "feval": int(model.optsum.feval)}


def r_command(design: Design, path: Path, mode: list[str]) -> list[str]:
    c = design.case
    return [rscript(), str(R_DESIGNS), "--csv", str(path), "--formula", c.formula, "--reml", str(c.reml).upper(),
            "--family", c.family or "", "--factors", ",".join(design.factors), *mode]


def bench_r(design: Design, repeats: int) -> dict:
    if design.make is None:
        return bench_lme4_warm(design.case, repeats)
    proc = subprocess.run(r_command(design, csv_for(design), ["--repeats", str(repeats)]), cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"lme4_designs.R failed for {design.case.name}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def bench_cold(design: Design, repeats: int, with_r: bool) -> dict:
    """Fresh-process wall time and peak RSS of read + fit, and of read only (the baseline), per side."""
    path = csv_for(design)
    c = design.case
    fit = (f"bm.lmer({c.formula!r}, d, REML={c.reml})" if c.kind == "lmer"
           else f"bm.glmer({c.formula!r}, d, family={c.family!r})")
    read = f"import warnings; warnings.simplefilter('ignore'); import pandas as pd, bayesmix as bm; " \
           f"d = pd.read_csv({str(path)!r}, dtype={ {f: 'str' for f in design.factors} !r})"
    sides = {"bm": lambda full: [sys.executable, "-c", read + ("; " + fit if full else "")]}
    if with_r:
        sides["r"] = lambda full: r_command(design, path, ["--cold" if full else "--load-only"])
    out = {}
    for side, command in sides.items():
        runs = [run_measured(command(True)) for _ in range(repeats)]
        base = run_measured(command(False))
        out[side] = {"wall": statistics.median(r["wall"] for r in runs),
                     "maxrss_mib": statistics.median(r["maxrss_mib"] for r in runs),
                     "baseline_wall": base["wall"], "baseline_maxrss_mib": base["maxrss_mib"]}
    return out


def sample_cold(repeats: int = 1) -> None:
    """First ``m.sample()`` of sleepstudy in fresh processes, empty then warm numba cache, with its phases (bench_coldsample.py)."""
    import bench_coldsample

    bench_coldsample.main(repeats)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(DEFAULT), help=f"comma-separated: {','.join(list(DESIGNS) + EXTRA)}")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--cold-repeats", type=int, default=0, help="fresh-process runs for cold time / peak RSS")
    parser.add_argument("--no-r", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    names = [n.strip().lower() for n in args.cases.split(",") if n.strip()]
    unknown = [n for n in names if n not in DESIGNS and n not in EXTRA]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {list(DESIGNS) + EXTRA}")
    with_r = not args.no_r and lme4_available()[0]
    load_start, t_start = os.getloadavg()[0], time.perf_counter()
    results = []
    for name in names:
        if name == "sample_cold":
            continue
        design = DESIGNS[name]
        n = args.repeats or design.case.default_repeats
        res = Result(design.case)
        print(f"... {name}: bayesmix warm x{n}", flush=True)
        res.bm = bench_python(design, n)
        if with_r:
            print(f"... {name}: lme4 warm x{n}", flush=True)
            res.r = bench_r(design, n)
            print(f"    bayesmix {res.bm['wall_median']:.4f} s, lme4 {res.r['wall_median']:.4f} s, "
                  f"ratio {res.bm['wall_median'] / res.r['wall_median']:.2f}; Δcrit "
                  f"{res.bm['criterion'] - res.r['criterion']:+.2e}; feval {res.bm.get('feval', '-')} vs "
                  f"{res.r.get('feval', '-')}", flush=True)
        if args.cold_repeats > 0 and design.make is not None:
            res.cold = bench_cold(design, args.cold_repeats, with_r)
        results.append(res)
    if results:
        report(results, "designs of issue 14: bayesmix vs lme4, warm fit (median after one warm-up)",
               time.perf_counter() - t_start, load_start)
    if "sample_cold" in names:
        sample_cold(args.repeats or 1)
    if args.json:
        args.json.write_text(json.dumps([{"case": r.case.name, "formula": r.case.formula, "bayesmix": r.bm,
                                          "lme4": r.r, "cold": r.cold} for r in results], indent=1))


if __name__ == "__main__":
    main()
