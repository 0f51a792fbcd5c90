"""R's formatting rules: format, format.pval, printCoefmat, abbreviate, deparse line breaking."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

R_WIDTH = 80  # getOption("width")
R_GAP = 1  # R_print.gap: spaces between printed columns
R_DIGITS = 7  # getOption("digits")
DOUBLE_EPS = 2.220446049250313e-16  # .Machine$double.eps
DEPARSE_CUTOFF = 60  # deparse()'s width.cutoff
SIGNIF_LEGEND = "0 ‘***’ 0.001 ‘**’ 0.01 ‘*’ 0.05 ‘.’ 0.1 ‘ ’ 1"


# --- R's rounding -----------------------------------------------------------------------


def r_round(x: float, digits: float = 0) -> float:
    """R >= 4.0's ``round(x, digits)`` (nmath ``fround``): the nearer of the two candidates, ties to even."""
    x = float(x)
    if math.isnan(x) or not math.isfinite(x) or x == 0.0 or digits > 323:
        return x
    if digits < -308:
        return 0.0
    if digits == 0:
        return float(np.rint(x))
    dig = math.floor(digits + 0.5)
    sgn = -1.0 if x < 0 else 1.0
    x = abs(x)
    if math.log10(2.0) * (0.5 + (math.frexp(x)[1] - 1)) + dig > 15:  # DBL_DIG: nothing to round
        return sgn * x
    pow10 = 10.0**dig
    x10 = x * pow10
    i10 = math.floor(x10)
    xd, xu = i10 / pow10, math.ceil(x10) / pow10
    du, dd = xu - x, x - xd
    return sgn * (xu if du < dd or (math.fmod(i10, 2.0) == 1 and du == dd) else xd)


def r_zapsmall(values, digits: int = R_DIGITS) -> np.ndarray:
    """R 4.2's ``zapsmall``: round to ``digits`` significant digits of the largest magnitude (any shape)."""
    x = np.asarray(values, dtype=float)
    present = x[~np.isnan(x)]
    if present.size == 0:
        return x
    mx = float(np.max(np.abs(present)))
    places = max(0.0, digits - math.log10(mx)) if mx > 0 else digits
    return np.array([r_round(v, places) for v in x.ravel()]).reshape(x.shape)


# --- R's formatReal / format() -------------------------------------------------------------

_KP_MAX = 27  # powers of ten exact in an 80-bit long double
_TEN_POWERS = [np.longdouble(1)]
for _ in range(_KP_MAX):
    _TEN_POWERS.append(_TEN_POWERS[-1] * 10)


def _ten_to(k: int) -> np.longdouble:
    return _TEN_POWERS[k] if 0 <= k <= _KP_MAX else np.power(np.longdouble(10), k)


def _scientific(x: float, digits: int) -> tuple[bool, int, int, bool]:
    """C ``scientific()``: sign, decimal exponent, significant digits needed (<= digits), rounding widens."""
    if x == 0.0:
        return False, 0, 1, False
    neg, r = x < 0, abs(x)
    if digits >= 16:  # R switches to sprintf("%#.*e") here
        text = "%.*e" % (digits - 1, r)
        mantissa, exponent = text.split("e")
        stripped = mantissa.replace(".", "").rstrip("0")
        return neg, int(exponent), max(1, len(stripped)), False
    kp = math.floor(math.log10(r)) - digits + 1
    r_prec = np.longdouble(r)
    if kp > 0:
        r_prec /= _ten_to(kp)
    elif kp < 0:
        r_prec *= _ten_to(-kp)
    if r_prec < _ten_to(digits - 1):
        r_prec *= 10
        kp -= 1
    alpha = float(np.rint(r_prec))  # nearbyintl, round half to even
    nsig = digits
    for _ in range(digits):
        alpha /= 10.0
        if alpha == math.floor(alpha):
            nsig -= 1
        else:
            break
    if nsig == 0 and digits > 0:
        nsig, kp = 1, kp + 1
    kpower = kp + digits - 1
    # 9996 with 3 digits is 1e+04 in scientific but 9996 in fixed notation: no extra left digit.
    rgt = min(max(digits - kpower, 0), _KP_MAX)
    fuzz = 0.5 / float(_ten_to(rgt))
    widens = 0 < kpower <= _KP_MAX and np.longdouble(r) < _ten_to(kpower) - np.longdouble(fuzz)
    return neg, kpower, nsig, bool(widens)


