"""Effective samples per second: bayesmix's default sampler against bambi's, same formula, data and draws.

ESS/s = smallest bulk ESS over all parameters (fixed effects, SDs, correlations, residual
SD, every random effect) / wall time of building and sampling the model (compilation
included; imports excluded).  bambi 0.21 pins formulae < 0.7, so it runs from its own
virtual environment (benchmarks/.venv-bambi, created on first use) in a subprocess.

Also measured, for the record of why the default is what it is: the LMM sampled with its
random effects kept (``collapse=False``) and the PyMC model compiled for nutpie
(``--alternatives``), and the default route on the NumPy log density instead of
bayesmix.bayes.fastdens's numba kernels (``--numpy-density``).  The kernels' one-off compilation
(numba's disk cache) is timed with ``--cold-compile``.  Machine load (1-minute load
average) is printed before and after each case.

    .venv/bin/python benchmarks/bench_bayes.py [--draws 1000] [--chains 4] [--json out.json] [--no-bambi]
        [--numpy-density] [--cold-compile] [--alternatives [kept] [pymc]] [--cases sleepstudy cbpp insteval]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
BAMBI_VENV = BENCH_DIR / ".venv-bambi"
BAMBI_PYTHON = "/root/.pyenv/versions/3.12.1/bin/python"

CASES = {
    "sleepstudy": dict(dataset="sleepstudy", kind="lmer", formula="Reaction ~ Days + (Days | Subject)",
                       bambi_formula="Reaction ~ Days + (Days | Subject)", bambi_family="gaussian",
                       factors=["Subject"]),
    "cbpp": dict(dataset="cbpp", kind="glmer", formula="cbind(incidence, size - incidence) ~ period + (1 | herd)",
                 bambi_formula="p(incidence, size) ~ period + (1 | herd)", bambi_family="binomial",
                 factors=["herd", "period"]),
    # 73k rows, 4100 random effects: the blocked collapsed route against the random effects kept
    # (run with --no-bambi --alternatives kept; bambi would take hours)
    "insteval": dict(dataset="InstEval", kind="lmer", formula="y ~ service * dept + (1 | s) + (1 | d)",
                     bambi_formula="y ~ service * dept + (1 | s) + (1 | d)", bambi_family="gaussian",
                     factors=["s", "d", "service", "dept"]),
}

BAMBI_SCRIPT = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import bambi as bmb, pandas as pd, arviz_stats as azs
args = json.loads(sys.argv[1])
data = pd.read_csv(args["csv"])
for col in args["factors"]:
    data[col] = pd.Categorical(data[col].astype(str), categories=args["levels"][col])
t0 = time.perf_counter()
model = bmb.Model(args["formula"], data, family=args["family"])
idata = model.fit(draws=args["draws"], tune=args["tune"], chains=args["chains"], random_seed=args["seed"],
                  progressbar=False)
wall = time.perf_counter() - t0
post = idata["posterior"] if hasattr(idata, "children") else idata.posterior
names = [v for v in post.data_vars if "__obs__" not in post[v].dims]
summ = azs.summary(idata, var_names=names, kind="diagnostics", round_to="none")
stats = idata["sample_stats"] if hasattr(idata, "children") else idata.sample_stats
print(json.dumps({"wall": wall, "min_ess_bulk": float(summ["ess_bulk"].min()), "max_r_hat": float(summ["r_hat"].max()),
                  "divergences": int(stats["diverging"].sum()), "worst": str(summ["ess_bulk"].idxmin()),
                  "sampler": str(post.attrs.get("inference_library", "pymc"))}))
"""


