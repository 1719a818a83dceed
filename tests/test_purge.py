"""Expired rows go in bounded batches: with a backlog of 20,000 expired rows, no request
deletes more than a batch of them (docs/deploying.rst, "Scale and performance"), the
requests after it go on until the backlog is gone, and then purging is once a minute
again. Counted in rows and statements, never timed."""

from __future__ import annotations

import contextlib
import time
import typing as t

import sqlalchemy as sa
from flask import Flask
from support import (
    OPENID_2,
    UNIONID_2,
    Clock,
    WeChatAPI,
    add_user,
    arrive,
    ask_app,
    bind_as,
    bind_page,
    login_with_wechat,
    open_qr_page,
    table,
)

#: The most expired rows one purge deletes, as the docs say.
BATCH = 1000
#: The backlog the tests start from (a million, measured by hand, is in the docs).
BACKLOG = 20_000


@contextlib.contextmanager
def deletes(app: Flask) -> t.Iterator[list[tuple[str, int]]]:
    """``(table, rows deleted)`` of every ``DELETE`` on ``app``'s database meanwhile."""
    with app.app_context():
        engine = app.db.engine  # type: ignore[attr-defined]
    seen: list[tuple[str, int]] = []

    def after(_conn: t.Any, cursor: t.Any, statement: str, *_args: t.Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            seen.append((statement.split()[2].strip('"'), cursor.rowcount))

    sa.event.listen(engine, "after_cursor_execute", after)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "after_cursor_execute", after)


def _fill(app: Flask, name: str, make_row: t.Callable[[int], dict[str, t.Any]]) -> None:
    """:data:`BACKLOG` rows in the extension's table ``name``, as a long-idle site has."""
    with app.app_context(), app.db.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(sa.insert(table(app, name)), [make_row(i) for i in range(BACKLOG)])


def _count(app: Flask, name: str, where: t.Callable[[sa.Table], t.Any]) -> int:
    rows_table = table(app, name)
    with app.app_context(), app.db.engine.connect() as conn:  # type: ignore[attr-defined]
        return int(conn.execute(sa.select(sa.func.count()).select_from(rows_table)
                                .where(where(rows_table))).scalar_one())


def _expired_states(app: Flask) -> int:
    return _count(app, "wechat_qr_login_state", lambda t_: t_.c.expires_at < time.time())


def test_callbacks_work_off_expired_login_states_a_batch_at_a_time(
        app: Flask, wechat_api: WeChatAPI) -> None:
    long_ago = time.time() - 86_400
    _fill(app, "wechat_qr_login_state",
          lambda i: {"key": f"taken:_state_wechat_qr_wechat_old{i}", "value": "{}",
                     "expires_at": long_ago + i})
    done = []
    for _login in range(BACKLOG // BATCH + 2):
        with deletes(app) as seen:
            assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
        done.append([rows for name, rows in seen if name == "wechat_qr_login_state"])
    # Each callback deleted one batch, in one statement, until none was left ...
    assert done[:BACKLOG // BATCH] == [[BATCH]] * (BACKLOG // BATCH)
    assert done[BACKLOG // BATCH] == [0]  # ... (a batch not full: the backlog is gone) ...
    assert done[BACKLOG // BATCH + 1] == []  # ... and the next purge is a minute away.
    assert _expired_states(app) == 0


def test_the_first_callback_deletes_one_batch_and_the_next_one_goes_on(
        app: Flask, wechat_api: WeChatAPI) -> None:
    _fill(app, "wechat_qr_login_state",
          lambda i: {"key": f"parked:x:old{i}", "value": "{}", "expires_at": 1.0 + i})
    for remaining in (BACKLOG - BATCH, BACKLOG - 2 * BATCH):
        assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
        assert _expired_states(app) == remaining
    # The oldest went first.
    assert _count(app, "wechat_qr_login_state",
                  lambda t_: t_.c.expires_at < 1.0 + 2 * BATCH) == 0


def test_expired_pending_bindings_go_a_batch_per_login(make_app: t.Any,
                                                       wechat_api: WeChatAPI) -> None:
    app = ask_app(make_app)
    now = time.time()
    _fill(app, "wechat_qr_pending_binding",
          lambda i: {"id": f"old{i}", "connection": "wechat", "openid": f"o{i}",
                     "created_at": now - 7200, "expires_at": now - 3600 + i / BACKLOG,
                     "used": False})

    def expired() -> int:
        return _count(app, "wechat_qr_pending_binding",
                      lambda t_: t_.c.expires_at < time.time())

    for openid, unionid, remaining in ((None, None, BACKLOG - BATCH),
                                       (OPENID_2, UNIONID_2, BACKLOG - 2 * BATCH)):
        with deletes(app) as seen:
            if openid is None:
                arrive(app.test_client(), wechat_api)
            else:
                arrive(app.test_client(), wechat_api, openid=openid, unionid=unionid)
        assert [rows for name, rows in seen if name == "wechat_qr_pending_binding"] == [BATCH]
        assert expired() == remaining


def test_old_bind_attempts_go_a_batch_per_attempt(make_app: t.Any,
                                                  wechat_api: WeChatAPI) -> None:
    app = ask_app(make_app)
    add_user(app, username="alice", password="alice-pw")
    old = time.time() - 7 * 86_400
    _fill(app, "wechat_qr_bind_attempt",
          lambda i: {"binding_id": f"b{i}", "address": "10.0.0.1", "account": "", "at": old})
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    for remaining in (BACKLOG - BATCH, BACKLOG - 2 * BATCH):
        with deletes(app) as seen:
            assert bind_as(client, token, "alice", "wrong").status_code == 400
        assert [rows for name, rows in seen if name == "wechat_qr_bind_attempt"] == [BATCH]
        assert _count(app, "wechat_qr_bind_attempt", lambda t_: t_.c.at == old) == remaining


def test_the_sandbox_qr_page_deletes_a_batch_of_old_qr_codes(sandbox_app: Flask,
                                                             clock: Clock) -> None:
    open_qr_page(sandbox_app.test_client())  # makes the sandbox's tables, and purges
    long_ago = time.time() - 30 * 86_400
    _fill(sandbox_app, "wechat_qr_sandbox_qr",
          lambda i: {"uuid": f"old{i}", "app_id": "wx", "redirect_uri": "http://localhost/",
                     "status": "waiting", "created_at": long_ago, "expires_at": long_ago})
    clock.advance(61)  # the next purge is due
    for remaining in (BACKLOG - BATCH, BACKLOG - 2 * BATCH):
        with deletes(sandbox_app) as seen:
            open_qr_page(sandbox_app.test_client())
        assert [rows for name, rows in seen if name == "wechat_qr_sandbox_qr"] == [BATCH]
        assert _count(sandbox_app, "wechat_qr_sandbox_qr",
                      lambda t_: t_.c.expires_at == long_ago) == remaining
