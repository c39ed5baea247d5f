"""What a training run records besides metrics: params, tags, config, datasets and model artifacts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

import tabtrack as tabtrack_package
from tabtrack import __version__
from tabtrack.config import RunConfig
from tabtrack.lineage import env_info, git_info, pinned
from tabtrack.models.own import OwnModelSpec, requirements, trusted_types
from tabtrack.models.pipeline import PREPROCESSING_TRUSTED_TYPES
from tabtrack.models.spec import hyperparameters, unwrap
from tabtrack.redact import redact
from tabtrack.tracking import ModelArtifact, Tracker
from tabtrack.workflows.checks import CheckedInputs

INPUT_EXAMPLE_ROWS = 5


def run_params(checked: CheckedInputs) -> dict[str, Any]:
    cfg, split = checked.config, checked.split
    settings = {
        "model_type": checked.spec.name,
        "task": checked.dataset.task,
        "target": cfg.target,
        "test_size": cfg.test_size,
        "random_state": cfg.random_state,
        "cv_folds": cfg.cv_folds,
        "n_features": split.X_train.shape[1],
        "n_train_samples": len(split.X_train),
        "n_test_samples": len(split.X_test),
        "n_numeric_features": len(checked.dataset.numeric_columns),
        "n_categorical_features": len(checked.dataset.categorical_columns),
    }
    if checked.dataset.classes is not None:
        settings["n_classes"] = len(checked.dataset.classes)
    scored = train_rows_scored(checked)
    if scored < len(split.X_train):
        settings["train_metrics_rows"] = scored
    if checked.dataset.dropped_target_rows:
        settings["n_dropped_target_rows"] = checked.dataset.dropped_target_rows
    if checked.device:
        settings["device"] = checked.device
    if cfg.test_data:  # pre-split: the share actually held out, and where it came from
        settings["test_size"] = round(len(split.X_test) / (len(split.X_train) + len(split.X_test)), 4)
        settings["test_data"] = cfg.test_data
    if cfg.drop_columns:
        settings["drop_columns"] = ",".join(cfg.drop_columns)
    return redact({**hyperparameters(checked.estimator), **settings, **cfg.extra_params})


def train_rows_scored(checked: CheckedInputs) -> int:
    """How many training rows the train_* metrics are computed on (config `train_metrics_rows`)."""
    limit = checked.config.train_metrics_rows
    return len(checked.split.X_train) if limit is None else min(limit, len(checked.split.X_train))


def run_tags(checked: CheckedInputs) -> dict[str, str]:
    fp = checked.fingerprint
    tags = {
        "tabtrack.version": __version__,
        "data.path": fp.path,
        "data.sha256": fp.sha256,
        "data.size_bytes": str(fp.size_bytes),
        **git_info(),
        **env_info(),
    }
    # The data version: for a split `tabtrack prepare` made, the raw file's DVC md5; else the file's own.
    version = fp.upstream or fp
    if version.dvc_md5:
        tags["data.dvc_md5"] = version.dvc_md5
        tags["data.dvc_file"] = version.dvc_file or ""
    if fp.upstream:
        tags["data.source_path"] = fp.upstream.path
        tags["data.source_sha256"] = fp.upstream.sha256
        if fp.dvc_md5:
            tags["data.prepared_dvc_md5"] = fp.dvc_md5
    if checked.test_fingerprint:
        test = checked.test_fingerprint
        tags["data.test_path"] = test.path
        tags["data.test_sha256"] = test.sha256
    if checked.validation is not None:
        tags["data.validation_warnings"] = str(len(checked.validation.warnings))
    if os.environ.get("DVC_EXP_NAME"):  # set by `dvc exp run`: ties the run to its DVC experiment
        tags["dvc.experiment"] = os.environ["DVC_EXP_NAME"]
    tags.update(redact(checked.config.tags))
    return tags


def resolved_yaml(cfg: RunConfig) -> str:
    import yaml

    return yaml.safe_dump(redact(cfg.model_dump(mode="json")), sort_keys=False)


def log_datasets(run: Tracker, checked: CheckedInputs) -> None:
    split, target = checked.split, checked.config.target
    stem = checked.data_path.stem
    test_fp = checked.test_fingerprint or checked.fingerprint
    for context, X, y, fp in (
        ("training", split.X_train, split.y_train, checked.fingerprint),
        ("test", split.X_test, split.y_test, test_fp),
    ):
        frame = X.assign(**{target: y.to_numpy()})
        name = (
            Path(fp.path).stem if checked.test_fingerprint else f"{stem}_{'train' if context == 'training' else 'test'}"
        )
        source = Path(fp.path).as_uri() if Path(fp.path).is_absolute() else fp.path  # a DataFrame's: "dataframe"
        run.log_dataset(frame, context=context, source=source, name=name, target=target)


def native_artifact(pipeline, checked: CheckedInputs) -> ModelArtifact:
    """The bare algorithm under its own MLflow flavor (it takes preprocessed features, not raw rows)."""
    native = unwrap(pipeline.named_steps["model"])
    if checked.spec.native_flavor == "pytorch":
        native = native.torch_module()
    features = pipeline[:-1].transform(checked.split.X_train.head(INPUT_EXAMPLE_ROWS))
    return ModelArtifact(
        model=native,
        flavor=checked.spec.native_flavor,
        input_example=np.asarray(features, dtype=np.float32),
        output_example=None,
        pip_requirements=pinned(("numpy", *checked.spec.requires)),
        name="model_native",
    )


def model_artifact(pipeline, checked: CheckedInputs) -> ModelArtifact:
    from joblib import parallel_config

    example = checked.split.X_train.head(INPUT_EXAMPLE_ROWS)
    # A forest (n_jobs=-1) would start a joblib thread pool to predict five rows: ~40 ms against ~13 ms.
    with parallel_config(backend="sequential"):
        output_example = pipeline.predict(example)
    tabtrack_code = str(Path(tabtrack_package.__file__).parent)
    if isinstance(checked.spec, OwnModelSpec):
        user_code = [*checked.config.code_paths, *checked.spec.code]
        trusted = trusted_types(pipeline, code_paths=user_code)
        return ModelArtifact(
            model=pipeline, flavor="sklearn", input_example=example, output_example=output_example,
            input_columns=[str(c) for c in example.columns], pip_requirements=requirements(trusted),
            trusted_types=trusted, code_paths=[tabtrack_code, *user_code],
        )  # fmt: skip
    requirements_ = ("scikit-learn", "numpy", "pandas", "scipy", "skops", *checked.spec.requires)
    return ModelArtifact(
        model=pipeline,
        flavor=checked.spec.flavor,
        input_example=example,
        output_example=output_example,
        input_columns=[str(c) for c in example.columns],
        pip_requirements=pinned(tuple(dict.fromkeys(requirements_))),
        trusted_types=[*PREPROCESSING_TRUSTED_TYPES, *checked.spec.all_trusted_types],
        # The pipeline's first step (RawInput), and for some families the estimator, is tabtrack code.
        code_paths=[tabtrack_code],
    )
