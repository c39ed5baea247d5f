"""What a model family declares: how to build it, its defaults, search space and the types loading it trusts."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tabtrack.errors import ConfigError, choices_hint

SearchSpace = Callable[[Any, str], dict[str, Any]]  # (optuna.Trial, task) -> params
# (task, training labels, device) -> params that depend on the data or the machine, e.g. scale_pos_weight
DataParams = Callable[[str, Any, str], dict[str, Any]]

IMPORT_NAMES = {"scikit-learn": "sklearn"}
LABEL_WRAPPER_TYPE = "tabtrack_runtime.label_encoded.LabelEncodedClassifier"


@dataclass(frozen=True)
class ModelSpec:
    """One model family.

    `estimators` maps each supported task to the estimator class as "module:Class", so
    declaring a family imports nothing heavy; the class is imported when it is built.
    """

    name: str
    summary: str
    estimators: Mapping[str, str]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    seed_param: str | None = "random_state"
    search_space: SearchSpace | None = None
    data_params: DataParams | None = None
    # Types skops must trust to load this estimator (MLflow 3 saves sklearn models with skops).
    trusted_types: tuple[str, ...] = ()
    # Distributions the estimator needs at inference time, pinned to installed versions.
    requires: tuple[str, ...] = ()
    iterative: bool = False  # has a notion of iterations, so Optuna pruning applies
    # Classifiers that only accept labels 0..K-1 get wrapped so the model still speaks the user's labels.
    encode_labels: bool = False
    device_param: str | None = None  # estimator parameter that takes "cpu" / "cuda"
    # How far a re-run's test metrics may drift and still count as reproduced (0: bit-identical).
    reproduce_tolerance: float = 0.0
    # Its fit runs in native threads that leave the GIL free, so `tabtrack train` fits it while MLflow starts
    # (core/training.py:FitAhead). Measured per family: it pays for HGB and LightGBM; a forest's Python per
    # tree and XGBoost's OpenMP threads beside the import thread made the run slower.
    fits_beside_python: bool = False

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.estimators)

    def available(self) -> bool:
        return not self.missing_packages()

    def missing_packages(self) -> list[str]:
        modules = self._modules() | {IMPORT_NAMES.get(r, r) for r in self.requires}
        return sorted(m for m in modules if importlib.util.find_spec(m) is None)

    def estimator_class(self, task: str) -> type:
        if task not in self.estimators:
            raise ConfigError(f"model {self.name!r} does not support {task}; it supports {', '.join(self.tasks)}.")
        missing = self.missing_packages()
        if missing:
            from tabtrack.extras import install_hint

            raise ConfigError(
                f"model {self.name!r} needs {', '.join(missing)}, which is not installed; "
                f"install it with: {install_hint(missing[0])}"
            )
        module_name, _, class_name = self.estimators[task].partition(":")
        module = importlib.import_module(module_name)
        return getattr(module, class_name)

    def resolve_params(
        self,
        task: str,
        params: Mapping[str, Any],
        *,
        random_state: int,
        y_train: Any = None,
        device: str = "cpu",
    ) -> dict[str, Any]:
        """Defaults, then data-derived params, then the user's params, then the run's seed and device.
        Unknown names are errors that list the valid ones."""
        cls = self.estimator_class(task)
        valid = set(cls().get_params(deep=False))
        for key in params:
            if key not in valid:
                raise ConfigError(choices_hint(key, valid, what=f"parameter for model {self.name!r}"))
        derived = self.data_params(task, y_train, device) if self.data_params and y_train is not None else {}
        resolved = {**self.defaults, **derived, **params}
        if self.seed_param and self.seed_param in valid:
            resolved[self.seed_param] = random_state
        if self.device_param and self.device_param in valid:
            resolved[self.device_param] = device
        return resolved

    def build(
        self, task: str, params: Mapping[str, Any], *, random_state: int, y_train: Any = None, device: str = "cpu"
    ):
        """A new, unfitted estimator; invalid parameter values are reported as ConfigError."""
        cls = self.estimator_class(task)
        _check_magnitudes(params, self.name)
        _check_no_bools_for_numbers(cls, params, self.name)
        estimator = cls(**self.resolve_params(task, params, random_state=random_state, y_train=y_train, device=device))
        _check_param_values(estimator, self.name)
        if self.encode_labels and task == "classification":
            from tabtrack_runtime.label_encoded import LabelEncodedClassifier

            return LabelEncodedClassifier(estimator)
        return estimator

    @property
    def all_trusted_types(self) -> tuple[str, ...]:
        return (*self.trusted_types, *((LABEL_WRAPPER_TYPE,) if self.encode_labels else ()))

    def _modules(self) -> set[str]:
        return {path.partition(":")[0].split(".")[0] for path in self.estimators.values()}


# No tabular hyperparameter is sensibly above this (a forest of 10**8 trees runs for weeks); a value
# beyond it is a typo, reported before anything starts instead of a job that never ends.
MAX_PARAM_MAGNITUDE = 10**6


def _check_magnitudes(params: Mapping[str, Any], family: str) -> None:
    for key, value in params.items():
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if isinstance(item, int | float) and not isinstance(item, bool) and abs(item) > MAX_PARAM_MAGNITUDE:
                raise ConfigError(
                    f"model.params.{key}={value!r} for {family!r} is implausibly large "
                    f"(limit {MAX_PARAM_MAGNITUDE:,}); check for a typo."
                )


def _check_no_bools_for_numbers(cls: type, params: Mapping[str, Any], family: str) -> None:
    """YAML reads `yes`/`true` as booleans, and Python lets a bool pass as an int (n_estimators=True
    would crash inside fit): a bool where the estimator's default is a number is a user error."""
    try:
        defaults = cls().get_params(deep=False)
    except Exception:  # an estimator that needs constructor arguments: its own checks apply
        return
    for key, value in params.items():
        default = defaults.get(key)
        if isinstance(value, bool) and isinstance(default, int | float) and not isinstance(default, bool):
            raise ConfigError(f"model.params.{key} for {family!r} must be a number, got {value!r}.")


