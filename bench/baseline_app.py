"""The baseline: "Log in with WeChat" as a developer writes it in an afternoon.

Flask + Authlib's Flask client + Flask-Login + a tiny SQLite user table (Flask-SQLAlchemy,
as in the host app of the extension, so both pay the same ORM). WeChat's quirks are handled
just enough to work: the QR URL is built by hand in WeChat's parameter order, the token is
fetched with a GET and ``appid``/``secret`` in the query (a custom client-auth method), a
compliance hook decodes the ``text/plain`` JSON and checks ``errcode``. No state table
(Authlib keeps the state in the cookie session), no typed errors or error pages, no
account association, the profile fetched on every login, and Authlib's default of a new
HTTP session (a new TCP connection) per API call.
"""

from __future__ import annotations

import json
import typing as t
from urllib.parse import urlencode

import sqlalchemy as sa
from authlib.common.urls import add_params_to_uri
from authlib.integrations.flask_client import OAuth, OAuthError
from flask import Flask, abort, redirect, url_for
from flask_login import LoginManager, UserMixin, current_user, login_user
from flask_sqlalchemy import SQLAlchemy


def create_app(*, open_base: str, api_base: str, app_id: str, app_secret: str,
               database_uri: str) -> Flask:
    app = Flask("baseline_app")
    app.config.update(SECRET_KEY="baseline-secret-key", SQLALCHEMY_DATABASE_URI=database_uri)
    db = SQLAlchemy(app)
    login_manager = LoginManager(app)

    class User(db.Model, UserMixin):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        openid = db.Column(db.String(64), unique=True, nullable=False)
        unionid = db.Column(db.String(64), index=True)
        nickname = db.Column(db.Unicode(255))
        avatar_url = db.Column(db.Text)

    @login_manager.user_loader
    def load_user(user_id: str) -> t.Any:
        return db.session.get(User, int(user_id))

    def appid_secret(auth: t.Any, method: str, uri: str, headers: t.Any, body: t.Any
                     ) -> tuple[str, t.Any, t.Any]:
        uri = add_params_to_uri(uri, [("appid", auth.client_id),
                                      ("secret", auth.client_secret)])
        return uri, headers, body

    def wechat_compliance_fix(session: t.Any) -> None:
        def fix_token(resp: t.Any) -> t.Any:
            data = json.loads(resp.content.decode("utf-8"))
            if data.get("errcode"):
                raise OAuthError(error=str(data["errcode"]), description=data.get("errmsg"))
            data["token_type"] = "Bearer"
            resp.json = lambda **kwargs: data
            return resp

        session.register_compliance_hook("access_token_response", fix_token)

    oauth = OAuth(app)
    oauth.register(
        "wechat",
        client_id=app_id,
        client_secret=app_secret,
        authorize_url=f"{open_base}/connect/qrconnect",
        access_token_url=f"{api_base}/sns/oauth2/access_token",
        access_token_params={"method": "GET"},
        api_base_url=f"{api_base}/",
        client_auth_methods=[("wechat", appid_secret)],
        client_kwargs={"scope": "snsapi_login", "token_endpoint_auth_method": "wechat"},
        compliance_fix=wechat_compliance_fix,
    )

    @app.route("/")
    def index() -> str:
        if current_user.is_authenticated:
            return f"logged in as {current_user.id} {current_user.nickname}"
        return "anonymous"

    @app.route("/login")
    def login() -> t.Any:
        redirect_uri = url_for("callback", _external=True)
        rv = oauth.wechat.create_authorization_url(redirect_uri)
        oauth.wechat.save_authorize_data(redirect_uri=redirect_uri, **rv)
        query = urlencode([("appid", app_id), ("redirect_uri", redirect_uri),
                           ("response_type", "code"), ("scope", "snsapi_login"),
                           ("state", rv["state"])])
        return redirect(f"{open_base}/connect/qrconnect?{query}#wechat_redirect")

    @app.route("/callback")
    def callback() -> t.Any:
        try:
            token = oauth.wechat.authorize_access_token()
        except OAuthError:
            abort(400)
        resp = oauth.wechat.get("sns/userinfo", withhold_token=True, params={
            "access_token": token["access_token"], "openid": token["openid"], "lang": "zh_CN"})
        info = json.loads(resp.content.decode("utf-8"))
        if info.get("errcode"):
            abort(502)
        user = db.session.execute(
            sa.select(User).where(User.openid == info["openid"])).scalar_one_or_none()
        if user is None:
            user = User(openid=info["openid"])
            db.session.add(user)
        user.unionid = info.get("unionid")
        user.nickname = info.get("nickname")
        user.avatar_url = info.get("headimgurl")
        db.session.commit()
        login_user(user)
        return redirect("/")

    with app.app_context():
        db.create_all()
    return app
