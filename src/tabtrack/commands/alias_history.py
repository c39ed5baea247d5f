"""Who held an alias when. MLflow moves aliases without keeping their history (mlflow#2169), so every move tabtrack
makes (`promote`, the gate, `retrain`) is recorded on the registered model itself: one tag per move, no second store.

A tag `tabtrack.alias.<nanoseconds since 1970, 20 digits>` holds the move as JSON (time, alias, from version, to
version, reason, user). The keys sort in time order and do not collide between concurrent writers; a registered
model's tags come back in one query, so thousands of moves read as fast as a few.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from tabtrack import settings
from tabtrack.errors import TabtrackError

PREFIX = "tabtrack.alias."
MAX_REASON = 2000  # characters kept of a reason (registry tag values are bounded)


@dataclass
class AliasMove:
    at: str  # ISO time, UTC
    alias: str
    from_version: str | None
    to_version: str
    reason: str
    user: str | None = None

    @property
    def moment(self) -> datetime:
        return datetime.fromisoformat(self.at)


def move_alias(client, name: str, alias: str, version: str, *, reason: str) -> AliasMove:
    """Point `alias` of `name` at `version` and record the move."""
    from mlflow.exceptions import MlflowException

    try:
        previous = str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        previous = None
    client.set_registered_model_alias(name, alias, str(version))
    stamp = time.time_ns()
    move = AliasMove(
        at=datetime.fromtimestamp(stamp / 1e9, UTC).isoformat(timespec="microseconds"), alias=alias,
        from_version=previous, to_version=str(version), reason=reason[:MAX_REASON], user=settings.user(),
    )  # fmt: skip
    client.set_registered_model_tag(name, f"{PREFIX}{stamp:020d}", json.dumps(asdict(move)))
    return move


def alias_history(client, name: str, *, alias: str | None = None) -> list[AliasMove]:
    """Every recorded move of `name`'s aliases (or of one), oldest first."""
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(name).tags
    except MlflowException as exc:
        raise TabtrackError(f"no registered model {name!r}: {exc.message}") from exc
    moves = [AliasMove(**json.loads(value)) for key, value in sorted(tags.items()) if key.startswith(PREFIX)]
    return [move for move in moves if alias is None or move.alias == alias]


def holder_at(moves: list[AliasMove], alias: str, moment: datetime) -> AliasMove | None:
    """The move that put `alias` where it was at `moment` (None: it pointed nowhere yet, as far as recorded)."""
    held = None
    for move in moves:
        if move.alias == alias and move.moment <= moment:
            held = move
    return held


def unrecorded(client, name: str, moves: list[AliasMove]) -> list[str]:
    """Aliases that point elsewhere than their last recorded move says (moved in MLflow's UI or API, or before
    tabtrack kept this history)."""
    last = {move.alias: move.to_version for move in moves}
    current = client.get_registered_model(name).aliases or {}
    return [f"{alias} points at v{version}" for alias, version in sorted(current.items())
            if last.get(alias) != str(version)]  # fmt: skip
