"""One root for every bayesmix error, the old built-in bases kept, and warnings pointed at the user's line."""

import warnings

import numpy as np
import pytest

import bayesmix as bm
from bayesmix import errors


@pytest.mark.parametrize("cls, base", [
    (errors.DataError, ValueError), (errors.FormulaError, ValueError), (errors.ArgumentError, ValueError),
    (errors.FamilyError, ValueError), (errors.InferenceError, ValueError), (errors.PriorError, ValueError),
    (errors.PirlsError, RuntimeError), (errors.FitError, RuntimeError), (errors.SamplingError, RuntimeError),
])
def test_every_error_has_the_common_root_and_its_builtin_base(cls, base):
    assert issubclass(cls, errors.BayesmixError) and issubclass(cls, base)


def test_every_warning_is_a_bayesmix_warning():
    for cls in (errors.ConvergenceWarning, errors.SingularFitWarning, errors.SeparationWarning, errors.DataWarning):
        assert issubclass(cls, errors.BayesmixWarning) and issubclass(cls, UserWarning)


def test_missing_row_warning_points_at_the_callers_line():
    sleep = bm.load_dataset("sleepstudy").copy()
    sleep.loc[3, "Reaction"] = np.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    dropped = [w for w in caught if issubclass(w.category, errors.DataWarning)]
    assert dropped and dropped[0].filename == __file__


def test_singular_fit_warning_points_at_the_callers_line():
    dye2 = bm.load_dataset("Dyestuff2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bm.lmer("Yield ~ 1 + (1 | Batch)", dye2)
    singular = [w for w in caught if issubclass(w.category, errors.SingularFitWarning)]
    assert singular and singular[0].filename == __file__


def test_string_or_none_reml_is_refused_before_fitting():
    with pytest.raises(errors.ArgumentError, match="REML must be True or False, got 'no'"):
        bm.lmer("Reaction ~ Days + (1 | Subject)", bm.load_dataset("sleepstudy"), REML="no")
    with pytest.raises(errors.ArgumentError, match="got None"):
        bm.lmer("Reaction ~ Days + (1 | Subject)", bm.load_dataset("sleepstudy"), REML=None)
