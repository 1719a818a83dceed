"""No other site frames the extension's pages (clickjacking of the bind and unlink forms),
while the site's own embedded QR keeps working; configurable, and a host's own CSP wins."""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask
from support import finish_login, start_login

from flask_wechat_qr import ConfigurationError
from flask_wechat_qr.settings import load_settings

BASE = {"WECHAT_QR_APP_ID": "wx5f3d2e1c0b9a8776", "WECHAT_QR_APP_SECRET": "s3cr3t"}

PAGES = ["/auth/wechat/qr", "/auth/bind", "/auth/nope/login", "/auth/wechat/callback"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_says_only_this_site_may_frame_it(client: t.Any, path: str) -> None:
    resp = client.get(path)
    assert resp.headers["Content-Security-Policy"] == "frame-ancestors 'self'"
    assert resp.headers["X-Frame-Options"] == "SAMEORIGIN"


def test_a_finished_login_is_not_framed_by_others_either(app: Flask, wechat_api: t.Any) -> None:
    client = app.test_client()
    wechat_api.token()
    wechat_api.userinfo()
    resp = finish_login(client, start_login(client))
    assert resp.status_code == 302
    assert resp.headers["Content-Security-Policy"] == "frame-ancestors 'self'"


def test_the_embedded_qr_breaks_out_of_its_own_frame(app: Flask, wechat_api: t.Any) -> None:
    """With self_redirect the callback loads inside the QR iframe, framed by this site's own
    page: 'self' allows it, and the page moves the whole window on."""
    client = app.test_client()
    wechat_api.token()
    wechat_api.userinfo()
    state = start_login(client)
    resp = client.get("/auth/wechat/callback", headers={"Sec-Fetch-Dest": "iframe"},
                      query_string={"code": "C1", "state": state})
    assert resp.status_code == 200 and "window.top.location" in resp.get_data(as_text=True)
    assert resp.headers["Content-Security-Policy"] == "frame-ancestors 'self'"


@pytest.mark.parametrize("sources, header, frame_option", [
    ("'none'", "frame-ancestors 'none'", "DENY"),
    ("'self' https://partner.example.com", "frame-ancestors 'self' https://partner.example.com",
     None),
])
def test_the_sources_are_configurable(make_app: t.Any, sources: str, header: str,
                                      frame_option: str | None) -> None:
    resp = make_app(WECHAT_QR_FRAME_ANCESTORS=sources).test_client().get("/auth/wechat/qr")
    assert resp.headers["Content-Security-Policy"] == header
    assert resp.headers.get("X-Frame-Options") == frame_option


@pytest.mark.parametrize("off", ["", False])
def test_a_site_that_sets_its_own_can_turn_them_off(make_app: t.Any, off: t.Any) -> None:
    resp = make_app(WECHAT_QR_FRAME_ANCESTORS=off).test_client().get("/auth/wechat/qr")
    assert "Content-Security-Policy" not in resp.headers
    assert "X-Frame-Options" not in resp.headers


def test_a_host_policy_set_on_the_response_is_kept(make_app: t.Any) -> None:
    app = make_app()

    @app.after_request
    def host_policy(response: t.Any) -> t.Any:  # runs after the blueprint's
        response.headers["Content-Security-Policy"] = "default-src 'self'"
        return response

    resp = app.test_client().get("/auth/wechat/qr")
    assert resp.headers["Content-Security-Policy"] == "default-src 'self'"


@pytest.mark.parametrize("value", ["'self'; script-src *", "'self'\r\nX-Evil: 1", "a,b"])
def test_a_source_list_that_would_inject_more_is_refused(value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings({**BASE, "WECHAT_QR_FRAME_ANCESTORS": value})
    assert info.value.key == "WECHAT_QR_FRAME_ANCESTORS"


def test_unset_means_self() -> None:
    assert load_settings({**BASE, "WECHAT_QR_FRAME_ANCESTORS": None}).frame_ancestors == "'self'"
