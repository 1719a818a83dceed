"""The extension's own Alembic migrations, for its own tables only.

They run in their own Alembic environment with their own version table
(``wechat_qr_alembic_version``), so a host's ``flask db migrate`` history never mixes with the
extension's: the host upgrades the extension with ``flask wechat-qr db upgrade`` (or
:func:`upgrade`) and keeps its own migrations for its own tables. A host that prefers one
``db.create_all()`` may still use it; :func:`upgrade` later adopts such tables when they
match the models exactly.

The identities' foreign key to the host's user table is not in the numbered revisions (it
refers to a table the host owns, which may not exist yet): :func:`upgrade` adds it after
them, see :mod:`flask_wechat_qr.migrations.foreign_key`.

Maintainers: after changing :mod:`flask_wechat_qr.models`, write the next revision with
:func:`revision` (autogenerate sees only the extension's tables) and review it;
``tests/test_migrations.py`` fails while the models and the migrations differ.
"""

from __future__ import annotations

import logging
import os
import typing as t
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from flask import Flask, current_app

from ..column_types import MYSQL_DIALECTS
from ..errors import WeChatQRError
from ..model_base import bind_key_of, engine_of
from ..runtime import find_runtime
from ..transactions import with_transactions
from ..user_key import USER_KEY, referenced_column
from . import foreign_key as _foreign_key
from .foreign_key import ForeignKeyStatus

if t.TYPE_CHECKING:
    from alembic.config import Config
    from werkzeug.local import LocalProxy

    from ..models import Models
    from ..runtime import Runtime

log = logging.getLogger("flask_wechat_qr")

__all__ = [
    "VERSION_TABLE",
    "ForeignKeyStatus",
    "MigrationError",
    "SchemaStatus",
    "UpgradeResult",
    "current_revision",
    "foreign_key_status",
    "differences",
    "engine_for",
    "extension_tables",
    "head_revision",
    "host_include_object",
    "is_known_revision",
    "left_on_the_default_bind",
    "revision",
    "schema_status",
    "stamp",
    "upgrade",
]

#: The extension's Alembic version table (not ``alembic_version``, which is the host's).
VERSION_TABLE = "wechat_qr_alembic_version"
#: Every table the extension owns starts with this (the sandbox's dev-only tables too).
TABLE_PREFIX = "wechat_qr_"
#: This directory: ``env.py``, ``script.py.mako`` and ``versions/``.
DIRECTORY = os.path.dirname(os.path.abspath(__file__))
#: PostgreSQL advisory lock that serialises upgrades of several workers starting together.
_LOCK_KEY = zlib.crc32(b"flask_wechat_qr.migrations")
#: MariaDB's and MySQL's named lock for the same (named per database: the lock is the
#: server's), and how long a worker waits for it: a day, as long as any upgrade takes (on
#: PostgreSQL it waits for ever; MariaDB takes no "for ever").
_LOCK_NAME = "flask_wechat_qr.migrations."
_LOCK_WAIT_SECONDS = 24 * 3600


class MigrationError(WeChatQRError):
    """The database cannot be brought to the extension's schema without an operator."""


@dataclass(frozen=True)
class UpgradeResult:
    """What :func:`upgrade` did: the revision before and after, and whether tables made by
    ``db.create_all()`` were adopted (stamped) instead of created."""

    before: str | None
    after: str | None
    adopted: bool = False
    #: the identities' foreign key to the users afterwards (``None``: not looked at, as
    #: with ``sql=True``)
    foreign_key: ForeignKeyStatus | None = None

    @property
    def changed(self) -> bool:
        return self.before != self.after


def extension_tables(models: Models) -> frozenset[str]:
    """The names of the tables these migrations manage (the sandbox's are not among them)."""
    return frozenset(table.name for table in models.tables)


def include_object_for(tables: t.Collection[str]) -> t.Callable[..., bool]:
    """Alembic ``include_object``: only ``tables`` and their columns, indexes, constraints,
    without the foreign key to the users (its column, index and constraint), which is not
    in the revisions."""

    def include_object(obj: t.Any, name: str | None, type_: str, reflected: bool,
                       compare_to: t.Any) -> bool:
        if type_ == "table":
            return name in tables
        table = getattr(obj, "table", None)
        return table is None or (table.name in tables and not _is_user_key(obj, type_))

    return include_object


