"""WeChat misbehaving on a real socket: too slow, refusing connections, failing with 5xx,
answering HTML. Each gives the user a page in words within the configured timeout, and
writes nothing."""

from __future__ import annotations

import time
import typing as t

import pytest
from support import (
    FakeWeChat,
    all_identities,
    all_users,
    closed_port,
    finish_login,
    start_login,
)

TIMEOUT = 0.5


def _login_against(make_app: t.Callable[..., t.Any], api_base: str) -> tuple[t.Any, t.Any, float]:
    app = make_app(WECHAT_QR_API_BASE_URL=api_base, WECHAT_QR_HTTP_TIMEOUT=TIMEOUT)
    client = app.test_client()
    state = start_login(client)
    started = time.monotonic()
    resp = finish_login(client, state)
    return app, resp, time.monotonic() - started


@pytest.mark.parametrize(("fault", "status", "words"), [
    ("slow", 504, "took too long"),
    ("5xx", 502, "did not answer properly"),
    ("html", 502, "not its API"),
    ("rate-limited", 502, "Wait a minute"),
])
def test_wechat_faults_give_a_clear_page_in_time(
    make_app: t.Callable[..., t.Any], fault: str, status: int, words: str
) -> None:
    with FakeWeChat(fault) as wechat:
        app, resp, elapsed = _login_against(make_app, wechat.url)
    assert resp.status_code == status
    page = resp.get_data(as_text=True)
    assert words in page and "Try again" in page and "Traceback" not in page
    assert wechat.requests == 1
    assert elapsed < 6 * TIMEOUT  # the configured timeout bounds the wait
    assert all_users(app) == [] and all_identities(app) == []


def test_connection_refused_gives_a_clear_page(make_app: t.Callable[..., t.Any]) -> None:
    with closed_port() as port:
        app, resp, elapsed = _login_against(make_app, f"http://127.0.0.1:{port}")
    assert resp.status_code == 502
    assert "WeChat is not answering" in resp.get_data(as_text=True)
    assert elapsed < 6 * TIMEOUT
    assert all_users(app) == [] and all_identities(app) == []
