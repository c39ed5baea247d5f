"""The Tracker port and its adapters. Only this package imports mlflow for logging."""

from tabtrack.tracking.base import ModelArtifact, Tracker
from tabtrack.tracking.null import NullTracker

__all__ = ["ModelArtifact", "NullTracker", "Tracker", "make_tracker"]


def make_tracker(*, track: bool = True, tracking_uri: str | None = None) -> Tracker:
    """MlflowTracker when tracking, NullTracker otherwise (mlflow is imported only in the first case)."""
    if not track:
        return NullTracker()
    from tabtrack.tracking.mlflow_tracker import MlflowTracker

    return MlflowTracker(tracking_uri=tracking_uri)
