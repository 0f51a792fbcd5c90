"""The safe R-expression evaluator: R's grammar and deparse, its function table, the
model-frame state for new data, and refusal of everything that is not an R formula term.

Expected numbers marked "R" were printed by R 4.x (lme4 1.1-31's R) with options(digits=17).
"""

import pickle

import numpy as np
import pandas as pd
import pytest

from bayesmix.errors import DataError, DataWarning, FormulaError
from bayesmix.spec.reval import Evaluator, FrameState
from bayesmix.spec.rexpr import Binary, Call, Name, Paren, parse, value_names


@pytest.fixture
def data():
    return pd.DataFrame(
        {
            "Days": np.arange(10.0),
            "x": np.linspace(1.0, 3.0, 10),
            "x2": np.arange(10) * 2,
            "f": list("abcabcabca"),
            "g": pd.Categorical(list("QPQPQPQPQP"), categories=["Q", "P", "unused"]),
            "o": pd.Categorical(list("lmhlmhlmhl"), categories=["l", "m", "h"], ordered=True),
            "b": [True, False] * 5,
        }
    )


def value(text, frame):
    return Evaluator(frame).evaluate(text)


# --- grammar: precedence and parentheses ---------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("-2^2", -4.0),  # '^' binds tighter than unary minus
        ("(-2)^2", 4.0),
        ("2^3^2", 512.0),  # right associative
        ("2**3", 8.0),  # R reads ** as ^
        ("2^-1*4", 2.0),  # a sign may start the exponent; '*' applies after
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("10 - 4 - 3", 3.0),  # left associative
        ("12 / 3 / 2", 2.0),
        ("7 %% 3 * 2", 2.0),  # %% binds tighter than *
        ("2 * 7 %/% 2", 6.0),
        ("-7 %% 3", 2.0),  # the sign of the divisor, as R
        ("1e-3 * 1000", 1.0),
        ("1L + .5", 1.5),
        ("0x10", 16.0),
        ("pi", np.pi),
        ("+3", 3.0),
    ],
)
def test_arithmetic_follows_r_precedence(text, expected, data):
    assert value(text, data)[0] == pytest.approx(expected)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("!TRUE & FALSE", False),
        ("!(TRUE & FALSE)", True),
        ("1 < 2 & 2 < 3", True),
        ("!1 == 2", True),  # '!' applies to the whole comparison
        ("TRUE | FALSE & FALSE", True),  # & binds tighter than |
        ("TRUE && FALSE || TRUE", True),
        ("T & !F", True),
        ("3 %in% c(1, 3)", True),
    ],
)
def test_logic_follows_r_precedence(text, expected, data):
    assert bool(value(text, data)[0]) is expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("I(Days * (Days + 1))", lambda d: d.Days * (d.Days + 1)),
        ("I(x/(x2 + 10))", lambda d: d.x / (d.x2 + 10)),
        ("I((x + 1) * 2)", lambda d: (d.x + 1) * 2),
        ("I(2^(x + 1))", lambda d: 2 ** (d.x + 1)),
        ("I(x^2)", lambda d: d.x**2),
        ("I(-x^2)", lambda d: -(d.x**2)),
        ("I(Days - (x - 1))", lambda d: d.Days - (d.x - 1)),
        ("I(x / 2 * 3)", lambda d: d.x / 2 * 3),
        ("I(x > 2)", lambda d: d.x > 2),
    ],
)
def test_inner_parentheses_are_kept(text, expected, data):
    np.testing.assert_allclose(value(text, data), expected(data).to_numpy(dtype=float), rtol=1e-15)


def test_parentheses_are_nodes_of_the_tree():
    node = parse("I(Days * (Days + 1))")
    assert isinstance(node, Call) and node.func == "I"
    product = node.args[0].value
    assert isinstance(product, Binary) and product.op == "*"
    assert isinstance(product.right, Paren) and product.right.inner == Binary("+", Name("Days"), parse("1"))


