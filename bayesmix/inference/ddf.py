"""Denominator degrees of freedom for LMM t and F tests: Satterthwaite (as lmerTest) and Kenward-Roger (as pbkrtest).

Satterthwaite (lmerTest 3.1): the variance parameters are ``(θ, σ)``; their asymptotic
covariance ``A = 2 H⁻¹`` comes from the numerical Hessian ``H`` of the (REML or ML)
deviance in that parametrization, and the Jacobian ``J_i = ∂ Var(β̂) / ∂ varpar_i`` from
numerical differentiation of ``σ² (R_X'R_X)⁻¹(θ)`` (both Richardson-extrapolated, as
numDeriv).  For a contrast ``l``, ``df = 2 (l'Vl)² / (g'Ag)`` with ``g_i = l'J_i l``.

Kenward-Roger (pbkrtest 0.5): the marginal covariance is written linearly in the
variance components, ``Σ = Σ_r γ_r G_r`` (each random-effect variance and covariance, then
σ²); the small-sample-adjusted ``Var(β̂)`` (Kenward & Roger 1997) and the
denominator df of the scaled Wald F statistic follow pbkrtest's ``vcovAdj`` and
``Lb_ddf``/``KRmodcomp``.  It needs dense n × n matrices.

Both apply to linear mixed models only; Kenward-Roger needs a REML fit.  They are
approximations — good for balanced and moderately unbalanced designs; with very few
groups or badly unbalanced data, check with the parametric bootstrap (:func:`pb_test`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bayesmix.engine import deviance
from bayesmix.inference._common import InferenceError, require_lmm
from bayesmix.inference._numderiv import hessian, jacobian
from bayesmix.inference.lrt import AnovaTable
from bayesmix.results.display import DisplayTable
from bayesmix.rformat import print_coefmat, r_zapsmall

_DDF_NAMES = {"satterthwaite": "Satterthwaite", "kenward-roger": "Kenward-Roger", "kr": "Kenward-Roger"}
_SATT_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_KR_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_KR_MAX_N = 8000


def ddf_method(ddf: str) -> str:
    """Normalize the method name: "Satterthwaite" or "Kenward-Roger"."""
    key = str(ddf).strip().lower().replace("_", "-").replace(" ", "-")
    if key not in _DDF_NAMES:
        raise InferenceError(f"unknown ddf method {ddf!r}; use 'Satterthwaite' or 'Kenward-Roger'")
    return _DDF_NAMES[key]


def _check_model(model, method: str) -> None:
    require_lmm(model, f"the {method} denominator degrees of freedom")
    if method == "Kenward-Roger" and not model.REML:
        raise InferenceError("Kenward-Roger's method is only available for REML model fits; refit with REML=True "
                             "or use ddf='Satterthwaite'")


# --- Satterthwaite ---------------------------------------------------------------------------


@dataclass
class SatterthwaiteParts:
    """What lmerTest stores on an lmerModLmerTest object."""

    vcov_beta: np.ndarray
    vcov_varpar: np.ndarray
    jacobian: list  # one p x p matrix per variance parameter
    sigma: float


def satterthwaite_parts(model) -> SatterthwaiteParts:
    """lmerTest's ``as_lmerModLT``: Hessian of the deviance in (θ, σ) and Jacobian of Var(β̂)."""
    cached = _SATT_CACHE.get(model)
    if cached is not None:
        return cached
    dev = model.profiled_deviance
    reml = model.REML
    p = model.compiled.p

    def deviance_vp(varpar):
        f = dev.factorize(np.asarray(varpar[:-1], dtype=float))
        if f is None:
            return np.inf
        # the log-weights constant is left out: it cannot change a Hessian, and a large
        # constant would only cost the central differences digits
        return deviance.at_sigma(f, dev.n, p, varpar[-1], reml)

    def covbeta(varpar):
        f = dev.factorize(np.asarray(varpar[:-1], dtype=float))
        return varpar[-1] ** 2 * dev.fixef_covariance_unscaled(f)

    varpar = np.concatenate([model.theta_values, [model.sigma]])
    h = hessian(deviance_vp, varpar)
    values, vectors = np.linalg.eigh(h)
    pos = values > 1e-8
    h_inv = (vectors[:, pos] / values[pos]) @ vectors[:, pos].T
    jac = jacobian(covbeta, varpar)
    parts = SatterthwaiteParts(
        vcov_beta=np.asarray(model.vcov_values, dtype=float),
        vcov_varpar=2.0 * h_inv,
        jacobian=[jac[:, i].reshape(p, p, order="F") for i in range(jac.shape[1])],
        sigma=model.sigma,
    )
    _SATT_CACHE[model] = parts
    return parts


