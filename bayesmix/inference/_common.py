"""Helpers the inference modules share: ML refits of REML fits, model-kind checks, progress reporting."""

from __future__ import annotations

import sys
import warnings
import weakref

import numpy as np

from bayesmix.engine.fit import fit_lmm
from bayesmix.engine.lmm import ProfiledDeviance
from bayesmix.errors import InferenceError
from bayesmix.results.base import MixedModelResult
from bayesmix.results.builder import build_lmer
from bayesmix.rformat import r_format_number

_ML_REFITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def is_lmm(model) -> bool:
    return bool(getattr(model, "is_lmm", False))


def require_lmm(model, what: str) -> None:
    """Refuse, with the reason, methods that exist only for linear mixed models."""
    if not is_lmm(model):
        raise InferenceError(
            f"{what} is defined for linear mixed models (lmer fits) only; this is a GLMM "
            f"({getattr(model, 'family_name', '?')} family), whose fixed-effect tests are asymptotic z tests. "
            "Use a likelihood-ratio test (bm.anova), profile intervals (confint(method='profile')) "
            "or the parametric bootstrap (bm.pb_test) instead."
        )


def refit_ml(model):
    """The model refitted by maximum likelihood (lme4's ``refitML``); ML fits and GLMMs come back as they are."""
    if not is_lmm(model) or not model.REML:
        return model
    cached = _ML_REFITS.get(model)
    if cached is not None:
        return cached
    with warnings.catch_warnings():
        # the REML fit already reported singularity; the ML refit repeats it
        warnings.filterwarnings("ignore", message="boundary \\(singular\\) fit")
        # the REML fit's cross-products serve the ML fit too (a Dask fit has nothing else)
        deviance = ProfiledDeviance(model.compiled.terms, np.zeros((0, model.compiled.p)), None, None, reml=False,
                                    cross=model.profiled_deviance.cross)
        ml = build_lmer(model.compiled, fit_lmm(model.compiled, REML=False, deviance=deviance), data_name=model.data_name)
    _ML_REFITS[model] = ml
    return ml


def message(text: str) -> None:
    """An R-style message: informational, on stderr, not a warning."""
    print(text, file=sys.stderr)


class Progress:
    """A tqdm progress bar (``tqdm.auto``: a widget in Jupyter, text in a terminal); silent when disabled.

    ``with Progress(n, enabled, "desc") as bar: ... bar.update()`` closes the bar even when the work fails.
    ``delay``: seconds before the bar appears, so that work that ends sooner prints nothing.
    """

    def __init__(self, total: int, enabled: bool, desc: str, delay: float = 0.0):
        from tqdm import TqdmWarning

        with warnings.catch_warnings():
            # Jupyter without ipywidgets: tqdm falls back to its text bar, after a warning we need not repeat
            warnings.simplefilter("ignore", TqdmWarning)
            from tqdm.auto import tqdm

        self.total = total
        self.done = 0
        self._bar = tqdm(total=total, desc=desc, file=sys.stderr, disable=not (enabled and total > 0), delay=delay)

    def update(self, n: int = 1) -> None:
        self.done += n
        self._bar.update(n)

    def set_postfix_str(self, text: str) -> None:
        self._bar.set_postfix_str(text, refresh=False)  # shown at the next update (refreshing now would defeat delay)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def column_space_contains(big: np.ndarray, small: np.ndarray, tol: float = 1e-8) -> bool:
    """Whether every column of ``small`` is (numerically) a linear combination of ``big``'s columns."""
    if small.shape[1] == 0:
        return True
    if big.shape[1] == 0:
        return bool(np.all(np.abs(small) <= tol))
    coef, *_ = np.linalg.lstsq(big, small, rcond=None)
    resid = small - big @ coef
    scale = np.maximum(np.linalg.norm(small, axis=0), 1.0)
    return bool(np.all(np.linalg.norm(resid, axis=0) <= tol * scale * np.sqrt(len(small))))


def check_model_objects(models) -> None:
    for i, m in enumerate(models):
        if not isinstance(m, MixedModelResult):
            raise InferenceError(f"argument {i + 1} is not a fitted lmer/glmer model (got {type(m).__name__})")
    kinds = {is_lmm(m) for m in models}
    if len(kinds) > 1:
        raise InferenceError("cannot compare a linear mixed model with a GLMM: their likelihoods are not comparable")
    if not is_lmm(models[0]):
        families = {(m.family.comparable_name, m.link_name) for m in models}
        if len(families) > 1:
            raise InferenceError(f"the GLMMs have different families/links {sorted(families)}; their likelihoods are not comparable")
        quadrature = {m.nAGQ > 1 for m in models}
        if len(quadrature) > 1:
            raise InferenceError("cannot compare a Laplace (nAGQ = 1) fit with an adaptive-quadrature (nAGQ > 1) fit")


