# lme4 / performance / plm reference numbers for bayesmix issues 11, 12, 13 and 16.
#
# Writes, under tests/reference/issues/:
#   data/NAME.csv + data/NAME.schema.json   simulated data (fixed seeds), as extra/make_extra.R
#   formulas.json    issue 11: poly(), scale(), interaction column names, bare bars, I(), ||
#   hard_fits.json   issue 12: tiny/odd GLMMs, glmer(family = gaussian), unidentified models,
#                    constant responses (errors, warnings, convergence messages)
#   icc_r2.json      issue 13: performance::icc and performance::r2_nakagawa
#   negbin.json      issue 13: glmer.nb and glmer(family = MASS::negative.binomial(theta))
#   hausman.json     issue 16: plm within / between / random fits and plm::phtest
# See README.md in this folder for every field.
#
# Run from the repository root:  Rscript tests/reference/issues/make_issues.R
suppressMessages({library(lme4); library(jsonlite)})

outdir <- "tests/reference/issues"
dir.create(file.path(outdir, "data"), showWarnings = FALSE, recursive = TRUE)

pkg_version <- function(p) tryCatch(utils::packageDescription(p)$Version, error = function(e) NA)
versions <- list(
  r = R.version.string, lme4 = pkg_version("lme4"), Matrix = pkg_version("Matrix"),
  jsonlite = pkg_version("jsonlite"), MASS = pkg_version("MASS"),
  performance = pkg_version("performance"), insight = pkg_version("insight"), plm = pkg_version("plm")
)

save_json <- function(x, name) {
  write_json(x, file.path(outdir, name), auto_unbox = TRUE, digits = NA, pretty = TRUE, na = "null",
             null = "null")
  cat("wrote", name, "\n")
}

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

# Evaluate `expr`, collecting every warning and message (muffled) and an error, if any.
capture <- function(expr) {
  warns <- character(); msgs <- character()
  val <- withCallingHandlers(
    tryCatch(expr, error = function(e) structure(list(msg = conditionMessage(e)), class = "caught_error")),
    warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") },
    message = function(m) { msgs <<- c(msgs, sub("\n$", "", conditionMessage(m))); invokeRestart("muffleMessage") })
  err <- if (inherits(val, "caught_error")) val$msg else NA
  list(value = if (inherits(val, "caught_error")) NULL else val,
       warnings = I(warns), messages = I(msgs), error = err)
}

safe <- function(expr) tryCatch(expr, error = function(e) NA)
# JSON has no Inf/NaN: write non-finite numbers as the strings "Inf", "-Inf", "NaN" (NA stays null)
num <- function(x) { x <- unname(as.numeric(x)); if (length(x) == 1 && !is.na(x) && !is.finite(x)) as.character(x)
                     else if (length(x) == 1 && is.nan(x)) "NaN" else x }
varcorr_df <- function(m) { vc <- as.data.frame(VarCorr(m)); vc[is.na(vc)] <- ""; vc }
print_formula <- function(f) paste(trimws(capture.output(print(f, showEnv = FALSE))), collapse = " ")

# lme4's convergence diagnostics stored in the fit
conv_info <- function(m) list(
  lme4_messages = I(as.character(unlist(m@optinfo$conv$lme4$messages))),
  lme4_codes = I(as.numeric(unlist(m@optinfo$conv$lme4$code))),
  optimizer = m@optinfo$optimizer,
  optimizer_conv = m@optinfo$conv$opt,
  optimizer_message = if (is.null(m@optinfo$message)) NA else m@optinfo$message,
  optinfo_warnings = I(as.character(unlist(m@optinfo$warnings)))
)

