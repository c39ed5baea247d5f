"""The data half of the boundary, in one call: load the config's data file (or take a frame), drop the columns the
config drops, validate, normalise, settle the task and split. Every data mistake surfaces here as a DataError or
ConfigError, before any run (or store) exists; what comes out can be trusted by everything after it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tabtrack.data.fingerprint import FRAME_SOURCE, DataFingerprint, fingerprint, frame_fingerprint
from tabtrack.data.load import load_table, release_freed_memory
from tabtrack.data.prepare import (
    Dataset,
    Split,
    hold_out_calibration,
    prepare_dataset,
    presplit_dataset,
    split_dataset,
)
from tabtrack.data.remote import local_file, shown
from tabtrack.data.validate import ValidationReport, ValidationSettings, load_schema, validate_frame
from tabtrack.errors import ConfigError, DataError

if TYPE_CHECKING:
    from tabtrack.config import RunConfig

log = logging.getLogger(__name__)


@dataclass
class CheckedData:
    """The data of a run after every check passed: its lineage, what was learned about it, and the split.
    Shared by every model a comparison or a study trains."""

    data_path: Path
    fingerprint: DataFingerprint
    dataset: Dataset  # its rows live in `split` alone (see check_data)
    split: Split
    validation: ValidationReport | None = None
    test_path: Path | None = None  # a pre-split test file (--test-data), a local copy when it is remote
    test_fingerprint: DataFingerprint | None = None

    @property
    def experiment(self) -> str:
        """The default experiment: the data file's stem."""
        return self.data_path.stem

    @property
    def files(self) -> list[tuple[Path, DataFingerprint]]:
        """The files the run read (none for a DataFrame): the data file, and the pre-split test file."""
        files = [] if self.fingerprint.path == FRAME_SOURCE else [(self.data_path, self.fingerprint)]
        return files + ([(self.test_path, self.test_fingerprint)] if self.test_fingerprint else [])


def check_data(config: RunConfig, *, frame: pd.DataFrame | None = None, convert: bool = True) -> CheckedData:
    """Load, validate, fingerprint and split the data the config names (and its test file, if pre-split), or
    `frame`, the data itself. `convert=False` keeps the features' dtypes (a user's Pipeline gets them as read)."""
    if frame is not None:
        if config.test_data:
            raise ConfigError("test_data needs a data file; with a DataFrame, split it yourself or pass one frame.")
        _target_given(config)
        data_path, lineage = Path(FRAME_SOURCE), frame_fingerprint(frame)
    else:
        data_path = data_file(config)
        frame, lineage = load_table(data_path), None
    frame = without_dropped(frame, config, data_path)
    source = f"'{shown(data_path)}'"
    # prepare_dataset first: its messages for a missing target or unusable column are the most specific.
    # With a pre-split test file it runs on the training file alone too, so a training split that cannot
    # train (one class, say) is refused even when the test file would make up for it.
    dataset = prepare_dataset(frame, target=config.target, task=config.task, source=source, convert=convert)
    report = _validated(frame, config, source)
    test_path = test_fingerprint = None
    if config.test_data:
        test_path = local_file(config.test_data)
        test_frame = without_dropped(load_table(test_path), config, test_path)
        _check_same_columns(frame, test_frame, data_path, test_path)
        _validated(test_frame, config, f"'{shown(test_path)}'")
        n_train = int(frame[config.target].notna().sum())
        dataset = prepare_dataset(
            pd.concat([frame, test_frame], ignore_index=True), target=config.target, task=config.task, source=source,
            convert=convert,
        )  # fmt: skip
        split = presplit_dataset(dataset, n_train)
        test_fingerprint = fingerprint(test_path)
        del frame, test_frame
    else:
        del frame  # the features share its memory: the split releases them as it goes
        split = split_dataset(dataset, test_size=config.test_size, random_state=config.random_state, release_rows=True)
    if config.intervals:
        split = hold_out_calibration(
            split, share=config.calibration_size, level=config.intervals, random_state=config.random_state,
            task=dataset.task,
        )  # fmt: skip
    if config.cv_folds >= 2:
        _check_folds(split.y_train, config.cv_folds, dataset.task)
    # The split holds the feature rows from here on: keeping a second copy of them through training
    # would cost as much memory again as the data itself (229 MiB for 1M x 30 floats).
    dataset = replace(dataset, X=dataset.X.iloc[:0].copy())
    checked = CheckedData(
        data_path=data_path,
        fingerprint=lineage or fingerprint(data_path),
        dataset=dataset,
        split=split,
        validation=report,
        test_path=test_path,
        test_fingerprint=test_fingerprint,
    )
    del dataset
    release_freed_memory()
    return checked


