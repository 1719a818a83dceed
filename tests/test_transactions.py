"""transactions: whether a connection commits each statement by itself, and which database
errors a login is tried again after (the promises across the whole login are in
promises/test_database_settings.py)."""

from __future__ import annotations

import typing as t

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, OperationalError
from support import admin_engine, database_out_of_reach

from flask_wechat_qr.transactions import (
    autocommits,
    is_busy,
    is_conflict,
    is_refusing,
    is_unreachable,
    names_a_missing_table,
)


@pytest.mark.parametrize(("engine_level", "connection_level", "expected"), [
    (None, None, False),
    ("AUTOCOMMIT", None, True),
    (None, "AUTOCOMMIT", True),
    ("AUTOCOMMIT", "SERIALIZABLE", False),
])
def test_autocommits_as_the_engine_and_the_connection_say(
    engine_level: str | None, connection_level: str | None, expected: bool
) -> None:
    options = {"isolation_level": engine_level} if engine_level else {}
    engine = sa.create_engine("sqlite://", **options)
    with engine.connect() as connection:
        if connection_level:
            connection.execution_options(isolation_level=connection_level)
        assert autocommits(connection) is expected


class _Undetecting:
    """A dialect that cannot tell a DBAPI connection's autocommit (an older SQLAlchemy's, a
    third party's), with or without SQLAlchemy's private record of the engine's level."""

    def __init__(self, dialect: sa.Dialect, keeps_level: bool) -> None:
        self._dialect = dialect
        self._missing = {"detect_autocommit_setting"} | (
            set() if keeps_level else {"_on_connect_isolation_level"})

    def __getattr__(self, name: str) -> t.Any:
        if name in self._missing:
            raise AttributeError(name)
        return getattr(self._dialect, name)


