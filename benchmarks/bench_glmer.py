"""Side-by-side speed of bayesmix.glmer and lme4::glmer (Laplace): warm fit time, cold-process time, peak memory.

    .venv/bin/python benchmarks/bench_glmer.py [--repeats N] [--cases cbpp,verbagg] [--cold-repeats N]

Goals: cbpp no slower than lme4; grouseticks and VerbAgg at most half lme4's time.
See benchmarks/README.md.
"""

from __future__ import annotations

from benchlib import Case, parse_args, run_all

CASES = {
    c.name: c
    for c in [
        Case("cbpp", "cbpp", "cbind(incidence, size - incidence) ~ period + (1 | herd)", "glmer",
             family="binomial", tolerance_beta_se=2e-2),
        Case("grouseticks", "grouseticks", "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)",
             "glmer", family="poisson", time_goal=0.5, default_repeats=5, tolerance_beta_se=2e-2),
        Case("verbagg", "VerbAgg", "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", "glmer",
             family="binomial", time_goal=0.5, default_repeats=3, tolerance_beta_se=2e-2),
    ]
}

if __name__ == "__main__":
    run_all(parse_args(CASES, __doc__.splitlines()[0]), "glmer: bayesmix vs lme4, warm fit (median after one warm-up)")
