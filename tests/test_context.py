"""flask_wechat_qr.context: a login's start and callback read Flask's context proxies
(``request``, ``session``, ``current_app``) a bounded number of times in the extension's
code. Each read through a proxy looks the context up again (about 1 us); a returning
login read them 50 times in the extension's code where a hand-written handler's reads
them 5 (issue 15). A count, never a time."""

from __future__ import annotations

import sys
import types
import typing as t

import pytest
from flask import Flask, request
from support import finish_login, start_login
from werkzeug.local import _ProxyLookup

from flask_wechat_qr.context import this_app, this_request, this_session

#: Most reads of the three proxies the extension's code may make in a returning login's
#: start, and in its callback (measured: 7 and 8; 25 and 25 before).
MOST_READS = {"start": 9, "callback": 10}


def proxy_reads(work: t.Callable[[], t.Any]) -> tuple[int, t.Any]:
    """How many times the extension's own code read one of Flask's context proxies while
    ``work`` ran (each attribute, item or iteration of a proxy is one look-up), and what
    ``work`` gave."""
    lookup = _ProxyLookup.__get__.__code__
    reads = 0

    def profile(frame: types.FrameType, event: str, _arg: object) -> None:
        nonlocal reads
        if event == "call" and frame.f_code is lookup and frame.f_back is not None:
            if frame.f_back.f_globals.get("__name__", "").startswith("flask_wechat_qr"):
                reads += 1

    sys.setprofile(profile)
    try:
        result = work()
    finally:
        sys.setprofile(None)
    return reads, result


def test_a_returning_login_reads_the_context_proxies_a_few_times(
        client: t.Any, wechat_api: t.Any) -> None:
    wechat_api.token()
    wechat_api.userinfo()
    assert finish_login(client, start_login(client)).status_code == 302  # now known
    wechat_api.token()
    reads, state = proxy_reads(lambda: start_login(client))
    assert 0 < reads <= MOST_READS["start"]
    reads, response = proxy_reads(lambda: finish_login(client, state))
    assert response.status_code == 302
    assert 0 < reads <= MOST_READS["callback"]


def test_the_objects_are_the_proxies_own(app: Flask) -> None:
    with app.test_request_context("/auth/wechat/login?next=/account"):
        assert this_request() is request._get_current_object()  # type: ignore[attr-defined]
        assert this_request().args["next"] == "/account"
        assert this_app() is app
        this_session()["marker"] = 1
        assert this_session().get("marker") == 1


def test_outside_a_request_they_fail_as_the_proxies_do() -> None:
    with pytest.raises(RuntimeError):
        this_request()
    with pytest.raises(RuntimeError):
        this_session()
    with pytest.raises(RuntimeError):
        this_app()
