"""A site on Flask-AppBuilder, as its skeleton builds one: ``AUTH_DB`` (users in ``ab_user``,
on Flask-AppBuilder's own declarative base, with Werkzeug hashes, roles and login counts;
its login page at ``/login/``, with Flask-WTF's CSRF token; views behind ``has_access``),
its ``SQLA`` on a SQLite file. WeChat login is added as docs/hooks.rst shows it for
Flask-AppBuilder ("A site on Flask-AppBuilder"): an adapter (``HOST_ADAPTER`` replaces it),
Flask-Login's ``login_view`` set to Flask-AppBuilder's login page, that page with the
WeChat button, and the extension's pages in Flask-AppBuilder's layout with its context
processor. A page behind ``has_access``, ``/wechat-account/``, lists, links and unlinks
WeChat; the role new users get (``AUTH_USER_REGISTRATION_ROLE``) may see it."""

from __future__ import annotations

import typing as t

import flask_login
from flask import Flask, current_app, g, session
from flask_appbuilder import AppBuilder, BaseView, expose, has_access
from flask_appbuilder.const import AUTH_DB
from flask_appbuilder.models.sqla.base import SQLA
from flask_appbuilder.security.sqla.manager import SecurityManager
from flask_appbuilder.security.sqla.models import User
from flask_appbuilder.security.views import AuthDBView

from flask_wechat_qr import AccountAdapter, WeChatQR
from flask_wechat_qr.errors import AccountDisabled

db = SQLA()

#: The role WeChat's new users get (``AUTH_USER_REGISTRATION_ROLE``), and what it may see.
MEMBER = "Member"
MEMBER_PERMISSIONS = [("can_show", "WeChatAccountView")]


class WeChatAuthDBView(AuthDBView):
    login_template = "login_wechat.html"  # Flask-AppBuilder's form, and the WeChat button


class WeChatSecurityManager(SecurityManager):
    authdbview = WeChatAuthDBView


def security_manager() -> t.Any:
    return current_app.appbuilder.sm  # type: ignore[attr-defined]


class Adapter(AccountAdapter):  # type: ignore[type-arg]
    """Flask-AppBuilder's users: a new one as its registration makes one (the registration
    role, the columns it requires), proved by its own password check, logged in and counted
    as its login form does. Each app has its own ``AppBuilder`` (``current_app.appbuilder``):
    the tests build several."""

    def create_user(self, connection: t.Any, profile: t.Any) -> User:
        sm = security_manager()
        user = t.cast(User, super().create_user(connection, profile))  # a random username
        user.first_name = (profile.nickname or "WeChat")[:64]
        user.last_name = ""
        user.email = f"{profile.openid}@wechat.invalid"  # unique, required; never mailed
        user.roles = [sm.find_role(sm.auth_user_registration_role)]
        return user

    def authenticate(self, username: str, password: str) -> User | None:
        user = security_manager().auth_user_db(username.strip(), password)
        g.wechat_qr_login_counted = user  # auth_user_db counted it, as FAB's form does
        return t.cast("User | None", user)

    def login_user(self, user: User) -> None:
        if not flask_login.login_user(user):
            raise AccountDisabled()
        if g.pop("wechat_qr_login_counted", None) is not user:
            security_manager().update_user_auth_stat(user)  # login_count, last_login

    def renew_session(self) -> None:
        locale = session.get("locale")  # the language picked in Flask-AppBuilder's menu
        super().renew_session()
        if locale:
            session["locale"] = locale


class WeChatAccountView(BaseView):
    route_base = "/wechat-account"
    default_view = "show"

    def __init__(self, wechat: WeChatQR) -> None:
        super().__init__()
        self.wechat = wechat

    @expose("/")
    @has_access
    def show(self) -> str:
        return t.cast(str, self.render_template(
            "wechat_account.html", identities=self.wechat.identities_of(g.user)))


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY="dev-secret-key-of-the-flask-appbuilder-host",
        SQLALCHEMY_DATABASE_URI="sqlite:///fab.db",
        AUTH_TYPE=AUTH_DB,
        AUTH_USER_REGISTRATION_ROLE=MEMBER,
        APP_NAME="Notes",
    )
    app.config.update(test_config or {})
    db.init_app(app)
    with app.app_context():  # Flask-AppBuilder 5 sets itself up in an app context
        appbuilder = AppBuilder(app, db.session,
                                security_manager_class=WeChatSecurityManager)
    sm = appbuilder.sm
    # Flask-AppBuilder's "login" is no endpoint: its login page is its auth view's
    app.login_manager.login_view = "WeChatAuthDBView.login"  # type: ignore[attr-defined]

    @app.context_processor
    def appbuilder_layout() -> dict[str, t.Any]:
        return {"appbuilder": appbuilder, "base_template": appbuilder.base_template}

    wechat = WeChatQR(app, db=db, adapter=app.config.get("HOST_ADAPTER", Adapter)(db, User))
    with app.app_context():
        appbuilder.add_view(WeChatAccountView(wechat), "WeChat", category="Account")
        role = sm.find_role(MEMBER) or sm.add_role(MEMBER)
        for permission, view in MEMBER_PERMISSIONS:
            sm.add_permission_role(role, sm.find_permission_view_menu(permission, view))
        db.create_all()  # the extension's tables, after Flask-AppBuilder's (the foreign key)
    return app
