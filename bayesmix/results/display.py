"""How results look in Jupyter: a fit as HTML tables, and tables that round for display only.

The numbers underneath are never rounded: :class:`DisplayTable` is a DataFrame whose printed
and HTML forms show a few significant digits; :func:`fit_html` lays a fit out as three small
tables (fit statistics, random effects, fixed effects) with lme4's text one click away.
"""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd

from bayesmix.results.printing import method_title, summary_parts

DISPLAY_DIGITS = 4  # significant digits shown; enough to compare with lme4's printout


def format_value(value, digits: int = DISPLAY_DIGITS) -> str:
    """A number with ``digits`` significant digits in fixed notation (no 1.2e+04), "" for NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return str(value)
    if isinstance(value, (int, np.integer)) or float(value).is_integer() and abs(value) >= 10 ** (digits - 1):
        return f"{int(round(float(value)))}"
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    if v == 0:
        return "0"
    decimals = min(max(0, digits - 1 - math.floor(math.log10(abs(v)))), digits + 3)
    return f"{v:.{decimals}f}"


def format_pvalue(p) -> str:
    """p-values as R's ``format.pval`` with 3 digits: ``< 2.2e-16`` below machine precision."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    p = float(p)
    if p < 2.220446e-16:
        return "< 2.2e-16"
    return f"{p:.3g}" if p >= 1e-4 else f"{p:.2e}"


_COUNT_COLUMNS = {"npar", "Df", "df", "NumDF", "DenDF", "nobs", "ess_bulk", "ess_tail", "n"}


def _format_count(v) -> str:
    return "" if v is None or not np.isfinite(float(v)) else str(int(round(float(v))))


def _formatters(frame: pd.DataFrame, digits: int) -> dict:
    out = {}
    for col in frame.columns:
        name = str(col)
        if name.startswith(("Pr(", "P(", "p-value", "p_value")):
            out[col] = format_pvalue
        elif pd.api.types.is_numeric_dtype(frame[col]) and not pd.api.types.is_bool_dtype(frame[col]):
            values = frame[col].to_numpy(dtype=float)
            finite = values[np.isfinite(values)]
            if finite.size and np.all(finite == np.round(finite)) and name in _COUNT_COLUMNS:
                out[col] = _format_count  # npar, Df: integers even when stored as floats (NaN first row)
            else:
                out[col] = lambda v, d=digits: format_value(v, d)
    return out


def rounded(frame: pd.DataFrame, digits: int = DISPLAY_DIGITS) -> pd.DataFrame:
    """A copy of ``frame`` with every number as display text (significant digits, p-values as R)."""
    out = pd.DataFrame(frame).copy()
    for col, fmt in _formatters(out, digits).items():
        out[col] = [fmt(v) for v in out[col]]
    return out


class DisplayTable(pd.DataFrame):
    """A DataFrame that shows its numbers rounded to a few significant digits (the data keep all of them)."""

    _metadata = ["display_digits"]

    @property
    def _constructor(self):
        return DisplayTable

    def _shown(self) -> pd.DataFrame:
        return rounded(pd.DataFrame(self), getattr(self, "display_digits", None) or DISPLAY_DIGITS)

    def rounded(self) -> pd.DataFrame:
        """The table as displayed, with the shown numbers as numbers again (for checks and exports)."""
        shown = self._shown()
        for col in shown.columns:
            try:
                shown[col] = pd.to_numeric(shown[col])
            except (TypeError, ValueError):
                pass  # a text column, or p-values shown as "<2e-16"
        return shown

    def __repr__(self) -> str:
        return repr(self._shown())

    def __str__(self) -> str:
        return str(self._shown())

    def _repr_html_(self) -> str:
        return html_table(self._shown())


