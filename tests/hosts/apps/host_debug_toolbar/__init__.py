"""A site in development with Flask-DebugToolbar, as its README sets it up: ``DEBUG=True``,
``DebugToolbarExtension(app)`` with its defaults (every redirect intercepted: a page with a
link to where it went; the toolbar injected into every HTML page), the extension on the
in-app sandbox (what a site in development runs)."""

from __future__ import annotations

import typing as t

from flask import Flask, render_template_string
from flask_debugtoolbar import DebugToolbarExtension
from flask_login import LoginManager, UserMixin, current_user
from flask_sqlalchemy import SQLAlchemy

from flask_wechat_qr import WeChatQR

db = SQLAlchemy()
login_manager = LoginManager()


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    id = db.Column(db.Integer, primary_key=True)
    nickname = db.Column(db.Unicode(255))


HOME = """<!doctype html><html lang="zh-CN"><head><title>首页</title></head><body>
<p id="who">{{ current_user.nickname if current_user.is_authenticated else "游客" }}</p>
<a href="{{ url_for('wechat_qr.qr', connection='wechat', next='/') }}">微信扫码登录</a>
</body></html>"""


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(SECRET_KEY="dev", SQLALCHEMY_DATABASE_URI="sqlite:///debug.db",
                            DEBUG=True, WECHAT_QR_SANDBOX=True)
    app.config.update(test_config or {})
    app.debug = app.config["DEBUG"]
    db.init_app(app)
    login_manager.init_app(app)
    login_manager.user_loader(lambda user_id: db.session.get(User, int(user_id)))
    DebugToolbarExtension(app)
    WeChatQR(app, db=db, user_model=User)

    @app.route("/")
    def home() -> str:
        return render_template_string(HOME, current_user=current_user)

    with app.app_context():
        db.create_all()
    return app
