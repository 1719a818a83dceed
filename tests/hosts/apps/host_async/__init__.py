"""An async site (Flask's ``async`` extra): its views are ``async def``, the page with the
login button and the account page among them, and so are its receivers of the extension's
signals: an audit log, and a welcome page for people new to the site."""

from __future__ import annotations

import asyncio
import typing as t

from flask import Flask, redirect, render_template, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_required
from flask_sqlalchemy import SQLAlchemy
from werkzeug.wrappers import Response

from flask_wechat_qr import WeChatQR, signals

db = SQLAlchemy()
login_manager = LoginManager()


class Reader(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    id = db.Column(db.Integer, primary_key=True)
    username = db.Column(db.String(80), unique=True)
    nickname = db.Column(db.Unicode(255))
    avatar_url = db.Column(db.Text)
    password_hash = db.Column(db.String(255))


@login_manager.user_loader
def load_reader(reader_id: str) -> Reader | None:
    return db.session.get(Reader, int(reader_id))


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(SECRET_KEY="dev", SQLALCHEMY_DATABASE_URI="sqlite:///reader.db")
    app.config.update(test_config or {})
    db.init_app(app)
    login_manager.init_app(app)
    wechat = WeChatQR(app, db=db, user_model=Reader)
    app.extensions["audit"] = audit = []

    @app.route("/")
    async def index() -> str:
        await asyncio.sleep(0)  # the site's own awaits: a feed, a cache
        return render_template("index.html")

    @app.route("/account")
    @login_required
    async def account() -> str:
        await asyncio.sleep(0)
        return render_template("account.html", identities=wechat.identities_of(current_user),
                               welcome=request.args.get("welcome"))

    @signals.user_created.connect_via(app)
    async def created(sender: Flask, user: Reader, **extra: t.Any) -> None:
        await asyncio.sleep(0)
        audit.append(f"created {user.id}")

    @signals.identity_unlinked.connect_via(app)
    async def unlinked(sender: Flask, user: Reader, **extra: t.Any) -> None:
        audit.append(f"unlinked {user.id}")

    @signals.login_succeeded.connect_via(app)
    async def welcome(sender: Flask, user: Reader, created_user: bool,
                      **extra: t.Any) -> Response | None:
        audit.append(f"logged in {user.id}")
        return redirect(url_for("account", welcome=1)) if created_user else None

    with app.app_context():
        db.create_all()
    return app
