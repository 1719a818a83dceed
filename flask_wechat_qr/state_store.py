"""Where a login's ``state`` lives between the redirect to WeChat and the callback.

Authlib keeps a marker in the browser's session (binding the state to that browser) and,
given a cache, the data server-side. This cache is a database table, so the state works
across worker processes, and reading it deletes it, so a state can be used only once even
if the browser replays an old session cookie or WeChat calls back twice at the same time.
"""

from __future__ import annotations

import time
import typing as t

import sqlalchemy as sa

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy


#: Key prefixes of the rows a used state leaves behind, so that WeChat's double redirect
#: (or a refresh of the callback) can be answered with the first request's outcome.
TAKEN = "taken:"
OUTCOME = "outcome:"
#: Seconds a used state remembers that it was used and how its login ended.
AFTERLIFE = 120


#: Seconds between two purges of expired rows by one process (not at every login).
PURGE_INTERVAL = 60


class DatabaseStateCache:
    """The ``cache`` interface Authlib expects (``get``/``set``/``delete``), on our table.

    A login costs one statement here at each step (save, take, record the outcome): the
    database round trips are most of what a login costs besides WeChat's own.
    """

    def __init__(self, db: SQLAlchemy, model: t.Any) -> None:
        self.db = db
        self.table = model.__table__
        self._next_purge = 0.0

    def set(self, key: str, value: str, timeout: float) -> None:
        now = time.time()
        with self.db.engine.begin() as conn:
            if now >= self._next_purge:
                self._next_purge = now + PURGE_INTERVAL
                conn.execute(sa.delete(self.table).where(self.table.c.expires_at < now))
            conn.execute(sa.insert(self.table).values(key=key, value=value,
                                                      expires_at=now + timeout))

    def get(self, key: str) -> str | None:
        """Take the value: whoever renames the row gets it, anyone later gets ``None``.

        The row becomes the "taken" row in the same statement (atomic on both SQLite and
        PostgreSQL), so a second request with the same state can tell "being used right
        now" from "never existed".
        """
        now = time.time()
        table = self.table
        with self.db.engine.begin() as conn:
            value = conn.execute(
                sa.update(table)
                .where(table.c.key == key, table.c.expires_at >= now)
                .values(key=TAKEN + key, expires_at=now + AFTERLIFE)
                .returning(table.c.value)
            ).scalar()
            if value is None:  # unknown, used or expired: an expired row goes now
                conn.execute(sa.delete(table).where(table.c.key == key))
        return t.cast("str | None", value)

    def remember_outcome(self, key: str, value: str) -> None:
        """How the login of a used state ended (kept :data:`AFTERLIFE` seconds)."""
        table = self.table
        expires_at = time.time() + AFTERLIFE
        with self.db.engine.begin() as conn:
            renamed = conn.execute(
                sa.update(table).where(table.c.key == TAKEN + key)
                .values(key=OUTCOME + key, value=value, expires_at=expires_at)
            ).rowcount
            if renamed != 1:  # its "taken" row is gone (purged): record it anew
                conn.execute(sa.delete(table).where(table.c.key == OUTCOME + key))
                conn.execute(sa.insert(table).values(key=OUTCOME + key, value=value,
                                                     expires_at=expires_at))

    def outcome(self, key: str, wait: float) -> str | None:
        """The outcome of a used state, waiting up to ``wait`` seconds while its first
        request is still running; ``None`` if it was never used, failed, or takes longer."""
        deadline = time.monotonic() + wait
        while True:
            now = time.time()
            with self.db.engine.connect() as conn:
                rows = {row.key: row.value for row in conn.execute(
                    sa.select(self.table.c.key, self.table.c.value)
                    .where(self.table.c.key.in_((TAKEN + key, OUTCOME + key)),
                           self.table.c.expires_at >= now)
                )}
            if OUTCOME + key in rows:
                return rows[OUTCOME + key]
            if TAKEN + key not in rows or time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def delete(self, key: str) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(sa.delete(self.table).where(self.table.c.key == key))
