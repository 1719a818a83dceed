"""Two languages: every page of the extension and the sandbox in Simplified Chinese and
English, chosen by the host's hook, Flask-Babel, ``Accept-Language`` or the default; WeChat's
QR page and profile request follow; the shipped catalog is complete and compiled."""

from __future__ import annotations

import io
import logging
import re
import typing as t
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from flask import Flask, render_template_string
from markupsafe import escape
from support import (
    NICKNAME,
    ROOT,
    TOKEN_PATH,
    USERINFO_PATH,
    add_user,
    api_queries,
    bind_page,
    find_tags,
    finish_login,
    log_in,
    login_with_wechat,
    poll,
    start_login,
)
from support import SANDBOX_PREFIX as SBX

from flask_wechat_qr import AccountAdapter, errors, i18n
from flask_wechat_qr.errors import ConfigurationError, LoginError
from flask_wechat_qr.settings import load_settings

PO = ROOT / "flask_wechat_qr/translations/zh_CN/LC_MESSAGES/flask_wechat_qr.po"
MO = PO.with_suffix(".mo")
CJK = re.compile(r"[\u4e00-\u9fff]")

ZH = "zh-CN,zh;q=0.9,en;q=0.8"
EN = "en-US,en;q=0.9"


def browser(app: Flask, accept_language: str | None) -> t.Any:
    """A test client whose every request sends this ``Accept-Language``."""
    client = app.test_client()
    if accept_language is not None:
        client.environ_base["HTTP_ACCEPT_LANGUAGE"] = accept_language
    return client


def html_lang(page: str) -> str | None:
    return find_tags(page, "html")[0].get("lang")


def page_of(resp: t.Any) -> str:
    return t.cast(str, resp.get_data(as_text=True))


def assert_chinese(page: str, *texts: str) -> None:
    assert html_lang(page) == "zh-CN"
    for text in texts:
        assert text in page, text


def assert_english(page: str, *texts: str) -> None:
    """English page: the texts, and no Chinese at all (``page`` has no Chinese data)."""
    assert html_lang(page) == "en"
    for text in texts:
        assert text in page, text
    assert not CJK.search(page), CJK.findall(page)


# --- the extension's pages ---------------------------------------------------------


def test_qr_page_in_both_languages(app: Flask) -> None:
    zh = page_of(browser(app, ZH).get("/auth/wechat/qr"))
    assert_chinese(zh, "<h1>使用微信登录</h1>", "请使用手机微信扫描二维码", "二维码无法显示？",
                   "打开微信登录页面", 'title="微信二维码"')
    assert "Scan the QR code" not in zh
    en = page_of(browser(app, EN).get("/auth/wechat/qr"))
    assert_english(en, "<h1>Log in with WeChat</h1>", "Scan the QR code with WeChat on your phone",
                   "QR code not showing?")
    # A space between a sentence and its link in English; none after Chinese full-width
    # punctuation, where it showed as a stray gap (a review of the Chinese, session 36).
    assert "QR code not showing? <a" in en and "No QR code above? <a" in en
    assert "二维码无法显示？<a" in zh and "上方没有显示二维码？<a" in zh
    assert "二维码未能加载。</strong>当前网络" in zh


def test_a_configured_display_name_is_shown_as_configured(make_app: t.Any) -> None:
    app = make_app(WECHAT_QR_DISPLAY_NAME="Corporate WeChat")
    zh = page_of(browser(app, ZH).get("/auth/wechat/qr"))
    assert "<h1>使用Corporate WeChat登录</h1>" in zh and "请使用手机微信扫描二维码" in zh


@pytest.mark.parametrize("path, status, zh_text, en_text", [
    ("/auth/wechat/callback", 400, "登录链接已失效", "This login link is no longer valid"),
    ("/auth/weibo/login", 404, "未知的登录方式", "Unknown login method"),
    ("/auth/wechat/login?next=/" + "a" * 3000, 400, "返回地址过长，请重新登录。",
     "The return address is too long. Start the login again."),
    ("/auth/wechat/link", 401, "请先登录", "Log in first"),
])
def test_error_pages_in_both_languages(app: Flask, path: str, status: int, zh_text: str,
                                       en_text: str) -> None:
    zh = browser(app, ZH).get(path)
    assert zh.status_code == status
    assert_chinese(page_of(zh), zh_text, "返回网站")
    assert en_text not in page_of(zh)
    en = browser(app, EN).get(path)
    assert en.status_code == status
    assert_english(page_of(en), en_text, "Back to the site")


