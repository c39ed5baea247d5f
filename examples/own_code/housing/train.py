"""Train the house-value model with this project's own features (src/), recorded as a standard tabtrack run;
the logged model ships src/ so it loads where this project is not installed.

    python make_data.py && python train.py
"""

import pandas as pd
from sklearn.model_selection import train_test_split
from src.features import build_model

import tabtrack

TARGET = "median_house_value"


def main() -> None:
    frame = pd.read_csv("data/housing.csv")
    X, y = frame.drop(columns=[TARGET]), frame[TARGET]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42)
    params = {"learning_rate": 0.1, "max_iter": 200}
    with tabtrack.start_run(experiment="housing", data="data/housing.csv", params=params, seed=42,
                            code_paths=["src"]) as run:  # fmt: skip
        model = build_model(**params).fit(X_train, y_train)
        result = run.evaluate(model, X_test, y_test, X_train=X_train, y_train=y_train)
    print(f"test rmse {result.metrics['test']['rmse']:,.0f}, r2 {result.metrics['test']['r2']:.3f}")
    print(f"model: {result.model_uri}")


if __name__ == "__main__":
    main()
