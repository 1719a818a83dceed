"""Logins at the same moment: WeChat's double redirect and many first logins of one
identity. Real threads against one app and one database (SQLite file and PostgreSQL)."""

from __future__ import annotations

import json
import logging
import threading
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from support import (
    ACCESS_TOKEN,
    AVATAR,
    NICKNAME,
    OPENID,
    REFRESH_TOKEN,
    TOKEN_PATH,
    UNIONID,
    USERINFO_PATH,
    WeChatAPI,
    add_user,
    all_identities,
    all_users,
    api_paths,
    error_name,
    log_in,
    logged_in_user_id,
    recording,
    start_login,
)

TOKEN = {"access_token": ACCESS_TOKEN, "expires_in": 7200, "refresh_token": REFRESH_TOKEN,
         "openid": OPENID, "scope": "snsapi_login", "unionid": UNIONID}
PROFILE = {"openid": OPENID, "nickname": NICKNAME, "sex": 0, "headimgurl": AVATAR,
           "privilege": [], "unionid": UNIONID}


def _body(payload: dict[str, t.Any]) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "text/plain"}, json.dumps(payload, ensure_ascii=False).encode()


#: WeChat's answer to a code that was already exchanged.
CODE_USED = {"errcode": 40163, "errmsg": "code been used, rid: 1-2-3"}


def _answer(api: WeChatAPI, path: str, answer: t.Callable[[t.Any], t.Any]) -> None:
    """WeChat's API at ``path`` answers each request with ``answer(request)``."""
    api.mock.add_callback(responses.GET, api.base + path, callback=answer)


def _meeting(api: WeChatAPI, path: str, parties: int, answer: t.Callable[[t.Any], t.Any],
             timeout: float = 10) -> threading.Barrier:
    """WeChat's API at ``path`` holds each request until ``parties`` of them are there (a
    race forced, not hoped for), then answers ``answer(request)``. Check the barrier is
    not ``broken`` afterwards: else the requests did not really meet."""
    gate = threading.Barrier(parties, timeout=timeout)

    def meet(request: t.Any) -> t.Any:
        try:
            gate.wait()
        except threading.BrokenBarrierError:
            pass
        return answer(request)

    _answer(api, path, meet)
    return gate


def _callbacks_at_once(state: str, *clients_and_codes: tuple[t.Any, str]) -> list[t.Any]:
    """The callbacks of several browser connections with one ``state``, in flight together;
    their responses, in order."""
    with ThreadPoolExecutor(len(clients_and_codes)) as pool:
        answers = [pool.submit(client.get, "/auth/wechat/callback",
                               query_string={"code": code, "state": state})
                   for client, code in clients_and_codes]
        return [answer.result(timeout=30) for answer in answers]


def _each_code_once(api: WeChatAPI) -> list[str]:
    """The token endpoint as WeChat runs it: every code works once (for the same person),
    then 40163."""
    codes: list[str] = []
    lock = threading.Lock()

    def answer(request: t.Any) -> tuple[int, dict[str, str], bytes]:
        code = request.params["code"]
        with lock:
            used = code in codes
            codes.append(code)
        return _body(CODE_USED if used else TOKEN)

    _answer(api, TOKEN_PATH, answer)
    return codes


def _browser_copy(app: t.Any, client: t.Any) -> t.Any:
    """A second connection of the same browser: same cookies."""
    twin = app.test_client()
    twin.set_cookie("session", client.get_cookie("session").value)
    return twin


def _taken_rows(app: t.Any) -> list[t.Any]:
    """The rows that say a login state was used, and how its login ended."""
    import sqlalchemy as sa

    from flask_wechat_qr.login_state import TAKEN

    with app.app_context():
        table = app.extensions["wechat_qr"].models.LoginState.__table__
        return list(app.db.session.execute(
            sa.select(table).where(table.c.key.startswith(TAKEN))))


