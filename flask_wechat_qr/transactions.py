"""The request's database session, as the extension shares it with its host.

A login reads and writes through the host's Flask-SQLAlchemy session and commits once (see
:mod:`.flow`); a few steps work on a connection of their own beside it (the purges, the
record of a failed login, parked login data). Whatever the host configured for its
database, this module keeps five promises:

* Committing keeps what was loaded (:func:`commit`): the user Flask-Login holds is not read
  again after a login commits.
* A request never holds one connection of a pool while it waits for a second
  (:func:`end_reads`): the session's transaction of reads ends before the extension
  opens its own connection. With one connection a worker (``pool_size=1,
  max_overflow=0``, a sync worker's usual size behind a pooler) a request that held it
  (the host had read its user) waited ``pool_timeout`` (30 s) for a second one, and failed.
* The host's writes of the request (its ``before_request`` flushed a row) are the
  host's (:func:`holds_writes`): never committed before a login's own commit, nor by a
  request that commits nothing of its own (a repeated callback reads the other request's
  login with :func:`fresh_reads` and undoes only the hook's writes with
  :func:`undone`).
* A login's statements run in one transaction (:func:`begin`), also where the host's engine
  commits each statement by itself (``isolation_level="AUTOCOMMIT"``): a user is never
  left without its identity, whatever happens between the two.
* Trying again cures what another transaction or a lost connection did to a login
  (:func:`is_conflict`; SQLAlchemy's ``connection_invalidated``): serialization failures
  (PostgreSQL under ``SERIALIZABLE`` and ``REPEATABLE READ``), deadlocks (MariaDB and MySQL
  under ``SERIALIZABLE``), and a connection the database server closed (a restart, a
  failover) without ``pool_pre_ping``.
"""

from __future__ import annotations

import contextlib
import functools
import random
import re
import time
import typing as t
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from .column_types import MYSQL_DIALECTS

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction

T = t.TypeVar("T")

#: SQLSTATEs of a transaction the database rolled back because of another one: a
#: serialization failure, a deadlock (PostgreSQL and the SQL standard).
_CONFLICT_STATES = frozenset({"40001", "40P01"})
#: MariaDB's and MySQL's error numbers of the same: a deadlock (the whole transaction is
#: rolled back), and MariaDB's "record has changed since last read" (``REPEATABLE READ``
#: with ``innodb_snapshot_isolation``, MariaDB 11.8's default).
_CONFLICT_ERRNOS = frozenset({1213, 1020})
#: SQLite's result codes: the database is locked (by another connection), a table is
#: locked (within one shared-cache connection), and the extended code of a write refused
#: because the transaction read a snapshot older than the last commit (WAL mode).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_BUSY_SNAPSHOT = 5, 6, 517
#: SQLite's result code for a database file it cannot open (a missing folder).
_SQLITE_CANTOPEN = 14
#: SQLSTATEs of a server that took no connection: too many connections, a server shutting
#: down, crashed or starting up; besides them class 08, the connection exceptions, where no
#: statement was running (one under a statement is the statement's: a protocol violation).
_UNREACHABLE_STATES = frozenset({"53300", "57P01", "57P02", "57P03"})
#: MariaDB's and MySQL's error numbers of the same: too many connections (1040; an
#: account's, 1203 and 1226), a server shutting down (1053), a host blocked or not let in
#: (1129, 1130), no server at the address (2002, 2003, 2005), a connection gone or lost
#: (2006, 2013). MariaDB's Connector/Python gives them with a SQLSTATE too (HY000 for
#: most), read first.
_UNREACHABLE_ERRNOS = frozenset({1040, 1053, 1129, 1130, 1203, 1226, 2002, 2003, 2005,
                                 2006, 2013})
#: The site's account or database refused when connecting (MariaDB's 1044, 1045, 1049;
#: PostgreSQL's class 28 and 3D000, as pg8000 gives them; psycopg's carry no code): as
#: much out of reach. Under a statement on a live connection (``USE nowhere``) the
#: statement's own error.
_REFUSED_AT_CONNECT_ERRNOS = frozenset({1044, 1045, 1049})
_REFUSED_AT_CONNECT_STATES = frozenset({"3D000"})
#: SQLSTATEs of a database that answers but will not do the work for now: a read-only
#: transaction (``default_transaction_read_only``, a hot standby), a full disk, no memory,
#: a statement cancelled (``statement_timeout``), a failure to read or write its files;
#: and a lock another transaction held past ``lock_timeout`` (:data:`_LOCK_WAIT_STATES`).
_LOCK_WAIT_STATES = frozenset({"55P03"})
_REFUSING_STATES = frozenset({"25006", "53100", "53200", "57014", "58030"}) | _LOCK_WAIT_STATES
#: MariaDB's and MySQL's error numbers of the same: read-only (1290 ``--read-only``, 1792
#: a read-only transaction, 1836 read-only mode, 1036 a read-only table), a full disk
#: (1021) or table (1114), a statement past its time (MySQL's 3024, MariaDB's 1969); and a
#: lock waited for past ``innodb_lock_wait_timeout`` (1205).
_LOCK_WAIT_ERRNOS = frozenset({1205})
_REFUSING_ERRNOS = frozenset({1290, 1792, 1836, 1036, 1021, 1114, 3024, 1969}) | (
    _LOCK_WAIT_ERRNOS)
