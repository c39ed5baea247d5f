"""The boundary of `train`: every user mistake is found here, before any run (or store) exists."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tabtrack.config import RunConfig
from tabtrack.data import DataFingerprint, Dataset, fingerprint, load_table, prepare_dataset, split_dataset
from tabtrack.data.prepare import Split
from tabtrack.errors import ConfigError, DataError
from tabtrack.evaluate.custom import CustomMetric, load_metric
from tabtrack.models import ModelSpec, get_spec


@dataclass
class CheckedInputs:
    """Inputs after every user-facing check passed: nothing below here should be a user error."""

    config: RunConfig
    data_path: Path
    fingerprint: DataFingerprint
    dataset: Dataset
    split: Split
    spec: ModelSpec
    estimator: Any  # unfitted, with the resolved hyperparameters; cloned for every fit
    experiment: str
    custom_metrics: list[CustomMetric]
    device: str | None


@dataclass
class CheckedData:
    """The data half of the checks, shared by every model a comparison trains."""

    data_path: Path
    fingerprint: DataFingerprint
    dataset: Dataset
    split: Split


def check_training(config: RunConfig, data: CheckedData | None = None) -> CheckedInputs:
    """Every user mistake surfaces here as a TabtrackError, before a run is created.
    `data` skips re-reading a file already checked with the same data settings."""
    spec = get_spec(config.model.type)
    data = data or check_data(config)
    dataset, split = data.dataset, data.split
    if dataset.task not in spec.tasks:
        raise ConfigError(
            f"model {spec.name!r} does not support {dataset.task} (target {config.target!r}); "
            f"it supports {', '.join(spec.tasks)}. Pick another --model or set --task."
        )
    # Built now so unknown parameter names and invalid values are reported before any run exists.
    device = _check_device(config.device, spec)
    estimator = spec.build(
        dataset.task,
        config.model.params,
        random_state=config.random_state,
        y_train=split.y_train,
        device=device or "cpu",
    )
    return CheckedInputs(
        config=config,
        data_path=data.data_path,
        fingerprint=data.fingerprint,
        dataset=dataset,
        split=split,
        spec=spec,
        estimator=estimator,
        experiment=config.experiment or data.data_path.stem,
        custom_metrics=[load_metric(reference) for reference in config.metrics],
        device=device,
    )


def check_data(config: RunConfig) -> CheckedData:
    """Load, validate, fingerprint and split the data named by the config."""
    if not config.data:
        raise ConfigError("no data file given; pass DATA (e.g. tabtrack train data.csv --target y).")
    if not config.target:
        raise ConfigError("no target column given; pass --target NAME or set `target:` in the config.")
    data_path = Path(config.data)
    frame = load_table(data_path)
    dataset = prepare_dataset(frame, target=config.target, task=config.task, source=f"'{data_path}'")
    split = split_dataset(dataset, test_size=config.test_size, random_state=config.random_state)
    if config.cv_folds >= 2:
        _check_folds(split.y_train, config.cv_folds, dataset.task)
    return CheckedData(data_path=data_path, fingerprint=fingerprint(data_path), dataset=dataset, split=split)


def _check_device(requested: str, spec: ModelSpec) -> str | None:
    """The device the model trains on, or None for CPU-only families."""
    if spec.device_param is None:
        if requested == "cuda":
            raise ConfigError(f"model {spec.name!r} trains on the CPU only; --device applies to mlp and xgboost.")
        return None
    from tabtrack.models.torch_mlp import resolve_device

    try:
        return resolve_device(requested)
    except RuntimeError as exc:
        raise ConfigError(f"--device {requested}: {exc}; use --device auto or cpu.") from exc


def _check_folds(y_train: pd.Series, folds: int, task: str) -> None:
    if folds > len(y_train):
        raise ConfigError(f"cv_folds={folds} exceeds the {len(y_train)} training rows; lower --cv.")
    if task == "classification":
        smallest = y_train.value_counts().min()
        if smallest < folds:
            raise DataError(
                f"the rarest class has {smallest} training row(s), fewer than cv_folds={folds}; lower --cv."
            )
