"""SQLite's one writer: the logins of a process take turns instead of polling for it.

SQLite lets one connection write at a time. Another connection that wants to write waits in
SQLite's busy handler, which sleeps and looks again, in growing steps (1, 2, 5, 10 ... up to
100 ms between looks): a writer whose turn came 1 ms after it began to wait may sleep on for
tens of milliseconds while the lock is free, and under many browsers at once those sleeps
are the slowest callbacks. The logins of one process (the threads of a gunicorn ``gthread``
worker) wait for each other here instead, on a lock that wakes the next writer the moment
the one before ends its transaction: a login's transaction takes its turn at its first
write (a flush, an ORM ``INSERT``/``UPDATE``/``DELETE``, or :func:`take` before a statement
on its connection) and gives it back when the transaction ends (committed or rolled back).

What still meets in SQLite's busy handler: writers of other processes, the host's own
transactions, and the extension's statements on connections of their own (purges, a failed
login's record). A login whose connection may hold a SQLite lock already (the host's
``before_request`` flushed a row, a hook wrote on ``connection().execute``, the host begins
transactions at their first read) never waits for a turn, it takes one only if free:
waiting then would keep the turn's holder waiting for that lock. Other databases write row
by row and never take turns.
"""

from __future__ import annotations

import logging
import threading
import typing as t
import weakref

import sqlalchemy as sa

from .forked_child import made_elsewhere, made_here
from .transactions import wrote

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction

log = logging.getLogger(__name__)

#: Longest wait, in seconds, for a turn; after it a login writes without one (SQLite's own
#: busy timeout then decides, as it does for every other writer).
TURN_TIMEOUT = 2.0

#: ``session.info`` key: the turns the session's transaction takes (a lock of an engine's),
#: and the transaction's connection.
_TURNS = "flask_wechat_qr.write_turns"
#: ``session.info`` key: the session's transaction holds its turn.
_HELD = "flask_wechat_qr.write_turn_held"
#: The turns of each SQLite engine (held weakly: an engine made per test goes with its test).
#: Each with the process (and kind of threading) it was made in: a forked child makes its own.
_TURNS_OF: weakref.WeakKeyDictionary[
    sa.Engine, tuple[tuple[int, object], threading.Lock]] = weakref.WeakKeyDictionary()
_MAKING = threading.Lock()
#: The session classes :func:`watch` listens to (held weakly).
_WATCHED: weakref.WeakSet[type] = weakref.WeakSet()


def watch(db: SQLAlchemy) -> None:
    """Listen to the sessions of ``db``: a transaction given turns takes its turn before its
    first flush or ORM write, and gives it back when it ends. Once per session class; a
    dictionary look-up per flush, ORM statement and transaction end of the host's own."""
    session_class = db.session.session_factory.class_
    if session_class in _WATCHED:
        return
    sa.event.listen(db.session, "before_flush", _before_flush)
    # First among the listeners: :mod:`.transactions`' own marks the transaction as one
    # that wrote as soon as it sees the statement, and :func:`take` would then take a
    # turn only if it is free.
    sa.event.listen(db.session, "do_orm_execute", _before_execute, insert=True)
    sa.event.listen(db.session, "after_transaction_end", _ended)
    _WATCHED.add(session_class)


def give_turns(session: Session, connection: sa.Connection) -> None:
    """Let the session's transaction (a login's, just begun on ``connection``) take turns
    with the other logins of this process writing to the same database: only on SQLite,
    and only where :func:`watch` listens to the session's class (its flushes are seen). No
    statement is run."""
    if connection.dialect.name != "sqlite" or type(session) not in _WATCHED:
        return
    engine = connection.engine
    made = _TURNS_OF.get(engine)
    if made is None or made_elsewhere(made[0]):  # a parent's lock (forked) is no turn here
        with _MAKING:
            made = _TURNS_OF.get(engine)
            if made is None or made_elsewhere(made[0]):
                made = _TURNS_OF[engine] = (made_here(), threading.Lock())
    session.info[_TURNS] = (made[1], connection)


def take(session: Session) -> None:
    """Take the session's turn, if its transaction was given turns and holds none yet: before
    a statement that writes on the transaction's connection (unseen by the session).

    A transaction whose connection may hold a SQLite lock already takes the turn only if it
    is free, and otherwise writes without it: waiting for the turn would keep the turn's
    holder waiting for that lock. So does one that wrote as the session saw (a flush, an
    ``execute``), and one the driver has in a transaction (``sqlite3`` begins one at a
    write the session did not see, on ``connection().execute``; or at the first read,
    where the host begins transactions so, as SQLAlchemy advises for pysqlite)."""
    info = session.info
    given = info.get(_TURNS)
    if given is None or info.get(_HELD):
        return
    turns, connection = given
    if wrote(session) or _in_driver_transaction(connection):
        taken = turns.acquire(blocking=False)
    else:
        taken = turns.acquire(timeout=TURN_TIMEOUT)
        if not taken:
            log.warning("a login waited %.1f s for its turn to write to SQLite and writes "
                        "without it: another login of this process held the turn that "
                        "long", TURN_TIMEOUT)
    if taken:
        info[_HELD] = True
    else:
        del info[_TURNS]


def _in_driver_transaction(connection: sa.Connection) -> bool:
    dbapi_connection = connection.connection.dbapi_connection
    return bool(getattr(dbapi_connection, "in_transaction", True))


def turns_of(engine: sa.Engine) -> threading.Lock | None:
    """The turns of ``engine`` (``None`` before a login on it was given turns): its lock is
    held while one login of this process writes."""
    made = _TURNS_OF.get(engine)
    return None if made is None else made[1]


def _before_flush(session: Session, _context: object, _instances: object) -> None:
    take(session)


def _before_execute(state: ORMExecuteState) -> None:
    # Every ORM statement of the host passes here: the look-up first, the kind only then.
    if _TURNS in state.session.info and state.statement.is_dml:
        take(state.session)


def _ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:  # a flush's or a SAVEPOINT's: the writes stay
        return
    info = session.info
    given = info.pop(_TURNS, None)
    if info.pop(_HELD, False) and given is not None:
        given[0].release()
