"""No identity outlives its user: the identities' foreign key to the host's user table.

The attack (issue 14, finding 2): a user is deleted behind the ORM (raw SQL, a bulk delete),
the database hands the next new user the same id (SQLite reuses the highest free rowid;
PostgreSQL after a sequence reset, MariaDB after its AUTO_INCREMENT is lowered), and the
deleted user's WeChat logs straight into the new person's account. Each test logs in through
the public routes on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import gc
import logging
import typing as t
import uuid
import weakref

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_login import LoginManager, UserMixin
from flask_sqlalchemy import SQLAlchemy
from support import (
    APP_ID,
    APP_SECRET,
    Database,
    add_user,
    all_identities,
    all_users,
    app_factory,
    dispose_engines,
    logged_in_user_id,
    login_with_wechat,
    make_test_app,
    quoted,
    table,
)

from flask_wechat_qr import AccountAdapter, WeChatQR
from flask_wechat_qr.errors import ConfigurationError


def delete_user_with_raw_sql(app: Flask, user_id: t.Any) -> None:
    """What a database tool, a cron job or another service does: no ORM, no event."""
    key_type = app.User.__table__.c.id.type  # type: ignore[attr-defined]
    with app.app_context():
        db = app.db  # type: ignore[attr-defined]
        db.session.execute(sa.text(f"DELETE FROM {quoted(app, 'user')} WHERE id = :id"
                                   ).bindparams(sa.bindparam("id", type_=key_type)),
                           {"id": user_id})
        db.session.commit()


def hand_out_the_same_id_next(app: Flask, user_id: int) -> None:
    """PostgreSQL: reset the sequence, as a restore or a ``TRUNCATE ... RESTART`` does;
    MariaDB/MySQL: lower the table's AUTO_INCREMENT, as a restore or a tool does (InnoDB
    keeps it since MariaDB 10.2.4 and MySQL 8.0; older servers lowered it at a restart).
    SQLite reuses the highest free rowid by itself."""
    with app.app_context():
        db = app.db  # type: ignore[attr-defined]
        dialect = db.engine.dialect.name
        if dialect == "postgresql":
            db.session.execute(sa.text(
                "SELECT setval(pg_get_serial_sequence('\"user\"', 'id'), :id, false)"),
                {"id": user_id})
            db.session.commit()
        elif dialect == "mysql":
            db.session.execute(sa.text(
                f"ALTER TABLE {quoted(app, 'user')} AUTO_INCREMENT = {int(user_id)}"))
            db.session.commit()


def identity_owners(app: Flask) -> list[str]:
    return [row.user_id for row in all_identities(app)]


# --- the attack ----------------------------------------------------------------------


def test_a_user_deleted_with_raw_sql_leaves_no_wechat_login_to_the_next_user(
        make_app: t.Callable[..., Flask], wechat_api: t.Any) -> None:
    app = make_app()
    assert logged_in_user_id_after_login(app, wechat_api) is not None
    (victim,) = all_users(app)
    delete_user_with_raw_sql(app, victim.id)
    hand_out_the_same_id_next(app, victim.id)
    newcomer = add_user(app, username="newcomer")
    assert newcomer == victim.id  # the id really is handed out again

    browser = app.test_client()
    assert login_with_wechat(browser, wechat_api).status_code == 302
    assert logged_in_user_id(browser) != str(newcomer)
    # The deleted user's identity went with them, in the database itself; the login made
    # a new user for that WeChat.
    assert identity_owners(app) == [logged_in_user_id(browser)]


def logged_in_user_id_after_login(app: Flask, wechat_api: t.Any) -> str | None:
    browser = app.test_client()
    assert login_with_wechat(browser, wechat_api).status_code == 302
    return logged_in_user_id(browser)


@pytest.mark.parametrize("foreign_key", [True, False])
@pytest.mark.parametrize("how", ["delete statement", "query delete"])
def test_an_orm_bulk_delete_removes_the_identities_in_its_transaction(
        make_app: t.Callable[..., Flask], wechat_api: t.Any, how: str,
        foreign_key: bool) -> None:
    """No ORM event fires for a bulk delete; the identities still go, before the commit and
    with it, with or without the foreign key."""
    app = make_app(WECHAT_QR_USER_FOREIGN_KEY=foreign_key)
    logged_in_user_id_after_login(app, wechat_api)
    login_with_wechat(app.test_client(), wechat_api, openid="o-other")  # a second person
    (victim, other) = all_users(app)
    assert len(identity_owners(app)) == 2
    User = app.User  # type: ignore[attr-defined]
    with app.app_context():
        db = app.db  # type: ignore[attr-defined]
        if how == "delete statement":
            db.session.execute(sa.delete(User).where(User.id == victim.id))
        else:
            User.query.filter(User.id == victim.id).delete()
        remaining = db.session.execute(sa.select(table(app, "wechat_qr_identity").c.user_id)
                                       ).scalars().all()
        assert str(victim.id) not in remaining
        db.session.rollback()  # rolled back together with the users
    assert str(victim.id) in identity_owners(app)
    with app.app_context():
        db.session.execute(sa.delete(User).where(User.id == victim.id))
        db.session.commit()
    assert str(victim.id) not in identity_owners(app)
    assert identity_owners(app) == [str(other.id)]  # the other person's identity stays


def test_the_identity_carries_the_users_primary_key(make_app: t.Callable[..., Flask],
                                                     wechat_api: t.Any) -> None:
    app = make_app()
    logged_in_user_id_after_login(app, wechat_api)
    (user,) = all_users(app)
    (identity,) = all_identities(app)
    assert (identity.user_id, identity.user_key) == (str(user.id), user.id)


# --- the table made by create_all -------------------------------------------------------


def test_create_all_makes_the_foreign_key_with_on_delete_cascade(
        make_app: t.Callable[..., Flask]) -> None:
    app = make_app(replay_create_all=False)
    with app.app_context():
        connection = app.db.engine.connect()  # type: ignore[attr-defined]
        dialect = connection.dialect.name
        try:
            inspector = sa.inspect(connection)
            (fk,) = inspector.get_foreign_keys("wechat_qr_identity")
            triggers = connection.execute(sa.text(
                "SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars().all() \
                if connection.dialect.name == "sqlite" else []
        finally:
            connection.close()
    assert (fk["constrained_columns"], fk["referred_table"], fk["referred_columns"]) == (
        ["user_key"], "user", ["id"])
    assert fk["options"]["ondelete"].upper() == "CASCADE"
    if dialect == "sqlite":
        # SQLite enforces foreign keys only where PRAGMA foreign_keys is on: a trigger
        # does the cascade, without turning on the host's own foreign keys.
        assert triggers == ["wechat_qr_identity_user_deleted"]


# --- other primary keys -------------------------------------------------------------------


def make_keyed_host(url: str, root: t.Any, key_type: str, **config: t.Any) -> Flask:
    """A host whose users are keyed by a UUID or by a string they choose."""
    db = SQLAlchemy()

    class User(db.Model, UserMixin):  # type: ignore[name-defined,misc]
        if key_type == "uuid":
            id = db.Column(db.Uuid, primary_key=True, default=uuid.uuid4)
        else:
            id = db.Column(db.String(40), primary_key=True,
                           default=lambda: f"member-{uuid.uuid4().hex[:8]}")
        username = db.Column(db.String(80), unique=True)

    app = Flask("keyed_host", root_path=str(root))
    app.config.update(TESTING=True, SECRET_KEY="test-secret-key", SQLALCHEMY_DATABASE_URI=url,
                      WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET, **config)
    db.init_app(app)
    manager = LoginManager(app)
    manager.user_loader(lambda user_id: db.session.get(
        User, uuid.UUID(user_id) if key_type == "uuid" else user_id))
    WeChatQR(app, db=db, user_model=User)
    with app.app_context():
        db.create_all()
    app.db = db  # type: ignore[attr-defined]
    app.User = User  # type: ignore[attr-defined]
    return app


@pytest.mark.parametrize("key_type", ["uuid", "string"])
def test_uuid_and_string_keyed_users_get_the_foreign_key_too(
        database: Database, tmp_path: t.Any, wechat_api: t.Any, key_type: str) -> None:
    with app_factory(lambda: make_keyed_host(database.url("keyed"), tmp_path, key_type)
                     ) as factory:
        app = factory()
        victim_id = logged_in_user_id_after_login(app, wechat_api)
        (victim,) = all_users(app)
        assert str(victim.id) == victim_id
        (identity,) = all_identities(app)
        assert identity.user_key == victim.id
        delete_user_with_raw_sql(app, victim.id)
        assert identity_owners(app) == []

        with app.app_context():  # someone new is given the very same key
            app.db.session.add(app.User(id=victim.id, username="newcomer"))  # type: ignore[attr-defined]
            app.db.session.commit()  # type: ignore[attr-defined]
        browser = app.test_client()
        assert login_with_wechat(browser, wechat_api).status_code == 302
        assert logged_in_user_id(browser) not in (None, victim_id)


def make_framework_host(url: str, root: t.Any, users_first: bool) -> Flask:
    """A host whose user model is on a declarative base of its own (Flask-AppBuilder's
    ``ab_user`` on ``flask_appbuilder.Model``): another MetaData, the same engine, read
    through ``db.session``. ``users_first``: its tables are made before the extension's."""
    from sqlalchemy.orm import DeclarativeBase

    class Base(DeclarativeBase):
        pass

    class User(Base, UserMixin):
        __tablename__ = "user"
        id = sa.Column(sa.Integer, primary_key=True)
        username = sa.Column(sa.String(80), unique=True)

    db = SQLAlchemy()
    app = Flask("framework_host", root_path=str(root))
    app.config.update(TESTING=True, SECRET_KEY="test-secret-key", SQLALCHEMY_DATABASE_URI=url,
                      WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET)
    db.init_app(app)
    manager = LoginManager(app)
    manager.user_loader(lambda user_id: db.session.get(User, int(user_id)))
    WeChatQR(app, db=db, user_model=User)
    with app.app_context():
        if users_first:
            Base.metadata.create_all(db.engine)
        db.create_all()
        if not users_first:
            Base.metadata.create_all(db.engine)
    app.db = db  # type: ignore[attr-defined]
    app.User = User  # type: ignore[attr-defined]
    return app


