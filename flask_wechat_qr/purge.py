"""Deleting expired rows in bounded batches, so that no request pays for a backlog.

Expired login states, pending bindings, bind attempts (and the sandbox's rows) are removed
by the requests that use their tables, now and then. One ``DELETE`` of every expired row
would make one unlucky request pay for all of them (a site back from a week offline, a
table a flood of logins filled) and hold the database's write lock meanwhile. So each purge
deletes at most :data:`BATCH_SIZE` rows, oldest first, and a purge that found a full batch
lets the next request continue at once; otherwise the next purge is an interval away.
"""

from __future__ import annotations

import time
import typing as t

import sqlalchemy as sa

from .column_types import MYSQL_DIALECTS

#: The most expired rows one purge deletes (one statement). 1,000,000 expired rows are gone
#: after 1,000 requests that purge, each paying for at most this many.
BATCH_SIZE = 1000


class Executor(t.Protocol):
    """A Connection or an ORM Session: what runs a statement."""

    def execute(self, statement: t.Any, parameters: t.Any = ..., /) -> t.Any: ...


def delete_expired(conn: Executor, table: sa.Table, column: sa.Column[t.Any],
                   before: float, batch: int = BATCH_SIZE) -> int:
    """Delete at most ``batch`` rows of ``table`` whose ``column`` is below ``before``, in
    one statement; the number deleted. Picks the rows by the indexed ``column`` and deletes
    them by primary key, which PostgreSQL and SQLite both run without a table scan."""
    key = _primary_key(table)
    doomed = sa.select(key).where(column < before).order_by(column).limit(batch)
    if _dialect_name(conn, table) in MYSQL_DIALECTS:
        # MySQL refuses LIMIT in a subquery of the table being deleted from; it has its own.
        statement: sa.Delete = sa.delete(table).where(column < before).with_dialect_options(
            mysql_limit=batch)
    else:
        statement = sa.delete(table).where(key.in_(doomed.scalar_subquery()))
    return int(conn.execute(statement).rowcount)


class PurgeSchedule:
    """When one process purges one table next: every ``interval`` seconds, and at the very
    next chance while purges keep finding full batches (a backlog is being worked off)."""

    def __init__(self, interval: float, batch: int = BATCH_SIZE) -> None:
        self.interval = interval
        self.batch = batch
        self.next_at = 0.0

    def is_due(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.next_at

    def start(self, now: float | None = None) -> None:
        """A purge begins: no other request of this process starts one meanwhile."""
        self.next_at = (time.time() if now is None else now) + self.interval

    def finished(self, deleted: int, now: float | None = None) -> None:
        """A purge deleted ``deleted`` rows: a full batch means more are waiting."""
        if deleted >= self.batch:
            self.next_at = time.time() if now is None else now


def _primary_key(table: sa.Table) -> sa.Column[t.Any]:
    columns = list(table.primary_key.columns)
    if len(columns) != 1:
        raise ValueError(f"{table.name} needs a one-column primary key to purge in batches")
    return columns[0]


def _dialect_name(conn: Executor, table: sa.Table) -> str:
    """The dialect of ``table``'s database, from a Connection or an ORM Session (whose
    binds may be several)."""
    dialect = getattr(conn, "dialect", None)
    get_bind = getattr(conn, "get_bind", None)
    if dialect is None and callable(get_bind):
        dialect = get_bind(clause=table).dialect
    return str(getattr(dialect, "name", ""))
