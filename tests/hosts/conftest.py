"""The host apps under ``apps/`` are top-level packages, as a site's own package is."""

from __future__ import annotations

import os
import sys
import typing as t
from pathlib import Path

import pytest
from flask import Flask
from support import dispose_engines

APPS = Path(__file__).resolve().parent / "apps"
if str(APPS) not in sys.path:
    sys.path.insert(0, str(APPS))


@pytest.fixture(autouse=True)
def host_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hosts that read their settings from the environment (host_migrate) see none of
    the developer's shell: each test says what it sets."""
    for name in list(os.environ):
        if name.startswith("WECHAT_QR_TEST_"):
            continue  # the test suite's own switches (e.g. PostgreSQL), not settings
        if name.startswith("WECHAT_QR_") or name in ("SECRET_KEY", "DATABASE_URL"):
            monkeypatch.delenv(name)


@pytest.fixture
def dispose() -> t.Iterator[t.Callable[[Flask], Flask]]:
    """``dispose(app)``: close the app's pooled connections when the test ends."""
    apps: list[Flask] = []

    def keep(app: Flask) -> Flask:
        apps.append(app)
        return app

    yield keep
    for app in apps:
        dispose_engines(app)
