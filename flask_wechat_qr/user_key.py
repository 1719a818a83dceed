"""The identities' foreign key to the host's user table, so none can outlive its user.

``wechat_qr_identity.user_id`` is Flask-Login's id as text, which no database can tie to a
user row: a user deleted behind the ORM (raw SQL, another service) would leave identities
behind, and the next user given the same id (SQLite reuses the highest free id; any
database after a sequence reset) would inherit them. So when the extension knows the user
model and its primary key is one column, each identity also carries ``user_key``, the
user's primary key, with ``FOREIGN KEY ... ON DELETE CASCADE``: deleting a user by any
means deletes their identities in the database itself (the extension's tables are on the
user table's bind, :func:`flask_wechat_qr.models.users_bind_key`).

SQLite enforces foreign keys only on connections with ``PRAGMA foreign_keys=ON``, which the
extension does not turn on behind the host's back (it would also start enforcing the host's
own foreign keys, and then the copy-and-drop of an Alembic batch migration of the user table
would delete every identity). There a trigger on the user table does the cascade instead.
ORM bulk deletes (``db.session.execute(sa.delete(User)...)``, ``Query.delete()``) also
remove the identities in their own transaction, on any database.
"""

from __future__ import annotations

import contextvars
import logging
import typing as t
import weakref
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateColumn

from .column_types import MYSQL_DIALECTS
from .model_base import engine_of

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy.orm import ORMExecuteState

    #: ``prepare(state, delete)``, before a bulk ``DELETE`` of users (``delete``, which
    #: ``state`` runs) runs: what to do once it has run
    Prepare = t.Callable[[ORMExecuteState, sa.Delete], t.Callable[[], None] | None]

log = logging.getLogger("flask_wechat_qr")

#: The guard column of ``wechat_qr_identity``.
USER_KEY = "user_key"
#: Its foreign key constraint.
FOREIGN_KEY_NAME = "fk_wechat_qr_identity_user_key"
#: SQLite only: the trigger on the user table that deletes a deleted user's identities.
TRIGGER_NAME = "wechat_qr_identity_user_deleted"
#: The setting that turns the foreign key off.
SETTING_KEY = "WECHAT_QR_USER_FOREIGN_KEY"


def referenced_user_column(user_model: t.Any, enabled: bool) -> sa.Column[t.Any] | None:
    """The user table's primary key column the identities refer to, or ``None`` (said once
    in the log, at INFO, when the host did not turn it off itself)."""
    column, reason = _user_primary_key(user_model)
    if not enabled:
        return None
    if reason is not None:
        log.info("Identities have no foreign key to your users (%s): a user deleted behind "
                 "the ORM leaves identities that the next login of their WeChat removes; "
                 "delete users through the ORM so they go at once.", reason)
    return column


def why_no_foreign_key(user_model: t.Any, enabled: bool) -> str:
    """Why the identities have no foreign key to the users (for ``flask wechat-qr check``)."""
    if not enabled:
        return f"{SETTING_KEY} is off"
    return _user_primary_key(user_model)[1] or "their table was declared without"


def _user_primary_key(model: t.Any) -> tuple[sa.Column[t.Any] | None, str | None]:
    if model is None:
        return None, "the adapter names no user_model"
    table = getattr(model, "__table__", None)
    if not isinstance(table, sa.Table):
        return None, f"{getattr(model, '__name__', model)!r} is not a mapped table"
    key = list(table.primary_key.columns)
    if len(key) != 1:
        return None, f"the {table.fullname!r} table's primary key is not one column"
    return key[0], None


def referenced_column(identity_table: sa.Table) -> sa.Column[t.Any] | None:
    """The user primary key ``identity_table``'s guard column refers to, if it has one."""
    column = identity_table.c.get(USER_KEY)
    if column is None:
        return None
    return next(iter(column.foreign_keys)).column


