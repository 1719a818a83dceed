"""Logging in from inside WeChat and on phones (issue 16), in headless Chromium with real user
agents against the example site on the sandbox (which gives every connection a simulated
Official Account): WeChat on a phone and WeChat for Windows log in through the Official
Account's consent sheet, mobile Safari gets the phone page, a computer the QR code; one
person is one account both ways; a snapshot visitor never gets one; the verify file is
served. A screenshot of each step at the test's viewport: ``test-artifacts/in-wechat-*.png``.
"""

from __future__ import annotations

import pathlib
import re
import typing as t

import pytest
import requests
import sqlalchemy as sa
from support import (
    ONE_DATABASE,
    SAFARI_PHONE,
    SANDBOX_PREFIX,
    WECHAT_PHONE,
    WECHAT_WINDOWS,
    WECOM,
    Database,
    LiveServer,
    serve_example_site,
)

pytestmark = [pytest.mark.browser, ONE_DATABASE]


ARTIFACTS = pathlib.Path(__file__).resolve().parents[2] / "test-artifacts"


IPHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
          "device_scale_factor": 2}
DESKTOP = {"viewport": {"width": 1100, "height": 800}}
#: The kinds of browser, as Chromium pretends to be them (the desktop one is Chromium's own).
BROWSERS: dict[str, dict[str, t.Any]] = {
    "wechat-phone": {"user_agent": WECHAT_PHONE, **IPHONE},
    "wechat-windows": {"user_agent": WECHAT_WINDOWS, **DESKTOP},
    "safari-phone": {"user_agent": SAFARI_PHONE, **IPHONE},
    "wecom-phone": {"user_agent": WECOM, **IPHONE},
    "desktop": DESKTOP,
}
#: The path of the consent sheet of WeChat's web authorization, and of its QR page.
CONSENT_PATH = f"**{SANDBOX_PREFIX}/connect/oauth2/authorize**"
QR_PATH = f"**{SANDBOX_PREFIX}/connect/qrconnect**"
#: An English word: none on a Chinese page.
ENGLISH = re.compile(r"[A-Za-z]{3,}")


@pytest.fixture
def site(database: Database) -> t.Iterator[LiveServer]:
    with serve_example_site(database, WECHAT_QR_DISPLAY_NAME="WeChat") as server:
        yield server


@pytest.fixture
def open_browser(browser: t.Any) -> t.Iterator[t.Callable[..., t.Any]]:
    """``open_browser(kind, lang="zh-CN")``: a page in a fresh profile of that kind of
    browser (closed at the end of the test)."""
    contexts: list[t.Any] = []

    def new_page(kind: str, lang: str = "zh-CN") -> t.Any:
        context = browser.new_context(locale=lang, **BROWSERS[kind])
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    try:
        yield new_page
    finally:
        for context in contexts:
            context.close()


def shoot(page: t.Any, name: str) -> None:
    """A screenshot of the page as its viewport shows it (phones: the first screen)."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"in-wechat-{name}.png"))


def press(page: t.Any, locator: t.Any) -> None:
    """Tap on a touch screen, click elsewhere."""
    if page.evaluate("navigator.maxTouchPoints") > 0:
        locator.tap()
    else:
        locator.click()


def tap_wechat_login(page: t.Any, site: LiveServer) -> None:
    """Open the home page and press the example's WeChat login button."""
    page.goto(site.url + "/")
    press(page, page.locator("a.wechat-qr-button").first)


def allow_on_consent_sheet(page: t.Any, person: str, shot: str | None = None) -> None:
    """On the sandbox's in-WeChat consent sheet (no QR code on it), allow as ``person``."""
    page.wait_for_url(CONSENT_PATH)
    sheet = page.locator("#sbx-authorize")
    assert sheet.get_attribute("data-scope") == "snsapi_userinfo"
    assert page.locator("#sbx-qr-image").count() == 0
    assert "申请获得你的公开信息" in sheet.inner_text()
    if shot:
        shoot(page, shot)
    page.locator(f"input[name=person][value={person}]").check()
    press(page, page.locator("#sbx-allow"))