@pytest.mark.parametrize(
    "text, deparsed",  # R: deparse(quote(<text>))
    [
        ("I(Days*(Days+1))", "I(Days * (Days + 1))"),
        ("I(Days^2)", "I(Days^2)"),
        ("I(x / (x2+10))", "I(x/(x2 + 10))"),
        ("log(x+1)", "log(x + 1)"),
        ("poly(x,2)", "poly(x, 2)"),
        ("scale(x,center=FALSE)", "scale(x, center = FALSE)"),
        ("log(x + 1e-3)", "log(x + 0.001)"),
        ("I(x * 1e5)", "I(x * 1e+05)"),
        ("I(x * 123456)", "I(x * 123456)"),
        ("I(x + 1L)", "I(x + 1L)"),
        ("x %in% c('a', \"b\")", 'x %in% c("a", "b")'),
        ("x%%2", "x%%2"),
        ("a:b", "a:b"),
        ("!a==b", "!a == b"),
        ("-(x)^2", "-(x)^2"),
        ("x ** 2", "x^2"),
        ("`my col` + größe", "`my col` + größe"),
        ("total.fruits", "total.fruits"),
        ("y ~ x + (1|g)", "y ~ x + (1 | g)"),
        ("f(a, b = 2, 'c' = 3)", "f(a, b = 2, c = 3)"),
        ("x # a comment", "x"),
    ],
)
def test_deparse_prints_as_r(text, deparsed):
    assert parse(text).deparse() == deparsed


def test_value_names_are_the_names_used_as_values():
    assert value_names(parse("log(log) + I(x^2):f")) == ["log", "x", "f"]


# --- names ------------------------------------------------------------------------------------


def test_every_column_is_reachable():
    frame = pd.DataFrame({"größe": [1.0, 2.0], "my col": [3.0, 4.0], "total.fruits": [5.0, 6.0], 7: [8.0, 9.0]})
    np.testing.assert_array_equal(value("größe + `my col` + total.fruits + `7`", frame), [17.0, 21.0])


def test_a_column_may_shadow_a_function_or_a_constant():
    frame = pd.DataFrame({"log": [1.0, np.e], "pi": [1.0, 2.0]})
    np.testing.assert_allclose(value("log(log)", frame), [0.0, 1.0])
    np.testing.assert_array_equal(value("pi", frame), [1.0, 2.0])


def test_unknown_names_name_the_columns():
    with pytest.raises(DataError, match=r"column 'Dayz' not found in data \(columns: 'Days', 'x'"):
        value("Dayz + 1", pd.DataFrame({"Days": [1.0], "x": [2.0]}))


def test_duplicated_column_names_are_refused_by_name():
    frame = pd.DataFrame([[1.0, 2.0, 3.0]], columns=["a", "a", "b"])
    with pytest.raises(DataError, match="more than one column named 'a'"):
        value("a + b", frame)
    np.testing.assert_array_equal(value("b", frame), [3.0])  # the others stay usable


def test_mixed_object_columns_are_refused_by_name():
    with pytest.raises(DataError, match=r"column 'm' mixes value types \(number, string\)"):
        value("m", pd.DataFrame({"m": [1, "a"]}))


def test_column_kinds():
    frame = pd.DataFrame(
        {"num_obj": pd.Series([1, 2.5, None], dtype=object), "s": ["b", None, "a"], "i": pd.array([1, None, 3], dtype="Int64")}
    )
    np.testing.assert_array_equal(value("num_obj", frame), [1.0, 2.5, np.nan])
    s = value("s", frame)
    assert list(s.categories) == ["a", "b"] and list(s.codes) == [1, -1, 0]
    np.testing.assert_array_equal(value("i", frame), [1.0, np.nan, 3.0])
    categories = value("g", pd.DataFrame({"g": pd.Categorical([2, 10], categories=[10, 2])}))
    assert list(categories.categories) == ["10", "2"]  # R's levels are strings, in the given order


