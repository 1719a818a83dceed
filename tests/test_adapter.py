"""The default :class:`AccountAdapter` against host user models of real shapes: a user a
WeChat login created has no password, and a host's ``check_password`` may raise on one."""

from __future__ import annotations

import logging
import re
import typing as t
import uuid

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_login import LoginManager, UserMixin
from flask_sqlalchemy import SQLAlchemy
from support import (
    APP_ID,
    APP_SECRET,
    OPENID_2,
    UNIONID_2,
    all_identities,
    arrive,
    bind_as,
    bind_page,
    logged_in_user_id,
    login_with_wechat,
    with_csrf_token_route,
)
from werkzeug.local import LocalProxy
from werkzeug.security import check_password_hash, generate_password_hash

from flask_wechat_qr import AccountAdapter, ConfigurationError, WeChatQR

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


def wrong_page(resp: t.Any) -> bool:
    return resp.status_code == 400 and WRONG in resp.get_data(as_text=True)


def test_binding_to_a_user_without_password_is_a_wrong_password_not_a_500(
        tmp_path: t.Any, wechat_api: t.Any) -> None:
    app = flasky_host(tmp_path)
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
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
    client = app.test_client()
    arrive(client, wechat_api, openid=OPENID_2, unionid=UNIONID_2)
    _html, token = bind_page(client)
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
                **config: t.Any) -> Flask:
    """A host whose user model has ``columns`` (besides an integer ``id``)."""
    db = SQLAlchemy()
    namespace = {"__tablename__": "account", "id": db.Column(db.Integer, primary_key=True),
                 **columns}
    User = type("User", (UserMixin, db.Model), namespace)
    app = Flask("shaped_host", root_path=str(tmp_path))
    app.config.update(TESTING=True, SECRET_KEY="x" * 32,
                      SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'shaped.db'}",
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


def test_an_unknown_username_is_checked_against_a_hash_of_the_sites_own_method(
        tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A site whose hashes are pbkdf2 (an older Werkzeug's) checks them slower than the
    default scrypt: a dummy of another method told which usernames have a password
    (270 ms against 168 ms in the review). The hash each attempt checks is recorded (a
    timing would be noise here)."""
    app = flasky_host(tmp_path)
    with app.app_context():
        alice = app.db.session.execute(  # type: ignore[attr-defined]
            sa.select(app.User).filter_by(username="alice")).scalar_one()  # type: ignore[attr-defined]
        alice.password_hash = generate_password_hash("alice-pw", method="pbkdf2:sha256:1000")
        app.db.session.commit()  # type: ignore[attr-defined]
    import flask_wechat_qr.adapter as adapter_module

    checked: list[str] = []
    real = adapter_module.check_password_hash

    def recording(pwhash: str, password: str) -> bool:
        checked.append(pwhash.split("$", 1)[0])
        return real(pwhash, password)

    monkeypatch.setattr(adapter_module, "check_password_hash", recording)
    with app.app_context():
        adapter = AccountAdapter(app.db, app.User)  # type: ignore[attr-defined]
        adapter.authenticate("alice", "wrong")  # checked by the host's own method
        adapter.authenticate("nobody", "wrong")
        adapter.authenticate("wechat-0a1b2c3d4e", "wrong")
    assert checked == ["pbkdf2:sha256:1000", "pbkdf2:sha256:1000"]
