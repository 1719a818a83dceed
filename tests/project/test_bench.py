"""bench/ keeps working: whole logins through the sites over real sockets, with the counts the
README's tables report (API calls, SQL statements and rows written per login), never timings:
those are for bench/README.md."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
from support import ROOT

#: Set (by ``.ci/run``): the callgrind test fails, not skips, where valgrind is missing.
REQUIRE_VALGRIND_VARIABLE = "WECHAT_QR_TEST_REQUIRE_VALGRIND"


def test_the_login_benchmark_runs_and_counts_api_calls() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "login_bench.py"), "--logins", "2",
         "--warmup", "1", "--no-micro"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    rows = {(cells[0], cells[1]): cells for cells in (
        [c.strip() for c in line.strip("|").split("|")]
        for line in result.stdout.splitlines() if re.match(r"\| (ours|baseline) ", line))}
    assert set(rows) == {(site, users) for site in ("ours", "baseline")
                         for users in ("new", "returning")}
    api_calls, new_connections = 7, 8  # columns of the table
    assert rows["ours", "returning"][api_calls] == "1.00"  # one round trip
    assert rows["ours", "new"][api_calls] == "2.00"
    assert rows["baseline", "returning"][api_calls] == "2.00"
    assert rows["ours", "returning"][new_connections] == "0.00"  # kept alive after warm-up
    assert rows["baseline", "new"][new_connections] == "2.00"


def test_the_versus_benchmark_counts_statements_and_api_calls(tmp_path: Path) -> None:
    """bench/versus_bench.py under gunicorn: per login, the hand-written handler's known
    counts, and ours no worse than today's (so a regression in our login path shows)."""
    report = tmp_path / "versus.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "versus_bench.py"), "--databases", "sqlite",
         "--rtt", "0", "--clients", "1", "--workers", "1x2", "--pairs", "1",
         "--max-logins", "3", "--seconds", "60", "--db-dir", str(tmp_path),
         "--json", str(report)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SQLite (both sites): as created (rollback journal" in result.stdout
    assert _journal_modes(tmp_path) == {"ours": "delete", "handwritten": "delete"}
    per_login = {(cell["users"], site): _per_login(runs)
                 for cell in json.loads(report.read_text())
                 for site, runs in cell["runs"].items()}
    assert set(per_login) == {(users, site) for users in ("new", "returning")
                              for site in ("ours", "handwritten")}
    # the hand-written handler: token (+ profile for a new user), one SELECT by openid,
    # the new user's INSERT and the reload after its commit, Flask-Login's SELECT on "/"
    assert per_login["returning", "handwritten"] == {
        "api": 1, "statements": 2, "select": 2, "insert": 0, "update": 0, "delete": 0, "other": 0,
        "commit": 0, "rows_written": 0}
    assert per_login["new", "handwritten"] == {
        "api": 2, "statements": 4, "select": 3, "insert": 1, "update": 0, "delete": 0, "other": 0,
        "commit": 1, "rows_written": 1}
    # thread switches are counted for every run: each login's requests wait on sockets
    runs = [run for cell in json.loads(report.read_text()) for site_runs in cell["runs"].values()
            for run in site_runs]
    assert all(run["context_switches"] >= run["logins"] > 0 for run in runs)
    assert "thread switches/login" in result.stdout
    # and what the simulated WeChat and the browsers spent beside the site: every login
    # makes the simulated WeChat answer the QR page, the phone, the poll and the exchange
    assert all(run["wechat_cpu_seconds"] > 0 and run["browsers_cpu_seconds"] > 0
               for run in runs)
    assert "WeChat + browsers CPU ms/login" in result.stdout
    assert per_login["returning", "ours"]["api"] == 1  # the token carries openid/unionid
    assert per_login["new", "ours"]["api"] == 2
    # a new person: the run after WeChat's profile does not look the identity up again
    for users, (statements, rows) in {"returning": (7, 2), "new": (6, 3)}.items():
        assert 2 <= per_login[users, "ours"]["statements"] <= statements
        assert per_login[users, "ours"]["rows_written"] <= rows
        assert per_login[users, "ours"]["commit"] <= 1


def _per_login(runs: list[dict[str, t.Any]]) -> dict[str, float]:
    logins = sum(run["logins"] for run in runs)
    assert logins == 3 * len(runs)
    totals = {"api": sum(run["api_calls"] for run in runs)}
    for run in runs:
        for kind, value in run["sql"].items():
            totals[kind] = totals.get(kind, 0) + value
    return {kind: value / logins for kind, value in totals.items()}


def test_the_versus_benchmark_can_run_sqlite_as_the_docs_advise(tmp_path: Path) -> None:
    """``--sqlite-wal``: both sites' SQLite files run in write-ahead-log mode (what
    docs/deploying.rst advises hosts), the report says so, and the counts do not change
    (the pragmas are the connection's set-up, not a login's statements). ``--restart``:
    each pair on servers of its own (a gunicorn log each), on the same tables."""
    report = tmp_path / "versus.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "versus_bench.py"), "--databases", "sqlite",
         "--rtt", "0", "--clients", "1", "--workers", "1x2", "--pairs", "2", "--restart",
         "--users", "returning", "--max-logins", "3", "--seconds", "60",
         "--db-dir", str(tmp_path), "--json", str(report), "--sqlite-wal"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SQLite (both sites): write-ahead log, synchronous=NORMAL" in result.stdout
    assert _journal_modes(tmp_path) == {"ours": "wal", "handwritten": "wal"}
    assert sorted(log.name.split("-")[0] for log in tmp_path.glob("*.log")) == \
        ["handwritten", "handwritten", "ours", "ours"]
    cells = json.loads(report.read_text())
    assert [len(runs) for runs in cells[0]["runs"].values()] == [2, 2]
    per_login = {site: _per_login(runs) for cell in cells
                 for site, runs in cell["runs"].items()}
    assert per_login["handwritten"]["statements"] == 2
    assert per_login["handwritten"]["commit"] == 0
    assert per_login["ours"]["statements"] <= 7 and per_login["ours"]["commit"] <= 1


def test_the_instruction_count_logs_in_new_people_on_both_sites_without_valgrind() -> None:
    """bench/instructions.py without valgrind: the same whole logins (each checked: the next
    page says who is logged in), on both sites, of new people, and each site's thread
    switches over them. Returning people's logins on both sites, checked the same way: the
    callgrind test below."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "instructions.py"), "--no-valgrind",
         "--users", "new", "--logins", "2", "--warmup", "8"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    # 2 sites x (a warm-up run + a warm-up-and-counted run)
    assert result.stdout.startswith("36 logins, all logged in;"), result.stdout
    # each site's thread switches per counted login: every request waits on its socket
    rows = {tuple(cell.strip() for cell in line.strip("|").split("|")[:2]): line
            for line in result.stdout.splitlines() if line.startswith("| ")}
    heading = next(line for line in result.stdout.splitlines() if line.startswith("| users"))
    columns = [cell.strip() for cell in heading.strip("|").split("|")]
    for site in ("ours", "handwritten"):
        cells = [cell.strip().replace(",", "") for cell in rows["new", site].strip("|").split("|")]
        counts = dict(zip(columns, cells, strict=True))
        # counted, not 0: a request waits on its socket unless its bytes are already
        # there, which on a busy machine happens (2.0 was seen under the full suite)
        assert float(counts["thread switches"]) > 0
        # the site's CPU over the counted logins, and the part of it in each request of one
        assert float(counts["user CPU, us"]) + float(counts["system CPU, us"]) > 0
        assert all(float(counts[part]) > 0 for part in ("start, us", "callback, us",
                                                        "next page, us"))


def test_the_instruction_count_counts_logins_under_callgrind(tmp_path: Path) -> None:
    """bench/instructions.py's counts: two callgrind runs per site, their difference over the
    counted logins one login's instructions: millions for each site (Flask, SQLAlchemy, an
    HTTP server, three requests), neither zero nor the whole process's count, and in the
    report with their ratio. Every login of a returning person on both sites is checked (the
    next page says who is logged in); new people's: the test above.

    Run with a ``vgdb`` that cannot force valgrind to hear it, as where ptrace of the site's
    process is refused (Yama's ``ptrace_scope`` 1, Ubuntu's default, for a user; a container
    without ``CAP_SYS_PTRACE``): there the site's process hears vgdb only when it runs.
    Before, the bench waited for vgdb before the site's next request, for ever."""
    vgdb = shutil.which("vgdb")
    if shutil.which("valgrind") is None or vgdb is None:
        reason = "valgrind is not installed (Debian: apt-get install valgrind)"
        if os.environ.get(REQUIRE_VALGRIND_VARIABLE):
            pytest.fail(f"{REQUIRE_VALGRIND_VARIABLE} is set but {reason}")
        pytest.skip(reason)
    no_ptrace = tmp_path / "bin"
    no_ptrace.mkdir()
    (no_ptrace / "vgdb").write_text(f'#!/bin/sh\nexec {vgdb} --max-invoke-ms=0 "$@"\n')
    (no_ptrace / "vgdb").chmod(0o755)
    report = tmp_path / "counts.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "instructions.py"), "--users", "returning",
         "--logins", "2", "--warmup", "8", "--json", str(report)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "PATH": f"{no_ptrace}{os.pathsep}{os.environ.get('PATH', '')}"})
    assert result.returncode == 0, result.stdout + result.stderr
    counts = json.loads(report.read_text())
    ours, theirs = counts["ours returning"]["Ir"], counts["handwritten returning"]["Ir"]
    assert 2_000_000 < ours < 100_000_000 and 2_000_000 < theirs < 100_000_000
    assert f"| returning | ours / handwritten | {ours / theirs:.3f}x |" in result.stdout