def _satterthwaite_1d(parts: SatterthwaiteParts, L: np.ndarray) -> tuple[float, float]:
    """Variance of l'β̂ and its Satterthwaite df (lmerTest's ``contest1D``)."""
    var_con = float(L @ parts.vcov_beta @ L)
    grad = np.array([L @ J @ L for J in parts.jacobian])
    denom = float(grad @ parts.vcov_varpar @ grad)
    return var_con, 2.0 * var_con**2 / denom


def _fstat_ddf(nu: np.ndarray, tol: float = 1e-8) -> float:
    """lmerTest's ``get_Fstat_ddf``: combine the q t-test dfs into the F test's denominator df."""
    if len(nu) == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(np.mean(nu))
    if np.any(nu <= 2):
        return 2.0
    e = np.sum(nu / (nu - 2.0))
    return float(2.0 * e / (e - len(nu)))


# --- Kenward-Roger ----------------------------------------------------------------------------


@dataclass
class KenwardRogerParts:
    """pbkrtest's ``vcovAdj`` output: the adjusted covariance with its P and W attributes."""

    vcov_adjusted: np.ndarray
    vcov: np.ndarray
    P: list
    W: np.ndarray


def kenward_roger_parts(model) -> KenwardRogerParts:
    """pbkrtest's ``vcovAdj``: the Kenward-Roger adjusted covariance of β̂."""
    cached = _KR_CACHE.get(model)
    if cached is not None:
        return cached
    n = model.nobs
    if n > _KR_MAX_N:
        raise InferenceError(f"Kenward-Roger needs dense {n} x {n} matrices; with more than {_KR_MAX_N} observations "
                             "use ddf='Satterthwaite'")
    gammas, G = _linear_covariance_structure(model)
    Sigma = sum(g * Gi for g, Gi in zip(gammas, G))
    X = model.compiled.X
    Phi = np.asarray(model.vcov_values, dtype=float)
    chol = np.linalg.cholesky(Sigma)
    sigma_inv = np.linalg.inv(chol)
    sigma_inv = sigma_inv.T @ sigma_inv
    TT = sigma_inv @ X
    HH = [Gi @ sigma_inv for Gi in G]
    OO = [H @ X for H in HH]
    m = len(G)
    PP = [-(O.T @ TT) for O in OO]
    PP = [0.5 * (P_ + P_.T) for P_ in PP]
    QQ = {(r, s): OO[r].T @ sigma_inv @ OO[s] for r in range(m) for s in range(r, m)}
    IE2 = np.zeros((m, m))
    for i in range(m):
        phi_p = Phi @ PP[i]
        for j in range(i, m):
            ktrace = np.sum(HH[i].T * HH[j])
            IE2[i, j] = IE2[j, i] = ktrace - 2.0 * np.sum(Phi * QQ[i, j]) + np.sum(phi_p * (PP[j] @ Phi))
    condition = np.min(np.abs(np.linalg.eigvalsh(IE2)))
    W = 2.0 * (np.linalg.inv(IE2) if condition > 1e-10 else np.linalg.pinv(IE2))
    W = 0.5 * (W + W.T)
    p = X.shape[1]
    UU = np.zeros((p, p))
    for i in range(m - 1):
        for j in range(i + 1, m):
            UU += W[i, j] * (QQ[i, j] - PP[i] @ Phi @ PP[j])
    UU = UU + UU.T
    for i in range(m):
        UU += W[i, i] * (QQ[i, i] - PP[i] @ Phi @ PP[i])
    adjusted = Phi + 2.0 * Phi @ UU @ Phi
    parts = KenwardRogerParts(adjusted, Phi, PP, W)
    _KR_CACHE[model] = parts
    return parts


