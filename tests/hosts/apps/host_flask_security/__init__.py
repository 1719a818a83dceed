"""A site on Flask-Security-Too, as its quick start builds one: the ``fsqla_v3`` models
(``email``, ``active`` and ``fs_uniquifier`` required, argon2 password hashes in
``password``, roles, login tracking on), Flask-Security's own login manager (users loaded
by ``fs_uniquifier``), login page (``security.login``), ``/logout`` and CSRF settings at
their defaults; with ``HOST_CSRF_PROTECT``, Flask-WTF's ``CSRFProtect`` on every POST, as
Flask-Security's docs advise for a site with forms of its own. WeChat login is added as
docs/hooks.rst shows it for Flask-Security ("Flask-Security-Too")."""

from __future__ import annotations

import typing as t

import flask_security
from flask import Flask, redirect, render_template, session, url_for
from flask_security import (
    Security,
    SQLAlchemyUserDatastore,
    auth_required,
    current_user,
    hash_password,
)
from flask_security.confirmable import requires_confirmation
from flask_security.models import fsqla_v3 as fsqla
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from werkzeug.wrappers import Response as BaseResponse

from flask_wechat_qr import AccountAdapter, WeChatQR
from flask_wechat_qr.errors import AccountDisabled

db = SQLAlchemy()
fsqla.FsModels.set_db_info(db)


class Role(db.Model, fsqla.FsRoleMixin):  # type: ignore[name-defined,misc]
    pass


class User(db.Model, fsqla.FsUserMixin):  # type: ignore[name-defined,misc]
    nickname = db.Column(db.Unicode(255))
    avatar_url = db.Column(db.Text)


user_datastore = SQLAlchemyUserDatastore(db, User, Role)
security = Security()
csrf = CSRFProtect()


def needs_more_than_a_password(user: User) -> bool:
    """A second factor (two-factor, or a WebAuthn key as second factor), or an address
    still to confirm: such an account links WeChat from its account page, after
    Flask-Security's own login."""
    second_factor = user.tf_primary_method or any(
        key.usage == "secondary" for key in getattr(user, "webauthn", []))
    return bool(second_factor or requires_confirmation(user))


class Adapter(AccountAdapter):
    """Flask-Security's users: made by its datastore, proved by its password check (not for
    an account that needs more than a password), logged in by its ``login_user`` (session
    freshness, login tracking)."""

    login_field = "email"  # the bind page asks for the address Flask-Security logs in with

    def create_user(self, connection: t.Any, profile: t.Any) -> User:
        # WeChat gives no address: a placeholder nobody can mail, unique per WeChat account
        return t.cast(User, user_datastore.create_user(
            email=f"{profile.openid}@wechat.invalid", roles=["member"]))

    def authenticate(self, username: str, password: str) -> User | None:
        user = user_datastore.find_user(case_insensitive=True, email=username.strip())
        if user is None or not user.password or needs_more_than_a_password(user):
            hash_password(password)  # as long as a wrong password (Flask-Security's way)
            return None
        return t.cast(User, user) if user.verify_and_update_password(password) else None

    def login_user(self, user: User) -> None:
        if not user.is_active:  # Flask-Security's login_user logs in inactive users too
            raise AccountDisabled()
        flask_security.login_user(user, authn_via=["wechat"])


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY="dev-secret-key-of-the-flask-security-host",
        SECURITY_PASSWORD_SALT="146585145368132386173505678016728509634",
        SECURITY_TRACKABLE=True,
        SQLALCHEMY_DATABASE_URI="sqlite:///fsec.db",
    )
    app.config.update(test_config or {})
    db.init_app(app)
    if app.config.get("HOST_CSRF_PROTECT"):
        csrf.init_app(app)  # before Flask-Security, as its docs say
    security.init_app(app, user_datastore)
    wechat = WeChatQR(app, db=db, adapter=app.config.get("HOST_ADAPTER", Adapter)(db, User))
    add_routes(app, wechat)
    with app.app_context():
        db.create_all()
        if user_datastore.find_role("member") is None:
            user_datastore.create_role(name="member")
            db.session.commit()
    return app


def add_routes(app: Flask, wechat: WeChatQR) -> None:
    @app.route("/")
    def index() -> str:
        return render_template("index.html")

    @app.route("/account")
    @auth_required()
    def account() -> str:
        return render_template("account.html", identities=wechat.identities_of(current_user))

    @app.post("/account")
    @auth_required()
    def save_account() -> BaseResponse:
        """A form's POST behind Flask-Security's login."""
        return redirect(url_for("account"))

    @app.route("/security-settings")
    @auth_required(within=15, grace=0)  # a page that asks for a login within 15 minutes
    def security_settings() -> str:
        return render_template("index.html", fresh=True)

    @app.route("/session-keys")
    def session_keys() -> dict[str, t.Any]:
        """What the session holds (for the tests)."""
        return {"keys": sorted(session.keys()), "fs_paa": session.get("fs_paa")}

