"""An API site on Flask-RESTX (``Api(app)``, whose error router wraps the app's
``handle_exception`` and ``handle_user_exception``; ``Api(blueprint)``) or Flask-Smorest
(an app-wide ``HTTPException`` handler answering JSON), ``apps/host_rest_api``: its API
answers in JSON, and the login's pages, which are for people, stay pages in words with
their statuses; a whole login (ask binding's page and its 400s included) ends logged in."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from flask import Flask
from support import CSRF, logged_in_user_id

from .browse import Browser, assert_failed_logins_are_pages, wechat_login
from .shapes import SANDBOX


def build(tmp_path: Path, kind: str) -> Flask:
    import host_rest_api

    return t.cast(Flask, host_rest_api.create_app({
        **SANDBOX, "HOST_API": kind, "WECHAT_QR_ASSOCIATION": "ask_binding",
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'api.db'}"}))


@pytest.mark.parametrize("kind", ["restx_app", "restx_blueprint", "smorest"])
def test_the_login_pages_stay_pages_on_a_rest_api_site(tmp_path: Path, kind: str) -> None:
    app = build(tmp_path, kind)
    api = app.test_client()
    assert api.get("/api/articles/1" if kind != "restx_app" else "/articles/1").json == {
        "id": 1, "title": "你好"}
    assert api.get("/api/nothing").mimetype == ("application/json" if kind == "smorest"
                                                else "text/html")

    browser = Browser(app)
    page = wechat_login(browser, "lisi", next_url="/")
    [token] = set(CSRF.findall(page.get_data(as_text=True)))
    refused = [browser.post("/auth/bind", data=data) for data in (
        {"csrf_token": token},
        {"csrf_token": token, "action": "bind", "username": "nobody", "password": "x"},
        {"csrf_token": "forged", "action": "create"})]
    assert [(resp.status_code, resp.mimetype) for resp in refused] == [(400, "text/html")] * 3
    done = browser.post("/auth/bind", data={"csrf_token": token, "action": "create"})
    assert '<p id="who">李四</p>' in done.get_data(as_text=True)
    assert logged_in_user_id(browser.client) is not None
    assert browser.errors() == []

    assert_failed_logins_are_pages(app)
