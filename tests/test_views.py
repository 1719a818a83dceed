"""The routes: what each asks of the request and answers (the login redirect, the QR page,
unknown connections, oversized values, no caching), and the error handler's log lines. How a
callback ends is test_flow; the pages it ends on, test_delivery."""

from __future__ import annotations

import logging
import re
import typing as t
from html import unescape

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
    error_name,
    find_tags,
    finish_login,
    host_app,
    link_identity,
    log_in,
    logged_in_user_id,
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
    assert "Location" not in resp.headers and "Retry-After" not in resp.headers
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
    # Chrome 142+ asks before WeChat's fast-login probe of localhost.weixin.qq.com.
    allowed = [f.strip() for f in (frame["allow"] or "").split(";")]
    assert "local-network-access" in allowed and "loopback-network" in allowed
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


@pytest.mark.parametrize("config, tail", [
    ({}, []),
    ({"WECHAT_QR_QR_STYLELITE": True}, [("stylelite", "1")]),
    ({"WECHAT_QR_QR_FAST_LOGIN": False}, [("fast_login", "0")]),
    ({"WECHAT_QR_QR_STYLELITE": "yes", "WECHAT_QR_QR_FAST_LOGIN": "no"},
     [("stylelite", "1"), ("fast_login", "0")]),
])
def test_qr_page_sends_stylelite_and_fast_login_last(make_app: t.Any, config: dict[str, t.Any],
                                                     tail: list[tuple[str, str]]) -> None:
    client = make_app(**config).test_client()
    params = query_pairs(_iframe(client.get("/auth/wechat/qr"))["src"] or "")
    assert params[-len(tail) - 1:] == [("lang", "en"), *tail]


def _fallback(html: str) -> dict[str, str | None]:
    [box] = [d for d in find_tags(html, "div") if d.get("id") == "wechat-qr-fallback"]
    return box


@pytest.mark.parametrize("language, texts", [
    ("en-US,en;q=0.9", ("The QR code did not load.", "Log in on WeChat's own QR page",
                        "No QR code above?")),
    ("zh-CN,zh;q=0.9", ("二维码未能加载。", "前往微信官方二维码页面登录", "上方没有显示二维码？")),
])
def test_qr_page_has_a_hidden_fallback_and_a_noscript_link(
        make_app: t.Any, language: str, texts: tuple[str, ...]) -> None:
    """The fallback (shown by the page's script when the QR frame cannot load) and the
    <noscript> line link to WeChat's full-page QR login for the same ``next``."""
    client = make_app().test_client()
    html = client.get("/auth/wechat/qr", query_string={"next": "/orders"},
                      headers={"Accept-Language": language}).text
    box = _fallback(html)
    assert "hidden" in box and box["role"] == "alert"
    for text in texts:
        assert text in unescape(html), text
    fallback_html = html[html.index('id="wechat-qr-fallback"'):]
    noscript = html[html.index("<noscript>"):html.index("</noscript>")]
    for part in (fallback_html[:fallback_html.index("</div>")], noscript):
        [link] = [a["href"] or "" for a in find_tags(part, "a")]
        assert link.startswith("/auth/wechat/login?")
        assert query_pairs(link) == [("next", "/orders")]
    frame = _iframe_of(html)
    assert float(frame["data-fallback-after"] or 0) > 0


def _iframe_of(html: str) -> dict[str, str | None]:
    [frame] = find_tags(html, "iframe")
    return frame


def test_qr_page_script_watches_the_frame_without_wechats_host_in_it(client: t.Any) -> None:
    """One inline script, as the extension's other pages have, which the page's own headers
    allow (a frame-ancestors policy only); it names no host: it probes the frame's own."""
    resp = client.get("/auth/wechat/qr")
    csp = resp.headers.get("Content-Security-Policy", "")
    assert "script-src" not in csp and "default-src" not in csp
    scripts = re.findall(r"<script(?: nonce=\"[^\"]*\")?>(.*?)</script>", resp.text, re.S)
    assert len(scripts) == 1
    script = scripts[0]
    for needed in ('"wechat-qr-frame"', '"wechat-qr-fallback"', "securitypolicyviolation",
                   'mode: "no-cors"', '"load"', '"error"', "data-fallback-after"):
        assert needed in script, needed
    assert "weixin" not in script


