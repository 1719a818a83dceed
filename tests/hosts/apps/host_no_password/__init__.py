"""A community site where nobody has a password (people come in by an e-mailed link or by
WeChat): no password column at all, and string primary keys made by the site."""

from __future__ import annotations

import secrets
import typing as t

from flask import Flask, render_template
from flask_login import LoginManager, UserMixin, current_user, login_required
from flask_sqlalchemy import SQLAlchemy

from flask_wechat_qr import WeChatQR

db = SQLAlchemy()
login_manager = LoginManager()


def new_member_id() -> str:
    return "m_" + secrets.token_urlsafe(12)


class Member(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    id = db.Column(db.String(40), primary_key=True, default=new_member_id)
    email = db.Column(db.String(254), unique=True)  # verified by the e-mailed link
    nickname = db.Column(db.Unicode(64))
    avatar_url = db.Column(db.Text)


@login_manager.user_loader
def load_member(member_id: str) -> Member | None:
    return db.session.get(Member, member_id)


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(SECRET_KEY="dev", SQLALCHEMY_DATABASE_URI="sqlite:///club.db")
    app.config.update(test_config or {})
    db.init_app(app)
    login_manager.init_app(app)
    wechat = WeChatQR(app, db=db, user_model=Member)

    @app.route("/")
    def index() -> str:
        return render_template("home.html")

    @app.route("/settings")
    @login_required
    def settings() -> str:
        return render_template("settings.html", identities=wechat.identities_of(current_user))

    with app.app_context():
        db.create_all()
    return app