def ensure_bambi_venv() -> Path:
    python = BAMBI_VENV / "bin" / "python"
    if not python.exists():
        print("creating", BAMBI_VENV, "(pip install bambi) ...", flush=True)
        subprocess.run([BAMBI_PYTHON, "-m", "venv", str(BAMBI_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "bambi"], check=True)
    return python


def run_bambi(case: dict, draws, tune, chains, seed) -> dict:
    import bayesmix as bm

    python = ensure_bambi_venv()
    data = bm.load_dataset(case["dataset"])
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as handle:
        data.to_csv(handle.name, index=False)
    levels = {col: [str(v) for v in data[col].cat.categories] for col in case["factors"]}
    args = dict(csv=handle.name, formula=case["bambi_formula"], family=case["bambi_family"], factors=case["factors"],
                levels=levels, draws=draws, tune=tune, chains=chains, seed=seed)
    proc = subprocess.run([str(python), "-c", BAMBI_SCRIPT, json.dumps(args)], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fit(case: dict):
    import bayesmix as bm

    data = bm.load_dataset(case["dataset"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if case["kind"] == "lmer":
            return bm.lmer(case["formula"], data)
        return bm.glmer(case["formula"], data, family="binomial")


def ess_report(model, post, wall) -> dict:
    import arviz_stats as azs

    from bayesmix.bayes.sampling import posterior_var_names

    names = [n for n in posterior_var_names(model) if n != "theta"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summ = azs.summary(post, var_names=names, kind="diagnostics", round_to="none")
    return {"wall": wall, "min_ess_bulk": float(summ["ess_bulk"].min()), "max_r_hat": float(summ["r_hat"].max()),
            "divergences": int(post["sample_stats"]["diverging"].sum()), "worst": str(summ["ess_bulk"].idxmin()),
            "route": post["posterior"].attrs["route"]}


def run_bayesmix(model, draws, tune, chains, seed, **options) -> dict:
    t0 = time.perf_counter()
    post = model.sample(draws=draws, tune=tune, chains=chains, random_seed=seed, progressbar=False, **options)
    return ess_report(model, post, time.perf_counter() - t0)


def run_bayesmix_numpy(model, draws, tune, chains, seed) -> dict:
    """The default route with the NumPy log density (the numba kernels switched off)."""
    import bayesmix.bayes.sampling as bayes

    compiled = bayes._compiled_kernel
    bayes._compiled_kernel = lambda post: None
    try:
        return run_bayesmix(model, draws, tune, chains, seed)
    finally:
        bayes._compiled_kernel = compiled


COLD_SCRIPT = r"""
import time, warnings
warnings.simplefilter("ignore")
import bayesmix as bm
from bayesmix.bayes.posterior import FastPosterior
from bayesmix.bayes.pymc_model import resolve_priors
models = [bm.lmer("Reaction ~ Days + (Days | Subject)", bm.load_dataset("sleepstudy")),
          bm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", bm.load_dataset("cbpp"), family="binomial")]
for model in models:
    t0 = time.perf_counter()
    post = FastPosterior(model, resolve_priors(model, None), True)
    post.logp_and_grad(post.start())
    print(f"{'LMM' if model.is_lmm else 'GLMM'} kernel first call {time.perf_counter() - t0:.2f} s")
"""


def cold_compile() -> None:
    """The kernels' first call with an empty numba cache (compilation), then with it filled (loading)."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("cold (empty cache)", "warm (cache filled)"):
            out = subprocess.run([sys.executable, "-c", COLD_SCRIPT], env=env, capture_output=True, text=True)
            print(label + ":", " | ".join(out.stdout.strip().splitlines()) or out.stderr[-500:])


def load() -> str:
    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cases", nargs="*", default=["sleepstudy", "cbpp"], choices=list(CASES))
    parser.add_argument("--no-bambi", action="store_true")
    parser.add_argument("--alternatives", nargs="*", choices=["kept", "pymc"],
                        help="also time the routes that are not the default: random effects kept (collapse=False), "
                             "the PyMC model compiled for nutpie; no names: both")
    parser.add_argument("--numpy-density", action="store_true", help="also time the default route on the NumPy density")
    parser.add_argument("--cold-compile", action="store_true", help="time the kernels' compilation (empty numba cache)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.cold_compile:
        cold_compile()
    import bayesmix  # noqa: F401  (imports are not timed)
    import nutpie  # noqa: F401

    results = {}
    for name in args.cases:
        case = CASES[name]
        model = fit(case)
        print(f"{name}: {load()}", flush=True)
        rows = {"bayesmix (default)": run_bayesmix(model, args.draws, args.tune, args.chains, args.seed)}
        if args.numpy_density:
            rows["bayesmix default route, NumPy density"] = run_bayesmix_numpy(
                model, args.draws, args.tune, args.chains, args.seed)
        alternatives = (args.alternatives or ["kept", "pymc"]) if args.alternatives is not None else []
        if "kept" in alternatives:
            rows["bayesmix random effects kept (collapse=False)"] = run_bayesmix(
                model, args.draws, args.tune, args.chains, args.seed, collapse=False)
        if "pymc" in alternatives:
            rows["PyMC model compiled for nutpie"] = run_pymc_nutpie(model, args)
        if not args.no_bambi:
            rows["bambi (default sampler)"] = run_bambi(case, args.draws, args.tune, args.chains, args.seed)
        results[name] = rows
        report(name, rows)
        print(f"{name}: {load()}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def run_pymc_nutpie(model, args) -> dict:
    """The PyMC model (result.pymc_model) through pymc.sample with nutpie: compile + sample."""
    import pymc as pm

    from bayesmix.bayes.sampling import posterior_var_names
    from bayesmix.bayes.pymc_model import build_pymc_model

    t0 = time.perf_counter()
    pymc_model = build_pymc_model(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trace = pm.sample(draws=args.draws, tune=args.tune, chains=args.chains, random_seed=args.seed, progressbar=False,
                          nuts_sampler="nutpie", model=pymc_model, var_names=posterior_var_names(model),
                          compute_convergence_checks=False)
    wall = time.perf_counter() - t0
    trace["posterior"].attrs["route"] = "nutpie on the compiled PyMC model"
    return ess_report(model, trace, wall)


def report(name: str, rows: dict) -> None:
    print(f"\n{name}: smallest bulk ESS / wall seconds (build + compile + sample)")
    base = rows.get("bambi (default sampler)", {}).get("min_ess_bulk")
    base_rate = base / rows["bambi (default sampler)"]["wall"] if base else None
    for label, r in rows.items():
        if "error" in r:
            print(f"  {label:48s} failed: {r['error'][-300:]}")
            continue
        rate = r["min_ess_bulk"] / r["wall"]
        ratio = f"  {rate / base_rate:5.1f}x bambi" if base_rate else ""
        print(f"  {label:48s} wall {r['wall']:6.1f} s  min ESS {r['min_ess_bulk']:6.0f}  ESS/s {rate:7.1f}"
              f"  R-hat {r['max_r_hat']:.3f}  div {r['divergences']}{ratio}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
