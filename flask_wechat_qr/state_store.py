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

import time
import typing as t

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

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
