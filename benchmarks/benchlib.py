"""Shared machinery of the side-by-side benchmarks: timing, subprocess peak RSS, the lme4 runner, the tables.

Not a test module: timings live here and in bench_lmer.py / bench_glmer.py, never in tests/.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
R_SCRIPT = BENCH_DIR / "lme4_bench.R"


@dataclass
class Case:
    """One benchmark model: the data set, the formula (lme4 syntax, identical on both sides) and the goals."""

    name: str
    dataset: str
    formula: str
    kind: str  # "lmer" or "glmer"
    reml: bool = True
    family: str | None = None
    time_goal: float = 1.0  # bayesmix warm time must be <= time_goal x lme4's
    memory_goal: bool = False  # also require bayesmix peak RSS <= lme4's (cold subprocess)
    default_repeats: int = 7
    tolerance_beta_se: float = 1e-3  # max |Δβ|/SE allowed by the project's rules (LMM 1e-3, GLMM 2e-2)

    def python_fit_code(self) -> str:
        """A statement fitting this case, given ``bm`` (bayesmix) and ``data`` (the data frame)."""
        if self.kind == "lmer":
            return f"bm.lmer({self.formula!r}, data, REML={self.reml})"
        return f"bm.glmer({self.formula!r}, data, family={self.family!r})"


@dataclass
class Result:
    case: Case
    bm: dict = field(default_factory=dict)
    r: dict | None = None
    cold: dict = field(default_factory=dict)


# ---------------------------------------------------------------- command line

def parse_args(cases: dict[str, Case], description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed warm fits per case after one warm-up (default: per case, "
                             + ", ".join(f"{c.name}={c.default_repeats}" for c in cases.values()) + ")")
    parser.add_argument("--cases", default=",".join(cases),
                        help=f"comma-separated subset of: {','.join(cases)} (default: all)")
    parser.add_argument("--cold-repeats", type=int, default=1,
                        help="fresh-process fits per case and side for cold time / peak RSS (median; default 1; 0 skips)")
    parser.add_argument("--no-r", action="store_true", help="time bayesmix only")
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="cap bayesmix's BLAS threads (OPENBLAS/OMP/MKL_NUM_THREADS, also for the cold "
                             "processes); default: leave as configured. R's BLAS here is single-threaded")
    parser.add_argument("--json", type=Path, help="also write all measurements to this JSON file")
    args = parser.parse_args()
    names = [n.strip().lower() for n in args.cases.split(",") if n.strip()]
    unknown = [n for n in names if n not in cases]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(cases)}")
    args.selected = [cases[n] for n in names]
    if args.blas_threads is not None:
        # Before numpy is first imported (bayesmix is imported lazily), and inherited by the cold processes.
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.blas_threads)
    return args


def repeats_for(case: Case, args) -> int:
    return args.repeats if args.repeats is not None else case.default_repeats


# ---------------------------------------------------------------- bayesmix, in process

def bench_bayesmix_warm(case: Case, repeats: int) -> dict:
    """One warm-up fit, then ``repeats`` timed fits in this process; the last fit's numbers come back too."""
    import bayesmix as bm

    data = bm.load_dataset(case.dataset)
    fit = _compile_fit(case)
    walls, cpus = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fit(bm, data)  # warm-up: imports inside bayesmix, caches, page faults
        for _ in range(repeats):
            gc.collect()  # collect earlier garbage outside the timed region (the R side does the same)
            c0, t0 = time.process_time(), time.perf_counter()
            model = fit(bm, data)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    return {
        "wall": walls, "cpu": cpus,
        "wall_median": statistics.median(walls), "cpu_median": statistics.median(cpus),
        "criterion": _criterion(model, case),
        "fixef": dict(model.fixef), "se": dict(model.se),
        "theta": [float(t) for t in model.theta],
    }


def _compile_fit(case: Case):
    code = compile(case.python_fit_code(), f"<{case.name}>", "eval")
    return lambda bm, data: eval(code, {"bm": bm, "data": data})


def _criterion(model, case: Case) -> float:
    """What lme4 optimizes: the REML criterion for REML fits, else -2 log L (ML deviance / Laplace)."""
    if case.kind == "lmer" and case.reml:
        return float(model.reml_criterion)
    return float(-2.0 * model.loglik)


# ---------------------------------------------------------------- fresh processes: cold time and peak RSS

