"""A blog laid out as the Flask docs' larger applications are: the extensions are created at
module level here, the models import ``db`` from this package (a circular import that works
because ``db`` exists first), blueprints are registered inside ``create_app``, and
``wechat.init_app(app)`` runs in the factory, once for every app the factory makes."""

from __future__ import annotations

import typing as t

from flask import Flask
from flask_login import LoginManager
from flask_sqlalchemy import SQLAlchemy

from flask_wechat_qr import WeChatQR

db = SQLAlchemy()
login_manager = LoginManager()

from .models import Author  # noqa: E402  (models import db from here)

wechat = WeChatQR(db=db, user_model=Author)


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(SECRET_KEY="dev", SQLALCHEMY_DATABASE_URI="sqlite:///blog.db")
    app.config.update(test_config or {})

    db.init_app(app)
    login_manager.init_app(app)
    wechat.init_app(app)

    from .auth import auth
    from .blog import blog

    app.register_blueprint(blog)
    app.register_blueprint(auth, url_prefix="/users")

    with app.app_context():
        db.create_all()
    return app