def format_info(values, digits: int = R_DIGITS, nsmall: int = 0, nan_width: int = 3) -> tuple[int, int, int]:
    """C ``formatReal``: common width, decimals and exponent flag (0 = fixed) for a numeric vector.

    ``nan_width``: the width a NaN takes, 3 for R's NaN, 2 where it stands for R's NA.
    """
    neg = False
    rgt = mxl = mxsl = mxns = None
    mnl = None
    nan = posinf = neginf = False
    for x in map(float, values):
        if not math.isfinite(x):
            nan |= math.isnan(x)
            posinf |= x == math.inf
            neginf |= x == -math.inf
            continue
        neg_i, kpower, nsig, widens = _scientific(x, digits)
        left = kpower + 1 - (1 if widens else 0)
        sleft = int(neg_i) + (1 if left <= 0 else left)
        right = nsig - left
        neg |= neg_i
        rgt = right if rgt is None else max(rgt, right)
        mxl = left if mxl is None else max(mxl, left)
        mnl = left if mnl is None else min(mnl, left)
        mxsl = sleft if mxsl is None else max(mxsl, sleft)
        mxns = nsig if mxns is None else max(mxns, nsig)
    if mxns is None:  # nothing finite
        w, d, e = 0, 0, 0
    else:
        if digits == 0:
            rgt = 0
        if mxl < 0:
            mxsl = 1 + int(neg)
        rgt = max(rgt, 0)
        w_fixed = mxsl + rgt + (rgt != 0)
        e = 2 if (mxl > 100 or mnl <= -99) else 1
        d = mxns - 1
        w = int(neg) + (d > 0) + d + 4 + e
        if w_fixed <= w:  # fixed notation whenever it is no wider (scipen = 0)
            e = 0
            if nsmall > rgt:
                rgt = nsmall
                w_fixed = mxsl + rgt + (rgt != 0)
            d, w = rgt, w_fixed
    if nan:
        w = max(w, nan_width)
    if posinf:
        w = max(w, 3)
    if neginf:
        w = max(w, 4)
    return w, d, e


def encode_real(x: float, w: int, d: int, e: int, na: str = "NaN") -> str:
    """C ``encodeReal0``: one number in the common format, right-justified to width ``w``; NaN as ``na``."""
    x = float(x)
    if math.isnan(x):
        text = na
    elif math.isinf(x):
        text = "Inf" if x > 0 else "-Inf"
    else:
        if x == 0.0:
            x = 0.0  # R prints no negative zero
        text = "%.*e" % (d, x) if e else "%.*f" % (d, x)
    return text.rjust(w)


def r_format(values, digits: int = R_DIGITS, nsmall: int = 0, na: str = "NaN") -> list[str]:
    """R's ``format()`` of a numeric vector: one common format, so one common width.

    ``na``: how a NaN reads: "NaN" where it was computed, "NA" where it stands for a missing
    value (pandas' NaN in a table, R's NA).
    """
    values = [float(v) for v in np.ravel(np.asarray(values, dtype=float))]
    w, d, e = format_info(values, digits, nsmall, nan_width=len(na))
    return [encode_real(v, w, d, e, na) for v in values]


def r_format_number(x: float, digits: int = R_DIGITS) -> str:
    """How ``cat()`` and ``print()`` show one number."""
    return r_format([x], digits)[0]


def r_format_pval(pvalues, digits: int = max(1, R_DIGITS - 2), eps: float = DOUBLE_EPS,
                  na_form: str = "NA") -> list[str]:
    """R's ``format.pval``: fixed or scientific groups, values below ``eps`` as ``<eps``, NaN as ``na_form``."""
    pvalues = [float(p) for p in pvalues]
    present = [p for p in pvalues if not math.isnan(p)]
    texts = iter(_format_present_pvals(present, digits, eps))
    return [na_form if math.isnan(p) else next(texts) for p in pvalues]


