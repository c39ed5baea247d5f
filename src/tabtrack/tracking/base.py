"""The Tracker port: how training reports params, metrics, artifacts and models.

The lifecycle (FINISHED, FAILED with an `error` tag and a traceback, KILLED on Ctrl-C or
SIGTERM) is implemented once here; adapters implement the primitives.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"
ERROR_TAG = "error"
TRACEBACK_FILE = "error/traceback.txt"
# Set on an exception that failed a run: the outermost run it failed (the CLI names it).
FAILED_RUN_ATTR = "tabtrack_failed_run"


@dataclass
class ModelArtifact:
    """A fitted model and everything needed to log it as one self-describing MLflow model."""

    model: Any
    flavor: str
    input_example: Any
    output_example: Any
    pip_requirements: list[str]
    # Set for models that take a frame of named columns: each column is declared AnyType (see mlflow_io).
    input_columns: list[str] | None = None
    trusted_types: list[str] = field(default_factory=list)
    code_paths: list[str] = field(default_factory=list)
    name: str = "model"
    metadata: dict[str, Any] | None = None  # the MLmodel file's `metadata` (conformal calibration)
    artifacts: dict[str, str] | None = None  # pyfunc: files the python_model loads (another model's folder)
    model_config: dict[str, Any] | None = None  # pyfunc: what the model-from-code file is given


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
                if self.run_id and self.stores_artifacts:
                    with contextlib.suppress(AttributeError, TypeError):  # a foreign exception may refuse it
                        setattr(exc, FAILED_RUN_ATTR, self.run_id)
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
    def log_dataset(
        self, frame: Any, *, context: str, source: str, name: str, target: str | None, digest: str | None = None
    ) -> None:
        """An MLflow dataset input for `frame` (with `digest`: a file's first rows, the file's digest)."""

    @abstractmethod
    def log_model(self, artifact: ModelArtifact) -> str | None:
        """Log the model; return its URI (None where nothing is stored)."""

    def save_model_ahead(self, artifact: ModelArtifact) -> None:  # noqa: B027 - optional hook
        """A head start on a later `log_model(artifact)`, given as soon as the model is fitted."""

    def flush(self) -> None:  # noqa: B027 - optional hook: only buffering adapters need it
        """Send anything buffered."""

    @property
    def ui_url(self) -> str | None:
        return None

    @property
    def offline_bundle(self) -> str | None:
        """The offline bundle this run is written to, when the tracking server could not be reached."""
        return None
