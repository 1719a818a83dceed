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


class DatabaseStateCache:
    """The ``cache`` interface Authlib expects (``get``/``set``/``delete``), on our table."""

    def __init__(self, db: SQLAlchemy, model: t.Any) -> None:
        self.db = db
        self.table = model.__table__

    def set(self, key: str, value: str, timeout: float) -> None:
        now = time.time()
        with self.db.engine.begin() as conn:
            conn.execute(sa.delete(self.table).where(self.table.c.expires_at < now))
            conn.execute(sa.insert(self.table).values(key=key, value=value,
                                                      expires_at=now + timeout))

    def get(self, key: str) -> str | None:
        """Take the value: whoever deletes the row gets it, anyone later gets ``None``."""
        with self.db.engine.begin() as conn:
            row = conn.execute(
                sa.select(self.table.c.value, self.table.c.expires_at)
                .where(self.table.c.key == key)
            ).first()
            if row is None:
                return None
            deleted = conn.execute(sa.delete(self.table).where(self.table.c.key == key))
        if deleted.rowcount != 1 or row.expires_at < time.time():
            return None
        return t.cast(str, row.value)

    def delete(self, key: str) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(sa.delete(self.table).where(self.table.c.key == key))
