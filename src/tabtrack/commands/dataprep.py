"""`tabtrack validate` and `tabtrack prepare`: the data stages of a DVC pipeline, usable on their own."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tabtrack.config import RunConfig
from tabtrack.data.checked import data_file, validation_report, without_dropped
from tabtrack.data.fingerprint import fingerprint, sha256_of, write_lineage
from tabtrack.data.load import load_table
from tabtrack.data.prepare import prepare_dataset, split_dataset
from tabtrack.data.remote import shown
from tabtrack.data.validate import ValidationReport, save_schema, schema_of

TRAIN_FILE = "train.parquet"
TEST_FILE = "test.parquet"


def validate_file(
    config: RunConfig, *, schema_path: str | Path | None = None, save_schema_to: str | Path | None = None
) -> ValidationReport:
    """Every check on the config's data file; the report says what is wrong, nothing is raised for findings."""
    path = data_file(config)
    frame = without_dropped(load_table(path), config, path)
    report = validation_report(frame, config, f"'{shown(path)}'", schema_file=schema_path)
    if save_schema_to:
        save_schema(schema_of(frame, target=config.target), save_schema_to)
    return report


@dataclass
class PreparedSplit:
    train: Path
    test: Path
    n_train: int
    n_test: int


def prepare_split(config: RunConfig, out_dir: str | Path) -> PreparedSplit:
    """Split the raw file exactly as `train` would (same seed, stratified) and write both halves as Parquet,
    with a lineage record naming the raw file, so runs on the halves still carry the raw data's DVC md5."""
    path = data_file(config)
    frame = load_table(path)
    labelled = frame.loc[frame[config.target].notna()].reset_index(drop=True) if config.target in frame else frame
    dataset = prepare_dataset(frame, target=config.target, task=config.task, source=f"'{shown(path)}'")
    split = split_dataset(dataset, test_size=config.test_size, random_state=config.random_state)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The raw rows (not the normalised features), so `train` applies its usual loading to them.
    train_path, test_path = out_dir / TRAIN_FILE, out_dir / TEST_FILE
    labelled.iloc[split.X_train.index].to_parquet(train_path, index=False)
    labelled.iloc[split.X_test.index].to_parquet(test_path, index=False)
    write_lineage(
        out_dir,
        fingerprint(path),
        {train_path.name: sha256_of(train_path), test_path.name: sha256_of(test_path)},
    )
    return PreparedSplit(train_path, test_path, len(split.X_train), len(split.X_test))