def _is_user_key(obj: t.Any, type_: str) -> bool:
    """Whether ``obj`` is ``user_key`` or an index or constraint on it."""
    if type_ == "column":
        return bool(obj.name == USER_KEY)
    columns = getattr(obj, "columns", None)
    return columns is not None and USER_KEY in {getattr(c, "name", c) for c in columns}


def include_name_for(tables: t.Collection[str]) -> t.Callable[..., bool]:
    """Alembic ``include_name``: do not even reflect the host's tables."""

    def include_name(name: str | None, type_: str, parent_names: t.Mapping[str, t.Any]) -> bool:
        if type_ == "table":
            return name in tables
        return True

    return include_name


def host_include_object(obj: t.Any, name: str | None, type_: str, reflected: bool,
                        compare_to: t.Any) -> bool:
    """For the host's own Flask-Migrate: leave every ``wechat_qr_*`` table to the extension.

    ``Migrate(app, db, include_object=host_include_object)``; without it the host's
    ``flask db migrate`` would copy the extension's tables into the host's history and want
    to drop ``wechat_qr_alembic_version``.
    """
    if type_ == "table":
        return not (name or "").startswith(TABLE_PREFIX)
    table = getattr(obj, "table", None)
    return table is None or not table.name.startswith(TABLE_PREFIX)


def engine_for(runtime: Runtime) -> sa.Engine:
    """The engine of the extension's tables (those of the user table's bind)."""
    return engine_of(runtime.db, runtime.models.Identity.__table__)


def alembic_config(connection: sa.Connection | None = None,
                   output: t.TextIO | None = None) -> Config:
    """An Alembic config for the extension's script directory (no ``alembic.ini`` needed);
    ``env.py`` runs on ``connection`` (or opens one on the extension's engine)."""
    from alembic.config import Config

    config = Config(output_buffer=output)
    config.set_main_option("script_location", DIRECTORY)
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this version of the extension ships."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the extension ships no migration"
    return head


def is_known_revision(revision: str) -> bool:
    """Whether this version of the extension ships ``revision`` (a newer one may not)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def is_past(current: str, revision: str) -> bool:
    """Whether tables at ``current`` are past ``revision`` already (an earlier revision of
    theirs: an upgrade to it has nothing to do, and never goes back)."""
    from alembic.script import ScriptDirectory
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    if current == revision:
        return False
    try:
        return any(script.revision == revision for script in ScriptDirectory.from_config(
            alembic_config()).iterate_revisions(current, "base"))
    except (CommandError, RevisionError):  # a revision this version does not know
        return False


def current_revision(app: Flask | None = None) -> str | None:
    """The extension's revision in the app's database; ``None`` before the first upgrade."""
    with _app_context(app) as runtime, engine_for(runtime).connect() as connection:
        return _current(connection)


def unversioned_tables(app: Flask | None = None) -> list[str]:
    """The extension's tables in the app's database when no revision is recorded there:
    made by ``db.create_all()``, which :func:`upgrade` adopts when they match."""
    with _app_context(app) as runtime, engine_for(runtime).connect() as connection:
        if _current(connection) is not None:
            return []
        existing = set(sa.inspect(connection).get_table_names())
        return sorted(existing & extension_tables(runtime.models))


@dataclass(frozen=True)
class SchemaStatus:
    """Which of the extension's tables the app's database has, and their revision."""

    #: the recorded revision; ``None`` before the first upgrade (or tables of create_all)
    revision: str | None
    present: tuple[str, ...]
    missing: tuple[str, ...]
    #: ``table.column`` of this version's the tables present lack
    missing_columns: tuple[str, ...] = ()
    #: the revision such tables look like (:func:`revision_made_at`)
    made_at: str | None = None


def schema_status(app: Flask | None = None) -> SchemaStatus:
    """Where the extension's tables stand (what ``flask wechat-qr check`` reports); reads
    only."""
    with _app_context(app) as runtime, engine_for(runtime).connect() as connection:
        missing = runtime.models.missing_tables(connection)
        present = extension_tables(runtime.models).difference(missing)
        missing_columns = runtime.models.missing_columns(connection)
        return SchemaStatus(_current(connection), tuple(sorted(present)), missing,
                            missing_columns,
                            revision_made_at(connection) if missing_columns else None)


def differences(app: Flask | None = None) -> list[t.Any]:
    """Alembic's autogenerate comparison of the database with the extension's models, on
    the extension's tables only: empty when the schema is what the code expects."""
    with _app_context(app) as runtime, engine_for(runtime).connect() as connection:
        return _differences(connection, runtime)


