"""Two unlinks of one WeChat-only user at once (two tabs, two connections) never leave the
account with no way to log in: one goes through, the other is told it is the last way in."""

from __future__ import annotations

import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa
from support import (
    OPENID,
    OPENID_B,
    add_user,
    all_identities,
    csrf_token_of,
    link_identity,
    log_in,
    two_connections,
    with_csrf_token_route,
)


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