# The fields of tests/reference/SOURCE.md (as extra/make_extra.R's case()) for a fitted model.
case_fields <- function(m, id, dataset, formula, df) {
  vc <- varcorr_df(m)
  re <- lapply(ranef(m), function(d) {
    l <- lapply(seq_len(nrow(d)), function(i) as.list(d[i, , drop = FALSE])); names(l) <- rownames(d); l
  })
  REML <- isLMM(m) && isREML(m)
  nAGQ <- if (isGLMM(m)) unname(m@devcomp$dims["nAGQ"]) else 1
  fam <- family(m)
  famstr <- if (isLMM(m)) "gaussian" else paste0(fam$family, "(", fam$link, ")")
  crit <- if (isLMM(m)) { if (REML) "REML" else "ML" } else if (nAGQ == 1) "Laplace" else paste0("AGQ", nAGQ)
  ll <- logLik(m)
  exact <- if (isGLMM(m) && nAGQ == 1) safe(suppressWarnings({
    devfun <- glmer(formula(m), data = df, family = fam, devFunOnly = TRUE,
                    control = glmerControl(tolPwrss = 1e-13))
    devfun(c(getME(m, "theta"), fixef(m)))
  })) else NA
  list(
    id = id, dataset = dataset, formula = formula, formula_lme4 = paste(deparse(formula(m)), collapse = " "),
    family = famstr, REML = REML, nAGQ = nAGQ, criterion = crit,
    nobs = nobs(m), ngrps = as.list(ngrps(m)),
    fixef_names = I(names(fixef(m))), fixef = I(unname(fixef(m))),
    se = I(safe(unname(sqrt(diag(as.matrix(vcov(m))))))),
    vcov = safe(unname(as.matrix(vcov(m)))),
    theta = I(unname(getME(m, "theta"))), theta_names = I(names(getME(m, "theta"))),
    sigma = sigma(m),
    varcorr = vc,
    deviance = if (REML) NA else num(deviance(m)),
    reml_criterion = if (REML) num(REMLcrit(m)) else NA,
    minus2loglik = num(-2 * as.numeric(ll)),
    loglik = num(ll), df = attr(ll, "df"),
    aic = num(AIC(m)), bic = num(BIC(m)), df_resid = df.residual(m),
    scaled_resid_quantiles = I(safe(unname(quantile(residuals(m, type = "pearson", scaled = TRUE))))),
    singular = isSingular(m),
    ranef = re,
    fitted_head = I(unname(head(fitted(m), 10))),
    summary_text = safe(paste(capture.output(print(summary(m))), collapse = "\n")),
    vcov_rx = if (isGLMM(m)) safe(unname(as.matrix(suppressWarnings(vcov(m, use.hessian = FALSE))))) else NA,
    minus2loglik_exact_pirls = exact,
    convergence = conv_info(m)
  )
}

# Fit with warnings/messages captured; return the case fields (or the error).
fit_case <- function(id, dataset, formula, df, fitter) {
  t0 <- proc.time()[["elapsed"]]
  cap <- capture(fitter())
  t1 <- proc.time()[["elapsed"]]
  post <- if (is.null(cap$value)) NULL else capture(case_fields(cap$value, id, dataset, formula, df))
  out <- if (is.null(cap$value)) list(id = id, dataset = dataset, formula = formula, fit_ok = FALSE)
         else c(post$value, list(fit_ok = TRUE))
  out$fit_warnings <- cap$warnings
  out$fit_messages <- cap$messages
  out$fit_error <- cap$error
  # warnings/messages/errors raised while extracting the fields (vcov, summary, ...), not by the fit
  out$extract_warnings <- if (is.null(post)) I(character()) else post$warnings
  out$extract_messages <- if (is.null(post)) I(character()) else post$messages
  out$extract_error <- if (is.null(post)) NA else post$error
  out$lme4_fit_seconds <- t1 - t0
  cat(id, if (isTRUE(out$fit_ok)) "fitted" else paste("ERROR:", cap$error), "\n")
  attr(out, "model") <- cap$value
  out
}
strip <- function(x) { attr(x, "model") <- NULL; x }

ss <- sleepstudy

###########################################################################################
# 1. formulas.json (issue 11)
###########################################################################################
formulas <- list(versions = versions)

# --- poly() ---
pnew <- data.frame(Days = c(2.5, 11), Subject = c("308", "309"))
prow <- ss[c(1, 5, 10), ]
poly_entry <- function(id, formula) {
  fc <- fit_case(id, "sleepstudy", formula, ss, function() lmer(as.formula(formula), ss))
  m <- attr(fc, "model")
  list(fit = strip(fc),
       predict_rows_1_5_10 = I(unname(predict(m, newdata = prow))),
       predict_rows_1_5_10_re_form_NA = I(unname(predict(m, newdata = prow, re.form = NA))),
       predict_new = I(unname(predict(m, newdata = pnew))),
       predict_new_re_form_NA = I(unname(predict(m, newdata = pnew, re.form = NA))))
}
p2 <- poly(ss$Days, 2)
formulas$poly_orthogonal <- c(
  poly_entry("poly_orthogonal", "Reaction ~ poly(Days, 2) + (1 | Subject)"),
  list(poly_coefs_alpha = I(attr(p2, "coefs")$alpha), poly_coefs_norm2 = I(attr(p2, "coefs")$norm2),
       poly_basis_days_0_to_9 = unname(unclass(p2)[1:10, ]),  # rows 1..10 of sleepstudy are Days 0..9
       poly_basis_new_days = unname(unclass(predict(p2, c(2.5, 11))))))
