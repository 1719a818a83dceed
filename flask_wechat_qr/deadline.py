"""A total deadline for every call to WeChat.

``requests`` timeouts bound each wait on the socket, not the call: a server that sends its
answer a byte at a time, each just inside the timeout, holds the request (and a worker)
for as long as it likes. :class:`DeadlineAdapter` arms one shared watchdog thread with the
call's deadline; when it passes, the watchdog shuts the call's socket down, which wakes
the waiting read at once, and the call fails as a timeout. A call that ends in time costs
a heap push and pop, no thread of its own and (mostly) no wake-up of the watchdog's; its
kept-alive connection is reused as usual.
"""

from __future__ import annotations

import heapq
import itertools
import math
import socket
import ssl
import sys
import threading
import time
import typing as t
import warnings
from contextvars import ContextVar

import requests
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    LocationParseError,
    NameResolutionError,
    NewConnectionError,
)
from urllib3.util import connection as socket_connection
from urllib3.util.ssl_ import resolve_cert_reqs

from . import name_lookup
from .connection_pools import ProcessOwnAdapter
from .forked_child import (
    made_here,
    start_afresh_if_made_elsewhere,
    start_afresh_in_forked_child,
)
from .tls import context_for_this_process


class _Call:
    """One call's connections (and the sockets their answers are read from) and whether
    its deadline cut it short."""

    __slots__ = ("answer_sockets", "connections", "cut", "deadline", "expired")

    def __init__(self, deadline: float = math.inf) -> None:
        #: when (``time.monotonic``) the call must have ended
        self.deadline = deadline
        self.connections: list[HTTPConnection] = []
        #: An answer with ``Connection: close`` is read after its connection let go of the
        #: socket (``sock`` is then ``None``): a server dripping it was never cut.
        self.answer_sockets: list[socket.socket] = []
        self.expired = False
        #: whether a socket was shut down: only then may an answer be cut short
        self.cut = False

    def expire(self) -> None:
        self.expired = True
        sockets = [connection.sock for connection in list(self.connections)]
        for sock in dict.fromkeys([*sockets, *self.answer_sockets]):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes a read blocked in another thread
                    self.cut = True
                except OSError:
                    pass  # already closed


#: The call this thread (or greenlet: each has its own context) is making, while
#: :func:`total_deadline` runs.
_current_call: ContextVar[_Call | None] = ContextVar("wechat_qr_current_call", default=None)


def time_left() -> float:
    """Seconds left before the deadline of the call this thread is making (``inf`` with
    none)."""
    call = _current_call.get()
    return math.inf if call is None else call.deadline - time.monotonic()

#: A watchdog's entry, and the handle :meth:`_Watchdog.arm` gives: ``[deadline, order,
#: call]``, the call set to ``None`` once disarmed (the order is unique, so the heap never
#: compares calls).
_Entry = list[t.Any]


#: The longest the watchdog sleeps at a time, whatever the deadline (seconds).
MAX_SLEEP = 3600.0


class _Watchdog:
    """One daemon thread for the whole process, expiring calls whose deadline passed."""

    def __init__(self) -> None:
        self._order = itertools.count()
        self.start_afresh()

    def start_afresh(self) -> None:
        """An empty heap, a new lock, no thread yet: at start, in a forked child (a
        gunicorn worker of a ``--preload`` master), where only the forking thread lives on:
        none of the heap's calls runs there, their sockets are the parent's (never to be
        shut down by the child), and the lock may be held by a thread that is gone; and
        where gevent patched ``threading`` since (a greenlet waiting on an operating-system
        lock stops the worker). A thread of the heap before ends once that heap is empty."""
        self._heap: list[_Entry] = []
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None
        #: when the thread wakes by itself next: ``inf`` only when notified, ``-inf`` while
        #: it has yet to look at the heap
        self._sleeping_until = -math.inf
        #: the latest deadline ever armed
        self._latest = -math.inf
        self.made_in = made_here()

    def arm(self, deadline: float, call: _Call) -> _Entry:
        start_afresh_if_made_elsewhere(self)
        with self._wakeup:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="wechat-qr-deadline",
                                                daemon=True)
                self._thread.start()
            entry: _Entry = [deadline, next(self._order), call]
            heapq.heappush(self._heap, entry)
            self._latest = max(self._latest, deadline)
            # Woken only for a deadline before the one it sleeps to. Calls of one length
            # arm in deadline order, so steady traffic wakes it once a deadline, not once
            # a call (each wake-up is a thread switch and a turn of the GIL in a worker).
            if deadline < self._sleeping_until:
                self._wakeup.notify()
            return entry

    def disarm(self, entry: _Entry) -> None:
        """A call that ended: its connections are let go now, not at its deadline (a call
        before it may still run), and ended calls at the top of the heap leave it."""
        with self._wakeup:
            entry[2] = None
            _drop_ended(self._heap)

    def _run(self) -> None:
        heap, wakeup = self._heap, self._wakeup  # this thread's; start_afresh makes others
        with wakeup:
            while self._heap is heap or heap:
                _drop_ended(heap)
                now = time.monotonic()
                if heap and heap[0][0] <= now:
                    heapq.heappop(heap)[2].expire()
                    continue
                # To the next deadline; with none armed, to the latest one armed, which
                # calls armed meanwhile (of the same length: later) need not wake.
                self._sleeping_until = heap[0][0] if heap else self._latest
                if self._sleeping_until > now:
                    # Waking earlier than said is harmless; a wait past TIMEOUT_MAX (an
                    # infinite deadline given to total_deadline) would kill the thread.
                    wakeup.wait(min(self._sleeping_until - now, MAX_SLEEP))
                else:
                    self._sleeping_until = math.inf
                    wakeup.wait()


