"""`tabtrack export MODEL --format onnx -o model.onnx`: a logged model as one portable ONNX file, checked first.

The check runs on the run's own test split where its data file is still there, unchanged, else on the model's
input example (serving/check_rows.py), and the command says which.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabtrack.errors import TabtrackError

FORMATS = ("onnx",)


@dataclass
class Exported:
    path: Path
    verification: Any  # models.portable.Verification
    checked_on: str  # what the rows were: "the run's test split" or "the model's input example"
    inputs: dict[str, str]


def export_onnx(model_uri: str, output: Path, *, tracking_uri: str | None = None) -> Exported:
    from tabtrack.models import portable
    from tabtrack.models.loading import load_logged_model
    from tabtrack.serving.check_rows import run_rows
    from tabtrack.serving.model import describe

    if re.fullmatch(r"[0-9a-f]{32}", model_uri):  # a run's id: its model
        model_uri = f"runs:/{model_uri}/model"
    try:
        uri, lineage = describe(model_uri, tracking_uri=tracking_uri)
    except TabtrackError as exc:
        run = re.fullmatch(r"runs:/([0-9a-f]{32})/model", model_uri)
        if run is None:
            raise
        raise TabtrackError(f"run {run[1]} has no model to export ({exc}); pass a run that logged one, e.g. one of "
                            "a comparison's model runs rather than its parent.") from exc  # fmt: skip
    pipeline = load_logged_model(uri)
    rows, checked_on = run_rows(lineage.get("run_id"), uri)
    converted = portable.convert(pipeline, rows)
    rows, probes = portable.with_probe_rows(pipeline, rows, converted.inputs)
    checked_on += f" and {probes} probe rows" if probes else ""
    check = portable.verify(converted, pipeline, rows)
    if not check.passed:
        raise TabtrackError(f"the ONNX model answers differently from {uri} ({check.summary()}); nothing written.")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(converted.model.SerializeToString())
    return Exported(output, check, checked_on, converted.inputs)
