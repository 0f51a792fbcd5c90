"""Evaluate R expression trees on a data frame, and keep the model-frame state for new data.

An :class:`Evaluator` walks a tree from :mod:`bayesmix.spec.rexpr`: names are data
columns (or the constants ``pi``, ``T``, ``F``), calls go to the fixed table in
:mod:`bayesmix.spec.rfuncs`, operators have R's meaning.  Nothing is ever handed to
Python's ``eval``, and no attribute of any Python object is ever looked up from formula
text, so a formula can come from a web form or a config file.

The :class:`FrameState` is what R's ``makepredictcall`` and ``xlevels`` keep: learned
once on the training data (an evaluator without a state learns one), then used to
evaluate new rows exactly as the training rows were (``scale()`` with the training mean
and SD, ``poly()`` with the training coefficients, factors with the training levels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bayesmix.errors import DataError, DataWarning, FormulaError, warn
from bayesmix.spec.rexpr import (
    PYTHON_KEYWORDS,
    Binary,
    Call,
    Literal,
    Name,
    Node,
    Num,
    Paren,
    Str,
    Unary,
    parse,
    value_names,
)
from bayesmix.spec.rfuncs import (
    FUNCTIONS,
    allowed_functions,
    bind_arguments,
    python_name,
)
from bayesmix.spec.rvalues import (
    DataColumns,
    as_categorical,
    categorical_from_labels,
    categorical_labels,
    is_categorical,
    is_strings,
)

# Names R's base environment gives values; a data column of the same name wins, as in R.
CONSTANTS = {"pi": math.pi, "T": True, "F": False}


@dataclass
class FrameState:
    """Training-time parameters that rebuild identical columns for new rows (small, picklable).

    ``transforms``: deparsed call (``"scale(Days)"``) -> its parameters.
    ``levels``: deparsed expression (``"Subject"``, ``"factor(x)"``) -> (levels, ordered).
    """

    transforms: dict[str, dict] = field(default_factory=dict)
    levels: dict[str, tuple[tuple[str, ...], bool]] = field(default_factory=dict)

    def set_levels(self, key: str, levels, ordered: bool) -> None:
        # tolist() first: iterating an Arrow-backed Index converts element by element (~80 µs each)
        listed = levels.tolist() if hasattr(levels, "tolist") else list(levels)
        self.levels[key] = (tuple(map(str, listed)), bool(ordered))


class Evaluator:
    """Evaluates R expressions on one data frame; learns a :class:`FrameState` unless given one."""

    def __init__(self, data: pd.DataFrame, state: FrameState | None = None, *, learning: bool | None = None):
        """``learning`` defaults to ``state is None``; learning into a given state keeps what it holds
        (R computes ``scale()`` and ``poly()`` on all rows, before rows with missing values go)."""
        self.columns = DataColumns(data)
        self.data = data
        self.n = len(data)
        self.learning = state is None if learning is None else learning
        self.state = FrameState() if state is None else state
        # values by deparsed text: the model frame evaluates each variable for the missing-row
        # scan and again to build the matrices (a third of compiling a small model)
        self._values: dict[str, object] = {}

    def evaluate(self, expr: str | Node):
        """The value of ``expr`` with one entry per row (see :mod:`bayesmix.spec.rvalues`); the same
        text gives the same (shared, not to be modified) value."""
        node = parse(expr) if isinstance(expr, str) else expr
        key = node.deparse()
        if key not in self._values:
            run = _Run(self, key)
            self._values[key] = run.shaped(run.value_of(node))
        return self._values[key]

    def referenced_columns(self, expr: str | Node) -> list:
        """The data's column labels (as given, not as strings) that ``expr`` uses."""
        node = parse(expr) if isinstance(expr, str) else expr
        return [self.columns.labels[name] for name in value_names(node) if name in self.columns]

    def settle_levels(self, key: str, value: pd.Categorical) -> pd.Categorical:
        """Learning: remember the levels.  Applying: recode to the training levels (new ones appended)."""
        if self.learning:
            # the first evaluation sets them; the model matrix narrows them to the levels used
            self.state.levels.setdefault(key, (tuple(value.categories.tolist()), bool(value.ordered)))
            return value
        known = self.state.levels.get(key)
        return value if known is None else recode_levels(value, *known)


