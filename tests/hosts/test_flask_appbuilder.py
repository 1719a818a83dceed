"""A site on Flask-AppBuilder (apps/host_flask_appbuilder), used as its visitors use it: a
first WeChat login makes an ``ab_user`` Flask-AppBuilder logs in its own way (``g.user``,
the role of ``AUTH_USER_REGISTRATION_ROLE`` and its permissions, the login counted), a
returning one finds it again; a Flask-AppBuilder login links and unlinks WeChat; ask binding
proves an account with Flask-AppBuilder's own password check, keeps the language picked in
its menu, and counts each login once; a deleted ``ab_user`` takes their WeChat with them;
its login page's ``next`` (a full URL of the site) is where the login ends; and
``flask wechat-qr check`` finds nothing wrong. The ask-binding site runs the adapter of
docs/hooks.rst ("A site on Flask-AppBuilder") as the docs print it.

Each site is built once per module (Flask-AppBuilder's set-up takes most of a second):
every test logs in people of its own."""

from __future__ import annotations

import re
import typing as t
from pathlib import Path

import host_flask_appbuilder as host
import pytest
import sqlalchemy as sa
from flask import Flask, current_app, g
from flask_appbuilder.security.sqla.models import User
from support import CSRF, app_factory, find_tags, logged_in_user_id
from werkzeug.local import LocalProxy

from flask_wechat_qr import AccountAdapter

from .browse import Browser, assert_no_server_error, wechat_login
from .shapes import SANDBOX, docs_block, flask

#: Flask-AppBuilder's own admin pages (the crawl of an admin's pages) use WTForms in ways
#: it deprecates (``DateTimeField``, choices as tuples): Flask-AppBuilder's to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore:'DateTimeField' renders:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Yielding raw tuples from iter_choices:DeprecationWarning"),
]

PASSWORD = "correct horse battery"
WRONG_ZH = "用户名或密码错误。"  # "Wrong username or password."
ACCOUNT = "/wechat-account/"


def build(tmp_path: Path, **config: t.Any) -> Flask:
    app = host.create_app({
        **SANDBOX, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'notes.db'}",
        # a cheap hash for the site's own users: the tests check logins, not the hash
        "FAB_PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000", **config})

    @app.route("/whoami")
    def whoami() -> dict[str, t.Any]:
        """Flask-AppBuilder's ``g.user`` (set by its ``before_request``), for the tests."""
        user = g.user
        return {"id": user.id if user.is_authenticated else None,
                "roles": [role.name for role in getattr(user, "roles", [])]}

    return app


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Flask]:
    """The site with the host's adapter, every WeChat login making or finding an account;
    ``admin`` has a password (made as ``flask fab create-admin`` makes it)."""
    with app_factory(build) as make:
        app = make(tmp_path_factory.mktemp("fab"))
        sign_up(app, "admin", role="Admin")
        yield app


def docs_adapter() -> type[AccountAdapter]:  # type: ignore[type-arg]
    """docs/hooks.rst's adapter as printed, its ``appbuilder`` the app's own."""
    namespace: dict[str, t.Any] = {"appbuilder": LocalProxy(lambda: current_app.appbuilder)}
    exec(docs_block("appbuilder.sm.auth_user_db"), namespace)
    return t.cast("type[AccountAdapter]", namespace["Adapter"])  # type: ignore[type-arg]


@pytest.fixture(scope="module")
def binding_site(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Flask]:
    """Ask binding, on docs/hooks.rst's adapter, in two languages; ``alice`` has a
    password."""
    with app_factory(build) as make:
        app = make(tmp_path_factory.mktemp("fab-binding"),
                   WECHAT_QR_ASSOCIATION="ask_binding", HOST_ADAPTER=docs_adapter(),
                   LANGUAGES={"en": {"flag": "gb", "name": "English"},
                              "zh": {"flag": "cn", "name": "Chinese"}})
        sign_up(app, "alice")
        yield app


def sign_up(app: Flask, username: str, role: str = host.MEMBER) -> int:
    """A user made with Flask-AppBuilder's ``add_user``, with :data:`PASSWORD`; its id."""
    with app.app_context():
        sm = app.appbuilder.sm  # type: ignore[attr-defined]
        user = sm.add_user(username, username.title(), "Doe", f"{username}@example.com",
                           sm.find_role(role), password=PASSWORD)
        assert user, f"add_user refused {username}"
        return int(user.id)