def _drop_ended(heap: list[_Entry]) -> None:
    while heap and heap[0][2] is None:
        heapq.heappop(heap)


_WATCHDOG = _Watchdog()


class _TrackedHTTPConnection(HTTPConnection):
    """A connection the call being made (:func:`total_deadline`) can shut down."""

    def connect(self) -> None:
        # A socket still being made (a slow name lookup, an address that does not answer)
        # is none the watchdog can shut down: a connect gets only the time left (each
        # address its own, see _EachAddressInTime), a connection made past the deadline is
        # not used, and one being set up (TLS, a proxy's tunnel) is the call's to cut.
        # Before, such a call went on for as long as its reads' timeouts let it (minutes).
        call = _current_call.get()
        if call is not None:
            left = call.deadline - time.monotonic()
            if left <= 0:
                raise ConnectTimeoutError(self, "the call's deadline passed before connecting")
            if self.timeout is None or (isinstance(self.timeout, (int, float))
                                        and self.timeout > left):
                self.timeout = left
            call.connections.append(self)
        super().connect()
        if call is not None and (call.expired or time.monotonic() >= call.deadline):
            self.close()
            raise ConnectTimeoutError(self, "connected only after the call's deadline")

    def request(self, *args: t.Any, **kwargs: t.Any) -> None:
        call = _current_call.get()
        if call is not None:
            call.connections.append(self)
        super().request(*args, **kwargs)

    def getresponse(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        # The socket the answer will be read from, kept for the deadline: the connection
        # drops it (``sock = None``) when the answer says ``Connection: close``.
        call = _current_call.get()
        if call is not None and self.sock is not None:
            call.answer_sockets.append(self.sock)
        return super().getresponse(*args, **kwargs)


class _TrackedHTTPSConnection(_TrackedHTTPConnection, HTTPSConnection):
    def connect(self) -> None:
        if self.ssl_context is None:  # urllib3's own, unless gevent patched ssl too late
            self.ssl_context = context_for_this_process(
                verify=resolve_cert_reqs(self.cert_reqs) != ssl.CERT_NONE)
        super().connect()


#: For other modules' pools: connections a :func:`total_deadline` can cut short.
TrackedHTTPSConnection = _TrackedHTTPSConnection


class _EachAddressInTime(_TrackedHTTPConnection):
    """Connects to its host's addresses one at a time, each with the time left before the
    call's deadline: urllib3 gives every address the whole connect timeout (four that do
    not answer took four times the deadline). Not for a SOCKS proxy's connections, which
    connect their own way."""

    def _new_conn(self) -> socket.socket:
        call = _current_call.get()
        if call is None:
            return super()._new_conn()
        host = self._dns_host  # as urllib3's create_connection reads it: [::1] is ::1
        host = host.strip("[]") if host.startswith("[") else host
        try:
            host.encode("idna")
        except UnicodeError:
            raise LocationParseError(f"'{host}', label empty or too long") from None
        try:  # the lookup too within the deadline: a DNS server may not answer for long
            found = name_lookup.addresses(host, self.port,
                                          socket_connection.allowed_gai_family(),
                                          socket.SOCK_STREAM,
                                          timeout=call.deadline - time.monotonic())
        except socket.gaierror as error:
            raise NameResolutionError(self.host, self, error) from error
        except TimeoutError as error:
            raise ConnectTimeoutError(self, f"Looking up {self.host} took longer than the "
                                      "call's deadline") from error
        failure: OSError | None = None
        for *_, address in found:
            left = call.deadline - time.monotonic()
            if left <= 0:
                break
            timeout = left if not isinstance(self.timeout, (int, float)) else min(
                self.timeout, left)
            try:
                sock = socket_connection.create_connection(
                    (str(address[0]), self.port), timeout, source_address=self.source_address,
                    socket_options=self.socket_options)
            except OSError as error:
                failure = error
                continue
            sys.audit("http.client.connect", self, self.host, self.port)  # as urllib3 does
            return sock
        if not found:
            raise NewConnectionError(self, f"{self.host} resolved to no address")
        if failure is None or isinstance(failure, TimeoutError):
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out within "
                                      "the call's deadline") from failure
        raise NewConnectionError(
            self, f"Failed to establish a new connection: {failure}") from failure


