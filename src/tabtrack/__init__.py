"""tabtrack: one command from a tabular dataset to a complete, reproducible MLflow run, and the same run
around your own training code (`tabtrack.start_run`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "BoosterModel",
    "Run",
    "TabtrackError",
    "TorchModel",
    "TrainResult",
    "__version__",
    "active_run",
    "promote",
    "register",
    "start_run",
    "track",
    "train",
]

if TYPE_CHECKING:
    from tabtrack.errors import TabtrackError
    from tabtrack.models.adapters import BoosterModel, TorchModel
    from tabtrack.run import Run, active_run, start_run, track
    from tabtrack.workflows.registry import promote, register
    from tabtrack.workflows.train import TrainResult, train

# Lazy, so `import tabtrack` (and `tabtrack --help`) does not pay for pandas, sklearn or mlflow.
_LAZY = {
    "train": "tabtrack.workflows.train",
    "TrainResult": "tabtrack.workflows.train",
    "TabtrackError": "tabtrack.errors",
    "start_run": "tabtrack.run",
    "active_run": "tabtrack.run",
    "track": "tabtrack.run",
    "Run": "tabtrack.run",
    "TorchModel": "tabtrack.models.adapters",
    "BoosterModel": "tabtrack.models.adapters",
    "register": "tabtrack.workflows.registry",
    "promote": "tabtrack.workflows.registry",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tabtrack' has no attribute {name!r}")
