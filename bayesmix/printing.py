"""lme4's printed summary (``print(summary(m))``) and the ports of R's formatting it is built from.

The text is assembled the way lme4 1.1-31's ``print.summary.merMod`` assembles it, from
faithful Python versions of R's ``format`` (C ``formatReal``), ``round``, ``zapsmall``,
``format.pval``, ``printCoefmat``, ``abbreviate``, ``strwrap``, ``deparse`` (formulas),
``cat(fill = TRUE)`` and ``print`` of named vectors and character matrices.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

R_WIDTH = 80  # getOption("width")
R_GAP = 1  # R_print.gap: spaces between printed columns
R_DIGITS = 7  # getOption("digits")
SUMMARY_DIGITS = max(3, R_DIGITS - 3)  # print.summary.merMod's default digits
COR_MAX = 12  # getOption("lme4.summary.cor.max")
DOUBLE_EPS = 2.220446049250313e-16  # .Machine$double.eps
DEPARSE_CUTOFF = 60  # deparse()'s width.cutoff
SIGNIF_LEGEND = "0 ‘***’ 0.001 ‘**’ 0.01 ‘*’ 0.05 ‘.’ 0.1 ‘ ’ 1"
# Our optimizer, named in lme4's "optimizer (...) convergence code" line (api.py writes the same).
OPTIMIZER_NAME = "bobyqa"


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
    """R 4.2's ``zapsmall``: round to ``digits`` significant digits of the largest magnitude."""
    x = np.asarray(values, dtype=float)
    finite = x[~np.isnan(x)]
    if finite.size == 0:
        return x
    mx = float(np.max(np.abs(finite)))
    places = max(0.0, digits - math.log10(mx)) if mx > 0 else digits
    return np.array([r_round(v, places) for v in x])


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


def format_info(values, digits: int = R_DIGITS, nsmall: int = 0) -> tuple[int, int, int]:
    """C ``formatReal``: common width, decimals and exponent flag (0 = fixed) for a numeric vector."""
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
    if nan or posinf:
        w = max(w, 3)
    if neginf:
        w = max(w, 4)
    return w, d, e


def encode_real(x: float, w: int, d: int, e: int) -> str:
    """C ``encodeReal0``: one number in the common format, right-justified to width ``w``."""
    x = float(x)
    if math.isnan(x):
        text = "NaN"
    elif math.isinf(x):
        text = "Inf" if x > 0 else "-Inf"
    else:
        if x == 0.0:
            x = 0.0  # R prints no negative zero
        text = "%.*e" % (d, x) if e else "%.*f" % (d, x)
    return text.rjust(w)


def r_format(values, digits: int = R_DIGITS, nsmall: int = 0) -> list[str]:
    """R's ``format()`` of a numeric vector: one common format, so one common width."""
    values = [float(v) for v in np.ravel(np.asarray(values, dtype=float))]
    w, d, e = format_info(values, digits, nsmall)
    return [encode_real(v, w, d, e) for v in values]


def r_format_number(x: float, digits: int = R_DIGITS) -> str:
    """How ``cat()`` and ``print()`` show one number."""
    return r_format([x], digits)[0]


def r_format_pval(pvalues, digits: int = max(1, R_DIGITS - 2), eps: float = DOUBLE_EPS) -> list[str]:
    """R's ``format.pval``: fixed or scientific groups, values below ``eps`` as ``<eps``."""
    pv = [float(p) for p in pvalues]
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
    """``symnum`` with printCoefmat's cutpoints: intervals closed on the right, 0 included."""
    symbols = ["***", "**", "*", ".", " "]
    cuts = [0.001, 0.01, 0.05, 0.1]
    return [symbols[sum(p > c for c in cuts)] for p in pvalues]


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


# --- R's text layout: strwrap, cat(fill = TRUE), deparse ---------------------------------------


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


_TOKEN_RE = re.compile(
    r"\s*(`[^`]*`|\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|%[^%]*%|\|\||&&|==|!=|<=|>=|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[Li]?"
    r"|[A-Za-z_.][A-Za-z0-9_.]*|[-+*/^:~|&!<>(),$@])"
)
# (precedence, right-associative, spaced like R's PP_BINARY) for each binary operator
_BINARY = {
    "~": (1, False, True), "||": (2, False, True), "|": (2, False, True), "&&": (3, False, True),
    "&": (3, False, True), "==": (5, False, True), "!=": (5, False, True), "<": (5, False, True),
    ">": (5, False, True), "<=": (5, False, True), ">=": (5, False, True), "+": (6, False, True),
    "-": (6, False, True), "*": (7, False, True), "/": (7, False, False), "%": (8, False, True),
    ":": (9, False, False), "^": (11, True, False), "$": (12, False, False), "@": (12, False, False),
}
_UNARY_PREC = {"~": 1, "!": 4, "-": 10, "+": 10}


