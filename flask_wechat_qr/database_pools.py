"""The site's database connections stay with the process that opened them.

A server that builds the app once and then forks its workers (uWSGI without
``--lazy-apps``, its default; gunicorn ``--preload``) gives every worker the connections
that the start-up work left in the app's pools: ``db.create_all()``,
``wechat.upgrade_database(app)``, the site's own queries. Workers sharing one connection
read each other's answers: on PostgreSQL, 500s ("This result object does not return
rows", "relation ... already exists") and requests that hang. In a forked child, every
engine of an app the extension serves sets its pooled connections aside and opens its own
(SQLAlchemy's advice, ``engine.dispose(close=False)``). They are kept, not closed nor left
to the garbage collector: a driver closing one (psycopg2 does) would end the parent's
session on the server.
"""

from __future__ import annotations

import typing as t
import weakref

from sqlalchemy.pool import Pool, SingletonThreadPool, StaticPool

from .forked_child import start_afresh_in_forked_child

if t.TYPE_CHECKING:
    import sqlalchemy as sa

#: The engines whose pools a forked child starts without (held weakly: they go with
#: their app).
_ENGINES: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


#: The pools a forked child found, set aside for as long as it lives.
_INHERITED: list[Pool] = []


class _Engines:
    """What :mod:`.forked_child` starts afresh: every engine of :data:`_ENGINES`."""

    def start_afresh(self) -> None:
        for engine in list(_ENGINES):
            _INHERITED.append(engine.pool)
            engine.dispose(close=False)


_FORKED_CHILD_HOOK = _Engines()
start_afresh_in_forked_child(_FORKED_CHILD_HOOK)


def keep_connections_per_process(engines: t.Iterable[sa.Engine]) -> None:
    """Let a process forked from this one start ``engines`` without this one's pooled
    connections. Not an engine whose one connection is its database (SQLite in memory)."""
    for engine in engines:
        if not isinstance(engine.pool, StaticPool | SingletonThreadPool):
            _ENGINES.add(engine)
