"""Helpers the inference modules share: ML refits of REML fits, model-kind checks, progress reporting."""

from __future__ import annotations

import sys
import warnings
import weakref

import numpy as np

_ML_REFITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class InferenceError(ValueError):
    """An inference method asked of a model it does not apply to, with the reason named."""


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
    from bayesmix.api import fit_lmm
    from bayesmix.threads import blas_threads_for, dense_dimension

    with warnings.catch_warnings():
        # the REML fit already reported singularity; the ML refit repeats it
        warnings.filterwarnings("ignore", message="boundary \\(singular\\) fit")
        with blas_threads_for(dense_dimension(model.compiled)):
            ml = fit_lmm(model.compiled, REML=False, data_name=model.data_name)
    _ML_REFITS[model] = ml
    return ml


def message(text: str) -> None:
    """An R-style message: informational, on stderr, not a warning."""
    print(text, file=sys.stderr)


class Progress:
    """A progress bar: tqdm when installed, else a plain counter on stderr; silent when disabled."""

    def __init__(self, total: int, enabled: bool, desc: str):
        self.total = total
        self.done = 0
        self._bar = None
        self._enabled = enabled and total > 0
        self._desc = desc
        self._last_shown = -1
        if self._enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, desc=desc, file=sys.stderr)

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        percent = int(100 * self.done / self.total)
        if percent != self._last_shown and (percent % 5 == 0 or self.done == self.total):
            self._last_shown = percent
            sys.stderr.write(f"\r{self._desc}: {self.done}/{self.total} ({percent}%)")
            sys.stderr.flush()

    def close(self) -> None:
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            sys.stderr.write("\n")
            sys.stderr.flush()


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
