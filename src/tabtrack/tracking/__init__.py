"""The Tracker port and its adapters. Only this package imports mlflow for logging."""

from tabtrack.tracking.base import ModelArtifact, Tracker
from tabtrack.tracking.null import NullTracker

__all__ = ["ModelArtifact", "NullTracker", "Tracker", "make_tracker"]


def make_tracker(
    *, track: bool = True, tracking_uri: str | None = None, offline: bool = False, allow_offline: bool = True
) -> Tracker:
    """MlflowTracker when tracking, NullTracker otherwise (mlflow is imported only when tracking).

    `offline`, or a tracking server that does not answer within TABTRACK_CONNECT_TIMEOUT seconds (3),
    gives an OfflineTracker: the run goes to `.tabtrack/offline/` for `tabtrack sync`."""
    if not track:
        return NullTracker()
    from tabtrack.tracking.store import resolve_tracking_uri, server_reachable

    uri = resolve_tracking_uri(tracking_uri)
    if offline or not server_reachable(uri):
        from tabtrack.errors import TrackingError
        from tabtrack.redact import redact_uri
        from tabtrack.tracking.offline import OfflineTracker

        if not allow_offline:
            raise TrackingError(
                f"tracking server {redact_uri(uri)} is unreachable, and this command needs it; "
                "start it or pass another --tracking-uri."
            )
        if not offline:
            import logging

            logging.getLogger(__name__).warning(
                "tracking server %s is unreachable; recording offline in .tabtrack/offline/. "
                "Run `tabtrack sync` when it is back.",
                redact_uri(uri),
            )
        return OfflineTracker(tracking_uri=uri)
    from tabtrack.tracking.mlflow_tracker import MlflowTracker

    return MlflowTracker(tracking_uri=uri)
