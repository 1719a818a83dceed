"""A call to WeChat ends within its deadline in all, whatever the server does: an answer
dripped a byte at a time (each byte well inside the read timeout) is cut off, as a timeout;
answers in time keep their kept-alive connection."""

from __future__ import annotations

import contextlib
import math
import os
import select
import socket
import threading
import time
import typing as t

import pytest
import requests
from support import LiveServer, entered_in_another_thread, in_forked_child

from flask_wechat_qr.deadline import DeadlineAdapter

BODY = b'{"access_token":"T","openid":"o"}'
#: Bytes the server would drip if nobody stopped it: 600 at 20 ms each is 12 seconds.
DRIP_BYTES = 600
DRIP_INTERVAL = 0.02
#: The deadline of a call that is answered (through a proxy, a tunnel, TLS, all in this
#: process): far past what a loaded machine takes, so only a hung call is ever cut. A
#: deadline of 1 s there would bound the answered call too.
ANSWERED = 30.0


class DripServer:
    """A server on 127.0.0.1 answering each request slowly in one of two ways."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sent = 0
        self.connections = 0
        self.done = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)  # accept wakes up often enough to see done
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            while not self.done.is_set():
                try:
                    conn, _ = self.listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                self.connections += 1
                with conn:
                    self._answer(conn)
        finally:
            self.done.set()

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        while not self.done.is_set():
            try:
                request = conn.recv(65536)
            except OSError:
                return
            if not request:
                return
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            if self.mode == "fast":
                conn.sendall(head + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY)
                continue
            if self.mode == "drip-body":
                conn.sendall(head + b"Content-Length: %d\r\n\r\n" % DRIP_BYTES)
                payload = b" " * DRIP_BYTES
            else:  # drip the status line and headers themselves
                payload = head + b"X-Slow: " + b"x" * DRIP_BYTES
            for byte in payload:
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return  # the client gave up: what we want
                self.sent += 1
                time.sleep(DRIP_INTERVAL)
            return

    def close(self) -> None:
        self.done.set()
        self.thread.join(10)
        self.listener.close()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> t.Iterator[DripServer]:
    drip = DripServer(request.param)
    try:
        yield drip
    finally:
        drip.close()


def _session(deadline: float) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", DeadlineAdapter(deadline))
    return session


@pytest.mark.parametrize("server", ["drip-body", "drip-headers"], indirect=True)
def test_a_dripped_answer_is_cut_off_at_the_deadline(server: DripServer) -> None:
    started = time.monotonic()
    with _session(0.5) as session, pytest.raises(requests.Timeout):
        # Each byte comes well inside the 2 s read timeout: only the deadline stops it.
        session.get(f"http://127.0.0.1:{server.port}/sns/oauth2/access_token", timeout=2)
    assert time.monotonic() - started < 8  # generous: the drip alone would take 12 s
    assert 0 < server.sent < DRIP_BYTES // 2  # it was cut off, after it began


@pytest.mark.parametrize("server", ["drip-body"], indirect=True)
def test_a_connection_made_past_the_deadline_is_not_used(
        server: DripServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadline passed while the connection was still being made (a slow name lookup,
    or a first address that never answers before the next is tried): there was no socket
    for the watchdog to shut down, and the call then went on for as long as each read's
    timeout allowed (169 s for a 2 s deadline, a helper's long-run hunt, session 35).
    Each connect is given only the time left, and a connection made too late is not
    used."""
    import urllib3.util.connection

    real = urllib3.util.connection.create_connection
    given: list[float | None] = []

    def slow_to_connect(address: t.Any, timeout: t.Any = None, *args: t.Any,
                        **kwargs: t.Any) -> socket.socket:
        given.append(timeout)
        time.sleep(1.0)  # the deadline (0.5 s) passes meanwhile
        return real(address, timeout, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", slow_to_connect)
    started = time.monotonic()
    with _session(0.5) as session, pytest.raises(requests.Timeout):
        session.get(f"http://127.0.0.1:{server.port}/sns/oauth2/access_token", timeout=2)
    assert time.monotonic() - started < 6  # generous: the drip alone would take 12 s
    assert server.sent == 0  # nothing asked on the connection made too late
    assert len(given) == 1 and given[0] is not None and given[0] <= 0.5


def test_each_address_is_tried_with_the_time_left_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A host of four addresses that do not answer: urllib3 gave each the whole connect
    timeout, four times the deadline in all (a review, session 35). Each now gets what
    is left, and none is tried once the deadline passed."""
    import urllib3.util.connection

    given: list[float] = []

    def four_addresses(host: str, port: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (f"127.0.0.{n}", port))
                for n in (2, 3, 4, 5)]

    def no_answer(address: t.Any, timeout: float, *args: t.Any, **kwargs: t.Any) -> t.Any:
        given.append(timeout)
        time.sleep(min(timeout, 0.4))
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "getaddrinfo", four_addresses)
    monkeypatch.setattr(urllib3.util.connection, "create_connection", no_answer)
    with _session(1.0) as session, pytest.raises(requests.Timeout):
        session.get("http://wechat-api.test:8000/sns/oauth2/access_token", timeout=2)
    assert 2 <= len(given) <= 3  # 0.4 + 0.4 + what was left; never the fourth
    # Each given no more than what was left (about 1.0, 0.6, 0.2; less on a loaded machine).
    assert all(timeout <= 1.0 - 0.4 * tried + 0.05 for tried, timeout in enumerate(given))


@pytest.mark.parametrize("server", ["fast"], indirect=True)
def test_answers_in_time_keep_their_connection(server: DripServer) -> None:
    with _session(5) as session:
        for _ in range(20):
            resp = session.get(f"http://127.0.0.1:{server.port}/sns/userinfo", timeout=2)
            assert resp.content == BODY
    assert server.connections == 1  # one kept-alive connection for every call


@pytest.mark.parametrize("server", ["fast"], indirect=True)
def test_many_threads_each_keep_their_own_deadline(server: DripServer) -> None:
    """The one watchdog serves every thread; calls that end in time are never cut."""
    failures: list[BaseException] = []

    def calls() -> None:
        try:
            with _session(5) as session:
                for _ in range(10):
                    assert session.get(f"http://127.0.0.1:{server.port}/x",
                                       timeout=2).content == BODY
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)

    threads = [threading.Thread(target=calls) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures


def test_a_whole_answer_with_no_socket_to_cut_is_not_a_timeout() -> None:
    """An answer that comes whole from a transport with no socket (the sandbox's in-process
    one; ``responses`` in tests) while the process was too busy to get it in time: nothing
    was cut, so it is the answer (before: a 504 under load, with the answer in hand)."""
    import responses

    def slow(request: t.Any) -> tuple[int, dict[str, str], str]:
        time.sleep(0.3)  # the watchdog fires meanwhile
        return 200, {}, "whole"

    with _session(0.05) as session, responses.RequestsMock() as mock:
        mock.add_callback(responses.GET, "http://wechat.invalid/sns/x", callback=slow)
        assert session.get("http://wechat.invalid/sns/x", timeout=1).text == "whole"


def test_a_streamed_call_is_refused() -> None:
    """Streaming would read the answer after the deadline's watch ended."""
    with _session(1) as session, pytest.raises(ValueError, match="deadline"):
        session.get("http://127.0.0.1:9/", stream=True, timeout=1)


@pytest.mark.parametrize("server", ["drip-body"], indirect=True)
def test_the_client_reports_a_dripping_wechat_as_a_timeout(
    server: DripServer, make_app: t.Any
) -> None:
    """Through the extension: the callback's token exchange ends as "WeChat took too long"
    (504) within the timeout, not after the drip."""
    app = make_app(WECHAT_QR_API_BASE_URL=f"http://127.0.0.1:{server.port}",
                   WECHAT_QR_HTTP_TIMEOUT=0.5)
    client = app.test_client()
    from support import error_name, finish_login, start_login

    resp = finish_login(client, start_login(client))
    assert resp.status_code == 504 and error_name(resp) == "WeChatTimeout"
    assert 0 < server.sent < DRIP_BYTES // 2


def test_an_ended_call_is_let_go_at_once_not_at_its_deadline() -> None:
    """The watchdog keeps no call that ended, even behind one still running: a call holds its
    connections (the pool may have closed them), and at a login's rate a minute's deadline
    would keep a minute of calls alive."""
    import gc

    from flask_wechat_qr.deadline import total_deadline

    def calls_alive() -> int:
        gc.collect()
        return sum(type(o).__name__ == "_Call" and type(o).__module__ == total_deadline.__module__
                   for o in gc.get_objects())

    with _call_in_flight(60):
        alive = calls_alive()  # the running call's, and any a test before left running
        for _ in range(3):
            with total_deadline(60):
                assert calls_alive() == alive + 1
        assert calls_alive() == alive


def _call_in_flight(seconds: float) -> t.Any:
    """A call under ``total_deadline(seconds)`` running in another thread while the block
    runs (the ``_Call`` is what it yields)."""
    from flask_wechat_qr.deadline import total_deadline

    return entered_in_another_thread(lambda: total_deadline(seconds))


class _CountingCondition(threading.Condition):
    def __init__(self) -> None:
        super().__init__()
        self.notified = 0

    def notify(self, n: int = 1) -> None:
        self.notified += 1
        super().notify(n)


def _expires(watchdog: t.Any, seconds: float) -> bool:
    """Arm a call ``seconds`` from now on ``watchdog`` and never end it: whether the
    watchdog expires it (looked at for 5 seconds at most)."""
    from flask_wechat_qr.deadline import _Call

    call = _Call()
    armed = time.monotonic()
    entry = watchdog.arm(armed + seconds, call)
    try:
        while not call.expired and time.monotonic() < armed + 5:
            time.sleep(0.01)
        return call.expired
    finally:
        watchdog.disarm(entry)


def test_calls_in_time_do_not_wake_the_watchdog_each() -> None:
    """Each wake-up is a thread switch (and a turn of the GIL) in the worker: a hundred calls
    of one length that end in time wake the watchdog none of those times."""
    from flask_wechat_qr.deadline import _Call, _Watchdog

    watchdog = _Watchdog()
    watchdog._wakeup = wakeup = _CountingCondition()
    for _ in range(100):
        watchdog.disarm(watchdog.arm(time.monotonic() + 60, _Call()))
    assert wakeup.notified == 0


def test_a_shorter_deadline_after_a_longer_one_still_expires_on_time() -> None:
    """The watchdog sleeping to a far deadline is woken for a nearer one armed later."""
    from flask_wechat_qr.deadline import _Call, _Watchdog

    watchdog = _Watchdog()
    far = _Call()
    far_entry = watchdog.arm(time.monotonic() + 60, far)
    time.sleep(0.05)  # the watchdog now sleeps to the far deadline
    assert _expires(watchdog, 0.2)
    assert not far.expired
    watchdog.disarm(far_entry)


def test_after_a_quiet_spell_a_new_call_is_still_watched() -> None:
    """Once the last deadline armed has passed the watchdog sleeps until woken: the next
    call wakes it, and its deadline is kept."""
    from flask_wechat_qr.deadline import _Call, _Watchdog

    watchdog = _Watchdog()
    watchdog.disarm(watchdog.arm(time.monotonic() + 0.05, _Call()))
    time.sleep(0.3)  # past that deadline: nothing armed, nothing to wake for
    assert _expires(watchdog, 0.1)


def test_steady_calls_keep_the_watchdog_on_time_without_waking_it() -> None:
    """Between calls its heap is empty: it sleeps to the latest deadline armed (not until
    woken), so the next call of the same length needs no wake-up and is still watched.
    Only a call armed after the latest deadline passed (this thread stalled 0.2 s: a loaded
    machine) may wake it: by then it sleeps until woken, as it should."""
    from flask_wechat_qr.deadline import _Call, _Watchdog

    watchdog = _Watchdog()
    watchdog._wakeup = wakeup = _CountingCondition()
    latest, steady, unexplained = -math.inf, 0, 0

    def arm(call: _Call) -> t.Any:
        nonlocal latest, steady, unexplained
        before, deadline = wakeup.notified, time.monotonic() + 0.2
        entry = watchdog.arm(deadline, call)
        if time.monotonic() < latest:  # armed before the latest deadline passed
            steady += 1
            unexplained += wakeup.notified - before
        latest = deadline
        return entry

    for _ in range(100):  # 20 steady calls; at most 100 on a machine that keeps stalling
        watchdog.disarm(arm(_Call()))
        time.sleep(0.005)  # the watchdog looks at an empty heap between calls
        if steady >= 20:
            break
    assert steady >= 20
    held = _Call()  # one held past its deadline
    entry = arm(held)
    try:
        armed = time.monotonic()
        while not held.expired and time.monotonic() < armed + 5:
            time.sleep(0.01)
        assert held.expired
    finally:
        watchdog.disarm(entry)
    assert unexplained == 0


def test_an_endless_deadline_does_not_stop_the_watchdog() -> None:
    """``total_deadline(math.inf)``: the watchdog sleeps at most MAX_SLEEP at a time (a
    longer wait raises in its thread) and still expires the calls after it."""
    import math

    from flask_wechat_qr.deadline import _Call, _Watchdog

    watchdog = _Watchdog()
    watchdog.disarm(watchdog.arm(math.inf, _Call()))
    time.sleep(0.05)  # it sleeps to that deadline now
    assert _expires(watchdog, 0.1)
    assert watchdog._thread is not None and watchdog._thread.is_alive()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_never_cuts_its_parents_calls() -> None:
    """A gunicorn worker forked from a ``--preload`` master inherits the watchdog's heap,
    but none of those calls runs in it and their sockets are the master's: the worker's
    own watchdog starts empty, so it never shuts them down (its own calls are watched)."""
    from flask_wechat_qr.deadline import _WATCHDOG, _Call

    def own_call_cut_and_parents_left() -> bool:
        own = _Call()
        armed = time.monotonic()
        entry = _WATCHDOG.arm(armed + 0.1, own)
        # Past both deadlines, and until its own call is cut (a loaded machine may wake the
        # watchdog late).
        while (time.monotonic() < armed + 0.6 or not own.expired) \
                and time.monotonic() < armed + 5:
            time.sleep(0.01)
        _WATCHDOG.disarm(entry)
        return own.expired and not parents.expired

    with _call_in_flight(0.2) as parents:
        assert in_forked_child(own_call_cut_and_parents_left) == 0


def test_a_call_through_a_proxy_is_cut_at_its_deadline_too() -> None:
    """WeChat's API behind ``HTTP_PROXY``/``HTTPS_PROXY`` (a site whose way out is a proxy):
    requests sends such calls through pools of its own making, which no deadline watched;
    a proxy that answered a byte at a time, or not at all, held the worker."""

    def proxy(environ: t.Any, start_response: t.Any) -> t.Any:
        if "hang" in environ["QUERY_STRING"]:
            time.sleep(6)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["HTTP_HOST"].encode()]

    with LiveServer(proxy) as server, requests.Session() as session:
        session.mount("http://", adapter := DeadlineAdapter(ANSWERED))
        session.proxies = {"http": server.url}
        wechat = "http://api.weixin.test/sns/oauth2/access_token"
        assert session.get(wechat + "?code=1", timeout=30).text == "api.weixin.test"
        adapter.deadline = 1.0  # the same adapter and pool, now with a deadline to cut at
        started = time.monotonic()
        with pytest.raises(requests.Timeout):
            session.get(wechat + "?code=hang", timeout=30)  # each read may take 30 s
        assert time.monotonic() - started < 4


