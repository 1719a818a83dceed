"""The routes: what each asks of the request and answers (the login redirect, the QR page,
unknown connections, oversized values, no caching), and the error handler's log lines. How a
callback ends is test_flow; the pages it ends on, test_delivery."""

from __future__ import annotations

import logging
import re
import typing as t

import pytest
from flask import Flask
from support import (
    APP_ID,
    APP_SECRET,
    CALLBACK,
    CODE,
    SECRETS,
    TOKEN_PATH,
    add_user,
    all_identities,
    all_users,
    api_paths,
    callback_app,
    find_tags,
    finish_login,
    host_app,
    link_identity,
    log_in,
    query_pairs,
    rows,
    start_login,
)

from flask_wechat_qr import ConfigurationError
from flask_wechat_qr.settings import load_settings

# --- login -------------------------------------------------------------------------


def test_login_redirects_to_wechat_qr_page_in_wechat_order(client: t.Any) -> None:
    resp = client.get("/auth/wechat/login")
    assert resp.status_code == 302
    location = resp.headers["Location"]
    assert location.startswith("https://open.weixin.qq.com/connect/qrconnect?")
    assert location.endswith("#wechat_redirect")
    params = query_pairs(location.removesuffix("#wechat_redirect"))
    assert [name for name, _ in params] == [
        "appid", "redirect_uri", "response_type", "scope", "state", "lang"]
    values = dict(params)
    assert values["lang"] == "en"  # the page's language (no Accept-Language: the default)
    assert values["appid"] == APP_ID
    assert values["redirect_uri"] == CALLBACK
    assert values["response_type"] == "code"
    assert values["scope"] == "snsapi_login"
    assert re.fullmatch(r"[A-Za-z0-9]{32}", values["state"])
    assert APP_SECRET not in location


def test_next_never_travels_to_wechat(client: t.Any) -> None:
    resp = client.get("/auth/wechat/login", query_string={"next": "/secret-place"})
    assert "secret-place" not in resp.headers["Location"]


@pytest.mark.parametrize("route", ["login", "qr"])
def test_oversized_next_is_a_400_page(app: t.Any, client: t.Any, wechat_api: t.Any,
                                      route: str) -> None:
    resp = client.get(f"/auth/wechat/{route}", query_string={"next": "/" + "a" * 2048})
    assert resp.status_code == 400
    assert "text/html" in resp.headers["Content-Type"]
    assert "Invalid request" in resp.text
    assert resp.headers["Cache-Control"] == "no-store"
    assert "Location" not in resp.headers
    assert rows(app, "wechat_qr_login_state", order_by="key") == []
    assert api_paths(wechat_api) == []


# --- qr page -----------------------------------------------------------------------


def _iframe(resp: t.Any) -> dict[str, str | None]:
    frames = find_tags(resp.text, "iframe")
    assert len(frames) == 1, resp.text
    return frames[0]


def test_qr_page_embeds_the_qr_from_the_configured_open_base_url(make_app: t.Any) -> None:
    client = make_app(WECHAT_QR_OPEN_BASE_URL="http://127.0.0.1:9/sandbox").test_client()
    resp = client.get("/auth/wechat/qr")
    assert resp.status_code == 200
    assert "text/html" in resp.headers["Content-Type"]
    frame = _iframe(resp)
    src = frame["src"] or ""
    assert src.startswith("http://127.0.0.1:9/sandbox/connect/qrconnect?")
    params = query_pairs(src)
    assert [name for name, _ in params] == [
        "appid", "scope", "redirect_uri", "state", "login_type", "self_redirect", "style",
        "lang"]
    values = dict(params)
    assert values["lang"] == "en"  # the page's language (no Accept-Language: the default)
    assert values["appid"] == APP_ID
    assert values["scope"] == "snsapi_login"
    assert values["redirect_uri"] == CALLBACK
    assert re.fullmatch(r"[A-Za-z0-9]{32}", values["state"])
    assert values["login_type"] == "jssdk"
    assert values["self_redirect"] == "false"
    assert values["style"] == "black"
    assert frame["allow"] == "local-network-access"
    assert "open.weixin.qq.com" not in resp.text
    assert APP_SECRET not in resp.text


def test_qr_page_uses_wechat_by_default(client: t.Any) -> None:
    src = _iframe(client.get("/auth/wechat/qr"))["src"] or ""
    assert src.startswith("https://open.weixin.qq.com/connect/qrconnect?")
    assert "#" not in src


def test_qr_page_options(make_app: t.Any) -> None:
    href = "https://static.example.com/wechat-qr.css"
    client = make_app(WECHAT_QR_QR_SELF_REDIRECT=True, WECHAT_QR_QR_STYLE="white",
                      WECHAT_QR_QR_HREF=href).test_client()
    values = dict(query_pairs(_iframe(client.get("/auth/wechat/qr"))["src"] or ""))
    assert values["self_redirect"] == "true"
    assert values["style"] == "white"
    assert values["href"] == href