def recode_levels(value: pd.Categorical, levels: tuple[str, ...], ordered: bool) -> pd.Categorical:
    """``value`` coded by ``levels``; labels the training data did not have follow them, in order."""
    categories = list(value.categories)
    codes = np.asarray(value.codes)
    used = np.unique(codes[codes >= 0])
    known = set(levels)
    new_levels = list(levels) + [categories[i] for i in used if categories[i] not in known]
    index = {label: i for i, label in enumerate(new_levels)}
    mapping = np.array([index.get(c, -1) for c in categories] + [-1], dtype=np.int64)  # code -1 stays -1
    return pd.Categorical.from_codes(mapping[codes], categories=new_levels, ordered=ordered)


class CallContext:
    """What a function in the table may use: rows, errors and warnings, and the model-frame state."""

    def __init__(self, run: _Run, call: Call):
        self.run = run
        self.key = call.deparse()
        self.n = run.evaluator.n
        self.learning = run.evaluator.learning

    def recall(self) -> dict | None:
        params = self.run.evaluator.state.transforms.get(self.key)
        if params is None and not self.learning:
            raise FormulaError(
                f"{self.key} has no training-time parameters: new data can only be evaluated "
                "with the terms of the fitted formula"
            )
        return params

    def remember(self, params: dict) -> None:
        # The first evaluation wins: R computes these on the whole data, before rows are dropped.
        self.run.evaluator.state.transforms.setdefault(self.key, params)

    def fail(self, message: str) -> DataError:
        return DataError(f"{self.key}: {message} (in {self.run.root!r})")

    def warn(self, message: str) -> None:
        warn(f"In {self.key}: {message}", DataWarning)


