"""A site with a Flask-Admin back office (后台), as its quick start builds one: ``ModelView``s
of the site's users and of the extension's WeChat identities, open to the site's admins only
(Flask-Login), Flask-Babel for the admin's Chinese; people log in with WeChat."""

from __future__ import annotations

import typing as t

from flask import Flask, render_template_string
from flask_admin import Admin
from flask_admin.contrib.sqla import ModelView
from flask_babel import Babel
from flask_login import LoginManager, UserMixin, current_user
from flask_sqlalchemy import SQLAlchemy

from flask_wechat_qr import WeChatQR

db = SQLAlchemy()
login_manager = LoginManager()


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    id = db.Column(db.Integer, primary_key=True)
    username = db.Column(db.String(80), unique=True)
    nickname = db.Column(db.Unicode(255))
    is_admin = db.Column(db.Boolean, nullable=False, default=False)


class AdminOnly(ModelView):  # type: ignore[misc]
    """Every admin page: the site's admins only."""

    def is_accessible(self) -> bool:
        return bool(current_user.is_authenticated and current_user.is_admin)


class IdentityView(AdminOnly):
    """The identities, as docs/association.rst shows them: every column sorts but
    ``profile`` (``json`` on PostgreSQL, which has no order)."""

    column_sortable_list = ("connection", "app", "openid", "unionid", "user_id", "nickname",
                            "created_at", "last_login_at")


HOME = """<!doctype html><html lang="zh-CN"><head><title>首页</title></head><body>
<p id="who">{{ current_user.nickname if current_user.is_authenticated else "游客" }}</p>
<a href="{{ url_for('wechat_qr.login', next='/') }}">微信登录</a></body></html>"""


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(SECRET_KEY="dev", SQLALCHEMY_DATABASE_URI="sqlite:///admin.db")
    app.config.update(test_config or {})
    db.init_app(app)
    login_manager.init_app(app)
    login_manager.user_loader(lambda user_id: db.session.get(User, int(user_id)))
    wechat = WeChatQR(app, db=db, user_model=User)
    Babel(app, default_locale="zh_CN")
    admin = Admin(app, name="后台")
    admin.add_view(AdminOnly(User, db, name="用户"))
    with app.app_context():
        identity = wechat.identity_model
    admin.add_view(IdentityView(identity, db, name="微信身份", endpoint="identity"))

    @app.route("/")
    def home() -> str:
        return render_template_string(HOME, current_user=current_user)

    with app.app_context():
        db.create_all()
    return app