class _EachAddressInTimeHTTPS(_EachAddressInTime, _TrackedHTTPSConnection):
    pass


class total_deadline:  # a context manager named as the function it was
    """Shut down, once ``seconds`` have passed, every tracked connection this thread uses
    inside the block (a streamed download included); ``.expired`` on what it yields tells
    whether the deadline cut it. A class, not a generator under ``contextmanager``: it
    runs at every call to WeChat's API, where contextlib's four calls for a generator cost
    more than the rest of it."""

    __slots__ = ("_armed", "_current", "_seconds")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    def __enter__(self) -> _Call:
        call = _Call(time.monotonic() + self._seconds)
        self._current = _current_call.set(call)
        self._armed = _WATCHDOG.arm(call.deadline, call)
        return call

    def __exit__(self, *exc_info: object) -> None:
        _WATCHDOG.disarm(self._armed)
        _current_call.reset(self._current)


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _EachAddressInTime


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _EachAddressInTimeHTTPS


def _socks_pools() -> dict[str, type[HTTPConnectionPool]] | None:
    """Pools of tracked connections through a SOCKS proxy (``socks5h://`` in
    ``HTTPS_PROXY``), where PySocks, which requests needs for one, is installed."""
    with warnings.catch_warnings():  # urllib3 warns before it raises, without PySocks
        warnings.simplefilter("ignore")
        try:
            from urllib3.contrib import socks
        except ImportError:
            return None

    class TrackedSOCKSConnection(_TrackedHTTPConnection, socks.SOCKSConnection):
        pass

    class TrackedSOCKSHTTPSConnection(_TrackedHTTPSConnection, socks.SOCKSHTTPSConnection):
        pass

    class SOCKSPool(socks.SOCKSHTTPConnectionPool):
        ConnectionCls = TrackedSOCKSConnection

    class SOCKSHTTPSPool(socks.SOCKSHTTPSConnectionPool):
        ConnectionCls = TrackedSOCKSHTTPSConnection

    return {"http": SOCKSPool, "https": SOCKSHTTPSPool}


#: The largest answer a call reads (bytes, after any content decoding). WeChat's API answers
#: are under 2 KB and its pages a few; a bigger one is refused, not held in a worker's memory.
MAX_ANSWER_BYTES = 256 * 1024


class AnswerTooLarge(requests.RequestException):
    """An answer longer than :data:`MAX_ANSWER_BYTES`: not read further."""


class DeadlineAdapter(ProcessOwnAdapter):
    """``requests``' adapter, each call of which ends within ``deadline`` seconds in all
    (connecting, waiting for the answer, reading it), else raises ``requests.Timeout``; an
    answer longer than ``max_bytes`` raises :class:`AnswerTooLarge`."""

    def __init__(self, deadline: float, max_bytes: int = MAX_ANSWER_BYTES,
                 **kwargs: t.Any) -> None:
        self.deadline = deadline
        self.max_bytes = max_bytes
        super().__init__(**kwargs)

    pool_classes = {"http": _HTTPPool, "https": _HTTPSPool}
    socks_pool_classes = _socks_pools()

    def send(self, request: requests.PreparedRequest, *args: t.Any,
             **kwargs: t.Any) -> requests.Response:
        if kwargs.get("stream"):
            raise ValueError("a deadline needs the whole answer read within the call")
        too_late = f"no complete answer within {self.deadline:g} seconds"
        with total_deadline(self.deadline) as call:
            try:
                response = super().send(request, *args, **{**kwargs, "stream": True})
                self._read_at_most(response)  # within the deadline, not later by the session
            except requests.RequestException as error:
                if call.expired:
                    raise requests.Timeout(too_late) from error
                raise
            except (OSError, ValueError) as error:
                # A read of the socket the deadline shut down may fail outside requests'
                # errors: eventlet's TLS read raises ValueError ("Read on closed or
                # unwrapped SSL socket"), which pages and `check --live` took for a bug.
                if call.cut:
                    raise requests.Timeout(too_late) from error
                raise
        if call.cut:  # an answer read until the socket was shut: cut short, not whole
            response.close()
            raise requests.Timeout(too_late)
        return response

    def _read_at_most(self, response: requests.Response) -> None:
        """Read the whole answer into ``response.content``, or refuse one that is longer
        than ``max_bytes`` (its connection dropped, not reused)."""
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(16 * 1024):
            size += len(chunk)
            if size > self.max_bytes:
                response.close()
                raise AnswerTooLarge(f"an answer longer than {self.max_bytes} bytes",
                                     response=response)
            chunks.append(chunk)
        # What ``response.content`` would have read, kept as requests keeps it.
        response._content = b"".join(chunks)


start_afresh_in_forked_child(_WATCHDOG)
