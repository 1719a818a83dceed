"""A visitor on a host app: a browser (Flask's test client that follows redirects by hand
and keeps every answer), a phone for the sandbox, the whole sandbox login through the
public routes (as tests/support.py drives it), and a crawl of every page seen."""

from __future__ import annotations

import re
import typing as t
from urllib.parse import urlsplit

from flask import Flask
from support import SANDBOX_PREFIX, answer, find_tags, poll

#: Most redirects one click may take (a login is three).
MAX_REDIRECTS = 10
#: Most pages a crawl loads.
MAX_CRAWL = 80


class Browser:
    """One browser on ``app``; ``seen`` is every (method, path, status) it got."""

    def __init__(self, app: Flask, language: str = "en") -> None:
        self.app = app
        self.client = app.test_client()
        self.headers = {"Accept-Language": language}
        self.seen: list[tuple[str, str, int]] = []
        self.pages: dict[str, str] = {}

    def _record(self, method: str, path: str, resp: t.Any) -> t.Any:
        self.seen.append((method, path, resp.status_code))
        if resp.mimetype == "text/html":
            self.pages[path] = resp.get_data(as_text=True)
        return resp

    def request(self, method: str, path: str, follow: bool = True, **kwargs: t.Any) -> t.Any:
        """One click (or form post), following redirects within the site when ``follow``."""
        path = local(path)
        resp = self._record(method, path, self.client.open(
            path, method=method, headers=self.headers, **kwargs))
        for _ in range(MAX_REDIRECTS):
            if not (follow and resp.status_code in (301, 302, 303, 307, 308)):
                return resp
            path = local(resp.headers["Location"])
            resp = self._record("GET", path, self.client.get(path, headers=self.headers))
        raise AssertionError(f"more than {MAX_REDIRECTS} redirects: {self.seen[-3:]}")

    def get(self, path: str, **kwargs: t.Any) -> t.Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: t.Any) -> t.Any:
        return self.request("POST", path, **kwargs)

    def errors(self) -> list[tuple[str, str, int]]:
        """Every answer that was a server error."""
        return [entry for entry in self.seen if entry[2] >= 500]


def local(url: str) -> str:
    """The path and query of one of the site's URLs (the test client's host is localhost)."""
    parts = urlsplit(url)
    assert parts.netloc in ("", "localhost"), f"left the site: {url}"
    return parts.path + (f"?{parts.query}" if parts.query else "")


def wechat_login(browser: Browser, person: str = "zhangsan", *, path: str = "/auth/wechat/login",
                 next_url: str | None = None, nickname: str | None = None,
                 follow: bool = True) -> t.Any:
    """The whole login: the site's button, WeChat's QR page, a phone that allows it as
    ``person`` (``"new"`` with ``nickname``: someone the sandbox does not know yet), the QR
    page's poll and the callback; the page it ends on (the callback's answer itself, not
    ``follow``)."""
    start = browser.get(path + (f"?next={next_url}" if next_url else ""), follow=False)
    assert start.status_code == 302, start.get_data(as_text=True)
    location = start.headers["Location"]
    assert urlsplit(location).path.startswith(SANDBOX_PREFIX), location
    qr_page = browser.get(location.split("#")[0])
    assert qr_page.status_code == 200, qr_page.get_data(as_text=True)
    match = re.search(r'data-uuid="([^"]+)"', qr_page.get_data(as_text=True))
    assert match, qr_page.get_data(as_text=True)
    uuid = match.group(1)
    phone = Browser(browser.app, language=browser.headers["Accept-Language"])
    form = {"action": "allow", "person": person}
    if nickname is not None:
        form["nickname"] = nickname
    confirmed = answer(phone.client, uuid, **form)
    assert confirmed.status_code == 200, confirmed.get_data(as_text=True)
    browser.seen += phone.seen
    return browser.get(poll(browser.client, uuid)["redirect"], follow=follow)


def links(html: str) -> list[str]:
    """The site's own links on a page."""
    found = []
    for tag in find_tags(html, "a"):
        href = tag.get("href") or ""
        if href.startswith("/") and not href.startswith("//"):
            found.append(href)
    return found


def crawl(browser: Browser) -> list[tuple[str, str, int]]:
    """Load again every page the browser saw, and every link of the site on them (never a
    log-out), as the browser is now; every answer, none of them must be a server error."""
    todo = [path for method, path, _status in browser.seen if method == "GET"]
    for html in list(browser.pages.values()):
        todo += links(html)
    done: list[tuple[str, str, int]] = []
    for path in dict.fromkeys(todo):
        if "logout" in path or len(done) >= MAX_CRAWL:
            continue
        resp = browser.client.get(path, headers=browser.headers)
        done.append(("GET", path, resp.status_code))
    return done


def assert_no_server_error(browser: Browser) -> None:
    """Nothing the browser saw, and nothing a crawl of it finds, is a 5xx."""
    assert browser.errors() == []
    crawled = crawl(browser)
    assert crawled, "nothing to crawl"
    assert [entry for entry in crawled if entry[2] >= 500] == []


def title(resp: t.Any) -> str:
    """A page's ``<title>`` (else the start of its body: a JSON error says what it is)."""
    found = re.search(r"<title>(.*?)</title>", resp.get_data(as_text=True), re.S)
    return found.group(1).strip() if found else resp.get_data(as_text=True)[:80]


def assert_failed_logins_are_pages(app: Flask) -> Browser:
    """A new visitor's failed logins (an unknown connection, an expired state, nothing to
    bind, a link while logged out, a cancelled scan) each get the extension's page, as
    HTML with its status, whatever error handling the host has. The visitor, for more."""
    visitor = Browser(app)
    start = visitor.get("/auth/wechat/login", follow=False).headers["Location"]
    state = re.search(r"state=([^&#]+)", start).group(1)  # type: ignore[union-attr]
    pages = [visitor.get(path) for path in (
        "/auth/nope/login", "/auth/wechat/callback?state=expired&code=x", "/auth/bind",
        "/auth/wechat/link", f"/auth/wechat/callback?state={state}")]
    assert [(resp.status_code, resp.mimetype, title(resp)) for resp in pages] == [
        (404, "text/html", "Unknown login method"),
        (400, "text/html", "This login link is no longer valid"),
        (400, "text/html", "This WeChat login has expired"),
        (401, "text/html", "Log in first"),
        (200, "text/html", "Login cancelled"),
    ]
    return visitor
