"""Flask-WeChat-QR against the best hand-written handler, both under gunicorn, runs
interleaved (A B B A A B ...), ratios with their spread.

    python bench/versus_bench.py --database-url postgresql://user@host/db   # ~20 minutes
    python bench/versus_bench.py --quick                                    # SQLite, ~3 min

The matrix: new and returning users; 1, 8 and 32 browsers at a time; SQLite files and
PostgreSQL (one schema per site, dropped afterwards); 0 and 30 ms per WeChat API call
(slept by the simulated WeChat before each answer); gunicorn 1 worker x 8 threads and 2
workers x 4 threads (one browser at a time runs on the first only). In each cell both
sites first log in a few warm-up users, then take turns for ``--pairs`` runs of
``--seconds`` each, each site first in every other pair (a load that rises or falls
through a cell, or a cache the first run warms for the second, falls on both alike); with
``--restart`` each pair runs on both sites' servers started again for it. Per
run: logins/s, the callback's p50 and p99, the site's CPU time per login (master and
workers, from ``/proc``), WeChat API calls, and the SQL statements and rows written per
login (SQLAlchemy's cursor listener in every worker of the site).
Returning users are the sandbox's four ready-made people, browser ``i`` logging in as
person ``i mod 4``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import pathlib
import random
import resource
import secrets
import statistics
import sys
import tempfile
import threading
import time
import typing as t
from dataclasses import asdict, dataclass, field

import requests
from gunicorn_sites import GunicornSite, children, process_cpu_seconds, start
from login_bench import (
    LATENCY_PATH,
    LOGIN_PATHS,
    TIMEOUT,
    Databases,
    Server,
    Site,
    one_login,
    start_server,
)

RETURNING_PEOPLE = ("zhangsan", "lisi", "xiaohua", "jose")
SQL_KINDS = ("select", "insert", "update", "delete", "commit")
#: Failed logins in one run after which the run stops and the benchmark fails.
MAX_FAILURES = 20


@dataclass
class Run:
    """One timed run of one site."""

    site: str
    logins: int
    seconds: float
    callback_ms: list[float]
    cpu_seconds: float
    context_switches: int
    api_calls: int
    sql: dict[str, int]
    #: logins that ended in an error (a 500, a timeout): counted, not timed
    failures: list[str] = field(default_factory=list)
    #: CPU time of the simulated WeChat's process and of this process (the browsers and
    #: phones) over the run: with the site's, everything a login costs the machine
    #: (0 in runs kept before they were measured)
    wechat_cpu_seconds: float = 0.0
    browsers_cpu_seconds: float = 0.0

    @property
    def logins_per_second(self) -> float:
        return self.logins / self.seconds

    def percentile(self, fraction: float) -> float:
        return percentile(self.callback_ms, fraction)

    def cpu_ms_per_login(self) -> float:
        return self.cpu_seconds * 1000 / self.logins

    def switches_per_login(self) -> float:
        return self.context_switches / self.logins

    def others_cpu_ms_per_login(self) -> float:
        """The simulated WeChat's and the browsers' CPU a login (not the site's)."""
        return (self.wechat_cpu_seconds + self.browsers_cpu_seconds) * 1000 / self.logins

    def all_cpu_ms_per_login(self) -> float:
        """The site's, the simulated WeChat's and the browsers' CPU a login: on a machine
        they keep busy, logins/s follows this, of which the site's is a part (NaN for a
        run kept before the others' CPU was measured)."""
        if not (self.wechat_cpu_seconds or self.browsers_cpu_seconds):
            return math.nan
        return self.cpu_ms_per_login() + self.others_cpu_ms_per_login()


@dataclass
class Cell:
    database: str
    workers: str
    rtt_ms: float
    clients: int
    users: str
    runs: dict[str, list[Run]] = field(default_factory=dict)

    def key(self) -> str:
        return f"{self.database} {self.workers} {self.rtt_ms:g}ms {self.clients}c {self.users}"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# --- one run -------------------------------------------------------------------------


def timed_run(site: Site, wechat: Server, users: str, clients: int, seconds: float,
              max_logins: int) -> Run:
    """``clients`` browsers logging in until ``seconds`` have passed (or ``max_logins``
    have started); each finishes the login it is in."""
    server = t.cast(GunicornSite, site.server)
    api_before, cpu_before = _api_calls(wechat, site), server.cpu_seconds()
    switches_before = server.context_switches()
    wechat_before, browsers_before = _wechat_cpu_seconds(wechat), _own_cpu_seconds()
    sql_before = server.sql()
    callbacks: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    started = [0]
    serial = itertools.count()
    # A nickname typed again is the person of before (the sandbox): each run's new users
    # are new to every earlier run too.
    batch = secrets.token_hex(3)
    deadline = time.perf_counter() + seconds

    def client(index: int) -> None:
        person = {"person": RETURNING_PEOPLE[index % len(RETURNING_PEOPLE)]}
        with requests.Session() as browser, requests.Session() as phone:
            while time.perf_counter() < deadline and len(errors) < MAX_FAILURES:
                with lock:
                    if started[0] >= max_logins:
                        return
                    started[0] += 1
                if users == "new":
                    person = {"person": "new",
                              "nickname": f"{site.label} 新用户 {batch}-{next(serial)} 🐼"}
                try:
                    callback, _, _ = one_login(browser, phone, site, wechat, person)
                except Exception as exc:  # counted, reported, not timed
                    with lock:
                        errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
                    continue
                with lock:
                    callbacks.append(callback * 1000)

    began = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + TIMEOUT)
    wall = time.perf_counter() - began
    if len(errors) >= MAX_FAILURES:
        raise RuntimeError(f"{site.label}: {len(errors)} failed logins, the first: {errors[0]}")
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError(f"{site.label}: logins did not finish")
    sql_after = server.sql()
    return Run(site.label, len(callbacks), wall, callbacks,
               server.cpu_seconds() - cpu_before, server.context_switches() - switches_before,
               _api_calls(wechat, site) - api_before,
               {kind: sql_after[kind] - sql_before[kind] for kind in sql_after}, errors,
               _wechat_cpu_seconds(wechat) - wechat_before,
               _own_cpu_seconds() - browsers_before)


