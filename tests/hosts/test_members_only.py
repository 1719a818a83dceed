"""A members-only site: an app-wide ``before_request`` sends every visitor who is not
logged in to the site's login page, except an allow-list. With the allow-list the docs
give (docs/deploying.rst, "Members-only sites") logging in with WeChat works; with a
shorter one it goes in a circle, and ``flask wechat-qr check`` names the pages withheld."""

from __future__ import annotations

import re
import typing as t
from pathlib import Path

import pytest
from flask import Flask, Request, request
from flask_login import LoginManager, UserMixin, current_user
from flask_sqlalchemy import SQLAlchemy
from support import CSRF, logged_in_user_id

from .browse import Browser, assert_no_server_error, wechat_login
from .shapes import flask, small_site

PUBLIC_ENDPOINTS = {"login", "static"}


def documented(req: Request) -> bool:
    """The allow-list of docs/deploying.rst."""
    return req.blueprint in ("wechat_qr", "wechat_qr_sandbox")


def only_login_and_callback(req: Request) -> bool:
    """What a site may let through after reading the routes: the button and the callback
    (and the simulated WeChat's pages)."""
    return req.endpoint in ("wechat_qr.login", "wechat_qr.callback") or (
        req.blueprint == "wechat_qr_sandbox")


def none(req: Request) -> bool:
    return False


def members_only_site(tmp_path: Path, allow: t.Callable[[Request], bool],
                      **config: t.Any) -> Flask:
    db = SQLAlchemy()
    login_manager = LoginManager()
    login_manager.login_view = "login"

    class Member(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        username = db.Column(db.String(80), unique=True)
        password_hash = db.Column(db.String(255))
        nickname = db.Column(db.Unicode(255))

    app = small_site(tmp_path, "members_only", db, login_manager, Member, **config)

    @app.route("/login")
    def login() -> str:
        return '<p id="who">members only</p><a href="/auth/wechat/login">WeChat</a>'

    @app.route("/")
    def home() -> str:
        return f'<p id="who">Hello {current_user.nickname}</p>'

    @app.before_request
    def members_only() -> t.Any:
        if current_user.is_authenticated or request.endpoint in PUBLIC_ENDPOINTS:
            return None
        if allow(request):
            return None
        return login_manager.unauthorized()

    with app.app_context():
        db.create_all()
    return app


def withheld(app: Flask) -> list[str]:
    """The paths ``flask wechat-qr check`` says a visitor cannot reach."""
    result = flask(app, "wechat-qr", "check")
    return re.findall(r"cannot reach [^/]*\((/[^)]*)\): a before_request", result.output)


@pytest.mark.parametrize("association", ["off", "ask_binding"])
def test_the_documented_allow_list_logs_in_and_checks_clean(
        tmp_path: Path, association: str) -> None:
    app = members_only_site(tmp_path, documented, WECHAT_QR_ASSOCIATION=association)
    browser = Browser(app)
    page = wechat_login(browser, "lisi")
    if association == "ask_binding":
        [token] = set(CSRF.findall(page.get_data(as_text=True)))
        page = browser.post("/auth/bind", data={"csrf_token": token, "action": "create"})
    assert page.status_code == 200 and "Hello 李四" in page.get_data(as_text=True)
    assert logged_in_user_id(browser.client) == "1"
    assert withheld(app) == []
    assert_no_server_error(browser)


def test_a_site_that_lets_nothing_through_is_told_which_pages(tmp_path: Path) -> None:
    """What the person sees: the button leads back to the login page."""
    app = members_only_site(tmp_path, none)
    browser = Browser(app)
    page = browser.get("/auth/wechat/login")
    assert "members only" in page.get_data(as_text=True)
    assert withheld(app) == ["/auth/wechat/login", "/auth/wechat/qr", "/auth/wechat/callback",
                             "/wechat-sandbox/connect/qrconnect",
                             "/wechat-sandbox/connect/confirm/check"]


def test_a_short_allow_list_breaks_ask_binding_and_is_told(tmp_path: Path) -> None:
    """The button and the callback let through: a login that must ask "bind or create"
    lands on the site's login page after the scan."""
    app = members_only_site(tmp_path, only_login_and_callback,
                            WECHAT_QR_ASSOCIATION="ask_binding")
    browser = Browser(app)
    page = wechat_login(browser, "lisi")
    assert "members only" in page.get_data(as_text=True), browser.seen[-3:]
    assert withheld(app) == ["/auth/wechat/qr", "/auth/bind"]


def test_a_base_url_with_a_path_is_checked_at_that_path(tmp_path: Path) -> None:
    """``--base-url https://www.example.com/site`` (a site behind a path prefix): each page
    is asked for once at the mount point, not twice (before: /site/site/..., every page
    reported withheld)."""
    app = members_only_site(tmp_path, documented)
    result = flask(app, "wechat-qr", "check", "--base-url", "https://www.example.com/site")
    assert "cannot reach" not in result.output and "/site/site" not in result.output
    (tmp_path / "other").mkdir()
    app = members_only_site(tmp_path / "other", none)
    result = flask(app, "wechat-qr", "check", "--base-url", "https://www.example.com/site")
    assert "cannot reach the login button's page (/site/auth/wechat/login)" in result.output


def test_a_hook_the_check_cannot_run_is_a_warning_not_a_pass(tmp_path: Path) -> None:
    """A hook that needs what only a real request has (a proxy's header) raises when the
    check runs it: the check says it could not tell, naming the page and the error."""
    app = members_only_site(tmp_path, documented)

    @app.before_request
    def needs_the_proxy() -> None:
        request.headers["X-Real-IP"]  # KeyError: the check sends no proxy headers

    result = flask(app, "wechat-qr", "check")
    assert withheld(app) == []
    assert ("could not tell whether a visitor who is not logged in reaches the login "
            "button's page (/auth/wechat/login): a before_request hook of the site raised "
            "KeyError") in " ".join(result.output.split())