# --- the function table -----------------------------------------------------------------------


def test_math_functions(data):
    x = data.x.to_numpy()
    cases = {
        "log(x)": np.log(x), "log(x, base = 2)": np.log2(x), "log(x, 10)": np.log10(x), "log2(x)": np.log2(x),
        "log10(x)": np.log10(x), "log1p(x)": np.log1p(x), "exp(x)": np.exp(x), "expm1(x)": np.expm1(x),
        "sqrt(x)": np.sqrt(x), "abs(-x)": x, "sin(x)": np.sin(x), "cos(x)": np.cos(x), "floor(x)": np.floor(x),
        "ceiling(x)": np.ceil(x), "pmin(x, 2)": np.minimum(x, 2), "pmax(x, 2, Days)": np.maximum(np.maximum(x, 2), data.Days),
        "offset(x)": x, "I(x)": x, "exp(1)": np.full(10, np.e),
    }
    for text, expected in cases.items():
        np.testing.assert_allclose(value(text, data), expected, rtol=1e-14, err_msg=text)


def test_round_is_r_round():
    frame = pd.DataFrame({"v": [0.15, 2.675, -0.5, 1.5, 2.5, 0.285]})
    np.testing.assert_array_equal(value("round(v)", frame), [0.0, 3.0, -0.0, 2.0, 2.0, 0.0])  # half to even
    np.testing.assert_array_equal(value("round(v, 2)", frame)[:2], [0.15, 2.67])  # R: 2.675 is below 2.675
    assert value("round(v, digits = 1)", frame)[0] == 0.1  # R 4: 0.15 -> 0.1


def test_log_of_negative_values_warns_as_r():
    with pytest.warns(DataWarning, match="NaNs produced"):
        out = value("log(v)", pd.DataFrame({"v": [-1.0, 1.0]}))
    assert np.isnan(out[0]) and out[1] == 0.0


def test_scale_uses_the_n_minus_1_sd():
    frame = pd.DataFrame({"x": [1.0, 2, 4, 7, 11, 16]})
    centre, sd = 6.833333333333333, 5.7763887219149881  # R: attributes(scale(x))
    np.testing.assert_allclose(value("scale(x)", frame), (frame.x - centre) / sd, rtol=1e-14)
    np.testing.assert_allclose(value("scale(x, center = FALSE)", frame), frame.x / np.sqrt((frame.x**2).sum() / 5))
    np.testing.assert_allclose(value("scale(x, scale = FALSE)", frame), frame.x - centre)
    np.testing.assert_allclose(value("scale(x, center = 1, scale = 2)", frame), (frame.x - 1) / 2)


POLY_X = [1.0, 2, 4, 7, 11, 16]
POLY_R = [  # R: poly(c(1, 2, 4, 7, 11, 16), 3)
    [-0.45162230233094541, 0.44249767886871011, -0.422200330920749767],
    [-0.37420133621706930, 0.18964186237230413, 0.084440066184150786],
    [-0.21935940398931641, -0.20544535090332955, 0.527750413650935890],
    [0.01290349435231270, -0.52151512152383650, 0.232210182006411664],
    [0.32258735880781814, -0.42669419033768435, -0.654410512927160903],
    [0.70969218937720013, 0.52151512152383650, 0.232210182006411942],
]
POLY_PREDICT_R = [  # R: predict(poly(x, 3), c(0, 3, 20))
    [-0.52904326844482186, 0.732228301937507875, -1.16011268707445669],
    [-0.29678037010319280, -0.026339147551708884, 0.39076986184109297],
    [1.01937605383270546, 1.943829089316117198, 4.95240988170038055],
]


