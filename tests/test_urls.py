"""URL rules (urls.py): a ``next`` that leaves the site is never followed nor echoed, and a
local one survives the login as given."""

from __future__ import annotations

import re
import typing as t
from urllib.parse import urlsplit

import pytest
from support import (
    TOKEN_PATH,
    find_tags,
    finish_login,
    logged_in_user_id,
    retry_links,
    start_login,
)

from flask_wechat_qr.urls import port_of, under_mount_point

# --- a next parameter that leaves the site is never followed ------------------------------


OFF_SITE_NEXT = [
    "https://evil.example",
    "https://evil.example/auth/wechat/callback",
    "http:evil.example",
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "evil.example",
    " //evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\nLocation: https://evil.example",
    "/\x00/evil.example",
    "/\x7f/evil.example",
]


@pytest.mark.parametrize("post_login_url", [None, "/home"])
@pytest.mark.parametrize("next_url", OFF_SITE_NEXT)
def test_off_site_next_is_refused(make_app: t.Any, wechat_api: t.Any, next_url: str,
                                  post_login_url: str | None) -> None:
    config = {} if post_login_url is None else {"WECHAT_QR_POST_LOGIN_URL": post_login_url}
    client = make_app(**config).test_client()
    state = start_login(client, next=next_url)
    wechat_api.token()
    wechat_api.userinfo()
    resp = finish_login(client, state)
    assert resp.status_code == 302
    assert resp.headers["Location"] == (post_login_url or "/")
    assert logged_in_user_id(client) is not None


@pytest.mark.parametrize(("next_url", "lands_on"), [
    # Flask-AppBuilder's login page is given next as this site's full URL: the person landed
    # on / instead of the page they asked for.
    ("http://localhost/notemodelview/list/?page=2", "/notemodelview/list/?page=2"),
    ("https://LOCALHOST/account", "/account"),
    ("http://localhost", "/"),
    # Only this host, only its path: anything else is still refused.
    ("http://localhost:8080/account", "/"),
    ("http://localhost@evil.example/account", "/"),
    ("http://evil.example/account", "/"),
    ("http://localhost//evil.example", "/"),
    ("http://localhost/\\evil.example", "/"),
    ("http://localhost/\t/evil.example", "/"),
    ("ftp://localhost/account", "/"),
])
def test_next_as_this_sites_full_url_is_its_path(make_app: t.Any, wechat_api: t.Any,
                                                 next_url: str, lands_on: str) -> None:
    client = make_app().test_client()
    state = start_login(client, next=next_url)
    wechat_api.token()
    wechat_api.userinfo()
    resp = finish_login(client, state)
    assert resp.status_code == 302 and resp.headers["Location"] == lands_on


@pytest.mark.parametrize("next_url", OFF_SITE_NEXT)
def test_off_site_next_is_not_echoed_on_the_qr_page(client: t.Any, next_url: str) -> None:
    resp = client.get("/auth/wechat/qr", query_string={"next": next_url})
    assert resp.status_code == 200
    assert "evil" not in resp.text
    links = [a["href"] or "" for a in find_tags(resp.text, "a")]
    assert "/auth/wechat/login" in links


def test_off_site_next_is_not_echoed_in_the_retry_link(client: t.Any, wechat_api: t.Any) -> None:
    state = start_login(client, next="https://evil.example/")
    wechat_api.error(TOKEN_PATH, 40029, "invalid code")
    resp = finish_login(client, state)
    assert resp.status_code == 400
    assert retry_links(resp.text) == ["/auth/wechat/login"]
    assert "evil" not in resp.text


# --- local paths survive the login --------------------------------------------------------


def test_next_of_exactly_the_limit_is_kept(client: t.Any, wechat_api: t.Any) -> None:
    next_url = "/" + "a" * 2047
    state = start_login(client, next=next_url)
    wechat_api.token()
    wechat_api.userinfo()
    assert finish_login(client, state).headers["Location"] == next_url


def test_non_ascii_next_survives_the_login(client: t.Any, wechat_api: t.Any) -> None:
    state = start_login(client, next="/账户?标签=微信")
    wechat_api.token()
    wechat_api.userinfo()
    resp = finish_login(client, state)
    assert resp.status_code == 302
    location = resp.headers["Location"]
    assert location.startswith("/")
    assert not location.startswith("//")
    assert "%E8%B4%A6%E6%88%B7" in location


# --- an app mounted under a prefix (SCRIPT_NAME) ------------------------------------------


@pytest.mark.parametrize(("path", "script_root", "expected"), [
    ("/", "", "/"),
    ("/welcome", "", "/welcome"),
    ("/", "/site", "/site/"),  # the default post-login URL
    ("/welcome?a=1", "/site", "/site/welcome?a=1"),  # request.path leaves the mount out
    ("/site/welcome", "/site", "/site/welcome"),  # url_for puts it in
    ("/site", "/site", "/site"),
    ("/site?a=1", "/site", "/site?a=1"),
    ("/sitemap", "/site", "/site/sitemap"),  # only whole path segments are the mount
    ("/a/b", "/a/b", "/a/b"),
    ("/a/bc", "/a/b", "/a/b/a/bc"),
    ("/%E7%BD%91/welcome", "/网", "/%E7%BD%91/welcome"),  # url_for encodes the mount point
    ("/welcome", "/网", "/网/welcome"),
    # a pending binding's next, kept as a URI (iri_to_uri: "+" stays, the space is encoded)
    ("/a+b%20c/page", "/a+b c", "/a+b%20c/page"),
    ("/welcome", "//evil.example", "/welcome"),  # a hostile X-Forwarded-Prefix leads nowhere
    ("/welcome", "/\\evil.example", "/welcome"),
])
def test_a_local_path_goes_inside_the_mount_point(path: str, script_root: str,
                                                   expected: str) -> None:
    assert under_mount_point(path, script_root) == expected


