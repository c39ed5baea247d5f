"""The tags every run carries, whichever door or command made it: tabtrack's version and the kind of run, git, the
environment, each data file's lineage, the runs it reproduces or retrains, the entry point and the user's tags."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from tabtrack import __version__, settings
from tabtrack.data.fingerprint import DataFingerprint
from tabtrack.lineage import env_info, git_info
from tabtrack.redact import redact


def standard_tags(
    *,
    kind: str,
    files: Sequence[DataFingerprint] = (),
    test_file: DataFingerprint | None = None,
    user_tags: Mapping[str, str] | None = None,
    entrypoint: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Every run's tags: tabtrack's version and the kind of run (train, own_code, compare, tune), git commit, branch
    and dirty flag, Python and OS, host and pid, each data file's lineage (`data.*`, `data.1.*`, ...), a pre-split
    test file's, the DVC experiment, the run a reproduction re-runs, the entry point, and the user's tags."""
    tags = {"tabtrack.version": __version__, "tabtrack.kind": kind, **git_info(), **env_info()}
    for index, fp in enumerate(files):
        tags.update(_lineage_tags("data" if index == 0 else f"data.{index}", fp))
    if test_file is not None:
        tags.update({"data.test_path": test_file.path, "data.test_sha256": test_file.sha256})
    if os.environ.get(settings.DVC_EXPERIMENT):  # set by `dvc exp run`: ties the run to its DVC experiment
        tags["dvc.experiment"] = os.environ[settings.DVC_EXPERIMENT]
    if os.environ.get(settings.REPRODUCES):  # set by `tabtrack reproduce` for the script it re-runs
        tags["tabtrack.reproduces"] = os.environ[settings.REPRODUCES]
    if os.environ.get(settings.RETRAINS):  # set by `tabtrack retrain` for the script it re-runs on new data
        tags["tabtrack.retrains"] = os.environ[settings.RETRAINS]
    tags.update(entrypoint or {})
    tags.update(redact(dict(user_tags or {})))
    return tags


def _lineage_tags(prefix: str, fp: DataFingerprint) -> dict[str, str]:
    tags = {f"{prefix}.path": fp.path, f"{prefix}.sha256": fp.sha256, f"{prefix}.size_bytes": str(fp.size_bytes)}
    # The data version: for a split `tabtrack prepare` made, the raw file's DVC md5; else the file's own.
    version = fp.upstream or fp
    if version.dvc_md5:
        tags[f"{prefix}.dvc_md5"] = version.dvc_md5
        tags[f"{prefix}.dvc_file"] = version.dvc_file or ""
    if fp.upstream:
        tags[f"{prefix}.source_path"] = fp.upstream.path
        tags[f"{prefix}.source_sha256"] = fp.upstream.sha256
        if fp.dvc_md5:
            tags[f"{prefix}.prepared_dvc_md5"] = fp.dvc_md5
    return tags
