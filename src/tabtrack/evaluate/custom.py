"""User metrics named in the config: "package.module:function" or "path/to/file.py:function".

Each is called as `fn(y_true, y_pred, y_proba) -> float` and logged per split as `{split}_{function}`.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import numbers
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tabtrack.errors import ConfigError, TabtrackError


@dataclass(frozen=True)
class CustomMetric:
    reference: str  # as written in the config
    name: str
    fn: Callable

    def __call__(self, y_true, y_pred, y_proba) -> float:
        try:
            value = self.fn(y_true, y_pred, y_proba)
        except Exception as exc:
            raise TabtrackError(f"custom metric {self.reference!r} failed: {type(exc).__name__}: {exc}") from exc
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(float(value)):
            raise TabtrackError(
                f"custom metric {self.reference!r} returned {value!r}; it must return one finite number (float)."
            )
        return float(value)


def load_metric(reference: str) -> CustomMetric:
    """Import the function now, so a bad reference is a config error before any run exists."""
    fn, _ = load_function(reference, what="custom metric")
    return CustomMetric(reference=reference, name=reference.rpartition(":")[2], fn=fn)


def load_function(reference: str, *, what: str, module_name: str | None = None) -> tuple[Callable, str | None]:
    """`package.module:function` or `path/to/file.py:function`, imported now (a bad reference is a ConfigError
    naming it); returns the function and the file defining it. A file is imported as `module_name` (default:
    a private name), with its folder on sys.path so that it can import its neighbours."""
    target, sep, function = reference.rpartition(":")
    if not sep or not target or not function:
        raise ConfigError(f"{what} {reference!r} must look like 'package.module:function' or 'file.py:function'.")
    if target.endswith(".py"):
        path = Path(target).resolve()
        if not path.is_file():
            raise ConfigError(f"{what} file '{target}' not found (from {reference!r}).")
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        name = module_name or f"tabtrack_user_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # classes it defines are found again by their module's name
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise ConfigError(f"{what} file '{target}' failed to import: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ConfigError(
                f"{what} module {target!r} cannot be imported ({exc}); is it installed or on PYTHONPATH?"
            ) from exc
    fn = getattr(module, function, None)
    if not callable(fn):
        raise ConfigError(f"{what} {reference!r}: module {target!r} has no function {function!r}.")
    return fn, getattr(module, "__file__", None)
