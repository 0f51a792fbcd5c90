"""Every exception and warning bayesmix raises, under one root, and the helper that warns at the user's line.

Each error also keeps the built-in base users caught before (``ValueError`` for bad input,
``RuntimeError`` for numerical failures), so ``except ValueError`` keeps working, while
``except bm.BayesmixError`` catches everything bayesmix refuses.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

_PACKAGE_DIR = str(Path(__file__).resolve().parent)


class BayesmixError(Exception):
    """The root of every error bayesmix raises on purpose."""


class DataError(BayesmixError, ValueError):
    """Data that does not fit the formula, with the column or term named."""


class FormulaError(BayesmixError, ValueError):
    """A formula bayesmix cannot read, with the construct named."""


class ArgumentError(BayesmixError, ValueError):
    """An argument of the wrong type or value, with the argument and the value named."""


class FamilyError(BayesmixError, ValueError):
    """An unknown family or link, or a response the family cannot model."""


class PirlsError(BayesmixError, RuntimeError):
    """Penalized iteratively reweighted least squares failed to converge.

    ``theta``, ``iteration`` and ``reason`` (what diverged) say where it failed, when known.
    """

    def __init__(self, message: str = "", *, theta=None, iteration: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.theta = theta
        self.iteration = iteration
        self.reason = reason if reason is not None else message

    def __reduce__(self):  # keyword-only state survives pickling (worker processes)
        return (_rebuild_pirls_error, (self.args[0] if self.args else "", self.theta, self.iteration, self.reason))


def _rebuild_pirls_error(message, theta, iteration, reason):
    return PirlsError(message, theta=theta, iteration=iteration, reason=reason)


class FitError(BayesmixError, RuntimeError):
    """A fit that ended without a finite criterion or finite estimates."""


class InferenceError(BayesmixError, ValueError):
    """An inference request that does not apply to the models given."""


class PriorError(BayesmixError, ValueError):
    """A prior specification that names an unknown parameter or distribution."""


class SamplingError(BayesmixError, RuntimeError):
    """Posterior sampling failed or its result cannot be trusted."""


class RowsRequiredError(BayesmixError, RuntimeError):
    """A method of a fit to a Dask DataFrame needs the rows, which stayed on the cluster."""


class BayesmixWarning(UserWarning):
    """The root of every warning bayesmix issues."""


class ConvergenceWarning(BayesmixWarning):
    """The optimizer did not report convergence, or lme4's checks at the optimum failed."""


class SingularFitWarning(BayesmixWarning):
    """A variance component (or correlation) is estimated on its boundary."""


class SeparationWarning(BayesmixWarning):
    """Fitted probabilities numerically 0 or 1: complete or quasi-complete separation."""


class DataWarning(BayesmixWarning):
    """Rows dropped for missing values, columns dropped for rank deficiency, and the like."""


def user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside bayesmix.

    Counting frames by hand breaks whenever a call path changes; walking the stack does not.
    """
    frame = sys._getframe(1)
    level = 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level


def warn(message: str, category: type[Warning] = BayesmixWarning) -> None:
    """Issue a warning attributed to the user's line (the first caller outside bayesmix)."""
    # user_stacklevel() counts from its caller (this function); warnings.warn counts from here too.
    warnings.warn(message, category, stacklevel=user_stacklevel())
