"""The identities' foreign key to the host's user table, kept outside the numbered revisions.

It refers to a table the extension does not own, whose key type only the host knows and
which may not exist yet when the extension's revisions run (a host often upgrades the
extension before its own migrations). So :func:`flask_wechat_qr.migrations.upgrade` adds it
after the revisions, once the user table exists, and every later upgrade puts back what is
missing: the ``user_key`` column and its index, the foreign key (``ON DELETE CASCADE``) and,
on SQLite, the trigger that does the cascade there (a batch migration of the user table
drops it). Rows linked before get their ``user_key`` from the adapter's ``load_user``;
rows whose user is gone (stale) are deleted, as their next login would have done.
"""

from __future__ import annotations

import typing as t
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa

from ..user_key import (
    FOREIGN_KEY_NAME,
    TRIGGER_NAME,
    USER_KEY,
    ForeignKeyBlocker,
    foreign_key_blocker,
    referenced_column,
    sqlite_trigger,
    user_key_type,
    why_no_foreign_key,
)

if t.TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import ReflectedForeignKeyConstraint

    from ..runtime import Runtime


@dataclass(frozen=True)
class ForeignKeyStatus:
    """Where the identities' foreign key to the users stands in one database."""

    #: "off" (none wanted), "waiting" (the user table does not exist yet) or "on"
    state: t.Literal["off", "waiting", "on"]
    #: what it refers to ("user.id") or why there is none
    detail: str
    #: what the database still lacks: "column", "index", "foreign key", "trigger",
    #: "user keys" (identities linked before, not filled yet)
    missing: tuple[str, ...] = ()
    #: what :func:`install` added
    added: tuple[str, ...] = ()
    #: identities given their ``user_key``, and stale ones deleted, by :func:`install`
    filled: int = 0
    removed: int = 0
    #: MariaDB and MySQL: what keeps the database from having the foreign key itself (a
    #: MyISAM table, say; then never "missing": no upgrade can add it)
    blocked: ForeignKeyBlocker | None = None
    #: where a foreign key of ``user_key`` refers instead, a table of the same name in
    #: another schema, say ("user.id"): :func:`install` replaces it
    elsewhere: tuple[str, ...] = ()


def status(connection: sa.Connection, runtime: Runtime) -> ForeignKeyStatus:
    """The status, reading the database only."""
    table = runtime.models.Identity.__table__
    found = _applicable(connection, runtime)
    if found.state != "on":
        return found
    blocked = foreign_key_blocker(connection, table)
    missing = _missing(connection, table, blocked)
    if "column" not in missing and connection.execute(
            sa.select(sa.func.count()).select_from(table).where(
                table.c[USER_KEY].is_(None))).scalar():
        missing.append("user keys")
    elsewhere = tuple(target for _name, target in _keys_elsewhere(connection, table))
    return ForeignKeyStatus("on", found.detail, tuple(missing), blocked=blocked,
                            elsewhere=elsewhere)


