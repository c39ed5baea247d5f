"""Saving and loading the models tabtrack logs (MLflow's sklearn flavor, skops inside) without torch's import.

skops' import lists every scikit-learn estimator by importing every scikit-learn sub-package, and one of
them (`array_api_compat.torch`) imports torch wherever torch is installed: ~2.5 s, a fifth of a `tabtrack
predict`, though no scikit-learn model needs torch. Models that do (the MLP, a wrapped torch module)
import it themselves when they are rebuilt or predict, after skops' import."""

from __future__ import annotations

import contextlib
import importlib.abc
import sys
from collections.abc import Iterator
from typing import Any


class _TorchNotHere(importlib.abc.MetaPathFinder):
    """Answers any import of torch as if torch were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r} (kept out by tabtrack)", name=name)
        return None


@contextlib.contextmanager
def torch_unimportable() -> Iterator[None]:
    """Within: `import torch` fails at once, as where torch is not installed; nothing changes where torch is
    already imported. (A finder, not `sys.modules["torch"] = None`: code that looks torch up in sys.modules,
    as SciPy's array API helpers do while scipy.stats is imported, must not find a None there.)"""
    if "torch" in sys.modules:
        yield
        return
    finder = _TorchNotHere()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def import_skops():
    """skops.io, imported without torch."""
    with torch_unimportable():
        import skops.io

    return skops.io


def load_logged_model(uri: str) -> Any:
    """mlflow.sklearn.load_model(uri), with skops imported first without torch."""
    import mlflow

    import_skops()
    return mlflow.sklearn.load_model(uri)