def sqlite_trigger(identity_table: sa.Table, dialect: sa.Dialect) -> str:
    """``CREATE TRIGGER``: deleting a user row deletes its identities (SQLite only)."""
    user_column = referenced_column(identity_table)
    assert user_column is not None, "no guard column"
    quote = dialect.identifier_preparer.quote
    return (f"CREATE TRIGGER IF NOT EXISTS {quote(TRIGGER_NAME)} AFTER DELETE ON "
            f"{quote(user_column.table.name)} FOR EACH ROW BEGIN DELETE FROM "
            f"{quote(identity_table.name)} WHERE {quote(USER_KEY)} = "
            f"OLD.{quote(user_column.name)}; END")


def restore_sqlite_trigger(engine: sa.Engine, identity_table: sa.Table,
                           before_connecting: t.Callable[[], object] = lambda: None) -> None:
    """SQLite: make the trigger again where it went missing, once per engine and process.

    An Alembic batch migration of the host's user table (copy, drop, rename) drops the
    trigger with the old table; until the next ``flask wechat-qr db upgrade`` a raw-SQL
    delete would then leave identities for the next user given the same id. Said once.
    ``before_connecting`` runs before it opens a connection of its own (a request's reads
    give theirs back first: a pool of one connection would wait for itself).
    """
    if engine in _trigger_checked:  # every request of the blueprint asks: answer at once
        return
    _trigger_checked.add(engine)
    user_column = referenced_column(identity_table)
    if (engine.dialect.name != "sqlite" or user_column is None
            or _across_sqlite_databases(user_column.table, identity_table) is not None):
        return
    before_connecting()
    with engine.begin() as connection:
        inspector = sa.inspect(connection)
        if not (inspector.has_table(user_column.table.name)
                and inspector.has_table(identity_table.name)
                and USER_KEY in {c["name"] for c in inspector.get_columns(identity_table.name)}):
            return  # not upgraded yet: `db upgrade` makes everything
        if connection.execute(sa.text(
                "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = :name"),
                {"name": TRIGGER_NAME}).first() is None:
            connection.exec_driver_sql(sqlite_trigger(identity_table, connection.dialect))
            log.warning("The SQLite trigger %s that deletes a deleted user's WeChat identities "
                        "was missing (a batch migration of your user table drops it) and has "
                        "been made again. Run `flask wechat-qr db upgrade` after your own "
                        "migrations.", TRIGGER_NAME)


class SqliteTriggerCheck:
    """:func:`restore_sqlite_trigger` for one app's identity table, which every request of
    the blueprint asks for: after the app's first, ``done`` answers without looking up the
    engine (the app's engines are made once, by ``db.init_app``)."""

    __slots__ = ("_db", "_table", "done")

    def __init__(self, db: SQLAlchemy, identity_table: sa.Table) -> None:
        self._db = db
        self._table = identity_table
        self.done = False

    def run(self, before_connecting: t.Callable[[], object]) -> None:
        restore_sqlite_trigger(engine_of(self._db, self._table), self._table,
                               before_connecting)
        self.done = True


#: MariaDB's and MySQL's storage engines that keep foreign keys. The others (MyISAM, a legacy
#: site's default before MySQL 5.5; Aria, MEMORY...) refuse a foreign key to their table
#: (errno 150) and, for one of theirs, accept it and drop it.
FOREIGN_KEY_ENGINES = frozenset({"innodb", "ndbcluster"})


@dataclass(frozen=True)
class ForeignKeyBlocker:
    """Why a database cannot keep the identities' foreign key (MariaDB and MySQL: a table
    of it whose storage engine keeps none, tables of two engines, a partitioned table;
    SQLite: a user table in another attached database), and what makes it possible."""

    reason: str
    fix: str