def test_cancelled_and_wechat_error_pages_in_chinese(app: Flask, wechat_api: t.Any) -> None:
    client = browser(app, ZH)
    state = start_login(client)
    cancelled = client.get("/auth/wechat/callback", query_string={"state": state})
    assert cancelled.status_code == 200
    assert_chinese(page_of(cancelled), "已取消登录", "你已取消微信登录", ">重试</a>")

    state = start_login(client)
    wechat_api.error(TOKEN_PATH, 40029, "invalid code")
    expired = finish_login(client, state)
    assert expired.status_code == 400
    assert_chinese(page_of(expired), "二维码已过期", "微信授权已过期或无效，请扫描新的二维码。")
    assert 'data-errcode="40029"' in page_of(expired)

    state = start_login(client)
    wechat_api.error(TOKEN_PATH, 40125, "invalid appsecret")
    misconfigured = finish_login(client, state)
    assert misconfigured.status_code == 502
    assert_chinese(page_of(misconfigured), "本站的微信登录配置有误")


def test_login_only_refusal_in_both_languages(make_app: t.Any, wechat_api: t.Any) -> None:
    app = make_app(WECHAT_QR_LOGIN_ONLY=True)
    zh = login_with_wechat(browser(app, ZH), wechat_api)
    assert zh.status_code == 403
    assert_chinese(page_of(zh), "这个微信尚未绑定本站账号", "本站不通过微信创建账号")
    en = login_with_wechat(browser(app, EN), wechat_api)
    assert_english(page_of(en), "No account is linked to this WeChat")


def test_log_and_str_of_an_error_stay_english(app: Flask,
                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="flask_wechat_qr"):
        page = page_of(browser(app, ZH).get("/auth/wechat/callback"))
    assert "登录链接已失效" in page
    assert "The login expired" in caplog.text
    assert not CJK.search(caplog.text)
    with app.test_request_context("/", headers={"Accept-Language": ZH}):
        error = errors.StateError()
        assert str(error).startswith("The login expired")
        assert str(error.message).startswith("本次登录已过期")
        assert errors.InvalidCode(40029, "invalid code").args == (
            "WeChat errcode 40029: invalid code",)


def test_bind_page_in_both_languages(make_app: t.Any, wechat_api: t.Any) -> None:
    app = make_app(WECHAT_QR_ASSOCIATION="ask_binding")
    add_user(app, username="alice", password="right")
    client = browser(app, ZH)
    assert login_with_wechat(client, wechat_api).headers["Location"] == "/auth/bind"
    zh, token = bind_page(client)
    assert_chinese(zh, f"欢迎你，{NICKNAME}", "该微信尚未绑定本站账号。", "绑定已有账号",
                   "用户名", "密码", "绑定并登录", "用这个微信创建新账号", "微信：绑定账号")
    assert "Bind to my existing account" not in zh
    wrong = client.post("/auth/bind", data={"csrf_token": token, "action": "bind",
                                            "username": "alice", "password": "wrong"})
    assert wrong.status_code == 400
    assert "用户名或密码错误。" in page_of(wrong)

    other = browser(app, EN)
    login_with_wechat(other, wechat_api)
    en = page_of(other.get("/auth/bind"))
    assert "Bind to my existing account" in en and "Create a new account with this WeChat" in en
    assert html_lang(en) == "en"
    assert "绑定" not in en


def test_binding_block_message_in_chinese(make_app: t.Any, wechat_api: t.Any) -> None:
    app = make_app(WECHAT_QR_ASSOCIATION="ask_binding", WECHAT_QR_BIND_ATTEMPTS_PER_BINDING=1,
                   WECHAT_QR_BIND_BLOCK_SECONDS=60)
    client = browser(app, ZH)
    login_with_wechat(client, wechat_api)
    _page, token = bind_page(client)
    form = {"csrf_token": token, "action": "bind", "username": "x", "password": "y"}
    client.post("/auth/bind", data=form)
    blocked = client.post("/auth/bind", data=form)
    assert blocked.status_code == 429
    assert_chinese(page_of(blocked), "尝试次数过多", "请等待 1 分钟后重新用微信登录。")


def test_break_out_page_in_chinese(app: Flask, wechat_api: t.Any) -> None:
    client = browser(app, ZH)
    wechat_api.token()
    wechat_api.userinfo()
    state = start_login(client)
    resp = client.get("/auth/wechat/callback", headers={"Sec-Fetch-Dest": "iframe"},
                      query_string={"code": "0816Ab000aBcdE1xYz3000xyz8z16AbQ", "state": state})
    assert resp.status_code == 200
    assert_chinese(page_of(resp), "你已登录。", ">继续</a>", "<title>已登录</title>")


