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

from flask_wechat_qr import state_store
from flask_wechat_qr.errors import StateError
from flask_wechat_qr.state_store import AFTERLIFE, TAKEN, LoginStateStore


@pytest.fixture
def store(app: t.Any) -> t.Iterator[LoginStateStore]:
    with app.app_context():
        yield LoginStateStore(app.db, app.extensions["wechat_qr"].models.LoginState)


def _keys(store: LoginStateStore) -> list[str]:
    with store.db.engine.connect() as conn:
        return sorted(conn.execute(sa.select(store.table.c.key)).scalars())


def _travel(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    real_time = time.time
    monkeypatch.setattr(state_store.time, "time", lambda: real_time() + seconds)


def _in(seconds: float) -> float:
    return time.time() + seconds


# --- states whose data is in the cookie: the taken row --------------------------------


def test_a_state_is_taken_once(store: LoginStateStore) -> None:
    assert store.take("k", _in(600)) is True
    assert store.take("k", _in(600)) is False
    assert _keys(store) == [TAKEN + "k"]


def test_the_taken_row_outlives_the_state(store: LoginStateStore,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A replayed cookie still naming the state finds it used until the state expired."""
    assert store.take("k", _in(600))
    _travel(monkeypatch, 599)
    store.take("other", _in(600))  # a later login (purges expired rows now and then)
    assert store.take("k", _in(1)) is False


def test_keys_are_independent(store: LoginStateStore) -> None:
    assert store.take("a", _in(600))
    assert store.take("b", _in(600))
    assert not store.take("a", _in(600))


def test_concurrent_takes_of_one_state_let_one_through(app: t.Any,
                                                       store: LoginStateStore) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def take() -> None:
        with app.app_context():
            barrier.wait()
            results.append(store.take("k", _in(600)))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [False] * 7 + [True]


# --- parked data (too big for the cookie) -----------------------------------------------------


def test_parked_data_is_taken_once(store: LoginStateStore) -> None:
    value = '{"next": "/账户?tab=微信🐼' + "x" * 500 + '"}'
    store.park("k", value, _in(600))
    assert _keys(store) == ["k"]
    assert store.take_parked("k", _in(600)) == value
    assert store.take_parked("k", _in(600)) is None
    assert _keys(store) == [TAKEN + "k"]  # remembers that it was used, for a while
    assert store.take("k", _in(600)) is False  # and cannot be taken as a cookie state


def test_unknown_parked_state(store: LoginStateStore) -> None:
    store.park("k", "v", _in(600))
    assert store.take_parked("other", _in(600)) is None
    assert _keys(store) == ["k"]


def test_expired_parked_data_is_none_and_goes(store: LoginStateStore,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    store.park("k", "v", _in(60))
    _travel(monkeypatch, 61)
    assert store.take_parked("k", _in(0)) is None
    assert _keys(store) == []


def test_parked_data_is_there_until_it_expires(store: LoginStateStore,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    store.park("k", "v", _in(60))
    _travel(monkeypatch, 59)
    assert store.take_parked("k", _in(1)) == "v"


def test_delete_forgets_a_parked_state(store: LoginStateStore) -> None:
    store.park("a", "1", _in(600))
    store.park("b", "2", _in(600))
    store.delete("a")
    store.delete("never-there")
    assert _keys(store) == ["b"]
    assert store.take_parked("a", _in(600)) is None


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


# --- outcomes ---------------------------------------------------------------------------


def test_outcome_of_a_used_state(store: LoginStateStore) -> None:
    started = time.monotonic()
    assert store.outcome("never-used", wait=5) is None  # no wait: nothing is running
    assert time.monotonic() - started < 1
    store.take("k", _in(600))
    started = time.monotonic()
    assert store.outcome("k", wait=0.2) is None  # taken, still running: waits, then gives up
    assert time.monotonic() - started >= 0.2
    store.remember_outcome("k", '{"user_id": "7"}')
    assert store.outcome("k", wait=5) == '{"user_id": "7"}'
    assert store.take("k", _in(600)) is False  # an outcome is still a used state


def test_outcome_within_the_callers_transaction(app: t.Any, store: LoginStateStore) -> None:
    """Recorded with the login's own commit, and gone with its rollback."""
    store.take("k", _in(600))
    session = app.db.session
    store.remember_outcome("k", '{"user_id": "1"}', within=session)
    session.rollback()
    assert store.outcome("k", wait=0) is None
    store.remember_outcome("k", '{"user_id": "2"}', within=session)
    session.commit()
    assert store.outcome("k", wait=0) == '{"user_id": "2"}'


def test_outcome_of_a_purged_taken_row_is_still_recorded(store: LoginStateStore) -> None:
    store.remember_outcome("k", '{"error": true}')
    assert store.outcome("k", wait=0) == '{"error": true}'


def test_outcome_is_forgotten_after_a_while(
    store: LoginStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.take("k", _in(1))
    store.remember_outcome("k", "{}")
    _travel(monkeypatch, AFTERLIFE + 1)
    assert store.outcome("k", wait=5) is None


def test_states_are_shared_by_every_store_on_the_same_database(app: t.Any) -> None:
    """A second worker process (another store object, another connection) sees the state."""
    with app.app_context():
        model = app.extensions["wechat_qr"].models.LoginState
        worker_a = LoginStateStore(app.db, model)
        worker_b = LoginStateStore(app.db, model)
        worker_a.park("k", "v", _in(600))
        assert worker_b.take_parked("k", _in(600)) == "v"
        assert worker_a.take_parked("k", _in(600)) is None
        assert worker_a.take("c", _in(600))
        assert not worker_b.take("c", _in(600))


# --- a connection's login states: the session half -------------------------------------


def test_state_is_single_use_and_carries_its_data(app: Flask) -> None:
    with app.test_request_context("/auth/wechat/login"):
        wx = app.extensions["wechat_qr"].states["wechat"]
        state = wx.begin(next="/account")
        assert re.fullmatch(r"[A-Za-z0-9]{32}", state)
        data = wx.take(state)
        assert data == {"next": "/account"}
        with pytest.raises(StateError):
            wx.take(state)


def test_long_state_data_is_parked_server_side(app: Flask) -> None:
    """Data too big for the cookie lives in the state table; the cookie only names it."""
    next_url = "/search?q=" + "微信" * 400
    with app.test_request_context("/auth/wechat/login"):
        wx = app.extensions["wechat_qr"].states["wechat"]
        state = wx.begin(next=next_url)
        assert next_url not in str(dict(flask.session))
        assert wx.take(state) == {"next": next_url}
        with pytest.raises(StateError):
            wx.take(state)


@pytest.mark.parametrize("state", [None, "", "x" * 129, "NotAStateThisBrowserWasGiven"])
def test_unknown_state_is_refused(app: Flask, state: str | None) -> None:
    with app.test_request_context("/auth/wechat/callback"):
        wx = app.extensions["wechat_qr"].states["wechat"]
        wx.begin()
        with pytest.raises(StateError):
            wx.take(state)


def test_state_of_one_connection_is_not_valid_for_another(make_app: t.Any) -> None:
    app = make_app(WECHAT_QR_CONNECTIONS=[
        {"connection": "wechat", "app_id": "wx1", "app_secret": "s1"},
        {"connection": "other", "app_id": "wx2", "app_secret": "s2"},
    ])
    with app.test_request_context("/"):
        ext = app.extensions["wechat_qr"]
        state = ext.states["wechat"].begin(next="/a")
        with pytest.raises(StateError):
            ext.states["other"].take(state)
        assert ext.states["wechat"].take(state) == {"next": "/a"}
