"""The code style the project promises (ruff: E, F, I, B, UP), checked with the tests."""

from __future__ import annotations

import subprocess
import sys

from support import ROOT


def test_ruff_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "flask_wechat_qr", "example_app",
         "tests"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
