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
    "monitor",
    "promote",
    "register",
    "retrain",
    "start_run",
    "track",
    "train",
]

if TYPE_CHECKING:
    from tabtrack.commands.monitor import monitor
    from tabtrack.commands.registry import promote, register
    from tabtrack.commands.retrain import retrain
    from tabtrack.core.run import Run, active_run, start_run, track
    from tabtrack.core.training import TrainResult, train
    from tabtrack.errors import TabtrackError
    from tabtrack_runtime.adapters import BoosterModel, TorchModel

# Lazy, so `import tabtrack` (and `tabtrack --help`) does not pay for pandas, sklearn or mlflow.
_LAZY = {
    "train": "tabtrack.core.training",
    "TrainResult": "tabtrack.core.training",
    "TabtrackError": "tabtrack.errors",
    "start_run": "tabtrack.core.run",
    "active_run": "tabtrack.core.run",
    "track": "tabtrack.core.run",
    "Run": "tabtrack.core.run",
    "TorchModel": "tabtrack_runtime.adapters",
    "BoosterModel": "tabtrack_runtime.adapters",
    "register": "tabtrack.commands.registry",
    "promote": "tabtrack.commands.registry",
    "monitor": "tabtrack.commands.monitor",
    "retrain": "tabtrack.commands.retrain",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tabtrack' has no attribute {name!r}")