def foreign_key_blocker(connection: sa.Connection, identity_table: sa.Table
                        ) -> ForeignKeyBlocker | None:
    """What keeps the database from having the identities' foreign key, or ``None``: on any
    database a user table not made yet (one on a metadata of its own, made after the
    extension's); on SQLite a user table in another database file (attached); on MariaDB
    and MySQL storage engines and partitions (the user table looked at first). The
    identity table not made yet is read as it will be made: its engine option, or the
    server's default engine, unpartitioned."""
    user_column = referenced_column(identity_table)
    if user_column is None:
        return None
    upgrade = "then run `flask wechat-qr db upgrade`, which adds the foreign key"
    user_table = user_column.table
    inspector = sa.inspect(connection, raiseerr=False)  # None: a mock engine's
    if inspector is not None and not inspector.has_table(user_table.name,
                                                         schema=user_table.schema):
        # A user model on a metadata of its own (Flask-AppBuilder's) whose table is made
        # after the extension's: no database takes a key to a table it does not have.
        return ForeignKeyBlocker(f"{user_table.fullname} does not exist yet",
                                 f"make it (your app's own tables first), {upgrade}")
    if connection.dialect.name == "sqlite":
        return _across_sqlite_databases(user_table, identity_table)
    if connection.dialect.name not in MYSQL_DIALECTS:
        return None
    format_table = connection.dialect.identifier_preparer.format_table
    engines = {}
    for table in (user_column.table, identity_table):
        engine, partitioned = _storage(connection, table)
        if engine is None and table is identity_table:
            engine = (table.dialect_options[connection.dialect.name].get("engine")
                      or table.dialect_options["mysql"].get("engine")
                      or _default_engine(connection))
        if engine is None:
            continue
        if str(engine).lower() not in FOREIGN_KEY_ENGINES:
            return ForeignKeyBlocker(
                f"{table.fullname} is a {engine} table, and only InnoDB tables keep foreign keys",
                f"ALTER TABLE {format_table(table)} ENGINE=InnoDB (InnoDB also gives it "
                f"transactions), {upgrade}")
        if partitioned:
            return ForeignKeyBlocker(
                f"{table.fullname} is partitioned, and partitioned tables keep no foreign keys",
                f"set {SETTING_KEY} = False (deleting a user through the ORM still deletes "
                "their identities), or remove the partitioning and run `flask wechat-qr db "
                "upgrade`")
        engines[table.name] = str(engine)
    if len({engine.lower() for engine in engines.values()}) > 1:
        user_engine = engines[user_column.table.name]
        return ForeignKeyBlocker(
            f"{identity_table.name} is a {engines[identity_table.name]} table and "
            f"{user_column.table.fullname} a {user_engine} one, and a foreign key joins tables "
            "of one engine",
            f"ALTER TABLE {format_table(identity_table)} ENGINE={user_engine}, {upgrade}")
    return None


def _across_sqlite_databases(user_table: sa.Table, identity_table: sa.Table
                             ) -> ForeignKeyBlocker | None:
    """SQLite: a user table in another database file than the identities' (``ATTACH
    DATABASE ... AS users``, the model's ``schema="users"``) can have neither the foreign
    key nor the trigger: SQLite looks a foreign key's table up in the database of the
    table that declares it, and a trigger's statements in the trigger's own database."""
    def database(table: sa.Table) -> str:
        return table.schema or "main"

    if database(user_table) == database(identity_table):
        return None
    return ForeignKeyBlocker(
        f"{user_table.fullname} is in the SQLite database attached as "
        f"{database(user_table)!r} and {identity_table.name} in {database(identity_table)!r}, "
        "and SQLite keeps no foreign key (nor trigger) from one database file to another",
        f"set {SETTING_KEY} = False (deleting a user through the ORM still deletes their "
        "identities), or keep your user table in the main database")


def _default_engine(connection: sa.Connection) -> str | None:
    """The engine the server gives a table made without one."""
    result = connection.execute(sa.text("SELECT @@default_storage_engine"))
    return None if result is None else t.cast("str | None", result.scalar())