def html_table(frame: pd.DataFrame, caption: str | None = None) -> str:
    """A plain, right-aligned HTML table of display text (no pandas styling to fight with)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    index_name = html.escape(str(frame.index.name or ""))
    rows = []
    for label, values in zip(frame.index, frame.itertuples(index=False)):
        cells = "".join(f"<td style='text-align:{_align(v)}'>{html.escape(str(v))}</td>" for v in values)
        rows.append(f"<tr><th style='text-align:left'>{html.escape(str(label))}</th>{cells}</tr>")
    cap = f"<caption style='text-align:left;font-weight:bold'>{html.escape(caption)}</caption>" if caption else ""
    return (f"<table class='bayesmix'>{cap}<thead><tr><th>{index_name}</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _align(text) -> str:
    """Numbers right (digits line up), words left."""
    try:
        float(str(text).replace("< ", "").split(",")[0] or 0)
    except ValueError:
        return "left"
    return "right"


# --- a fit as HTML --------------------------------------------------------------------------------


def fit_statistics(parts) -> pd.DataFrame:
    """The fit-statistics table: criterion, AIC, BIC, logLik, deviance, df.resid, observations, groups."""
    stats = {}
    if parts.reml_criterion is not None:
        stats["REML criterion"] = f"{parts.reml_criterion:.1f}"
    else:
        stats.update({"AIC": f"{parts.aic:.1f}", "BIC": f"{parts.bic:.1f}", "logLik": f"{parts.loglik:.2f}",
                      "deviance": f"{-2 * parts.loglik:.1f}", "df.resid": str(parts.df_resid)})
    stats["observations"] = str(parts.nobs)
    for group, n in parts.ngrps.items():
        stats[f"groups: {group}"] = str(n)
    return pd.DataFrame({"value": list(stats.values())}, index=pd.Index(list(stats), name="statistic"))


def random_effects_table(parts, digits: int = DISPLAY_DIGITS) -> pd.DataFrame:
    """Groups, names, variances, SDs and correlations with the term's earlier columns, one row per column."""
    rows = []
    for block in parts.random_effects:
        for i, (name, sd) in enumerate(zip(block.names, block.sd)):
            corr = ", ".join(f"{block.corr[i, j]:.2f}" for j in range(i)) if i else ""
            rows.append((block.group if i == 0 else "", name, format_value(sd * sd, digits), format_value(sd, digits), corr))
    if parts.residual_sd is not None:
        rows.append(("Residual", "", format_value(parts.residual_sd ** 2, digits), format_value(parts.residual_sd, digits), ""))
    frame = pd.DataFrame(rows, columns=["Groups", "Name", "Variance", "Std.Dev.", "Corr"])
    if not (frame["Corr"] != "").any():
        frame = frame.drop(columns="Corr")
    return frame.set_index("Groups")


def fit_html(result, text: str) -> str:
    """A fit for Jupyter: title and formula, then the fit statistics, random and fixed effects as
    tables side by side, then lme4's summary text (``text``) in a collapsed ``<details>``."""
    parts = summary_parts(result)
    title = method_title(parts).strip()
    if parts.family is not None:
        title += f" — family {parts.family} ({parts.link})"
    data = f" &nbsp; data: <code>{html.escape(str(parts.data_name))}</code>" if parts.data_name else ""
    tables = [
        html_table(fit_statistics(parts), "Fit"),
        html_table(random_effects_table(parts), "Random effects"),
        html_table(rounded(parts.coef_table), "Fixed effects"),
    ]
    boxes = "".join(f"<div style='margin-right:2em'>{t}</div>" for t in tables)
    warnings = "".join(f"<div style='color:#a00'>{html.escape(w)}</div>"
                       for w in parts.fit_warnings + [c for c in parts.convergence if "code: 0" not in c])
    return (f"<div class='bayesmix-fit'><div><b>{html.escape(title)}</b></div>"
            f"<div>formula: <code>{html.escape(parts.formula)}</code>{data}</div>"
            f"<div style='display:flex;flex-wrap:wrap;align-items:flex-start'>{boxes}</div>{warnings}"
            f"<details><summary>lme4 summary (text)</summary><pre>{html.escape(text)}</pre></details></div>")
