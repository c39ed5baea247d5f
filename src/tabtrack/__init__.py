"""tabtrack: one command from a tabular dataset to a complete, reproducible MLflow run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["TabtrackError", "TrainResult", "__version__", "train"]

if TYPE_CHECKING:
    from tabtrack.errors import TabtrackError
    from tabtrack.workflows.train import TrainResult, train


def __getattr__(name: str) -> Any:
    # Lazy, so `import tabtrack` (and `tabtrack --help`) does not pay for pandas, sklearn or mlflow.
    if name in ("train", "TrainResult"):
        from tabtrack.workflows import train as module

        return getattr(module, name)
    if name == "TabtrackError":
        from tabtrack.errors import TabtrackError

        return TabtrackError
    raise AttributeError(f"module 'tabtrack' has no attribute {name!r}")