def test_wechat_double_redirect_ends_logged_in(app: t.Any, wechat_api: WeChatAPI) -> None:
    """The same code delivered twice within a second: the second exchange gets 40163, waits
    for the first request and ends the same way; one user, both redirects to next."""
    browser = app.test_client()
    state = start_login(browser, next="/welcome")
    twin = _browser_copy(app, browser)
    second_arrived = threading.Event()
    first_at_wechat = threading.Event()
    calls: list[str] = []

    def token(request: t.Any) -> tuple[int, dict[str, str], bytes]:
        calls.append(request.params["code"])
        if len(calls) == 1:
            first_at_wechat.set()
            second_arrived.wait(timeout=10)  # WeChat answers the first after the second came
            return _body(TOKEN)
        second_arrived.set()
        return _body(CODE_USED)

    _answer(wechat_api, TOKEN_PATH, token)
    _answer(wechat_api, USERINFO_PATH, lambda request: _body(PROFILE))
    query = {"code": "0816AbDOUBLE", "state": state}
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(browser.get, "/auth/wechat/callback", query_string=query)
        assert first_at_wechat.wait(timeout=10)  # the first is exchanging the code
        second = pool.submit(twin.get, "/auth/wechat/callback", query_string=query)
        responses_ = [first.result(timeout=30), second.result(timeout=30)]
    assert second_arrived.is_set()  # the second was answered 40163 while the first ran
    assert [r.status_code for r in responses_] == [302, 302]
    assert [r.headers["Location"] for r in responses_] == ["/welcome", "/welcome"]
    assert calls == ["0816AbDOUBLE", "0816AbDOUBLE"]
    assert api_paths(wechat_api).count(USERINFO_PATH) == 1
    user_id = str(all_users(app)[0].id)
    assert logged_in_user_id(browser) == user_id and logged_in_user_id(twin) == user_id
    assert len(all_users(app)) == 1 and len(all_identities(app)) == 1
    assert len(_taken_rows(app)) == 1


def test_second_redirect_with_another_code_ends_logged_in(
    app: t.Any, wechat_api: WeChatAPI
) -> None:
    """WeChat's other double redirect: a second code with the same state, just after the
    first request ended. It is answered from the first one's outcome, without WeChat."""
    browser = app.test_client()
    state = start_login(browser)
    twin = _browser_copy(app, browser)
    codes = _each_code_once(wechat_api)
    wechat_api.userinfo()
    first = browser.get("/auth/wechat/callback", query_string={"code": "C1", "state": state})
    second = twin.get("/auth/wechat/callback", query_string={"code": "C2", "state": state})
    assert (first.status_code, second.status_code) == (302, 302)
    assert codes == ["C1"]
    assert api_paths(wechat_api).count(USERINFO_PATH) == 1
    assert logged_in_user_id(twin) == str(all_users(app)[0].id)
    assert len(_taken_rows(app)) == 1


