"""A challenger beside the champion in `tabtrack serve`, tried without risk.

Shadow (`--shadow URI`): every response comes from the champion; the challenger scores the same rows off the
response path. A request puts its records on a bounded queue and goes on; what is queued is scored as one batch
(one pass of the model for many requests is far cheaper than one per request) and logged with role `shadow` and
the challenger's version. A challenger that answers from ONNX Runtime (microseconds a row) is scored on `serve`'s
event loop, between requests, ten times a second: in a thread, its Python work took the GIL in turns that stalled
every request in flight. Any other challenger is scored by its own thread five times a second, so that a slow
model never holds up the event loop. Its failures are counted, never raised; a full queue drops (and counts)
rows.

Canary (`--shadow URI --canary FRACTION`): the challenger answers a seeded, sticky share of the requests instead
(the same request id always goes the same way), and each response names the model that answered.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from tabtrack.errors import TabtrackError
from tabtrack.serving.model import LoadedModel
from tabtrack.serving.prediction_log import PredictionLog, Waiting, share_of

log = logging.getLogger(__name__)
SHADOW_WAKE_SECONDS = 0.2
SHADOW_QUEUE = 20_000  # requests waiting for the challenger; past this, new ones are dropped (and counted)
CANARY_SALT = "tabtrack-canary"


def check_same_inputs(champion: LoadedModel, challenger: LoadedModel) -> None:
    """The challenger must take the champion's rows as they come: same columns of the same kinds, same task."""
    if (champion.classes is None) != (challenger.classes is None):
        kinds = ("a regressor", "a classifier") if champion.classes is None else ("a classifier", "a regressor")
        raise TabtrackError(f"--shadow {challenger.uri}: the champion is {kinds[0]} and the challenger {kinds[1]}; "
                            "a challenger must answer the same question.")  # fmt: skip
    if champion.columns != challenger.columns:
        missing = [c for c in champion.columns if c not in challenger.columns]
        extra = [c for c in challenger.columns if c not in champion.columns]
        changed = [
            c for c in champion.columns if c in challenger.columns and champion.columns[c] != challenger.columns[c]
        ]
        said = "; ".join(
            part for part in (
                f"it lacks {', '.join(map(repr, missing))}" if missing else "",
                f"it also needs {', '.join(map(repr, extra))}" if extra else "",
                f"it reads {', '.join(map(repr, changed))} as another kind" if changed else "",
            ) if part
        )  # fmt: skip
        raise TabtrackError(f"--shadow {challenger.uri}: its inputs differ from the champion's ({said}); "
                            "shadow or canary a model trained on the same columns.")  # fmt: skip


def canary_share(request_id: str, seed: int = 0) -> float:
    """Where a request falls in [0, 1) for the canary: fixed by its id and the seed, so it sticks."""
    return share_of(f"{CANARY_SALT}:{seed}:{request_id}")


class Shadow:
    """The challenger scoring every request's rows off the response path (see the module docstring)."""

    def __init__(
        self,
        model: LoadedModel,
        prediction_log: PredictionLog | None,
        *,
        max_waiting: int = SHADOW_QUEUE,
        own_thread: bool = True,
    ):
        """`own_thread` False: the caller calls `step` (serve's event loop, for a challenger in ONNX Runtime)."""
        self.model = model
        self.prediction_log = prediction_log
        self.scored = self.failed = self.dropped = 0
        self.last_error: str | None = None
        self._waiting = Waiting(max_waiting)  # (records, request id) of each request
        self._stopping = threading.Event()
        self.own_thread = own_thread
        self._thread = threading.Thread(target=self._score_forever, name="tabtrack-shadow", daemon=True)
        if own_thread:
            self._thread.start()

    def submit(self, records: list[dict[str, Any]], request_id: str) -> None:
        """Cheap and never raises: the request goes on whatever happens here."""
        if not self._waiting.put((records, request_id)):
            self.dropped += len(records)

    @property
    def stats(self) -> dict[str, Any]:
        meta = self.model.metadata
        return {
            "model": self.model.uri, "version": meta.get("version"), "rows_scored": self.scored,
            "rows_failed": self.failed, "rows_dropped": self.dropped, "requests_waiting": len(self._waiting),
            "last_error": self.last_error,
            "scored": "in its own thread" if self.own_thread else "between requests, on the event loop",
        }  # fmt: skip

    def close(self) -> None:
        """Score what is queued, then stop (at shutdown)."""
        if not self.own_thread:
            self.step()
            return
        self._stopping.set()
        self._thread.join(timeout=60)

    def step(self) -> None:
        """Score what is queued now, as one batch."""
        import joblib

        batch = self._waiting.take_all()
        if batch:
            with joblib.parallel_config(backend="sequential"):
                self._score(batch)

    def _score_forever(self) -> None:
        while True:
            stopping = self._stopping.wait(SHADOW_WAKE_SECONDS)
            self.step()
            if stopping:
                return

    def _score(self, batch: list[tuple[list[dict[str, Any]], str]]) -> None:
        rows = [record for records, _ in batch for record in records]
        try:
            predictions, proba = self.model.score_records(rows)
        except Exception as exc:  # the champion answered already; a failing challenger is counted, not raised
            self._failed_on(batch, exc)
            return
        self.scored += len(rows)
        if self.prediction_log is not None:
            requests = [(request_id, len(records)) for records, request_id in batch]
            self.prediction_log.record_many(rows, predictions, proba, requests=requests, role="shadow")

    def _failed_on(self, batch, exc: Exception) -> None:
        if len(batch) > 1:  # one bad request must not cost the others their shadow answers
            for item in batch:
                self._score([item])
            return
        self.failed += len(batch[0][0])
        if self.last_error is None:
            log.warning("shadow model %s failed: %s: %s (counted on /health; responses are not affected)",
                        self.model.uri, type(exc).__name__, exc)  # fmt: skip
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]


class Challenger:
    """The challenger a service runs beside its champion: in shadow (`shadow` scores every request off the response
    path) or as a canary (`answers` a sticky `canary` share of requests), with its own prediction log."""

    def __init__(self, model: LoadedModel, prediction_log: PredictionLog | None, *, canary: float | None = None):
        self.model, self.log, self.canary = model, prediction_log, canary
        # in ONNX Runtime, fast enough to be scored between requests (the module docstring)
        self.shadow = Shadow(model, prediction_log, own_thread=model.onnx is None) if canary is None else None
        self.headers = model.trace_headers

    def answers(self, request_id: str) -> bool:
        return self.canary is not None and canary_share(request_id) < self.canary

    @property
    def stats(self) -> dict[str, Any]:
        if self.shadow is not None:
            return {"mode": "shadow", **self.shadow.stats, "answers": self.model.answered_by}
        meta = self.model.metadata
        return {"mode": "canary", "share": self.canary, "model": self.model.uri, "version": meta.get("version"),
                "answers": self.model.answered_by}  # fmt: skip
