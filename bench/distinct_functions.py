"""Distinct Python functions one login runs, per request, in our site and in the best
hand-written handler's: the measure that still tells the two apart once instructions are
equal (bench/README.md, fifteenth slice: a function the caches lost costs this machine
1.5-2.5 us however little it does).

    python bench/distinct_functions.py                      # a returning login
    python bench/distinct_functions.py --users new --list callback

Each site runs in a process of its own (SQLite in WAL, as docs/deploying.rst advises),
served by the keep-alive server the other benchmarks use, against the built-in sandbox in
another process. After ``--warmup`` logins (every returning person at least twice), the
next login is watched with ``sys.setprofile`` (the collector off meanwhile), its requests
told apart by path: the start, the callback and the next page. The report gives each
request's distinct functions and calls on both sites; ``--list REQUEST`` also names the
functions only one site runs there. Counts, not times: the same each run.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import pathlib
import subprocess
import sys
import sysconfig
import tempfile
import threading
import types
import typing as t
import uuid

import requests
from keepalive_server import serve
from login_bench import LOGIN_PATHS, Databases, Server, Site, one_login, start_server
from versus_bench import RETURNING_PEOPLE

HERE = pathlib.Path(__file__).resolve().parent
STDLIB = sysconfig.get_paths()["stdlib"]
REQUESTS = ("start", "callback", "next page")
#: A function: (request, file, first line, qualified name).
Function = tuple[str, str, int, str]


def request_of(path: str) -> str:
    """Which request of a login a path is (the next page is the site's ``/``)."""
    if path.endswith("/callback"):
        return "callback"
    return "next page" if path == "/" else "start"


def serve_site() -> None:
    """The site (``BENCH_SITE``), with two paths of its own: ``/__watch/on`` starts
    counting, ``/__watch/off`` stops and answers the counts as JSON."""
    import site_wsgi

    site = site_wsgi.create_site()
    seen: collections.Counter[Function] = collections.Counter()
    current = ["start"]

    def watch(frame: types.FrameType, event: str, _arg: object) -> None:
        if event == "call":
            code = frame.f_code
            seen[(current[0], code.co_filename, code.co_firstlineno, code.co_qualname)] += 1

    def app(environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]
            ) -> t.Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/__watch/on":
            seen.clear()
            gc.collect()
            gc.disable()
            threading.setprofile(watch)  # type: ignore[arg-type]
            sys.setprofile(watch)  # type: ignore[arg-type]
            start_response("204 No Content", [])
            return []
        if path == "/__watch/off":
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]
            gc.enable()
            body = json.dumps([[*key, n] for key, n in seen.items()]).encode()
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        current[0] = request_of(path)
        return site(environ, start_response)  # type: ignore[no-any-return]

    server = serve(app)
    print(server.server_port, flush=True)
    sys.stdin.read()  # until the benchmark closes it
    server.shutdown()


def watch_one_login(site: str, databases: Databases, wechat: Server, users: str,
                    warmup: int) -> list[tuple[Function, int]]:
    """The functions (and their calls) of ``site``'s login after ``warmup`` others."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "BENCH_SITE": site,
           "BENCH_OPEN_BASE": wechat.url("open"), "BENCH_API_BASE": wechat.api_url(site),
           "BENCH_DATABASE_URI": databases.uri(site), "BENCH_SQLITE_WAL": "1"}
    env.pop("BENCH_SQL_COUNTS", None)
    process = subprocess.Popen([sys.executable, __file__, "--serve"], env=env, cwd=HERE,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        served = Site(site, Server(site, process, {"port": port}), LOGIN_PATHS[site])
        with requests.Session() as browser, requests.Session() as phone:
            for i in range(warmup + 1):
                person = ({"person": RETURNING_PEOPLE[i % len(RETURNING_PEOPLE)]}
                          if users == "returning" else
                          {"person": "new", "nickname": f"新用户 {uuid.uuid4().hex[:8]} 🐼"})
                if i == warmup:
                    browser.get(served.server.url() + "/__watch/on",
                                timeout=30).raise_for_status()
                one_login(browser, phone, served, wechat, person)
            answer = browser.get(served.server.url() + "/__watch/off", timeout=30)
            answer.raise_for_status()
            return [((row[0], row[1], row[2], row[3]), row[4]) for row in answer.json()]
    finally:
        Server(site, process, {}).stop()


def short(filename: str) -> str:
    """A file as the report names it: from its package (the standard library's as
    ``python/...``), this project's from its folder."""
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1]
    for folder, shown in ((str(HERE.parent) + "/", ""), (STDLIB + "/", "python/")):
        if filename.startswith(folder):
            return shown + filename[len(folder):]
    return filename


