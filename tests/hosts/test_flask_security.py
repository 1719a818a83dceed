"""A site on Flask-Security-Too (apps/host_flask_security), used as its visitors use it: a
first and a returning WeChat login (a user Flask-Security can load, its login tracking, a
session it counts as freshly authenticated), ask binding proved by Flask-Security's own
password check, linking from a Flask-Security login and Flask-Security's ``/logout``, an
inactive account, WeChat as the only login, with and without ``CSRFProtect``; and the
adapter of docs/hooks.rst ("A site on Flask-Security-Too") as the docs print it."""

from __future__ import annotations

import logging
import re
import typing as t
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import host_flask_security as host
import pytest
import sqlalchemy as sa
from flask import Flask
from flask_security import hash_password
from support import CSRF, app_factory, find_tags, logged_in_user_id

from flask_wechat_qr import AccountAdapter

from .browse import Browser, assert_no_server_error, wechat_login
from .shapes import SANDBOX, docs_block, flask

PASSWORD = "correct horse battery"
WRONG = "Wrong email or password."


def build(tmp_path: Path, *, csrf_protect: bool = False, **config: t.Any) -> Flask:
    return host.create_app({**SANDBOX, "SQLALCHEMY_DATABASE_URI":
                            f"sqlite:///{tmp_path / 'club.db'}",
                            "HOST_CSRF_PROTECT": csrf_protect, **config})


@pytest.fixture
def apps() -> t.Iterator[t.Callable[..., Flask]]:
    """``make(tmp_path, **config)``: a host whose pooled connections close with the test."""
    with app_factory(build) as make:
        yield make


def sign_up(app: Flask, email: str, **fields: t.Any) -> str:
    """A user made as Flask-Security's registration makes one; its Flask-Login id."""
    with app.app_context():
        user = host.user_datastore.create_user(
            email=email, password=hash_password(PASSWORD), **fields)
        host.db.session.commit()
        return str(user.fs_uniquifier)


def users(app: Flask) -> list[dict[str, t.Any]]:
    with app.app_context():
        rows = host.db.session.execute(
            sa.select(host.User.__table__).order_by(host.User.id)).mappings().all()
        return [dict(row) for row in rows]


def identities(app: Flask) -> list[str]:
    table = host.db.metadata.tables["wechat_qr_identity"]
    with app.app_context():
        return [str(user_id) for user_id in
                host.db.session.execute(sa.select(table.c.user_id)).scalars()]


def who(page: t.Any) -> str:
    html = page.get_data(as_text=True)
    return html.split('id="who">', 1)[1].split("<", 1)[0] if 'id="who">' in html else html


def session_keys(browser: Browser) -> dict[str, t.Any]:
    return t.cast(dict[str, t.Any], browser.client.get("/session-keys").json)


def log_out(browser: Browser) -> t.Any:
    """Flask-Security's ``/logout`` (POST only), from the layout's form."""
    html = browser.get("/").get_data(as_text=True)
    tokens = CSRF.findall(html)
    return browser.post("/logout", data={"csrf_token": tokens[0]} if tokens else {})


CSRF_PROTECT = pytest.mark.parametrize("csrf_protect", [False, True],
                                       ids=["flask-security-csrf", "csrfprotect"])


@CSRF_PROTECT
def test_first_and_returning_login_are_flask_security_logins(
        tmp_path: Path, apps: t.Any, csrf_protect: bool) -> None:
    """The first login makes a user Flask-Security can load (``fs_uniquifier``, ``active``,
    a unique placeholder ``email``, a role); both logins are tracked and fresh. Before:
    ``login_count`` and ``current_login_at`` stayed empty (Flask-Security's ``login_user``
    writes them after the login's commit, and nothing committed them)."""
    app = apps(tmp_path, csrf_protect=csrf_protect)
    first = Browser(app)
    page = wechat_login(first, "zhangsan", next_url="/account")
    assert page.status_code == 200 and who(page) == "张三🐼", page.get_data(as_text=True)
    [user] = users(app)
    assert user["active"] is True and user["email"].endswith("@wechat.invalid")
    assert logged_in_user_id(first.client) == user["fs_uniquifier"]
    assert identities(app) == [str(user["id"])]
    assert user["login_count"] == 1 and user["current_login_at"] is not None
    assert session_keys(first)["fs_paa"], "Flask-Security's primary authentication time"
    fresh = first.get("/security-settings", follow=False)  # auth_required(within=15)
    assert fresh.status_code == 200 and 'id="fresh"' in fresh.get_data(as_text=True)

    returning = Browser(app)
    assert who(wechat_login(returning, "zhangsan", next_url="/account")) == "张三🐼"
    assert logged_in_user_id(returning.client) == user["fs_uniquifier"]
    [user] = users(app)
    assert user["login_count"] == 2 and user["last_login_at"] is not None

    assert log_out(returning).status_code == 200
    assert logged_in_user_id(returning.client) is None
    assert "fs_paa" not in session_keys(returning)["keys"]
    assert who(returning.get("/")) == "anonymous"
    for browser in (first, returning):
        assert_no_server_error(browser)


