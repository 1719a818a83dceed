"""Login states: the session half (LoginStates) and the table half (LoginStateStore):
parked data, single use of a state, and how its login ended."""

from __future__ import annotations

import re
import threading
import time
import typing as t

import flask
import pytest
import sqlalchemy as sa
from flask import Flask

from flask_wechat_qr import login_state
from flask_wechat_qr.errors import StateError, StateUsed
from flask_wechat_qr.login_state import (
    AFTERLIFE,
    TAKEN,
    Ending,
    LoginData,
    LoginStateStore,
    TooManyWaiting,
)


@pytest.fixture
def store(app: t.Any) -> t.Iterator[LoginStateStore]:
    with app.app_context():
        yield LoginStateStore(app.db, app.extensions["wechat_qr"].models.LoginState)


def _keys(store: LoginStateStore) -> list[str]:
    with store.db.engine.connect() as conn:
        return sorted(conn.execute(sa.select(store.table.c.key)).scalars())


def _travel(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    real_time = time.time
    monkeypatch.setattr(login_state.time, "time", lambda: real_time() + seconds)


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
    assert _keys(store) == [TAKEN + "k"]
    assert store.ending("k") == '{"user_id": "1"}'  # the first one's outcome stays


def test_the_taken_row_outlives_the_state(store: LoginStateStore,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A replayed cookie still naming the state finds it used until the row expires."""
    assert _use(store, "k", expires_at=_in(600))
    _travel(monkeypatch, 599)
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
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    value = '{"next": "/账户?tab=微信🐼' + "x" * 500 + '"}'
    store.park("k", value, _in(60))
    assert _keys(store) == ["k"]
    assert store.parked("k") == value
    _travel(monkeypatch, 59)
    assert store.parked("k") == value  # reading does not use it: the taken row does
    _travel(monkeypatch, 61)
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
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    store.park("old", "1", _in(60))
    store.park("young", "2", _in(600))
    _travel(monkeypatch, 120)  # past the purge interval too
    store.park("new", "3", _in(720))
    assert _keys(store) == ["new", "young"]
    # ... but not at every write: the next purge is a minute away.
    store.park("short", "4", _in(1))
    _travel(monkeypatch, 5)  # 5 s more: "short" has expired
    store.park("newer", "5", _in(600))
    assert "short" in _keys(store)


def test_taking_a_state_purges_now_and_then(app: Flask, store: LoginStateStore,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Callbacks purge (in a transaction of their own, never in the login's, which may roll
    back): starting a login writes nothing."""
    wx = app.extensions["wechat_qr"].login_states["wechat"]
    wx.store._next_purge = 0.0
    with app.test_request_context("/auth/wechat/login"):
        assert _use(store, "old", expires_at=_in(60))
        state = wx.begin(LoginData())
        assert _keys(store) == [TAKEN + "old"]  # starting a login wrote nothing
        _travel(monkeypatch, 120)
        wx.take(state)
        assert _keys(store) == []
        assert _use(store, "young", expires_at=_in(5))
        _travel(monkeypatch, 30)  # 30 s on: "young" has expired, but ...
        wx.take(wx.begin(LoginData()))  # ... it is not a minute since the last purge
        assert _keys(store) == [TAKEN + "young"]


# --- outcomes ---------------------------------------------------------------------------


def test_outcome_of_a_used_state(store: LoginStateStore,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert store.ending("never-used") is None
    started = time.monotonic()
    assert store.ending("never-used", wait=0.2) is None  # waits for it, then gives up
    assert time.monotonic() - started >= 0.2
    _use(store, "k", '{"user_id": "7"}')

    def sleep(seconds: float) -> None:
        raise AssertionError("waited")

    monkeypatch.setattr(login_state.time, "sleep", sleep)
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
    """Waiting ties up a worker thread: past MAX_WAITING_REQUESTS, TooManyWaiting at once."""
    for _ in range(login_state.MAX_WAITING_REQUESTS):
        assert store._waiting.acquire(blocking=False)  # as many requests are waiting

    def sleep(seconds: float) -> None:
        raise AssertionError("waited")

    monkeypatch.setattr(login_state.time, "sleep", sleep)
    with pytest.raises(TooManyWaiting):
        store.ending("k", wait=5)
    assert store.ending("k") is None  # not waiting is always possible
    _use(store, "done", '{"user_id": "1"}')
    assert store.ending("done", wait=5) == '{"user_id": "1"}'  # there: no wait needed


def test_a_failed_look_releases_its_place_in_the_queue(
    store: LoginStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    looks = []

    def broken(key: str) -> str | None:
        looks.append(key)
        if len(looks) > 1:
            raise RuntimeError("database gone")
        return None

    monkeypatch.setattr(store, "_ending", broken)
    monkeypatch.setattr(login_state.time, "sleep", lambda seconds: None)
    for _ in range(login_state.MAX_WAITING_REQUESTS + 1):
        looks.clear()
        with pytest.raises(RuntimeError):
            store.ending("k", wait=5)
    assert store._waiting.acquire(blocking=False)  # every place came back


def test_spent_codes(store: LoginStateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not store.is_spent_code("h")
    store.remember_spent_code("h")
    store.remember_spent_code("h")  # a second request saying so too: no error
    assert store.is_spent_code("h") and not store.is_spent_code("other")
    _travel(monkeypatch, login_state.CODE_LIFETIME + 1)
    assert not store.is_spent_code("h")  # WeChat has forgotten it too (42003)


def test_outcome_is_forgotten_when_its_row_expires(
    store: LoginStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(store, "k", "{}", expires_at=_in(AFTERLIFE))
    _travel(monkeypatch, AFTERLIFE + 1)
    assert store.ending("k") is None


def test_states_are_shared_by_every_store_on_the_same_database(app: t.Any) -> None:
    """A second worker process (another store object, another connection) sees the state."""
    with app.app_context():
        model = app.extensions["wechat_qr"].models.LoginState
        worker_a = LoginStateStore(app.db, model)
        worker_b = LoginStateStore(app.db, model)
        worker_a.park("k", "v", _in(600))
        assert worker_b.parked("k") == "v"
        assert _use(worker_a, "c")
        assert not _use(worker_b, "c")
        assert worker_b.ending("c") == '{"user_id": "1"}'


# --- a connection's login states: the session half -------------------------------------


def test_state_is_single_use_and_carries_its_data(app: Flask) -> None:
    with app.test_request_context("/auth/wechat/login"):
        wx = app.extensions["wechat_qr"].login_states["wechat"]
        state = wx.begin(LoginData(next_url="/account"))
        assert re.fullmatch(r"[A-Za-z0-9]{32}", state)
        data = wx.take(state)
        assert data == LoginData(next_url="/account")
        with pytest.raises(StateError):
            wx.take(state)


def test_a_replayed_cookie_gets_the_state_but_cannot_use_it_again(app: Flask) -> None:
    """The session half cannot tell a replayed old cookie; the taken row can."""
    with app.test_request_context("/auth/wechat/login"):
        wx = app.extensions["wechat_qr"].login_states["wechat"]
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
        wx = app.extensions["wechat_qr"].login_states["wechat"]
        state = wx.begin(LoginData(next_url=next_url))
        assert next_url not in str(dict(flask.session))
        assert wx.take(state) == LoginData(next_url=next_url)
        with pytest.raises(StateError):
            wx.take(state)


@pytest.mark.parametrize("state", [None, "", "x" * 129, "NotAStateThisBrowserWasGiven"])
def test_unknown_state_is_refused(app: Flask, state: str | None) -> None:
    with app.test_request_context("/auth/wechat/callback"):
        wx = app.extensions["wechat_qr"].login_states["wechat"]
        wx.begin(LoginData())
        with pytest.raises(StateError):
            wx.take(state)


def test_state_of_one_connection_is_not_valid_for_another(make_app: t.Any) -> None:
    app = make_app(WECHAT_QR_CONNECTIONS=[
        {"connection": "wechat", "app_id": "wx1", "app_secret": "s1"},
        {"connection": "other", "app_id": "wx2", "app_secret": "s2"},
    ])
    with app.test_request_context("/"):
        ext = app.extensions["wechat_qr"]
        state = ext.login_states["wechat"].begin(LoginData(next_url="/a"))
        with pytest.raises(StateError):
            ext.login_states["other"].take(state)
        assert ext.login_states["wechat"].take(state) == LoginData(next_url="/a")