def _journal_modes(folder: Path) -> dict[str, str]:
    """The journal mode of each site's SQLite files in ``folder`` (one mode per site)."""
    modes: dict[str, set[str]] = {}
    for path in folder.glob("*.db"):
        site = path.name.split("-")[0]
        if site in ("ours", "handwritten"):
            with sqlite3.connect(path) as connection:
                modes.setdefault(site, set()).add(
                    connection.execute("PRAGMA journal_mode").fetchone()[0])
    return {site: "/".join(sorted(found)) for site, found in modes.items()}


def test_the_versus_report_pools_every_pair_of_a_group(tmp_path: Path) -> None:
    """``--report`` prints a kept run again, with no site started; its summary pools the
    pairs of all the cells of a database, kind of user and load: the geometric mean of
    their ratios and how many were at or better than parity (logins/s above 1, CPU below)."""

    def run(site: str, logins: int, cpu_seconds: float, others: float | None
            ) -> dict[str, t.Any]:
        kept = {"site": site, "logins": logins, "seconds": 1.0, "callback_ms": [10.0],
                "cpu_seconds": cpu_seconds, "context_switches": 0, "api_calls": logins,
                "sql": dict.fromkeys(("statements", "select", "insert", "update", "delete",
                                      "other", "commit", "rows_written"), 0),
                "failures": []}
        if others is not None:  # kept before the others' CPU was measured: not there
            kept.update(wechat_cpu_seconds=others / 2, browsers_cpu_seconds=others / 2)
        return kept

    def cell(clients: int, pairs: list[tuple[int, int]], others: float | None = None
             ) -> dict[str, t.Any]:
        return {"database": "sqlite", "workers": "1x8", "rtt_ms": 0.0, "clients": clients,
                "users": "returning",
                "runs": {"ours": [run("ours", ours, 1.0, others) for ours, _ in pairs],
                         "handwritten": [run("handwritten", theirs, 1.0, others)
                                         for _, theirs in pairs]}}

    kept = tmp_path / "kept.json"
    # logins/s ratios 2 and 1 one at a time; 4, 0.5 and 1 with 8 or 32 browsers (in two
    # cells); CPU per login is their inverse (the same CPU time for each run). One at a
    # time the simulated WeChat and the browsers spent 3 s a run beside the site's 1 s:
    # all the CPU of a login, ours/theirs, 4/20 against 4/10 and 4/10 against 4/10
    kept.write_text(json.dumps([cell(1, [(20, 10), (10, 10)], 3.0),
                                cell(8, [(40, 10), (10, 20)]), cell(32, [(10, 10)])]))
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "versus_bench.py"), "--report", str(kept)],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {cells[2]: cells for cells in (
        [c.strip() for c in line.strip("|").split("|")]
        for line in result.stdout.splitlines() if line.startswith("| sqlite | returning | "))}
    assert rows["one at a time"][3:] == [  # sqrt(2), 1/sqrt(2)
        "2", "1.414 (2 of 2 at or better than 1)", "0.707 (2 of 2 at or better than 1)",
        "1.000 (2 of 2 at or better than 1)", "0.707 (2 of 2 at or better than 1)"]
    assert rows["8 or 32 at a time"][3:] == [  # cube root of 2, and its inverse
        "3", "1.260 (2 of 3 at or better than 1)", "0.794 (2 of 3 at or better than 1)",
        "1.000 (3 of 3 at or better than 1)", "n/a"]
    assert f"The runs kept in {kept}, ours against handwritten" in result.stdout


