"""WeChat's authorization pages told apart by their wording, for ``check --live``.

WeChat answers a wrong set-up with an HTML page, not an error code a program can read: the
QR page (``/connect/qrconnect``) or the Official Account's authorization page
(``/connect/oauth2/authorize``) says "redirect_uri 参数错误" or "Scope参数错误或没有Scope权限"
instead. :data:`PAGE_PATTERNS` is the one table of that wording, first match wins; each row
says where the wording was read. WeChat's pages are not a documented interface: a page no
row matches is "unknown", never guessed at.

Pure functions of the page's text: no network, nothing printed.
"""

from __future__ import annotations

import html
import re
import typing as t
from dataclasses import dataclass

#: What a page says about the set-up that produced it.
PageVerdict = t.Literal[
    "qr_page",          # the QR code to scan: the AppID and redirect URI are accepted
    "consent_page",     # the Official Account's authorization sheet: accepted
    "callback_domain",  # the redirect URI's host is not the registered domain (10003)
    "callback_scheme",  # http vs https differs from the registration (10039)
    "scope",            # the AppID lacks the scope: the wrong kind of app (10005)
    "app_id",           # WeChat does not know the AppID
    "not_in_wechat",    # the Official Account's page, refused outside WeChat's browser
    "refused",          # "该链接无法访问" and nothing more specific
    "unknown",          # no row matched
]

_TROUBLE = ("WeChat's 授权登录常见问题 "
            "(developers.weixin.qq.com/doc/oplatform/developers/troubleshooting/auth.html)")
_WEB_LOGIN = "WeChat's 网站应用微信登录开发指南"
_SANDBOX_EN = "the sandbox's English pages (lang=en); WeChat's English wording is not known"


@dataclass(frozen=True)
class PagePattern:
    """One telltale of a page: the verdict it gives, and where its wording was read."""

    verdict: PageVerdict
    pattern: re.Pattern[str]
    source: str
    #: matched on the HTML itself (an image's address) rather than the text a person reads
    in_markup: bool = False


def _errcode(code: int) -> re.Pattern[str]:
    """A number shown as an error code ("错误码：10003", "Error code: 10003"), not any
    number on the page."""
    return re.compile(rf"(?:错误码|错误代码|errcode|error\s*code)\W{{0,3}}{code}\b", re.I)


def _text(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.I)


#: The wording of WeChat's pages (and the sandbox's, which copies it), most specific first:
#: an error page also says "该链接无法访问", and must be read as its precise cause.
PAGE_PATTERNS: tuple[PagePattern, ...] = (
    PagePattern("callback_domain", _errcode(10003), _TROUBLE + " §3"),
    PagePattern("callback_domain", _text(r"redirect_uri\s*域名与后台配置不一致"), _TROUBLE + " §3"),
    PagePattern("callback_domain", _text(r"redirect_uri\s*参数错误"),
                "WeChat's QR and authorization pages, as quoted in support threads"),
    PagePattern("callback_domain", _text(r"Wrong redirect_uri parameter"), _SANDBOX_EN),
    PagePattern("callback_scheme", _errcode(10039), "MikeWang000000/GoLibCookie#13 (2024)"),
    PagePattern("callback_scheme", _text(r"redirect_uri\s*协议与后台配置不一致"),
                "MikeWang000000/GoLibCookie#13 (2024)"),
    PagePattern("scope", _errcode(10005), _TROUBLE + " §1"),
    PagePattern("scope", _text(r"Scope\s*参数错误或没有\s*Scope\s*权限"), _TROUBLE + " §2"),
    PagePattern("scope", _text(r"此公众号并没有这些\s*scope\s*的权限"), _TROUBLE + " §1"),
    PagePattern("scope", _text(r"Wrong Scope parameter or no Scope permission"), _SANDBOX_EN),
    PagePattern("scope", _text(r"This Official Account does not have these scopes"),
                _SANDBOX_EN),
    PagePattern("app_id", _text(r"appid\s*参数错误"),
                "support threads (UNCONFIRMED on WeChat's own pages; the sandbox's wording)"),
    PagePattern("app_id", _text(r"\bInvalid appid\b"), _SANDBOX_EN),
    PagePattern("not_in_wechat", _text(r"请在微信客户端打开链接"),
                "WeChat's Official Account authorization page opened outside WeChat"),
    PagePattern("refused", _text(r"该链接无法访问"), _WEB_LOGIN),
    PagePattern("refused", _text(r"This link cannot be opened"), _SANDBOX_EN),
    PagePattern("qr_page", _text(r"使用微信扫一扫登录"), _WEB_LOGIN + " (the QR page's caption)"),
    PagePattern("qr_page", _text(r"Scan with WeChat to log in"), _SANDBOX_EN),
    PagePattern("qr_page", re.compile(r"<img\b[^>]*\bsrc=[\"'][^\"']*/connect/qrcode/", re.I),
                "the QR page's image, served from /connect/qrcode/", in_markup=True),
    PagePattern("consent_page", _text(r"申请获[得取]"),
                "WeChat's authorization sheet (\"申请获得以下权限\") and the sandbox's"),
    PagePattern("consent_page", _text(r"获得你的公开信息"), "WeChat's authorization sheet"),
    PagePattern("consent_page", _text(r"requests your (?:public information|identity)"),
                _SANDBOX_EN),
)

_HIDDEN = re.compile(r"<(script|style|template)\b.*?</\1\s*>|<!--.*?-->", re.I | re.S)
_TAG = re.compile(r"<[^>]*>")
_TITLE = re.compile(r"<title\b[^>]*>(.*?)</title\s*>", re.I | re.S)


def visible_text(page: str) -> str:
    """What a person reads on ``page``: no scripts, styles, comments or tags, entities
    decoded, white space collapsed (a script's strings are not the page's message)."""
    text = _TAG.sub(" ", _HIDDEN.sub(" ", page))
    return " ".join(html.unescape(text).split())


def matching_row(page: str) -> PagePattern | None:
    """The first row of :data:`PAGE_PATTERNS` that ``page`` matches, if any."""
    text = visible_text(page)
    for row in PAGE_PATTERNS:
        if row.pattern.search(page if row.in_markup else text):
            return row
    return None


def classify_page(page: str) -> PageVerdict:
    """What ``page`` says of the set-up: the verdict of its :func:`matching_row`."""
    row = matching_row(page)
    return row.verdict if row is not None else "unknown"


def page_summary(page: str, limit: int = 120) -> str:
    """The page's title and the start of its text, to quote a page no row matched."""
    found = _TITLE.search(page)
    title = " ".join(html.unescape(_TAG.sub(" ", found.group(1))).split()) if found else ""
    text = visible_text(page)
    if title and text.startswith(title):
        text = text[len(title):].strip()
    summary = " · ".join(part for part in (title, text) if part) or "an empty page"
    summary = "".join(ch if ch.isprintable() else " " for ch in summary)
    return summary if len(summary) <= limit else summary[: limit - 1] + "…"