def test_qr_page_script_carries_a_hosts_csp_nonce(make_app: t.Any) -> None:
    """A host with a nonce-based policy (Flask-Talisman's csp_nonce() template global)."""
    app = make_app()
    app.jinja_env.globals["csp_nonce"] = lambda: "n0nce-123"
    html = app.test_client().get("/auth/wechat/qr").text
    assert '<script nonce="n0nce-123">' in html


@pytest.mark.parametrize("user_agent", ["desktop", "phone"])
def test_a_csp_nonce_given_as_a_string_is_carried_too(make_app: t.Any, user_agent: str
                                                      ) -> None:
    """A host's own nonce-based policy that hands its templates the nonce itself
    (``{"csp_nonce": g.nonce}`` from a context processor) instead of Flask-Talisman's
    function: the QR page and the phone page were a 500 ("'str' object is not callable")."""
    from flask import g
    from support import SAFARI_PHONE

    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None)
    app.before_request(lambda: setattr(g, "nonce", "str-n0nce"))
    app.context_processor(lambda: {"csp_nonce": g.nonce})
    headers = {"User-Agent": SAFARI_PHONE} if user_agent == "phone" else {}
    client = app.test_client()
    resp = client.get("/auth/wechat/qr", headers=headers)
    assert resp.status_code == 200
    assert '<script nonce="str-n0nce">' in resp.text
    if user_agent == "desktop":  # the sandbox's QR page, where the login goes
        location = client.get("/auth/wechat/login").headers["Location"]
        sandbox_page = client.get(location.split("#")[0])
        assert sandbox_page.status_code == 200
        assert '<script nonce="str-n0nce">' in sandbox_page.text


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
    wechat_api.error(TOKEN_PATH, 40029, "invalid code")
    assert finish_login(client, state).status_code == 400
    state = start_login(client)
    wechat_api.error(TOKEN_PATH, 40163, "code been used")
    assert finish_login(client, state).status_code == 200  # waits for another request
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


def test_the_embedded_qr_breaks_out_to_the_bind_page(make_app: t.Any,
                                                    wechat_api: t.Any) -> None:
    """Ask binding: the bind page is a whole page, not one inside the QR code's frame (the
    frame is 300 x 400 and does not scroll). Before: a redirect inside the frame."""
    app = make_app(WECHAT_QR_ASSOCIATION="ask_binding")
    client = app.test_client()
    wechat_api.token()
    wechat_api.userinfo()
    state = start_login(client)
    resp = client.get("/auth/wechat/callback", headers={"Sec-Fetch-Dest": "iframe"},
                      query_string={"code": "C1", "state": state}, base_url="https://localhost")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and 'window.top.location.href = "/auth/bind"' in html
    assert "You are logged in." not in html  # not yet: the person chooses first
    assert any(cookie.startswith("__Host-wechat-qr-binding=")
               for cookie in resp.headers.getlist("Set-Cookie"))
    assert client.get("/auth/bind", base_url="https://localhost").status_code == 200


def deny_framing_everywhere(app: Flask, hook: str) -> None:
    """A host that forbids every response to be framed, as hosts do it: Flask-Talisman
    (after_request, registered after the extension's blueprint hooks: they run after them)
    or an after_request of its own."""
    if hook == "talisman_deny":
        from flask_talisman import Talisman

        Talisman(app, force_https=False, frame_options="DENY")
    elif hook == "talisman_csp":
        from flask_talisman import Talisman

        Talisman(app, force_https=False,
                 content_security_policy={"default-src": "'self'", "frame-ancestors": "'none'"})
    else:
        @app.after_request
        def no_framing(response: t.Any) -> t.Any:
            response.headers["X-Frame-Options"] = "DENY"
            response.headers["Content-Security-Policy"] = (
                "default-src 'self'; frame-ancestors 'none', img-src https:")
            return response


HOOKS = ["talisman_deny", "talisman_csp", "own_after_request"]


def frame_ancestors(resp: t.Any) -> list[str]:
    """The frame-ancestors directives of every policy of ``resp``."""
    return [directive.strip() for header in resp.headers.getlist("Content-Security-Policy")
            for policy in header.split(",") for directive in policy.split(";")
            if directive.strip().startswith("frame-ancestors")]


