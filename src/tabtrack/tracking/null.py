"""A tracker that records nothing: `--no-track` and library use without MLflow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tabtrack.tracking.base import ModelArtifact, Tracker


class NullTracker(Tracker):
    """Keeps what was logged in memory (handy for tests and for printing), sends nothing anywhere."""

    stores_artifacts = False

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.metrics: dict[str, float] = {}
        self.tags: dict[str, str] = {}
        self.status: str | None = None
        self.children: list[NullTracker] = []

    def _start(self, *, experiment: str, run_name: str, tags: dict[str, str]) -> None:
        self.tags.update(tags)

    def _new_child(self, run_name: str, tags: dict[str, str]) -> Tracker:
        child = NullTracker()
        child.tags.update(tags)
        self.children.append(child)
        return child

    def nested(self) -> Tracker:
        child = NullTracker()
        self.children.append(child)
        return child

    def _end(self, status: str) -> None:
        self.status = status

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        self.metrics.update(metrics)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update(tags)

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        pass

    def log_dataset(
        self, frame: Any, *, context: str, source: str, name: str, target: str | None, digest: str | None = None
    ) -> None:
        pass

    def log_model(self, artifact: ModelArtifact) -> str | None:
        return None