def user_named(app: Flask, username: str) -> dict[str, t.Any]:
    with app.app_context():
        user_id = host.db.session.scalar(sa.select(User.id).filter_by(username=username))
    row = user_row(app, user_id)
    assert row is not None, username
    return row


def user_row(app: Flask, user_id: int) -> dict[str, t.Any] | None:
    """The ``ab_user`` row, with its roles' names; ``None`` if there is none."""
    with app.app_context():
        user = host.db.session.get(User, user_id)
        if user is None:
            return None
        row = {column.name: getattr(user, column.name) for column in User.__table__.columns}
        return {**row, "roles": [role.name for role in user.roles]}


def user_count(app: Flask) -> int:
    with app.app_context():
        return int(host.db.session.scalar(sa.select(sa.func.count()).select_from(User)))


def identities(app: Flask) -> dict[str, int]:
    """Every identity: its openid and the ``ab_user`` id it belongs to."""
    table = host.db.metadata.tables["wechat_qr_identity"]
    with app.app_context():
        return {openid: int(user_id) for openid, user_id in host.db.session.execute(
            sa.select(table.c.openid, table.c.user_id))}


def whoami(browser: Browser) -> dict[str, t.Any]:
    return t.cast(dict[str, t.Any], browser.client.get("/whoami").json)


def fab_login(browser: Browser, page: t.Any, username: str, password: str) -> t.Any:
    """Flask-AppBuilder's login form on ``page``, the last the browser loaded, posted to
    where it was loaded from (its ``next`` in the query), as its ``action=""`` says."""
    html = page.get_data(as_text=True)
    [form] = [tag for tag in find_tags(html, "form") if tag.get("name") == "login"]
    assert form.get("action") == "", form
    [token] = [tag["value"] for tag in find_tags(html, "input") if tag.get("name") == "csrf_token"]
    return browser.post(browser.seen[-1][1], data={
        "csrf_token": token, "username": username, "password": password})


def test_a_new_wechat_user_is_a_flask_appbuilder_user_and_finds_it_again(site: Flask) -> None:
    """The first login makes an ``ab_user`` with what Flask-AppBuilder requires and the
    registration role, logs it in as Flask-AppBuilder's login does (its ``g.user``, the
    login counted); the page behind ``has_access`` lets the role in. The second login
    finds the same ``ab_user``."""
    before = user_count(site)
    first = Browser(site)
    page = wechat_login(first, "zhangsan", next_url=ACCOUNT)
    assert first.seen[-1][1] == ACCOUNT and page.status_code == 200, first.seen[-3:]
    assert user_count(site) == before + 1
    me = whoami(first)
    user = user_row(site, me["id"])
    assert user is not None and me["roles"] == user["roles"] == [host.MEMBER]
    assert logged_in_user_id(first.client) == str(user["id"])
    assert re.findall(r'id="who">([^<]*)', page.get_data(as_text=True)) == [user["username"]]
    assert "张三🐼" in page.get_data(as_text=True)  # the identity's nickname, listed
    assert user["first_name"] == "张三🐼" and user["email"].endswith("@wechat.invalid")
    assert user["active"] is True and user["password"] is None
    assert user["login_count"] == 1 and user["last_login"] is not None
    assert list(identities(site).values()).count(user["id"]) == 1

    returning = Browser(site)
    wechat_login(returning, "zhangsan", next_url=ACCOUNT)
    assert whoami(returning)["id"] == user["id"] and user_count(site) == before + 1
    again = user_row(site, user["id"])
    assert again is not None and again["login_count"] == 2
    assert again["last_login"] >= user["last_login"]

    returning.get("/logout/")
    assert whoami(returning)["id"] is None and logged_in_user_id(returning.client) is None
    for browser in (first, returning):
        assert_no_server_error(browser)