class _Run:
    """One evaluation: the tree walk, with the whole expression's text for messages."""

    def __init__(self, evaluator: Evaluator, root: str):
        self.evaluator = evaluator
        self.root = root

    def value_of(self, node: Node):
        value = self._dispatch(node)
        if is_categorical(value) and not isinstance(node, Literal | Num | Str):
            value = self.evaluator.settle_levels(node.deparse(), value)
        return value

    def _dispatch(self, node: Node):
        if isinstance(node, Num):
            return np.asarray(node.value, dtype=float)
        if isinstance(node, Str):
            return np.asarray(node.value)
        if isinstance(node, Literal):
            return None if node.value is None else np.asarray(node.value)
        if isinstance(node, Name):
            return self.lookup(node.name)
        if isinstance(node, Paren):
            return self.value_of(node.inner)
        if isinstance(node, Call):
            return self.call(node)
        if isinstance(node, Unary):
            return self.unary(node.op, self.value_of(node.operand))
        if isinstance(node, Binary):
            return self.binary(node.op, node)
        raise FormulaError(f"cannot evaluate {node!r} in {self.root!r}")

    # --- names and calls ---------------------------------------------------------------------

    def lookup(self, name: str):
        columns = self.evaluator.columns
        if name in columns:
            return columns.value(name)
        if name in CONSTANTS:
            return np.asarray(CONSTANTS[name])
        if "__" in name or name in PYTHON_KEYWORDS:
            raise FormulaError(
                f"{name!r} in {self.root!r} looks like Python code: a formula is an R expression over "
                f"the data's columns and may call only these functions: {allowed_functions()}"
            )
        hint = f"; {name} is a function: call it as {name}(...)" if name in FUNCTIONS else ""
        raise DataError(f"column {name!r} not found in data (columns: {columns.describe()}){hint}")

    def call(self, node: Call):
        func = FUNCTIONS.get(node.func)
        if func is None:
            hint = f" ({node.func!r} is a column, not a function)" if node.func in self.evaluator.columns else ""
            raise FormulaError(
                f"unknown function {node.func}() in {self.root!r}{hint}; "
                f"a formula may call only these functions: {allowed_functions()}"
            )
        positional, named = bind_arguments(node.func, func, [(a.name, a.value) for a in node.args])
        values = [self.value_of(v) for v in positional]
        keywords = {python_name(k): self.value_of(v) for k, v in named.items()}
        try:
            return func.impl(CallContext(self, node), *values, **keywords)
        except TypeError as exc:  # a required argument is missing
            raise FormulaError(f"{node.deparse()}: missing a required argument (in {self.root!r})") from exc

    # --- operators ---------------------------------------------------------------------------

    def unary(self, op: str, value):
        if op == "~":
            raise FormulaError(f"'~' can only separate the response from the terms, not appear in {self.root!r}")
        if op == "!":
            return ~self.logical(value, "!")
        number = self.numeric(value, op)
        return -number if op == "-" else +number

    def binary(self, op: str, node: Binary):
        if op == "~":
            raise FormulaError(f"'~' can only separate the response from the terms, not appear in {self.root!r}")
        left, right = self.value_of(node.left), self.value_of(node.right)
        if op in _ARITHMETIC:
            a, b = self.aligned(self.numeric(left, op), self.numeric(right, op), op)
            with np.errstate(all="ignore"):
                return _ARITHMETIC[op](a, b)
        if op in _COMPARISON:
            return self.compare(op, left, right)
        if op in ("&", "|", "&&", "||"):
            return self.logic(op, left, right)
        if op == "%in%":
            return self.membership(left, right)
        if op == ":":
            return self.colon(left, right)
        raise FormulaError(f"the operator {op!r} is not available in a formula (in {self.root!r})")

    def numeric(self, value, op: str) -> np.ndarray:
        if is_categorical(value):
            raise DataError(f"{op!r} is not meaningful for factors (in {self.root!r})")
        if value is None or is_strings(value):
            raise DataError(f"non-numeric argument to {op!r} (in {self.root!r})")
        return np.asarray(value, dtype=float)

    def logical(self, value, op: str) -> np.ndarray:
        if is_categorical(value) or value is None or is_strings(value):
            raise DataError(f"{op!r} needs logical or numeric values (in {self.root!r})")
        arr = np.asarray(value)
        return arr if arr.dtype == bool else arr != 0

    def aligned(self, a: np.ndarray, b: np.ndarray, op: str):
        """R's recycling, limited to what a model frame needs: equal lengths, or a single value."""
        la, lb = (len(a) if a.ndim else 1), (len(b) if b.ndim else 1)
        if la != lb and 1 not in (la, lb):
            raise DataError(f"the two sides of {op!r} have {la} and {lb} values (in {self.root!r})")
        if a.ndim == 2 and b.ndim == 1 and lb > 1:
            b = b[:, None]  # a column vector scales every column of a matrix, as R recycles
        if b.ndim == 2 and a.ndim == 1 and la > 1:
            a = a[:, None]
        return a, b

    def compare(self, op: str, left, right):
        if is_categorical(left) or is_categorical(right):
            return self.compare_factor(op, left, right)
        if is_strings(left) or is_strings(right):
            a, b = np.asarray(left).astype(str), np.asarray(right).astype(str)
        else:
            a, b = self.aligned(self.numeric(left, op), self.numeric(right, op), op)
        with np.errstate(invalid="ignore"):
            return _COMPARISON[op](a, b)

    def compare_factor(self, op: str, left, right):
        labels = [categorical_labels(v) if is_categorical(v) else np.asarray(v).astype(object) for v in (left, right)]
        if op in ("==", "!="):
            equal = np.asarray(labels[0] == labels[1], dtype=bool)
            return equal if op == "==" else ~equal
        factor = left if is_categorical(left) else right
        if not factor.ordered:
            raise DataError(f"{op!r} is not meaningful for unordered factors (in {self.root!r})")
        ranks = [self.level_ranks(v, factor) for v in (left, right)]
        return _COMPARISON[op](*ranks)

    def level_ranks(self, value, factor: pd.Categorical) -> np.ndarray:
        if is_categorical(value):
            return np.where(value.codes < 0, np.nan, value.codes).astype(float)
        levels = list(factor.categories)
        labels = np.atleast_1d(np.asarray(value).astype(str))
        unknown = [lv for lv in labels if lv not in levels]
        if unknown:
            raise DataError(f"{unknown[0]!r} is not a level of the ordered factor (in {self.root!r})")
        return np.array([levels.index(lv) for lv in labels], dtype=float)

    def logic(self, op: str, left, right):
        a, b = self.logical(left, op), self.logical(right, op)
        if op in ("&&", "||"):
            if a.size != 1 or b.size != 1:
                raise DataError(f"{op!r} needs single values; use {op[0]!r} for element-wise logic (in {self.root!r})")
            return np.asarray(bool(a) and bool(b) if op == "&&" else bool(a) or bool(b))
        a, b = self.aligned(a, b, op)
        return a & b if op == "&" else a | b

    def membership(self, left, right):
        def labels(v):
            return categorical_labels(v) if is_categorical(v) else np.atleast_1d(np.asarray(v))

        a, table = labels(left), labels(right)
        if a.dtype.kind in "UO" or table.dtype.kind in "UO":
            return np.isin(a.astype(str), table.astype(str))
        return np.isin(a.astype(float), table.astype(float))

    def colon(self, left, right):
        """R's ':' on two factors is their interaction (levels of the first varying slowest).

        A column of numbers joined to a factor or to another column is taken as a factor, as
        lme4 users write ``(1 | batch:cask)`` for integer-coded groups; R's sequence ``1:3``
        of two single numbers stays a sequence.
        """
        n = self.evaluator.n
        if is_categorical(left) or is_categorical(right) or n > 1 and np.size(left) == n and np.size(right) == n:
            return interaction(self.factor_side(left), self.factor_side(right))
        a, b = self.numeric(left, ":"), self.numeric(right, ":")
        if a.size != 1 or b.size != 1:
            raise DataError(f"':' joins two factors, or two single numbers into a sequence (in {self.root!r})")
        start, stop = float(a), float(b)
        step = 1.0 if stop >= start else -1.0
        return start + step * np.arange(math.floor(abs(stop - start) + 1e-10) + 1)

    def factor_side(self, value) -> pd.Categorical:
        if value is None or np.ndim(value) > 1 or not is_categorical(value) and np.size(value) != self.evaluator.n:
            raise DataError(f"':' joins two factors (or columns taken as factors) (in {self.root!r})")
        return as_categorical(value)

    # --- the final value ---------------------------------------------------------------------

    def shaped(self, value):
        """One entry per row: single values recycled, text made categorical, arrays copied."""
        n = self.evaluator.n
        if value is None:
            raise FormulaError(f"{self.root!r} evaluates to NULL, not to a value per row")
        if is_categorical(value):
            return value if len(value) == n else self.wrong_length(len(value))
        arr = np.asarray(value)
        if arr.ndim == 0 or arr.shape == (1,):  # a single value is recycled, as R
            arr = np.full(n, arr.reshape(()).item())
        if len(arr) != n:
            self.wrong_length(len(arr))
        if is_strings(arr):
            return categorical_from_labels(arr)
        return arr.copy() if arr.dtype == bool else np.array(arr, dtype=float)

    def wrong_length(self, length: int):
        raise DataError(f"{self.root!r} has {length} values but the data have {self.evaluator.n} rows")


def interaction(a: pd.Categorical, b: pd.Categorical) -> pd.Categorical:
    """``a:b`` for factors, with only the combinations that occur (R's ``factor(a:b)``)."""
    nb = len(b.categories)
    ca, cb = np.asarray(a.codes, dtype=np.int64), np.asarray(b.codes, dtype=np.int64)  # pandas codes may be int8
    combined = np.where((ca < 0) | (cb < 0), -1, ca * nb + cb)
    used = np.unique(combined[combined >= 0])
    labels = [f"{a.categories[c // nb]}:{b.categories[c % nb]}" for c in used]
    codes = np.full(len(combined), -1, dtype=np.int64)
    codes[combined >= 0] = np.searchsorted(used, combined[combined >= 0])
    return pd.Categorical.from_codes(codes, categories=labels)


_ARITHMETIC = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.divide,
    "^": np.power,
    "%%": np.mod,  # R's %% takes the sign of the divisor, as np.mod
    "%/%": np.floor_divide,
}
_COMPARISON = {
    "<": np.less,
    ">": np.greater,
    "<=": np.less_equal,
    ">=": np.greater_equal,
    "==": np.equal,
    "!=": np.not_equal,
}
