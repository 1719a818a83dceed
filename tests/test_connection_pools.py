"""Kept-alive connections stay with the process that opened them: a forked child (a
gunicorn worker of a ``--preload`` master that called WeChat) opens its own."""

from __future__ import annotations

import contextlib
import os
import typing as t

import pytest
import requests
from support import LiveServer, entered_in_another_thread, in_forked_child
from werkzeug.wrappers import Request, Response

from flask_wechat_qr.avatar_download import download_session
from flask_wechat_qr.connection_pools import ProcessOwnAdapter
from flask_wechat_qr.sandbox.server import KeepAliveHandler


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("pool_lock_held", [False, True])
def test_a_forked_child_opens_connections_of_its_own(pool_lock_held: bool) -> None:
    """A ``--preload`` master that called WeChat keeps that connection alive; a worker forked
    from it must not use the same socket (two processes would read each other's answers):
    the worker opens its own, and the master's stays open for the master. Also when another
    thread of the master held the pool's lock at the fork (the worker must not wait for a
    thread it does not have)."""

    @Request.application  # type: ignore[misc]
    def app(request: Request) -> Response:
        return Response("ok")

    connections: list[int] = []
    with LiveServer(app, request_handler=KeepAliveHandler) as server, \
            requests.Session() as session:
        server.server.on_connection = lambda: connections.append(1)  # type: ignore[attr-defined]
        adapter = ProcessOwnAdapter()
        session.mount("http://", adapter)
        assert session.get(server.url, timeout=5).text == "ok"
        lock = adapter.poolmanager.pools.lock
        with (entered_in_another_thread(lambda: lock) if pool_lock_held
              else contextlib.nullcontext()):
            assert in_forked_child(lambda: session.get(server.url, timeout=5).text == "ok") == 0
        assert session.get(server.url, timeout=5).text == "ok"  # the master's, kept alive
        assert len(connections) == 2


def test_the_extensions_connections_to_wechat_and_avatars_are_the_processs_own(
        make_app: t.Callable[..., t.Any]) -> None:
    """Every pool of sockets the extension keeps: each connection's API session and the
    avatar downloader's."""
    from flask_wechat_qr.runtime import runtime_of

    client = runtime_of(make_app()).clients["wechat"]
    for url in ("https://api.weixin.qq.com/", "http://127.0.0.1/"):
        assert isinstance(client.session.get_adapter(url), ProcessOwnAdapter)
    assert isinstance(download_session().get_adapter("https://thirdwx.qlogo.cn/"),
                      ProcessOwnAdapter)


def test_each_origin_keeps_its_pool_and_a_closed_one_is_replaced() -> None:
    """The adapter chooses a pool once for each origin (and TLS settings and proxies):
    calls to one server share one kept-alive connection, two servers (or one under another
    name) get a pool each, and after the adapter is closed the next call opens a new one
    instead of failing on the closed pool."""

    @Request.application  # type: ignore[misc]
    def app(request: Request) -> Response:
        return Response(request.host)

    with LiveServer(app, request_handler=KeepAliveHandler) as one, \
            LiveServer(app, request_handler=KeepAliveHandler) as two, \
            requests.Session() as session:
        counted: dict[str, list[int]] = {"one": [], "two": []}
        one.server.on_connection = lambda: counted["one"].append(1)  # type: ignore[attr-defined]
        two.server.on_connection = lambda: counted["two"].append(1)  # type: ignore[attr-defined]
        adapter = ProcessOwnAdapter()
        session.mount("http://", adapter)
        other_name = one.url.replace("127.0.0.1", "localhost")
        for _ in range(3):
            for server in (one, two):
                assert session.get(f"{server.url}/x", timeout=5).text == \
                    server.url.split("//")[1].rstrip("/")
        assert (len(counted["one"]), len(counted["two"])) == (1, 1)
        assert session.get(other_name, timeout=5).ok  # another origin: its own pool
        assert len(counted["one"]) == 2
        adapter.close()
        assert session.get(one.url, timeout=5).ok
        assert len(counted["one"]) == 3
