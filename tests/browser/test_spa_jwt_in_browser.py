"""The single-page app on Flask-JWT-Extended (tests/hosts/apps/host_spa_jwt) in Chromium:
its "Log in with WeChat" link, the sandbox's QR page and phone, and its script, which ends
logged in on its hash route (JWT in an HttpOnly cookie, or collected into the SPA's
storage for the ``Authorization`` header); a returning login to a history route, logging
out, linking WeChat to the JWT login, a login cancelled on the phone shown by the SPA."""

from __future__ import annotations

import re
import sys
import typing as t
from pathlib import Path

import pytest
from support import LiveServer

from .test_login_in_browser import scan_and_answer

APPS = Path(__file__).resolve().parents[1] / "hosts" / "apps"
if str(APPS) not in sys.path:
    sys.path.insert(0, str(APPS))

import host_spa_jwt as host  # noqa: E402  (a host app: a top-level package of apps/)

JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")


@pytest.fixture(params=["cookies", "headers"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> t.Iterator[LiveServer]:
    app = host.create_app({
        "TESTING": True, "WECHAT_QR_SANDBOX": True, "HOST_JWT_LOCATION": request.param,
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'spa.db'}"})
    with LiveServer(app) as server:
        yield server


def who(page: t.Any, text: str) -> None:
    page.wait_for_function(
        "text => document.getElementById('who').textContent === text", arg=text)


def log_in(page: t.Any, button: str = "#login", person: str = "zhangsan") -> None:
    page.locator(button).click()
    page.wait_for_url("**/wechat-sandbox/connect/qrconnect**")
    scan_and_answer(page, page, allow=True, person=person)
    close_phones(page)


def close_phones(page: t.Any) -> None:
    """Close the phone's page (a window of its own name: the next scan would reuse it)."""
    for other in page.context.pages:
        if other is not page:
            other.close()


def test_the_spa_logs_in_with_wechat(page: t.Any, site: LiveServer) -> None:
    app = site.server.app
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))

    page.goto(site.url + "/#/profile")
    who(page, "anonymous")
    log_in(page)
    page.wait_for_url(site.url + "/#/profile", timeout=15_000)
    who(page, "张三🐼")
    assert page.locator("#route").inner_text() == "/profile"
    assert page.locator("#wechat").inner_text() == "WeChat: 张三🐼"
    cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
    if app.config["HOST_JWT_LOCATION"] == "cookies":
        assert cookies["access_token_cookie"]["httpOnly"]
        assert page.evaluate("document.cookie").count("access_token_cookie") == 0
    else:
        assert JWT.fullmatch(page.evaluate("sessionStorage.getItem('access_token')"))

    page.locator("#logout").click()
    who(page, "anonymous")
    page.goto(site.url + "/app/orders")
    who(page, "anonymous")
    log_in(page)  # returning, to a history route
    page.wait_for_url(site.url + "/app/orders", timeout=15_000)
    who(page, "张三🐼")

    # Linking WeChat to an account the SPA logged into with its own JWT.
    with app.app_context():
        alice = host.User(email="alice@example.com", password_hash="pbkdf2:sha256:1000$x$y")
        host.db.session.add(alice)
        host.db.session.commit()
        from flask_jwt_extended import create_access_token, decode_token
        token = create_access_token(identity=str(alice.id))
        csrf = decode_token(token)["csrf"]
    page.locator("#logout").click()
    who(page, "anonymous")
    if app.config["HOST_JWT_LOCATION"] == "cookies":
        page.context.add_cookies([
            {"name": "access_token_cookie", "value": token, "url": site.url, "httpOnly": True},
            {"name": "csrf_access_token", "value": csrf, "url": site.url}])
    else:
        page.evaluate("token => sessionStorage.setItem('access_token', token)", token)
    page.goto(site.url + "/app/settings")
    who(page, f"user {alice.id}")
    log_in(page, "#link", person="xiaohua")
    page.wait_for_url(site.url + "/app/settings", timeout=15_000)
    page.wait_for_function(
        "() => document.getElementById('wechat').textContent === 'WeChat: 🌸小花🌸'")
    who(page, f"user {alice.id}")
    page.locator("#unlink").click()
    page.wait_for_function(
        "() => document.getElementById('wechat').textContent === 'No WeChat linked'")

    # Cancelled on the phone: the SPA's login route says so.
    page.locator("#logout").click()
    who(page, "anonymous")
    page.locator("#login").click()
    page.wait_for_url("**/wechat-sandbox/connect/qrconnect**")
    scan_and_answer(page, page, allow=False)
    close_phones(page)
    page.wait_for_url("**/app/login?wechat_error=cancelled**", timeout=15_000)
    assert page.locator("#error").inner_text() == "WeChat login cancelled."
    who(page, "anonymous")
    assert [url for url in urls if JWT.search(url)] == []
