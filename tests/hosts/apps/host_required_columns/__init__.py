"""A members' site in the shape of the Flask Mega-Tutorial: ``username`` and ``email`` are
required, passwords are Werkzeug hashes behind ``set_password``/``check_password`` (which,
like ``check_password_hash``, raises on a ``None`` hash), and the WeChat users it creates get
their required columns from a ``create_user`` hook, as docs/hooks.rst shows."""

from __future__ import annotations

import secrets
import typing as t

from flask import Flask, redirect, render_template, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user
from flask_sqlalchemy import SQLAlchemy
from werkzeug.security import check_password_hash, generate_password_hash

from flask_wechat_qr import AccountAdapter, WeChatQR

db = SQLAlchemy()
login_manager = LoginManager()
login_manager.login_view = "login"


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "users"

    id = db.Column(db.Integer, primary_key=True)
    username = db.Column(db.String(64), unique=True, nullable=False)
    email = db.Column(db.String(120), unique=True, nullable=False)
    password_hash = db.Column(db.String(256))
    about_me = db.Column(db.String(140))

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)  # raises on None


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id))


class Adapter(AccountAdapter):
    """WeChat users get a username and an address nobody can mail (WeChat gives none)."""

    def create_user(self, connection: t.Any, profile: t.Any) -> User:
        user = super().create_user(connection, profile)
        user.username = f"wx_{secrets.token_hex(5)}"
        user.email = f"{user.username}@wechat.invalid"
        return t.cast(User, user)


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(SECRET_KEY="dev", SQLALCHEMY_DATABASE_URI="sqlite:///members.db")
    app.config.update(test_config or {})
    db.init_app(app)
    login_manager.init_app(app)
    wechat = WeChatQR(app, db=db, adapter=Adapter(db, User))
    add_routes(app, wechat)
    with app.app_context():
        db.create_all()
    return app


def add_routes(app: Flask, wechat: WeChatQR) -> None:
    """The site's own pages: home, its login form and the account page."""

    @app.route("/")
    def index() -> str:
        return render_template("index.html")

    @app.route("/login", methods=["GET", "POST"])
    def login() -> t.Any:
        problem = None
        if request.method == "POST":
            user = db.session.execute(
                db.select(User).filter_by(username=request.form["username"])
            ).scalar_one_or_none()
            if user is not None and user.password_hash \
                    and user.check_password(request.form["password"]):
                login_user(user)
                return redirect(url_for("account"))
            problem = "Invalid username or password"
        return render_template("login.html", problem=problem)

    @app.route("/account")
    @login_required
    def account() -> str:
        return render_template("account.html", user=current_user,
                               identities=wechat.identities_of(current_user))