#: SQLite's primary result codes of the same: no memory (7), read-only (8), a failure of
#: the disk or file system (10), a full disk (13).
_SQLITE_REFUSING = frozenset({7, 8, 10, 13})
#: SQLite's extended result code of a database file replaced (or deleted) under an open
#: connection: read-only to it from then on, while the file now there takes writes.
_SQLITE_READONLY_DBMOVED = 1032
#: The drivers whose failures to connect carry no code (their module's first name).
_CODELESS_DRIVERS = frozenset({"psycopg", "psycopg2", "pg8000"})
#: Times a login's transaction runs again after conflicts with others before it gives up.
CONFLICT_RETRIES = 5
#: Longest pause, in seconds, before a login tries again after a conflict.
MAX_PAUSE = 0.2


def commit(db: SQLAlchemy) -> None:
    """Commit the request's session, keeping what it loaded: the user and identity rows are
    what the database now holds, and expiring them would make the next read of the user
    (Flask-Login asks its id at once) cost a query. The session is this request's, and is
    removed with it, so nothing stays stale longer."""
    session = db.session()
    expire = session.expire_on_commit
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = expire


def committed(db: SQLAlchemy, work: t.Callable[[], T]) -> T:
    """Run ``work`` on the request's session and commit; rolled back and run again after a
    pause where the database rolled it back for another transaction's sake
    (:func:`is_conflict`), up to :data:`CONFLICT_RETRIES` times. For the small writes that
    commit by themselves (a bind attempt counted, or forgotten), which under
    ``SERIALIZABLE`` meet those of the other people at the bind page. Not run again where
    the transaction held the host's own writes (:func:`holds_writes`): the rollback undid
    them, and a second run would commit ``work`` without them."""
    conflicts = 0
    hosts_writes = holds_writes(db.session())
    while True:
        try:
            result = work()
            db.session.commit()
            return result
        except DBAPIError as error:
            db.session.rollback()
            if hosts_writes or not is_conflict(error) or conflicts == CONFLICT_RETRIES:
                raise
            conflicts += 1
            pause(conflicts)


def end_reads(db: SQLAlchemy) -> bool:
    """End the request's transaction when it holds nothing but reads (the host's at the start
    of the request: its logged-in user, a setting), so that its connection goes back to the
    pool: ``True``. One that holds the host's writes (:func:`holds_writes`: waiting, or
    flushed already) is left as it is, ``False``: they are the host's to commit or roll
    back (or the login's commit commits them), and the request keeps its connection, and
    its locks (all of SQLite's), meanwhile: a connection beside it may wait for them, and
    housekeeping that can wait (a purge) waits for a later request."""
    session = db.session()
    if not session.in_transaction():
        return True
    if holds_writes(session):
        return False
    commit(db)
    return True


def fresh_reads(db: SQLAlchemy, table: sa.Table) -> bool:
    """Let the request read what other transactions committed since its own began (another
    request of the same login, which ended meanwhile), on the bind of ``table``: a
    transaction of reads only is ended (:func:`end_reads`), and the next read begins a new
    one. One that holds the host's writes (:func:`holds_writes`) stays as it is, the host's
    to commit or roll back. ``True`` where its reads may then miss those commits: on MariaDB
    and MySQL, whose ``REPEATABLE READ`` shows a transaction the database as it was at its
    first read; a row not found there is looked for again within :func:`locking_reads`.
    PostgreSQL at ``READ COMMITTED`` (its default) and SQLite show the commits anyway;
    PostgreSQL at ``REPEATABLE READ`` or ``SERIALIZABLE`` keeps the transaction's first
    snapshot to its end."""
    if end_reads(db):
        return False
    return db.session().get_bind(clause=table).dialect.name in MYSQL_DIALECTS