# A fresh, small launcher runs the measured command and reads getrusage(RUSAGE_CHILDREN) for it.  The
# launcher matters: Linux carries a process's RSS high-water mark into a child at fork/exec, so a child
# spawned straight from this (large, warm) benchmark process would report this process's peak instead
# of its own.  The launcher's own peak (~10 MiB, python -S) is the floor of what it can report.
_LAUNCHER = """
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
wall = time.perf_counter() - t0
print(json.dumps({"rc": rc, "wall": wall, "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def run_measured(cmd: list[str]) -> dict:
    """Run ``cmd`` in a fresh process: its wall time and peak RSS in MiB (``ru_maxrss`` of that process).

    Rscript exec()s R in the same process, so for lme4 this is the whole R process.
    """
    proc = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, *cmd], cwd=REPO, capture_output=True, text=True)
    out = json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else {"rc": proc.returncode}
    if out["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out['rc']}):\n{proc.stderr[-2000:]}")
    return {"wall": out["wall"], "maxrss_mib": out["maxrss_kib"] / 1024.0}  # Linux reports KiB


def python_cold_command(case: Case, fit: bool = True) -> list[str]:
    statement = f"data = bm.load_dataset({case.dataset!r})"
    if fit:
        statement += f"; {case.python_fit_code()}"
    code = f"import warnings; warnings.simplefilter('ignore'); import bayesmix as bm; {statement}"
    return [sys.executable, "-c", code]


def r_cold_command(case: Case, fit: bool = True) -> list[str]:
    return [rscript(), str(R_SCRIPT), "--cold" if fit else "--load-only", case.name]


def bench_cold(case: Case, repeats: int, with_r: bool) -> dict:
    """Fresh-process wall time and peak RSS for each side, plus the load-only baseline (imports + data)."""
    out = {}
    sides = [("bm", python_cold_command)] + ([("r", r_cold_command)] if with_r else [])
    for side, command in sides:
        runs = [run_measured(command(case)) for _ in range(repeats)]
        base = run_measured(command(case, fit=False))
        out[side] = {
            "wall": statistics.median(r["wall"] for r in runs),
            "maxrss_mib": statistics.median(r["maxrss_mib"] for r in runs),
            "baseline_wall": base["wall"],
            "baseline_maxrss_mib": base["maxrss_mib"],
        }
    return out


# ---------------------------------------------------------------- lme4 via Rscript

def rscript() -> str | None:
    return shutil.which("Rscript")


def lme4_available() -> tuple[bool, str]:
    """Whether Rscript with lme4 and jsonlite can run, and why not."""
    exe = rscript()
    if exe is None:
        return False, "Rscript not found on PATH"
    probe = subprocess.run([exe, "-e", "for (p in c('lme4','jsonlite')) if (!requireNamespace(p, quietly=TRUE)) stop(p)"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return False, f"R package missing: {probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else '?'}"
    return True, ""


def bench_lme4_warm(case: Case, repeats: int) -> dict:
    """Warm timings from lme4_bench.R (one warm-up + ``repeats`` fits in one R process)."""
    proc = subprocess.run([rscript(), str(R_SCRIPT), "--repeats", str(repeats), case.name],
                          cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"lme4_bench.R failed for {case.name}:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout)[case.name]
    if result["formula"].replace(" ", "") != case.formula.replace(" ", ""):
        raise RuntimeError(f"case {case.name}: R fits {result['formula']!r}, Python fits {case.formula!r}")
    return result


# ---------------------------------------------------------------- run + report

def run_all(args, title: str) -> list[Result]:
    with_r = not args.no_r
    if with_r:
        with_r, why = lme4_available()
        if not with_r:
            print(f"[lme4 side skipped: {why}]")
    results = []
    load_start = os.getloadavg()[0]
    t_start = time.perf_counter()
    for case in args.selected:
        n = repeats_for(case, args)
        res = Result(case)
        print(f"... {case.name}: bayesmix warm x{n}", flush=True)
        res.bm = bench_bayesmix_warm(case, n)
        if with_r:
            print(f"... {case.name}: lme4 warm x{n}", flush=True)
            res.r = bench_lme4_warm(case, n)
        if args.cold_repeats > 0:
            print(f"... {case.name}: cold processes x{args.cold_repeats}", flush=True)
            res.cold = bench_cold(case, args.cold_repeats, with_r)
        results.append(res)
    elapsed = time.perf_counter() - t_start
    report(results, title, elapsed, load_start)
    if args.json:
        args.json.write_text(json.dumps([_as_json(r) for r in results], indent=1))
    return results


def _as_json(res: Result) -> dict:
    return {"case": res.case.name, "formula": res.case.formula, "bayesmix": res.bm, "lme4": res.r, "cold": res.cold}


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def report(results: list[Result], title: str, elapsed: float, load_start: float) -> None:
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"\n{title}  (machine: {os.cpu_count()} CPUs, load avg {load_start:.1f} -> {os.getloadavg()[0]:.1f}; "
          f"bayesmix BLAS threads: {threads}; wall-clock medians; total {elapsed:.0f} s)")
    rows = [("case", "bayesmix s", "lme4 s", "ratio", "goal", "result", "bm cpu s", "lme4 cpu s")]
    for res in results:
        bm_t = res.bm["wall_median"]
        r_t = res.r["wall_median"] if res.r else None
        ratio = bm_t / r_t if r_t else None
        goal = res.case.time_goal
        rows.append((res.case.name, f"{bm_t:.4f}", _fmt(r_t, ".4f"), _fmt(ratio, ".2f"),
                     f"<= {goal:g} x", _verdict(None if ratio is None else ratio <= goal),
                     f"{res.bm['cpu_median']:.4f}", _fmt(res.r["cpu_median"] if res.r else None, ".4f")))
    _print_table(rows)

    if any(res.cold for res in results):
        print("\nCold: fresh process (interpreter start + import/library + data load + one fit); peak RSS of that process")
        rows = [("case", "bm wall s", "lme4 wall s", "ratio", "bm peak MiB", "lme4 peak MiB", "mem ratio",
                 "mem goal", "bm fit ΔMiB", "lme4 fit ΔMiB")]
        for res in results:
            if not res.cold:
                continue
            b, r = res.cold["bm"], res.cold.get("r")
            mem_ratio = b["maxrss_mib"] / r["maxrss_mib"] if r else None
            mem_goal = _verdict(None if mem_ratio is None else mem_ratio <= 1.0) if res.case.memory_goal else "-"
            rows.append((res.case.name, f"{b['wall']:.2f}", _fmt(r and r["wall"], ".2f"),
                         _fmt(r and b["wall"] / r["wall"], ".2f"),
                         f"{b['maxrss_mib']:.0f}", _fmt(r and r["maxrss_mib"], ".0f"), _fmt(mem_ratio, ".2f"),
                         mem_goal, f"{b['maxrss_mib'] - b['baseline_maxrss_mib']:.0f}",
                         _fmt(r and r["maxrss_mib"] - r["baseline_maxrss_mib"], ".0f")))
        _print_table(rows)
        print("(ΔMiB = peak RSS of the fit process minus that of a process that only imports and loads the data)")

    if any(res.r for res in results):
        print("\nNumbers check against lme4's fit in this run (a speedup must not hide a wrong answer)")
        rows = [("case", "bm criterion", "lme4 criterion", "Δcrit (bm-lme4)", "max|Δβ|/SE", "tol", "result")]
        for res in results:
            if not res.r:
                continue
            d_crit = res.bm["criterion"] - res.r["criterion"]
            dbeta = _max_beta_se(res.bm, res.r)
            # "No worse than lme4": allow only round-off above lme4's optimum.
            ok = dbeta is not None and dbeta <= res.case.tolerance_beta_se and d_crit <= 1e-4
            rows.append((res.case.name, f"{res.bm['criterion']:.6f}", f"{res.r['criterion']:.6f}", f"{d_crit:+.2e}",
                         "names differ" if dbeta is None else f"{dbeta:.2e}", f"{res.case.tolerance_beta_se:g}",
                         "ok" if ok else "MISMATCH"))
            if res.r.get("warnings"):
                print(f"  lme4 warnings for {res.case.name}: {res.r['warnings']}")
        _print_table(rows)


def _max_beta_se(bm: dict, r: dict) -> float | None:
    if list(bm["fixef"]) != list(r["fixef"]):
        return None
    return max(abs(bm["fixef"][k] - r["fixef"][k]) / r["se"][k] for k in r["fixef"])


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _print_table(rows) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for j, row in enumerate(rows):
        print("  ".join(str(cell).rjust(w) if i else str(cell).ljust(w) for i, (cell, w) in enumerate(zip(row, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))