formulas$poly_raw <- c(
  poly_entry("poly_raw", "Reaction ~ poly(Days, 2, raw = TRUE) + (1 | Subject)"),
  list(poly_basis_new_days = unname(unclass(predict(poly(ss$Days, 2, raw = TRUE), c(2.5, 11))))))
formulas$predict_newdata <- list(
  rows_of_sleepstudy = I(c(1L, 5L, 10L)), rows_days = I(prow$Days), rows_subject = I(as.character(prow$Subject)),
  new_days = I(pnew$Days), new_subject = I(pnew$Subject))

# --- scale() ---
{
  fc <- fit_case("scale_days", "sleepstudy", "Reaction ~ scale(Days) + (1 | Subject)", ss,
                 function() lmer(Reaction ~ scale(Days) + (1 | Subject), ss))
  m <- attr(fc, "model")
  sc <- scale(ss$Days)
  formulas$scale <- list(
    fit = strip(fc),
    scale_center = attr(sc, "scaled:center"), scale_scale = attr(sc, "scaled:scale"),
    predict_rows_1_3 = I(unname(predict(m, newdata = ss[1:3, ]))),
    predict_rows_1_3_re_form_NA = I(unname(predict(m, newdata = ss[1:3, ], re.form = NA))),
    predict_new = I(unname(predict(m, newdata = pnew))),
    predict_new_re_form_NA = I(unname(predict(m, newdata = pnew, re.form = NA))))
}

# --- interaction column naming (cake: recipe factor A/B/C, temp numeric, temperature ordered) ---
mm_names <- function(f) I(colnames(model.matrix(as.formula(f), cake)))
mm_forms <- c("~ temp * recipe", "~ recipe * temp", "~ temperature:recipe", "~ recipe:temperature",
              "~ temp:recipe", "~ recipe:temp", "~ recipe + temp:recipe", "~ recipe * temperature",
              "~ temperature * recipe", "~ temperature")
formulas$model_matrix_colnames <- setNames(lapply(mm_forms, mm_names), mm_forms)
formulas$contr_poly_6 <- unname(contr.poly(6))  # the contrasts of the ordered factor `temperature`
formulas$cake_interaction <- strip(fit_case("cake_temp_x_recipe", "cake",
  "angle ~ temp * recipe + (1 | recipe:replicate)", cake,
  function() lmer(angle ~ temp * recipe + (1 | recipe:replicate), cake)))

# --- bare bars: lme4 reads `y ~ a | g` as `y ~ (a | g)` (`|` binds loosest) ---
bar_entry <- function(id, dataset, formula, df) {
  f <- as.formula(formula)
  fc <- fit_case(id, dataset, formula, df, function() lmer(f, df))
  list(fit = strip(fc),
       formula_printed = print_formula(formula(attr(fc, "model"))),
       nobars = paste(deparse(nobars(f)), collapse = " "),
       findbars = I(vapply(findbars(f), function(b) paste(deparse(b), collapse = " "), "")))
}
formulas$bare_bar_dyestuff <- bar_entry("bare_bar_dyestuff", "Dyestuff", "Yield ~ 1 | Batch", Dyestuff)
formulas$bare_bar_sleepstudy <- bar_entry("bare_bar_sleepstudy", "sleepstudy", "Reaction ~ Days + 1 | Subject", ss)

# --- I() with parentheses ---
formulas$I_parentheses <- strip(fit_case("I_parentheses", "sleepstudy",
  "Reaction ~ I(Days * (Days + 1)) + (1 | Subject)", ss,
  function() lmer(Reaction ~ I(Days * (Days + 1)) + (1 | Subject), ss)))

