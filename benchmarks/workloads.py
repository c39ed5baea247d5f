"""What users would otherwise run, as fresh processes the suite times (python -m benchmarks.workloads MODE DATA).

bare     scikit-learn only: the same preprocessing + estimator, fit, predict, test metrics
autolog  the same, recorded with MLflow's own tools: mlflow.sklearn.autolog() + mlflow.models.evaluate
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd


def _fit(data: Path, model: str):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    frame = pd.read_parquet(data) if data.suffix == ".parquet" else pd.read_csv(data)
    X, y = frame.drop(columns="y"), frame["y"]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42, stratify=y)
    estimator = (
        RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=42)
        if model == "random_forest"
        else HistGradientBoostingClassifier(random_state=42)
    )
    # The preprocessing tabtrack fits (np.median: the same medians as "median", column by column).
    numeric = Pipeline([("impute", SimpleImputer(strategy=np.median)), ("scale", StandardScaler())])
    pipeline = Pipeline([("preprocess", ColumnTransformer([("num", numeric, list(X.columns))])), ("model", estimator)])
    pipeline.fit(X_train, y_train)
    proba = pipeline.predict_proba(X_test)[:, 1]
    pred = pipeline.predict(X_test)
    scores = {
        "accuracy": accuracy_score(y_test, pred),
        "f1": f1_score(y_test, pred),
        "roc_auc": roc_auc_score(y_test, proba),
    }
    return pipeline, X_test, y_test, scores


def main() -> None:
    mode, data = sys.argv[1], Path(sys.argv[2])
    model = sys.argv[3] if len(sys.argv) > 3 else "random_forest"
    if mode == "bare":
        _, _, _, scores = _fit(data, model)
        print(scores)
        return
    if mode != "autolog":
        raise SystemExit(f"unknown mode {mode}")
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{Path.cwd() / 'autolog.db'}")
    mlflow.set_experiment("autolog")
    # MLflow 3 saves sklearn models with skops, and autolog's own log_model fails on untrusted tree types
    # (measured: 'numpy.dtype', 'sklearn.tree._tree.Tree'), so the model is logged explicitly, as a user must.
    mlflow.sklearn.autolog(log_models=False)
    with mlflow.start_run():
        pipeline, X_test, y_test, _ = _fit(data, model)
        model_info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            input_example=X_test.head(5),
            skops_trusted_types=["numpy.dtype", "numpy.median", "sklearn.tree._tree.Tree",
                                 "sklearn._loss.link.LogitLink", "sklearn._loss.link.Interval",
                                 "sklearn._loss.loss.HalfBinomialLoss", "sklearn._loss._loss.CyHalfBinomialLoss",
                                 "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
                                 "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"],
        )  # fmt: skip
        evaluation = X_test.assign(y=np.asarray(y_test))
        # evaluate gives the comparable plots and metrics: confusion matrix, ROC, PR, calibration; SHAP off,
        # so an installed shap does not change the anchor
        mlflow.models.evaluate(
            model_info.model_uri, evaluation, targets="y", model_type="classifier",
            evaluator_config={"log_model_explainability": False},
        )  # fmt: skip


if __name__ == "__main__":
    main()
