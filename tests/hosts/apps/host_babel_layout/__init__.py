"""A shop in English and Spanish: Flask-Babel with only those two languages and the shop's
own locale selector, a Bootstrap layout with no ``head`` or ``title`` block, and the
extension's pages put into that layout by overriding ``wechat_qr/base.html`` as
docs/templates.rst shows."""

from __future__ import annotations

import typing as t

from flask import Flask, render_template, request
from flask_babel import Babel, get_locale, gettext
from flask_login import LoginManager, UserMixin, current_user, login_required
from flask_sqlalchemy import SQLAlchemy

from flask_wechat_qr import WeChatQR

LANGUAGES = ["en", "es"]

db = SQLAlchemy()
login_manager = LoginManager()
babel = Babel()


class Customer(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    id = db.Column(db.Integer, primary_key=True)
    username = db.Column(db.String(80), unique=True)  # nullable: WeChat customers have none
    nickname = db.Column(db.Unicode(255))
    avatar_url = db.Column(db.Text)
    password_hash = db.Column(db.String(255))
    newsletter = db.Column(db.Boolean, nullable=False, default=False)  # required, defaulted


@login_manager.user_loader
def load_customer(customer_id: str) -> Customer | None:
    return db.session.get(Customer, int(customer_id))


def select_locale() -> str | None:
    """The shop speaks English and Spanish; anything else gets the default (English)."""
    return request.accept_languages.best_match(LANGUAGES)


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(SECRET_KEY="dev", SQLALCHEMY_DATABASE_URI="sqlite:///shop.db",
                            BABEL_DEFAULT_LOCALE="en")
    app.config.update(test_config or {})
    db.init_app(app)
    login_manager.init_app(app)
    babel.init_app(app, locale_selector=select_locale)
    app.jinja_env.globals["get_locale"] = get_locale
    wechat = WeChatQR(app, db=db, user_model=Customer)

    @app.route("/")
    def index() -> str:
        return render_template("index.html", greeting=gettext("Welcome to the shop"))

    @app.route("/account")
    @login_required
    def account() -> str:
        return render_template("account.html", identities=wechat.identities_of(current_user))

    with app.app_context():
        db.create_all()
    return app