def upgrade(app: Flask | None = None, revision: str = "head", *,
            sql: bool = False, output: t.TextIO | None = None,
            ignore_default_bind: bool = False) -> UpgradeResult:
    """Bring the extension's tables to ``revision`` (``alembic upgrade head``).

    Safe when several workers start at once: on PostgreSQL an advisory lock, on SQLite an
    immediate transaction and on MariaDB and MySQL a named lock make the others wait, then
    find the work done. Tables made by
    ``db.create_all()`` (no version yet) are adopted when they match the models exactly.
    ``sql=True`` writes the SQL to ``output`` instead of running it (offline mode).
    :class:`MigrationError` where the default bind's database has linked WeChat accounts
    that may be this site's, left there by earlier versions (:func:`left_on_the_default_bind`),
    unless ``ignore_default_bind``: they are another app's, and this app's tables are made
    on its user table's bind all the same (recorded there, so it is asked once).
    """
    from alembic import command

    with _app_context(app) as runtime:
        moved_to = None if sql or ignore_default_bind else _left_behind(runtime)
    if moved_to is not None:
        raise MigrationError(_left_behind_message(moved_to))
    with _app_context(app) as runtime, _locked_connection(engine_for(runtime)) as connection:
        before = _current(connection)
        if sql:
            config = alembic_config(connection, output=output)
            command.upgrade(config, f"{before}:{revision}" if before else revision, sql=True)
            return UpgradeResult(before, before)
        adopted = False
        if before is None:
            adopted = _adopt(connection, runtime)
        config = alembic_config(connection)
        progress = _Progress(connection, before)
        config.attributes["on_applied"] = progress.applied
        try:
            with _foreign_key.trigger_set_aside(connection, runtime):
                command.upgrade(config, revision)
        except sa.exc.DBAPIError as error:
            raise progress.stopped(runtime, error) from error
        except Exception:
            progress.undo_failing_revision(runtime)  # a bug, say: the error is its own
            raise
        after = _current(connection)
        try:
            status = _foreign_key.install(connection, runtime) if after is not None else None
        except sa.exc.DBAPIError as error:
            refused = ("the identities' foreign key to your users could not be added: the "
                       f"database refused it ({_first_line(error)})")
            if connection.dialect.name in MYSQL_DIALECTS:  # each revision committed as it ran
                raise MigrationError(f"The extension's tables are at revision {after}, but "
                                     f"{refused}. {_AGAIN}") from error
            raise MigrationError(  # PostgreSQL and SQLite roll the whole run back
                f"The upgrade of the extension's tables stopped after its revisions: "
                f"{refused}; nothing of the upgrade was kept (the database rolled it back). "
                f"{_AGAIN}") from error
        return UpgradeResult(before, after, adopted, status)


def left_on_the_default_bind(app: Flask | None = None) -> str | None:
    """The bind of the extension's tables (the user table's) when its database has no
    linked WeChat account yet and the default bind's database has some that may be this
    site's: where earlier development versions put the tables. Made anew on the bind (or
    found there empty), they leave those accounts unread, and every WeChat user would get a
    new account. ``None`` otherwise: the usual case (one bind), and where the accounts
    there are known to be another app's, whose identities have a foreign key to users of
    that database (earlier versions gave none to users on another bind), or where an
    upgrade already made (or adopted) the tables on the user table's bind (its version
    table is there: the choice was made)."""
    with _app_context(app) as runtime:
        return _left_behind(runtime)


