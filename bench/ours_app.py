"""The host site of the benchmark on Flask-WeChat-QR: the same user table and Flask-Login as
the baseline, the login done by the extension with its defaults (single-use state, repeated
callback handling, association policy "off", profile sync "first_login")."""

from __future__ import annotations

import typing as t

from flask import Flask
from flask_login import LoginManager, UserMixin, current_user
from flask_sqlalchemy import SQLAlchemy

from flask_wechat_qr import WeChatQR


def create_app(*, open_base: str, api_base: str, app_id: str, app_secret: str,
               database_uri: str, **config: t.Any) -> Flask:
    app = Flask("ours_app")
    app.config.update(
        SECRET_KEY="ours-secret-key-of-32-bytes-or-more",
        SQLALCHEMY_DATABASE_URI=database_uri,
        WECHAT_QR_APP_ID=app_id,
        WECHAT_QR_APP_SECRET=app_secret,
        WECHAT_QR_OPEN_BASE_URL=open_base,
        WECHAT_QR_API_BASE_URL=api_base,
        **config,
    )
    db = SQLAlchemy(app)
    login_manager = LoginManager(app)

    class User(db.Model, UserMixin):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        nickname = db.Column(db.Unicode(255))
        avatar_url = db.Column(db.Text)

    @login_manager.user_loader
    def load_user(user_id: str) -> t.Any:
        return db.session.get(User, int(user_id))

    WeChatQR(app, db=db, user_model=User)

    @app.route("/")
    def index() -> str:
        if current_user.is_authenticated:
            return f"logged in as {current_user.id} {current_user.nickname}"
        return "anonymous"

    with app.app_context():
        db.create_all()
    return app