class _ParseError(ValueError):
    pass


def _tokenize(text: str) -> list[str]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m or m.end() == pos:
            raise _ParseError(text[pos:])
        tokens.append(m.group(1))
        pos = m.end()
    return tokens


def _parse_expression(tokens: list[str]):
    """A small precedence-climbing parser for formula expressions; nodes are tuples."""
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def op_key(tok):
        return "%" if tok and tok.startswith("%") and len(tok) > 1 else tok

    def primary():
        tok = take()
        if tok in _UNARY_PREC:
            return ("unary", tok, expr(_UNARY_PREC[tok]))
        if tok == "(":
            inner = expr(0)
            if take() != ")":
                raise _ParseError("unbalanced parenthesis")
            return ("paren", inner)
        if tok is None or tok in _BINARY or tok in ("(", ")", ","):
            raise _ParseError(str(tok))
        node = ("atom", tok)
        while peek() == "(":
            take()
            args = []
            if peek() != ")":
                args.append(expr(0))
                while peek() == ",":
                    take()
                    args.append(expr(0))
            if take() != ")":
                raise _ParseError("unbalanced call")
            node = ("call", node, args)
        return node

    def expr(min_prec):
        left = primary()
        while True:
            tok = peek()
            key = op_key(tok)
            if key not in _BINARY:
                return left
            prec, right_assoc, _ = _BINARY[key]
            if prec <= min_prec and not (right_assoc and prec == min_prec):
                return left
            take()
            right = expr(prec - 1 if right_assoc else prec)
            left = ("binary", tok, left, right)

    tree = expr(0)
    if pos != len(tokens):
        raise _ParseError(" ".join(tokens[pos:]))
    return tree


class _Deparser:
    """R's ``deparse`` line breaking: after a spaced binary operator or an argument's comma,
    a line longer than the cutoff is ended and the rest indented by four spaces."""

    def __init__(self, cutoff: int = DEPARSE_CUTOFF):
        self.cutoff = cutoff
        self.lines: list[str] = []
        self.line = ""
        self.indent = 0
        self.at_line_start = True

    def write(self, text: str) -> None:
        if self.at_line_start:
            self.at_line_start = False
            self.line += "".join("    " if i <= 4 else "  " for i in range(1, self.indent + 1))
        self.line += text

    def end_line(self) -> None:
        self.lines.append(self.line)
        self.line, self.at_line_start = "", True

    def maybe_break(self, broke: bool) -> bool:
        if len(self.line) > self.cutoff:
            if not broke:
                self.indent += 1
            self.end_line()
            return True
        return broke

    def node(self, n) -> None:
        kind = n[0]
        if kind == "atom":
            self.write(n[1])
        elif kind == "paren":
            self.write("(")
            self.node(n[1])
            self.write(")")
        elif kind == "unary":
            self.write(n[1])
            self.node(n[2])
        elif kind == "call":
            self.node(n[1])
            self.write("(")
            broke = False
            for k, arg in enumerate(n[2]):
                self.node(arg)
                if k < len(n[2]) - 1:
                    self.write(", ")
                    broke = self.maybe_break(broke)
            if broke:
                self.indent -= 1
            self.write(")")
        else:
            _, op, left, right = n
            # user %op%s are spaced like PP_BINARY; R's own %% and %/% are not
            spaced = op not in ("%%", "%/%") and _BINARY["%" if op.startswith("%") else op][2]
            self.node(left)
            if spaced:
                self.write(f" {op} ")
                broke = self.maybe_break(False)
                self.node(right)
                if broke:
                    self.indent -= 1
            else:
                self.write(op)
                self.node(right)

    def lines_of(self, tree) -> list[str]:
        self.node(tree)
        self.end_line()
        return self.lines


def r_deparse_lines(text: str, cutoff: int = DEPARSE_CUTOFF) -> list[str]:
    """An R expression (as R prints it on one line) split into ``deparse()``'s lines."""
    try:
        return _Deparser(cutoff).lines_of(_parse_expression(_tokenize(text)))
    except (_ParseError, IndexError, TypeError):
        return [text]  # not something we can parse: one line, as written


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


