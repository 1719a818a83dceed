"""A benchmark site under gunicorn (gthread workers): started on fresh tables, its CPU time
read from ``/proc`` for the master and every worker, its SQL counts read from the shared
file its workers count into, stopped by its PID."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import typing as t
from dataclasses import dataclass

import requests
import sql_counter
from keepalive_server import thread_switches

HERE = pathlib.Path(__file__).resolve().parent
#: Seconds a site may take to create its tables, or to start answering.
START_TIMEOUT = 60
#: Seconds gunicorn may take to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 10
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class GunicornSite:
    label: str
    process: subprocess.Popen[bytes]
    base_url: str
    counts: pathlib.Path
    log: pathlib.Path

    def url(self, port: str = "port") -> str:
        """The site's address (``port`` as in ``login_bench.Server.url``)."""
        return self.base_url

    def cpu_seconds(self) -> float:
        """User + system CPU time of the master and its live workers so far."""
        return sum(process_cpu_seconds(pid) for pid in self._pids())

    def context_switches(self) -> int:
        """Thread switches of the master and its live workers so far (see
        :func:`keepalive_server.thread_switches`; gunicorn's own once-a-second
        housekeeping is in it too, so per login it moves with the rate)."""
        return sum(thread_switches(pid) for pid in self._pids())

    def _pids(self) -> list[int]:
        """The master's and its live workers'."""
        return [self.process.pid, *children(self.process.pid)]

    def sql(self) -> dict[str, int]:
        return sql_counter.read(self.counts)

    def stop(self) -> None:
        """SIGTERM to the master by its PID (it stops its workers), SIGKILL if it lingers."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=STOP_TIMEOUT)


def start(label: str, *, database_uri: str, open_base: str, api_base: str, workers: int,
          threads: int, folder: pathlib.Path) -> GunicornSite:
    """``label``'s site (``site_wsgi.SITE_MODULES``) under gunicorn on a free port."""
    counts = folder / f"{label}-{os.getpid()}-{time.monotonic_ns()}.sql"
    sql_counter.create(counts)
    env = {**os.environ, "BENCH_SITE": label, "BENCH_DATABASE_URI": database_uri,
           "BENCH_OPEN_BASE": open_base, "BENCH_API_BASE": api_base,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE),
                                                       os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, str(HERE / "site_wsgi.py")], env=env, check=True,
                   timeout=START_TIMEOUT)  # the tables, once
    env["BENCH_SQL_COUNTS"] = str(counts)
    port = _free_port()
    log = counts.with_suffix(".log")
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
             "--workers", str(workers), "--threads", str(threads), "--worker-class", "gthread",
             "--graceful-timeout", "2", "--log-level", "warning", "site_wsgi:create_site()"],
            env=env, stdout=out, stderr=subprocess.STDOUT)
    site = GunicornSite(label, process, f"http://127.0.0.1:{port}", counts, log)
    try:
        _wait_until_answering(site, workers)
    except BaseException:
        site.stop()
        raise
    return site


def _wait_until_answering(site: GunicornSite, workers: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if site.process.poll() is not None:
            raise RuntimeError(f"gunicorn {site.label} exited:\n{site.log.read_text()}")
        try:
            if (requests.get(site.base_url + "/", timeout=5).ok
                    and len(children(site.process.pid)) >= workers):
                return
        except requests.RequestException:
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise RuntimeError(f"gunicorn {site.label} did not start:\n{site.log.read_text()}")
        time.sleep(0.1)


def children(pid: int) -> list[int]:
    try:
        text = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def process_cpu_seconds(pid: int) -> float:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return t.cast(int, probe.getsockname()[1])