def _wechat_cpu_seconds(wechat: Server) -> float:
    """User + system CPU time of the simulated WeChat's process (and any children)."""
    pid = wechat.process.pid
    return sum(process_cpu_seconds(p) for p in [pid, *children(pid)])


def _own_cpu_seconds() -> float:
    """This process's user + system CPU time: during a run, the browsers' and phones'
    threads (the main thread waits for them; its reading of the counts before and after,
    a few milliseconds a run, is in it too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _api_calls(wechat: Server, site: Site) -> int:
    return int(wechat.stats("open")["api"][site.label]["calls"])


def run_cell(cell: Cell, sites: list[Site], wechat: Server, pairs: int, seconds: float,
             max_logins: int, restart: t.Callable[[], list[Site]] | None = None) -> Cell:
    """Warm-up logins on each site (every returning person logged in once), then the
    sites take turns, one timed run each, ``pairs`` times. ``restart``: both sites' servers
    started again before each pair (and warmed up again), so the pairs sample how fast a
    process happens to be, not one process of each for the whole cell."""
    for pair in range(pairs):
        if pair and restart is not None:
            sites = restart()
        if pair == 0 or restart is not None:
            _warm_up(cell, sites, wechat)
        for site in (sites if pair % 2 == 0 else sites[::-1]):
            run = timed_run(site, wechat, cell.users, cell.clients, seconds, max_logins)
            cell.runs.setdefault(site.label, []).append(run)
    return cell


def _warm_up(cell: Cell, sites: list[Site], wechat: Server) -> None:
    for site in sites:
        warmup = max(cell.clients, len(RETURNING_PEOPLE))
        failures = timed_run(site, wechat, cell.users, cell.clients, TIMEOUT, warmup).failures
        if failures:
            print(f"{cell.key()} {site.label}: {len(failures)} failed warm-up logins, the "
                  f"first: {failures[0]}", flush=True)


# --- the matrix ----------------------------------------------------------------------


def set_latency(wechat: Server, milliseconds: float) -> None:
    requests.post(f"{wechat.url('open')}{LATENCY_PATH}?ms={milliseconds:g}",
                  timeout=TIMEOUT).raise_for_status()


def run_group(args: argparse.Namespace, database: Databases, kind: str, workers: str,
              wechat: Server, folder: pathlib.Path) -> list[Cell]:
    """Both sites under one gunicorn shape on fresh tables; every cell of that shape."""
    processes, threads = (int(n) for n in workers.split("x"))
    labels = ["ours", args.versus]
    sites: list[Site] = []
    cells = []
    uris = {label: database.uri(label) for label in labels}  # a PostgreSQL schema each

    def start_sites() -> list[Site]:
        for site in sites:
            t.cast(GunicornSite, site.server).stop()
        sites.clear()
        for label in labels:
            server = start(label, database_uri=uris[label],
                           open_base=wechat.url("open"), api_base=wechat.api_url(label),
                           workers=processes, threads=threads, folder=folder)
            sites.append(Site(label, t.cast(Server, server), LOGIN_PATHS[label]))
        return list(sites)

    try:
        start_sites()
        for rtt in args.rtt:
            set_latency(wechat, rtt)
            for clients in args.clients:
                if clients == 1 and workers != args.workers[0]:
                    continue  # one browser at a time: the shape does not matter
                for users in args.users:
                    cell = run_cell(Cell(kind, workers, rtt, clients, users), list(sites),
                                    wechat, args.pairs, args.seconds, args.max_logins,
                                    start_sites if args.restart else None)
                    print(progress_line(cell, labels), flush=True)
                    cells.append(cell)
    finally:
        for site in sites:
            t.cast(GunicornSite, site.server).stop()
    return cells


def run_matrix(args: argparse.Namespace, folder: pathlib.Path) -> list[Cell]:
    run_id = f"{os.getpid()}_{int(time.time())}"
    with contextlib.ExitStack() as stack:
        sandbox_db = Databases(args.database_url, folder, f"{run_id}_wechat")
        stack.callback(sandbox_db.drop)
        wechat = start_server("sandbox", sandbox_db.uri("sandbox"), latency_ms=0,
                              api_for=f"ours,{args.versus}")
        stack.callback(wechat.stop)
        cells = []
        for kind in args.databases:
            for workers in args.workers:
                database = Databases(args.database_url if kind == "postgresql" else None,
                                     folder, f"{run_id}_{kind}_{workers}")
                try:
                    cells += run_group(args, database, kind, workers, wechat, folder)
                finally:
                    database.drop()
        return cells


# --- the report ----------------------------------------------------------------------


def spread(values: list[float]) -> str:
    """Median (min-max)."""
    if not values:
        return "n/a"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def pair_ratios(cell: Cell, measure: t.Callable[[Run], float], ours: str = "ours"
                ) -> list[float]:
    versus = next(label for label in cell.runs if label != ours)
    pairs = [(measure(a), measure(b)) for a, b in zip(cell.runs[ours], cell.runs[versus],
                                                     strict=True)]
    return [a / b for a, b in pairs if not (math.isnan(a) or math.isnan(b))]


RATIO_MEASURES: dict[str, t.Callable[[Run], float]] = {
    "logins/s": lambda run: run.logins_per_second,
    "cb p50": lambda run: run.percentile(0.5),
    "cb p99": lambda run: run.percentile(0.99),
    "CPU/login": Run.cpu_ms_per_login,
    "all CPU/login": Run.all_cpu_ms_per_login,
}


def progress_line(cell: Cell, labels: list[str]) -> str:
    ratios = ", ".join(f"{name} {spread(pair_ratios(cell, measure))}"
                       for name, measure in RATIO_MEASURES.items())
    failed = {label: sum(len(run.failures) for run in runs) for label, runs in cell.runs.items()}
    failures = "".join(f"; {label}: {n} FAILED logins, the first: "
                       f"{next(f for run in cell.runs[label] for f in run.failures)}"
                       for label, n in failed.items() if n)
    return f"{cell.key()}: ours/{labels[1]} {ratios}{failures}"


def per_login(runs: list[Run]) -> dict[str, float]:
    logins = sum(run.logins for run in runs)
    totals: dict[str, float] = {}
    for run in runs:
        for kind, value in run.sql.items():
            totals[kind] = totals.get(kind, 0) + value
    totals["api"] = sum(run.api_calls for run in runs)
    return {kind: value / logins for kind, value in totals.items()}


def markdown(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ratio_table(cells: list[Cell]) -> str:
    header = ("database", "workers x threads", "RTT ms", "clients", "users", "runs",
              *(f"{name} ours/them" for name in RATIO_MEASURES))
    rows = [(c.database, c.workers, f"{c.rtt_ms:g}", str(c.clients), c.users,
             str(len(c.runs["ours"])),
             *(spread(pair_ratios(c, measure)) for measure in RATIO_MEASURES.values()))
            for c in cells]
    return markdown(header, rows)


#: Which way is better for us, per ratio: above 1 for logins/s, below 1 for times and CPU.
HIGHER_IS_BETTER = {"logins/s": True, "cb p50": False, "cb p99": False, "CPU/login": False,
                    "all CPU/login": False}
#: The summary's measures (the callback's p50 is in the full table).
SUMMARY_MEASURES = ("logins/s", "CPU/login", "cb p99", "all CPU/login")


#: Fewest pairs whose geometric mean :func:`summary_table` gives an interval for.
MIN_PAIRS_FOR_INTERVAL = 5


def interval(ratios: list[float], resamples: int = 4000) -> tuple[float, float]:
    """The 90% interval of the ratios' geometric mean, bootstrapped (the pairs resampled
    with replacement, a fixed seed: the same report from the same runs). Whole above or
    below 1, the difference is larger than this machine's noise; across 1, it is not."""
    pick = random.Random(0).choices
    logs = [math.log(r) for r in ratios]
    means = sorted(math.fsum(pick(logs, k=len(logs))) / len(logs) for _ in range(resamples))
    return math.exp(means[int(0.05 * resamples)]), math.exp(means[int(0.95 * resamples) - 1])


