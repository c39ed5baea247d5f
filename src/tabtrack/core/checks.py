"""The boundaries of both doors: every user mistake is found here, before any run (or store) exists for `train`,
before anything of the model is recorded for `Run.evaluate`. What comes out is trusted by everything after it.

- `check_training`: a config (and a data file or frame, and a model) for `train`, `compare` and `tune`: the data
  checked in one call (data/checked.py), then the model, its parameters, the device and the options.
- `check_evaluation`: the fitted model and rows `Run.evaluate` is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tabtrack.config import RunConfig
from tabtrack.core.packaging import Packaging, trusted_types
from tabtrack.data.checked import CheckedData, check_data
from tabtrack.errors import ConfigError, TabtrackError
from tabtrack.evaluate.custom import CustomMetric, load_metric
from tabtrack.models.families import get_spec
from tabtrack.models.own import OwnModelSpec, is_pipeline, own_spec
from tabtrack.models.spec import ModelSpec


@dataclass
class CheckedInputs:
    """Inputs of one training run after every user-facing check passed: nothing below here is a user error."""

    config: RunConfig
    data: CheckedData
    spec: ModelSpec
    estimator: Any  # unfitted, with the resolved hyperparameters; cloned for every fit
    experiment: str
    custom_metrics: list[CustomMetric]
    device: str | None
    packaging: Packaging

    @property
    def split(self):
        return self.data.split

    @property
    def dataset(self):
        return self.data.dataset


def check_training(
    config: RunConfig, data: CheckedData | None = None, *, frame: pd.DataFrame | None = None, model: Any = None
) -> CheckedInputs:
    """Every user mistake of a training run surfaces here as a TabtrackError, before a run is created.
    `data` skips re-reading a file already checked with the same data settings; `frame` is the data itself
    (`tabtrack.train(frame, ...)`); `model` an estimator or Pipeline object instead of `config.model.type`."""
    spec = own_spec(model) if model is not None else get_spec(config.model.type)
    # The user's own model is built first: a Pipeline of theirs is fed the rows with their own dtypes.
    own = None
    if isinstance(spec, OwnModelSpec):
        own = spec.build(None, config.model.params, random_state=config.random_state)
        code = (*config.code_paths, *spec.code)
        trusted_types(own, code_paths=code)  # a class that cannot ship: refused now
        packaging = Packaging(code_paths=code)
    else:
        packaging = Packaging.of_family(spec)
    data = data or check_data(config, frame=frame, convert=not is_pipeline(own))
    if data.dataset.task not in spec.tasks:
        raise ConfigError(
            f"model {spec.name!r} does not support {data.dataset.task} (target {config.target!r}); "
            f"it supports {', '.join(spec.tasks)}. Pick another --model or set --task."
        )
    _check_slices(config.slices, data.split.X_train)
    if config.explain:
        require_shap()
    if config.onnx:
        require_onnx()
    # Built now so unknown parameter names and invalid values are reported before any run exists.
    device = _check_device(config.device, spec)
    estimator = own if own is not None else spec.build(
        data.dataset.task, config.model.params, random_state=config.random_state, y_train=data.split.y_train,
        device=device or "cpu",
    )  # fmt: skip
    return CheckedInputs(
        config=config,
        data=data,
        spec=spec,
        estimator=estimator,
        experiment=config.experiment or data.experiment,
        custom_metrics=[load_metric(reference) for reference in config.metrics],
        device=device,
        packaging=packaging,
    )


def require_shap() -> None:
    from tabtrack.extras import require

    require("shap", purpose="--explain (SHAP values)", instead="or drop --explain / explain: true")


def require_onnx() -> None:
    from tabtrack.extras import require

    for module in ("skl2onnx", "onnxmltools", "onnxruntime"):
        require(module, purpose="--onnx (model_onnx)", instead="or drop --onnx / onnx: true")


def _check_slices(columns: Sequence[str], X: pd.DataFrame) -> None:
    unknown = [c for c in columns if c not in X.columns]
    if unknown:
        raise ConfigError(
            f"slices names column(s) {', '.join(map(repr, unknown))} that are not inputs of the model; "
            f"pick from: {', '.join(map(str, X.columns[:20]))}."
        )


def _check_device(requested: str, spec: ModelSpec) -> str | None:
    """The device the model trains on, or None for CPU-only families."""
    if spec.device_param is None:
        if requested == "cuda":
            raise ConfigError(f"model {spec.name!r} trains on the CPU only; --device applies to mlp and xgboost.")
        return None
    from tabtrack_runtime.torch_mlp import resolve_device

    try:
        return resolve_device(requested)
    except RuntimeError as exc:
        raise ConfigError(f"--device {requested}: {exc}; use --device auto or cpu.") from exc


# -- the own-code door ---------------------------------------------------------------------------------------------
@dataclass
class EvaluationInputs:
    """What `Run.evaluate` was given, checked: X as given (a DataFrame stays one), y as Series."""

    X_test: Any
    y_test: pd.Series
    train_rows: tuple[Any, pd.Series] | None
    task: str
    classes: list | None


def check_evaluation(
    model: Any, X_test: Any, y_test: Any, *, X_train: Any, y_train: Any, task: str | None, slices: Sequence[str]
) -> EvaluationInputs:
    """A model tabtrack can evaluate (it predicts, it was fitted), rows and labels of matching lengths, labels the
    model knows, slices that name columns of X_test."""
    check_model(model)
    X_test, y_test = check_rows(X_test, y_test, "evaluate(X_test, y_test)")
    train_rows = None
    if X_train is not None or y_train is not None:
        train_rows = check_rows(X_train, y_train, "evaluate(X_train=..., y_train=...)")
    task = model_task(model, task)
    classes = None
    if task == "classification":
        classes = check_labels(model, y_test, "y_test")
        if train_rows is not None:
            check_labels(model, train_rows[1], "y_train")
    unknown = [c for c in slices if c not in getattr(X_test, "columns", [])]
    if unknown:
        raise TabtrackError(f"evaluate(slices=...) names column(s) {unknown} that X_test does not have.")
    return EvaluationInputs(X_test, y_test, train_rows, task, classes)


def check_model(model: Any) -> None:
    """A model tabtrack can evaluate: it predicts, and it has been fitted."""
    if not callable(getattr(model, "predict", None)):
        raise TabtrackError(
            f"the model ({type(model).__name__}) has no predict(); pass a fitted scikit-learn estimator or Pipeline, "
            "an XGBoost/LightGBM scikit-learn model, or wrap your model with tabtrack.TorchModel / tabtrack.BoosterModel."
        )
    from sklearn.base import BaseEstimator
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if isinstance(model, BaseEstimator):
        try:
            check_is_fitted(model)
        except NotFittedError:
            raise TabtrackError(
                f"the model ({type(model).__name__}) is not fitted; call model.fit(X_train, y_train) before evaluate()."
            ) from None


def model_task(model: Any, task: str | None) -> str:
    """`task` when given, else what the model is: a classifier (it has classes_) or a regressor."""
    if task is not None:
        if task not in ("classification", "regression"):
            raise TabtrackError(f"task must be 'classification' or 'regression', got {task!r}.")
        return task
    from sklearn.base import is_classifier

    return "classification" if is_classifier(model) or hasattr(model, "classes_") else "regression"


def check_rows(X: Any, y: Any, what: str) -> tuple[pd.DataFrame | np.ndarray, pd.Series]:
    """X as given (a DataFrame stays one), y as a Series; their lengths must agree."""
    if X is None or y is None:
        raise TabtrackError(f"{what}: both X and y are needed.")
    if len(X) != len(y):
        raise TabtrackError(f"{what}: X has {len(X)} rows but y has {len(y)}; pass rows and labels of the same split.")
    if len(X) == 0:
        raise TabtrackError(f"{what}: no rows.")
    y = y if isinstance(y, pd.Series) else pd.Series(np.asarray(y).ravel())
    if isinstance(X, pd.DataFrame):
        y = y.set_axis(X.index)
    return X, y


def check_labels(model: Any, y: pd.Series, what: str) -> list:
    """The classes, in the model's order; labels the model never saw are refused."""
    classes = getattr(model, "classes_", None)
    if classes is None:
        return sorted(pd.unique(y).tolist())
    known = [c.item() if hasattr(c, "item") else c for c in classes]
    unseen = sorted({v.item() if hasattr(v, "item") else v for v in pd.unique(y)} - set(known), key=str)
    if unseen:
        raise TabtrackError(
            f"{what} holds label(s) {', '.join(map(repr, unseen[:5]))} the model never saw (it knows "
            f"{', '.join(map(repr, known[:10]))}); evaluate on labels of the same kind it was trained on."
        )
    return known
