"""Finishing a login (flow.py): the callback's endings, read through the routes. A login
lands where it was asked to; a cancelled or failed one writes nothing; a repeated callback
(WeChat's double redirect, a refresh) ends as its login did, by the table in flow.py. The
same at the same moment, with real threads: promises/test_concurrency."""

from __future__ import annotations

import logging
import threading
import time
import typing as t

import pytest
import requests
import responses
import sqlalchemy as sa
from support import (
    API,
    NICKNAME,
    OPENID,
    PAST_THE_REPEAT_WINDOW,
    PROFILE_ANSWER,
    SECRETS,
    TOKEN_PATH,
    USERINFO_PATH,
    Clock,
    Database,
    WeChatAPI,
    add_user,
    all_identities,
    all_users,
    answer_with,
    api_paths,
    browser_copy,
    callback_app,
    dispose_engines,
    each_code_once,
    ending_of,
    error_name,
    finish_login,
    finishing_page,
    forbid_waiting,
    form_post,
    log_in,
    logged_in_user_id,
    login_with_wechat,
    make_test_app,
    pending_rows,
    query_pairs,
    raising,
    receiver_keys,
    recording,
    retry_links,
    rows,
    start_login,
    verify,
    waits_run_out_once,
    wechat_body,
)

from flask_wechat_qr import AccountAdapter, LoginCancelled, LoginRefused, signals

CALLBACK_PATH = "/auth/wechat/callback"

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
    assert any(state in key for key in before)  # this browser's pending logins
    wechat_api.token()
    wechat_api.userinfo()
    assert finish_login(client, state).status_code == 302
    with client.session_transaction() as sess:
        after = dict(sess)
    assert "marker" not in after
    assert not [key for key in after if state in key or other_state in key]
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
    # The state was used up by the cancel: the page reloaded (with a code, even) says so
    # again and logs nobody in; in another browser the link is no longer valid.
    again = finish_login(client, state)
    assert (again.status_code, error_name(again)) == (200, "LoginCancelled")
    assert finish_login(app.test_client(), state).status_code == 400
    assert api_paths(wechat_api) == []
    assert all_users(app) == [] and logged_in_user_id(client) is None


def test_a_cancelled_login_reloaded_late_is_still_cancelled_in_its_browser(
    app: t.Any, client: t.Any, wechat_api: WeChatAPI, clock: Clock
) -> None:
    """The person tapped Cancel on the phone, landed on "Login cancelled" and pressed F5 a
    while later: the same page, its "Try again" to the same next (it said "This login link
    is no longer valid"). Any other browser with the link: no longer valid. No WeChat call,
    nobody logged in."""
    state = start_login(client, next="/account")
    assert error_name(client.get(CALLBACK_PATH, query_string={"state": state})) == "LoginCancelled"
    clock.advance(3600)  # past the repeat window, and the used state's row
    again = client.get(CALLBACK_PATH, query_string={"state": state})
    assert (again.status_code, error_name(again)) == (200, "LoginCancelled")
    assert [dict(query_pairs(link)) for link in retry_links(again.text)] == [
        {"next": "/account"}]
    other = app.test_client().get(CALLBACK_PATH, query_string={"state": state})
    assert (other.status_code, error_name(other)) == (400, "StateError")
    assert api_paths(wechat_api) == []
    assert all_users(app) == [] and logged_in_user_id(client) is None


