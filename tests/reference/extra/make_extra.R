# Extra lme4 reference cases for features the shared corpus does not cover.
#
# Simulates three small data sets (fixed seeds), fits each model with lme4 and writes
# data/NAME.csv + data/NAME.schema.json (factor levels in R's order) and cases/ID.json
# (the fields of tests/reference/SOURCE.md, plus n_dropped for the data with NAs and, for
# GLMMs, vcov_rx and minus2loglik_exact_pirls), then corpus_laplace_exact.json for the
# shared corpus's Laplace cases.  See README.md.
#
# Run from the repository root:  Rscript tests/reference/extra/make_extra.R
suppressMessages({library(lme4); library(jsonlite)})

outdir <- "tests/reference/extra"
dir.create(file.path(outdir, "data"), showWarnings = FALSE, recursive = TRUE)
dir.create(file.path(outdir, "cases"), showWarnings = FALSE, recursive = TRUE)

export_data <- function(name, df) {
  cols <- lapply(names(df), function(n) {
    x <- df[[n]]
    if (is.factor(x)) list(name = n, type = if (is.ordered(x)) "ordered" else "factor", levels = levels(x))
    else if (is.integer(x)) list(name = n, type = "integer")
    else list(name = n, type = "numeric")
  })
  out <- df
  for (n in names(out)) if (is.factor(out[[n]])) out[[n]] <- as.character(out[[n]])
  write.csv(out, file.path(outdir, "data", paste0(name, ".csv")), row.names = FALSE, na = "")
  write_json(list(name = name, nrow = nrow(df), columns = cols),
             file.path(outdir, "data", paste0(name, ".schema.json")), auto_unbox = TRUE, pretty = TRUE)
}

# lme4's Laplace deviance at (theta, beta), PIRLS converged to tolPwrss = 1e-13.
# lme4 stops PIRLS at a relative change of 1e-7; the Laplace deviance is first order
# in the error of u (log|L| depends on u through the weights), so the value lme4
# reports can be off by ~5e-4 (cbpp: reported 184.053133, converged 184.052572).
devfun_at_estimates <- function(m, theta = getME(m, "theta"), beta = fixef(m)) {
  devfun <- update(m, devFunOnly = TRUE, control = glmerControl(tolPwrss = 1e-13))
  devfun(c(theta, beta))
}

case <- function(id, dataset, df, formula, family = NULL, REML = TRUE, weights = NULL, nAGQ = 1) {
  f <- as.formula(formula)
  # Pass weights only when there are some: lme4 evaluates a `weights =` expression in
  # the data first, so a variable named like a column would silently weight every fit.
  m <- if (is.null(family)) {
    if (is.null(weights)) lmer(f, data = df, REML = REML)
    else lmer(f, data = df, REML = REML, weights = df[[weights]])
  } else {
    if (is.null(weights)) glmer(f, data = df, family = family, nAGQ = nAGQ)
    else glmer(f, data = df, family = family, nAGQ = nAGQ, weights = df[[weights]])
  }
  vc <- as.data.frame(VarCorr(m))
  vc[is.na(vc)] <- ""
  re <- lapply(ranef(m), function(d) {
    l <- lapply(seq_len(nrow(d)), function(i) as.list(d[i, , drop = FALSE])); names(l) <- rownames(d); l
  })
  fam <- if (is.null(family)) "gaussian" else paste0(family$family, "(", family$link, ")")
  crit <- if (isLMM(m)) { if (REML) "REML" else "ML" } else if (nAGQ == 1) "Laplace" else paste0("AGQ", nAGQ)
  ll <- logLik(m)
  res <- list(
    id = id, dataset = dataset, formula = formula, family = fam,
    REML = (isLMM(m) && REML), nAGQ = nAGQ, weights = if (is.null(weights)) NA else weights, criterion = crit,
    nobs = nobs(m), n_dropped = nrow(df) - nobs(m), ngrps = as.list(ngrps(m)),
    fixef_names = I(names(fixef(m))), fixef = I(unname(fixef(m))),
    se = I(unname(sqrt(diag(as.matrix(vcov(m)))))),
    vcov = unname(as.matrix(vcov(m))),
    theta = I(unname(getME(m, "theta"))), theta_names = I(names(getME(m, "theta"))),
    sigma = sigma(m),
    varcorr = vc,
    deviance = if (isLMM(m) && REML) NA else deviance(m),
    reml_criterion = if (isLMM(m) && REML) unname(REMLcrit(m)) else NA,
    minus2loglik = -2 * as.numeric(ll),
    loglik = as.numeric(ll), df = attr(ll, "df"),
    aic = AIC(m), bic = BIC(m), df_resid = df.residual(m),
    scaled_resid_quantiles = I(unname(quantile(residuals(m, type = "pearson", scaled = TRUE)))),
    singular = isSingular(m),
    ranef = re,
    fitted_head = I(unname(head(fitted(m), 10))),
    summary_text = paste(capture.output(print(summary(m))), collapse = "\n"),
    r_version = R.version.string,
    # GLMMs: the Cholesky-based covariance, vcov(m, use.hessian = FALSE), and lme4's
    # Laplace objective at its own estimates with PIRLS converged tightly (see
    # devfun_at_estimates): the value lme4 reports carries PIRLS's tolPwrss = 1e-7 error.
    vcov_rx = if (isGLMM(m)) unname(as.matrix(suppressWarnings(vcov(m, use.hessian = FALSE)))) else NA,
    minus2loglik_exact_pirls = if (isGLMM(m) && nAGQ == 1) devfun_at_estimates(m) else NA,
    lme4_version = as.character(packageVersion("lme4"))
  )
  write_json(res, file.path(outdir, "cases", paste0(id, ".json")), auto_unbox = TRUE, digits = NA, pretty = TRUE, na = "null")
  cat(id, "done; singular:", isSingular(m), "\n")
}

