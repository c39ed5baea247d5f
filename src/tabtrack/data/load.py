"""Read CSV and Parquet files into a DataFrame, turning every failure into a DataError."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pandas as pd

from tabtrack.data.remote import shown
from tabtrack.errors import DataError

CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
PARQUET_SUFFIXES = {".parquet", ".pq"}


def load_table(path: str | Path) -> pd.DataFrame:
    """Load a CSV or Parquet file; raise DataError naming the problem and the fix."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file '{shown(path)}' not found; check the path (relative paths start at {Path.cwd()}).")
    if path.is_dir():
        raise DataError(f"data path '{shown(path)}' is a directory; pass a .csv or .parquet file.")
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        frame = _read_csv(path)
    elif suffix in PARQUET_SUFFIXES:
        frame = _read_parquet(path)
    else:
        raise DataError(
            f"unknown data format '{suffix or path.name}' for '{shown(path)}'; use a .csv or .parquet file."
        )
    if frame.shape[1] == 0:
        raise DataError(f"data file '{shown(path)}' has no columns.")
    if frame.shape[1] == 1 and suffix in CSV_SUFFIXES:
        _check_delimiter(path, str(frame.columns[0]))
    if len(frame) == 0:
        raise DataError(f"data file '{shown(path)}' has a header but no rows.")
    return frame


def read_head(path: str | Path, rows: int = 1000) -> pd.DataFrame:
    """The first `rows` rows of a CSV or Parquet file (a dataset's schema), holding little more than them: Parquet
    decodes a row group whole, so a file of one 600k-row group is read a few columns at a time."""
    path = Path(path)
    if path.suffix.lower() in PARQUET_SUFFIXES:
        try:
            return _read_parquet_in_groups(path, group_bytes=PARQUET_GROUP_BYTES // 8, head=rows)
        finally:
            release_freed_memory()  # what the groups took, back before the run's big allocations
    return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", nrows=rows)


def _read_csv(path: Path) -> pd.DataFrame:
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    _check_csv_header(path, sep)
    try:
        return pd.read_csv(path, sep=sep, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"data file '{shown(path)}' is not UTF-8 text ({exc.reason}); re-save it as UTF-8.") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"data file '{shown(path)}' is empty; it needs a header row and data rows.") from exc
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().splitlines()[-1]
        raise DataError(f"data file '{shown(path)}' is not valid CSV: {detail}") from exc


def _check_csv_header(path: Path, sep: str) -> None:
    """Catch what pandas would silently paper over: binary files and duplicate column names."""
    with path.open("rb") as handle:
        head = handle.read(64 * 1024)
    if not head.strip():
        raise DataError(f"data file '{shown(path)}' is empty; it needs a header row and data rows.")
    if b"\x00" in head:
        raise DataError(f"data file '{shown(path)}' looks binary, not CSV text; pass a .csv or .parquet file.")
    try:
        first_line = head.decode("utf-8").splitlines()[0]
    except UnicodeDecodeError as exc:
        raise DataError(f"data file '{shown(path)}' is not UTF-8 text ({exc.reason}); re-save it as UTF-8.") from exc
    names = next(csv.reader([first_line], delimiter=sep), [])
    seen: set[str] = set()
    duplicates = sorted({name for name in names if name in seen or seen.add(name)})
    if duplicates:
        raise DataError(
            f"data file '{shown(path)}' has duplicate column names: {', '.join(map(repr, duplicates))}; rename them."
        )


def _check_delimiter(path: Path, header: str) -> None:
    """One column whose name holds another separator: the file was saved with a different delimiter."""
    for sep, name, fix in ((";", "';'", "re-save it comma-separated"), ("\t", "tab", "rename it to .tsv"),
                           ("|", "'|'", "re-save it comma-separated")):  # fmt: skip
        if sep in header:
            raise DataError(
                f"data file '{shown(path)}' looks {name}-separated (its one column is named {header[:60]!r}); {fix}."
            )


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return _read_parquet_in_groups(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"data file '{shown(path)}' is not a readable Parquet file: {detail}") from exc
    finally:
        release_arrow_memory()


# Columns are read this many bytes of values at a time (see _read_parquet_in_groups).
PARQUET_GROUP_BYTES = 32 * 2**20


def _read_parquet_in_groups(
    path: Path, group_bytes: int = PARQUET_GROUP_BYTES, head: int | None = None
) -> pd.DataFrame:
    """The frame `pd.read_parquet(path)` returns, read a group of columns at a time when the file is big.

    A whole-file read holds the decoded Arrow table and the frame converted from it at once: on
    1M x 31 floats (237 MiB) it peaked 653 MiB over the imports, 2.75x the data; in 32 MiB groups,
    1.3x, 0.14 s slower. Each group goes through pandas' own reader, so dtypes and conversions are
    the same. Files whose frame is more than plain columns and rows (a stored index, which every group
    would read again; MultiIndex columns) are read whole. `head`: only the first rows of each group are kept."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as parquet:
        names = parquet.schema_arrow.names
        pandas_metadata = parquet.schema_arrow.pandas_metadata or {}
        rows = parquet.metadata.num_rows
    stored_index = any(isinstance(column, str) for column in pandas_metadata.get("index_columns", []))
    plain = not stored_index and len(pandas_metadata.get("column_indexes", [])) <= 1 and len(set(names)) == len(names)
    width = max(1, group_bytes // (8 * max(rows, 1)))  # columns a group, sized as float64 ones
    if not plain or len(names) <= width:
        return pd.read_parquet(path).iloc[:head]
    groups = []
    for start in range(0, len(names), width):
        group = pd.read_parquet(path, columns=names[start : start + width])
        groups.append(group if head is None else group.iloc[:head].copy())
        del group
        release_arrow_memory()  # the group's Arrow table, before the next one is decoded
    return pd.concat(groups, axis=1)


def release_arrow_memory() -> None:
    """Give freed Arrow memory back to the system. Arrow's allocator keeps what was freed for reuse: the
    Arrow table a Parquet file was read into, and the frame's own blocks (Arrow allocates them) once the
    run has split it. Measured: 625 MiB held after checking 1M x 31 floats, under everything training
    allocates next."""
    if "pyarrow" not in sys.modules:  # nothing was read through Arrow
        return
    import pyarrow

    pyarrow.default_memory_pool().release_unused()


def release_freed_memory() -> None:
    """Arrow's freed memory, and what C's allocator holds free, back to the system. glibc keeps freed
    heap blocks for reuse, and after big (mmapped) blocks are freed it serves more sizes from that heap:
    after checking 1M x 31 floats ~230 MiB were free yet resident, and training's big arrays, mmapped,
    never reuse them, so they sat under the run's peak."""
    release_arrow_memory()
    if sys.platform != "linux":
        return
    import contextlib
    import ctypes

    with contextlib.suppress(AttributeError, OSError):  # not glibc (musl has no malloc_trim)
        ctypes.CDLL(None).malloc_trim(0)