def summary_table(cells: list[Cell]) -> str:
    """Every pair of a group of cells pooled: one cell's 3 pairs say little on a noisy
    machine, the 12-24 pairs of a database, kind of user and load say more. Per measure:
    the geometric mean of the pairs' ratios, its 90% interval where there are enough pairs
    (:func:`interval`), and how many pairs were at or better than parity."""
    groups: dict[tuple[str, str, str], list[Cell]] = {}
    for c in cells:
        load = "one at a time" if c.clients == 1 else "8 or 32 at a time"
        groups.setdefault((c.database, c.users, load), []).append(c)
    header = ("database", "users", "browsers", "pairs",
              *(f"{name} ours/them" for name in SUMMARY_MEASURES))
    rows = []
    for (database, users, load), group in groups.items():
        columns = []
        for name in SUMMARY_MEASURES:
            ratios = [r for c in group for r in pair_ratios(c, RATIO_MEASURES[name])]
            better = sum((r >= 1) if HIGHER_IS_BETTER[name] else (r <= 1) for r in ratios)
            # a run with no login (all failed) has no ratio to average
            mean = "n/a"
            if ratios and min(ratios) > 0:
                mean = f"{statistics.geometric_mean(ratios):.3f}"
                if len(ratios) >= MIN_PAIRS_FOR_INTERVAL:
                    low, high = interval(ratios)
                    mean += f" [{low:.3f}-{high:.3f}]"
            columns.append(f"{mean} ({better} of {len(ratios)} at or better than 1)"
                           if ratios else "n/a")
        rows.append((database, users, load,
                     str(sum(len(c.runs["ours"]) for c in group)), *columns))
    return markdown(header, rows)