# --- LMM features ---------------------------------------------------------------------------
set.seed(20240501)
n <- 360
ng <- 15
g <- factor(sprintf("G%02d", c(1:ng, sample(ng, n - ng, replace = TRUE))))
h <- factor(sample(c("h1", "h2", "h3", "h4"), n, replace = TRUE))
x <- round(runif(n, 0.5, 5), 3)
# level orders that are not alphabetical, so a reader must restore R's order
f <- factor(sample(c("lo", "mid", "hi"), n, replace = TRUE), levels = c("lo", "mid", "hi"))
o <- factor(sample(c("none", "low", "medium", "high"), n, replace = TRUE),
            levels = c("none", "low", "medium", "high"), ordered = TRUE)
w <- round(runif(n, 0.5, 3), 2)
off <- round(rnorm(n, 0, 0.5), 3)
Sigma_f <- matrix(c(1.0, 0.5, 0.3,
                    0.5, 1.2, 0.6,
                    0.3, 0.6, 1.5), 3)
b_f <- matrix(rnorm(ng * 3), ng) %*% chol(Sigma_f)
b_gh <- matrix(rnorm(ng * 4, 0, 0.7), ng)
gi <- as.integer(g); hi_ <- as.integer(h); fi <- as.integer(f); oi <- as.integer(o)
y <- 2 + 0.8 * x - 0.05 * x^2 + c(0, 0.5, -0.4)[fi] + c(0, 0.3, 0.8, 1.0)[oi] + 0.3 * x * (fi == 3) +
  b_f[cbind(gi, fi)] + b_gh[cbind(gi, hi_)] + off + rnorm(n, 0, 0.8) / sqrt(w)
feat <- data.frame(y = round(y, 4), x = x, f = f, o = o, g = g, h = h, w = w, off = off)
export_data("lmm_features", feat)

case("lmm_weights", "lmm_features", feat, "y ~ x + (1 | g)", weights = "w")
case("lmm_weights_ml", "lmm_features", feat, "y ~ x + (1 | g)", weights = "w", REML = FALSE)
case("lmm_offset", "lmm_features", feat, "y ~ x + offset(off) + (1 | g)")
case("lmm_factor_slopes", "lmm_features", feat, "y ~ f + (0 + f | g)")
case("lmm_ordered_factor", "lmm_features", feat, "y ~ o + (1 | g)")
case("lmm_numeric_by_factor", "lmm_features", feat, "y ~ x * f + (1 | g)")
case("lmm_interaction_group", "lmm_features", feat, "y ~ x + (1 | g) + (1 | g:h)")
case("lmm_transforms", "lmm_features", feat, "y ~ log(x) + I(x^2) + (1 | g)")