def test_a_flask_appbuilder_login_links_and_unlinks_wechat(site: Flask) -> None:
    """"Link WeChat" clicked logged out goes through Flask-AppBuilder's login page (the
    ``login_view`` the docs set) and back to the link; the link keeps that login and its
    count; unlinking is a POST the page's token lets through."""
    admin = user_named(site, "admin")
    browser = Browser(site)
    page = browser.get(f"/auth/wechat/link?next={ACCOUNT}")
    assert browser.seen[-1][1].startswith("/login/?next="), browser.seen[-3:]
    assert 'id="wechat-login"' in page.get_data(as_text=True)
    sandbox = fab_login(browser, page, "admin", PASSWORD)  # back at the link: off to WeChat
    assert sandbox.status_code == 200 and "/wechat-sandbox/" in browser.seen[-1][1]
    assert whoami(browser)["id"] == admin["id"]

    page = wechat_login(browser, "xiaohua", path="/auth/wechat/link", next_url=ACCOUNT)
    assert browser.seen[-1][1] == ACCOUNT and "🌸小花🌸" in page.get_data(as_text=True)
    assert whoami(browser)["id"] == admin["id"]
    linked = [openid for openid, user_id in identities(site).items() if user_id == admin["id"]]
    assert len(linked) == 1
    after = user_row(site, admin["id"])
    assert after is not None and after["login_count"] == (admin["login_count"] or 0) + 1

    [token] = set(CSRF.findall(page.get_data(as_text=True)))
    page = browser.post("/auth/wechat/unlink", data={"csrf_token": token, "next": ACCOUNT})
    assert page.status_code == 200 and browser.seen[-1][1] == ACCOUNT
    assert admin["id"] not in identities(site).values()
    assert "🌸小花🌸" not in page.get_data(as_text=True)
    assert_no_server_error(browser)


def test_the_next_flask_appbuilder_gives_its_login_page_is_where_the_login_ends(
        site: Flask) -> None:
    """``has_access`` sends a visitor to the login page with ``next`` as a full URL of the
    site; its WeChat button takes it along, and the login ends on that page."""
    browser = Browser(site)
    page = browser.get(ACCOUNT)
    assert browser.seen[-1][1] == "/login/?next=http://localhost/wechat-account/", \
        browser.seen[-3:]
    [button] = [tag["href"] for tag in find_tags(page.get_data(as_text=True), "a")
                if tag.get("class") == "wechat-qr-button"]
    assert button == "/auth/wechat/login?next=http://localhost/wechat-account/"
    page = wechat_login(browser, "new", path=str(button), nickname="王五")
    assert browser.seen[-1][1] == ACCOUNT and page.status_code == 200, browser.seen[-3:]
    assert "王五" in page.get_data(as_text=True)
    assert_no_server_error(browser)


def test_a_deleted_ab_user_takes_their_wechat_with_them(site: Flask) -> None:
    """Deleted behind the ORM (raw SQL), the user's identity goes with the row: the next
    user given the same id (SQLite reuses it) does not inherit the WeChat login. Deleted
    with Flask-AppBuilder's ``delete_user``, the same."""
    browser = Browser(site)
    wechat_login(browser, "lisi")
    gone = whoami(browser)["id"]
    assert gone in identities(site).values()
    roles = User.roles.property.secondary  # ab_user_role: its rows would outlive the user
    with site.app_context(), host.db.engine.begin() as connection:
        connection.execute(sa.delete(roles).where(roles.c.user_id == gone))
        connection.execute(sa.delete(User.__table__).where(User.__table__.c.id == gone))
    assert gone not in identities(site).values()
    bob = sign_up(site, "bob")
    assert bob == gone  # the id a new user is given again

    browser = Browser(site)
    wechat_login(browser, "lisi")
    again = whoami(browser)["id"]
    assert again not in (None, bob) and again in identities(site).values()
    with site.app_context():
        sm = site.appbuilder.sm  # type: ignore[attr-defined]
        assert sm.delete_user(sm.get_user_by_id(again))
    assert again not in identities(site).values()
    assert_no_server_error(browser)


def test_wechat_qr_check_on_a_flask_appbuilder_site(site: Flask) -> None:
    result = flask(site, "wechat-qr", "check", "--base-url", "https://notes.example.com")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "Summary: no problems." in result.output, result.output
    assert "login_view" not in result.output, result.output


