"""A model loaded once, with its signature and lineage, ready to score raw rows."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabtrack.errors import TabtrackError
from tabtrack.models.loading import load_logged_model
from tabtrack.tracking.store import as_model_uri, registered_version, resolve_tracking_uri
from tabtrack_runtime.intervals import METADATA_KEY
from tabtrack_runtime.raw_input import RawInput, as_number_column, as_text_column

log = logging.getLogger(__name__)
NUMERIC_TYPES = {"double", "float", "long", "integer", "boolean"}


@dataclass
class LoadedModel:
    uri: str
    model: Any  # the scikit-learn pipeline (predict and predict_proba on raw rows)
    columns: dict[str, str]  # input column -> "number", "text" or "any" (passed as given), in the model's order
    metadata: dict[str, Any] = field(default_factory=dict)
    intervals: dict[str, Any] | None = None  # the conformal calibration the run recorded (tabtrack_runtime.intervals)
    onnx: Any = None  # OnnxScorer: the answers come from ONNX Runtime (serving/onnx_scorer.py)
    answered_by: str = "scikit-learn"  # what answers, in words, for serve's first lines

    @property
    def trace_headers(self) -> dict[str, str]:
        """The headers each answer carries, so that it traces back to its model, run, data and code."""
        headers = {"X-Model-Uri": self.uri, "X-Model-Run-Id": str(self.metadata.get("run_id") or "")}
        if self.metadata.get("version"):
            headers["X-Model-Version"] = f"{self.metadata['name']}/{self.metadata['version']}"
        return headers

    @property
    def classes(self) -> list | None:
        classes = getattr(self.model, "classes_", None)
        return None if classes is None else [c.item() if hasattr(c, "item") else c for c in classes]

    def prepare(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows as the model's input step gives them to the preprocessing: missing columns are an error
        naming them, extra columns are dropped with a warning, numeric columns become float64 (a value
        that is not a number, or is infinite, is an error naming the column), text columns text."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise TabtrackError(f"input lacks column(s) the model needs: {', '.join(map(repr, missing))}.")
        extra = [c for c in frame.columns if c not in self.columns]
        if extra:
            log.warning("ignoring column(s) the model does not use: %s", ", ".join(map(str, extra)))
        prepared = {}
        for column, kind in self.columns.items():
            if kind != "number":
                prepared[column] = frame[column] if kind == "any" else as_text_column(frame[column])
                continue
            try:
                prepared[column] = as_number_column(frame[column], column)
            except ValueError as exc:
                raise TabtrackError(str(exc)) from None
            if np.isinf(prepared[column].to_numpy()).any():
                raise TabtrackError(f"column {column!r} holds an infinite value; send a finite number or null.")
        return pd.DataFrame(prepared, index=frame.index, columns=list(self.columns))

    def score_records(self, records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray | None]:
        """`score` for JSON records; ONNX Runtime takes plain records without pandas (OnnxScorer.score_records)."""
        if self.onnx is not None and all(record.keys() == self.columns.keys() for record in records):
            answered = self.onnx.score_records(records)
            if answered is not None:
                return answered
        return self.score(pd.DataFrame.from_records(records))

    def score(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions and, for classifiers, probabilities, preprocessing the rows once for both."""
        rows = self.prepare(frame)
        if self.onnx is not None:
            return self.onnx.score(rows)
        if not hasattr(self.model, "steps"):
            proba = self.model.predict_proba(rows) if hasattr(self.model, "predict_proba") else None
            return self.model.predict(rows), proba
        estimator = self.model.steps[-1][1]
        features = self.model[:-1].transform(rows)
        if not hasattr(estimator, "predict_proba"):
            return estimator.predict(features), None
        # One pass through the model: the label is the most probable class, so an answer's label and
        # probabilities always agree (what predict() does for trees, boosting and the MLP).
        proba = estimator.predict_proba(features)
        return np.asarray(estimator.classes_)[np.argmax(proba, axis=1)], proba


RUNTIMES = ("auto", "onnx", "sklearn")


