"""Browser tests: Playwright (the PyPI package) driving Debian's Chromium against the
example app served by a real threaded server on 127.0.0.1.

Playwright's own browser download is not available here, so the browser is
``/usr/bin/chromium`` (override with ``WECHAT_QR_TEST_CHROMIUM``). Without it the tests skip
with the reason; with ``WECHAT_QR_TEST_REQUIRE_BROWSER=1`` (set by ``.ci/run``) they fail instead.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import typing as t

import pytest

ARTIFACTS = pathlib.Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]


def _chromium() -> str | None:
    explicit = os.environ.get("WECHAT_QR_TEST_CHROMIUM")
    if explicit:
        return explicit if os.path.exists(explicit) else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _unavailable(reason: str) -> t.NoReturn:
    if os.environ.get("WECHAT_QR_TEST_REQUIRE_BROWSER"):
        pytest.fail(f"browser tests are required (WECHAT_QR_TEST_REQUIRE_BROWSER) but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> t.Iterator[t.Any]:
    executable = _chromium()
    if executable is None:
        _unavailable("no Chromium found: apt-get install chromium (or set WECHAT_QR_TEST_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed: pip install -e '.[test]'")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: t.Any, request: pytest.FixtureRequest) -> t.Iterator[t.Any]:
    """A fresh browser profile per test; a screenshot of the last page is saved at the end."""
    context = browser.new_context(locale="zh-CN", viewport={"width": 1100, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        yield page
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
        try:
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        finally:
            context.close()