@pytest.mark.parametrize("users_first", [True, False], ids=["users first", "users after"])
def test_a_user_model_on_a_metadata_of_its_own_gets_the_foreign_key_too(
        database: Database, tmp_path: t.Any, wechat_api: t.Any, users_first: bool,
        caplog: pytest.LogCaptureFixture) -> None:
    """Flask-AppBuilder's users are on its own declarative base, in the same database: the
    extension said "not on the default bind of the same db" and made no foreign key, and
    a user deleted with raw SQL left their WeChat to the next user given the id. Where the
    user table comes after the extension's, the table is made without the key (said, with
    the fix) and ``db upgrade`` adds it."""
    with caplog.at_level(logging.WARNING, "flask_wechat_qr"), app_factory(
            lambda: make_framework_host(database.url("framework"), tmp_path, users_first)
    ) as factory:
        app = factory()
        omitted = [r.getMessage() for r in caplog.records if "without its foreign key" in
                   r.getMessage()]
        if users_first:
            assert omitted == []
        else:
            assert len(omitted) == 1 and "user does not exist yet" in omitted[0]
            result = app.test_cli_runner().invoke(args=["wechat-qr", "db", "upgrade"])
            assert result.exit_code == 0, result.output
        with app.app_context():
            keys = sa.inspect(app.db.engine).get_foreign_keys("wechat_qr_identity")  # type: ignore[attr-defined]
        assert [(k["referred_table"], k["referred_columns"]) for k in keys] == [
            ("user", ["id"])]
        victim_id = logged_in_user_id_after_login(app, wechat_api)
        (victim,) = all_users(app)
        assert str(victim.id) == victim_id
        delete_user_with_raw_sql(app, victim.id)
        hand_out_the_same_id_next(app, victim.id)
        assert identity_owners(app) == []
        assert add_user(app, username="newcomer") == victim.id
        browser = app.test_client()
        assert login_with_wechat(browser, wechat_api).status_code == 302
        assert logged_in_user_id(browser) not in (None, victim_id)


