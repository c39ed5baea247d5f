"""Write data/housing.csv: a housing-shaped table (block-level census features and the median house value),
drawn from a seeded generator so the example needs no download."""

from pathlib import Path

import numpy as np
import pandas as pd

rng = np.random.default_rng(11)
n = 3000
households = rng.integers(80, 2500, n)
rooms = (households * rng.normal(5.3, 1.1, n)).round().astype(int)
bedrooms = (rooms * rng.normal(0.21, 0.03, n)).round().astype(int)
population = (households * rng.normal(2.9, 0.6, n)).round().astype(int)
income = np.clip(rng.lognormal(1.25, 0.45, n), 0.5, 15).round(3)
age = rng.integers(1, 53, n)
ocean = rng.choice(["inland", "near bay", "near ocean", "<1h ocean", "island"], n, p=[0.32, 0.11, 0.13, 0.439, 0.001])
premium = pd.Series(ocean).map({"inland": 0.0, "near bay": 0.55, "near ocean": 0.45, "<1h ocean": 0.5, "island": 1.2})
value = 40_000 * income * (1 + premium.to_numpy()) * (rooms / households / 5.3) ** 0.4 + 600 * age
value = np.clip(value + rng.normal(0, 25_000, n), 15_000, 500_001).round(-2)
frame = pd.DataFrame({
    "housing_median_age": age, "total_rooms": rooms,
    "total_bedrooms": pd.array(np.where(rng.random(n) < 0.01, None, bedrooms), dtype="Int64"),
    "population": population, "households": households, "median_income": income, "ocean_proximity": ocean,
    "median_house_value": value,
})  # fmt: skip
Path("data").mkdir(exist_ok=True)
frame.to_csv("data/housing.csv", index=False)
print(f"wrote data/housing.csv ({len(frame)} rows)")
