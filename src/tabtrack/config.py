"""The run configuration: YAML file, then CLI options, then `--set key=value` overrides.

The resolved config is logged with every run (`config/resolved.yaml`) and is what
`reproduce` replays. Unknown keys are errors that list the valid ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tabtrack.errors import ConfigError, choices_hint

DEFAULT_MODEL = "random_forest"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    type: str = Field(DEFAULT_MODEL, description="model family, e.g. random_forest")
    params: dict[str, Any] = Field(default_factory=dict, description="estimator hyperparameters")


class ValidationConfig(_Strict):
    """Data checks run before training (see `tabtrack validate`)."""

    max_null_share: float = Field(0.5, ge=0, le=1, description="warn when a column is emptier than this")
    max_categories: int = Field(100, ge=1, description="warn when a text column has more distinct values")
    min_class_ratio: float = Field(0.1, ge=0, le=1, description="warn when rarest/commonest class is below this")
    ignore: list[str] = Field(default_factory=list, description="checks to skip, e.g. [leakage]")
    schema_file: str | None = Field(None, description="saved schema (tabtrack validate --save-schema) to check against")

    @field_validator("ignore")
    @classmethod
    def _known_checks(cls, values: list[str]) -> list[str]:
        from tabtrack.data.validate import CHECKS

        unknown = [v for v in values if v not in CHECKS]
        if unknown:
            raise ValueError(f"unknown check(s) {unknown}; valid: {', '.join(CHECKS)}")
        return values


class MonitoringConfig(_Strict):
    """What `tabtrack monitor` calls drift (see "After deployment"), and what a run keeps for it."""

    psi: float = Field(0.2, gt=0, description="a column (or the predictions) drifted when its PSI is above this")
    null_share_jump: float = Field(0.1, gt=0, le=1, description="... or its share of missing values rose by more")
    new_category_share: float = Field(0.05, gt=0, le=1, description="... or this share of its values is new")
    reference_sample_rows: int = Field(
        0, ge=0, le=100_000, description="keep this many raw training rows (seeded) with the reference; 0: none"
    )


class CardConfig(_Strict):
    """What the model card says that no run can measure (see `tabtrack card`); unfilled sections are flagged."""

    intended_use: str | None = Field(None, description="what the model is for and who uses it")
    out_of_scope_use: str | None = Field(None, description="uses it was not built or tested for")
    owners: str | None = Field(None, description="who answers for the model")
    ethical_considerations: str | None = Field(None, description="risks, affected groups, mitigations")


class RunConfig(_Strict):
    """Everything that decides a run's result, plus where it is recorded."""

    data: str | None = Field(None, description="path to a .csv or .parquet file")
    target: str | None = Field(None, description="name of the target column")
    test_data: str | None = Field(None, description="a pre-split test file; then test_size is not used")
    drop_columns: list[str] = Field(default_factory=list, description="columns left out of the features")
    task: Literal["auto", "classification", "regression"] = "auto"
    model: ModelConfig = Field(default_factory=ModelConfig)
    test_size: float = Field(0.2, gt=0, lt=1, description="share of rows held out for testing")
    random_state: int = Field(42, ge=0, le=2**32 - 1, description="seed for every random step")
    cv_folds: int = Field(0, ge=0, le=100, description="K-fold CV on the training split; 0 turns it off")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="for mlp and xgboost: auto picks CUDA when present"
    )
    experiment: str | None = Field(None, description="MLflow experiment; default: the data file's stem")
    run_name: str | None = Field(None, description="MLflow run name; default: {model}_{YYYYmmdd_HHMMSS}")
    tags: dict[str, str] = Field(default_factory=dict)
    extra_params: dict[str, str] = Field(
        default_factory=dict, description="params recorded as given (--log-param KEY=VALUE), e.g. a feature version"
    )
    code_paths: list[str] = Field(
        default_factory=list, description="your code a model needs (--code PATH): it ships with the model"
    )
    train_metrics_rows: int | None = Field(
        200_000, ge=1, description="train_* metrics on a random sample of at most this many training rows; null: all"
    )
    thresholds: list[float] = Field([0.3, 0.5, 0.7], description="binary classifiers: F1 logged at each")
    metrics: list[str] = Field(
        default_factory=list, description="custom metrics, 'module:function' or 'file.py:function'"
    )
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    slices: list[str] = Field(
        default_factory=list, description="input columns whose values get their own test metrics (where it is weak)"
    )
    explain: bool = Field(False, description="SHAP values per input column on up to 1,000 test rows (extra: shap)")
    intervals: float | None = Field(
        None, gt=0, lt=1, description="conformal prediction intervals (regression) or sets (classification) that "
        "hold for this share of rows, e.g. 0.9; off when null",
    )  # fmt: skip
    calibration_size: float = Field(
        0.2, gt=0, lt=1, description="with intervals: share of the training split held out of the fit to calibrate them"
    )
    onnx: bool = Field(
        False, description="also log model_onnx: the whole pipeline as ONNX, checked on the test split (extra: onnx)"
    )
    card: CardConfig = Field(default_factory=CardConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)

    @field_validator("thresholds")
    @classmethod
    def _thresholds_in_unit_interval(cls, values: list[float]) -> list[float]:
        bad = [v for v in values if not 0 < v < 1]
        if bad:
            raise ValueError(f"thresholds must lie strictly between 0 and 1, got {bad}")
        return values

    @field_validator("cv_folds")
    @classmethod
    def _cv_at_least_two(cls, value: int) -> int:
        if value == 1:
            raise ValueError("cv_folds must be 0 (off) or at least 2")
        return value

    @field_validator("tags", "extra_params", mode="before")
    @classmethod
    def _tags_as_text(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): str(v) for k, v in value.items()}
        return value


