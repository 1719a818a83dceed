"""WeChat's authorization pages told apart (``flask_wechat_qr.wechat_pages``): the one
table of wording, on the fixtures of tests/fixtures/wechat_pages (reconstructed pages, see
its README) and on the sandbox's own pages, which must read as WeChat's do."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from flask import Flask

from flask_wechat_qr.sandbox import SandboxApp, create_sandbox_app
from flask_wechat_qr.wechat_pages import (
    PAGE_PATTERNS,
    classify_page,
    page_summary,
    visible_text,
)

FIXTURES = Path(__file__).parent / "fixtures" / "wechat_pages"

#: Every fixture and the verdict it must get.
EXPECTED = {
    "qrconnect_ok.html": "qr_page",
    "qrconnect_redirect_uri_error.html": "callback_domain",
    "qrconnect_scope_error.html": "scope",
    "qrconnect_appid_error.html": "app_id",
    "qrconnect_link_refused.html": "refused",
    "authorize_10003.html": "callback_domain",
    "authorize_10005.html": "scope",
    "authorize_10039.html": "callback_scheme",
    "authorize_outside_wechat.html": "not_in_wechat",
    "authorize_consent.html": "consent_page",
    "proxy_bad_gateway.html": "unknown",
}

WEBSITE_ID, OA_ID = "wxsandbox0000000001", "wxsandboxoa00000001"
REDIRECT = "http://localhost:5000/auth/wechat/callback"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_fixture_gets_its_verdict(name: str) -> None:
    assert classify_page(fixture(name)) == EXPECTED[name]


def test_every_fixture_is_listed() -> None:
    assert {p.name for p in FIXTURES.glob("*.html")} == set(EXPECTED)


def test_the_fixtures_say_they_are_reconstructed() -> None:
    """Nobody mistakes them for captures of WeChat."""
    for path in FIXTURES.glob("*.html"):
        head = path.read_text(encoding="utf-8")[:400]
        assert "RECONSTRUCTED" in head or "Not WeChat's" in head, path.name
    assert "RECONSTRUCTED, not captured" in (FIXTURES / "README.rst").read_text("utf-8")


def test_a_script_s_strings_are_not_the_page_s_message() -> None:
    """The QR page's script names "该链接无法访问" among its messages: still the QR page."""
    page = fixture("qrconnect_ok.html")
    assert "该链接无法访问" in page
    assert "该链接无法访问" not in visible_text(page)
    assert classify_page(page) == "qr_page"


def test_a_number_is_an_error_code_only_where_the_page_says_so() -> None:
    assert classify_page("<p>订单 10003 已支付</p>") == "unknown"
    assert classify_page("<p>错误码：10003</p>") == "callback_domain"
    assert classify_page("<p>Error code: 10005</p>") == "scope"


def test_the_most_specific_wording_wins() -> None:
    """An error page says "该链接无法访问" too; its cause is what counts."""
    page = "<h2>该链接无法访问</h2><p>Scope参数错误或没有Scope权限</p>"
    assert classify_page(page) == "scope"
    assert classify_page("<h2>该链接无法访问</h2>") == "refused"


def test_wording_is_matched_with_or_without_spaces() -> None:
    assert classify_page("<p>Scope 参数错误或没有 Scope 权限</p>") == "scope"
    assert classify_page("<p>redirect_uri参数错误</p>") == "callback_domain"
    assert classify_page("<p>&#x8BF7;&#x5728;微信客户端打开链接</p>") == "not_in_wechat"


def test_every_row_says_where_its_wording_was_read() -> None:
    assert all(row.source.strip() for row in PAGE_PATTERNS)


def test_page_summary_quotes_title_and_text_shortly() -> None:
    summary = page_summary(fixture("proxy_bad_gateway.html"))
    assert summary == "502 Bad Gateway · 502 Bad Gateway nginx"
    assert len(page_summary("<p>" + "长" * 500 + "</p>", 50)) == 50
    assert page_summary("") == "an empty page"
    assert "\n" not in page_summary("<title>a\nb</title><p>x\x07y</p>")


# --- the sandbox's pages read as WeChat's -------------------------------------------------


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    folder = tmp_path_factory.mktemp("sandbox")
    return create_sandbox_app(
        [SandboxApp(WEBSITE_ID, "s" * 20, "Site", "localhost"),
         SandboxApp(OA_ID, "o" * 20, "Site", "localhost", kind="official_account")],
        database_uri=f"sqlite:///{folder / 'sb.db'}")


def _page(sandbox: Flask, path: str, params: list[tuple[str, str]], *,
          language: str = "zh-CN", user_agent: str = "Mozilla/5.0") -> str:
    query = urlencode(params, quote_via=quote, safe="")
    resp = sandbox.test_client().get(f"{path}?{query}", headers={
        "Accept-Language": language, "User-Agent": user_agent})
    return resp.get_data(as_text=True)