# --- opting out -------------------------------------------------------------------------------


def test_turned_off_there_is_no_foreign_key_and_the_stale_check_remains(
        make_app: t.Callable[..., Flask], wechat_api: t.Any) -> None:
    app = make_app(WECHAT_QR_USER_FOREIGN_KEY="false")
    assert "user_key" not in table(app, "wechat_qr_identity").c
    with app.app_context():
        assert sa.inspect(app.db.engine).get_foreign_keys(  # type: ignore[attr-defined]
            "wechat_qr_identity") == []
    logged_in_user_id_after_login(app, wechat_api)
    (victim,) = all_users(app)
    add_user(app, username="alice")  # keeps the id from being handed out again
    delete_user_with_raw_sql(app, victim.id)
    assert identity_owners(app) == [str(victim.id)]  # stale: nothing removed it
    browser = app.test_client()
    login_with_wechat(browser, wechat_api)
    assert identity_owners(app) != [str(victim.id)]  # the login removed it
    assert logged_in_user_id(browser) not in (None, str(victim.id))


def composite_key_host(tmp_path: t.Any, caplog: pytest.LogCaptureFixture,
                       **table_args: t.Any) -> tuple[Flask, SQLAlchemy, t.Any]:
    """A site whose users have a two-column primary key (realm, name), its extension set up
    with the log captured; ``table_args`` as the user model's ``__table_args__``."""
    db = SQLAlchemy()

    class Member(db.Model, UserMixin):  # type: ignore[name-defined,misc]
        __table_args__ = table_args

        realm = db.Column(db.String(20), primary_key=True)
        name = db.Column(db.String(40), primary_key=True)

    app = Flask("composite_host", root_path=str(tmp_path))
    app.config.update(TESTING=True, SECRET_KEY="test-secret-key",
                      SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'app.db'}",
                      WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET,
                      # WeChat cannot choose a realm and name: such a site only logs in
                      WECHAT_QR_LOGIN_ONLY=True)
    db.init_app(app)
    LoginManager(app)

    class Adapter(AccountAdapter):  # the default finds users by a key of one column
        def load_user(self, user_id: str) -> Member | None:
            realm, _, name = user_id.partition("/")
            return db.session.get(Member, (realm, name))

    with caplog.at_level(logging.INFO, logger="flask_wechat_qr"):
        WeChatQR(app, db=db, adapter=Adapter(db, Member))
    return app, db, Member


