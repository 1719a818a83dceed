"""Each host app of ``apps/``, used as its visitors use it, on the in-app sandbox: a first
and a returning WeChat login, ask binding (to a password account, and with the username of
an account that has no password), linking and unlinking from the account page, the
extension's database upgrade, and a crawl of every page seen: never a 5xx."""

from __future__ import annotations

import os
import typing as t

import pytest
from flask import Flask
from support import (
    POSTGRES_URL_VARIABLE,
    REQUIRE_POSTGRES_VARIABLE,
    Database,
    find_tags,
    log_in,
    logged_in_user_id,
)

from flask_wechat_qr import ConfigurationError

from .browse import Browser, assert_no_server_error, wechat_login
from .shapes import HOSTS, MIGRATE, UUID_KEYS, Host, flask

#: Every host on SQLite; those whose keys or schema differ by database also on PostgreSQL.
VARIANTS = [(host, "sqlite") for host in HOSTS] + [
    (UUID_KEYS, "postgresql"), (MIGRATE, "postgresql")]
WRONG_CREDENTIALS = "Wrong username or password."
PASSWORD = "correct horse battery"


@pytest.fixture(params=VARIANTS, ids=[f"{h.package}-{backend}" for h, backend in VARIANTS])
def host(request: pytest.FixtureRequest, tmp_path: t.Any) -> t.Iterator[tuple[Host, t.Any]]:
    """A host and a ``build(**config)`` that makes it on a fresh database of the test's."""
    host, backend = request.param
    server_url = os.environ.get(POSTGRES_URL_VARIABLE) if backend == "postgresql" else None
    if backend == "postgresql" and not server_url:
        reason = f"set {POSTGRES_URL_VARIABLE} for the PostgreSQL variant"
        if os.environ.get(REQUIRE_POSTGRES_VARIABLE):
            pytest.fail(f"{REQUIRE_POSTGRES_VARIABLE} is set: {reason}")
        pytest.skip(reason)
    database = Database(backend, tmp_path, server_url)
    apps: list[Flask] = []

    def build(**config: t.Any) -> Flask:
        app = host.build(database.url(f"db{len(apps)}"), **config)
        apps.append(app)
        return app

    try:
        yield host, build
    finally:
        for app in apps:
            with app.app_context():
                host.db(app).session.remove()
                for engine in host.db(app).engines.values():
                    engine.dispose()
        database.drop()


def who(page: t.Any) -> str:
    """What the host's home page says about the visitor."""
    html = page.get_data(as_text=True)
    return html.split('id="who">', 1)[1].split("<", 1)[0] if 'id="who">' in html else html


def csrf_token(html: str) -> str:
    tokens = {tag["value"] for tag in find_tags(html, "input") if tag.get("name") == "csrf_token"}
    assert len(tokens) == 1, html
    return str(tokens.pop())


def test_first_and_returning_login(host: tuple[Host, t.Any]) -> None:
    shape, build = host
    app = build()
    first = Browser(app)
    page = wechat_login(first, "zhangsan")
    assert page.status_code == 200 and who(page).startswith("Hello"), page.get_data(as_text=True)
    user_id = logged_in_user_id(first.client)
    assert [str(i["user_id"]) for i in shape.identities(app)] == [user_id]

    returning = Browser(app)  # another day, another browser
    page = wechat_login(returning, "zhangsan")
    assert page.status_code == 200 and who(page).startswith("Hello")
    assert logged_in_user_id(returning.client) == user_id
    assert len(shape.users(app)) == 1 and len(shape.identities(app)) == 1
    assert_no_server_error(first)
    assert_no_server_error(returning)


def arrive_at_bind_page(browser: Browser, person: str) -> str:
    """A WeChat account nobody owns logs in: it ends on the bind page; its CSRF token."""
    page = wechat_login(browser, person)
    assert browser.seen[-1][1] == "/auth/bind", browser.seen[-3:]
    assert page.status_code == 200, page.get_data(as_text=True)
    return csrf_token(page.get_data(as_text=True))


WITH_PASSWORDS = [variant for variant in VARIANTS if variant[0].passwords]


@pytest.mark.parametrize("host", WITH_PASSWORDS, indirect=True,
                         ids=[f"{h.package}-{backend}" for h, backend in WITH_PASSWORDS])
def test_ask_binding_to_a_password_account(host: tuple[Host, t.Any]) -> None:
    """On every host with passwords (one without: the next test types a name anyway)."""
    shape, build = host
    app = build(WECHAT_QR_ASSOCIATION="ask_binding")
    alice = shape.sign_up(app, username="alice", password=PASSWORD)
    browser = Browser(app)
    token = arrive_at_bind_page(browser, "lisi")
    page = browser.post("/auth/bind", data={"csrf_token": token, "action": "bind",
                                           "username": "alice", "password": PASSWORD})
    assert page.status_code == 200, page.get_data(as_text=True)
    assert logged_in_user_id(browser.client) == alice
    assert [str(i["user_id"]) for i in shape.identities(app)] == [alice]
    account = browser.get(shape.account)
    assert account.status_code == 200 and "李四" in account.get_data(as_text=True)
    assert_no_server_error(browser)


