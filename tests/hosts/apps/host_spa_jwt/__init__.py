"""A single-page app (``static/index.html`` standing in for a Vue or React build) in front
of a Flask JSON API that authenticates with Flask-JWT-Extended, and no Flask-Login: the
shape of docs/hooks.rst's "A single-page app on Flask-JWT-Extended", in its two variants.

``HOST_JWT_LOCATION="cookies"`` (the default): the JWT in an HttpOnly cookie, with
Flask-JWT-Extended's CSRF double-submit cookie, which the SPA sends back as
``X-CSRF-TOKEN``. ``"headers"``: the SPA keeps the JWT and sends it as ``Authorization:
Bearer``; it collects its first one after a WeChat login from ``POST /api/token/wechat``,
and starts linking WeChat with ``POST /api/wechat/link``. The SPA's routes are hash routes
(``/#/profile``) and history routes (``/app/profile``), both served by ``index.html``.
"""

from __future__ import annotations

import time
import typing as t
from pathlib import Path

from flask import Flask, after_this_request, redirect, request, session, url_for
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    get_jwt_identity,
    jwt_required,
    set_access_cookies,
    unset_jwt_cookies,
    verify_jwt_in_request,
)
from flask_jwt_extended.exceptions import JWTExtendedException
from flask_sqlalchemy import SQLAlchemy
from jwt import PyJWTError
from werkzeug.wrappers import Response as BaseResponse

from flask_wechat_qr import AccountAdapter, WeChatQR, csrf_token, signals
from flask_wechat_qr.errors import LoginCancelled, LoginError

db = SQLAlchemy()
jwt = JWTManager()

#: The session keys of the header variant: the user a WeChat login logged in, for the SPA
#: to collect (once per session, within a minute); the user who started linking WeChat from
#: the SPA (until linked, logged out, or five minutes).
HANDED_OVER = "spa_wechat_login"
LINKING = "spa_wechat_link"


class User(db.Model):  # type: ignore[name-defined,misc]
    id = db.Column(db.Integer, primary_key=True)
    email = db.Column(db.String(255), unique=True)  # nullable: WeChat gives none
    password_hash = db.Column(db.String(255))
    nickname = db.Column(db.Unicode(255))
    avatar_url = db.Column(db.Text)


class JWTCookieAdapter(AccountAdapter):  # type: ignore[type-arg]
    """Logged in = a JWT in the access cookie (docs/hooks.rst, the cookie variant)."""

    def login_user(self, user: User) -> None:
        access_token = create_access_token(identity=str(user.id))

        @after_this_request
        def set_jwt_cookies(response: BaseResponse) -> BaseResponse:
            set_access_cookies(response, access_token)  # and its CSRF cookie
            return response

    def current_user(self) -> User | None:
        try:
            verify_jwt_in_request(optional=True)
        except (JWTExtendedException, PyJWTError):  # expired, tampered, no CSRF header
            return None
        user_id = get_jwt_identity()
        return t.cast("User | None", self.load_user(user_id)) if user_id else None


class JWTHeaderAdapter(AccountAdapter):  # type: ignore[type-arg]
    """Logged in = ``Authorization: Bearer`` (docs/hooks.rst, the header variant)."""

    def login_user(self, user: User) -> None:
        session[HANDED_OVER] = {"user_id": self.get_user_id(user), "at": time.time()}

    def current_user(self) -> User | None:
        try:
            verify_jwt_in_request(optional=True)
        except (JWTExtendedException, PyJWTError):
            return None
        user_id = get_jwt_identity()
        linking = session.get(LINKING)
        if (user_id is None and linking and time.time() - linking["at"] < 300
                and request.endpoint in ("wechat_qr.link", "wechat_qr.callback")):
            user_id = linking["user_id"]
        return t.cast("User | None", self.load_user(user_id)) if user_id else None


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY="dev-secret-key-of-the-spa-jwt-host-32b",
        JWT_SECRET_KEY="dev-jwt-secret-key-of-the-spa-jwt-host",
        SQLALCHEMY_DATABASE_URI="sqlite:///spa.db",
        HOST_JWT_LOCATION="cookies",
    )
    app.config.update(test_config or {})
    cookies = app.config["HOST_JWT_LOCATION"] == "cookies"
    app.config.setdefault("JWT_TOKEN_LOCATION", ["cookies"] if cookies else ["headers"])
    app.config.setdefault("JWT_COOKIE_SECURE", False)  # http://127.0.0.1 in development
    db.init_app(app)
    jwt.init_app(app)
    adapter = app.config.get("HOST_ADAPTER") or (JWTCookieAdapter if cookies else JWTHeaderAdapter)
    wechat = WeChatQR(app, db=db, adapter=adapter(db, User))
    add_routes(app, wechat, header_routes=app.config.get("HOST_HEADER_ROUTES", True))
    with app.app_context():
        db.create_all()
    return app