@pytest.mark.parametrize("hook", HOOKS)
def test_a_host_that_forbids_framing_still_gets_self_redirect_logins(
        make_app: t.Any, wechat_api: t.Any, hook: str) -> None:
    """With self_redirect WeChat loads the callback inside the QR's iframe, on this site's
    QR page: the host's DENY or 'none' would block it there, and the login would never
    finish. This site may frame it; nobody else, and the host's other directives stay."""
    app = make_app(WECHAT_QR_QR_SELF_REDIRECT=True)
    deny_framing_everywhere(app, hook)
    client = app.test_client()
    wechat_api.token()
    wechat_api.userinfo()
    resp = client.get("/auth/wechat/callback", headers={"Sec-Fetch-Dest": "iframe"},
                      query_string={"code": "C1", "state": start_login(client)})
    assert resp.status_code == 200 and "window.top.location" in resp.get_data(as_text=True)
    assert resp.headers.getlist("X-Frame-Options") == ["SAMEORIGIN"]
    assert all(directive == "frame-ancestors 'self'" for directive in frame_ancestors(resp))
    if hook != "talisman_deny":
        assert frame_ancestors(resp)  # the host's directive, amended
        assert resp.headers["Content-Security-Policy"].startswith("default-src 'self'; ")
    if hook == "own_after_request":
        assert resp.headers["Content-Security-Policy"].endswith(", img-src https:")
    # Its error page, shown in the frame too (a reload: the state is used).
    again = client.get("/auth/wechat/callback", headers={"Sec-Fetch-Dest": "iframe"},
                       query_string={"code": "C1", "state": "used-or-unknown"})
    assert again.status_code == 400
    assert again.headers.getlist("X-Frame-Options") == ["SAMEORIGIN"]
    assert "frame-ancestors 'none'" not in frame_ancestors(again)


@pytest.mark.parametrize("hook", HOOKS)
def test_the_hosts_framing_policy_stays_everywhere_else(make_app: t.Any, hook: str) -> None:
    """Only the callbacks of connections with self_redirect: the QR page, the login, and a
    connection's callback without self_redirect keep what the host says."""
    app = make_app(WECHAT_QR_CONNECTIONS=[
        {"connection": "wechat", "app_id": APP_ID, "app_secret": APP_SECRET,
         "qr_self_redirect": True},
        {"connection": "other", "app_id": "wx" + "1" * 16, "app_secret": "2" * 32}])
    deny_framing_everywhere(app, hook)
    client = app.test_client()
    for url in ("/auth/wechat/qr", "/auth/wechat/login", "/auth/other/callback?state=s&code=c",
                "/"):
        resp = client.get(url, headers={"Sec-Fetch-Dest": "iframe"})
        if hook == "talisman_deny":
            assert resp.headers.getlist("X-Frame-Options") == ["DENY"], url
        else:
            assert frame_ancestors(resp) == ["frame-ancestors 'none'"], url


@pytest.mark.parametrize("hook", HOOKS)
def test_a_callback_loaded_in_the_whole_window_keeps_the_hosts_policy(
        make_app: t.Any, hook: str) -> None:
    """The browser says where it loads the callback (Sec-Fetch-Dest): in the whole window
    it needs no frame, and the host's policy stays as the host set it."""
    app = make_app(WECHAT_QR_QR_SELF_REDIRECT=True)
    deny_framing_everywhere(app, hook)
    resp = app.test_client().get("/auth/wechat/callback?state=s&code=c",
                                 headers={"Sec-Fetch-Dest": "document"})
    if hook == "talisman_deny":
        assert resp.headers.getlist("X-Frame-Options") == ["DENY"]
    else:
        assert frame_ancestors(resp) == ["frame-ancestors 'none'"]


def test_the_qr_pages_framers_may_frame_its_callback(make_app: t.Any) -> None:
    """Whoever WECHAT_QR_FRAME_ANCESTORS lets frame the QR page is an ancestor of the
    callback in its frame too."""
    app = make_app(WECHAT_QR_QR_SELF_REDIRECT=True,
                   WECHAT_QR_FRAME_ANCESTORS="'self' https://partner.example.com")
    deny_framing_everywhere(app, "talisman_csp")
    resp = app.test_client().get("/auth/wechat/callback?state=s&code=c",
                                 headers={"Sec-Fetch-Dest": "iframe"})
    assert frame_ancestors(resp) == ["frame-ancestors 'self' https://partner.example.com"]


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