def _left_behind(runtime: Runtime) -> str | None:
    table = runtime.models.Identity.__table__
    key = bind_key_of(table)
    engines = runtime.db.engines
    if key is None or None not in engines or engines[None].url == engines[key].url:
        return None
    if _has_rows(engines[key], table.name) or not _has_rows(engines[None], table.name):
        return None
    with engines[key].connect() as connection:
        if _current(connection) is not None:
            return None
    user_column = referenced_column(table)
    if _tied_to_users_of(engines[None], table.name,
                         None if user_column is None else user_column.table.name):
        return None
    return key


def _tied_to_users_of(engine: sa.Engine, name: str, users: str | None) -> bool:
    """Whether the identities of the table ``name`` in ``engine``'s database have a foreign
    key (``user_key``) to a table of that database: an app's whose users are there. Not
    one to a table named as this site's user table (``users``): this site's own, left
    where its users were before it moved them to a bind of their own."""
    with engine.connect() as connection:
        inspector = sa.inspect(connection)
        return any(fk["constrained_columns"] == [USER_KEY] and fk["referred_table"] != users
                   and inspector.has_table(fk["referred_table"],
                                           schema=fk.get("referred_schema"))
                   for fk in inspector.get_foreign_keys(name))


def _has_rows(engine: sa.Engine, name: str) -> bool:
    """Whether the database has the table ``name`` with a row in it."""
    with engine.connect() as connection:
        return bool(sa.inspect(connection).has_table(name) and connection.execute(
            sa.select(sa.literal(1)).select_from(sa.table(name)).limit(1)).first())


def left_behind_fix(bind_key: str, command: str = "upgrade") -> str:
    """How to go on: move this site's tables to the user table's bind, or say they are
    another app's (with ``flask wechat-qr db <command> --ignore-default-bind``: the
    command that was refused, ``upgrade`` or ``stamp REVISION``)."""
    made = ("made" if command == "upgrade"
            else f"recorded as {command.removeprefix('stamp ')}")
    return (f"if they are this site's, move the wechat_qr_* tables (wechat_qr_alembic_version "
            f"too, not the sandbox's) with their rows from the default bind's database to "
            f"the {bind_key!r} bind's, your user table's (drop any empty ones there first), "
            "then run `flask wechat-qr db upgrade`, which adds the identities' foreign key "
            "to your users; if they are another app's (a database your sites share), run "
            f"`flask wechat-qr db {command} --ignore-default-bind` once: this site's "
            f"tables are {made} on the {bind_key!r} bind and theirs are left as they are")


def _left_behind_message(bind_key: str, command: str = "upgrade") -> str:
    return ("The extension's tables live with your user table, on the bind "
            f"{bind_key!r}, whose database has no linked WeChat account yet; your default "
            "bind's database has WeChat accounts linked in a wechat_qr_identity table that "
            "ties them to no user table there (or to one named as yours), as earlier "
            "development versions of Flask-WeChat-QR left this site's (or this site did, "
            "before its users moved to that bind). If they are this site's, "
            f"{'upgrading' if command == 'upgrade' else 'recording a revision on that bind'} "
            "now would leave them unread, and every WeChat user would get a new account. "
            f"Nothing was changed. Fix: {left_behind_fix(bind_key, command)}.")


