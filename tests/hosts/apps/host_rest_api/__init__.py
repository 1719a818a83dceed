"""An API site with one HTML page for people (the WeChat login button), its API on one of
the two REST frameworks Chinese tutorials use, chosen by ``HOST_API``:

* ``"restx_app"``: Flask-RESTX's ``Api(app)``, which wraps the app's ``handle_exception``
  and ``handle_user_exception`` (its error router), claims ``/`` (after the site's own home,
  declared first) and serves ``/swagger.json`` and its docs;
* ``"restx_blueprint"``: ``Api(blueprint)`` under ``/api``;
* ``"smorest"``: Flask-Smorest's ``Api(app)``, which answers every ``HTTPException`` of the
  app in JSON (its app-wide error handler).

Flask-Login keeps the session; the users bind with a password (ask binding)."""

from __future__ import annotations

import typing as t

from flask import Blueprint, Flask, render_template_string
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


HOME = """<!doctype html><html lang="zh-CN"><head><title>首页</title></head><body>
{% from "wechat_qr/macros.html" import wechat_login_button %}
<p id="who">{{ current_user.nickname if current_user.is_authenticated else "游客" }}</p>
{{ wechat_login_button("wechat", next=request.path) }}</body></html>"""


def restx_api(target: Flask | Blueprint) -> None:
    from flask_restx import Api, Resource

    api = Api(target, title="文章 API", doc="/docs")

    @api.route("/articles/<int:article_id>")
    class Article(Resource):  # type: ignore[misc]
        def get(self, article_id: int) -> dict[str, t.Any]:
            return {"id": article_id, "title": "你好"}


def smorest_api(app: Flask) -> None:
    from flask_smorest import Api
    from flask_smorest import Blueprint as ApiBlueprint

    app.config.update(API_TITLE="文章 API", API_VERSION="v1", OPENAPI_VERSION="3.0.3")
    api = Api(app)
    articles = ApiBlueprint("articles", __name__, url_prefix="/api")

    @articles.route("/articles/<int:article_id>")
    def article(article_id: int) -> dict[str, t.Any]:
        return {"id": article_id, "title": "你好"}

    api.register_blueprint(articles)


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(SECRET_KEY="dev", SQLALCHEMY_DATABASE_URI="sqlite:///api.db",
                            HOST_API="restx_app")
    app.config.update(test_config or {})
    db.init_app(app)
    login_manager.init_app(app)
    login_manager.user_loader(lambda user_id: db.session.get(User, int(user_id)))

    @app.route("/")
    def home() -> str:
        return render_template_string(HOME, current_user=current_user)

    kind = app.config["HOST_API"]
    if kind == "restx_app":
        restx_api(app)
    elif kind == "restx_blueprint":
        blueprint = Blueprint("api", __name__, url_prefix="/api")
        restx_api(blueprint)
        app.register_blueprint(blueprint)
    else:
        smorest_api(app)
    WeChatQR(app, db=db, user_model=User)

    with app.app_context():
        db.create_all()
    return app
