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
login's record). A transaction that wrote before it was given turns (the host's
``before_request`` flushed a row, or SQL text wrote) takes none: its connection may hold
SQLite's lock already, and waiting for a turn then would keep the turn's holder waiting for
that lock. Other databases write row by row and never take turns.
"""

from __future__ import annotations

import logging
import threading
import typing as t
import weakref

import sqlalchemy as sa

from .transactions import wrote

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction

log = logging.getLogger(__name__)

#: Longest wait, in seconds, for a turn; after it a login writes without one (SQLite's own
#: busy timeout then decides, as it does for every other writer).
TURN_TIMEOUT = 2.0

#: ``session.info`` key: the turns the session's transaction takes (a lock of an engine's).
_TURNS = "flask_wechat_qr.write_turns"
#: ``session.info`` key: the session's transaction holds its turn.
_HELD = "flask_wechat_qr.write_turn_held"
#: The turns of each SQLite engine (held weakly: an engine made per test goes with its test).
_TURNS_OF: weakref.WeakKeyDictionary[sa.Engine, threading.Lock] = weakref.WeakKeyDictionary()
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
    # First among the listeners: the extension's own (:mod:`.transactions`) mark the
    # transaction as one that wrote as soon as they see the statement.
    sa.event.listen(db.session, "do_orm_execute", _before_execute, insert=True)
    sa.event.listen(db.session, "after_transaction_end", _ended)
    _WATCHED.add(session_class)


def take_turns(session: Session, bind: sa.Engine | sa.Connection) -> None:
    """Let the session's transaction (a login's, just begun, that holds no writes) take turns
    with the other logins of this process writing to the database of ``bind``: only on
    SQLite, and only where :func:`watch` listens to the session's class (its flushes are
    seen). No statement is run."""
    if bind.dialect.name != "sqlite" or type(session) not in _WATCHED:
        return
    engine = bind.engine
    turns = _TURNS_OF.get(engine)
    if turns is None:
        with _MAKING:
            turns = _TURNS_OF.setdefault(engine, threading.Lock())
    session.info[_TURNS] = turns


def take(session: Session) -> None:
    """Take the session's turn, if its transaction was given turns and holds none yet: before
    a statement that writes on the transaction's connection (unseen by the session)."""
    info = session.info
    turns = info.get(_TURNS)
    if turns is None or info.get(_HELD):
        return
    if wrote(session):  # unseen writes before: the connection may hold SQLite's lock
        del info[_TURNS]
        return
    if turns.acquire(timeout=TURN_TIMEOUT):
        info[_HELD] = True
        return
    del info[_TURNS]
    log.warning("a login waited %.0f s for its turn to write to SQLite (another login of this "
                "process held it) and writes without it", TURN_TIMEOUT)


def holds_turn(session: Session) -> bool:
    """Whether the session's transaction holds its turn now."""
    return bool(session.info.get(_HELD))


def turns_of(engine: sa.Engine) -> threading.Lock | None:
    """The turns of ``engine`` (``None`` before a login on it was given turns): its lock is
    held while one login of this process writes."""
    return _TURNS_OF.get(engine)


def _before_flush(session: Session, _context: object, _instances: object) -> None:
    take(session)


def _before_execute(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        take(state.session)


def _ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:  # a flush's or a SAVEPOINT's: the writes stay
        return
    info = session.info
    turns = info.pop(_TURNS, None)
    if info.pop(_HELD, False) and turns is not None:
        turns.release()