# --- || expansions ---
dbl_entry <- function(id, dataset, formula, df) {
  f <- as.formula(formula)
  fc <- fit_case(id, dataset, formula, df, function() lmer(f, df))
  m <- attr(fc, "model")
  list(fit = strip(fc),
       expandDoubleVerts = paste(deparse(expandDoubleVerts(f)), collapse = " "),
       formula_printed = print_formula(formula(m)),
       theta_names = I(names(getME(m, "theta"))),
       varcorr = varcorr_df(m),
       cnms = lapply(getME(m, "cnms"), I))
}
formulas$doublebar_numeric <- dbl_entry("doublebar_days", "sleepstudy", "Reaction ~ Days + (Days || Subject)", ss)
formulas$doublebar_factor <- dbl_entry("doublebar_factor", "cake", "angle ~ recipe + (recipe || replicate)", cake)
save_json(formulas, "formulas.json")

###########################################################################################
# 2. hard_fits.json (issue 12)
###########################################################################################
hard <- list(versions = versions)

pois15 <- data.frame(
  y = c(206, 206, 211, 354, 335, 332, 196, 197, 216, 36, 31, 46, 399, 368, 329),
  g = factor(rep(paste0("g", 1:5), each = 3)),
  t = rep(c(1, 1.5, 2), 5),          # exposure for the offset(log(t)) fit
  y_zero = rep(0, 15),               # constant responses
  y_one = rep(1, 15),
  y_const = rep(5, 15))
export_data("pois15", pois15)

hard$poisson15 <- strip(fit_case("poisson15", "pois15", "y ~ 1 + (1 | g)", pois15,
  function() glmer(y ~ 1 + (1 | g), pois15, family = poisson)))
hard$poisson15_gaussian_log <- strip(fit_case("poisson15_gaussian_log", "pois15", "y ~ 1 + (1 | g)", pois15,
  function() glmer(y ~ 1 + (1 | g), pois15, family = gaussian(link = "log"))))
hard$poisson15_offset <- strip(fit_case("poisson15_offset", "pois15", "y ~ 1 + offset(log(t)) + (1 | g)", pois15,
  function() glmer(y ~ 1 + offset(log(t)) + (1 | g), pois15, family = poisson)))

# glmer(family = gaussian) is a deprecated shortcut to lmer (REML)
{
  fc <- fit_case("glmer_gaussian_sleepstudy", "sleepstudy", "Reaction ~ Days + (Days | Subject)", ss,
                 function() glmer(Reaction ~ Days + (Days | Subject), ss, family = gaussian))
  mg <- attr(fc, "model")
  lm_fc <- fit_case("lmer_reml_sleepstudy", "sleepstudy", "Reaction ~ Days + (Days | Subject)", ss,
                    function() lmer(Reaction ~ Days + (Days | Subject), ss))
  ml <- attr(lm_fc, "model")
  hard$glmer_gaussian <- list(
    glmer_result = strip(fc), glmer_result_class = class(mg)[1], glmer_result_isREML = isREML(mg),
    lmer_reml = strip(lm_fc),
    equal_to_lmer_reml = isTRUE(all.equal(fixef(mg), fixef(ml))) && isTRUE(all.equal(getME(mg, "theta"), getME(ml, "theta"))) &&
      isTRUE(all.equal(REMLcrit(mg), REMLcrit(ml))))
}

# --- unidentified models ---
set.seed(20240612)
ng <- 30; per <- 5
g <- factor(sprintf("G%02d", rep(1:ng, each = per)))
gi <- as.integer(g)
x <- round(rnorm(ng), 3)[gi]                  # constant within group
x1 <- round(rnorm(ng * per), 3)               # vary within group
x2 <- round(runif(ng * per, -1, 1), 3)
b0 <- rnorm(ng, 0, 1); bx <- rnorm(ng, 0, 0.5)
y <- 1 + 0.5 * x + b0[gi] + bx[gi] * x + rnorm(ng * per, 0, 0.7)
c0 <- rnorm(ng, 0, 0.5); c1 <- rnorm(ng, 0, 0.3); c2 <- rnorm(ng, 0, 0.3)
yp <- rpois(ng * per, exp(1 + 0.3 * x1 - 0.2 * x2 + c0[gi] + c1[gi] * x1 + c2[gi] * x2))
unident <- data.frame(y = round(y, 4), yp = yp, x = x, x1 = x1, x2 = x2, g = g, g2 = g)
export_data("unident", unident)

