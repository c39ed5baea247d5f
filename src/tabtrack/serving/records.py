"""JSON records (what `serve` receives) as one Arrow table, read in C++ rather than dict by dict in Python: the
shadow's batches and the prediction log's writer read hundreds of records at a time in threads that share the
GIL with the requests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def as_arrow(records: list[dict[str, Any]], kinds: Mapping[str, str]):
    """`records` as a table of `kinds`' columns, in its order: "number" columns float64 (null where missing or
    null), the rest text. None where a value is not plainly its column's kind (a number sent as text, text given
    a number, an integer past 64 bits): the caller's own path types and checks those. Keys not in `kinds` are
    left out."""
    import pyarrow as pa

    schema = pa.schema([(name, pa.float64() if kind == "number" else pa.string()) for name, kind in kinds.items()])
    try:
        return pa.Table.from_pylist(records, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
