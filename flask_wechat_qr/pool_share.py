"""The share of a database pool that first logins may keep while WeChat answers.

A first login learns in its transaction that it needs WeChat's profile. Rolled back, asked
with no connection held, and run again, it costs a PostgreSQL login two more round trips
(the ``ROLLBACK``, the second ``BEGIN``), a second checkout and a second run of its Python
(issue 15: 4% of its instructions). Kept open while WeChat answers, its connection is out
of the pool for as long as WeChat takes (up to the HTTP timeout), and a slow WeChat kept
the site's other pages waiting (session 36's red team: a page waited 3.75 s behind six
slow callbacks on a pool of two). So a login keeps its connection only while no more than
half of its pool's fixed size (rounded down) is kept so in this process: none of a pool of
one, none of a pool without a fixed size (each connection a new one), and only on
PostgreSQL, whose reads take no lock a writer waits for at any isolation level. Not on
MariaDB and MySQL, whose reads lock under ``SERIALIZABLE`` (another login's insert waited
out its lock timeout behind the kept transaction), nor on SQLite, whose locks are the
whole file's and whose round trips cost nothing to save.
"""

from __future__ import annotations

import contextlib
import threading
import typing as t
import weakref

from sqlalchemy.pool import Pool, QueuePool

if t.TYPE_CHECKING:
    import sqlalchemy as sa

_lock = threading.Lock()
#: Connections kept while WeChat answers, by pool (held weakly: a disposed engine's pool
#: goes, and a new pool starts at none).
_kept: weakref.WeakKeyDictionary[Pool, int] = weakref.WeakKeyDictionary()


def shareable(engine: sa.Engine) -> int:
    """How many of ``engine``'s pooled connections logins may keep while WeChat answers."""
    pool = engine.pool
    if engine.dialect.name != "postgresql" or not isinstance(pool, QueuePool):
        return 0
    return pool.size() // 2


@contextlib.contextmanager
def keep_connection(engine: sa.Engine) -> t.Iterator[bool]:
    """Whether the caller may keep its connection of ``engine`` through the block (then
    counted against the pool's share until the block ends)."""
    pool = engine.pool
    with _lock:
        kept = _kept.get(pool, 0)
        granted = kept < shareable(engine)
        if granted:
            _kept[pool] = kept + 1
    try:
        yield granted
    finally:
        if granted:
            with _lock:
                _kept[pool] -= 1