hard$unident_slope_constant_within_group <- strip(fit_case("unident_slope_const", "unident", "y ~ x + (x | g)", unident,
  function() lmer(y ~ x + (x | g), unident)))
hard$unident_fixed_equals_group <- strip(fit_case("unident_fixed_is_group", "unident", "y ~ g + (1 | g)", unident,
  function() lmer(y ~ g + (1 | g), unident)))
hard$unident_fixed_equals_group_ml <- strip(fit_case("unident_fixed_is_group_ml", "unident", "y ~ g + (1 | g)", unident,
  function() lmer(y ~ g + (1 | g), unident, REML = FALSE)))
hard$unident_identical_groupings <- strip(fit_case("unident_identical_groupings", "unident", "y ~ 1 + (1 | g) + (1 | g2)", unident,
  function() lmer(y ~ 1 + (1 | g) + (1 | g2), unident)))
hard$unident_poisson_identical_groupings <- strip(fit_case("unident_poisson_identical_groupings", "unident",
  "yp ~ 1 + (1 + x1 | g) + (1 + x2 | g2)", unident,
  function() glmer(yp ~ 1 + (1 + x1 | g) + (1 + x2 | g2), unident, family = poisson)))
# the same Poisson model with one grouping factor, for comparison
hard$poisson_single_grouping <- strip(fit_case("poisson_single_grouping", "unident",
  "yp ~ 1 + (1 + x1 + x2 | g)", unident,
  function() glmer(yp ~ 1 + (1 + x1 + x2 | g), unident, family = poisson)))

# --- constant responses ---
hard$constant_poisson_all_zero <- strip(fit_case("constant_poisson_all_zero", "pois15", "y_zero ~ 1 + (1 | g)", pois15,
  function() glmer(y_zero ~ 1 + (1 | g), pois15, family = poisson)))
hard$constant_binomial_all_one <- strip(fit_case("constant_binomial_all_one", "pois15", "y_one ~ 1 + (1 | g)", pois15,
  function() glmer(y_one ~ 1 + (1 | g), pois15, family = binomial)))
hard$constant_lmer <- strip(fit_case("constant_lmer", "pois15", "y_const ~ 1 + (1 | g)", pois15,
  function() lmer(y_const ~ 1 + (1 | g), pois15)))
# lmerControl has no check.response.not.const (lmer fits a constant response); glmerControl does:
# what glmer does when the check is switched off
hard$constant_poisson_all_zero_check_ignored <- strip(fit_case("constant_poisson_all_zero_check_ignored", "pois15",
  "y_zero ~ 1 + (1 | g)", pois15,
  function() glmer(y_zero ~ 1 + (1 | g), pois15, family = poisson,
                   control = glmerControl(check.response.not.const = "ignore"))))
hard$constant_binomial_all_one_check_ignored <- strip(fit_case("constant_binomial_all_one_check_ignored", "pois15",
  "y_one ~ 1 + (1 | g)", pois15,
  function() glmer(y_one ~ 1 + (1 | g), pois15, family = binomial,
                   control = glmerControl(check.response.not.const = "ignore"))))
save_json(hard, "hard_fits.json")