@pytest.mark.parametrize("keeps_level", [True, False], ids=["private-level", "nothing"])
def test_autocommits_without_the_dialects_word(monkeypatch: pytest.MonkeyPatch,
                                               keeps_level: bool) -> None:
    """Where the dialect cannot say: the engine's level where SQLAlchemy keeps it, else
    ``False`` (the host's engine as it is: never an error); the connection's own execution
    option is known either way."""
    engine = sa.create_engine("sqlite://", isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        monkeypatch.setattr(connection, "dialect", _Undetecting(connection.dialect, keeps_level))
        assert autocommits(connection) is keeps_level
        connection.execution_options(isolation_level="AUTOCOMMIT")
        assert autocommits(connection) is True


class _ConnectorError(Exception):
    """An error of MariaDB's own Connector/Python (or MySQL's): its number in ``errno``, its
    ``args`` a message, a SQLSTATE (``HY000`` for most) in ``sqlstate``."""

    def __init__(self, message: str, errno: int, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.errno = errno
        self.sqlstate = sqlstate


def _wrapped(orig: BaseException) -> DBAPIError:
    return OperationalError("UPDATE t SET x = 1", {}, orig)


def test_conflicts_are_what_the_database_rolled_back_for_anothers_sake() -> None:
    """PostgreSQL's serialization failures and deadlocks (psycopg 3's ``sqlstate``,
    psycopg2's ``pgcode``, pg8000's fields), MariaDB's and MySQL's deadlock (1213) and
    "record has changed since last read" (1020) from PyMySQL and mysqlclient (``args[0]``)
    or the vendors' connectors (``errno``). Not a lock wait timeout (1205, PostgreSQL's
    55P03): InnoDB rolls back only that statement (``innodb_rollback_on_timeout`` off),
    the wait was the database's whole patience, and the login is not run again for it. A
    driver whose first ``args`` is a dict (pg8000) raised a ``TypeError`` over the
    database's own error (and its serialization failures were not tried again)."""
    import pymysql
    from psycopg import errors

    class Psycopg2Error(Exception):
        pgcode = "40001"

    conflicts = [errors.SerializationFailure("x"), errors.DeadlockDetected("x"),
                 Psycopg2Error("x"), pymysql.err.OperationalError(1213, "Deadlock found"),
                 pymysql.err.OperationalError(1020, "Record has changed since last read"),
                 _ConnectorError("Deadlock found", 1213),
                 Exception({"S": "ERROR", "C": "40001", "M": "could not serialize access"})]
    others = [errors.LockNotAvailable("x"), errors.UniqueViolation("x"),
              pymysql.err.OperationalError(1205, "Lock wait timeout exceeded"),
              pymysql.err.OperationalError(2013, "Lost connection"),
              _ConnectorError("Lock wait timeout exceeded", 1205), Exception(),
              Exception({"S": "ERROR", "C": "23505", "M": "duplicate key value"}),
              Exception(["not", "hashable"])]
    assert [is_conflict(_wrapped(error)) for error in conflicts] == [True] * len(conflicts)
    assert [is_conflict(_wrapped(error)) for error in others] == [False] * len(others)


def test_a_missing_table_is_told_apart_from_a_database_out_of_reach() -> None:
    """Only a missing table makes a failed login look at the extension's tables (another
    connection: where the database is out of reach, a second wait for nothing)."""
    import sqlite3

    import pymysql
    from psycopg import errors

    missing = [errors.UndefinedTable("x"),
               pymysql.err.ProgrammingError(1146, "Table 'db.wechat_qr_identity' doesn't exist"),
               _ConnectorError("Table 'db.wechat_qr_identity' doesn't exist", 1146),
               Exception({"S": "ERROR", "C": "42P01", "M": "relation does not exist"}),
               sqlite3.OperationalError("no such table: wechat_qr_login_state")]
    others = [errors.ConnectionTimeout("x"), errors.UndefinedColumn("x"),
              pymysql.err.OperationalError(2003, "Can't connect to MySQL server"),
              pymysql.err.OperationalError(2013, "Lost connection"),
              sqlite3.OperationalError("unable to open database file"),
              sqlite3.OperationalError("database is locked"), Exception()]
    assert [names_a_missing_table(_wrapped(error)) for error in missing] == [True] * 5
    assert [names_a_missing_table(_wrapped(error)) for error in others] == [False] * 7


@pytest.mark.parametrize("database", ["mariadb"], indirect=True)
def test_a_lock_wait_timeout_on_mariadb_is_no_conflict(database: t.Any) -> None:
    """A real one (1205 after a second): the transaction is still open, its earlier
    statements kept, which is why trying the login again would need a rollback first
    (the flow rolls back before every retry) and why a timeout is not retried at all."""
    engine = sa.create_engine(database.url("locks"))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (id INT PRIMARY KEY, x INT)"))
            conn.execute(sa.text("INSERT INTO t VALUES (1, 0), (2, 0)"))
        with engine.connect() as holder, engine.connect() as waiter:
            holder.execute(sa.text("UPDATE t SET x = 1 WHERE id = 1"))
            waiter.execute(sa.text("SET SESSION innodb_lock_wait_timeout = 1"))
            waiter.execute(sa.text("UPDATE t SET x = 2 WHERE id = 2"))
            with pytest.raises(DBAPIError) as timeout:
                waiter.execute(sa.text("UPDATE t SET x = 2 WHERE id = 1"))
            assert timeout.value.orig.args[0] == 1205 and not is_conflict(timeout.value)
            # Only the statement was rolled back: the earlier one holds.
            assert waiter.execute(sa.text("SELECT x FROM t WHERE id = 2")).scalar_one() == 2
            holder.rollback()
            waiter.rollback()
    finally:
        engine.dispose()


@pytest.mark.parametrize(("text", "holds"), [
    ("SELECT 1 AS updated_at", False),
    ("  (SELECT 1 AS intonation, 2 AS shared)", False),
    ("SELECT nextval('visits')", False),  # a sequence's value outlives a rollback anyway
    ("SELECT id FROM visits WHERE id = 1 FOR UPDATE", True),
    ("select id from visits where id = 1 for no key update nowait", True),
    ("SELECT id FROM visits WHERE id = 1 FOR KEY SHARE", True),
    ("SELECT id FROM visits WHERE id = 1\n  LOCK IN SHARE MODE", True),
    ("SELECT pg_advisory_xact_lock(7)", True),
    ("SELECT * INTO visits_copy FROM visits", True),
    ("EXPLAIN ANALYZE DELETE FROM visits", True),
    ("UPDATE visits SET n = 1", True),
    # words in string literals, quoted names and comments say nothing
    ("SELECT 'Log into the site' AS banner", False),
    ("SELECT id FROM visits WHERE note = 'waiting for update'", False),
    ('SELECT "into" FROM visits', False),
    ("SELECT id FROM visits -- locked for update later\nWHERE id = 1", False),
    ("/* traceparent='00-ab' */ SELECT id FROM visits", False),
    ("-- tagged\nSELECT id FROM visits FOR UPDATE", True),
    ("SELECT id FROM visits WHERE note = 'It''s' FOR UPDATE", True),
    # a setting of the transaction (row-level security's tenant, say), not of the session
    ("SELECT set_config('app.tenant', 'acme', true)", True),
    ("SELECT set_config('app.tenant', 'acme', false)", False),
    # reads that do not begin with SELECT: a common table expression, a table value
    # constructor, SQLite's pragmas that read, MariaDB's and PostgreSQL's SHOW, EXPLAIN
    ("WITH recent AS (SELECT id FROM visits) SELECT count(*) FROM recent", False),
    ("with recursive n(i) as (select 1 union all select i + 1 from n where i < 3) "
     "select i from n", False),
    ("WITH notes AS (SELECT 'update me' AS note) SELECT note FROM notes", False),
    ("-- tagged\nWITH recent AS (SELECT id FROM visits) SELECT id FROM recent", False),
    ("VALUES (1), (2)", False),
    ("PRAGMA table_info(visits)", False),
    ('PRAGMA main.index_list("visits")', False),
    ("PRAGMA foreign_keys", False),
    ("SHOW VARIABLES LIKE 'version'", False),
    ("EXPLAIN SELECT id FROM visits", False),
    # ...but a common table expression that writes, or whose SELECT locks, holds
    ("WITH made AS (INSERT INTO visits (id) VALUES (1) RETURNING id) SELECT id FROM made",
     True),
    ("WITH gone AS (DELETE FROM visits RETURNING id) SELECT count(*) FROM gone", True),
    ("WITH old AS (SELECT id FROM visits) UPDATE visits SET n = 1 WHERE id IN "
     "(SELECT id FROM old)", True),
    ("WITH old AS (SELECT id FROM visits) SELECT id FROM old FOR UPDATE", True),
    # and a pragma that sets or acts, and a second statement after a read, are writes
    ("PRAGMA foreign_keys = ON", True),
    ("PRAGMA cache_size(1000)", True),
    ("PRAGMA optimize", True),
    ("SELECT 1; DELETE FROM visits", True),
])
def test_sql_text_that_holds_something_until_its_commit_is_no_read(
    tmp_path: t.Any, text: str, holds: bool
) -> None:
    """SQL text run through the session: a ``SELECT`` is a read, which the extension may
    end the transaction of before calling WeChat, unless it takes what only the
    transaction's end gives back (a row lock, an advisory lock of the transaction, a table
    of ``SELECT ... INTO``). So are ``WITH ... SELECT``, ``VALUES`` and SQLite's pragmas
    that read, which counted as writes (the transaction was kept across WeChat's call),
    but not a ``WITH`` that writes, nor a pragma that sets. Classified before the database
    runs it (SQLite here, which knows few of them: its refusal does not matter)."""
    assert holds_after(tmp_path, sa.text(text)) is holds


def holds_after(tmp_path: t.Any, statement: t.Any) -> bool:
    """Whether a session that ran ``statement`` (on SQLite: whether SQLite knows it does not
    matter) is taken to hold writes; none after its rollback."""
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy

    from flask_wechat_qr.transactions import holds_writes, watch_writes

    app = Flask("classified", root_path=str(tmp_path))
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    db = SQLAlchemy(app)
    watch_writes(db)
    with app.app_context():
        try:
            db.session.execute(statement)
        except DBAPIError:
            pass
        holds = holds_writes(db.session())
        db.session.rollback()
        assert not holds_writes(db.session())
    return holds


def _visits() -> sa.Table:
    return sa.Table("visits", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))


def _made() -> sa.CTE:
    """PostgreSQL's data-modifying ``WITH``: an ``INSERT ... RETURNING`` as a CTE."""
    visits = _visits()
    return sa.insert(visits).values(id=1).returning(visits.c.id).cte("made")


def _visits_where(criteria: t.Callable[[t.Any], list[t.Any]]) -> sa.Select[t.Any]:
    """A ``SELECT`` of the visits with ``criteria(visits.c.id)`` as its ``WHERE``."""
    visits = _visits()
    return sa.select(visits).where(*criteria(visits.c.id))


@pytest.mark.parametrize(("statement", "holds"), [
    (lambda: sa.select(_visits()), False),
    (lambda: sa.select(sa.func.count()).select_from(_visits()), False),
    (lambda: sa.select(_visits()).with_for_update(), True),
    (lambda: sa.select(_visits()).with_for_update(read=True, nowait=True), True),
    (lambda: sa.select(sa.func.pg_advisory_xact_lock(7)), True),
    (lambda: sa.select(sa.func.pg_try_advisory_xact_lock(7).label("locked")), True),
    (lambda: sa.select(sa.func.pg_advisory_lock(7)), False),  # the session's: outlives a commit
    (lambda: sa.select(sa.func.set_config("app.tenant", "acme", True)), True),
    (lambda: sa.select(sa.func.set_config("app.tenant", "acme", False)), False),
    (lambda: sa.select(_made()), True),
    (lambda: sa.select(_made().c.id), True),
    (lambda: sa.select(sa.literal(1)).select_from(_made()), True),
    (lambda: sa.select(sa.literal(1)).add_cte(_made()), True),
    (lambda: sa.select(_visits().select().cte("recent")), False),
    # only in a subquery of the WHERE (SQLAlchemy puts the WITH at the top: it runs)
    (lambda: _visits_where(lambda id_: [id_.in_(sa.select(_made().c.id))]), True),
    (lambda: _visits_where(lambda id_: [sa.exists(sa.select(_made()))]), True),
    (lambda: _visits_where(lambda id_: [sa.and_(
        id_ > 0, id_ == sa.select(_made().c.id).scalar_subquery())]), True),
    (lambda: _visits_where(lambda id_: [
        id_.in_(sa.select(_visits().select().cte("recent").c.id)), id_.is_not(None)]),
     False),
], ids=["select", "count", "for-update", "for-share-nowait", "advisory-xact-lock",
        "try-advisory-xact-lock-labelled", "advisory-lock", "set-config-local",
        "set-config-session", "select-of-cte-insert", "column-of-cte-insert",
        "from-cte-insert", "cte-insert-added", "select-of-cte-select",
        "where-in-cte-insert", "where-exists-cte-insert", "where-scalar-cte-insert",
        "where-in-cte-select"])
def test_a_select_construct_that_holds_something_until_its_commit_is_no_read(
    tmp_path: t.Any, statement: t.Callable[[], sa.Select[t.Any]], holds: bool
) -> None:
    """A ``SELECT`` built with SQLAlchemy, run through the session: ``with_for_update()``
    was told apart, a PostgreSQL advisory lock of the transaction or a setting of it taken
    as ``sa.select(sa.func.pg_advisory_xact_lock(key))`` was not (the site's natural way to
    write the text that was), nor a ``SELECT`` of a common table expression that writes
    (PostgreSQL's ``WITH made AS (INSERT ... RETURNING ...) SELECT ...``). Classified
    before the database runs it (SQLite here)."""
    assert holds_after(tmp_path, statement()) is holds


def test_the_writes_of_every_app_made_one_after_another_are_seen() -> None:
    """A site's test suite makes an app (and a ``db``) per test. SQLAlchemy knows a session
    class by its ``id()``, and a new ``db`` whose class took the address of one collected
    before was told it had the listeners already: its writes went unseen (the extension
    then committed them before calling WeChat), now and then. Every one's are seen. (Its
    failure is a matter of addresses: a few of the apps here, most runs.)"""
    import gc

    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy

    from flask_wechat_qr.transactions import holds_writes, watch_writes

    unseen = []
    for number in range(60):
        app = Flask("one_of_many")
        app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
        db = SQLAlchemy(app)
        watch_writes(db)
        with app.app_context():
            try:
                db.session.execute(sa.text("DELETE FROM visits"))
            except DBAPIError:
                pass
            if not holds_writes(db.session()):
                unseen.append(number)
            db.session.remove()
        del app, db
        gc.collect(0)  # the next app's classes may take the place of this one's
    assert unseen == []


def _sqlite_error(tmp_path: t.Any, stale_snapshot: bool) -> DBAPIError:
    """A real ``sqlite3`` error, wrapped as SQLAlchemy wraps it: the database locked by
    another connection, or (WAL mode) a write on a snapshot another commit made stale."""
    import sqlite3

    path = tmp_path / "locks.db"
    first = sqlite3.connect(path, timeout=0, isolation_level=None)
    second = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        first.execute("PRAGMA journal_mode=WAL")
        first.execute("CREATE TABLE t (x)")
        if stale_snapshot:
            first.execute("BEGIN")
            first.execute("SELECT * FROM t").fetchall()  # its snapshot, from here on
            second.execute("INSERT INTO t VALUES (1)")  # committed after it
        else:
            second.execute("BEGIN IMMEDIATE")  # the write lock, held
        try:
            first.execute("INSERT INTO t VALUES (2)")
        except sqlite3.OperationalError as error:
            return OperationalError("INSERT INTO t VALUES (2)", {}, error)
        raise AssertionError("SQLite let the write through")
    finally:
        first.close()
        second.close()


def test_sqlites_lock_is_busy_and_a_stale_snapshot_a_conflict(tmp_path: t.Any) -> None:
    """A lock another connection holds: busy, not a conflict (a login runs once more after
    a pause, then says what to do). A write on a stale snapshot: refused at once, and a new
    transaction cures it (a conflict). Neither on an error of another driver."""
    (tmp_path / "busy").mkdir()
    (tmp_path / "stale").mkdir()
    busy = _sqlite_error(tmp_path / "busy", stale_snapshot=False)
    stale = _sqlite_error(tmp_path / "stale", stale_snapshot=True)
    assert (is_busy(busy), is_conflict(busy)) == (True, False)
    assert (is_busy(stale), is_conflict(stale)) == (False, True)
    deadlock = _wrapped(_ConnectorError("Deadlock found", 1213))
    assert (is_busy(deadlock), is_conflict(deadlock)) == (False, True)


def _raised(run: t.Callable[[], object]) -> BaseException:
    """What ``run`` raised (it must raise)."""
    try:
        run()
    except Exception as error:
        return error
    raise AssertionError("nothing was raised")


def test_a_database_out_of_reach_is_told_apart_from_its_refusals(
    database: t.Any, tmp_path: t.Any
) -> None:
    """Real errors of each database: a server that refuses connections (or a file in a
    folder that is gone) and a pool whose only connection is taken past ``pool_timeout``
    are out of reach: nothing a login does can get through. What the database refuses
    once asked (a statement it cannot run, a unique key, a missing table, SQLite's lock)
    is not: a login that meets it is the site's or the database's to answer for, as
    before. Nor is a pooled connection the server closed (a restart), found under a
    statement: the pool connects anew, and the next try gets through."""
    engine = sa.create_engine(database.url("reach"), pool_size=1, max_overflow=0,
                              pool_timeout=0.2)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        with engine.connect() as conn:
            refusals = []
            for text in ("SELEKT 1", "SELECT * FROM nowhere", "INSERT INTO t VALUES (1)"):
                refusals.append(_raised(lambda text=text: conn.execute(sa.text(text))))
                conn.rollback()
            out_of_reach = [_raised(engine.connect)]  # the pool's only connection is taken
        lost: BaseException | None = None
        if database.backend == "sqlite":
            (tmp_path / "locked").mkdir()
            refusals.append(_sqlite_error(tmp_path / "locked", stale_snapshot=False))
        else:
            with engine.connect() as conn:
                pid = conn.execute(sa.text(
                    "SELECT pg_backend_pid()" if database.is_postgres
                    else "SELECT CONNECTION_ID()")).scalar_one()
                with admin_engine(database.server_url).connect() as admin:
                    admin.execute(sa.text(f"SELECT pg_terminate_backend({int(pid)})"
                                          if database.is_postgres else f"KILL {int(pid)}"))
                    admin.commit()
                lost = _raised(lambda: conn.execute(sa.text("SELECT 1")))
        with database_out_of_reach(engine, tmp_path) as attempts:
            out_of_reach.append(_raised(engine.connect))
        assert attempts == [1]
        with engine.connect() as conn:  # there again
            assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar_one() == 1
    finally:
        engine.dispose()
    assert [is_unreachable(error) for error in out_of_reach] == [True] * len(out_of_reach)
    assert [is_unreachable(error) for error in refusals] == [False] * len(refusals)
    assert [type(error).__name__ for error in refusals[:3]] == (
        ["OperationalError", "OperationalError", "IntegrityError"]
        if database.backend == "sqlite" else
        ["ProgrammingError", "ProgrammingError", "IntegrityError"])
    assert isinstance(out_of_reach[0], sa.exc.TimeoutError)
    assert len(out_of_reach) == 2
    if database.backend != "sqlite":
        assert isinstance(lost, DBAPIError) and lost.connection_invalidated
        assert not is_unreachable(lost)


def test_other_drivers_say_out_of_reach_with_their_codes() -> None:
    """psycopg2 (``pgcode``), pg8000 (its fields) and MariaDB's connectors (``errno``, with
    a SQLSTATE beside it in the vendors' connectors), as :func:`is_conflict` reads them:
    the connection exceptions (SQLSTATE class 08) where no statement ran, too many
    connections, a server shutting down; MariaDB's "can't connect", "gone away", "lost
    connection", "too many connections", "shutdown in progress", and its refusals of the
    site's account or database when connecting (as pg8000's class 28 and 3D000, and
    psycopg's failures to connect, which carry no code, whatever the reason). Not a
    statement cancelled by a timeout (57014, a server's answer), a lock wait timeout, an
    error that says nothing; nor a connection exception, a refused database (``USE
    nowhere``) or a code-less driver error under a statement on a live connection (a
    protocol violation, psycopg's "number of parameters must be between 0 and 65535")."""
    import pymysql
    from psycopg import OperationalError as PsycopgError

    class Psycopg2Error(Exception):
        def __init__(self, pgcode: str) -> None:
            super().__init__("x")
            self.pgcode = pgcode

    class Pg8000Error(Exception):
        """pg8000's own failure to connect: an ``InterfaceError`` with no code."""

    Pg8000Error.__module__ = "pg8000.exceptions"
    out_of_reach = [
        _at_connect(Psycopg2Error("08006")), _at_connect(Psycopg2Error("08001")),
        _wrapped(Psycopg2Error("53300")), _wrapped(Psycopg2Error("57P01")),
        _wrapped(Exception({"S": "FATAL", "C": "57P03", "M": "the database system is "
                            "starting up"})),
        _wrapped(pymysql.err.OperationalError(2006, "MySQL server has gone away")),
        _wrapped(pymysql.err.OperationalError(1040, "Too many connections")),
        _at_connect(pymysql.err.OperationalError(1045, "Access denied for user 'site'")),
        _at_connect(pymysql.err.OperationalError(1049, "Unknown database 'site'")),
        _wrapped(pymysql.err.OperationalError(1053, "Server shutdown in progress")),
        _at_connect(_ConnectorError("Can't connect to MySQL server", 2003)),
        _at_connect(_ConnectorError("Can't connect to MySQL server", 2003, "HY000")),
        _wrapped(_ConnectorError("Lost connection to MySQL server", 2013, "HY000")),
        _at_connect(_ConnectorError("Access denied for user 'site'", 1045, "28000")),
        _at_connect(PsycopgError("connection failed: connection refused")),
        sa.exc.InterfaceError(None, None, Pg8000Error("Can't create a connection")),
        sa.exc.ProgrammingError(None, None, Exception({"S": "FATAL", "C": "28P01", "M":
                                                       "password authentication failed"})),
        sa.exc.ProgrammingError(None, None, Exception({"S": "FATAL", "C": "3D000", "M":
                                                       'database "site" does not exist'})),
    ]
    refusals = [
        _wrapped(Psycopg2Error("57014")), _wrapped(Psycopg2Error("40001")),
        _wrapped(Psycopg2Error("08P01")),
        _wrapped(PsycopgError("number of parameters must be between 0 and 65535")),
        _wrapped(pymysql.err.OperationalError(1205, "Lock wait timeout exceeded")),
        _wrapped(_ConnectorError("Deadlock found", 1213, "40001")),
        _wrapped(Exception()), _at_connect(Exception()), _wrapped(ValueError("x")),
        _wrapped(pymysql.err.OperationalError(1049, "Unknown database 'nowhere'")),  # USE
        _wrapped(Exception({"S": "ERROR", "C": "3D000", "M": "cross-database reference"})),
    ]
    assert [is_unreachable(error) for error in out_of_reach] == [True] * len(out_of_reach)
    assert [is_unreachable(error) for error in refusals] == [False] * len(refusals)
    assert not is_unreachable(ValueError("not the database's"))


def test_a_database_that_will_not_do_the_work_for_now_is_told_by_its_codes(
        tmp_path: t.Any) -> None:
    """Read-only (PostgreSQL's 25006; MariaDB's 1290, 1792, 1836; SQLite's
    ``SQLITE_READONLY``), a full disk (53100; 1021, 1114; ``SQLITE_FULL``), no memory, a
    failure of the files, a statement cancelled for taking or waiting too long (57014,
    55P03; 1205, 1969, 3024): the same work may get through later, so the login ends on
    a page that says to try again, not the site's 500. Not a conflict (run again), a lock
    SQLite's busy timeout waited out (tried again once), a constraint or a statement's own
    error, nor a database out of reach (its own page)."""
    import sqlite3

    import pymysql
    from psycopg import errors

    class Psycopg2Error(Exception):
        def __init__(self, pgcode: str) -> None:
            super().__init__("x")
            self.pgcode = pgcode

    path = tmp_path / "refusing.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE t (x)")
    read_only = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        read_only.execute("INSERT INTO t VALUES (1)")
    except sqlite3.OperationalError as error:
        sqlite_read_only = _wrapped(error)
    finally:
        read_only.close()
    refusing = [
        _wrapped(errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only "
                                               "transaction")),
        _wrapped(Psycopg2Error("25006")), _wrapped(Psycopg2Error("53100")),
        _wrapped(errors.QueryCanceled("canceling statement due to statement timeout")),
        _wrapped(Exception({"S": "ERROR", "C": "55P03", "M": "could not obtain lock"})),
        _wrapped(pymysql.err.OperationalError(1290, "The MariaDB server is running with the "
                                              "--read-only option")),
        _wrapped(pymysql.err.OperationalError(1792, "Cannot execute statement in a READ "
                                              "ONLY transaction")),
        _wrapped(pymysql.err.OperationalError(1021, "Disk full")),
        _wrapped(pymysql.err.OperationalError(1205, "Lock wait timeout exceeded")),
        _wrapped(_ConnectorError("Query execution was interrupted (max_statement_time "
                                 "exceeded)", 1969, "70100")),
        sqlite_read_only,
    ]
    others = [
        _wrapped(Psycopg2Error("40001")), _wrapped(Psycopg2Error("23505")),
        _wrapped(Psycopg2Error("57P01")), _wrapped(Psycopg2Error("54000")),
        _wrapped(pymysql.err.OperationalError(1213, "Deadlock found")),
        _wrapped(pymysql.err.OperationalError(1644, "refused")),
        _wrapped(pymysql.err.OperationalError(2006, "MySQL server has gone away")),
        _sqlite_error(tmp_path, stale_snapshot=False), _wrapped(Exception()),
        ValueError("not the database's"),
    ]
    assert sqlite_read_only.orig.sqlite_errorcode & 0xFF == 8  # type: ignore[union-attr]
    assert [is_refusing(error) for error in refusing] == [True] * len(refusing)
    assert [is_refusing(error) for error in others] == [False] * len(others)