def scan_with_a_phone(page: t.Any, site: LiveServer, person: str) -> None:
    """On the sandbox's QR page: a phone (another device, its own session) scans the code
    and allows as ``person``; the page notices by polling and goes on."""
    page.wait_for_url(QR_PATH)
    page.locator("#sbx-qr-image").wait_for()
    uuid = page.locator("[data-uuid]").first.get_attribute("data-uuid")
    confirm = f"{site.url}{SANDBOX_PREFIX}/connect/confirm/{uuid}"
    with requests.Session() as phone:
        assert phone.get(confirm, timeout=5).status_code == 200
        allowed = phone.post(confirm, data={"action": "allow", "person": person}, timeout=5)
        assert allowed.status_code == 200


def me(page: t.Any, site: LiveServer) -> dict[str, t.Any] | None:
    """The example site's idea of who this browser is (``/api/me``), ``None`` if nobody."""
    answer = page.request.get(site.url + "/api/me")
    return None if answer.status == 401 else t.cast(dict[str, t.Any], answer.json())


def account_page(page: t.Any, site: LiveServer, shot: str) -> t.Any:
    """The example's account page: its linked WeChat accounts (one row per connection)."""
    page.goto(site.url + "/account")
    shoot(page, shot)
    return page.locator("tr.identity")


def database_rows(site: LiveServer) -> tuple[list[t.Any], list[t.Any]]:
    """The example site's users and WeChat identities, as its database has them."""
    from example_app.models import User, db

    app = site.server.app
    with app.app_context():
        identity = db.metadata.tables["wechat_qr_identity"]
        users = list(db.session.execute(sa.select(User.id, User.nickname)).all())
        identities = list(db.session.execute(
            sa.select(identity.c.user_id, identity.c.app, identity.c.openid,
                      identity.c.unionid).order_by(identity.c.id)).all())
        return users, identities


def test_wechat_on_a_phone_logs_in_through_the_official_account(
        open_browser: t.Callable[..., t.Any], site: LiveServer) -> None:
    page = open_browser("wechat-phone")
    tap_wechat_login(page, site)
    allow_on_consent_sheet(page, "zhangsan", shot="phone-consent")
    page.wait_for_url(site.url + "/")
    shoot(page, "phone-logged-in")
    assert "张三🐼" in page.locator("header").inner_text()
    identities = me(page, site)["identities"]  # type: ignore[index]
    assert [i["app"] for i in identities] == ["official_account"]
    rows = account_page(page, site, "phone-account")
    assert rows.count() == 1
    assert "张三🐼" in rows.inner_text()
    assert page.locator("a.link-wechat").count() == 0  # linked already: no second offer
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_wechat_for_windows_logs_in_through_the_official_account(
        open_browser: t.Callable[..., t.Any], site: LiveServer) -> None:
    page = open_browser("wechat-windows")
    tap_wechat_login(page, site)
    allow_on_consent_sheet(page, "lisi", shot="windows-consent")
    page.wait_for_url(site.url + "/")
    assert "李四" in page.locator("header").inner_text()
    assert [i["app"] for i in me(page, site)["identities"]] == [  # type: ignore[index]
        "official_account"]


