"""Correctness checks of the default sampler, too slow for the test suite (tests/test_bayes.py runs them as slow tests).

1. Every LMM reference case and cbpp, default settings (1000 draws x 4 chains): R-hat < 1.01,
   no divergences, posterior means of the fixed effects within 0.5 posterior SD of the fit's
   estimates.
2. Simulation-based calibration (Talts et al. 2018) on a small random-intercept LMM and a
   binomial GLMM: data drawn from the prior, posterior ranks of the true parameters must be
   uniform (chi-square over 10 bins, p > 0.01).

    .venv/bin/python benchmarks/bayes_checks.py [--cases ...] [--sbc 200] [--with-insteval]

InstEval (73k rows, 4100 random effects) is left out unless asked for: with its random
effects kept it needs hours on two cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

REFERENCE = Path(__file__).resolve().parent.parent / "tests" / "reference"
LMM_CASES = ["cake_interaction", "dyestuff2_singular", "dyestuff_ml", "dyestuff_reml", "pastes_nested",
             "penicillin_crossed", "sleepstudy_doublebar_ml", "sleepstudy_intercept_reml", "sleepstudy_slope_ml",
             "sleepstudy_slope_reml", "sleepstudy_uncorr_reml"]
GLMM_CASES = ["cbpp_binomial"]


def fit_reference(case_id: str):
    import bayesmix as bm

    case = json.loads((REFERENCE / f"{case_id}.json").read_text())
    data = bm.load_dataset(case["dataset"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if case["family"] == "gaussian":
            return bm.lmer(case["formula"], data, REML=case["REML"], weights=case["weights"])
        return bm.glmer(case["formula"], data, family=case["family"], weights=case["weights"], nAGQ=case["nAGQ"])


def check_case(case_id: str, draws: int = 1000, chains: int = 4, seed: int = 20) -> dict:
    """Default sampling of one reference case and the three criteria."""
    import bayesmix as bm

    model = fit_reference(case_id)
    t0 = time.perf_counter()
    post = model.sample(draws=draws, chains=chains, random_seed=seed, progressbar=False)
    wall = time.perf_counter() - t0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = bm.compare(model, post)
    fixed = table[table["kind"] == "fixed"]
    shift = float((np.abs(fixed["mean"] - fixed["estimate"]) / fixed["sd"]).max())
    out = {"case": case_id, "wall": wall, "max_r_hat": float(table["r_hat"].max()),
           "divergences": int(post["sample_stats"]["diverging"].sum()), "max_fixef_shift_sd": shift,
           "min_ess_bulk": float(table["ess_bulk"].min()), "route": post["posterior"].attrs["route"]}
    out["ok"] = out["max_r_hat"] < 1.01 and out["divergences"] == 0 and shift < 0.5
    return out


# --- simulation-based calibration ----------------------------------------------------------------

SBC_GROUPS, SBC_PER_GROUP = 8, 6


def _sbc_lmm_priors():
    from bayesmix import Prior

    return {"beta": Prior("Normal", mu=0.0, sigma=2.0), "sd": Prior("HalfNormal", sigma=1.0),
            "sigma": Prior("HalfNormal", sigma=1.0)}


def _sbc_glmm_priors():
    from bayesmix import Prior

    return {"beta": Prior("Normal", mu=0.0, sigma=1.0), "sd": Prior("HalfNormal", sigma=1.0)}


def _simulate(kind: str, rng) -> tuple[pd.DataFrame, dict]:
    g = np.repeat(np.arange(SBC_GROUPS), SBC_PER_GROUP)
    x = np.tile(np.linspace(-1, 1, SBC_PER_GROUP), SBC_GROUPS)
    beta = rng.normal(0.0, 2.0 if kind == "lmm" else 1.0, size=2)
    sd = abs(rng.normal(0.0, 1.0))
    b = rng.normal(0.0, sd, size=SBC_GROUPS)
    eta = beta[0] + beta[1] * x + b[g]
    data = pd.DataFrame({"x": x, "g": pd.Categorical([f"g{i}" for i in g])})
    truth = {"beta[(Intercept)]": beta[0], "beta[x]": beta[1], "sd_g[(Intercept)]": sd}
    if kind == "lmm":
        sigma = abs(rng.normal(0.0, 1.0))
        data["y"] = eta + rng.normal(0.0, sigma, size=len(eta))
        truth["sigma"] = sigma
    else:
        data["n"] = 10
        data["k"] = rng.binomial(10, 1.0 / (1.0 + np.exp(-eta)))
    return data, truth


def sbc(kind: str = "lmm", simulations: int = 200, draws: int = 400, thin: int = 4, seed: int = 7) -> dict:
    """Ranks of the true parameters among (thinned) posterior draws; uniform if the sampler is calibrated."""
    import bayesmix as bm
    from scipy.stats import chisquare

    rng = np.random.default_rng(seed)
    ranks: dict[str, list[int]] = {}
    skipped = 0
    for i in range(simulations):
        data, truth = _simulate(kind, rng)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if kind == "lmm":
                    model = bm.lmer("y ~ x + (1 | g)", data)
                    priors = _sbc_lmm_priors()
                else:
                    model = bm.glmer("cbind(k, n - k) ~ x + (1 | g)", data, family="binomial")
                    priors = _sbc_glmm_priors()
                post = model.sample(draws=draws, tune=400, chains=1, random_seed=seed + i, progressbar=False,
                                    priors=priors)
        except (bm.SamplingError, RuntimeError, np.linalg.LinAlgError):
            skipped += 1
            continue
        p = post["posterior"].isel(chain=0, draw=slice(None, None, thin))
        values = {"beta[(Intercept)]": p["beta"].values[:, 0], "beta[x]": p["beta"].values[:, 1],
                  "sd_g[(Intercept)]": p["sd_g"].values[:, 0]}
        if kind == "lmm":
            values["sigma"] = p["sigma"].values
        for name, draws_ in values.items():
            ranks.setdefault(name, []).append(int(np.sum(draws_ < truth[name])))
    n_draws = draws // thin
    bins = 10
    pvalues = {}
    for name, r in ranks.items():
        counts = np.histogram(r, bins=bins, range=(0, n_draws + 1))[0]
        pvalues[name] = float(chisquare(counts).pvalue)
    return {"kind": kind, "simulations": simulations - skipped, "skipped": skipped, "p_values": pvalues,
            "ok": all(p > 0.01 for p in pvalues.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=LMM_CASES + GLMM_CASES)
    parser.add_argument("--with-insteval", action="store_true")
    parser.add_argument("--sbc", type=int, default=200, help="simulations per SBC model (0: skip)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cases = args.cases + (["instEval_crossed_ml"] if args.with_insteval else [])
    results = {"cases": [], "sbc": []}
    for case_id in cases:
        r = check_case(case_id)
        results["cases"].append(r)
        print(f"{case_id:28s} {'ok  ' if r['ok'] else 'FAIL'} R-hat {r['max_r_hat']:.4f}  div {r['divergences']}  "
              f"max |mean-est|/sd {r['max_fixef_shift_sd']:.3f}  min ESS {r['min_ess_bulk']:.0f}  {r['wall']:.1f} s",
              flush=True)
    if args.sbc:
        for kind in ("lmm", "glmm"):
            r = sbc(kind, simulations=args.sbc)
            results["sbc"].append(r)
            print(f"SBC {kind}: {r['simulations']} simulations, rank-uniformity p-values "
                  + ", ".join(f"{k} {v:.3f}" for k, v in r["p_values"].items()) + ("  ok" if r["ok"] else "  FAIL"),
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    ok = all(r["ok"] for r in results["cases"]) and all(r["ok"] for r in results["sbc"])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