def test_the_versus_summary_gives_an_interval_from_five_pairs() -> None:
    """From 5 pairs a group's geometric mean comes with its 90% interval (bootstrapped with
    a fixed seed: the same runs, the same report): inside the pairs' range, around the
    mean, narrower for pairs that agree, and whole above 1 for pairs all above 1."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import versus_bench
    finally:
        sys.path.remove(str(ROOT / "bench"))
    spread_out = [0.8, 0.95, 1.0, 1.1, 1.3, 0.9, 1.05]
    low, high = versus_bench.interval(spread_out)
    mean = statistics.geometric_mean(spread_out)
    assert min(spread_out) < low < mean < high < max(spread_out)
    assert (low, high) == versus_bench.interval(spread_out)  # a fixed seed
    close = [1.04, 1.05, 1.06, 1.05, 1.04, 1.06]
    close_low, close_high = versus_bench.interval(close)
    assert 1 < close_low < close_high < 1.07
    assert close_high - close_low < (high - low) / 3


def test_the_instruction_count_reads_strace_counts(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``bench/instructions.py --strace`` reads ``strace -f -c``'s table (lines with and
    without an errors column) into counts by system call and their total: here of a Python
    that asks for its process id three times more than one that does not. The same
    variable as valgrind's makes a missing strace a failure in CI."""
    if shutil.which("strace") is None:
        reason = "strace is not installed (Debian: apt-get install strace)"
        if os.environ.get(REQUIRE_VALGRIND_VARIABLE):
            pytest.fail(f"{REQUIRE_VALGRIND_VARIABLE} is set but {reason}")
        pytest.skip(reason)
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from instructions import read_syscalls

    def counts(code: str) -> dict[str, int]:
        out = tmp_path / f"strace.{len(code)}"
        subprocess.run(["strace", "-f", "-c", f"-o{out}", sys.executable, "-S", "-c", code],
                       check=True, timeout=60)
        return t.cast(dict[str, int], read_syscalls(out))

    plain = counts("import os")
    asked = counts("import os; os.getpid(); os.getpid(); os.getpid()")
    assert asked.get("getpid", 0) - plain.get("getpid", 0) == 3
    assert plain["syscalls"] == sum(v for k, v in plain.items() if k != "syscalls")
    assert plain["syscalls"] > 10 and "execve" in plain