def test_poly_matches_r_on_training_and_new_data():
    ev = Evaluator(pd.DataFrame({"x": POLY_X}))
    np.testing.assert_allclose(ev.evaluate("poly(x, 3)"), POLY_R, atol=1e-13)
    new = Evaluator(pd.DataFrame({"x": [0.0, 3.0, 20.0]}), state=ev.state)
    np.testing.assert_allclose(new.evaluate("poly(x, 3)"), POLY_PREDICT_R, atol=1e-12)


def test_poly_raw_and_its_errors():
    frame = pd.DataFrame({"x": POLY_X})
    np.testing.assert_array_equal(value("poly(x, 2, raw = TRUE)", frame), np.column_stack([POLY_X, np.square(POLY_X)]))
    with pytest.raises(DataError, match="'degree' must be less than number of unique points"):
        value("poly(x, 6)", frame)
    with pytest.raises(DataError, match="missing values are not allowed in 'poly'"):
        value("poly(x, 2)", pd.DataFrame({"x": [1.0, np.nan, 2, 3]}))


def test_factor_functions(data):
    f = value("factor(x2)", data)
    assert list(f.categories) == [str(v) for v in range(0, 20, 2)]  # numbers sorted numerically
    assert list(value("factor(f, levels = c('c', 'a'))", data).codes[:3]) == [1, -1, 0]
    assert list(value("factor(g)", data).categories) == ["Q", "P"]  # order kept, unused dropped
    assert list(value("as.factor(g)", data).categories) == ["Q", "P", "unused"]
    o = value("ordered(f, levels = c('c', 'b', 'a'))", data)
    assert o.ordered and list(o.categories) == ["c", "b", "a"]
    assert value("factor(o)", data).ordered
    assert list(value("relevel(f, ref = 'c')", data).categories) == ["c", "a", "b"]
    assert list(value("relevel(f, 2)", data).categories) == ["b", "a", "c"]
    assert list(value("factor(b)", data).categories) == ["FALSE", "TRUE"]
    assert list(value("factor(f, labels = c('A', 'B', 'C'))", data).categories) == ["A", "B", "C"]


def test_as_numeric_of_a_factor_is_its_codes(data):
    np.testing.assert_array_equal(value("as.numeric(g)", data), [1, 2] * 5)
    np.testing.assert_array_equal(value("as.integer(factor(x2))", data), np.arange(1, 11))
    np.testing.assert_array_equal(value("as.integer(x)", data), np.trunc(data.x))


def test_factor_comparisons_and_interactions(data):
    np.testing.assert_array_equal(value("f == 'a'", data), data.f == "a")
    np.testing.assert_array_equal(value("o >= 'm'", data), data.o.isin(["m", "h"]))
    ab = value("f:g", data)
    assert list(ab.categories) == ["a:Q", "a:P", "b:Q", "b:P", "c:Q", "c:P"]  # used ones, the first slowest
    with pytest.raises(DataError, match="not meaningful for unordered factors"):
        value("f < 'b'", data)
    with pytest.raises(DataError, match="'\\+' is not meaningful for factors"):
        value("f + 1", data)


def test_cbind_makes_a_matrix(data):
    np.testing.assert_array_equal(value("cbind(x, Days - 1)", data), np.column_stack([data.x, data.Days - 1]))


def test_relevel_to_an_unknown_level_names_it(data):
    with pytest.raises(DataError, match="'ref' must be an existing level: 'z' is not one of 'a', 'b', 'c'"):
        value("relevel(f, ref = 'z')", data)


# --- the model-frame state --------------------------------------------------------------------

STATEFUL = ["scale(x)", "poly(x, 2)", "factor(x2)", "f", "g", "o", "as.numeric(f)", "relevel(f, 'c')",
            "scale(log(x), center = FALSE)", "I(scale(x)^2)", "f:g", "as.numeric(factor(Days %% 3))"]


