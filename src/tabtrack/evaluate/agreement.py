"""A champion and its shadow on the same requests: how often they agree and, on the rows whose labels came back,
how each scored and whether the shadow's difference is beyond noise (the paired bootstrap the gate uses).

Pure: takes the two models' logged rows (request id, row, prediction, class probabilities, and `_label` where
known) and returns plain values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tabtrack.evaluate.paired import PairedDifference, Scored, paired_bootstrap


@dataclass
class PairComparison:
    shadow: dict[str, str]  # the shadow model's uri, name, version, run id
    rows: int  # requests' rows both models scored
    agreement: float  # share of rows with the same label; regression: within 5% of the champion's answer
    mean_abs_difference: float | None = None  # regression: |shadow - champion| on average
    labelled_rows: int = 0
    metric: str | None = None  # the task's primary metric, compared with its paired interval
    champion_metrics: dict[str, float] = field(default_factory=dict)
    shadow_metrics: dict[str, float] = field(default_factory=dict)
    difference: PairedDifference | None = None  # the shadow's improvement over the champion on `metric`

    def summary(self) -> list[str]:
        """What `tabtrack monitor --shadow` says: agreement, then both models' metric on labelled rows."""
        shadow = (
            f"{self.shadow['name']} v{self.shadow['version']}" if self.shadow.get("version") else self.shadow["uri"]
        )
        spread = f", mean |difference| {self.mean_abs_difference:.4g}" if self.mean_abs_difference is not None else ""
        lines = [f"shadow {shadow}: {self.rows} rows scored by both; agreement {self.agreement:.1%}{spread}"]
        if self.difference is None:
            return [*lines, f"metrics: {self.verdict}"]
        d = self.difference
        return [*lines, f"on {self.labelled_rows} labelled rows: {self.metric} champion {d.old:.4f}, shadow "
                        f"{d.new:.4f} (improvement {d.improvement:+.4f}, {d.interval}): {self.verdict}"]  # fmt: skip

    @property
    def verdict(self) -> str:
        if self.difference is None:
            return "no labelled rows yet" if not self.labelled_rows else "no interval"
        if self.difference.beyond():
            return "the shadow is better beyond noise"
        if self.difference.high < 0:
            return "the shadow is worse beyond noise"
        return "within noise"


def compare_pair(
    champion: pd.DataFrame,
    shadow: pd.DataFrame,
    *,
    task: str,
    classes: Sequence | None,
    about: dict[str, str],
    seed: int = 0,
) -> PairComparison:
    """The two models' answers joined on (request id, row); labels, where `champion` has them, score both."""
    from tabtrack.evaluate.metrics import chosen_metric, compute_metrics

    answers = [c for c in shadow.columns if c == "prediction" or c.startswith("proba_")]
    pair = champion.merge(shadow[["request_id", "row", *answers]], on=["request_id", "row"], suffixes=("", "_shadow"))
    if pair.empty:
        return PairComparison(shadow=about, rows=0, agreement=float("nan"))
    if task == "classification":
        old, new = pair["prediction"].astype(str).to_numpy(), pair["prediction_shadow"].astype(str).to_numpy()
        comparison = PairComparison(shadow=about, rows=len(pair), agreement=float(np.mean(old == new)))
    else:
        old, new = pair["prediction"].to_numpy(float), pair["prediction_shadow"].to_numpy(float)
        close = np.abs(new - old) <= 0.05 * np.maximum(np.abs(old), np.finfo(float).eps)
        comparison = PairComparison(shadow=about, rows=len(pair), agreement=float(np.mean(close)),
                                    mean_abs_difference=float(np.mean(np.abs(new - old))))  # fmt: skip
    if "_label" not in pair.columns:
        return comparison
    labelled = pair.loc[pair["_label"].notna()]
    comparison.labelled_rows = len(labelled)
    if labelled.empty:
        return comparison
    labels = [str(c) for c in classes] if classes is not None else None
    scored = []
    for suffix in ("", "_shadow"):
        columns = [f"proba_{c}{suffix}" for c in labels or []]
        proba = labelled[columns].to_numpy(float) if labels and all(c in labelled for c in columns) else None
        predictions = labelled[f"prediction{suffix}"]
        predictions = predictions.astype(str) if task == "classification" else predictions.astype(float)
        scored.append(Scored(predictions.to_numpy(), proba))
    truth = labelled["_label"].astype(str) if task == "classification" else labelled["_label"].astype(float)
    comparison.champion_metrics, comparison.shadow_metrics = (
        {k: float(v) for k, v in compute_metrics(task, truth.to_numpy(), s.predictions, s.proba, classes=labels).items()}
        for s in scored
    )  # fmt: skip
    metric = chosen_metric(None, task, len(labels) if labels else 2)
    if metric in comparison.champion_metrics and len(labelled) >= 2:
        comparison.metric = metric
        comparison.difference = paired_bootstrap(metric, task, truth.to_numpy(), scored[1], scored[0], classes=labels,
                                                 seed=seed)  # fmt: skip
    return comparison
