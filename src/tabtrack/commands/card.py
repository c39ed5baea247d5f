"""`tabtrack card MODEL_URI` and the card every `register` writes: what a version's run recorded, read back
from MLflow and rendered by pages/card_page.py. The full card is the run artifact `model_card/{name}-v{version}.md`;
the version's description is its summary."""

from __future__ import annotations

import io
import json
import re

import yaml

from tabtrack.commands.runs import artifact_text
from tabtrack.errors import TabtrackError
from tabtrack.evaluate.slices import SLICES_FILE
from tabtrack.pages.card_page import CardData, render_card, summary
from tabtrack.tracking.store import as_model_uri, mlflow_client, registered_version


def model_card(model_uri: str, *, tracking_uri: str | None = None) -> str:
    """The card (Markdown) of `models:/NAME/VERSION`, `models:/NAME@ALIAS`, `models:/<logged model id>` or
    `runs:/RUN_ID/...`."""
    client = mlflow_client(tracking_uri)
    name, version, run_id = _resolve(client, model_uri)
    return render_card(card_data(client, run_id, name=name, version=version))


SUMMARY_MARK = "Model card: "  # where the card's summary starts in a version's description


def write_card(client, name: str, version: str, *, description: str | None = None) -> str:
    """Log the card of a registered version into its run and set the version's description to `description`
    (default: the user's part of the current one) followed by the card's summary; returns the artifact path.
    Written again after the gate, whose decision the card reports."""
    model_version = client.get_model_version(name, version)
    data = card_data(client, model_version.run_id, name=name, version=version)
    path = f"model_card/{name}-v{version}.md"
    client.log_text(model_version.run_id, render_card(data), path)
    if description is None:
        description = (model_version.description or "").split(SUMMARY_MARK)[0]
    text = f"{description.strip()}\n\n{SUMMARY_MARK}{summary(data)}".strip()
    client.update_model_version(name, version, description=text)
    return path


def card_data(client, run_id: str, *, name: str | None, version: str | None) -> CardData:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise TabtrackError(f"run {run_id!r} not found; check the model URI.") from exc
    config = yaml.safe_load(artifact_text(client, run_id, "config/resolved.yaml") or "") or {}
    validation = artifact_text(client, run_id, "data_validation.json")
    report = artifact_text(client, run_id, "reports/classification_report.json")
    slices = artifact_text(client, run_id, SLICES_FILE)
    aliases, gate = [], {}
    if name and version:
        model_version = client.get_model_version(name, version)
        aliases = list(getattr(model_version, "aliases", []) or [])
        gate = {k: v for k, v in model_version.tags.items() if k.startswith("gate.")}
    return CardData(
        name=name or run.info.run_name, version=version, aliases=aliases, run_id=run_id,
        run_name=run.info.run_name, experiment=client.get_experiment(run.info.experiment_id).name,
        params=run.data.params, metrics=run.data.metrics, tags=run.data.tags, card=config.get("card") or {},
        validation=json.loads(validation) if validation else None, slices=_frame(slices),
        class_balance=_class_balance(report), gate=gate,
    )  # fmt: skip


def _resolve(client, model_uri: str) -> tuple[str | None, str | None, str]:
    """(registered name, version, run id) of a model URI (`NAME/3` and `NAME@alias` as `serve` takes them)."""
    from mlflow.exceptions import MlflowException

    model_uri = as_model_uri(model_uri)
    try:
        if (found := registered_version(client, model_uri)) is not None:
            return found.name, found.version, found.run_id
        if match := re.fullmatch(r"models:/(m-[0-9a-f]+)", model_uri):
            return None, None, client.get_logged_model(match.group(1)).source_run_id
        if match := re.fullmatch(r"runs:/([0-9a-f]+)(/.*)?", model_uri):
            return None, None, match.group(1)
    except MlflowException as exc:
        raise TabtrackError(f"no model at {model_uri}: {exc.message}") from exc
    raise TabtrackError(
        f"cannot read model URI {model_uri!r}; use NAME/VERSION, NAME@ALIAS, models:/... or runs:/RUN_ID/model."
    )


def _frame(text: str | None):
    import pandas as pd

    return pd.read_csv(io.StringIO(text)) if text else None


def _class_balance(report: str | None) -> dict[str, int] | None:
    """Test rows per class, from the classification report's supports."""
    if not report:
        return None
    values = json.loads(report)
    skip = {"accuracy", "macro avg", "weighted avg", "micro avg"}
    return {k: int(v["support"]) for k, v in values.items() if k not in skip and isinstance(v, dict) and "support" in v}