@contextmanager
def locking_reads(db: SQLAlchemy) -> Iterator[None]:
    """The ORM's reads of the request's session in the block lock what they read (``LOCK IN
    SHARE MODE``, until the host's transaction ends), which on MariaDB and MySQL shows the
    newest committed rows (:func:`fresh_reads`); a listener on this session only, for the
    block only. Used only where a row was not found without: a lock held to the end of the
    request makes another transaction that writes the row wait (or deadlock)."""
    session = db.session()
    sa.event.listen(session, "do_orm_execute", _locking_read)
    try:
        yield
    finally:
        sa.event.remove(session, "do_orm_execute", _locking_read)


def _locking_read(state: ORMExecuteState) -> None:
    statement = state.statement
    if state.is_select and isinstance(statement, sa.Select):
        state.statement = statement.with_for_update(read=True)


@contextmanager
def undone(db: SQLAlchemy, table: sa.Table) -> Iterator[None]:
    """Run the block on the request's session, then undo what it wrote (also when it
    raises), and nothing written before it. Where the session's transaction holds the
    host's writes (:func:`holds_writes`) in a real transaction (not AUTOCOMMIT, on the bind
    of ``table``), the block runs in a SAVEPOINT that is rolled back (the host's waiting
    changes are flushed first, not committed); the objects that rollback expires are read
    again at once, where the caller reads (in :func:`locking_reads`' block: the newest
    rows, a user another request made since the transaction's snapshot too); a block that
    commits or rolls back the whole transaction itself answers for it. Otherwise the
    transaction is rolled back after the block, where there is one."""
    session = db.session()
    if not holds_writes(session) or autocommits(
            session.connection(bind_arguments={"clause": table})):
        try:
            yield
        finally:
            if session.in_transaction():
                session.rollback()
        return
    loaded = [obj for obj in (state.obj() for state in session.identity_map.all_states()
                              if not state.expired_attributes) if obj is not None]
    savepoint = session.begin_nested()
    try:
        yield
    finally:
        if _within(session, savepoint):  # not where the block ended the transaction itself
            savepoint.rollback()
            for obj in loaded:
                state = sa.inspect(obj, raiseerr=False)
                if state is not None and state.persistent and state.expired_attributes:
                    session.refresh(obj)


def _within(session: Session, savepoint: SessionTransaction) -> bool:
    """Whether ``savepoint`` is still open in ``session``: the block in it (a host's hook)
    may have committed or rolled back the session's whole transaction (Flask-AppBuilder's
    ``update_user_auth_stat`` commits), which closed the savepoint with it."""
    transaction = session.get_nested_transaction()
    while transaction is not None:
        if transaction is savepoint:
            return True
        transaction = transaction.parent
    return False


#: ``session.info`` key: the session's transaction holds writes that ``session.new``,
#: ``dirty`` and ``deleted`` no longer show (flushed, or executed as statements).
_WROTE = "flask_wechat_qr.wrote"
#: The first word of SQL text (after any opening parentheses).
_FIRST_WORD = re.compile(r"[\s(]*([A-Za-z]+)")
#: The first words of SQL text that reads (anything else passed as ``text()`` counts as a
#: write, but :data:`_WITH` and :data:`_PRAGMA`'s)...
_READ_VERBS = frozenset({"select", "show", "explain", "values", "table", "describe", "desc"})
#: ...``WITH`` (a common table expression) before a ``SELECT``, not one that writes (``WITH
#: ... INSERT``, ``UPDATE``, ``DELETE``, ``MERGE``; PostgreSQL's data-modifying ``WITH x AS
#: (DELETE ... RETURNING ...) SELECT ...``): text with one of those words written as code
#: (:data:`_NOT_CODE` left out) counts as a write...
_WITH = "with"
_WRITE_WORDS = re.compile(r"\b(?:INSERT|UPDATE|DELETE|MERGE)\b", re.IGNORECASE)
#: ...SQLite's ``PRAGMA`` that reads a setting (``PRAGMA foreign_keys``, ``PRAGMA
#: main.journal_mode``) or the schema (:data:`_PRAGMA_QUERIES`), not one that sets (``PRAGMA
#: foreign_keys = ON``, ``PRAGMA cache_size(1000)``) or acts (:data:`_PRAGMA_ACTS`)...
_PRAGMA = "pragma"
_PRAGMA_PARTS = re.compile(r"[\s(]*PRAGMA\s+(?:\w+\s*\.\s*)?(\w+)\s*([(=]?)", re.IGNORECASE)
#: The pragmas whose argument in parentheses is what they read (a table, an index, a
#: count of errors), not a value they set.
_PRAGMA_QUERIES = frozenset({
    "table_info", "table_xinfo", "table_list", "index_info", "index_xinfo", "index_list",
    "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check"})
