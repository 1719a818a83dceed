"""Whether the site's database was out of reach a moment ago: a login does not start then
(a person would scan the QR code, confirm on the phone, and only then learn that the site
cannot log anyone in) until the database answers again.

A login's start reads nothing from the database, so it cannot see an outage itself; the
process remembers the last page that said the database is out of reach, and for as long as
that page's ``Retry-After`` each start asks the database first (one ``SELECT 1``, one start
at a time, its answer good for :data:`PROBE_GOOD_FOR` seconds). Once the database answers,
starts go on without asking again: a site whose database is up pays nothing. A pool whose
connections were all in use (an overload, not an outage) is not remembered: asking it again
at every start would only wait its ``pool_timeout`` once more.
"""

from __future__ import annotations

import threading
import time
import typing as t

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from .errors import DatabaseUnavailable
from .transactions import end_reads, is_unreachable

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
        #: the database answered again or :data:`REMEMBERED_SECONDS` passed
        self.seen_at: float | None = None
        #: what the database (or its driver) said then, or at the last probe
        self._error: BaseException | None = None
        self._probed_at = -PROBE_GOOD_FOR
        self._probing = threading.Lock()
        self._lock = threading.Lock()

    def seen(self, cause: BaseException | None) -> None:
        """A page said the database is out of reach, for ``cause`` (the database's error):
        remembered, but for a pool whose connections were all in use."""
        if cause is None or isinstance(cause, sa.exc.TimeoutError):
            return
        with self._lock:
            self.seen_at, self._error = time.monotonic(), cause

    def reason_to_wait(self, db: SQLAlchemy, engine: t.Callable[[], sa.Engine]
                       ) -> BaseException | None:
        """While an outage seen lately may go on: the database's error if it is still out of
        reach (the start answers that, not WeChat's QR page), else ``None`` (and the outage
        is forgotten). ``engine``: where the login's tables are (read only when asked)."""
        seen_at = self.seen_at
        if seen_at is None:
            return None
        now = time.monotonic()
        if now - seen_at > REMEMBERED_SECONDS:
            self._forget(seen_at)
            return None
        if now - self._probed_at < PROBE_GOOD_FOR or not self._probing.acquire(blocking=False):
            return self._error  # asked just now, or being asked: its answer stands
        try:
            if not end_reads(db):
                # The request holds the host's writes, on a connection that reached it.
                self._forget(seen_at)
                return None
            with engine().connect() as conn:
                conn.execute(sa.select(sa.literal(1)))
        except SQLAlchemyError as error:
            if is_unreachable(error) and not isinstance(error, sa.exc.TimeoutError):
                with self._lock:
                    self._error = error
                return error
            # It answered, if only to refuse, or has no connection free: not out of reach.
        finally:
            self._probed_at = time.monotonic()
            self._probing.release()
        self._forget(seen_at)
        return None

    def _forget(self, seen_at: float) -> None:
        with self._lock:
            if self.seen_at == seen_at:  # not another page's since
                self.seen_at = None
