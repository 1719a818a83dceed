"""A site whose accounts live in a database of their own: the user model on the Flask-SQLAlchemy
bind ``users`` (``__bind_key__``, ``SQLALCHEMY_BINDS``), the site's other tables on the default
bind. Its members may delete their account from their account page."""

from __future__ import annotations

import typing as t

from flask import Flask, redirect, render_template, request
from flask_login import LoginManager, UserMixin, current_user, login_required, logout_user
from flask_sqlalchemy import SQLAlchemy
from werkzeug.wrappers import Response

from flask_wechat_qr import WeChatQR, check_csrf

db = SQLAlchemy()
login_manager = LoginManager()


class Member(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    __bind_key__ = "users"
    __tablename__ = "members"

    id = db.Column(db.Integer, primary_key=True)
    username = db.Column(db.String(80), unique=True)  # nullable: WeChat members have none
    nickname = db.Column(db.Unicode(255))
    avatar_url = db.Column(db.Text)
    password_hash = db.Column(db.String(255))


class Article(db.Model):  # type: ignore[name-defined,misc]
    """The site's own content, on the default bind."""

    id = db.Column(db.Integer, primary_key=True)
    title = db.Column(db.Unicode(200), nullable=False)


@login_manager.user_loader
def load_member(member_id: str) -> Member | None:
    return db.session.get(Member, int(member_id))


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(SECRET_KEY="dev", SQLALCHEMY_DATABASE_URI="sqlite:///site.db",
                            SQLALCHEMY_BINDS={"users": "sqlite:///accounts.db"})
    app.config.update(test_config or {})
    db.init_app(app)
    login_manager.init_app(app)
    wechat = WeChatQR(app, db=db, user_model=Member)

    @app.route("/")
    def index() -> str:
        articles = db.session.execute(db.select(Article)).scalars().all()
        return render_template("index.html", articles=articles)

    @app.route("/account")
    @login_required
    def account() -> str:
        return render_template("account.html", identities=wechat.identities_of(current_user))

    @app.route("/account/delete", methods=["POST"])
    @login_required
    def delete_account() -> Response:
        check_csrf(request.form.get("csrf_token"))
        db.session.delete(current_user._get_current_object())
        db.session.commit()
        logout_user()
        return redirect("/")

    if not app.config.get("MIGRATED"):
        with app.app_context():
            db.create_all()  # every bind's tables, the extension's with the members
    return app
