"""Login states (login_state.py): the session half (LoginStates) and the table half
(LoginStateStore): parked data, single use of a state, and how its login ended; then,
through the routes, a state that belongs to one browser, once, for a while."""

from __future__ import annotations

import json
import re
import threading
import time
import typing as t

import flask
import pytest
import sqlalchemy as sa
from flask import Flask
from support import (
    CODE,
    CODE_LIFETIME,
    Clock,
    all_identities,
    all_users,
    api_paths,
    finish_login,
    forbid_waiting,
    logged_in_user_id,
    login_state_store,
    login_states,
    max_waiting_requests,
    retry_links,
    start_login,
    take_waiting_places,
)

from flask_wechat_qr.errors import StateError, StateUsed
from flask_wechat_qr.login_state import (
    Ending,
    LoginData,
    LoginStateStore,
    TooManyWaiting,
    new_state,
)


@pytest.fixture
def store(app: t.Any) -> t.Iterator[LoginStateStore]:
    with app.app_context():
        yield login_state_store(app)


def _keys(store: LoginStateStore) -> list[str]:
    with store.db.engine.connect() as conn:
        return sorted(conn.execute(sa.select(store.table.c.key)).scalars())


def _rows_for(store: LoginStateStore) -> list[str]:
    """The keys the table holds a row for, by the name a test gave them (a used state's row
    has a prefix of the store's own)."""
    names = ("old", "young", "k")
    return [next(name for name in names if key.endswith(name)) for key in _keys(store)]


def _in(seconds: float) -> float:
    return time.time() + seconds


# --- using a state: the taken row ------------------------------------------------------


def _use(store: LoginStateStore, key: str, outcome: str = '{"user_id": "1"}',
         expires_at: float | None = None) -> bool:
    """Use ``key`` in a transaction of its own: ``True`` the first time only."""
    try:
        with store.db.engine.begin() as conn:
            store.use(key, outcome, _in(600) if expires_at is None else expires_at, conn)
    except StateUsed:
        return False
    return True


def test_a_state_is_used_once(store: LoginStateStore) -> None:
    assert _use(store, "k", '{"user_id": "1"}') is True
    assert _use(store, "k", '{"user_id": "2"}') is False
    assert len(_keys(store)) == 1  # one row, the first use's
    assert store.ending("k") == '{"user_id": "1"}'  # the first one's outcome stays


def test_the_taken_row_outlives_the_state(store: LoginStateStore,
                                          clock: Clock) -> None:
    """A replayed cookie still naming the state finds it used until the row expires."""
    assert _use(store, "k", expires_at=_in(600))
    clock.advance(599)
    assert _use(store, "other")  # a later login (purges expired rows now and then)
    assert _use(store, "k") is False


def test_keys_are_independent(store: LoginStateStore) -> None:
    assert _use(store, "a")
    assert _use(store, "b")
    assert not _use(store, "a")