def test_two_codes_of_one_login_at_the_same_moment(
    app: t.Any, wechat_api: WeChatAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """Both redirects of a new person in flight together: both create the user, one wins,
    the other rolls back (identity race, then the used state) and ends as the winner
    did. One user, one ``user_created``, both browsers logged in as that user."""
    browser = app.test_client()
    state = start_login(browser, next="/welcome")
    twin = _browser_copy(app, browser)
    codes = _each_code_once(wechat_api)
    # Both have exchanged their code and found no identity.
    gate = _meeting(wechat_api, USERINFO_PATH, 2, lambda request: _body(PROFILE))
    with caplog.at_level(logging.INFO, logger="flask_wechat_qr"), \
            recording(app, "user_created", "login_succeeded") as events:
        responses_ = _callbacks_at_once(state, (browser, "C1"), (twin, "C2"))
    assert "created concurrently" in caplog.text  # both created the user; one rolled back
    assert [r.status_code for r in responses_] == [302, 302]
    assert [r.headers["Location"] for r in responses_] == ["/welcome", "/welcome"]
    assert sorted(codes) == ["C1", "C2"] and gate.n_waiting == 0 and not gate.broken
    users = all_users(app)
    assert len(users) == 1 and len(all_identities(app)) == 1
    # The login happened once.
    assert sorted(name for name, _kwargs in events) == ["login_succeeded", "user_created"]
    assert logged_in_user_id(browser) == logged_in_user_id(twin) == str(users[0].id)
    assert len(_taken_rows(app)) == 1


def test_a_failed_first_callback_is_not_repeated_as_success(
    app: t.Any, wechat_api: WeChatAPI
) -> None:
    """A failure uses the state too: a second redirect with a good code is refused at once,
    without WeChat, and logs nobody in."""
    browser = app.test_client()
    state = start_login(browser)
    twin = _browser_copy(app, browser)
    wechat_api.error(TOKEN_PATH, 40029, "invalid code")
    assert browser.get("/auth/wechat/callback",
                       query_string={"code": "bad", "state": state}).status_code == 400
    assert [json.loads(row.value)["error"] for row in _taken_rows(app)] == ["InvalidCode"]
    calls = len(wechat_api.mock.calls)
    wechat_api.token()
    wechat_api.userinfo()
    again = twin.get("/auth/wechat/callback", query_string={"code": "good", "state": state})
    assert again.status_code == 400 and error_name(again) == "StateError"
    assert len(wechat_api.mock.calls) == calls
    assert all_users(app) == [] and logged_in_user_id(twin) is None


def test_a_failed_first_callback_is_not_turned_into_success_by_a_second_code(
    app: t.Any, wechat_api: WeChatAPI
) -> None:
    """The state is used once whatever happened: after a cancelled first redirect, a
    second code for the same state does not log anyone in (nor reach WeChat); it ends as
    the first one did."""
    browser = app.test_client()
    state = start_login(browser)
    twin = _browser_copy(app, browser)
    codes = _each_code_once(wechat_api)
    wechat_api.userinfo()
    cancelled = browser.get("/auth/wechat/callback", query_string={"state": state})
    assert cancelled.status_code == 200 and error_name(cancelled) == "LoginCancelled"
    second = twin.get("/auth/wechat/callback", query_string={"code": "C2", "state": state})
    assert second.status_code == 200 and error_name(second) == "LoginCancelled"
    assert codes == [] and api_paths(wechat_api) == []
    assert all_users(app) == [] and logged_in_user_id(twin) is None


def test_second_redirect_failing_after_the_first_succeeded_ends_logged_in(
    app: t.Any, wechat_api: WeChatAPI
) -> None:
    """The browser shows the second redirect's page: if WeChat fails it (a second code)
    after the first request logged the person in, it ends as the first one did."""
    browser = app.test_client()
    state = start_login(browser, next="/welcome")
    twin = _browser_copy(app, browser)
    first_exchanged = threading.Event()
    second_exchanging = threading.Event()
    first_done: list[t.Any] = []

    def token(request: t.Any) -> tuple[int, dict[str, str], bytes]:
        if request.params["code"] == "C1":
            first_exchanged.set()
            return _body(TOKEN)
        second_exchanging.set()
        first_done[0].result(timeout=20)  # the first request has committed and answered
        return 500, {"Content-Type": "text/html"}, b"<html>502 Bad Gateway</html>"

    def profile(request: t.Any) -> tuple[int, dict[str, str], bytes]:
        assert second_exchanging.wait(timeout=20)  # the second is past its look for an outcome
        return _body(PROFILE)

    _answer(wechat_api, TOKEN_PATH, token)
    _answer(wechat_api, USERINFO_PATH, profile)
    with ThreadPoolExecutor(2) as pool:
        first_done.append(pool.submit(browser.get, "/auth/wechat/callback",
                                      query_string={"code": "C1", "state": state}))
        assert first_exchanged.wait(timeout=20)
        second = pool.submit(twin.get, "/auth/wechat/callback",
                             query_string={"code": "C2", "state": state}).result(timeout=30)
    assert first_done[0].result().status_code == 302
    assert second.status_code == 302 and second.headers["Location"] == "/welcome"
    assert logged_in_user_id(twin) == str(all_users(app)[0].id)
    assert api_paths(wechat_api).count(TOKEN_PATH) == 2  # C2 did fail
    assert [json.loads(row.value)["user_id"] for row in _taken_rows(app)] == [
        str(all_users(app)[0].id)]


def test_login_refused_is_told_once_per_login(make_app: t.Any, wechat_api: WeChatAPI) -> None:
    """Login only: both redirects of one login refused at the same moment, and a replay of
    the old cookie afterwards (answered without WeChat); ``login_refused`` is sent once."""
    app = make_app(WECHAT_QR_LOGIN_ONLY=True)
    browser = app.test_client()
    state = start_login(browser)
    twin = _browser_copy(app, browser)
    replay = _browser_copy(app, browser)
    gate = _meeting(wechat_api, TOKEN_PATH, 2, lambda request: _body(TOKEN))
    with recording(app, "login_refused") as events:
        answers = _callbacks_at_once(state, (browser, "C1"), (twin, "C2"))
        assert [answer.status_code for answer in answers] == [403, 403] and not gate.broken
        calls = len(wechat_api.mock.calls)
        again = replay.get("/auth/wechat/callback",
                           query_string={"code": "C3", "state": state})
    assert again.status_code == 403 and error_name(again) == "LoginRefused"  # as before
    assert len(wechat_api.mock.calls) == calls
    assert [kwargs["openid"] for _name, kwargs in events] == [OPENID]
    assert all_users(app) == []


def test_a_replayed_cookie_without_a_code_is_not_posted_as_a_cancel(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    """A connection with a callback URL: after a login succeeded, its old cookie replayed
    with a "cancelled" callback never tells the business front end the user cancelled."""
    app = make_app(WECHAT_QR_CALLBACK_URL="https://biz.example.com/wechat-done",
                   WECHAT_QR_ID_TOKEN_SECRET="a-shared-secret-of-32-bytes-or-more!")
    browser = app.test_client()
    state = start_login(browser, state="biz-1")
    replay = _browser_copy(app, browser)
    wechat_api.token()
    wechat_api.userinfo()
    assert "id_token" in browser.get("/auth/wechat/callback",
                                     query_string={"code": "C1", "state": state}).text
    calls = len(wechat_api.mock.calls)
    resp = replay.get("/auth/wechat/callback", query_string={"state": state})
    # Within seconds, from this browser: WeChat's double redirect, ended as the login did.
    assert "access_denied" not in resp.text and "id_token" in resp.text
    assert len(wechat_api.mock.calls) == calls


def _no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, any wait for another request's outcome fails the test."""
    from flask_wechat_qr import login_state

    def sleep(seconds: float) -> None:
        raise AssertionError("waited for an outcome")

    monkeypatch.setattr(login_state.time, "sleep", sleep)


def test_code_used_without_another_request_waits_then_says_so(
    make_app: t.Any, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40163 and no other request of this login finishing: after waiting
    ``WECHAT_QR_CODE_USED_WAIT`` for that request, the "already used" page. The
    state is then used and the code spent: a replay of the cookie, or the same code with a
    fresh login, is answered without waiting."""
    app = make_app(WECHAT_QR_CODE_USED_WAIT=0.3)
    browser = app.test_client()
    state = start_login(browser)
    replay = _browser_copy(app, browser)
    wechat_api.error(TOKEN_PATH, 40163, "code been used")
    started = time.monotonic()
    resp = browser.get("/auth/wechat/callback", query_string={"code": "C1", "state": state})
    assert time.monotonic() - started >= 0.3
    assert resp.status_code == 400 and error_name(resp) == "CodeUsed"
    assert [json.loads(row.value)["error"] for row in _taken_rows(app)] == ["CodeUsed"]
    _no_waiting(monkeypatch)
    calls = len(wechat_api.mock.calls)
    again = replay.get("/auth/wechat/callback", query_string={"code": "C1", "state": state})
    assert again.status_code == 400 and error_name(again) == "StateError"
    assert len(wechat_api.mock.calls) == calls
    other = app.test_client()
    fresh = other.get("/auth/wechat/callback",
                      query_string={"code": "C1", "state": start_login(other)})
    assert fresh.status_code == 400 and error_name(fresh) == "CodeUsed"
    assert len(_taken_rows(app)) == 2  # that login is used up too


def test_few_requests_of_a_process_wait_for_another_ones_outcome(
    make_app: t.Any, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several used codes at once: only MAX_WAITING_REQUESTS of an app in a process wait at a
    time; the others are answered at once, and record nothing (the request they would wait
    for may still finish)."""
    from flask_wechat_qr import login_state
    from flask_wechat_qr.login_state import MAX_WAITING_REQUESTS

    # Waits of 4 s: time for the turned-away to reach the queue on a busy machine.
    app = make_app(WECHAT_QR_CODE_USED_WAIT=4)
    count = MAX_WAITING_REQUESTS + 3
    browsers = [app.test_client() for _ in range(count)]
    states = [start_login(browser) for browser in browsers]
    # Everyone gets 40163 at the same moment.
    gate = _meeting(wechat_api, TOKEN_PATH, count, lambda request: _body(CODE_USED), 20)
    waiters: set[int] = set()
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        waiters.add(threading.get_ident())
        real_sleep(seconds)

    monkeypatch.setattr(login_state.time, "sleep", sleep)

    def finish(index: int) -> str | None:
        return error_name(browsers[index].get("/auth/wechat/callback", query_string={
            "code": f"USED{index}", "state": states[index]}))

    with ThreadPoolExecutor(count) as pool:
        names = list(pool.map(finish, range(count), timeout=60))
    assert names == ["CodeUsed"] * count and not gate.broken
    assert len(waiters) == MAX_WAITING_REQUESTS
    assert len(_taken_rows(app)) == MAX_WAITING_REQUESTS  # the turned-away recorded nothing


def test_fifty_simultaneous_first_logins_make_one_user(
    make_app: t.Any, wechat_api: WeChatAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """50 browsers finishing the first login of one new WeChat account at the same moment:
    one user, one identity, no 5xx (the unique constraint and a retry, not luck)."""
    # A connection for each of the 50 requests held at the gate below.
    app = make_app(SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 60, "max_overflow": 0})
    _answer(wechat_api, TOKEN_PATH, lambda request: _body(TOKEN))
    # Everyone has looked the identity up and found nothing.
    gate = _meeting(wechat_api, USERINFO_PATH, 50, lambda request: _body(PROFILE), 20)
    browsers = [app.test_client() for _ in range(50)]
    states = [start_login(browser) for browser in browsers]

    def finish(index: int) -> int:
        return browsers[index].get("/auth/wechat/callback", query_string={
            "code": f"code{index}", "state": states[index]}).status_code

    with caplog.at_level(logging.INFO, logger="flask_wechat_qr"), ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(finish, range(50), timeout=120))
    assert statuses == [302] * 50 and not gate.broken
    # The race really happened: others lost on the unique constraint and retried.
    assert "created concurrently" in caplog.text
    users, identities = all_users(app), all_identities(app)
    assert len(users) == 1 and len(identities) == 1
    assert {logged_in_user_id(browser) for browser in browsers} == {str(users[0].id)}


def test_repeat_window_starts_when_the_login_is_done(
    make_app: t.Any, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow profile request must not push WeChat's second redirect out of the window."""
    from flask_wechat_qr import flow

    monkeypatch.setattr(flow, "REPEAT_WINDOW", 1)
    app = make_app()
    browser = app.test_client()
    state = start_login(browser)
    twin = _browser_copy(app, browser)
    wechat_api.token()

    def slow_profile(request: t.Any) -> tuple[int, dict[str, str], bytes]:
        time.sleep(1.5)  # longer than the window
        return _body(PROFILE)

    _answer(wechat_api, USERINFO_PATH, slow_profile)
    assert browser.get("/auth/wechat/callback",
                       query_string={"code": "C1", "state": state}).status_code == 302
    second = twin.get("/auth/wechat/callback", query_string={"code": "C2", "state": state})
    assert second.status_code == 302
    assert logged_in_user_id(twin) == str(all_users(app)[0].id)


def test_double_redirect_to_the_bind_page_keeps_the_pending_binding(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    """Ask binding: the second redirect (with the cookie from before the first) still finds
    the pending binding the first one started."""
    app = make_app(WECHAT_QR_ASSOCIATION="ask_binding")
    browser = app.test_client()
    state = start_login(browser)
    twin = _browser_copy(app, browser)
    wechat_api.token()
    wechat_api.userinfo()
    first = browser.get("/auth/wechat/callback", query_string={"code": "C1", "state": state})
    second = twin.get("/auth/wechat/callback", query_string={"code": "C2", "state": state})
    assert first.headers["Location"] == second.headers["Location"] == "/auth/bind"
    assert twin.get("/auth/bind").status_code == 200
    with app.app_context():
        Pending = app.extensions["wechat_qr"].models.PendingBinding
        assert app.db.session.query(Pending).count() == 1  # the second's rolled back


def _two_codes_at_once(app: t.Any, wechat_api: WeChatAPI, browser: t.Any, state: str
                       ) -> list[t.Any]:
    """WeChat's double redirect with two codes, both in flight: the callbacks of ``browser``
    and of a copy of it meet at the token endpoint (both past their look for an outcome)
    and go on together."""
    twin = _browser_copy(app, browser)
    codes: list[str] = []

    def token(request: t.Any) -> tuple[int, dict[str, str], bytes]:
        codes.append(request.params["code"])
        return _body(TOKEN)

    gate = _meeting(wechat_api, TOKEN_PATH, 2, token)
    _answer(wechat_api, USERINFO_PATH, lambda request: _body(PROFILE))
    results = _callbacks_at_once(state, (browser, "C1"), (twin, "C2"))
    assert sorted(codes) == ["C1", "C2"] and not gate.broken  # both went to WeChat
    return [*results, twin]


def test_two_codes_of_one_link_at_the_same_moment(make_app: t.Any,
                                                   wechat_api: WeChatAPI) -> None:
    """Linking from the account page, WeChat redirecting twice: one identity, told once."""
    app = make_app()
    alice = add_user(app, username="alice", password="pw")
    browser = app.test_client()
    log_in(browser, alice)
    resp = browser.get("/auth/wechat/link", query_string={"next": "/account"})
    state = parse_qs(urlsplit(resp.headers["Location"]).query)["state"][0]
    with recording(app, "identity_linked") as events:
        first, second, _twin = _two_codes_at_once(app, wechat_api, browser, state)
    assert [first.status_code, second.status_code] == [302, 302]
    assert first.headers["Location"] == second.headers["Location"] == "/account"
    assert [(i.openid, i.user_id) for i in all_identities(app)] == [(OPENID, str(alice))]
    assert [kwargs["via"] for _name, kwargs in events] == ["link"]
    assert len(_taken_rows(app)) == 1


def test_two_codes_of_one_ask_binding_login_at_the_same_moment(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    """Ask binding, WeChat redirecting twice: one pending binding, which both reach."""
    app = make_app(WECHAT_QR_ASSOCIATION="ask_binding")
    browser = app.test_client()
    state = start_login(browser)
    first, second, twin = _two_codes_at_once(app, wechat_api, browser, state)
    assert first.headers["Location"] == second.headers["Location"] == "/auth/bind"
    assert browser.get("/auth/bind").status_code == 200
    assert twin.get("/auth/bind").status_code == 200
    with app.app_context():
        Pending = app.extensions["wechat_qr"].models.PendingBinding
        assert app.db.session.query(Pending).count() == 1
    assert all_users(app) == [] and len(_taken_rows(app)) == 1


@pytest.mark.parametrize("ending, error", [("refused", "account_not_linked"),
                                           ("cancelled", "access_denied")])
def test_a_repeated_callback_tells_the_callback_url_the_same_ending(
    make_app: t.Any, wechat_api: WeChatAPI, ending: str, error: str
) -> None:
    """The browser shows WeChat's second redirect: a login that ended refused or cancelled
    is posted to the business front end again, with its state (and told to the signal
    once), not turned into this site's "link no longer valid" page."""
    app = make_app(WECHAT_QR_CALLBACK_URL="https://biz.example.com/wechat-done",
                   WECHAT_QR_ID_TOKEN_SECRET="a-shared-secret-of-32-bytes-or-more!",
                   WECHAT_QR_LOGIN_ONLY=True)
    browser = app.test_client()
    state = start_login(browser, state="biz-7")
    twin = _browser_copy(app, browser)
    wechat_api.token()
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
    assert api_paths(wechat_api).count(TOKEN_PATH) == (ending == "refused")
