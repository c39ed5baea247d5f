"""Train one model on data/heart.csv with this project's own preprocessing, recorded as a standard tabtrack run.

python train.py --model logreg        # or --model rf
"""

import argparse

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import tabtrack

NUMERIC = ["age", "resting_bp", "cholesterol", "max_heart_rate", "st_depression"]
CATEGORICAL = ["sex", "chest_pain", "exercise_angina", "fasting_sugar_high"]


def make_pipeline(model: str, params: dict) -> Pipeline:
    preprocess = ColumnTransformer([
        ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), NUMERIC),
        ("cat", Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                          ("onehot", OneHotEncoder(handle_unknown="ignore"))]), CATEGORICAL),
    ])  # fmt: skip
    estimator = LogisticRegression(**params) if model == "logreg" else RandomForestClassifier(**params)
    return Pipeline([("preprocess", preprocess), ("model", estimator)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["logreg", "rf"], default="logreg")
    parser.add_argument("--experiment", default="heart-disease")
    args = parser.parse_args()

    params = {"C": 1.0, "max_iter": 1000} if args.model == "logreg" else {"n_estimators": 200, "max_depth": 6}
    frame = pd.read_csv("data/heart.csv")
    X, y = frame.drop(columns=["disease"]), frame["disease"]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=42)

    with tabtrack.start_run(experiment=args.experiment, run_name=args.model, data="data/heart.csv",
                            params=params, seed=42) as run:  # fmt: skip
        pipeline = make_pipeline(args.model, {**params, "random_state": 42})
        run.cross_validate(pipeline, X_train, y_train, cv=5)
        pipeline.fit(X_train, y_train)
        result = run.evaluate(pipeline, X_test, y_test, X_train=X_train, y_train=y_train)
    print(f"{args.model}: cv roc_auc {result.metrics['cv']['roc_auc_mean']:.3f}, "
          f"test roc_auc {result.metrics['test']['roc_auc']:.3f}  (run {result.run_id})")  # fmt: skip


if __name__ == "__main__":
    main()
