"""`serve` answers with ONNX Runtime wherever it can (`--runtime auto`, the default, or `onnx`): from the run's
`model_onnx` where it logged one, else from the pipeline converted at start-up and checked against it first, on
the run's test rows (or the model's input example) and probe rows (serving/check_rows.py). A model that cannot be
converted, or answers differently, is served by scikit-learn under `auto`, and is one line (exit 2) under `onnx`.

The session runs on one thread, as serve limits scikit-learn's (single rows gain nothing from more). Rows reach
it typed by the pipeline's input step (LoadedModel.prepare), so both runtimes refuse the same bad rows alike.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabtrack.errors import TabtrackError

ONNX_MODEL = "model_onnx"
CONVERTERS = ("skl2onnx", "onnxmltools", "onnxruntime")
# from this many records Arrow reads them faster than Python does (the shadow's batches); a request of a few rows is
# read faster in Python, as Arrow's fixed cost is larger
ARROW_FROM = 64


@dataclass
class OnnxScorer:
    session: Any
    inputs: dict[str, str]  # column -> "number" or "text"
    classes: list | None

    def score(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        """Answers for rows typed by the pipeline's input step."""
        from tabtrack.models.portable import feeds

        return self._run(feeds(rows, self.inputs))

    def score_records(self, records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Answers for JSON records without pandas, where every value is plainly what its column takes (numbers or
        null; text or null) and nothing is infinite; else None, and the pandas path types the rows and names any
        problem. (On a single row pandas took ~3 ms, the graph ~0.3 ms.)"""
        if not records or not self.inputs.keys() <= records[0].keys():
            return None
        graph_inputs = (
            _plain_feeds(records, self.inputs) if len(records) < ARROW_FROM else _arrow_feeds(records, self.inputs)
        )
        return None if graph_inputs is None else self._run(graph_inputs)

    def _run(self, graph_inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        from tabtrack.models.portable import probability_output

        if self.classes is None:
            (values,) = self.session.run(None, graph_inputs)[:1]
            return np.asarray(values, dtype="float64").ravel(), None
        names = [probability_output(c) for c in self.classes]
        proba = np.hstack(self.session.run(names, graph_inputs)).astype("float64")
        return np.asarray(self.classes)[np.argmax(proba, axis=1)], proba


def _plain_feeds(records: list[dict[str, Any]], inputs: dict[str, str]) -> dict[str, np.ndarray] | None:
    feeds = {}
    for column, kind in inputs.items():
        values = [record[column] for record in records]
        if kind == "number":
            if not all(v is None or isinstance(v, int | float) for v in values):  # (bool is an int)
                return None
            feeds[column] = np.array([np.nan if v is None else v for v in values], dtype="float64")
            if np.isinf(feeds[column]).any():
                return None
        else:
            if not all(v is None or isinstance(v, str) for v in values):
                return None
            feeds[column] = np.array(["" if v is None else v for v in values], dtype=object)
    return feeds


def _arrow_feeds(records: list[dict[str, Any]], inputs: dict[str, str]) -> dict[str, np.ndarray] | None:
    from tabtrack.serving.records import as_arrow

    table = as_arrow(records, inputs)
    if table is None:
        return None
    feeds = {}
    for column, kind in inputs.items():
        values = table.column(column)
        if kind == "number":
            feeds[column] = values.to_numpy()  # a null becomes NaN
            if np.isinf(feeds[column]).any():
                return None
        else:
            feeds[column] = values.fill_null("").to_numpy()
    return feeds


def onnx_scorer(loaded: Any, *, required: bool, converted_in: Path | None = None) -> tuple[OnnxScorer | None, str]:
    """An ONNX Runtime scorer for `loaded` (a LoadedModel) and what answers, in words. Where ONNX Runtime cannot
    answer: None and why (`required`: a TabtrackError naming the way out). `converted_in`: a folder where a model
    converted here is kept for the other worker processes of the same service, which then skip converting it."""
    from tabtrack.extras import install_hint, installed, require

    purpose = "--runtime onnx"
    if not installed("onnxruntime"):
        if required:
            require("onnxruntime", purpose=purpose)
        return None, f"scikit-learn ({install_hint('onnxruntime')} to answer with ONNX Runtime)"
    logged = _logged(loaded)
    if logged is not None:
        return logged, "ONNX Runtime (the run's model_onnx)"
    missing = [module for module in CONVERTERS if not installed(module)]
    if missing:
        if required:
            raise TabtrackError(f"the run has no {ONNX_MODEL} and converting it needs {missing[0]}: "
                                f"{install_hint(missing[0])} (or serve with --runtime sklearn).")  # fmt: skip
        return None, f"scikit-learn ({install_hint(missing[0])} to answer with ONNX Runtime)"
    try:
        return _converted(loaded, converted_in)
    except TabtrackError as exc:
        if required:
            raise TabtrackError(
                f"cannot serve {loaded.uri} with ONNX Runtime: {exc} (serve with --runtime sklearn)."
            ) from exc
        return None, f"scikit-learn (not ONNX Runtime: {exc})"


def _logged(loaded: Any) -> OnnxScorer | None:
    import mlflow
    from mlflow.exceptions import MlflowException

    from tabtrack.models.portable import METADATA_KEY, session_for

    run_id = loaded.metadata.get("run_id")
    if run_id is None:
        return None
    try:
        folder = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{ONNX_MODEL}")
        described = mlflow.models.Model.load(folder)
    except (MlflowException, OSError):
        return None
    session = session_for(f"{folder}/{described.flavors['onnx']['data']}", threads=1)
    return OnnxScorer(session, dict(described.metadata[METADATA_KEY]["inputs"]), loaded.classes)


def _converted(loaded: Any, converted_in: Path | None) -> tuple[OnnxScorer, str]:
    """The pipeline converted and checked here, or the copy another process of this service converted and checked."""
    from tabtrack.models import portable
    from tabtrack.serving.check_rows import run_rows

    meta = loaded.metadata
    key = hashlib.sha256(f"{loaded.uri}|{meta.get('run_id')}|{meta.get('version')}".encode()).hexdigest()[:16]
    kept = None if converted_in is None else converted_in / f"{key}.onnx"
    if kept is not None and kept.is_file():
        stored = json.loads(kept.with_suffix(".json").read_text())
        session = portable.session_for(str(kept), threads=1)
        return OnnxScorer(session, stored["inputs"], loaded.classes), stored["how"]
    started = time.perf_counter()
    rows, which = run_rows(meta.get("run_id"), loaded.uri)
    converted = portable.convert(loaded.model, rows)
    rows, probes = portable.with_probe_rows(loaded.model, rows, converted.inputs)
    check = portable.verify(converted, loaded.model, rows)
    if not check.passed:
        raise TabtrackError(f"converted, it answers differently ({check.summary()})")
    seconds = time.perf_counter() - started
    which += f" and {probes} probe rows" if probes else ""
    how = f"ONNX Runtime (converted at start-up in {seconds:.1f} s; checked on {which}: {check.summary()})"
    serialized = converted.model.SerializeToString()
    if kept is not None:
        kept.with_suffix(".json").write_text(json.dumps({"inputs": converted.inputs, "how": how}))
        kept.write_bytes(serialized)
    return OnnxScorer(portable.session_for(serialized, threads=1), converted.inputs, loaded.classes), how
