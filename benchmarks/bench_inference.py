"""Profile confidence intervals, bayesmix vs lme4: ``confint(m, method = "profile")`` side by side.

    .venv/bin/python benchmarks/bench_inference.py [--repeats N] [--no-r] [--glmm] [--pb NSIM]

Goal (issue: inference beyond Wald): sleepstudy ``(Days | Subject)`` profile intervals in at
most lme4's time.  Each timing is the median of N runs after one warm-up; each run starts
from a fresh REML fit, so the ML refit that profiling needs is timed too, as lme4's is.
``--glmm`` adds the cbpp binomial GLMM profile (lme4 takes ~10-20 s there); ``--pb NSIM``
times a parametric-bootstrap LRT on all cores.  Rscript runs lme4 when it is on the PATH.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import bayesmix as bm

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = json.loads((ROOT / "tests" / "reference" / "inference.json").read_text())

R_CODE = r"""
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
reps <- as.integer(args[1]); glmm <- args[2] == "TRUE"
time_it <- function(make, f) {
  m <- make(); invisible(f(m))                       # warm-up
  t <- replicate(reps, { m <- make(); system.time(f(m))[["elapsed"]] })
  median(t)
}
sleep <- time_it(function() lmer(Reaction ~ Days + (Days | Subject), sleepstudy),
                 function(m) confint(m, method = "profile", oldNames = FALSE, quiet = TRUE))
out <- c(sleepstudy = sleep)
if (glmm) {
  out["cbpp"] <- time_it(function() glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial),
                         function(m) confint(m, method = "profile", oldNames = FALSE, quiet = TRUE))
}
cat(paste(names(out), out, sep = "=", collapse = "\n"), "\n")
"""


def time_python(make, run, repeats: int) -> float:
    run(make())  # warm-up (imports, caches of the process)
    times = []
    for _ in range(repeats):
        model = make()
        start = time.perf_counter()
        run(model)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_r(repeats: int, glmm: bool) -> dict[str, float]:
    if shutil.which("Rscript") is None:
        return {}
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as fh:
        fh.write(R_CODE)
        script = fh.name
    try:
        done = subprocess.run(["Rscript", script, str(repeats), "TRUE" if glmm else "FALSE"],
                              capture_output=True, text=True, timeout=1800)
    finally:
        Path(script).unlink(missing_ok=True)
    if done.returncode != 0:
        print("Rscript failed:", done.stderr.strip()[-500:], file=sys.stderr)
        return {}
    pairs = (line.strip().split("=") for line in done.stdout.splitlines() if "=" in line)
    return {k: float(v) for k, v in pairs}


def max_rel_error(ci, ref) -> float:
    expected = np.column_stack([ref["lower"], ref["upper"]])
    return float(np.max(np.abs(ci.to_numpy() - expected) / np.abs(expected)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-r", action="store_true", help="do not run lme4")
    parser.add_argument("--glmm", action="store_true", help="also the cbpp GLMM profile")
    parser.add_argument("--pb", type=int, default=0, metavar="NSIM", help="also time pb_test with NSIM simulations")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    sleep = bm.load_dataset("sleepstudy")
    results = {}
    ci = None

    def make_sleep():
        return bm.lmer("Reaction ~ Days + (Days | Subject)", sleep)

    def run_sleep(model):
        nonlocal ci
        ci = model.confint(method="profile")

    results["sleepstudy"] = time_python(make_sleep, run_sleep, args.repeats)
    errors = {"sleepstudy": max_rel_error(ci, REFERENCE["confint_profile_sleepstudy"])}

    if args.glmm:
        cbpp = bm.load_dataset("cbpp")

        def make_cbpp():
            return bm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial")

        def run_cbpp(model):
            nonlocal ci
            ci = model.confint(method="profile")

        results["cbpp"] = time_python(make_cbpp, run_cbpp, args.repeats)
        errors["cbpp"] = max_rel_error(ci, REFERENCE["confint_profile_cbpp"])

    r_times = {} if args.no_r else time_r(args.repeats, args.glmm)
    print(f"confint(method='profile'): median of {args.repeats} runs (seconds)")
    print(f"{'case':<12} {'bayesmix':>9} {'lme4':>9} {'ratio':>7} {'max rel err vs lme4 CI':>24}  goal")
    for case, ours in results.items():
        theirs = r_times.get(case)
        ratio = f"{ours / theirs:7.2f}" if theirs else "      -"
        goal = ("met" if ours <= theirs else "NOT met") if theirs else "(no lme4 timing)"
        print(f"{case:<12} {ours:9.3f} {theirs if theirs else float('nan'):9.3f} {ratio} {errors[case]:24.2e}  "
              f"{goal if case == 'sleepstudy' else ''}")

    if args.pb:
        fm0 = bm.lmer("Reaction ~ Days + (1 | Subject)", sleep)
        fm1 = make_sleep()
        for n_jobs in (1, None):
            start = time.perf_counter()
            pb = bm.pb_test(fm0, fm1, nsim=args.pb, seed=1, n_jobs=n_jobs, progress=False)
            label = "1 process" if n_jobs == 1 else "all cores"
            print(f"pb_test sleepstudy, {args.pb} simulations, {label}: {time.perf_counter() - start:.2f} s "
                  f"(p = {pb.p_value:.4g})")


if __name__ == "__main__":
    main()
