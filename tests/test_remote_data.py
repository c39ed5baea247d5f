"""Data named by URL (s3://…, or any fsspec protocol) is streamed once, hashed as it streams, and read as a
local file; what tells a dead tracking server from a slow upload; `--ray`'s optional address. The s3://
path through a real object store is in test_team_stack.py; here fsspec's in-memory filesystem stands in."""

from __future__ import annotations

import hashlib

import fsspec
import pytest
import requests
from mlflow.exceptions import MlflowException

from tabtrack.cli.app import bare_ray
from tabtrack.cli.options import ray_settings
from tabtrack.data.fingerprint import fingerprint
from tabtrack.data.load import load_table
from tabtrack.data.remote import is_remote, local_file, shown
from tabtrack.errors import ConfigError, DataError
from tabtrack.tracking.mlflow_errors import unreachable


def test_a_url_is_read_as_its_bytes_and_recorded_by_its_url(data_dir):
    raw = (data_dir / "breast_cancer.csv").read_bytes()
    with fsspec.open("memory://bucket/cancer.csv", "wb") as out:
        out.write(raw)
    path = local_file("memory://bucket/cancer.csv")
    assert local_file("memory://bucket/cancer.csv") == path  # fetched once per process
    fp = fingerprint(path)
    assert fp.path == "memory://bucket/cancer.csv" and fp.size_bytes == len(raw)
    assert fp.sha256 == hashlib.sha256(raw).hexdigest()
    assert shown(path) == "memory://bucket/cancer.csv"
    assert load_table(path).shape == (569, 31)


def test_missing_and_unknown_urls_are_one_line_data_errors():
    with pytest.raises(DataError, match=r"'memory://bucket/nope\.csv' not found"):
        local_file("memory://bucket/nope.csv")
    with pytest.raises(DataError, match=r"nosuch://\*\*\*@b/k.csv"):  # credentials in the URL never printed
        local_file("nosuch://user:pw@b/k.csv")


@pytest.mark.parametrize(
    ("location", "remote"),
    [("s3://b/k.csv", True), ("data.csv", False), ("/abs/data.csv", False), ("file:///abs/d.csv", False),
     ("C:\\data\\d.csv", False), ("gs://b/k.parquet", True)],
)  # fmt: skip
def test_what_counts_as_a_url(location, remote):
    assert is_remote(location) is remote


def test_failover_is_decided_on_connection_failures_not_read_timeouts():
    assert unreachable(requests.exceptions.ConnectionError("Connection refused"))
    assert unreachable(MlflowException("API request failed: Max retries exceeded (NewConnectionError: refused)"))
    assert not unreachable(requests.exceptions.ReadTimeout("Read timed out. (read timeout=120)"))
    assert not unreachable(
        MlflowException("API request failed: Max retries exceeded (Caused by ReadTimeoutError('Read timed out.'))")
    )
    assert not unreachable(MlflowException("RESOURCE_DOES_NOT_EXIST: run not found"))


def test_bare_ray_means_a_local_ray():
    assert bare_ray(["compare", "d.csv", "--ray"]) == ["compare", "d.csv", "--ray", "local"]
    assert bare_ray(["tune", "--ray", "--trials", "4"]) == ["tune", "--ray", "local", "--trials", "4"]
    assert bare_ray(["tune", "--ray", "auto"]) == ["tune", "--ray", "auto"]
    assert ray_settings("local", 1, 0).address is None and ray_settings("auto", 2, 0).threads == 2
    assert ray_settings(None, 1, 0) is None
    with pytest.raises(ConfigError, match="put DATA first"):
        ray_settings("data.csv", 1, 0)
