# MASS::negative.binomial's family functions at fixed points, for tests/test_families.py.
# Run from the repository root: Rscript tests/reference/issues/make_families.R  (writes families_nb.json)
suppressPackageStartupMessages({library(MASS); library(jsonlite); library(lme4)})
y <- c(0, 1, 2, 5, 0, 13, 7, 3)
mu <- c(0.4, 1.3, 2.2, 3.9, 1.1, 9.5, 7.2, 0.8)
wt <- c(1, 1, 2, 1, 0.5, 1, 3, 1)
out <- list(versions = list(r = R.version.string, MASS = as.character(packageVersion("MASS"))),
            y = y, mu = mu, wt = wt, cases = list())
for (th in c(2, 0.7, 15.25)) {
  f <- negative.binomial(theta = th)
  out$cases[[length(out$cases) + 1]] <- list(
    theta = th, family = f$family, link = f$link,
    variance = f$variance(mu), dev_resids = f$dev.resids(y, mu, wt),
    aic = f$aic(y, rep(1, length(y)), mu, wt, sum(f$dev.resids(y, mu, wt))),
    mustart = local({ nobs <- length(y); weights <- wt; eval(f$initialize); mustart }),
    dnbinom_log = dnbinom(y, size = th, mu = mu, log = TRUE))
}
set.seed(20261129)
mu2 <- exp(rnorm(200, 1, 0.5))
y2 <- rnbinom(200, size = 1.5, mu = mu2)
w2 <- rep(c(1, 2), 100)
tm <- theta.ml(y2, mu2)
tw <- theta.ml(y2, mu2, weights = w2)
out$theta_ml <- list(y = y2, mu = mu2, weights = w2, theta = as.numeric(tm), se = attr(tm, "SE"),
                     theta_weighted = as.numeric(tw), se_weighted = attr(tw, "SE"))
out$family_names <- sapply(c(2, 2.05221924308852, 1.75811006816739, 0.5, 123.456789, 1e-5),
                           function(th) negative.binomial(th)$family)
out$family_names_theta <- c(2, 2.05221924308852, 1.75811006816739, 0.5, 123.456789, 1e-5)
# anova() of two glmer.nb fits (their thetas differ) on the negbin_sim data of make_issues.R
d <- read.csv("tests/reference/issues/data/negbin_sim.csv"); d$g <- factor(d$g)
m0 <- glmer.nb(y ~ 1 + (1 | g), d); m1 <- glmer.nb(y ~ x + (1 | g), d)
a <- anova(m0, m1)
out$versions$lme4 <- as.character(packageVersion("lme4"))
out$glmer_nb_anova <- list(formulas = c("y ~ 1 + (1 | g)", "y ~ x + (1 | g)"),
                           nb_theta = c(getME(m0, "glmer.nb.theta"), getME(m1, "glmer.nb.theta")),
                           loglik = as.numeric(a$logLik), theta_small = getME(m0, "theta"),
                           fixef_small = fixef(m0), npar = a$npar, chisq = a$Chisq[2], df = a$Df[2],
                           p_value = a[["Pr(>Chisq)"]][2])
# glmer.nb on Poisson counts (no overdispersion): theta.ml's iteration limit, theta at the search edge
set.seed(7)
g <- factor(sprintf("g%02d", rep(1:20, each = 10)))
x <- round(rnorm(200), 4)
y <- rpois(200, exp(1 + 0.5 * x + rnorm(20, 0, 0.4)[as.integer(g)]))
dp <- data.frame(y = y, x = x, g = g)
warns <- character()
mp <- withCallingHandlers(glmer.nb(y ~ x + (1 | g), dp),
                          warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") })
out$glmer_nb_poisson_counts <- list(y = y, x = x, g = as.character(g), nb_theta = getME(mp, "glmer.nb.theta"),
                                    loglik = as.numeric(logLik(mp)), fixef = unname(fixef(mp)),
                                    theta = unname(getME(mp, "theta")), warnings = warns, nevals = attr(mp, "nevals"))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "tests/reference/issues/families_nb.json")
