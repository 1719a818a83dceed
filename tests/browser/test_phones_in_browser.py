"""The login's pages on the smallest phone screen (an iPhone SE, 320 px), in headless
Chromium: the extension's own pages (a host without a layout of its own) and the sandbox's
phone pages fit the screen, and what a thumb taps (buttons, fields, the sandbox's person
rows and its "answer on this phone" link) is at least 44 px tall; inside WeChat with its
larger text, a long nickname on the consent sheet wraps instead of widening the page.
Screenshots: ``test-artifacts/phones-*.png``."""

from __future__ import annotations

import pathlib
import typing as t

import pytest
from support import (
    ONE_DATABASE,
    SAFARI_PHONE,
    SANDBOX_PREFIX,
    WECHAT_PHONE,
    LiveServer,
    serve_example_site,
)

pytestmark = [pytest.mark.browser, ONE_DATABASE]

ARTIFACTS = pathlib.Path(__file__).resolve().parents[2] / "test-artifacts"
LOCALES = {"zh": "zh-CN", "en": "en-US"}
IPHONE_SE = {"viewport": {"width": 320, "height": 568}, "is_mobile": True, "has_touch": True,
             "device_scale_factor": 2}
#: The screen's width. Not window.innerWidth: a phone's browser widens its layout viewport
#: to a page wider than the screen (and shrinks the whole page to fit).
SCREEN_WIDTH = IPHONE_SE["viewport"]["width"]  # type: ignore[index]
#: A WeChat nickname without a space to break at.
LONG_NICKNAME = "Zhang_Xiaoming_Beijing_1990_CN"
#: WeChat's larger font setting, roughly: the whole page at 130 %.
LARGER_TEXT = ("document.addEventListener('DOMContentLoaded', () => {"
               " document.documentElement.style.zoom = '1.3'; });")

#: Visible buttons, fields, person rows and stand-alone links less than 44 px tall (a
#: field inside a sandbox person's row: the row is what is tapped).
SMALL_TAP_TARGETS_JS = """() => {
  const small = [];
  const selector = "button, input:not([type=hidden]):not([type=radio]):not([type=checkbox]),"
                 + " select, label.sbx-person, .wechat-qr-button, #sbx-simulate";
  for (const element of document.querySelectorAll(selector)) {
    if (element.matches("label.sbx-person input")) continue;
    const box = element.getBoundingClientRect();
    if (!box.width || !box.height || getComputedStyle(element).visibility === "hidden") continue;
    if (box.height < 44)
      small.push((element.id || element.name || element.className || element.tagName)
                 + " " + Math.round(box.height) + "px");
  }
  return small;
}"""

#: Visible text fields whose text is smaller than 16 px (iOS zooms the page into them).
SMALL_FIELD_TEXT_JS = """() => [...document.querySelectorAll(
    "input[type=text], input[type=password], input[type=email], input[type=tel],"
    + " input:not([type])")]
  .filter((field) => field.getClientRects().length
                     && parseFloat(getComputedStyle(field).fontSize) < 16)
  .map((field) => field.id || field.name)"""


def shoot(page: t.Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"phones-{name}.png"), full_page=True)


def check(page: t.Any, name: str) -> None:
    """The page fits the phone's width, and its buttons and fields are big enough to tap."""
    page.wait_for_load_state()
    shoot(page, name)
    assert page.evaluate("document.scrollingElement.scrollWidth") <= SCREEN_WIDTH, name
    assert page.evaluate(SMALL_TAP_TARGETS_JS) == [], name
    assert page.evaluate(SMALL_FIELD_TEXT_JS) == [], name


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_pages_of_a_login_fit_a_small_phone(browser: t.Any, make_app: t.Any,
                                                 lang: str) -> None:
    """Safari on an iPhone SE, on a host with no layout of its own: the phone page, the
    sandbox's QR page and its phone page, the bind page (a long nickname; a wrong
    password) and an expired login's page."""
    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None,
                   WECHAT_QR_ASSOCIATION="ask_binding")
    context = browser.new_context(locale=LOCALES[lang], user_agent=SAFARI_PHONE, **IPHONE_SE)
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        with LiveServer(app) as site:
            page.goto(site.url + "/auth/wechat/login")
            page.locator("#wechat-qr-copy").wait_for()
            check(page, f"{lang}-phone-page")

            page.locator("a[data-wechat-qr-choice=qr]").tap()
            page.wait_for_url(f"**{SANDBOX_PREFIX}/connect/qrconnect**")
            page.locator("#sbx-qr-image").wait_for()
            check(page, f"{lang}-sandbox-qr")

            uuid = page.locator("[data-uuid]").first.get_attribute("data-uuid")
            phone = context.new_page()
            phone.goto(f"{site.url}{SANDBOX_PREFIX}/connect/confirm/{uuid}")
            check(phone, f"{lang}-sandbox-confirm")
            phone.locator("input[name=person][value=new]").check()
            phone.locator("input[name=nickname]").fill(LONG_NICKNAME)
            phone.locator("#sbx-allow").tap()
            phone.locator("#sbx-confirm[data-outcome=allowed]").wait_for()
            check(phone, f"{lang}-sandbox-confirm-allowed")

            page.wait_for_url(site.url + "/auth/bind")  # the QR page's poll goes on
            check(page, f"{lang}-bind")
            page.locator("input[name=username]").fill("nobody")
            page.locator("input[name=password]").fill("wrong-password")
            page.locator("form.wechat-qr-bind-form button[type=submit]").tap()
            page.locator(".wechat-qr-problem").wait_for()
            check(page, f"{lang}-bind-wrong-password")

            assert page.goto(site.url + "/auth/wechat/callback?code=x&state=bad").status == 400
            check(page, f"{lang}-expired")
    finally:
        context.close()


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_wechats_consent_sheet_fits_with_larger_text(browser: t.Any, database: t.Any,
                                                     lang: str) -> None:
    """WeChat on an iPhone SE with its text made larger: the consent sheet, listing a
    person made up before with a nickname without spaces, is no wider than the screen."""
    with serve_example_site(database) as site:
        for visit in ("first", "again"):
            context = browser.new_context(locale=LOCALES[lang], user_agent=WECHAT_PHONE,
                                          **IPHONE_SE)
            context.set_default_timeout(15_000)
            context.add_init_script(LARGER_TEXT)
            page = context.new_page()
            try:
                page.goto(site.url + "/auth/wechat/login")
                page.wait_for_url(f"**{SANDBOX_PREFIX}/connect/oauth2/authorize**")
                page.locator("#sbx-authorize").wait_for()
                shoot(page, f"{lang}-consent-larger-text-{visit}")
                assert page.evaluate("document.scrollingElement.scrollWidth") <= SCREEN_WIDTH, (
                    visit)
                if visit == "first":
                    page.locator("input[name=person][value=new]").check()
                    page.locator("input[name=nickname]").fill(LONG_NICKNAME)
                    page.locator("#sbx-allow").tap()
                    page.wait_for_url(site.url + "/")
                else:
                    assert page.locator("label.sbx-person", has_text=LONG_NICKNAME).count() == 1
            finally:
                context.close()