def test_a_composite_user_key_is_an_automatic_opt_out_said_once(
        tmp_path: t.Any, caplog: pytest.LogCaptureFixture) -> None:
    _app, db, _member = composite_key_host(tmp_path, caplog)
    said = [r for r in caplog.records if "foreign key" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.INFO]
    assert "primary key is not one column" in said[0].getMessage()
    assert "user_key" not in db.metadata.tables["wechat_qr_identity"].c


def app_on(db: SQLAlchemy, tmp_path: t.Any, name: str, **config: t.Any) -> Flask:
    """A Flask app named ``name`` on ``db`` (one SQLite file per test), with Flask-Login,
    before ``WeChatQR``: several such apps share one ``db``."""
    made = Flask(name, root_path=str(tmp_path))
    made.config.update(TESTING=True, SECRET_KEY="test-secret-key",
                       SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'app.db'}",
                       WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET, **config)
    db.init_app(made)
    LoginManager(made)
    return made


def test_apps_sharing_one_db_must_agree(tmp_path: t.Any) -> None:
    db = SQLAlchemy()

    class User(db.Model, UserMixin):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)

    wechat = WeChatQR(db=db, user_model=User)
    wechat.init_app(app_on(db, tmp_path, "first"))
    wechat.init_app(app_on(db, tmp_path, "second"))  # the same choice: fine
    with pytest.raises(ConfigurationError) as info:
        wechat.init_app(app_on(db, tmp_path, "third", WECHAT_QR_USER_FOREIGN_KEY=False))
    assert info.value.key == "WECHAT_QR_USER_FOREIGN_KEY"