def site_table(cells: list[Cell]) -> str:
    header = ("database", "workers x threads", "RTT ms", "clients", "users", "site",
              "logins", "failed", "logins/s", "cb p50 ms", "cb p99 ms", "CPU ms/login",
              "WeChat + browsers CPU ms/login", "thread switches/login",
              "API calls/login", "SQL/login (S/I/U/D, commits)", "rows written/login")
    rows = []
    for c in cells:
        for label, runs in c.runs.items():
            callbacks = [ms for run in runs for ms in run.callback_ms]
            counts = per_login(runs)
            kinds = "/".join(f"{counts[kind]:.2f}" for kind in SQL_KINDS[:4])
            rows.append((c.database, c.workers, f"{c.rtt_ms:g}", str(c.clients), c.users,
                         label, str(sum(run.logins for run in runs)),
                         str(sum(len(run.failures) for run in runs)),
                         f"{statistics.median(run.logins_per_second for run in runs):.1f}",
                         f"{percentile(callbacks, 0.5):.1f}",
                         f"{percentile(callbacks, 0.99):.1f}",
                         f"{statistics.median(run.cpu_ms_per_login() for run in runs):.2f}",
                         _others_cpu(runs),
                         f"{statistics.median(run.switches_per_login() for run in runs):.1f}",
                         f"{counts['api']:.2f}",
                         f"{counts['statements']:.2f} ({kinds}, {counts['commit']:.2f})",
                         f"{counts['rows_written']:.2f}"))
    return markdown(header, rows)


def _others_cpu(runs: list[Run]) -> str:
    """The simulated WeChat's and the browsers' CPU a login, median of the runs ("n/a" for
    runs kept before it was measured)."""
    if not any(run.wechat_cpu_seconds or run.browsers_cpu_seconds for run in runs):
        return "n/a"
    return f"{statistics.median(run.others_cpu_ms_per_login() for run in runs):.2f}"


