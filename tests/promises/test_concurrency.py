"""Logins at the same moment: WeChat's double redirect with both requests in flight, and
many first logins of one identity. Real threads against one app and one database (SQLite
file and PostgreSQL). The same endings one request after the other: test_flow."""

from __future__ import annotations

import logging
import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from support import (
    CODE_USED_ANSWER,
    OPENID,
    OPENID_B,
    PROFILE_ANSWER,
    TOKEN_ANSWER,
    TOKEN_PATH,
    USERINFO_PATH,
    WECHAT_PHONE,
    WeChatAPI,
    add_user,
    all_identities,
    all_users,
    answer,
    answer_with,
    api_paths,
    browser_copy,
    callback_app,
    csrf_token_of,
    double_redirect,
    each_code_once,
    ending_of,
    error_name,
    find_tags,
    finishing_page,
    form_post,
    host_app,
    link_identity,
    log_in,
    logged_in_user_id,
    max_waiting_requests,
    meeting,
    open_qr_page,
    pending_rows,
    poll,
    recording,
    start_login,
    two_connections,
    waits_run_out_once,
    wechat_body,
    with_csrf_token_route,
)

from flask_wechat_qr import AccountAdapter


def callbacks_at_once(state: str, *clients_and_codes: tuple[t.Any, str]) -> list[t.Any]:
    """The callbacks of several browser connections with one ``state``, in flight together;
    their responses, in order."""
    with ThreadPoolExecutor(len(clients_and_codes)) as pool:
        answers = [pool.submit(client.get, "/auth/wechat/callback",
                               query_string={"code": code, "state": state})
                   for client, code in clients_and_codes]
        return [answer.result(timeout=30) for answer in answers]


def test_wechat_double_redirect_ends_logged_in(make_app: t.Any, wechat_api: WeChatAPI) -> None:
    """The same code delivered twice within a second: the second exchange gets 40163, waits
    for the first request and ends the same way; one user, both redirects to next. (The wait
    is the default's scale, not the test apps' 0.2 s: a loaded machine took longer than that
    to make the user on MariaDB, and the second gave up, as it should after its wait.)"""
    app = make_app(WECHAT_QR_CODE_USED_WAIT=10)
    seen = double_redirect(app, wechat_api)
    assert [r.status_code for r in seen.answers] == [302, 302]
    assert [r.headers["Location"] for r in seen.answers] == ["/welcome", "/welcome"]
    assert seen.calls == ["0816AbDOUBLE", "0816AbDOUBLE"]
    assert api_paths(wechat_api).count(USERINFO_PATH) == 1
    user_id = str(all_users(app)[0].id)
    assert logged_in_user_id(seen.browser) == user_id
    assert logged_in_user_id(seen.twin) == user_id
    assert len(all_users(app)) == 1 and len(all_identities(app)) == 1
    assert ending_of(app, seen.state) is not None  # the login happened once


class HeldDoubleRedirect(t.NamedTuple):
    """WeChat's double redirect of a new person's login, its first request held at WeChat's
    profile until ``release`` is set, its second answered (the waiting page)."""

    first: t.Any  # the first request's answer, to come (a future)
    second: t.Any
    #: the second's browser connection, and one with the cookies from before its answer
    twin: t.Any
    stale: t.Any
    state: str
    release: threading.Event
    pool: ThreadPoolExecutor

    def first_answer(self) -> t.Any:
        """Let WeChat answer the first request, and its answer."""
        self.release.set()
        try:
            return self.first.result(timeout=30)
        finally:
            self.pool.shutdown()