def test_qr_page_refreshes_before_its_state_is_useless(make_app: t.Any) -> None:
    """A Refresh header, not a <meta> in the layout's head (a host layout may drop it)."""
    client = make_app(WECHAT_QR_STATE_TTL=300).test_client()
    resp = client.get("/auth/wechat/qr")
    assert 0 < int(resp.headers["Refresh"]) <= 300
    metas = find_tags(resp.text, "meta")
    assert [m for m in metas if (m.get("http-equiv") or "").lower() == "refresh"] == []


def test_qr_page_state_finishes_a_login_and_keeps_next(client: t.Any, wechat_api: t.Any) -> None:
    resp = client.get("/auth/wechat/qr", query_string={"next": "/dashboard"})
    state = dict(query_pairs(_iframe(resp)["src"] or ""))["state"]
    links = [a["href"] for a in find_tags(resp.text, "a")]
    assert "/auth/wechat/login?next=/dashboard" in links or \
        "/auth/wechat/login?next=%2Fdashboard" in links
    wechat_api.token()
    wechat_api.userinfo()
    resp = finish_login(client, state)
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/dashboard"


# --- unknown connection --------------------------------------------------------------


@pytest.mark.parametrize("route", ["login", "qr", "callback"])
def test_unknown_connection_is_a_404_page(app: t.Any, client: t.Any, wechat_api: t.Any,
                                          route: str) -> None:
    state = start_login(client)
    resp = client.get(f"/auth/weibo/{route}", query_string={"state": state, "code": CODE})
    assert resp.status_code == 404
    assert "text/html" in resp.headers["Content-Type"]
    assert "Unknown login method" in resp.text
    assert resp.headers["Cache-Control"] == "no-store"
    assert api_paths(wechat_api) == []
    assert all_users(app) == []


# --- errors: logged for the operator, or not ------------------------------------------


def test_wrong_secret_is_logged_for_the_operator(client: t.Any, wechat_api: t.Any,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    state = start_login(client)
    wechat_api.error(TOKEN_PATH, 40125, "invalid appsecret")
    resp = finish_login(client, state)
    assert resp.status_code == 502
    errors = [r for r in caplog.records
              if r.name == "flask_wechat_qr" and r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "40125" in errors[0].getMessage()
    for record in caplog.records:
        for secret in SECRETS:
            assert secret not in record.getMessage()


def test_user_side_errors_are_not_logged_as_errors(client: t.Any, wechat_api: t.Any,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    state = start_login(client)
    wechat_api.error(TOKEN_PATH, 40163, "code been used")
    assert finish_login(client, state).status_code == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- caching -------------------------------------------------------------------------------


def test_every_blueprint_response_is_no_store(client: t.Any, wechat_api: t.Any) -> None:
    responses_seen = [
        client.get("/auth/wechat/login"),
        client.get("/auth/wechat/qr"),
        client.get("/auth/nope/login"),
        client.get("/auth/wechat/callback"),
        client.get("/auth/wechat/login", query_string={"next": "/" + "x" * 3000}),
    ]
    state = start_login(client)
    responses_seen.append(client.get("/auth/wechat/callback", query_string={"state": state}))
    state = start_login(client)
    wechat_api.token()
    wechat_api.userinfo()
    responses_seen.append(finish_login(client, state))
    assert [r.status_code for r in responses_seen] == [302, 200, 404, 400, 400, 200, 302]
    for resp in responses_seen:
        assert resp.headers["Cache-Control"] == "no-store"
    # The host's own pages are left alone.
    assert client.get("/").headers.get("Cache-Control") is None


# --- unlink -------------------------------------------------------------------------------


def test_unlink_is_post_only(make_app: t.Any) -> None:
    app = host_app(make_app)
    alice = add_user(app, username="alice", password="pw")
    link_identity(app, alice)
    client = app.test_client()
    log_in(client, alice)
    assert client.get("/auth/wechat/unlink").status_code == 405
    assert len(all_identities(app)) == 1


# --- the business front end's state and nonce ---------------------------------------------


def test_embedded_qr_page_keeps_the_business_state(make_app: t.Any, pem: str) -> None:
    app = callback_app(make_app, pem)
    resp = app.test_client().get("/auth/wechat/qr", query_string={"state": "s1", "nonce": "n1"})
    assert resp.status_code == 200
    links = [a["href"] for a in find_tags(resp.get_data(as_text=True), "a")
             if "/auth/wechat/login" in (a.get("href") or "")]
    assert links and all("state=s1" in href and "nonce=n1" in href for href in links)


@pytest.mark.parametrize("params", [
    {"state": "x" * 1025}, {"nonce": "n" * 256}, {"state": "bad\nvalue"}, {"nonce": "a\x00"},
])
def test_bad_business_parameters_are_refused(make_app: t.Any, pem: str,
                                             params: dict[str, str]) -> None:
    app = callback_app(make_app, pem)
    resp = app.test_client().get("/auth/wechat/login", query_string=params)
    assert resp.status_code == 400


# --- who may frame the extension's pages -------------------------------------------------


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