def test_mobile_safari_gets_the_phone_page(open_browser: t.Callable[..., t.Any],
                                           site: LiveServer) -> None:
    page = open_browser("safari-phone")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    tap_wechat_login(page, site)
    page.wait_for_url(site.url + "/auth/wechat/login**")
    box = page.locator("[data-wechat-qr-page=phone]")
    assert box.is_visible()
    assert page.locator("#sbx-qr-image, #wechat-qr-frame").count() == 0
    link = page.locator("#wechat-qr-page-url").input_value()
    assert link.startswith(site.url + "/auth/wechat/login")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert "文件传输助手" in box.inner_text()
    assert not ENGLISH.search(box.inner_text()), box.inner_text()
    shoot(page, "safari-phone-page-zh")

    copy = page.locator("#wechat-qr-copy")
    where = copy.bounding_box()
    press(page, copy)
    page.wait_for_function("document.getElementById('wechat-qr-copied').textContent !== ''")
    assert page.locator("#wechat-qr-copied").inner_text() == "已复制，请粘贴到微信中。"
    assert page.evaluate("navigator.clipboard.readText()") == link
    assert copy.bounding_box() == where  # the message has its own line: nothing jumps
    shoot(page, "safari-phone-page-copied-zh")

    press(page, page.locator("a[data-wechat-qr-choice=qr]"))
    page.wait_for_url(QR_PATH)
    page.locator("#sbx-qr-image").wait_for()
    shoot(page, "safari-qr-anyway")

    english = open_browser("safari-phone", "en-US")
    english.goto(site.url + "/auth/wechat/login")
    assert english.locator("[data-wechat-qr-page=phone]").is_visible()
    assert "Copy link" in english.locator("#wechat-qr-copy").inner_text()
    assert english.evaluate("document.documentElement.scrollWidth") <= 390
    shoot(english, "safari-phone-page-en")


def test_wecom_copies_the_link_and_shows_it_plainly_without_script(
        open_browser: t.Callable[..., t.Any], browser: t.Any, site: LiveServer) -> None:
    """WeCom's page copies its link as the phone page does; with no script (or one a strict
    CSP blocks) the link is a plain link to press and hold, and no dead button shows."""
    page = open_browser("wecom-phone")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    tap_wechat_login(page, site)
    page.locator("[data-error=WeComBrowser]").wait_for()
    link = page.locator("#wechat-qr-page-url").input_value()
    assert link.startswith(site.url + "/auth/wechat/login")
    assert page.locator("#wechat-qr-plain-link").is_hidden()
    press(page, page.locator("#wechat-qr-copy"))
    page.wait_for_function("document.getElementById('wechat-qr-copied').textContent !== ''")
    assert page.locator("#wechat-qr-copied").inner_text() == "已复制，请粘贴到微信或浏览器中。"
    assert page.evaluate("navigator.clipboard.readText()") == link
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shoot(page, "wecom-page-copied-zh")

    context = browser.new_context(locale="en-US", java_script_enabled=False,
                                  **BROWSERS["wecom-phone"])
    try:
        no_script = context.new_page()
        no_script.goto(link)
        assert no_script.locator("#wechat-qr-copy").is_hidden()
        plain = no_script.locator("#wechat-qr-plain-link a")
        assert plain.is_visible() and plain.get_attribute("href") == link
        assert "press and hold" in no_script.locator("#wechat-qr-plain-link").inner_text()
        assert no_script.evaluate("document.documentElement.scrollWidth") <= 390
        shoot(no_script, "wecom-page-no-script-en")
    finally:
        context.close()


def test_a_computer_gets_the_qr_code(open_browser: t.Callable[..., t.Any],
                                     site: LiveServer) -> None:
    page = open_browser("desktop")
    tap_wechat_login(page, site)
    scan_with_a_phone(page, site, "xiaohua")
    page.wait_for_url(site.url + "/")
    assert "🌸小花🌸" in page.locator("header").inner_text()
    assert [i["app"] for i in me(page, site)["identities"]] == ["website"]  # type: ignore[index]


