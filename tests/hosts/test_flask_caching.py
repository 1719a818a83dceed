"""A site on Flask-Caching (``CACHE_TYPE="SimpleCache"``) that caches its home page with
``@cache.cached()`` and, in its own hooks, keeps every ``GET`` answer and serves it again
to whoever asks for the same URL, unless the answer says ``no-store`` or ``private``. No
page of the login (its start, WeChat's QR page, the callback, the bind page) is kept: a
second browser asking for the same URLs gets its own answer, never the first person's."""

from __future__ import annotations

import typing as t
from pathlib import Path

from flask import Flask, request
from flask_caching import Cache
from flask_login import LoginManager, UserMixin, current_user
from flask_sqlalchemy import SQLAlchemy

from .browse import Browser, assert_no_server_error, wechat_login
from .shapes import small_site


def caching_site(tmp_path: Path) -> tuple[Flask, list[str]]:
    db = SQLAlchemy()
    login_manager = LoginManager()
    cache = Cache()

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        nickname = db.Column(db.Unicode(255))
        username = db.Column(db.String(80), unique=True)
        password_hash = db.Column(db.String(255))

    app = small_site(tmp_path, "caching_site", db, login_manager, User,
                     CACHE_TYPE="SimpleCache", WECHAT_QR_ASSOCIATION="ask_binding")
    cache.init_app(app)
    kept: list[str] = []

    @app.before_request
    def from_cache() -> t.Any:
        if request.method == "GET":
            return cache.get("page:" + request.full_path)
        return None

    @app.after_request
    def into_cache(response: t.Any) -> t.Any:
        told = response.cache_control.no_store or response.cache_control.private
        if request.method == "GET" and response.status_code in (200, 302) and not told:
            cache.set("page:" + request.full_path, response)
            kept.append(request.path)
        return response

    @app.route("/")
    @cache.cached(timeout=60)
    def home() -> str:
        return "<p>欢迎</p>"

    @app.route("/me")
    def me() -> t.Any:
        response = app.make_response(f"<p>{current_user.nickname}</p>")
        response.cache_control.private = True
        return response

    with app.app_context():
        db.create_all()
    return app, kept


def test_no_page_of_a_login_is_served_from_the_sites_cache(tmp_path: Path) -> None:
    app, kept = caching_site(tmp_path)
    first = Browser(app)
    page = wechat_login(first, "lisi", next_url="/me")
    assert first.seen[-1][1] == "/auth/bind" and "李四" in page.get_data(as_text=True)
    assert_no_server_error(first)
    assert [path for path in kept if path != "/"] == []
    second = Browser(app)
    again = {path: second.client.get(path) for _method, path, _status in first.seen}
    assert {path.split("?")[0]: resp.status_code for path, resp in again.items()} == {
        "/auth/wechat/login": 302, "/wechat-sandbox/connect/qrconnect": 200,
        "/auth/wechat/callback": 400, "/auth/bind": 400}
    started = next(resp for path, resp in again.items() if path.startswith("/auth/wechat/login"))
    assert started.headers["Location"] != first.client.get(
        "/auth/wechat/login?next=/me").headers["Location"]
    assert "李四" not in again["/auth/bind"].get_data(as_text=True)
