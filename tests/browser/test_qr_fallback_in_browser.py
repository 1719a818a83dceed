"""The embedded QR page's fallback, in headless Chromium: shown when WeChat's frame cannot
load (its host refuses connections, never answers, or the page's CSP blocks the frame), not
shown when it loads. Screenshots: ``test-artifacts/qr-fallback-*.png``."""

from __future__ import annotations

import contextlib
import pathlib
import socket
import typing as t

import pytest
from support import ONE_DATABASE, Database, closed_port, serve_example_site

pytestmark = [pytest.mark.browser, ONE_DATABASE]

ARTIFACTS = pathlib.Path(__file__).resolve().parents[2] / "test-artifacts"
LOCALES = {"zh": "zh-CN", "en": "en-US"}
FALLBACK_TEXT = {"zh": "二维码未能加载。", "en": "The QR code did not load."}
#: Past the page's data-fallback-after (10 s), on Playwright's fake clock.
PAST_THE_TIMER_MS = 11_000


@contextlib.contextmanager
def browser_page(browser: t.Any, lang: str, width: int = 1100) -> t.Iterator[t.Any]:
    context = browser.new_context(locale=LOCALES[lang], viewport={"width": width, "height": 900})
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def shoot(page: t.Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"qr-fallback-{name}.png"), full_page=True)


def assert_fallback_shown(page: t.Any, lang: str, *, frame_hidden: bool) -> None:
    fallback = page.locator("#wechat-qr-fallback")
    fallback.wait_for(state="visible", timeout=5_000)
    assert FALLBACK_TEXT[lang] in fallback.inner_text()
    link = fallback.locator("a")
    assert link.is_visible()
    href = link.get_attribute("href") or ""
    assert href.split("?")[0] == "/auth/wechat/login", href
    assert not page.locator("#wechat-qr-help").is_visible()  # no second, duplicate link
    assert page.locator("#wechat-qr-frame").is_visible() is not frame_hidden


@pytest.mark.parametrize("lang, width", [("zh", 360), ("en", 1100)])
def test_the_fallback_shows_when_wechats_host_refuses_connections(
        browser: t.Any, database: Database, lang: str, width: int) -> None:
    """A closed port: Chromium still fires "load" (for its own error page), so the page
    must find out otherwise, and at once, not only after its timer."""
    with closed_port() as port, \
            serve_example_site(database, WECHAT_QR_OPEN_BASE_URL=f"http://127.0.0.1:{port}") \
            as site, browser_page(browser, lang, width) as page:
        closed = f"http://127.0.0.1:{port}"
        page.clock.install()  # the page's 10 s timer never fires: the probe must tell
        page.goto(site.url + "/auth/wechat/qr?next=/account")
        assert page.locator("#wechat-qr-frame").get_attribute("src").startswith(closed)
        assert_fallback_shown(page, lang, frame_hidden=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        shoot(page, f"refused-{lang}-{width}")
        # The link starts a login on WeChat's full page (here: the same closed host).
        with page.expect_request(lambda r: r.url.startswith(closed + "/connect/qrconnect?")):
            page.locator("#wechat-qr-fallback a").click()


@contextlib.contextmanager
def silent_port() -> t.Iterator[str]:
    """A loopback port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_the_fallback_shows_when_wechats_host_never_answers(
        browser: t.Any, database: Database) -> None:
    """No load event in 10 s: the message shows, the frame stays (it may still come)."""
    with silent_port() as silent, serve_example_site(
            database, WECHAT_QR_OPEN_BASE_URL=silent) as site, browser_page(browser, "en") as page:
        page.clock.install()
        page.goto(site.url + "/auth/wechat/qr", wait_until="domcontentloaded")
        page.wait_for_timeout(500)  # the probe is still waiting too
        assert not page.locator("#wechat-qr-fallback").is_visible()
        page.clock.fast_forward(PAST_THE_TIMER_MS)
        assert_fallback_shown(page, "en", frame_hidden=False)
        shoot(page, "silent-en")


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_no_fallback_when_the_qr_loads(browser: t.Any, database: Database, lang: str) -> None:
    with serve_example_site(database) as site, browser_page(browser, lang) as page:
        page.clock.install()
        page.goto(site.url + "/auth/wechat/qr")
        page.frame_locator("#wechat-qr-frame").locator("#sbx-qr-image").wait_for()
        page.wait_for_timeout(1_000)  # the probe's answer, and a CSP event if one came
        page.clock.fast_forward(PAST_THE_TIMER_MS)
        page.wait_for_timeout(300)
        assert not page.locator("#wechat-qr-fallback").is_visible()
        assert page.locator("#wechat-qr-help").is_visible()
        assert page.locator("#wechat-qr-frame").is_visible()
        shoot(page, f"loaded-{lang}")


def test_the_fallback_shows_when_the_sites_csp_blocks_the_frame(
        browser: t.Any, database: Database) -> None:
    """A host whose Content-Security-Policy (nonce-based scripts, as Flask-Talisman makes)
    forbids the frame: the page's script runs with the nonce and reports the block."""
    site = serve_example_site(database)
    app = site.server.app
    app.jinja_env.globals["csp_nonce"] = lambda: "t3st-n0nce"

    @app.after_request
    def strict_policy(response: t.Any) -> t.Any:
        response.headers["Content-Security-Policy"] = (
            "script-src 'nonce-t3st-n0nce'; frame-src 'none'")
        return response

    with site, browser_page(browser, "en") as page:
        page.clock.install()
        page.goto(site.url + "/auth/wechat/qr")
        assert_fallback_shown(page, "en", frame_hidden=True)
        shoot(page, "csp-blocked-en")


def test_no_fallback_when_only_the_probe_is_blocked_by_the_sites_csp(
        browser: t.Any, database: Database) -> None:
    """A policy with ``connect-src 'none'`` refuses the page's probe, which then tells
    nothing: the frame loaded, so no message."""
    site = serve_example_site(database)

    @site.server.app.after_request
    def no_connections(response: t.Any) -> t.Any:
        response.headers["Content-Security-Policy"] = "connect-src 'none'"
        return response

    with site, browser_page(browser, "en") as page:
        violations: list[str] = []
        page.on("console", lambda message: violations.append(message.text))
        page.clock.install()
        page.goto(site.url + "/auth/wechat/qr")
        page.frame_locator("#wechat-qr-frame").locator("#sbx-qr-image").wait_for()
        page.wait_for_timeout(1_000)
        page.clock.fast_forward(PAST_THE_TIMER_MS)
        page.wait_for_timeout(300)
        assert any("connect-src" in text for text in violations), violations  # it was refused
        assert not page.locator("#wechat-qr-fallback").is_visible()
        assert page.locator("#wechat-qr-frame").is_visible()
