"""Keep secrets out of anything recorded: URIs with credentials and secret-looking keys."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
SECRET_KEY = re.compile(
    r"(pass(word|wd)?|token|secret|api[_-]?key|access[_-]?key|private[_-]?key|credential|^key$|_key$)", re.I
)
_URI_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")


def redact_uri(uri: str) -> str:
    """`postgresql://user:pw@host/db` -> `postgresql://***@host/db`."""
    return _URI_CREDENTIALS.sub(lambda m: f"{m['scheme']}{MASK}@", uri)


def is_secret_key(key: str) -> bool:
    return bool(SECRET_KEY.search(str(key)))


def redact(value: Any) -> Any:
    """A copy of `value` with secret-looking keys masked and credentials cut from URIs, at any depth."""
    if isinstance(value, Mapping):
        return {k: (MASK if is_secret_key(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    if isinstance(value, str):
        return redact_uri(value)
    return value