def hyperparameters(model: Any) -> dict[str, Any]:
    """The hyperparameters a run records for `model`, whichever door trained it: for tabtrack's pipeline (its
    input step first) or a bare estimator, the estimator's own parameters (through tabtrack's label-encoding
    wrapper); for any other Pipeline, its steps' parameters as scikit-learn names them (`clf__max_depth`).
    Plain values only (no estimators, functions or types); none for a model whose get_params needs more."""
    from tabtrack_runtime.label_encoded import LabelEncodedClassifier
    from tabtrack_runtime.raw_input import RawInput

    steps = getattr(model, "steps", None)
    if steps and isinstance(steps[0][1], RawInput):
        model = steps[-1][1]
    if isinstance(model, LabelEncodedClassifier):
        model = model.estimator
    plain = (str, int, float, bool, type(None), list, tuple, dict)
    try:
        if hasattr(model, "steps"):
            values = {k: v for k, v in model.get_params(deep=True).items() if k != "steps"}
        else:
            values = model.get_params(deep=False) if hasattr(model, "get_params") else {}
    except Exception:  # a third-party get_params that needs more: its hyperparameters stay unrecorded
        return {}
    return {k: v for k, v in values.items() if isinstance(v, plain)}


def unwrap(estimator: Any) -> Any:
    """The fitted algorithm inside tabtrack's label-encoding wrapper (for native flavors and explanations)."""
    from tabtrack_runtime.label_encoded import LabelEncodedClassifier

    return estimator.estimator_ if isinstance(estimator, LabelEncodedClassifier) else estimator


def _check_param_values(estimator: Any, name: str) -> None:
    """Run scikit-learn's own parameter validation now, before any run is created."""
    validate = getattr(estimator, "_validate_params", None)
    if validate is None or not hasattr(estimator, "_parameter_constraints"):
        return  # not a scikit-learn estimator with declared constraints (XGBoost, LightGBM)
    from sklearn.utils._param_validation import InvalidParameterError

    try:
        validate()
    except InvalidParameterError as exc:
        raise ConfigError(f"invalid parameter for model {name!r}: {exc}") from exc
