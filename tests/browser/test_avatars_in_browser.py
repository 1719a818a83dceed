"""The example site stores avatars (WECHAT_QR_STORE_AVATARS, on there): in a real browser
the account page shows the stored copy from the site itself, for a person whose WeChat
avatar URL is ``http://``, with no mixed-content warning and no image from elsewhere."""

from __future__ import annotations

import typing as t

import pytest
from support import ONE_DATABASE, Database, LiveServer, serve_example_site

pytestmark = [pytest.mark.browser, ONE_DATABASE]


@pytest.fixture
def site(database: Database) -> t.Iterator[LiveServer]:
    with serve_example_site(database, WECHAT_QR_DISPLAY_NAME="WeChat") as server:
        yield server


def scan_and_allow(page: t.Any, frame: t.Any, person: str) -> None:
    """Press "simulate a scan" and allow as ``person`` on the phone page that opens."""
    with page.context.expect_page() as popup_info:
        frame.locator("#sbx-simulate").click()
    phone = popup_info.value
    phone.wait_for_load_state()
    phone.locator(f"input[name=person][value={person}]").check()
    phone.locator("#sbx-allow").click()


def test_the_account_page_shows_the_stored_avatar(page: t.Any, site: LiveServer) -> None:
    console: list[str] = []
    images: list[str] = []
    page.on("console", lambda message: console.append(
        f"{message.type}: {message.text} ({message.location.get('url', '')})"))
    page.on("request", lambda request: images.append(request.url)
            if request.resource_type == "image" else None)
    page.goto(site.url + "/auth/wechat/qr?next=/account")
    frame = page.frame_locator("#wechat-qr-frame")
    frame.locator("#sbx-qr-image").wait_for()
    scan_and_allow(page, frame, "zhaoliu")  # an http:// avatar at WeChat
    page.wait_for_url(site.url + "/account", timeout=15_000)

    avatar = page.locator("img[src^='/auth/avatars/']")
    avatar.wait_for()
    assert avatar.evaluate("img => img.complete && img.naturalWidth === 132")
    assert not [message for message in console if "Mixed Content" in message
                or "mixed content" in message.lower()], console
    assert [url for url in images if not url.startswith(site.url + "/")] == []
    assert not [message for message in console if message.startswith("error:")
                and not message.endswith("/favicon.ico)")], console  # the site has none
    stored = page.request.get(site.url + avatar.get_attribute("src"))
    assert stored.headers["content-type"] == "image/png"
    assert stored.headers["x-content-type-options"] == "nosniff"