def _linear_covariance_structure(model):
    """pbkrtest's ``get_SigmaG``: Var(y) = Σ γ_r G_r over each term's variances and covariances, then σ²."""
    gammas, G = [], []
    for term, cov in zip(model.compiled.terms, model.term_covariances()):
        Z = term.z_matrix().toarray()
        cols = [Z[:, a :: term.k] for a in range(term.k)]  # each column's n x levels block
        for b in range(term.k):  # lower triangle, column-major (R's lower.tri order)
            for a in range(b, term.k):
                Gab = cols[a] @ cols[b].T
                G.append(Gab if a == b else Gab + Gab.T)
                gammas.append(cov[a, b])
    G.append(np.diag(1.0 / model.compiled.weights))
    gammas.append(model.sigma**2)
    return gammas, G


def _kr_A(parts: KenwardRogerParts, Theta: np.ndarray) -> tuple[float, float]:
    ThetaV0 = Theta @ parts.vcov
    us = [ThetaV0 @ P_ @ parts.vcov for P_ in parts.P]
    m = len(us)
    A1 = A2 = 0.0
    for i in range(m):
        for j in range(i, m):
            e = 1.0 if i == j else 2.0
            A1 += e * parts.W[i, j] * np.trace(us[i]) * np.trace(us[j])
            A2 += e * parts.W[i, j] * np.sum(us[i] * us[j].T)
    return A1, A2


def _kr_ddf_and_scaling(parts: KenwardRogerParts, L: np.ndarray) -> tuple[float, float, int]:
    """pbkrtest's ``.KR_adjust``: denominator df and F scaling for the hypothesis Lβ = 0."""
    L = np.atleast_2d(L)
    Theta = L.T @ np.linalg.solve(L @ parts.vcov @ L.T, L)
    A1, A2 = _kr_A(parts, Theta)
    q = int(np.linalg.matrix_rank(L))
    B = (A1 + 6.0 * A2) / (2.0 * q)
    g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
    c1 = g / (3 * q + 2 * (1 - g))
    c2 = (q - g) / (3 * q + 2 * (1 - g))
    c3 = (q + 2 - g) / (3 * q + 2 * (1 - g))
    V0 = 1 + c1 * B
    V1 = 1 - c2 * B
    V2 = 1 - c3 * B
    V0 = 0.0 if abs(V0) < 1e-10 else V0
    ratio = 1.0 if (abs(1 - A2 / q) < 1e-14 and abs(V1) < 1e-14) else (1 - A2 / q) / V1
    rho = ratio**2 * V0 / V2 / q
    df2 = 4 + (q + 2) / (q * rho - 1)
    scaling = 1.0 if abs(df2 - 2) < 1e-2 else df2 * (1 - A2 / q) / (df2 - 2)
    return float(df2), float(scaling), q


# --- contrasts: t tests and F tests ---------------------------------------------------------


def contrast_t_test(model, L, ddf: str = "Satterthwaite") -> dict:
    """lmerTest's ``contest1D``: estimate, SE, df, t and p for one contrast l'β."""
    method = ddf_method(ddf)
    _check_model(model, method)
    L = np.asarray(L, dtype=float).ravel()
    if L.shape != (model.compiled.p,):
        raise InferenceError(f"the contrast has {L.size} coefficients; the model has {model.compiled.p} fixed effects")
    estimate = float(L @ model.beta_values)
    if method == "Kenward-Roger":
        parts = kenward_roger_parts(model)
        var_con = float(L @ parts.vcov_adjusted @ L)
        df, _, _ = _kr_ddf_and_scaling(parts, L[None, :])
    else:
        var_con, df = _satterthwaite_1d(satterthwaite_parts(model), L)
    se = np.sqrt(var_con)
    t = estimate / se
    return {"Estimate": estimate, "Std. Error": se, "df": df, "t value": t, "Pr(>|t|)": 2 * stats.t.sf(abs(t), df)}