def test_a_bulk_delete_forgets_identities_after_the_first_app_on_its_db_is_gone(
        tmp_path: t.Any) -> None:
    """The bulk-delete hook is installed once per db, by its first app: it must keep working
    for the next apps when that first app is gone (the db, not the app, keeps what it needs).
    Without the foreign key only the hook deletes the identities."""
    db = SQLAlchemy()

    class User(db.Model, UserMixin):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)

    def app(name: str) -> Flask:
        made = app_on(db, tmp_path, name, WECHAT_QR_USER_FOREIGN_KEY=False)
        WeChatQR(made, db=db, user_model=User)
        return made

    first = weakref.ref(app("first"))
    gc.collect()
    assert first() is None
    second = app("second")
    with second.app_context():
        db.create_all()
        db.session.add_all([User(id=1), User(id=2)])
        identities = db.metadata.tables["wechat_qr_identity"]
        for number in (1, 2):
            db.session.execute(sa.insert(identities).values(
                connection="wechat", openid=f"openid-{number}", user_id=str(number)))
        db.session.commit()
        db.session.execute(sa.delete(User).where(User.id == 1))
        db.session.commit()
        assert db.session.execute(sa.select(identities.c.user_id)).scalars().all() == ["2"]
        db.session.remove()
        db.engine.dispose()


# --- bulk deletes delete exactly their users' identities ----------------------------------


def guests_host(url: str, root: t.Any, **config: t.Any) -> Flask:
    """A host with single-table inheritance: members and guests in one user table."""
    db = SQLAlchemy()

    class User(db.Model, UserMixin):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        username = db.Column(db.String(80), unique=True)
        kind = db.Column(db.String(20), nullable=False, default="member")
        __mapper_args__ = {"polymorphic_on": kind, "polymorphic_identity": "member"}

    class Guest(User):
        __mapper_args__ = {"polymorphic_identity": "guest"}

    app = Flask("guests_host", root_path=str(root))
    app.config.update(TESTING=True, SECRET_KEY="k" * 40, SQLALCHEMY_DATABASE_URI=url,
                      WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET, **config)
    db.init_app(app)
    LoginManager(app).user_loader(lambda user_id: db.session.get(User, int(user_id)))
    WeChatQR(app, db=db, user_model=User)
    with app.app_context():
        db.create_all()
        for number, (name, kind) in enumerate(
                [("alice", User), ("bob", User), ("guest", Guest)], 1):
            db.session.add(kind(id=number, username=name))
        db.session.flush()
        identities = db.metadata.tables["wechat_qr_identity"]
        for number in (1, 2, 3):
            row = {"connection": "wechat", "openid": f"openid-{number}", "user_id": str(number)}
            if "user_key" in identities.c:
                row["user_key"] = number
            db.session.execute(sa.insert(identities).values(**row))
        db.session.commit()
    app.db, app.User, app.Guest = db, User, Guest  # type: ignore[attr-defined]
    return app


BULK_DELETES: dict[str, t.Callable[[t.Any, t.Any, t.Any], t.Any]] = {
    # "Purge the guests": the ORM adds the discriminator when it compiles the statement.
    "delete(Guest)": lambda db, User, Guest: db.session.execute(sa.delete(Guest)),
    "Guest.query...delete()": lambda db, User, Guest: Guest.query.filter(Guest.id > 0).delete(),
    "a bound parameter": lambda db, User, Guest: db.session.execute(
        sa.delete(User).where(User.id == sa.bindparam("uid")), {"uid": 3}),
    # The ORM's DELETE ... RETURNING of whole users (before: the hook read the wrapper's
    # table, which it has none of, and the host's statement failed with AttributeError).
    "select(User).from_statement(delete...returning)": lambda db, User, Guest: db.session.execute(
        sa.select(User).from_statement(sa.delete(User).where(User.id == 3).returning(User))
    ).all(),
}


