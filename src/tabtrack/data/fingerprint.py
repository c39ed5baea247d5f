"""Identify a data file: content hash, and the md5 DVC recorded for it when it is DVC-tracked."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from tabtrack.data.remote import origin
from tabtrack.redact import redact_uri

CHUNK = 1 << 20


@dataclass(frozen=True)
class DataFingerprint:
    path: str
    sha256: str
    size_bytes: int
    dvc_md5: str | None = None
    dvc_file: str | None = None  # the .dvc file or dvc.lock the md5 came from
    # For a file `tabtrack prepare` split out of a raw file: that raw file's fingerprint.
    upstream: DataFingerprint | None = None


# Written by `tabtrack prepare` next to the files it splits out: where they came from.
LINEAGE_FILE = "lineage.json"


def fingerprint(path: str | Path) -> DataFingerprint:
    """Hash the file in one streaming pass and look up DVC's record of it (and of its upstream raw file).
    A local copy of a remote file is identified by its URL and the hash taken while it streamed in."""
    remote = origin(path)
    if remote is not None:
        # A URL's credentials (https://user:token@host/…) are never recorded.
        return DataFingerprint(path=redact_uri(remote.url), sha256=remote.sha256, size_bytes=remote.size_bytes)
    path = Path(path).resolve()
    sha = sha256_of(path)
    md5, source = dvc_md5(path)
    return DataFingerprint(
        path=str(path),
        sha256=sha,
        size_bytes=path.stat().st_size,
        dvc_md5=md5,
        dvc_file=source,
        upstream=_upstream(path, sha),
    )


FRAME_SOURCE = "dataframe"  # the data "path" of a frame passed to tabtrack.train


def frame_fingerprint(frame) -> DataFingerprint:
    """A DataFrame's lineage: the sha256 of every row's hash, column name and dtype."""
    import pandas as pd

    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    return DataFingerprint(
        path=FRAME_SOURCE, sha256=digest.hexdigest(), size_bytes=int(frame.memory_usage(deep=True).sum())
    )


def frame_digest(frame) -> str:
    """An 8-hex-digit digest of every row, column name and dtype (one vectorised hashing pass): how an
    MLflow dataset made from a frame is identified."""
    import pandas as pd

    digest = hashlib.md5(usedforsecurity=False)
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    return digest.hexdigest()[:8]


def sha256_of(path: str | Path) -> str:
    remote = origin(path)
    if remote is not None:
        return remote.sha256
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_lineage(out_dir: Path, source: DataFingerprint, outputs: dict[str, str]) -> Path:
    """Record that the files `outputs` ({name: sha256}) in `out_dir` were derived from `source`."""
    record = {
        "source": {k: v for k, v in asdict(source).items() if k != "upstream"},
        "outputs": outputs,
    }
    path = out_dir / LINEAGE_FILE
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def _upstream(path: Path, sha256: str) -> DataFingerprint | None:
    """The raw file's fingerprint, when a lineage record sits next to `path` and still matches its content."""
    record_path = path.parent / LINEAGE_FILE
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text())
        if record["outputs"].get(path.name) != sha256:  # stale record: the file changed since prepare
            return None
        return DataFingerprint(**record["source"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def dvc_md5(path: str | Path) -> tuple[str | None, str | None]:
    """The md5 DVC recorded for `path` (or for a tracked directory holding it), if any.

    Looks at `<path>.dvc`, then `<dir>.dvc` for each parent directory, then the `dvc.lock`
    of the DVC project (the nearest ancestor holding `.dvc/`) for a stage output.
    """
    path = Path(path).resolve()
    root = _dvc_root(path)
    if root is None:  # .dvc files and dvc.lock only mean something inside a DVC project
        return None, None
    candidates = [path, *(p for p in path.parents if p.is_relative_to(root) and p != root)]
    for candidate in candidates:
        dvc_file = candidate.with_name(candidate.name + ".dvc")
        if dvc_file.is_file():
            md5 = _md5_from_outs(_read_yaml(dvc_file).get("outs", []), dvc_file.parent, candidate)
            if md5:
                return md5, str(dvc_file)
    lock = root / "dvc.lock"
    if lock.is_file():
        for stage in (_read_yaml(lock).get("stages") or {}).values():
            wdir = root / (stage.get("wdir") or ".")
            for candidate in candidates:
                md5 = _md5_from_outs(stage.get("outs", []), wdir, candidate)
                if md5:
                    return md5, str(lock)
    return None, None


def _dvc_root(path: Path) -> Path | None:
    for parent in path.parents:
        if (parent / ".dvc").is_dir():
            return parent
    return None


def _md5_from_outs(outs: list, base: Path, target: Path) -> str | None:
    for out in outs or []:
        if isinstance(out, dict) and (base / str(out.get("path", ""))).resolve() == target:
            return out.get("md5")  # DVC 3 also writes `hash: md5`, the algorithm name
    return None


def _read_yaml(path: Path) -> dict:
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}
