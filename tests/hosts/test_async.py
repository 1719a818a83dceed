"""An async site (Flask's ``async`` extra, asgiref): ``async def`` views, the page with the
login button and the account page among them, and ``async def`` receivers of the extension's
signals, as Flask's own signals take them."""

from __future__ import annotations

import typing as t
from pathlib import Path

from flask import Flask
from support import find_tags, in_a_worker_thread, logged_in_user_id
from werkzeug.security import generate_password_hash

from .browse import Browser, assert_no_server_error, wechat_login
from .shapes import SANDBOX


def build(tmp_path: Path) -> Flask:
    import host_async

    return t.cast(Flask, host_async.create_app(
        {**SANDBOX, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'reader.db'}"}))


def test_an_async_site_and_its_async_receivers(tmp_path: Path) -> None:
    """A first login ends on the welcome page its ``login_succeeded`` receiver returns, a
    returning one where it started; the async account page lists and unlinks the WeChat.
    Before, Blinker refused the async receivers ("Cannot send to a coroutine function"):
    every login of such a site was a 500, after the new user had been committed."""
    in_a_worker_thread(lambda: an_async_sites_journey(tmp_path))


def an_async_sites_journey(tmp_path: Path) -> None:
    app = build(tmp_path)
    browser = Browser(app)
    page = wechat_login(browser, "zhangsan")
    assert browser.seen[-1][1] == "/account?welcome=1", browser.seen[-3:]
    assert 'id="welcome"' in page.get_data(as_text=True)
    assert "张三🐼" in page.get_data(as_text=True)
    reader = logged_in_user_id(browser.client)
    returning = Browser(app)
    page = wechat_login(returning, "zhangsan", next_url="/")
    assert returning.seen[-1][1:] == ("/", 200)
    assert logged_in_user_id(returning.client) == reader
    assert 'id="who">Hello' in page.get_data(as_text=True)

    import host_async

    with app.app_context():  # the reader sets a password: WeChat is no longer the only way in
        member = host_async.db.session.get(host_async.Reader, int(reader or 0))
        member.password_hash = generate_password_hash("a password", "pbkdf2:sha256:1000")
        host_async.db.session.commit()
    page = browser.get("/account")
    [token] = {tag["value"] for tag in find_tags(page.get_data(as_text=True), "input")
               if tag.get("name") == "csrf_token"}
    page = browser.post("/auth/wechat/unlink", data={"csrf_token": token, "next": "/account"})
    assert page.status_code == 200 and "Link WeChat" in page.get_data(as_text=True)
    assert app.extensions["audit"] == [f"created {reader}", f"logged in {reader}",
                                       f"logged in {reader}", f"unlinked {reader}"]
    assert_no_server_error(browser)
    assert_no_server_error(returning)
