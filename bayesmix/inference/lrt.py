"""Likelihood-ratio tests between nested fits: lme4's ``anova(m0, m1, ...)`` table."""

from __future__ import annotations

import ast
import html
import inspect
import linecache

import numpy as np
import pandas as pd
from scipy.stats import chi2

from bayesmix.errors import BayesmixWarning, warn
from bayesmix.inference._common import (
    InferenceError,
    check_model_objects,
    check_same_data,
    is_lmm,
    message,
    refit_ml,
)
from bayesmix.inference._common import (
    check_nested as require_nested,
)
from bayesmix.results.display import html_table, rounded
from bayesmix.rformat import print_coefmat


class AnovaTable(pd.DataFrame):
    """A DataFrame that prints as R prints an ``anova`` object (heading, then ``printCoefmat``)."""

    _metadata = ["heading"]

    @property
    def _constructor(self):
        return AnovaTable

    def to_r_string(self) -> str:
        return print_anova(pd.DataFrame(self), list(getattr(self, "heading", None) or []))

    def __str__(self) -> str:
        return self.to_r_string()

    def __repr__(self) -> str:
        return self.to_r_string()

    def _repr_html_(self) -> str:
        """Jupyter's view: the heading, then the table rounded (integers as integers, p-values as R)."""
        heading = "".join(f"<div>{html.escape(line)}</div>" for line in (getattr(self, "heading", None) or []))
        return heading + html_table(rounded(pd.DataFrame(self), digits=5))  # print.anova's digits


def print_anova(table: pd.DataFrame, heading=(), digits: int = 5) -> str:
    """R's ``print.anova``: the heading lines, then ``printCoefmat`` with anova's column rules."""
    cn = [str(c) for c in table.columns]
    nc = len(cn)
    has_p = bool(nc) and (cn[-1].startswith("P(") or cn[-1].startswith("Pr("))
    tst = [i for i, c in enumerate(cn) if c[1:7] == " value"] + [i for i, c in enumerate(cn) if c in ("F", "Cp", "Chisq")]
    zap = [i for i in range(nc - 1 if has_p else nc) if i not in tst and not cn[i].endswith("Df")]
    body = print_coefmat(table, digits, cs_ind=[], tst_ind=tst, zap_ind=zap, has_pvalue=has_p, na_print="")
    return "\n".join([*heading, *body])


def anova(*models, names=None, refit: bool = True, check_nested: bool = True) -> AnovaTable:
    """lme4's ``anova(m0, m1, ...)``: likelihood-ratio tests of nested models.

    The models are ordered by their number of parameters; each row after the first
    tests the model against the one above it: ``Chisq = 2 Δ logLik`` on ``Df = Δ npar``
    degrees of freedom.  REML fits are refitted by ML first (REML likelihoods of models
    with different fixed effects are not comparable), with lme4's message.

    When to trust it: the χ² reference distribution is asymptotic.  For fixed effects in
    small samples it is anti-conservative (prefer ``anova_table(ddf=...)`` F tests or
    :func:`pb_test`); for a variance component tested at zero the null value lies on the
    boundary of the parameter space and the χ² p-value is conservative (roughly twice
    too large for one variance) — use :func:`exact_rlrt` or :func:`pb_test`.

    ``names``: labels for the rows (default: the variable names in the call, as lme4's
    deparsed arguments; else ``MODEL1``, ``MODEL2``, ...).  ``check_nested=False``
    allows non-nested models (then only AIC/BIC are meaningful).
    """
    if len(models) < 2:
        raise InferenceError(
            "anova() compares two or more fitted models (likelihood-ratio tests); "
            "for the F tests of one linear mixed model use model.anova_table()"
        )
    check_model_objects(models)
    labels = _model_names(models, names)
    check_same_data(models, labels)
    reml = [is_lmm(m) and m.REML for m in models]
    if refit and any(reml):
        message("refitting model(s) with ML (instead of REML)")
        models = tuple(refit_ml(m) for m in models)
    elif any(reml) and not all(reml):
        warn("some models fit with REML = TRUE, some not", BayesmixWarning)
    npar = np.array([m.df for m in models])
    order = np.argsort(npar, kind="stable")
    models = [models[i] for i in order]
    labels = [labels[i] for i in order]
    npar = npar[order]
    if check_nested:
        for small, large, ls, ll in zip(models[:-1], models[1:], labels[:-1], labels[1:]):
            require_nested(small, large, ls, ll)
    loglik = np.array([m.loglik for m in models])
    nobs = models[0].nobs
    chisq = np.concatenate([[np.nan], 2.0 * np.maximum(0.0, np.diff(loglik))])
    df = np.concatenate([[np.nan], np.diff(npar).astype(float)])
    with np.errstate(invalid="ignore"):
        p = np.where(df == 0, np.nan, chi2.sf(chisq, np.where(df == 0, 1, df)))
    p[0] = np.nan
    table = AnovaTable({
        "npar": npar.astype(int),
        "AIC": -2.0 * loglik + 2.0 * npar,
        "BIC": -2.0 * loglik + npar * np.log(nobs),
        "logLik": loglik,
        "deviance": -2.0 * loglik,
        "Chisq": chisq,
        "Df": df,
        "Pr(>Chisq)": p,
    }, index=pd.Index(labels))
    table.heading = [f"Data: {models[0].data_name}", "Models:"] + [
        f"{label}: {m.formula_display}" for label, m in zip(labels, models)
    ]
    return table


