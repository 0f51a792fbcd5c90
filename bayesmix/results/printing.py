"""lme4's printed summary (``print(summary(m))``), laid out from the R formatting rules in :mod:`bayesmix.rformat`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bayesmix.results.varcorr import sd_and_corr
from bayesmix.rformat import (
    R_DIGITS,
    R_WIDTH,
    print_coefmat,
    print_matrix,
    print_named_vector,
    r_abbreviate,
    r_cat_fill,
    r_format,
    r_format_number,
    r_round,
    r_strwrap,
    r_zapsmall,
)
from bayesmix.spec.rexpr import deparse_lines

SUMMARY_DIGITS = max(3, R_DIGITS - 3)  # print.summary.merMod's default digits
COR_MAX = 12  # getOption("lme4.summary.cor.max")
# Our optimizer, named in lme4's "optimizer (...) convergence code" line when a fit carries no record.
OPTIMIZER_NAME = "bobyqa"


# --- what the summary shows, as plain numbers ---------------------------------------------------


@dataclass
class RandomEffectBlock:
    """One random-effects term as VarCorr prints it: group label, column names, SDs, correlations."""

    group: str
    names: list[str]
    sd: np.ndarray
    corr: np.ndarray


@dataclass
class SummaryParts:
    """Everything ``print(summary(m))`` shows, taken out of a fit (see :func:`summary_parts`)."""

    is_lmm: bool
    reml: bool
    nagq: int
    family: str | None
    link: str | None
    formula: str
    data_name: str | None
    weights_name: str | None
    offset_name: str | None
    reml_criterion: float | None
    aic: float
    bic: float
    loglik: float
    df_resid: int
    residual_quantiles: list[float]
    random_effects: list[RandomEffectBlock]
    residual_sd: float | None  # None for families without a scale (binomial, poisson)
    nobs: int
    ngrps: dict[str, int]
    coef_table: pd.DataFrame  # Estimate, Std. Error, t/z value[, Pr(>|z|)]
    fixef_correlation: np.ndarray  # cov2cor(vcov)
    n_dropped: int = 0  # rows removed for missing values
    fit_warnings: list[str] = field(default_factory=list)
    convergence: list[str] = field(default_factory=list)


def summary_parts(result) -> SummaryParts:
    """Collect from an LmerResult or GlmerResult the numbers and names lme4's summary prints."""
    blocks = []
    for label, term, cov in zip(result.group_labels(), result.compiled.terms, result.term_covariances()):
        sd, corr = sd_and_corr(cov)
        blocks.append(RandomEffectBlock(label, list(term.column_names), sd, corr))
    return SummaryParts(
        is_lmm=result.is_lmm,
        reml=bool(result.is_lmm and result.REML),
        nagq=int(getattr(result, "nAGQ", 1)),
        family=None if result.is_lmm else result.family_name,
        link=None if result.is_lmm else result.link_name,
        formula=result.formula_display,
        data_name=getattr(result, "data_name", None),
        weights_name=result.weights_name,
        offset_name=getattr(result.compiled, "offset_name", None),
        reml_criterion=result.reml_criterion if result.is_lmm and result.REML else None,
        aic=float(result.aic),
        bic=float(result.bic),
        loglik=float(result.loglik),
        df_resid=int(result.df_resid),
        residual_quantiles=list(result.scaled_residual_quantiles()),
        random_effects=blocks,
        residual_sd=float(result.sigma) if result.has_scale else None,
        nobs=int(result.nobs),
        ngrps=dict(result.ngrps),
        n_dropped=int(getattr(result, "n_dropped", 0) or 0),
        coef_table=result.coef_table,
        fixef_correlation=correlation_from_vcov(result.vcov.to_numpy()),
        fit_warnings=_rank_warning(len(getattr(result.compiled, "dropped_fixef", []) or [])),
        convergence=convergence_lines(result.optimizer_messages, getattr(result, "converged", True),
                                      optimizer=result.optsum.optimizer if result.optsum else OPTIMIZER_NAME),
    )


