"""DatabaseStateCache: the server-side half of a login's state (single use, expiring)."""

from __future__ import annotations

import time
import typing as t

import pytest
import sqlalchemy as sa

from flask_wechat_qr import state_store
from flask_wechat_qr.state_store import AFTERLIFE, DatabaseStateCache


@pytest.fixture
def cache(app: t.Any) -> t.Iterator[DatabaseStateCache]:
    with app.app_context():
        yield DatabaseStateCache(app.db, app.extensions["wechat_qr"].models.LoginState)


def _keys(cache: DatabaseStateCache) -> list[str]:
    with cache.db.engine.connect() as conn:
        return sorted(conn.execute(sa.select(cache.table.c.key)).scalars())


def _travel(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    real_time = time.time
    monkeypatch.setattr(state_store.time, "time", lambda: real_time() + seconds)


def test_set_then_get(cache: DatabaseStateCache) -> None:
    cache.set("_state_wechat_abc", '{"data": {"next": "/account"}}', 600)
    assert _keys(cache) == ["_state_wechat_abc"]
    assert cache.get("_state_wechat_abc") == '{"data": {"next": "/account"}}'


def test_get_takes_the_value_once(cache: DatabaseStateCache) -> None:
    cache.set("k", "v", 600)
    assert cache.get("k") == "v"
    assert cache.get("k") is None
    assert _keys(cache) == ["taken:k"]  # remembers that it was used, for a while


def test_outcome_of_a_used_state(cache: DatabaseStateCache) -> None:
    assert cache.outcome("never-used", wait=5) is None  # no wait: nothing is running
    cache.set("k", "v", 600)
    cache.get("k")
    started = time.monotonic()
    assert cache.outcome("k", wait=0.2) is None  # taken, still running: waits, then gives up
    assert time.monotonic() - started >= 0.2
    cache.remember_outcome("k", '{"user_id": "7"}')
    assert cache.outcome("k", wait=5) == '{"user_id": "7"}'


def test_outcome_is_forgotten_after_a_while(
    cache: DatabaseStateCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache.set("k", "v", 600)
    cache.get("k")
    cache.remember_outcome("k", "{}")
    _travel(monkeypatch, AFTERLIFE + 1)
    assert cache.outcome("k", wait=5) is None


def test_get_of_an_unknown_key(cache: DatabaseStateCache) -> None:
    cache.set("k", "v", 600)
    assert cache.get("other") is None
    assert _keys(cache) == ["k"]


def test_keys_are_independent(cache: DatabaseStateCache) -> None:
    cache.set("a", "1", 600)
    cache.set("b", "2", 600)
    assert cache.get("b") == "2"
    assert cache.get("a") == "1"


def test_delete(cache: DatabaseStateCache) -> None:
    cache.set("a", "1", 600)
    cache.set("b", "2", 600)
    cache.delete("a")
    cache.delete("never-there")
    assert _keys(cache) == ["b"]
    assert cache.get("a") is None
    assert cache.get("b") == "2"


def test_expired_value_is_none(cache: DatabaseStateCache,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    cache.set("k", "v", 60)
    _travel(monkeypatch, 61)
    assert cache.get("k") is None
    assert _keys(cache) == []


def test_value_is_there_until_it_expires(cache: DatabaseStateCache,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cache.set("k", "v", 60)
    _travel(monkeypatch, 59)
    assert cache.get("k") == "v"


def test_expired_rows_are_purged_on_set(cache: DatabaseStateCache,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cache.set("old", "1", 60)
    cache.set("young", "2", 600)
    _travel(monkeypatch, 120)
    cache.set("new", "3", 600)
    assert _keys(cache) == ["new", "young"]


def test_value_is_text_as_given(cache: DatabaseStateCache) -> None:
    value = '{"data": {"next": "/账户?tab=微信🐼"}}'
    cache.set("k", value, 600)
    assert cache.get("k") == value


def test_states_are_shared_by_every_cache_on_the_same_database(app: t.Any) -> None:
    """A second worker process (another cache object, another connection) sees the state."""
    with app.app_context():
        model = app.extensions["wechat_qr"].models.LoginState
        worker_a = DatabaseStateCache(app.db, model)
        worker_b = DatabaseStateCache(app.db, model)
        worker_a.set("k", "v", 600)
        assert worker_b.get("k") == "v"
        assert worker_a.get("k") is None
