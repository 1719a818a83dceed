"""A site on APIFlask (``apps/host_apiflask``): its API answers every error in JSON, with
its own ``error_processor``; the login's pages, which are for people in a browser, stay
pages in words; its OpenAPI spec and docs keep working with the extension's blueprints in
the app, and list none of their routes (they are not the site's API)."""

from __future__ import annotations

import re
import typing as t
from pathlib import Path

from apiflask import APIFlask
from support import CSRF, logged_in_user_id

from .browse import Browser, assert_no_server_error, wechat_login
from .shapes import SANDBOX


def build(tmp_path: Path, **config: t.Any) -> APIFlask:
    import host_apiflask

    return t.cast(APIFlask, host_apiflask.create_app({
        **SANDBOX, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'api.db'}", **config}))


def title(resp: t.Any) -> str:
    found = re.search(r"<title>(.*?)</title>", resp.get_data(as_text=True), re.S)
    return found.group(1).strip() if found else resp.get_data(as_text=True)[:80]


def test_the_openapi_spec_and_docs_of_a_site_with_the_extension(tmp_path: Path) -> None:
    """Before: APIFlask read ``enable_openapi`` of every blueprint with a
    ``before_request`` hook, which a Flask blueprint has not: ``/openapi.json`` and the
    docs page's spec were a 500 (``AttributeError``) on every site with the extension."""
    client = build(tmp_path).test_client()
    spec = client.get("/openapi.json")
    assert spec.status_code == 200, spec.get_data(as_text=True)[-300:]
    assert "/api/articles/{article_id}" in spec.json["paths"]
    assert [path for path in spec.json["paths"] if "wechat" in path or "auth" in path] == []
    assert client.get("/docs").status_code == 200
    assert client.get("/api/articles/1").json == {"id": 1, "title": "你好"}
    missing = client.get("/api/nothing")
    assert missing.status_code == 404 and missing.json == {"code": 404, "message": "Not Found"}


def test_the_login_pages_stay_pages_on_a_json_errors_site(tmp_path: Path) -> None:
    """A whole login ends logged in on the site's page; each way a login fails (unknown
    connection, expired state, cancelled, login only's refusal, the bind page's 400s) is
    the extension's page in words with its status, not the site's JSON error."""
    app = build(tmp_path, WECHAT_QR_ASSOCIATION="ask_binding")
    browser = Browser(app)
    page = wechat_login(browser, "lisi", next_url="/")
    assert browser.seen[-1][1] == "/auth/bind"
    [token] = set(CSRF.findall(page.get_data(as_text=True)))
    no_choice = browser.post("/auth/bind", data={"csrf_token": token})
    wrong = browser.post("/auth/bind", data={"csrf_token": token, "action": "bind",
                                             "username": "nobody", "password": "x"})
    forged = browser.post("/auth/bind", data={"csrf_token": "forged", "action": "create"})
    for resp in (no_choice, wrong, forged):
        assert (resp.status_code, resp.mimetype) == (400, "text/html"), resp.data[:200]
    done = browser.post("/auth/bind", data={"csrf_token": token, "action": "create"})
    assert '<p id="who">李四</p>' in done.get_data(as_text=True)
    assert logged_in_user_id(browser.client) is not None
    assert_no_server_error(browser)

    visitor = Browser(app)
    start = visitor.get("/auth/wechat/login", follow=False).headers["Location"]
    state = re.search(r"state=([^&#]+)", start).group(1)  # type: ignore[union-attr]
    pages = {
        "unknown connection": visitor.get("/auth/nope/login"),
        "expired state": visitor.get("/auth/wechat/callback?state=expired&code=x"),
        "bind, nothing pending": visitor.get("/auth/bind"),
        "cancelled": visitor.get(f"/auth/wechat/callback?state={state}"),
    }
    (tmp_path / "only").mkdir()
    refused = wechat_login(Browser(build(tmp_path / "only", WECHAT_QR_LOGIN_ONLY=True)),
                           "zhangsan")
    pages["login only"] = refused
    assert {what: (resp.status_code, resp.mimetype, title(resp))
            for what, resp in pages.items()} == {
        "unknown connection": (404, "text/html", "Unknown login method"),
        "expired state": (400, "text/html", "This login link is no longer valid"),
        "bind, nothing pending": (400, "text/html", "This WeChat login has expired"),
        "cancelled": (200, "text/html", "Login cancelled"),
        "login only": (403, "text/html", "No account is linked to this WeChat"),
    }
