"""Keep secrets out of anything recorded: URIs with credentials and secret-looking keys."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
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


def redact_argv(arguments: Iterable[str]) -> tuple[list[str], bool]:
    """Arguments with secrets masked: the value after (or `=` in) a secret-looking option, and URI credentials."""
    out: list[str] = []
    masked = False
    hide_next = False
    for argument in arguments:
        if hide_next:
            out.append(MASK)
            masked, hide_next = True, False
            continue
        option, sep, _ = argument.partition("=")
        if option.startswith("-") and is_secret_key(option.lstrip("-").replace("-", "_")):
            if sep:
                out.append(f"{option}={MASK}")
                masked = True
            else:
                out.append(argument)
                hide_next = True
            continue
        clean = redact_uri(argument)
        masked |= clean != argument
        out.append(clean)
    return out, masked
