# lme4 side of benchmarks/bench_designs.py: warm fit times of one model on a CSV written by the Python side.
#
# Usage:
#   Rscript benchmarks/lme4_designs.R --csv PATH --formula F [--reml TRUE|FALSE] [--family binomial]
#                                     [--factors g1,g2] [--repeats N] [--cold]
#
# Columns named in --factors are read as text and made factors (the grouping factors); every other
# column is numeric, so fixed effects need no contrasts and both sides build identical X.  Warm mode:
# one warm-up fit, N timed fits, JSON on stdout (the same fields as lme4_bench.R).  --cold: read, fit
# once, exit (for fresh-process time and peak memory).  --load-only: read only.

suppressPackageStartupMessages(library(lme4))

parse_args <- function(args) {
  opt <- list(repeats = 5L, reml = TRUE, family = "", factors = "", mode = "warm")
  i <- 1L
  while (i <= length(args)) {
    a <- args[[i]]
    if (a == "--cold") opt$mode <- "cold"
    else if (a == "--load-only") opt$mode <- "load"
    else {
      key <- sub("^--", "", a)
      opt[[key]] <- args[[i + 1L]]
      i <- i + 1L
    }
    i <- i + 1L
  }
  opt$repeats <- as.integer(opt$repeats)
  opt$reml <- as.logical(opt$reml)
  opt
}

read_design <- function(opt) {
  factors <- if (nzchar(opt$factors)) strsplit(opt$factors, ",")[[1]] else character()
  header <- names(read.csv(opt$csv, nrows = 1, check.names = FALSE))
  classes <- ifelse(header %in% factors, "character", "numeric")
  d <- read.csv(opt$csv, colClasses = classes, check.names = FALSE)
  for (f in factors) d[[f]] <- factor(d[[f]])
  d
}

fit_design <- function(opt, data) {
  f <- as.formula(opt$formula)
  if (nzchar(opt$family)) glmer(f, data = data, family = get(opt$family))
  else lmer(f, data = data, REML = opt$reml)
}

criterion_of <- function(m) if (isREML(m)) REMLcrit(m) else -2 * as.numeric(logLik(m))

timed_fit <- function(opt, data) {
  invisible(gc())
  warns <- character()
  t0 <- proc.time()
  m <- withCallingHandlers(fit_design(opt, data), warning = function(w) {
    warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning")
  }, message = function(w) invokeRestart("muffleMessage"))
  dt <- proc.time() - t0
  list(model = m, wall = dt[["elapsed"]], cpu = dt[["user.self"]] + dt[["sys.self"]], warnings = warns)
}

main <- function(args) {
  opt <- parse_args(args)
  data <- read_design(opt)
  if (opt$mode == "load") return(invisible())
  if (opt$mode == "cold") return(invisible(suppressWarnings(suppressMessages(fit_design(opt, data)))))
  timed_fit(opt, data)  # warm-up
  runs <- lapply(seq_len(opt$repeats), function(i) timed_fit(opt, data))
  last <- runs[[length(runs)]]
  m <- last$model
  out <- list(
    formula = opt$formula, repeats = opt$repeats,
    wall = vapply(runs, `[[`, 0, "wall"), cpu = vapply(runs, `[[`, 0, "cpu"),
    wall_median = median(vapply(runs, `[[`, 0, "wall")), cpu_median = median(vapply(runs, `[[`, 0, "cpu")),
    criterion = criterion_of(m), fixef = as.list(fixef(m)),
    se = as.list(sqrt(diag(as.matrix(vcov(m))))),
    theta = unname(getME(m, "theta")),
    feval = m@optinfo$feval,
    warnings = unique(last$warnings),
    lme4_version = as.character(packageVersion("lme4")), r_version = R.version.string
  )
  cat(jsonlite::toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "\n")
}

main(commandArgs(trailingOnly = TRUE))
