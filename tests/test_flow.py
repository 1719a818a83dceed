"""Finishing a login (flow.py): the callback's endings, read through the routes. A login
lands where it was asked to; a cancelled or failed one writes nothing; a repeated callback
(WeChat's double redirect, a refresh) ends as its login did, by the table in flow.py. The
same at the same moment, with real threads: promises/test_concurrency."""

from __future__ import annotations

import logging
import typing as t

import pytest
import requests
import responses
from support import (
    API,
    NICKNAME,
    PAST_THE_REPEAT_WINDOW,
    SECRETS,
    TOKEN_PATH,
    USERINFO_PATH,
    Clock,
    all_identities,
    all_users,
    api_paths,
    finish_login,
    logged_in_user_id,
    query_pairs,
    retry_links,
    start_login,
)

# --- a login lands where it was asked to --------------------------------------------------


def test_local_next_is_where_the_login_lands(client: t.Any, wechat_api: t.Any) -> None:
    state = start_login(client, next="/account?tab=wechat")
    wechat_api.token()
    wechat_api.userinfo()
    resp = finish_login(client, state)
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/account?tab=wechat"
    assert logged_in_user_id(client) is not None


def test_without_next_the_login_lands_on_the_post_login_url(make_app: t.Any,
                                                           wechat_api: t.Any) -> None:
    client = make_app(WECHAT_QR_POST_LOGIN_URL="/welcome").test_client()
    state = start_login(client)
    wechat_api.token()
    wechat_api.userinfo()
    assert finish_login(client, state).headers["Location"] == "/welcome"


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


# --- a cancelled or failed login writes nothing -------------------------------------------


@pytest.mark.parametrize("extra", [{}, {"code": ""}])
def test_denied_login_is_a_cancelled_page(app: t.Any, client: t.Any, wechat_api: t.Any,
                                          extra: dict[str, str]) -> None:
    state = start_login(client, next="/account")
    wechat_api.token()
    wechat_api.userinfo()
    resp = client.get("/auth/wechat/callback", query_string={"state": state, **extra})
    assert resp.status_code == 200
    page = resp.text
    assert "cancelled" in page
    retry = retry_links(page)
    assert len(retry) == 1
    assert dict(query_pairs(retry[0])) == {"next": "/account"}
    assert api_paths(wechat_api) == []
    assert all_users(app) == []
    assert all_identities(app) == []
    assert logged_in_user_id(client) is None
    assert resp.headers["Cache-Control"] == "no-store"
    # The state was used up by the cancel.
    assert finish_login(client, state).status_code == 400
    assert api_paths(wechat_api) == []


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


def _token_then(api: t.Any, add_userinfo: t.Callable[[t.Any], None]) -> None:
    api.token()
    add_userinfo(api)


def _raise(exc: Exception) -> t.Callable[[t.Any, str], None]:
    def add(api: t.Any, path: str) -> None:
        api.mock.add(responses.GET, API + path, body=exc)
    return add


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
    page = resp.text
    assert "text/html" in resp.headers["Content-Type"]
    assert "Traceback" not in page
    assert retry_links(page), page
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


# --- repeated callbacks (the table in flow.py) --------------------------------------------


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
    assert "no longer valid" in resp.text
    assert len(wechat_api.mock.calls) == calls


def test_replayed_session_cookie_cannot_reuse_a_state(
    app: t.Any, wechat_api: t.Any, clock: Clock
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
    clock.advance(PAST_THE_REPEAT_WINDOW)  # past WeChat's double-redirect window
    resp = finish_login(attacker, state)
    assert resp.status_code == 400
    assert len(wechat_api.mock.calls) == calls
    assert logged_in_user_id(attacker) is None
    assert len(all_users(app)) == 1
