"""Timings of the posterior workflow on sleepstudy (issue 13's speed targets; not a timed test).

    PYTHONPATH=. python benchmarks/bench_workflow.py

Posterior predictive draws and the pointwise log-likelihood for 4 chains × 1000 draws × 180 rows
(targets: under 1 s each), bayesmix's NumPy routes beside PyMC's own functions on the same
posterior, and the posterior predictions for new data.  ``--rstanarm`` adds NUTS side by side:
bayesmix's ``m.sample()`` and rstanarm's ``stan_lmer`` (benchmarks/rstanarm_ess.R; needs
``apt-get install r-cran-rstanarm``), 4 × 1000 draws each, wall time and bulk ESS per second of
the fixed effects, σ and the random-effect variances.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd


def _time(label, fn, repeat=3):
    best = min(_once(fn) for _ in range(repeat))
    print(f"{label:<58s} {best:8.3f} s")
    return best


def _once(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    import pymc as pm

    import bayesmix as bm

    warnings.filterwarnings("ignore")
    sleep = bm.load_dataset("sleepstudy")
    m = bm.lmer("Reaction ~ Days + (Days | Subject)", data=sleep)
    post = m.sample(draws=1000, tune=1000, chains=4, random_seed=1, progressbar=False)
    print(f"sleepstudy (Days | Subject), {post['posterior'].sizes['chain']} x {post['posterior'].sizes['draw']} draws")
    _time("bayesmix m.sample_posterior_predictive", lambda: m.sample_posterior_predictive(copy.copy(post), random_seed=1))
    _time("bayesmix m.log_likelihood", lambda: m.log_likelihood(copy.copy(post)))
    new = pd.DataFrame({"Days": [2.5, 11.0], "Subject": ["308", "new"]})
    _time("bayesmix m.predict(post, newdata, sample_new_groups=True)",
          lambda: m.predict(post, newdata=new, sample_new_groups=True, random_seed=1))
    _time("PyMC sample_posterior_predictive (model built + compiled)",
          lambda: pm.sample_posterior_predictive(post, model=m.pymc_model, progressbar=False), repeat=1)
    _time("PyMC compute_log_likelihood (model built + compiled)",
          lambda: pm.compute_log_likelihood(post, model=m.pymc_model, extend_inferencedata=False, progressbar=False),
          repeat=1)


def ess_side_by_side():
    import arviz_stats as azs

    import bayesmix as bm

    m = bm.lmer("Reaction ~ Days + (Days | Subject)", data=bm.load_dataset("sleepstudy"))
    t0 = time.perf_counter()
    post = m.sample(draws=1000, tune=1000, chains=4, random_seed=1, progressbar=False)
    seconds = time.perf_counter() - t0
    summary = azs.summary(post, var_names=["beta", "sigma", "sd_Subject"], kind="diagnostics", round_to="none")
    ours = summary["ess_bulk"]  # rstanarm reports variances; their ESS equals that of the SDs (monotone map)
    out = subprocess.run(["Rscript", str(Path(__file__).with_name("rstanarm_ess.R"))], capture_output=True, text=True,
                         check=True)
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{'':<34s} {'bayesmix':>12s} {'rstanarm':>12s}")
    print(f"{'wall seconds (4 x 1000 draws)':<34s} {seconds:12.1f} {theirs['seconds']:12.1f}")
    pairs = zip(ours.index, theirs["ess_bulk"].items())
    for name, (rname, ress) in pairs:
        print(f"{name + ' ESS/s':<34s} {ours[name] / seconds:12.0f} {ress / theirs['seconds']:12.0f}   ({rname})")


if __name__ == "__main__":
    main()
    if "--rstanarm" in sys.argv:
        ess_side_by_side()
