"""Cookie tossing before the callback: a session cookie planted in the victim's browser (from
a sibling sub-domain, which can set cookies for the parent domain but never a ``__Host-``
one) must not carry a login the attacker started to the victim's WeChat or password.

Over https each login's state is tied to a ``__Host-wechat-qr-login`` cookie of the browser
that started it; these attacks worked before it (the reviewer's scripts): the victim's
password bound the attacker's WeChat, and a planted link state tied the victim's WeChat to
the attacker's account.
"""

from __future__ import annotations

import re
import typing as t

import pytest
from flask import Flask
from support import (
    CODE,
    OPENID,
    OPENID_2,
    UNIONID,
    UNIONID_2,
    add_user,
    all_identities,
    error_name,
    log_in,
    logged_in_user_id,
    pending_rows,
)

HTTPS = "https://localhost"
LOGIN_COOKIE = "__Host-wechat-qr-login"


def over_https(app: Flask) -> Flask:
    """Every request arrives over https (as behind a TLS proxy with ProxyFix)."""
    inner = app.wsgi_app

    def https(environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        environ["wsgi.url_scheme"] = "https"
        return inner(environ, start_response)

    app.wsgi_app = https  # type: ignore[method-assign]
    return app


def start(client: t.Any, path: str = "/auth/wechat/login") -> str:
    """Start a login (or link) in ``client``; its state."""
    resp = client.get(path, base_url=HTTPS)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    found = re.search(r"state=([A-Za-z0-9]+)", resp.headers["Location"])
    assert found
    return found.group(1)


def callback(client: t.Any, state: str, code: str = CODE) -> t.Any:
    return client.get("/auth/wechat/callback", query_string={"code": code, "state": state},
                      base_url=HTTPS)


def plant_session(attacker: t.Any, victim: t.Any) -> None:
    """What a sibling sub-domain can do: copy the attacker's session cookie, nothing else."""
    victim.set_cookie("session", attacker.get_cookie("session").value)


def test_a_planted_pre_callback_session_cannot_bind_the_attackers_wechat(
        make_app: t.Callable[..., Flask], wechat_api: t.Any) -> None:
    """The attacker starts a login, scans with their own WeChat and stops at WeChat's
    redirect (the code unused), plants the session and sends the victim to the callback."""
    app = over_https(make_app(WECHAT_QR_ASSOCIATION="ask_binding"))
    add_user(app, username="victim", password="victim-pw")
    attacker, victim = app.test_client(), app.test_client()
    state = start(attacker)
    assert attacker.get_cookie(LOGIN_COOKIE) is not None
    plant_session(attacker, victim)
    wechat_api.token(openid=OPENID_2, unionid=UNIONID_2)
    wechat_api.userinfo(openid=OPENID_2, unionid=UNIONID_2)
    resp = callback(victim, state)
    assert resp.status_code == 400 and error_name(resp) == "StateError"
    assert len(wechat_api.mock.calls) == 0  # the attacker's code is not even exchanged
    assert pending_rows(app) == [] and victim.get_cookie("__Host-wechat-qr-binding") is None
    assert victim.get("/auth/bind", base_url=HTTPS).status_code == 400
    # The attacker's own browser still finishes its login.
    assert callback(attacker, state).headers["Location"] == "/auth/bind"


def test_a_planted_session_cannot_replay_the_attackers_finished_login(
        make_app: t.Callable[..., Flask], wechat_api: t.Any) -> None:
    """The repeat path (WeChat's double redirect) must not point the victim's browser at the
    attacker's pending binding either."""
    app = over_https(make_app(WECHAT_QR_ASSOCIATION="ask_binding"))
    add_user(app, username="victim", password="victim-pw")
    attacker, victim = app.test_client(), app.test_client()
    state = start(attacker)
    plant_session(attacker, victim)  # the pre-callback cookie
    wechat_api.token(openid=OPENID_2, unionid=UNIONID_2)
    wechat_api.userinfo(openid=OPENID_2, unionid=UNIONID_2)
    assert callback(attacker, state).headers["Location"] == "/auth/bind"
    resp = callback(victim, state)
    assert resp.status_code == 400 and error_name(resp) == "StateError"
    assert victim.get_cookie("__Host-wechat-qr-binding") is None
    assert victim.get("/auth/bind", base_url=HTTPS).status_code == 400


def test_a_planted_session_waiting_for_the_attackers_login_logs_nobody_in(
        make_app: t.Callable[..., Flask], wechat_api: t.Any) -> None:
    """WeChat's double redirect of the attacker's own login: its second request's page,
    which waits for the first one's ending (the session remembers which login it waits
    for), planted in the victim's browser as the first commits. Loaded there, it must not
    log the victim in as the attacker: what the session remembers is tied to the browser
    that started the login, as the state was."""
    app = over_https(make_app(WECHAT_QR_CODE_USED_WAIT=0))
    attacker, twin, victim = app.test_client(), app.test_client(), app.test_client()
    state = start(attacker)
    twin.set_cookie("session", attacker.get_cookie("session").value)
    twin.set_cookie(LOGIN_COOKIE, attacker.get_cookie(LOGIN_COOKIE).value)
    wechat_api.error("/sns/oauth2/access_token", 40163, "code been used")
    waiting = callback(twin, state, code="SECOND")  # the second redirect, answered first
    assert waiting.status_code == 200 and "Refresh" in waiting.headers
    reload_path = waiting.headers["Refresh"].partition("url=")[2]
    wechat_api.mock.reset()
    wechat_api.token(openid=OPENID_2, unionid=UNIONID_2)
    wechat_api.userinfo(openid=OPENID_2, unionid=UNIONID_2)
    assert callback(attacker, state).status_code == 302  # the first: the attacker's login
    plant_session(twin, victim)
    resp = victim.get(reload_path, base_url=HTTPS)
    assert resp.status_code == 400 and error_name(resp) == "StateError"
    assert logged_in_user_id(victim) is None
    # In the browser that started the login, the same page logs its person in.
    assert twin.get(reload_path, base_url=HTTPS).status_code == 302
    assert logged_in_user_id(twin) == logged_in_user_id(attacker) is not None


def test_a_planted_link_state_cannot_tie_the_victims_wechat_to_the_attacker(
        make_app: t.Callable[..., Flask], wechat_api: t.Any) -> None:
    app = over_https(make_app())
    attacker_id = add_user(app, username="attacker", password="attacker-pw")
    attacker, victim = app.test_client(), app.test_client()
    log_in(attacker, attacker_id)
    state = start(attacker, "/auth/wechat/link")
    # Planted only for the callback's path, so the victim's own pages are unaffected.
    victim.set_cookie("session", attacker.get_cookie("session").value,
                      path="/auth/wechat/callback")
    wechat_api.token(openid=OPENID, unionid=UNIONID)  # the victim scans with their WeChat
    wechat_api.userinfo(openid=OPENID, unionid=UNIONID)
    resp = callback(victim, state)
    assert resp.status_code == 400 and error_name(resp) == "StateError"
    assert all_identities(app) == []


def test_a_second_login_in_the_same_browser_keeps_the_first_one_working(
        make_app: t.Callable[..., Flask], wechat_api: t.Any) -> None:
    """One login cookie per browser: a second tab's start keeps the cookie the first tab's
    made, so the first tab's login still finishes."""
    app = over_https(make_app())
    browser = app.test_client()
    first = start(browser)
    cookie = browser.get_cookie(LOGIN_COOKIE).value
    start(browser)
    assert browser.get_cookie(LOGIN_COOKIE).value == cookie
    wechat_api.token()
    wechat_api.userinfo()
    assert callback(browser, first).status_code == 302
    assert logged_in_user_id(browser) is not None


def test_a_forged_login_cookie_is_replaced(make_app: t.Callable[..., Flask]) -> None:
    app = over_https(make_app())
    browser = app.test_client()
    browser.set_cookie(LOGIN_COOKIE, "x" * 4000, domain="localhost")
    start(browser)
    assert len(browser.get_cookie(LOGIN_COOKIE).value) == 32


def test_over_plain_http_no_login_cookie_is_made(make_app: t.Callable[..., Flask],
                                                 wechat_api: t.Any) -> None:
    """A ``__Host-`` cookie needs https: in development the session alone decides."""
    app = make_app()
    browser = app.test_client()
    resp = browser.get("/auth/wechat/login")
    assert LOGIN_COOKIE not in resp.headers.get("Set-Cookie", "")
    found = re.search(r"state=([A-Za-z0-9]+)", resp.headers["Location"])
    assert found
    wechat_api.token()
    wechat_api.userinfo()
    assert browser.get("/auth/wechat/callback",
                       query_string={"code": CODE, "state": found.group(1)}).status_code == 302


def _set_cookie_line(resp: t.Any, name: str) -> str:
    [line] = [value for value in resp.headers.getlist("Set-Cookie")
              if value.startswith(f"{name}=")]
    return line


@pytest.mark.parametrize("config,same_site,partitioned", [
    ({}, "Lax", False),
    ({"SESSION_COOKIE_SAMESITE": "None", "SESSION_COOKIE_PARTITIONED": True}, "None", True),
])
def test_the_browsers_login_and_binding_cookies_go_where_the_session_cookie_goes(
        make_app: t.Callable[..., Flask], wechat_api: t.Any, config: dict[str, t.Any],
        same_site: str, partitioned: bool) -> None:
    """A site framed by another (``SameSite=None``) whose session cookie is partitioned
    (CHIPS), in a browser that blocks other sites' cookies: the frame keeps the session,
    but the login cookie, not partitioned, and the binding cookie, always ``Lax``, were
    dropped there, and every login in the frame ended on "This login link is no longer
    valid" (a helper's host hunt, session 34). Both are set as the session cookie is."""
    app = over_https(make_app(WECHAT_QR_ASSOCIATION="ask_binding", **config))
    browser = app.test_client()
    started = browser.get("/auth/wechat/login", base_url=HTTPS)
    state = re.search(r"state=([A-Za-z0-9]+)", started.headers["Location"])
    assert state
    wechat_api.token()
    wechat_api.userinfo()
    bound = callback(browser, state.group(1))
    assert bound.headers["Location"] == "/auth/bind"
    for resp, name in ((started, LOGIN_COOKIE), (bound, "__Host-wechat-qr-binding")):
        line = _set_cookie_line(resp, name)
        assert f"SameSite={same_site}" in line, line
        assert ("Partitioned" in line) is partitioned, line
        assert "Secure" in line and "HttpOnly" in line and "Path=/" in line, line
    session_line = _set_cookie_line(started, "session")
    assert ("Partitioned" in session_line) is partitioned