def add_routes(app: Flask, wechat: WeChatQR, header_routes: bool = True) -> None:
    """The SPA's page and its API; ``header_routes``: with the header variant's two routes
    (the tests of the docs add the docs' own)."""
    index_html = (Path(__file__).parent / "static" / "index.html").read_text(encoding="utf-8")

    @app.get("/")
    @app.get("/app/<path:path>")
    def spa(path: str = "") -> str:
        """The SPA's one page, for each of its history routes."""
        return index_html

    @app.get("/api/me")
    @jwt_required()
    def me() -> dict[str, t.Any]:
        user = db.session.get(User, int(get_jwt_identity()))
        if user is None:
            return {"msg": "No such user"}
        return {"id": user.id, "nickname": user.nickname,
                "wechat": [{"connection": identity.connection, "nickname": identity.nickname}
                           for identity in wechat.identities_of(user)],
                "wechat_csrf_token": csrf_token()}

    if app.config["HOST_JWT_LOCATION"] == "cookies":
        @app.post("/api/logout")
        def logout() -> BaseResponse:
            response = app.json.response({"msg": "Logged out"})
            unset_jwt_cookies(response)
            return response

    if not header_routes:
        return

    @app.post("/api/token/wechat")
    def token_from_wechat_login() -> tuple[dict[str, t.Any], int]:
        handed = session.pop(HANDED_OVER, None) if request.is_json else None
        if handed is None or time.time() - handed["at"] > 60:
            return {"msg": "No WeChat login to collect"}, 401
        return {"access_token": create_access_token(identity=handed["user_id"])}, 200

    @app.post("/api/wechat/link")
    @jwt_required()
    def start_wechat_link() -> dict[str, t.Any]:
        session[LINKING] = {"user_id": get_jwt_identity(), "at": time.time()}
        body = request.get_json(silent=True)
        next_url = body.get("next") if isinstance(body, dict) else None
        return {"url": url_for("wechat_qr.link", next=next_url)}

    if app.config["HOST_JWT_LOCATION"] == "cookies":
        return

    @app.post("/api/logout")
    def log_out() -> dict[str, t.Any]:
        session.pop(HANDED_OVER, None)
        session.pop(LINKING, None)
        return {"msg": "Logged out"}  # and the SPA forgets its token


@signals.identity_linked.connect
def wechat_link_done(app: Flask, **extra: t.Any) -> None:
    """The link is done: this browser links WeChat for nobody any more (header variant)."""
    if app.import_name == __name__ and app.config.get("HOST_HEADER_ROUTES", True):
        session.pop(LINKING, None)


@signals.login_failed.connect
def back_to_the_spa(app: Flask, error: LoginError, next_url: str | None = None,
                    **extra: t.Any) -> BaseResponse | None:
    """A login that did not end well goes back to the SPA's login route, which says why."""
    if app.import_name != __name__ or not app.config.get("HOST_SPA_ERRORS", True):
        return None
    reason = "cancelled" if isinstance(error, LoginCancelled) else type(error).__name__
    return redirect(url_for("spa", path="login", wechat_error=reason, next=next_url))
