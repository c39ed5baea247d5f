"""What the MLflow adapter, offline bundles and `sync` share: MLflow's batch limits, how a frame becomes an
MLflow dataset entity, and how a model is saved or logged under its flavor.

One module that all three import, so none of them imports another for these."""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path
from typing import Any

from tabtrack.tracking.base import ModelArtifact

# MLflow's per-request limits for log_batch.
MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100
MAX_PARAM_LENGTH = 6000
PARENT_TAG = "mlflow.parentRunId"
# The dataset schema MLflow records is inferred from this many rows: the column types are settled by them.
SCHEMA_SAMPLE_ROWS = 1000
FLAVORS = ("sklearn", "xgboost", "lightgbm", "pytorch")


def dataset_entity(frame: Any, *, source: str, name: str, target: str | None, digest: str | None = None):
    """The MLflow dataset entity (digest, schema, profile) for a frame.

    The digest is tabtrack's (one vectorised hashing pass): MLflow's default maps type() over every cell
    of the whole frame (4.9 s for 1M x 31). The schema comes from the first rows; the profile counts all.
    With `digest` (a file's, from its sha256) the frame is the file's first rows, read for the schema."""
    import mlflow
    from mlflow.entities import Dataset

    from tabtrack.data.fingerprint import frame_digest

    with warnings.catch_warnings():
        # MLflow registers two identical local-file source types and warns that it picked one.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")  # schema: information only
        sample = mlflow.data.from_pandas(
            frame.head(SCHEMA_SAMPLE_ROWS),
            source=source,
            name=name,
            targets=target,
            digest=digest or frame_digest(frame),
        ).to_dict()
    profile = {"num_rows": len(frame), "num_elements": int(frame.size)} if digest is None else {"digest": "sha256"}
    return Dataset(
        name=sample["name"],
        digest=sample["digest"],
        source_type=sample["source_type"],
        source=sample["source"],
        schema=sample["schema"],
        profile=json.dumps(profile),
    )


def model_kwargs(artifact: ModelArtifact) -> dict[str, Any]:
    """What log_model and save_model both take for this artifact, by flavor."""
    # Known requirements: skips MLflow's requirement inference (~6.7 s per call).
    kwargs: dict[str, Any] = {"pip_requirements": artifact.pip_requirements}
    if artifact.input_example is not None:
        kwargs["signature"] = signature(artifact)
        kwargs["input_example"] = artifact.input_example
    if artifact.code_paths:
        kwargs["code_paths"] = artifact.code_paths
    if artifact.flavor == "sklearn":
        kwargs["skops_trusted_types"] = artifact.trusted_types or None
    return kwargs


def signature(artifact: ModelArtifact):
    """The model's signature. A frame's columns are declared AnyType: MLflow's schema enforcement has no
    column type that takes both int64 and float64 with NaN (the same integer column of a CSV read whole
    and read in batches), nor both text and pandas `category`; so the names are checked (missing ones
    refused, order and extra columns handled) and the values go to the model as they are, whose first
    step settles their types (tabtrack.models.raw_input). Outputs are inferred from the output example."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    with warnings.catch_warnings():
        # Its advice (declare integer columns as doubles) is what the AnyType inputs below already settle.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        inferred = infer_signature(artifact.input_example, artifact.output_example)
    if artifact.input_columns is None:
        return inferred
    inputs = Schema([ColSpec(AnyType(), name) for name in artifact.input_columns])
    return ModelSignature(inputs=inputs, outputs=inferred.outputs)


def log_model(artifact: ModelArtifact):
    """`mlflow.<flavor>.log_model` into the active run; returns MLflow's ModelInfo."""
    return flavor_module(artifact.flavor).log_model(artifact.model, name=artifact.name, **model_kwargs(artifact))


def save_model(artifact: ModelArtifact, path: str | Path) -> None:
    """The same model log_model would store, written to a local folder (offline bundles)."""
    flavor_module(artifact.flavor).save_model(artifact.model, path=str(path), **model_kwargs(artifact))


def flavor_module(name: str):
    """The mlflow.<flavor> module for the flavors tabtrack logs."""
    if name not in FLAVORS:
        raise ValueError(f"no MLflow flavor {name!r}")
    return importlib.import_module(f"mlflow.{name}")