@pytest.mark.parametrize("foreign_key", [True, False])
@pytest.mark.parametrize("how", list(BULK_DELETES))
def test_a_bulk_delete_removes_exactly_its_users_identities(
        tmp_path: t.Any, database: Database, foreign_key: bool, how: str) -> None:
    """Before: the identities of every user went with ``delete(Guest)`` (the hook read the
    statement's WHERE without the criteria the ORM adds), and a bound parameter broke the
    host's own statement."""
    app = guests_host(database.url("guests"), tmp_path, WECHAT_QR_USER_FOREIGN_KEY=foreign_key)
    try:
        with app.app_context():
            BULK_DELETES[how](app.db, app.User, app.Guest)  # type: ignore[attr-defined]
            app.db.session.commit()  # type: ignore[attr-defined]
        assert sorted(row.username for row in all_users(app)) == ["alice", "bob"]
        assert sorted(identity_owners(app)) == ["1", "2"]
    finally:
        with app.app_context():
            app.db.session.remove()  # type: ignore[attr-defined]
            app.db.engine.dispose()  # type: ignore[attr-defined]


@pytest.mark.parametrize("foreign_key", [True, False])
def test_a_bulk_delete_the_orm_refuses_loses_no_identity(
        tmp_path: t.Any, database: Database, foreign_key: bool) -> None:
    """A host that catches the refusal and commits (before: every identity was gone)."""
    app = guests_host(database.url("guests"), tmp_path, WECHAT_QR_USER_FOREIGN_KEY=foreign_key)
    try:
        with app.app_context():
            db = app.db  # type: ignore[attr-defined]
            with pytest.raises(sa.exc.InvalidRequestError):
                db.session.execute(sa.delete(app.User), [{"id": 3}])  # type: ignore[attr-defined]
            db.session.commit()
        assert sorted(identity_owners(app)) == ["1", "2", "3"]
    finally:
        with app.app_context():
            app.db.session.remove()  # type: ignore[attr-defined]
            app.db.engine.dispose()  # type: ignore[attr-defined]


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)  # PostgreSQL: a real FK
def test_a_sqlite_trigger_dropped_by_a_batch_migration_comes_back_at_the_first_request(
        make_app: t.Callable[..., Flask], wechat_api: t.Any,
        caplog: pytest.LogCaptureFixture) -> None:
    """A host's Alembic batch migration of its user table drops the trigger with the old
    table; before, nothing noticed until the next ``db upgrade``, and a raw-SQL delete then
    handed the old WeChat login to the next user given the same id."""
    app = make_app()
    assert logged_in_user_id_after_login(app, wechat_api) is not None
    (victim,) = all_users(app)
    with app.app_context():
        db = app.db  # type: ignore[attr-defined]
        db.session.execute(sa.text("DROP TRIGGER wechat_qr_identity_user_deleted"))
        db.session.commit()
    # As after a restart: the batch migration ran between two runs of the app.
    app = make_app(SQLALCHEMY_DATABASE_URI=app.config["SQLALCHEMY_DATABASE_URI"])
    with caplog.at_level(logging.WARNING, "flask_wechat_qr"):
        app.test_client().get("/auth/wechat/qr")  # any request of the extension's
    assert "wechat_qr_identity_user_deleted that deletes" in caplog.text
    assert "was missing" in caplog.text
    delete_user_with_raw_sql(app, victim.id)
    assert identity_owners(app) == []