def check_same_data(models, labels) -> None:
    first = models[0]
    for m, label in zip(models[1:], labels[1:]):
        if m.nobs != first.nobs:
            raise InferenceError(
                f"models were not all fitted to the same size of dataset: {labels[0]} has {first.nobs} observations, "
                f"{label} has {m.nobs} (rows with missing values dropped differently?)"
            )
        if rowless(m) or rowless(first):
            same = _same_response_statistics(m, first)
        else:
            same = (np.allclose(m.compiled.y, first.compiled.y, equal_nan=True)
                    and np.allclose(m.compiled.weights, first.compiled.weights))
        if not same:
            raise InferenceError(
                f"models were not fitted to the same response: {labels[0]} ({first.compiled.formula.response}) "
                f"and {label} ({m.compiled.formula.response}) differ; likelihoods of different data are not comparable"
            )


def rowless(model) -> bool:
    """A fit to a Dask DataFrame: sufficient statistics, no rows (bayesmix.distributed)."""
    return bool(getattr(model.compiled, "rowless", False))


def _same_response_statistics(a, b) -> bool:
    """Without rows: the same response text, y'Wy and Σ log w (what the likelihoods' data terms use);
    for GLMMs the means and sums of squares of y, the weights and w·y."""
    if a.compiled.formula.response != b.compiled.formula.response or is_lmm(a) != is_lmm(b):
        return False
    if not is_lmm(a):
        (ma, sa), (mb, sb) = _response_moments(a), _response_moments(b)
        return bool(np.allclose(ma, mb, rtol=1e-10, atol=0) and np.allclose(sa, sb, rtol=1e-8, atol=1e-12))
    ca, cb = a.profiled_deviance.cross, b.profiled_deviance.cross
    return bool(np.isclose(ca.a_xx[-1, -1], cb.a_xx[-1, -1], rtol=1e-10, atol=0)
                and np.isclose(ca.sum_log_weights, cb.sum_log_weights, rtol=1e-10, atol=1e-10))


def _response_moments(model) -> tuple[np.ndarray, np.ndarray]:
    """Means and centred sums of squares of (y, w, w·y), from the rows or a rowless fit's row moments."""
    moments = getattr(model.compiled, "row_moments", None)
    if moments is not None:
        r = moments.response
        return r.mean[1:], np.diag(r.m2)[1:]
    c = model.compiled
    columns = np.column_stack([c.y, c.weights, c.weights * c.y])
    return columns.mean(axis=0), ((columns - columns.mean(axis=0)) ** 2).sum(axis=0)


def check_nested(small, large, small_label: str, large_label: str) -> None:
    """Small must be a special case of large: its fixed and random columns spanned by large's."""
    hint = " (pass check_nested=False to compare non-nested models by AIC/BIC only)"
    if rowless(small) or rowless(large):
        _check_nested_by_names(small, large, small_label, large_label, hint)
        return
    if not column_space_contains(large.compiled.X, small.compiled.X):
        raise InferenceError(
            f"models are not nested: the fixed effects of {small_label} ({', '.join(small.compiled.fixef_names)}) "
            f"are not contained in those of {large_label} ({', '.join(large.compiled.fixef_names)}){hint}"
        )
    for term in small.compiled.terms:
        same_group = [t.columns for t in large.compiled.terms if same_grouping(t, term)]
        if not same_group or not column_space_contains(np.hstack(same_group), term.columns):
            raise InferenceError(
                f"models are not nested: the random term ({term.expr} | {term.group}) of {small_label} "
                f"has no counterpart in {large_label} ({large.formula_display}){hint}"
            )
    if small.df == large.df and not (column_space_contains(small.compiled.X, large.compiled.X)):
        raise InferenceError(f"models {small_label} and {large_label} have the same number of parameters "
                             f"but different fixed effects: they are not nested{hint}")


def _check_nested_by_names(small, large, small_label, large_label, hint) -> None:
    """Nesting without the rows: small's fixed-effect columns among large's, each random term's
    columns among those of a term of large with the same grouping factor."""
    extra = [n for n in small.compiled.fixef_names if n not in large.compiled.fixef_names]
    if extra or (small.df == large.df and set(small.compiled.fixef_names) != set(large.compiled.fixef_names)):
        raise InferenceError(
            f"models are not nested: the fixed effects of {small_label} ({', '.join(small.compiled.fixef_names)}) "
            f"are not contained in those of {large_label} ({', '.join(large.compiled.fixef_names)}){hint}")
    for term in small.compiled.terms:
        columns = {c for t in large.compiled.terms if t.group == term.group for c in t.column_names}
        if not set(term.column_names) <= columns:
            raise InferenceError(
                f"models are not nested: the random term ({term.expr} | {term.group}) of {small_label} "
                f"has no counterpart in {large_label} ({large.formula_display}){hint}")


def percent_labels(level: float) -> list[str]:
    """lme4's column names: ``format.perc``, e.g. "2.5 %", "97.5 %"."""
    a = (1 - level) / 2
    return [f"{_format_percent(100 * p)} %" for p in (a, 1 - a)]


def _format_percent(x: float) -> str:
    return r_format_number(x, 3)


def same_grouping(a, b) -> bool:
    """Same partition of the observations into levels (codes may be numbered differently)."""
    if a.nlevels != b.nlevels or len(a.factor.codes) != len(b.factor.codes):
        return False
    pairs = set(zip(a.factor.codes.tolist(), b.factor.codes.tolist()))
    return len(pairs) == a.nlevels