def install(connection: sa.Connection, runtime: Runtime) -> ForeignKeyStatus:
    """Add what is missing, in the caller's transaction (after the revisions)."""
    table = runtime.models.Identity.__table__
    found = _applicable(connection, runtime)
    if found.state != "on":
        return found
    blocked = foreign_key_blocker(connection, table)
    missing = _missing(connection, table, blocked)
    elsewhere = _keys_elsewhere(connection, table) if "foreign key" in missing else []
    # Users are looked up before any write: on SQLite the adapter reads through another
    # connection, which a write lock held here would shut out. Keys kept for a table the
    # foreign key referred to instead are looked up again, in the user table.
    keys = _user_keys(connection, runtime, table,
                      whole_table="column" in missing or bool(elsewhere))
    operations = _operations(connection)
    key_type = user_key_type(connection, table)
    with trigger_set_aside(connection, runtime):
        if "column" in missing or "index" in missing:
            with operations.batch_alter_table(table.name, schema=table.schema) as batch:
                if "column" in missing:
                    batch.add_column(sa.Column(USER_KEY, key_type, nullable=True))
                if "index" in missing:
                    batch.create_index(_index_name(table), [USER_KEY])
        stale = [row for row, key in keys.items() if key is None]
        filled = [{"row": row, "key": key} for row, key in keys.items() if key is not None]
        if filled:
            connection.execute(sa.update(table).where(table.c.id == sa.bindparam("row"))
                               .values({USER_KEY: sa.bindparam("key")}), filled)
        if stale:
            connection.execute(sa.delete(table).where(table.c.id.in_(stale)))
        if "foreign key" in missing:
            user_column = t.cast("sa.Column[t.Any]", referenced_column(table))
            with operations.batch_alter_table(table.name, schema=table.schema) as batch:
                for name, _target in elsewhere:
                    batch.drop_constraint(name, type_="foreignkey")
                if key_type is not table.c[USER_KEY].type and "column" not in missing:
                    # made by create_all in the identity table's character set
                    batch.alter_column(USER_KEY, type_=key_type, existing_nullable=True)
                batch.create_foreign_key(FOREIGN_KEY_NAME, user_column.table.name,
                                         [USER_KEY], [user_column.name], ondelete="CASCADE",
                                         referent_schema=user_column.table.schema)
    if "trigger" in missing:
        connection.exec_driver_sql(sqlite_trigger(table, connection.dialect))
    return ForeignKeyStatus("on", found.detail, added=tuple(missing),
                            filled=len(filled), removed=len(stale), blocked=blocked,
                            elsewhere=tuple(target for _name, target in elsewhere))


@contextmanager
def trigger_set_aside(connection: sa.Connection, runtime: Runtime) -> Iterator[None]:
    """SQLite: the trigger is dropped for the block and made again after it. SQLite
    rebuilds a table to alter it (Alembic's batch mode: copy, drop, rename), and renaming
    fails while a trigger names a table that is, for that moment, gone."""
    table = runtime.models.Identity.__table__
    dropped = connection.dialect.name == "sqlite" and _has_trigger(connection)
    if dropped:
        connection.exec_driver_sql(f"DROP TRIGGER {TRIGGER_NAME}")
    yield
    if dropped and sa.inspect(connection).has_table(table.name) and USER_KEY in {
            c["name"] for c in sa.inspect(connection).get_columns(table.name)}:
        connection.exec_driver_sql(sqlite_trigger(table, connection.dialect))


def _has_trigger(connection: sa.Connection) -> bool:
    return connection.execute(sa.text(
        "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = :name"),
        {"name": TRIGGER_NAME}).first() is not None


def _applicable(connection: sa.Connection, runtime: Runtime) -> ForeignKeyStatus:
    table = runtime.models.Identity.__table__
    user_column = referenced_column(table)
    if user_column is None:
        return ForeignKeyStatus("off", why_no_foreign_key(
            runtime.adapter.user_model, runtime.settings.user_foreign_key))
    user_table = user_column.table
    detail = f"{user_table.fullname}.{user_column.name}"
    inspector = sa.inspect(connection)
    if not inspector.has_table(table.name, schema=table.schema):
        return ForeignKeyStatus("waiting", detail, ("table",))
    if not inspector.has_table(user_table.name, schema=user_table.schema):
        return ForeignKeyStatus("waiting", detail)
    return ForeignKeyStatus("on", detail)