def test_login_button_in_both_languages(app: Flask) -> None:
    template = ('{% from "wechat_qr/macros.html" import wechat_login_button %}'
                "{{ wechat_login_button() }}")
    with app.test_request_context("/", headers={"Accept-Language": ZH}):
        assert ">使用微信登录</a>" in render_template_string(template)
    with app.test_request_context("/", headers={"Accept-Language": EN}):
        assert ">Log in with WeChat</a>" in render_template_string(template)


def test_host_templates_can_use_the_translator(app: Flask) -> None:
    template = "{{ wechat_qr_gettext('Try again') }} {{ wechat_qr_locale() }}"
    with app.test_request_context("/", headers={"Accept-Language": "zh-TW"}):
        assert render_template_string(template) == "重试 zh_CN"


# --- how the language is chosen ----------------------------------------------------


@pytest.mark.parametrize("header, expected", [
    ("zh-CN", "zh_CN"), ("zh", "zh_CN"), ("zh-Hans-CN", "zh_CN"), ("zh-TW", "zh_CN"),
    ("zh-HK,en;q=0.5", "zh_CN"), ("en-GB", "en"), ("fr-FR,de;q=0.9", "en"),
    ("fr, zh-CN;q=0.3, en;q=0.2", "zh_CN"), ("en;q=0.4, zh-CN;q=0.8", "zh_CN"),
    ("zh-CN;q=0, en;q=0.1", "en"), ("*", "en"), ("", "en"),
    ("zh-CN;q=abc, en;q=0.5", "en"), (";;,,=", "en"), ("zh" * 2000, "en"),
])
def test_accept_language_by_quality(app: Flask, header: str, expected: str) -> None:
    with app.test_request_context("/", headers={"Accept-Language": header}):
        assert i18n.get_locale() == expected


