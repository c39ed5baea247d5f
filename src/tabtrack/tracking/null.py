"""A tracker that records nothing: `--no-track` and library use without MLflow (what a run computes is still
returned: the Recorder keeps it)."""

from __future__ import annotations

from typing import Any

from tabtrack.tracking.base import ModelArtifact, Tracker


class NullTracker(Tracker):
    """Sends nothing anywhere."""

    stores_artifacts = False

    def _start(self, *, experiment: str, run_name: str, tags: dict[str, str]) -> None:
        pass

    def _new_child(self, run_name: str, tags: dict[str, str]) -> Tracker:
        return NullTracker()

    def nested(self) -> Tracker:
        return NullTracker()

    def _end(self, status: str) -> None:
        pass

    def log_params(self, params: Any) -> None:
        pass

    def log_metrics(self, metrics: Any, *, step: int | None = None) -> None:
        pass

    def set_tags(self, tags: Any) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        pass

    def log_dataset(self, frame: Any, **_: Any) -> None:
        pass

    def log_model(self, artifact: ModelArtifact) -> str | None:
        return None
