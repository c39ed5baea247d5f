"""The Tracker port: how training reports params, metrics, artifacts and models.

The lifecycle (FINISHED, FAILED with an `error` tag and a traceback, KILLED on Ctrl-C or
SIGTERM) is implemented once here; adapters implement the primitives.
"""

from __future__ import annotations

import logging
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"
ERROR_TAG = "error"
TRACEBACK_FILE = "error/traceback.txt"


@dataclass
class ModelArtifact:
    """A fitted model and everything needed to log it as one self-describing MLflow model."""

    model: Any
    flavor: str
    input_example: Any
    output_example: Any
    pip_requirements: list[str]
    trusted_types: list[str] = field(default_factory=list)
    code_paths: list[str] = field(default_factory=list)
    name: str = "model"


SCHEMA_SAMPLE_ROWS = 1000


@dataclass
class FrameSummary:
    """What an MLflow dataset records of a frame (digest, schema from a sample, size), without the frame:
    cheap to hand to another process however big the data."""

    sample: Any  # the first SCHEMA_SAMPLE_ROWS rows, for the schema
    digest: str
    num_rows: int
    num_elements: int

    @classmethod
    def of(cls, frame: Any) -> FrameSummary:
        """The summary of a frame; a summary is its own."""
        if isinstance(frame, FrameSummary):
            return frame
        return cls(frame.head(SCHEMA_SAMPLE_ROWS), frame_digest(frame), len(frame), int(frame.size))


def frame_digest(frame: Any) -> str:
    """An 8-hex-digit digest of every row, column name and dtype (one vectorised hashing pass)."""
    import hashlib

    import pandas as pd

    digest = hashlib.md5(usedforsecurity=False)
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    return digest.hexdigest()[:8]


# What drawing the standard plots imports (~1 s): worth importing while the model trains.
PLOT_MODULES = ("matplotlib.figure", "matplotlib.backends.backend_agg")
_PRELOADED: set[tuple] = set()  # requests already started in this process


def preload_in_background(modules: tuple[str, ...], *, then: Callable[[], None] | None = None) -> None:
    """Import `modules` (then call `then`) in a background thread, once per process for each request
    (a worker-tracked run preloads only the plots; a later in-process run still prepares model logging).
    Estimators train in native code that releases the GIL, so the imports overlap with training."""
    request = (modules, then)
    if request in _PRELOADED:
        return
    _PRELOADED.add(request)
    import importlib
    import threading

    # What the main thread imports next (metrics, inspection) is imported here first, so the two
    # threads never wait on each other's half-imported modules.
    importlib.import_module("sklearn.metrics")
    importlib.import_module("sklearn.inspection")

    def load() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # the real import later reports a real problem
                log.debug("warm-up import of %s failed", name, exc_info=True)
        if then is not None:
            then()

    threading.Thread(target=load, name="tabtrack-warm-up", daemon=True).start()


class Tracker(ABC):
    """Where a run is recorded. Use `with tracker.run(...) as run:`; children via `run.child_run(name)`."""

    run_id: str | None = None
    experiment_id: str | None = None
    stores_artifacts = True  # False: plots and reports would be drawn for nobody

    @contextmanager
    def run(self, *, experiment: str, run_name: str, tags: Mapping[str, str] | None = None) -> Iterator[Tracker]:
        self._start(experiment=experiment, run_name=run_name, tags=dict(tags or {}))
        with self._lifecycle():
            yield self

    @contextmanager
    def child_run(self, run_name: str, tags: Mapping[str, str] | None = None) -> Iterator[Tracker]:
        child = self._new_child(run_name, dict(tags or {}))
        with child._lifecycle():
            yield child

    def nested(self) -> Tracker:
        """An unstarted tracker whose `run(...)` becomes a child of this run (a comparison's model runs)."""
        raise NotImplementedError(f"{type(self).__name__} has no nested runs")

    @contextmanager
    def _lifecycle(self) -> Iterator[None]:
        try:
            yield
        except (KeyboardInterrupt, SystemExit) as exc:
            self._close(KILLED, exc)
            raise
        except BaseException as exc:
            self._close(FAILED, exc)
            raise
        else:
            self.flush()
            self._end(FINISHED)

    def _close(self, status: str, exc: BaseException) -> None:
        """End the run after an exception without hiding it: a failure to record is only logged."""
        try:
            if status == FAILED:
                self.set_tags({ERROR_TAG: f"{type(exc).__name__}: {exc}"[:4000]})
            self.flush()
            if status == FAILED:
                self.log_text("".join(traceback.format_exception(exc)), TRACEBACK_FILE)
        except Exception:
            log.warning("could not record the error on run %s", self.run_id, exc_info=True)
        finally:
            try:
                self._end(status)
            except Exception:
                log.warning("could not mark run %s as %s", self.run_id, status, exc_info=True)

    # -- primitives each adapter implements ------------------------------------------------
    @abstractmethod
    def _start(self, *, experiment: str, run_name: str, tags: dict[str, str]) -> None: ...

    @abstractmethod
    def _new_child(self, run_name: str, tags: dict[str, str]) -> Tracker: ...

    @abstractmethod
    def _end(self, status: str) -> None: ...

    @abstractmethod
    def log_params(self, params: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None: ...

    @abstractmethod
    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    @abstractmethod
    def log_text(self, text: str, artifact_file: str) -> None: ...

    @abstractmethod
    def log_bytes(self, data: bytes, artifact_file: str) -> None: ...

    @abstractmethod
    def log_dataset(self, frame: Any, *, context: str, source: str, name: str, target: str | None) -> None: ...

    @abstractmethod
    def log_model(self, artifact: ModelArtifact) -> str | None:
        """Log the model; return its URI (None where nothing is stored)."""

    def log_model_later(self, artifact: ModelArtifact) -> Callable[[], str | None]:
        """Start logging the model and return a function that waits for its URI: adapters that work
        in the background serialise the model while the caller evaluates and draws plots."""
        uri = self.log_model(artifact)
        return lambda: uri

    def compute_later(self, fn: Callable[..., T], *args: Any) -> Callable[[], T]:
        """Start `fn(*args)` and return a function that waits for its value. `fn` is pure, CPU-bound
        and picklable (a module-level function, as drawing the plots is): an adapter may run it in
        another process while the caller goes on. Here it runs now."""
        value = fn(*args)
        return lambda: value

    def flush(self) -> None:  # noqa: B027 - optional hook: only buffering adapters need it
        """Send anything buffered."""

    def warm_up(self) -> None:  # noqa: B027 - optional hook
        """Start slow, one-off preparations for logging the model while training runs."""

    @property
    def ui_url(self) -> str | None:
        return None

    @property
    def offline_bundle(self) -> str | None:
        """The offline bundle this run is written to, when the tracking server could not be reached."""
        return None
