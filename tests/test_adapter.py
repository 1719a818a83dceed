"""The default :class:`AccountAdapter` against host user models of real shapes: a user a
WeChat login created has no password, and a host's ``check_password`` may raise on one."""

from __future__ import annotations

import contextlib
import logging
import re
import typing as t
import uuid

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_login import LoginManager, UserMixin
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column
from support import (
    APP_ID,
    APP_SECRET,
    OPENID,
    OPENID_2,
    UNIONID_2,
    Database,
    all_identities,
    all_users,
    arrive,
    bind_as,
    bind_page,
    browser_copy,
    dispose_engines,
    each_code_once,
    error_name,
    find_tags,
    logged_in_user_id,
    login_with_wechat,
    start_login,
    with_csrf_token_route,
)
from werkzeug.local import LocalProxy
from werkzeug.security import check_password_hash, generate_password_hash

from flask_wechat_qr import AccountAdapter, ConfigurationError, WeChatQR, signals
from flask_wechat_qr.errors import AccountDisabled

WRONG = "Wrong username or password."


def flasky_host(tmp_path: t.Any, **config: t.Any) -> Flask:
    """A host written the way Flask tutorials write one: ``check_password`` hands the stored
    hash to Werkzeug, which raises on ``None`` (a user with no password)."""
    db = SQLAlchemy()

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        username = db.Column(db.String(80), unique=True, nullable=False)
        password_hash = db.Column(db.String(255))

        def check_password(self, password: str) -> bool:
            return check_password_hash(self.password_hash, password)  # type: ignore[arg-type]

    app = Flask("flasky_host", root_path=str(tmp_path))
    app.config.update(TESTING=True, SECRET_KEY="x" * 32,
                      SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'flasky.db'}",
                      WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET,
                      **{"WECHAT_QR_ASSOCIATION": "ask_binding", **config})
    db.init_app(app)
    LoginManager(app).user_loader(lambda user_id: db.session.get(User, int(user_id)))
    WeChatQR(app, db=db, user_model=User)
    with app.app_context():
        db.create_all()
        db.session.add(User(username="alice", password_hash=generate_password_hash("alice-pw")))
        db.session.add(User(username="wechat-0a1b2c3d4e"))  # made by a WeChat login
        db.session.commit()
    app.db, app.User = db, User  # type: ignore[attr-defined]
    return with_csrf_token_route(app)


def at_the_bind_page(app: Flask, wechat_api: t.Any, language: str | None = None,
                     **arrival: t.Any) -> tuple[t.Any, str, str]:
    """A browser that logged in with a WeChat account nobody owns (``arrival``: its ids):
    its client, the bind page's HTML and its CSRF token."""
    client = app.test_client()
    if language is not None:
        client.environ_base["HTTP_ACCEPT_LANGUAGE"] = language
    arrive(client, wechat_api, **arrival)
    html, token = bind_page(client)
    return client, html, token


def login_input(html: str) -> dict[str, str | None]:
    """The bind page's first field (the form's ``username``)."""
    (field,) = [tag for tag in find_tags(html, "input") if tag.get("name") == "username"]
    return field


def wrong_page(resp: t.Any) -> bool:
    return resp.status_code == 400 and WRONG in resp.get_data(as_text=True)


def test_binding_to_a_user_without_password_is_a_wrong_password_not_a_500(
        tmp_path: t.Any, wechat_api: t.Any) -> None:
    app = flasky_host(tmp_path)
    client, _html, token = at_the_bind_page(app, wechat_api)
    for password in ("", "guess", "alice-pw"):
        assert wrong_page(bind_as(client, token, "wechat-0a1b2c3d4e", password))
    assert all_identities(app) == []
    assert logged_in_user_id(client) is None
    # The host's own check still works for a user who has a password.
    resp = bind_as(client, token, "alice", "alice-pw")
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert [i.user_id for i in all_identities(app)] == ["1"]