@pytest.mark.parametrize("key_type", ["integer", "uuid", "string"])
def test_the_schema_prints_for_mariadb_with_a_mock_engine(tmp_path: t.Any, key_type: str
                                                         ) -> None:
    """SQLAlchemy's recipe for printing the CREATE statements (a mock engine, which answers
    no query) works for MariaDB/MySQL: the guard column's type is asked of the database
    only for text keys, and a mock's missing answer is the model's type (it was an
    AttributeError, for integer keys too)."""
    if key_type == "integer":
        app = make_test_app(tmp_path)
    else:
        app = make_keyed_host(f"sqlite:///{tmp_path / 'keyed.db'}", tmp_path, key_type)
    statements: list[str] = []
    mock = sa.create_mock_engine(
        "mysql+pymysql://", lambda sql, *_a, **_k: statements.append(
            str(sql.compile(dialect=mock.dialect))))
    with app.app_context():
        app.extensions["sqlalchemy"].metadata.create_all(mock, checkfirst=False)
    identity = next(s for s in statements if "CREATE TABLE wechat_qr_identity" in s)
    assert "user_key" in identity and "utf8mb4_bin" in identity
    dispose_engines(app)


#: Only there does the declared type differ from the model's.
@pytest.mark.parametrize("database", ["mariadb"], indirect=True)
def test_a_failed_create_table_leaves_the_guard_columns_type_as_the_model_says(
        database: Database, tmp_path: t.Any) -> None:
    """On MariaDB the guard column is declared in the user key's own character set for its
    CREATE TABLE only: when that CREATE TABLE fails, the mapped column still has the model's
    type (had it kept MariaDB's, the next create_all of the same models on another database
    failed: "no such collation sequence")."""
    app = make_keyed_host(database.url("keyed"), tmp_path, "string")
    identity = app.extensions["wechat_qr"].models.Identity.__table__
    model_type = identity.c.user_key.type
    with app.app_context():
        engine = app.db.engine  # type: ignore[attr-defined]
        with engine.begin() as conn:
            identity.drop(conn)
            conn.execute(sa.text("CREATE TABLE blocker (id INT PRIMARY KEY, k VARCHAR(40), "
                                 "CONSTRAINT fk_wechat_qr_identity_user_key FOREIGN KEY (k) "
                                 "REFERENCES user (id))"))
        with pytest.raises(sa.exc.OperationalError):
            identity.create(engine)
    assert identity.c.user_key.type is model_type
    dispose_engines(app)


#: A process whose own ``@compiles(ForeignKeyConstraint)`` is registered before the
#: extension is imported: the CREATE TABLE of the identity table, as printed.
EARLIER_COMPILER = """
import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

@compiles(sa.ForeignKeyConstraint)
def marked(constraint, compiler, **kw):
    return "/* the site's */ " + compiler.visit_foreign_key_constraint(constraint, **kw)

from flask import Flask
from flask_login import LoginManager, UserMixin
from flask_sqlalchemy import SQLAlchemy
from flask_wechat_qr import WeChatQR

db = SQLAlchemy()

class User(db.Model, UserMixin):
    id = db.Column(db.Integer, primary_key=True)

app = Flask("earlier")
app.config.update(TESTING=True, SECRET_KEY="k" * 32, SQLALCHEMY_DATABASE_URI="sqlite://",
                  WECHAT_QR_SANDBOX=True)
db.init_app(app)
LoginManager(app)
WeChatQR(app, db=db, user_model=User)
with app.app_context():
    print(sa.schema.CreateTable(db.metadata.tables["wechat_qr_identity"]).compile(db.engine))
"""


def test_a_sites_own_foreign_key_compiler_registered_earlier_is_kept() -> None:
    """SQLAlchemy keeps one ``@compiles`` per dialect: the extension's, which leaves out a
    foreign key the database cannot keep, would have replaced one the site registered
    first (found in review). It calls it instead."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", EARLIER_COMPILER], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "/* the site's */ CONSTRAINT fk_wechat_qr_identity_user_key" in done.stdout


def test_a_composite_user_key_names_its_table_with_its_schema(
        tmp_path: t.Any, caplog: pytest.LogCaptureFixture) -> None:
    """The user table in a schema of its own is named as the database knows it (before:
    ``'member'``)."""
    composite_key_host(tmp_path, caplog, schema="auth")
    said = [r.getMessage() for r in caplog.records if "foreign key" in r.getMessage()]
    assert len(said) == 1 and "the 'auth.member' table's primary key is not one column" \
        in said[0], said