# --- a host whose session cookie is SameSite=Strict ------------------------------------------


def test_a_strict_session_cookie_withheld_from_wechats_redirect_is_asked_for_again(
        make_app: t.Any, wechat_api: t.Any) -> None:
    """WeChat's redirect back is a navigation from another site: the browser keeps a
    ``SameSite=Strict`` session cookie (the login's state) from it. Before: every real
    login ended on "This login link is no longer valid". The callback now answers a page
    that asks for itself again from this site (where the cookie comes along), uses nothing
    before that, and sets no cookie: a host's hook that writes to the session (here
    ``session.permanent``) would otherwise replace the withheld cookie, state and all."""
    from flask import session

    app = make_app(SESSION_COOKIE_SAMESITE="Strict")
    app.before_request(lambda: setattr(session, "permanent", True))
    browser = app.test_client()
    state = start_login(browser)
    withheld = app.test_client()  # the same browser, as WeChat's redirect reaches the site
    hop = withheld.get("/auth/wechat/callback", query_string={"code": CODE, "state": state},
                       headers={"Sec-Fetch-Site": "cross-site"})
    assert hop.status_code == 200 and hop.headers["Cache-Control"] == "no-store"
    assert "session=" not in " ".join(hop.headers.getlist("Set-Cookie"))
    html = hop.get_data(as_text=True)
    again = f"/auth/wechat/callback?code={CODE}&amp;state={state}&amp;wechat_qr_hop=1"
    assert f'<meta http-equiv="refresh" content="0; url={again}">' in html
    assert '<meta name="referrer" content="no-referrer">' in html
    assert api_paths(wechat_api) == []  # the code is not used yet
    wechat_api.token()
    wechat_api.userinfo()
    done = browser.get(unescape(again), headers={"Sec-Fetch-Site": "same-origin"})
    assert done.status_code == 302 and len(all_identities(app)) == 1


def test_the_page_asking_again_sets_no_session_cookie_whatever_the_hooks_write(
        make_app: t.Any) -> None:
    """A host's ``after_request`` that writes to the session runs after the view: the page
    still answers without a session cookie (nor a deletion of one)."""
    from flask import session

    app = make_app(SESSION_COOKIE_SAMESITE="Strict")

    @app.after_request
    def last_seen(response: t.Any) -> t.Any:
        session["last_seen"] = "now"
        return response

    hop = app.test_client().get("/auth/wechat/callback?code=c&state=s",
                                headers={"Sec-Fetch-Site": "cross-site"})
    assert hop.status_code == 200 and "wechat_qr_hop=1" in hop.get_data(as_text=True)
    assert not [c for c in hop.headers.getlist("Set-Cookie") if c.startswith("session=")]


@pytest.mark.parametrize("query", ["connection=x", "_scheme=https", "_method=POST",
                                   "_anchor=a", "_external=1", "code=c&code=d"])
def test_the_page_asking_again_keeps_any_query_as_it_came(make_app: t.Any,
                                                          query: str) -> None:
    """Query keys that ``url_for`` reads as its own arguments were a 500 (a TypeError)."""
    app = make_app(SESSION_COOKIE_SAMESITE="Strict")
    hop = app.test_client().get(f"/auth/wechat/callback?{query}",
                                headers={"Sec-Fetch-Site": "cross-site"})
    assert hop.status_code == 200
    again = unescape(re.search(r'url=([^"]+)"', hop.get_data(as_text=True)).group(1))  # type: ignore[union-attr]
    assert again == f"/auth/wechat/callback?{query}&wechat_qr_hop=1"


def test_a_browser_that_says_nothing_of_the_site_is_asked_once(make_app: t.Any,
                                                               wechat_api: t.Any) -> None:
    """Safari before 16.4 (and WeChat's browser on older iPhones) sends no ``Sec-Fetch-Site``:
    no session cookie at all is the sign there. The page is asked for once only."""
    app = make_app(SESSION_COOKIE_SAMESITE="Strict")
    state = start_login(app.test_client())
    withheld = app.test_client()
    query = {"code": CODE, "state": state}
    hop = withheld.get("/auth/wechat/callback", query_string=query)
    assert hop.status_code == 200 and "wechat_qr_hop=1" in hop.get_data(as_text=True)
    # A browser that sends no cookie even then: the login ends (it cannot go on).
    wechat_api.token()
    again = withheld.get("/auth/wechat/callback", query_string={**query, "wechat_qr_hop": "1"})
    assert again.status_code == 400 and api_paths(wechat_api) == []


