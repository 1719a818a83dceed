"""The extension's own Alembic migrations: exactly its tables, exactly its models, its own
version table, safe to repeat and to run from several workers at once, and the example app
and the ``flask wechat-qr db`` commands built on them.

``test_migrated_schema_matches_the_models`` is the one that fails when someone changes
``models.py`` without writing a migration.
"""

from __future__ import annotations

import datetime
import inspect
import os
import threading
import typing as t

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from flask import Flask
from flask_login import LoginManager, UserMixin
from flask_sqlalchemy import SQLAlchemy
from support import (
    APP_ID,
    APP_SECRET,
    Database,
    app_factory,
    models_of,
    quoted,
    schema_and_rows,
    table,
)

from flask_wechat_qr import WeChatQR, migrations
from flask_wechat_qr.migrations import VERSION_TABLE, MigrationError

#: The newest revision: a new migration changes it here, on purpose.
HEAD = "0006"
EXTENSION_TABLES = {"wechat_qr_identity", "wechat_qr_login_state",
                    "wechat_qr_pending_binding", "wechat_qr_bind_attempt", "wechat_qr_avatar"}
#: The example site's own tables.
SITE_TABLES = {"user", "login_failure", "used_id_token"}
SANDBOX_TABLES = {"wechat_qr_sandbox_qr", "wechat_qr_sandbox_person",
                  "wechat_qr_sandbox_code", "wechat_qr_sandbox_token",
                  "wechat_qr_sandbox_consent", "wechat_qr_sandbox_avatar"}


#: No variable of the developer's shell reaches the example app; no instance folder in the
#: repository.
pytestmark = pytest.mark.usefixtures("example_app_env")


def make_host(url: str, root: t.Any, **config: t.Any) -> Flask:
    """A host site whose own ``user`` and ``note`` tables are on the same ``db`` as the
    extension's, and which creates nothing at startup."""
    db = SQLAlchemy()

    class User(db.Model, UserMixin):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        username = db.Column(db.String(80), unique=True)

    class Note(db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        text = db.Column(db.Text, nullable=False)

    app = Flask("host_app", root_path=str(root))
    app.config.update(TESTING=True, SECRET_KEY="k", SQLALCHEMY_DATABASE_URI=url,
                      WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET, **config)
    db.init_app(app)
    LoginManager(app)
    WeChatQR(app, db=db, user_model=User)
    app.db = db  # type: ignore[attr-defined]
    app.User = User  # type: ignore[attr-defined]
    app.Note = Note  # type: ignore[attr-defined]
    return app


@pytest.fixture
def hosts(database: Database, tmp_path: t.Any) -> t.Iterator[t.Callable[..., Flask]]:
    """``hosts()``: a new host app; ``hosts(url)``: one more on an existing database."""
    counter = iter(range(1000))

    def build(url: str | None = None, **config: t.Any) -> Flask:
        return make_host(url or database.url(f"host{next(counter)}"), tmp_path, **config)

    with app_factory(build) as factory:
        yield factory


@pytest.fixture
def host(hosts: t.Callable[..., Flask]) -> Flask:
    return hosts()


def create_user_table(app: Flask) -> None:
    """The host's own ``user`` table, as its own migrations make it (the identities' foreign
    key refers to it)."""
    db = app.db  # type: ignore[attr-defined]
    with app.app_context():
        db.metadata.create_all(db.engine, tables=[app.User.__table__])  # type: ignore[attr-defined]


def table_names(app: Flask) -> set[str]:
    with app.app_context():
        return set(sa.inspect(app.extensions["sqlalchemy"].engine).get_table_names())


def columns(app: Flask, table: str) -> list[tuple[str, str, bool]]:
    with app.app_context():
        inspector = sa.inspect(app.extensions["sqlalchemy"].engine)
        return [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)]


def version_rows(app: Flask) -> list[str]:
    with app.app_context(), app.extensions["sqlalchemy"].engine.connect() as conn:
        return list(conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())


def only_extension_tables(obj: t.Any, name: str | None, type_: str, reflected: bool,
                          compare_to: t.Any) -> bool:
    """The test's own filter (not the package's), so a bug there cannot hide a difference."""
    if type_ == "table":
        return name in EXTENSION_TABLES
    return getattr(obj, "table", None) is None or obj.table.name in EXTENSION_TABLES


def schema_differences(app: Flask) -> list[t.Any]:
    """Alembic's autogenerate comparison of the database with the models' metadata."""
    db = app.extensions["sqlalchemy"]
    with app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={
            "compare_type": True, "include_object": only_extension_tables,
            "version_table": VERSION_TABLE})
        return list(compare_metadata(context, db.metadata))


# --- the migrations ------------------------------------------------------------------


def test_upgrade_on_an_empty_database_creates_exactly_the_extension_tables(host: Flask) -> None:
    assert table_names(host) == set()
    assert migrations.current_revision(host) is None
    result = migrations.upgrade(host)
    assert (result.before, result.after, result.adopted) == (None, HEAD, False)
    assert table_names(host) == EXTENSION_TABLES | {VERSION_TABLE}
    assert version_rows(host) == [migrations.head_revision()]


def test_migrated_schema_matches_the_models(host: Flask) -> None:
    create_user_table(host)
    migrations.upgrade(host)
    assert schema_differences(host) == []
    assert migrations.differences(host) == []
    # The names the code and the operators rely on, spelled out.
    with host.app_context():
        inspector = sa.inspect(host.extensions["sqlalchemy"].engine)
        uniques = {c["name"]: c["column_names"]
                   for c in inspector.get_unique_constraints("wechat_qr_identity")}
        indexes = {i["name"] for table in EXTENSION_TABLES for i in inspector.get_indexes(table)}
    assert uniques == {"uq_wechat_qr_identity_openid": ["connection", "openid"],
                       "uq_wechat_qr_identity_user": ["connection", "app", "user_id"]}
    assert {"ix_wechat_qr_identity_unionid", "ix_wechat_qr_identity_user_id",
            "ix_wechat_qr_login_state_expires_at", "ix_wechat_qr_pending_binding_expires_at",
            "ix_wechat_qr_bind_attempt_binding_id", "ix_wechat_qr_bind_attempt_address",
            "ix_wechat_qr_bind_attempt_at", "ix_wechat_qr_bind_attempt_account"} <= indexes


def test_the_comparison_notices_a_model_change(host: Flask) -> None:
    """The schema test above can fail: an index missing from the database is reported."""
    create_user_table(host)
    migrations.upgrade(host)
    (unionid,) = (index for index in table(host, "wechat_qr_identity").indexes
                  if index.name == "ix_wechat_qr_identity_unionid")
    with host.app_context(), host.extensions["sqlalchemy"].engine.begin() as conn:
        unionid.drop(conn)  # DROP INDEX in the database's own words (MariaDB: ON its table)
    diffs = schema_differences(host)
    assert [d[0] for d in diffs] == ["add_index"], diffs


def test_the_extension_tables_are_the_models_tables(host: Flask) -> None:
    assert migrations.extension_tables(models_of(host)) == EXTENSION_TABLES


def test_upgrade_twice_is_a_no_op(host: Flask) -> None:
    migrations.upgrade(host)
    host_db = host.db  # type: ignore[attr-defined]
    with host.app_context():
        host_db.session.execute(sa.insert(table(host, "wechat_qr_identity")).values(
            connection="wechat", openid="o1", user_id="1"))
        host_db.session.commit()
    result = migrations.upgrade(host)
    assert (result.before, result.after, result.changed) == (HEAD, HEAD, False)
    assert version_rows(host) == [HEAD]
    assert table_names(host) == EXTENSION_TABLES | {VERSION_TABLE}
    with host.app_context():
        assert host_db.session.execute(sa.text("SELECT openid FROM wechat_qr_identity")
                                       ).scalars().all() == ["o1"]