def load(
    uri: str, *, tracking_uri: str | None = None, runtime: str = "sklearn", converted_in: Path | None = None
) -> LoadedModel:
    """Load once; any failure is one clear TabtrackError naming the URI. `runtime="onnx"`: answers come from ONNX
    Runtime, from the run's `model_onnx` or the pipeline converted now (the pipeline still checks and types the
    rows); "auto": the same where it can, else scikit-learn (serving/onnx_scorer.py). `converted_in`: see there."""
    uri, info, metadata = _described(uri, tracking_uri)
    model = _loading(uri, load_logged_model)
    if info.signature is None or info.signature.inputs is None:
        raise TabtrackError(f"model {uri!r} has no input signature; log it with tabtrack train.")
    columns = _column_kinds(model, info.signature.inputs.to_dict())
    intervals = (info.metadata or {}).get(METADATA_KEY)
    loaded = LoadedModel(uri=uri, model=model, columns=columns, metadata=metadata, intervals=intervals)
    if runtime in ("auto", "onnx"):
        from tabtrack.serving.onnx_scorer import onnx_scorer

        loaded.onnx, loaded.answered_by = onnx_scorer(loaded, required=runtime == "onnx", converted_in=converted_in)
    return loaded


def describe(uri: str, *, tracking_uri: str | None = None) -> tuple[str, dict[str, Any]]:
    """The model's URI and lineage (what `load` puts in `metadata`) without loading the model itself."""
    uri, _, metadata = _described(uri, tracking_uri)
    return uri, metadata


def _described(uri: str, tracking_uri: str | None):
    import mlflow

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    uri = as_model_uri(uri)
    info = _loading(uri, mlflow.models.get_model_info)
    return uri, info, _lineage(uri, info)


def _loading(uri: str, call):
    from mlflow.exceptions import MlflowException

    try:
        return call(uri)
    except (MlflowException, OSError) as exc:
        message = getattr(exc, "message", str(exc)).strip().splitlines()[0]
        raise TabtrackError(f"cannot load model {uri!r}: {message}") from exc


def _column_kinds(model: Any, specs: list[dict[str, Any]]) -> dict[str, str]:
    """Each input column's kind, from the pipeline where tabtrack built it: its input step. Models logged
    before that step existed declared typed signatures; for any other model (the user's own) the values
    go to it as given."""
    names = [spec["name"] for spec in specs]
    steps = dict(getattr(model, "steps", []))
    if isinstance(steps.get("input"), RawInput):
        numeric = set(steps["input"].numeric)
        return {name: "number" if name in numeric else "text" for name in names}
    kinds = {"string": "text", **dict.fromkeys(NUMERIC_TYPES, "number")}
    return {spec["name"]: kinds.get(spec.get("type"), "any") for spec in specs}


def _lineage(uri: str, info) -> dict[str, Any]:
    """Registered name, version and aliases (when the URI names a registered model), the source run and its lineage."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    meta: dict[str, Any] = {"model_uri": uri, "name": None, "version": None, "aliases": [], "run_id": info.run_id}
    try:
        version = registered_version(client, uri)
    except MlflowException:
        version = None
    if version is not None:
        aliases = client.get_registered_model(version.name).aliases or {}
        meta.update(
            name=version.name, version=str(version.version), run_id=version.run_id or meta["run_id"],
            aliases=sorted(a for a, v in aliases.items() if str(v) == str(version.version)),
        )  # fmt: skip
    if meta["run_id"]:
        try:
            run = client.get_run(meta["run_id"])
        except MlflowException:
            return meta
        meta["data_sha256"] = run.data.tags.get("data.sha256")
        meta["data_dvc_md5"] = run.data.tags.get("data.dvc_md5")
        meta["git_commit"] = run.data.tags.get("git.commit")
        meta["model_type"] = run.data.params.get("model_type")
        meta["test_metrics"] = {
            k.removeprefix("test_"): v for k, v in sorted(run.data.metrics.items()) if k.startswith("test_")
        }
    return meta
