"""The prediction log: each row `tabtrack serve` and `tabtrack predict` score, its prediction and class
probabilities, the model that answered (name, version, run id), the request's id and the time, as Parquet files
partitioned by day (`date=YYYY-MM-DD/`) under a folder or any fsspec URL (`s3://bucket/prefix`).

Written off the request path: a request puts its rows on a bounded queue and goes on. `serve` turns what is
queued into Arrow between requests (`convert`, on its event loop); a writer thread converts what is left once a
second and writes what is held, a file per 5,000 rows. A full queue or a location that cannot be written never
slows or fails a request: its rows are dropped and counted (`stats`, GET /health).

Columns: the model's input columns (numbers as float64, the rest as text; an input named like one of the log's
own columns as `input.<name>`), then `request_id`, `row` (its place in the request), `timestamp` (UTC),
`model_name`, `model_version`, `model_run_id`, `role`, `prediction` and `proba_<class>`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from tabtrack.serving.records import as_arrow

log = logging.getLogger(__name__)

DEFAULT_LOCATION = os.path.join(".tabtrack", "predictions")
OWN_COLUMNS = ("request_id", "row", "timestamp", "model_name", "model_version", "model_run_id", "role", "prediction")
BATCH_ROWS = 5_000
FLUSH_SECONDS = 1.0
QUEUE_REQUESTS = 20_000  # requests waiting to be written; past this, new ones are dropped (and counted)


@dataclass
class _Scored:
    rows: Any  # a list of records or a DataFrame, as the model was given them
    predictions: Any
    proba: Any
    request_ids: list[str]  # the requests the rows came in, in order,
    counts: list[int]  # and how many rows each
    when: float
    role: str


class Waiting:
    """A bounded line of work from the requests to one background thread. A deque, not a Queue: Queue takes a
    lock and a condition for every put and every get, on the requests' thread and on the writer's."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: deque = deque()

    def put(self, item: Any) -> bool:
        """False, and the item left out, when the line is full."""
        if len(self._items) >= self.limit:
            return False
        self._items.append(item)  # atomic: no lock needed
        return True

    def take_all(self) -> list:
        """What is waiting now (only the one consumer takes, so these items are there to take)."""
        return [self._items.popleft() for _ in range(len(self._items))]

    def __len__(self) -> int:
        return len(self._items)


def new_request_id() -> str:
    return uuid.uuid4().hex