def test_current_revision_is_head(host: Flask) -> None:
    assert migrations.head_revision() == HEAD
    assert WeChatQR().upgrade_database(host) == HEAD
    assert migrations.current_revision(host) == migrations.head_revision()
    with host.app_context():  # the current app, without passing it
        assert migrations.current_revision() == HEAD


def test_host_tables_are_untouched_and_its_history_is_separate(host: Flask) -> None:
    db = host.db  # type: ignore[attr-defined]
    with host.app_context():
        db.metadata.create_all(db.engine, tables=[host.User.__table__])  # type: ignore[attr-defined]
        db.session.add(host.User(username="alice"))  # type: ignore[attr-defined]
        db.session.commit()
    before = columns(host, "user")
    migrations.upgrade(host)
    names = table_names(host)
    assert "note" not in names  # a host table the host has not created yet stays uncreated
    assert "alembic_version" not in names  # the host's own version table is not ours
    assert columns(host, "user") == before
    with host.app_context():
        assert db.session.execute(sa.text(f"SELECT username FROM {quoted(host, 'user')}")
                                  ).scalars().all() == ["alice"]
        # The host's Flask-Migrate, with the helper, sees only its own tables: nothing of
        # ours to create, and our version table not to drop.
        db.metadata.create_all(db.engine, tables=[host.Note.__table__])  # type: ignore[attr-defined]
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={
                "compare_type": True, "include_object": migrations.host_include_object})
            assert compare_metadata(context, db.metadata) == []
            # Without it, the host's history would pick up the extension's tables.
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert ("remove_table" in {d[0] for d in compare_metadata(context, db.metadata)
                                       if isinstance(d, tuple)})


def test_downgrade_to_base_and_up_again(host: Flask) -> None:
    from alembic import command

    create_user_table(host)
    migrations.upgrade(host)
    with host.app_context(), host.extensions["sqlalchemy"].engine.begin() as conn:
        command.downgrade(migrations.alembic_config(conn), "base")
    assert table_names(host) == {VERSION_TABLE, "user"}  # the host's own table stays
    assert migrations.current_revision(host) is None
    migrations.upgrade(host)
    assert schema_differences(host) == []


def test_tables_made_by_create_all_are_adopted(host: Flask) -> None:
    """A site that used ``db.create_all()`` can switch to the migrations: matching tables
    (the foreign key to the users included) are recorded as head, with their rows."""
    db = host.db  # type: ignore[attr-defined]
    with host.app_context():
        db.create_all()
        db.session.add(host.User(id=1, username="alice"))  # type: ignore[attr-defined]
        db.session.flush()  # SQLAlchemy 2.0.37 (the floor) does not before a Core INSERT
        db.session.execute(sa.insert(table(host, "wechat_qr_identity")).values(
            connection="wechat", openid="o1", user_id="1", user_key=1))
        db.session.commit()
    # Before: `db current` said "none yet" of these tables.
    shown = host.test_cli_runner().invoke(args=["wechat-qr", "db", "current"])
    assert "made by db.create_all(), no revision recorded yet" in shown.output
    assert "adopts them" in shown.output
    result = migrations.upgrade(host)
    assert (result.before, result.after, result.adopted) == (None, HEAD, True)
    assert result.foreign_key is not None and result.foreign_key.added == ()
    assert version_rows(host) == [HEAD]
    assert schema_differences(host) == []
    with host.app_context():
        assert db.session.execute(sa.text("SELECT openid FROM wechat_qr_identity")
                                  ).scalars().all() == ["o1"]


