"""The best hand-written handler: "Log in with WeChat" as a careful developer writes it.

Flask + Flask-Login + the same Flask-SQLAlchemy user table as the other sites, and no
OAuth library: one pooled keep-alive ``requests.Session`` per process for WeChat's API; a
random state kept in the session cookie and popped by the callback (single use within
that browser's session, not across workers or replays of an old cookie); the profile
fetched only for a user it does not know yet (the token already carries ``openid``), so a
returning login is one WeChat call, one indexed SELECT and no write. No typed errors or
error pages, no repeated-callback handling, no account association.
"""

from __future__ import annotations

import hmac
import json
import secrets
import typing as t
from urllib.parse import urlencode

import requests
import sqlalchemy as sa
from flask import Flask, abort, redirect, request, session, url_for
from flask_login import LoginManager, UserMixin, current_user, login_user
from flask_sqlalchemy import SQLAlchemy
from requests.adapters import HTTPAdapter

#: Seconds any one WeChat API call may take.
API_TIMEOUT = 10


def create_app(*, open_base: str, api_base: str, app_id: str, app_secret: str,
               database_uri: str) -> Flask:
    app = Flask("handwritten_app")
    app.config.update(SECRET_KEY="handwritten-secret-key", SQLALCHEMY_DATABASE_URI=database_uri)
    db = SQLAlchemy(app)
    login_manager = LoginManager(app)
    wechat = requests.Session()  # one per process, shared by its threads: kept alive
    wechat.mount(api_base, HTTPAdapter(pool_connections=1, pool_maxsize=32))

    class User(db.Model, UserMixin):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        openid = db.Column(db.String(64), unique=True, nullable=False)
        unionid = db.Column(db.String(64), index=True)
        nickname = db.Column(db.Unicode(255))
        avatar_url = db.Column(db.Text)

    @login_manager.user_loader
    def load_user(user_id: str) -> t.Any:
        return db.session.get(User, int(user_id))

    def wechat_api(path: str, **params: str) -> dict[str, t.Any]:
        resp = wechat.get(f"{api_base}/sns/{path}", params=params, timeout=API_TIMEOUT)
        data = t.cast(dict[str, t.Any], json.loads(resp.content))  # served as text/plain
        if resp.status_code != 200 or data.get("errcode"):
            abort(502)
        return data

    def new_user(token: dict[str, t.Any]) -> t.Any:
        info = wechat_api("userinfo", access_token=token["access_token"],
                          openid=token["openid"], lang="zh_CN")
        user = User(openid=info["openid"], unionid=info.get("unionid"),
                    nickname=info.get("nickname"), avatar_url=info.get("headimgurl"))
        db.session.add(user)
        try:
            db.session.commit()
        except sa.exc.IntegrityError:  # the same person's other tab got there first
            db.session.rollback()
            user = db.session.execute(
                sa.select(User).where(User.openid == info["openid"])).scalar_one()
        return user

    @app.route("/")
    def index() -> str:
        if current_user.is_authenticated:
            return f"logged in as {current_user.id} {current_user.nickname}"
        return "anonymous"

    @app.route("/login")
    def login() -> t.Any:
        state = session["wechat_state"] = secrets.token_urlsafe(16)
        query = urlencode([("appid", app_id), ("redirect_uri", url_for("callback", _external=True)),
                           ("response_type", "code"), ("scope", "snsapi_login"),
                           ("state", state)])
        return redirect(f"{open_base}/connect/qrconnect?{query}#wechat_redirect")

    @app.route("/callback")
    def callback() -> t.Any:
        expected = session.pop("wechat_state", "")
        code, state = request.args.get("code"), request.args.get("state", "")
        if not code or not expected or not hmac.compare_digest(expected, state):
            abort(400)
        token = wechat_api("oauth2/access_token", appid=app_id, secret=app_secret, code=code,
                           grant_type="authorization_code")
        user = db.session.execute(
            sa.select(User).where(User.openid == token["openid"])).scalar_one_or_none()
        if user is None:
            user = new_user(token)
        login_user(user)
        return redirect("/")

    with app.app_context():
        db.create_all()
    return app