class _Progress:
    """How far an upgrade got: the revision each applied step recorded and the tables there
    were after it, to say where a refused upgrade stopped and undo what its failing
    revision made."""

    def __init__(self, connection: sa.Connection, before: str | None) -> None:
        self.connection = connection
        self.before = before
        self.done: str | None = before
        self.tables = self._tables()

    def _tables(self) -> set[str]:
        return set(sa.inspect(self.connection).get_table_names())

    def applied(self, revision: str) -> None:
        """After each revision, its version row written. MariaDB and MySQL: committed now,
        with the DDL they committed by themselves, so that the record never lags behind
        the tables whatever stops the run later."""
        self.done = revision
        if self.connection.dialect.name in MYSQL_DIALECTS:
            self.connection.commit()
            self.tables = self._tables()

    def stopped(self, runtime: Runtime, error: sa.exc.DBAPIError) -> MigrationError:
        """What to say of the refusal. PostgreSQL and SQLite roll the run back. MariaDB and
        MySQL commit each DDL statement: the revisions applied stay (recorded as each ended),
        and the empty tables the failing revision had made are dropped again, so that the
        same command, once the cause is mended, runs that revision from its start."""
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(alembic_config())
        following = [r.revision for r in script.iterate_revisions("heads", self.done or "base")
                     if r.revision != self.done]
        at = following[-1] if following else "head"
        undone = "nothing of it was kept (the database rolled it back)"
        if self.connection.dialect.name in MYSQL_DIALECTS:
            undone = self.undo_failing_revision(runtime, lost=error.connection_invalidated)
        return MigrationError(
            f"The upgrade of the extension's tables stopped at revision {at}: the database "
            f"refused it ({_first_line(error)}); {undone}. {_AGAIN}")

    def undo_failing_revision(self, runtime: Runtime, *, lost: bool = False) -> str:
        """MariaDB and MySQL: roll back what the failing revision left pending and drop the
        empty tables it made; what was undone, said. PostgreSQL and SQLite: nothing to do
        (their transaction is rolled back whole)."""
        if self.connection.dialect.name not in MYSQL_DIALECTS:
            return ""
        kept = (f"revisions up to {self.done} stay applied" if self.done != self.before
                else "no revision was applied")
        if lost:
            # A new connection would not hold the upgrade's lock: another worker's upgrade
            # may be making tables now. Nothing is touched.
            return f"{kept}; the connection was lost, so nothing else was undone"
        connection = self.connection
        quote = connection.dialect.identifier_preparer.quote
        dropped = []
        try:
            connection.rollback()  # the failing revision's pending rows, if any
            made = (self._tables() - self.tables) \
                & {*extension_tables(runtime.models), VERSION_TABLE}
            for name in sorted(made):
                if connection.exec_driver_sql(
                        f"SELECT 1 FROM {quote(name)} LIMIT 1").first() is None:
                    connection.exec_driver_sql(f"DROP TABLE {quote(name)}")
                    dropped.append(name)
            connection.commit()
        except sa.exc.SQLAlchemyError as cleanup:
            return (f"{kept}; undoing what the failing revision made failed too "
                    f"({type(cleanup).__name__}): see `flask wechat-qr check`")
        if not dropped:
            return kept
        return f"{kept}; the tables the failing revision had made are dropped again " \
               f"({', '.join(dropped)})"


#: How a refused upgrade's error ends.
_AGAIN = "Mend the cause and run `flask wechat-qr db upgrade` again."


