"""The sandbox checks a redirect_uri's host as the browser will read it: a backslash or a
user name cannot smuggle the code to another host (WeChat answers 10003 too)."""

from __future__ import annotations

import typing as t
from urllib.parse import quote

import pytest
from support import SANDBOX_PREFIX as SBX

from flask_wechat_qr.sandbox.options import SANDBOX_APP_ID


def _qrconnect(make_app: t.Any, redirect_uri: str) -> t.Any:
    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None)
    query = (f"appid={SANDBOX_APP_ID}&redirect_uri={quote(redirect_uri, safe='')}"
             "&response_type=code&scope=snsapi_login&state=s")
    return app.test_client().get(f"{SBX}/connect/qrconnect?{query}")


@pytest.mark.parametrize("redirect_uri", [
    "http://evil\\@localhost/cb",       # a browser goes to "evil"
    "http://evil.example\\@localhost/",
    "http://user@localhost/cb",         # a user name WeChat never accepts
    "http://localhost:80@evil.example/cb",
])
def test_a_redirect_uri_that_a_browser_reads_as_another_host_is_refused(
    make_app: t.Any, redirect_uri: str
) -> None:
    resp = _qrconnect(make_app, redirect_uri)
    assert resp.status_code == 400
    assert "10003" in resp.get_data(as_text=True)


def test_the_registered_host_is_still_accepted(make_app: t.Any) -> None:
    resp = _qrconnect(make_app, "http://localhost/auth/wechat/callback")
    assert resp.status_code == 200
