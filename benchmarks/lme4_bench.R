# lme4 side of the bayesmix speed benchmarks: warm fit times (and a one-shot cold fit) for named cases.
#
# Usage:
#   Rscript benchmarks/lme4_bench.R [--repeats N] CASE [CASE ...]   # warm: one warm-up, N timed fits, JSON on stdout
#   Rscript benchmarks/lme4_bench.R --cold CASE                      # cold: load lme4 + data, fit once, exit
#   Rscript benchmarks/lme4_bench.R --load-only CASE                 # baseline: load lme4 + data, no fit
#
# Data come from bayesmix's own CSVs (bayesmix/datasets/data), with factor levels taken from the
# *.schema.json files, so R and Python fit exactly the same data with the same reference levels.
# The case table must match CASES in benchmarks/bench_lmer.py / bench_glmer.py (the Python side
# compares the formula strings echoed in the JSON).

suppressPackageStartupMessages(library(lme4))

script_dir <- local({
  file_arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
  if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else getwd()
})
data_dir <- normalizePath(file.path(script_dir, "..", "bayesmix", "datasets", "data"))

CASES <- list(
  sleepstudy  = list(data = "sleepstudy", kind = "lmer", REML = TRUE,
                     formula = "Reaction ~ Days + (Days | Subject)"),
  penicillin  = list(data = "Penicillin", kind = "lmer", REML = TRUE,
                     formula = "diameter ~ 1 + (1 | plate) + (1 | sample)"),
  pastes      = list(data = "Pastes", kind = "lmer", REML = TRUE,
                     formula = "strength ~ 1 + (1 | batch/cask)"),
  insteval    = list(data = "InstEval", kind = "lmer", REML = FALSE,
                     formula = "y ~ service * dept + (1 | s) + (1 | d)"),
  cbpp        = list(data = "cbpp", kind = "glmer", family = "binomial",
                     formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)"),
  grouseticks = list(data = "grouseticks", kind = "glmer", family = "poisson",
                     formula = "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)"),
  verbagg     = list(data = "VerbAgg", kind = "glmer", family = "binomial",
                     formula = "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)")
)

load_dataset <- function(name) {
  schema <- jsonlite::fromJSON(file.path(data_dir, paste0(name, ".schema.json")), simplifyVector = FALSE)
  csv <- file.path(data_dir, paste0(name, ".csv"))
  if (!file.exists(csv)) csv <- paste0(csv, ".gz")
  # Factor cells are labels ("308", "2"): read everything as text, then type each column by the schema.
  raw <- read.csv(csv, colClasses = "character", na.strings = "", check.names = FALSE)
  for (col in schema$columns) {
    x <- raw[[col$name]]
    raw[[col$name]] <- switch(col$type,
      factor  = factor(x, levels = unlist(col$levels)),
      ordered = factor(x, levels = unlist(col$levels), ordered = TRUE),
      integer = as.integer(x),
      logical = as.logical(x),
      as.numeric(x))
  }
  raw
}

fit_case <- function(case, data) {
  f <- as.formula(case$formula)
  if (case$kind == "lmer") lmer(f, data = data, REML = case$REML)
  else glmer(f, data = data, family = get(case$family))
}

# What lme4 optimizes: the REML criterion for REML fits, else -2 log L (ML deviance / Laplace).
criterion_of <- function(m) if (isREML(m)) REMLcrit(m) else -2 * as.numeric(logLik(m))

timed_fit <- function(case, data) {
  invisible(gc())  # collect earlier garbage outside the timed region (the Python side does the same)
  warns <- character()
  t0 <- proc.time()
  m <- withCallingHandlers(fit_case(case, data), warning = function(w) {
    warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning")
  })
  dt <- proc.time() - t0
  list(model = m, wall = dt[["elapsed"]], cpu = dt[["user.self"]] + dt[["sys.self"]], warnings = warns)
}

bench_warm <- function(name, repeats) {
  case <- CASES[[name]]
  data <- load_dataset(case$data)
  timed_fit(case, data)  # warm-up: JIT/bytecode, method dispatch, lazy loading
  runs <- lapply(seq_len(repeats), function(i) timed_fit(case, data))
  m <- runs[[length(runs)]]$model
  list(
    case = name, formula = case$formula, repeats = repeats,
    wall = vapply(runs, `[[`, 0, "wall"), cpu = vapply(runs, `[[`, 0, "cpu"),
    wall_median = median(vapply(runs, `[[`, 0, "wall")), cpu_median = median(vapply(runs, `[[`, 0, "cpu")),
    criterion = criterion_of(m), fixef = as.list(fixef(m)),
    se = as.list(sqrt(diag(as.matrix(vcov(m))))),
    theta = unname(getME(m, "theta")),
    warnings = unique(runs[[length(runs)]]$warnings),
    lme4_version = as.character(packageVersion("lme4")), r_version = R.version.string
  )
}

main <- function(args) {
  repeats <- 5L
  mode <- "warm"
  names <- character()
  i <- 1L
  while (i <= length(args)) {
    a <- args[[i]]
    if (a == "--repeats") { repeats <- as.integer(args[[i + 1L]]); i <- i + 1L }
    else if (a == "--cold") mode <- "cold"
    else if (a == "--load-only") mode <- "load"
    else names <- c(names, strsplit(a, ",")[[1]])
    i <- i + 1L
  }
  names <- tolower(names)
  unknown <- setdiff(names, names(CASES))
  if (length(unknown)) stop("unknown case(s): ", paste(unknown, collapse = ", "),
                            "; known: ", paste(names(CASES), collapse = ", "))
  if (!length(names)) stop("name at least one case: ", paste(names(CASES), collapse = ", "))
  if (mode == "warm") {
    out <- lapply(names, bench_warm, repeats = repeats)
    names(out) <- names
    cat(jsonlite::toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "\n")
  } else {
    for (name in names) {
      data <- load_dataset(CASES[[name]]$data)
      if (mode == "cold") invisible(suppressWarnings(fit_case(CASES[[name]], data)))
    }
  }
}

main(commandArgs(trailingOnly = TRUE))
