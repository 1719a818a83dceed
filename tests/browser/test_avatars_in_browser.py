"""The example site stores avatars (WECHAT_QR_STORE_AVATARS, on there): in a real browser
the account page shows the stored copy from the site itself, for a person whose WeChat
avatar URL is ``http://``, with no mixed-content warning and no image from elsewhere; a
person who changes their avatar at WeChat sees the new one after their next login a week
on (the background refresh), while the old copy is still served."""

from __future__ import annotations

import threading
import typing as t
from datetime import timedelta

import pytest
from support import ONE_DATABASE, Database, LiveServer, serve_example_site, simulate_scan

pytestmark = [pytest.mark.browser, ONE_DATABASE]

WEEK = 7 * 24 * 3600


@pytest.fixture
def site(database: Database) -> t.Iterator[LiveServer]:
    with serve_example_site(database, WECHAT_QR_DISPLAY_NAME="WeChat",
                            WECHAT_QR_PROFILE_REFRESH_AFTER=WEEK) as server:
        yield server


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
    simulate_scan(page, frame, "zhaoliu")  # an http:// avatar at WeChat
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


def log_in_as(page: t.Any, site: LiveServer, person: str) -> str:
    """A QR login as ``person`` that ends on the account page; the avatar's path there."""
    page.goto(site.url + "/auth/wechat/qr?next=/account")
    frame = page.frame_locator("#wechat-qr-frame")
    frame.locator("#sbx-qr-image").wait_for()
    simulate_scan(page, frame, person)
    page.wait_for_url(site.url + "/account", timeout=15_000)
    avatar = page.locator("img[src^='/auth/avatars/']")
    avatar.wait_for()
    assert avatar.evaluate("img => img.complete && img.naturalWidth === 132")
    return str(avatar.get_attribute("src"))


def test_a_changed_avatar_shows_after_a_login_a_week_later(
        page: t.Any, site: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlalchemy as sa

    from flask_wechat_qr.models import utcnow

    first = log_in_as(page, site, "zhangsan")
    page.goto(site.url + "/wechat-sandbox/")
    page.locator("form[action$='/people/zhangsan/avatar'] button").click()
    page.wait_for_load_state()
    app = site.server.app
    with app.app_context():
        db = app.extensions["sqlalchemy"]
        db.session.execute(sa.text("UPDATE wechat_qr_identity SET created_at = :t, "
                                   "profile_refreshed_at = :t"),
                           {"t": utcnow() - timedelta(days=8)})
        db.session.commit()
    page.goto(site.url + "/logout")
    page.locator(".card form button.primary").click()

    # The background refresh waits until the account page after the login has been read:
    # otherwise it may store the new avatar before that page is drawn, and the page could
    # not tell whether the login itself read the profile (a flake seen in CI).
    refresher = app.extensions["wechat_qr"].refresher
    page_read = threading.Event()
    refresh = refresher.refresh

    def refresh_after_the_page(*args: t.Any, **kwargs: t.Any) -> bool:
        page_read.wait(15)
        return bool(refresh(*args, **kwargs))

    monkeypatch.setattr(refresher, "refresh", refresh_after_the_page)
    assert log_in_as(page, site, "zhangsan") == first  # the login itself read no profile
    page_read.set()
    assert refresher.wait(15)
    page.reload()
    avatar = page.locator("img[src^='/auth/avatars/']")
    avatar.wait_for()
    assert avatar.get_attribute("src") != first
    assert avatar.evaluate("img => img.complete && img.naturalWidth === 132")
    assert page.request.get(site.url + first).status == 200  # the old copy stays
