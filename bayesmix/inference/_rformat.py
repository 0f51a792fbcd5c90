"""R's number formatting for inference tables: ``format(x, digits)``, ``zapsmall``, ``format.pval``, ``printCoefmat``.

Ports of R's ``formatReal`` (src/main/format.c) and of ``stats::printCoefmat`` /
``print.anova``, so that the tables of :mod:`bayesmix.inference` print digit for
digit as lme4, lmerTest and pbkrtest print them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

_KP_MAX = 22
_DBL_EPS = float(np.finfo(float).eps)
SIGNIF_LEGEND = "Signif. codes:  0 \u2018***\u2019 0.001 \u2018**\u2019 0.01 \u2018*\u2019 0.05 \u2018.\u2019 0.1 \u2018 \u2019 1"


def _scientific(x: float, digits: int) -> tuple[bool, int, int, bool]:
    """R's ``scientific()``: sign, decimal exponent, significant digits needed, whether rounding widens."""
    if x == 0.0:
        return False, 0, 1, False
    neg = x < 0
    r = abs(x)
    kp = math.floor(math.log10(r)) - digits + 1
    r_prec = r / 10.0**kp if kp >= 0 else r * 10.0 ** (-kp)
    if r_prec < 10.0 ** (digits - 1):
        r_prec *= 10.0
        kp -= 1
    alpha = float(round(r_prec))
    nsig = digits
    for _ in range(digits):
        alpha /= 10.0
        if alpha == math.floor(alpha):
            nsig -= 1
        else:
            break
    if nsig == 0 and digits > 0:
        nsig = 1
        kp += 1
    kpower = kp + digits - 1
    rgt = min(max(digits - kpower, 0), _KP_MAX)
    fuzz = 0.5 / 10.0**rgt
    widens = 0 < kpower <= _KP_MAX and r < 10.0**kpower - fuzz
    return neg, kpower, nsig, widens


def format_real(values, digits: int = 7, nsmall: int = 0) -> list[str]:
    """R's ``format(x, digits = digits)`` for a numeric vector: one common fixed or scientific layout.

    NaN entries come back as "NA".  Widths are common, right-justified, as R's.
    """
    x = np.asarray(values, dtype=float).ravel()
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return ["NA" if np.isnan(v) else ("Inf" if v > 0 else "-Inf") for v in x]
    neg = False
    mxl = rgt = mxsl = mxns = -(10**9)
    mnl = 10**9
    for v in finite:
        neg_i, kpower, nsig, widens = _scientific(float(v), digits)
        left = kpower + 1
        if widens:
            left -= 1
        sleft = int(neg_i) + (1 if left <= 0 else left)
        right = nsig - left
        neg = neg or neg_i
        rgt = max(rgt, right)
        mxl = max(mxl, left)
        mnl = min(mnl, left)
        mxsl = max(mxsl, sleft)
        mxns = max(mxns, nsig)
    if mxl < 0:
        mxsl = 1 + int(neg)
    rgt = max(rgt, 0)
    width_fixed = mxsl + rgt + (rgt != 0)
    e = 2 if (mxl > 100 or mnl <= -99) else 1
    d_sci = mxns - 1
    width_sci = int(neg) + (d_sci > 0) + d_sci + 4 + e
    if width_fixed <= width_sci:
        d = max(rgt, nsmall)
        out = [_fixed(v, d) for v in x]
    else:
        out = [_sci(v, d_sci) for v in x]
    width = max(len(s) for s in out)
    return [s.rjust(width) for s in out]


def _fixed(v: float, d: int) -> str:
    if np.isnan(v):
        return "NA"
    if np.isinf(v):
        return "Inf" if v > 0 else "-Inf"
    return f"{v:.{d}f}"


def _sci(v: float, d: int) -> str:
    if np.isnan(v):
        return "NA"
    if np.isinf(v):
        return "Inf" if v > 0 else "-Inf"
    return f"{v:.{d}e}"