def storage_engine(connection: sa.Connection, table: sa.Table) -> str | None:
    """MariaDB and MySQL: the storage engine of ``table``, ``None`` if it does not exist."""
    return _storage(connection, table)[0]


def _storage(connection: sa.Connection, table: sa.Table) -> tuple[str | None, bool]:
    """The storage engine of ``table`` (``None`` if it does not exist) and whether it is
    partitioned."""
    result = connection.execute(sa.text(
        "SELECT engine, create_options FROM information_schema.tables WHERE table_schema = "
        "COALESCE(:schema, DATABASE()) AND table_name = :table"),
        {"schema": table.schema, "table": table.name})
    row = result.first() if result is not None else None  # None: a mock engine's
    if row is None or row[0] is None:
        return None, False
    return str(row[0]), "partitioned" in str(row[1] or "").lower()


def user_key_type(connection: sa.Connection, table: sa.Table) -> t.Any:
    """The type of the guard column as this database must declare it (``db upgrade`` and
    ``db.create_all()`` alike): the model's, but on MariaDB and MySQL a text key in the user
    column's own character set and collation, which the database knows and the model may
    not. Without them the foreign key is refused (errno 150, "incorrectly formed") wherever
    the user table's character set differs from the database's default: an old latin1
    table in a database made utf8mb4 since."""
    model_type = table.c[USER_KEY].type
    user_column = referenced_column(table)
    if (connection.dialect.name not in MYSQL_DIALECTS or user_column is None
            or not isinstance(model_type, (sa.String, sa.Uuid))):
        return model_type  # an integer key has no character set
    result = connection.execute(sa.text(
        "SELECT data_type, character_maximum_length, character_set_name, collation_name "
        "FROM information_schema.columns WHERE table_schema = COALESCE(:schema, DATABASE()) "
        "AND table_name = :table AND column_name = :column"),
        {"schema": user_column.table.schema, "table": user_column.table.name,
         "column": user_column.name})
    row = result.first() if result is not None else None  # None: a mock engine's
    if row is None or row[2] is None or row[0] not in ("char", "varchar"):
        return model_type  # no such column yet, or one of another type: nothing to match
    text_type = mysql.CHAR if row[0] == "char" else mysql.VARCHAR
    return text_type(int(row[1]), charset=row[2], collation=row[3])


def with_the_identity_table(identity_table: sa.Table) -> None:
    """What ``db.create_all()`` does with the identity table beyond its model: on SQLite the
    trigger, made after the table (the user table comes first: the foreign key orders
    them); on MariaDB and MySQL the guard column declared as :func:`user_key_type` says, in
    that one ``CREATE TABLE`` only (the mapped column keeps the model's type, which converts
    the values, and other databases never see the other)."""
    user_column = referenced_column(identity_table)
    if user_column is None:
        return

    def before_create(target: sa.Table, connection: sa.Connection, **_kw: t.Any) -> None:
        key = target.c[USER_KEY]
        if connection.dialect.name in MYSQL_DIALECTS:
            declared = {**(_declared_types.get() or {}), key: user_key_type(connection, target)}
            _declared_types.set(declared)
        constraint = t.cast(sa.ForeignKeyConstraint, next(iter(key.foreign_keys)).constraint)
        blocked = foreign_key_blocker(connection, target)
        # decided afresh for each CREATE TABLE (one that failed never reached after_create)
        others = (_omitted_foreign_keys.get() or set()) - {constraint}
        _omitted_foreign_keys.set(others | {constraint} if blocked else others)
        if blocked is not None:
            log.warning("%s made without its foreign key to %s.%s: %s. Deleting a user "
                        "through the ORM still deletes their WeChat identities; one "
                        "deleted with raw SQL leaves them for the next user given the "
                        "same id. Fix: %s.", target.name, user_column.table.fullname,
                        user_column.name, blocked.reason, blocked.fix)

    def after_create(target: sa.Table, connection: sa.Connection, **_kw: t.Any) -> None:
        declared = _declared_types.get() or {}
        if target.c[USER_KEY] in declared:
            _declared_types.set({column: type_ for column, type_ in declared.items()
                                 if column is not target.c[USER_KEY]})
        omitted = _omitted_foreign_keys.get() or set()
        if any(constraint.table is target for constraint in omitted):
            _omitted_foreign_keys.set({constraint for constraint in omitted
                                       if constraint.table is not target})
        if connection.dialect.name == "sqlite" and _across_sqlite_databases(
                user_column.table, target) is None and sa.inspect(connection).has_table(
                user_column.table.name):
            connection.exec_driver_sql(sqlite_trigger(target, connection.dialect))

    sa.event.listen(identity_table, "before_create", before_create)
    sa.event.listen(identity_table, "after_create", after_create)


