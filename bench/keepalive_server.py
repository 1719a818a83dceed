"""The benchmark's servers: the package's keep-alive handler (quiet), counting the
connections it accepts and reporting them at ``/__bench/stats``."""

from __future__ import annotations

import json
import pathlib
import resource
import threading
import typing as t

from werkzeug.serving import BaseWSGIServer, make_server

from flask_wechat_qr.sandbox.server import KeepAliveHandler

STATS_PATH = "/__bench/stats"


class _QuietHandler(KeepAliveHandler):
    def log_request(self, *args: t.Any, **kwargs: t.Any) -> None:
        return None


def serve(app: t.Any, host: str = "127.0.0.1", poll_interval: float = 0.5) -> BaseWSGIServer:
    """Serve ``app`` on a free port in a daemon thread; ``server.accepted`` counts TCP
    connections. ``poll_interval``: seconds between the loop's looks at ``shutdown()``."""
    server = make_server(host, 0, app, threaded=True, request_handler=_QuietHandler)
    server.accepted = 0  # type: ignore[attr-defined]
    server.count_lock = threading.Lock()  # type: ignore[attr-defined]

    def count() -> None:
        with server.count_lock:  # type: ignore[attr-defined]
            server.accepted += 1  # type: ignore[attr-defined]

    server.on_connection = count  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, args=(poll_interval,), daemon=True).start()
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


def thread_switches(pid: int) -> int:
    """How often the threads of process ``pid`` alive now gave up the CPU (voluntary and
    not, Linux ``/proc``): a count, steadier than CPU time on a shared machine, in which a
    thread woken for nothing, a lock waited on or a turn of the GIL shows."""
    total = 0
    for status in pathlib.Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            lines = status.read_text().splitlines()
        except OSError:
            continue  # the thread ended
        total += sum(int(line.split()[1]) for line in lines
                     if line.split(":")[0].endswith("ctxt_switches"))
    return total


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