def test_a_huge_accept_language_is_read_only_at_its_start(
        app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that joins repeated header lines (gunicorn) gives the app an
    ``Accept-Language`` of any length: 730 KB of it cost half a second of CPU a page,
    parsed whole. Only its first languages are read now (what they choose stands)."""
    parsed: list[int] = []
    real_parse = i18n.parse_accept_header

    def counting_parse(header: str | None, cls: t.Any = None) -> t.Any:
        parsed.append(len(header or ""))
        return real_parse(header, cls)

    monkeypatch.setattr(i18n, "parse_accept_header", counting_parse)
    filler = ",z" * 365_000
    for header, expected in (("fr, zh-CN;q=0.8" + filler, "zh_CN"),
                             ("en-GB;q=0.9" + filler + ", zh-CN", "en"),
                             ("z" * 730_000, "en")):
        with app.test_request_context("/", headers={"Accept-Language": header}):
            assert i18n.get_locale() == expected
    assert parsed and max(parsed) <= i18n.MAX_READ_ACCEPT_LANGUAGE


def test_only_short_accept_language_headers_are_remembered(app: Flask) -> None:
    """What each header chose is remembered (parsing one costs more than the rest of the
    choice); a long header, which no browser sends, is parsed and not kept."""
    remembered = i18n._remembered_locale_of_accept_language
    remembered.cache_clear()
    for header, expected in (("en;q=0.4, zh-CN;q=0.8", "zh_CN"), ("en-GB", "en"),
                             ("en;q=0.4, zh-CN;q=0.8", "zh_CN"),
                             ("fr;q=0.9, " * 30 + "zh;q=0.5", "zh_CN")):
        with app.test_request_context("/", headers={"Accept-Language": header}):
            assert i18n.get_locale() == expected
    # The long header is not kept; the two short ones are, and the repeat was a hit.
    assert remembered.cache_info().currsize == 2
    assert remembered.cache_info().hits >= 1


def test_default_locale_without_a_header_and_outside_requests(make_app: t.Any) -> None:
    app = make_app(WECHAT_QR_DEFAULT_LOCALE="zh_CN")
    assert_chinese(page_of(browser(app, None).get("/auth/wechat/qr")), "请使用手机微信扫描二维码")
    assert "Scan the QR code" in page_of(browser(app, EN).get("/auth/wechat/qr"))
    with app.app_context():
        assert i18n.get_locale() == "zh_CN"
        assert str(errors.StateError.title) == "登录链接已失效"
    assert i18n.get_locale() == "en"  # no app at all


CREDENTIALS = {"WECHAT_QR_APP_ID": "wx1111111111111111", "WECHAT_QR_APP_SECRET": "s"}


@pytest.mark.parametrize("value, expected", [(None, "en"), ("", "en"), ("en", "en"),
                                             ("zh_CN", "zh_CN")])
def test_default_locale_setting(value: t.Any, expected: str) -> None:
    settings = load_settings({**CREDENTIALS, "WECHAT_QR_DEFAULT_LOCALE": value})
    assert settings.default_locale == expected
    assert load_settings(CREDENTIALS).default_locale == "en"


@pytest.mark.parametrize("value", ["zh", "zh-CN", "zh_TW", "fr", ["en"]])
def test_default_locale_must_be_supported(value: t.Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings({**CREDENTIALS, "WECHAT_QR_DEFAULT_LOCALE": value})
    assert info.value.key == "WECHAT_QR_DEFAULT_LOCALE"
    assert "'zh_CN'" in info.value.fix


def test_adapter_hook_beats_accept_language(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def select_locale(adapter: AccountAdapter) -> str | None:
        calls.append("called")
        return "zh-Hans"

    monkeypatch.setattr(AccountAdapter, "select_locale", select_locale)
    resp = browser(app, EN).get("/auth/wechat/callback")
    assert_chinese(page_of(resp), "登录链接已失效")
    assert calls == ["called"]  # once per request, however many messages

    monkeypatch.setattr(AccountAdapter, "select_locale", lambda adapter: None)
    assert "This login link is no longer valid" in page_of(browser(app, EN).get(
        "/auth/wechat/callback"))
    monkeypatch.setattr(AccountAdapter, "select_locale", lambda adapter: "fr")  # next rule
    assert html_lang(page_of(browser(app, ZH).get("/auth/wechat/callback"))) == "zh-CN"


def test_flask_babel_locale_decides_when_the_host_uses_it(app: Flask,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from flask_babel import Babel

    chosen = {"locale": "zh_Hant_TW"}
    host_catalogs(app, "zh_Hant_TW", "de")  # the host's site exists in en, zh and de
    Babel(app, locale_selector=lambda: chosen["locale"])
    assert_chinese(page_of(browser(app, EN).get("/auth/wechat/qr")), "请使用手机微信扫描二维码")
    chosen["locale"] = "en"  # the host could have chosen Chinese and did not
    assert html_lang(page_of(browser(app, ZH).get("/auth/wechat/qr"))) == "en"
    chosen["locale"] = "de"  # a language the extension does not speak: the browser's next
    assert html_lang(page_of(browser(app, ZH).get("/auth/wechat/qr"))) == "zh-CN"
    assert html_lang(page_of(browser(app, "de, fr;q=0.5").get("/auth/wechat/qr"))) == "en"
    # The host's hook comes first.
    monkeypatch.setattr(AccountAdapter, "select_locale", lambda adapter: "zh_CN")
    assert html_lang(page_of(browser(app, EN).get("/auth/wechat/qr"))) == "zh-CN"
    # The host's own Jinja gettext stays Flask-Babel's.
    with app.test_request_context("/"):
        assert app.jinja_env.globals["gettext"] is not i18n.gettext
        assert render_template_string("{{ _('Try again') }}") == "Try again"


def host_catalogs(app: Flask, *locales: str) -> None:
    """Give the host's Flask-Babel a (compiled, empty) catalog for each of ``locales``."""
    from babel.messages.catalog import Catalog
    from babel.messages.mofile import write_mo

    for locale in locales:
        folder = Path(app.root_path) / "translations" / locale / "LC_MESSAGES"
        folder.mkdir(parents=True)
        with open(folder / "messages.mo", "wb") as mo:
            write_mo(mo, Catalog(locale=locale))


def test_chinese_browsers_get_chinese_pages_whatever_the_host_babel_offers(
        app: Flask) -> None:
    """A host whose own site exists in English and Spanish: its Babel can never pick
    Chinese, so its "en" is only a fallback; the extension ships Chinese and shows it."""
    from flask_babel import Babel

    host_catalogs(app, "es")
    Babel(app)  # Flask-Babel's own selector: the browser's best of en and es
    for accept in (ZH, "zh-TW,zh;q=0.8", "zh"):
        page = page_of(browser(app, accept).get("/auth/wechat/qr"))
        assert_chinese(page, "请使用手机微信扫描二维码")
    assert html_lang(page_of(browser(app, EN).get("/auth/wechat/qr"))) == "en"
    assert html_lang(page_of(browser(app, "es").get("/auth/wechat/qr"))) == "en"
    # Error pages and the button follow the same rule.
    assert html_lang(page_of(browser(app, ZH).get("/auth/wechat/callback"))) == "zh-CN"
    # The host's own pages stay in the host's languages.
    with app.test_request_context("/", headers={"Accept-Language": ZH}):
        import flask_babel

        assert str(flask_babel.get_locale()) == "en"


@pytest.mark.parametrize("offered", [["en"], {"en": {"flag": "gb", "name": "English"}}])
def test_a_babel_that_offers_fewer_languages_than_it_has_catalogs_for(
        app: Flask, offered: t.Any) -> None:
    """Flask-AppBuilder ships catalogs for 18 languages, Chinese among them, and offers
    those its ``LANGUAGES`` setting names: an English-only site. Its "en" was taken for the
    site's choice against Chinese, and Chinese browsers got English pages."""
    from flask_babel import Babel

    host_catalogs(app, "zh", "de")  # shipped with the framework
    app.config["LANGUAGES"] = offered  # what the site offers
    Babel(app, locale_selector=lambda: "en")
    assert_chinese(page_of(browser(app, ZH).get("/auth/wechat/qr")), "请使用手机微信扫描二维码")
    app.config["LANGUAGES"] = ["en", "zh"]  # offered, and not chosen: the site's choice
    assert html_lang(page_of(browser(app, ZH).get("/auth/wechat/qr"))) == "en"


def test_flask_babel_default_locale_without_a_selector(
        app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Chinese-only site: Babel's default decides where the browser states no language
    of ours; an English browser is shown English (the site could not offer it), unless the
    host's hook decides, the one line the docs give such sites."""
    from flask_babel import Babel

    app.config["BABEL_DEFAULT_LOCALE"] = "zh_CN"
    Babel(app)
    assert html_lang(page_of(browser(app, ZH).get("/auth/wechat/qr"))) == "zh-CN"
    assert html_lang(page_of(browser(app, "fr").get("/auth/wechat/qr"))) == "zh-CN"
    assert html_lang(page_of(app.test_client().get("/auth/wechat/qr"))) == "zh-CN"
    assert html_lang(page_of(browser(app, EN).get("/auth/wechat/qr"))) == "en"
    monkeypatch.setattr(AccountAdapter, "select_locale", lambda adapter: "zh_CN")
    assert html_lang(page_of(browser(app, EN).get("/auth/wechat/qr"))) == "zh-CN"


# --- WeChat's QR page and profile request ------------------------------------------


def login_query(client: t.Any) -> list[tuple[str, str]]:
    location = client.get("/auth/wechat/login").headers["Location"]
    assert location.endswith("#wechat_redirect")
    return parse_qsl(urlsplit(location.removesuffix("#wechat_redirect")).query)


def iframe_query(client: t.Any) -> list[tuple[str, str]]:
    src = find_tags(page_of(client.get("/auth/wechat/qr")), "iframe")[0]["src"] or ""
    return parse_qsl(urlsplit(src).query)


@pytest.mark.parametrize("header, lang", [(ZH, "cn"), (EN, "en")])
def test_qr_page_lang_follows_the_page(app: Flask, header: str, lang: str) -> None:
    query = login_query(browser(app, header))
    assert [name for name, _ in query] == [
        "appid", "redirect_uri", "response_type", "scope", "state", "lang"]
    assert query[-1] == ("lang", lang)
    frame = iframe_query(browser(app, header))
    assert [name for name, _ in frame][:7] == [
        "appid", "scope", "redirect_uri", "state", "login_type", "self_redirect", "style"]
    # As wxLogin.js: lang only for English (WeChat's default is Chinese).
    assert dict(frame).get("lang") == ("en" if lang == "en" else None)


def test_link_redirect_lang_follows_the_page(app: Flask, wechat_api: t.Any) -> None:
    user_id = add_user(app, username="bob", password="pw")
    client = browser(app, ZH)
    log_in(client, user_id)
    location = client.get("/auth/wechat/link").headers["Location"]
    assert location.endswith("&lang=cn#wechat_redirect")


@pytest.mark.parametrize("configured", ["en", "cn"])
@pytest.mark.parametrize("header", [ZH, EN])
def test_configured_qr_page_lang_wins(make_app: t.Any, configured: str, header: str) -> None:
    app = make_app(WECHAT_QR_LANG=configured)
    assert login_query(browser(app, header))[-1] == ("lang", configured)
    assert dict(iframe_query(browser(app, header))).get("lang") == (
        "en" if configured == "en" else None)


@pytest.mark.parametrize("header, lang", [(ZH, "zh_CN"), (EN, "en"), ("zh-TW", "zh_CN")])
def test_userinfo_lang_follows_the_page(app: Flask, wechat_api: t.Any, header: str,
                                        lang: str) -> None:
    assert login_with_wechat(browser(app, header), wechat_api).status_code == 302
    (query,) = api_queries(wechat_api, USERINFO_PATH)
    assert query["lang"] == lang


@pytest.mark.parametrize("header", [ZH, EN])
def test_configured_userinfo_lang_wins(make_app: t.Any, wechat_api: t.Any, header: str) -> None:
    app = make_app(WECHAT_QR_USERINFO_LANG="zh_TW")
    assert login_with_wechat(browser(app, header), wechat_api).status_code == 302
    (query,) = api_queries(wechat_api, USERINFO_PATH)
    assert query["lang"] == "zh_TW"


# --- the sandbox's pages -----------------------------------------------------------


def sandbox_qr_page(client: t.Any, lang: str | None = None) -> tuple[str, str]:
    """Start a login, load the sandbox's QR page (with WeChat's ``lang`` replaced by
    ``lang``, or removed); return (the page, its QR code's uuid)."""
    location = client.get("/auth/wechat/login").headers["Location"]
    parts = urlsplit(location.split("localhost", 1)[1].split("#")[0])
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "lang"]
    if lang is not None:
        query.append(("lang", lang))
    page = page_of(client.get(parts.path, query_string=query))
    uuid = re.search(r'data-uuid="([^"]+)"', page)
    assert uuid, page
    return page, uuid.group(1)


def test_sandbox_qr_page_follows_wechats_lang(sandbox_app: Flask) -> None:
    page, _ = sandbox_qr_page(browser(sandbox_app, EN), "cn")
    assert_chinese(page, "<h1>微信登录</h1>", "使用微信扫一扫登录", "模拟扫码（无需手机）",
                   "沙盒 · 模拟的微信开放平台", "手机无法访问 localhost")
    assert "Simulate a scan" not in page
    # The script's texts (scanned, expired, refresh) are Chinese too.
    assert '"refresh": "\\u5237\\u65b0"' in page
    assert "微信快速登录（模拟）" in page
    page, _ = sandbox_qr_page(browser(sandbox_app, ZH), "en")
    # The fast login's choice of simulated people holds their (Chinese) nicknames: data.
    people = re.compile(r'<select name="person".*?</select>', re.S)
    assert "张三🐼" in people.search(page).group(0)  # type: ignore[union-attr]
    assert_english(people.sub("", page), "<h1>WeChat login</h1>",
                   "Scan with WeChat to log in to", "Simulate a scan (no phone)",
                   '"refresh": "Refresh"', "Log in with desktop WeChat (simulated)")


@pytest.mark.parametrize("header", [ZH, EN])
def test_sandbox_qr_page_without_lang_follows_the_browser(sandbox_app: Flask,
                                                          header: str) -> None:
    page, _ = sandbox_qr_page(browser(sandbox_app, header), None)
    assert html_lang(page) == ("zh-CN" if header == ZH else "en")


def test_sandbox_pages_ignore_the_hosts_hook(sandbox_app: Flask,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(AccountAdapter, "select_locale", lambda adapter: "zh_CN")
    assert html_lang(page_of(browser(sandbox_app, EN).get(SBX + "/"))) == "en"


def test_sandbox_phone_pages_in_both_languages(sandbox_app: Flask) -> None:
    desktop = browser(sandbox_app, EN)
    _, uuid = sandbox_qr_page(desktop)
    phone = browser(sandbox_app, ZH)
    confirm = page_of(phone.get(f"{SBX}/connect/confirm/{uuid}"))
    assert_chinese(confirm, "“Demo site”申请使用你的微信账号登录", "模拟的微信用户：",
                   "中文加表情的昵称", "新用户：", 'placeholder="昵称"', ">允许</button>",
                   ">拒绝</button>", "<title>微信授权</title>")
    assert "wants to log in" not in confirm
    problem = phone.post(f"{SBX}/connect/confirm/{uuid}", data={"action": "allow",
                                                                "person": "new"})
    assert problem.status_code == 400
    assert "请选择一个用户，或输入昵称。" in page_of(problem)
    allowed = phone.post(f"{SBX}/connect/confirm/{uuid}", data={"action": "allow",
                                                                "person": "zhangsan"})
    assert_chinese(page_of(allowed), "已允许", "请回到电脑上，“Demo site”正在为你登录。")
    used = phone.get(f"{SBX}/connect/confirm/{uuid}")
    assert used.status_code == 409
    assert_chinese(page_of(used), "二维码已使用")
    gone = phone.get(f"{SBX}/connect/confirm/no-such-code")
    assert gone.status_code == 410
    assert_chinese(page_of(gone), "二维码已失效", "请在电脑上刷新二维码后重新扫描。")

    _, uuid = sandbox_qr_page(desktop)
    english_phone = browser(sandbox_app, EN)
    confirm = page_of(english_phone.get(f"{SBX}/connect/confirm/{uuid}"))
    assert "“Demo site” wants to log in with your WeChat" in confirm
    assert "CJK + emoji nickname" in confirm and html_lang(confirm) == "en"
    denied = english_phone.post(f"{SBX}/connect/confirm/{uuid}", data={"action": "deny"})
    assert_english(page_of(denied), "Denied", "Demo site was not given your WeChat account.")
    denied_zh = page_of(phone.get(f"{SBX}/connect/confirm/{uuid}"))
    assert "二维码已使用" in denied_zh


def test_sandbox_index_and_error_pages_in_both_languages(sandbox_app: Flask) -> None:
    index = page_of(browser(sandbox_app, ZH).get(SBX + "/"))
    assert_chinese(index, "微信开放平台沙盒", "网站应用", "授权回调域：本站的域名",
                   "模拟的微信用户", "<title>微信沙盒</title>")
    english = page_of(browser(sandbox_app, EN).get(SBX + "/"))
    assert "WeChat Open Platform sandbox" in english and html_lang(english) == "en"

    bad = f"{SBX}/connect/qrconnect?appid=wxUNKNOWN&redirect_uri=x&response_type=code"
    zh = browser(sandbox_app, ZH).get(bad)
    assert zh.status_code == 400
    assert_chinese(page_of(zh), "该链接无法访问", "appid 参数错误")
    en = browser(sandbox_app, EN).get(bad)
    assert_english(page_of(en), "This link cannot be opened", "Invalid appid")
    # WeChat's lang parameter also decides the error page.
    assert "该链接无法访问" in page_of(browser(sandbox_app, EN).get(bad + "&lang=cn"))


def test_sandbox_api_errmsg_stays_english(sandbox_app: Flask) -> None:
    resp = browser(sandbox_app, ZH).get(f"{SBX}/sns/oauth2/access_token",
                                        query_string={"appid": "wxUNKNOWN"})
    assert resp.status_code == 200
    assert b'"invalid appid' in resp.data


def test_whole_sandbox_login_in_chinese(sandbox_app: Flask) -> None:
    """The QR page, the phone, the callback and the userinfo request, all Chinese."""
    client = browser(sandbox_app, ZH)
    page, uuid = sandbox_qr_page(client, "cn")
    assert "使用微信扫一扫登录" in page
    browser(sandbox_app, ZH).post(f"{SBX}/connect/confirm/{uuid}",
                                  data={"action": "allow", "person": "zhangsan"})
    redirect = poll(client, uuid)
    target = urlsplit(redirect["redirect"])
    done = client.get(target.path, query_string=target.query)
    assert done.status_code == 302
    assert "张三🐼" in page_of(client.get("/"))


# --- the catalog -------------------------------------------------------------------


def extracted_messages() -> dict[str | tuple[str, str], list[str]]:
    """Every message the package marks for translation (Python and templates), found with
    the project's ``babel.cfg``; message -> where."""
    import configparser

    from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
    from babel.messages.frontend import parse_keywords

    try:
        from babel.messages.frontend import parse_mapping_cfg
    except ImportError:  # Babel before 2.14 (the package's floor is 2.12): the old name
        from babel.messages.frontend import (  # type: ignore[attr-defined,no-redef]
            parse_mapping as parse_mapping_cfg,
        )

    with open(ROOT / "babel.cfg", encoding="utf-8") as config:
        method_map, options_map = parse_mapping_cfg(config)
    # The keywords of babel.cfg's sections, passed explicitly: only Babel 2.18+ reads them.
    sections = configparser.RawConfigParser()
    sections.read(ROOT / "babel.cfg", encoding="utf-8")
    keywords = dict(DEFAULT_KEYWORDS)
    for section in sections.sections():
        keywords.update(parse_keywords(sections.get(section, "keywords", fallback="").split()))
    found: dict[str | tuple[str, str], list[str]] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
            ROOT, method_map, options_map, keywords=keywords):
        found.setdefault(message, []).append(f"{filename}:{lineno}")
    return found


def read_catalog() -> t.Any:
    from babel.messages.pofile import read_po

    with open(PO, "rb") as po:
        return read_po(po, locale="zh_CN", domain="flask_wechat_qr")


def test_every_message_has_a_chinese_translation() -> None:
    catalog = read_catalog()
    found = extracted_messages()
    assert len(found) > 100
    problems = []
    for message, where in found.items():
        key = message[0] if isinstance(message, tuple) else message
        entry = catalog.get(key)
        if entry is None:
            problems.append(f"missing: {message!r} ({where[0]})")
            continue
        strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        if entry.fuzzy or not all(strings):
            problems.append(f"untranslated or fuzzy: {message!r} ({where[0]})")
    stale = [m.id for m in catalog if m.id and (
        tuple(m.id) if isinstance(m.id, (list, tuple)) else m.id) not in found]
    assert problems == []
    assert stale == [], "messages no longer in the code; run pybabel update"


def test_translations_keep_the_placeholders() -> None:
    catalog = read_catalog()
    assert [(message.id, [str(e) for e in errors_])
            for message, errors_ in catalog.check()] == []


def test_compiled_catalog_is_up_to_date() -> None:
    from babel.messages.mofile import read_mo, write_mo

    compiled = io.BytesIO()
    write_mo(compiled, read_catalog())
    compiled.seek(0)
    with open(MO, "rb") as mo:
        shipped = read_mo(mo)
    fresh = read_mo(compiled)

    def entries(catalog: t.Any) -> dict[t.Any, t.Any]:
        return {(tuple(m.id) if isinstance(m.id, (list, tuple)) else m.id):
                (tuple(m.string) if isinstance(m.string, (list, tuple)) else m.string)
                for m in catalog if m.id}

    assert entries(shipped) == entries(fresh), "run pybabel compile (see flask_wechat_qr/i18n.py)"


TEMPLATES = sorted((ROOT / "flask_wechat_qr/templates").rglob("*.html"))


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda path: path.name)
def test_templates_have_no_untranslated_text(path: Path) -> None:
    """Every word a template shows goes through ``wechat_qr_gettext`` (so the catalog test
    sees it), including ``alt``, ``title`` and ``placeholder``."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"\{#.*?#\}", "", text, flags=re.S)
    text = re.sub(r"\{% block bg %\}.*?\{% endblock %\}", "", text, flags=re.S)  # colours
    text = re.sub(r"<(script|style)\b.*?</\1>", "", text, flags=re.S)
    attributes = re.findall(r'\b(?:alt|title|placeholder|aria-label)="([^"]*)"', text)
    text = re.sub(r"\{%.*?%\}|\{\{.*?\}\}", "", text, flags=re.S)
    shown = [re.sub(r"\{\{.*?\}\}", "", value) for value in attributes]
    shown.append(re.sub(r"<[^>]*>", "", text, flags=re.S))
    assert [word for part in shown for word in re.findall(r"[A-Za-z]{2,}", part)] == []


def login_error_classes() -> list[type[LoginError]]:
    found, todo = [], [LoginError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize("cls", login_error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_page_text_is_translated(cls: type[LoginError]) -> None:
    for text in (cls.title, cls.message):
        assert isinstance(text, i18n.LazyText), f"{cls.__name__}: use lazy_gettext"
        assert text.translate("zh_CN") != text.english()
        assert CJK.search(text.translate("zh_CN"))


# --- the lazy messages -------------------------------------------------------------


def test_lazy_text_behaves_like_its_translation(app: Flask) -> None:
    text = i18n.lazy_gettext("Welcome, %(name)s", name="<b>")
    assert text.english() == "Welcome, <b>"
    assert str(escape(text)) == "Welcome, &lt;b&gt;"
    with app.test_request_context("/", headers={"Accept-Language": "zh"}):
        assert str(text) == "欢迎你，<b>"
        assert f"{text}!" == "欢迎你，<b>!"
        assert text == "欢迎你，<b>" and "欢迎" in text
        assert text == i18n.lazy_gettext("Welcome, %(name)s", name="<b>")
        assert i18n.in_english(text) == "Welcome, <b>"
    plural = i18n.lazy_ngettext("%(num)d minute", "%(num)d minutes", 2)
    assert str(plural) == "2 minutes"
    assert i18n.ngettext("%(num)d minute", "%(num)d minutes", 1) == "1 minute"