def _format_present_pvals(pv: list[float], digits: int, eps: float) -> list[str]:
    out = [""] * len(pv)
    tiny = [p < eps for p in pv]
    rest = [i for i, t in enumerate(tiny) if not t]
    if rest:
        expo = {i: math.floor(math.log10(pv[i] if pv[i] > 0 else 1e-50)) for i in rest}
        fixed = [i for i in rest if expo[i] >= -3 or (expo[i] == -4 and digits > 1)]
        sci = [i for i in rest if i not in fixed]
        for group in (fixed, sci):
            if group:
                for i, text in zip(group, r_format([pv[i] for i in group], digits)):
                    out[i] = text
    if any(tiny):
        dig = max(1, digits - 2)
        if rest:
            nc = max(len(out[i]) for i in rest)
            if dig > 1 and dig + 6 > nc:
                dig = max(1, nc - 7)
            sep = "" if dig == 1 and nc <= 6 else " "
        else:
            sep = "" if dig == 1 else " "
        text = "<" + sep + r_format([eps], dig)[0]
        out = [text if t else o for o, t in zip(out, tiny)]
    return out


def signif_stars(pvalues) -> list[str]:
    """``symnum`` with printCoefmat's cutpoints: intervals closed on the right, 0 included, NaN blank."""
    symbols = ["***", "**", "*", ".", " "]
    cuts = [0.001, 0.01, 0.05, 0.1]
    return ["" if math.isnan(p) else symbols[sum(p > c for c in cuts)] for p in pvalues]


# --- R's abbreviate() --------------------------------------------------------------------


def _strip_chars(text: str, minlength: int) -> str:
    """C ``stripchars`` (abbreviate with use.classes = TRUE): drop lower-case vowels, then
    lower-case letters, then anything, from the right, never a word's first letter."""
    buf = list(text.strip(" "))
    if len(buf) < minlength:
        return "".join(buf)
    upper = len(buf) - 1

    def at(i):
        return buf[i] if 0 <= i < len(buf) else "\0"

    def first_char(i):
        return at(i - 1).isspace()

    def last_char(i):
        nxt = at(i + 1)
        return not at(i - 1).isspace() and (nxt == "\0" or nxt.isspace())

    def vowel(i):
        return at(i) in "aeiou"

    def lower(i):
        return at(i).islower()

    nspace = 0  # leading/trailing blanks already stripped; inner blanks count as word breaks
    for i in range(upper, 0, -1):
        if at(i).isspace():
            nspace += 1

    def short_enough():
        return len(buf) - nspace <= minlength

    if short_enough():
        return _drop_spaces(buf, minlength)
    passes = [
        lambda i: vowel(i) and last_char(i),
        lambda i: vowel(i) and not first_char(i),
        lambda i: lower(i) and last_char(i),
        lambda i: lower(i) and not first_char(i),
    ]
    for rule in passes:
        for i in range(upper, 0, -1):
            if i < len(buf) and rule(i):
                del buf[i]
            if short_enough():
                return _drop_spaces(buf, minlength)
    for i in range(len(buf) - 1, 0, -1):
        if i < len(buf) and not first_char(i) and not at(i).isspace():
            del buf[i]
        if short_enough():
            break
    return _drop_spaces(buf, minlength)


def _drop_spaces(buf: list[str], minlength: int) -> str:
    if len(buf) > minlength:
        buf = [buf[0]] + [c for c in buf[1:] if not c.isspace()]
    return "".join(buf)


def r_abbreviate(names, minlength: int = 4) -> list[str]:
    """R's ``abbreviate(names, minlength)``: lengthen abbreviations until they are unique."""
    old = [str(n).strip(" ") for n in names]
    unique = list(dict.fromkeys(old))
    if minlength <= 0:
        return ["" for _ in old]
    out = list(unique)
    redo = [True] * len(unique)
    while True:
        for i, flag in enumerate(redo):
            if flag:
                out[i] = _strip_chars(unique[i], minlength)
        seen, dup = set(), [False] * len(out)
        for i, a in enumerate(out):
            dup[i] = a in seen
            seen.add(a)
        if not any(dup):
            break
        minlength += 1
        clashing = {out[i] for i, d in enumerate(dup) if d}
        redo = [dup[i] or out[i] in clashing for i in range(len(out))]
    lookup = dict(zip(unique, out))
    return [lookup[n] for n in old]


