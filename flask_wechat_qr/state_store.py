"""Where a login's ``state`` lives between the redirect to WeChat and the callback.

A login's data (``next`` and the like) rides in the browser's signed session, next to the
state it belongs to: that binds the state to the browser and works across worker
processes without a database write when the login starts. Only data too big for a cookie
is parked in a table. What the cookie cannot do, the table does: a state is *used* by
inserting its "taken" row, which succeeds once, so a state is single use even if the
browser replays an old session cookie or WeChat calls back twice at the same time. The
taken row then records how the login ended, for WeChat's repeated callback.
"""

from __future__ import annotations

import json
import time
import typing as t

import sqlalchemy as sa
from authlib.common.security import generate_token
from flask import session
from sqlalchemy.exc import IntegrityError

from .errors import StateError

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy


#: Key prefix of the row a used state leaves behind: empty while its login runs, then how
#: the login ended, so WeChat's double redirect (or a refresh of the callback) can be
#: answered with the first request's outcome.
TAKEN = "taken:"
#: Seconds a used state at least remembers that it was used and how its login ended.
AFTERLIFE = 120
#: Seconds between two purges of expired rows by one process (not at every login).
PURGE_INTERVAL = 60
#: Logins one browser may have started and not finished (tabs, reloaded QR pages), across
#: all connections.
MAX_PENDING_STATES = 5
#: Longest login data kept in the session cookie with its state, in bytes as the session
#: writes it (JSON with ``\uXXXX`` escapes); longer (a long ``next``, a business ``state``)
#: is parked in the state table. Five pending logins then stay far below the 4 KB
#: browsers keep per cookie.
MAX_INLINE_STATE_DATA = 300
#: Prefix of every connection's state keys in the session.
STATE_KEY_PREFIX = "_state_wechat_qr_"


class Executor(t.Protocol):
    def execute(self, statement: t.Any, /) -> t.Any: ...


class LoginStateStore:
    """The server-side half of login states: parked data, used states, outcomes.

    Every step is one statement, so a login costs as few database round trips (and
    commits) as its safety allows.
    """

    def __init__(self, db: SQLAlchemy, model: t.Any) -> None:
        self.db = db
        self.table = model.__table__
        self._next_purge = 0.0

    def park(self, key: str, value: str, expires_at: float) -> None:
        """Keep a state's data that is too big for the session cookie."""
        with self.db.engine.begin() as conn:
            self._purge_now_and_then(conn)
            conn.execute(sa.insert(self.table).values(key=key, value=value,
                                                      expires_at=expires_at))

    def take_parked(self, key: str, valid_until: float) -> str | None:
        """Use a parked state: whoever deletes its row gets the data and leaves the taken
        row (one transaction, atomic on SQLite and PostgreSQL); anyone later, ``None``."""
        now = time.time()
        table = self.table
        with self.db.engine.begin() as conn:
            value = conn.execute(
                sa.delete(table).where(table.c.key == key).returning(
                    table.c.value, table.c.expires_at)
            ).first()
            if value is None or value.expires_at < now:
                return None
            conn.execute(sa.insert(table).values(
                key=TAKEN + key, value="", expires_at=max(valid_until, now + AFTERLIFE)))
        return t.cast(str, value.value)

    def take(self, key: str, valid_until: float) -> bool:
        """Use a state whose data was in the cookie: ``True`` the first time only.

        The taken row outlives the state itself, so the same state in a replayed cookie
        still finds it.
        """
        now = time.time()
        try:
            with self.db.engine.begin() as conn:
                self._purge_now_and_then(conn)
                conn.execute(sa.insert(self.table).values(
                    key=TAKEN + key, value="", expires_at=max(valid_until, now + AFTERLIFE)))
        except IntegrityError:
            return False
        return True

    def remember_outcome(self, key: str, value: str, within: Executor | None = None) -> None:
        """How the login of a used state ended, on its taken row.

        ``within``: a transaction of the caller's (the one that logs the user in), so the
        outcome costs no commit of its own.
        """
        if within is None:
            with self.db.engine.begin() as conn:
                self._record(conn, key, value)
        else:
            self._record(within, key, value)

    def _record(self, conn: Executor, key: str, value: str) -> None:
        table = self.table
        updated = conn.execute(
            sa.update(table).where(table.c.key == TAKEN + key).values(value=value)
        ).rowcount
        if updated != 1:  # its taken row is gone (purged): record it anew
            conn.execute(sa.insert(table).values(key=TAKEN + key, value=value,
                                                 expires_at=time.time() + AFTERLIFE))

    def outcome(self, key: str, wait: float) -> str | None:
        """The outcome of a used state, waiting up to ``wait`` seconds while its first
        request is still running; ``None`` if it was never used, failed, or takes longer."""
        deadline = time.monotonic() + wait
        table = self.table
        while True:
            with self.db.engine.connect() as conn:
                value = conn.execute(
                    sa.select(table.c.value)
                    .where(table.c.key == TAKEN + key, table.c.expires_at >= time.time())
                ).scalar()
            if value:
                return t.cast(str, value)
            if value is None or time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def delete(self, key: str) -> None:
        """Forget a parked state that was never used."""
        with self.db.engine.begin() as conn:
            conn.execute(sa.delete(self.table).where(self.table.c.key == key))

    def _purge_now_and_then(self, conn: Executor) -> None:
        now = time.time()
        if now >= self._next_purge:
            self._next_purge = now + PURGE_INTERVAL
            conn.execute(sa.delete(self.table).where(self.table.c.expires_at < now))