def test_ask_binding_proves_an_account_with_flask_appbuilders_password_check(
        binding_site: Flask) -> None:
    """On docs/hooks.rst's adapter: a wrong password is refused (and counted as
    Flask-AppBuilder counts one), the right one binds and logs in, counted once; the
    WeChat account finds it again; the login keeps the language picked in the menu."""
    app = binding_site
    alice = user_named(app, "alice")
    linked = len(identities(app))
    browser = Browser(app)
    browser.get("/lang/zh")  # Flask-AppBuilder's language menu: Chinese
    page = wechat_login(browser, "lisi")
    assert browser.seen[-1][1] == "/auth/bind", browser.seen[-3:]
    assert "<title>微信：绑定账号</title>" in page.get_data(as_text=True)
    [token] = set(CSRF.findall(page.get_data(as_text=True)))
    wrong = browser.post("/auth/bind", data={"csrf_token": token, "action": "bind",
                                             "username": "alice", "password": "not it"})
    assert wrong.status_code == 400 and WRONG_ZH in wrong.get_data(as_text=True)
    refused = user_row(app, alice["id"])
    assert refused is not None and refused["fail_login_count"] == 1
    assert len(identities(app)) == linked and whoami(browser)["id"] is None

    page = browser.post("/auth/bind", data={"csrf_token": token, "action": "bind",
                                            "username": " Alice", "password": PASSWORD})
    assert page.status_code == 200, page.get_data(as_text=True)
    assert whoami(browser)["id"] == alice["id"]
    with browser.client.session_transaction() as session:
        assert session.get("locale") == "zh"  # the login's fresh session kept it
    assert list(identities(app).values()).count(alice["id"]) == 1
    assert len(identities(app)) == linked + 1
    bound = user_row(app, alice["id"])
    assert bound is not None and bound["login_count"] == 1 and bound["fail_login_count"] == 0
    assert bound["last_login"] is not None

    returning = Browser(app)
    wechat_login(returning, "lisi")
    assert whoami(returning)["id"] == alice["id"]
    again = user_row(app, alice["id"])
    assert again is not None and again["login_count"] == 2
    assert_no_server_error(browser)


@pytest.mark.parametrize(("menu", "lang", "heading"), [("zh", "zh-CN", "使用微信登录"),
                                                     ("en", "en", "Log in with WeChat")])
def test_the_pages_say_their_language_inside_flask_appbuilders_layout(
        binding_site: Flask, menu: str, lang: str, heading: str) -> None:
    """Flask-AppBuilder's layout writes ``<html>`` with no ``lang`` and no block to give it
    one (docs/hooks.rst): the extension's part of the page says its language itself, the
    one picked in Flask-AppBuilder's menu."""
    browser = Browser(binding_site)
    browser.get(f"/lang/{menu}")
    page = browser.get("/auth/wechat/qr").get_data(as_text=True)
    assert "lang" not in find_tags(page, "html")[0]  # Flask-AppBuilder's <html>
    boxes = [div for div in find_tags(page, "div") if "wechat-qr-box" in (div.get("class") or "")]
    assert [box.get("lang") for box in boxes] == [lang]
    assert f"<h1>{heading}</h1>" in page


def test_ask_binding_makes_a_flask_appbuilder_account_for_someone_new(
        binding_site: Flask) -> None:
    """The bind page's "create": docs/hooks.rst's ``create_user`` and ``login_user``."""
    app = binding_site
    before = user_count(app)
    browser = Browser(app)
    page = wechat_login(browser, "zhangsan", next_url=ACCOUNT)
    [token] = set(CSRF.findall(page.get_data(as_text=True)))
    page = browser.post("/auth/bind", data={"csrf_token": token, "action": "create"})
    assert browser.seen[-1][1] == ACCOUNT and page.status_code == 200, browser.seen[-3:]
    me = whoami(browser)
    user = user_row(app, me["id"])
    assert user is not None and user_count(app) == before + 1
    assert me["roles"] == user["roles"] == [host.MEMBER]
    assert user["first_name"] == "张三🐼" and user["email"].endswith("@wechat.invalid")
    assert user["login_count"] == 1 and user["password"] is None
    assert_no_server_error(browser)
