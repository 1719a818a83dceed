"""Instructions per login: Flask-WeChat-QR against the best hand-written handler, counted by
valgrind's callgrind, which gives the same count run after run (within half a percent) where
CPU time on a shared machine moves by 10-20 %.

    python bench/instructions.py                                  # SQLite, as created and WAL
    python bench/instructions.py --database-url postgresql://user@host/db   # and PostgreSQL
    python bench/instructions.py --cache       # also simulate the CPU's caches (slower)
    python bench/instructions.py --no-valgrind     # thread switches and CPU time instead
    python bench/instructions.py --strace          # system calls instead (strace -c)

Each site (``ours``, ``handwritten``) is served by the package's keep-alive werkzeug server
in a process of its own, under callgrind; this process plays the browser and the phone,
against the sandbox as WeChat (as the other two scripts, with ``one_login``), none of it
counted. Every site runs twice, each with ``--warmup`` logins and a full garbage collection
(the collector then off, see :data:`COLLECT_PATH`; callgrind instruments from there on),
then no more logins or ``--logins`` more: the difference over ``--logins`` is one login's
instructions in the site's process, its
start, callback and next page together, with the HTTP server's own work (its loop does not
wake to poll, and the process ends without the interpreter's shutdown: nothing that grows
with how long a run takes is counted). The count is user-space instructions only: time in
the kernel (SQLite's file writes, sockets) and stalls on cache misses (``--cache`` counts
the simulated misses) are not in it. Needs ``valgrind`` (Debian: ``apt-get install
valgrind``). With ``--no-valgrind`` it counts, over the same logins, how often the site's
threads gave up the CPU, and the process's user and system CPU time, instead: a thread
woken for nothing shows there, not in instructions. With ``--strace`` it counts the
site's system calls by name (``strace -f -c``; Debian: ``apt-get install strace``): the
kernel's side of a login, which callgrind does not see.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pathlib
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
import uuid

import requests
from keepalive_server import serve
from login_bench import LOGIN_PATHS, TIMEOUT, Databases, Server, Site, one_login, start_server
from versus_bench import RETURNING_PEOPLE

SITES = ("ours", "handwritten")
#: The line of a callgrind output file with the run's counts (from the garbage collection
#: after the warm-up on, see :func:`count_from_now`: the difference of two runs leaves the
#: counted logins).
EVENTS_LINE = re.compile(r"^(?:summary|totals):\s+([\d ]+)$", re.MULTILINE)


# --- the site's process ----------------------------------------------------------------


#: On a counted site: ``GET`` runs a full garbage collection and turns the collector off.
#: Both runs of a site get it after their warm-up, so the counted logins are their own work:
#: with the collector on, whether one of its passes over the whole process (some 25 million
#: instructions) fell among 30 counted logins depended on where the warm-up had left its
#: counters, moving a site's count by up to 7%.
COLLECT_PATH = "/__bench/collect"
#: On a site: ``GET`` answers how often the process's threads gave up the CPU so far, and
#: its user and system CPU time in microseconds (its server runs a thread per connection,
#: so a count of the threads alive now would miss the ended ones).
SWITCHES_PATH = "/__bench/switches"


#: ``--cold``: the caches simulated as this machine's (AMD EPYC: 32 KB first-level instruction
#: and data caches, 512 KB second level per core), and what each request of the site copies
#: first to fill them with other data (twice the second level).
COLD_CACHES = ["--I1=32768,8,64", "--D1=32768,8,64", "--LL=524288,8,64"]
COLD_EVICT_BYTES = 1 << 20


def serve_site() -> None:
    """Child mode: build the site from the ``BENCH_*`` variables (as gunicorn's workers do
    in the other benchmarks), serve it, print its port, stop when standard input closes."""
    import site_wsgi

    site = site_wsgi.create_site()

    # --cold: every request of the site's starts with the caches' first two levels holding
    # other code's data, as where the browser, WeChat and the server's master ran in between.
    cold = bool(os.environ.get("BENCH_COLD"))
    evict, evicted = (bytearray(COLD_EVICT_BYTES if cold else 0) for _ in range(2))
    in_app = {"start": 0, "callback": 0, "next": 0}

    def app(environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        if cold and not environ.get("PATH_INFO", "").startswith("/__bench/"):
            evicted[:] = evict  # one copy: reads one buffer, writes the other
        path = environ.get("PATH_INFO", "")
        if path == SWITCHES_PATH:
            usage = resource.getrusage(resource.RUSAGE_SELF)  # ended threads' too
            body = json.dumps({"switches": usage.ru_nvcsw + usage.ru_nivcsw,
                               "minor_faults": usage.ru_minflt,
                               "user_us": round(usage.ru_utime * 1e6),
                               "system_us": round(usage.ru_stime * 1e6),
                               **{f"{part}_us": round(ns / 1000)
                                  for part, ns in in_app.items()}}).encode()
            start_response("200 OK", [("Content-Length", str(len(body)))])
            return [body]
        if path != COLLECT_PATH:
            # The thread's CPU time in the app (its answer's body is one string, made
            # there), by part of the login: the start, WeChat's callback, the next page.
            part = "next" if path == "/" else "callback" if "callback" in path else "start"
            began = time.thread_time_ns()
            try:
                return site(environ, start_response)
            finally:
                in_app[part] += time.thread_time_ns() - began
        gc.collect()
        gc.disable()
        start_response("204 No Content", [])
        return []

    # No work that grows with the time a run takes: the server's loop does not wake to poll
    # (runs under valgrind last a minute or more, and each wake-up costs instructions), and
    # the process ends at once, without the interpreter's shutdown.
    server = serve(app, poll_interval=3600)
    print(server.server_port, flush=True)
    sys.stdin.read()
    os._exit(0)


# --- this process: browser, phone and the sandbox as WeChat ------------------------------


def run_site(site: str, database_uri: str, wechat: Server, warmup: int, logins: int,
             users: str, sqlite_wal: bool, tracer: list[str] | None,
             out: pathlib.Path) -> dict[str, int]:
    """Serve ``site`` (under ``tracer``, callgrind or strace, unless ``None``), log in ``warmup``
    people, collect the garbage, log in ``logins`` more: the counted events (without a
    tracer: the site's thread switches and CPU time over those logins; its server does not wake to
    poll, so they are the logins' own). Returning people are the sandbox's four, login
    ``i`` person ``i mod 4``: the warm-up logs each in at least twice (first as new, then as
    returning), so every counted login finds its user and no code path runs for its first
    time there."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "BENCH_SITE": site,
           "BENCH_OPEN_BASE": wechat.url("open"), "BENCH_API_BASE": wechat.api_url(site),
           "BENCH_DATABASE_URI": database_uri}
    env.pop("BENCH_SQL_COUNTS", None)
    if sqlite_wal:
        env["BENCH_SQLITE_WAL"] = "1"
    else:
        env.pop("BENCH_SQLITE_WAL", None)
    command = [sys.executable, __file__, "--serve"]
    if tracer is not None:
        command = [*tracer, f"{TRACER_OUTPUT[tracer[0]]}{out}", *command]
    process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               cwd=pathlib.Path(__file__).parent)
    try:
        assert process.stdout is not None and process.stdin is not None
        port = process.stdout.readline().strip()
        if not port.isdigit():
            error = process.stderr.read() if process.stderr else ""
            raise RuntimeError(f"{site} did not start: {error[-2000:]}")
        served = Site(site, Server(site, process, {"port": int(port)}), LOGIN_PATHS[site])
        usage: dict[str, int] = {}
        with requests.Session() as browser, requests.Session() as phone:
            for index in range(warmup + logins):
                person = ({"person": RETURNING_PEOPLE[index % len(RETURNING_PEOPLE)]}
                          if users == "returning" else
                          {"person": "new", "nickname": f"{site} 新用户 {uuid.uuid4().hex[:8]} 🐼"})
                one_login(browser, phone, served, wechat, person)
                if index == warmup - 1:
                    browser.get(served.server.url() + COLLECT_PATH,
                                timeout=TIMEOUT).raise_for_status()
                    if tracer is not None and tracer[0] == "valgrind":
                        count_from_now(process.pid, lambda: _usage(browser, served))
                    usage = _usage(browser, served)
        after = _usage(browser, served)
        usage = {name: after[name] - usage[name] for name in after}
        process.stdin.close()
        process.wait(timeout=TIMEOUT * 5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"{site} exited with {process.returncode}: "
                           f"{process.stderr.read()[-2000:] if process.stderr else ''}")
    # Thread switches and CPU time only uncounted: valgrind runs one thread at a time, its
    # own way, and strace stops the process at every system call.
    if tracer is None:
        return usage
    return read_events(out) if tracer[0] == "valgrind" else read_syscalls(out)


