"""Whether the site's database was out of reach a moment ago: a login does not start then
(a person would scan the QR code, confirm on the phone, and only then learn that the site
cannot log anyone in) until the database answers again.

A login's start reads nothing from the database, so it cannot see an outage itself; the
process remembers the last page that said the database is out of reach, and for as long as
that page's ``Retry-After`` each start asks the database first (one ``SELECT 1``, one start
at a time, its answer good for :data:`PROBE_GOOD_FOR` seconds). Once the database answers,
starts go on without asking again: a site whose database is up pays nothing. Only the
database's words are kept, never its error (whose traceback holds the request's frames).
"""

from __future__ import annotations

import threading
import time
import typing as t

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from .errors import DatabaseUnavailable
from .transactions import database_reason, end_reads, is_unreachable

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

#: How long after a page said the database is out of reach each start asks it first: that
#: page's ``Retry-After``.
REMEMBERED_SECONDS = float(DatabaseUnavailable.retry_after)
#: How long one start's answer stands for the starts after it (each would otherwise wait
#: out its own connect timeout while the server does not answer).
PROBE_GOOD_FOR = 5.0


class DatabaseOutage:
    """The last time this app's process found its database out of reach."""

    def __init__(self) -> None:
        #: when (``time.monotonic``) a page last said the database is out of reach, until
        #: the database answered a start's question or :data:`REMEMBERED_SECONDS` passed
        self.seen_at: float | None = None
        #: what the database (or its driver) said then, or at the last question
        self._reason = ""
        self._asked_at = -PROBE_GOOD_FOR
        self._asking = threading.Lock()
        self._lock = threading.Lock()

    def seen(self, reason: str) -> None:
        """A page said the database is out of reach, in the database's words ``reason``."""
        with self._lock:
            self._reason = reason  # first: a start reading seen_at without the lock
            self.seen_at = time.monotonic()

    def reason_to_wait(self, db: SQLAlchemy, engine: t.Callable[[], sa.Engine]
                       ) -> str | None:
        """While an outage seen lately may go on: the database's words if it is still out of
        reach (the start answers them, not WeChat's QR page), else ``None`` (and the outage
        is forgotten). ``engine``: where the login's tables are (read only when asked)."""
        seen_at = self.seen_at
        if seen_at is None:
            return None
        now = time.monotonic()
        if now - seen_at > REMEMBERED_SECONDS:
            self._forget(now)
            return None
        if now - self._asked_at < PROBE_GOOD_FOR or not self._asking.acquire(blocking=False):
            return self._reason  # asked just now, or being asked: its answer stands
        try:
            reason = _still_out_of_reach(db, engine)
        finally:
            self._asked_at = time.monotonic()
            self._asking.release()
        if reason is not None:
            self.seen(reason)
            return reason
        self._forget(now)
        return None

    def _forget(self, asked: float) -> None:
        """Forget the outage, unless a page said it again since ``asked``."""
        with self._lock:
            if self.seen_at is not None and self.seen_at <= asked:
                self.seen_at = None


def _still_out_of_reach(db: SQLAlchemy, engine: t.Callable[[], sa.Engine]) -> str | None:
    """Ask the database ``SELECT 1``: its words if it cannot be reached, else ``None`` (it
    answered, if only to refuse, or its pool had no connection free: an overload). On the
    request's session where that holds the host's writes (its connection, or the one their
    flush takes, is the answer; nothing of theirs is flushed), else on a connection of its
    own, given back at once; once more on a new one where the first was stale."""
    end_reads(db)  # reads only: their connection goes back first
    statement = sa.select(sa.literal(1))
    for attempt in range(2):
        try:
            if attempt == 0 and db.session().in_transaction():
                with db.session.no_autoflush:
                    db.session.execute(statement, bind_arguments={"bind": engine()})
            else:
                with engine().connect() as connection:
                    connection.execute(statement)
            return None
        except sa.exc.TimeoutError:
            return None
        except sa.exc.DBAPIError as error:
            if is_unreachable(error):
                return database_reason(error)
            if not error.connection_invalidated:
                return None
        except SQLAlchemyError:
            pass  # the session could not ask (the host's failed flush): on a connection
    return None
