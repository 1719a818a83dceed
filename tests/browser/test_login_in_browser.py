"""The example app on the sandbox, in a real browser: what a person sees and clicks."""

from __future__ import annotations

import typing as t

import pytest
from support import ONE_DATABASE, Database, LiveServer, open_phone, serve_example_site

from browser.conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, ONE_DATABASE]


def serve_site(database: Database, **config: t.Any) -> LiveServer:
    return serve_example_site(database, WECHAT_QR_DISPLAY_NAME="WeChat", **config)


@pytest.fixture
def site(database: Database) -> t.Iterator[LiveServer]:
    with serve_site(database) as server:
        yield server


@pytest.fixture
def ask_binding_site(database: Database) -> t.Iterator[LiveServer]:
    with serve_site(database, WECHAT_QR_ASSOCIATION="ask_binding") as server:
        yield server


def register(page: t.Any, site: LiveServer, username: str, password: str) -> None:
    page.goto(site.url + "/register")
    page.fill("#username", username)
    page.fill("#password", password)
    page.locator("main form button.primary").click()  # "注册": the browser asks for Chinese
    page.wait_for_url(site.url + "/")


def log_out(page: t.Any, site: LiveServer) -> None:
    page.goto(site.url + "/logout")
    page.locator(".card form button.primary").click()
    page.wait_for_url(site.url + "/")
    assert page.request.get(site.url + "/api/me").status == 401


def scan_and_answer(page: t.Any, frame: t.Any, *, allow: bool, person: str = "zhangsan") -> None:
    """Press "simulate a scan" and answer on the phone page that opens."""
    phone = open_phone(page, frame)
    # The browser asks for Chinese (locale zh-CN), so the sandbox's phone page speaks it.
    assert "申请使用你的微信账号登录" in phone.locator("#sbx-confirm").inner_text()
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
    assert page.locator("html").get_attribute("lang") == "zh-CN"  # lang=cn from the site
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


def test_wechats_double_redirect_with_a_slow_profile_ends_logged_in(
        page: t.Any, database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """WeChat's double redirect of a new person while WeChat takes longer to send the
    profile than the second request waits: the second navigation shows "Finishing your
    login", Chromium follows its ``Refresh`` by itself, and the person ends logged in
    (before session 40: the second said "already used", and no account was made)."""
    import threading
    import time

    from flask_wechat_qr.client import WeChatClient

    real_exchange, real_userinfo = WeChatClient.exchange_code, WeChatClient.userinfo
    exchanged = threading.Event()

    def exchange_code(self: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
        token = real_exchange(self, *args, **kwargs)  # the second: 40163
        exchanged.set()
        return token

    def slow_userinfo(self: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
        time.sleep(2)  # longer than the second request's wait (0.2 s)
        return real_userinfo(self, *args, **kwargs)

    monkeypatch.setattr(WeChatClient, "exchange_code", exchange_code)
    monkeypatch.setattr(WeChatClient, "userinfo", slow_userinfo)
    with serve_site(database, WECHAT_QR_CODE_USED_WAIT=0.2) as site:
        page.goto(site.url + "/auth/wechat/login?next=/account")
        page.locator("#sbx-qr-image").wait_for()
        with page.expect_request(lambda request: "/auth/wechat/callback?" in request.url
                                 and "code=" in request.url) as first:
            scan_and_answer(page, page, allow=True, person="zhangsan")
        # The second redirect, once the first has its token (and waits for the profile):
        # it replaces the first in the window.
        assert exchanged.wait(timeout=10)
        page.goto(first.value.url)
        page.locator("[data-outcome=finishing]").wait_for()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "double_redirect_finishing.png"))
        assert "正在完成登录" in page.locator("body").inner_text()
        page.wait_for_url(site.url + "/account", timeout=15_000)  # the Refresh, by itself
        assert "张三🐼" in page.locator("body").inner_text()
        me = page.request.get(site.url + "/api/me").json()
        assert me["nickname"] == "张三🐼"


def test_denied_login(page: t.Any, site: LiveServer) -> None:
    page.goto(site.url + "/")
    page.locator("a.wechat-qr-button").first.click()
    page.wait_for_url("**/wechat-sandbox/connect/qrconnect**")
    scan_and_answer(page, page, allow=False)
    page.wait_for_url("**/auth/wechat/callback**", timeout=15_000)
    body = page.locator("body").inner_text()
    assert "已取消登录" in body
    assert page.locator("a", has_text="重试").count() == 1
    assert page.request.get(site.url + "/api/me").status == 401


def test_ask_binding_binds_an_existing_account_with_its_password(
    page: t.Any, ask_binding_site: LiveServer
) -> None:
    site = ask_binding_site
    register(page, site, "alice", "alice-password-1")
    alice_id = page.request.get(site.url + "/api/me").json()["id"]
    log_out(page, site)

    page.locator("a.wechat-qr-button").first.click()
    page.wait_for_url("**/wechat-sandbox/connect/qrconnect**")
    scan_and_answer(page, page, allow=True, person="lisi")
    page.wait_for_url(site.url + "/auth/bind", timeout=15_000)
    assert "李四" in page.locator("body").inner_text()

    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "not-her-password")
    page.locator("button", has_text="绑定并登录").click()
    assert "用户名或密码错误。" in page.locator("body").inner_text()

    page.fill("input[name=password]", "alice-password-1")
    page.locator("button", has_text="绑定并登录").click()
    page.wait_for_url(site.url + "/", timeout=15_000)
    me = page.request.get(site.url + "/api/me").json()
    assert me["id"] == alice_id and me["username"] == "alice"
    assert [i["connection"] for i in me["identities"]] == ["wechat"]

    # Back: the page of the wrong password is asked for again (not a form to send once
    # more: Chromium would stop at ERR_CACHE_MISS), and says the login is done.
    answer = page.go_back()
    assert answer is not None and answer.request.method == "GET"
    assert page.url == site.url + "/auth/bind"
    assert page.locator("h1").inner_text() == "你已登录"
    assert "本次微信登录已完成" in page.locator("body").inner_text()
    page.locator("a.wechat-qr-button", has_text="继续").click()
    page.wait_for_url(site.url + "/")
    assert page.request.get(site.url + "/api/me").json()["id"] == alice_id


