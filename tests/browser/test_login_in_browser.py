"""The example app on the sandbox, in a real browser: what a person sees and clicks."""

from __future__ import annotations

import typing as t

import pytest

from example_app import create_app

from .conftest import LiveServer

pytestmark = pytest.mark.browser


@pytest.fixture
def site(tmp_path: t.Any) -> t.Iterator[LiveServer]:
    app = create_app({
        "TESTING": True,
        "SECRET_KEY": "browser-test-secret",
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'site.db'}",
        "WECHAT_QR_SANDBOX": True,
        "WECHAT_QR_DISPLAY_NAME": "WeChat",
    })
    with LiveServer(app) as server:
        yield server


def scan_and_answer(page: t.Any, frame: t.Any, *, allow: bool, person: str = "zhangsan") -> None:
    """Press "simulate a scan" and answer on the phone page that opens."""
    with page.context.expect_page() as popup_info:
        frame.locator("#sbx-simulate").click()
    phone = popup_info.value
    phone.wait_for_load_state()
    assert "wants to log in with your WeChat" in phone.locator("#sbx-confirm").inner_text()
    if allow:
        phone.locator(f"input[name=person][value={person}]").check()
        phone.locator("#sbx-allow").click()
    else:
        phone.locator("#sbx-deny").click()


def test_redirect_qr_login(page: t.Any, site: LiveServer) -> None:
    page.goto(site.url + "/")
    page.locator("a.wechat-qr-button").first.click()
    page.wait_for_url("**/wechat-sandbox/connect/qrconnect**")
    qr = page.locator("#sbx-qr-image")
    qr.wait_for()
    assert qr.evaluate("img => img.complete && img.naturalWidth > 0")
    scan_and_answer(page, page, allow=True, person="zhangsan")
    page.wait_for_url(site.url + "/", timeout=15_000)
    assert "张三🐼" in page.locator("body").inner_text()
    me = page.request.get(site.url + "/api/me").json()
    assert me["nickname"] == "张三🐼"
    assert me["identities"][0]["connection"] == "wechat"


def test_embedded_qr_login(page: t.Any, site: LiveServer) -> None:
    page.goto(site.url + "/auth/wechat/qr?next=/account")
    frame = page.frame_locator("#wechat-qr-frame")
    frame.locator("#sbx-qr-image").wait_for()
    scan_and_answer(page, frame, allow=True, person="xiaohua")
    page.wait_for_url(site.url + "/account", timeout=15_000)
    assert "🌸小花🌸" in page.locator("body").inner_text()


def test_denied_login(page: t.Any, site: LiveServer) -> None:
    page.goto(site.url + "/")
    page.locator("a.wechat-qr-button").first.click()
    page.wait_for_url("**/wechat-sandbox/connect/qrconnect**")
    scan_and_answer(page, page, allow=False)
    page.wait_for_url("**/auth/wechat/callback**", timeout=15_000)
    body = page.locator("body").inner_text()
    assert "cancelled" in body.lower()
    assert page.locator("a", has_text="Try again").count() == 1
    assert page.request.get(site.url + "/api/me").status == 401
