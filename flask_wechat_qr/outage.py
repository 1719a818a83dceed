"""Whether the site's database was out of reach a moment ago: a login does not start then
(a person would scan the QR code, confirm on the phone, and only then learn that the site
cannot log anyone in) until the database answers again.

A login's start reads nothing from the database, so it cannot see an outage itself; the
process remembers the last page that said the database is out of reach, and for
:data:`REMEMBERED_SECONDS` after it each start asks the database first (one ``SELECT 1``).
Once the database answers, starts go on without asking again: a site whose database is up
pays nothing.
"""

from __future__ import annotations

import threading
import time
import typing as t

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from .transactions import end_reads, is_unreachable

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

#: How long after a page said the database is out of reach each start asks it first: as
#: long as that page's ``Retry-After`` (:class:`~.errors.DatabaseUnavailable`).
REMEMBERED_SECONDS = 120.0


class DatabaseOutage:
    """The last time this process found the database out of reach (one per app)."""

    def __init__(self) -> None:
        #: when (``time.monotonic``) a page last said the database is out of reach, until
        #: the database answered again or :data:`REMEMBERED_SECONDS` passed
        self.seen_at: float | None = None
        self._lock = threading.Lock()

    def seen(self) -> None:
        """A page said the database is out of reach."""
        with self._lock:
            self.seen_at = time.monotonic()

    def reason_to_wait(self, db: SQLAlchemy, engine: t.Callable[[], sa.Engine]
                       ) -> SQLAlchemyError | None:
        """While an outage seen lately may go on: the database's error if it is still out of
        reach (the start answers that, not WeChat's QR page), else ``None`` (and the outage
        is forgotten). ``engine``: where the login's tables are (read only when asked)."""
        seen_at = self.seen_at
        if seen_at is None:
            return None
        if time.monotonic() - seen_at > REMEMBERED_SECONDS:
            self._forget(seen_at)
            return None
        try:
            end_reads(db)  # the request's own reads give their connection back first
            with engine().connect() as conn:
                conn.execute(sa.select(sa.literal(1)))
        except SQLAlchemyError as error:
            if is_unreachable(error):
                self.seen()
                return error
            # It answered, if only to refuse the statement: not out of reach any more.
        self._forget(seen_at)
        return None

    def _forget(self, seen_at: float) -> None:
        with self._lock:
            if self.seen_at == seen_at:  # not another page's since
                self.seen_at = None
