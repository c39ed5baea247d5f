"""Features derived from the census columns, as a scikit-learn transformer: the logged model carries this file
(code_paths=["src"]), so wherever it is loaded it computes the same features from the raw rows."""

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

NUMERIC = ["housing_median_age", "total_rooms", "total_bedrooms", "population", "households", "median_income",
           "rooms_per_household", "bedrooms_per_room", "people_per_household"]  # fmt: skip


class HouseholdRatios(BaseEstimator, TransformerMixin):
    """Rooms per household, bedrooms per room and people per household, next to the raw columns."""

    def fit(self, X: pd.DataFrame, y=None):
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        X = X.copy()
        households = X["households"].astype(float).replace(0, np.nan)
        X["rooms_per_household"] = X["total_rooms"] / households
        X["bedrooms_per_room"] = X["total_bedrooms"].astype(float) / X["total_rooms"].astype(float).replace(0, np.nan)
        X["people_per_household"] = X["population"] / households
        return X


def build_model(learning_rate: float = 0.1, max_iter: int = 200) -> Pipeline:
    columns = ColumnTransformer([
        ("num", SimpleImputer(strategy="median"), NUMERIC),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["ocean_proximity"]),
    ])  # fmt: skip
    return Pipeline([
        ("features", HouseholdRatios()), ("columns", columns),
        ("model", HistGradientBoostingRegressor(learning_rate=learning_rate, max_iter=max_iter, random_state=0)),
    ])  # fmt: skip
