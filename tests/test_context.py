"""flask_wechat_qr.context: a login's start and callback read Flask's context proxies
(``request``, ``session``, ``current_app``, ``g``) a bounded number of times in the
extension's code. Each read through a proxy looks the context up again (about 1 us; the
object taken once, :mod:`flask_wechat_qr.context`, about 0.2 us); a returning login's
start and callback read them 25 and 26 times in the extension's code, where a
hand-written handler's reads them 1 and 3 (issue 15). A count, never a time."""

from __future__ import annotations

import sys
import types
import typing as t

import pytest
from flask import Flask, request
from support import finish_login, start_login
from werkzeug.local import _ProxyLookup

from flask_wechat_qr.context import this_app, this_request, this_session

#: Most reads through the proxies, and most objects taken from :mod:`.context`, the
#: extension's code may make in a returning login's start and in its callback (measured:
#: 7 and 8 reads, 9 and 10 objects taken; 25 and 26 reads before, none taken).
MOST_READS = {"start": 9, "callback": 10}
MOST_TAKEN = {"start": 11, "callback": 11}

#: What a read through one of Werkzeug's proxies runs (private to Werkzeug: an upgrade
#: that renames it fails this test loudly, with an AttributeError here).
PROXY_LOOKUP = _ProxyLookup.__get__.__code__
#: What taking one of the objects runs.
TAKING = {this_app.__code__, this_request.__code__, this_session.__code__}


def proxy_reads(work: t.Callable[[], t.Any]) -> tuple[int, int, t.Any]:
    """While ``work`` runs: how many times the extension's own code read one of Flask's
    context proxies (each attribute, item or iteration of a proxy is one look-up), how
    many times it took an object from :mod:`.context`, and what ``work`` gave. A profiler
    already running (a developer's cProfile) is given back its place afterwards."""
    reads = taken = 0

    def profile(frame: types.FrameType, event: str, _arg: object) -> None:
        nonlocal reads, taken
        if event != "call" or frame.f_back is None:
            return
        if frame.f_code in TAKING:
            taken += 1
        elif frame.f_code is PROXY_LOOKUP and frame.f_back.f_globals.get(
                "__name__", "").startswith("flask_wechat_qr"):
            reads += 1

    before = sys.getprofile()
    sys.setprofile(profile)
    try:
        result = work()
    finally:
        sys.setprofile(before)
    return reads, taken, result


def test_a_returning_login_reads_the_context_proxies_a_few_times(
        client: t.Any, wechat_api: t.Any) -> None:
    wechat_api.token()
    wechat_api.userinfo()
    assert finish_login(client, start_login(client)).status_code == 302  # now known
    wechat_api.token()
    reads, taken, state = proxy_reads(lambda: start_login(client))
    assert 0 < reads <= MOST_READS["start"]
    assert 0 < taken <= MOST_TAKEN["start"]
    reads, taken, response = proxy_reads(lambda: finish_login(client, state))
    assert response.status_code == 302
    assert 0 < reads <= MOST_READS["callback"]
    assert 0 < taken <= MOST_TAKEN["callback"]


def test_a_profiler_running_before_is_running_after() -> None:
    def profiler(frame: types.FrameType, event: str, arg: object) -> None:
        pass

    outer = sys.getprofile()  # pytest's own, if it runs under one
    sys.setprofile(profiler)
    try:
        assert proxy_reads(lambda: 1) == (0, 0, 1)
        assert sys.getprofile() is profiler
    finally:
        sys.setprofile(outer)


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