ERROR_PATHS: dict[str, tuple[t.Callable[[t.Any], None], int]] = {
    "token-40029": (lambda api: api.error(TOKEN_PATH, 40029, "invalid code"), 400),
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


def test_every_error_path_keeps_the_promises(app: t.Any, wechat_api: t.Any,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """Each way of :data:`ERROR_PATHS`, one after another on one site (for each a new
    browser, a code of its own and WeChat's answer alone): its status, never a 500, a page
    in words with a way to try again and ``no-store``, no secret in the page, its headers or
    the log, nothing stored, nobody logged in, and the visitor's session left alone."""
    caplog.set_level(logging.DEBUG)
    for number, name in enumerate(sorted(ERROR_PATHS)):
        setup, status = ERROR_PATHS[name]
        client = app.test_client()
        wechat_api.mock.reset()
        caplog.clear()
        state = start_login(client, next="/account")
        with client.session_transaction() as sess:
            sess["host_marker"] = "kept"
        setup(wechat_api)
        code = f"0816Ab000aBcdE1xYz3000xyz8z16A{number:02d}"  # a code is a secret too
        resp = finish_login(client, state, code=code)
        secrets = (*SECRETS, code)

        assert resp.status_code == status, name
        assert resp.status_code != 500, name
        page = resp.text
        assert "text/html" in resp.headers["Content-Type"], name
        assert "Traceback" not in page, name
        assert retry_links(page), (name, page)
        assert resp.headers["Cache-Control"] == "no-store", name
        everything = page + "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
        for secret in secrets:
            assert secret not in everything, name
        for record in caplog.records:
            for secret in secrets:
                assert secret not in record.getMessage(), name
        assert all_users(app) == [], name
        assert all_identities(app) == [], name
        assert logged_in_user_id(client) is None, name
        with client.session_transaction() as sess:
            # A failed login leaves the visitor's session alone (only the state is gone).
            assert sess.get("host_marker") == "kept", name


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
    """Single use is enforced server-side: an old cookie still naming the state is no help.
    Its code goes to WeChat (refused there, or here by the used state's row); nothing else
    does."""
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
    assert api_paths(wechat_api)[calls:] == [TOKEN_PATH]
    assert logged_in_user_id(attacker) is None
    assert len(all_users(app)) == 1


def test_wechats_double_redirect_posts_again(make_app: t.Any, wechat_api: t.Any,
                                             pem: str) -> None:
    """WeChat may call the callback twice: the second answer posts the same token again (one
    login, one token: a receiver that refuses a seen jti still accepts whichever arrives
    first, and nobody gets a second token to use)."""
    app = callback_app(make_app, pem)
    client = app.test_client()
    wechat_api.token()
    wechat_api.userinfo()
    state = start_login(client, state="biz", nonce="nn")
    first = form_post(finish_login(client, state))
    again = form_post(finish_login(client, state))
    keys = receiver_keys(client)
    one = verify(first["fields"]["id_token"], keys, nonce="nn")
    two = verify(again["fields"]["id_token"], keys, nonce="nn")
    assert again["fields"]["state"] == "biz"
    assert one["sub"] == two["sub"]
    assert one["auth_time"] == two["auth_time"]
    assert first["fields"]["id_token"] == again["fields"]["id_token"]


# --- WeChat's double redirect, one after the other ----------------------------------------


def test_second_redirect_with_another_code_ends_logged_in(
    app: t.Any, wechat_api: WeChatAPI
) -> None:
    """WeChat's other double redirect: a second code with the same state, just after the
    first request ended, from the cookie the first answer has not replaced yet. Its code is
    exchanged, but no profile is asked and no account made: it ends with the first one's
    outcome."""
    browser = app.test_client()
    state = start_login(browser)
    twin = browser_copy(app, browser)
    codes = each_code_once(wechat_api)
    wechat_api.userinfo()
    first = browser.get("/auth/wechat/callback", query_string={"code": "C1", "state": state})
    second = twin.get("/auth/wechat/callback", query_string={"code": "C2", "state": state})
    assert (first.status_code, second.status_code) == (302, 302)
    assert codes == ["C1", "C2"]
    assert api_paths(wechat_api).count(USERINFO_PATH) == 1
    assert logged_in_user_id(twin) == str(all_users(app)[0].id)
    assert ending_of(app, state).user_id == str(all_users(app)[0].id)  # one login


def test_a_failed_first_callback_is_not_repeated_as_success(
    app: t.Any, wechat_api: WeChatAPI
) -> None:
    """A failure uses the state too: a second redirect with a good code is refused (its
    code exchanged, no profile asked) and logs nobody in."""
    browser = app.test_client()
    state = start_login(browser)
    twin = browser_copy(app, browser)
    wechat_api.error(TOKEN_PATH, 40029, "invalid code")
    assert browser.get("/auth/wechat/callback",
                       query_string={"code": "bad", "state": state}).status_code == 400
    assert ending_of(app, state).error == "InvalidCode"
    calls = len(wechat_api.mock.calls)
    wechat_api.token()
    wechat_api.userinfo()
    again = twin.get("/auth/wechat/callback", query_string={"code": "good", "state": state})
    assert again.status_code == 400 and error_name(again) == "StateError"
    assert api_paths(wechat_api)[calls:] == [TOKEN_PATH]
    assert all_users(app) == [] and logged_in_user_id(twin) is None


def test_a_failed_first_callback_is_not_turned_into_success_by_a_second_code(
    app: t.Any, wechat_api: WeChatAPI
) -> None:
    """The state is used once whatever happened: after a cancelled first redirect, a
    second code for the same state does not log anyone in (its code is exchanged, no
    profile asked); it ends as the first one did."""
    browser = app.test_client()
    state = start_login(browser)
    twin = browser_copy(app, browser)
    codes = each_code_once(wechat_api)
    wechat_api.userinfo()
    cancelled = browser.get("/auth/wechat/callback", query_string={"state": state})
    assert cancelled.status_code == 200 and error_name(cancelled) == "LoginCancelled"
    second = twin.get("/auth/wechat/callback", query_string={"code": "C2", "state": state})
    assert second.status_code == 200 and error_name(second) == "LoginCancelled"
    assert codes == ["C2"] and api_paths(wechat_api) == [TOKEN_PATH]
    assert all_users(app) == [] and logged_in_user_id(twin) is None


def _business_login_and_a_copy(make_app: t.Any, wechat_api: WeChatAPI
                               ) -> tuple[t.Any, t.Any, str]:
    """A login with a business callback URL, finished (its ID token posted), and a browser
    holding a copy of the cookie from before its callback; the site and the login's state."""
    app = make_app(WECHAT_QR_CALLBACK_URL="https://biz.example.com/wechat-done",
                   WECHAT_QR_ID_TOKEN_SECRET="a-shared-secret-of-32-bytes-or-more!")
    browser = app.test_client()
    state = start_login(browser, state="biz-1")
    replay = browser_copy(app, browser)
    wechat_api.token()
    wechat_api.userinfo()
    assert "id_token" in browser.get("/auth/wechat/callback",
                                     query_string={"code": "C1", "state": state}).text
    return app, replay, state


def test_a_replayed_cookie_without_a_code_is_not_posted_as_a_cancel(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    """A connection with a callback URL: after a login succeeded, its old cookie replayed
    with a "cancelled" callback never tells the business front end the user cancelled."""
    app, replay, state = _business_login_and_a_copy(make_app, wechat_api)
    calls = len(wechat_api.mock.calls)
    resp = replay.get("/auth/wechat/callback", query_string={"state": state})
    # Within seconds, from this browser: WeChat's double redirect, ended as the login did.
    assert "access_denied" not in resp.text and "id_token" in resp.text
    assert len(wechat_api.mock.calls) == calls


# --- a repeat that comes after its login ended, with the cookie from before -----------


#: What the replayed callback carries, and how WeChat answers its code (``None``: the code
#: never reaches WeChat).
LATE_REPEATS: dict[str, tuple[dict[str, str], t.Callable[[WeChatAPI], t.Any] | None]] = {
    "no code": ({}, None),
    "an empty code": ({"code": ""}, None),
    "an oversized code": ({"code": "x" * 600}, None),
    "the same code": ({"code": "C1"}, lambda api: api.error(TOKEN_PATH, 40163, "code been used")),
    "a garbage code": ({"code": "garbage"},
                       lambda api: api.error(TOKEN_PATH, 40029, "invalid code")),
    "a second code": ({"code": "C2"}, lambda api: api.token()),
}


@pytest.mark.parametrize("carried", list(LATE_REPEATS))
def test_a_late_repeat_after_a_login_is_no_longer_valid_whatever_it_carries(
    make_app: t.Any, wechat_api: WeChatAPI, clock: Clock, carried: str
) -> None:
    """The table in flow.py: a login that ended as U, repeated from a cookie from before it
    past the repeat window, is "no longer valid", whatever the repeat carries and however
    its own code fares at WeChat: never a cancel (posted to a business callback URL), never
    the repeat's own error, never a second login."""
    app, replay, state = _business_login_and_a_copy(make_app, wechat_api)
    first = ending_of(app, state)
    query, answer = LATE_REPEATS[carried]
    wechat_api.mock.reset()
    if answer is not None:
        answer(wechat_api)
    clock.advance(PAST_THE_REPEAT_WINDOW)
    resp = replay.get("/auth/wechat/callback", query_string={"state": state, **query})
    assert (resp.status_code, error_name(resp)) == (400, "StateError")
    assert "access_denied" not in resp.text and "id_token" not in resp.text
    assert api_paths(wechat_api) == ([TOKEN_PATH] if answer is not None else [])
    assert logged_in_user_id(replay) is None and len(all_users(app)) == 1
    assert ending_of(app, state) == first
    spent = [row for row in rows(app, "wechat_qr_login_state", order_by="key")
             if row.key.startswith("spent-code:")]
    assert spent == []  # the code logged someone in: it is not remembered as spent


def _login_only_business_login(make_app: t.Any, wechat_api: WeChatAPI
                               ) -> tuple[t.Any, t.Any, t.Any, str]:
    """A login-only site with a business callback URL, a browser that started a login (the
    business state ``biz-7``), a copy of its cookie and the login's state; WeChat answers
    any code with a token."""
    app = make_app(WECHAT_QR_CALLBACK_URL="https://biz.example.com/wechat-done",
                   WECHAT_QR_ID_TOKEN_SECRET="a-shared-secret-of-32-bytes-or-more!",
                   WECHAT_QR_LOGIN_ONLY=True)
    browser = app.test_client()
    state = start_login(browser, state="biz-7")
    wechat_api.token()
    return app, browser, browser_copy(app, browser), state


def test_a_late_repeat_of_a_refused_login_is_not_told_again(
    make_app: t.Any, wechat_api: WeChatAPI, clock: Clock
) -> None:
    """Login only, with a business callback URL: a refused login repeated past the window
    with a second code is "no longer valid": the refusal is not posted, nor signalled,
    again."""
    app, browser, replay, state = _login_only_business_login(make_app, wechat_api)
    with recording(app, "login_refused") as events:
        first = browser.get("/auth/wechat/callback", query_string={"code": "C1", "state": state})
        clock.advance(PAST_THE_REPEAT_WINDOW)
        late = replay.get("/auth/wechat/callback", query_string={"code": "C2", "state": state})
    assert 'name="error" value="account_not_linked"' in first.text
    assert (late.status_code, error_name(late)) == (400, "StateError")
    assert "account_not_linked" not in late.text
    assert len(events) == 1 and all_users(app) == []


def test_repeat_window_starts_when_the_login_is_done(
    make_app: t.Any, wechat_api: WeChatAPI, clock: Clock
) -> None:
    """A slow profile request must not push WeChat's second redirect out of the window."""
    app = make_app()
    browser = app.test_client()
    state = start_login(browser)
    twin = browser_copy(app, browser)
    wechat_api.token()

    def slow_profile(request: t.Any) -> tuple[int, dict[str, str], bytes]:
        clock.advance(PAST_THE_REPEAT_WINDOW)  # longer than the window
        return wechat_body(PROFILE_ANSWER)

    answer_with(wechat_api, USERINFO_PATH, slow_profile)
    assert browser.get("/auth/wechat/callback",
                       query_string={"code": "C1", "state": state}).status_code == 302
    second = twin.get("/auth/wechat/callback", query_string={"code": "C2", "state": state})
    assert second.status_code == 302
    assert logged_in_user_id(twin) == str(all_users(app)[0].id)


def test_double_redirect_to_the_bind_page_keeps_the_pending_binding(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    """Ask binding: the second redirect (with the cookie from before the first) still finds
    the pending binding the first one started; its code is exchanged, no profile asked."""
    app = make_app(WECHAT_QR_ASSOCIATION="ask_binding")
    browser = app.test_client()
    state = start_login(browser)
    twin = browser_copy(app, browser)
    wechat_api.token()
    wechat_api.userinfo()
    first = browser.get("/auth/wechat/callback", query_string={"code": "C1", "state": state})
    second = twin.get("/auth/wechat/callback", query_string={"code": "C2", "state": state})
    assert first.headers["Location"] == second.headers["Location"] == "/auth/bind"
    assert twin.get("/auth/bind").status_code == 200
    assert len(pending_rows(app)) == 1  # the second's rolled back
    assert api_paths(wechat_api) == [TOKEN_PATH, USERINFO_PATH, TOKEN_PATH]


@pytest.mark.parametrize("ending, error", [("refused", "account_not_linked"),
                                           ("cancelled", "access_denied")])
def test_a_repeated_callback_tells_the_callback_url_the_same_ending(
    make_app: t.Any, wechat_api: WeChatAPI, ending: str, error: str
) -> None:
    """The browser shows WeChat's second redirect: a login that ended refused or cancelled
    is posted to the business front end again, with its state (and told to the signal
    once), not turned into this site's "link no longer valid" page."""
    app, browser, twin, state = _login_only_business_login(make_app, wechat_api)
    query = {"state": state} if ending == "cancelled" else {"state": state, "code": "C1"}
    with recording(app, "login_refused") as events:
        first = browser.get("/auth/wechat/callback", query_string=query)
        second = twin.get("/auth/wechat/callback", query_string=query)
    for resp in (first, second):
        assert resp.status_code == 200
        assert f'name="error" value="{error}"' in resp.text
        assert 'name="state" value="biz-7"' in resp.text
    assert [kwargs["openid"] for _name, kwargs in events] == (
        [OPENID] if ending == "refused" else [])
    # a refused login's second redirect exchanges its code again; a cancelled one has none
    assert api_paths(wechat_api) == ([TOKEN_PATH] * 2 if ending == "refused" else [])


def test_a_cancel_posted_to_the_callback_url_is_not_posted_again_late(
    make_app: t.Any, wechat_api: WeChatAPI, clock: Clock
) -> None:
    """A cancelled login's page reloaded late says "cancelled" again only where it was this
    site's page: a cancel posted to the business front end is not posted, nor shown, again."""
    _app, browser, _twin, state = _login_only_business_login(make_app, wechat_api)
    first = browser.get(CALLBACK_PATH, query_string={"state": state})
    assert 'name="error" value="access_denied"' in first.text
    clock.advance(PAST_THE_REPEAT_WINDOW)
    late = browser.get(CALLBACK_PATH, query_string={"state": state})
    assert (late.status_code, error_name(late)) == (400, "StateError")
    assert "access_denied" not in late.text


# --- a code WeChat says was used (40163) --------------------------------------------------


def test_code_used_without_another_request_waits_then_says_so(
    make_app: t.Any, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture
) -> None:
    """40163 and no other request of this login finishing. After waiting
    ``WECHAT_QR_CODE_USED_WAIT``, a page that loads the callback again: another request
    may still be at WeChat with the code (its double redirect), and a used state would
    refuse its commit, so nothing is used (the code is spent). The reloads say the same,
    without waiting or WeChat, until that request had time enough (three HTTP timeouts),
    then the "already used" page, the state used. Neither page shows the code, and both
    leave the visitor's session alone. A replay of the cookie, or the same code with a fresh
    login, is then answered without waiting (the replay's code goes to WeChat again): the
    replay as the login ended, the fresh login with the waiting page."""
    caplog.set_level(logging.DEBUG)
    app = make_app(WECHAT_QR_CODE_USED_WAIT=0.3, WECHAT_QR_HTTP_TIMEOUT=0.2)
    browser = app.test_client()
    state = start_login(browser, next="/account")
    with browser.session_transaction() as sess:
        sess["host_marker"] = "kept"
    replay = browser_copy(app, browser)
    wechat_api.error(TOKEN_PATH, 40163, "code been used")
    code = "0816Ab000aBcdE1xYz3000xyzUSED1"
    started = time.monotonic()
    resp = browser.get("/auth/wechat/callback", query_string={"code": code, "state": state})
    assert time.monotonic() - started >= 0.3
    assert resp.status_code == 200 and finishing_page(resp), resp.text
    assert ending_of(app, state) is None  # nothing used: the other request may still commit
    delay, _, target = resp.headers["Refresh"].partition("; url=")
    assert delay == "2" and target == f"/auth/wechat/callback?state={state}&finishing=1"
    real_sleep = time.sleep
    forbid_waiting(monkeypatch)
    calls = len(wechat_api.mock.calls)
    again = browser.get(target)
    assert again.status_code == 200 and finishing_page(again)
    real_sleep(0.65)  # the other request's time (3 x 0.2 s) is over
    last = browser.get(target)
    assert last.status_code == 400 and error_name(last) == "CodeUsed"
    assert "already used" in last.text
    assert [dict(query_pairs(link)) for link in retry_links(last.text)] == [{"next": "/account"}]
    assert len(wechat_api.mock.calls) == calls  # the reloads never asked WeChat
    assert ending_of(app, state).error == "CodeUsed"
    for page in (resp, again, last):
        assert page.headers["Cache-Control"] == "no-store"
        everything = page.text + "\n".join(f"{k}: {v}" for k, v in page.headers.items())
        assert not [secret for secret in (*SECRETS, code) if secret in everything]
    assert not [r for r in caplog.records if code in r.getMessage()]
    assert all_users(app) == [] and logged_in_user_id(browser) is None
    with browser.session_transaction() as sess:
        assert sess.get("host_marker") == "kept"
    again = replay.get("/auth/wechat/callback", query_string={"code": code, "state": state})
    assert again.status_code == 400 and error_name(again) == "StateError"
    assert api_paths(wechat_api)[calls:] == [TOKEN_PATH]
    assert ending_of(app, state).error == "CodeUsed"  # the first ending stays
    # The same code with a fresh login: no wait (the code is spent), the waiting page, and
    # nothing used while a request that may have the code could still commit.
    other = app.test_client()
    fresh_state = start_login(other)
    fresh = other.get("/auth/wechat/callback", query_string={"code": code, "state": fresh_state})
    assert fresh.status_code == 200 and finishing_page(fresh)
    assert ending_of(app, fresh_state) is None


def test_two_tabs_waiting_for_their_logins_each_keep_waiting(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    """Two tabs of one browser, each on the page that waits for another request of its
    login: the second tab's wait replaced the first's in the session, whose reload then
    said "no longer valid" while its other request could still log the person in (a
    helper's hunt, session 40). Each waits for its own, and forgets only its own."""
    app = make_app(WECHAT_QR_CODE_USED_WAIT=0)
    browser = app.test_client()  # both tabs: one cookie jar
    states = [start_login(browser), start_login(browser)]
    wechat_api.error(TOKEN_PATH, 40163, "code been used")
    pages = [browser.get("/auth/wechat/callback", query_string={"code": f"TAB{n}", "state": state})
             for n, state in enumerate(states)]
    targets = [page.headers["Refresh"].partition("url=")[2] for page in pages]
    assert [finishing_page(page) for page in pages] == [True, True]
    for target in targets:  # each tab's reload, the other tab's wait in the session too
        again = browser.get(target)
        assert again.status_code == 200 and finishing_page(again), again.text
    assert [ending_of(app, state) for state in states] == [None, None]


def test_one_code_sent_with_many_states_holds_one_thread(
    make_app: t.Any, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attacker's one code, sent at once with a dozen states of logins started for
    free: each request WeChat answered "used" waited for its own state, which no request
    would end, and the site's threads all stood for ``WECHAT_QR_CODE_USED_WAIT``. One
    request per code waits now; the others are answered at once (recording nothing: the
    login waited for may still end)."""
    app = make_app(WECHAT_QR_CODE_USED_WAIT=2.0)
    wechat_api.error(TOKEN_PATH, 40163, "code been used")
    browsers = [app.test_client() for _ in range(4)]
    states = [start_login(browser) for browser in browsers]
    ready = threading.Barrier(len(browsers))
    answers: list[t.Any] = [None] * len(browsers)
    # Nothing will end what the one waiter waits for: once the others are answered, its
    # wait runs out at once (it cannot be answered before them).
    waits_run_out_once(monkeypatch, lambda: sum(a is not None for a in answers) >= 3)

    def callback(index: int) -> None:
        ready.wait(timeout=10)
        answers[index] = browsers[index].get(
            "/auth/wechat/callback", query_string={"code": "C1", "state": states[index]})

    threads = [threading.Thread(target=callback, args=(i,)) for i in range(len(browsers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # The one that waited (before: every request, up to four a process) gives up on the
    # page that loads its callback again; the others got that page at once.
    assert [finishing_page(resp) for resp in answers] == [True] * len(browsers)
    assert [ending_of(app, state) for state in states] == [None] * len(states)  # none used


# --- the extension's tables not made yet ---------------------------------------------------


def test_a_login_before_the_extensions_tables_are_made_says_how_to_make_them(
    tmp_path: t.Any, database: Database, wechat_api: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A site whose own migrations made its user table and keep the extension's out
    (Flask-Migrate with host_include_object), before ``flask wechat-qr db upgrade``. Found by
    a newcomer: the login button showed, and the first scan was a bare 500 "no such table:
    wechat_qr_identity" that named no fix. Now the error page, and the log says the fix."""
    # No create_all: no table at all (a new schema on PostgreSQL, database on MariaDB).
    app = make_test_app(tmp_path, database.url("no_tables"), tables_made=True)
    try:
        with app.app_context():
            app.User.__table__.create(app.db.engine)  # the site's own migrations
        with caplog.at_level(logging.INFO, "flask_wechat_qr"):
            resp = login_with_wechat(app.test_client(), wechat_api)
        assert resp.status_code == 500 and error_name(resp) == "AccountNotSaved"
        logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any("flask wechat-qr db upgrade" in message for message in logged), logged
    finally:
        dispose_engines(app)


def test_a_login_on_tables_an_earlier_version_made_says_how_to_upgrade_them(
    make_app: t.Any, wechat_api: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    """New code served before its ``db upgrade`` (or tables an earlier version's
    ``db.create_all()`` made, which adds no column to a table that exists): each returning
    login was Flask's bare 500 with "no such column", and ``check`` said "no problems"
    where the revision was recorded as the newest (an upgrade hunt, session 35). Now the
    login's page and the log's fix, and ``check`` names the column."""
    app = make_app()
    assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
    with app.app_context():
        with app.db.engine.begin() as connection:  # type: ignore[attr-defined]
            connection.execute(sa.text(
                "ALTER TABLE wechat_qr_identity DROP COLUMN profile_refreshed_at"))
    with caplog.at_level(logging.INFO, "flask_wechat_qr"):
        resp = login_with_wechat(app.test_client(), wechat_api)
    assert resp.status_code == 500 and error_name(resp) == "AccountNotSaved"
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("lack columns this version needs" in message for message in logged), logged
    result = app.test_cli_runner().invoke(args=["wechat-qr", "check"])
    assert result.exit_code != 0
    assert "lack wechat_qr_identity.profile_refreshed_at" in result.output
    assert "flask wechat-qr db stamp" in result.output


def test_a_page_on_a_table_behind_answers_without_waiting_for_a_second_connection(
    make_app: t.Any, wechat_api: t.Any
) -> None:
    """A statement outside a login's transaction (the bind page's read of its pending
    binding) fails on a missing column, on a pool of one connection: the look at the
    tables waited for a second connection, the pool's whole timeout, before the page (a
    review, session 35). The failed transaction's connection goes back first."""
    from support import arrive

    app = make_app(WECHAT_QR_ASSOCIATION="ask_binding",
                   SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0,
                                              "pool_timeout": 20})
    client = app.test_client()
    arrive(client, wechat_api)
    with app.app_context():
        with app.db.engine.begin() as connection:  # type: ignore[attr-defined]
            connection.execute(sa.text(
                "ALTER TABLE wechat_qr_pending_binding DROP COLUMN next_url"))
    started = time.monotonic()
    resp = client.get("/auth/bind")
    assert resp.status_code == 500 and error_name(resp) == "AccountNotSaved"
    assert time.monotonic() - started < 10  # generous: the pool's timeout is 20 s


@pytest.mark.parametrize("how", ["new person", "profile at every login", "link",
                                 "ask binding", "a stale identity",
                                 "the host's writes, committed by themselves"])
def test_no_connection_of_the_pool_is_held_while_wechat_answers_for_the_profile(
    make_app: t.Any, wechat_api: t.Any, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a login that needed WeChat's profile asked for it inside its transaction,
    with its connection out of the pool for as long as WeChat took (up to the HTTP
    timeout): on a pool of one the site's every other page waited (a red team's measure,
    session 36: a page that read one row waited 3.75 s behind six slow callbacks). The
    site's page here takes the pool's one connection while WeChat answers."""
    import json

    from support import API, NICKNAME, OPENID, UNIONID, USERINFO_PATH, start_link

    config: dict[str, t.Any] = {"SQLALCHEMY_ENGINE_OPTIONS": {
        "pool_size": 1, "max_overflow": 0, "pool_timeout": 0.5}}
    if how == "profile at every login":
        config["WECHAT_QR_PROFILE_SYNC"] = "each_login"
    if how == "ask binding":
        config["WECHAT_QR_ASSOCIATION"] = "ask_binding"
    if how == "the host's writes, committed by themselves":
        # An engine in AUTOCOMMIT, and a before_request that writes at every request: its
        # write is committed at once, and the login's rollback cannot undo it (a review,
        # session 36: the profile was asked inside the transaction there).
        config["SQLALCHEMY_ENGINE_OPTIONS"]["isolation_level"] = "AUTOCOMMIT"
        armed: list[bool] = []

        def writes_at_every_request(app: t.Any) -> None:
            @app.before_request
            def last_seen() -> None:
                if armed:
                    app.db.session.execute(sa.update(app.User).values(nickname="seen"))

        config["before_init"] = writes_at_every_request
    app = make_app(**config)
    client = app.test_client()
    if how == "the host's writes, committed by themselves":
        # The blueprint's first request looks for SQLite's trigger on a connection of its
        # own, which a pool of one has not while the host's write holds it (left alone).
        assert client.get("/auth/wechat/login").status_code == 302
        armed.append(True)
    if how in ("profile at every login", "a stale identity"):
        assert login_with_wechat(client, wechat_api).status_code == 302  # known from now on
    if how == "a stale identity":
        # Its user is gone as the site's load_user says (soft-deleted): the login deletes
        # the identity, a write of its own, and makes a new user, which needs the profile
        # (a review, session 36: that write kept the profile's call inside the transaction).
        monkeypatch.setattr(AccountAdapter, "load_user", lambda self, user_id: None)
    if how == "link":
        log_in(client, add_user(app, username="alice", password="pw-of-alice"))
    read_meanwhile: list[object] = []

    def userinfo(request: t.Any) -> tuple[int, dict[str, str], str]:
        with app.app_context():  # another page of the site, while WeChat answers
            with app.db.engine.connect() as connection:  # type: ignore[attr-defined]
                read_meanwhile.append(connection.execute(sa.text("SELECT 1")).scalar())
        return 200, {"Content-Type": "text/plain"}, json.dumps(
            {"openid": OPENID, "unionid": UNIONID, "nickname": NICKNAME, "privilege": []})

    wechat_api.mock.reset()
    wechat_api.token()
    wechat_api.mock.add_callback(responses.GET, API + USERINFO_PATH, callback=userinfo)
    state = start_link(client) if how == "link" else start_login(client)
    resp = finish_login(client, state)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    if how == "ask binding":
        assert resp.headers["Location"] == "/auth/bind"
    assert read_meanwhile == [1]
    with app.app_context():
        assert [identity.openid for identity in all_identities(app)] == (
            [] if how == "ask binding" else [OPENID])


@pytest.mark.parametrize("who", ["a new person", "a person whose user is gone"])
def test_a_first_login_looks_its_identity_up_once_and_saves_it_at_the_first_try(
    make_app: t.Any, wechat_api: t.Any, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, who: str
) -> None:
    """The run after WeChat's profile does not look again for an identity the run before
    found none of: on PostgreSQL a round trip a first login (issue 15). A stale identity
    (its user gone, deleted in the run the rollback undid) is looked up again, not left to
    the unique key's refusal and a third run."""
    app = make_app()
    if who == "a person whose user is gone":
        assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
        monkeypatch.setattr(AccountAdapter, "load_user", lambda self, user_id: None)
    lookups: list[str] = []

    def look(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and \
                "FROM wechat_qr_identity" in " ".join(statement.split()):
            lookups.append(statement)

    with app.app_context():
        engine = app.db.engine
    sa.event.listen(engine, "before_cursor_execute", look)
    client = app.test_client()
    try:
        with caplog.at_level(logging.INFO, logger="flask_wechat_qr"):
            resp = login_with_wechat(client, wechat_api)
    finally:
        sa.event.remove(engine, "before_cursor_execute", look)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert len(lookups) == (1 if who == "a new person" else 2)
    assert not [r for r in caplog.records if "trying again" in r.getMessage()]
    (identity,) = all_identities(app)
    assert logged_in_user_id(client) == identity.user_id


@pytest.mark.parametrize("pool", ["a pool of one", "the default pool of five"])
def test_no_connection_of_the_pool_is_held_while_wechat_answers_a_first_login(
    make_app: t.Any, wechat_api: t.Any, pool: str
) -> None:
    """Neither while WeChat answers for the profile nor while the new avatar downloads.
    The avatar store is asked (a read) before the download: before, the download ran with
    that read's connection out of the pool (a review, session 36). On a pool with
    connections to spare too, where keeping the transaction through both would save a
    first login its rollback and second run (issue 15, tried in session 39: 4% of its
    instructions on PostgreSQL): taken back after a review, since the kept transaction's
    reads held locks a migration's ``ALTER TABLE`` waited for
    (promises/test_database_settings.py), and under ``SERIALIZABLE`` the first logins of
    different people at the same moment rolled each other back."""
    from support import AVATAR, PROFILE_ANSWER, USERINFO_PATH, answer_with, wechat_body

    options = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.5} \
        if pool == "a pool of one" else {}
    app = make_app(WECHAT_QR_STORE_AVATARS=True, SQLALCHEMY_ENGINE_OPTIONS=options)
    with app.app_context():
        engine = app.db.engine  # type: ignore[attr-defined]
    out_of_the_pool: dict[str, int] = {}
    read_meanwhile: list[object] = []

    def profile(request: t.Any) -> tuple[int, dict[str, str], bytes]:
        out_of_the_pool["profile"] = engine.pool.checkedout()
        return wechat_body(PROFILE_ANSWER)

    def avatar(request: t.Any) -> tuple[int, dict[str, str], bytes]:
        out_of_the_pool["avatar"] = engine.pool.checkedout()
        with engine.connect() as connection:  # another page of the site, meanwhile
            read_meanwhile.append(connection.execute(sa.text("SELECT 1")).scalar())
        return 200, {"Content-Type": "image/png"}, b"\x89PNG\r\n\x1a\n" + b"\0" * 64

    wechat_api.mock.reset()
    wechat_api.token()
    answer_with(wechat_api, USERINFO_PATH, profile)
    wechat_api.mock.add_callback(responses.GET, AVATAR, callback=avatar)
    client = app.test_client()
    resp = finish_login(client, start_login(client))
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert out_of_the_pool == {"profile": 0, "avatar": 0}
    assert read_meanwhile == [1]
    (identity,) = all_identities(app)
    assert identity.avatar_url.startswith("/auth/avatars/")
    assert logged_in_user_id(client) == identity.user_id


# --- errors after the commit -------------------------------------------------------------


@pytest.mark.parametrize("signal_name", ["user_created", "identity_linked"])
def test_a_login_error_from_a_receiver_after_the_commit_is_its_page(
    make_app: t.Any, wechat_api: t.Any, signal_name: str
) -> None:
    """The login is committed, but a receiver refuses it: the page says so (never a quiet
    "logged in" that skipped login_succeeded), and login_failed is sent."""
    app = make_app()
    client = app.test_client()
    wechat_api.token()
    wechat_api.userinfo()
    receiver = raising(LoginRefused())
    with getattr(signals, signal_name).connected_to(receiver, sender=app), \
            recording(app, "login_succeeded", "login_failed") as events:
        resp = finish_login(client, start_login(client, next="/account"))
    assert resp.status_code == 403 and error_name(resp) == "LoginRefused"
    assert [name for name, _ in events] == ["login_failed"]
    # The error page's "try again" link keeps the login's next.
    assert "/auth/wechat/login?next=/account" in resp.get_data(as_text=True)


def test_a_login_error_from_a_receiver_of_a_link_is_its_page(
    make_app: t.Any, wechat_api: t.Any
) -> None:
    app = make_app()
    client = app.test_client()
    log_in(client, add_user(app, username="alice", password="pw-of-alice"))
    wechat_api.token()
    wechat_api.userinfo()
    receiver = raising(LoginCancelled())
    with signals.identity_linked.connected_to(receiver, sender=app):
        resp = client.get("/auth/wechat/link")
        state = resp.headers["Location"].split("state=")[1].split("&")[0].split("#")[0]
        resp = finish_login(client, state)
    assert resp.status_code == 200 and error_name(resp) == "LoginCancelled"


# --- the commit: the ending's row, the host's hooks and constraints -----------------------


#: A next URL with what SQL quoting must get right (the ending's row holds it).
AWKWARD_NEXT = "/search?q=it's+100%25+%22quoted%22+\u5f20\u4e09\U0001f43c&tag=a;COMMIT"


def test_a_repeated_callback_lands_where_the_first_did_whatever_its_next(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    """The ending's row keeps a next URL with quotes, a percent sign, CJK and an emoji as it
    was: WeChat's second redirect lands where the first did."""
    app = make_app()
    browser = app.test_client()
    state = start_login(browser, next=AWKWARD_NEXT)
    twin = browser_copy(app, browser)
    each_code_once(wechat_api)
    wechat_api.userinfo()
    first = browser.get("/auth/wechat/callback", query_string={"code": "C1", "state": state})
    second = twin.get("/auth/wechat/callback", query_string={"code": "C2", "state": state})
    assert first.status_code == second.status_code == 302
    assert first.headers["Location"] == second.headers["Location"]
    assert ending_of(app, state).next_url == AWKWARD_NEXT


def test_a_hosts_hook_before_the_commit_runs_before_anything_is_committed(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    """A host that checks (or writes, or refuses) in its session's ``before_commit``: at
    that moment nothing of the login is committed yet, on every database."""
    app = make_app()
    db, User = app.db, app.User  # type: ignore[attr-defined]
    seen: list[int] = []

    def check(_session: t.Any) -> None:
        with db.engine.connect() as conn:
            seen.append(conn.execute(sa.select(sa.func.count()).select_from(User.__table__))
                        .scalar_one())

    sa.event.listen(db.session, "before_commit", check)
    assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
    assert seen == [0] and len(all_users(app)) == 1


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
@pytest.mark.parametrize("checked_by", ["foreign key", "constraint trigger"])
def test_a_constraint_checked_at_the_commit_ends_as_not_saved(
    make_app: t.Any, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch, checked_by: str
) -> None:
    """A host's rule checked at the commit (``DEFERRABLE INITIALLY DEFERRED``: a foreign
    key, whose error names its table, or a constraint trigger, whose error names none)
    that a login's ``create_user`` breaks: the login ends as one the database refused,
    never as a repeat of another request's (the used state's row is written last, just
    before that commit)."""
    app = make_app()
    db, User = app.db, app.User  # type: ignore[attr-defined]
    users = User.__table__.name
    with app.app_context(), db.engine.begin() as conn:
        if checked_by == "foreign key":
            conn.execute(sa.text(
                f'CREATE TABLE audit (user_id INTEGER CONSTRAINT audit_user REFERENCES '
                f'"{users}" (id) DEFERRABLE INITIALLY DEFERRED)'))
        else:
            conn.execute(sa.text("CREATE TABLE audit (user_id INTEGER)"))
            conn.execute(sa.text(
                "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION 'quota exceeded' USING ERRCODE = 'check_violation'; END $$"))
            conn.execute(sa.text(
                "CREATE CONSTRAINT TRIGGER audit_quota AFTER INSERT ON audit DEFERRABLE "
                "INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_audit()"))
    real_create_user = AccountAdapter.create_user

    def create_user(self: t.Any, connection: t.Any, profile: t.Any) -> t.Any:
        db.session.execute(sa.text("INSERT INTO audit VALUES (-1)"))  # nobody's id
        return real_create_user(self, connection, profile)

    monkeypatch.setattr(AccountAdapter, "create_user", create_user)
    resp = login_with_wechat(app.test_client(), wechat_api)
    assert resp.status_code == 500 and error_name(resp) == "AccountNotSaved"
    assert all_users(app) == []