class PredictionLog:
    """Logs scored rows of one model at `location`. `columns`: each input column's kind ("number", "text" or
    "any"); `sample`: the share of requests logged (a request is in or out as a whole, decided by its id);
    `max_waiting`: requests queued for the writer before new ones are dropped."""

    def __init__(
        self,
        location: str,
        *,
        model: Mapping[str, Any],
        columns: Mapping[str, str],
        classes: Sequence | None,
        sample: float = 1.0,
        max_waiting: int = QUEUE_REQUESTS,
    ) -> None:
        from tabtrack.data.remote import filesystem

        self.location = location.rstrip("/")
        self.model = {
            key: "" if model.get(key) is None else str(model.get(key)) for key in ("name", "version", "run_id")
        }
        self.columns = dict(columns)
        self._input_keys = {  # each input's column in the log
            name: f"input.{name}" if name in OWN_COLUMNS or name.startswith("proba_") else name for name in columns
        }
        self.classes = list(classes) if classes is not None else None
        self.sample = sample
        self.logged = self.dropped = 0
        self._counting = threading.Lock()  # request threads and the writer both count
        self._failed: str | None = None
        self._closed = False
        self._stopping = threading.Event()
        self._waiting = Waiting(max_waiting)
        self._holding = threading.Lock()  # the converted tables, between the converting and the writing
        self._held: dict[int, list] = {}  # day (since 1970, UTC) -> tables for its next file
        self._held_rows = 0
        self._files = 0
        self._token = uuid.uuid4().hex[:6]  # a champion's and a challenger's log in one process never share a name
        try:
            self._fs, self._root = filesystem(self.location)
            self._fs.makedirs(self._root, exist_ok=True)
        except Exception as exc:  # an unwritable place: serving goes on, the rows are counted as dropped
            self._fail(exc)
        self._writer = threading.Thread(target=self._write_forever, name="tabtrack-prediction-log", daemon=True)
        self._writer.start()

    # -- the request side: cheap, never raises ---------------------------------------------------------------
    def record(self, rows: Any, predictions: Any, proba: Any = None, *, request_id: str, role: str = "primary") -> None:
        self.record_many(rows, predictions, proba, requests=[(request_id, len(rows))], role=role)

    def record_many(
        self, rows: Any, predictions: Any, proba: Any = None, *, requests: Sequence[tuple[str, int]], role: str
    ) -> None:
        """Rows of one or more requests scored together (the shadow scores many at once), logged as one item:
        `requests` holds each request's id and row count, in order. A request is in the sample or out whole."""
        if self.sample < 1.0:
            kept = [(request_id, start, start + count)
                    for (request_id, count), start in zip(requests, _starts(requests), strict=True)
                    if share_of(request_id) < self.sample]  # fmt: skip
            if not kept:
                return
            if len(kept) < len(requests):  # (only a batch of several requests can be cut)
                rows = [row for _, start, end in kept for row in rows[start:end]]
                predictions = np.concatenate([predictions[start:end] for _, start, end in kept])
                proba = None if proba is None else np.concatenate([proba[start:end] for _, start, end in kept])
                requests = [(request_id, end - start) for request_id, start, end in kept]
        if self._closed:
            self._count(dropped=len(rows))
            return
        ids, counts = [request_id for request_id, _ in requests], [count for _, count in requests]
        self._put(_Scored(rows, predictions, proba, ids, counts, time.time(), role))

    def _put(self, item: _Scored) -> None:
        if not self._waiting.put(item):
            self._count(dropped=len(item.rows))

    @property
    def stats(self) -> dict[str, Any]:
        return {
            "location": self.location, "rows_logged": self.logged, "rows_dropped": self.dropped,
            "requests_waiting": len(self._waiting), "error": self._failed,
        }  # fmt: skip

    def close(self) -> None:
        """Write what is queued, then stop the writer (at shutdown, SIGTERM included). Rows recorded after
        this are counted as dropped."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._writer.join(timeout=60)
        self._count(dropped=sum(len(item.rows) for item in self._waiting.take_all()))  # put as it stopped

    def convert(self) -> None:
        """Turns what is queued into Arrow, held for the writer's next files. `serve` calls this from its event
        loop ten times a second, between requests: this Python work holds the GIL, and done by the writer thread
        in one turn a second it stalled every request in flight. Returns at once where the writer is at it."""
        if not self._closed and self._holding.acquire(blocking=False):
            try:
                self._convert_queued()
            finally:
                self._holding.release()

    # -- the writer thread ------------------------------------------------------------------------------------
    def _write_forever(self) -> None:
        """Once a second (not once a request: each wake-up takes the GIL from the requests), converts what is
        still queued and writes what is held, a file a day per BATCH_ROWS rows, until closed."""
        while True:
            stopping = self._stopping.wait(FLUSH_SECONDS)
            with self._holding:
                self._convert_queued()
                held, rows, self._held, self._held_rows = self._held, self._held_rows, {}, 0
            self._write(held, rows)
            if stopping:
                return

    def _convert_queued(self) -> None:
        """(Holding `_holding`.) Each queued run of one day and up to BATCH_ROWS rows as one table."""
        runs: list[tuple[int, list[_Scored]]] = []  # (day since 1970 (UTC), its items)
        rows = []  # each run's rows
        for item in self._waiting.take_all():
            day = int(item.when // 86_400)
            if runs and runs[-1][0] == day and rows[-1] < BATCH_ROWS:
                runs[-1][1].append(item)
                rows[-1] += len(item.rows)
            else:
                runs.append((day, [item]))
                rows.append(len(item.rows))
        for (day, items), count in zip(runs, rows, strict=True):
            if self._failed is not None:
                self._count(dropped=count)
                continue
            try:
                self._held.setdefault(day, []).append(self._table(items))
                self._held_rows += count
            except Exception as exc:
                self._count(dropped=count)
                self._fail(exc)

    def _write(self, held: dict[int, list], rows: int) -> None:
        """The held tables, a file per day and BATCH_ROWS rows (Arrow encodes and writes without the GIL)."""
        if not held:
            return
        if self._failed is not None:
            self._count(dropped=rows)
            return
        import pyarrow as pa

        try:
            for day, tables in held.items():
                date = datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%d")
                part, part_rows = [], 0
                for index, table in enumerate(tables):
                    part.append(table)
                    part_rows += table.num_rows
                    if part_rows >= BATCH_ROWS or index == len(tables) - 1:
                        # (a table from rows without probabilities gets empty ones)
                        self._write_file(date, pa.concat_tables(part, promote_options="default"))
                        part, part_rows = [], 0
            self._count(logged=rows)
        except Exception as exc:
            self._count(dropped=rows)
            self._fail(exc)

    def _count(self, *, logged: int = 0, dropped: int = 0) -> None:
        with self._counting:
            self.logged += logged
            self.dropped += dropped

    def _table(self, items: list[_Scored]):
        """The items' rows as one Arrow table, built column by column from what the requests held (no
        DataFrame per request: the writer shares the GIL with the requests it must not slow)."""
        import pyarrow as pa

        columns = self._inputs(items)
        ids = np.array([request_id for item in items for request_id in item.request_ids], dtype=object)
        counts = np.array([count for item in items for count in item.counts])
        sizes = np.array([len(item.rows) for item in items])
        total = int(sizes.sum())
        starts = np.cumsum(counts) - counts  # each request's first row; one vectorised step, not one per request
        # numpy and plain conversions, no Arrow compute calls: each of those lets go of the GIL and then waits to
        # take it back from the requests' thread
        columns["request_id"] = pa.array(np.repeat(ids, counts), pa.string())
        columns["row"] = pa.array((np.arange(total) - np.repeat(starts, counts)).astype("int32"))
        when = np.repeat(np.array([int(item.when * 1e9) for item in items], dtype="int64"), sizes)
        columns["timestamp"] = pa.array(when, pa.timestamp("ns", tz="UTC"))
        for key in ("name", "version", "run_id"):
            columns[f"model_{key}"] = pa.array([self.model[key]] * total, pa.string())
        columns["role"] = pa.array(np.repeat(np.array([item.role for item in items], dtype=object), sizes), pa.string())
        predictions = np.concatenate([np.asarray(item.predictions).ravel() for item in items])
        if self.classes is None:
            columns["prediction"] = pa.array(predictions.astype("float64"), pa.float64())
            return pa.table(columns)
        columns["prediction"] = pa.array(predictions.astype(str), pa.string())
        if all(item.proba is not None for item in items):
            proba = np.vstack([np.asarray(item.proba, dtype="float64") for item in items])
            for index, label in enumerate(self.classes):
                columns[f"proba_{label}"] = pa.array(proba[:, index], pa.float64())
        return pa.table(columns)

    def _inputs(self, items: list[_Scored]) -> dict[str, Any]:
        """The input columns, numbers as float64 and the rest as text. JSON records (what serve logs) are read by
        Arrow in one call; a value of another kind (a number sent as text) sends them down the column-by-column
        path that converts it, as does a DataFrame (what predict logs)."""
        import pyarrow as pa

        keys = self._input_keys
        if all(isinstance(item.rows, list) for item in items):
            records = [record for item in items for record in item.rows]
            table = as_arrow(records, self.columns)
            if table is not None:
                return {keys[name]: table.column(name) for name in self.columns}
            parts = {name: [_values(records, name)] for name in self.columns}
        else:
            parts = {name: [_values(item.rows, name) for item in items] for name in self.columns}
        columns: dict[str, Any] = {}
        for name, kind in self.columns.items():
            if kind == "number":
                columns[keys[name]] = pa.array(np.concatenate([_numbers(part) for part in parts[name]]), pa.float64())
            else:
                columns[keys[name]] = pa.array([text for part in parts[name] for text in _texts(part)], pa.string())
        return columns

    def _write_file(self, day: str, table) -> None:
        """Written whole under a name readers skip, then renamed (on an object store a file appears whole
        anyway): a reader never meets a half-written file."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = f"{self._root}/date={day}"
        self._files += 1
        name = f"part-{datetime.now(UTC):%H%M%S%f}-{os.getpid()}-{self._token}-{self._files}.parquet"
        if _is_local(self._fs):
            # Arrow opens, encodes, writes and closes the file without the GIL; fsspec's calls would each let go
            # of it and wait to take it back from the requests' thread
            os.makedirs(folder, exist_ok=True)
            pq.write_table(table, f"{folder}/_{name}")
            os.replace(f"{folder}/_{name}", f"{folder}/{name}")
            return
        sink = pa.BufferOutputStream()  # encoded without the GIL too, then sent whole
        pq.write_table(table, sink)
        self._fs.makedirs(folder, exist_ok=True)
        self._fs.pipe_file(f"{folder}/{name}", sink.getvalue().to_pybytes())

    def _fail(self, exc: Exception) -> None:
        if self._failed is None:  # said once; every row from here on is counted as dropped
            from tabtrack.redact import redact_uri

            self._failed = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("prediction log: cannot write to %s (%s); rows are counted as dropped",
                        redact_uri(self.location), self._failed)  # fmt: skip


