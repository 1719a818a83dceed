"""A site behind a Vue front end's API as many are set up: Flask-CORS with credentials on
the whole site (``CORS(app, supports_credentials=True)``) and Flask-Compress on every answer,
with WeChat's embedded QR code coming back inside its frame (``self_redirect``), on the
in-app sandbox. The extension's calls to the sandbox get compressed answers too; the login's
headers survive both extensions' ``after_request`` hooks."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from flask import Flask
from flask_compress import Compress
from flask_cors import CORS
from flask_login import current_user
from support import answer, find_tags, logged_in_user_id, poll

from .browse import Browser, assert_no_server_error, local, wechat_login
from .shapes import nickname_site


def api_site(tmp_path: Path, **config: object) -> Flask:
    app = nickname_site(tmp_path, "cors_site",
                     WECHAT_QR_QR_SELF_REDIRECT=True, COMPRESS_MIN_SIZE=0, **config)
    CORS(app, supports_credentials=True)
    Compress(app)

    @app.route("/")
    def home() -> str:
        who = current_user.nickname if current_user.is_authenticated else "guest"
        return f'<p id="who">Hello {who}</p>'

    return app


def test_a_login_on_a_site_that_compresses_every_answer(tmp_path: Path) -> None:
    """Before: Flask-Compress compressed the sandbox's token answer for the extension's own
    call (``requests`` asks for gzip), which reached the client still compressed: every
    login ended on "WeChat is not answering" (502)."""
    app = api_site(tmp_path)
    browser = Browser(app)
    page = wechat_login(browser, "lisi")
    assert "Hello 李四" in page.get_data(as_text=True)
    assert_no_server_error(browser)


def test_the_embedded_qr_through_cors_and_compression(tmp_path: Path) -> None:
    """The QR page, compressed and with CORS headers, keeps the extension's: no cache, no
    other site's frame, a ``Vary`` for both its encoding and its cookie; the callback loaded
    in the QR's frame answers the break-out page this site may frame, and logs in."""
    app = api_site(tmp_path)
    browser = Browser(app)
    qr_page = browser.client.get("/auth/wechat/qr", headers={
        "Accept-Encoding": "gzip", "Origin": "https://vue.example.com"})
    headers = qr_page.headers
    assert headers["Content-Encoding"] == "gzip"
    assert headers.getlist("Cache-Control") == ["no-store"]
    assert headers.getlist("Content-Security-Policy") == ["frame-ancestors 'self'"]
    assert headers["X-Frame-Options"] == "SAMEORIGIN"
    vary = {value.strip() for line in headers.getlist("Vary") for value in line.split(",")}
    assert {"Accept-Encoding", "Cookie"} <= vary
    assert headers["Access-Control-Allow-Origin"] == "https://vue.example.com"
    assert "Access-Control-Allow-Credentials" not in headers  # see the next test
    [frame] = find_tags(gzip.decompress(qr_page.data).decode(), "iframe")
    assert "self_redirect=true" in (frame["src"] or "")
    wechat_page = browser.get(local(frame["src"] or ""))
    [uuid] = re.findall(r'data-uuid="([^"]+)"', wechat_page.get_data(as_text=True))
    assert answer(app.test_client(), uuid, action="allow", person="lisi").status_code == 200
    framed = browser.client.get(local(poll(browser.client, uuid)["redirect"]), headers={
        "Sec-Fetch-Dest": "iframe", "Accept-Encoding": "gzip"})
    assert framed.status_code == 200, framed.data
    assert "DENY" not in framed.headers.get("X-Frame-Options", "")
    assert "'self'" in framed.headers["Content-Security-Policy"]
    assert framed.headers.getlist("Cache-Control") == ["no-store"]
    assert "window.top.location.href" in gzip.decompress(framed.data).decode()
    assert logged_in_user_id(browser.client) is not None


@pytest.mark.parametrize("same_site,origin", [
    ("None", "https://evil.example"), ("Lax", "https://blog.example.com"),
    ("Strict", "https://blog.example.com")])
def test_no_other_site_reads_a_login_page_with_the_visitors_cookies(
        tmp_path: Path, same_site: str, origin: str) -> None:
    """CORS with credentials on every route echoes any ``Origin``. Where a front end on
    another domain made the site set ``SameSite=None``, any other site's script could then
    read the QR page (the login's state), the bind page (its form's token) or a callback's
    answer with the visitor's session; with Lax or Strict, a sibling sub-domain's could
    (same-site requests carry both, the ``__Host-`` login cookie too): its page fetched the
    visitor's state, and the attacker's WeChat was bound to the visitor's account
    (a helper's attack, session 34). Before: ``Access-Control-Allow-Credentials: true`` on
    every page of the extension's (with Lax or Strict, still in session 33). The site's own
    pages and the public keys keep the host's headers, and the login still works."""
    app = api_site(tmp_path, SESSION_COOKIE_SAMESITE=same_site)
    browser = Browser(app)
    evil = {"Origin": origin}
    for path in ("/auth/wechat/qr", "/auth/wechat/login", "/auth/bind",
                 "/auth/wechat/callback?state=x&code=y"):
        page = browser.client.get(path, headers=evil)
        assert page.status_code < 500, (path, page.status_code)
        assert "Access-Control-Allow-Credentials" not in page.headers, path
    site_page = browser.client.get("/", headers=evil)
    assert site_page.headers["Access-Control-Allow-Credentials"] == "true"
    keys = browser.client.get("/auth/.well-known/jwks.json", headers=evil)
    assert keys.headers["Access-Control-Allow-Credentials"] == "true"
    page = wechat_login(browser, "lisi")
    assert "Hello 李四" in page.get_data(as_text=True)
    assert_no_server_error(browser)