@pytest.mark.parametrize("text", STATEFUL)
def test_new_rows_are_evaluated_with_the_training_parameters(text, data):
    learned = Evaluator(data)
    full = learned.evaluate(text)
    rows = [7, 2, 4]
    subset = data.iloc[rows].copy()
    subset["f"] = subset["f"].tolist()  # a string column of three rows knows only its own levels
    again = Evaluator(subset, state=learned.state).evaluate(text)
    if isinstance(full, pd.Categorical):
        assert list(again) == list(full[rows]) and list(again.categories) == list(full.categories)
    else:
        np.testing.assert_allclose(again, np.asarray(full)[rows], rtol=0, atol=1e-14)


def test_new_levels_follow_the_training_levels(data):
    learned = Evaluator(data)
    learned.evaluate("f")
    new = Evaluator(pd.DataFrame({"f": ["z", "b"]}), state=learned.state).evaluate("f")
    assert list(new.categories) == ["a", "b", "c", "z"] and list(new.codes) == [3, 1]


def test_the_state_is_small_and_picklable(data):
    ev = Evaluator(data)
    for text in STATEFUL:
        ev.evaluate(text)
    state = pickle.loads(pickle.dumps(ev.state))
    assert state == ev.state and isinstance(state, FrameState)
    assert len(pickle.dumps(state)) < 4000
    assert state.transforms["scale(x)"] == {"center": 2.0, "scale": pytest.approx(data.x.std())}


def test_applying_a_transform_the_training_never_saw_is_refused(data):
    with pytest.raises(FormulaError, match=r"scale\(x\) has no training-time parameters"):
        Evaluator(data, state=FrameState()).evaluate("scale(x)")


# --- refusals ---------------------------------------------------------------------------------

PAYLOADS = [
    "().__class__.__base__.__subclasses__()",
    "__import__('os').system('touch {marker}')",
    "x.__class__",
    "[c for c in ()]",
    "lambda: 0",
    "getattr(x, 'y')",
    "eval('1')",
    "exec('open(\"{marker}\", \"w\")')",
    "open('{marker}', 'w')",
    "I(open('{marker}', 'w'))",
    "x.__class__.__init__.__globals__",
    "__builtins__",
    "`__import__`('os')",
    "system('touch {marker}')",
    "x$y",
    "x@y",
    "x[1]",
    "{{x}}",
    "x <- 1",
    "base::system('touch {marker}')",
    "x |> log()",
    "function(x) x",
    "\\(x) x",
    "x; system('touch {marker}')",
    "(log)(x)",
    "log(x)(1)",
    "'log'(x)",
    "f'{{x}}'",
    "x if x else x",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_sandbox_escapes_are_refused_and_run_nothing(payload, data, tmp_path):
    marker = tmp_path / "pwned"
    text = payload.format(marker=marker)
    with pytest.raises(FormulaError):
        Evaluator(data).evaluate(text)
    assert not marker.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "text, message",
    [
        ("x; 1", "';' separates R statements"),
        ("x$y", r"'\$' \(element access\)"),
        ("x[1]", r"'\[' \(subscripting\)"),
        ("getattr(x, 'y')", r"unknown function getattr\(\).*may call only these functions: abs, .*scale"),
        ("f(x)", r"'f' is a column, not a function"),
        ("x.__class__", "looks like Python code"),
        ("lambda: 0", "looks like Python code"),
        ("__import__('os')", "names cannot start with '_'"),
        ("()", r"empty parentheses"),
        ("log(x", "unbalanced parentheses"),
        ("1 < x < 2", "does not chain comparisons"),
        ("scale(x, centre = FALSE)", "unused argument 'centre'"),
        ("'unterminated", "unterminated string"),
        ("if (x) 1", "R keyword 'if'"),
        ("x ~ y", "'~' can only separate the response"),
    ],
)
def test_refusals_name_the_construct(text, message, data):
    with pytest.raises(FormulaError, match=message):
        Evaluator(data).evaluate(text)


def test_partial_argument_names_match_as_in_r(data):
    np.testing.assert_allclose(value("scale(x, cent = FALSE)", data), value("scale(x, center = FALSE)", data))