# the same data with missing values: in the response, a covariate, the grouping factor,
# and in a column the model does not use (which must not drop rows)
miss <- feat
miss$y[c(3, 17, 50, 51, 200)] <- NA
miss$x[c(8, 120, 300)] <- NA
miss$g[c(17, 90)] <- NA
miss$unused <- round(rnorm(n), 3)
miss$unused[c(1, 2, 4)] <- NA
export_data("lmm_missing", miss)
case("lmm_missing_ml", "lmm_missing", miss, "y ~ x + f + (1 | g)", REML = FALSE)

# --- GLMMs with other families ----------------------------------------------------------
set.seed(20240502)
n <- 400
ng <- 20
g <- factor(sprintf("S%02d", c(1:ng, sample(ng, n - ng, replace = TRUE))))
x <- round(rnorm(n), 3)
expo <- round(runif(n, 1, 10), 2)
gi <- as.integer(g)
b <- rnorm(ng, 0, 0.4)
mu_gamma <- exp(1 + 0.5 * x + b[gi])
y_gamma <- rgamma(n, shape = 4, rate = 4 / mu_gamma)
mu_gauss <- exp(1.5 + 0.3 * x + b[gi])
y_gauss <- mu_gauss + rnorm(n, 0, 0.5)
# inverse Gaussian draws (Michael, Schucany & Haas 1976), mean mu and shape lambda
rinvgauss_msh <- function(mu, lambda) {
  nu <- rnorm(length(mu))^2
  x1 <- mu + mu^2 * nu / (2 * lambda) - mu / (2 * lambda) * sqrt(4 * mu * lambda * nu + mu^2 * nu^2)
  ifelse(runif(length(mu)) <= mu / (mu + x1), x1, mu^2 / x1)
}
mu_ig <- exp(0.5 + 0.3 * x + b[gi])
y_ig <- rinvgauss_msh(mu_ig, 8)
y_pois <- rpois(n, expo * exp(-1 + 0.4 * x + b[gi]))
glmm <- data.frame(g = g, x = x, expo = expo, y_gamma = round(y_gamma, 5), y_gauss = round(y_gauss, 5),
                   y_ig = round(y_ig, 5), y_pois = y_pois)
stopifnot(all(glmm$y_gauss > 0), all(glmm$y_ig > 0))
export_data("glmm_extra", glmm)

case("glmm_gamma_log", "glmm_extra", glmm, "y_gamma ~ x + (1 | g)", family = Gamma(link = "log"))
case("glmm_gaussian_log", "glmm_extra", glmm, "y_gauss ~ x + (1 | g)", family = gaussian(link = "log"))
case("glmm_inverse_gaussian_log", "glmm_extra", glmm, "y_ig ~ x + (1 | g)", family = inverse.gaussian(link = "log"))
case("glmm_poisson_offset", "glmm_extra", glmm, "y_pois ~ x + offset(log(expo)) + (1 | g)", family = poisson())

# --- the shared corpus's Laplace cases: lme4's objective at the corpus estimates ---------
# (data and fits exactly as /work/shared/lme4-reference/public.R makes them)
corpus_exact <- list()
corpus_case <- function(id, formula, data, family, weights = NULL) {
  ref <- fromJSON(file.path("tests/reference", paste0(id, ".json")))
  m <- if (is.null(weights)) glmer(as.formula(formula), data, family = family)
       else glmer(as.formula(formula), data, family = family, weights = data[[weights]])
  stopifnot(isTRUE(all.equal(unname(fixef(m)), ref$fixef, tolerance = 1e-4)))  # the same fit as the corpus
  corpus_exact[[id]] <<- list(minus2loglik_reported = ref$minus2loglik,
                              minus2loglik_exact_pirls = devfun_at_estimates(m, ref$theta, ref$fixef))
  cat(id, "exact PIRLS objective done\n")
}
ss <- sleepstudy
ss$aboveAve <- ifelse(ss$Reaction > 288.7, 1, 0)
corpus_case("sleepstudy_aboveave_binomial", "aboveAve ~ Days + (1 | Subject)", ss, binomial)
corpus_case("cbpp_binomial", "cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, binomial)
corpus_case("cbpp_binomial_prop_weights", "incidence / size ~ period + (1 | herd)", cbpp, binomial, weights = "size")
corpus_case("grouseticks_poisson", "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)", grouseticks, poisson)
corpus_case("verbagg_binomial_crossed", "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", VerbAgg, binomial)
write_json(corpus_exact, file.path(outdir, "corpus_laplace_exact.json"), auto_unbox = TRUE, digits = NA, pretty = TRUE)
