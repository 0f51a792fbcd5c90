"""Side-by-side speed of bayesmix.lmer and lme4::lmer: warm fit time, cold-process time, peak memory.

    .venv/bin/python benchmarks/bench_lmer.py [--repeats N] [--cases sleepstudy,insteval] [--cold-repeats N]

Goals: sleepstudy, Penicillin, Pastes no slower than lme4; InstEval (73k rows, 4100 crossed
random effects, ML) at most half lme4's time and no more peak memory.  See benchmarks/README.md.
"""

from __future__ import annotations

from benchlib import Case, parse_args, run_all

CASES = {
    c.name: c
    for c in [
        Case("sleepstudy", "sleepstudy", "Reaction ~ Days + (Days | Subject)", "lmer", reml=True),
        Case("penicillin", "Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", "lmer", reml=True),
        Case("pastes", "Pastes", "strength ~ 1 + (1 | batch/cask)", "lmer", reml=True),
        Case("insteval", "InstEval", "y ~ service * dept + (1 | s) + (1 | d)", "lmer", reml=False,
             time_goal=0.5, memory_goal=True, default_repeats=3),
    ]
}

if __name__ == "__main__":
    run_all(parse_args(CASES, __doc__.splitlines()[0]), "lmer: bayesmix vs lme4, warm fit (median after one warm-up)")