def test_link_and_unlink_from_the_account_page(page: t.Any, site: LiveServer) -> None:
    register(page, site, "bob", "bob-password-1")
    page.goto(site.url + "/account")
    page.locator("a.link-wechat").click()
    page.wait_for_url("**/wechat-sandbox/connect/qrconnect**")
    scan_and_answer(page, page, allow=True, person="jose")
    page.wait_for_url(site.url + "/account", timeout=15_000)
    assert page.locator("tr.identity").count() == 1
    assert "José Martín" in page.locator("tr.identity").inner_text()
    assert page.request.get(site.url + "/api/me").json()["username"] == "bob"

    assert "微信账号“José Martín”已绑定到你的账号" in page.locator(".flash").inner_text()

    # Unlinking asks first: "keep it linked" changes nothing.
    page.locator("a.unlink-wechat").click()
    page.wait_for_url(site.url + "/account/unlink/wechat")
    page.locator("a.button", has_text="保持绑定").click()
    page.wait_for_url(site.url + "/account")
    assert page.locator("tr.identity").count() == 1
    page.locator("a.unlink-wechat").click()
    page.locator("form.unlink-form button").click()
    page.wait_for_url(site.url + "/account")
    assert "已与你的账号解绑" in page.locator(".flash").inner_text()
    assert page.locator("tr.identity").count() == 0
    assert page.request.get(site.url + "/api/me").json()["identities"] == []


def test_a_site_with_a_strict_session_cookie_logs_in_from_another_sites_wechat(
        page: t.Any, make_app: t.Any, database: Database) -> None:
    """WeChat is another site: here the standalone sandbox on ``127.0.0.1`` plays it, and
    the site is opened at ``localhost``. Chromium keeps the site's ``SameSite=Strict``
    session cookie from WeChat's redirect back; the callback asks for itself again from the
    site, and the login finishes (before: "This login link is no longer valid")."""
    from flask import session

    from flask_wechat_qr.sandbox import SandboxApp, create_sandbox_app

    app_id, secret = "wxstrict000000001", "strict-site-secret"
    wechat = create_sandbox_app([SandboxApp(app_id, secret, "Strict site", "localhost")],
                                database_uri=database.url("strict_sandbox"))
    with LiveServer(wechat) as wechat_server:
        site_app = make_app(SESSION_COOKIE_SAMESITE="Strict", WECHAT_QR_APP_ID=app_id,
                            WECHAT_QR_APP_SECRET=secret,
                            WECHAT_QR_OPEN_BASE_URL=wechat_server.url,
                            WECHAT_QR_API_BASE_URL=wechat_server.url)
        # A host hook that writes to every session: the page that asks again must not
        # answer with a new session cookie, which would replace the withheld one.
        site_app.before_request(lambda: setattr(session, "permanent", True))
        with LiveServer(site_app) as site_server:
            site = site_server.url.replace("127.0.0.1", "localhost")
            page.goto(site + "/auth/wechat/login")
            assert page.url.startswith(wechat_server.url + "/connect/qrconnect?")
            scan_and_answer(page, page, allow=True, person="lisi")
            page.wait_for_url(site + "/")
            assert page.inner_text("body").startswith("logged in as 1 ")


@pytest.mark.parametrize("samesite", [None, "Lax"])
def test_the_embedded_qr_sending_its_own_frame_back_logs_in_under_a_lax_session_cookie(
        page: t.Any, make_app: t.Any, database: Database, samesite: str | None) -> None:
    """``WECHAT_QR_QR_SELF_REDIRECT``: WeChat's QR frame (another site's page) sends its own
    frame to the callback. Chromium sends no ``SameSite=Lax`` cookie (nor one without the
    attribute, Lax by default) with a frame's navigation another site starts, so the login's
    state did not come along: every such login ended on "This login link is no longer
    valid", under Flask's default cookie. The callback now asks for itself again from the
    site, inside the frame, and the frame then sends the whole page on."""
    from flask_wechat_qr.sandbox import SandboxApp, create_sandbox_app

    app_id, secret = "wxselfredirect0001", "self-redirect-secret"
    wechat = create_sandbox_app([SandboxApp(app_id, secret, "Framed site", "localhost")],
                                database_uri=database.url(f"framed_sandbox_{samesite}"))
    with LiveServer(wechat) as wechat_server:
        site_app = make_app(SESSION_COOKIE_SAMESITE=samesite, WECHAT_QR_QR_SELF_REDIRECT=True,
                            WECHAT_QR_APP_ID=app_id, WECHAT_QR_APP_SECRET=secret,
                            WECHAT_QR_OPEN_BASE_URL=wechat_server.url,
                            WECHAT_QR_API_BASE_URL=wechat_server.url)
        with LiveServer(site_app) as site_server:
            site = site_server.url.replace("127.0.0.1", "localhost")
            page.goto(site + "/auth/wechat/qr?next=/")
            frame = page.frame_locator("#wechat-qr-frame")
            frame.locator("#sbx-qr-image").wait_for()
            scan_and_answer(page, frame, allow=True, person="xiaohua")
            page.wait_for_url(site + "/", timeout=15_000)
            assert page.inner_text("body").startswith("logged in as 1 ")
