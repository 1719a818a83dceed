"""The CI scripts in ``.ci/``: where the throwaway databases keep their files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from support import ROOT

CI = ROOT / ".ci"


def scratch_dir(*args: str) -> str:
    """``scratch_dir ARGS`` of ``.ci/scratch-dir``, as the scripts call it."""
    return subprocess.run(
        ["bash", "-c", '. .ci/scratch-dir && scratch_dir "$@"', "scratch_dir", *args],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=30).stdout.strip()


def test_the_databases_go_to_memory_only_where_it_has_room(tmp_path: Path) -> None:
    """A container's /dev/shm is small (Docker's default is 64 MB), and MariaDB's install
    alone outgrows it (its 96 MB InnoDB log: "preallocating ... failed with error 28"): the
    databases' files go to /tmp there. Before, every script chose /dev/shm wherever it was
    writable, and on such a machine CI stopped before its first test."""
    free = shutil.disk_usage(tmp_path).free // 1024
    assert scratch_dir(str(tmp_path), str(free // 2)) == str(tmp_path)
    assert scratch_dir(str(tmp_path), str(free * 2)) == "/tmp"
    assert scratch_dir(str(tmp_path / "missing"), "0") == "/tmp"
    # Each script asks it (the same room for both servers), none decides on its own.
    for script in ("run", "start-postgres", "start-mariadb"):
        text = (CI / script).read_text()
        assert "scratch_dir" in text and "-w /dev/shm" not in text, script