###########################################################################################
# 3. icc_r2.json (issue 13)
###########################################################################################
icc_r2 <- list(versions = versions)
have_perf <- suppressWarnings(requireNamespace("performance", quietly = TRUE))
if (have_perf) {
  perf_entry <- function(id, dataset, formula, df, fitter) {
    fc <- fit_case(id, dataset, formula, df, fitter)
    m <- attr(fc, "model")
    ic <- capture(performance::icc(m))
    r2 <- capture(performance::r2_nakagawa(m))
    gv <- capture(insight::get_variance(m))
    # for GLMMs, insight's variance of the distribution uses the intercept-only refit of the model
    nm <- if (isGLMM(m)) capture(insight::null_model(m)) else NULL
    list(
      id = id, dataset = dataset, formula = formula, family = fc$family,
      fixef_names = fc$fixef_names, fixef = fc$fixef, theta = fc$theta, sigma = fc$sigma, varcorr = fc$varcorr,
      fit_warnings = fc$fit_warnings, fit_messages = fc$fit_messages, convergence = fc$convergence,
      icc = if (is.null(ic$value)) NA else lapply(as.list(ic$value), unname),
      icc_warnings = ic$warnings, icc_messages = ic$messages, icc_error = ic$error,
      r2_nakagawa = if (is.null(r2$value)) NA else lapply(unclass(r2$value), unname),
      r2_warnings = r2$warnings, r2_messages = r2$messages, r2_error = r2$error,
      get_variance = if (is.null(gv$value)) NA else lapply(gv$value, function(v) if (length(v) > 1) as.list(v) else unname(v)),
      get_variance_warnings = gv$warnings,
      null_model = if (is.null(nm) || is.null(nm$value)) NA else list(
        formula = print_formula(formula(nm$value)),
        fixef = I(unname(fixef(nm$value))), theta = I(unname(getME(nm$value, "theta"))),
        theta_names = I(names(getME(nm$value, "theta"))), varcorr = varcorr_df(nm$value),
        warnings = nm$warnings, messages = nm$messages))
  }
  icc_r2$sleepstudy_intercept <- perf_entry("sleepstudy_intercept", "sleepstudy", "Reaction ~ Days + (1 | Subject)", ss,
    function() lmer(Reaction ~ Days + (1 | Subject), ss))
  icc_r2$sleepstudy_slope <- perf_entry("sleepstudy_slope", "sleepstudy", "Reaction ~ Days + (Days | Subject)", ss,
    function() lmer(Reaction ~ Days + (Days | Subject), ss))
  icc_r2$cbpp_binomial <- perf_entry("cbpp_binomial", "cbpp", "cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp,
    function() glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, family = binomial))
  icc_r2$grouseticks_poisson <- perf_entry("grouseticks_poisson", "grouseticks",
    "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)", grouseticks,
    function() glmer(TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION), grouseticks, family = poisson))
  icc_r2$grouseticks_poisson_uncentered <- perf_entry("grouseticks_poisson_uncentered", "grouseticks",
    "TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)", grouseticks,
    function() glmer(TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION), grouseticks, family = poisson))
  icc_r2$penicillin_crossed <- perf_entry("penicillin_crossed", "Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", Penicillin,
    function() lmer(diameter ~ 1 + (1 | plate) + (1 | sample), Penicillin))
} else icc_r2$skipped <- "package performance is not installed"
save_json(icc_r2, "icc_r2.json")

###########################################################################################
# 4. negbin.json (issue 13)
###########################################################################################
negbin <- list(versions = versions)
set.seed(20240613)
ng <- 30; n <- 300
g <- factor(sprintf("N%02d", c(1:ng, sample(ng, n - ng, replace = TRUE))))
gi <- as.integer(g)
x <- round(rnorm(n), 3)
b <- rnorm(ng, 0, 0.5)
y <- MASS::rnegbin(n, mu = exp(1 + 0.5 * x + b[gi]), theta = 2)
nbsim <- data.frame(y = y, x = x, g = g)
export_data("negbin_sim", nbsim)

nb_entry <- function(id, dataset, formula, df, fitter) {
  fc <- fit_case(id, dataset, formula, df, fitter)
  m <- attr(fc, "model")
  out <- strip(fc)
  if (!is.null(m)) {
    out$nb_theta <- safe(getME(m, "glmer.nb.theta"))
    out$family_string <- family(m)$family
  }
  attr(out, "model") <- m
  out
}
gt_form <- "TICKS ~ YEAR + cHEIGHT + (1 | LOCATION)"
nb_gt <- nb_entry("grouseticks_nb", "grouseticks", gt_form, grouseticks,
                  function() glmer.nb(as.formula(gt_form), grouseticks))
nb_sim <- nb_entry("negbin_sim_nb", "negbin_sim", "y ~ x + (1 | g)", nbsim,
                   function() glmer.nb(y ~ x + (1 | g), nbsim))
th_gt <- nb_gt$nb_theta; th_sim <- nb_sim$nb_theta
negbin$grouseticks_glmer_nb <- strip(nb_gt)
negbin$negbin_sim_glmer_nb <- strip(nb_sim)
negbin$grouseticks_fixed_theta_2 <- strip(nb_entry("grouseticks_nb_theta2", "grouseticks", gt_form, grouseticks,
  function() glmer(as.formula(gt_form), grouseticks, family = MASS::negative.binomial(theta = 2))))
