# lme4's conditional SDs of the random effects (as.data.frame(ranef(m, condVar = TRUE)):
# grpvar, term, grp, condval, condsd = broom.mixed's tidy(m, effects = "ran_vals") columns
# group, term, level, estimate, std.error).  Run from the repository root:
#   Rscript tests/reference/issues/make_ranef_condvar.R
suppressMessages({library(lme4); library(jsonlite)})
one <- function(id, m) {
  r <- as.data.frame(ranef(m, condVar = TRUE))
  list(id = id, formula = deparse(formula(m)), fixef = unname(fixef(m)), theta = unname(getME(m, "theta")),
       group = as.character(r$grpvar), term = as.character(r$term), level = as.character(r$grp),
       estimate = r$condval, std_error = r$condsd)
}
out <- list(
  versions = list(R = R.version.string, lme4 = as.character(packageVersion("lme4"))),
  sleepstudy_slope = one("sleepstudy_slope", lmer(Reaction ~ Days + (Days | Subject), sleepstudy)),
  penicillin_crossed = one("penicillin_crossed", lmer(diameter ~ 1 + (1 | plate) + (1 | sample), Penicillin)),
  cbpp_binomial = one("cbpp_binomial", glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp,
                                             family = binomial))
)
write_json(out, "tests/reference/issues/ranef_condvar.json", digits = NA, auto_unbox = TRUE, pretty = TRUE)