#: The pragmas that do something even without a value (``ANALYZE``, a vacuum, a checkpoint).
_PRAGMA_ACTS = frozenset({"optimize", "incremental_vacuum", "wal_checkpoint"})
#: ...and text of more than one statement (``SELECT 1; DELETE ...``) counts as a write...
_NEXT_STATEMENT = re.compile(r";\s*\S")
#: ...and a read counts as a write where it takes what lasts until its transaction ends, which
#: ending the transaction would release (or commit): a row lock (``FOR UPDATE``, ``FOR NO KEY
#: UPDATE``, ``FOR SHARE``, ``FOR KEY SHARE``, ``LOCK IN SHARE MODE``), a PostgreSQL advisory lock
#: of the transaction, a setting of the transaction (PostgreSQL's ``set_config(name, value, true)``:
#: a tenant for row-level security, say), a table made by PostgreSQL's ``SELECT ... INTO``, a
#: statement that ``EXPLAIN ANALYZE`` runs. (A sequence's ``nextval`` is no such thing: neither
#: PostgreSQL nor MariaDB gives its value back at a rollback.) Searched in the text without its
#: string literals, quoted names and comments (:data:`_NOT_CODE`): ``'Log into WeChat'`` is a read.
_HOLDS = re.compile(r"\b(?:(?:FOR\s+(?:NO\s+KEY\s+|KEY\s+)?(?:UPDATE|SHARE)|LOCK\s+IN\s+SHARE\s+"
                    r"MODE|INTO|ANALY[SZ]E|PG_(?:TRY_)?ADVISORY_XACT_LOCK(?:_SHARED)?)\b"
                    r"|SET_CONFIG\s*\((?![^()]*,\s*FALSE\s*\)))", re.IGNORECASE)