@CSRF_PROTECT
def test_ask_binding_proves_the_account_with_flask_securitys_password_check(
        tmp_path: Path, apps: t.Any, csrf_protect: bool) -> None:
    app = apps(tmp_path, csrf_protect=csrf_protect, WECHAT_QR_ASSOCIATION="ask_binding")
    alice = sign_up(app, "alice@example.com")
    browser = Browser(app)
    page = wechat_login(browser, "lisi")
    assert browser.seen[-1][1] == "/auth/bind", browser.seen[-3:]
    [token] = set(CSRF.findall(page.get_data(as_text=True)))
    wrong = browser.post("/auth/bind", data={"csrf_token": token, "action": "bind",
                                             "username": "alice@example.com",
                                             "password": "not it"})
    assert wrong.status_code == 400 and WRONG in wrong.get_data(as_text=True)
    page = browser.post("/auth/bind", data={"csrf_token": token, "action": "bind",
                                            "username": " Alice@Example.com",
                                            "password": PASSWORD})
    assert page.status_code == 200, page.get_data(as_text=True)
    assert logged_in_user_id(browser.client) == alice
    [user] = users(app)
    assert identities(app) == [str(user["id"])] and user["login_count"] == 1
    account = browser.get("/account").get_data(as_text=True)
    assert "wechat-account" in account and "李四" in account
    assert_no_server_error(browser)


def bind(app: Flask, email: str) -> tuple[Browser, t.Any]:
    """A WeChat login of someone new, then the bind page's "bind" with ``email``'s right
    password: the browser and the answer."""
    browser = Browser(app)
    [token] = set(CSRF.findall(wechat_login(browser, "lisi").get_data(as_text=True)))
    return browser, browser.post("/auth/bind", data={
        "csrf_token": token, "action": "bind", "username": email, "password": PASSWORD})


def assert_not_bound(app: Flask, email: str) -> None:
    """The right password binds nothing, and says no more than a wrong one."""
    browser, page = bind(app, email)
    assert page.status_code == 400 and WRONG in page.get_data(as_text=True)
    assert logged_in_user_id(browser.client) is None and identities(app) == []


def docs_adapter() -> type[AccountAdapter]:  # type: ignore[type-arg]
    namespace: dict[str, t.Any] = {"user_datastore": host.user_datastore}
    exec(docs_block("flask_security.login_user").split("\nwechat = WeChatQR(", 1)[0],
         namespace)
    return t.cast("type[AccountAdapter]", namespace["Adapter"])  # type: ignore[type-arg]


ADAPTERS = pytest.mark.parametrize("docs", [False, True], ids=["host", "docs"])


