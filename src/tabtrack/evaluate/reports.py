"""Text and JSON reports."""

from __future__ import annotations

import json
from collections.abc import Sequence


def classification_report(y_true: Sequence, y_pred: Sequence, *, classes: Sequence) -> tuple[str, str]:
    """scikit-learn's classification report as (text, json)."""
    from sklearn.metrics import classification_report as sk_report

    labels = list(classes)
    names = [str(c) for c in labels]
    text = sk_report(y_true, y_pred, labels=labels, target_names=names, zero_division=0, digits=4)
    as_dict = sk_report(y_true, y_pred, labels=labels, target_names=names, zero_division=0, output_dict=True)
    return text, json.dumps(as_dict, indent=2)
