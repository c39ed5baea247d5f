"""Loading and splitting big data: the same frames pandas and scikit-learn give, without holding the rows twice."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from tabtrack.data import load
from tabtrack.data.prepare import prepare_dataset, split_dataset


def _mixed_frame(rows: int = 2_000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=rows)
    x[::7] = np.nan
    return pd.DataFrame({
        "x": x,
        "n": rng.integers(0, 100, rows),
        "nullable": pd.array([None if i % 5 == 0 else i for i in range(rows)], dtype="Int64"),
        "text": [None if i % 11 == 0 else f"t{i % 4}" for i in range(rows)],
        "flag": rng.random(rows) > 0.5,
        "cat": pd.Categorical(rng.choice(["a", "b", "c"], rows)),
        "when": pd.date_range("2024-01-01", periods=rows, freq="h"),
        "y": rng.integers(0, 2, rows),
    })  # fmt: skip


@pytest.mark.parametrize("index", [False, None], ids=["no-index", "range-index"])
def test_parquet_read_in_column_groups_gives_pandas_frame(tmp_path, monkeypatch, index):
    path = tmp_path / "mixed.parquet"
    _mixed_frame().to_parquet(path, index=index)
    reads = []
    read_parquet = pd.read_parquet
    monkeypatch.setattr(pd, "read_parquet", lambda *a, **k: reads.append(k.get("columns")) or read_parquet(*a, **k))

    frame = load._read_parquet_in_groups(path, group_bytes=3 * 8 * 2_000)  # three columns a group

    assert reads == [["x", "n", "nullable"], ["text", "flag", "cat"], ["when", "y"]]
    pd.testing.assert_frame_equal(frame, read_parquet(path))


def _indexed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index("n")


def _two_level_columns(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_axis(pd.MultiIndex.from_tuples([("f", c) for c in frame.columns]), axis=1)


@pytest.mark.parametrize("shape", [_indexed, _two_level_columns])
def test_parquet_frames_beyond_plain_columns_are_read_whole(tmp_path, monkeypatch, shape):
    """A stored index would be decoded again with every group; MultiIndex columns are not plain names."""
    path = tmp_path / "shaped.parquet"
    shape(_mixed_frame()).to_parquet(path)
    reads = []
    read_parquet = pd.read_parquet
    monkeypatch.setattr(pd, "read_parquet", lambda *a, **k: reads.append(k.get("columns")) or read_parquet(*a, **k))

    frame = load._read_parquet_in_groups(path, group_bytes=8 * 2_000)

    assert reads == [None]
    pd.testing.assert_frame_equal(frame, read_parquet(path))


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_releasing_split_takes_the_rows_train_test_split_takes(task):
    frame = _mixed_frame().drop(columns=["when"])
    if task == "regression":
        frame["y"] = frame["x"].fillna(0) * 3 + frame["n"]
    dataset = prepare_dataset(frame, target="y", task=task)
    stratify = dataset.y if task == "classification" else None
    expected = train_test_split(dataset.X, dataset.y, test_size=0.25, random_state=3, stratify=stratify)
    columns, dtypes = list(dataset.X.columns), dataset.X.dtypes

    split = split_dataset(dataset, test_size=0.25, random_state=3, release_rows=True)

    got = [split.X_train, split.X_test, split.y_train, split.y_test]
    for value, want in zip(got[:2], expected[:2], strict=True):
        pd.testing.assert_frame_equal(value, want)
        # Models see the same arrays: same layout, so the same floating-point sums.
        numeric = dataset.numeric_columns
        assert np.asarray(value[numeric]).flags.f_contiguous == np.asarray(want[numeric]).flags.f_contiguous
    for value, want in zip(got[2:], expected[2:], strict=True):
        pd.testing.assert_series_equal(value, want)
    # The dataset keeps its schema and gives up its rows.
    assert list(dataset.X.columns) == columns and len(dataset.X) == 0
    pd.testing.assert_series_equal(dataset.X.dtypes, dtypes)


def test_releasing_split_never_holds_the_rows_twice():
    """numpy reports its allocations to tracemalloc: the split's peak over the data it starts from."""
    rows, width = 100_000, 20
    rng = np.random.default_rng(1)
    data_bytes = rows * width * 8

    def peak_while_splitting(release_rows: bool) -> int:
        tracemalloc.start()  # before the data exists, so that freeing it counts
        try:
            # One block per column, as a Parquet file read in column groups gives (and as columns are freed);
            # a regression target, so the splitter's own arrays (unstratified) are small next to the data.
            frame = pd.concat([pd.Series(rng.normal(size=rows), name=f"x{i}") for i in range(width)], axis=1)
            dataset = prepare_dataset(frame.assign(y=rng.normal(size=rows)), target="y")
            del frame
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            split = split_dataset(dataset, test_size=0.2, random_state=0, release_rows=release_rows)
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        assert len(split.X_train) + len(split.X_test) == rows
        return peak

    held_twice = peak_while_splitting(release_rows=False)
    released = peak_while_splitting(release_rows=True)
    assert held_twice >= data_bytes  # both halves over the source (and train_test_split's own arrays)
    # What is left is the same in both, the splitter's positions, then a column and the indexes.
    assert held_twice - released >= 0.8 * data_bytes, (held_twice, released)