negbin$negbin_sim_fixed_theta_2 <- strip(nb_entry("negbin_sim_theta2", "negbin_sim", "y ~ x + (1 | g)", nbsim,
  function() glmer(y ~ x + (1 | g), nbsim, family = MASS::negative.binomial(theta = 2))))
# glmer at glmer.nb's theta: should reproduce glmer.nb's fit
negbin$grouseticks_fixed_theta_at_nb_estimate <- strip(nb_entry("grouseticks_nb_theta_hat", "grouseticks", gt_form, grouseticks,
  function() glmer(as.formula(gt_form), grouseticks, family = MASS::negative.binomial(theta = th_gt))))
negbin$negbin_sim_fixed_theta_at_nb_estimate <- strip(nb_entry("negbin_sim_theta_hat", "negbin_sim", "y ~ x + (1 | g)", nbsim,
  function() glmer(y ~ x + (1 | g), nbsim, family = MASS::negative.binomial(theta = th_sim))))
save_json(negbin, "negbin.json")

###########################################################################################
# 5. hausman.json (issue 16)
###########################################################################################
hausman <- list(versions = versions)
have_plm <- suppressWarnings(requireNamespace("plm", quietly = TRUE))

set.seed(20240614)
ng <- 50; nt <- 6
id <- factor(sprintf("P%02d", rep(1:ng, each = nt)))
time <- rep(1:nt, ng)
a <- rnorm(ng, 0, 1)[as.integer(id)]          # group effect
x <- round(0.8 * a + rnorm(ng * nt), 4)        # correlated with the group effect
y <- round(1 + 0.5 * x + a + rnorm(ng * nt, 0, 1), 4)
panel <- data.frame(y = y, x = x, id = id, time = time)
export_data("panel_corr", panel)

if (have_plm) {
  suppressMessages(library(plm))
  coef_table <- function(m) {
    s <- summary(m)$coefficients
    list(names = I(rownames(s)), estimate = I(unname(s[, 1])), se = I(unname(s[, 2])),
         vcov = unname(as.matrix(vcov(m))))
  }
  hausman_entry <- function(dataset, formula, df, index) {
    f <- as.formula(formula)
    fits <- lapply(c(within = "within", between = "between", random = "random", pooling = "pooling"),
                   function(model) capture(plm(f, data = df, index = index, model = model)))
    w <- fits$within$value; r <- fits$random$value
    ht <- capture(phtest(w, r))
    hta <- capture(phtest(f, data = pdata.frame(df, index = index), method = "aux"))
    ec <- r$ercomp
    list(
      dataset = dataset, formula = formula, index = I(index),
      coefficients = lapply(fits, function(cf) if (is.null(cf$value)) NA else coef_table(cf$value)),
      fit_warnings = lapply(fits, function(cf) cf$warnings),
      random_ercomp = list(sigma2 = as.list(ec$sigma2), theta = unname(ec$theta)),
      random_method = "swar",
      phtest = list(statistic = unname(ht$value$statistic), df = unname(ht$value$parameter),
                    p_value = ht$value$p.value, method = ht$value$method, alternative = ht$value$alternative,
                    warnings = ht$warnings),
      phtest_aux = if (is.null(hta$value)) list(error = hta$error) else
        list(statistic = unname(hta$value$statistic), df = unname(hta$value$parameter),
             p_value = hta$value$p.value, method = hta$value$method, warnings = hta$warnings))
  }
  # index = Subject only: plm builds the time index itself and Days stays a numeric regressor.
  hausman$sleepstudy <- hausman_entry("sleepstudy", "Reaction ~ Days", ss, c("Subject"))
  # index = c("Subject", "Days") as in the issue: plm turns the index column Days into a factor,
  # so the regressor Days becomes 9 dummies (recorded because that is what the literal call does).
  hausman$sleepstudy_days_as_index <- hausman_entry("sleepstudy", "Reaction ~ Days", ss, c("Subject", "Days"))
  hausman$panel_corr <- hausman_entry("panel_corr", "y ~ x", panel, c("id", "time"))
} else hausman$skipped <- "package plm is not installed"
save_json(hausman, "hausman.json")
cat("all done\n")