def print_report(cells: list[Cell], args: argparse.Namespace,
                 load: tuple[float, ...] | None) -> None:
    """The report; ``load``: the load average at the start (``None``: a kept run again)."""
    versus = next(label for label in cells[0].runs if label != "ours")
    if load is None:
        print(f"\nThe runs kept in {args.report}, ours against {versus}")
    else:
        print(f"\nPython {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
              f"{load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; "
              f"{args.pairs} pairs of {args.seconds:g} s runs per cell, ours against {versus}, "
              "each first in every other pair")
        print("SQLite (both sites): " + (
            "write-ahead log, synchronous=NORMAL, busy timeout 5 s (docs/deploying.rst's "
            "advice)" if args.sqlite_wal else "as created (rollback journal, synchronous=FULL)"))
    print(f"\nours/{versus}, every pair of each group (geometric mean [its 90% interval, "
          f"from {MIN_PAIRS_FOR_INTERVAL} pairs]):\n")
    print(summary_table(cells))
    print(f"\nours/{versus}, median (min-max) of the pairs' ratios:\n")
    print(ratio_table(cells))
    print("\nPer site (logins/s and CPU: median of the runs; p50/p99: all the runs' callbacks;"
          " counts: per login over all the runs):\n")
    print(site_table(cells))


# --- main ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 pairs of 1.5 s runs per cell, SQLite only unless "
                             "--databases says otherwise")
    parser.add_argument("--pairs", type=int, help="timed runs of each site per cell (3)")
    parser.add_argument("--seconds", type=float, help="length of each timed run (4)")
    parser.add_argument("--max-logins", type=int, default=100_000,
                        help="at most this many logins per run (the smoke test uses 3)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"),
                        help="a PostgreSQL server (default $BENCH_DATABASE_URL)")
    parser.add_argument("--databases", type=_words({"sqlite", "postgresql"}))
    parser.add_argument("--rtt", type=_numbers, default=[0.0, 30.0],
                        help="ms per WeChat API call, comma-separated (0,30)")
    parser.add_argument("--clients", type=_numbers, default=[1, 8, 32],
                        help="browsers at a time, comma-separated (1,8,32)")
    parser.add_argument("--users", type=_words({"new", "returning"}),
                        default=["new", "returning"])
    parser.add_argument("--workers", type=_words(None), default=["1x8", "2x4"],
                        help="gunicorn workers x threads, comma-separated (1x8,2x4)")
    parser.add_argument("--restart", action="store_true",
                        help="start both sites' servers again before every pair: the "
                             "spread then includes how fast each new process happens to "
                             "be (a few seconds more per pair)")
    parser.add_argument("--versus", choices=("handwritten", "baseline"), default="handwritten")
    parser.add_argument("--sqlite-wal", action="store_true",
                        help="both sites run SQLite as docs/deploying.rst advises (WAL, "
                             "synchronous=NORMAL, busy timeout)")
    parser.add_argument("--db-dir", help="where SQLite files and logs go (default: temp dir)")
    parser.add_argument("--json", help="also write every run's figures to this file")
    parser.add_argument("--report", metavar="JSON",
                        help="run nothing: print the report of a --json file again")
    args = parser.parse_args(argv)
    args.pairs = args.pairs or (2 if args.quick else 3)
    args.seconds = args.seconds or (1.5 if args.quick else 4.0)
    args.clients = [int(n) for n in args.clients]
    if args.databases is None:
        args.databases = ["sqlite"] + ([] if args.quick or not args.database_url
                                       else ["postgresql"])
    if "postgresql" in args.databases and not args.database_url:
        parser.error("postgresql needs --database-url (or $BENCH_DATABASE_URL)")
    if not all(1 <= n <= 64 for n in args.clients) or not 1 <= args.pairs <= 50:
        parser.error("--clients 1..64, --pairs 1..50")
    return args


def _words(allowed: set[str] | None) -> t.Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        words = [word.strip() for word in text.split(",") if word.strip()]
        if allowed is not None and not set(words) <= allowed:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(sorted(allowed))}")
        return words

    return parse


def _numbers(text: str) -> list[float]:
    return [float(word) for word in text.split(",") if word.strip()]


def read_cells(path: str) -> list[Cell]:
    """The cells a ``--json`` file kept."""
    cells = []
    for data in json.loads(pathlib.Path(path).read_text()):
        runs = {label: [Run(**run) for run in site_runs]
                for label, site_runs in data.pop("runs").items()}
        cells.append(Cell(**data, runs=runs))
    return cells


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        print_report(read_cells(args.report), args, None)
        return 0
    if args.sqlite_wal:
        os.environ["BENCH_SQLITE_WAL"] = "1"  # read by site_wsgi in every site process
    load = os.getloadavg()
    with contextlib.ExitStack() as stack:
        folder = pathlib.Path(args.db_dir or stack.enter_context(
            tempfile.TemporaryDirectory(prefix="wechat-qr-versus-")))
        folder.mkdir(parents=True, exist_ok=True)
        cells = run_matrix(args, folder)
    print_report(cells, args, load)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps([asdict(cell) for cell in cells]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