@pytest.fixture
def features(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flask-Security's features turned on by a test's config: its ``init_app`` sets them
    on the module's ``Security``, shared by every app, and never turns them off; put back."""
    for name in ("confirmable", "two_factor"):
        monkeypatch.setattr(host.security, name, getattr(host.security, name))


@ADAPTERS
def test_binding_refuses_an_account_with_a_second_factor(
        tmp_path: Path, apps: t.Any, features: None, docs: bool) -> None:
    """A password alone must not bind a WeChat (and so log in for good) to an account whose
    Flask-Security login asks for a second factor too. Before: it did."""
    app = apps(tmp_path, WECHAT_QR_ASSOCIATION="ask_binding", SECURITY_TWO_FACTOR=True,
               SECURITY_TWO_FACTOR_ENABLED_METHODS=["authenticator"],
               SECURITY_TOTP_SECRETS={"1": "a-totp-secret-of-the-test"},
               SECURITY_TOTP_ISSUER="Club",
               HOST_ADAPTER=docs_adapter() if docs else host.Adapter)
    sign_up(app, "tf@example.com", tf_primary_method="authenticator",
            tf_totp_secret="not-a-real-secret")
    alice = sign_up(app, "alice@example.com")
    assert_not_bound(app, "tf@example.com")
    assert logged_in_user_id(bind(app, "alice@example.com")[0].client) == alice


@ADAPTERS
def test_binding_refuses_an_unconfirmed_account(tmp_path: Path, apps: t.Any, features: None,
                                                docs: bool) -> None:
    """Under ``SECURITY_CONFIRMABLE`` an address nobody confirmed may be someone else's
    (a squatter's sign-up): no binding to it. Before: the password was enough."""
    app = apps(tmp_path, WECHAT_QR_ASSOCIATION="ask_binding", SECURITY_CONFIRMABLE=True,
               HOST_ADAPTER=docs_adapter() if docs else host.Adapter)
    sign_up(app, "squatted@example.com")
    alice = sign_up(app, "alice@example.com", confirmed_at=datetime(2024, 1, 1))
    assert_not_bound(app, "squatted@example.com")
    assert logged_in_user_id(bind(app, "alice@example.com")[0].client) == alice


def test_the_default_authenticate_says_it_cannot_read_flask_securitys_hashes(
        tmp_path: Path, apps: t.Any, caplog: pytest.LogCaptureFixture) -> None:
    """An adapter with the default ``authenticate``: Flask-Security's argon2 hashes in
    ``password`` are no Werkzeug hashes. Before: "Wrong email or password." for the right
    one, and not a word in the log why."""
    class Adapter(AccountAdapter):  # type: ignore[type-arg]
        login_field = "email"
        create_user = host.Adapter.create_user

    app = apps(tmp_path, WECHAT_QR_ASSOCIATION="ask_binding", HOST_ADAPTER=Adapter)
    sign_up(app, "alice@example.com")
    browser = Browser(app)
    [token] = set(CSRF.findall(wechat_login(browser, "lisi").get_data(as_text=True)))
    with caplog.at_level(logging.ERROR, "flask_wechat_qr"):
        page = browser.post("/auth/bind", data={"csrf_token": token, "action": "bind",
                                                "username": "alice@example.com",
                                                "password": PASSWORD})
    assert page.status_code == 400 and WRONG in page.get_data(as_text=True)
    [record] = [r for r in caplog.records if r.name == "flask_wechat_qr"]
    assert "not a Werkzeug hash" in record.getMessage()
    assert "Override authenticate" in record.getMessage() and PASSWORD not in caplog.text


@CSRF_PROTECT
def test_linking_wechat_from_a_flask_security_login(tmp_path: Path, apps: t.Any,
                                                     csrf_protect: bool) -> None:
    """Logged out, the link goes through Flask-Security's login page and back; linking
    keeps the session Flask-Security's login made (its freshness too); unlinking is a
    POST its CSRF settings let through."""
    app = apps(tmp_path, csrf_protect=csrf_protect)
    alice = sign_up(app, "alice@example.com")
    browser = Browser(app)
    page = browser.get("/auth/wechat/link?next=/account")
    assert browser.seen[-1][1].startswith("/login?next="), browser.seen[-3:]
    html = page.get_data(as_text=True)
    [form] = [tag for tag in find_tags(html, "form") if tag.get("name") == "login_user_form"]
    fields = {"email": "alice@example.com", "password": PASSWORD,
              **{tag["name"]: tag.get("value") or "" for tag in find_tags(html, "input")
                 if tag.get("name") == "csrf_token"}}
    sandbox = browser.post(str(form["action"]), data=fields)  # back at the link: WeChat
    assert sandbox.status_code == 200 and "/wechat-sandbox/" in browser.seen[-1][1]
    paa = session_keys(browser)["fs_paa"]
    assert paa and logged_in_user_id(browser.client) == alice

    page = wechat_login(browser, "xiaohua", path="/auth/wechat/link", next_url="/account")
    assert browser.seen[-1][1] == "/account" and "wechat-account" in page.get_data(
        as_text=True)
    assert logged_in_user_id(browser.client) == alice
    assert session_keys(browser)["fs_paa"] == paa
    assert identities(app) == [str(users(app)[0]["id"])]

    [token] = set(CSRF.findall(page.get_data(as_text=True)))
    page = browser.post("/auth/wechat/unlink", data={"csrf_token": token, "next": "/account"})
    assert page.status_code == 200 and identities(app) == []
    assert log_out(browser).status_code == 200 and logged_in_user_id(browser.client) is None
    assert_no_server_error(browser)


def test_an_inactive_flask_security_account_is_refused(tmp_path: Path, apps: t.Any) -> None:
    app = apps(tmp_path)
    assert who(wechat_login(Browser(app), "zhangsan")) == "Hello 张三🐼"
    with app.app_context():
        host.db.session.execute(sa.update(host.User).values(active=False))
        host.db.session.commit()
    browser = Browser(app)
    page = wechat_login(browser, "zhangsan", next_url="/account")
    heading = re.findall(r"<h1[^>]*>([^<]*)", page.get_data(as_text=True))
    assert page.status_code == 403 and heading == ["This account cannot log in"]
    assert logged_in_user_id(browser.client) is None
    assert users(app)[0]["login_count"] == 1  # the refused login is not counted
    assert_no_server_error(browser)


def test_wechat_as_the_only_login_of_a_flask_security_site(
        tmp_path: Path, apps: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flask-Security sends visitors of protected pages to its own login page, whatever
    Flask-Login's ``login_view`` says; its ``unauthn_handler``, as docs/hooks.rst shows it,
    sends a browser's page load to WeChat and back, and leaves the rest (an API's JSON
    call, a form's POST) Flask-Security's answer. Before: those went to WeChat too (a JSON
    client got a redirect, not its 401; a POST's ``next`` led to a 405 after the login)."""
    app = apps(tmp_path)
    app.login_manager.login_view = "wechat_qr.login"  # type: ignore[attr-defined]
    assert app.test_client().get("/account").headers["Location"].startswith("/login?")

    security = app.extensions["security"]  # the module's, shared by every app: put back
    monkeypatch.setattr(security, "_unauthn_handler", security._unauthn_handler)
    namespace: dict[str, t.Any] = {"app": SimpleNamespace(security=security)}
    exec(docs_block("def log_in_with_wechat"), namespace)
    browser = Browser(app)
    browser.headers["Accept"] = BROWSER_ACCEPT
    asked = browser.get("/account", follow=False)
    assert asked.status_code == 302
    assert asked.headers["Location"] == "/auth/wechat/login?next=/account"
    assert who(wechat_login(browser, "zhangsan", path=asked.headers["Location"])) == "张三🐼"
    assert_no_server_error(browser)

    client = app.test_client()
    api = client.get("/account", headers={"Accept": "application/json"})
    assert api.status_code == 401 and api.is_json, (api.status_code, api.headers)
    # A script's fetch() accepts anything: Flask-Security's answer, not a WeChat login.
    fetched = client.get("/account", headers={"Accept": "*/*"})
    assert not fetched.headers.get("Location", "").startswith("/auth/wechat/"), fetched.headers
    posted = client.post("/account", data={"nickname": "x"}, headers={"Accept": BROWSER_ACCEPT})
    assert posted.status_code == 302 and posted.headers["Location"].startswith("/login?")


#: What a browser's page load accepts.
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_the_docs_adapter_for_flask_security(tmp_path: Path, apps: t.Any) -> None:
    """docs/hooks.rst's adapter, as printed (its last line, ``WeChatQR(...)``, is the
    host's), on the host's models: a first login, then binding a password account."""
    app = apps(tmp_path, WECHAT_QR_ASSOCIATION="ask_binding", HOST_ADAPTER=docs_adapter())
    alice = sign_up(app, "alice@example.com")
    browser = Browser(app)
    page = wechat_login(browser, "zhangsan", next_url="/account")
    [token] = set(CSRF.findall(page.get_data(as_text=True)))
    browser.post("/auth/bind", data={"csrf_token": token, "action": "create"})
    assert who(browser.get("/account")) == "张三🐼"
    assert browser.get("/security-settings", follow=False).status_code == 200

    browser = Browser(app)
    [token] = set(CSRF.findall(wechat_login(browser, "lisi").get_data(as_text=True)))
    browser.post("/auth/bind", data={"csrf_token": token, "action": "bind",
                                     "username": "alice@example.com", "password": PASSWORD})
    assert logged_in_user_id(browser.client) == alice
    assert [u["login_count"] for u in users(app)] == [1, 1]
    assert_no_server_error(browser)


def test_wechat_qr_check_on_a_flask_security_site(tmp_path: Path, apps: t.Any) -> None:
    app = apps(tmp_path, csrf_protect=True, WECHAT_QR_ASSOCIATION="ask_binding")
    result = flask(app, "wechat-qr", "check", "--base-url", "https://club.example.com")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "Summary: no problems." in result.output
    assert "club.example.com/auth/wechat/callback" in result.output