@pytest.mark.parametrize("made_at", ["0003", "0004"])
def test_tables_an_earlier_versions_create_all_made_are_named_and_upgraded(
        host: Flask, made_at: str) -> None:
    """Tables ``db.create_all()`` made on the version of 0003, then this version's
    ``db.create_all()`` (at the site's start) adding the avatar table, empty, and no
    column: ``db upgrade`` refused with "bring them to a known revision by hand", stamping
    0003 then failed on "wechat_qr_avatar already exists", and stamping the newest left
    every login a 500 (an upgrade hunt, session 35). The refusal names the revision they
    look like (0004's where its table holds avatars: a review); stamped so, they upgrade,
    an empty avatar table made again."""
    db = host.db  # type: ignore[attr-defined]
    create_user_table(host)
    migrations.upgrade(host, made_at)  # as that version's create_all left them: no revision
    with host.app_context(), db.engine.begin() as connection:
        connection.execute(sa.text(f"DELETE FROM {VERSION_TABLE}"))
        if made_at == "0004":  # that version stored avatars
            connection.execute(sa.text(
                "INSERT INTO wechat_qr_avatar (" + quoted(host, "key") + ", content_type, "
                "data, created_at) VALUES ('k1', 'image/png', :data, :at)"),
                {"data": b"\x89PNG", "at": datetime.datetime.now(datetime.UTC)})
    with host.app_context():
        db.create_all()  # this version's, at the site's start: the avatar table, empty
    runner = host.test_cli_runner()
    refused = runner.invoke(args=["wechat-qr", "db", "upgrade"])
    assert refused.exit_code != 0
    assert f"look like revision {made_at}'s" in refused.output
    assert f"flask wechat-qr db stamp {made_at}" in refused.output
    checked = runner.invoke(args=["wechat-qr", "check"])
    assert "lack wechat_qr_identity.profile_refreshed_at" in checked.output
    assert f"db stamp {made_at}` (the revision they look like)" in checked.output
    assert runner.invoke(args=["wechat-qr", "db", "stamp", made_at]).exit_code == 0
    upgraded = runner.invoke(args=["wechat-qr", "db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert version_rows(host) == [HEAD]
    assert schema_differences(host) == []


def test_unknown_tables_are_refused_with_what_to_do(host: Flask) -> None:
    db = host.db  # type: ignore[attr-defined]
    create_user_table(host)  # the identities refer to it
    with host.app_context():
        db.metadata.create_all(db.engine, tables=[table(host, "wechat_qr_identity")])
    with pytest.raises(MigrationError, match="wechat_qr_login_state"):
        migrations.upgrade(host)
    assert VERSION_TABLE not in table_names(host)  # rolled back: nothing half done
    result = host.test_cli_runner().invoke(args=["wechat-qr", "db", "upgrade"])
    assert result.exit_code == 1
    assert "flask wechat-qr db stamp" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("engine_options", [{}, {"isolation_level": "AUTOCOMMIT"}],
                         ids=["default", "autocommit"])
def test_several_workers_upgrading_at_once(database: Database, hosts: t.Callable[..., Flask],
                                           engine_options: dict[str, t.Any]) -> None:
    """Workers starting together: one creates the tables, the others wait and find them. Also
    where the site's engine commits each statement by itself (AUTOCOMMIT): there
    PostgreSQL's lock ended with the statement that took it, and every worker but one
    failed."""
    url = database.url("shared")
    apps = [hosts(url, SQLALCHEMY_ENGINE_OPTIONS=engine_options) for _ in range(4)]
    create_user_table(apps[0])
    results: list[t.Any] = []
    barrier = threading.Barrier(len(apps))

    def worker(app: Flask) -> None:
        barrier.wait()
        try:
            results.append(migrations.upgrade(app))
        except Exception as exc:  # reported below
            results.append(exc)

    threads = [threading.Thread(target=worker, args=(app,)) for app in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(isinstance(r, migrations.UpgradeResult) for r in results), results
    assert sorted(r.changed for r in results) == [False, False, False, True]
    assert version_rows(apps[0]) == [HEAD]
    assert schema_differences(apps[0]) == []


HOST_WITH_FLASK_MIGRATE = """
import sys

from flask import Flask
from flask_login import LoginManager, UserMixin
from flask_migrate import Migrate, init, migrate, upgrade
from flask_sqlalchemy import SQLAlchemy

from flask_wechat_qr import WeChatQR
from flask_wechat_qr.migrations import host_include_object

url, directory = sys.argv[1:]
db = SQLAlchemy()


class User(db.Model, UserMixin):
    id = db.Column(db.Integer, primary_key=True)


app = Flask("flask_migrate_host")
app.config.update(SQLALCHEMY_DATABASE_URI=url, WECHAT_QR_APP_ID="wx1111111111111111",
                  WECHAT_QR_APP_SECRET="s")
db.init_app(app)
LoginManager(app)
wechat = WeChatQR(app, db=db, user_model=User)
Migrate(app, db, directory=directory, include_object=host_include_object)
with app.app_context():
    wechat.upgrade_database()
    init(directory)
    migrate(directory, message="site")
    upgrade(directory)
    migrate(directory, message="nothing")
    db.engine.dispose()
"""


def test_a_host_with_flask_migrate_keeps_its_own_history(database: Database,
                                                         tmp_path: t.Any) -> None:
    """The documented ``Migrate(app, db, include_object=host_include_object)``: the host's
    ``flask db migrate`` writes only the host's tables and never sees ours. (In a subprocess:
    Flask-Migrate's ``env.py`` reconfigures logging.)"""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "host.py"
    script.write_text(HOST_WITH_FLASK_MIGRATE)
    url = database.url("flask_migrate")
    directory = tmp_path / "host_migrations"
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, str(script), url, str(directory)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False,
                            env={**os.environ, "PYTHONPATH": str(root)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    revisions = list((directory / "versions").glob("*.py"))
    assert len(revisions) == 1, revisions  # the second migrate found nothing to do
    text = revisions[0].read_text()
    assert "create_table('user'" in text
    assert "wechat_qr" not in text
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            names = set(sa.inspect(conn).get_table_names())
            assert names == EXTENSION_TABLES | {"user", "alembic_version", VERSION_TABLE}
            ours = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars()
            assert list(ours) == [HEAD]
    finally:
        engine.dispose()


# --- the command line ----------------------------------------------------------------


def test_cli_db_upgrade_and_current(host: Flask) -> None:
    runner = host.test_cli_runner()
    result = runner.invoke(args=["wechat-qr", "db", "current"])
    assert result.exit_code == 0, result.output
    assert "none yet" in result.output and "flask wechat-qr db upgrade" in result.output

    result = runner.invoke(args=["wechat-qr", "db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert f"upgraded from (none) to {HEAD} (head)" in result.output
    assert table_names(host) == EXTENSION_TABLES | {VERSION_TABLE}

    result = runner.invoke(args=["wechat-qr", "db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert f"already at {HEAD} (head); nothing to do" in result.output

    result = runner.invoke(args=["wechat-qr", "db", "current"])
    assert result.exit_code == 0, result.output
    assert f"{HEAD} (head)" in result.output


def test_cli_upgrade_sql_prints_and_changes_nothing(host: Flask) -> None:
    result = host.test_cli_runner().invoke(args=["wechat-qr", "db", "upgrade", "--sql"])
    assert result.exit_code == 0, result.output
    assert "CREATE TABLE wechat_qr_identity" in result.output
    assert VERSION_TABLE in result.output
    assert table_names(host) == set()


def test_cli_upgrade_sql_at_head_says_there_is_nothing_to_print(host: Flask) -> None:
    """Printed nothing and exited 0 on a database already at head (found by a newcomer)."""
    # Click before 8.2 keeps standard error apart only when asked (8.2 always does, and
    # has no such keyword)
    separate = "mix_stderr" in inspect.signature(CliRunner.__init__).parameters
    runner = host.test_cli_runner(**({"mix_stderr": False} if separate else {}))
    assert runner.invoke(args=["wechat-qr", "db", "upgrade"]).exit_code == 0
    result = runner.invoke(args=["wechat-qr", "db", "upgrade", "--sql"])
    assert result.exit_code == 0, result.output
    assert "CREATE TABLE" not in result.stdout
    assert (f"the database is at {HEAD} (head) already; no SQL to print"
            in result.stderr)


def test_an_upgrade_to_a_revision_the_database_is_past_says_it_goes_no_back(
        host: Flask) -> None:
    """``db upgrade 0003`` on tables at head said "already at ... nothing to do", and with
    ``--sql`` printed an empty transaction and nothing else (a helper's deployment hunt,
    session 34): both say the database is past it, and that an upgrade never goes back."""
    separate = "mix_stderr" in inspect.signature(CliRunner.__init__).parameters
    runner = host.test_cli_runner(**({"mix_stderr": False} if separate else {}))
    assert runner.invoke(args=["wechat-qr", "db", "upgrade"]).exit_code == 0
    result = runner.invoke(args=["wechat-qr", "db", "upgrade", "0003"])
    assert result.exit_code == 0, result.output
    assert (f"already at {HEAD} (head), past 0003 (an upgrade never goes back); nothing to "
            "do" in result.stdout)
    result = runner.invoke(args=["wechat-qr", "db", "upgrade", "0003", "--sql"])
    assert result.exit_code == 0, result.output
    assert (f"the database is at {HEAD} (head), past 0003 already; no SQL to print (an "
            "upgrade never goes back)" in result.stderr)
    from flask_wechat_qr import migrations

    assert migrations.is_past("9999", "0001") is False  # a newer version's: not known here


@pytest.mark.parametrize("database", ["mariadb"], indirect=True)
def test_the_login_state_table_is_made_dynamic_where_the_server_default_is_compact(
        host: Flask) -> None:
    """A login state's key is 200 characters of utf8mb4 (800 bytes), and InnoDB's old
    COMPACT row format (a legacy server's ``innodb_default_row_format``) keys at most 767:
    there ``db upgrade`` and ``db.create_all()`` stopped halfway (errno 1709, "Index column
    size too large"). The table says ``ROW_FORMAT=DYNAMIC`` itself, in revision 0001, in
    0006 (which widens the key of a table made in latin1 or utf8mb3) and in the model."""
    script = host.test_cli_runner().invoke(args=["wechat-qr", "db", "upgrade", "--sql"]).output
    made = script[script.index("CREATE TABLE wechat_qr_login_state"):]
    assert "ROW_FORMAT=DYNAMIC" in made[:made.index(";")], made[:400]
    widened = script[script.index("ALTER TABLE `wechat_qr_login_state`"):]
    assert "ROW_FORMAT=DYNAMIC" in widened[:widened.index(";")], widened[:400]
    for url in ("mysql+pymysql://", "mariadb+pymysql://"):  # each its own table options
        made = next(s for s in create_all_statements(host, url)
                    if "CREATE TABLE wechat_qr_login_state" in s)
        assert "ROW_FORMAT=DYNAMIC" in made, (url, made)


def create_all_statements(app: Flask, url: str) -> list[str]:
    """What ``db.create_all()`` would send a database of ``url``'s dialect."""
    statements: list[str] = []
    mock = sa.create_mock_engine(url, lambda sql, *_a, **_k: statements.append(
        str(sql.compile(dialect=mock.dialect))))
    with app.app_context():
        app.extensions["sqlalchemy"].metadata.create_all(mock, checkfirst=False)
    return statements


def test_cli_stamp(host: Flask) -> None:
    runner = host.test_cli_runner()
    result = runner.invoke(args=["wechat-qr", "db", "stamp", "nonsense"])
    assert result.exit_code == 1 and "nonsense" in result.output
    result = runner.invoke(args=["wechat-qr", "db", "stamp", "0001"])
    assert result.exit_code == 0, result.output
    assert "recorded as 0001" in result.output
    assert version_rows(host) == ["0001"]


def test_cli_group_lists_the_db_commands(host: Flask) -> None:
    result = host.test_cli_runner().invoke(args=["wechat-qr", "db", "--help"])
    assert result.exit_code == 0
    for name in ("upgrade", "current", "stamp"):
        assert name in result.output


# --- the example app -----------------------------------------------------------------


def test_example_app_migrates_and_starts_twice_on_one_database(
    database: Database, make_site: t.Callable[..., Flask]
) -> None:
    url = database.url("site")
    first = make_site(url)  # on the sandbox: its dev-only tables come from create_all
    assert table_names(first) == EXTENSION_TABLES | SANDBOX_TABLES | SITE_TABLES | {VERSION_TABLE}
    assert migrations.current_revision(first) == HEAD
    assert schema_differences(first) == []
    client = first.test_client()
    assert client.get("/").status_code == 200
    assert client.get("/auth/wechat/login").status_code == 302

    second = make_site(url)  # a restart, or a second worker
    assert version_rows(second) == [HEAD]
    assert second.test_client().get("/").status_code == 200
    assert second.test_client().get("/auth/wechat/login").status_code == 302


@pytest.mark.parametrize("settings", [
    {"WECHAT_QR_APP_ID": APP_ID, "WECHAT_QR_APP_SECRET": APP_SECRET},
    {},  # on the sandbox: its tables too
])
def test_the_suites_example_sites_start_on_what_a_first_start_makes(
    database: Database, make_site: t.Callable[..., Flask], settings: dict[str, t.Any]
) -> None:
    """The test suite starts most example sites on a copy of what the run's first start with
    the same settings made (support.example_site): that copy must be exactly what a real
    first start on an empty database makes, on SQLite and PostgreSQL. On MariaDB every site
    is set up afresh (no copy): it must still be what a first start makes."""
    first_start = make_site(database.url("empty"), **settings)
    make_site(**settings)  # makes the template, unless an earlier test did
    copied = make_site(**settings)
    if database.is_mysql:
        assert copied.site_template is None  # type: ignore[attr-defined]
    else:
        assert copied.site_template is not None  # type: ignore[attr-defined]
    assert schema_and_rows(copied) == schema_and_rows(first_start)
    assert migrations.current_revision(copied) == HEAD


def test_example_app_with_real_credentials_has_no_sandbox_tables(
    database: Database, make_site: t.Callable[..., Flask]
) -> None:
    site = make_site(database.url("real"), WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET)
    assert table_names(site) == EXTENSION_TABLES | SITE_TABLES | {VERSION_TABLE}


def test_example_app_without_wechat_is_ready_for_it(
    database: Database, make_site: t.Callable[..., Flask]
) -> None:
    """No credentials yet: WeChat login is off, but the extension's tables are made (its
    migrations), so the site needs no step when the credentials come; no sandbox tables."""
    site = make_site(database.url("off"), WECHAT_QR_SANDBOX=False)
    assert table_names(site) == EXTENSION_TABLES | SITE_TABLES | {VERSION_TABLE}


def test_a_database_at_0001_upgrades_to_head_keeping_its_rows(host: Flask) -> None:
    """A site deployed with the first release upgrades in place: bind attempts made before
    keep counting per binding and address, with no account."""
    create_user_table(host)
    migrations.upgrade(host, revision="0001")
    host_db = host.db  # type: ignore[attr-defined]
    with host.app_context():
        host_db.session.execute(sa.text(
            "INSERT INTO wechat_qr_bind_attempt (binding_id, address, at) "
            "VALUES ('b1', '203.0.113.9', 1700000000.0)"))
        host_db.session.commit()
    result = migrations.upgrade(host)
    assert (result.before, result.after) == ("0001", HEAD)
    assert schema_differences(host) == []
    with host.app_context():
        rows = host_db.session.execute(sa.text(
            "SELECT binding_id, address, account FROM wechat_qr_bind_attempt")).all()
    assert [tuple(row) for row in rows] == [("b1", "203.0.113.9", "")]


# --- the identities' foreign key to the host's users --------------------------------------


def identities(app: Flask) -> list[tuple[str, str, t.Any]]:
    with app.app_context():
        return [tuple(row) for row in app.db.session.execute(sa.text(  # type: ignore[attr-defined]
            "SELECT openid, user_id, user_key FROM wechat_qr_identity ORDER BY id")).all()]


def raw_sql(app: Flask, statement: str) -> None:
    with app.app_context(), app.extensions["sqlalchemy"].engine.begin() as conn:
        conn.execute(sa.text(statement))


def test_a_database_at_0002_gets_the_foreign_key_keeping_its_users_rows(host: Flask) -> None:
    """A site deployed before the foreign key: its identities are tied to their users, the
    stale one (its user deleted behind the ORM) goes, and from then on a raw-SQL delete of
    a user takes their identities with it."""
    from alembic import command

    create_user_table(host)
    with host.app_context(), host.extensions["sqlalchemy"].engine.begin() as conn:
        command.upgrade(migrations.alembic_config(conn), "0002")  # as the release before did
    raw_sql(host, f"INSERT INTO {quoted(host, 'user')} (id, username) "
            "VALUES (1, 'alice'), (3, 'carol')")
    for openid, user_id in (("o1", "1"), ("o2", "2"), ("o3", "3")):
        raw_sql(host, "INSERT INTO wechat_qr_identity (connection, openid, user_id, created_at,"
                f" last_login_at) VALUES ('wechat', '{openid}', '{user_id}', "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
    result = migrations.upgrade(host)
    assert (result.before, result.after) == ("0002", HEAD)
    status = result.foreign_key
    assert status is not None and status.state == "on" and status.detail == "user.id"
    assert {"column", "index", "foreign key"} <= set(status.added)
    assert (status.filled, status.removed) == (2, 1)
    assert identities(host) == [("o1", "1", 1), ("o3", "3", 3)]
    assert schema_differences(host) == []
    assert migrations.foreign_key_status(host).missing == ()

    raw_sql(host, f"DELETE FROM {quoted(host, 'user')} WHERE id = 1")
    assert identities(host) == [("o3", "3", 3)]
    again = migrations.upgrade(host)
    assert again.foreign_key is not None and again.foreign_key.added == ()


def test_identities_from_before_0003_are_the_website_apps(host: Flask) -> None:
    """Rows linked before identities said which app they belong to are the website
    application's; afterwards a user may have one identity of each app on a connection,
    never two of one app."""
    from alembic import command

    create_user_table(host)
    with host.app_context(), host.extensions["sqlalchemy"].engine.begin() as conn:
        command.upgrade(migrations.alembic_config(conn), "0002")
    raw_sql(host, f"INSERT INTO {quoted(host, 'user')} (id, username) VALUES (1, 'alice')")
    insert = ("INSERT INTO wechat_qr_identity (connection, {app}openid, user_id, created_at, "
              "last_login_at) VALUES ('wechat', {value}'{openid}', '1', CURRENT_TIMESTAMP, "
              "CURRENT_TIMESTAMP)")
    raw_sql(host, insert.format(app="", value="", openid="o-web"))
    assert migrations.upgrade(host).after == HEAD
    raw_sql(host, insert.format(app="app, ", value="'official_account', ", openid="o-oa"))
    with host.app_context():
        rows = host.db.session.execute(sa.text(  # type: ignore[attr-defined]
            "SELECT openid, app FROM wechat_qr_identity ORDER BY id")).all()
    assert [tuple(row) for row in rows] == [("o-web", "website"),
                                            ("o-oa", "official_account")]
    with pytest.raises(sa.exc.IntegrityError):
        raw_sql(host, insert.format(app="app, ", value="'official_account', ",
                                    openid="o-oa-2"))
    assert schema_differences(host) == []


def test_the_sql_of_0003_runs_on_a_database_at_0002(host: Flask) -> None:
    """``db upgrade --sql`` from 0002, run by hand: on SQLite the table rebuild must neither
    stop at the cascade trigger (the identities' table dropped, its rows left in a
    temporary one) nor lose the foreign key and the indexes; the rows are the website
    application's and deleting a user still takes their identities."""
    import io

    create_user_table(host)
    migrations.upgrade(host, revision="0002")
    raw_sql(host, f"INSERT INTO {quoted(host, 'user')} (id, username) VALUES (1, 'alice')")
    raw_sql(host, "INSERT INTO wechat_qr_identity (connection, openid, user_id, user_key, "
            "created_at, last_login_at) VALUES ('wechat', 'o1', '1', 1, CURRENT_TIMESTAMP, "
            "CURRENT_TIMESTAMP)")
    script = io.StringIO()
    migrations.upgrade(host, sql=True, output=script)
    with host.app_context(), host.extensions["sqlalchemy"].engine.begin() as conn:
        for statement in script.getvalue().split(";\n"):
            statement = "\n".join(line for line in statement.splitlines()
                                  if not line.startswith("--"))
            if statement.strip():
                conn.exec_driver_sql(statement)
    assert version_rows(host) == [HEAD]  # through 0003 and on
    assert [row[0] for row in identities(host)] == ["o1"]
    assert schema_differences(host) == []
    assert migrations.foreign_key_status(host).missing == ()
    raw_sql(host, f"DELETE FROM {quoted(host, 'user')} WHERE id = 1")
    assert identities(host) == []


def test_upgrade_before_the_host_table_exists_then_again_after(host: Flask) -> None:
    """The extension's upgrade often runs before the site's own migrations: it says the
    foreign key waits for the user table and how to finish; the check calls it a problem
    until a second upgrade, after the site's migrations, adds it."""
    runner = host.test_cli_runner()
    result = runner.invoke(args=["wechat-qr", "db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "not yet, that table does not exist" in result.output
    assert "again after your own migrations" in result.output

    create_user_table(host)  # the site's own migrations
    check = runner.invoke(args=["wechat-qr", "check"])
    assert "PROBLEM: the database lacks part of the identities' foreign key to user.id " \
           "(column, index, foreign key" in check.output
    assert check.exit_code == 1

    result = runner.invoke(args=["wechat-qr", "db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "Foreign key of the identities to user.id (ON DELETE CASCADE): added column, " \
           "index, foreign key" in result.output
    assert schema_differences(host) == []
    check = runner.invoke(args=["wechat-qr", "check"])
    assert "\nIdentities' foreign key to your users: user.id, ON DELETE CASCADE\n" in check.output
    assert "foreign key to user.id" not in check.output.partition("PROBLEM")[2]


#: A revision the database refuses, from where the upgrade starts: (start, refused revision,
#: what makes it refuse, what mends it).
REFUSALS = {
    # 0004's CREATE TABLE, whose name a view of the site already has
    "0004 from nothing": (None, "0004",
                          "CREATE VIEW wechat_qr_avatar AS SELECT id FROM {user}",
                          "DROP VIEW wechat_qr_avatar"),
    # 0005's new column, added by hand before: 0004 (its avatar table) is applied first
    "0005 from 0003": ("0003", "0005",
                       "ALTER TABLE wechat_qr_identity ADD COLUMN profile_refreshed_at INTEGER",
                       "ALTER TABLE wechat_qr_identity DROP COLUMN profile_refreshed_at"),
}


@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_an_upgrade_the_database_refuses_partway_says_why_and_runs_again_once_mended(
        host: Flask, refusal: str) -> None:
    """Before: a Python traceback, and on MariaDB (which commits each DDL statement) the
    tables of the revisions before stayed with no revision recorded, so the next upgrade
    refused them ("exist but are not under its migrations") for ever. Now one readable
    error; PostgreSQL and SQLite roll the run back, MariaDB keeps the revisions applied
    (recorded: an earlier slice dropped 0004's table here while 0005 stayed recorded) and
    drops only what the refused revision made; once mended, the same command finishes."""
    start, refused, block, mend = REFUSALS[refusal]
    create_user_table(host)
    if start is not None:
        migrations.upgrade(host, start)
    raw_sql(host, block.format(user=quoted(host, "user")))
    runner = host.test_cli_runner()
    result = runner.invoke(args=["wechat-qr", "db", "upgrade"])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.output.startswith("Error: The upgrade of the extension's tables stopped "
                                    f"at revision {refused}: the database refused it ("), \
        result.output
    assert "Mend the cause and run `flask wechat-qr db upgrade` again." in result.output
    recorded = migrations.current_revision(host)
    with host.app_context():
        dialect = host.extensions["sqlalchemy"].engine.dialect.name
    if dialect in ("mysql", "mariadb"):
        applied = f"{int(refused) - 1:04d}"  # every revision before the refused one
        assert recorded == applied, result.output
        assert f"revisions up to {applied} stay applied" in result.output
        assert ("wechat_qr_avatar" in table_names(host)) is (refused != "0004")
    else:
        assert recorded == start
        assert "nothing of it was kept (the database rolled it back)" in result.output
    raw_sql(host, mend)
    result = runner.invoke(args=["wechat-qr", "db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert version_rows(host) == [HEAD]
    assert schema_differences(host) == []


def test_an_upgrade_stopped_by_a_bug_keeps_the_revisions_it_applied_recorded(
        host: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the database's refusal: anything else (a bug, an interrupt) between two
    revisions. Before: on MariaDB the last revision's version row, written but not yet
    committed (only the next DDL statement would have), was rolled back with the lock
    while its table stayed: every later upgrade then failed ("already exists")."""
    from flask_wechat_qr.migrations import _Progress

    applied = _Progress.applied

    def then_a_bug(progress: t.Any, revision: str) -> None:
        applied(progress, revision)
        if revision == "0004":
            raise RuntimeError("a bug after 0004")

    create_user_table(host)
    migrations.upgrade(host, "0003")
    monkeypatch.setattr(_Progress, "applied", then_a_bug)
    with pytest.raises(RuntimeError, match="a bug after 0004"):
        migrations.upgrade(host)
    monkeypatch.undo()
    recorded = migrations.current_revision(host)
    assert recorded == ("0004" if "wechat_qr_avatar" in table_names(host) else "0003")
    with host.app_context():
        if host.extensions["sqlalchemy"].engine.dialect.name in ("mysql", "mariadb"):
            assert recorded == "0004"
    migrations.upgrade(host)
    assert version_rows(host) == [HEAD]


def test_check_says_when_the_extensions_tables_are_missing_or_behind(host: Flask) -> None:
    """Before: with none of the extension's tables (no upgrade run at deploy) or half of them
    (a ``db.create_all()`` or MariaDB upgrade that stopped partway: its DDL is not rolled
    back) ``check`` said "no problems", and every login was then a 500."""
    runner = host.test_cli_runner()

    def check() -> t.Any:
        return runner.invoke(args=["wechat-qr", "check"])

    create_user_table(host)
    result = check()
    assert result.exit_code == 1, result.output
    assert "PROBLEM: the extension's tables are not in the database: every WeChat login " \
        "fails (a 500). Fix: run `flask wechat-qr db upgrade`" in result.output, result.output

    migrations.upgrade(host, "0003")  # behind: 0004's avatar table is not there yet
    result = check()
    assert "PROBLEM: the extension's tables are at revision 0003, and this version needs " \
        f"{HEAD}. Fix: run `flask wechat-qr db upgrade`" in result.output, result.output
    assert "lack" not in result.output, result.output  # not told to make it by hand

    assert runner.invoke(args=["wechat-qr", "db", "upgrade"]).exit_code == 0
    result = check()
    assert result.exit_code == 0 and "extension's tables" not in result.output, result.output

    raw_sql(host, f"UPDATE {VERSION_TABLE} SET version_num = '0005'")
    result = check()
    assert result.exit_code == 1, result.output
    assert "PROBLEM: the extension's tables are at revision 0005, and this version needs " \
        f"{HEAD}. Fix: run `flask wechat-qr db upgrade`" in result.output, result.output
    raw_sql(host, f"UPDATE {VERSION_TABLE} SET version_num = '0099'")  # a newer package's
    result = check()
    assert "PROBLEM: the extension's tables are at revision 0099, which this version of " \
        f"Flask-WeChat-QR does not know (it ends at {HEAD}): a newer version made them. " \
        "Fix: install the version that made them, or a newer one" in result.output
    raw_sql(host, f"UPDATE {VERSION_TABLE} SET version_num = '{HEAD}'")

    raw_sql(host, "DROP TABLE wechat_qr_avatar")
    result = check()
    assert result.exit_code == 1, result.output
    assert "PROBLEM: the extension's tables lack wechat_qr_avatar (a db.create_all() that " \
        "stopped partway, or a table dropped since)" in result.output
    with host.app_context():  # the fix it gives
        host.extensions["sqlalchemy"].create_all()
    result = check()
    assert result.exit_code == 0 and "extension's tables" not in result.output, result.output


def test_a_batch_migration_of_the_user_table_is_repaired_by_the_next_upgrade(
        host: Flask) -> None:
    """SQLite rebuilds a table to alter it; the rebuilt user table has lost the trigger
    that cascades there. The check notices; the next upgrade (after the site's migrations)
    puts it back. The identities survive the rebuild."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    create_user_table(host)
    migrations.upgrade(host)
    raw_sql(host, f"INSERT INTO {quoted(host, 'user')} (id, username) VALUES (1, 'alice')")
    raw_sql(host, "INSERT INTO wechat_qr_identity (connection, openid, user_id, user_key, "
            "created_at, last_login_at) VALUES ('wechat', 'o1', '1', 1, CURRENT_TIMESTAMP, "
            "CURRENT_TIMESTAMP)")
    with host.app_context(), host.extensions["sqlalchemy"].engine.begin() as conn:
        sqlite = conn.dialect.name == "sqlite"
        with Operations(MigrationContext.configure(conn)).batch_alter_table(
                "user", recreate="always" if sqlite else "auto") as batch:
            batch.add_column(sa.Column("email", sa.String(120)))
    assert [row[0] for row in identities(host)] == ["o1"]
    assert migrations.foreign_key_status(host).missing == (("trigger",) if sqlite else ())
    result = migrations.upgrade(host)
    assert result.foreign_key is not None
    assert result.foreign_key.added == (("trigger",) if sqlite else ())
    raw_sql(host, f"DELETE FROM {quoted(host, 'user')} WHERE id = 1")
    assert identities(host) == []


def test_turned_off_the_upgrade_leaves_the_users_alone(database: Database,
                                                       tmp_path: t.Any) -> None:
    with app_factory(lambda: make_host(database.url("off"), tmp_path,
                                       WECHAT_QR_USER_FOREIGN_KEY=False)) as factory:
        host = factory()
        create_user_table(host)
        result = migrations.upgrade(host)
        assert result.foreign_key is not None and result.foreign_key.state == "off"
        assert "WECHAT_QR_USER_FOREIGN_KEY is off" in result.foreign_key.detail
        with host.app_context():
            inspector = sa.inspect(host.extensions["sqlalchemy"].engine)
            assert "user_key" not in {c["name"] for c in inspector.get_columns(
                "wechat_qr_identity")}
        assert schema_differences(host) == []


def test_0005_adds_when_profiles_were_read_and_goes_back_keeping_rows(host: Flask) -> None:
    """Identities from before 0005 keep their rows with no refresh time (read as their
    creation); going back to 0004 keeps them too, and deleting a user still takes their
    identities (SQLite's cascade trigger survives the column's removal)."""
    create_user_table(host)
    migrations.upgrade(host, revision="0004")
    raw_sql(host, f"INSERT INTO {quoted(host, 'user')} (id, username) "
            "VALUES (1, 'alice'), (2, 'bob')")
    for user_id in (1, 2):
        raw_sql(host, "INSERT INTO wechat_qr_identity (connection, openid, user_id, user_key, "
                f"created_at, last_login_at) VALUES ('wechat', 'o{user_id}', '{user_id}', "
                f"{user_id}, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
    assert migrations.upgrade(host).after == HEAD
    with host.app_context():
        rows = host.db.session.execute(sa.text(  # type: ignore[attr-defined]
            "SELECT openid, profile_refreshed_at FROM wechat_qr_identity ORDER BY id")).all()
    assert [tuple(row) for row in rows] == [("o1", None), ("o2", None)]
    assert schema_differences(host) == []

    from alembic import command

    with host.app_context(), host.extensions["sqlalchemy"].engine.begin() as conn:
        command.downgrade(migrations.alembic_config(conn), "0004")
    assert version_rows(host) == ["0004"]
    assert [row[0] for row in identities(host)] == ["o1", "o2"]
    raw_sql(host, f"DELETE FROM {quoted(host, 'user')} WHERE id = 1")
    assert [row[0] for row in identities(host)] == ["o2"]


def test_0006_keeps_times_and_avatars_whole_on_mariadb(host: Flask, database: Database
                                                       ) -> None:
    """A database made before 0006 gets double-precision times, room for avatars, exact
    identifiers and text in any language where its FLOAT, BLOB and default collation fall
    short (MariaDB, MySQL), its rows kept; elsewhere nothing changes. The migrated schema
    is the models'."""
    create_user_table(host)
    migrations.upgrade(host, revision="0005")
    moment = 1796495745.6983576
    insert = sa.text("INSERT INTO wechat_qr_login_state (`key`, value, expires_at) "
                     "VALUES (:key, 'v', :at)" if database.is_mysql else
                     "INSERT INTO wechat_qr_login_state (key, value, expires_at) "
                     "VALUES (:key, 'v', :at)")
    read = sa.text("SELECT expires_at FROM wechat_qr_login_state ORDER BY expires_at")
    engine = host.extensions["sqlalchemy"]
    with host.app_context(), engine.engine.begin() as conn:
        conn.execute(insert, {"key": "before", "at": moment})
        before = conn.execute(read).scalar_one()
    # Before 0006 MariaDB rounded the time to its FLOAT's 24 bits; the others kept it.
    assert (abs(before - moment) > 1) is database.is_mysql
    assert migrations.upgrade(host).after == HEAD
    picture = bytes(range(256)) * 4096
    with host.app_context(), engine.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM wechat_qr_login_state"))
        conn.execute(insert, {"key": "after", "at": moment})
        assert abs(conn.execute(read).scalar_one() - moment) < 1e-5
        conn.execute(sa.text(
            "INSERT INTO wechat_qr_avatar (" + ("`key`" if database.is_mysql else "key")
            + ", content_type, data, created_at) VALUES ('a', 'image/jpeg', :data, "
            "CURRENT_TIMESTAMP)"), {"data": picture})
        assert conn.execute(sa.text("SELECT data FROM wechat_qr_avatar")).scalar_one() \
            == picture
        if database.is_mysql:  # identifiers exact, people's text in any language
            collations = dict(conn.execute(sa.text(
                "SELECT CONCAT(table_name, '.', column_name), collation_name "
                "FROM information_schema.columns WHERE table_schema = DATABASE() "
                "AND table_name LIKE 'wechat_qr_%' AND collation_name IS NOT NULL")).all())
            assert collations["wechat_qr_identity.openid"] == "utf8mb4_bin"
            assert collations["wechat_qr_identity.unionid"] == "utf8mb4_bin"
            assert collations["wechat_qr_login_state.key"] == "utf8mb4_bin"
            assert collations["wechat_qr_identity.nickname"].startswith("utf8mb4_")
            assert collations["wechat_qr_pending_binding.next_url"].startswith("utf8mb4_")


@pytest.mark.parametrize("database", ["mariadb"], indirect=True)
def test_tables_whose_openids_compare_without_case_are_not_taken_for_the_head(
        host: Flask, database: Database) -> None:
    """MariaDB/MySQL: tables ``db.create_all()`` made, then the openid column changed back to
    the database's case-blind collation (a 0005 table whose types alone were fixed by hand
    looks so): the differences say so, and the upgrade refuses to adopt them; it adopted
    them, and ``oAbc...`` and ``oabc...`` stayed one person."""
    db = host.db  # type: ignore[attr-defined]
    with host.app_context():
        db.create_all()
    assert migrations.differences(host) == []
    raw_sql(host, "ALTER TABLE wechat_qr_identity MODIFY openid VARCHAR(128) CHARACTER SET "
                  "utf8mb4 COLLATE utf8mb4_general_ci NOT NULL")
    assert migrations.differences(host) == [
        ("modify_collation", "wechat_qr_identity", "openid", "utf8mb4_general_ci",
         "utf8mb4_bin")]
    with pytest.raises(MigrationError, match="differences: 1"):
        migrations.upgrade(host)
    assert migrations.current_revision(host) is None


def test_tables_create_all_made_before_0006_are_adopted_or_stamped_0005(
        host: Flask, database: Database) -> None:
    """Tables an earlier version's ``db.create_all()`` made (revision 0005's, no version
    recorded): adopted where 0006 changes nothing; on MariaDB refused, with the way on in
    the message (stamp 0005, then upgrade), which then brings them to the head."""
    create_user_table(host)
    migrations.upgrade(host, revision="0005")
    raw_sql(host, f"DROP TABLE {VERSION_TABLE}")
    if not database.is_mysql:
        assert migrations.upgrade(host).adopted
        assert version_rows(host) == [HEAD]
        return
    with pytest.raises(MigrationError, match=r"db stamp 0005`, then `flask wechat-qr db "
                                             r"upgrade`"):
        migrations.upgrade(host)
    migrations.stamp(host, "0005")
    assert migrations.upgrade(host).after == HEAD
    with host.app_context(), host.extensions["sqlalchemy"].engine.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT collation_name FROM information_schema.columns WHERE table_schema = "
            "DATABASE() AND table_name = 'wechat_qr_identity' AND column_name = 'openid'"
        )).scalar() == "utf8mb4_bin"


def host_with_users_in(schema: str, url: str, root: t.Any) -> Flask:
    """A host whose user table is in a schema of its own (on MariaDB and MySQL: another
    database of the server), ``__table_args__ = {"schema": ...}``, made by its own
    migrations (here: by the test)."""
    db = SQLAlchemy()

    class User(db.Model, UserMixin):  # type: ignore[name-defined,misc]
        __table_args__ = {"schema": schema}

        id = db.Column(db.Integer, primary_key=True)
        username = db.Column(db.String(80), unique=True)
        nickname = db.Column(db.Unicode(255))

    app = Flask("schema_host", root_path=str(root))
    app.config.update(TESTING=True, SECRET_KEY="k", SQLALCHEMY_DATABASE_URI=url,
                      WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET)
    db.init_app(app)
    LoginManager(app)
    WeChatQR(app, db=db, user_model=User)
    app.db, app.User = db, User  # type: ignore[attr-defined]
    return app


@pytest.mark.parametrize("database", ["postgresql", "mariadb"], indirect=True)
def test_a_user_table_in_a_schema_of_its_own_is_named_with_it(database: Database,
                                                               tmp_path: t.Any) -> None:
    """``db upgrade`` and ``check`` name a user table in a schema of its own as the
    database does (``auth.user.id``), and on MariaDB the fix for its nickname column alters
    that table. Before, they said ``user.id`` and ``ALTER TABLE `user```: another table
    (or none) of the site's own schema."""
    url = database.url("site")
    database.url("auth")  # a second schema (MariaDB: database), dropped with the first
    auth = database.schemas[-1]
    with app_factory(lambda: host_with_users_in(auth, url, tmp_path)) as build:
        host = build()
        runner = host.test_cli_runner()
        result = runner.invoke(args=["wechat-qr", "db", "upgrade"])
        assert result.exit_code == 0, result.output
        assert f"Foreign key of the identities to {auth}.user.id: not yet, that table " \
            "does not exist" in result.output
        check = runner.invoke(args=["wechat-qr", "check"])
        assert f"foreign key to your users: {auth}.user.id, not in the database yet" \
            in check.output
        assert f"PROBLEM: the identities have no foreign key to {auth}.user.id yet" \
            in check.output

        with host.app_context():  # the site's own migrations
            host.User.__table__.create(host.db.engine)  # type: ignore[attr-defined]
        check = runner.invoke(args=["wechat-qr", "check"])
        assert "PROBLEM: the database lacks part of the identities' foreign key to " \
            f"{auth}.user.id (column, index, foreign key" in check.output
        result = runner.invoke(args=["wechat-qr", "db", "upgrade"])
        assert f"Foreign key of the identities to {auth}.user.id (ON DELETE CASCADE): added " \
            "column, index, foreign key" in result.output
        check = runner.invoke(args=["wechat-qr", "check"])
        assert check.exit_code == 0, check.output
        assert f"\nIdentities' foreign key to your users: {auth}.user.id, ON DELETE CASCADE\n" \
            in check.output
        if database.is_mysql:
            raw_sql(host, f"ALTER TABLE `{auth}`.`user` MODIFY nickname VARCHAR(255) "
                          "CHARACTER SET latin1 NULL")
            check = runner.invoke(args=["wechat-qr", "check"])
            assert f"WARNING: {auth}.user.nickname is in character set latin1" \
                in check.output, check.output
            assert f"Fix: ALTER TABLE `{auth}`.`user` MODIFY `nickname` varchar(255) " \
                "CHARACTER SET utf8mb4 NULL" in check.output, check.output


@pytest.mark.parametrize("database", ["postgresql", "mariadb"], indirect=True)
def test_a_foreign_key_to_a_user_table_of_the_same_name_elsewhere_is_replaced(
        database: Database, hosts: t.Callable[..., Flask], tmp_path: t.Any) -> None:
    """A site whose identities' foreign key refers to ``user`` in its own schema while its
    user model is now ``auth.user`` (it moved its users there, ids kept, the old table
    left): the check and the upgrade matched the table by name only, said the key was
    there, and every first login failed on it (its new user is not in the old table). The
    check says the key is missing, naming where it points; the upgrade replaces it, and
    from then on identities are tied to the users of ``auth.user``."""
    url = database.url("site")
    database.url("auth")  # a second schema (MariaDB: database), dropped with the first
    auth = database.schemas[-1]
    before = hosts(url)  # users in the site's own schema, as the site began
    create_user_table(before)
    assert before.test_cli_runner().invoke(args=["wechat-qr", "db", "upgrade"]).exit_code == 0
    with app_factory(lambda: host_with_users_in(auth, url, tmp_path)) as build:
        host = build()
        with host.app_context():  # the site's own migrations
            host.User.__table__.create(host.db.engine)  # type: ignore[attr-defined]
        users = f"{quoted(host, auth)}.{quoted(host, 'user')}"
        for table in (quoted(host, "user"), users):
            raw_sql(host, f"INSERT INTO {table} (id, username) VALUES (1, 'alice')")
        link = ("INSERT INTO wechat_qr_identity (connection, openid, user_id, user_key, "
                "created_at, last_login_at) VALUES ('wechat', 'o{0}', '{0}', {0}, "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
        raw_sql(host, link.format(1))
        runner = host.test_cli_runner()
        check = runner.invoke(args=["wechat-qr", "check"])
        assert "PROBLEM: the database lacks part of the identities' foreign key to " \
            f"{auth}.user.id (foreign key; the one there refers to user.id)" in check.output, \
            check.output
        result = runner.invoke(args=["wechat-qr", "db", "upgrade"])
        assert result.exit_code == 0, result.output
        assert f"Foreign key of the identities to {auth}.user.id (ON DELETE CASCADE): added " \
            "foreign key (instead of the one to user.id); 1 identities tied to their users" \
            in result.output, result.output
        check = runner.invoke(args=["wechat-qr", "check"])
        assert check.exit_code == 0 and "PROBLEM" not in check.output, check.output
        raw_sql(host, f"INSERT INTO {users} (id, username) VALUES (2, 'bob')")
        raw_sql(host, link.format(2))  # bob's first login: refused by the old key
        raw_sql(host, f"DELETE FROM {users} WHERE id = 1")
        assert identities(host) == [("o2", "2", 2)]


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_foreign_key_to_users_in_a_schema_of_the_search_path_is_there(
        database: Database, tmp_path: t.Any) -> None:
    """A site whose PostgreSQL ``search_path`` names the schema of its users too
    (``site, auth``, the users in ``auth.user``): PostgreSQL names a key to a table the
    search path finds without its schema, and the key the upgrade had added was taken for
    one to ``site.user``. ``check`` reported it missing at every run, and every upgrade
    dropped and added it again (re-checking every identity, the table locked meanwhile)."""
    url = database.url("site")
    database.url("auth")
    site, auth = database.schemas
    url = url.replace(f"search_path%3D{site}", f"search_path%3D{site}%2C{auth}")
    with app_factory(lambda: host_with_users_in(auth, url, tmp_path)) as build:
        host = build()
        with host.app_context():  # the site's own migrations
            host.User.__table__.create(host.db.engine)  # type: ignore[attr-defined]
        runner = host.test_cli_runner()
        result = runner.invoke(args=["wechat-qr", "db", "upgrade"])
        assert f"to {auth}.user.id (ON DELETE CASCADE): added column, index, foreign key;" \
            in result.output, result.output
        check = runner.invoke(args=["wechat-qr", "check"])
        assert check.exit_code == 0 and "PROBLEM" not in check.output, check.output
        again = runner.invoke(args=["wechat-qr", "db", "upgrade"])
        assert again.exit_code == 0 and "Foreign key" not in again.output, again.output


def host_with_users_attached(root: t.Any) -> Flask:
    """A SQLite site whose users are in a database file of their own, attached to each
    connection as ``users`` (a connect listener: ``ATTACH DATABASE ... AS users``), its
    user model in that schema (``__table_args__ = {"schema": "users"}``)."""
    db = SQLAlchemy()

    class User(db.Model, UserMixin):  # type: ignore[name-defined,misc]
        __table_args__ = {"schema": "users"}

        id = db.Column(db.Integer, primary_key=True)
        username = db.Column(db.String(80), unique=True)

    app = Flask("attached_host", root_path=str(root))
    app.config.update(TESTING=True, SECRET_KEY="k",
                      SQLALCHEMY_DATABASE_URI=f"sqlite:///{root / 'site.db'}",
                      WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET)
    db.init_app(app)
    with app.app_context():
        users_file = str(root / "users.db").replace("'", "''")

        @sa.event.listens_for(db.engine, "connect")
        def attach(dbapi_connection: t.Any, _record: t.Any) -> None:
            dbapi_connection.execute(f"ATTACH DATABASE '{users_file}' AS users")

        User.__table__.create(db.engine)  # the site's own migrations
    LoginManager(app)
    WeChatQR(app, db=db, user_model=User)
    app.db, app.User = db, User  # type: ignore[attr-defined]
    return app


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
@pytest.mark.parametrize("made_by", ["upgrade", "create_all"])
def test_users_in_an_attached_sqlite_database_have_no_foreign_key_and_say_why(
        database: Database, tmp_path: t.Any, made_by: str) -> None:
    """SQLite keeps no foreign key (nor trigger) from one database file to another: for a
    site whose users are in an attached database, ``db upgrade`` stopped ("no such table:
    main.users") after every revision, and ``check`` reported the key missing, its fix that
    same upgrade (tables made by ``db.create_all()``, which leaves the key out, too). The
    key is not possible, said as for a MariaDB table that keeps none: the upgrade makes
    the rest, and ``check`` warns, with the reason and what to do."""
    with app_factory(lambda: host_with_users_attached(tmp_path)) as build:
        host = build()
        runner = host.test_cli_runner()
        if made_by == "create_all":
            with host.app_context():
                host.db.create_all()  # type: ignore[attr-defined]
        result = runner.invoke(args=["wechat-qr", "db", "upgrade"])
        assert result.exit_code == 0, result.output
        assert "Foreign key of the identities to users.user.id: not possible, users.user is " \
            "in the SQLite database attached as 'users'" in result.output
        assert "Fix: set WECHAT_QR_USER_FOREIGN_KEY = False" in result.output
        assert version_rows(host) == [HEAD]
        check = runner.invoke(args=["wechat-qr", "check"])
        assert check.exit_code == 0 and "PROBLEM" not in check.output, check.output
        assert "WARNING: the identities have no foreign key to users.user.id: users.user is " \
            "in the SQLite database attached as 'users'" in check.output


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_a_foreign_key_the_database_refuses_says_what_was_kept(host: Flask) -> None:
    """The identities' foreign key refused after the revisions ran (here: an index of the
    site's own already has the name of the key's index): the error said the tables were at
    the head revision, but SQLite and PostgreSQL roll the whole upgrade back, revisions
    included, and ``check`` then found no table of the extension. It says so, as for a
    revision refused partway (MariaDB, which keeps the revisions, still says where they
    are: tests/hosts/test_mariadb.py)."""
    db = host.db  # type: ignore[attr-defined]
    with host.app_context():  # the site's own tables
        db.metadata.create_all(db.engine, tables=[host.User.__table__,  # type: ignore[attr-defined]
                                                  host.Note.__table__])  # type: ignore[attr-defined]
    raw_sql(host, "CREATE INDEX ix_wechat_qr_identity_user_key ON note (text)")
    result = host.test_cli_runner().invoke(args=["wechat-qr", "db", "upgrade"])
    assert result.exit_code == 1, result.output
    assert "could not be added: the database refused it (" in result.output
    assert "nothing of the upgrade was kept (the database rolled it back)" in result.output
    assert "at revision" not in result.output
    assert migrations.current_revision(host) is None
