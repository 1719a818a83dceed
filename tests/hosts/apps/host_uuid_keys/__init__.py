"""A site on SQLAlchemy 2 typed models whose users have UUID primary keys (native ``uuid`` on
PostgreSQL, ``CHAR(32)`` on SQLite), Werkzeug password hashes in ``password_hash`` and no
``check_password`` method; it follows the README's single-module set-up."""

from __future__ import annotations

import typing as t
import uuid
from datetime import datetime

from flask import Flask, render_template
from flask_login import LoginManager, UserMixin, current_user, login_required
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_wechat_qr import WeChatQR


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
login_manager = LoginManager()


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "account"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    username: Mapped[str | None] = mapped_column(String(80), unique=True)
    nickname: Mapped[str | None] = mapped_column(String(255))
    avatar_url: Mapped[str | None] = mapped_column(Text)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    # Required, but filled without the adapter: by the database and by SQLAlchemy.
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    role: Mapped[str] = mapped_column(String(20), default="member")


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    try:
        return db.session.get(User, uuid.UUID(user_id))
    except ValueError:
        return None


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(SECRET_KEY="dev", SQLALCHEMY_DATABASE_URI="sqlite:///uuid.db")
    app.config.update(test_config or {})
    db.init_app(app)
    login_manager.init_app(app)
    wechat = WeChatQR(app, db=db, user_model=User)

    @app.route("/")
    def index() -> str:
        return render_template("index.html")

    @app.route("/me")
    @login_required
    def account() -> str:
        return render_template("me.html", identities=wechat.identities_of(current_user))

    with app.app_context():
        db.create_all()  # after WeChatQR, so its tables are created too
    return app