def package_of(file: str) -> str:
    """The package a file (as :func:`short` names it) belongs to; code a library generates
    (``<sqlalchemy generated ...>``) is the library's."""
    return file.strip("<").split()[0] if file.startswith("<") else file.split("/")[0]


def report(found: dict[str, list[tuple[Function, int]]], list_request: str | None
           ) -> list[str]:
    sites = list(found)
    lines = ["| request | " + " | ".join(f"{s}: functions (calls)" for s in sites)
             + " | ours - theirs |", "|---|" + "---|" * (len(sites) + 1)]
    totals = {s: [0, 0] for s in sites}
    for request in REQUESTS:
        cells, counts = [], []
        for s in sites:
            rows = [(f, n) for f, n in found[s] if f[0] == request]
            counts.append(len(rows))
            totals[s][0] += len(rows)
            totals[s][1] += sum(n for _, n in rows)
            cells.append(f"{len(rows)} ({sum(n for _, n in rows)})")
        lines.append(f"| {request} | " + " | ".join(cells) + f" | {counts[0] - counts[1]:+d} |")
    lines.append("| whole login | " + " | ".join(f"{a} ({b})" for a, b in totals.values())
                 + f" | {totals[sites[0]][0] - totals[sites[1]][0]:+d} |")
    if list_request is not None:
        named = {s: {(f[0], short(f[1]), f[3]): n for f, n in found[s]
                     if f[0] == list_request} for s in sites}
        for s in sites:
            other = next(o for o in sites if o != s)
            only = sorted(key for key in named[s] if key not in named[other])
            by_package = collections.Counter(package_of(key[1]) for key in only)
            lines.append(f"\nOnly in {s}'s {list_request}: {len(only)} functions "
                         f"({', '.join(f'{p} {n}' for p, n in by_package.most_common())})")
            lines += [f"  {named[s][key]:4d}  {key[1]}  {key[2]}" for key in only]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", choices=("returning", "new"), default="returning")
    parser.add_argument("--warmup", type=int, default=12,
                        help="logins before the watched one (at least 8: every returning "
                             "person twice)")
    parser.add_argument("--list", choices=REQUESTS, dest="list_request",
                        help="also name the functions only one site runs in this request")
    parser.add_argument("--json", type=pathlib.Path, help="also write every function here")
    parser.add_argument("--database-url",
                        help="the sites' tables on this PostgreSQL server (a schema each); "
                             "default: SQLite files in WAL")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        run_id = uuid.uuid4().hex[:8]
        databases = Databases(args.database_url, pathlib.Path(folder), run_id)
        sandbox = Databases(None, pathlib.Path(folder), run_id + "_wechat")
        wechat = start_server("sandbox", sandbox.uri("sandbox"), latency_ms=0,
                              api_for="ours,handwritten")
        try:
            found = {site: watch_one_login(site, databases, wechat, args.users, args.warmup)
                     for site in ("ours", "handwritten")}
        finally:
            wechat.stop()
            databases.drop()
            sandbox.drop()
    if args.json:
        args.json.write_text(json.dumps({s: [[*f, n] for f, n in rows]
                                         for s, rows in found.items()}))
    where = "PostgreSQL" if args.database_url else "SQLite in WAL"
    print(f"A {args.users} login after {args.warmup} ({where}, Python "
          f"{sys.version.split()[0]}): distinct Python functions per request\n")
    print("\n".join(report(found, args.list_request)))
    return 0


if __name__ == "__main__":
    if "--serve" in sys.argv:
        serve_site()
    else:
        sys.exit(main())