def mounted(app: t.Any, in_place: bool) -> t.Any:
    """``app`` under ``/site`` as hosts mount one: a dispatcher around the app, or the
    in-place form ``app.wsgi_app = DispatcherMiddleware(..., {"/site": app.wsgi_app})``."""
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from werkzeug.wrappers import Response

    outside = Response("the server's root: not found", 404)
    if in_place:
        app.wsgi_app = DispatcherMiddleware(outside, {"/site": app.wsgi_app})
        return app
    return DispatcherMiddleware(outside, {"/site": app})


def sandbox_login_under_site(make_app: t.Any, in_place: bool, **query: str) -> t.Any:
    """A whole sandbox login of a host mounted under ``/site``: every page the browser is
    sent to is under ``/site``; the callback's response."""
    from urllib.parse import urlsplit

    from werkzeug.test import Client

    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None)
    browser = Client(mounted(app, in_place))
    start = browser.get("/site/auth/wechat/login", query_string=query)
    qr_url = urlsplit(start.headers["Location"])
    assert qr_url.path == "/site/wechat-sandbox/connect/qrconnect", start.headers["Location"]
    page = browser.get(qr_url.path, query_string=qr_url.query)
    assert page.status_code == 200
    uuid = re.search(r'data-uuid="([^"]+)"', page.get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    allowed = browser.post(f"/site/wechat-sandbox/connect/confirm/{uuid}",
                           data={"action": "allow", "person": "zhangsan"})
    assert allowed.status_code == 200
    redirect = browser.get("/site/wechat-sandbox/connect/l/qrconnect",
                           query_string={"uuid": uuid}).json["redirect"]
    callback = urlsplit(redirect)
    assert callback.path == "/site/auth/wechat/callback"
    return browser.get(callback.path, query_string=callback.query)


@pytest.mark.parametrize("in_place", [False, True])
def test_a_host_mounted_under_a_prefix_logs_in_and_lands_inside_it(
        make_app: t.Any, in_place: bool) -> None:
    """Before: the login sent the browser to the sandbox outside ``/site`` (a 404), the
    in-place mount answered the callback's in-process API call a 404 (the page: "WeChat is
    not answering"), and the default post-login URL ``/`` left the app."""
    done = sandbox_login_under_site(make_app, in_place)
    assert done.status_code == 302, done.get_data(as_text=True)
    assert done.headers["Location"] == "/site/"


@pytest.mark.parametrize("given", ["/welcome", "/site/welcome"])
def test_next_written_with_or_without_the_mount_point_lands_inside_it(
        make_app: t.Any, given: str) -> None:
    """``next=request.path`` (no mount point) and ``next=url_for(...)`` (with it) land on
    the same page, which ``login_succeeded`` receivers are told (one may redirect there)."""
    from flask_wechat_qr import signals

    told: list[str] = []
    with signals.login_succeeded.connected_to(lambda _app, **kw: told.append(kw["next_url"])):
        done = sandbox_login_under_site(make_app, False, next=given)
    assert done.headers["Location"] == "/site/welcome"
    assert told == ["/site/welcome"]


def test_behind_a_proxy_that_mounts_the_app_the_sandbox_is_under_the_prefix(
        make_app: t.Any) -> None:
    from werkzeug.middleware.proxy_fix import ProxyFix

    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_proto=1, x_host=1, x_prefix=1)
    start = app.test_client().get("/auth/wechat/login", headers={
        "X-Forwarded-Proto": "https", "X-Forwarded-Host": "www.example.com",
        "X-Forwarded-Prefix": "/site"})
    assert start.headers["Location"].startswith(
        "https://www.example.com/site/wechat-sandbox/connect/qrconnect?")


@pytest.mark.parametrize(("url", "port"), [
    ("https://www.example.com/", 443), ("HTTP://www.example.com", 80),
    ("https://www.example.com:8443", 8443), ("http://h:99999", None), ("ftp://h", None)])
def test_port_of_a_url_is_its_schemes_default_where_it_names_none(url: str,
                                                                 port: int | None) -> None:
    assert port_of(urlsplit(url)) == port


def test_an_application_root_where_the_app_is_mounted_starts_logins(make_app: t.Any) -> None:
    """``APPLICATION_ROOT`` saying the mount point (the session cookie's path) covers the
    callback under it: no refusal at the start."""
    from werkzeug.test import Client

    app = make_app(APPLICATION_ROOT="/site")
    start = Client(mounted(app, False)).get("/site/auth/wechat/login")
    assert start.status_code == 302, start.get_data(as_text=True)