#: How each tracer is told where its counts go.
TRACER_OUTPUT = {"valgrind": "--callgrind-out-file=", "strace": "-o"}


#: Seconds between two requests that wake the site while ``vgdb`` waits for it to listen.
WAKE_INTERVAL = 0.2


def count_from_now(pid: int, wake: t.Callable[[], object]) -> None:
    """Turn on callgrind's instrumentation in the site's process (started without it: the
    interpreter's start-up and the warm-up run five times faster uninstrumented, and are in
    neither run's count), with ``vgdb``, while ``wake()`` sends the site a request: valgrind
    hears vgdb only while the process runs. Forcing it to, in a process waiting on its
    socket, takes ptrace, which many machines refuse a sibling process (Yama's
    ``ptrace_scope`` 1, Ubuntu's default, for a user; a container without
    ``CAP_SYS_PTRACE``): there vgdb waited for ever, and the run with it. Every run turns the
    instrumentation on in the same small request (the site's thread-switch count), so the
    two runs' difference holds the counted logins alone."""
    vgdb = subprocess.Popen(["vgdb", f"--pid={pid}", "instrumentation", "on"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(int(TIMEOUT / WAKE_INTERVAL)):
            wake()
            try:
                _, error = vgdb.communicate(timeout=WAKE_INTERVAL)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            raise RuntimeError(f"vgdb did not reach the site's process {pid} in {TIMEOUT} s")
    finally:
        if vgdb.poll() is None:
            vgdb.kill()
            vgdb.communicate()
    if vgdb.returncode != 0:
        raise RuntimeError(f"vgdb could not turn callgrind's instrumentation on: {error}")


def _usage(browser: requests.Session, served: Site) -> dict[str, int]:
    answer = browser.get(served.server.url() + SWITCHES_PATH, timeout=TIMEOUT)
    answer.raise_for_status()
    return t.cast(dict[str, int], answer.json())


#: A line of ``strace -c``'s table: time share, seconds, microseconds a call, calls,
#: errors (may be empty) and the system call's name.
SYSCALL_LINE = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$",
                          re.MULTILINE)


def read_syscalls(path: pathlib.Path) -> dict[str, int]:
    """``strace -c``'s counts by system call, and their total as ``syscalls``."""
    counts = {name: int(calls) for calls, name in SYSCALL_LINE.findall(path.read_text())
              if name != "total"}
    if not counts:
        raise RuntimeError(f"{path}: no system call counts")
    return {"syscalls": sum(counts.values()), **counts}


def read_events(path: pathlib.Path) -> dict[str, int]:
    """The totals of a callgrind output file, by event name (``Ir``, ``I1mr``, ...)."""
    text = path.read_text()
    names = re.search(r"^events:\s+(.+)$", text, re.MULTILINE)
    totals = EVENTS_LINE.search(text)
    if names is None or totals is None:
        raise RuntimeError(f"{path}: no event totals")
    return dict(zip(names.group(1).split(), map(int, totals.group(1).split()), strict=True))


def per_login(site: str, databases: Databases, wechat: Server, users: str,
              args: argparse.Namespace, tracer: list[str] | None,
              folder: pathlib.Path) -> dict[str, float]:
    """One login's events in ``site``: two runs at once, each on a database of its own
    (warm-up only; warm-up and the counted logins), their difference over ``--logins``. The
    returning people log in during the warm-up."""
    counts = (0, args.logins)
    uris = {count: databases.uri(f"{site}_{users}_{count}") for count in counts}
    results: dict[int, dict[str, int]] = {}
    errors: list[BaseException] = []

    def run(count: int) -> None:
        try:
            results[count] = run_site(site, uris[count], wechat, args.warmup, count, users,
                                      args.sqlite_wal, tracer,
                                      folder / f"callgrind.{site}.{users}.{count}.out")
        except BaseException as error:  # reported below, after both runs ended
            errors.append(error)

    threads = [threading.Thread(target=run, args=(count,)) for count in counts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    low, high = (results[count] for count in counts)
    return {event: (high[event] - low.get(event, 0)) / args.logins for event in high}


#: What the report shows of callgrind's events, and under which heading.
COLUMNS = {"Ir": "instructions", "I1mr": "I1 misses", "D1mr": "D1 read misses",
           "D1mw": "D1 write misses", "ILmr": "LL instruction misses",
           "DLmr": "LL read misses", "DLmw": "LL write misses", "switches": "thread switches",
           "user_us": "user CPU, us", "system_us": "system CPU, us", "start_us": "start, us",
           "callback_us": "callback, us", "next_us": "next page, us",
           "minor_faults": "minor page faults", "syscalls": "system calls"}


def report(results: dict[tuple[str, str], dict[str, float]], setup: str) -> list[str]:
    """A Markdown table: per login, each site's counts; ours over the handler's."""
    events = [event for event in COLUMNS if all(event in r for r in results.values())]
    lines = [f"Per login ({setup}):", "",
             "| users | site | " + " | ".join(COLUMNS[e] for e in events) + " |",
             "|---|---|" + "---|" * len(events)]
    for users in ("returning", "new"):
        rows = {site: results[site, users] for site in SITES if (site, users) in results}
        for site, counts in rows.items():
            lines.append(f"| {users} | {site} | "
                         + " | ".join(f"{counts[e]:,.2f}" if e in ("switches", "minor_faults") else
                                      f"{counts[e]:,.0f}" for e in events) + " |")
        if len(rows) < len(SITES):
            continue
        ours, theirs = rows["ours"], rows["handwritten"]
        lines.append(f"| {users} | ours / handwritten | "
                     + " | ".join(f"{ours[e] / theirs[e]:.3f}x" if theirs[e] else "-"
                                  for e in events) + " |")
        if "syscalls" in events:
            lines += _syscalls_by_name(users, ours, theirs)
    return lines


def _syscalls_by_name(users: str, ours: dict[str, float],
                      theirs: dict[str, float]) -> list[str]:
    """Under ``--strace``: each system call a login makes at least a tenth of a time, the
    largest differences first."""
    names = sorted((name for name in {*ours, *theirs} - set(COLUMNS)
                    if max(ours.get(name, 0), theirs.get(name, 0)) >= 0.1),
                   key=lambda name: theirs.get(name, 0) - ours.get(name, 0))
    return ["", f"{users} people, system calls per login by name:", "",
            "| call | ours | handwritten |", "|---|---|---|",
            *(f"| {name} | {ours.get(name, 0):.2f} | {theirs.get(name, 0):.2f} |"
              for name in names), ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help="a PostgreSQL server (one schema per run); "
                        "default: SQLite files")
    parser.add_argument("--sqlite-wal", action="store_true",
                        help="SQLite as docs/deploying.rst advises (WAL, synchronous=NORMAL)")
    parser.add_argument("--users", choices=("returning", "new", "both"), default="both")
    parser.add_argument("--sites", choices=(*SITES, "both"), default="both")
    parser.add_argument("--logins", type=int, default=30, help="counted logins per site")
    parser.add_argument("--warmup", type=int, default=10,
                        help="logins before the counted ones (at least 8: every returning "
                        "person twice)")
    parser.add_argument("--cache", action="store_true",
                        help="also count simulated cache misses (about twice as slow)")
    parser.add_argument("--cold", action="store_true",
                        help="with --cache: each request of a site starts with the first two "
                        "cache levels holding other data (the last level simulated is the "
                        "second, 512 KB); the copy that fills them is counted on both sites")
    parser.add_argument("--no-valgrind", action="store_true",
                        help="run the same logins without valgrind and count the site's "
                        "thread switches and CPU time instead of instructions")
    parser.add_argument("--strace", action="store_true",
                        help="count the site's system calls (strace -f -c) instead")
    parser.add_argument("--json", type=pathlib.Path, help="also write the counts here")
    args = parser.parse_args(argv)
    if args.serve:
        serve_site()
        return 0
    if args.warmup < 2 * len(RETURNING_PEOPLE) or args.logins < 1:
        parser.error(f"--warmup must be at least {2 * len(RETURNING_PEOPLE)}, --logins at "
                     "least 1")
    tracer = (None if args.no_valgrind else ["strace", "-f", "-c"] if args.strace else [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", "--vgdb=yes",
        f"--cache-sim={'yes' if args.cache or args.cold else 'no'}",
        *(COLD_CACHES if args.cold else [])])
    if args.cold:
        os.environ["BENCH_COLD"] = "1"
    users = ("returning", "new") if args.users == "both" else (args.users,)
    results: dict[tuple[str, str], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as folder:
        run_id = uuid.uuid4().hex[:8]
        databases = Databases(args.database_url, pathlib.Path(folder), run_id)
        sandbox_db = Databases(args.database_url, pathlib.Path(folder), f"{run_id}_wechat")
        wechat = start_server("sandbox", sandbox_db.uri("sandbox"), latency_ms=0,
                              api_for=",".join(SITES))
        try:
            for kind in users:
                for site in SITES if args.sites == "both" else (args.sites,):
                    results[site, kind] = per_login(site, databases, wechat, kind, args,
                                                    tracer, pathlib.Path(folder))
        finally:
            wechat.stop()
            databases.drop()
            sandbox_db.drop()
    setup = (f"{'PostgreSQL' if args.database_url else 'SQLite'}"
             f"{' in WAL as advised' if args.sqlite_wal and not args.database_url else ''}, "
             f"{args.logins} counted logins after {args.warmup}, Python "
             f"{sys.version.split()[0]}")
    if tracer is None or tracer[0] == "strace":
        print(f"{len(results) * (2 * args.warmup + args.logins)} logins, all logged in; "
              "instructions not counted\n")
    print("\n".join(report(results, setup)))
    if args.json:
        args.json.write_text(json.dumps({f"{site} {kind}": counts
                                         for (site, kind), counts in results.items()},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
