"""Write data/heart.csv: a heart-disease-shaped table (the columns of the Cleveland clinic's study), drawn from
a seeded generator so the example needs no download. Integers with gaps, text with gaps, a boolean."""

from pathlib import Path

import numpy as np
import pandas as pd

rng = np.random.default_rng(7)
n = 600
age = rng.integers(29, 78, n)
sex = rng.choice(["male", "female"], n, p=[0.68, 0.32])
chest_pain = rng.choice(["typical", "atypical", "non-anginal", "asymptomatic"], n, p=[0.08, 0.17, 0.28, 0.47])
resting_bp = rng.normal(131, 17, n).round().astype(int)
cholesterol = rng.normal(246, 51, n).round().astype(int)
fasting_sugar_high = rng.random(n) < 0.15
max_heart_rate = (rng.normal(150, 22, n) - 0.4 * (age - 54)).round().astype(int)
exercise_angina = rng.choice(["yes", "no"], n, p=[0.33, 0.67])
st_depression = np.clip(rng.gamma(1.2, 0.9, n), 0, 6.2).round(1)
risk = (
    0.05 * (age - 54)
    + 0.9 * (sex == "male")
    + 1.3 * (chest_pain == "asymptomatic")
    + 0.012 * (resting_bp - 131)
    + 1.1 * (exercise_angina == "yes")
    + 0.7 * st_depression
    - 0.025 * (max_heart_rate - 150)
    - 1.6
)
disease = np.where(rng.random(n) < 1 / (1 + np.exp(-risk)), "yes", "no")
frame = pd.DataFrame({
    "age": age, "sex": sex, "chest_pain": chest_pain, "resting_bp": resting_bp,
    "cholesterol": pd.array(np.where(rng.random(n) < 0.06, None, cholesterol), dtype="Int64"),
    "fasting_sugar_high": fasting_sugar_high, "max_heart_rate": max_heart_rate,
    "exercise_angina": np.where(rng.random(n) < 0.03, None, exercise_angina), "st_depression": st_depression,
    "disease": disease,
})  # fmt: skip
Path("data").mkdir(exist_ok=True)
frame.to_csv("data/heart.csv", index=False)
print(f"wrote data/heart.csv ({len(frame)} rows, {(frame.disease == 'yes').mean():.0%} with disease)")