#: Guard columns being created on MariaDB or MySQL, and the type each is declared with
#: (:func:`with_the_identity_table`), in this thread's (context's) ``CREATE TABLE`` only.
_declared_types: contextvars.ContextVar[dict[sa.Column[t.Any], t.Any] | None] = \
    contextvars.ContextVar("wechat_qr_declared_user_key_types", default=None)


#: Foreign keys left out of the identity table's ``CREATE TABLE`` in this thread (context):
#: the database cannot keep them (:func:`foreign_key_blocker`).
_omitted_foreign_keys: contextvars.ContextVar[set[sa.ForeignKeyConstraint] | None] = \
    contextvars.ContextVar("wechat_qr_omitted_foreign_keys", default=None)


#: A host's own ``@compiles(ForeignKeyConstraint)`` registered before this module was
#: imported: SQLAlchemy keeps one per dialect, so the extension's calls it rather than
#: replacing it. (One registered later replaces the extension's: it must leave out what
#: :data:`_omitted_foreign_keys` holds itself.)
_earlier_foreign_key_compiler: t.Any = getattr(
    sa.ForeignKeyConstraint.__dict__.get("_compiler_dispatcher"), "specs", {}).get("default")


@compiles(sa.ForeignKeyConstraint)
def _foreign_key_constraint(constraint: sa.ForeignKeyConstraint, compiler: t.Any,
                            **kw: t.Any) -> str | None:
    """A foreign key of ``CREATE TABLE``; none where it is omitted (``None`` leaves it out)."""
    if constraint in (_omitted_foreign_keys.get() or ()):
        return None
    if _earlier_foreign_key_compiler is not None:
        return t.cast("str | None", _earlier_foreign_key_compiler(constraint, compiler, **kw))
    return t.cast(str, compiler.visit_foreign_key_constraint(constraint, **kw))


@compiles(CreateColumn, "mysql")
@compiles(CreateColumn, "mariadb")
def _create_column(create: CreateColumn, compiler: t.Any, **kw: t.Any) -> str:
    """A column of ``CREATE TABLE``, the guard column with its declared type (nothing else
    changes: the type is the column's for the time it takes to render it)."""
    column = create.element
    declared = (_declared_types.get() or {}).get(column) if isinstance(column, sa.Column) \
        else None
    if declared is None:
        return t.cast(str, compiler.visit_create_column(create, **kw))
    model_type = column.type
    column.type = declared
    try:
        return t.cast(str, compiler.visit_create_column(create, **kw))
    finally:
        column.type = model_type


