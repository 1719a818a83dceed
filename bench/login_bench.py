"""Whole WeChat QR logins over loopback: Flask-WeChat-QR against a bare Authlib baseline.

    python bench/login_bench.py --logins 200 --latency-ms 0
    python bench/login_bench.py --logins 200 --latency-ms 30

Three server processes, each a threaded werkzeug server speaking HTTP/1.1 keep-alive:

* the simulated WeChat (``flask_wechat_qr.sandbox``): its pages (QR page, phone
  confirmation, poll) on one port, its API (``/sns/*``, where the injected latency is
  slept) on one port per site, where that site's API calls and TCP connections are
  counted;
* the host site on Flask-WeChat-QR (``bench/ours_app.py``);
* the baseline, Flask + Authlib + Flask-Login by hand (``bench/baseline_app.py``).

This process is the browser and the phone (``requests`` sessions): for each login it opens
the site's login URL, loads the QR page, confirms on the phone page (a new simulated person
for new users, the same person for returning users), polls, follows the redirect to the
site's callback (timed: token, userinfo, user resolved, session) and checks the site's home
page shows the user. With one browser (the default) the two sites take turns login by
login, so load from elsewhere on the machine falls on both alike. Then the QR render time
and the import/``init_app`` time.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import pathlib
import re
import secrets
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
from dataclasses import dataclass

import requests

HERE = pathlib.Path(__file__).resolve().parent
APP_ID = "wxbe0c000000000001"
APP_SECRET = "bench-app-secret"
RETURNING_PERSON = "zhangsan"
LOGIN_PATHS = {"ours": "/auth/wechat/login", "baseline": "/login", "handwritten": "/login"}
#: On the simulated WeChat's page port: ``POST`` with ``?ms=N`` sets its API's latency.
LATENCY_PATH = "/__bench/latency"
#: Seconds any one HTTP request, server start or thread may take before the run fails.
TIMEOUT = 60


# --- the server processes ------------------------------------------------------------


def serve_role(args: argparse.Namespace) -> None:
    """Run one server (``--serve ROLE``) until stdin closes; print its ports first."""
    sys.path.insert(0, str(HERE))
    from keepalive_server import serve, with_stats

    database_uri = args.database_uri
    if args.serve == "sandbox":
        ports = _serve_sandbox(args, database_uri, serve, with_stats)
        profile = None
    else:
        if args.serve == "ours":
            from ours_app import create_app
        else:
            from baseline_app import create_app
        app = create_app(open_base=args.open_base, api_base=args.api_base, app_id=APP_ID,
                         app_secret=APP_SECRET, database_uri=database_uri)
        wsgi, profile = _profiled(app) if args.profile else (app, None)
        ports = {"port": serve(with_stats(wsgi)).server_port}
    print(json.dumps(ports), flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    if profile is not None:
        profile.dump_stats(args.profile)


def _serve_sandbox(args: argparse.Namespace, database_uri: str, serve: t.Any,
                   with_stats: t.Any) -> dict[str, t.Any]:
    """The sandbox's pages on one port, its API on one port per site (each counted)."""
    from flask_wechat_qr.sandbox import SandboxApp, create_sandbox_app

    sandbox = create_sandbox_app([SandboxApp(APP_ID, APP_SECRET, "Benchmark", "127.0.0.1")],
                                 database_uri=database_uri)
    latency = [args.latency_ms / 1000]  # POST /__bench/latency?ms=N changes it
    api_servers = {}
    api_calls: dict[str, t.Iterator[int]] = {}
    counted: dict[str, int] = {}

    def api_for(label: str) -> t.Any:
        api_calls[label], counted[label] = itertools.count(1), 0

        def api(environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
            if environ.get("PATH_INFO", "").startswith("/sns/"):
                counted[label] = next(api_calls[label])
                if latency[0]:
                    time.sleep(latency[0])  # the round trip to WeChat
            return sandbox(environ, start_response)

        return api

    for label in args.api_for.split(","):
        api_servers[label] = serve(api_for(label))
    def set_latency(environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        if environ.get("PATH_INFO") != LATENCY_PATH:
            return sandbox(environ, start_response)
        latency[0] = float(environ.get("QUERY_STRING", "").removeprefix("ms=")) / 1000
        start_response("204 No Content", [])
        return [b""]

    open_server = serve(with_stats(set_latency, lambda: {"api": {
        label: {"connections": server.accepted, "calls": counted[label]}
        for label, server in api_servers.items()}}))
    return {"open": open_server.server_port,
            "api": {label: server.server_port for label, server in api_servers.items()}}


def _profiled(app: t.Any) -> tuple[t.Any, t.Any]:
    """``app`` with cProfile around each of its requests (one at a time: --concurrency 1).
    Wall-clock timer: waits show as socket reads and database commits."""
    import cProfile

    profile = cProfile.Profile()

    def wsgi(environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        profile.enable()
        try:
            result = app(environ, start_response)
            try:
                return [b"".join(result)]
            finally:
                if hasattr(result, "close"):
                    result.close()
        finally:
            profile.disable()

    return wsgi, profile


@dataclass
class Server:
    name: str
    process: subprocess.Popen[str]
    ports: dict[str, int]

    def url(self, port: str = "port") -> str:
        return f"http://127.0.0.1:{self.ports[port]}"

    def api_url(self, label: str) -> str:
        return f"http://127.0.0.1:{self.ports['api'][label]}"

    def stats(self, port: str = "port") -> dict[str, t.Any]:
        resp = requests.get(self.url(port) + "/__bench/stats", timeout=TIMEOUT)
        resp.raise_for_status()
        return t.cast(dict, resp.json())

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            if self.process.stdin:
                self.process.stdin.close()
        try:
            self.process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=TIMEOUT)


def start_server(role: str, database_uri: str, **options: t.Any) -> Server:
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--serve", role,
               "--database-uri", database_uri]
    for key, value in options.items():
        if value is not None:
            command += [f"--{key.replace('_', '-')}", str(value)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
    ready, _, _ = select.select([process.stdout], [], [], TIMEOUT)
    line = process.stdout.readline() if ready and process.stdout else ""
    if not line:
        process.kill()
        process.wait(timeout=TIMEOUT)
        raise RuntimeError(f"the {role} server did not start")
    return Server(role, process, json.loads(line))


class Databases:
    """One database per server process: SQLite files in ``folder``, or one schema each on
    a PostgreSQL server."""

    def __init__(self, server_url: str | None, folder: pathlib.Path, run_id: str) -> None:
        self.server_url = server_url
        self.folder = folder
        self.run_id = run_id.replace("-", "_")
        self.schemas: list[str] = []

    def uri(self, label: str) -> str:
        if not self.server_url:
            return f"sqlite:///{self.folder / f'{label}-{self.run_id}.db'}"
        import sqlalchemy as sa

        schema = f"bench_{self.run_id}_{label}"
        engine = sa.create_engine(self.server_url)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        finally:
            engine.dispose()
        self.schemas.append(schema)
        separator = "&" if "?" in self.server_url else "?"
        return f"{self.server_url}{separator}options=-csearch_path%3D{schema}"

    def describe(self) -> str:
        if not self.server_url:
            return f"SQLite files in {self.folder}"
        import sqlalchemy as sa

        return f"PostgreSQL at {sa.make_url(self.server_url).render_as_string()}"

    def drop(self) -> None:
        if not self.schemas:
            return
        import sqlalchemy as sa

        engine = sa.create_engine(t.cast(str, self.server_url))
        try:
            with engine.begin() as conn:
                for schema in self.schemas:
                    conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        finally:
            engine.dispose()
        self.schemas.clear()


# --- the browser and the phone ---------------------------------------------------------


@dataclass
class Site:
    label: str
    server: Server
    login_path: str


@dataclass
class Result:
    site: str
    users: str
    logins: int
    seconds: float
    callback_ms: list[float]
    app_ms: list[float]
    api_calls: int
    api_connections: int
    cpu_seconds: float
    peak_rss_kb: int
    rss_kb: int | None

    @property
    def logins_per_second(self) -> float:
        return self.logins / self.seconds

    def percentile(self, values: list[float], fraction: float) -> float:
        ordered = sorted(values)
        return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def one_login(browser: requests.Session, phone: requests.Session, site: Site,
              wechat: Server, person: dict[str, str]) -> tuple[float, float, str]:
    """A whole login in a fresh browser; callback seconds, seconds in the site, user id."""
    browser.cookies.clear()
    started = time.perf_counter()
    resp = browser.get(site.server.url() + site.login_path, allow_redirects=False,
                       timeout=TIMEOUT)
    in_site = time.perf_counter() - started
    assert resp.status_code == 302, resp.text
    qr_page = resp.headers["Location"].split("#")[0]
    assert qr_page.startswith(wechat.url("open") + "/connect/qrconnect?"), qr_page
    page = browser.get(qr_page, timeout=TIMEOUT)
    match = re.search(r'data-uuid="([^"]+)"', page.text)
    assert match, page.text
    confirm = f"{wechat.url('open')}/connect/confirm/{match.group(1)}"
    phone.get(confirm, timeout=TIMEOUT).raise_for_status()
    phone.post(confirm, data={"action": "allow", **person}, timeout=TIMEOUT).raise_for_status()
    answer = browser.get(wechat.url("open") + "/connect/l/qrconnect",
                         params={"uuid": match.group(1)}, timeout=TIMEOUT).json()
    assert answer["status"] == "confirmed", answer
    started = time.perf_counter()
    resp = browser.get(answer["redirect"], allow_redirects=False, timeout=TIMEOUT)
    callback = time.perf_counter() - started
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/"), resp.text
    home = browser.get(site.server.url() + "/", timeout=TIMEOUT).text
    assert home.startswith("logged in as "), home
    return callback, in_site + callback, home.split()[3]


def run_logins(sites: list[Site], wechat: Server, users: str, count: int, warmup: int,
               concurrency: int) -> list[Result]:
    """``warmup`` then ``count`` measured logins per site, of new users or of one returning
    user. Several sites take turns login by login (one browser at a time), so a load that
    comes and goes on the machine falls on all of them alike; with ``concurrency`` browsers
    at once there must be one site, and its logins/s is measured on the wall clock."""
    assert len(sites) == 1 or concurrency == 1
    serial = itertools.count()
    # A nickname typed again is the person of before (the sandbox): each run's new users
    # are new to every earlier run too.
    batch = secrets.token_hex(3)

    def person(site: Site) -> dict[str, str]:
        if users == "returning":
            return {"person": RETURNING_PERSON}
        return {"person": "new", "nickname": f"{site.label} 新用户 {batch}-{next(serial)} 🐼"}

    with requests.Session() as browser, requests.Session() as phone:
        for _ in range(warmup):
            for site in sites:
                one_login(browser, phone, site, wechat, person(site))
    before = wechat.stats("open")["api"]
    site_before = {site.label: site.server.stats() for site in sites}
    timings: dict[str, list[tuple[float, float, float]]] = {site.label: [] for site in sites}
    user_ids: dict[str, set[str]] = {site.label: set() for site in sites}
    errors: list[BaseException] = []
    todo = iter(range(count))
    lock = threading.Lock()

    def worker() -> None:
        with requests.Session() as browser, requests.Session() as phone:
            while True:
                with lock:
                    if errors or next(todo, None) is None:
                        return
                for site in sites:
                    try:
                        started = time.perf_counter()
                        callback, in_site, user_id = one_login(browser, phone, site, wechat,
                                                               person(site))
                        whole = time.perf_counter() - started
                    except BaseException as exc:
                        with lock:
                            errors.append(exc)
                        return
                    with lock:
                        timings[site.label].append((whole, callback * 1000, in_site * 1000))
                        user_ids[site.label].add(user_id)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIMEOUT + count * len(sites) * 5)
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError(f"{users}: logins did not finish")
    after = wechat.stats("open")["api"]
    results = []
    for site in sites:
        done = timings[site.label]
        expected_users = count if users == "new" else 1
        if len(done) != count or len(user_ids[site.label]) != expected_users:
            raise RuntimeError(f"{site.label} {users}: {len(done)} logins, "
                               f"{len(user_ids[site.label])} users")
        site_after = site.server.stats()
        results.append(Result(
            site.label, users, count,
            wall if len(sites) == 1 else sum(whole for whole, _, _ in done),
            [callback for _, callback, _ in done], [in_site for _, _, in_site in done],
            after[site.label]["calls"] - before[site.label]["calls"],
            after[site.label]["connections"] - before[site.label]["connections"],
            site_after["cpu_s"] - site_before[site.label]["cpu_s"], site_after["maxrss_kb"],
            site_after["rss_kb"]))
    return results


# --- micro benchmarks ------------------------------------------------------------------


def qr_times(distinct: int = 50, cached_calls: int = 200_000) -> dict[str, float]:
    from flask_wechat_qr.sandbox.qr import qr_svg

    contents = [f"http://127.0.0.1:5001/connect/confirm/bench-{n:04d}-qr-content"
                for n in range(distinct)]
    first = []
    for content in contents:
        started = time.perf_counter()
        qr_svg(content)
        first.append(time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(cached_calls):
        qr_svg(contents[0])
    cached = (time.perf_counter() - started) / cached_calls
    return {"first_ms": statistics.median(first) * 1000, "cached_us": cached * 1e6,
            "distinct": distinct, "cached_calls": cached_calls}


STARTUP_SCRIPT = r"""
import json, socket, sys, time
connects = []
original = socket.socket.connect
def connect(self, address):
    connects.append(address)
    return original(self, address)
socket.socket.connect = connect
started = time.perf_counter()
if sys.argv[1] == "deps-first":
    import authlib.integrations.flask_client, flask, flask_login, flask_sqlalchemy
    import qrcode, requests, sqlalchemy, werkzeug.security
deps = time.perf_counter()
import flask_wechat_qr
imported = time.perf_counter()
from flask import Flask
from flask_login import LoginManager, UserMixin
from flask_sqlalchemy import SQLAlchemy
app = Flask("startup")
app.config.update(SECRET_KEY="startup-secret-key-of-32-bytes-at-least", SQLALCHEMY_DATABASE_URI="sqlite://",
                  WECHAT_QR_APP_ID="wxstartup000000001", WECHAT_QR_APP_SECRET="secret")
db = SQLAlchemy(app)
LoginManager(app)
class User(db.Model, UserMixin):
    id = db.Column(db.Integer, primary_key=True)
loaded = set(sys.modules)
host_ready = time.perf_counter()
flask_wechat_qr.WeChatQR(app, db=db, user_model=User)
done = time.perf_counter()
print(json.dumps({"deps_ms": (deps - started) * 1000,
                  "import_ms": (imported - deps) * 1000,
                  "init_app_ms": (done - host_ready) * 1000,
                  "connects": len(connects),
                  "init_app_imports": sorted({name.split(".")[0]
                                              for name in set(sys.modules) - loaded}
                                             - set(sys.stdlib_module_names)
                                             - {"flask_wechat_qr", "sqlalchemy"})}))
"""


def startup_times(runs: int = 5) -> dict[str, t.Any]:
    """Import and init_app in fresh interpreters (median of ``runs``); -X importtime's
    slowest modules of the package."""
    found: dict[str, list[dict[str, float]]] = {"cold": [], "deps-first": []}
    for _ in range(runs):
        for mode in found:
            out = subprocess.run([sys.executable, "-c", STARTUP_SCRIPT, mode],
                                 capture_output=True, text=True, timeout=TIMEOUT, check=True)
            found[mode].append(json.loads(out.stdout))
    medians = {mode: {key: statistics.median(run[key] for run in results)
                      for key in results[0] if key != "init_app_imports"}
               for mode, results in found.items()}
    trace = subprocess.run([sys.executable, "-X", "importtime", "-c", "import flask_wechat_qr"],
                           capture_output=True, text=True, timeout=TIMEOUT, check=True).stderr
    own = []
    for line in trace.splitlines():
        parts = [part.strip() for part in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2].startswith("flask_wechat_qr"):
            own.append((int(parts[0]) / 1000, parts[2]))
    return {"medians": medians, "slowest_own_modules": sorted(own, reverse=True)[:3],
            "runs": runs, "init_app_imports": found["deps-first"][0]["init_app_imports"]}


# --- the report ----------------------------------------------------------------------


def print_table(results: list[Result], latency_ms: float, concurrency: int) -> None:
    turns = ("the sites take turns login by login" if concurrency == 1
             else "one site after the other")
    print(f"\nWhole logins over loopback, API latency {latency_ms:g} ms per call, "
          f"{concurrency} browser(s) at a time ({turns}), {results[0].logins} logins per row")
    header = ("site", "users", "logins/s", "cb p50 ms", "cb p99 ms", "site ms/login",
              "site CPU ms/login", "API calls/login", "new API conns/login", "RSS MB peak/end")
    rows = [header]
    for r in results:
        rows.append((r.site, r.users, f"{r.logins_per_second:.1f}",
                     f"{r.percentile(r.callback_ms, 0.5):.2f}",
                     f"{r.percentile(r.callback_ms, 0.99):.2f}",
                     f"{statistics.mean(r.app_ms):.2f}",
                     f"{r.cpu_seconds * 1000 / r.logins:.2f}",
                     f"{r.api_calls / r.logins:.2f}", f"{r.api_connections / r.logins:.2f}",
                     f"{r.peak_rss_kb / 1024:.1f}/{_mb(r.rss_kb)}"))
    by_key = {(r.site, r.users): r for r in results}
    for users in ("new", "returning"):
        ours, base = by_key.get(("ours", users)), by_key.get(("baseline", users))
        if ours is None or base is None:
            continue
        p50 = ours.percentile(ours.callback_ms, .5) / base.percentile(base.callback_ms, .5)
        p99 = ours.percentile(ours.callback_ms, .99) / base.percentile(base.callback_ms, .99)
        rows.append(("ours/baseline", users,
                     f"{ours.logins_per_second / base.logins_per_second:.2f}",
                     f"{p50:.2f}", f"{p99:.2f}",
                     f"{statistics.mean(ours.app_ms) / statistics.mean(base.app_ms):.2f}",
                     f"{ours.cpu_seconds / base.cpu_seconds:.2f}",
                     _ratio(ours.api_calls, base.api_calls),
                     _ratio(ours.api_connections, base.api_connections),
                     f"{ours.peak_rss_kb / base.peak_rss_kb:.2f}/"
                     f"{ours.rss_kb / base.rss_kb if ours.rss_kb and base.rss_kb else 0:.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for number, row in enumerate(rows):
        print("| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths,
                                                                         strict=True)) + " |")
        if number == 0:
            print("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    print("logins/s: whole logins (site + simulated WeChat pages + phone) per second of that "
          "site's logins; "
          "cb: the callback request (code exchange, profile, user, session); site ms/login: "
          "login redirect + callback (wall); site CPU: the site's server process (user + system, "
          "all its requests); RSS: that process, its peak since it started and at the end of the "
          "row.")


def _mb(kilobytes: int | None) -> str:
    return f"{kilobytes / 1024:.1f}" if kilobytes is not None else "?"


def _ratio(ours: int, base: int) -> str:
    return f"{ours / base:.2f}" if base else ("-" if not ours else "inf")


def print_micro(qr: dict[str, float], startup: dict[str, t.Any]) -> None:
    print(f"\nQR image (flask_wechat_qr.sandbox.qr.qr_svg): first render {qr['first_ms']:.2f} ms "
          f"(median of {qr['distinct']} distinct contents), cached {qr['cached_us']:.2f} us "
          f"per call (mean of {qr['cached_calls']} calls)")
    cold, warm = startup["medians"]["cold"], startup["medians"]["deps-first"]
    print(f"Startup (fresh interpreter, median of {startup['runs']}):")
    print(f"  import flask_wechat_qr, dependencies not yet imported: {cold['import_ms']:.1f} ms")
    print(f"  import flask_wechat_qr, dependencies already imported: {warm['import_ms']:.1f} ms "
          f"(its dependencies took {warm['deps_ms']:.1f} ms)")
    first_imports = ", ".join(startup["init_app_imports"]) or "none"
    print(f"  WeChatQR(app, db=db, user_model=User) (init_app): {warm['init_app_ms']:.1f} ms; "
          f"third-party packages it imports first: {first_imports}")
    connects = int(max(cold["connects"], warm["connects"]))
    print(f"  sockets connected during import + init_app: {connects}")
    slowest = ", ".join(f"{name} {ms:.1f} ms" for ms, name in startup["slowest_own_modules"])
    print(f"  slowest own modules (-X importtime, self time): {slowest}")


def print_profile(path: pathlib.Path, label: str, limit: int = 25) -> None:
    import pstats

    print(f"\ncProfile of {label}'s requests in its server process:")
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)


# --- main ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logins", type=int, default=200, help="measured logins per row")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="sleep before each WeChat API answer (a round trip)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured logins first")
    parser.add_argument("--concurrency", type=int, default=1, help="browsers at a time")
    parser.add_argument("--db-dir", help="where the SQLite files go (default: a temp dir)")
    parser.add_argument("--database-url",
                        help="a PostgreSQL server (postgresql://...) instead of SQLite files: "
                             "one schema per server process, dropped afterwards")
    parser.add_argument("--only", choices=("ours", "baseline"), help="one site only")
    parser.add_argument("--users", choices=("new", "returning"), help="one kind of user only")
    parser.add_argument("--no-micro", action="store_true", help="skip QR and startup times")
    parser.add_argument("--profile", nargs="?", const="", default=None,
                        help="cProfile the sites' requests (needs --concurrency 1); "
                             "in the server role: where to write the profile")
    parser.add_argument("--serve", choices=("sandbox", "ours", "baseline"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--database-uri", help=argparse.SUPPRESS)
    parser.add_argument("--open-base", help=argparse.SUPPRESS)
    parser.add_argument("--api-base", help=argparse.SUPPRESS)
    parser.add_argument("--api-for", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve_role(args)
        return 0
    if not 1 <= args.logins <= 100_000 or not 1 <= args.concurrency <= 64:
        parser.error("--logins 1..100000, --concurrency 1..64")
    if args.profile is not None and args.concurrency != 1:
        parser.error("--profile needs --concurrency 1")

    with contextlib.ExitStack() as stack:
        folder = pathlib.Path(args.db_dir or stack.enter_context(
            tempfile.TemporaryDirectory(prefix="wechat-qr-bench-")))
        folder.mkdir(parents=True, exist_ok=True)
        run_id = f"{os.getpid()}-{int(time.time())}"
        database = Databases(args.database_url, folder, run_id)
        stack.callback(database.drop)  # after the servers have stopped
        servers: list[Server] = []
        stack.callback(lambda: [server.stop() for server in reversed(servers)])
        labels = [label for label in ("ours", "baseline") if args.only in (None, label)]
        wechat = start_server("sandbox", database.uri("sandbox"),
                              latency_ms=args.latency_ms, api_for=",".join(labels))
        servers.append(wechat)
        sites = []
        profiles = {}
        for label in labels:
            profile = None
            if args.profile is not None:
                profile = folder / f"{label}-{run_id}.prof"
                profiles[label] = profile
            server = start_server(label, database.uri(label),
                                  open_base=wechat.url("open"),
                                  api_base=wechat.api_url(label), profile=profile)
            servers.append(server)
            sites.append(Site(label, server, LOGIN_PATHS[label]))

        print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, databases: "
              f"{database.describe()}; servers: threaded werkzeug, HTTP/1.1 keep-alive",
              flush=True)
        results = []
        for users in ("new", "returning"):
            if args.users and args.users != users:
                continue
            groups = [sites] if args.concurrency == 1 else [[site] for site in sites]
            for group in groups:
                results += run_logins(group, wechat, users, args.logins, args.warmup,
                                      args.concurrency)
        print_table(results, args.latency_ms, args.concurrency)
        for server in reversed(servers):
            server.stop()
        servers.clear()
        for label, path in profiles.items():
            print_profile(path, label)
    if not args.no_micro:
        print_micro(qr_times(), startup_times())
    return 0


if __name__ == "__main__":
    sys.exit(main())