def test_one_person_is_one_account_by_qr_and_inside_wechat(
        open_browser: t.Callable[..., t.Any], site: LiveServer) -> None:
    computer = open_browser("desktop")
    tap_wechat_login(computer, site)
    scan_with_a_phone(computer, site, "zhangsan")
    computer.wait_for_url(site.url + "/")

    phone = open_browser("wechat-phone")
    tap_wechat_login(phone, site)
    allow_on_consent_sheet(phone, "zhangsan")
    phone.wait_for_url(site.url + "/")

    on_computer, on_phone = me(computer, site), me(phone, site)
    assert on_computer is not None and on_phone is not None
    assert on_computer["id"] == on_phone["id"]
    for page, shot in ((computer, "one-account-computer"), (phone, "one-account-phone")):
        rows = account_page(page, site, shot)
        assert rows.count() == 1  # one WeChat, linked once, though by two apps
        assert "张三🐼" in rows.inner_text()

    users, identities = database_rows(site)
    assert len(users) == 1
    assert sorted(i.app for i in identities) == ["official_account", "website"]
    assert {i.user_id for i in identities} == {str(users[0].id)}  # kept as text
    assert len({i.openid for i in identities}) == 2 and len({i.unionid for i in identities}) == 1


def test_a_snapshot_visitor_never_gets_an_account(open_browser: t.Callable[..., t.Any],
                                                  site: LiveServer) -> None:
    page = open_browser("wechat-phone")
    tap_wechat_login(page, site)
    allow_on_consent_sheet(page, "snapshot")
    page.wait_for_url(site.url + "/auth/wechat/callback**")
    shoot(page, "snapshot-page")
    text = page.locator("main").inner_text()
    assert "使用完整服务" in text and not ENGLISH.search(text), text
    assert me(page, site) is None
    assert database_rows(site) == ([], [])


def test_the_verify_file_is_served_at_the_root(open_browser: t.Callable[..., t.Any],
                                               database: Database) -> None:
    name, content = "MP_verify_Xy7Q2pLm9Kd3.txt", "Xy7Q2pLm9Kd3"
    with serve_example_site(database, WECHAT_QR_OA_VERIFY_FILE=f"{name}={content}") as site:
        page = open_browser("desktop")
        answer = page.goto(f"{site.url}/{name}")
        assert answer.status == 200
        assert answer.headers["content-type"].startswith("text/plain")
        assert page.locator("body").inner_text() == content
        assert page.goto(f"{site.url}/MP_verify_other.txt").status == 404


def test_a_linked_wechat_is_unlinked_from_both_apps_at_once(
        open_browser: t.Callable[..., t.Any], site: LiveServer) -> None:
    """The example's own account links WeChat by QR code on a computer, then logs in inside
    WeChat (the same unionid: the same account); its account page shows one WeChat, and
    unlinking it removes the identity of each app."""
    computer = open_browser("desktop")
    computer.goto(site.url + "/register")
    computer.fill("#username", "bob")
    computer.fill("#password", "bob-password-1")
    computer.locator("main form button.primary").click()
    computer.wait_for_url(site.url + "/")
    computer.goto(site.url + "/account")
    computer.locator("a.link-wechat").click()
    scan_with_a_phone(computer, site, "jose")
    computer.wait_for_url(site.url + "/account")

    phone = open_browser("wechat-phone")
    tap_wechat_login(phone, site)
    allow_on_consent_sheet(phone, "jose")
    phone.wait_for_url(site.url + "/")
    assert me(phone, site)["username"] == "bob"  # type: ignore[index]

    rows = account_page(phone, site, "two-apps-account")
    assert rows.count() == 1
    assert [a.get_attribute("data-app") for a in rows.locator(".openid").all()] == [
        "website", "official_account"]
    assert "扫码登录" in rows.inner_text() and "微信内登录" in rows.inner_text()
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390

    press(phone, rows.locator("a.unlink-wechat"))
    phone.wait_for_url(site.url + "/account/unlink/wechat")
    shoot(phone, "two-apps-unlink")
    assert phone.locator("main p[data-app]").count() == 2
    press(phone, phone.locator("form.unlink-form button[type=submit]"))
    phone.wait_for_url(site.url + "/account")
    assert phone.locator(".flash").all_inner_texts() == ["微信账号“José Martín”已与你的账号解绑。"]
    assert phone.locator("tr.identity").count() == 0
    users, identities = database_rows(site)
    assert [user.id for user in users] == [me(phone, site)["id"]]  # type: ignore[index]
    assert identities == []


