# rstanarm's stan_lmer on sleepstudy (Days | Subject): sampling time and bulk ESS of the model-level
# parameters, for benchmarks/bench_workflow.py --rstanarm.  Prints one JSON line.
suppressMessages({library(rstanarm); library(jsonlite); library(lme4); library(posterior)})
t0 <- proc.time()[["elapsed"]]
fit <- stan_lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy, chains = 4, iter = 2000, seed = 1,
                 refresh = 0, cores = 1)
elapsed <- proc.time()[["elapsed"]] - t0
draws <- as_draws_array(as.array(fit))
keep <- c("(Intercept)", "Days", "sigma", "Sigma[Subject:(Intercept),(Intercept)]", "Sigma[Subject:Days,Days]")
ess <- sapply(keep, function(p) ess_bulk(draws[, , p]))
cat(toJSON(list(seconds = elapsed, ess_bulk = as.list(ess)), auto_unbox = TRUE, digits = NA), "\n")
