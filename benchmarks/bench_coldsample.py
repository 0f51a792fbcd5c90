"""The first ``m.sample()`` of sleepstudy in a fresh process: a fresh install (empty numba cache), then a warm cache.

    .venv/bin/python benchmarks/bench_coldsample.py                 # 1 run of each kind
    .venv/bin/python benchmarks/bench_coldsample.py --repeats 3     # medians of 3
    .venv/bin/python benchmarks/bench_coldsample.py --core-venv /tmp/bayesmix-core  # a fresh install's imports
    .venv/bin/python benchmarks/bench_designs.py --cases sample_cold  # the same, from the designs script

Issue 14's goal: the first ``sample()`` after a fresh install <= 8 s, and in a later process (numba's
on-disk cache filled) <= 2 s.  Each measurement is a new Python process that imports bayesmix, fits
``Reaction ~ Days + (Days | Subject)`` and calls ``m.sample(random_seed=1, progressbar=False)`` (4 chains
x 1000 + 1000 draws, nutpie on the compiled collapsed density) twice.  "Fresh cache" points
``NUMBA_CACHE_DIR`` at a new empty directory (what a fresh install's first call meets: no compiled
kernels); "warm cache" reuses the directory that run filled.  A second, "phased" process of each kind
does the same work step by step, to show where the first sample()'s time goes: importing numba and
nutpie (which imports ArviZ, and through it matplotlib and scipy.stats), compiling (or loading) the
log-density kernel, compiling the u-draw kernel, and the sampling itself.  Wall and CPU seconds are
both printed: on the shared 2-core machine the CPU time (all threads of the process) is the steadier
number.  Not a test: nothing here is asserted in tests/.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_PRELUDE = """
import json, time, warnings
warnings.simplefilter('ignore')
out, last = {}, [time.perf_counter(), time.process_time()]
def mark(name):
    now = [time.perf_counter(), time.process_time()]
    out[name] = [now[0] - last[0], now[1] - last[1]]
    last[:] = now
import bayesmix as bm
m = bm.lmer('Reaction ~ Days + (Days | Subject)', bm.load_dataset('sleepstudy'))
mark('import bayesmix + fit')
"""

PLAIN = _PRELUDE + """
m.sample(random_seed=1, progressbar=False)
mark('first sample()')
m.sample(random_seed=2, progressbar=False)
mark('second sample()')
print(json.dumps(out))
"""

PHASED = _PRELUDE + """
import numpy as np, numba, nutpie
mark('  import numba, nutpie (+ ArviZ)')
from bayesmix.bayes.posterior import FastPosterior
from bayesmix.bayes.pymc_model import resolve_priors
post = FastPosterior(m, resolve_priors(m, None), collapsed=True)
post.logp_and_grad(post.start())
mark('  density kernel: compile or load')
beta, _, v = post.split(post.start()[None, :])
sigma, Ls, _ = post.variance.evaluate(v)
post.kernel.draw_u_batch(beta, sigma, Ls, np.random.default_rng(0))
mark('  u-draw kernel: compile or load')
m.sample(random_seed=1, progressbar=False)
mark('  sample(): sampling and u draws')
print(json.dumps(out))
"""


PYTHON = sys.executable  # --core-venv replaces it by a venv holding bayesmix's core dependencies only


def core_venv(path: Path) -> str:
    """The python of a venv at ``path`` with ``pip install <this checkout>`` (no extras), made if missing.

    That is what a fresh install has.  The project's own .venv also holds the test and dask
    extras, and they cost the first sample() time a user would not pay: xarray imports
    dask.array when dask is installed (0.4 s, the first time a DataArray is made), and
    ArviZ's plotting module imports matplotlib.pyplot when matplotlib is.
    """
    python = path / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", str(REPO)], check=True)
    return str(python)


def run_child(code: str, cache: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    # the bayesmix of BAYESMIX_BENCH_REPO when set (a checkout of another commit, to compare), else this one
    proc = subprocess.run([PYTHON, "-c", code], env=env, cwd=os.environ.get("BAYESMIX_BENCH_REPO", REPO),
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(repeats: int = 1) -> dict:
    """{(cache state, kind): {phase: (median wall, median cpu)}}, each run with its own emptied cache."""
    runs: dict = {}
    for _ in range(repeats):
        for kind, code in (("plain", PLAIN), ("phased", PHASED)):
            with tempfile.TemporaryDirectory() as cache:
                for state in ("fresh cache", "warm cache"):
                    for phase, value in run_child(code, cache).items():
                        runs.setdefault((state, kind), {}).setdefault(phase, []).append(value)
    return {key: {phase: tuple(statistics.median(v[i] for v in values) for i in (0, 1)) for phase, values in phases.items()}
            for key, phases in runs.items()}


def report(results: dict, repeats: int, load: float) -> None:
    print(f"\nsleepstudy m.sample() (4 chains x 1000+1000, nutpie) in fresh processes, median of {repeats}; load "
          f"average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end (2 cores)\n"
          "goal: first sample() <= 8 s with an empty numba cache (fresh install), <= 2 s with a warm one")
    print(f"{'':36s}{'fresh cache wall s':>20s}{'cpu s':>8s}{'warm cache wall s':>20s}{'cpu s':>8s}")
    for kind in ("plain", "phased"):
        fresh, warm = results[("fresh cache", kind)], results[("warm cache", kind)]
        if kind == "phased":
            print("phases of the first sample() (a separate process of each kind):")
        for phase in fresh:
            (fw, fc), (ww, wc) = fresh[phase], warm[phase]
            print(f"{phase:36s}{fw:20.2f}{fc:8.2f}{ww:20.2f}{wc:8.2f}")
    first_fresh, first_warm = results[("fresh cache", "plain")]["first sample()"], results[("warm cache", "plain")]["first sample()"]
    print(f"first sample(): fresh cache {first_fresh[0]:.2f} s ({'PASS' if first_fresh[0] <= 8 else 'FAIL'} <= 8 s), "
          f"warm cache {first_warm[0]:.2f} s ({'PASS' if first_warm[0] <= 2 else 'FAIL'} <= 2 s) (wall)")


def main(repeats: int = 1) -> dict:
    load = os.getloadavg()[0]
    results = measure(repeats)
    report(results, repeats, load)
    return results


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="process pairs per kind (median)")
    parser.add_argument("--core-venv", type=Path, default=None,
                        help="measure with the python of a venv holding only the core dependencies (made at this "
                             "path by pip install of this checkout if missing): a fresh install's imports")
    args = parser.parse_args()
    if args.core_venv is not None:
        PYTHON = core_venv(args.core_venv)
    main(args.repeats)