def valid_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """Dotted keys accepted by `--set` (dict-valued fields accept any sub-key)."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(valid_keys(annotation, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def load_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found.")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file '{path}' is not UTF-8 text; re-save it as UTF-8.") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file '{path}' is not valid YAML{where}: {getattr(exc, 'problem', exc)}.") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys to values, not {type(loaded).__name__}.")
    return loaded


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """`["model.params.max_depth=6"]` -> `{"model": {"params": {"max_depth": 6}}}`; values are YAML."""
    result: dict[str, Any] = {}
    keys = valid_keys()
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {pair!r} (e.g. --set model.params.max_depth=6).")
        if key not in keys and not _under_dict_field(key):
            raise ConfigError(choices_hint(key, keys, what="--set key"))
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        _assign(result, key.split("."), value)
    return result


def resolve_config(
    *,
    file: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
) -> RunConfig:
    """Merge file < options (None means "not given") < overrides and validate once."""
    merged: dict[str, Any] = load_config_file(file) if file else {}
    source = f"config file '{file}'" if file else "config"
    for layer in (drop_none(options or {}), parse_overrides(overrides)):
        merged = deep_merge(merged, layer)
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from exc


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def drop_none(options: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, Mapping):
            nested = drop_none(value)
            if nested:
                result[key] = nested
        elif value is not None:
            result[key] = value
    return result


def _under_dict_field(key: str) -> bool:
    return key.startswith(("model.params.", "tags.", "extra_params.")) and len(key.split(".")) >= (
        3 if key.startswith("model") else 2
    )


def _assign(target: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value


def _describe(exc: ValidationError, source: str) -> str:
    """One line for the first problem pydantic found, naming the key, the value and the fix."""
    error = exc.errors()[0]
    loc = [str(p) for p in error["loc"]]
    key = ".".join(loc)
    if error["type"] == "extra_forbidden":
        parent = ".".join(loc[:-1])
        valid = [k[len(parent) + 1 :] if parent else k for k in valid_keys() if k.startswith(parent)]
        valid = sorted({k.split(".")[0] for k in valid})
        where = f" under '{parent}'" if parent else ""
        return f"{source}: " + choices_hint(loc[-1], valid, what=f"key{where}")
    received = error.get("input")
    return f"{source}: invalid value for '{key}': {error['msg']} (got {received!r})."