def test_a_proxy_dripping_its_tunnels_answer_is_cut_at_the_deadline() -> None:
    """An https proxy that answers ``CONNECT`` a byte at a time: the tunnel's socket is
    the call's before its TLS begins, so the deadline cuts it (43 s for a 1 s deadline
    before, a review's measure, session 35)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def drip(client: socket.socket) -> None:
        with client:
            try:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += client.recv(4096)
                for byte in b"HTTP/1.1 200 Connection established\r\n\r\n":
                    client.sendall(bytes([byte]))
                    time.sleep(0.3)
            except OSError:
                pass  # cut: what we want

    with _proxy_listening(listener, drip), requests.Session() as session:
        session.trust_env = False
        session.mount("https://", DeadlineAdapter(1.0))
        session.proxies = {"https": f"http://127.0.0.1:{listener.getsockname()[1]}"}
        started = time.monotonic()
        with pytest.raises(requests.Timeout):
            session.get("https://api.weixin.test/sns/oauth2/access_token", timeout=30)
        assert time.monotonic() - started < 5  # the drip alone takes 11 s


def test_an_ipv6_literal_host_is_looked_up_without_its_brackets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A host (or a proxy) written as ``[::1]``: the connect's own address loop looked up
    ``[::1]``, which no resolver knows, where urllib3 looks up ``::1`` (a review, session
    35: an ``HTTPS_PROXY`` of ``http://[::1]:3128`` failed every call)."""
    looked_up: list[str] = []

    def nowhere(host: str, *args: t.Any, **kwargs: t.Any) -> t.Any:
        looked_up.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "not here")

    monkeypatch.setattr(socket, "getaddrinfo", nowhere)
    with requests.Session() as session, pytest.raises(requests.ConnectionError):
        session.trust_env = False
        session.mount("https://", DeadlineAdapter(5.0))
        session.proxies = {"https": "http://[::1]:3128"}
        session.get("https://api.weixin.test/sns/oauth2/access_token", timeout=2)
    assert looked_up == ["::1"]


