"""Adapters that give models trained outside scikit-learn the interface `Run.evaluate` records and MLflow's
sklearn flavor saves: `predict` (and `predict_proba` for classifiers) on the raw rows.

- `TorchModel`: your trained `torch.nn.Module` with your fitted preprocessing (any scikit-learn transformer,
  e.g. a ColumnTransformer, or None for numeric rows used as they are). Moved to the CPU before saving.
  The module is stored with `torch.save` and loaded with `torch.load(weights_only=True)`, allowing only
  the classes recorded when it was saved, each a `torch.nn.Module` (or other) class of torch itself or a
  `torch.nn.Module` defined in your `code_paths`. (tabtrack also logs the bare module under MLflow's pytorch
  flavor as `model_native`.)
- `BoosterModel`: a native Booster from `xgb.train` or `lgb.train`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

PREDICT_BATCH = 65_536


class _TrainedElsewhere(BaseEstimator):
    """What both adapters share: labels from `classes`, and predict() as the most probable class
    (classification) or the model's one output (regression, `_regression_output`)."""

    task: str
    classes: Sequence | None

    @property
    def classes_(self) -> np.ndarray:
        if self.task != "classification":
            raise AttributeError("a regression model has no classes_")
        return np.asarray(self.classes)

    def predict(self, X) -> np.ndarray:
        if self.task == "classification":
            return self.classes_[self.predict_proba(X).argmax(axis=1)]
        return self._regression_output(X)


class TorchModel(_TrainedElsewhere):
    """A trained torch module behind scikit-learn's predict interface.

    Args:
        module: the trained `torch.nn.Module`. Classification: it returns one logit per class (or one logit
            for a binary task); regression: one value per row.
        task: "classification" or "regression".
        preprocess: a fitted transformer turning raw rows into the module's input features (None: the rows
            as float32).
        classes: the labels, in the order of the module's outputs (classification).

    Example:
        >>> model = tabtrack.TorchModel(net, task="classification", preprocess=fitted_column_transformer,
        ...                             classes=["no", "yes"])
        >>> run.evaluate(model, X_test, y_test, X_train=X_train, y_train=y_train)
    """

    def __init__(self, module: Any = None, *, task: str = "classification", preprocess: Any = None,
                 classes: Sequence | None = None):  # fmt: skip
        self.module = module
        self.task = task
        self.preprocess = preprocess
        self.classes = classes

    def __sklearn_is_fitted__(self) -> bool:
        return self.module is not None

    def fit(self, X=None, y=None):
        raise TypeError("TorchModel wraps a module you trained: train it in your own loop, then wrap it.")

    def features(self, X) -> np.ndarray:
        features = self.preprocess.transform(X) if self.preprocess is not None else X
        if hasattr(features, "toarray"):
            features = features.toarray()
        return np.asarray(features, dtype=np.float32)

    def _outputs(self, X) -> np.ndarray:
        import torch

        module = self.module.cpu().eval()
        features = self.features(X)
        with torch.no_grad():
            parts = [
                module(torch.as_tensor(features[i : i + PREDICT_BATCH])).numpy()
                for i in range(0, len(features), PREDICT_BATCH)
            ]
        return np.concatenate(parts) if parts else np.empty((0, 1), dtype=np.float32)

    def predict_proba(self, X) -> np.ndarray:
        if self.task != "classification":
            raise AttributeError("a regression model has no predict_proba")
        logits = self._outputs(X).astype(np.float64)
        if logits.ndim == 1 or logits.shape[1] == 1:  # one logit for a binary task
            positive = 1 / (1 + np.exp(-logits.reshape(-1)))
            return np.column_stack([1 - positive, positive])
        logits = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def _regression_output(self, X) -> np.ndarray:
        return self._outputs(X).reshape(len(X), -1)[:, 0].astype(np.float64)

    # -- saving: the module as torch's own checkpoint, loaded with weights_only and named classes only ----------
    def checkpoint(self) -> tuple[bytes, list[str]]:
        """The module saved by torch (on the CPU), and the classes loading it needs besides torch's defaults."""
        import torch

        buffer = io.BytesIO()
        torch.save(self.module.cpu(), buffer)
        buffer.seek(0)
        return buffer.getvalue(), sorted(torch.serialization.get_unsafe_globals_in_checkpoint(buffer))

    def user_classes(self) -> list[str]:
        """The classes of the saved module that are not torch's own: they must ship with the model."""
        return [name for name in self.checkpoint()[1] if name.split(".")[0] not in ("torch", "collections", "builtins")]

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k != "module"}
        state["module_checkpoint"], state["module_classes"] = self.checkpoint()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        import torch

        state = dict(state)
        checkpoint, names = state.pop("module_checkpoint", None), state.pop("module_classes", [])
        self.__dict__.update(state)
        self.module = None
        if checkpoint is not None:
            with torch.serialization.safe_globals([_module_class(name) for name in names]):
                self.module = torch.load(io.BytesIO(checkpoint), weights_only=True)


def _module_class(name: str) -> type:
    """A class a saved module may hold: a torch.nn.Module subclass, or a class of torch itself; never a
    function or any other callable a checkpoint could name."""
    import importlib

    import torch

    module_name, _, attribute = name.rpartition(".")
    value = getattr(importlib.import_module(module_name), attribute)
    is_module = isinstance(value, type) and issubclass(value, torch.nn.Module)
    is_torch_class = isinstance(value, type) and module_name.split(".")[0] in ("torch", "collections")
    if not (is_module or is_torch_class):
        raise TypeError(f"refusing to load {name}: a saved module may only name torch.nn.Module subclasses")
    return value


class BoosterModel(_TrainedElsewhere):
    """A native XGBoost or LightGBM Booster (from `xgb.train` / `lgb.train`) behind predict/predict_proba.

    Args:
        booster: the trained Booster.
        task: "classification" or "regression".
        classes: the labels, in the order of the booster's class outputs (classification).

    Per-round metrics: log them from a callback with `run.log_epoch(round, **values)` (README, "Your own
    training code").
    """

    def __init__(self, booster: Any = None, *, task: str = "classification", classes: Sequence | None = None):
        self.booster = booster
        self.task = task
        self.classes = classes

    def __sklearn_is_fitted__(self) -> bool:
        return self.booster is not None

    def fit(self, X=None, y=None):
        raise TypeError("BoosterModel wraps a booster you trained (xgb.train, lgb.train): train it, then wrap it.")

    def _raw(self, X) -> np.ndarray:
        if type(self.booster).__module__.startswith("xgboost"):
            import xgboost as xgb

            return np.asarray(self.booster.predict(xgb.DMatrix(X)))
        return np.asarray(self.booster.predict(X))

    def predict_proba(self, X) -> np.ndarray:
        if self.task != "classification":
            raise AttributeError("a regression model has no predict_proba")
        values = self._raw(X)
        if values.ndim == 1:  # binary: the positive class's probability
            return np.column_stack([1 - values, values])
        return values

    def _regression_output(self, X) -> np.ndarray:
        return self._raw(X).astype(np.float64)