def r_round(x, digits):
    """R's ``round(x, digits)``: the digits themselves rounded to the nearest integer first."""
    nd = int(math.floor(digits + 0.5))
    x = np.asarray(x, dtype=float)
    flat = [round(float(v), nd) if np.isfinite(v) else v for v in x.ravel()]
    return np.array(flat, dtype=float).reshape(x.shape)


def zapsmall(x, digits: int = 7) -> np.ndarray:
    """R's ``zapsmall``: round to ``digits`` significant digits of the largest entry."""
    x = np.asarray(x, dtype=float)
    ok = ~np.isnan(x)
    if not ok.any():
        return x
    mx = float(np.max(np.abs(x[ok])))
    nd = max(0.0, digits - math.log10(mx)) if mx > 0 else digits
    return r_round(x, nd).reshape(x.shape)


def format_pval(pv, digits: int, eps: float = _DBL_EPS) -> list[str]:
    """R's ``format.pval``: p-values below ``eps`` print as "< 2e-16"."""
    pv = np.asarray(pv, dtype=float)
    out = [""] * len(pv)
    is0 = pv < eps
    rest = [i for i in range(len(pv)) if not is0[i]]
    rr: list[str] = []
    if rest:
        vals = pv[rest]
        expo = np.floor(np.log10(np.where(vals > 0, vals, 1e-50)))
        fixp = (expo >= -3) | ((expo == -4) & (digits > 1))
        rr = [""] * len(rest)
        for mask in (fixp, ~fixp):
            idx = np.flatnonzero(mask)
            if idx.size:
                for j, s in zip(idx, format_real(vals[idx], digits)):
                    rr[j] = s
        for i, s in zip(rest, rr):
            out[i] = s
    if is0.any():
        d = max(1, digits - 2)
        if rest:
            nc = max(len(s) for s in rr)
            if d > 1 and d + 6 > nc:
                d = max(1, nc - 7)
            sep = "" if (d == 1 and nc <= 6) else " "
        else:
            sep = "" if d == 1 else " "
        text = "<" + sep + format_real([eps], d)[0].strip()
        for i in np.flatnonzero(is0):
            out[i] = text
    return out


def _stars(p: float) -> str:
    if np.isnan(p):
        return ""
    for cut, sym in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p <= cut:
            return sym
    return " "