def correlation_from_vcov(vcov) -> np.ndarray:
    """``cov2cor``."""
    vcov = np.asarray(vcov, dtype=float)
    sd = np.sqrt(np.diag(vcov))
    return vcov / np.outer(sd, sd)


def _rank_warning(dropped: int) -> list[str]:
    if not dropped:
        return []
    what = "column / coefficient" if dropped == 1 else "columns / coefficients"
    return [f"fixed-effect model matrix is rank deficient so dropping {dropped} {what}"]


def convergence_lines(messages, converged: bool = True, optimizer: str = OPTIMIZER_NAME) -> list[str]:
    """lme4's ``.prt.warn`` lines: the optimizer's convergence code first, then the messages."""
    messages = [m for m in messages if m]
    if messages and not messages[0].startswith("optimizer ("):
        status = "0 (OK)" if converged else "1"
        messages.insert(0, f"optimizer ({optimizer}) convergence code: {status}")
    return messages


# --- lme4's summary pieces (.prt.* in lme4) ----------------------------------------------------


def method_title(parts: SummaryParts) -> str:
    """lme4's ``methTitle``."""
    if parts.is_lmm:
        return "Linear mixed model fit by " + ("REML" if parts.reml else "maximum likelihood ")
    how = ("(Laplace Approximation)" if parts.nagq == 1
           else f"(Adaptive Gauss-Hermite Quadrature, nAGQ = {parts.nagq})")
    return "Generalized linear mixed model fit by maximum likelihood " + how


def _title_lines(parts: SummaryParts) -> list[str]:
    title = method_title(parts)
    cls = "lmerMod" if parts.is_lmm else "glmerMod"
    if len(title) + 5 + len(cls) > R_WIDTH:
        return r_cat_fill(r_strwrap(title, R_WIDTH - 2, exdent=2) + [" [", cls, "]"], sep="")
    return [f"{title} ['{cls}']"]


def _family_lines(parts: SummaryParts) -> list[str]:
    if parts.family is None:
        return []
    return r_cat_fill([" Family:", parts.family, f" ( {parts.link} )"])


def _call_lines(parts: SummaryParts) -> list[str]:
    lines = r_cat_fill(["Formula:"] + deparse_lines(parts.formula))
    if parts.data_name:
        lines += r_cat_fill(["   Data:", str(parts.data_name)])
    if parts.weights_name:
        lines += r_cat_fill(["Weights:", str(parts.weights_name)])
    if parts.offset_name:
        lines += r_cat_fill([" Offset:", str(parts.offset_name)])
    return lines


def _aic_lines(parts: SummaryParts) -> list[str]:
    """``.prt.aictab``: the REML criterion, or the AIC/BIC/logLik/deviance/df.resid table."""
    if parts.reml_criterion is not None:
        return r_cat_fill(["REML criterion at convergence:", r_format_number(r_round(parts.reml_criterion, 1))])
    names = ["AIC", "BIC", "logLik", "deviance", "df.resid"]
    # lme4's "deviance" here is devCrit: -2 log-likelihood (for a GLMM not the conditional deviance)
    stats = [parts.aic, parts.bic, parts.loglik, -2.0 * parts.loglik, float(parts.df_resid)]
    rounded = [r_round(v, 1) for v in stats]
    texts = r_format(rounded)
    texts[-1] = r_format([rounded[-1]])[0]  # df.resid formatted on its own
    return print_named_vector(texts, names)


def _residual_lines(parts: SummaryParts, digits: int) -> list[str]:
    texts = r_format(r_zapsmall(parts.residual_quantiles, digits + 1), digits)
    return ["Scaled residuals: "] + print_named_vector(texts, ["Min", "1Q", "Median", "3Q", "Max"]) + [""]


