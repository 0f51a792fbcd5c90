# performance's ICC and Nakagawa R2 of glmer.nb on negbin_sim (the log-link lognormal approximation with the
# negative binomial's variance function).  Run from the repository root:
#   Rscript tests/reference/issues/make_icc_r2_negbin.R
suppressMessages({library(lme4); library(performance); library(jsonlite)})
d <- read.csv("tests/reference/issues/data/negbin_sim.csv")
d$g <- factor(d$g, levels = sprintf("N%02d", 1:30))
m <- glmer.nb(y ~ x + (1 | g), d)
quiet <- function(expr) suppressWarnings(expr)
out <- list(versions = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                            performance = as.character(packageVersion("performance")),
                            insight = as.character(packageVersion("insight"))),
            formula = "y ~ x + (1 | g)", nb_theta = getME(m, "glmer.nb.theta"), fixef = unname(fixef(m)),
            icc = as.list(unlist(quiet(icc(m)))), r2_nakagawa = as.list(unlist(quiet(r2_nakagawa(m)))),
            get_variance = as.list(unlist(quiet(insight::get_variance(m)))),
            null_model_fixef = unname(fixef(quiet(insight::null_model(m)))))
write_json(out, "tests/reference/issues/icc_r2_negbin.json", digits = NA, auto_unbox = TRUE, pretty = TRUE)
