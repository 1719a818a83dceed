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

#: The timeout of a login whose WeChat never answers: it runs out.
TIMEOUT = 0.5
#: The timeout where WeChat answers (or refuses) at once: it only bounds how long the answer
#: takes to arrive, which a loaded machine may stretch past TIMEOUT (the answer in hand would
#: then be a timeout, "took too long").
ANSWERED_TIMEOUT = 10


def _login_against(make_app: t.Callable[..., t.Any], api_base: str,
                   timeout: float = ANSWERED_TIMEOUT) -> tuple[t.Any, t.Any, float]:
    app = make_app(WECHAT_QR_API_BASE_URL=api_base, WECHAT_QR_HTTP_TIMEOUT=timeout)
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
        app, resp, elapsed = _login_against(
            make_app, wechat.url, TIMEOUT if fault == "slow" else ANSWERED_TIMEOUT)
    assert resp.status_code == status
    page = resp.get_data(as_text=True)
    assert words in page and "Try again" in page and "Traceback" not in page
    assert wechat.requests == 1
    assert elapsed < 6 * TIMEOUT  # the timeout bounds the wait; an answer comes at once
    assert all_users(app) == [] and all_identities(app) == []


def test_connection_refused_gives_a_clear_page(make_app: t.Callable[..., t.Any]) -> None:
    with closed_port() as port:
        app, resp, elapsed = _login_against(make_app, f"http://127.0.0.1:{port}")
    assert resp.status_code == 502
    assert "WeChat is not answering" in resp.get_data(as_text=True)
    assert elapsed < 6 * TIMEOUT
    assert all_users(app) == [] and all_identities(app) == []