def _varcorr_lines(parts: SummaryParts, digits: int) -> list[str]:
    """``.prt.VC`` / ``formatVC``: variances and SDs formatted together, correlations to two decimals."""
    blocks = parts.random_effects
    groups, names, all_sd = [], [], []
    for b in blocks:
        groups += [b.group] + [""] * (len(b.sd) - 1)
        names += list(b.names)
        all_sd += [float(v) for v in b.sd]
    if parts.residual_sd is not None:
        groups.append("Residual")
        names.append("")
        all_sd.append(parts.residual_sd)
    variances = r_format([v * v for v in all_sd], digits)
    std_devs = r_format(all_sd, digits)
    rows = [[g, n, v, s] for g, n, v, s in zip(groups, names, variances, std_devs)]
    col_names = ["Groups", "Name", "Variance", "Std.Dev."]
    maxlen = max([len(b.sd) for b in blocks] + [1])
    if maxlen > 1:
        dig = max(2, digits - 2)
        corr_rows = []
        for b in blocks:
            k = len(b.sd)
            texts = r_format([r_round(v, dig) for v in np.ravel(b.corr)], nsmall=dig)
            corr_rows += [[texts[i * k + j] if j < i else "" for j in range(maxlen - 1)] for i in range(k)]
        corr_rows += [[""] * (maxlen - 1)] * (len(rows) - len(corr_rows))
        rows = [r + c for r, c in zip(rows, corr_rows)]
        col_names += ["Corr"] + [""] * (maxlen - 2)
    return ["Random effects:"] + print_matrix(rows, [""] * len(rows), col_names)


def _groups_lines(parts: SummaryParts) -> list[str]:
    groups = "; ".join(f"{name}, {n}" for name, n in parts.ngrps.items())
    lines = r_cat_fill([f"Number of obs: {parts.nobs}, groups: ", groups])
    if parts.n_dropped:
        # lme4 prints nothing here (only nobs shows it); we say it as R's summary.lm does
        lines.append(f"  ({parts.n_dropped} observation{'s' if parts.n_dropped > 1 else ''} "
                     "deleted due to missingness)")
    return lines


def _fixef_lines(parts: SummaryParts, digits: int, correlation: bool | None) -> list[str]:
    table = parts.coef_table
    p = len(table)
    if p == 0:
        return []
    lines = ["", "Fixed effects:"]
    lines += print_coefmat(table, digits)
    show = (p <= COR_MAX) if correlation is None else bool(correlation)
    if show and p > 1:
        lines += _correlation_lines(parts.fixef_correlation, list(table.index))
    return lines


def _correlation_lines(corr: np.ndarray, names: list[str]) -> list[str]:
    """The lower triangle of cov2cor(vcov) to three decimals, names abbreviated as lme4 does."""
    p = corr.shape[0]
    texts = r_format([r_round(v, 3) for v in np.ravel(corr)], nsmall=3)
    cells = [[texts[i * p + j] if j < i else "" for j in range(p - 1)] for i in range(1, p)]
    rows = r_abbreviate(names, 11)[1:]
    cols = r_abbreviate(names, 6)[: p - 1]
    return ["", "Correlation of Fixed Effects:"] + print_matrix(cells, rows, cols)


def _warning_lines(parts: SummaryParts) -> list[str]:
    lines = ["fit warnings:"] + parts.fit_warnings if parts.fit_warnings else []
    if parts.convergence:
        lines += parts.convergence + [""]  # .prt.warn ends with an empty line
    return lines


def render_summary(parts: SummaryParts, correlation: bool | None = None, digits: int = SUMMARY_DIGITS) -> str:
    """lme4's ``print.summary.merMod`` layout of :class:`SummaryParts`, as ``capture.output`` lines."""
    lines = _title_lines(parts) + _family_lines(parts) + _call_lines(parts) + [""]
    lines += _aic_lines(parts) + [""]
    lines += _residual_lines(parts, digits)
    lines += _varcorr_lines(parts, digits)
    lines += _groups_lines(parts)
    lines += _fixef_lines(parts, digits, correlation)
    lines += _warning_lines(parts)
    return "\n".join(lines)


def format_summary(result, correlation: bool | None = None) -> str:
    """lme4 1.1-31's ``print(summary(m))`` for an lmer or glmer fit, line for line.

    ``correlation``: None shows the fixed-effects correlations when there are 2 to 12
    coefficients (lme4's default; beyond that lme4 only sends a note to stderr),
    True or False forces them on or off.
    """
    return render_summary(summary_parts(result), correlation)