def print_coefmat(estimates, row_names: list[str], col_names: list[str], digits: int = SUMMARY_DIGITS,
                  show_signif_stars: bool = True) -> list[str]:
    """R's ``printCoefmat``: estimate and SE columns formatted together, the test statistic
    rounded, p-values by ``format.pval`` with significance stars and their legend."""
    xm = np.asarray(estimates, dtype=float)
    nrow, nc = xm.shape
    has_p = nc >= 4 and col_names[-1][:3] in ("Pr(", "p-v")
    k = nc - int(has_p) - 1
    cs_ind, tst_ind = list(range(k)), k
    dig_tst = max(1, min(5, digits - 1))
    cells = [["" for _ in range(nc)] for _ in range(nrow)]

    def put(col, texts):
        for i, t in enumerate(texts):
            cells[i][col] = t

    if cs_ind:
        coef_se = xm[:, cs_ind]
        acs = np.abs(coef_se)
        finite = acs[np.isfinite(acs)]
        if finite.size:
            nonzero = finite[finite != 0]
            digmin = 1 + (math.floor(math.log10(nonzero.min())) if nonzero.size else 0)
            places = max(1, digits - digmin)
            texts = r_format([r_round(v, places) for v in coef_se.T.ravel()], digits)
            for j, col in enumerate(cs_ind):
                put(col, texts[j * nrow:(j + 1) * nrow])
    put(tst_ind, r_format([r_round(v, dig_tst) for v in xm[:, tst_ind]], digits))
    for col in range(tst_ind + 1, nc - int(has_p)):
        put(col, r_format(xm[:, col], digits))
    # A non-zero value shown as zero gets its own format with one digit less.
    shown_zero = [(i, j) for j in cs_ind for i in range(nrow)
                  if (xm[i, j] == 0) != (float(cells[i][j]) == 0)]
    if shown_zero:
        for (i, j), text in zip(shown_zero, r_format([xm[i, j] for i, j in shown_zero], max(1, digits - 1))):
            cells[i][j] = text
    stars_col = False
    if has_p:
        pv = xm[:, -1]
        put(nc - 1, r_format_pval(pv, dig_tst))
        stars_col = show_signif_stars and bool(np.any(pv < 0.1))
        if stars_col:
            stars = signif_stars(pv)
            w = max(len(s) for s in stars)
            for row, s in zip(cells, stars):
                row.append(s.ljust(w))
    names = list(col_names) + ([""] if stars_col else [])
    lines = print_matrix(cells, list(row_names), names, right=True)
    if stars_col:
        lines += ["---", "Signif. codes:  " + SIGNIF_LEGEND]
    return lines


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
    fit_warnings: list[str] = field(default_factory=list)
    convergence: list[str] = field(default_factory=list)


def summary_parts(result) -> SummaryParts:
    """Collect from an LmerResult or GlmerResult the numbers and names lme4's summary prints."""
    blocks = []
    for label, term, cov in zip(result.group_labels(), result.compiled.terms, result.term_covariances()):
        sd = np.sqrt(np.diag(cov))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = cov / np.outer(sd, sd)
        blocks.append(RandomEffectBlock(label, list(term.column_names), sd, corr))
    residuals = np.asarray(result.scaled_residuals, dtype=float)
    return SummaryParts(
        is_lmm=result.is_lmm,
        reml=bool(result.is_lmm and result.REML),
        nagq=int(getattr(result, "nAGQ", 1)),
        family=None if result.is_lmm else result.family_name,
        link=None if result.is_lmm else result.link_name,
        formula=result.formula_display,
        data_name=getattr(result, "data_name", None),
        weights_name=result.weights_name,
        reml_criterion=result.reml_criterion if result.is_lmm and result.REML else None,
        aic=float(result.aic),
        bic=float(result.bic),
        loglik=float(result.loglik),
        df_resid=int(result.df_resid),
        residual_quantiles=list(np.quantile(residuals, [0, 0.25, 0.5, 0.75, 1])),
        random_effects=blocks,
        residual_sd=float(result.sigma) if result.has_scale else None,
        nobs=int(result.nobs),
        ngrps=dict(result.ngrps),
        coef_table=result.coef_table,
        fixef_correlation=correlation_from_vcov(result.vcov.to_numpy()),
        fit_warnings=_rank_warning(len(getattr(result.compiled, "dropped_fixef", []) or [])),
        convergence=convergence_lines(result.optimizer_messages, getattr(result, "converged", True)),
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
    lines = r_cat_fill(["Formula:"] + r_deparse_lines(parts.formula))
    if parts.data_name:
        lines += r_cat_fill(["   Data:", str(parts.data_name)])
    if parts.weights_name:
        lines += r_cat_fill(["Weights:", str(parts.weights_name)])
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
    return r_cat_fill([f"Number of obs: {parts.nobs}, groups: ", groups])


def _fixef_lines(parts: SummaryParts, digits: int, correlation: bool | None) -> list[str]:
    table = parts.coef_table
    p = len(table)
    if p == 0:
        return []
    lines = ["", "Fixed effects:"]
    lines += print_coefmat(table.to_numpy(), list(table.index), list(table.columns), digits)
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