class LoginStates:
    """The login states of one connection: made at the login, used at the callback.

    The session half (the state, its expiry, small data) binds a state to the browser; the
    :class:`LoginStateStore` half makes it single use and remembers how its login ended.
    """

    def __init__(self, store: LoginStateStore, connection: str, app_id: str,
                 ttl: int) -> None:
        self.store = store
        self.prefix = f"{STATE_KEY_PREFIX}{connection}_"
        #: another app sharing this SECRET_KEY reads the same cookie, and must not take
        #: this app's logins for its own
        self.app_id = app_id
        self.ttl = ttl

    def begin(self, **data: t.Any) -> str:
        """A new ``state`` for one login, its ``data`` kept until the callback.

        ``[A-Za-z0-9]{32}``: within the 128-byte alphanumeric limit WeChat documents.
        """
        state = generate_token(32)
        _forget_oldest_states(self.store)
        key = self.prefix + state
        expires_at = time.time() + self.ttl
        value = json.dumps(data, separators=(",", ":"))
        if len(value) <= MAX_INLINE_STATE_DATA:
            session[key] = {"exp": expires_at, "app": self.app_id, "data": data}
        else:
            self.store.park(key, value, expires_at)
            session[key] = {"exp": expires_at, "app": self.app_id}
        return state

    def take(self, state: str | None) -> dict[str, t.Any]:
        """The data saved with ``state``, which is then used for good.

        :class:`StateError` when the state is missing, forged, from another browser,
        expired or already used.
        """
        if not state or len(state) > 128:
            raise StateError()
        key = self.prefix + state
        # Not this browser's state: nothing is touched, its owner may still use it.
        marker = session.pop(key, None)
        now = time.time()
        for other in [k for k in session if k.startswith(self.prefix)]:
            if _marker_expiry(session[other]) < now:
                session.pop(other, None)
        if not isinstance(marker, dict) or marker.get("app") != self.app_id:
            raise StateError()
        expires_at = _marker_expiry(marker)
        if "data" in marker:
            if expires_at < now or not self.store.take(key, expires_at):
                raise StateError()
            return t.cast(dict, marker["data"])
        value = self.store.take_parked(key, expires_at)
        if value is None:
            raise StateError()
        return t.cast(dict, json.loads(value))

    def owns(self, state: str | None) -> bool:
        """Whether this browser's session started the login of ``state``."""
        return bool(state) and self.prefix + (state or "") in session

    def remember(self, state: str, outcome: dict[str, t.Any], within: Executor | None = None
                 ) -> None:
        """Record how the login of a used ``state`` ended, for a repeated callback;
        ``within`` a database transaction of the caller's (no commit of its own)."""
        self.store.remember_outcome(self.prefix + state, json.dumps(outcome), within)

    def outcome(self, state: str | None, wait: float) -> dict[str, t.Any] | None:
        """How the login of a used ``state`` ended, waiting up to ``wait`` seconds for a
        first callback still running; ``None`` if there is nothing to repeat."""
        if not state or len(state) > 128 or not state.isalnum():
            return None  # not a state this extension made
        value = self.store.outcome(self.prefix + state, wait)
        return t.cast(dict, json.loads(value)) if value else None


def _forget_oldest_states(store: LoginStateStore) -> None:
    """Keep at most :data:`MAX_PENDING_STATES` - 1 older states in the session, of all
    connections: a page that embeds the QR and reloads would otherwise grow the cookie
    past what browsers keep."""
    markers = sorted((key for key in session if key.startswith(STATE_KEY_PREFIX)),
                     key=lambda key: _marker_expiry(session[key]))
    for key in markers[: max(0, len(markers) - (MAX_PENDING_STATES - 1))]:
        marker = session.pop(key)
        if isinstance(marker, dict) and "data" not in marker:
            store.delete(key)  # parked: its row goes too


def _marker_expiry(marker: t.Any) -> float:
    """When a state kept in the session expires (0 for anything that is not a state)."""
    expiry = marker.get("exp") if isinstance(marker, dict) else None
    return float(expiry) if isinstance(expiry, (int, float)) else 0.0