def contrast_f_test(model, L, ddf: str = "Satterthwaite") -> dict:
    """lmerTest's ``contestMD``: the F test of Lβ = 0 with its denominator df."""
    method = ddf_method(ddf)
    _check_model(model, method)
    L = np.atleast_2d(np.asarray(L, dtype=float))
    sigma2 = model.sigma**2
    if L.shape[0] == 0:
        return _f_row(np.nan, np.nan, np.nan, sigma2)
    if method == "Kenward-Roger":
        parts = kenward_roger_parts(model)
        df2, scaling, q = _kr_ddf_and_scaling(parts, L)
        diff = L @ model.beta_values
        wald = float(diff @ np.linalg.solve(L @ parts.vcov_adjusted @ L.T, diff))
        return _f_row(wald / q, q, df2, sigma2, scale=scaling)
    if L.shape[0] == 1:
        res = contrast_t_test(model, L[0], method)
        return _f_row(res["t value"] ** 2, 1, res["df"], sigma2)
    parts = satterthwaite_parts(model)
    VL = L @ parts.vcov_beta @ L.T
    d, P = np.linalg.eigh(VL)
    d, P = d[::-1], P[:, ::-1]
    tol = max(np.sqrt(np.finfo(float).eps) * d[0], 0.0)
    q = int(np.sum(d > tol))
    if q == 0:
        return _f_row(np.nan, np.nan, np.nan, sigma2)
    PtL = (P.T @ L)[:q]
    if q == 1:
        res = contrast_t_test(model, PtL[0], method)
        return _f_row(res["t value"] ** 2, 1, res["df"], sigma2)
    t2 = (PtL @ model.beta_values) ** 2 / d[:q]
    nu = np.array([2.0 * d[m] ** 2 / _quad(np.array([PtL[m] @ J @ PtL[m] for J in parts.jacobian]),
                                             parts.vcov_varpar) for m in range(q)])
    return _f_row(float(np.sum(t2) / q), q, _fstat_ddf(nu), sigma2)


def _quad(g, A):
    return float(g @ A @ g)


def _f_row(F, ndf, ddf, sigma2, scale: float = 1.0) -> dict:
    ms = F * sigma2
    F_value = F * scale
    p = stats.f.sf(F_value, ndf, ddf) if np.isfinite(F_value) else np.nan
    return {"Sum Sq": ms * ndf, "Mean Sq": ms, "NumDF": ndf, "DenDF": ddf, "F value": F_value, "Pr(>F)": p}


# --- the summary coefficient table ------------------------------------------------------------


