"""The same site as a newcomer first wires it, from the README alone: no adapter, so nothing
fills the required ``email`` of a user that a first WeChat login creates."""

from __future__ import annotations

import typing as t

from flask import Flask

from flask_wechat_qr import WeChatQR

from . import User, db, login_manager


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(SECRET_KEY="dev", SQLALCHEMY_DATABASE_URI="sqlite:///members.db")
    app.config.update(test_config or {})
    db.init_app(app)
    login_manager.init_app(app)
    WeChatQR(app, db=db, user_model=User)
    return app
