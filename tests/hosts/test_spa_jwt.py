"""A single-page app on a Flask JSON API that authenticates with Flask-JWT-Extended
(apps/host_spa_jwt), with no Flask-Login, used as its SPA uses it: the JWT in an HttpOnly
cookie with its CSRF double-submit cookie, or in the ``Authorization`` header, collected
once after the WeChat login; first and returning logins back to hash and history routes,
linking WeChat to the account the SPA is logged into, unlinking, logging out, a login
cancelled on the phone shown by the SPA, ``flask wechat-qr check``; and the adapters and
routes of docs/hooks.rst ("A single-page app on Flask-JWT-Extended") as the docs print
them."""

from __future__ import annotations

import re
import time
import typing as t
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import host_spa_jwt as host
import pytest
import sqlalchemy as sa
from flask import Flask
from flask_jwt_extended import create_access_token, decode_token
from support import answer, app_factory, poll

from .browse import Browser, assert_no_server_error, wechat_login
from .shapes import SANDBOX, flask

JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")


def build(tmp_path: Path, location: str = "cookies", **config: t.Any) -> Flask:
    return host.create_app({**SANDBOX, "SQLALCHEMY_DATABASE_URI":
                            f"sqlite:///{tmp_path / (location + '.db')}",
                            "HOST_JWT_LOCATION": location, **config})


@pytest.fixture
def apps() -> t.Iterator[t.Callable[..., Flask]]:
    """``make(tmp_path, location, **config)``: a host on ``location`` ("cookies" or
    "headers") whose pooled connections close with the test."""
    with app_factory(build) as make:
        yield make


LOCATIONS = pytest.mark.parametrize("location", ["cookies", "headers"])


