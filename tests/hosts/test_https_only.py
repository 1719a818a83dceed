"""A site that sends every http request to https (a hand-written ``before_request``, as
Flask-Talisman's default ``force_https`` does), trying WeChat login on the in-app sandbox
over https: a staging server behind TLS with ``WECHAT_QR_SANDBOX`` on, or the site's own
tests."""

from __future__ import annotations

import re
import typing as t
from pathlib import Path

from flask import Flask, redirect, request
from flask_login import current_user
from support import SANDBOX_PREFIX

from .shapes import nickname_site

HTTPS = "https://localhost"


def https_only_site(tmp_path: Path) -> Flask:
    app = nickname_site(tmp_path, "https_only_site")

    @app.before_request
    def https_only() -> t.Any:
        if not request.is_secure:
            return redirect(request.url.replace("http://", "https://", 1), 301)
        return None

    @app.route("/account")
    def account() -> str:
        return f"account of {current_user.nickname}" if current_user.is_authenticated else "?"

    return app


def test_a_sandbox_login_on_a_site_that_sends_every_request_to_https(tmp_path: Path) -> None:
    """The extension calls the sandbox's API in-process, at an origin of its own: it was
    ``http://``, so the site's redirect to https answered the code's exchange, and every
    login ended on "WeChat is not answering" (502) after the phone allowed it (a helper's
    host hunt, session 34). The origin is https, as WeChat's API is."""
    app = https_only_site(tmp_path)
    browser, phone = app.test_client(), app.test_client()
    start = browser.get("/auth/wechat/login?next=/account", base_url=HTTPS)
    assert start.status_code == 302
    location = start.headers["Location"]
    assert location.startswith(f"{HTTPS}{SANDBOX_PREFIX}/connect/qrconnect?"), location
    qr_page = browser.get(location[len(HTTPS):].split("#")[0], base_url=HTTPS)
    uuid = re.search(r'data-uuid="([^"]+)"', qr_page.get_data(as_text=True))
    assert uuid is not None, qr_page.get_data(as_text=True)
    confirm = f"{SANDBOX_PREFIX}/connect/confirm/{uuid.group(1)}"
    assert phone.get(confirm, base_url=HTTPS).status_code == 200
    assert phone.post(confirm, data={"action": "allow", "person": "lisi"},
                      base_url=HTTPS).status_code == 200
    polled = browser.get(f"{SANDBOX_PREFIX}/connect/l/qrconnect",
                         query_string={"uuid": uuid.group(1)}, base_url=HTTPS).json
    assert polled is not None
    callback = browser.get(polled["redirect"][len(HTTPS):], base_url=HTTPS)
    assert callback.status_code == 302, callback.get_data(as_text=True)
    assert callback.headers["Location"] == "/account"
    assert browser.get("/account", base_url=HTTPS).get_data(as_text=True) == "account of 李四"
