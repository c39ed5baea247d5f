"""The one exception family for user mistakes.

The CLI turns any :class:`TabtrackError` into a single line on stderr and exit code 2;
every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TabtrackError(Exception):
    """A problem the user can fix: bad data, bad config, unknown names."""

    exit_code = 2


class DataError(TabtrackError):
    """The data file is missing, unreadable or unusable for training."""


class ConfigError(TabtrackError):
    """A config key, `--set` override or option value is invalid."""


class TrackingError(TabtrackError):
    """The tracking store cannot be used as configured."""


def choices_hint(received: str, valid: Iterable[str], *, what: str) -> str:
    """Build "unknown X 'y'; did you mean 'z'? Valid: a, b, c" for an unknown name."""
    valid = sorted(valid)
    close = difflib.get_close_matches(received, valid, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {what} {received!r}.{hint} Valid: {', '.join(valid)}."
