"""An API site on APIFlask, greyli's Flask subclass, as its tutorials in Chinese build one:
``json_errors`` on (its default: every HTTP error is JSON), an ``error_processor`` that
answers ``{"code": ..., "message": ...}``, an API blueprint of its own with a schema, the
OpenAPI spec and its docs at ``/openapi.json`` and ``/docs``; and one HTML page for people,
with the WeChat login button, Flask-Login keeping the session."""

from __future__ import annotations

import typing as t

from apiflask import APIBlueprint, APIFlask, Schema
from apiflask.fields import Integer, String
from flask import render_template_string
from flask_login import LoginManager, UserMixin, current_user
from flask_sqlalchemy import SQLAlchemy

from flask_wechat_qr import WeChatQR

db = SQLAlchemy()
login_manager = LoginManager()


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    id = db.Column(db.Integer, primary_key=True)
    username = db.Column(db.String(80), unique=True)
    password_hash = db.Column(db.String(255))
    nickname = db.Column(db.Unicode(255))


class ArticleOut(Schema):
    id = Integer()
    title = String()


api = APIBlueprint("api", __name__, url_prefix="/api")


@api.get("/articles/<int:article_id>")
@api.output(ArticleOut)
def article(article_id: int) -> dict[str, t.Any]:
    return {"id": article_id, "title": "你好"}


HOME = """<!doctype html><title>首页</title>
{% from "wechat_qr/macros.html" import wechat_login_button %}
<p id="who">{{ current_user.nickname if current_user.is_authenticated else "游客" }}</p>
{{ wechat_login_button("wechat", next=request.path) }}"""


def create_app(test_config: dict[str, t.Any] | None = None) -> APIFlask:
    app = APIFlask(__name__, title="文章 API", version="1.0")
    app.config.from_mapping(SECRET_KEY="dev", SQLALCHEMY_DATABASE_URI="sqlite:///api.db")
    app.config.update(test_config or {})

    @app.error_processor
    def api_error(error: t.Any) -> tuple[dict[str, t.Any], int, t.Any]:
        return {"code": error.status_code, "message": error.message}, error.status_code, \
            error.headers

    db.init_app(app)
    login_manager.init_app(app)
    login_manager.user_loader(lambda user_id: db.session.get(User, int(user_id)))
    WeChatQR(app, db=db, user_model=User)
    app.register_blueprint(api)

    @app.get("/")
    @app.doc(hide=True)
    def home() -> str:
        return render_template_string(HOME, current_user=current_user)

    with app.app_context():
        db.create_all()
    return app