def _first_line(error: sa.exc.DBAPIError) -> str:
    """The database's own words (the first line: never the SQL or its parameters)."""
    text = str(error.orig if error.orig is not None else error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def foreign_key_status(app: Flask | None = None) -> ForeignKeyStatus:
    """Where the identities' foreign key to the users stands in the app's database (what
    ``flask wechat-qr check`` reports); reads only."""
    with _app_context(app) as runtime, engine_for(runtime).connect() as connection:
        return _foreign_key.status(connection, runtime)


def stamp(app: Flask | None = None, revision: str = "head", *,
          ignore_default_bind: bool = False) -> UpgradeResult:
    """Record ``revision`` without running it: for tables made outside these migrations.

    Refused (:class:`MigrationError`) as :func:`upgrade` refuses, where the default bind's
    database has linked WeChat accounts that may be this site's
    (:func:`left_on_the_default_bind`), unless ``ignore_default_bind``: the revision
    recorded on the user table's bind says the choice was made, and neither ``upgrade``
    nor ``flask wechat-qr check`` would ask again. Recording ``base`` (no revision) is
    never refused."""
    from alembic import command

    with _app_context(app) as runtime:
        moved_to = (None if ignore_default_bind or revision == "base"
                    else _left_behind(runtime))
    if moved_to is not None:
        raise MigrationError(_left_behind_message(moved_to, f"stamp {revision}"))
    with _app_context(app) as runtime, _locked_connection(engine_for(runtime)) as connection:
        before = _current(connection)
        command.stamp(alembic_config(connection), revision, purge=True)
        return UpgradeResult(before, _current(connection))


def revision(app: Flask, message: str, *, autogenerate: bool = True) -> t.Any:
    """Maintainers only: write the next revision into this package's ``versions/``,
    compared against ``app``'s database (which must be at head)."""
    from alembic import command
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    rev_id = f"{int(heads[0]) + 1:04d}" if heads and heads[0].isdigit() else None
    with _app_context(app) as runtime, engine_for(runtime).connect() as connection:
        return command.revision(alembic_config(connection), message=message,
                                autogenerate=autogenerate, rev_id=rev_id)


# --- internals ------------------------------------------------------------------------


@contextmanager
def _app_context(app: Flask | None) -> Iterator[Runtime]:
    """``app``'s context (``env.py`` reads ``current_app``) and the extension's runtime."""
    # Flask types current_app as the app; it is the proxy in front of it.
    target = app if app is not None else t.cast(
        "LocalProxy[Flask]", current_app)._get_current_object()
    with target.app_context():
        runtime = find_runtime(target)
        if runtime is None:
            raise RuntimeError("WeChatQR is not initialised on this app: call init_app first.")
        yield runtime


@contextmanager
def _locked_connection(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection in a transaction that no other upgrade can run beside; committed at
    the end, rolled back (DDL included, on PostgreSQL and SQLite) on an error. MariaDB and
    MySQL commit each DDL statement by itself, so a named lock held by the connection keeps
    the other workers out (without it, one worker's CREATE TABLE failed on the table the
    other had just made, and that worker did not start). In a transaction also where the
    host's engine commits each statement by itself (``isolation_level="AUTOCOMMIT"``):
    there PostgreSQL's lock ended with the statement that took it, every worker but one
    failed, and a failed upgrade kept what it had done."""
    with engine.connect() as connection:
        with_transactions(connection)
        dialect = connection.dialect.name
        if dialect == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        elif dialect == "sqlite":
            connection.begin()
            # pysqlite begins lazily and only before DML; begin for real, and take the write
            # lock now, so the DDL is transactional and a second worker waits here.
            raw = connection.connection.dbapi_connection
            if not getattr(raw, "in_transaction", True):
                connection.exec_driver_sql("BEGIN IMMEDIATE")
        elif dialect in MYSQL_DIALECTS:
            with _named_lock(connection):
                yield connection
                connection.commit()
            return
        yield connection
        connection.commit()


@contextmanager
def _named_lock(connection: sa.Connection) -> Iterator[None]:
    """MariaDB's and MySQL's ``GET_LOCK`` for the upgrade, released at the end whatever
    happened (it belongs to the connection, not to a transaction)."""
    name = connection.execute(sa.text("SELECT LEFT(CONCAT(:prefix, DATABASE()), 64)"),
                              {"prefix": _LOCK_NAME}).scalar()
    if connection.execute(sa.text("SELECT GET_LOCK(:name, :seconds)"),
                          {"name": name, "seconds": _LOCK_WAIT_SECONDS}).scalar() != 1:
        raise MigrationError(
            f"the database would not give the lock {name!r} that keeps two upgrades of the "
            "extension's tables apart (another upgrade held it for a day?); see what holds "
            "it (SELECT IS_USED_LOCK(...)), then run `flask wechat-qr db upgrade` again")
    try:
        yield
    finally:
        try:
            connection.rollback()  # what an error left undone; nothing after a commit
            connection.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": name})
            connection.commit()
        except sa.exc.SQLAlchemyError:
            # The connection is gone (and the lock with it): the upgrade's own error, if
            # any, is the one to see.
            log.warning("could not release the upgrade's lock %r", name, exc_info=True)


def _current(connection: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def _differences(connection: sa.Connection, runtime: Runtime) -> list[t.Any]:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    tables = extension_tables(runtime.models)
    context = MigrationContext.configure(connection, opts={
        "version_table": VERSION_TABLE,
        "compare_type": True,
        "include_object": include_object_for(tables),
        "include_name": include_name_for(tables),
    })
    diffs: list[t.Any] = list(compare_metadata(context, runtime.models.Identity.metadata))
    if connection.dialect.name in MYSQL_DIALECTS:
        diffs += _text_differences(connection, runtime.models.Identity.metadata, tables)
    return diffs


def _text_differences(connection: sa.Connection, metadata: sa.MetaData,
                      tables: t.AbstractSet[str]) -> list[tuple[str, str, str, str, str]]:
    """MariaDB's and MySQL's character sets and collations the columns' types name, as
    ``("modify_charset"|"modify_collation", table, column, found, expected)``: Alembic's
    comparison cannot see them (reflection leaves out what equals the table's default), so
    tables of revision 0005 whose types alone were fixed by hand passed for the head, their
    openids compared without case."""
    found = {(row[0], row[1]): (row[2], row[3]) for row in connection.execute(sa.text(
        "SELECT table_name, column_name, character_set_name, collation_name "
        "FROM information_schema.columns "
        "WHERE table_schema = DATABASE() AND table_name IN :names"
    ).bindparams(sa.bindparam("names", expanding=True)), {"names": sorted(tables)})}
    diffs = []
    for name in sorted(tables):
        for column in metadata.tables[name].columns:
            impl = column.type.dialect_impl(connection.dialect)
            charset, collation = found.get((name, column.name), (None, None))
            for kind, expected, actual in (
                    ("modify_charset", getattr(impl, "charset", None), charset),
                    ("modify_collation", getattr(impl, "collation", None), collation)):
                if expected is not None and actual != expected:
                    diffs.append((kind, name, column.name, str(actual), expected))
    return diffs


def revision_made_at(connection: sa.Connection) -> str | None:
    """The revision whose tables these look like, by the columns each revision added
    (``None`` where they have them all): for tables an earlier version's ``db.create_all()``
    made, which ``db stamp`` records before ``db upgrade`` brings them up to date."""
    inspector = sa.inspect(connection)

    def columns(table: str) -> set[str]:
        if not inspector.has_table(table):
            return set()
        return {column["name"] for column in inspector.get_columns(table)}

    identity = columns("wechat_qr_identity")
    if not identity:
        return None
    if "app" not in identity:
        return "0002" if "account" in columns("wechat_qr_bind_attempt") else "0001"
    if "profile_refreshed_at" not in identity:
        # 0004 adds a table alone: with avatars in it, 0004's; empty (a newer create_all
        # may have made it), 0003's, and 0004 makes it again.
        avatars = inspector.has_table("wechat_qr_avatar") and connection.execute(
            sa.text("SELECT COUNT(*) FROM wechat_qr_avatar")).scalar()
        return "0004" if avatars else "0003"
    return None


def _adopt(connection: sa.Connection, runtime: Runtime) -> bool:
    """Stamp head over tables that ``db.create_all()`` made, if they are exactly head's."""
    from alembic import command

    tables = extension_tables(runtime.models)
    present = tables & set(sa.inspect(connection).get_table_names())
    if not present:
        return False
    diffs = _differences(connection, runtime) if present == tables else []
    if present != tables or diffs:
        missing = ", ".join(sorted(tables - present)) or "none"
        mysql_hint = (
            " On MariaDB and MySQL, tables that db.create_all() made with the version before "
            "0006 (whose newest revision is 0005) are revision 0005 (their FLOAT times and "
            "case-blind openids are what 0006 changes): `flask wechat-qr db stamp 0005`, "
            "then `flask wechat-qr db upgrade`."
            if connection.dialect.name in MYSQL_DIALECTS else "")
        made_at = revision_made_at(connection)
        if made_at is not None:
            raise MigrationError(
                "The extension's tables exist but are not under its migrations, and they are "
                f"an earlier version's: they look like revision {made_at}'s (the columns "
                "later revisions add are not there; db.create_all() adds none to a table "
                f"that exists). Record it: `flask wechat-qr db stamp {made_at}`, then run "
                "`flask wechat-qr db upgrade`.")
        raise MigrationError(
            "The extension's tables exist but are not under its migrations, and they are not "
            f"what this version expects (missing tables: {missing}; differences: "
            f"{len(diffs)}). Bring them to a known revision by hand and record it with "
            "`flask wechat-qr db stamp REVISION`, then run `flask wechat-qr db upgrade`."
            + mysql_hint
        )
    command.stamp(alembic_config(connection), "head")
    return True
