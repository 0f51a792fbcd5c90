# rstanarm's PSIS-LOO for sleepstudy's two random-effects structures (issue 13 item 3), with
# rstanarm's default priors.  Run from the repository root (about a minute):
#   Rscript tests/reference/issues/make_rstanarm_loo.R
suppressMessages({library(rstanarm); library(loo); library(jsonlite); library(lme4)})
one <- function(formula) {
  fit <- stan_lmer(formula, data = sleepstudy, chains = 4, iter = 2000, seed = 1, refresh = 0, cores = 2)
  l <- loo(fit)
  list(formula = deparse(formula), elpd_loo = l$estimates["elpd_loo", "Estimate"],
       elpd_loo_se = l$estimates["elpd_loo", "SE"], p_loo = l$estimates["p_loo", "Estimate"],
       pareto_k_over_0.7 = sum(l$diagnostics$pareto_k > 0.7), loo = l)
}
slope <- one(Reaction ~ Days + (Days | Subject))
intercept <- one(Reaction ~ Days + (1 | Subject))
cmp <- loo_compare(slope$loo, intercept$loo)
slope$loo <- NULL; intercept$loo <- NULL
out <- list(versions = list(R = R.version.string, rstanarm = as.character(packageVersion("rstanarm")),
                            loo = as.character(packageVersion("loo"))),
            sleepstudy_slope = slope, sleepstudy_intercept = intercept,
            elpd_diff_intercept_vs_slope = unname(cmp[2, "elpd_diff"]), se_diff = unname(cmp[2, "se_diff"]))
write_json(out, "tests/reference/issues/rstanarm_loo.json", digits = NA, auto_unbox = TRUE, pretty = TRUE)