def print_coefmat(table: pd.DataFrame, digits: int, *, cs_ind=None, tst_ind=None, zap_ind=(),
                  has_pvalue: bool | None = None, na_print: str = "NA", signif_stars: bool = True) -> str:
    """R's ``printCoefmat`` as text (column indices 0-based)."""
    cn = [str(c) for c in table.columns]
    nc = len(cn)
    if has_pvalue is None:
        has_pvalue = nc >= 4 and cn[-1][:3] in ("Pr(", "p-v")
    xm = table.to_numpy(dtype=float).copy()
    n = xm.shape[0]
    ina = np.isnan(xm)
    ok = ~ina
    k = nc - int(has_pvalue) - (1 if tst_ind is None else len(tst_ind))
    cs_ind = list(range(k)) if cs_ind is None else list(cs_ind)
    tst_ind = [k] if tst_ind is None else list(tst_ind)
    cf = np.full(xm.shape, "", dtype=object)
    for i in zap_ind:
        xm[:, i] = zapsmall(xm[:, i], digits)
    if cs_ind:
        coef_se = xm[:, cs_ind]
        acs = np.abs(coef_se)
        finite = np.isfinite(acs)
        if finite.any():
            nonzero = acs[finite & (acs != 0)]
            digmin = 1 + (np.floor(np.log10([nonzero.min(), nonzero.max()])) if nonzero.size else np.zeros(1))
            rounded = r_round(coef_se.ravel(), max(1, int(digits - digmin.min()))).reshape(coef_se.shape)
            cf[:, cs_ind] = np.array(_format_nonmissing(rounded.ravel(order="F"), digits), dtype=object).reshape(
                coef_se.shape, order="F")
    dig_tst = max(1, min(5, digits - 1))
    if tst_ind:
        vals = xm[:, tst_ind]
        rounded = r_round(vals.ravel(), dig_tst).reshape(vals.shape)
        cf[:, tst_ind] = np.array(_format_nonmissing(rounded.ravel(order="F"), digits), dtype=object).reshape(
            vals.shape, order="F")
    p_col = nc - 1 if has_pvalue else None
    for i in range(nc):
        if i not in cs_ind and i not in tst_ind and i != p_col:
            cf[:, i] = _format_nonmissing(xm[:, i], digits)
    ok_check = ok.copy()
    ok_check[:, tst_ind] = False
    if has_pvalue:
        ok_check[:, p_col] = False
    # a non-zero shown as zero gets one digit fewer (R's not.both.0 fix-up)
    rows, cols = np.nonzero(ok_check)
    bad = [(r, c) for r, c in zip(rows, cols) if (xm[r, c] == 0) != (float(cf[r, c]) == 0)]
    if bad:
        fixed = format_real([xm[r, c] for r, c in bad], max(1, digits - 1))
        for (r, c), s in zip(bad, fixed):
            cf[r, c] = s
    cf[ina] = na_print
    columns = list(cn)
    legend = False
    if has_pvalue:
        pv = xm[:, p_col]
        okp = ok[:, p_col]
        if okp.any():
            for r, s in zip(np.flatnonzero(okp), format_pval(pv[okp], dig_tst)):
                cf[r, p_col] = s
            if signif_stars and np.any(pv[okp] < 0.1):
                stars = [_stars(p) for p in pv]
                width = max(len(s) for s in stars)
                cf = np.column_stack([cf, [s.ljust(width) for s in stars]])
                columns.append("")
                legend = True
    text = print_character_matrix(cf, [str(i) for i in table.index], columns)
    if legend:
        text += "\n---\n" + SIGNIF_LEGEND
    return text


def _format_nonmissing(values, digits: int) -> list[str]:
    values = np.asarray(values, dtype=float)
    out = ["NA"] * len(values)
    idx = np.flatnonzero(~np.isnan(values))
    if idx.size:
        for i, s in zip(idx, format_real(values[idx], digits)):
            out[i] = s
    return out


def print_character_matrix(cells, row_names: list[str], col_names: list[str]) -> str:
    """R's ``print.default`` of a character matrix (quote = FALSE, right = TRUE)."""
    cells = np.asarray(cells, dtype=object)
    rw = max([len(r) for r in row_names] + [0])
    widths = [max([len(col_names[j])] + [len(str(s)) for s in cells[:, j]]) for j in range(cells.shape[1])]
    lines = [" " * rw + "".join(" " + col_names[j].rjust(widths[j]) for j in range(len(widths)))]
    for i, name in enumerate(row_names):
        lines.append(name.ljust(rw) + "".join(" " + str(cells[i, j]).rjust(widths[j]) for j in range(len(widths))))
    return "\n".join(lines)


def print_anova(table: pd.DataFrame, heading=(), digits: int = 5) -> str:
    """R's ``print.anova``: the heading lines, then ``printCoefmat`` with anova's column rules."""
    cn = [str(c) for c in table.columns]
    nc = len(cn)
    has_p = bool(nc) and (cn[-1].startswith("P(") or cn[-1].startswith("Pr("))
    zap = list(range(nc - 1 if has_p else nc))
    tst = [i for i, c in enumerate(cn) if c[1:7] == " value"] + [i for i, c in enumerate(cn) if c in ("F", "Cp", "Chisq")]
    zap = [i for i in zap if i not in tst and not cn[i].endswith("Df")]
    body = print_coefmat(table, digits, cs_ind=[], tst_ind=tst, zap_ind=zap, has_pvalue=has_p, na_print="")
    return "\n".join([*heading, body])