def _missing(connection: sa.Connection, table: sa.Table,
             blocked: ForeignKeyBlocker | None) -> list[str]:
    inspector = sa.inspect(connection)
    user_column = t.cast("sa.Column[t.Any]", referenced_column(table))
    missing = []
    if USER_KEY not in {c["name"] for c in inspector.get_columns(table.name, table.schema)}:
        missing.append("column")
    if not any(index["column_names"] == [USER_KEY]
               for index in inspector.get_indexes(table.name, table.schema)):
        missing.append("index")
    if blocked is None and not any(
            _refers_to(inspector, fk, user_column)
            and (fk.get("options") or {}).get("ondelete", "").upper() == "CASCADE"
            for fk in _user_key_constraints(inspector, table)):
        missing.append("foreign key")
    if connection.dialect.name == "sqlite" and blocked is None and not _has_trigger(connection):
        missing.append("trigger")
    return missing


def _user_key_constraints(inspector: sa.Inspector, table: sa.Table
                          ) -> list[ReflectedForeignKeyConstraint]:
    """The foreign keys of ``user_key`` in the database, as reflected: each naming the
    schema of the table it refers to unless that is the connection's default one (on
    PostgreSQL also where the search path finds the table by name: ``search_path=site,
    auth`` with the users in ``auth.user``, which reflected as if in ``site``)."""
    return [fk for fk in inspector.get_foreign_keys(table.name, table.schema,
                                                     postgresql_ignore_search_path=True)
            if fk["constrained_columns"] == [USER_KEY]]


def _refers_to(inspector: sa.Inspector, fk: ReflectedForeignKeyConstraint,
               user_column: sa.Column[t.Any]) -> bool:
    """Whether a reflected foreign key refers to ``user_column``'s table: by name and by
    schema (a site may have ``user`` in two schemas: PostgreSQL's ``public`` and ``auth``,
    two databases of one MariaDB server). A key reflected by :func:`_user_key_constraints`
    names no schema where its table is in the connection's default schema."""
    default = inspector.default_schema_name

    def schema(name: str | None) -> str | None:
        return None if name == default else name

    user_table = user_column.table
    return (fk["referred_table"] == user_table.name
            and schema(fk.get("referred_schema")) == schema(user_table.schema))


def _keys_elsewhere(connection: sa.Connection, table: sa.Table) -> list[tuple[str, str]]:
    """``(name, "table.column")`` of each named foreign key of ``user_key`` that refers to
    another table than the users' (one of the same name in another schema, say)."""
    inspector = sa.inspect(connection)
    user_column = t.cast("sa.Column[t.Any]", referenced_column(table))
    elsewhere = []
    for fk in _user_key_constraints(inspector, table):
        if fk.get("name") and not _refers_to(inspector, fk, user_column):
            target = ".".join(part for part in (fk.get("referred_schema"),
                                                fk["referred_table"]) if part)
            elsewhere.append((t.cast(str, fk["name"]),
                              f"{target}.{', '.join(fk['referred_columns'])}"))
    return elsewhere


def _user_keys(connection: sa.Connection, runtime: Runtime, table: sa.Table, *,
               whole_table: bool) -> dict[int, t.Any]:
    """``{identity row: its user's primary key, or None when the user is gone}`` for the
    rows without ``user_key`` (every row when the column is new)."""
    query = sa.select(table.c.id, table.c.user_id)
    if not whole_table:
        query = query.where(table.c[USER_KEY].is_(None))
    keys: dict[int, t.Any] = {}
    try:
        for row, user_id in connection.execute(query).all():
            user = runtime.adapter.load_user(user_id)
            state = sa.inspect(user, raiseerr=False) if user is not None else None
            keys[row] = state.identity[0] if state is not None and state.identity else None
            if user is not None and keys[row] is None:
                del keys[row]  # a user the database cannot name: leave the row as it is
    finally:
        runtime.db.session.rollback()
    return keys


def _index_name(table: sa.Table) -> str:
    """The index name ``db.create_all()`` gives ``user_key`` (the host's naming convention)."""
    for index in table.indexes:
        if [c.name for c in index.columns] == [USER_KEY]:
            return str(index.name)
    return f"ix_{table.name}_{USER_KEY}"


def _operations(connection: sa.Connection) -> t.Any:
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    return Operations(MigrationContext.configure(connection))
