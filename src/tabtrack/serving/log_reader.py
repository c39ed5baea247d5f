"""Reading the prediction log (serving/prediction_log.py writes it) back: the rows of a time window, of one model.

Each file's column statistics (Parquet keeps every column's min and max) say whether all of its rows are wanted,
none are, or some: only the last are filtered row by row, and a day partition outside the window is not opened.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd

from tabtrack.errors import TabtrackError

_WHO = ("timestamp", "model_name", "model_version", "model_run_id", "role")  # what a one-model read leaves out
ANSWERED = ("primary", "canary")  # the roles in which a model's answer went back to the caller


def read_log(
    location: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    run_id: str | None = None,
    with_ids: bool = True,
    roles: tuple[str, ...] = ANSWERED,
) -> pd.DataFrame:
    """The logged rows between `since` and `until` (UTC). `run_id`: only the rows of that model in one of `roles`
    (default: the requests it answered, as champion or canary; `("shadow",)`: those it scored in shadow), without
    the columns that say so; `with_ids=False` leaves out the request ids too.
    Text comes back as pandas categoricals: a million rows' strings become a few categories, not a million
    Python objects."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from tabtrack.data.remote import filesystem

    fs, root = filesystem(location.rstrip("/"))
    if not fs.exists(root):
        return pd.DataFrame()
    first, last = (since.strftime("%Y-%m-%d") if since else ""), (until.strftime("%Y-%m-%d") if until else "9999")
    files = [
        path
        for folder in fs.ls(root, detail=False)
        if (part := folder.rstrip("/").rsplit("/", 1)[-1]).startswith("date=") and first <= part[5:] <= last
        for path in fs.ls(folder, detail=False)
        if path.endswith(".parquet") and not path.rsplit("/", 1)[-1].startswith(("_", "."))  # being written
    ]
    metadata = {path: pq.read_metadata(path, filesystem=fs) for path in files}
    verdicts = {
        path: _verdict(meta, run_id=run_id, roles=roles, since=since, until=until) for path, meta in metadata.items()
    }
    files = [path for path in files if verdicts[path] != "none"]
    if not files:
        return pd.DataFrame()
    # Files written for other model versions may hold other input columns: the union of every file's columns.
    try:
        schema = pa.unify_schemas([metadata[path].schema.to_arrow_schema() for path in files],
                                  promote_options="permissive")  # fmt: skip
    except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
        raise TabtrackError(f"the prediction log at {location} holds files whose columns disagree ({exc}).") from exc
    conditions = []
    if since is not None:
        conditions.append(ds.field("timestamp") >= _utc(since))
    if until is not None:
        conditions.append(ds.field("timestamp") < _utc(until))
    columns = schema.names
    if run_id is not None:
        conditions.append(ds.field("model_run_id") == str(run_id))
        role = ds.field("role").isin(list(roles))
        conditions.append(role | ds.field("role").is_null() if "primary" in roles else role)  # null: before roles
        columns = [c for c in columns if c not in _WHO]
    if not with_ids:
        columns = [c for c in columns if c not in ("request_id", "row")]
    condition = None
    for part in conditions:
        condition = part if condition is None else condition & part
    tables = []
    for verdict, where in (("all", None), ("some", condition)):
        chosen = [path for path in files if verdicts[path] == verdict]
        if chosen:
            dataset = ds.dataset(chosen, schema=schema, format="parquet", filesystem=fs)
            tables.append(dataset.to_table(columns, filter=where))
    table = pa.concat_tables(tables)
    for name in [f.name for f in table.schema if f.name != "request_id" and pa.types.is_string(f.type)]:
        table = table.set_column(
            table.schema.get_field_index(name), name, table[name].combine_chunks().dictionary_encode()
        )
    return table.to_pandas(split_blocks=True)  # a frame of columns, not one copied 2-D block per dtype


def _verdict(
    meta, *, run_id: str | None, roles: tuple[str, ...], since: datetime | None, until: datetime | None
) -> str:
    """Whether "all", "none" or "some" of a file's rows are wanted, from its columns' min and max."""
    ranges = _ranges(meta)
    every = True
    if run_id is not None:
        for column, values in (("model_run_id", (str(run_id),)), ("role", roles)):
            if column == "role" and column not in meta.schema.names:  # written before there were shadows
                if "primary" not in roles:
                    return "none"
                continue
            if column not in ranges:
                every = False
                continue
            low, high = ranges[column]
            if not any(low <= value <= high for value in values):
                return "none"
            every &= low == high and low in values
    if since is not None or until is not None:
        if "timestamp" not in ranges:
            return "some"
        low, high = (_utc_timestamp(value) for value in ranges["timestamp"])
        if (since is not None and high < since) or (until is not None and low >= until):
            return "none"
        every &= (since is None or low >= since) and (until is None or high < until)
    return "all" if every else "some"


def _ranges(meta, names: tuple[str, ...] = ("model_run_id", "role", "timestamp")) -> dict[str, tuple[Any, Any]]:
    """These columns' min and max over the file's row groups, where every row group records them."""
    ranges: dict[str, tuple[Any, Any]] = {}
    for name in names:
        if name not in meta.schema.names:
            continue
        index = meta.schema.names.index(name)
        bounds = []
        for group in range(meta.num_row_groups):
            stats = meta.row_group(group).column(index).statistics
            if stats is None or not stats.has_min_max:
                break
            bounds.append((stats.min, stats.max))
        else:
            if bounds:
                ranges[name] = (min(low for low, _ in bounds), max(high for _, high in bounds))
    return ranges


def _utc_timestamp(value: Any) -> pd.Timestamp:
    moment = pd.Timestamp(value)
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment


def _utc(moment: datetime):
    import pyarrow as pa

    return pa.scalar(pd.Timestamp(moment).tz_convert("UTC"), pa.timestamp("ns", "UTC"))
