"""A site that logs people in with GitHub through Flask-Dance, as its "Multi-User
SQLAlchemy" guide builds one, and with WeChat beside it: one user model, Flask-Login shared,
the site's own ``OAuth`` table (Flask-Dance's ``OAuthConsumerMixin``, ``flask_dance_oauth``)
next to the extension's, GitHub's ``oauth_authorized`` receiver logging the user in (and
making one the first time). The account page links WeChat; logging out logs out of both."""

from __future__ import annotations

import typing as t

from flask import Flask, flash, redirect, render_template_string, url_for
from flask_dance.consumer import oauth_authorized
from flask_dance.consumer.storage.sqla import OAuthConsumerMixin, SQLAlchemyStorage
from flask_dance.contrib.github import make_github_blueprint
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_user,
    logout_user,
)
from flask_sqlalchemy import SQLAlchemy
from werkzeug.wrappers import Response as BaseResponse

from flask_wechat_qr import WeChatQR

db = SQLAlchemy()
login_manager = LoginManager()
login_manager.login_view = "login"


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    id = db.Column(db.Integer, primary_key=True)
    username = db.Column(db.String(256), unique=True)
    nickname = db.Column(db.Unicode(255))


class OAuth(OAuthConsumerMixin, db.Model):  # type: ignore[name-defined,misc]
    provider_user_id = db.Column(db.String(256), unique=True, nullable=False)
    user_id = db.Column(db.Integer, db.ForeignKey(User.id), nullable=False)
    user = db.relationship(User)


wechat = WeChatQR(db=db, user_model=User)

github = make_github_blueprint(client_id="github-client-id", client_secret="github-secret",
                               storage=SQLAlchemyStorage(OAuth, db.session, user=current_user))


@oauth_authorized.connect_via(github)
def github_logged_in(blueprint: t.Any, token: dict[str, t.Any] | None) -> bool:
    """The guide's receiver: find the GitHub account's user (make one the first time), log
    them in, keep the token; ``False``: Flask-Dance stores nothing itself."""
    if not token:
        flash("GitHub 登录失败")
        return False
    info = blueprint.session.get("/user").json()
    github_id = str(info["id"])
    oauth = db.session.execute(db.select(OAuth).filter_by(
        provider=blueprint.name, provider_user_id=github_id)).scalar_one_or_none()
    if oauth is None:
        oauth = OAuth(provider=blueprint.name, provider_user_id=github_id, token=token)
    else:
        oauth.token = token
    if oauth.user is None:
        oauth.user = User(username=info["login"], nickname=info.get("name"))
        db.session.add(oauth)
    db.session.commit()
    login_user(oauth.user)
    flash("已通过 GitHub 登录")
    return False


PAGE = """<!doctype html><html lang="zh-CN"><head><title>{{ title }}</title></head><body>
{% for message in get_flashed_messages() %}<p class="flash">{{ message }}</p>{% endfor %}
<p id="who">{{ current_user.nickname or current_user.username
                if current_user.is_authenticated else "游客" }}</p>
{{ body|safe }}</body></html>"""


def page(title: str, body: str = "") -> str:
    return render_template_string(PAGE, title=title, body=body, current_user=current_user)


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(SECRET_KEY="dev", SQLALCHEMY_DATABASE_URI="sqlite:///dance.db")
    app.config.update(test_config or {})
    db.init_app(app)
    login_manager.init_app(app)
    login_manager.user_loader(lambda user_id: db.session.get(User, int(user_id)))
    app.register_blueprint(github, url_prefix="/login")
    wechat.init_app(app)

    @app.route("/")
    def home() -> str:
        return page("首页")

    @app.route("/login")
    def login() -> str:
        return page("登录", f'<a id="github" href="{url_for("github.login")}">GitHub 登录</a> '
                    f'<a id="wechat" href="{url_for("wechat_qr.login")}">微信登录</a>')

    @app.route("/account")
    @login_required
    def account() -> str:
        linked = [identity.connection for identity in wechat.identities_of(current_user)]
        github_linked = db.session.execute(db.select(OAuth).filter_by(
            user_id=current_user.id, provider="github")).scalar_one_or_none() is not None
        link = url_for("wechat_qr.link", connection="wechat", next=url_for("account"))
        return page("账号", f'<p id="wechat">{",".join(linked) or "未绑定微信"}</p>'
                    f'<p id="github">{"GitHub" if github_linked else "未绑定 GitHub"}</p>'
                    f'<a id="link" href="{link}">绑定微信</a>')

    @app.route("/logout")
    def logout() -> BaseResponse:
        logout_user()
        return redirect(url_for("home"))

    with app.app_context():
        db.create_all()
    return app