def forget_on_bulk_delete(db: SQLAlchemy, user_model: t.Any, prepare: Prepare, key: int
                          ) -> None:
    """A bulk ``DELETE`` of users through ``db.session`` also deletes their identities, in
    its transaction (the ORM's ``after_delete`` sees only ``session.delete``): ``prepare``
    looks at the statement before it runs and gives what to do once it has run, so a
    statement the database (or SQLAlchemy) refuses loses no identity. Once per ``db``, user
    model and ``key`` (the identity table), however many apps share them."""
    if user_model is None:
        return
    watched = _watched_sessions.setdefault(db, set())
    if (id(user_model), key) in watched:
        return
    watched.add((id(user_model), key))

    # SQLAlchemy keeps a Session class's listeners in a weak dictionary keyed by the class:
    # a listener referring to the db (``prepare`` does) would keep the db, its Session class
    # and every model on it for ever. The db keeps what the listener needs (in its metadata's
    # ``info``) and the listener holds it weakly.
    watch = _BulkDeleteWatch(user_model.__table__, prepare)
    db.metadata.info.setdefault(_WATCHES_KEY, []).append(watch)
    watch_ref = weakref.ref(watch)

    def around_bulk_delete(state: ORMExecuteState) -> sa.Result[t.Any] | None:
        statement = state.statement
        if not (statement.is_dml and statement.is_delete):  # most are SELECTs: one look
            return None
        # ``select(User).from_statement(delete(User).returning(User))`` wraps its DELETE.
        delete = t.cast(sa.Delete, statement.element if isinstance(
            statement, sa.orm.FromStatement) else statement)
        watch = watch_ref()
        if watch is None or not delete.table.is_derived_from(watch.user_table):
            return None
        then = watch.prepare(state, delete)
        result = state.invoke_statement()
        if then is not None:
            then()
        return result

    sa.event.listen(db.session, "do_orm_execute", around_bulk_delete)


def key_identities_on_flush(db: SQLAlchemy, identity_model: t.Any,
                            key_for: t.Callable[[str], t.Any], key: int) -> None:
    """An identity written through ``db.session`` by anyone but the extension (a
    Flask-Admin ``ModelView``, a script) names its user by ``user_id`` alone: at flush, a
    new identity without ``user_key``, or one whose ``user_id`` changed and ``user_key`` did
    not, gets the ``user_key`` of the user ``user_id`` names (``key_for``), so deleting a
    user deletes the identities that are theirs now, and no others. Once per ``db`` and
    ``key`` (the identity table)."""
    if USER_KEY not in identity_model.__table__.c:
        return
    watched = _keyed_sessions.setdefault(db, set())
    if key in watched:
        return
    watched.add(key)
    # Held weakly by the listener, as forget_on_bulk_delete's (see there).
    watch = _FlushWatch(identity_model, key_for)
    db.metadata.info.setdefault(_WATCHES_KEY, []).append(watch)
    watch_ref = weakref.ref(watch)

    def before_flush(session: sa.orm.Session, _context: t.Any, _instances: t.Any) -> None:
        watch = watch_ref()
        if watch is None:
            return
        for identity in [*session.new, *session.dirty]:
            if not isinstance(identity, watch.identity_model):
                continue
            state = sa.inspect(identity)
            if state.attrs[USER_KEY].history.has_changes():
                continue  # given with the user (the extension's own writes)
            if not state.pending and not state.attrs.user_id.history.has_changes():
                continue  # a new one without it, or one moved: keyed below
            with session.no_autoflush:
                setattr(identity, USER_KEY, watch.key_for(identity.user_id))

    sa.event.listen(db.session, "before_flush", before_flush)


@dataclass(frozen=True)
class _FlushWatch:
    """What :func:`key_identities_on_flush`'s listener needs."""

    identity_model: t.Any
    key_for: t.Callable[[str], t.Any]


@dataclass(frozen=True)
class _BulkDeleteWatch:
    """What :func:`forget_on_bulk_delete`'s listener needs: the user table and ``prepare``."""

    user_table: sa.Table
    prepare: Prepare


#: Where a db keeps its :class:`_BulkDeleteWatch` objects (its metadata's ``info``).
_WATCHES_KEY = "flask_wechat_qr.bulk_delete_watches"
_watched_sessions: weakref.WeakKeyDictionary[t.Any, set[tuple[int, int]]] = (
    weakref.WeakKeyDictionary())
_keyed_sessions: weakref.WeakKeyDictionary[t.Any, set[int]] = weakref.WeakKeyDictionary()
_trigger_checked: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