@pytest.mark.parametrize(("samesite", "fetch_site"), [
    ("Lax", "cross-site"), (None, "cross-site"), ("Strict", "same-origin"), ("Strict", None)])
def test_other_callbacks_are_finished_at_once(make_app: t.Any, wechat_api: t.Any,
                                              samesite: str | None,
                                              fetch_site: str | None) -> None:
    """A Lax (or Flask's default) cookie comes with the cross-site redirect; a browser
    that sends no ``Sec-Fetch-Site`` is not asked twice."""
    app = make_app(SESSION_COOKIE_SAMESITE=samesite)
    client = app.test_client()
    state = start_login(client)
    wechat_api.token()
    wechat_api.userinfo()
    headers = {"Sec-Fetch-Site": fetch_site} if fetch_site else {}
    done = client.get("/auth/wechat/callback", query_string={"code": CODE, "state": state},
                      headers=headers)
    assert done.status_code == 302 and len(all_identities(app)) == 1


@pytest.mark.parametrize("samesite", [None, "Lax", "Strict"])
def test_wechats_frame_sending_itself_back_without_the_cookie_is_asked_for_again(
        make_app: t.Any, wechat_api: t.Any, samesite: str | None) -> None:
    """WeChat's QR frame sending itself to the callback (``WECHAT_QR_QR_SELF_REDIRECT``) is
    another site's navigation of a frame: Chromium sends no ``Lax`` cookie with it (nor
    one without the attribute). Before: "This login link is no longer valid" under Flask's
    default cookie. The frame now asks for the callback again from this site."""
    app = make_app(SESSION_COOKIE_SAMESITE=samesite, WECHAT_QR_QR_SELF_REDIRECT=True)
    browser = app.test_client()
    state = start_login(browser)
    frame = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "iframe"}
    hop = app.test_client().get("/auth/wechat/callback",
                                query_string={"code": CODE, "state": state}, headers=frame)
    assert hop.status_code == 200 and "session=" not in " ".join(hop.headers.getlist(
        "Set-Cookie"))
    again = f"/auth/wechat/callback?code={CODE}&amp;state={state}&amp;wechat_qr_hop=1"
    assert f'<meta http-equiv="refresh" content="0; url={again}">' in hop.get_data(as_text=True)
    assert api_paths(wechat_api) == []  # the code is not used yet
    wechat_api.token()
    wechat_api.userinfo()
    done = browser.get(unescape(again), headers={"Sec-Fetch-Site": "same-origin",
                                                 "Sec-Fetch-Dest": "iframe"})
    assert done.status_code == 200 and len(all_identities(app)) == 1  # the frame breaks out
    assert logged_in_user_id(browser) is not None


def test_wechats_frame_whose_cookie_never_comes_is_asked_once(make_app: t.Any) -> None:
    """A frame whose session cookie does not come even from the site's own page (a browser
    blocking it, a cookie gone): asked again once, then the login's failure page, not
    another round (a review: the once-only guard moved below the frame's rule reloaded the
    frame until its URL was too long, and no test saw it)."""
    app = make_app(WECHAT_QR_QR_SELF_REDIRECT=True)
    state = start_login(app.test_client())
    frame = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "iframe"}
    second = app.test_client().get("/auth/wechat/callback", headers=frame, query_string={
        "code": CODE, "state": state, "wechat_qr_hop": "1"})
    assert second.status_code == 400 and error_name(second) == "StateError"
    assert "wechat_qr_hop" not in second.get_data(as_text=True)


@pytest.mark.parametrize("samesite", [None, "Lax", "None"])
def test_wechats_frame_that_brought_the_cookie_is_finished_at_once(
        make_app: t.Any, wechat_api: t.Any, samesite: str | None) -> None:
    """A browser that sends the cookie with the frame's navigation (Firefox and Safari, which
    keep a cookie without the attribute as it was; ``SameSite=None``) is not asked twice."""
    app = make_app(SESSION_COOKIE_SAMESITE=samesite, WECHAT_QR_QR_SELF_REDIRECT=True)
    client = app.test_client()
    state = start_login(client)
    wechat_api.token()
    wechat_api.userinfo()
    done = client.get("/auth/wechat/callback", query_string={"code": CODE, "state": state},
                      headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "iframe"})
    assert done.status_code == 200 and "wechat_qr_hop" not in done.get_data(as_text=True)
    assert len(all_identities(app)) == 1