def _qrconnect(app_id: str = WEBSITE_ID, redirect: str = REDIRECT,
               scope: str = "snsapi_login", lang: str | None = None) -> list[tuple[str, str]]:
    params = [("appid", app_id), ("redirect_uri", redirect), ("response_type", "code"),
              ("scope", scope), ("state", "abc123")]
    return params + ([("lang", lang)] if lang else [])


SANDBOX_CASES: dict[str, tuple[str, list[tuple[str, str]], str]] = {
    "qr page": ("/connect/qrconnect", _qrconnect(), "qr_page"),
    "qr page, English": ("/connect/qrconnect", _qrconnect(lang="en"), "qr_page"),
    "callback domain": ("/connect/qrconnect", _qrconnect(redirect="http://other.example/cb"),
                        "callback_domain"),
    "callback domain, English": ("/connect/qrconnect",
                                 _qrconnect(redirect="http://other.example/cb", lang="en"),
                                 "callback_domain"),
    "Official Account's AppID on the QR page": ("/connect/qrconnect", _qrconnect(OA_ID),
                                                "scope"),
    "scope, English": ("/connect/qrconnect", _qrconnect(OA_ID, lang="en"), "scope"),
    "unknown AppID": ("/connect/qrconnect", _qrconnect("wx0000000000000000"), "app_id"),
    "unknown AppID, English": ("/connect/qrconnect",
                               _qrconnect("wx0000000000000000", lang="en"), "app_id"),
    "authorization sheet": ("/connect/oauth2/authorize",
                            _qrconnect(OA_ID, scope="snsapi_userinfo"), "consent_page"),
    "website AppID on the authorization page": (
        "/connect/oauth2/authorize", _qrconnect(WEBSITE_ID, scope="snsapi_userinfo"), "scope"),
    "authorization page, callback domain": (
        "/connect/oauth2/authorize",
        _qrconnect(OA_ID, redirect="http://other.example/cb", scope="snsapi_base"),
        "callback_domain"),
    # WeChat's in-app pages speak the phone's language: the sandbox's, the browser's.
    "authorization sheet, English": ("/connect/oauth2/authorize",
                                     _qrconnect(OA_ID, scope="snsapi_userinfo"),
                                     "consent_page"),
    "silent authorization, English": ("/connect/oauth2/authorize",
                                      _qrconnect(OA_ID, scope="snsapi_base"), "consent_page"),
    "website AppID on the authorization page, English": (
        "/connect/oauth2/authorize", _qrconnect(WEBSITE_ID, scope="snsapi_userinfo"), "scope"),
}


def _language(case: str, params: list[tuple[str, str]]) -> str:
    return "en" if ("lang", "en") in params or case.endswith("English") else "zh-CN"


IN_WECHAT = "Mozilla/5.0 (iPhone) MicroMessenger/8.0.50 NetType/WIFI Language/zh_CN"


@pytest.mark.parametrize("case", sorted(SANDBOX_CASES))
def test_the_sandbox_s_pages_read_as_wechat_s(sandbox: Flask, case: str) -> None:
    """``check --live --base-url`` against a standalone sandbox sees what it would see on
    WeChat (the sandbox answers in the browser's language, or the QR page's lang)."""
    path, params, verdict = SANDBOX_CASES[case]
    language = _language(case, params)
    assert classify_page(_page(sandbox, path, params, language=language,
                               user_agent=IN_WECHAT)) == verdict


def test_the_sandbox_s_authorization_page_outside_wechat_says_what_wechat_says(
    sandbox: Flask,
) -> None:
    page = _page(sandbox, "/connect/oauth2/authorize",
                 _qrconnect(OA_ID, scope="snsapi_userinfo"))
    assert classify_page(page) == "not_in_wechat"


def _all_pages(sandbox: Flask) -> list[str]:
    pages = [fixture(name) for name in EXPECTED]
    for case, (path, params, _verdict) in SANDBOX_CASES.items():
        language = _language(case, params)
        pages.append(_page(sandbox, path, params, language=language, user_agent=IN_WECHAT))
    return pages


def test_every_row_of_the_table_matches_a_page(sandbox: Flask) -> None:
    """No row is dead weight: each one's wording is on a fixture or a sandbox page."""
    pages = _all_pages(sandbox)
    texts = [visible_text(page) for page in pages]
    unmet = [(row.verdict, row.pattern.pattern) for row in PAGE_PATTERNS
             if not any(row.pattern.search(page) for page in (pages if row.in_markup
                                                              else texts))]
    assert not unmet, unmet