def test_a_raising_check_password_counts_as_wrong_and_is_logged(
        tmp_path: t.Any, wechat_api: t.Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    app = flasky_host(tmp_path)

    def broken(self: t.Any, password: str) -> bool:
        raise ValueError("unsupported hash type")

    monkeypatch.setattr(app.User, "check_password", broken)  # type: ignore[attr-defined]
    client, _html, token = at_the_bind_page(app, wechat_api, openid=OPENID_2,
                                            unionid=UNIONID_2)
    with caplog.at_level(logging.WARNING, "flask_wechat_qr"):
        assert wrong_page(bind_as(client, token, "alice", "alice-pw"))
    assert [r.getMessage() for r in caplog.records] == [
        "check_password of User raised ValueError; counted as a wrong password"]
    assert "alice-pw" not in caplog.text


def test_a_wechat_created_user_cannot_be_proven_by_any_password(
        tmp_path: t.Any, wechat_api: t.Any) -> None:
    """End to end: a first WeChat login makes a user (no password); nobody can then bind
    another WeChat to it by typing its username."""
    app = flasky_host(tmp_path, WECHAT_QR_ASSOCIATION="field_matching")
    first = app.test_client()
    assert login_with_wechat(first, wechat_api).status_code == 302
    with app.app_context():
        user_id = int(all_identities(app)[0].user_id)
        created = app.db.session.get(app.User, user_id)  # type: ignore[attr-defined]
        assert created.password_hash is None
        adapter = AccountAdapter(app.db, app.User)  # type: ignore[attr-defined]
        for password in ("", "None", "x"):
            assert adapter.authenticate(created.username, password) is None


def _user_with(**attributes: t.Any) -> object:
    cls = type("HostUser", (), attributes)
    return cls()


@pytest.mark.parametrize(("attributes", "expected"), [
    ({"password_hash": "pbkdf2:sha256:..."}, True),
    ({"password_hash": None}, False),
    ({"password_hash": ""}, False),
    ({"password": "bcrypt$..."}, True),
    ({"password": None}, False),
    # Flask tutorials: a write-only ``password`` property next to the hash column.
    ({"password": property(lambda self: (_ for _ in ()).throw(AttributeError("write only"))),
      "password_hash": "pbkdf2:..."}, True),
    ({"check_password": lambda self, password: False}, True),  # the host's method decides
    ({}, False),  # no password column at all: WeChat is the only way in
])
def test_has_password_reads_the_common_shapes(attributes: dict[str, t.Any],
                                              expected: bool) -> None:
    user = _user_with(**attributes)
    assert AccountAdapter().has_password(user) is expected
    # Flask-Login's current_user is a proxy of the user: the same answer through it.
    assert AccountAdapter().has_password(LocalProxy(lambda: user)) is expected


# --- a user model the default create_user cannot fill ----------------------------------------


def shaped_host(tmp_path: t.Any, columns: dict[str, t.Any], adapter: type | None = None,
                url: str | None = None, **config: t.Any) -> Flask:
    """A host whose user model has ``columns`` (besides an integer ``id``), on SQLite
    unless given a database ``url``."""
    db = SQLAlchemy()
    namespace = {"__tablename__": "account", "id": db.Column(db.Integer, primary_key=True),
                 **columns}
    User = type("User", (UserMixin, db.Model), namespace)
    app = Flask("shaped_host", root_path=str(tmp_path))
    app.config.update(TESTING=True, SECRET_KEY="x" * 32,
                      SQLALCHEMY_DATABASE_URI=url or f"sqlite:///{tmp_path / 'shaped.db'}",
                      WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET, **config)
    db.init_app(app)
    LoginManager(app).user_loader(lambda user_id: db.session.get(User, int(user_id)))
    if adapter is None:
        WeChatQR(app, db=db, user_model=User)
    else:
        WeChatQR(app, db=db, adapter=adapter(db, User))
    with app.app_context():
        db.create_all()
    app.db, app.User = db, User  # type: ignore[attr-defined]
    return app


def required_email() -> dict[str, t.Any]:
    return {"username": sa.Column(sa.String(80), nullable=False, unique=True),
            "email": sa.Column(sa.String(120), nullable=False, unique=True),
            "password_hash": sa.Column(sa.String(255))}


def test_a_required_column_the_default_adapter_cannot_fill_stops_startup(
        tmp_path: t.Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        shaped_host(tmp_path, required_email())
    error = info.value
    assert error.key == "user_model"
    assert "account.email" in error.problem and "username" not in error.problem
    assert "override create_user" in error.fix and "WECHAT_QR_LOGIN_ONLY" in error.fix


def test_the_documented_create_user_fixes_it(tmp_path: t.Any, wechat_api: t.Any) -> None:
    class Adapter(AccountAdapter):  # as docs/hooks.rst shows it
        def create_user(self, connection: t.Any, profile: t.Any) -> t.Any:
            user = super().create_user(connection, profile)
            user.email = f"{profile.openid}@wechat.invalid"
            return user

    app = shaped_host(tmp_path, required_email(), adapter=Adapter)
    client = app.test_client()
    assert login_with_wechat(client, wechat_api).status_code == 302
    with app.app_context():
        (user,) = app.db.session.execute(sa.select(app.User)).scalars()  # type: ignore[attr-defined]
        assert user.email.endswith("@wechat.invalid") and user.username.startswith("wechat-")
    assert logged_in_user_id(client) == str(user.id)


def test_login_only_sites_never_create_users_and_start(tmp_path: t.Any) -> None:
    assert shaped_host(tmp_path, required_email(), WECHAT_QR_LOGIN_ONLY=True)


def test_a_profile_longer_than_the_sites_columns_still_logs_in(
        tmp_path: t.Any, database: Database, wechat_api: t.Any,
        caplog: pytest.LogCaptureFixture) -> None:
    """A site's ``nickname`` and ``avatar_url`` columns sized as it saw fit
    (``db.String(8)``). Before: the whole profile copied, which PostgreSQL refuses
    ("value too long"): a bare 500 for that person at every first login. Now the nickname
    is cut to the column and an avatar URL that does not fit is left out (a cut URL shows
    no picture), said in the log."""
    columns = {"nickname": sa.Column(sa.Unicode(8)), "avatar_url": sa.Column(sa.String(40))}
    app = shaped_host(tmp_path, columns, url=database.url("sized"))
    try:
        client = app.test_client()
        with caplog.at_level(logging.WARNING, "flask_wechat_qr"):
            resp = login_with_wechat(client, wechat_api, nickname="一二三四五六七八九十🐼")
        assert resp.status_code == 302, resp.get_data(as_text=True)
        (user,) = all_users(app)
        assert (user.nickname, user.avatar_url) == ("一二三四五六七八", None)
        assert logged_in_user_id(client) == str(user.id)
        assert "User.avatar_url holds at most 40 characters" in caplog.text
        (identity,) = all_identities(app)
        assert identity.nickname == "一二三四五六七八九十🐼"  # the extension's own row keeps it
    finally:
        dispose_engines(app)


def test_a_made_up_username_fits_a_short_username_column(
        tmp_path: t.Any, database: Database, wechat_api: t.Any) -> None:
    """A required ``username = db.String(12)``. Before: the default ``create_user`` made
    "wechat-" and ten hexadecimal digits, which PostgreSQL refuses: a bare 500 at every
    first login."""
    columns = {"username": sa.Column(sa.String(12), unique=True, nullable=False)}
    app = shaped_host(tmp_path, columns, url=database.url("short"))
    try:
        client = app.test_client()
        assert login_with_wechat(client, wechat_api).status_code == 302
        (user,) = all_users(app)
        assert len(user.username) == 12 and user.username.isalnum()
        assert logged_in_user_id(client) == str(user.id)
    finally:
        dispose_engines(app)


class Tracking(AccountAdapter):  # type: ignore[type-arg]
    """A ``login_user`` that records each login (as Flask-Security's ``SECURITY_TRACKABLE``
    does) and then reads the database (its lazy ``roles``), which autoflushes."""

    def login_user(self, user: t.Any) -> None:
        super().login_user(user)
        user.logins = (user.logins or 0) + 1
        self._require_db().session.execute(sa.select(sa.literal(1)))


def tracking_host(tmp_path: t.Any, database: Database, adapter: type = Tracking) -> Flask:
    columns = {"username": sa.Column(sa.String(40), unique=True, nullable=False),
               "logins": sa.Column(sa.Integer)}
    return shaped_host(tmp_path, columns, adapter=adapter, url=database.url("tracking"))


def test_what_login_user_records_is_kept_once_per_login(
        tmp_path: t.Any, database: Database, wechat_api: t.Any) -> None:
    """Committed after the hook (before: lost with the request's session); WeChat's double
    redirect, which logs the same login in again, does not count it twice."""
    app = tracking_host(tmp_path, database)
    try:
        assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
        assert all_users(app)[0].logins == 1
        browser = app.test_client()  # another computer: logged out there
        state = start_login(browser)
        twin = browser_copy(app, browser)
        each_code_once(wechat_api)
        first = browser.get("/auth/wechat/callback", query_string={"code": "C1", "state": state})
        second = twin.get("/auth/wechat/callback", query_string={"code": "C2", "state": state})
        assert (first.status_code, second.status_code) == (302, 302)
        (user,) = all_users(app)
        assert logged_in_user_id(twin) == str(user.id) and user.logins == 2
    finally:
        dispose_engines(app)


@pytest.mark.parametrize("flushed_by_the_hook", [False, True])
def test_a_write_of_login_user_the_database_refuses_still_logs_in(
        tmp_path: t.Any, database: Database, wechat_api: t.Any,
        caplog: pytest.LogCaptureFixture, flushed_by_the_hook: bool) -> None:
    """A host ``login_user`` that writes (login tracking) something the database refuses,
    at the commit after it or, where the hook's own query autoflushes it, inside it. The
    login is committed before: the person is logged in, the write rolled back and said in
    the log (before: the error went up, a 500 after a login that had happened)."""
    class Refused(AccountAdapter):  # type: ignore[type-arg]
        def login_user(self, user: t.Any) -> None:
            super().login_user(user)
            user.username = None  # NOT NULL
            if flushed_by_the_hook:
                self._require_db().session.execute(sa.select(sa.literal(1)))

    app = tracking_host(tmp_path, database, Refused)
    try:
        client = app.test_client()
        with caplog.at_level(logging.WARNING, "flask_wechat_qr"):
            resp = login_with_wechat(client, wechat_api)
        assert resp.status_code == 302, resp.get_data(as_text=True)
        (user,) = all_users(app)
        assert user.username and logged_in_user_id(client) == str(user.id)
        assert "was not saved: the database refused it" in caplog.text
        assert len(all_identities(app)) == 1
    finally:
        dispose_engines(app)


def test_a_hook_that_refuses_the_user_leaves_nothing_written(
        tmp_path: t.Any, database: Database, wechat_api: t.Any) -> None:
    """A ``login_user`` that records the attempt and then refuses (``AccountDisabled``):
    nothing it wrote stays, even where a ``login_failed`` receiver commits."""
    class Refusing(Tracking):
        def login_user(self, user: t.Any) -> None:
            user.logins = 99
            raise AccountDisabled()

    app = tracking_host(tmp_path, database, Refusing)

    def commits(sender: t.Any, **extra: t.Any) -> None:
        app.db.session.commit()  # type: ignore[attr-defined]

    try:
        with signals.login_failed.connected_to(commits, sender=app):
            resp = login_with_wechat(app.test_client(), wechat_api)
        assert resp.status_code == 403
        (user,) = all_users(app)
        assert user.logins is None
    finally:
        dispose_engines(app)


def test_made_up_usernames_of_a_short_column_are_random_in_every_character() -> None:
    """Cut to two characters, a prefixed name (``wx…``) was the same for everyone: every
    first login after the first one broke the column's unique constraint."""
    from flask_wechat_qr.adapter import _made_up_username

    assert _made_up_username(None).startswith("wechat-")
    assert len(_made_up_username(17)) == 17 and _made_up_username(17).startswith("wechat-")
    names = {_made_up_username(2) for _ in range(200)}
    assert len(names) > 100 and all(len(name) == 2 and name.isalnum() for name in names)


def test_a_cut_nickname_does_not_end_in_half_an_emoji(
        tmp_path: t.Any, database: Database, wechat_api: t.Any) -> None:
    """Cut inside an emoji sequence (a zero-width joiner, a variation selector), the rest
    is dropped with it."""
    columns = {"nickname": sa.Column(sa.Unicode(4))}
    app = shaped_host(tmp_path, columns, url=database.url("emoji"))
    try:
        client = app.test_client()
        resp = login_with_wechat(client, wechat_api, nickname="阿毛\u2764\ufe0f\u200d\U0001f525")
        assert resp.status_code == 302, resp.get_data(as_text=True)
        (user,) = all_users(app)
        assert user.nickname == "阿毛\u2764"
    finally:
        dispose_engines(app)


def columns_named(tmp_path: t.Any, model: type, db: SQLAlchemy) -> list[str]:
    """The columns ``init_app`` says the default ``create_user`` cannot fill (none: it
    starts)."""
    app = Flask("model_host", root_path=str(tmp_path))
    app.config.update(TESTING=True, SECRET_KEY="x" * 32, SQLALCHEMY_DATABASE_URI="sqlite://",
                      WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET)
    db.init_app(app)
    LoginManager(app)
    try:
        WeChatQR(app, db=db, user_model=model)
    except ConfigurationError as error:
        return re.findall(r"\b\w+\.\w+\b", error.problem.split(" (NOT NULL")[0])
    return []


@pytest.mark.parametrize(("columns", "named"), [
    ({"email": sa.Column(sa.String(120), nullable=False, default="")}, []),
    ({"email": sa.Column(sa.String(120), nullable=False, server_default="")}, []),
    ({"created": sa.Column(sa.DateTime, nullable=False, default=sa.func.now())}, []),
    ({"email": sa.Column(sa.String(120))}, []),  # nullable
    ({"email": sa.Column(sa.String(120), nullable=False),
      "role": sa.Column(sa.String(20), nullable=False)}, ["account.email", "account.role"]),
])
def test_which_columns_need_a_create_user(tmp_path: t.Any, columns: dict[str, t.Any],
                                          named: list[str]) -> None:
    db = SQLAlchemy()
    model = type("User", (db.Model,), {"__tablename__": "account",
                                        "id": db.Column(db.Integer, primary_key=True),
                                        **columns})
    assert columns_named(tmp_path, model, db) == named


def test_generated_and_inherited_keys_need_nothing(tmp_path: t.Any) -> None:
    db = SQLAlchemy()

    class Person(db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Uuid, primary_key=True, default=uuid.uuid4)
        kind = db.Column(db.String(20))
        __mapper_args__ = {"polymorphic_on": kind, "polymorphic_identity": "person"}

    class Member(Person):
        id = db.Column(db.Uuid, db.ForeignKey(Person.id), primary_key=True)
        __mapper_args__ = {"polymorphic_identity": "member"}

    class Handle(db.Model):  # type: ignore[name-defined,misc]
        handle = db.Column(db.String(40), primary_key=True)  # the site must choose one

    assert columns_named(tmp_path / "a", Member, db) == []
    assert columns_named(tmp_path / "b", Handle, db) == ["handle.handle"]


@pytest.mark.parametrize("model", ["User", "Member"])
def test_a_required_discriminator_needs_nothing(tmp_path: t.Any, wechat_api: t.Any,
                                                model: str) -> None:
    """SQLAlchemy 2.0's typed inheritance (``type: Mapped[str]``, so NOT NULL, with
    ``polymorphic_on``): SQLAlchemy sets the discriminator when the object is made. Before,
    ``init_app`` refused the site ("required column(s) user.type", a helper's hunt of host
    shapes, session 36)."""
    db = SQLAlchemy()

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        id: Mapped[int] = mapped_column(primary_key=True)
        type: Mapped[str]
        __mapper_args__ = {"polymorphic_on": "type", "polymorphic_identity": "user"}

    class Member(User):
        __mapper_args__ = {"polymorphic_identity": "member"}

    user_model = {"User": User, "Member": Member}[model]
    app = Flask("typed_inheritance", root_path=str(tmp_path))
    app.config.update(TESTING=True, SECRET_KEY="x" * 32,
                      SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'typed.db'}",
                      WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET)
    db.init_app(app)
    LoginManager(app).user_loader(lambda user_id: db.session.get(user_model, int(user_id)))
    WeChatQR(app, db=db, user_model=user_model)
    with app.app_context():
        db.create_all()
    client = app.test_client()
    assert login_with_wechat(client, wechat_api).status_code == 302
    with app.app_context():
        (made,) = db.session.scalars(sa.select(User)).all()
        assert (type(made).__name__, made.type) == (model, model.lower())


@pytest.fixture
def checked_hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The method of every hash the default ``authenticate`` checks, in order (what it
    does is recorded: a timing would be noise here)."""
    import flask_wechat_qr.adapter as adapter_module

    checked: list[str] = []
    real = adapter_module.check_password_hash

    def recording(pwhash: str, password: str) -> bool:
        checked.append(pwhash.split("$", 1)[0])
        return real(pwhash, password)

    monkeypatch.setattr(adapter_module, "check_password_hash", recording)
    return checked


def test_an_unknown_username_is_checked_against_a_hash_of_the_sites_own_method(
        tmp_path: t.Any, checked_hashes: list[str]) -> None:
    """A site whose hashes are pbkdf2 (an older Werkzeug's) checks them slower than the
    default scrypt: a dummy of another method told which usernames have a password
    (270 ms against 168 ms in the review)."""
    app = flasky_host(tmp_path)
    with app.app_context():
        alice = app.db.session.execute(  # type: ignore[attr-defined]
            sa.select(app.User).filter_by(username="alice")).scalar_one()  # type: ignore[attr-defined]
        alice.password_hash = generate_password_hash("alice-pw", method="pbkdf2:sha256:1000")
        app.db.session.commit()  # type: ignore[attr-defined]
    with app.app_context():
        adapter = AccountAdapter(app.db, app.User)  # type: ignore[attr-defined]
        adapter.authenticate("alice", "wrong")  # checked by the host's own method
        adapter.authenticate("nobody", "wrong")
        adapter.authenticate("wechat-0a1b2c3d4e", "wrong")
    assert checked_hashes == ["pbkdf2:sha256:1000", "pbkdf2:sha256:1000"]


# --- sites whose people log in by e-mail (ask binding) --------------------------------------


def email_site() -> dict[str, t.Any]:
    """An e-mail and password site: no username column."""
    return {"email": sa.Column(sa.String(120), unique=True),
            "password_hash": sa.Column(sa.String(255))}


def add_account(app: Flask, **fields: t.Any) -> None:
    with app.app_context():
        app.db.session.add(app.User(**fields))  # type: ignore[attr-defined]
        app.db.session.commit()  # type: ignore[attr-defined]


def test_ask_binding_without_the_login_field_column_stops_startup(tmp_path: t.Any) -> None:
    """Before: the site started, and every person got "Wrong username or password." for
    their right e-mail and password, five times, then a 429 that blocked the account."""
    with pytest.raises(ConfigurationError) as info:
        shaped_host(tmp_path, email_site(), WECHAT_QR_ASSOCIATION="ask_binding")
    error = info.value
    assert error.key == "WECHAT_QR_ASSOCIATION (wechat)"
    assert "'username' attribute" in error.problem and "User has not" in error.problem
    assert 'login_field = "email"' in error.fix and "authenticate" in error.fix


def test_ask_binding_without_any_password_stops_startup(tmp_path: t.Any) -> None:
    class Adapter(AccountAdapter):
        login_field = "email"

    with pytest.raises(ConfigurationError) as info:
        shaped_host(tmp_path, {"email": sa.Column(sa.String(120))}, adapter=Adapter,
                    WECHAT_QR_ASSOCIATION="ask_binding")
    assert "no password_hash or password column and no check_password" in info.value.problem


def test_an_overridden_authenticate_is_the_sites_to_judge(tmp_path: t.Any) -> None:
    class Adapter(AccountAdapter):
        def authenticate(self, username: str, password: str) -> t.Any:
            return None

    assert shaped_host(tmp_path, email_site(), adapter=Adapter,
                       WECHAT_QR_ASSOCIATION="ask_binding")
    # Other ways of association never ask for a password.
    (tmp_path / "off").mkdir()
    assert shaped_host(tmp_path / "off", email_site())


def email_login_host(tmp_path: t.Any) -> Flask:
    class Adapter(AccountAdapter):
        login_field = "email"

    app = shaped_host(tmp_path, email_site(), adapter=Adapter,
                      WECHAT_QR_ASSOCIATION="ask_binding")
    add_account(app, email="alice@example.com", password_hash=generate_password_hash("pw"))
    return with_csrf_token_route(app)


def test_the_bind_page_asks_for_the_email_and_says_so_when_wrong(
        tmp_path: t.Any, wechat_api: t.Any) -> None:
    app = email_login_host(tmp_path)
    client, html, token = at_the_bind_page(app, wechat_api)
    field = login_input(html)
    assert field["type"] == "email" and field["autocomplete"] == "username"
    assert ">Email<br>" in html and "Username" not in html
    resp = bind_as(client, token, "alice@example.com", "not-it")
    assert resp.status_code == 400
    assert "Wrong email or password." in resp.get_data(as_text=True)
    # In Chinese, the same page and message.
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "zh-CN"
    html, token = bind_page(client)
    assert "邮箱<br>" in html and "用户名" not in html
    assert "邮箱或密码错误。" in bind_as(client, token, "alice@example.com", "x").get_data(
        as_text=True)


def test_an_email_is_found_as_people_type_it(tmp_path: t.Any, wechat_api: t.Any) -> None:
    """Spaces a phone's keyboard adds, and capitals, still find the stored address."""
    client, _html, token = at_the_bind_page(email_login_host(tmp_path), wechat_api)
    resp = bind_as(client, token, "  Alice@Example.COM ", "pw")
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert logged_in_user_id(client) == "1"


def test_werkzeug_hashes_in_a_password_column_prove_the_account(tmp_path: t.Any) -> None:
    """``password`` is where the default looks for a password (``has_password``, and the
    check at start-up), so it is where it checks one. Before: only ``password_hash`` was
    ever checked, and every right password of such a site was wrong."""
    class Adapter(AccountAdapter):
        login_field = "email"

    app = shaped_host(tmp_path, {"email": sa.Column(sa.String(120), unique=True),
                                 "password": sa.Column(sa.String(255))},
                      adapter=Adapter, WECHAT_QR_ASSOCIATION="ask_binding")
    add_account(app, email="alice@example.com", password=generate_password_hash("pw"))
    with app.app_context():
        adapter = Adapter(app.db, app.User)  # type: ignore[attr-defined]
        assert adapter.authenticate("alice@example.com", "pw").email == "alice@example.com"
        assert adapter.authenticate("alice@example.com", "not-it") is None


class EmailLogin(AccountAdapter):  # type: ignore[type-arg]
    login_field = "email"


def argon2_site(tmp_path: t.Any) -> Flask:
    """People log in by e-mail; alice's password is another library's hash (Flask-Security's
    argon2 format), in a ``password`` column."""
    app = shaped_host(tmp_path, {"email": sa.Column(sa.String(120), unique=True),
                                 "password": sa.Column(sa.String(255))},
                      adapter=EmailLogin, WECHAT_QR_ASSOCIATION="ask_binding")
    add_account(app, email="alice@example.com",
                password="$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo")
    return app


def test_a_hash_werkzeug_cannot_read_is_wrong_and_says_what_to_override(
        tmp_path: t.Any, caplog: pytest.LogCaptureFixture) -> None:
    """Another library's hash (here Flask-Security's argon2 format) proves nothing, and the
    log says why, once: before, every attempt was a silent "wrong password"."""
    app = argon2_site(tmp_path)
    with app.app_context(), caplog.at_level(logging.ERROR, "flask_wechat_qr"):
        adapter = EmailLogin(app.db, app.User)  # type: ignore[attr-defined]
        for _ in range(2):
            assert adapter.authenticate("alice@example.com", "pw") is None
    [record] = caplog.records
    assert record.getMessage().startswith("User's stored password is not a Werkzeug hash")
    assert "Override authenticate" in record.getMessage()


def test_a_hash_werkzeug_cannot_read_takes_as_long_as_an_unknown_username(
        tmp_path: t.Any, checked_hashes: list[str]) -> None:
    """Refused at once, an account whose hash the default check cannot read answered in
    1 ms where an unknown address took 108-132 ms (the review): it told which e-mail
    addresses have accounts. Each now checks one dummy hash."""
    app = argon2_site(tmp_path)
    with app.app_context():
        adapter = EmailLogin(app.db, app.User)  # type: ignore[attr-defined]
        assert adapter.authenticate("alice@example.com", "pw") is None
        known = list(checked_hashes)
        checked_hashes.clear()
        assert adapter.authenticate("nobody@example.com", "pw") is None
    assert known == checked_hashes and len(checked_hashes) == 1


def test_two_accounts_with_one_value_prove_neither(tmp_path: t.Any) -> None:
    """A login column that is not unique: binding to whichever row came first would hand the
    WeChat account to the wrong person (before: a 500, MultipleResultsFound)."""
    columns = {"email": sa.Column(sa.String(120)), "password_hash": sa.Column(sa.String(255))}

    class Adapter(AccountAdapter):
        login_field = "email"

    app = shaped_host(tmp_path, columns, adapter=Adapter)
    for _ in range(2):
        add_account(app, email="shared@example.com", password_hash=generate_password_hash("pw"))
    add_account(app, email="Mixed@Example.com", password_hash=generate_password_hash("pw"))
    add_account(app, email="mixed@example.com", password_hash=generate_password_hash("pw"))
    with app.app_context():
        adapter = app.extensions["wechat_qr"].adapter
        assert adapter.authenticate("shared@example.com", "pw") is None
        # As typed wins over the lower-case copy; either alone is found.
        assert adapter.authenticate("Mixed@Example.com", "pw").id == 3
        assert adapter.authenticate("mixed@example.com", "pw").id == 4
        assert adapter.authenticate("MIXED@EXAMPLE.COM", "pw").id == 4


@pytest.mark.parametrize(("login_field", "label", "input_type", "wrong"), [
    ("username", "用户名", "text", "用户名或密码错误。"),
    ("phone", "手机号", "tel", "手机号或密码错误。"),
    ("member_no", "账号", "text", "账号或密码错误。"),
])
def test_each_login_field_has_its_label_keyboard_and_message(
        tmp_path: t.Any, wechat_api: t.Any, login_field: str, label: str, input_type: str,
        wrong: str) -> None:
    class Adapter(AccountAdapter):
        pass

    Adapter.login_field = login_field
    app = with_csrf_token_route(shaped_host(
        tmp_path, {login_field: sa.Column(sa.String(40), unique=True),
                   "password_hash": sa.Column(sa.String(255))},
        adapter=Adapter, WECHAT_QR_ASSOCIATION="ask_binding"))
    add_account(app, **{login_field: "13800138000", "password_hash":
                        generate_password_hash("pw")})
    client, html, token = at_the_bind_page(app, wechat_api, language="zh-CN")
    field = login_input(html)
    assert field["type"] == input_type and f"{label}<br>" in html
    assert wrong in bind_as(client, token, "13800138000", "x").get_data(as_text=True)
    assert bind_as(client, token, "13800138000", "pw").status_code == 302
    assert logged_in_user_id(client) == "1"


@pytest.mark.parametrize("column", [sa.String(40), sa.BigInteger()],
                         ids=["text", "integer"])
def test_wrong_passwords_count_per_account_whatever_the_phone_spelling(
        tmp_path: t.Any, wechat_api: t.Any, column: t.Any) -> None:
    """The lookup takes ``138 0013 8000``, ``+8613800138000`` (and, in an integer column,
    ``013800138000``) as one account; the per-account limit of wrong passwords counted
    each spelling as another account (57 guesses at one account were never blocked)."""
    class Adapter(AccountAdapter):
        login_field = "phone"

    app = with_csrf_token_route(shaped_host(
        tmp_path, {"phone": sa.Column(column, unique=True),
                   "password_hash": sa.Column(sa.String(255))},
        adapter=Adapter, WECHAT_QR_ASSOCIATION="ask_binding",
        WECHAT_QR_BIND_ATTEMPTS_PER_ACCOUNT=3, WECHAT_QR_BIND_ATTEMPTS_PER_ADDRESS=50,
        WECHAT_QR_BIND_ATTEMPTS_PER_BINDING=50))
    add_account(app, phone=13800138000 if isinstance(column, sa.BigInteger) else "13800138000",
                password_hash=generate_password_hash("pw"))
    client, _html, token = at_the_bind_page(app, wechat_api)
    spellings = ["138 0013 8000", "+8613800138000", "0086 138-0013-8000"]
    if isinstance(column, sa.BigInteger):
        spellings[2] = "013800138000"
    for spelling in spellings:
        assert bind_as(client, token, spelling, "guess").status_code == 400, spelling
    blocked = bind_as(client, token, "+86 (138) 0013 8000", "pw")  # right, and blocked
    assert blocked.status_code == 429 and error_name(blocked) == "BindingBlocked"
    # A number nobody has is counted the same way: the block tells no one which exist.
    for spelling in ("137 0013 7000", "+8613700137000", "0086-137-0013-7000"):
        assert bind_as(client, token, spelling, "guess").status_code == 400, spelling
    assert bind_as(client, token, "13700137000", "guess").status_code == 429
    # Another account is not blocked.
    add_account(app, phone=13900139000 if isinstance(column, sa.BigInteger) else "13900139000",
                password_hash=generate_password_hash("pw2"))
    assert bind_as(client, token, "139 0013 9000", "pw2").status_code == 302


def logged_account_not_saved(client: t.Any, wechat_api: t.Any,
                             caplog: pytest.LogCaptureFixture) -> str:
    """A first login the database refuses ends on the ``AccountNotSaved`` page: the one
    line it logs at ``ERROR``."""
    with caplog.at_level(logging.INFO, "flask_wechat_qr"):
        resp = login_with_wechat(client, wechat_api)
    assert resp.status_code == 500
    assert error_name(resp) == "AccountNotSaved"
    assert "This site could not save your account." in resp.get_data(as_text=True)
    (logged,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    return logged.getMessage()


@pytest.mark.parametrize("database", ["postgresql", "mariadb"], indirect=True)
def test_a_value_too_long_for_its_column_ends_on_the_page_and_a_log_line(
        tmp_path: t.Any, database: t.Any, wechat_api: t.Any,
        caplog: pytest.LogCaptureFixture) -> None:
    """A ``create_user`` that puts the nickname in a shorter column (``username``, 12
    characters) than WeChat's nickname: PostgreSQL and MariaDB refuse it (SQLite keeps
    it). Before: a bare 500 "Internal Server Error", and the repeated callback another."""
    class Adapter(AccountAdapter):
        def create_user(self, connection: t.Any, profile: t.Any) -> t.Any:
            user = super().create_user(connection, profile)
            user.username = f"{profile.nickname} of WeChat"  # the site's own idea
            return user

    app = shaped_host(tmp_path, {"username": sa.Column(sa.String(12)),
                                 "nickname": sa.Column(sa.Unicode(255))},
                      adapter=Adapter, url=database.url("too_long"))
    try:
        message = logged_account_not_saved(app.test_client(), wechat_api, caplog)
        assert "too long" in message.lower(), message
        assert "does not fit its column" in message, message
        with app.app_context():
            assert app.db.session.execute(  # type: ignore[attr-defined]
                sa.select(sa.func.count()).select_from(app.User)).scalar() == 0  # type: ignore[attr-defined]
    finally:
        with app.app_context():
            app.db.engine.dispose()  # type: ignore[attr-defined]


def test_a_user_the_database_refuses_ends_on_a_page_and_a_log_line_that_name_the_column(
        tmp_path: t.Any, wechat_api: t.Any, caplog: pytest.LogCaptureFixture) -> None:
    """A ``create_user`` that leaves a required column empty (start-up cannot see into an
    override). Before: the database's refusal, retried as if it were two logins racing,
    then a bare 500 "Internal Server Error"."""
    made = []

    class Adapter(AccountAdapter):
        def create_user(self, connection: t.Any, profile: t.Any) -> t.Any:
            user = super().create_user(connection, profile)
            user.email = f"{profile.openid}@wechat.invalid"  # and no password_hash
            made.append(user)
            return user

    columns = {**required_email(),
               "password_hash": sa.Column(sa.String(255), nullable=False)}
    app = shaped_host(tmp_path, columns, adapter=Adapter)
    client = app.test_client()
    message = logged_account_not_saved(client, wechat_api, caplog)
    assert "NOT NULL constraint failed: account.password_hash" in message
    assert "AccountAdapter.create_user must fill it" in message
    assert "@wechat.invalid" not in caplog.text  # the statement's values stay out of the log
    assert all_identities(app) == [] and logged_in_user_id(client) is None
    assert len(made) == 3  # tried as a race would be, then given up


def test_a_user_the_orm_cannot_save_ends_on_the_page_and_a_log_line(
        tmp_path: t.Any, wechat_api: t.Any, caplog: pytest.LogCaptureFixture) -> None:
    """A ``create_user`` that gives the user a related object that is None (a
    Flask-AppBuilder role looked up by a name the site does not have): SQLAlchemy refuses
    to flush before the database is asked. Before: a bare 500."""
    from sqlalchemy.orm import relationship

    class Adapter(AccountAdapter):
        def create_user(self, connection: t.Any, profile: t.Any) -> t.Any:
            user = super().create_user(connection, profile)
            user.reports.append(None)  # find_role("Member") found nothing
            return user

    app = shaped_host(tmp_path, {"manager_id": sa.Column(sa.ForeignKey("account.id")),
                                 "reports": relationship("User")}, adapter=Adapter)
    client = app.test_client()
    message = logged_account_not_saved(client, wechat_api, caplog)
    assert "SQLAlchemy said: FlushError: Can't flush None value found in collection" in message
    assert "AccountAdapter.create_user gave the user a related object that is None" in message
    assert all_identities(app) == [] and logged_in_user_id(client) is None


@contextlib.contextmanager
def bound_by(tmp_path: t.Any, database: Database, field: str, column: t.Any,
             value: t.Any) -> t.Iterator[t.Any]:
    """The adapter of an ask-binding site whose people log in by ``field`` (a ``column``),
    with one account whose ``field`` is ``value`` and whose password is "pw"."""
    class Adapter(AccountAdapter):
        login_field = field

    app = shaped_host(tmp_path, {field: column, "password_hash": sa.Column(sa.String(255))},
                      adapter=Adapter, url=database.url(field),
                      WECHAT_QR_ASSOCIATION="ask_binding")
    add_account(app, **{field: value, "password_hash": generate_password_hash("pw")})
    try:
        with app.app_context():
            yield app.extensions["wechat_qr"].adapter
    finally:
        dispose_engines(app)


def test_a_login_field_of_numbers_is_looked_up_as_a_number(
        tmp_path: t.Any, database: Database) -> None:
    """A phone number kept in an integer column: PostgreSQL refuses to compare it with
    text (before: a 500 at every bind attempt, the right number too). What phones and
    people add (spaces, dashes, +86) is taken off; what is no number finds nobody."""
    column = sa.Column(sa.BigInteger, unique=True)
    with bound_by(tmp_path, database, "phone", column, 13800138000) as adapter:
        for typed in ("13800138000", " 138-0013-8000 ", "+86 138 0013 8000"):
            assert adapter.authenticate(typed, "pw").phone == 13800138000, typed
        assert adapter.authenticate("13800138000", "no") is None
        assert adapter.authenticate("not a number", "pw") is None
        # A number no column of this type holds finds nobody (before: a 500, out of
        # range on PostgreSQL, too large on SQLite).
        assert adapter.authenticate("9" * 30, "pw") is None


def test_a_login_field_is_the_models_attribute_not_the_tables_column(
        tmp_path: t.Any) -> None:
    """The attribute, as the model names it: here a synonym of a column kept under another
    name (before: refused at start-up, as the lookup went by the table's column names);
    a plain Python property no query can use is refused."""
    from sqlalchemy.orm import synonym

    class Adapter(AccountAdapter):
        login_field = "mail"

    columns = {"address": sa.Column("email", sa.String(120), unique=True),
               "mail": synonym("address"), "password_hash": sa.Column(sa.String(255))}
    app = shaped_host(tmp_path, columns, adapter=Adapter, WECHAT_QR_ASSOCIATION="ask_binding")
    add_account(app, address="alice@example.com", password_hash=generate_password_hash("pw"))
    with app.app_context():
        assert app.extensions["wechat_qr"].adapter.authenticate(
            "alice@example.com", "pw").address == "alice@example.com"

    class Plain(AccountAdapter):
        login_field = "label"

    (tmp_path / "plain").mkdir()
    with pytest.raises(ConfigurationError) as refused:  # a Python property: no query
        shaped_host(tmp_path / "plain", {"label": property(lambda self: "x"),
                                         "password_hash": sa.Column(sa.String(255))},
                    adapter=Plain, WECHAT_QR_ASSOCIATION="ask_binding")
    assert "'label' attribute" in refused.value.problem


def test_an_integer_column_keeps_a_number_it_cannot_hold_out_of_the_query(
        tmp_path: t.Any, database: Database) -> None:
    """An ``Integer`` column (32 bits on PostgreSQL): an 11-digit number is no value of it,
    and PostgreSQL refuses to compare it (before: a 500); on SQLite it is 64 bits."""
    column = sa.Column(sa.Integer, unique=True)
    with bound_by(tmp_path, database, "member_no", column, 2_000_000_000) as adapter:
        assert adapter.authenticate("2000000000", "pw").member_no == 2_000_000_000
        assert adapter.authenticate("13800138000", "pw") is None


def test_a_session_store_whose_regenerate_fails_still_clears_the_session(
        make_app: t.Any) -> None:
    """The renewal fails (the host's store is down): what was in the session is gone
    anyway, as before the id was renewed first."""
    from flask import session

    app = make_app()

    class Failing(type(app.session_interface)):  # type: ignore[misc]  # a class of a value
        def regenerate(self, session: t.Any) -> None:
            raise RuntimeError("the store is down")

    app.session_interface = Failing()
    with app.test_request_context("/"):
        session["planted"] = "x"
        with pytest.raises(RuntimeError):
            AccountAdapter().renew_session()
        assert dict(session) == {}


@pytest.mark.parametrize(("key_type", "get_id", "expected"), [
    # Flask-Login's id as identity rows already hold it: kept.
    ("int", lambda user: str(user.id), lambda user: str(user.id)),
    ("uuid", lambda user: user.id.hex, lambda user: user.id.hex),
    ("uuid", lambda user: str(user.id), lambda user: str(user.id)),
    # An alternative id (a session token): the default load_user could never read it
    # back, so the primary key is stored instead.
    ("int", lambda user: "token-" + str(user.id), lambda user: str(user.id)),
    ("uuid", lambda user: "token-" + user.id.hex, lambda user: str(user.id)),
])
def test_the_stored_user_id_is_one_the_default_load_user_reads_back(
        tmp_path: t.Any, key_type: str, get_id: t.Callable[[t.Any], str],
        expected: t.Callable[[t.Any], str]) -> None:
    db = SQLAlchemy()

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        id = (db.Column(db.Integer, primary_key=True) if key_type == "int"
              else db.Column(db.Uuid, primary_key=True, default=uuid.uuid4))

        def get_id(self) -> str:
            return get_id(self)

    app = Flask(__name__, root_path=str(tmp_path))
    app.config.update(SECRET_KEY="k" * 40, SQLALCHEMY_DATABASE_URI="sqlite://")
    db.init_app(app)
    adapter: AccountAdapter[t.Any] = AccountAdapter(db, User)
    with app.app_context():
        db.create_all()
        user = User()
        db.session.add(user)
        db.session.commit()
        stored = adapter.get_user_id(user)
        assert stored == expected(user)
        assert adapter.load_user(stored) is user


def test_an_overridden_load_user_is_asked_once_which_id_it_reads(tmp_path: t.Any) -> None:
    """Whether an overridden ``load_user`` reads Flask-Login's alternative id back is asked
    of the first user that has one (two lookups at most), and never again: a returning
    login stores no extra query."""
    db = SQLAlchemy()

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)

        def get_id(self) -> str:
            return f"token-{self.id}"

    asked: list[str] = []

    class SoftDelete(AccountAdapter[t.Any]):
        def load_user(self, user_id: str) -> t.Any:
            asked.append(user_id)
            return super().load_user(user_id)

    app = Flask(__name__, root_path=str(tmp_path))
    app.config.update(SECRET_KEY="k" * 40, SQLALCHEMY_DATABASE_URI="sqlite://")
    db.init_app(app)
    adapter = SoftDelete(db, User)
    with app.app_context():
        db.create_all()
        first, second = User(), User()
        db.session.add_all([first, second])
        db.session.commit()
        assert [adapter.get_user_id(user) for user in (first, second, first)] == ["1", "2", "1"]
    assert asked == ["1"]  # by the key first, which any column takes


@pytest.mark.parametrize("reads", ["the key", "the token", "neither"])
def test_what_an_overridden_load_user_reads_back_decides_the_stored_id(
        database: t.Any, reads: str) -> None:
    """On every database, whole WeChat logins of one person with Flask-Login's alternative
    id: one account, whichever id the site's ``load_user`` reads. In review: the first
    question, by the token, ran ``WHERE id = '<token>'`` on an integer column, which
    PostgreSQL refuses: the login's transaction was lost and every login ended on a 500."""
    import secrets

    from flask import current_app
    from support import answer, open_qr_page, poll

    db = SQLAlchemy()

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        nickname = db.Column(db.Unicode(255))
        token = db.Column(db.String(64), unique=True, nullable=False,
                          default=lambda: secrets.token_hex(16))

        def get_id(self) -> str:
            return str(self.token)

    class Adapter(AccountAdapter[t.Any]):
        def load_user(self, user_id: str) -> t.Any:
            if reads == "the key":  # docs/hooks.rst's soft delete: through the default
                return super().load_user(user_id)
            if reads == "the token":
                return db.session.execute(
                    sa.select(User).filter_by(token=user_id)).scalar_one_or_none()
            return current_app.config.get("NOBODY")

    app = Flask("alternative_ids")
    app.config.update(TESTING=True, SECRET_KEY="k" * 40, WECHAT_QR_SANDBOX=True,
                      SQLALCHEMY_DATABASE_URI=database.url("alternative_ids"))
    db.init_app(app)
    LoginManager(app).user_loader(
        lambda token: db.session.execute(
            sa.select(User).filter_by(token=token)).scalar_one_or_none())
    WeChatQR(app, db=db, adapter=Adapter(db, User))
    with app.app_context():
        db.create_all()
    statuses = []
    for _ in range(3):
        client, phone = app.test_client(), app.test_client()
        uuid_, _state = open_qr_page(client)
        answer(phone, uuid_, action="allow", person="zhangsan")
        statuses.append(client.get(poll(client, uuid_)["redirect"].split("localhost", 1)[1])
                        .status_code)
    assert statuses == [302, 302, 302]
    with app.app_context():
        users = db.session.execute(sa.select(User.id, User.token)).all()
        stored = db.session.execute(sa.text("SELECT user_id FROM wechat_qr_identity")).scalars()
        stored = list(stored)
        db.session.remove()
        db.engine.dispose()
    if reads == "neither":  # nothing reads back: each login starts over, as documented
        assert len(users) == 3 and len(stored) == 1
        return
    assert len(users) == 1
    assert stored == [str(users[0].id) if reads == "the key" else users[0].token]


def test_a_required_column_is_named_with_its_tables_schema(tmp_path: t.Any) -> None:
    """A user table in a schema of its own (``__table_args__ = {"schema": "auth"}``) is
    named as the database knows it. Before: ``account.email``, a table of the site's own
    schema."""
    with pytest.raises(ConfigurationError) as info:
        shaped_host(tmp_path, {**required_email(), "__table_args__": {"schema": "auth"}})
    assert "auth.account.email" in info.value.problem


# --- a hook that gives a user of another model ------------------------------------------------


class Staff:
    """A site's other model (its staff, say), with Flask-Login's ``get_id``: id 1, as the
    site's first ``User``."""

    id = 1

    def get_id(self) -> str:
        return str(self.id)


def staff_host(tmp_path: t.Any, hook: str, **config: t.Any) -> Flask:
    """A site whose adapter's ``hook`` gives a :class:`Staff`, with ``User`` 1 (alice)."""
    def gives_staff(self: t.Any, *args: t.Any) -> t.Any:
        return Staff()

    adapter = type("Adapter", (AccountAdapter,), {hook: gives_staff})
    app = shaped_host(tmp_path, email_site(), adapter=adapter, **config)
    add_account(app, email="alice@example.com", password_hash=generate_password_hash("pw"))
    return with_csrf_token_route(app)


@pytest.mark.parametrize("hook, config", [
    ("create_user", {}),
    ("match_user", {"WECHAT_QR_ASSOCIATION": "field_matching",
                    "WECHAT_QR_MATCH_FIELDS": ("unionid", "phone")}),
])
def test_a_hook_that_gives_another_models_user_links_nothing(
        tmp_path: t.Any, wechat_api: t.Any, hook: str, config: dict[str, t.Any]) -> None:
    """Before: the Staff's id was stored on the identity as a ``User``'s, and that WeChat
    logged in to ``User`` 1, alice, at once and at every login after."""
    app = staff_host(tmp_path, hook, **config)
    with pytest.raises(TypeError, match=f"Adapter.{hook} returned a Staff, not a User "):
        login_with_wechat(app.test_client(), wechat_api)
    assert all_identities(app) == []


def test_an_authenticate_that_gives_another_models_user_links_nothing(
        tmp_path: t.Any, wechat_api: t.Any) -> None:
    """The bind page's password check, likewise (before: the WeChat was linked to alice)."""
    app = staff_host(tmp_path, "authenticate", WECHAT_QR_ASSOCIATION="ask_binding")
    client, _html, token = at_the_bind_page(app, wechat_api)
    with pytest.raises(TypeError) as info:
        bind_as(client, token, "staff", "pw")
    assert str(info.value).startswith("Adapter.authenticate returned a Staff, not a User ")
    assert "log in to the User with that id, someone else" in str(info.value)
    assert all_identities(app) == []
    assert logged_in_user_id(client) is None


def test_a_site_that_reads_its_own_ids_back_may_log_in_another_model(
        tmp_path: t.Any, wechat_api: t.Any) -> None:
    """Users and staff, ids "user:1" and "staff:1" (their ``get_id``, the site's
    ``load_user``), the user model given for the default ``create_user``: its
    ``match_user`` finds staff by their WeChat. Its ids say which model, so nothing is
    read back as a ``User``'s: no ``TypeError`` (a review, session 36, of the check
    above, whose first version refused it)."""
    db = SQLAlchemy()

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        username = db.Column(db.String(80))

        def get_id(self) -> str:
            return f"user:{self.id}"

    class StaffMember(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        wechat_openid = db.Column(db.String(80))

        def get_id(self) -> str:
            return f"staff:{self.id}"

    def load(user_id: str) -> t.Any:
        kind, _, number = user_id.partition(":")
        return db.session.get({"user": User, "staff": StaffMember}[kind], int(number))

    class Adapter(AccountAdapter):  # type: ignore[type-arg]
        def get_user_id(self, user: t.Any) -> str:
            return str(user.get_id())

        def load_user(self, user_id: str) -> t.Any:
            return load(user_id)

        def match_user(self, connection: t.Any, field: str, profile: t.Any) -> t.Any:
            return db.session.execute(sa.select(StaffMember).filter_by(
                wechat_openid=profile.openid)).scalar_one_or_none()

    app = Flask("two_kinds", root_path=str(tmp_path))
    app.config.update(TESTING=True, SECRET_KEY="x" * 32,
                      SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'two.db'}",
                      WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET,
                      WECHAT_QR_ASSOCIATION="field_matching",
                      WECHAT_QR_MATCH_FIELDS=("staff_openid",))
    db.init_app(app)
    LoginManager(app).user_loader(load)
    WeChatQR(app, db=db, adapter=Adapter(db, User))
    with app.app_context():
        db.create_all()
        db.session.add(User(username="alice"))
        db.session.add(StaffMember(wechat_openid=OPENID))
        db.session.commit()
    client = app.test_client()
    assert login_with_wechat(client, wechat_api).status_code == 302
    assert logged_in_user_id(client) == "staff:1"


class SoftDeleting(AccountAdapter):  # type: ignore[type-arg]
    """The docs' soft delete (hooks, ``load_user``), and a matcher on a verified field."""

    def load_user(self, user_id: str) -> t.Any:
        user = super().load_user(user_id)
        return None if user is None or user.deleted else user

    def match_user(self, connection: t.Any, field: str, profile: t.Any) -> t.Any:
        User = self.user_model
        return self.db.session.execute(  # type: ignore[union-attr]
            sa.select(User).filter_by(email="alice@example.com")).scalar_one_or_none()


@pytest.mark.parametrize("association", ["ask_binding", "field_matching"])
def test_a_soft_deleted_account_is_neither_proven_nor_matched(
        tmp_path: t.Any, wechat_api: t.Any, association: str) -> None:
    """Before: alice, deleted as the site's load_user says, was still found by her password
    (ask binding) or the site's matcher (field matching), and her WeChat linked to her: the
    login ended on no one logged in (or, where Flask-Login's loader does not look at the
    mark, in a deleted account), and matched her again at every login (a helper's hunt of
    host shapes, session 36)."""
    app = shaped_host(tmp_path, {**email_site(), "deleted": sa.Column(sa.Boolean, default=False)},
                      adapter=type("Adapter", (SoftDeleting,), {"login_field": "email"}),
                      WECHAT_QR_ASSOCIATION=association,
                      WECHAT_QR_MATCH_FIELDS=("unionid", "verified_email"))
    add_account(app, email="alice@example.com", password_hash=generate_password_hash("pw"),
                deleted=True)
    app = with_csrf_token_route(app)
    if association == "ask_binding":
        client, _html, token = at_the_bind_page(app, wechat_api)
        resp = bind_as(client, token, "alice@example.com", "pw")
        assert resp.status_code == 400 and "Wrong email or password." in resp.get_data(
            as_text=True)
        assert all_identities(app) == []
    else:
        client = app.test_client()
        assert login_with_wechat(client, wechat_api).status_code == 302
        (identity,) = all_identities(app)
        assert identity.user_id == logged_in_user_id(client) == "2"  # a new account


@pytest.mark.parametrize("shape", ["a second mapping of the table", "the base of the model"])
def test_an_authenticate_reading_the_user_table_another_way(
        tmp_path: t.Any, wechat_api: t.Any, shape: str) -> None:
    """A site's ``authenticate`` that reads the user table through a second mapping of it
    (same rows, same ids) proves the account; one that reads the polymorphic base of a
    user model that is a subclass proves only rows of that subclass, and says "wrong" to
    the others. Before (a red team, session 36): a TypeError, a 500, for both."""
    db = SQLAlchemy()

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        type = db.Column(db.String(20), nullable=False, default="user")
        username = db.Column(db.String(80), unique=True)
        password_hash = db.Column(db.String(255))
        __mapper_args__ = {"polymorphic_on": type, "polymorphic_identity": "user"}

    class Customer(User):
        __mapper_args__ = {"polymorphic_identity": "customer"}

    class UserRow(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        __table__ = User.__table__

    model, lookup = ((User, UserRow) if shape == "a second mapping of the table"
                     else (Customer, User))

    class Adapter(AccountAdapter):  # type: ignore[type-arg]
        def authenticate(self, username: str, password: str) -> t.Any:
            row = db.session.scalar(sa.select(lookup).where(lookup.username == username))
            return row if row is not None and check_password_hash(
                row.password_hash, password) else None

    app = Flask("another_way", root_path=str(tmp_path))
    app.config.update(TESTING=True, SECRET_KEY="x" * 32,
                      SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'another.db'}",
                      WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET,
                      WECHAT_QR_ASSOCIATION="ask_binding")
    db.init_app(app)
    LoginManager(app).user_loader(lambda user_id: db.session.get(model, int(user_id)))
    WeChatQR(app, db=db, adapter=Adapter(db, model))
    with app.app_context():
        db.create_all()
        db.session.add(User(username="base", password_hash=generate_password_hash("pw")))
        db.session.add(Customer(username="cust", password_hash=generate_password_hash("pw")))
        db.session.commit()
    app = with_csrf_token_route(app)
    results = {}
    for username in ("base", "cust"):
        client, _html, token = at_the_bind_page(app, wechat_api, openid=f"o-{username}",
                                                unionid=f"u-{username}")
        results[username] = (bind_as(client, token, username, "pw").status_code,
                             logged_in_user_id(client))
    if shape == "a second mapping of the table":
        assert results == {"base": (302, "1"), "cust": (302, "2")}
    else:
        assert results == {"base": (400, None), "cust": (302, "2")}


@pytest.mark.parametrize("spent_in", ["the process", "the database"])
def test_a_sites_can_signup_spends_once_a_signup(
        tmp_path: t.Any, database: Database, wechat_api: t.Any, spent_in: str) -> None:
    """A site that spends something in ``can_signup``: an invitation held in the process
    (or the session), a day's quota in its own table. A first login rolls its first run
    back to ask WeChat for the profile with no connection held; the site's answer is asked
    in the run that commits. Before (session 36's first version of that rollback): asked
    in both runs, the invitation was spent by the run rolled back and the person refused
    (a helper's hunt of host shapes); then, remembered from the first run, the quota's
    UPDATE went with its rollback (a review)."""
    invitations = ["WELCOME2026"]
    asked: list[str] = []

    class Adapter(AccountAdapter):  # type: ignore[type-arg]
        def can_signup(self, connection: t.Any) -> bool:
            asked.append(connection.identifier)
            if spent_in == "the process":
                return bool(invitations) and invitations.pop() == "WELCOME2026"
            return self.db.session.execute(  # type: ignore[union-attr, no-any-return]
                sa.text("UPDATE quota SET left_today = left_today - 1 WHERE left_today > 0")
            ).rowcount == 1

    app = shaped_host(tmp_path, {"nickname": sa.Column(sa.Unicode(255))}, adapter=Adapter,
                      url=database.url("signups"))
    try:
        with app.app_context():
            db = app.db  # type: ignore[attr-defined]
            db.session.execute(sa.text("CREATE TABLE quota (left_today INTEGER)"))
            db.session.execute(sa.text("INSERT INTO quota VALUES (5)"))
            db.session.commit()
        client = app.test_client()
        assert login_with_wechat(client, wechat_api).status_code == 302
        assert asked == ["wechat"]
        assert logged_in_user_id(client) == "1"
        with app.app_context():
            left = app.db.session.execute(sa.text("SELECT left_today FROM quota")).scalar()
        assert left == (5 if spent_in == "the process" else 4)
    finally:
        with app.app_context():
            app.db.session.execute(sa.text("DROP TABLE quota"))  # type: ignore[attr-defined]
            app.db.session.commit()  # type: ignore[attr-defined]
            app.db.engine.dispose()  # type: ignore[attr-defined]


def test_an_authenticate_that_makes_the_local_account_binds_it(
        tmp_path: t.Any, database: Database, wechat_api: t.Any) -> None:
    """A directory's ``authenticate`` (LDAP): the right password makes the local account,
    added to the session, not flushed. Before (a review, session 36): read back by the id
    it did not have yet, "None": "wrong" on SQLite and MariaDB, a DataError on
    PostgreSQL."""
    class Adapter(AccountAdapter):  # type: ignore[type-arg]
        def authenticate(self, username: str, password: str) -> t.Any:
            if (username, password) != ("ldap-alice", "directory-pw"):
                return None
            user = self.user_model(username=username)  # type: ignore[misc]
            self.db.session.add(user)  # type: ignore[union-attr]
            return user

    app = with_csrf_token_route(shaped_host(
        tmp_path, {"username": sa.Column(sa.String(80), unique=True)}, adapter=Adapter,
        url=database.url("directory"), WECHAT_QR_ASSOCIATION="ask_binding"))
    try:
        client, _html, token = at_the_bind_page(app, wechat_api)
        assert bind_as(client, token, "ldap-alice", "directory-pw").status_code == 302
        assert [(user.id, user.username) for user in all_users(app)] == [(1, "ldap-alice")]
        assert logged_in_user_id(client) == "1"
    finally:
        with app.app_context():
            app.db.engine.dispose()  # type: ignore[attr-defined]


def test_a_sibling_of_the_user_model_is_still_another_model(tmp_path: t.Any) -> None:
    """``Staff`` beside ``User`` on one table (single-table inheritance, same base): other
    rows, which a ``User``'s id would not read back. A review (session 36) found the
    first version of the table check took it for the model's own rows."""
    from flask_wechat_qr.adapter import own_user

    db = SQLAlchemy()

    class Person(db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        kind = db.Column(db.String(20))
        __mapper_args__ = {"polymorphic_on": kind, "polymorphic_identity": "person"}

    class User(Person):
        __mapper_args__ = {"polymorphic_identity": "user"}

    class Staff(Person):
        __mapper_args__ = {"polymorphic_identity": "staff"}

    adapter = AccountAdapter(db, User)
    with pytest.raises(TypeError, match="returned a Staff, not a User"):
        own_user(adapter, Staff(id=1), "authenticate")
    assert own_user(adapter, Person(id=1), "authenticate") is not None  # its base: read back