def coef_table(model, ddf: str = "Satterthwaite") -> pd.DataFrame:
    """lmerTest's ``summary(m, ddf=...)$coefficients``: Estimate, Std. Error, df, t value, Pr(>|t|)."""
    method = ddf_method(ddf)
    _check_model(model, method)
    p = model.compiled.p
    rows = [contrast_t_test(model, np.eye(p)[i], method) for i in range(p)]
    table = pd.DataFrame(rows, index=model.compiled.fixef_names)[["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]]
    return DisplayTable(table)  # shown rounded, numbers kept whole


def format_coef_table(model, ddf: str = "Satterthwaite", digits: int = 4) -> str:
    """The coefficient table as lmerTest's summary prints it (``printCoefmat``, 4 digits)."""
    return "\n".join(print_coefmat(coef_table(model, ddf), digits))


def format_summary(model, ddf: str) -> str:
    """lme4's summary with lmerTest's title and coefficient table (df and Pr(>|t|) columns)."""
    method = ddf_method(ddf)
    table = format_coef_table(model, method)
    try:
        from bayesmix.results.printing import format_summary as base_summary
        base = base_summary(model)
    except ImportError:
        base = None
    title = f"t-tests use {method}'s method"
    if base is None:
        fit_by = "REML" if model.REML else "maximum likelihood"
        return "\n".join([*_wrap_title(f"Linear mixed model fit by {fit_by}. {title}"),
                          f"Formula: {model.formula_display}", "", "Fixed effects:", table])
    lines = base.split("\n")
    head = lines[0]
    cut = head.find(" [")
    wrapped_class = len(lines) > 1 and lines[1].lstrip("'").startswith("lmerMod")
    lines[0 : 2 if wrapped_class else 1] = _wrap_title((head[:cut] if cut >= 0 else head).rstrip() + f". {title}")
    start = next((i for i, line in enumerate(lines) if line.strip() == "Fixed effects:"), None)
    if start is None:
        return "\n".join(lines + ["", "Fixed effects:", table])
    end = start + 1
    while end < len(lines) and lines[end].strip() and not lines[end].startswith("Correlation of Fixed Effects"):
        end += 1
    return "\n".join(lines[: start + 1] + table.split("\n") + lines[end:])


def _wrap_title(title: str, cls: str = "lmerModLmerTest", width: int = 80) -> list[str]:
    """lme4's ``.prt.methTit``: the class in brackets, moved to a line of its own past the width."""
    if len(title) + 5 + len(cls) > width:
        return [f"{title} [", f"{cls}]"]
    return [f"{title} ['{cls}']"]


# --- the type III (and type I) ANOVA table ------------------------------------------------------


def anova_table(model, ddf: str = "Satterthwaite", type: str | int = "III") -> AnovaTable:
    """lmerTest's ``anova(m)``: F tests of each fixed-effect term with Satterthwaite or Kenward-Roger df.

    Type III hypotheses follow lmerTest's construction (each term tested after the terms
    not containing it, orthogonal to the terms containing it), independent of the
    contrast coding; type I are sequential.
    """
    method = ddf_method(ddf)
    _check_model(model, method)
    kind = {"3": "III", "III": "III", "1": "I", "I": "I"}.get(str(type).upper())
    if kind is None:
        raise InferenceError(f"type {type!r} not supported; use 'III' (default) or 'I'")
    structure = _FixedStructure(model)
    hypotheses = structure.type3_contrasts() if kind == "III" else structure.type1_contrasts()
    rows = {term: contrast_f_test(model, L, method) for term, L in hypotheses.items()}
    columns = ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]
    table = AnovaTable(pd.DataFrame.from_dict(rows, orient="index")[columns])
    table.heading = [f"Type {kind} Analysis of Variance Table with {method}'s method"]
    return table


class _FixedStructure:
    """The fixed-effect terms of a model as R's ``terms`` object describes them."""

    def __init__(self, model):
        from bayesmix.spec.design import Evaluator, is_categorical, model_matrix

        c = model.compiled
        self.X = c.X
        self.names = list(c.fixef_names)
        self.ev = Evaluator(c.data, state=c.frame_state)  # the training coding and transforms
        self.fixed_text = c.formula.fixed
        full = model_matrix(c.formula.fixed, self.ev)
        owner = dict(zip(full.names, full.term_of_column))
        self.col_terms = [owner[n] for n in self.names]
        self.has_intercept = full.has_intercept
        self.labels = list(dict.fromkeys(t for t in full.term_of_column if t != "(Intercept)"))
        self.variables = {t: t.split(":") for t in self.labels}
        self.categorical = {v: is_categorical(self.ev.evaluate(v)) for t in self.labels for v in self.variables[t]}
        self.ordered = any(self.categorical[v] and _is_ordered(self.ev.evaluate(v)) for v in self.categorical)
        self._model_matrix = model_matrix

    def columns_of(self, term: str, col_terms=None) -> list[int]:
        col_terms = self.col_terms if col_terms is None else col_terms
        return [i for i, t in enumerate(col_terms) if t == term]

    def type1_contrasts(self) -> dict[str, np.ndarray]:
        """lmerTest's ``get_contrasts_type1``: rows of the Doolittle factor of X'X."""
        p = self.X.shape[1]
        L = np.eye(1) if p == 1 else _doolittle(self.X.T @ self.X).T
        return {t: L[self.columns_of(t)] for t in self.labels}

    def type3_contrasts(self) -> dict[str, np.ndarray]:
        """lmerTest's ``get_contrasts_type3`` (via ``extract_contrasts_type3``)."""
        if self.X.shape[1] <= 1 or len(self.labels) <= 1:
            return self.type1_contrasts()
        if not self.ordered:
            return self._type3_for(self.X, self.names, self.col_terms)
        # polynomial contrasts: build treatment-coded X, then map its hypotheses onto X
        from bayesmix.spec.design import drop_rank_deficient

        data = self.ev.data.copy()
        for col in data.columns:
            if isinstance(data[col].dtype, pd.CategoricalDtype) and data[col].cat.ordered:
                data[col] = data[col].cat.as_unordered()
        from bayesmix.spec.design import Evaluator

        full = self._model_matrix(self.fixed_text, Evaluator(data))
        Xt, names_t, _ = drop_rank_deficient(full.matrix, full.names)
        owner = dict(zip(full.names, full.term_of_column))
        col_terms_t = [owner[n] for n in names_t]
        mapping = r_zapsmall(np.linalg.pinv(Xt, rcond=np.sqrt(np.finfo(float).eps)) @ self.X)
        return {t: L @ mapping for t, L in self._type3_for(Xt, names_t, col_terms_t).items()}

    def _type3_for(self, X, names, col_terms) -> dict[str, np.ndarray]:
        rd_names, rdX = self._full_dummy_matrix()
        L = r_zapsmall((np.linalg.pinv(X, rcond=np.sqrt(np.finfo(float).eps)) @ rdX).T)  # rows: rdX columns
        contained_in = self._containment()
        for term in sorted(self.labels, key=lambda t: -len(self.variables[t])):
            containers = contained_in[term]
            if not containers:
                continue
            cols = self.columns_of(term, col_terms)
            basis = L[:, [i for t in containers for i in self.columns_of(t, col_terms)]]
            coef, *_ = np.linalg.lstsq(basis, L[:, cols], rcond=None)
            L[:, cols] = r_zapsmall(L[:, cols] - basis @ coef)
        position = {n: i for i, n in enumerate(rd_names)}
        missing = [n for n in names if n not in position]
        if missing:
            raise InferenceError(f"cannot build type III hypotheses: columns {missing} have no full-dummy counterpart")
        L = L[[position[n] for n in names]]
        out = {}
        for term in self.labels:
            Lt = L[:, self.columns_of(term, col_terms)].T
            out[term] = Lt[np.sum(np.abs(Lt), axis=1) > 1e-8]
        return out

    def _full_dummy_matrix(self) -> tuple[list[str], np.ndarray]:
        """lmerTest's ``get_rdX``: each term coded with all its levels (``model.matrix(~ 0 + term)``)."""
        n = self.X.shape[0]
        blocks, names = [], []
        if self.has_intercept:
            blocks.append(np.ones((n, 1)))
            names.append("(Intercept)")
        for term in self.labels:
            mm = self._model_matrix("0 + " + term, self.ev)
            blocks.append(mm.matrix)
            names.extend(mm.names)
        return names, np.hstack(blocks)

    def _containment(self) -> dict[str, list[str]]:
        """lmerTest's ``containment``: the terms whose variables include this term's, with the same numeric variables."""
        numerics = {t: {v for v in self.variables[t] if not self.categorical[v]} for t in self.labels}
        out = {}
        for t in self.labels:
            vt = set(self.variables[t])
            out[t] = [u for u in self.labels if vt <= set(self.variables[u]) and set(self.variables[u]) - vt
                      and numerics[t] == numerics[u]]
        return out


def _is_ordered(values) -> bool:
    return bool(getattr(getattr(values, "dtype", None), "ordered", False))


def _doolittle(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """lmerTest's ``doolittle``: the unit lower-triangular L of x = L U."""
    n = x.shape[0]
    L = np.eye(n)
    U = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            U[i, j] = x[i, j] - L[i, :i] @ U[:i, j]
        for j in range(i + 1, n):
            val = x[j, i] - L[j, :i] @ U[:i, i]
            L[j, i] = 0.0 if abs(U[i, i]) < eps else val / U[i, i]
    L[np.abs(L) < eps] = 0.0
    return L