def _at_connect(orig: BaseException) -> DBAPIError:
    """``orig`` as SQLAlchemy wraps a driver's failure to connect: no statement."""
    return OperationalError(None, None, orig)


# --- the database's words, for pages and logs ---------------------------------------------


@pytest.mark.parametrize(("said", "logged"), [
    ("NOT NULL constraint failed: account.password_hash",  # SQLite
     "NOT NULL constraint failed: account.password_hash"),
    ('duplicate key value violates unique constraint "account_email_key"\n'
     "DETAIL:  Key (email)=(alice@example.com) already exists.",  # PostgreSQL
     'duplicate key value violates unique constraint "account_email_key"'),
    ("(1062, \"Duplicate entry 'alice@example.com' for key 'account.email'\")",  # MySQL
     "(1062, \"Duplicate entry … for key 'account.email'\")"),
    ("Violation of UNIQUE KEY constraint 'UQ_email'. The duplicate key value is "
     "(alice@example.com).",  # SQL Server
     "Violation of UNIQUE KEY constraint 'UQ_email'. The duplicate key value is …."),
    ("(1366, \"Incorrect string value: '\\xE5\\xBC\\xA0alice@example.com' for column "
     "`site`.`account`.`nickname` at row 1\")",  # MariaDB, a latin1 column
     "(1366, \"Incorrect string value: … for column `site`.`account`.`nickname` at row 1\")"),
    ("(1366, \"Incorrect integer value: 'alice@example.com' for column `site`.`account`.`age` "
     "at row 1\")",  # MariaDB, a value of the wrong type
     "(1366, \"Incorrect integer value: … for column `site`.`account`.`age` at row 1\")"),
])
def test_the_databases_reason_is_logged_without_a_persons_data(said: str, logged: str) -> None:
    """What ``AccountNotSaved`` logs: the database's first line, the constraint or column
    kept, the value it quotes (MySQL, SQL Server) and the statement's parameters left out."""
    from sqlalchemy.exc import IntegrityError

    from flask_wechat_qr.transactions import database_reason

    class DriverError(Exception):
        pass

    reason = database_reason(IntegrityError("INSERT INTO account ...",
                                             {"email": "alice@example.com"}, DriverError(said)))
    assert reason == f"DriverError: {logged}"
    assert "alice@example.com" not in reason


def test_sqlalchemys_reason_is_logged_without_the_conflicting_key() -> None:
    """A ``FlushError`` (the ORM refused before asking the database) names the conflicting
    primary key: on a site keyed by e-mail address, a person's data (found in review)."""
    from sqlalchemy.orm.exc import FlushError

    from flask_wechat_qr.transactions import database_reason

    reason = database_reason(FlushError(
        "New instance <User at 0x7f> with identity key (<class 'site.User'>, "
        "('alice@example.com',), None) conflicts with persistent instance <User at 0x7e>"))
    assert reason == ("FlushError: New instance <User at 0x7f> with identity key … conflicts "
                      "with persistent instance <User at 0x7e>")
