"""Timings of the posterior workflow on sleepstudy (issue 13's speed targets; not a timed test).

    PYTHONPATH=. python benchmarks/bench_workflow.py

Posterior predictive draws and the pointwise log-likelihood for 4 chains × 1000 draws × 180 rows
(targets: under 1 s each), bayesmix's NumPy routes beside PyMC's own functions on the same
posterior, and the posterior predictions for new data.
"""

from __future__ import annotations

import copy
import time
import warnings

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


if __name__ == "__main__":
    main()