# --- R's text layout: strwrap, cat(fill = TRUE) (deparse's line breaking lives with the R parser, spec.rexpr) ---


def r_strwrap(text: str, width: int, indent: int = 0, exdent: int = 0) -> list[str]:
    """R's ``strwrap`` for one paragraph: greedy, a line's words plus spaces strictly under ``width``."""
    words = text.split(" ")
    words = [w for i, w in enumerate(words) if w or (i > 0 and re.search(r"[.?!][)\"']?$", words[i - 1]))]
    lines, current = [], []
    max_len = width - indent
    used = 0
    for word in words:
        need = len(word) + 1
        if current and used + need > max_len:
            lines.append(current)
            current, used, max_len = [], 0, width - exdent
        current.append(word)
        used += need
    lines.append(current)
    return [(" " * (indent if k == 0 else exdent)) + " ".join(ws) for k, ws in enumerate(lines)]


def r_cat_fill(items, sep: str = " ", width: int = R_WIDTH) -> list[str]:
    """``cat(..., sep = sep, fill = TRUE)``: items joined by ``sep``; a new line before an item
    that would pass ``width`` (the separator stays at the end of the line it follows)."""
    lines, line = [], ""
    used = 0
    for k, item in enumerate(items):
        if k > 0:
            line += sep
            if used + len(item) + len(sep) > width:
                lines.append(line)
                line, used = "", 0
        line += item
        used += len(item) + len(sep)
    lines.append(line)
    return lines


# --- R's print() of named vectors and character matrices ---------------------------------------


