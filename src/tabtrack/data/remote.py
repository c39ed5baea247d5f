"""Data files on object storage (`s3://bucket/key.csv`, or any URL fsspec knows): streamed once to a local
copy while their bytes are hashed, then read exactly as a local file is, so dtypes, checks and errors are
the same. Lineage records the URL, not the copy."""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tabtrack import settings
from tabtrack.errors import DataError
from tabtrack.extras import install_hint, installed
from tabtrack.redact import redact_uri

CHUNK = 8 << 20


@dataclass(frozen=True)
class RemoteCopy:
    url: str
    sha256: str
    size_bytes: int


# Local copy -> where it came from; the copies live until the process ends.
_ORIGINS: dict[Path, RemoteCopy] = {}
_COPIES: dict[str, Path] = {}
_CACHE_DIR: Path | None = None


def is_remote(location: str | os.PathLike | None) -> bool:
    """A URL with a scheme other than file:// (s3://, gs://, …); Windows drive letters are not schemes."""
    text = str(location or "")
    scheme, sep, _ = text.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.isidentifier() and scheme != "file"


def origin(path: str | os.PathLike) -> RemoteCopy | None:
    """The remote file `path` is a local copy of, if it is one."""
    return _ORIGINS.get(Path(path))


def shown(path: str | os.PathLike) -> str:
    """How a data file is named to the user: a local copy by its URL."""
    remote = origin(path)
    return redact_uri(remote.url) if remote else str(path)


def local_file(location: str | os.PathLike) -> Path:
    """`location` as a local path: a remote URL is downloaded (once per process), anything else is returned."""
    if not is_remote(location):
        return Path(location)
    url = str(location)
    if url not in _COPIES:
        _COPIES[url] = _download(url)
    return _COPIES[url]


def _download(url: str) -> Path:
    # Its own folder, named as the object is: the default experiment is the file's stem.
    target = Path(tempfile.mkdtemp(dir=_cache_dir())) / (PurePosixPath(url.split("://", 1)[1]).name or "data")
    digest, size, named = hashlib.sha256(), 0, redact_uri(url)
    try:
        with _open(url) as source, target.open("wb") as out:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"data file '{named}' not found; check the bucket and key (and the endpoint).") from exc
    except PermissionError as exc:
        raise DataError(
            f"reading '{named}' was refused ({exc}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the bucket policy."
        ) from exc
    except Exception as exc:  # fsspec backends raise their own types for a bad endpoint or credentials
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"could not read '{named}': {detail}; check the URL, credentials and endpoint.") from exc
    _ORIGINS[target] = RemoteCopy(url, digest.hexdigest(), size)
    return target


def _open(url: str):
    try:
        return filesystem(url)[0].open(url, "rb")
    except ValueError as exc:  # an unknown protocol
        raise DataError(f"cannot read '{redact_uri(url)}': {exc}.") from exc


def filesystem(url: str):
    """(fsspec filesystem, path) for a URL or a local path. For s3:// the endpoint MLflow's own S3 client uses
    (MinIO, moto, Ceph), unless AWS's variable names one."""
    import fsspec  # a core dependency (s3:// needs the s3 extra's s3fs)

    options = {}
    if url.startswith("s3://"):
        if not installed("s3fs"):
            raise DataError(f"'{redact_uri(url)}' needs s3fs: {install_hint('s3fs')}.")
        endpoint = next((os.environ[name] for name in settings.S3_ENDPOINTS if os.environ.get(name)), None)
        if endpoint:
            options["client_kwargs"] = {"endpoint_url": endpoint}
    return fsspec.core.url_to_fs(url, **options)


def _cache_dir() -> Path:
    global _CACHE_DIR
    if _CACHE_DIR is None:
        _CACHE_DIR = Path(tempfile.mkdtemp(prefix="tabtrack-data-"))
        atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
    return _CACHE_DIR
