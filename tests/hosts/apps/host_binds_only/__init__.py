"""A site with no default database: ``SQLALCHEMY_BINDS`` only (no
``SQLALCHEMY_DATABASE_URI``), every model on a bind of its own, the user model on
``accounts`` and the site's content on ``content``. Flask-SQLAlchemy's ``db.create_all()``
refuses such a site (it needs the default bind), so it names its binds."""

from __future__ import annotations

import typing as t

from flask import Flask, render_template_string
from flask_login import LoginManager, UserMixin
from flask_sqlalchemy import SQLAlchemy

from flask_wechat_qr import WeChatQR

db = SQLAlchemy()
login_manager = LoginManager()

INDEX = """<!doctype html><title>Binds only</title>
{% from "wechat_qr/macros.html" import wechat_login_button %}
{% if current_user.is_authenticated %}<p id="who">Hello, {{ current_user.nickname }}</p>
{% else %}<p id="who">anonymous</p>{{ wechat_login_button("wechat") }}{% endif %}
{% for article in articles %}<h2>{{ article.title }}</h2>{% endfor %}"""


class Member(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    __bind_key__ = "accounts"
    __tablename__ = "members"

    id = db.Column(db.Integer, primary_key=True)
    username = db.Column(db.String(80), unique=True)
    nickname = db.Column(db.Unicode(255))
    avatar_url = db.Column(db.Text)


class Article(db.Model):  # type: ignore[name-defined,misc]
    __bind_key__ = "content"

    id = db.Column(db.Integer, primary_key=True)
    title = db.Column(db.Unicode(200), nullable=False)


@login_manager.user_loader
def load_member(member_id: str) -> Member | None:
    return db.session.get(Member, int(member_id))


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(SECRET_KEY="dev", SQLALCHEMY_BINDS={
        "accounts": "sqlite:///accounts.db", "content": "sqlite:///content.db"})
    app.config.update(test_config or {})
    db.init_app(app)
    login_manager.init_app(app)
    WeChatQR(app, db=db, user_model=Member)

    @app.route("/")
    def index() -> str:
        articles = db.session.execute(db.select(Article)).scalars().all()
        return render_template_string(INDEX, articles=articles)

    if not app.config.get("MIGRATED"):
        with app.app_context():
            db.create_all(bind_key=list(app.config["SQLALCHEMY_BINDS"]))
    return app
