"""A development server that keeps HTTP/1.1 connections alive, for the standalone sandbox.

Werkzeug 3's development server closes every connection: it sends ``Connection: close``
and, after each response, discards whatever the socket holds, which on a kept-alive
connection is the client's next request. This handler reads each request body in full
before the application runs (as nginx does), so a connection can stay open and the
extension's pooled session is exercised as against WeChat.
"""

from __future__ import annotations

import io
import socket
import typing as t

from werkzeug.serving import DechunkedInput, WSGIRequestHandler

#: Largest request body read; a larger one is cut and its connection closed.
MAX_BODY = 1 << 20


class KeepAliveHandler(WSGIRequestHandler):
    """One instance per accepted TCP connection. A server attribute ``on_connection`` (a
    callable), if set, is called for each new connection (tests and the benchmark count
    them)."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        on_connection = getattr(self.server, "on_connection", None)
        if callable(on_connection):
            on_connection()
        # Headers and body leave in separate writes: without this, Nagle's algorithm holds
        # the body until the client's delayed ACK (40 ms) on every kept-alive response.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

    def run_wsgi(self) -> None:
        connection_stream = self.rfile
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # A socket file: typeshed types it BufferedIOBase, Werkzeug asks for IO[bytes].
            chunked = t.cast("t.IO[bytes]", connection_stream)
            body = DechunkedInput(chunked).read(MAX_BODY + 1)
        else:
            body = connection_stream.read(int(self.headers.get("Content-Length") or 0))
        if len(body) > MAX_BODY:
            self.close_connection = True
            body = body[:MAX_BODY]
        self._body = body
        self.rfile = io.BytesIO()  # nothing left for werkzeug to discard
        try:
            super().run_wsgi()
        finally:
            self.rfile = connection_stream

    def make_environ(self) -> dict[str, t.Any]:
        environ = super().make_environ()
        environ["wsgi.input"] = io.BytesIO(self._body)
        return environ

    def send_header(self, keyword: str, value: str) -> None:
        if (keyword.lower(), value.lower()) == ("connection", "close"):
            return  # werkzeug's blanket close; a client's own "close" still ends it
        super().send_header(keyword, value)