def test_the_bind_page_fits_a_phone_and_shows_the_avatar(
        open_browser: t.Callable[..., t.Any], database: Database) -> None:
    """Ask binding inside WeChat on a phone, with avatars stored (the example's default): a
    nickname without spaces wraps instead of making the page wider than the screen, and
    the avatar loads (before: a broken image, the sandbox's image host, which only the
    extension's downloader reaches)."""
    with serve_example_site(database, WECHAT_QR_DISPLAY_NAME="WeChat",
                            WECHAT_QR_ASSOCIATION="ask_binding") as site:
        page = open_browser("wechat-phone")
        tap_wechat_login(page, site)
        page.wait_for_url(CONSENT_PATH)
        page.locator("input[name=person][value=new]").check()
        page.locator("input[name=nickname]").fill("Zhang_Xiaoming_Beijing_1990_CN")
        press(page, page.locator("#sbx-allow"))
        page.wait_for_url("**/auth/bind")
        shoot(page, "bind-long-nickname")
        assert page.evaluate("document.scrollingElement.scrollWidth") <= 390
        avatar = page.locator("img.wechat-qr-avatar")
        assert avatar.evaluate("img => img.complete && img.naturalWidth > 0")


def test_a_phone_answers_on_its_own_screen_and_comes_back_as_the_person_it_made(
        open_browser: t.Callable[..., t.Any], site: LiveServer) -> None:
    """The tester's walk: on an iPhone in Chinese, "show the QR code anyway" gives a page
    that offers what works on a phone (no desktop fast login, in Chinese), its phone page
    makes up "小明"; later, inside WeChat, the consent page lists "小明" (before: only the
    built-in people, so the only way back was a second person of that name, and a
    second account)."""
    page = open_browser("safari-phone")
    tap_wechat_login(page, site)
    page.wait_for_url(site.url + "/auth/wechat/login**")
    press(page, page.locator("a[data-wechat-qr-choice=qr]"))
    page.wait_for_url(QR_PATH)
    page.locator("#sbx-qr-image").wait_for()
    assert page.locator("#sbx-fast-login").count() == 0
    hint, simulate = page.locator("#sbx-phone-hint"), page.locator("#sbx-simulate")
    assert hint.is_visible() and "另一台设备" in hint.inner_text()
    for text in (hint.inner_text(), simulate.inner_text()):
        assert not ENGLISH.search(text), text
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shoot(page, "safari-qr-page-on-the-phone")

    with page.context.expect_page() as opened:
        press(page, simulate)
    phone_page = opened.value
    phone_page.locator("input[name=person][value=new]").check()
    phone_page.locator("input[name=nickname]").fill("小明")
    shoot(phone_page, "safari-phone-page-new-person")
    press(phone_page, phone_page.locator("#sbx-allow"))
    page.wait_for_url(site.url + "/")  # the QR page's poll goes on by itself
    first = me(page, site)
    assert first is not None and first["nickname"] == "小明"

    wechat = open_browser("wechat-phone")
    tap_wechat_login(wechat, site)
    wechat.wait_for_url(CONSENT_PATH)
    made_up = wechat.locator("label.sbx-person", has_text="小明")
    assert made_up.count() == 1 and "之前在此新建" in made_up.inner_text()
    made_up.locator("input[name=person]").check()
    press(wechat, wechat.locator("#sbx-allow"))
    wechat.wait_for_url(site.url + "/")
    again = me(wechat, site)
    assert again is not None and again["id"] == first["id"]
    users, identities = database_rows(site)
    assert len(users) == 1 and len({i.unionid for i in identities}) == 1