class SPA:
    """The SPA of ``static/index.html`` in a browser: what its script does on each page."""

    def __init__(self, app: Flask) -> None:
        self.browser = Browser(app)
        self.token: str | None = None  # the header variant's JWT (the SPA's storage)

    def cookie(self, name: str) -> t.Any:
        return self.browser.client.get_cookie(name)

    def headers(self) -> dict[str, str]:
        """As ``authHeaders()``: the bearer token, and the JWT CSRF cookie's value."""
        headers = {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        csrf = self.cookie("csrf_access_token")
        if csrf is not None:
            headers["X-CSRF-TOKEN"] = csrf.value
        return headers

    def start(self) -> t.Any:
        """What the page's script does when it loads: collect a WeChat login's token (the
        header variant), then ask ``/api/me``."""
        client = self.browser.client
        collected = client.post("/api/token/wechat", json={})
        if collected.status_code == 200:
            self.token = collected.json["access_token"]
        return client.get("/api/me", headers=self.headers())

    def me(self) -> dict[str, t.Any] | None:
        answered = self.start()
        return answered.json if answered.status_code == 200 else None

    def log_in(self, person: str = "zhangsan", next_url: str | None = "/app/profile") -> t.Any:
        return wechat_login(self.browser, person, next_url=next_url)

    def link(self, person: str, next_url: str = "/app/profile") -> t.Any:
        """The "Link WeChat" button: a navigation to the link page (header variant: after
        ``POST /api/wechat/link``, which carries the token a navigation cannot)."""
        path = f"/auth/wechat/link?next={next_url}"
        if self.token:
            started = self.browser.client.post("/api/wechat/link", json={"next": next_url},
                                               headers=self.headers())
            assert started.status_code == 200, started.json
            path = started.json["url"]
        return wechat_login(self.browser, person, path=path.split("?")[0],
                            next_url=parse_qs(urlsplit(path).query)["next"][0])

    def unlink(self, user: dict[str, t.Any]) -> t.Any:
        return self.browser.client.post(
            "/auth/wechat/unlink", headers=self.headers(),
            data={"csrf_token": user["wechat_csrf_token"], "next": "/app/profile"})

    def log_out(self) -> t.Any:
        answered = self.browser.client.post("/api/logout", headers=self.headers())
        self.token = None
        return answered


def users(app: Flask) -> list[dict[str, t.Any]]:
    with app.app_context():
        rows = host.db.session.execute(
            sa.select(host.User.__table__).order_by(host.User.id)).mappings().all()
        return [dict(row) for row in rows]


def sign_up(app: Flask, email: str) -> int:
    """A user of the site's own sign-up (an e-mail account with a password)."""
    with app.app_context():
        user = host.User(email=email, password_hash="pbkdf2:sha256:1000$x$y")
        host.db.session.add(user)
        host.db.session.commit()
        return int(user.id)


def jwt_login(spa: SPA, user_id: int) -> None:
    """The SPA logged in by the site's own login API (what it answers, per variant)."""
    app = spa.browser.app
    with app.app_context():
        token = create_access_token(identity=str(user_id))
    if app.config["HOST_JWT_LOCATION"] == "headers":
        spa.token = token
    else:
        spa.browser.client.set_cookie("access_token_cookie", token, httponly=True)
        with app.app_context():
            csrf = decode_token(token, allow_expired=True)["csrf"]
        spa.browser.client.set_cookie("csrf_access_token", csrf)


def no_jwt_in_a_url(browser: Browser) -> None:
    """No URL the browser went to carries a JWT (history, Referer, access logs)."""
    assert [path for _method, path, _status in browser.seen if JWT.search(path)] == []


@LOCATIONS
def test_first_and_returning_logins_end_in_the_spa_logged_in(
        tmp_path: Path, apps: t.Any, location: str) -> None:
    app = apps(tmp_path, location)
    first = SPA(app)
    page = first.log_in("zhangsan", next_url="/app/profile")
    assert first.browser.seen[-1][1:] == ("/app/profile", 200), first.browser.seen[-3:]
    assert "<title>SPA on Flask-JWT-Extended</title>" in page.get_data(as_text=True)
    me = first.me()
    assert me is not None and me["nickname"] == "张三🐼"
    assert me["wechat"] == [{"connection": "wechat", "nickname": "张三🐼"}]
    [user] = users(app)
    assert me["id"] == user["id"]
    if location == "cookies":
        access = first.cookie("access_token_cookie")
        assert access is not None and access.http_only and JWT.fullmatch(access.value)
        assert first.cookie("csrf_access_token") is not None  # readable by the SPA's script
    else:
        assert first.token and first.cookie("access_token_cookie") is None
        again = first.browser.client.post("/api/token/wechat", json={})
        assert again.status_code == 401, "the login is collected once"
    no_jwt_in_a_url(first.browser)

    returning = SPA(app)
    returning.log_in("zhangsan", next_url="/app/orders")
    assert returning.browser.seen[-1][1] == "/app/orders"
    assert (returning.me() or {}).get("id") == user["id"] and len(users(app)) == 1

    assert returning.log_out().status_code == 200
    assert returning.me() is None
    for spa in (first, returning):
        assert_no_server_error(spa.browser)


@LOCATIONS
def test_a_hash_route_is_where_the_login_ends(tmp_path: Path, apps: t.Any,
                                              location: str) -> None:
    """The SPA's button encodes its hash route (``/#/profile`` as ``/%23/profile``): the
    callback's redirect keeps the fragment, the browser lands on the route."""
    app = apps(tmp_path, location)
    spa = SPA(app)
    answered = wechat_login(spa.browser, "zhangsan", next_url="/%23/profile", follow=False)
    assert answered.status_code == 302 and answered.headers["Location"] == "/#/profile"
    assert (spa.me() or {}).get("nickname") == "张三🐼"


@LOCATIONS
def test_linking_wechat_to_the_account_the_spa_is_logged_into(
        tmp_path: Path, apps: t.Any, location: str) -> None:
    """The link page finds the SPA's user through the adapter's ``current_user``: the JWT
    cookie on the navigation, or (header variant) the link the SPA started with its
    token. Unlinking is the SPA's POST with the extension's CSRF token (and the JWT CSRF
    header, or the bearer token)."""
    app = apps(tmp_path, location)
    alice = sign_up(app, "alice@example.com")
    spa = SPA(app)
    jwt_login(spa, alice)
    assert (spa.me() or {}).get("wechat") == []
    spa.link("xiaohua")
    assert spa.browser.seen[-1][1] == "/app/profile", spa.browser.seen[-4:]
    me = spa.me()
    assert me is not None and me["id"] == alice and len(me["wechat"]) == 1
    assert len(users(app)) == 1

    unlinked = spa.unlink(me)
    assert unlinked.status_code == 302 and unlinked.headers["Location"] == "/app/profile"
    assert (spa.me() or {}).get("wechat") == []
    no_jwt_in_a_url(spa.browser)
    assert_no_server_error(spa.browser)


def assert_linking_is_refused_to_the_spas_login(spa: SPA) -> None:
    """The link page, for a browser the SPA is not logged in on: back to the SPA's login."""
    answered = spa.browser.get("/auth/wechat/link?next=/app/profile", follow=False)
    assert answered.status_code == 302
    assert answered.headers["Location"].startswith("/app/login?wechat_error=NotLoggedIn")


@LOCATIONS
def test_linking_without_a_login_goes_back_to_the_spa(tmp_path: Path, apps: t.Any,
                                                      location: str) -> None:
    app = apps(tmp_path, location)
    spa = SPA(app)
    assert_linking_is_refused_to_the_spas_login(spa)


def test_an_expired_jwt_cookie_is_no_login(tmp_path: Path, apps: t.Any) -> None:
    """An expired (or tampered) access cookie on the link page: not logged in, the SPA's
    login route, never Flask-JWT-Extended's 401 JSON on a page or a 500."""
    app = apps(tmp_path, "cookies", JWT_ACCESS_TOKEN_EXPIRES=-60)
    alice = sign_up(app, "alice@example.com")
    spa = SPA(app)
    jwt_login(spa, alice)
    assert_linking_is_refused_to_the_spas_login(spa)


def callback_of_a_cancel(app: Flask, spa: SPA) -> str:
    """The SPA's WeChat login towards ``/app/profile``, denied on the phone: the callback
    URL WeChat sends the browser to."""
    start = spa.browser.get("/auth/wechat/login?next=/app/profile", follow=False)
    qr_page = spa.browser.get(start.headers["Location"].split("#")[0])
    uuid = re.search(r'data-uuid="([^"]+)"', qr_page.get_data(as_text=True))
    assert uuid is not None
    answer(app.test_client(), uuid.group(1), action="deny", person="zhangsan")
    return t.cast(str, poll(spa.browser.client, uuid.group(1))["redirect"])


@LOCATIONS
def test_a_login_cancelled_on_the_phone_is_shown_by_the_spa(tmp_path: Path, apps: t.Any,
                                                            location: str) -> None:
    app = apps(tmp_path, location)
    spa = SPA(app)
    spa.browser.get(callback_of_a_cancel(app, spa))
    assert spa.browser.seen[-1][1:] == (
        "/app/login?wechat_error=cancelled&next=/app/profile", 200), spa.browser.seen[-3:]
    assert spa.me() is None and users(app) == []


@LOCATIONS
def test_wechat_qr_check_on_a_spa_site(tmp_path: Path, apps: t.Any, location: str) -> None:
    app = apps(tmp_path, location)
    result = flask(app, "wechat-qr", "check", "--base-url", "https://spa.example.com")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "Summary: no problems." in result.output


def docs_blocks(marker: str) -> str:
    """The Python block of docs/hooks.rst's SPA section that contains ``marker``."""
    import textwrap

    from support import ROOT

    text = (ROOT / "docs" / "hooks.rst").read_text(encoding="utf-8")
    section = text.split(".. _spa-jwt:", 1)[1].split("\n.. _", 1)[0]
    blocks = [textwrap.dedent(block) for block in re.findall(
        r"^\.\. code-block:: python\n\n((?:    .*\n|\n)+)", section, re.M) if marker in block]
    assert len(blocks) == 1, f"{len(blocks)} blocks with {marker!r}"
    return blocks[0]


def docs_app(tmp_path: Path, apps: t.Any, location: str, marker: str,
             namespace: dict[str, t.Any]) -> Flask:
    """The host with the docs' adapter (the block's code before ``wechat = WeChatQR(``) and
    the docs' routes after it, and the docs' ``login_failed`` receiver; not the host's."""
    before, after = docs_blocks(marker).split("\nwechat = WeChatQR(", 1)
    exec(before, namespace)
    app = apps(tmp_path, location, HOST_ADAPTER=namespace["Adapter"],
               HOST_HEADER_ROUTES=False, HOST_SPA_ERRORS=False)
    namespace.update(app=app, db=host.db, User=host.User)
    exec(after.split("\n", 1)[1], namespace)
    # Its own imports; kept in the test's namespace: Blinker holds its receiver weakly.
    namespace["receiver"] = receiver = {"app": app}
    exec(docs_blocks("def back_to_the_spa"), receiver)
    return app


@LOCATIONS
def test_the_docs_spa_section_as_printed(tmp_path: Path, apps: t.Any, location: str) -> None:
    """docs/hooks.rst's adapter (and, for the header variant, its two routes) and its
    ``login_failed`` receiver, as printed, on the host's models and SPA: a first login
    collected by the SPA, linking from the SPA's JWT login, a cancel shown by the SPA."""
    namespace: dict[str, t.Any] = {}
    marker = "set_access_cookies(response" if location == "cookies" else "HANDED_OVER ="
    app = docs_app(tmp_path, apps, location, marker, namespace)
    spa = SPA(app)
    spa.log_in("zhangsan", next_url="/app/profile")
    me = spa.me()
    assert me is not None and me["nickname"] == "张三🐼"
    assert (spa.token is not None) is (location == "headers")
    no_jwt_in_a_url(spa.browser)

    alice = sign_up(app, "alice@example.com")
    linker = SPA(app)
    jwt_login(linker, alice)
    linker.link("xiaohua")
    assert [w["nickname"] for w in (linker.me() or {}).get("wechat", [])] == ["🌸小花🌸"]

    cancelled = SPA(app)
    ended = cancelled.browser.get(callback_of_a_cancel(app, cancelled), follow=False)
    assert ended.headers["Location"] == "/app/login?wechat_error=cancelled&next=%2Fapp%2Fprofile"
    for browser in (spa.browser, linker.browser):
        assert_no_server_error(browser)


# --- the header variant's hand-offs in the session ----------------------------------------


@pytest.fixture(params=["host", "docs"])
def header_app(request: pytest.FixtureRequest, tmp_path: Path, apps: t.Any
               ) -> t.Iterator[Flask]:
    """The header variant: the host's routes, or the docs' adapter, routes and receivers as
    printed (kept alive with the test: Blinker holds receivers weakly)."""
    if request.param == "host":
        yield apps(tmp_path, "headers")
        return
    namespace: dict[str, t.Any] = {}
    yield docs_app(tmp_path, apps, "headers", "HANDED_OVER =", namespace)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> t.Callable[[float], None]:
    """``clock(seconds)``: from now on ``time.time()`` is that much later."""
    real = time.time

    def later(seconds: float) -> None:
        monkeypatch.setattr(time, "time", lambda: real() + seconds)

    return later


def link_page(spa: SPA) -> t.Any:
    """A navigation to the link page (no ``Authorization`` header: none is sent)."""
    return spa.browser.client.get("/auth/wechat/link?next=/app/profile")


NOT_LOGGED_IN = "/app/login?wechat_error=NotLoggedIn"


def start_link(spa: SPA) -> None:
    started = spa.browser.client.post("/api/wechat/link", json={"next": "/app/profile"},
                                      headers=spa.headers())
    assert started.status_code == 200, started.json


def test_a_finished_link_hands_the_browser_to_nobody(header_app: Flask) -> None:
    """Once the link is done, the link page of that browser no longer acts for the user who
    started it (the next person at a shared computer would link their WeChat to the
    previous user's account). Before: it did for 10 minutes."""
    spa = SPA(header_app)
    jwt_login(spa, sign_up(header_app, "alice@example.com"))
    spa.link("xiaohua")
    assert [w["nickname"] for w in (spa.me() or {}).get("wechat", [])] == ["🌸小花🌸"]
    spa.token = None  # the SPA's tab closed; someone else opens the site
    answered = link_page(spa)
    assert answered.status_code == 302
    assert answered.headers["Location"].startswith(NOT_LOGGED_IN)


def test_logging_out_ends_a_link_and_a_login_not_collected(header_app: Flask) -> None:
    """The API's logout takes back a link the SPA started and a WeChat login it did not
    collect. Before: both stayed in the session."""
    spa = SPA(header_app)
    jwt_login(spa, sign_up(header_app, "alice@example.com"))
    start_link(spa)
    assert "/wechat-sandbox/" in link_page(spa).headers["Location"]
    assert spa.log_out().status_code == 200
    assert link_page(spa).headers["Location"].startswith(NOT_LOGGED_IN)

    spa.log_in("zhangsan")  # back on the SPA's route; its script has not run yet
    assert spa.log_out().status_code == 200
    assert spa.browser.client.post("/api/token/wechat", json={}).status_code == 401


def test_a_link_is_started_for_five_minutes(header_app: Flask,
                                            clock: t.Callable[[float], None]) -> None:
    """Before: for 10 minutes."""
    spa = SPA(header_app)
    jwt_login(spa, sign_up(header_app, "alice@example.com"))
    start_link(spa)
    clock(290)
    assert "/wechat-sandbox/" in link_page(spa).headers["Location"]
    clock(301)
    assert link_page(spa).headers["Location"].startswith(NOT_LOGGED_IN)


def test_the_login_is_collected_by_a_json_post_within_a_minute(
        header_app: Flask, clock: t.Callable[[float], None]) -> None:
    """A form's POST (which another site's page can send without asking) collects
    nothing, and leaves the login to the SPA; a minute later it is gone."""
    spa = SPA(header_app)
    spa.log_in("zhangsan")
    client = spa.browser.client
    assert client.post("/api/token/wechat", data={"x": "1"}).status_code == 401
    assert client.post("/api/token/wechat", json={}).status_code == 200

    late = SPA(header_app)
    late.log_in("zhangsan")
    clock(61)
    assert late.browser.client.post("/api/token/wechat", json={}).status_code == 401


@pytest.mark.parametrize("body", [
    {"data": "null", "content_type": "application/json"},
    {"data": "[]", "content_type": "application/json"},
    {"data": "{", "content_type": "application/json"},
    {"data": {"next": "/app/profile"}},
    {},
], ids=["json-null", "json-list", "not-json", "form", "empty"])
def test_starting_a_link_without_a_json_object(header_app: Flask, body: dict[str, t.Any]
                                               ) -> None:
    """No ``next`` to read: the link starts without one. Before: a 500 (the docs, on JSON
    ``null``) or a 415 (the host, on a body that is no JSON)."""
    spa = SPA(header_app)
    jwt_login(spa, sign_up(header_app, "alice@example.com"))
    started = spa.browser.client.post("/api/wechat/link", headers=spa.headers(), **body)
    assert started.status_code == 200, started.get_data(as_text=True)
    assert started.json == {"url": "/auth/wechat/link"}