def test_the_page_asking_again_keeps_the_mount_point(make_app: t.Any) -> None:
    app = make_app(SESSION_COOKIE_SAMESITE="Strict")
    hop = app.test_client().get("/auth/wechat/callback?code=c0de&state=abc",
                                headers={"Sec-Fetch-Site": "cross-site"},
                                environ_overrides={"SCRIPT_NAME": "/site"})
    assert "url=/site/auth/wechat/callback?code=c0de&amp;state=abc&amp;wechat_qr_hop=1" in (
        hop.get_data(as_text=True))
    # An unknown connection is a 404 first; a hostile mount point is no way off the site.
    assert app.test_client().get("/auth/nope/callback?code=c&state=s", headers={
        "Sec-Fetch-Site": "cross-site"}).status_code == 404
    hostile = app.test_client().get("/auth/wechat/callback?code=c&state=s",
                                    headers={"Sec-Fetch-Site": "cross-site"},
                                    environ_overrides={"SCRIPT_NAME": "//evil.example"})
    assert hostile.status_code == 400 and "refresh" not in hostile.get_data(as_text=True)


# --- a session cookie that would not come back to the callback -----------------------------


@pytest.mark.parametrize(("config", "named"), [
    # "/app" for an app not served under it: Flask gives the session cookie that path
    ({"APPLICATION_ROOT": "/app"}, "APPLICATION_ROOT"),
    ({"SESSION_COOKIE_PATH": "/account"}, "SESSION_COOKIE_PATH"),
    ({"SESSION_COOKIE_DOMAIN": "other.example"}, "SESSION_COOKIE_DOMAIN"),
])
def test_a_session_cookie_that_misses_the_callback_stops_the_login_at_its_start(
        make_app: t.Any, caplog: pytest.LogCaptureFixture, config: dict[str, str],
        named: str) -> None:
    """The browser kept the login's state in a cookie it then did not send to the
    callback: every login went to WeChat and ended on "This login link is no longer
    valid", with one INFO line in the log. Now the start says so: a 503 page, the reason
    and the fix at ERROR."""
    from werkzeug.test import Client

    app = make_app(**config)
    client = Client(app)  # as a server calls it (Flask's test client mounts APPLICATION_ROOT)
    with caplog.at_level(logging.INFO, logger="flask_wechat_qr"):
        resp = client.get("/auth/wechat/login")
    assert resp.status_code == 503
    assert 'data-error="SessionCookieNotSent"' in resp.get_data(as_text=True)
    assert "Location" not in resp.headers  # nobody is sent to WeChat for nothing
    (line,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert named in line.getMessage() and "Fix: unset SESSION_COOKIE_PATH" in line.getMessage()


@pytest.mark.parametrize("config", [
    {"SESSION_COOKIE_PATH": "/auth", "SESSION_COOKIE_DOMAIN": "localhost"},
    # Werkzeug writes the domain without its port, and in IDNA (found in review)
    {"SESSION_COOKIE_DOMAIN": "localhost:5000"},
    {"SESSION_COOKIE_DOMAIN": "bücher.example"},
])
def test_a_session_cookie_that_covers_the_callback_is_fine(
        make_app: t.Any, config: dict[str, str]) -> None:
    from werkzeug.test import Client

    app = make_app(**config)
    base = ("http://xn--bcher-kva.example" if "bücher" in str(config)
            else "http://localhost")
    assert Client(app).get("/auth/wechat/login", base_url=base).status_code == 302


def test_a_session_interface_of_the_sites_own_decides_the_cookies_path(
        make_app: t.Any) -> None:
    """A site's own session interface that keeps its cookie at ``/`` whatever
    ``APPLICATION_ROOT`` says: the login starts (found in review: the config was read)."""
    from flask.sessions import SecureCookieSessionInterface
    from werkzeug.test import Client

    class WholeSite(SecureCookieSessionInterface):
        def get_cookie_path(self, app: Flask) -> str:
            return "/"

    app = make_app(APPLICATION_ROOT="/app")
    app.session_interface = WholeSite()
    assert Client(app).get("/auth/wechat/login").status_code == 302
