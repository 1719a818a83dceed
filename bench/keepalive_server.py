"""A threaded werkzeug server that keeps HTTP/1.1 connections alive and counts them.

Werkzeug's development server closes every connection (it sends ``Connection: close`` and,
after each response, discards whatever the socket holds, which on a kept-alive connection
is the client's next request). This handler reads each request body in full before the
application runs, as nginx does, so the connection can stay open safely.
"""

from __future__ import annotations

import io
import json
import resource
import socket
import threading
import typing as t

from werkzeug.serving import BaseWSGIServer, DechunkedInput, WSGIRequestHandler, make_server

#: Largest request body read (the benchmark's requests are GETs and one small form).
MAX_BODY = 1 << 20
STATS_PATH = "/__bench/stats"


class KeepAliveHandler(WSGIRequestHandler):
    """One instance per accepted TCP connection; counts them on its server."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        server = t.cast(t.Any, self.server)
        with server.count_lock:
            server.accepted += 1
        # Headers and body leave in separate writes: without this, Nagle's algorithm holds
        # the body until the client's delayed ACK (40 ms) on every kept-alive response.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

    def run_wsgi(self) -> None:
        connection_stream = self.rfile
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = DechunkedInput(connection_stream).read(MAX_BODY + 1)
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

    def log_request(self, *args: t.Any, **kwargs: t.Any) -> None:
        return None


def serve(app: t.Any, host: str = "127.0.0.1") -> BaseWSGIServer:
    """Serve ``app`` on a free port in a daemon thread; ``server.accepted`` counts TCP
    connections."""
    server = make_server(host, 0, app, threaded=True, request_handler=KeepAliveHandler)
    server.accepted = 0  # type: ignore[attr-defined]
    server.count_lock = threading.Lock()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def peak_rss_kb() -> int:
    """This process's peak resident set size (Linux: kilobytes)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def current_rss_kb() -> int | None:
    """This process's resident set size now (Linux ``/proc``; ``None`` elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def with_stats(app: t.Any, extra: t.Callable[[], dict[str, t.Any]] | None = None) -> t.Any:
    """``app``, plus ``GET /__bench/stats``: this process's peak and current RSS, CPU time
    and ``extra()``."""

    def wsgi(environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        if environ.get("PATH_INFO") != STATS_PATH:
            return app(environ, start_response)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        payload = {"maxrss_kb": peak_rss_kb(), "rss_kb": current_rss_kb(),
                   "cpu_s": usage.ru_utime + usage.ru_stime,
                   **(extra() if extra else {})}
        body = json.dumps(payload).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    return wsgi