def test_distinct_functions_counts_each_request_of_a_login() -> None:
    """``bench/distinct_functions.py`` watches one returning login on each site: the start,
    the callback and the next page each run functions on both, the report names what only
    one site runs, and ours stays within what the seventeenth slice left (+85 over the
    handler's whole login, counted; 120 leaves room for a dependency's release), its code
    exchanged without Authlib's generic token request (29 functions more, session 28)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "distinct_functions.py"), "--warmup", "8",
         "--list", "callback"],
        capture_output=True, text=True, timeout=240, cwd=ROOT / "bench")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {cells[0]: cells[1:] for cells in (
        [c.strip() for c in line.strip("|").split("|")]
        for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line)}
    for request in ("start", "callback", "next page", "whole login"):
        ours, theirs, difference = rows[request]
        ours_functions, theirs_functions = int(ours.split()[0]), int(theirs.split()[0])
        assert ours_functions > 100 and theirs_functions > 100, rows
        assert int(difference) == ours_functions - theirs_functions
    assert int(rows["whole login"][2]) <= 120, result.stdout
    assert "Only in ours's callback:" in result.stdout
    assert "WeChatRemoteApp.fetch_access_token" in result.stdout
    assert "OAuth2Client.fetch_token" not in result.stdout
    assert "flask_wechat_qr/flow.py  LoginFlow.finish" in result.stdout
    assert "Only in handwritten's callback:" in result.stdout