def _hanging_wechat(environ: t.Any, start_response: t.Any) -> t.Any:
    """WeChat's token endpoint on loopback: an answer at once, or none for 6 seconds for a
    query with ``hang``."""
    if "hang" in environ["QUERY_STRING"]:
        time.sleep(6)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b'{"openid": "o1"}']


def _loopback_tls(tmp_path: t.Any) -> tuple[t.Any, str]:
    """A server's TLS context for 127.0.0.1, and the file of the authority that signed it
    (for ``verify=``)."""
    import ssl

    import trustme

    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return context, str(tmp_path / "ca.pem")


@contextlib.contextmanager
def tunnelling_proxy() -> t.Iterator[str]:
    """An https proxy's way on loopback: ``CONNECT host:port`` opens a tunnel to that port on
    127.0.0.1 (whatever the host); its URL."""
    listener = socket.create_server(("127.0.0.1", 0))

    def tunnel(client: socket.socket) -> None:
        try:
            relay(client)
        except OSError:
            pass  # either end went away

    def relay(client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                head += client.recv(4096)
            port = int(head.split(b" ")[1].rsplit(b":", 1)[1])
            with socket.create_connection(("127.0.0.1", port)) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                _pass_on(client, upstream)

    with _proxy_listening(listener, tunnel):
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def _pass_on(client: socket.socket, upstream: socket.socket) -> None:
    """Bytes both ways until either end closes, or 10 seconds of silence."""
    ends = [client, upstream]
    while True:
        ready, _, _ = select.select(ends, [], [], 10)
        if not ready:
            return
        for end in ready:
            data = end.recv(65536)
            if not data:
                return
            (upstream if end is client else client).sendall(data)


@contextlib.contextmanager
def _proxy_listening(listener: socket.socket,
                     handle: t.Callable[[socket.socket], None]) -> t.Iterator[None]:
    """Each connection to ``listener`` handled in a thread of its own, until the block ends."""

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(client,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield
    finally:
        listener.close()


@contextlib.contextmanager
def socks5_proxy() -> t.Iterator[str]:
    """A SOCKS5 proxy on loopback (no authentication, ``CONNECT`` only): each connection
    goes on to that port on 127.0.0.1, whatever the host; its ``socks5h://`` URL."""
    listener = socket.create_server(("127.0.0.1", 0))

    def exactly(client: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            more = client.recv(size - len(data))
            if not more:
                raise OSError("the client went away")
            data += more
        return data

    def handle(client: socket.socket) -> None:
        try:
            with client:
                _version, methods = exactly(client, 2)
                exactly(client, methods)
                client.sendall(b"\x05\x00")  # no authentication
                _version, _command, _reserved, kind = exactly(client, 4)
                if kind == 3:  # a host name, as socks5h sends it
                    exactly(client, exactly(client, 1)[0])
                else:
                    exactly(client, 4 if kind == 1 else 16)
                port = int.from_bytes(exactly(client, 2), "big")
                with socket.create_connection(("127.0.0.1", port)) as upstream:
                    client.sendall(b"\x05\x00\x00\x01" + bytes(4) + bytes(2))
                    _pass_on(client, upstream)
        except OSError:
            pass  # either end went away

    with _proxy_listening(listener, handle):
        yield f"socks5h://127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_call_through_a_socks_proxy_is_cut_at_its_deadline_too(
        tmp_path: t.Any, scheme: str) -> None:
    """WeChat's API behind a SOCKS proxy (``HTTPS_PROXY=socks5h://...``, with PySocks):
    urllib3 makes SOCKS connections of its own, which no deadline watched; a WeChat that
    answered a byte at a time, or not at all, held the worker for as long as it liked."""
    context, trusted = (_loopback_tls(tmp_path) if scheme == "https"
                        else (None, True))
    with LiveServer(_hanging_wechat, ssl_context=context) as server, socks5_proxy() as proxy, \
            requests.Session() as session:
        session.mount(f"{scheme}://", adapter := DeadlineAdapter(ANSWERED))
        session.proxies = {scheme: proxy}
        token = server.url + "/sns/oauth2/access_token"
        assert session.get(token + "?code=1", timeout=30,
                           verify=trusted).json() == {"openid": "o1"}
        adapter.deadline = 1.0
        started = time.monotonic()
        with pytest.raises(requests.Timeout):
            session.get(token + "?code=hang", timeout=30, verify=trusted)
        assert time.monotonic() - started < 4


def test_an_https_call_through_a_tunnelling_proxy_is_cut_at_its_deadline_too(
        tmp_path: t.Any) -> None:
    """WeChat's https API behind ``HTTPS_PROXY`` (``CONNECT``): answered through the
    tunnel, with the certificate checked, and cut at the deadline."""
    context, trusted = _loopback_tls(tmp_path)
    with LiveServer(_hanging_wechat, ssl_context=context) as server, \
            tunnelling_proxy() as proxy, requests.Session() as session:
        session.mount("https://", adapter := DeadlineAdapter(ANSWERED))
        session.proxies = {"https": proxy}
        token = server.url + "/sns/oauth2/access_token"
        assert session.get(token + "?code=1", timeout=30,
                           verify=trusted).json() == {"openid": "o1"}
        with pytest.raises(requests.exceptions.SSLError):
            session.get(token + "?code=2", timeout=30)  # the certificate is still checked
        adapter.deadline = 1.0
        started = time.monotonic()
        with pytest.raises(requests.Timeout):
            session.get(token + "?code=hang", timeout=30, verify=trusted)
        assert time.monotonic() - started < 4


def _dripping(environ: t.Any, start_response: t.Any) -> t.Iterator[bytes]:
    """An answer of 40 bytes, one each quarter of a second, on a connection the server
    closes after it (Werkzeug's server says ``Connection: close``)."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "40")])
    for _ in range(40):
        yield b"x"
        time.sleep(0.25)


def test_a_dripped_answer_on_a_closing_connection_is_cut_too() -> None:
    """With ``Connection: close`` the connection lets go of its socket before the answer
    is read: the deadline found no socket to shut, and the call took the server's 10 s."""
    with LiveServer(_dripping) as server, requests.Session() as session:
        session.mount("http://", DeadlineAdapter(1.0))
        started = time.monotonic()
        with pytest.raises(requests.Timeout):
            session.get(server.url + "/sns/oauth2/access_token", timeout=30)
        assert time.monotonic() - started < 5


#: A process under eventlet (patched first, as Flask-SocketIO's docs say), calling an https
#: WeChat that never answers through the deadline: how the call ended.
UNDER_EVENTLET = """
import eventlet
eventlet.monkey_patch()
import sys, requests
from flask_wechat_qr.deadline import DeadlineAdapter
with requests.Session() as session:
    session.mount("https://", DeadlineAdapter(1.0))
    try:
        session.get(sys.argv[1], timeout=30, verify=sys.argv[2])
    except Exception as error:
        print(type(error).__module__ + "." + type(error).__name__)
"""


@pytest.mark.parametrize("fault", ["hang", "drip"])
def test_an_https_call_cut_under_eventlet_is_a_timeout(tmp_path: t.Any, fault: str) -> None:
    """Before: eventlet's TLS read of the socket the deadline shut down raised a bare
    ValueError ("Read on closed or unwrapped SSL socket"): a login got "WeChat is not
    answering" (502, its log "not JSON") instead of "WeChat took too long", an avatar
    download a 500, ``check --live`` a traceback."""
    import ssl
    import subprocess
    import sys

    import trustme

    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))

    def wechat(environ: t.Any, start_response: t.Any) -> t.Iterator[bytes]:
        if fault == "drip":  # the headers, then a byte now and then
            start_response("200 OK", [("Content-Type", "text/plain"),
                                      ("Content-Length", "40")])
            for _ in range(40):
                yield b"x"
                time.sleep(0.25)
        else:  # answers, unless the 1 s deadline cut the call first (well before, even loaded)
            time.sleep(6)
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"{}"

    with LiveServer(wechat, ssl_context=context) as server:
        done = subprocess.run(
            [sys.executable, "-c", UNDER_EVENTLET, server.url + "/sns/oauth2/access_token",
             str(tmp_path / "ca.pem")], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "requests.exceptions.Timeout", done.stderr