def test_ask_binding_with_the_username_of_an_account_without_password(
        host: tuple[Host, t.Any]) -> None:
    """A WeChat-created user has no password (the host's ``check_password`` may raise on
    its ``None`` hash): typing its username is a wrong password, like any other. A site
    where nobody has a password (nor a username) cannot ask anyone to prove an account:
    it does not start in ask binding, and says why."""
    shape, build = host
    if not shape.passwords:
        with pytest.raises(ConfigurationError) as refused:
            build(WECHAT_QR_ASSOCIATION="ask_binding")
        assert refused.value.key == "WECHAT_QR_ASSOCIATION (wechat)"
        assert "login_field" in refused.value.fix
        return
    app = build(WECHAT_QR_ASSOCIATION="ask_binding")
    creator = Browser(app)
    token = arrive_at_bind_page(creator, "zhangsan")
    page = creator.post("/auth/bind", data={"csrf_token": token, "action": "create"})
    assert page.status_code == 200 and who(page).startswith("Hello")
    [created] = shape.users(app)
    username = created.get("username")
    if not username:  # this site's WeChat users have none: an invited user without one yet
        username = "bob"
        if "username" in created:
            shape.sign_up(app, username=username)

    browser = Browser(app)
    token = arrive_at_bind_page(browser, "jose")
    page = browser.post("/auth/bind", data={"csrf_token": token, "action": "bind",
                                           "username": username, "password": "guess"})
    assert page.status_code == 400, page.get_data(as_text=True)  # the form's answer
    assert WRONG_CREDENTIALS in page.get_data(as_text=True)
    assert logged_in_user_id(browser.client) is None
    assert len(shape.identities(app)) == 1
    assert_no_server_error(creator)
    assert_no_server_error(browser)


def test_link_and_unlink_from_the_account_page(host: tuple[Host, t.Any]) -> None:
    shape, build = host
    app = build()
    if shape.passwords:
        user_id = shape.sign_up(app, username="carol", password=PASSWORD)
    else:
        user_id = shape.sign_up(app, email="carol@example.com")
    browser = Browser(app)
    log_in(browser.client, user_id)  # the site's own login
    page = browser.get(shape.account)
    assert page.status_code == 200 and "Link WeChat" in page.get_data(as_text=True)

    page = wechat_login(browser, "xiaohua", path="/auth/wechat/link", next_url=shape.account)
    assert browser.seen[-1][1] == shape.account
    assert "🌸小花🌸" in page.get_data(as_text=True)
    assert [str(i["user_id"]) for i in shape.identities(app)] == [user_id]

    unlinked = browser.post("/auth/wechat/unlink", data={
        "csrf_token": csrf_token(page.get_data(as_text=True)), "next": shape.account})
    if shape.passwords:
        assert unlinked.status_code == 200 and browser.seen[-1][1] == shape.account
        assert "Link WeChat" in unlinked.get_data(as_text=True)
        assert shape.identities(app) == []
    else:  # WeChat is this user's only way in: refused, on a page
        assert unlinked.status_code == 409, unlinked.get_data(as_text=True)
        assert unlinked.mimetype == "text/html"
        assert len(shape.identities(app)) == 1
    assert logged_in_user_id(browser.client) == user_id
    assert_no_server_error(browser)


def test_database_upgrade(host: tuple[Host, t.Any]) -> None:
    """``flask wechat-qr db upgrade`` at each deploy: it adopts the tables ``create_all``
    made (or finds those its migrations made), and says the database is current."""
    shape, build = host
    app = build()
    for _ in range(2):  # every deploy
        result = flask(app, "wechat-qr", "db", "upgrade")
        assert result.exit_code == 0, (result.output, result.exception)
    current = flask(app, "wechat-qr", "db", "current")
    assert current.exit_code == 0 and "upgrade" not in current.output, current.output
    help_text = flask(app, "--help")
    assert help_text.exit_code == 0 and "wechat-qr" in help_text.output
    page = wechat_login(Browser(app), "wangwu")  # no unionid
    assert page.status_code == 200 and who(page).startswith("Hello")


def test_zh_browser_gets_the_extensions_chinese_pages(host: tuple[Host, t.Any]) -> None:
    """Whatever languages the host's Babel offers (host_babel_layout: en and es only)."""
    shape, build = host
    # Where nobody could prove an account there is no ask binding (see above): the QR page.
    app = build(WECHAT_QR_ASSOCIATION="ask_binding" if shape.passwords else "off")
    browser = Browser(app, language="zh-CN,zh;q=0.9")
    qr = browser.get("/auth/wechat/qr")
    assert qr.status_code == 200
    assert "请使用手机微信扫描二维码" in qr.get_data(as_text=True)
    if not shape.passwords:
        return
    arrive_at_bind_page(browser, "lisi")
    page = browser.get("/auth/bind")
    assert "绑定已有账号" in page.get_data(as_text=True)
    assert_no_server_error(browser)
