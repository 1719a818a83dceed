"""The extension's tables (models.py) as the database enforces them: one identity per openid
of a connection. Their migrations: test_migrations."""

from __future__ import annotations

import contextlib
import gc
import secrets
import typing as t
import weakref

import pytest
import sqlalchemy as sa
from flask import Flask
from support import (
    Database,
    add_user,
    all_identities,
    dispose_engines,
    link_identity,
    make_test_app,
    schema_and_rows,
)


def test_openid_is_unique_per_connection(app: t.Any) -> None:
    link_identity(app, add_user(app, username="a"))
    with pytest.raises(sa.exc.IntegrityError):
        link_identity(app, add_user(app, username="b"))


def test_a_db_no_app_uses_any_more_is_freed(tmp_path: t.Any) -> None:
    """The extension's models, the sandbox's and the bulk-delete hook stay with their db and
    go with it: a process that makes many apps (a test suite, an app factory per tenant)
    does not keep every db it ever made. Before, the db and all its classes stayed for ever."""
    app = make_test_app(tmp_path, WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None,
                        WECHAT_QR_APP_SECRET=None)
    user_id = add_user(app, username="a")
    link_identity(app, user_id)
    with app.app_context():
        app.db.session.execute(sa.delete(app.User))  # type: ignore[attr-defined]
        app.db.session.commit()  # type: ignore[attr-defined]
    assert "wechat_qr_sandbox_qr" in app.db.metadata.tables  # type: ignore[attr-defined]
    dispose_engines(app)
    db = weakref.ref(app.db)  # type: ignore[attr-defined]
    del app
    gc.collect()
    assert db() is None


@pytest.mark.parametrize("settings", [{}, {"WECHAT_QR_USER_FOREIGN_KEY": False}])
def test_the_suites_test_hosts_have_the_tables_create_all_makes(
        make_app: t.Callable[..., Flask], database: Database, settings: dict[str, t.Any]
) -> None:
    """The test suite's hosts get their tables from the statements of the run's first
    create_all with the same settings (support.create_all_as_before): they must be exactly
    what create_all makes, SQLite's trigger included. On MariaDB nothing is replayed (each
    host's create_all runs afresh): its tables must still be what create_all makes."""
    made = make_app(replay_create_all=False, **settings)
    make_app(**settings)  # records create_all's statements, unless an earlier test did
    replayed = make_app(**settings)
    assert replayed.create_all_replayed is not database.is_mysql  # type: ignore[attr-defined]
    assert schema_and_rows(replayed) == schema_and_rows(made)


@contextlib.contextmanager
def _host_of_another_test(database: Database, tmp_path: t.Any, name: str,
                          settings: str) -> t.Iterator[Flask]:
    """A test host of another test (``name``) on ``database``'s server, as the suite's
    make_app has one: on a database an earlier test gave back, or a new one whose tables it
    records (Database.host_url); dropped, or given back, when the block ends, as at that
    test's end."""
    tests = Database(database.backend, tmp_path / name, database.server_url)
    try:
        folder = tmp_path / name
        folder.mkdir()
        url, tables_made = tests.host_url("app", settings)
        host = make_test_app(folder, url, replay_create_all=True, tables_made=tables_made)
        if not tables_made:
            tests.record_tables(url, settings)
        yield host
        dispose_engines(host)
    finally:
        tests.drop()


def test_a_host_on_tables_an_earlier_test_used_starts_as_on_new_ones(
        make_app: t.Callable[..., Flask], database: Database, tmp_path: t.Any) -> None:
    """The suite's hosts get the tables of an earlier test's host with the same settings,
    emptied, its schema given back when that test ended (Database.drop; on SQLite a copy of
    the first one's file): they must be exactly what create_all makes, with no row left and
    every counter restarted (a host's first user is 1, as on new tables)."""
    made = make_app(replay_create_all=False)
    settings = f"only this test's: {secrets.token_hex(8)}"
    with _host_of_another_test(database, tmp_path, "earlier", settings) as host:
        user_id = add_user(host, username="a")
        link_identity(host, user_id)
        assert (user_id, add_user(host, username="b")) == (1, 2)
    with _host_of_another_test(database, tmp_path, "later", settings) as host:
        assert host.create_all_replayed  # type: ignore[attr-defined]
        assert schema_and_rows(host) == schema_and_rows(made)
        assert add_user(host, username="c") == 1
        link_identity(host, 1)
        assert [identity.id for identity in all_identities(host)] == [1]


def test_tables_a_test_changed_are_not_a_later_tests(
        make_app: t.Callable[..., Flask], database: Database, tmp_path: t.Any) -> None:
    """Tests that changed their host's tables (a column, an index, a table of their own) do
    not give them to a later test's host: that host's tables are still create_all's."""
    made = make_app(replay_create_all=False)
    settings = f"only this test's: {secrets.token_hex(8)}"
    for number, change in enumerate([
            "ALTER TABLE {user} ADD COLUMN extra INTEGER",
            "CREATE INDEX ix_nickname ON {user} (nickname)",
            "CREATE TABLE extra (id INTEGER PRIMARY KEY)"]):
        with _host_of_another_test(database, tmp_path, f"earlier{number}", settings) as host, \
                host.app_context(), host.db.engine.begin() as conn:  # type: ignore[attr-defined]
            conn.exec_driver_sql(change.format(user=conn.dialect.identifier_preparer
                                               .quote("user")))
    with _host_of_another_test(database, tmp_path, "later", settings) as host:
        assert schema_and_rows(host) == schema_and_rows(made)


def test_times_and_avatars_are_stored_whole(app: Flask) -> None:
    """A moment in seconds comes back to the microsecond and an avatar of a megabyte whole,
    on every database. MariaDB's and MySQL's FLOAT kept 1796495745.69 as 1796495744 (states
    and bindings expired minutes early or late) and their BLOB refused more than 64 KiB."""
    moment = 1796495745.6983576
    picture = bytes(range(256)) * 4096  # 1 MiB, MAX_AVATAR_BYTES
    models = app.extensions["wechat_qr"].models
    with app.app_context():
        db = app.db  # type: ignore[attr-defined]
        db.session.add(models.LoginState(key="k", value="v", expires_at=moment))
        db.session.add(models.BindAttempt(binding_id="b", address="a", account="c", at=moment))
        db.session.add(models.Avatar(key="a", content_type="image/jpeg", data=picture))
        db.session.commit()
        db.session.expunge_all()
        expires_at = db.session.execute(sa.select(models.LoginState.expires_at)).scalar_one()
        at = db.session.execute(sa.select(models.BindAttempt.at)).scalar_one()
        data = db.session.execute(sa.select(models.Avatar.data)).scalar_one()
    assert abs(expires_at - moment) < 1e-5
    assert abs(at - moment) < 1e-5
    assert data == picture
