"""Password checks that take as long whichever account is asked about: the bind page must
not tell, by its answer's time, which usernames exist.

The default :meth:`~flask_wechat_qr.AccountAdapter.authenticate` checks a dummy hash for
an unknown username, which costs what Werkzeug's method costs; a site's own
``check_password`` (bcrypt, passlib's), hashes from two Werkzeug versions (pbkdf2, then
scrypt), or an ``authenticate`` of the site's own each take times of their own, faster or
slower than that dummy. So each check of an app's bind page is answered no sooner than
the slowest of the process's checks of the last ten minutes (:class:`CheckTimes`), once
one of each kind has run there: the first after ten quiet minutes, or in a new worker,
shows its own time. 256 are kept: the attempt limits let one address make 20 in fifteen
minutes, so it takes a dozen addresses to push a slow one out.

Two checks of an app run at once in a process; more wait their turn first, uncounted. A
burst of 20 wrong passwords at once (one WeChat account's four bindings) made each check
share the CPU with the others: the slowest took 4.3 s of wall time, which held every
answer of the next ten minutes at the 2 s cap, and the burst's scrypt checks (32 MiB
each) took the process from 111 MB to 559 MB (a red team's measure, session 36).
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
import typing as t

#: Checks kept, and how long one counts (seconds): the floor is the slowest of them.
RECENT_CHECKS = 256
RECENT_SECONDS = 600.0
#: The highest floor: no answer waits longer than this for others' sake.
LONGEST_FLOOR = 2.0
#: Checks of one app that run at once in a process, and the longest wait (seconds) for a
#: turn, after which a check runs anyway.
CHECKS_AT_ONCE = 2
LONGEST_TURN_WAIT = 30.0


class CheckTimes:
    """How long one app's recent password checks took."""

    def __init__(self) -> None:
        #: (when it began, how long it took), both ``time.monotonic`` seconds
        self._recent: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=RECENT_CHECKS)
        self._lock = threading.Lock()
        self._turns = threading.BoundedSemaphore(CHECKS_AT_ONCE)

    def floor(self, now: float) -> float:
        """Seconds no answer should come sooner than: the slowest recent check."""
        with self._lock:
            slowest = max((took for began, took in self._recent
                           if now - began <= RECENT_SECONDS), default=0.0)
        return min(slowest, LONGEST_FLOOR)

    @contextlib.contextmanager
    def check(self, before_waiting: t.Callable[[], object]) -> t.Iterator[None]:
        """Around one password check that ends normally: it is answered no sooner than the
        floor as it was when it began. ``before_waiting``: called after every check,
        whether it then waits or not (to give back what the request holds, such as its
        database connection, the same way whichever account it was about). A check that
        raised counts for nothing and waits for nothing. It begins once it has its turn
        (:data:`CHECKS_AT_ONCE`)."""
        turn = self._turns.acquire(timeout=LONGEST_TURN_WAIT)
        try:
            started = time.monotonic()
            floor = self.floor(started)
            yield
            took = time.monotonic() - started
        finally:
            if turn:
                self._turns.release()
        with self._lock:
            self._recent.append((started, took))
        before_waiting()
        left = floor - (time.monotonic() - started)
        if left > 0:
            time.sleep(left)
