"""Saving and loading the models tabtrack logs (MLflow's sklearn flavor, skops inside) without torch's import.

skops' import lists every scikit-learn estimator by importing every scikit-learn sub-package, and one of
them (`array_api_compat.torch`) imports torch wherever torch is installed: ~2.5 s, a fifth of a `tabtrack
predict`, though no scikit-learn model needs torch. Models that do (the MLP, a wrapped torch module)
import it themselves when they are rebuilt or predict, after skops' import."""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import sys
import threading
from collections.abc import Iterator
from typing import Any

# Where the classes a logged model needs lived before they became tabtrack_runtime: models logged then name them
# by these paths, and load under today's tabtrack through these aliases.
LEGACY_MODULES = {
    "tabtrack.models.raw_input": "tabtrack_runtime.raw_input",
    "tabtrack.models.label_encoded": "tabtrack_runtime.label_encoded",
    "tabtrack.models.torch_mlp": "tabtrack_runtime.torch_mlp",
    "tabtrack.models.adapters": "tabtrack_runtime.adapters",
}


class _TorchNotHere(importlib.abc.MetaPathFinder):
    """Answers an import of torch as if torch were not installed, in the thread that installed it only: another
    thread importing torch meanwhile imports it as usual."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "torch" and threading.get_ident() == self.thread:
            raise ModuleNotFoundError(f"No module named {name!r} (kept out by tabtrack)", name=name)
        return None


@contextlib.contextmanager
def torch_unimportable() -> Iterator[None]:
    """Within, in this thread: `import torch` fails at once, as where torch is not installed; nothing changes
    where torch is already imported. (A finder, not `sys.modules["torch"] = None`: code that looks torch up in
    sys.modules, as SciPy's array API helpers do while scipy.stats is imported, must not find a None there.)"""
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
    """mlflow.sklearn.load_model(uri), with skops imported first without torch, and the classes of models logged
    by earlier versions of tabtrack found where they live now."""
    import mlflow

    import_skops()
    for old, new in LEGACY_MODULES.items():
        sys.modules.setdefault(old, importlib.import_module(new))
    return mlflow.sklearn.load_model(uri)