def describe_log(location: str | None, sample: float) -> str:
    """The one line `serve` and `predict` say about the prediction log as they start."""
    from tabtrack.redact import redact_uri

    if location is None:
        return "prediction log: off"
    share = "" if sample >= 1 else f" (a {sample:.0%} sample of requests)"
    return f"prediction log: {redact_uri(location)}{share}; --log-predictions off to stop it"


def opened_log(model, location: str | None, sample: float) -> PredictionLog | None:
    if location is None:
        return None
    return PredictionLog(location, model=model.metadata, columns=model.columns, classes=model.classes, sample=sample)


def _is_local(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def _starts(requests: Sequence[tuple[str, int]]) -> list[int]:
    """Where each request's rows start in a batch."""
    starts, start = [], 0
    for _, count in requests:
        starts.append(start)
        start += count
    return starts


def share_of(request_id: str) -> float:
    """Where a request falls in [0, 1): the same id always lands in the same place (log sampling; the canary salts
    the id first, so the two choices are independent)."""
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "big") / 2**64


def _values(rows: Any, name: str) -> Any:
    """One input column of a request: a Series (a DataFrame's) or a list (JSON records')."""
    if isinstance(rows, pd.DataFrame):
        return rows[name] if name in rows.columns else pd.Series([None] * len(rows), dtype=object)
    return [record.get(name) for record in rows]


def _numbers(values: Any) -> np.ndarray:
    if not isinstance(values, pd.Series):
        try:
            return np.array(values, dtype="float64")  # None becomes NaN
        except (TypeError, ValueError):
            values = pd.Series(values, dtype=object)
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _texts(values: Any) -> list[str | None]:
    if isinstance(values, pd.Series):
        values = values.astype(object).where(values.notna(), None).tolist()
    return [None if value is None or value != value else str(value) for value in values]  # NaN != NaN