def data_file(config: RunConfig) -> Path:
    """The config's data file (a local copy when it is on object storage), once it names one and a target."""
    if not config.data:
        raise ConfigError("no data file given; pass DATA (a .csv or .parquet file) or set `data:` in the config.")
    _target_given(config)
    return local_file(config.data)


def _target_given(config: RunConfig) -> None:
    if not config.target:
        raise ConfigError("no target column given; pass --target NAME or set `target:` in the config.")


def validation_report(
    frame: pd.DataFrame, config: RunConfig, source: str, *, schema_file: str | Path | None = None
) -> ValidationReport:
    """Every data check on `frame` with the config's settings; `schema_file` overrides the config's."""
    v = config.validation
    schema_file = schema_file or v.schema_file
    settings = ValidationSettings(**{**v.model_dump(exclude={"schema_file"}), "ignore": tuple(v.ignore)})
    return validate_frame(
        frame,
        target=config.target,
        source=source,
        settings=settings,
        schema=load_schema(schema_file) if schema_file else None,
    )


def _validated(frame: pd.DataFrame, config: RunConfig, source: str) -> ValidationReport:
    """Errors stop here with one line; warnings travel on to the run as data_validation.json."""
    report = validation_report(frame, config, source)
    if report.errors:
        problems = "; ".join(f.message.rstrip(".") for f in report.errors)
        raise DataError(f"data validation failed for {source}: {problems}.")
    for finding in report.warnings:
        log.warning("data validation: %s", finding.message)
    return report


def without_dropped(frame: pd.DataFrame, config: RunConfig, path: Path) -> pd.DataFrame:
    """The frame without the config's drop_columns (a typo among them is an error, not a no-op)."""
    if not config.drop_columns:
        return frame
    unknown = [c for c in config.drop_columns if c not in frame.columns]
    if unknown:
        raise ConfigError(
            f"drop_columns names column(s) {', '.join(map(repr, unknown))} that '{shown(path)}' does not have."
        )
    if config.target in config.drop_columns:
        raise ConfigError(f"drop_columns includes the target {config.target!r}; remove it from the list.")
    return frame.drop(columns=config.drop_columns)


def _check_same_columns(train: pd.DataFrame, test: pd.DataFrame, train_path: Path, test_path: Path) -> None:
    missing = [c for c in train.columns if c not in test.columns]
    extra = [c for c in test.columns if c not in train.columns]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"lacks {', '.join(map(repr, missing))}")
        if extra:
            parts.append(f"adds {', '.join(map(repr, extra))}")
        raise DataError(
            f"test data '{shown(test_path)}' {' and '.join(parts)} compared with '{shown(train_path)}'; use matching files."
        )


def _check_folds(y_train: pd.Series, folds: int, task: str) -> None:
    if folds > len(y_train):
        raise ConfigError(f"cv_folds={folds} exceeds the {len(y_train)} training rows; lower --cv.")
    if task == "classification":
        smallest = y_train.value_counts().min()
        if smallest < folds:
            raise DataError(
                f"the rarest class has {smallest} training row(s), fewer than cv_folds={folds}; lower --cv."
            )