def print_named_vector(values: list[str], names: list[str], width: int = R_WIDTH) -> list[str]:
    """``print`` of a named vector whose elements are already formatted: right-justified columns."""
    w = max([len(v) for v in values] + [len(n) for n in names])
    per_line = max(1, width // (w + R_GAP))
    lines = []
    for start in range(0, len(values), per_line):
        chunk = slice(start, start + per_line)
        lines.append("".join(n.rjust(w) + " " * R_GAP for n in names[chunk]))
        lines.append("".join(v.rjust(w) + " " * R_GAP for v in values[chunk]))
    return lines


def print_matrix(cells: list[list[str]], row_names: list[str], col_names: list[str], right: bool = False,
                 width: int = R_WIDTH) -> list[str]:
    """``print(m, quote = FALSE)`` of a character matrix, columns wrapped into blocks as R does."""
    ncol = len(col_names)
    widths = [max([len(col_names[j])] + [len(row[j]) for row in cells]) for j in range(ncol)]
    row_w = max([len(r) for r in row_names] + [0])

    def just(text, w):
        return text.rjust(w) if right else text.ljust(w)

    lines, jmin = [], 0
    while jmin < ncol:
        used, jmax = row_w, jmin
        while True:  # always at least one column, then while the line stays under the width
            used += widths[jmax] + R_GAP
            jmax += 1
            if not (jmax < ncol and used + widths[jmax] + R_GAP < width):
                break
        cols = range(jmin, jmax)
        lines.append(" " * row_w + "".join(" " * R_GAP + just(col_names[j], widths[j]) for j in cols))
        for name, row in zip(row_names, cells):
            lines.append(name.ljust(row_w) + "".join(" " * R_GAP + just(row[j], widths[j]) for j in cols))
        jmin = jmax
    return lines




# --- R's printCoefmat ----------------------------------------------------------------------------


def print_coefmat(table: pd.DataFrame, digits: int = max(3, R_DIGITS - 2), *, cs_ind=None, tst_ind=None,
                  zap_ind=(), has_pvalue: bool | None = None, na_print: str = "NA",
                  show_signif_stars: bool = True) -> list[str]:
    """R's ``printCoefmat`` (column indices 0-based): estimate and SE columns (``cs_ind``) rounded
    and formatted together, test statistics (``tst_ind``) rounded, p-values by ``format.pval``
    with significance stars and their legend.  NaN is R's NA, printed as ``na_print``."""
    col_names = [str(c) for c in table.columns]
    nc = len(col_names)
    if has_pvalue is None:
        has_pvalue = nc >= 4 and col_names[-1][:3] in ("Pr(", "p-v")
    k = nc - int(has_pvalue) - (1 if tst_ind is None else len(tst_ind))
    cs_ind = list(range(k)) if cs_ind is None else list(cs_ind)
    tst_ind = [k] if tst_ind is None else list(tst_ind)
    p_ind = [nc - 1] if has_pvalue else []
    xm = table.to_numpy(dtype=float).copy()
    missing = np.isnan(xm)
    for j in zap_ind:
        xm[:, j] = r_zapsmall(xm[:, j], digits)
    cells = np.full(xm.shape, "", dtype=object)
    places = _coef_se_places(xm[:, cs_ind], digits)
    if places is not None:
        cells[:, cs_ind] = _format_block(_round_all(xm[:, cs_ind], places), digits)
    dig_tst = max(1, min(5, digits - 1))
    if tst_ind:
        cells[:, tst_ind] = _format_block(_round_all(xm[:, tst_ind], dig_tst), digits)
    for j in range(nc):
        if j not in cs_ind + tst_ind + p_ind:
            cells[:, j] = r_format(xm[:, j], digits, na="NA")
    checked = ~missing
    checked[:, tst_ind + p_ind] = False
    _reformat_shown_zero(cells, xm, checked, max(1, digits - 1))
    cells[missing] = na_print
    stars = []
    if has_pvalue and not missing[:, -1].all():
        pv = xm[:, -1]
        present = ~missing[:, -1]
        cells[present, -1] = r_format_pval(pv[present], dig_tst)
        if show_signif_stars and np.any(pv[present] < 0.1):
            stars = signif_stars(pv)
    if stars:
        w = max(len(s) for s in stars)
        cells = np.column_stack([cells, [s.ljust(w) for s in stars]])
        col_names.append("")
    lines = print_matrix(cells.tolist(), [str(i) for i in table.index], col_names, right=True)
    if stars:
        lines += ["---", "Signif. codes:  " + SIGNIF_LEGEND]
    return lines


def _coef_se_places(coef_se: np.ndarray, digits: int) -> int | None:
    """The decimals printCoefmat rounds estimates and SEs to (None: nothing finite to format)."""
    acs = np.abs(coef_se)
    finite = acs[np.isfinite(acs)]
    if finite.size == 0:
        return None
    nonzero = finite[finite != 0]
    digmin = 1 + (math.floor(math.log10(nonzero.min())) if nonzero.size else 0)
    return max(1, digits - digmin)


def _round_all(values: np.ndarray, digits: float) -> np.ndarray:
    return np.array([r_round(v, digits) for v in values.ravel()]).reshape(values.shape)


def _format_block(values: np.ndarray, digits: int) -> np.ndarray:
    """Columns formatted together (one ``format`` call in R), NaN as R's NA."""
    return np.array(r_format(values.ravel(), digits, na="NA"), dtype=object).reshape(values.shape)


def _reformat_shown_zero(cells: np.ndarray, xm: np.ndarray, checked: np.ndarray, digits: int) -> None:
    """printCoefmat's ``not.both.0``: a value shown as zero that is not (or the reverse) is formatted
    again, all such values together, with one digit less."""
    rows, cols = np.nonzero(checked)
    wrong = [(i, j) for i, j in zip(rows, cols) if (xm[i, j] == 0) != (_as_number(cells[i, j]) == 0)]
    if wrong:
        for (i, j), text in zip(wrong, r_format([xm[i, j] for i, j in wrong], digits, na="NA")):
            cells[i, j] = text


def _as_number(text: str) -> float:
    """R's ``as.numeric`` of a formatted cell (NaN for an empty one)."""
    try:
        return float(text)
    except ValueError:
        return math.nan
