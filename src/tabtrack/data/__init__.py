"""Data boundary: load a table, decide the task, split it, fingerprint the file."""

from tabtrack.data.fingerprint import DataFingerprint, fingerprint
from tabtrack.data.load import load_table
from tabtrack.data.prepare import Dataset, detect_task, prepare_dataset, split_dataset

__all__ = [
    "DataFingerprint",
    "Dataset",
    "detect_task",
    "fingerprint",
    "load_table",
    "prepare_dataset",
    "split_dataset",
]
