"""Kept-alive connections and the fewest round trips, on a real socket.

The simulated WeChat runs standalone behind a real threaded werkzeug server that speaks
HTTP/1.1 keep-alive and counts the TCP connections it accepts. The QR page, the phone's
confirmation and the poll go to the sandbox in-process (its test client), so the only real
HTTP is what the host's callback sends to WeChat's API: exactly what is counted.
"""

from __future__ import annotations

import threading
import typing as t
from urllib.parse import urlsplit

import pytest
from flask import Flask
from support import (
    Database,
    LiveServer,
    answer,
    dispose_engines,
    logged_in_user_id,
    open_qr_page,
    poll,
    wechat_client,
)

from flask_wechat_qr.sandbox import SandboxApp, create_sandbox_app
from flask_wechat_qr.sandbox.server import KeepAliveHandler

APP_ID = "wxkeepalive0000001"
APP_SECRET = "keepalive-secret"
#: Parallel logins in the threaded round (one browser each).
THREADS = 4
#: Rounds of parallel logins.
ROUNDS = 3
#: Longest any one wait of this module may take, in seconds.
WAIT = 30


class QuietKeepAliveHandler(KeepAliveHandler):
    def log_request(self, *args: t.Any, **kwargs: t.Any) -> None:
        return None


class CountingWeChat(LiveServer):
    """The sandbox on 127.0.0.1 behind a keep-alive server that counts connections and
    API calls (real HTTP only)."""

    join_timeout = WAIT

    def __init__(self, database_uri: str) -> None:
        self.sandbox = create_sandbox_app(
            [SandboxApp(APP_ID, APP_SECRET, "Keep-alive test", "localhost")],
            database_uri=database_uri)
        self.connections = 0
        self.api_calls: list[str] = []
        #: API calls that came with request-body framing (none of them has a body)
        self.calls_with_body: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()
        counter = self

        def count() -> None:
            with counter.lock:
                counter.connections += 1

        super().__init__(self._count_calls, request_handler=QuietKeepAliveHandler)
        self.server.on_connection = count  # type: ignore[attr-defined]

    def _count_calls(self, environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/sns/"):
            framing = [name for name in ("HTTP_TRANSFER_ENCODING", "CONTENT_LENGTH")
                       if environ.get(name)]
            with self.lock:
                self.api_calls.append(path)
                if framing:
                    self.calls_with_body.append((path, framing))
        return self.sandbox.wsgi_app(environ, start_response)

    def snapshot(self) -> tuple[int, int]:
        with self.lock:
            return self.connections, len(self.api_calls)

    def __exit__(self, *exc: t.Any) -> None:
        super().__exit__(*exc)
        dispose_engines(self.sandbox)


@pytest.fixture
def wechat(database: Database) -> t.Iterator[CountingWeChat]:
    with CountingWeChat(database.url("sandbox")) as server:
        yield server


def _host(make_app: t.Callable[..., Flask], wechat: CountingWeChat, **config: t.Any) -> Flask:
    return make_app(WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET,
                    WECHAT_QR_OPEN_BASE_URL=wechat.url, WECHAT_QR_API_BASE_URL=wechat.url,
                    **config)


def _close_pools(app: Flask) -> None:
    """Close the pooled sessions, so the server's kept-alive handlers see EOF and end."""
    with app.app_context():
        connections = list(app.wechat.connections)  # type: ignore[attr-defined]
    for connection in connections:
        wechat_client(app, connection).session.close()


class Login:
    """One browser logging in as one simulated WeChat person, step by step."""

    def __init__(self, app: Flask, wechat: CountingWeChat, **person: str) -> None:
        self.browser = app.test_client()
        self.wechat = wechat
        self.person = person

    def until_callback(self) -> str:
        """Login, QR page, scan and allow, poll: the callback path WeChat redirects to."""
        phone = self.wechat.sandbox.test_client()
        uuid, _state = open_qr_page(self.browser, prefix="", base=self.wechat.url,
                                    sandbox_client=phone)
        confirmed = answer(phone, uuid, prefix="", action="allow", **self.person)
        assert confirmed.status_code == 200, confirmed.get_data(as_text=True)
        redirect = poll(phone, uuid, prefix="")
        assert redirect["status"] == "confirmed", redirect
        parts = urlsplit(redirect["redirect"])
        assert parts.hostname == "localhost" and parts.path == "/auth/wechat/callback"
        return f"{parts.path}?{parts.query}"

    def callback(self, path: str) -> str:
        """The only step with real HTTP to WeChat; the logged-in user's id."""
        resp = self.browser.get(path)
        assert resp.status_code == 302, resp.get_data(as_text=True)
        user_id = logged_in_user_id(self.browser)
        assert user_id is not None
        return user_id

    def run(self) -> str:
        return self.callback(self.until_callback())


def _login(app: Flask, wechat: CountingWeChat, **person: str) -> tuple[str, int, int]:
    """A whole login; the user id, new connections and API calls it caused."""
    connections, calls = wechat.snapshot()
    user_id = Login(app, wechat, **person).run()
    after_connections, after_calls = wechat.snapshot()
    return user_id, after_connections - connections, after_calls - calls


def test_logins_after_warm_up_open_no_new_connections(
    make_app: t.Callable[..., Flask], wechat: CountingWeChat
) -> None:
    app = _host(make_app, wechat)
    try:
        first, warm_up_connections, calls = _login(app, wechat, person="zhangsan")
        assert calls == 2  # a new user: token + userinfo
        assert warm_up_connections == 1
        assert wechat.api_calls == ["/sns/oauth2/access_token", "/sns/userinfo"]

        new_users = set()
        for number in range(3):
            user_id, connections, calls = _login(app, wechat, person="new",
                                                 nickname=f"新用户 {number} 🎈")
            assert (connections, calls) == (0, 2)
            new_users.add(user_id)
        assert len(new_users) == 3 and first not in new_users

        for _ in range(3):
            user_id, connections, calls = _login(app, wechat, person="zhangsan")
            assert user_id == first
            assert (connections, calls) == (0, 1)  # returning: the code exchange only
        assert wechat.api_calls[-3:] == ["/sns/oauth2/access_token"] * 3
    finally:
        _close_pools(app)


def test_profile_sync_on_each_login_costs_the_second_call_only(
    make_app: t.Callable[..., Flask], wechat: CountingWeChat
) -> None:
    app = _host(make_app, wechat, WECHAT_QR_PROFILE_SYNC="each_login")
    try:
        first, _warm_up, calls = _login(app, wechat, person="lisi")
        assert calls == 2
        user_id, connections, calls = _login(app, wechat, person="lisi")
        assert user_id == first
        assert (connections, calls) == (0, 2)
        assert wechat.api_calls[-2:] == ["/sns/oauth2/access_token", "/sns/userinfo"]
    finally:
        _close_pools(app)


def test_parallel_logins_share_the_pool(
    make_app: t.Callable[..., Flask], wechat: CountingWeChat
) -> None:
    """Callbacks of several threads at once share the pool: it grows to the number of
    callbacks running together, never by login."""
    app = _host(make_app, wechat)
    try:
        _login(app, wechat, person="xiaohua")  # warm-up

        def parallel_round(round_number: int) -> list[str]:
            """THREADS browsers at the callback at once; the users they end up as."""
            logins = [Login(app, wechat, person="new", nickname=f"r{round_number} t{n}")
                      for n in range(THREADS)]
            paths = [login.until_callback() for login in logins]
            barrier = threading.Barrier(THREADS, timeout=WAIT)
            users: list[str] = []
            errors: list[BaseException] = []

            def finish(login: Login, path: str) -> None:
                try:
                    barrier.wait()
                    users.append(login.callback(path))
                except BaseException as exc:  # reported by the main thread
                    errors.append(exc)

            threads = [threading.Thread(target=finish, args=(login, path), daemon=True)
                       for login, path in zip(logins, paths, strict=True)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=WAIT)
            assert not any(thread.is_alive() for thread in threads)
            assert not errors, errors
            return users

        for round_number in range(ROUNDS):
            connections, calls = wechat.snapshot()
            users = parallel_round(round_number)
            assert len(set(users)) == THREADS
            assert wechat.snapshot()[1] - calls == 2 * THREADS
            assert wechat.snapshot()[0] - connections <= THREADS
        # The pool holds as many connections as callbacks ever ran at once, no more:
        # 1 + ROUNDS * THREADS logins over at most THREADS connections.
        assert wechat.connections <= THREADS
        assert len(wechat.api_calls) == 2 * (1 + ROUNDS * THREADS)
    finally:
        _close_pools(app)


def test_api_requests_are_plain_gets_without_a_body(
    make_app: t.Callable[..., Flask], wechat: CountingWeChat
) -> None:
    app = _host(make_app, wechat)
    try:
        _login(app, wechat, person="jose")
        assert len(wechat.api_calls) == 2
        assert wechat.calls_with_body == []
    finally:
        _close_pools(app)