def held_double_redirect(app: t.Any, api: WeChatAPI, *, base: str = "http://localhost",
                         profile: dict[str, t.Any] = PROFILE_ANSWER, browser: t.Any = None,
                         start: str = "/auth/wechat/login", **params: str
                         ) -> HeldDoubleRedirect:
    """The first request exchanges the code and waits at WeChat for the profile; the second
    (the same code) is answered 40163 and, its wait run out, gives up: the waiting page.
    ``browser``: the one the login (or link, ``start``) is started in; a new one if none."""
    browser = browser or app.test_client()
    resp = browser.get(start, query_string=params, base_url=base)
    assert resp.status_code == 302, resp.data
    state = parse_qs(urlsplit(resp.headers["Location"]).query)["state"][0]
    twin, stale = browser_copy(app, browser), browser_copy(app, browser)
    login_cookie = browser.get_cookie("__Host-wechat-qr-login")
    if login_cookie is not None:
        for copy in (twin, stale):
            copy.set_cookie("__Host-wechat-qr-login", login_cookie.value, secure=True)
    at_wechat, release = threading.Event(), threading.Event()
    codes: list[str] = []

    def token(request: t.Any) -> tuple[int, dict[str, str], bytes]:
        codes.append(request.params["code"])
        if len(codes) == 1:
            at_wechat.set()
            return wechat_body(TOKEN_ANSWER)
        return wechat_body(CODE_USED_ANSWER)

    def held_profile(request: t.Any) -> tuple[int, dict[str, str], bytes]:
        assert release.wait(timeout=30)  # slower than the second request's wait
        return wechat_body(profile)

    answer_with(api, TOKEN_PATH, token)
    answer_with(api, USERINFO_PATH, held_profile)
    query = {"code": "0816AbSLOW", "state": state}
    pool = ThreadPoolExecutor(1)
    first = pool.submit(browser.get, "/auth/wechat/callback", query_string=query, base_url=base)
    assert at_wechat.wait(timeout=10)
    second = twin.get("/auth/wechat/callback", query_string=query, base_url=base)
    return HeldDoubleRedirect(first, second, twin, stale, state, release, pool)


def reload_of(page: t.Any) -> str:
    """Where the page that waits for the other request of its login loads itself again."""
    assert page.status_code == 200 and finishing_page(page), page.get_data(as_text=True)
    delay, _, target = page.headers["Refresh"].partition("; url=")
    assert 1 <= int(delay) <= 5
    return target


