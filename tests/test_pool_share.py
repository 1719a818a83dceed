"""pool_share: how many of a pool's connections first logins may keep while WeChat answers
(the logins that keep one, and those that may not, are in test_flow.py and
promises/test_database_settings.py)."""

from __future__ import annotations

import threading
import typing as t

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool, StaticPool

from flask_wechat_qr.pool_share import keep_connection, shareable

PG = "postgresql+psycopg://nobody@127.0.0.1:1/none"  # never connected to


@pytest.mark.parametrize(("url", "options", "share"), [
    (PG, {}, 2),  # the default pool of five
    (PG, {"pool_size": 10, "max_overflow": 0}, 5),
    (PG, {"pool_size": 3}, 1),
    (PG, {"pool_size": 1, "max_overflow": 10}, 0),  # the overflow is not counted on
    (PG, {"poolclass": NullPool}, 0),  # no fixed size: each connection a new one
    ("mysql+pymysql://nobody@127.0.0.1:1/none", {"pool_size": 10}, 0),  # reads may lock
    ("sqlite:///unused.db", {"pool_size": 10}, 0),  # the whole file's locks
    ("sqlite://", {"poolclass": StaticPool}, 0),
], ids=["pg-5", "pg-10", "pg-3", "pg-1", "pg-null", "mariadb", "sqlite-file", "sqlite-mem"])
def test_half_a_postgresql_pools_fixed_size_is_shared(
        url: str, options: dict[str, t.Any], share: int) -> None:
    assert shareable(sa.create_engine(url, **options)) == share


def test_a_pool_shares_no_more_than_its_share_and_gets_each_back() -> None:
    engine = sa.create_engine(PG, pool_size=4)
    with keep_connection(engine) as first, keep_connection(engine) as second:
        with keep_connection(engine) as third:
            assert (first, second, third) == (True, True, False)
        with keep_connection(engine) as after_third:
            assert after_third is False  # a refusal gives nothing back
    with pytest.raises(RuntimeError):
        with keep_connection(engine) as kept:
            assert kept
            raise RuntimeError("WeChat's answer failed")
    with keep_connection(engine) as again, keep_connection(engine) as too:
        assert again and too  # both shares back, the failed block's too


def test_each_pool_has_its_own_share_and_a_new_pool_starts_at_none() -> None:
    one, other = sa.create_engine(PG, pool_size=2), sa.create_engine(PG, pool_size=2)
    with keep_connection(one) as kept, keep_connection(other) as kept_other:
        assert kept and kept_other
        with keep_connection(one) as second:
            assert not second
        one.dispose()  # a new pool (a forked worker's, docs: deploying)
        with keep_connection(one) as after_dispose:
            assert after_dispose
    with keep_connection(one) as kept:
        assert kept


def test_threads_at_once_get_exactly_the_share() -> None:
    """Eight logins asking at the same moment: two of a pool of five keep their
    connection, the others give theirs back."""
    engine = sa.create_engine(PG)
    inside = threading.Barrier(8, timeout=10)
    granted: list[bool] = []
    lock = threading.Lock()

    def ask() -> None:
        with keep_connection(engine) as kept:
            with lock:
                granted.append(kept)
            inside.wait()  # every thread holds its answer until all have one

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert not inside.broken
    assert sorted(granted) == [False] * 6 + [True] * 2
    with keep_connection(engine) as first, keep_connection(engine) as second:
        assert first and second
