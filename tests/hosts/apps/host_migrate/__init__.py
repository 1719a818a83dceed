"""A site whose schema Flask-Migrate manages: its own migration creates ``user``, the
extension's tables come from ``flask wechat-qr db upgrade`` and stay out of the site's
history (``host_include_object``), as docs/deploying.rst says; nothing calls
``db.create_all()``. Configured from the environment, as deployed sites are."""

from __future__ import annotations

import os
import typing as t

from flask import Flask, render_template
from flask_login import LoginManager, UserMixin, current_user, login_required
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from flask_wechat_qr import WeChatQR
from flask_wechat_qr.migrations import host_include_object
from flask_wechat_qr.sandbox import sandbox_tables

MIGRATIONS = os.path.join(os.path.dirname(__file__), "migrations")
#: The settings read from the environment when set there.
FROM_ENVIRONMENT = ("SECRET_KEY", "WECHAT_QR_APP_ID", "WECHAT_QR_APP_SECRET", "WECHAT_QR_SANDBOX")

db = SQLAlchemy()
migrate = Migrate()
login_manager = LoginManager()


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    id = db.Column(db.Integer, primary_key=True)
    username = db.Column(db.String(80), unique=True)
    nickname = db.Column(db.Unicode(255))
    password_hash = db.Column(db.String(255))


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id))


wechat = WeChatQR(db=db, user_model=User)


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY="dev",
        SQLALCHEMY_DATABASE_URI=os.environ.get(
            "DATABASE_URL", "sqlite:///" + os.path.join(app.instance_path, "site.db")),
    )
    app.config.update({name: os.environ[name] for name in FROM_ENVIRONMENT
                       if name in os.environ})
    app.config.update(test_config or {})
    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS, include_object=host_include_object)
    login_manager.init_app(app)
    wechat.init_app(app)

    @app.route("/")
    def index() -> str:
        return render_template("index.html")

    @app.route("/account")
    @login_required
    def account() -> str:
        return render_template("account.html", identities=wechat.identities_of(current_user))

    if sandbox_tables(app):  # development only: the simulated WeChat's own tables
        with app.app_context():
            db.metadata.create_all(db.engine, tables=sandbox_tables(app))
    return app
