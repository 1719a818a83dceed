"""Password checks that take as long whichever account is asked about: the bind page must
not tell, by its answer's time, which usernames exist.

A dummy hash for an unknown username costs what a hash of Werkzeug's method costs. A site
whose own ``check_password`` uses another scheme (bcrypt, passlib's) takes its own time,
and one whose hashes come from two Werkzeug versions (pbkdf2, then scrypt) takes two:
every check is therefore answered no sooner than the slowest of the recent checks of real
accounts (:class:`CheckTimes`), whichever account it was about.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
import typing as t

#: Recent checks of real accounts whose time sets the floor.
RECENT_CHECKS = 16
#: The longest floor: one check slowed by a loaded machine does not hold every later
#: answer that long.
LONGEST_FLOOR = 2.0


class CheckTimes:
    """How long this process's recent password checks of real accounts took."""

    def __init__(self) -> None:
        self._recent: collections.deque[float] = collections.deque(maxlen=RECENT_CHECKS)
        self._lock = threading.Lock()

    def floor(self) -> float:
        """Seconds no answer should come sooner than: the slowest recent check."""
        with self._lock:
            return min(max(self._recent, default=0.0), LONGEST_FLOOR)

    @contextlib.contextmanager
    def check(self, *, of_account: bool) -> t.Iterator[None]:
        """Around one password check (``of_account``: a real account's, whose time counts):
        it ends no sooner than the floor as it was when it began."""
        floor = self.floor()
        started = time.monotonic()
        try:
            yield
        finally:
            took = time.monotonic() - started
            if of_account:
                with self._lock:
                    self._recent.append(took)
            if took < floor:
                time.sleep(floor - took)
