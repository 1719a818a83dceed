"""A site with error handlers of its own for the whole app, as sites write them: one for
every ``Exception`` that answers JSON, pages for its 404s and 400s, or one for every
``HTTPException``. Flask looks for a handler by code first, then the blueprint's before the
app's: the extension's ``LoginError`` (no HTTP code) still finds the blueprint's handler, so
each failed login keeps its page, its words and its status, and none becomes a 500."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from flask import Flask, jsonify
from flask_login import current_user
from werkzeug.exceptions import HTTPException

from .browse import Browser, assert_failed_logins_are_pages, title, wechat_login
from .shapes import nickname_site


def own_handlers(app: Flask, kind: str) -> None:
    if kind == "exception":
        @app.errorhandler(Exception)
        def everything(error: Exception) -> t.Any:
            return jsonify(code=500, msg="服务器错误"), 500
    elif kind == "codes":
        @app.errorhandler(404)
        def not_found(error: Exception) -> t.Any:
            return "<title>页面不存在</title>", 404

        @app.errorhandler(400)
        def bad_request(error: Exception) -> t.Any:
            return "<title>请求错误</title>", 400
    else:
        @app.errorhandler(HTTPException)
        def http_error(error: HTTPException) -> t.Any:
            return jsonify(code=error.code, msg=error.description), error.code


def site(tmp_path: Path, kind: str) -> Flask:
    app = nickname_site(tmp_path, "handlers")
    own_handlers(app, kind)

    @app.route("/")
    def home() -> str:
        who = current_user.nickname if current_user.is_authenticated else "首页"
        return f"<title>{who}</title>"

    return app


@pytest.mark.parametrize("kind", ["exception", "codes", "http_exception"])
def test_failed_logins_keep_their_pages_under_the_sites_own_handlers(
        tmp_path: Path, kind: str) -> None:
    app = site(tmp_path, kind)
    browser = Browser(app)
    assert title(wechat_login(browser, "lisi")) == "李四"
    visitor = assert_failed_logins_are_pages(app)
    # The site's handlers are in force for its own errors.
    assert visitor.get("/nothing").status_code == (500 if kind == "exception" else 404)
