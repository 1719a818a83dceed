"""The blueprint: login, QR page and callback, with every way a login can end."""

from __future__ import annotations

import logging
import re
import time
import typing as t
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import responses
import sqlalchemy as sa
from support import (
    ACCESS_TOKEN,
    API,
    APP_ID,
    APP_SECRET,
    CODE,
    NICKNAME,
    REFRESH_TOKEN,
    TOKEN_PATH,
    USERINFO_PATH,
    all_identities,
    all_users,
    api_paths,
    find_tags,
    finish_login,
    logged_in_user_id,
    start_login,
)

from flask_wechat_qr import flow

CALLBACK = "http://localhost/auth/wechat/callback"
#: Things that must never reach a page, a redirect or a log line.
SECRETS = (APP_SECRET, CODE, ACCESS_TOKEN, REFRESH_TOKEN)


def _page(resp: t.Any) -> str:
    return resp.get_data(as_text=True)


def _query(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def _retry_links(html: str) -> list[str]:
    return [a["href"] or "" for a in find_tags(html, "a")
            if (a.get("href") or "").startswith("/auth/wechat/login")]


def _state_rows(app: t.Any) -> int:
    with app.app_context():
        table = app.extensions["wechat_qr"].models.LoginState.__table__
        return int(app.db.session.execute(sa.select(sa.func.count()).select_from(table)).scalar())


# --- login -------------------------------------------------------------------------


def test_login_redirects_to_wechat_qr_page_in_wechat_order(client: t.Any) -> None:
    resp = client.get("/auth/wechat/login")
    assert resp.status_code == 302
    location = resp.headers["Location"]
    assert location.startswith("https://open.weixin.qq.com/connect/qrconnect?")
    assert location.endswith("#wechat_redirect")
    params = _query(location.removesuffix("#wechat_redirect"))
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


def test_every_login_gets_its_own_state(client: t.Any) -> None:
    assert start_login(client) != start_login(client)


def test_local_next_is_where_the_login_lands(client: t.Any, wechat_api: t.Any) -> None:
    state = start_login(client, next="/account?tab=wechat")
    wechat_api.token()
    wechat_api.userinfo()
    resp = finish_login(client, state)
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/account?tab=wechat"
    assert logged_in_user_id(client) is not None


def test_next_never_travels_to_wechat(client: t.Any) -> None:
    resp = client.get("/auth/wechat/login", query_string={"next": "/secret-place"})
    assert "secret-place" not in resp.headers["Location"]


def test_without_next_the_login_lands_on_the_post_login_url(make_app: t.Any,
                                                           wechat_api: t.Any) -> None:
    client = make_app(WECHAT_QR_POST_LOGIN_URL="/welcome").test_client()
    state = start_login(client)
    wechat_api.token()
    wechat_api.userinfo()
    assert finish_login(client, state).headers["Location"] == "/welcome"


OFF_SITE_NEXT = [
    "https://evil.example",
    "https://evil.example/auth/wechat/callback",
    "http:evil.example",
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "evil.example",
    " //evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\nLocation: https://evil.example",
    "/\x00/evil.example",
    "/\x7f/evil.example",
]


@pytest.mark.parametrize("post_login_url", [None, "/home"])
@pytest.mark.parametrize("next_url", OFF_SITE_NEXT)
def test_off_site_next_is_refused(make_app: t.Any, wechat_api: t.Any, next_url: str,
                                  post_login_url: str | None) -> None:
    config = {} if post_login_url is None else {"WECHAT_QR_POST_LOGIN_URL": post_login_url}
    client = make_app(**config).test_client()
    state = start_login(client, next=next_url)
    wechat_api.token()
    wechat_api.userinfo()
    resp = finish_login(client, state)
    assert resp.status_code == 302
    assert resp.headers["Location"] == (post_login_url or "/")
    assert logged_in_user_id(client) is not None


@pytest.mark.parametrize("next_url", OFF_SITE_NEXT)
def test_off_site_next_is_not_echoed_on_the_qr_page(client: t.Any, next_url: str) -> None:
    resp = client.get("/auth/wechat/qr", query_string={"next": next_url})
    assert resp.status_code == 200
    assert "evil" not in _page(resp)
    links = [a["href"] or "" for a in find_tags(_page(resp), "a")]
    assert "/auth/wechat/login" in links


def test_off_site_next_is_not_echoed_in_the_retry_link(client: t.Any, wechat_api: t.Any) -> None:
    state = start_login(client, next="https://evil.example/")
    wechat_api.error(TOKEN_PATH, 40029, "invalid code")
    resp = finish_login(client, state)
    assert resp.status_code == 400
    assert _retry_links(_page(resp)) == ["/auth/wechat/login"]
    assert "evil" not in _page(resp)


@pytest.mark.parametrize("route", ["login", "qr"])
def test_oversized_next_is_a_400_page(app: t.Any, client: t.Any, wechat_api: t.Any,
                                      route: str) -> None:
    resp = client.get(f"/auth/wechat/{route}", query_string={"next": "/" + "a" * 2048})
    assert resp.status_code == 400
    assert "text/html" in resp.headers["Content-Type"]
    assert "Invalid request" in _page(resp)
    assert resp.headers["Cache-Control"] == "no-store"
    assert "Location" not in resp.headers
    assert _state_rows(app) == 0
    assert api_paths(wechat_api) == []


def test_next_of_exactly_the_limit_is_kept(client: t.Any, wechat_api: t.Any) -> None:
    next_url = "/" + "a" * 2047
    state = start_login(client, next=next_url)
    wechat_api.token()
    wechat_api.userinfo()
    assert finish_login(client, state).headers["Location"] == next_url


def test_non_ascii_next_survives_the_login(client: t.Any, wechat_api: t.Any) -> None:
    state = start_login(client, next="/账户?标签=微信")
    wechat_api.token()
    wechat_api.userinfo()
    resp = finish_login(client, state)
    assert resp.status_code == 302
    location = resp.headers["Location"]
    assert location.startswith("/")
    assert not location.startswith("//")
    assert "%E8%B4%A6%E6%88%B7" in location


# --- qr page -----------------------------------------------------------------------


def _iframe(resp: t.Any) -> dict[str, str | None]:
    frames = find_tags(_page(resp), "iframe")
    assert len(frames) == 1, _page(resp)
    return frames[0]


def test_qr_page_embeds_the_qr_from_the_configured_open_base_url(make_app: t.Any) -> None:
    client = make_app(WECHAT_QR_OPEN_BASE_URL="http://127.0.0.1:9/sandbox").test_client()
    resp = client.get("/auth/wechat/qr")
    assert resp.status_code == 200
    assert "text/html" in resp.headers["Content-Type"]
    frame = _iframe(resp)
    src = frame["src"] or ""
    assert src.startswith("http://127.0.0.1:9/sandbox/connect/qrconnect?")
    params = _query(src)
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
    assert "open.weixin.qq.com" not in _page(resp)
    assert APP_SECRET not in _page(resp)


def test_qr_page_uses_wechat_by_default(client: t.Any) -> None:
    src = _iframe(client.get("/auth/wechat/qr"))["src"] or ""
    assert src.startswith("https://open.weixin.qq.com/connect/qrconnect?")
    assert "#" not in src


def test_qr_page_options(make_app: t.Any) -> None:
    href = "https://static.example.com/wechat-qr.css"
    client = make_app(WECHAT_QR_QR_SELF_REDIRECT=True, WECHAT_QR_QR_STYLE="white",
                      WECHAT_QR_QR_HREF=href).test_client()
    values = dict(_query(_iframe(client.get("/auth/wechat/qr"))["src"] or ""))
    assert values["self_redirect"] == "true"
    assert values["style"] == "white"
    assert values["href"] == href


def test_qr_page_refreshes_before_its_state_is_useless(make_app: t.Any) -> None:
    client = make_app(WECHAT_QR_STATE_TTL=300).test_client()
    metas = find_tags(_page(client.get("/auth/wechat/qr")), "meta")
    refresh = [m for m in metas if (m.get("http-equiv") or "").lower() == "refresh"]
    assert len(refresh) == 1
    assert 0 < int(refresh[0]["content"] or "0") <= 300


def test_qr_page_state_finishes_a_login_and_keeps_next(client: t.Any, wechat_api: t.Any) -> None:
    resp = client.get("/auth/wechat/qr", query_string={"next": "/dashboard"})
    state = dict(_query(_iframe(resp)["src"] or ""))["state"]
    links = [a["href"] for a in find_tags(_page(resp), "a")]
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
    assert "Unknown login method" in _page(resp)
    assert resp.headers["Cache-Control"] == "no-store"
    assert api_paths(wechat_api) == []
    assert all_users(app) == []


# --- callback: state ---------------------------------------------------------------


def _assert_state_refused(resp: t.Any, app: t.Any, api: t.Any) -> None:
    assert resp.status_code == 400
    page = _page(resp)
    assert "no longer valid" in page
    assert _retry_links(page), page
    assert api_paths(api) == []
    assert all_users(app) == []
    assert all_identities(app) == []
    assert resp.headers["Cache-Control"] == "no-store"


def test_callback_without_state_is_refused(app: t.Any, client: t.Any, wechat_api: t.Any) -> None:
    start_login(client)
    wechat_api.token()
    wechat_api.userinfo()
    resp = client.get("/auth/wechat/callback", query_string={"code": CODE})
    _assert_state_refused(resp, app, wechat_api)


@pytest.mark.parametrize("forged", ["A" * 32, "x", "a" * 129, "../../etc", "%00"])
def test_forged_state_is_refused(app: t.Any, client: t.Any, wechat_api: t.Any,
                                 forged: str) -> None:
    start_login(client)
    wechat_api.token()
    wechat_api.userinfo()
    _assert_state_refused(finish_login(client, forged), app, wechat_api)


def test_state_from_another_browser_is_refused(app: t.Any, wechat_api: t.Any) -> None:
    browser_a = app.test_client()
    browser_b = app.test_client()
    state = start_login(browser_a)
    wechat_api.token()
    wechat_api.userinfo()
    _assert_state_refused(finish_login(browser_b, state), app, wechat_api)
    assert logged_in_user_id(browser_b) is None


def test_reused_state_is_refused_without_calling_wechat(app: t.Any, client: t.Any,
                                                        wechat_api: t.Any) -> None:
    state = start_login(client)
    wechat_api.token()
    wechat_api.userinfo()
    assert finish_login(client, state).status_code == 302
    calls = len(wechat_api.mock.calls)
    # A refresh of the callback page once logged in: sent on, not an error; no WeChat call.
    resp = finish_login(client, state)
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    assert len(wechat_api.mock.calls) == calls
    assert len(all_users(app)) == 1
    # Anyone else using the state gets the error page, without a WeChat call either.
    resp = finish_login(app.test_client(), state)
    assert resp.status_code == 400
    assert "no longer valid" in _page(resp)
    assert len(wechat_api.mock.calls) == calls


def test_replayed_session_cookie_cannot_reuse_a_state(
    app: t.Any, wechat_api: t.Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Single use is enforced server-side: an old cookie still naming the state is no help."""
    browser = app.test_client()
    state = start_login(browser)
    old_cookie = browser.get_cookie("session").value
    wechat_api.token()
    wechat_api.userinfo()
    assert finish_login(browser, state).status_code == 302
    calls = len(wechat_api.mock.calls)

    attacker = app.test_client()
    attacker.set_cookie("session", old_cookie)
    _travel(monkeypatch, flow.REPEAT_WINDOW + 1)  # past WeChat's double-redirect window
    resp = finish_login(attacker, state)
    assert resp.status_code == 400
    assert len(wechat_api.mock.calls) == calls
    assert logged_in_user_id(attacker) is None
    assert len(all_users(app)) == 1


def _travel(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + seconds)


@pytest.mark.parametrize("ttl", [600, 1])
def test_expired_state_is_refused(make_app: t.Any, wechat_api: t.Any,
                                  monkeypatch: pytest.MonkeyPatch, ttl: int) -> None:
    app = make_app(WECHAT_QR_STATE_TTL=ttl)
    client = app.test_client()
    state = start_login(client)
    wechat_api.token()
    wechat_api.userinfo()
    _travel(monkeypatch, ttl + 1)
    _assert_state_refused(finish_login(client, state), app, wechat_api)


def test_state_is_good_until_it_expires(make_app: t.Any, wechat_api: t.Any,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_app(WECHAT_QR_STATE_TTL=600).test_client()
    state = start_login(client)
    wechat_api.token()
    wechat_api.userinfo()
    _travel(monkeypatch, 590)
    assert finish_login(client, state).status_code == 302


# --- callback: denied ----------------------------------------------------------------


@pytest.mark.parametrize("extra", [{}, {"code": ""}])
def test_denied_login_is_a_cancelled_page(app: t.Any, client: t.Any, wechat_api: t.Any,
                                          extra: dict[str, str]) -> None:
    state = start_login(client, next="/account")
    wechat_api.token()
    wechat_api.userinfo()
    resp = client.get("/auth/wechat/callback", query_string={"state": state, **extra})
    assert resp.status_code == 200
    page = _page(resp)
    assert "cancelled" in page
    retry = _retry_links(page)
    assert len(retry) == 1
    assert dict(_query(retry[0])) == {"next": "/account"}
    assert api_paths(wechat_api) == []
    assert all_users(app) == []
    assert all_identities(app) == []
    assert logged_in_user_id(client) is None
    assert resp.headers["Cache-Control"] == "no-store"
    # The state was used up by the cancel.
    assert finish_login(client, state).status_code == 400
    assert api_paths(wechat_api) == []


# --- callback: WeChat errors ---------------------------------------------------------

ERRCODES = [
    # errcode, errmsg, status, words on the page
    (40029, "invalid code", 400, "expired"),
    (40163, "code been used", 400, "already used"),
    (41008, "missing code", 400, "Scan the QR code again"),
    (40125, "invalid appsecret", 502, "tell the site owner"),
    (40013, "invalid appid", 502, "tell the site owner"),
    (-1, "system error", 502, "busy"),
    (45011, "api minute-quota reach limit mustslow down!!", 502, "Wait a minute"),
    (99999, "something new", 502, "Try again"),
]


@pytest.mark.parametrize(("errcode", "errmsg", "status", "words"), ERRCODES)
def test_wechat_errcode_is_a_page_in_words(app: t.Any, client: t.Any, wechat_api: t.Any,
                                           errcode: int, errmsg: str, status: int,
                                           words: str) -> None:
    state = start_login(client, next="/account")
    wechat_api.error(TOKEN_PATH, errcode, errmsg)
    wechat_api.userinfo()
    resp = finish_login(client, state)
    assert resp.status_code == status
    page = _page(resp)
    assert words in page
    assert "rid:" not in page
    assert "Traceback" not in page
    retry = _retry_links(page)
    assert len(retry) == 1
    assert dict(_query(retry[0])) == {"next": "/account"}
    # Busy (-1) is retried once; nothing else is.
    assert api_paths(wechat_api) == [TOKEN_PATH] * (2 if errcode == -1 else 1)
    assert all_users(app) == []
    assert all_identities(app) == []
    assert logged_in_user_id(client) is None


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


def test_busy_userinfo_is_retried_once(client: t.Any, wechat_api: t.Any) -> None:
    state = start_login(client)
    wechat_api.token()
    wechat_api.error(USERINFO_PATH, -1, "system error")
    wechat_api.userinfo()
    resp = finish_login(client, state)
    assert resp.status_code == 302
    assert api_paths(wechat_api) == [TOKEN_PATH, USERINFO_PATH, USERINFO_PATH]
    assert client.get("/").get_data(as_text=True).endswith(NICKNAME)


# --- every error path: the same promises --------------------------------------------


def _token_then(api: t.Any, add_userinfo: t.Callable[[t.Any], None]) -> None:
    api.token()
    add_userinfo(api)


def _raise(exc: Exception) -> t.Callable[[t.Any, str], None]:
    def add(api: t.Any, path: str) -> None:
        api.mock.add(responses.GET, API + path, body=exc)
    return add


ERROR_PATHS: dict[str, tuple[t.Callable[[t.Any], None], int]] = {
    "token-40029": (lambda api: api.error(TOKEN_PATH, 40029, "invalid code"), 400),
    "token-40163": (lambda api: api.error(TOKEN_PATH, 40163, "code been used"), 400),
    "token-40125": (lambda api: api.error(TOKEN_PATH, 40125, "invalid appsecret"), 502),
    "token-busy": (lambda api: api.error(TOKEN_PATH, -1, "system error"), 502),
    "token-45011": (lambda api: api.error(TOKEN_PATH, 45011, "api minute-quota reach limit"),
                    502),
    "token-timeout": (lambda api: _raise(requests.Timeout("read timed out"))(api, TOKEN_PATH),
                      504),
    "token-connect-timeout": (
        lambda api: _raise(requests.ConnectTimeout("connect"))(api, TOKEN_PATH), 504),
    "token-connection-error": (
        lambda api: _raise(requests.ConnectionError("refused"))(api, TOKEN_PATH), 502),
    "token-http-500": (lambda api: api.raw(TOKEN_PATH, b"Internal Server Error", status=500),
                       502),
    "token-http-502-html": (
        lambda api: api.raw(TOKEN_PATH, b"<html><h1>502 Bad Gateway</h1></html>", status=502,
                            content_type="text/html"), 502),
    "token-non-json": (lambda api: api.raw(TOKEN_PATH, b"<html>hello</html>"), 502),
    "token-json-list": (lambda api: api.raw(TOKEN_PATH, b"[]"), 502),
    "token-empty": (lambda api: api.raw(TOKEN_PATH, b""), 502),
    "token-no-openid": (lambda api: api.raw(TOKEN_PATH, b'{"access_token": "x"}'), 502),
    "userinfo-40003": (lambda api: _token_then(
        api, lambda a: a.error(USERINFO_PATH, 40003, "invalid openid")), 502),
    "userinfo-48001": (lambda api: _token_then(
        api, lambda a: a.error(USERINFO_PATH, 48001, "api unauthorized")), 502),
    "userinfo-busy-twice": (lambda api: _token_then(
        api, lambda a: a.error(USERINFO_PATH, -1, "system error")), 502),
    "userinfo-timeout": (lambda api: _token_then(
        api, lambda a: _raise(requests.Timeout("read timed out"))(a, USERINFO_PATH)), 504),
    "userinfo-connection-error": (lambda api: _token_then(
        api, lambda a: _raise(requests.ConnectionError("reset"))(a, USERINFO_PATH)), 502),
    "userinfo-http-503": (lambda api: _token_then(
        api, lambda a: a.raw(USERINFO_PATH, b"Service Unavailable", status=503)), 502),
    "userinfo-non-json": (lambda api: _token_then(
        api, lambda a: a.raw(USERINFO_PATH, b"\xff\xfe not json")), 502),
    "snapshot-user": (lambda api: api.token(is_snapshotuser=1), 403),
}


@pytest.mark.parametrize("name", sorted(ERROR_PATHS))
def test_every_error_path_keeps_the_promises(app: t.Any, client: t.Any, wechat_api: t.Any,
                                             caplog: pytest.LogCaptureFixture,
                                             name: str) -> None:
    caplog.set_level(logging.DEBUG)
    setup, status = ERROR_PATHS[name]
    state = start_login(client, next="/account")
    with client.session_transaction() as sess:
        sess["host_marker"] = "kept"
    setup(wechat_api)
    resp = finish_login(client, state)

    assert resp.status_code == status
    assert resp.status_code != 500
    page = _page(resp)
    assert "text/html" in resp.headers["Content-Type"]
    assert "Traceback" not in page
    assert _retry_links(page), page
    assert resp.headers["Cache-Control"] == "no-store"
    everything = page + "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
    for secret in SECRETS:
        assert secret not in everything
    for record in caplog.records:
        for secret in SECRETS:
            assert secret not in record.getMessage()
    assert all_users(app) == []
    assert all_identities(app) == []
    assert logged_in_user_id(client) is None
    with client.session_transaction() as sess:
        # A failed login leaves the visitor's session alone (only the state is gone).
        assert sess.get("host_marker") == "kept"


# --- headers and session -------------------------------------------------------------


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


def test_session_is_renewed_at_login(app: t.Any, client: t.Any, wechat_api: t.Any) -> None:
    other_state = start_login(client)
    state = start_login(client)
    with client.session_transaction() as sess:
        sess["marker"] = "from before the login"
        before = dict(sess)
    assert any(key.startswith("_state_") for key in before)
    wechat_api.token()
    wechat_api.userinfo()
    assert finish_login(client, state).status_code == 302
    with client.session_transaction() as sess:
        after = dict(sess)
    assert "marker" not in after
    assert not [key for key in after if key.startswith("_state_")]
    user = all_users(app)[0]
    assert after["_user_id"] == str(user.id)
    assert client.get("/").get_data(as_text=True) == f"logged in as {user.id} {NICKNAME}"
    # A state started before the login does not survive it either.
    assert finish_login(client, other_state).status_code == 400


def test_pending_states_do_not_grow_the_session_cookie_without_bound(client: t.Any) -> None:
    for _ in range(150):
        assert client.get("/auth/wechat/qr").status_code == 200
    assert len(client.get_cookie("session").value) < 1000


def test_the_newest_pending_logins_stay_valid(client: t.Any, wechat_api: t.Any) -> None:
    """Five tabs may be mid-login at once; the sixth-oldest start is forgotten."""
    states = [start_login(client) for _ in range(6)]
    assert finish_login(client, states[0]).status_code == 400
    wechat_api.token()
    wechat_api.userinfo()
    assert finish_login(client, states[1]).status_code == 302


def test_someone_elses_state_does_not_cancel_their_login(
    app: t.Any, wechat_api: t.Any
) -> None:
    owner, attacker = app.test_client(), app.test_client()
    state = start_login(owner)
    assert finish_login(attacker, state).status_code == 400
    wechat_api.token()
    wechat_api.userinfo()
    assert finish_login(owner, state).status_code == 302


def test_long_or_chinese_next_and_several_connections_keep_the_cookie_small(
    make_app: t.Any,
) -> None:
    """Browsers drop a cookie over 4 KB (and the login with it): pending logins are capped
    across connections, and data the session would escape into ``\\uXXXX`` is measured as
    written."""
    app = make_app(WECHAT_QR_CONNECTIONS=[
        {"connection": name, "app_id": f"wx{name}000000000000"[:18], "app_secret": "s"}
        for name in ("one", "two", "three")])
    client = app.test_client()
    for name in ("one", "two", "three"):
        for length in (40, 150, 600):
            for _ in range(5):
                resp = client.get(f"/auth/{name}/login", query_string={
                    "next": "/搜索?q=" + "微信🐼" * length})
                assert resp.status_code == 302
    assert len(client.get_cookie("session").value) < 3000