def test_concurrent_uses_of_one_state_let_one_through(app: t.Any,
                                                      store: LoginStateStore) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def use(index: int) -> None:
        with app.app_context():
            barrier.wait()
            results.append(_use(store, "k", f'{{"user_id": "{index}"}}'))

    threads = [threading.Thread(target=use, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [False] * 7 + [True]


def test_use_within_the_callers_transaction(app: t.Any, store: LoginStateStore) -> None:
    """The use of a state is the login's own commit, and undone by its rollback."""
    session = app.db.session
    store.use("k", '{"user_id": "1"}', _in(600), within=session)
    session.rollback()
    assert store.ending("k") is None
    store.use("k", '{"user_id": "2"}', _in(600), within=session)
    session.commit()
    assert store.ending("k") == '{"user_id": "2"}'
    with pytest.raises(StateUsed):
        store.use("k", '{"user_id": "3"}', _in(600), within=session)
    session.rollback()  # as the login does: nothing of the loser is kept
    assert store.ending("k") == '{"user_id": "2"}'


def test_a_failure_is_recorded_unless_another_outcome_came_first(
    store: LoginStateStore,
) -> None:
    assert store.record_failure("k", '{"error": true}', _in(600)) is True
    assert store.ending("k") == '{"error": true}'
    assert _use(store, "k") is False  # a failed login's state is used too
    assert _use(store, "s")
    assert store.record_failure("s", '{"error": true}', _in(600)) is False
    assert store.ending("s") == '{"user_id": "1"}'  # the first outcome stays


# --- parked data (too big for the cookie) -----------------------------------------------------


def test_parked_data_is_there_until_it_expires(store: LoginStateStore,
                                               clock: Clock) -> None:
    value = '{"next": "/账户?tab=微信🐼' + "x" * 500 + '"}'
    store.park("k", value, _in(60))
    assert _keys(store) == ["k"]
    assert store.parked("k") == value
    clock.advance(59)
    assert store.parked("k") == value  # reading does not use it: the taken row does
    clock.advance(61)
    assert store.parked("k") is None


def test_unknown_parked_state(store: LoginStateStore) -> None:
    store.park("k", "v", _in(600))
    assert store.parked("other") is None
    assert _keys(store) == ["k"]


def test_delete_forgets_a_parked_state(store: LoginStateStore) -> None:
    store.park("a", "1", _in(600))
    store.park("b", "2", _in(600))
    store.delete("a")
    store.delete("never-there")
    assert _keys(store) == ["b"]
    assert store.parked("a") is None


def test_expired_rows_are_purged_now_and_then(store: LoginStateStore,
                                              clock: Clock) -> None:
    store.park("old", "1", _in(60))
    store.park("young", "2", _in(600))
    clock.advance(120)  # past the purge interval too
    store.park("new", "3", _in(720))
    assert _keys(store) == ["new", "young"]
    # ... but not at every write: the next purge is a minute away.
    store.park("short", "4", _in(1))
    clock.advance(5)  # 5 s more: "short" has expired
    store.park("newer", "5", _in(600))
    assert "short" in _keys(store)


def test_the_store_purges_now_and_then(app: Flask, store: LoginStateStore,
                                      clock: Clock) -> None:
    """The store's purge (in a transaction of its own, never in the login's, which may roll
    back), at most once a minute: starting a login writes nothing, nor does taking its
    state (callbacks purge after it: tests/test_purge.py)."""
    wx = login_states(app)
    with app.test_request_context("/auth/wechat/login"):
        assert _use(store, "old", expires_at=_in(60))
        state = wx.begin(LoginData())
        assert _rows_for(store) == ["old"]  # starting a login wrote nothing
        clock.advance(120)
        wx.take(state)
        assert _rows_for(store) == ["old"]  # nor did taking its state
        store.purge_now_and_then()
        assert _keys(store) == []
        assert _use(store, "young", expires_at=_in(5))
        clock.advance(30)  # 30 s on: "young" has expired, but ...
        store.purge_now_and_then()  # ... it is not a minute since the last purge
        assert _rows_for(store) == ["young"]


# --- outcomes ---------------------------------------------------------------------------


def test_outcome_of_a_used_state(store: LoginStateStore,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert store.ending("never-used") is None
    started = time.monotonic()
    assert store.ending("never-used", wait=0.2) is None  # waits for it, then gives up
    assert time.monotonic() - started >= 0.2
    _use(store, "k", '{"user_id": "7"}')
    forbid_waiting(monkeypatch)
    assert store.ending("k", wait=5) == '{"user_id": "7"}'  # there: no waiting


def test_outcome_waits_for_a_request_still_running(app: t.Any,
                                                   store: LoginStateStore) -> None:
    """WeChat's second redirect with the same code waits for the first request's commit."""
    def finish_later() -> None:
        time.sleep(0.3)
        with app.app_context():
            _use(store, "k", '{"user_id": "7"}')

    thread = threading.Thread(target=finish_later)
    thread.start()
    try:
        assert store.ending("k", wait=10) == '{"user_id": "7"}'
    finally:
        thread.join(timeout=10)


def test_only_a_few_requests_wait_at_a_time(store: LoginStateStore,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Waiting ties up a worker thread: past a few at once, TooManyWaiting at once."""
    assert take_waiting_places(store, max_waiting_requests())  # as many requests wait
    forbid_waiting(monkeypatch)
    with pytest.raises(TooManyWaiting):
        store.ending("k", wait=5)
    assert store.ending("k") is None  # not waiting is always possible
    _use(store, "done", '{"user_id": "1"}')
    assert store.ending("done", wait=5) == '{"user_id": "1"}'  # there: no wait needed


def test_a_failed_look_releases_its_place_in_the_queue(store: LoginStateStore) -> None:
    looks = []

    def look(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        """The database goes away after a request's first look at the state table."""
        if statement.lstrip().upper().startswith("SELECT") and \
                "wechat_qr_login_state" in statement:
            looks.append(statement)
            if len(looks) > 1:
                raise RuntimeError("database gone")

    sa.event.listen(store.db.engine, "before_cursor_execute", look)
    try:
        for _ in range(max_waiting_requests() + 1):
            looks.clear()
            with pytest.raises(RuntimeError):
                store.ending("k", wait=5)
    finally:
        sa.event.remove(store.db.engine, "before_cursor_execute", look)
    assert take_waiting_places(store, max_waiting_requests())  # every place came back


def test_spent_codes(store: LoginStateStore, clock: Clock) -> None:
    assert not store.is_spent_code("h")
    store.remember_spent_code("h")
    store.remember_spent_code("h")  # a second request saying so too: no error
    assert store.is_spent_code("h") and not store.is_spent_code("other")
    clock.advance(CODE_LIFETIME + 1)
    assert not store.is_spent_code("h")  # WeChat has forgotten it too (42003)


def test_outcome_is_forgotten_when_its_row_expires(
    store: LoginStateStore, clock: Clock
) -> None:
    _use(store, "k", "{}", expires_at=_in(120))
    clock.advance(121)
    assert store.ending("k") is None


def test_states_are_shared_by_every_store_on_the_same_database(app: t.Any) -> None:
    """A second worker process (another store object, another connection) sees the state."""
    with app.app_context():
        worker_a = login_state_store(app)
        worker_b = login_state_store(app)
        worker_a.park("k", "v", _in(600))
        assert worker_b.parked("k") == "v"
        assert _use(worker_a, "c")
        assert not _use(worker_b, "c")
        assert worker_b.ending("c") == '{"user_id": "1"}'


# --- a connection's login states: the session half -------------------------------------


def test_new_states_are_32_alphanumerics_and_never_repeat() -> None:
    """Within the 128-byte alphanumeric limit WeChat documents, and each one fresh: 2,000
    states, all different, together using every letter and digit (a constant or
    low-entropy generator would repeat or stay in a corner of the alphabet)."""
    states = [new_state() for _ in range(2000)]
    assert all(re.fullmatch(r"[A-Za-z0-9]{32}", state) for state in states)
    assert len(set(states)) == len(states)
    assert len(set("".join(states))) == 62


def test_state_is_single_use_and_carries_its_data(app: Flask) -> None:
    with app.test_request_context("/auth/wechat/login"):
        wx = login_states(app)
        state = wx.begin(LoginData(next_url="/account"))
        assert re.fullmatch(r"[A-Za-z0-9]{32}", state)
        data = wx.take(state)
        assert data == LoginData(next_url="/account")
        with pytest.raises(StateError):
            wx.take(state)


def test_a_replayed_cookie_gets_the_state_but_cannot_use_it_again(app: Flask) -> None:
    """The session half cannot tell a replayed old cookie; the taken row can."""
    with app.test_request_context("/auth/wechat/login"):
        wx = login_states(app)
        state = wx.begin(LoginData(next_url="/account"))
        cookie = dict(flask.session)
        assert wx.take(state) == LoginData(next_url="/account")
        wx.use(state, Ending(user_id="1"), within=app.db.session)
        app.db.session.commit()
        flask.session.update(cookie)  # the old cookie, replayed
        assert wx.take(state) == LoginData(next_url="/account")
        with pytest.raises(StateUsed):
            wx.use(state, Ending(user_id="2"), within=app.db.session)
        app.db.session.rollback()
        assert wx.ending(state) == Ending(user_id="1")


def test_long_state_data_is_parked_server_side(app: Flask) -> None:
    """Data too big for the cookie lives in the state table; the cookie only names it."""
    next_url = "/search?q=" + "微信" * 400
    with app.test_request_context("/auth/wechat/login"):
        wx = login_states(app)
        state = wx.begin(LoginData(next_url=next_url))
        assert next_url not in str(dict(flask.session))
        assert wx.take(state) == LoginData(next_url=next_url)
        with pytest.raises(StateError):
            wx.take(state)


@pytest.mark.parametrize("state", [None, "", "x" * 129, "NotAStateThisBrowserWasGiven"])
def test_unknown_state_is_refused(app: Flask, state: str | None) -> None:
    with app.test_request_context("/auth/wechat/callback"):
        wx = login_states(app)
        wx.begin(LoginData())
        with pytest.raises(StateError):
            wx.take(state)


def test_state_of_one_connection_is_not_valid_for_another(make_app: t.Any) -> None:
    app = make_app(WECHAT_QR_CONNECTIONS=[
        {"connection": "wechat", "app_id": "wx1111111111111111", "app_secret": "s1"},
        {"connection": "other", "app_id": "wx2222222222222222", "app_secret": "s2"},
    ])
    with app.test_request_context("/"):
        state = login_states(app, "wechat").begin(LoginData(next_url="/a"))
        with pytest.raises(StateError):
            login_states(app, "other").take(state)
        assert login_states(app, "wechat").take(state) == LoginData(next_url="/a")


# --- through the routes: a state belongs to one browser, once, for a while ----------------


def test_every_login_gets_its_own_state(client: t.Any) -> None:
    assert start_login(client) != start_login(client)


def _assert_state_refused(resp: t.Any, app: t.Any, api: t.Any) -> None:
    assert resp.status_code == 400
    page = resp.text
    assert "no longer valid" in page
    assert retry_links(page), page
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


@pytest.mark.parametrize("ttl", [600, 1])
def test_expired_state_is_refused(make_app: t.Any, wechat_api: t.Any,
                                  clock: Clock, ttl: int) -> None:
    app = make_app(WECHAT_QR_STATE_TTL=ttl)
    client = app.test_client()
    state = start_login(client)
    wechat_api.token()
    wechat_api.userinfo()
    clock.advance(ttl + 1)
    _assert_state_refused(finish_login(client, state), app, wechat_api)


def test_state_is_good_until_it_expires(make_app: t.Any, wechat_api: t.Any,
                                        clock: Clock) -> None:
    client = make_app(WECHAT_QR_STATE_TTL=600).test_client()
    state = start_login(client)
    wechat_api.token()
    wechat_api.userinfo()
    clock.advance(590)
    assert finish_login(client, state).status_code == 302


def test_someone_elses_state_does_not_cancel_their_login(
    app: t.Any, wechat_api: t.Any
) -> None:
    owner, attacker = app.test_client(), app.test_client()
    state = start_login(owner)
    assert finish_login(attacker, state).status_code == 400
    wechat_api.token()
    wechat_api.userinfo()
    assert finish_login(owner, state).status_code == 302


# --- through the routes: pending logins and the session cookie ----------------------------


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


def test_long_or_chinese_next_and_several_connections_keep_the_cookie_small(
    make_app: t.Any,
) -> None:
    """Browsers drop a cookie over 4 KB (and the login with it): pending logins are capped
    across connections, and data the session would escape into ``\\uXXXX`` is measured as
    written."""
    app = make_app(WECHAT_QR_CONNECTIONS=[
        {"connection": name, "app_id": f"wx{digit * 16}", "app_secret": "s"}
        for name, digit in (("one", "1"), ("two", "2"), ("three", "3"))])
    client = app.test_client()
    for name in ("one", "two", "three"):
        for length in (40, 150, 600):
            for _ in range(5):
                resp = client.get(f"/auth/{name}/login", query_string={
                    "next": "/搜索?q=" + "微信🐼" * length})
                assert resp.status_code == 302
    assert len(client.get_cookie("session").value) < 3000


# --- endings of the previous version -----------------------------------------------------


#: Rows written by the previous version (before the flow moved out of the views), verbatim.
OLD_ROWS = {
    '{"user_id": "7", "next": "/account", "at": 1700000000.5, "auth_time": 1700000000.1, '
    '"delivery": {"state": "b", "nonce": "n"}}':
        Ending(user_id="7", next_url="/account", at=1700000000.5, auth_time=1700000000.1,
               business={"state": "b", "nonce": "n"}),
    '{"user_id": "7", "next": "/", "at": 1700000000.5, "auth_time": 1700000000.1, '
    '"delivery": {}}':
        Ending(user_id="7", next_url="/", at=1700000000.5, auth_time=1700000000.1,
               business={}),
    '{"user_id": "7", "next": "/account"}': Ending(user_id="7", next_url="/account"),
    '{"bind": "Xy-_1", "at": 1700000000.5, "delivery": {}}':
        Ending(binding_id="Xy-_1", at=1700000000.5, business={}),
    '{"error": "LoginCancelled", "at": 1700000000.5}':
        Ending(error="LoginCancelled", at=1700000000.5),
    '{"error": true, "at": 1700000000.5}': Ending(error="True", at=1700000000.5),
}


@pytest.mark.parametrize("row", sorted(OLD_ROWS))
def test_rows_of_the_previous_version_are_read_as_they_were_meant(row: str) -> None:
    assert Ending.from_json(row) == OLD_ROWS[row]


@pytest.mark.parametrize("row", sorted(OLD_ROWS))
def test_rows_written_now_have_the_previous_versions_keys_and_values(row: str) -> None:
    """Written again, an ending has the same keys and values as before (the previous version
    reads them during a rolling deploy); only ``true`` for a bug is now its text."""
    old = json.loads(row)
    new = json.loads(OLD_ROWS[row].to_json())
    if old.get("error") is True:
        old["error"] = "True"
    assert new == old