def test_double_redirect_with_a_profile_slower_than_the_wait_ends_logged_in(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    """WeChat's double redirect of a new person, WeChat slower to send the profile than
    the second request waits (``WECHAT_QR_CODE_USED_WAIT``; a red team's 3-4.5 s against
    the default 2 s). The second used the state up on giving up, so the first was refused
    at its commit, and the browser, showing the second's page, said "already used": the
    login was lost. Now the second uses nothing and answers a page that loads the callback
    again; the first commits; the reload logs this browser in as the first request did."""
    app = make_app(WECHAT_QR_CODE_USED_WAIT=0.2)
    held = held_double_redirect(app, wechat_api, next="/welcome")
    target = reload_of(held.second)
    # The state and the reload's mark: not the code, a secret.
    assert target == f"/auth/wechat/callback?state={held.state}&finishing=1"
    assert "0816AbSLOW" not in held.second.get_data(as_text=True)
    assert ending_of(app, held.state) is None  # nothing used
    first = held.first_answer()
    assert first.status_code == 302 and first.headers["Location"] == "/welcome", first.data
    user_id = str(all_users(app)[0].id)
    assert len(all_users(app)) == 1 and ending_of(app, held.state).user_id == user_id
    calls = len(wechat_api.mock.calls)
    again = held.twin.get(target)  # the page's reload
    assert again.status_code == 302 and again.headers["Location"] == "/welcome"
    assert logged_in_user_id(held.twin) == user_id
    assert len(wechat_api.mock.calls) == calls  # WeChat is not asked again


def test_double_redirect_with_a_slow_profile_posts_the_first_requests_token(
    make_app: t.Any, wechat_api: WeChatAPI, pem: str
) -> None:
    """The same for a connection with a business callback URL: the waiting page is this
    site's (nothing is posted to the business for it), and its reload posts the first
    request's ID token again (one login, one token)."""
    app = callback_app(make_app, pem, WECHAT_QR_CODE_USED_WAIT=0.2)
    held = held_double_redirect(app, wechat_api, state="biz", nonce="nn")
    target = reload_of(held.second)
    assert not find_tags(held.second.get_data(as_text=True), "form")
    posted = form_post(held.first_answer())
    again = form_post(held.twin.get(target))
    assert again["fields"]["state"] == "biz"
    assert again["fields"]["id_token"] == posted["fields"]["id_token"]


def test_the_waiting_pages_reload_with_an_older_cookie_cancels_nothing(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    """The reload has no code, as WeChat's callback of a cancelled login. Sent with a
    cookie from before the waiting page (another tab's answer overwrote it, a permanent
    session refreshed), whose session still holds the state, it cancelled the login the
    first request was finishing: no account (a reviewer's, session 40). The reload takes
    no state: the first commits."""
    app = make_app(WECHAT_QR_CODE_USED_WAIT=0)
    held = held_double_redirect(app, wechat_api, next="/welcome")
    stale = held.stale.get(reload_of(held.second))
    assert stale.status_code != 500 and error_name(stale) != "LoginCancelled"
    assert ending_of(app, held.state) is None
    assert held.first_answer().status_code == 302
    assert len(all_users(app)) == 1
    assert held.twin.get(reload_of(held.second)).status_code == 302
    assert logged_in_user_id(held.twin) == str(all_users(app)[0].id)


def test_a_third_request_of_the_code_while_the_first_is_at_wechat_uses_nothing(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    """One more request with the same code (now known as spent) and the cookie from
    before the second's answer: it used the state up ("already used" at once), and the
    first was refused at its commit (a reviewer's, session 40). It waits as the second."""
    app = make_app(WECHAT_QR_CODE_USED_WAIT=0)
    held = held_double_redirect(app, wechat_api, next="/welcome")
    third = held.stale.get("/auth/wechat/callback",
                           query_string={"code": "0816AbSLOW", "state": held.state})
    assert reload_of(third) and ending_of(app, held.state) is None
    assert held.first_answer().status_code == 302
    assert len(all_users(app)) == 1
    assert held.stale.get(reload_of(third)).status_code == 302


def test_the_waiting_page_reloaded_late_still_logs_in(
    make_app: t.Any, wechat_api: WeChatAPI, clock: t.Any
) -> None:
    """A page whose reload came late (a phone that froze it: the screen locked, another
    app): its session says it is this browser's, so it logs in however long after the
    first request's end (``REPEAT_WINDOW``, 10 s, is for callbacks known only by their
    cookie from before the login)."""
    app = make_app(WECHAT_QR_CODE_USED_WAIT=0)
    held = held_double_redirect(app, wechat_api, next="/welcome")
    assert held.first_answer().status_code == 302
    clock.advance(60)
    again = held.twin.get(reload_of(held.second))
    assert again.status_code == 302 and again.headers["Location"] == "/welcome"
    assert logged_in_user_id(held.twin) == str(all_users(app)[0].id)


def test_the_waiting_page_after_the_first_request_failed_says_scan_again(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    """The first request failed at WeChat (its profile: -1, twice): the reload says
    "already used" (scan again), as the second did before when its wait saw that ending,
    not "no longer valid ... another browser"."""
    app = make_app(WECHAT_QR_CODE_USED_WAIT=0)
    held = held_double_redirect(app, wechat_api,
                                profile={"errcode": -1, "errmsg": "system error"})
    assert held.first_answer().status_code == 502
    again = held.twin.get(reload_of(held.second))
    assert (again.status_code, error_name(again)) == (400, "CodeUsed")
    assert all_users(app) == []


def test_the_waiting_page_from_the_history_logs_nobody_else_in(
    make_app: t.Any, wechat_api: WeChatAPI, clock: t.Any
) -> None:
    """A shared browser: the waiting page was left before it reloaded (its login
    committed); minutes later someone else logs in with the site's own form, or that
    person logs out, and the page is opened again from the history. It logs nobody in
    (a reviewer's, session 40: it swapped the logged-in person for the first)."""
    app = host_app(make_app, WECHAT_QR_CODE_USED_WAIT=0)
    carol = add_user(app, username="carol", password="pw")
    held = held_double_redirect(app, wechat_api, next="/welcome")
    target = reload_of(held.second)
    assert held.first_answer().status_code == 302
    clock.advance(300)
    log_in(held.twin, carol)
    assert held.twin.get(target).status_code != 500
    assert logged_in_user_id(held.twin) == str(carol)
    # Logged out (the site's own logout): the page's mark went with the person.
    assert held.twin.get("/logout").status_code == 200
    assert held.twin.get(target).status_code == 400
    assert logged_in_user_id(held.twin) is None


def test_a_links_waiting_page_never_logs_in(make_app: t.Any, wechat_api: WeChatAPI) -> None:
    """A link is no way in: its waiting page, reloaded after the person logged out (the
    link committed), logs nobody in (a reviewer's, session 40)."""
    app = make_app(WECHAT_QR_CODE_USED_WAIT=0)
    alice = add_user(app, username="alice", password="pw")
    browser = app.test_client()
    log_in(browser, alice)
    held = held_double_redirect(app, wechat_api, browser=browser, start="/auth/wechat/link",
                                next="/account")
    target = reload_of(held.second)
    with held.twin.session_transaction() as sess:  # alice's session, logged out meanwhile
        sess.pop("_user_id", None)
    assert held.first_answer().status_code == 302
    assert [identity.user_id for identity in all_identities(app)] == [str(alice)]
    assert held.twin.get(target).status_code != 500
    assert logged_in_user_id(held.twin) is None


def test_a_late_reload_with_a_business_callback_is_no_login_on_this_site(
    make_app: t.Any, wechat_api: WeChatAPI, pem: str, clock: t.Any
) -> None:
    """With a business callback URL the first request's ID token expires (300 s): a reload
    later than the usual window logs nobody in here either, rather than logging the
    person in on this site and then showing an error (a reviewer's, session 40)."""
    app = callback_app(make_app, pem, WECHAT_QR_CODE_USED_WAIT=0)
    held = held_double_redirect(app, wechat_api, state="biz", nonce="nn")
    target = reload_of(held.second)
    form_post(held.first_answer())
    clock.advance(400)
    resp = held.twin.get(target)
    assert resp.status_code == 400 and logged_in_user_id(held.twin) is None


def test_a_forged_reload_takes_nothing(make_app: t.Any, wechat_api: WeChatAPI) -> None:
    """``finishing=1`` sent with this browser's own state before WeChat's callback takes no
    state and cancels nothing: the callback then logs in. Sent from another browser with
    a waiting page's state, it logs nobody in."""
    app = make_app(WECHAT_QR_CODE_USED_WAIT=0)
    browser = app.test_client()
    state = start_login(browser)
    forged = browser.get("/auth/wechat/callback", query_string={"state": state, "finishing": "1"})
    assert (forged.status_code, error_name(forged)) == (400, "StateError")
    assert ending_of(app, state) is None
    wechat_api.token(openid=OPENID_B)  # someone else than the double redirect's person
    wechat_api.userinfo(openid=OPENID_B)
    done = browser.get("/auth/wechat/callback", query_string={"state": state, "code": "c1"})
    assert done.status_code == 302 and logged_in_user_id(browser) is not None
    wechat_api.mock.reset()
    held = held_double_redirect(app, wechat_api, next="/welcome")
    target = reload_of(held.second)
    assert held.first_answer().status_code == 302
    other = app.test_client()
    start_login(other)
    assert other.get(target).status_code == 400 and logged_in_user_id(other) is None


@pytest.mark.parametrize("base", ["http://localhost", "https://localhost"])
def test_the_waiting_page_with_server_side_sessions(
    make_app: t.Any, wechat_api: WeChatAPI, base: str
) -> None:
    """Flask-Session: the first request's login renews the session id and drops the old
    session, with the waiting page's mark. Over https the browser's login cookie still
    says the login was this browser's (the reload logs in); over http nothing does, and
    the page says the login is no longer valid (the person is logged in by scanning
    again, as a returning one)."""
    from promises.test_cookie_tossing import over_https
    from promises.test_server_side_sessions import with_flask_session

    app = with_flask_session(make_app(WECHAT_QR_CODE_USED_WAIT=0))
    if base.startswith("https"):
        over_https(app)
    held = held_double_redirect(app, wechat_api, base=base, next="/welcome")
    assert held.first_answer().status_code == 302
    again = held.twin.get(reload_of(held.second), base_url=base)
    if base.startswith("https"):
        assert again.status_code == 302 and logged_in_user_id(held.twin) is not None
    else:
        assert (again.status_code, error_name(again)) == (400, "StateError")
    assert len(all_users(app)) == 1


def test_odd_reloads_of_the_waiting_page_are_no_500(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    app = make_app(WECHAT_QR_CODE_USED_WAIT=0, **two_connections())
    held = held_double_redirect(app, wechat_api)
    state, callback = held.state, "/auth/wechat/callback"
    for path in (f"/auth/wechat-b/callback?state={state}&finishing=1",
                 f"{callback}?finishing=1", f"{callback}?state=&finishing=1",
                 f"{callback}?state={state}x&finishing=1", f"{callback}?state={state}&code=",
                 f"{callback}?state={state}%0d%0aX:1&finishing=1",
                 f"/auth/nope/callback?state={state}&finishing=1"):
        resp = held.twin.get(path)
        assert resp.status_code in (200, 400, 404) and "X:" not in str(resp.headers), path
    assert held.first_answer().status_code == 302


def test_two_codes_of_one_login_at_the_same_moment(
    app: t.Any, wechat_api: WeChatAPI, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both redirects of a new person in flight together: both create the user, one wins,
    the other rolls back (identity race, then the used state) and ends as the winner
    did. One user, one ``user_created``, both browsers logged in as that user."""
    browser = app.test_client()
    state = start_login(browser, next="/welcome")
    twin = browser_copy(app, browser)
    codes = each_code_once(wechat_api)
    # Both have exchanged their code and asked for the profile...
    gate = meeting(wechat_api, USERINFO_PATH, 2, lambda request: wechat_body(PROFILE_ANSWER))
    # ...and, in the login's transaction (the profile is asked before it), found no
    # identity: each first create_user meets the other's there.
    meeting_at_create_user(monkeypatch, 2)
    with caplog.at_level(logging.INFO, logger="flask_wechat_qr"), \
            recording(app, "user_created", "login_succeeded") as events:
        responses_ = callbacks_at_once(state, (browser, "C1"), (twin, "C2"))
    assert "another request may have made the same identity" in caplog.text  # one rolled back
    assert [r.status_code for r in responses_] == [302, 302]
    assert [r.headers["Location"] for r in responses_] == ["/welcome", "/welcome"]
    assert sorted(codes) == ["C1", "C2"] and gate.n_waiting == 0 and not gate.broken
    users = all_users(app)
    assert len(users) == 1 and len(all_identities(app)) == 1
    # The login happened once.
    assert sorted(name for name, _kwargs in events) == ["login_succeeded", "user_created"]
    assert logged_in_user_id(browser) == logged_in_user_id(twin) == str(users[0].id)
    assert ending_of(app, state) is not None  # the login happened once


def test_second_redirect_failing_after_the_first_succeeded_ends_logged_in(
    app: t.Any, wechat_api: WeChatAPI
) -> None:
    """The browser shows the second redirect's page: if WeChat fails it (a second code)
    after the first request logged the person in, it ends as the first one did."""
    browser = app.test_client()
    state = start_login(browser, next="/welcome")
    twin = browser_copy(app, browser)
    first_exchanged = threading.Event()
    second_exchanging = threading.Event()
    first_done: list[t.Any] = []

    def token(request: t.Any) -> tuple[int, dict[str, str], bytes]:
        if request.params["code"] == "C1":
            first_exchanged.set()
            return wechat_body(TOKEN_ANSWER)
        second_exchanging.set()
        first_done[0].result(timeout=20)  # the first request has committed and answered
        return 500, {"Content-Type": "text/html"}, b"<html>502 Bad Gateway</html>"

    def profile(request: t.Any) -> tuple[int, dict[str, str], bytes]:
        assert second_exchanging.wait(timeout=20)  # the second is past its look for an outcome
        return wechat_body(PROFILE_ANSWER)

    answer_with(wechat_api, TOKEN_PATH, token)
    answer_with(wechat_api, USERINFO_PATH, profile)
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
    assert ending_of(app, state).user_id == str(all_users(app)[0].id)


def test_login_refused_is_told_once_per_login(make_app: t.Any, wechat_api: WeChatAPI) -> None:
    """Login only: both redirects of one login refused at the same moment, and a replay of
    the old cookie afterwards (its code exchanged, nothing else); ``login_refused`` is sent
    once."""
    app = make_app(WECHAT_QR_LOGIN_ONLY=True)
    browser = app.test_client()
    state = start_login(browser)
    twin = browser_copy(app, browser)
    replay = browser_copy(app, browser)
    gate = meeting(wechat_api, TOKEN_PATH, 2, lambda request: wechat_body(TOKEN_ANSWER))
    with recording(app, "login_refused") as events:
        answers = callbacks_at_once(state, (browser, "C1"), (twin, "C2"))
        assert [answer.status_code for answer in answers] == [403, 403] and not gate.broken
        wechat_api.mock.reset()  # the replay's exchange is answered at once, not held
        wechat_api.token()
        again = replay.get("/auth/wechat/callback",
                           query_string={"code": "C3", "state": state})
    assert again.status_code == 403 and error_name(again) == "LoginRefused"  # as before
    assert api_paths(wechat_api) == [TOKEN_PATH]
    assert [kwargs["openid"] for _name, kwargs in events] == [OPENID]
    assert all_users(app) == []


def test_few_requests_of_a_process_wait_for_another_ones_outcome(
    make_app: t.Any, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several used codes at once: only a few requests of an app in a process wait at a
    time; the others are answered at once. Each ends on the page that loads its callback
    again, and none records anything (the request each would wait for may still
    finish)."""
    waiting_places = max_waiting_requests()

    # Waits of 4 s: time for the turned-away to reach the queue on a busy machine. Nothing
    # will end what the waiters wait for: once the turned-away are answered, their waits run
    # out at once (the waiters cannot be answered before then).
    app = make_app(WECHAT_QR_CODE_USED_WAIT=4)
    count = waiting_places + 3
    browsers = [app.test_client() for _ in range(count)]
    states = [start_login(browser) for browser in browsers]
    # Everyone gets 40163 at the same moment.
    gate = meeting(wechat_api, TOKEN_PATH, count, lambda request: wechat_body(CODE_USED_ANSWER), 20)
    answered: list[int] = []
    waiters = waits_run_out_once(monkeypatch, lambda: len(answered) >= count - waiting_places)

    def finish(index: int) -> str | None:
        try:
            resp = browsers[index].get("/auth/wechat/callback", query_string={
                "code": f"USED{index}", "state": states[index]})
            return "finishing" if finishing_page(resp) else error_name(resp)
        finally:
            answered.append(index)

    with ThreadPoolExecutor(count) as pool:
        names = list(pool.map(finish, range(count), timeout=60))
    assert names == ["finishing"] * count and not gate.broken
    assert len(waiters) == waiting_places
    assert sum(ending_of(app, state) is not None for state in states) == 0


def meeting_at_create_user(monkeypatch: pytest.MonkeyPatch, parties: int) -> threading.Barrier:
    """``AccountAdapter.create_user``'s first ``parties`` calls meet there (each has looked
    the identity up in its login's transaction and found none); a retry's goes on."""
    arrived = threading.Barrier(parties, timeout=20)
    first_calls = iter(range(parties))
    real_create_user = AccountAdapter.create_user

    def create_user_together(self: t.Any, connection: t.Any, profile: t.Any) -> t.Any:
        if next(first_calls, None) is not None:
            arrived.wait()
        return real_create_user(self, connection, profile)

    monkeypatch.setattr(AccountAdapter, "create_user", create_user_together)
    return arrived


def test_fifty_simultaneous_first_logins_make_one_user(
    make_app: t.Any, wechat_api: WeChatAPI, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 browsers finishing the first login of one new WeChat account at the same moment:
    one user, one identity, no 5xx (the unique constraint and a retry, not luck)."""
    # A connection for each of the 50 requests held at the meeting below.
    app = make_app(SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 60, "max_overflow": 0})
    answer_with(wechat_api, TOKEN_PATH, lambda request: wechat_body(TOKEN_ANSWER))
    answer_with(wechat_api, USERINFO_PATH, lambda request: wechat_body(PROFILE_ANSWER))
    # Everyone has looked the identity up in the login's transaction and found nothing
    # (WeChat's profile is asked before that transaction, with no connection held): each
    # first call of create_user meets the others there; a retry's goes on.
    arrived = meeting_at_create_user(monkeypatch, 50)
    browsers = [app.test_client() for _ in range(50)]
    states = [start_login(browser) for browser in browsers]

    def finish(index: int) -> int:
        return browsers[index].get("/auth/wechat/callback", query_string={
            "code": f"code{index}", "state": states[index]}).status_code

    with caplog.at_level(logging.INFO, logger="flask_wechat_qr"), ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(finish, range(50), timeout=120))
    assert statuses == [302] * 50 and not arrived.broken
    # The race really happened: others lost on the unique constraint and retried.
    assert "another request may have made the same identity" in caplog.text
    users, identities = all_users(app), all_identities(app)
    assert len(users) == 1 and len(identities) == 1
    assert {logged_in_user_id(browser) for browser in browsers} == {str(users[0].id)}


def two_codes_at_once(app: t.Any, wechat_api: WeChatAPI, browser: t.Any, state: str
                       ) -> list[t.Any]:
    """WeChat's double redirect with two codes, both in flight: the callbacks of ``browser``
    and of a copy of it meet at the token endpoint (both past their look for an outcome)
    and go on together."""
    twin = browser_copy(app, browser)
    codes: list[str] = []

    def token(request: t.Any) -> tuple[int, dict[str, str], bytes]:
        codes.append(request.params["code"])
        return wechat_body(TOKEN_ANSWER)

    gate = meeting(wechat_api, TOKEN_PATH, 2, token)
    answer_with(wechat_api, USERINFO_PATH, lambda request: wechat_body(PROFILE_ANSWER))
    results = callbacks_at_once(state, (browser, "C1"), (twin, "C2"))
    assert sorted(codes) == ["C1", "C2"] and not gate.broken  # both went to WeChat
    return [*results, twin]


def test_first_logins_through_both_apps_at_once_make_one_account(
        make_app: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """One person's first QR login and first login inside WeChat (the Official Account) at
    the same moment: each looked for the other app's identity, found none, and made an
    account (a helper's hunt: five times in five on PostgreSQL; no unique key covers a
    person across apps). Now the second waits for the first's claim on the person, is
    refused at its commit, runs again and joins the first's account."""
    from flask_wechat_qr.association import AssociationPolicy

    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None)
    arrived = threading.Barrier(2, timeout=20)
    first_looks = iter(range(2))
    real_same_person = AssociationPolicy._same_person

    def looked_at_once(self: t.Any, *args: t.Any) -> t.Any:
        found = real_same_person(self, *args)
        if next(first_looks, None) is not None:
            arrived.wait()  # both found nobody before either made an account
        return found

    monkeypatch.setattr(AssociationPolicy, "_same_person", looked_at_once)
    qr_client = app.test_client()
    uuid, _state = open_qr_page(qr_client)
    answer(app.test_client(), uuid, action="allow", person="zhangsan")
    qr_callback = poll(qr_client, uuid)["redirect"].removeprefix("http://localhost")
    wechat_client = app.test_client()
    wechat_client.environ_base["HTTP_USER_AGENT"] = WECHAT_PHONE
    location = wechat_client.get("/auth/wechat/login").headers["Location"]
    consent = wechat_client.post(location.removeprefix("http://localhost").split("#")[0],
                                 data={"action": "allow", "person": "zhangsan"})
    wechat_callback = consent.headers["Location"].removeprefix("http://localhost")
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda call: call[0].get(call[1]).status_code,
                             [(qr_client, qr_callback), (wechat_client, wechat_callback)],
                             timeout=60))
    assert 500 not in done and not arrived.broken
    [user] = all_users(app)
    assert logged_in_user_id(qr_client) == logged_in_user_id(wechat_client) == str(user.id)
    assert sorted(i.app for i in all_identities(app)) == ["official_account", "website"]


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
        first, second, _twin = two_codes_at_once(app, wechat_api, browser, state)
    assert [first.status_code, second.status_code] == [302, 302]
    assert first.headers["Location"] == second.headers["Location"] == "/account"
    assert [(i.openid, i.user_id) for i in all_identities(app)] == [(OPENID, str(alice))]
    assert [kwargs["via"] for _name, kwargs in events] == ["link"]
    assert ending_of(app, state) is not None  # the login happened once


def test_two_codes_of_one_ask_binding_login_at_the_same_moment(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    """Ask binding, WeChat redirecting twice: one pending binding, which both reach."""
    app = make_app(WECHAT_QR_ASSOCIATION="ask_binding")
    browser = app.test_client()
    state = start_login(browser)
    first, second, twin = two_codes_at_once(app, wechat_api, browser, state)
    assert first.headers["Location"] == second.headers["Location"] == "/auth/bind"
    assert browser.get("/auth/bind").status_code == 200
    assert twin.get("/auth/bind").status_code == 200
    assert len(pending_rows(app)) == 1
    assert all_users(app) == [] and ending_of(app, state) is not None


# --- two unlinks at once -----------------------------------------------------------------


def test_two_unlinks_at_once_leave_one_way_in(make_app: t.Any) -> None:
    app = with_csrf_token_route(make_app(**two_connections()))
    user_id = add_user(app)  # no password: WeChat is the only way in
    link_identity(app, user_id, openid=OPENID, connection="wechat")
    link_identity(app, user_id, openid=OPENID_B, connection="wechat-b")
    tabs = [app.test_client() for _ in range(2)]
    tokens = []
    for tab in tabs:
        log_in(tab, user_id)
        tokens.append(csrf_token_of(tab))

    # Both unlinks are made to reach their DELETE together, as two requests would in the
    # worst order: each has already looked at the user's identities by then. A request that
    # cannot get there (it waits for the other) is let go after a moment.
    deletes = threading.Barrier(2)

    def meet_at_delete(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM WECHAT_QR_IDENTITY"):
            try:
                deletes.wait(timeout=1.5)
            except threading.BrokenBarrierError:
                pass

    with app.app_context():
        engine = app.db.engine  # type: ignore[attr-defined]
    sa.event.listen(engine, "before_cursor_execute", meet_at_delete)
    try:
        with ThreadPoolExecutor(2) as pool:
            statuses = list(pool.map(
                lambda i: tabs[i].post(f"/auth/{('wechat', 'wechat-b')[i]}/unlink",
                                       data={"csrf_token": tokens[i]}).status_code,
                range(2), timeout=60))
    finally:
        sa.event.remove(engine, "before_cursor_execute", meet_at_delete)
    assert len(all_identities(app)) == 1  # never zero
    assert sorted(statuses) == [302, 409]  # one unlinked, one told it is the last way in