#: Words of which :data:`_HOLDS` needs one (lower case): text without any is not searched.
_HOLDS_WORDS = ("update", "share", "into", "analy", "advisory_xact", "set_config")
#: What SQL text holds that is no SQL: string literals (``'...'``, PostgreSQL's
#: ``$$...$$``), quoted names (``"..."``, MariaDB's and MySQL's backquotes), comments.
_NOT_CODE = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`(?:[^`]|``)*`|\$(\w*)\$.*?\$\1\$"
                       r"|--[^\n]*|/\*.*?\*/", re.DOTALL)
#: The functions that, in a ``SELECT``'s columns, take what lasts until the transaction
#: ends (:data:`_HOLDS`), as ``sa.select(sa.func.pg_advisory_xact_lock(key))`` calls them.
_HOLDING_FUNCTIONS = frozenset({
    "pg_advisory_xact_lock", "pg_advisory_xact_lock_shared", "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared", "set_config"})


#: The session classes :func:`watch_writes` listens to (held weakly).
_WATCHED: weakref.WeakSet[type] = weakref.WeakSet()


def holds_writes(session: Session) -> bool:
    """Whether ``session``'s transaction holds writes: changes waiting for a flush, or
    written in it already (a flush, an INSERT, UPDATE or DELETE through ``execute``, SQL
    text other than a read: ``SELECT``, ``WITH ... SELECT``, ``VALUES``, ``SHOW``, a
    ``PRAGMA`` that reads...), as the listeners of :func:`watch_writes` saw; taken to
    hold some where nothing listens to its class (a host that replaced ``db.session``
    after ``init_app``, as test fixtures do): what it flushed cannot be known. Statements
    run on a connection of the session's (``session.connection().execute``) are not seen."""
    return bool(session.new or session.dirty or session.deleted) or wrote(session)


def wrote(session: Session) -> bool:
    """Whether ``session``'s transaction wrote already (flushed, or executed statements that
    write), as the listeners of :func:`watch_writes` saw; taken to have written where nothing
    listens to its class."""
    return type(session) not in _WATCHED or bool(session.info.get(_WROTE))


def watch_writes(db: SQLAlchemy) -> None:
    """Listen to the sessions of ``db`` for :func:`holds_writes`: once per session class
    (each ``db``'s ``sessionmaker`` makes one of its own; several apps of one ``db`` share
    it); no statement of their own, and a function call per flush, statement and
    transaction. Known by the class itself (:data:`_WATCHED`), not by asking SQLAlchemy
    (``event.contains``), which knows a class by its ``id()``: a new ``db`` whose class
    took the address of one collected before (an app made per test, in a site's test
    suite) was told it had the listeners, and its writes went unseen."""
    session_class = db.session.session_factory.class_
    if session_class in _WATCHED:
        return
    for name, listener in (("after_flush", _flushed), ("do_orm_execute", _executed),
                           ("after_transaction_end", _ended)):
        sa.event.listen(db.session, name, listener)
    _WATCHED.add(session_class)


def _flushed(session: Session, _context: object) -> None:
    session.info[_WROTE] = True


def _executed(state: ORMExecuteState) -> None:
    # Every ORM statement of the host passes here: the statement's own flags, not the
    # state's properties (three calls, each reading them again).
    statement = state.statement
    if (statement.is_dml
            or (isinstance(statement, sa.Select) and _select_holds(statement))
            or (isinstance(statement, sa.TextClause) and not _reads_only(statement.text))):
        state.session.info[_WROTE] = True


def _select_holds(statement: sa.Select[t.Any]) -> bool:
    """Whether a ``SELECT`` construct takes what lasts until its transaction ends: a row
    lock (``with_for_update()``; the ORM's ``Session.get(..., with_for_update=...)`` too),
    or a column calling one of :data:`_HOLDING_FUNCTIONS` (but ``set_config(..., False)``);
    or writes: it selects from a common table expression of an ``INSERT``, ``UPDATE`` or
    ``DELETE`` (``sa.select(cte)``, ``sa.select(cte.c.id)``, ``select_from(cte)``,
    ``add_cte(cte)``), or a condition of its ``WHERE`` does in a subquery
    (``.where(User.id.in_(sa.select(cte.c.id)))``, an ``exists``: SQLAlchemy puts the
    ``WITH`` at the top of the statement, where PostgreSQL runs it). SQLAlchemy keeps them
    in private attributes (``_for_update_arg``, ``_raw_columns``, ``_from_obj``,
    ``_independent_ctes``, ``_where_criteria``, in every 2.x): where another version has
    none, the check finds nothing, and never fails a query of the site. Per ORM statement:
    a type looked up per column (usually one), and a column's table where it is a column;
    per condition of the ``WHERE``, its type and its two sides' (a column compared with a
    value, the ORM's usual condition, is not looked into: no function call); any other
    condition is walked (:func:`_writes_within`), not the whole statement."""
    try:
        if statement._for_update_arg is not None:
            return True
        columns: t.Sequence[t.Any] = statement._raw_columns  # of several types: looked at
        froms = statement._from_obj
        ctes = statement._independent_ctes
        conditions: t.Sequence[t.Any] = statement._where_criteria
    except AttributeError:
        return False
    # a loop, checks inline: a generator per statement would cost more than the rest
    for column in columns:
        kind = type(column)
        if kind in _LOOKED_INTO:
            if kind in _CALLS:
                if _calls_holding(column):
                    return True
            elif _writing_cte(column if kind is _CTE else column.table):
                return True
    for condition in conditions:
        if not (type(condition) is _COMPARISON and type(condition.left) in _PLAIN_SIDES
                and type(condition.right) in _PLAIN_SIDES) and _writes_within(condition):
            return True
    return bool(froms or ctes) and any(map(_writing_cte, (*froms, *ctes)))


def _writes_within(condition: t.Any) -> bool:
    """Whether a condition of a ``WHERE`` holds a common table expression of an
    ``INSERT``, ``UPDATE`` or ``DELETE`` anywhere (in a subquery, an ``exists``): the
    conditions an ``and_``/``or_`` joins (or parentheses hold) looked at as the
    ``WHERE``'s own, any other condition's elements walked."""
    kind = type(condition)
    if kind is _JOINED:
        return any(_writes_within(part) for part in condition.clauses
                   if not (type(part) is _COMPARISON and type(part.left) in _PLAIN_SIDES
                           and type(part.right) in _PLAIN_SIDES))
    if kind is _GROUPING:
        return _writes_within(condition.element)
    return any(map(_writing_cte, sa.sql.visitors.iterate(condition)))


def _writing_cte(table: t.Any) -> bool:
    """Whether ``table`` is a common table expression of an ``INSERT``, ``UPDATE`` or
    ``DELETE``."""
    return type(table) is _CTE and isinstance(table.element, _DML)


#: The column types :func:`_calls_holding` looks into: a function called by name
#: (``sa.func.name(...)``), labelled or not.
_CALLS = frozenset({sa.sql.functions.Function, sa.sql.elements.Label})
#: A common table expression (``.cte()``), and the columns whose table may be one: a
#: ``SELECT`` of a ``WITH`` that writes (PostgreSQL's ``sa.select(sa.insert(...)
#: .returning(...).cte())``) writes.
_CTE = sa.sql.selectable.CTE
_COLUMNS = frozenset({sa.Column})  # a CTE's columns are plain ones, never the ORM's
#: What such a common table expression is of: an ``INSERT``, ``UPDATE`` or ``DELETE``.
_DML = sa.sql.dml.UpdateBase
#: The column types :func:`_select_holds` looks into.
_LOOKED_INTO = _CALLS | _COLUMNS | {_CTE}
#: Conditions an ``and_``/``or_`` joins, and a condition in parentheses.
_JOINED = sa.sql.elements.BooleanClauseList
_GROUPING = sa.sql.elements.Grouping
#: A condition of a ``WHERE`` that compares two things (``User.id == 5``)...
_COMPARISON = sa.sql.elements.BinaryExpression
#: ...which, where both are a column (the ORM's annotated one too) or a value (``.in_([1,
#: 2])`` is one expanding value, ``.is_(None)`` a ``NULL``), holds no subquery.
_PLAIN_SIDES = frozenset({
    sa.Column, type(sa.Column("c", sa.Integer)._annotate({"c": True})),
    sa.sql.elements.BindParameter, sa.sql.elements.Null, sa.sql.elements.True_,
    sa.sql.elements.False_})


def _calls_holding(column: t.Any) -> bool:
    function = column.element if isinstance(column, sa.sql.elements.Label) else column
    name = str(getattr(function, "name", "")).lower()
    if name not in _HOLDING_FUNCTIONS:
        return False
    arguments = list(getattr(function, "clauses", ()))
    return not (name == "set_config" and len(arguments) == 3
                and getattr(arguments[2], "value", None) is False)


@functools.lru_cache(maxsize=256)
def _reads_only(text: str) -> bool:
    """Whether SQL text only reads (:data:`_READ_VERBS`, :data:`_WITH`, :data:`_PRAGMA`,
    :data:`_HOLDS`); kept per text, which a site's code mostly passes as the same string
    each time."""
    if text.lstrip().startswith(("--", "/*")):
        text = _NOT_CODE.sub(" ", text)  # a comment first (a tracing tag, say)
    first = _FIRST_WORD.match(text)
    verb = first.group(1).lower() if first is not None else ""
    if verb == _PRAGMA:
        return _pragma_reads(text)
    if verb not in _READ_VERBS and verb != _WITH:
        return False
    lowered = text.lower()
    if (verb == _WITH or ";" in lowered
            or any(word in lowered for word in _HOLDS_WORDS)):
        code = _NOT_CODE.sub(" ", text)
        return not (_HOLDS.search(code) or _NEXT_STATEMENT.search(code)
                    or (verb == _WITH and _WRITE_WORDS.search(code)))
    return True


def _pragma_reads(text: str) -> bool:
    """Whether SQLite's ``PRAGMA`` text reads (:data:`_PRAGMA`)."""
    parts = _PRAGMA_PARTS.match(text)
    if parts is None or _NEXT_STATEMENT.search(_NOT_CODE.sub(" ", text)):
        return False
    name, then = parts.group(1).lower(), parts.group(2)
    if then == "=":
        return False
    if then == "(":
        return name in _PRAGMA_QUERIES
    return name not in _PRAGMA_ACTS


def _ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the session's own, not a flush's or a SAVEPOINT's
        session.info.pop(_WROTE, None)


def begin(db: SQLAlchemy, table: sa.Table) -> sa.Connection:
    """The connection of the login's transaction, on the bind of ``table``. On an engine
    that commits each statement by itself (AUTOCOMMIT), the transaction is made a real one,
    at the server's default isolation level, for this login only (the pool gives the
    connection back to the host as it was)."""
    session = db.session()
    bind = {"clause": table}
    connection = session.connection(bind_arguments=bind)
    level = _level_for_transactions(connection)
    if level is None:
        return connection
    # What the session did so far was committed statement by statement already; its own
    # transaction ends so that the next connection it takes is the login's.
    commit(db)
    return session.connection(bind_arguments=bind,
                              execution_options={"isolation_level": level})


def autocommits(connection: sa.Connection) -> bool:
    """Whether each statement on ``connection`` commits by itself (``isolation_level``
    AUTOCOMMIT, the engine's or this connection's), as its DBAPI connection says
    (SQLAlchemy's public ``Dialect.detect_autocommit_setting``: no round trip). Where the
    dialect (or an older SQLAlchemy) cannot say: AUTOCOMMIT in the connection's execution
    options, or the engine's level as SQLAlchemy keeps it (a private attribute, read only
    if present); neither known, ``False``: the host's transactions stay as they are."""
    dbapi_connection = connection.connection.dbapi_connection
    if dbapi_connection is not None:
        try:
            return bool(connection.dialect.detect_autocommit_setting(dbapi_connection))
        except (AttributeError, NotImplementedError):
            pass
    level = connection.get_execution_options().get("isolation_level")
    if level is None:
        level = getattr(connection.dialect, "_on_connect_isolation_level", None)
    return level == "AUTOCOMMIT"


def with_transactions(connection: sa.Connection) -> sa.Connection:
    """``connection`` (a new one, before its first statement) in transactions, where its
    engine commits each statement by itself: at the server's default isolation level."""
    level = _level_for_transactions(connection)
    if level is not None:
        connection.execution_options(isolation_level=level)
    return connection


def _level_for_transactions(connection: sa.Connection) -> str | None:
    """Where ``connection`` commits each statement by itself, the isolation level that gives
    it transactions (the server's default); ``None`` where it has them already, or no such
    level is known (it stays as the host has it)."""
    if not autocommits(connection):
        return None
    level = connection.dialect.default_isolation_level
    return None if level in (None, "AUTOCOMMIT") else str(level)


def is_conflict(error: DBAPIError) -> bool:
    """Whether the database rolled the transaction back because of another one (a
    serialization failure, a deadlock, SQLite's write on a snapshot another commit made
    stale): running it again is the cure."""
    state, number = _error_codes(error)
    return (state in _CONFLICT_STATES or number in _CONFLICT_ERRNOS
            or _sqlite_code(error) == _SQLITE_BUSY_SNAPSHOT)


def is_busy(error: DBAPIError) -> bool:
    """Whether SQLite said the database is locked (``SQLITE_BUSY``, ``SQLITE_LOCKED``):
    another connection held its lock longer than this one's busy timeout (Python's
    ``sqlite3`` waits 5 s unless told otherwise), or held it when a transaction that had
    read already went to write (SQLite refuses that one at once). A stale snapshot
    (:func:`is_conflict`) is not this."""
    code = _sqlite_code(error)
    return (code is not None and code != _SQLITE_BUSY_SNAPSHOT
            and (code & 0xFF) in (_SQLITE_BUSY, _SQLITE_LOCKED))


def _sqlite_code(error: DBAPIError) -> int | None:
    """SQLite's extended result code of the ``sqlite3`` error under ``error`` (Python 3.11's
    ``sqlite_errorcode``), ``None`` for other drivers."""
    code = getattr(getattr(error, "orig", None), "sqlite_errorcode", None)
    return code if isinstance(code, int) else None


def is_unreachable(error: BaseException) -> bool:
    """Whether the database could not be asked at all: no connection within the pool's
    ``pool_timeout``; a server down, full, or refusing the site's connections; a connection
    lost at its commit. Nothing a login does can succeed then, nor can its ending be
    recorded. Not a pooled connection the server closed, found under a statement
    (SQLAlchemy's ``connection_invalidated``: a restart, an idle timeout): the pool
    connects anew, and the next try may well get through. Nor a statement's own failure
    on a live connection (a protocol violation, too many parameters), whatever its class."""
    if isinstance(error, sa.exc.TimeoutError):
        return True
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated and error.statement is not None:
        return False
    state, number = _error_codes(error)
    if number in _UNREACHABLE_ERRNOS or state in _UNREACHABLE_STATES:
        return True
    code = _sqlite_code(error)
    if code is not None:
        return code & 0xFF == _SQLITE_CANTOPEN
    if error.statement is not None:
        return False
    if number in _REFUSED_AT_CONNECT_ERRNOS or state in _REFUSED_AT_CONNECT_STATES:
        return True
    if state is not None or number is not None:
        return state is not None and state.startswith(("08", "28"))
    # psycopg's and pg8000's own failures to connect (or of a connection, at a commit)
    # carry no code at all; the other drivers' carry theirs.
    driver = type(getattr(error, "orig", None)).__module__.partition(".")[0]
    return driver in _CODELESS_DRIVERS


def is_refusing(error: BaseException) -> bool:
    """Whether the database answered but would not do the work for now: read-only, full, a
    failure of its files, a statement cancelled for taking or waiting too long. Not the
    statement's own fault, nor the site's data's: the same work may well get through later,
    and nothing a login does can succeed until then."""
    if not isinstance(error, DBAPIError):
        return False
    state, number = _error_codes(error)
    if state in _REFUSING_STATES or number in _REFUSING_ERRNOS:
        return True
    code = _sqlite_code(error)
    return code is not None and code & 0xFF in _SQLITE_REFUSING


def is_lock_wait(error: BaseException) -> bool:
    """Whether the database gave up waiting for a lock another transaction held
    (PostgreSQL's ``lock_timeout``, 55P03; InnoDB's ``innodb_lock_wait_timeout``, 1205):
    one statement refused, not the transaction rolled back for another's sake
    (:func:`is_conflict`). A moment later the lock may well be free."""
    if not isinstance(error, DBAPIError):
        return False
    state, number = _error_codes(error)
    return state in _LOCK_WAIT_STATES or number in _LOCK_WAIT_ERRNOS


def is_replaced_file(error: BaseException) -> bool:
    """Whether SQLite said the database file was replaced (or deleted) under the
    connection (``SQLITE_READONLY_DBMOVED``): the pool's connections are to the old file,
    a new one writes to the file now there."""
    return isinstance(error, DBAPIError) and _sqlite_code(error) == _SQLITE_READONLY_DBMOVED


def reopen_replaced_file(db: SQLAlchemy, error: BaseException) -> bool:
    """Where ``error`` says a SQLite file was replaced under the site (a restore), close
    the pools' connections to the old ones, so that the next try opens the file there:
    ``True``; else nothing, ``False``."""
    if not is_replaced_file(error):
        return False
    for engine in db.engines.values():
        if engine.dialect.name == "sqlite":
            engine.dispose()
    return True


def roll_back_quietly(db: SQLAlchemy) -> None:
    """Roll back the request's transaction after the database refused a statement of it,
    so that what runs next in the request (a page, a receiver) finds the session usable
    (PostgreSQL's stays aborted); a rollback that fails too changes nothing more."""
    with contextlib.suppress(Exception):
        db.session.rollback()


def names_a_missing_table(error: DBAPIError) -> bool:
    """Whether the database said a statement's table is not there (PostgreSQL's
    ``undefined_table``, MariaDB's and MySQL's 1146, SQLite's "no such table"), not that
    it could not be reached."""
    state, number = _error_codes(error)
    return state == "42P01" or number == 1146 or (
        "no such table" in str(getattr(error, "orig", "")))


def names_a_missing_column(error: DBAPIError) -> bool:
    """Whether the database said a statement's column is not there (PostgreSQL's
    ``undefined_column``, MariaDB's and MySQL's 1054, SQLite's "no such column")."""
    state, number = _error_codes(error)
    return state == "42703" or number == 1054 or (
        "no such column" in str(getattr(error, "orig", "")))


def _error_codes(error: DBAPIError) -> tuple[str | None, int | None]:
    """The SQLSTATE (PostgreSQL's drivers) and error number (MariaDB's and MySQL's) of the
    driver's error under ``error``, each ``None`` where it has none."""
    orig = getattr(error, "orig", None)
    args: tuple[t.Any, ...] = getattr(orig, "args", ())
    first = args[0] if args else None
    # psycopg 3: ``sqlstate``; psycopg2: ``pgcode``; pg8000: a dict of fields first in args.
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or (
        first.get("C") if isinstance(first, dict) else None)
    # PyMySQL and mysqlclient: the number first in ``args``; the vendors' connectors
    # (MariaDB's, MySQL's): in ``errno``, ``args`` holding the message.
    number = getattr(orig, "errno", None) or first
    return state, number if isinstance(number, int) else None


def pause(conflicts: int) -> None:
    """Wait a little before a login meets the others again after its ``conflicts``-th
    conflict: a random while, growing with each, so that they do not meet at once."""
    time.sleep(random.uniform(0, min(MAX_PAUSE, 0.01 * 2 ** conflicts)))


#: Where a database's first line quotes the value it refused (a person's data): MySQL's
#: "Duplicate entry 'alice@example.com' for key ...", SQL Server's "The duplicate key value
#: is (alice@example.com)". PostgreSQL and SQLite name only the constraint or column there.
#: SQLAlchemy's ``FlushError`` names a conflicting primary key the same way ("with identity
#: key (<class 'User'>, ('alice@example.com',), None) conflicts").
_QUOTED_VALUES = (re.compile(r"(?i)(duplicate entry )'.*?'( for key)"),
                  re.compile(r"(?i)(incorrect \w+ value: )'.*?'( for column)"),
                  re.compile(r"(?i)(duplicate key value is )\(.*?\)()"),
                  re.compile(r"(identity key )\(.*\)( conflicts)"))


def database_reason(error: BaseException) -> str:
    """The database's own words (or SQLAlchemy's, before the database was asked), first line
    only: the constraint or column, never the SQL statement's parameters (a person's data),
    a driver's detail lines (the same) or a value a message quotes."""
    orig = getattr(error, "orig", None)
    refusal = orig if orig is not None else error
    words = str(refusal).strip().splitlines()
    line = words[0] if words else "(no message)"
    for quoted in _QUOTED_VALUES:
        line = quoted.sub(r"\1…\2", line)
    return f"{type(refusal).__name__}: {line}"
