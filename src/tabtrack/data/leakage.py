"""Target leakage: a feature equal to the target, or one that predicts it perfectly (a category that maps 1:1 to
the classes, a number whose ranges separate the classes, a linear copy of a regression target), so that a model
would learn the answer. Pure: which columns leak, and how; data/validate.py words the findings."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tabtrack.data.prepare import detect_task

# Columns are compared on this many rows first: the first rows nearly always settle it.
SAMPLE_ROWS = 10_000


def leaking_columns(frame: pd.DataFrame, target: str, *, min_rows: int) -> list[tuple[str, str]]:
    """`(column, how it leaks)` for each feature that leaks the target. Below `min_rows` labelled rows only an
    identical copy counts: a feature can separate a few rows' classes by chance."""
    labelled = frame.loc[frame[target].notna()]
    y = labelled[target]
    classification = detect_task(y) == "classification"
    y_codes = pd.Series(pd.factorize(y)[0], index=y.index)  # one hashing pass, reused for every column
    enough_rows = len(labelled) >= min_rows
    found = []
    for column in (c for c in labelled.columns if c != target):
        x = labelled[column]
        if x.isna().all():
            continue
        how = _leak(x, y, y_codes, classification=classification, enough_rows=enough_rows)
        if how:
            found.append((column, how))
    return found


def _leak(x: pd.Series, y: pd.Series, y_codes: pd.Series, *, classification: bool, enough_rows: bool) -> str | None:
    numeric = pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x)
    y_numeric = pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y)
    if _identical(x, y, numeric=numeric and y_numeric):
        return "is identical to"
    if not enough_rows or x.isna().any():
        return None
    if classification:
        # Every value of x maps to one class (and values repeat, so x is not an ID). A sample with mostly
        # distinct values settles "continuous" without counting a million of them.
        sample = x.iloc[:SAMPLE_ROWS]
        repeats = sample.nunique() <= len(sample) // 2 and 2 <= x.nunique() <= len(x) // 2
        if repeats and (y_codes.groupby(x.to_numpy()).nunique() == 1).all():
            return "predicts"
        if numeric and _classes_separated(x.astype("float64"), y_codes):
            return "separates the classes of"
        return None
    varies = numeric and y_numeric and x.std() > 0 and y.std() > 0
    if varies and abs(np.corrcoef(x.astype("float64"), y.astype("float64"))[0, 1]) > 0.9999:
        return "is a linear function of"
    return None


def _identical(x: pd.Series, y: pd.Series, *, numeric: bool) -> bool:
    # The first rows nearly always differ: compare them before converting a million of each.
    head = slice(None, SAMPLE_ROWS)
    return _same_values(x.iloc[head], y.iloc[head], numeric=numeric) and (
        len(x) <= SAMPLE_ROWS or _same_values(x, y, numeric=numeric)
    )


def _same_values(x: pd.Series, y: pd.Series, *, numeric: bool) -> bool:
    if numeric:
        return np.array_equal(x.to_numpy(dtype="float64"), y.to_numpy(dtype="float64"), equal_nan=True)
    return x.astype(str).equals(y.astype(str))


def _classes_separated(x: pd.Series, y_codes: pd.Series) -> bool:
    """True when the classes occupy disjoint ranges of x, so thresholds on x alone classify perfectly."""
    if len(x) > SAMPLE_ROWS:
        head = _class_ranges(x.iloc[:SAMPLE_ROWS], y_codes.iloc[:SAMPLE_ROWS])
        if len(head) >= 2 and not _disjoint(head):
            return False  # ranges that overlap among the first rows overlap in the whole column
    return _disjoint(_class_ranges(x, y_codes))


def _class_ranges(x: pd.Series, y_codes: pd.Series) -> pd.DataFrame:
    return x.groupby(y_codes).agg(["min", "max"]).sort_values("min")


def _disjoint(ranges: pd.DataFrame) -> bool:
    return len(ranges) >= 2 and bool((ranges["min"].to_numpy()[1:] > ranges["max"].to_numpy()[:-1]).all())