def _model_names(models, names) -> list[str]:
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != len(models):
            raise InferenceError(f"{len(names)} names given for {len(models)} models")
        if len(set(names)) != len(names):
            raise InferenceError(f"model names must be distinct, got {names}")
        return names
    found = _names_in_caller(models)
    if found is None:
        return [f"MODEL{i + 1}" for i in range(len(models))]
    return found


def _names_in_caller(models) -> list[str] | None:
    """The caller's names for the models, as lme4 deparses its call's arguments.

    First the text of the arguments in the calling expression (``anova(m0, m1)`` gives
    ``m0``, ``m1``; works in scripts and in Jupyter, whose cells are in ``linecache``);
    else a variable bound to each model, the caller's locals before its globals.
    """
    frame = inspect.currentframe()
    try:
        caller = frame.f_back.f_back.f_back if frame is not None else None
        while caller is not None and caller.f_globals.get("__name__", "").startswith("bayesmix."):
            caller = caller.f_back
        if caller is None:
            return None
        found = _argument_texts(caller, len(models)) or _bound_names(caller, models)
        return found if found and len(set(found)) == len(found) else None
    finally:
        del frame


def _argument_texts(caller, n: int) -> list[str] | None:
    """The source text of the positional arguments of the call the caller is executing, if it has ``n``."""
    try:
        positions = list(caller.f_code.co_positions())[caller.f_lasti // 2]
        line, end_line, col, end_col = positions
        if None in positions:
            return None
        lines = [linecache.getline(caller.f_code.co_filename, i) for i in range(line, end_line + 1)]
        if not all(lines):
            return None
        lines[-1] = lines[-1][:end_col]
        lines[0] = lines[0][col:]
        node = ast.parse("".join(lines).strip(), mode="eval").body
    except (SyntaxError, ValueError, IndexError):
        return None
    if not isinstance(node, ast.Call) or len(node.args) != n or any(isinstance(a, ast.Starred) for a in node.args):
        return None
    return [ast.unparse(a) for a in node.args]


def _bound_names(caller, models) -> list[str] | None:
    """For each model the one name bound to it, looking in the caller's locals, then its globals."""
    out = []
    for m in models:
        for scope in (caller.f_locals, caller.f_globals):
            hits = [k for k, v in scope.items() if v is m and not k.startswith("_")]
            if hits:
                break
        if len(hits) != 1:
            return None
        out.append(hits[0])
    return out
