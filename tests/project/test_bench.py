"""bench/login_bench.py keeps working: two logins of each kind through both sites, over real
sockets, with the counts the README's table reports (not timings: those are for bench/)."""

from __future__ import annotations

import re
import subprocess
import sys

from support import ROOT


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
