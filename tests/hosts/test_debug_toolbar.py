"""A site in development with Flask-DebugToolbar (``apps/host_debug_toolbar``): every
redirect of the login becomes the toolbar's "Redirect intercepted" page, whose link a
person clicks; the toolbar goes into every HTML page. A login still finishes, its cookies
ride on the intercepted answers, and the sandbox's QR page in the site's 300x400 frame
keeps the QR code and its links uncovered (the toolbar, injected there too, stays hidden)."""

from __future__ import annotations

import html
import re
import typing as t
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask
from support import answer, logged_in_user_id, poll

from .shapes import SANDBOX

INTERCEPTED = "Redirect intercepted"


def build(tmp_path: Path) -> Flask:
    import host_debug_toolbar

    return t.cast(Flask, host_debug_toolbar.create_app({
        **SANDBOX, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'debug.db'}"}))


def intercepted(resp: t.Any) -> str | None:
    """Where the toolbar's "Redirect intercepted" page links to (a path), if it is one."""
    found = re.search(r'Location: <a href="([^"]+)"', resp.get_data(as_text=True))
    if resp.status_code != 200 or INTERCEPTED not in resp.get_data(as_text=True) or not found:
        return None
    parts = urlsplit(html.unescape(found.group(1)))
    return parts.path + (f"?{parts.query}" if parts.query else "")


def click_through(client: t.Any, path: str) -> t.Any:
    """Open ``path`` as a person does: follow redirects, and click the link of each page
    the toolbar put in a redirect's place; the page it ends on."""
    seen = []
    for _ in range(8):
        resp = client.get(path)
        seen.append((path, resp.status_code))
        assert resp.status_code < 500, seen
        if resp.status_code in (302, 303):
            parts = urlsplit(resp.headers["Location"])
            path = parts.path + (f"?{parts.query}" if parts.query else "")
        elif (target := intercepted(resp)) is not None:
            path = target
        else:
            return resp
    raise AssertionError(seen)


def test_a_login_through_intercepted_redirects(tmp_path: Path) -> None:
    """The start's redirect and the callback's are intercepted, as with WeChat's real
    servers. Before, in the in-app sandbox the callback's was not: the sandbox's API
    answers, made in this process while the callback ran, started the toolbar afresh for
    each of them (it keeps its per-request state in a ``ContextVar``), and the callback's
    own request lost it (no interception, no toolbar on its page)."""
    app = build(tmp_path)
    client = app.test_client()
    assert intercepted(client.get("/auth/wechat/login?next=/")) is not None
    qr_page = click_through(client, "/auth/wechat/login?next=/")
    uuid = re.search(r'data-uuid="([^"]+)"',  # type: ignore[union-attr]
                     qr_page.get_data(as_text=True)).group(1)
    assert answer(app.test_client(), uuid, action="allow", person="lisi").status_code == 200
    parts = urlsplit(poll(client, uuid)["redirect"])
    callback = client.get(f"{parts.path}?{parts.query}")
    assert intercepted(callback) == "/"
    assert logged_in_user_id(client) is not None
    home = click_through(client, "/")
    assert '<p id="who">李四</p>' in home.get_data(as_text=True)


def test_the_framed_sandbox_qr_page_keeps_the_toolbar_hidden(tmp_path: Path) -> None:
    """Before: the toolbar, injected into the sandbox's QR page in the site's 300x400 frame,
    covered the QR code, "simulate a scan" and the fast login (a click there hit the
    toolbar instead)."""
    client = build(tmp_path).test_client()
    qr_page = client.get("/auth/wechat/qr?next=/").get_data(as_text=True)
    src = html.unescape(re.search(r'<iframe[^>]* src="([^"]+)"',  # type: ignore[union-attr]
                                  qr_page).group(1))
    assert "login_type=jssdk" in src
    parts = urlsplit(src)
    framed = client.get(f"{parts.path}?{parts.query}").get_data(as_text=True)
    assert 'id="flDebug"' in framed  # injected, as into every page of the site
    assert re.search(r"#flDebug\b[^{]*\{\s*display:\s*none\s*!important", framed)
