"""Hosts that use Flask-Login in the ways its documentation offers, on the in-app sandbox:
an alternative id (``get_id`` returns a session token that changes with the password, and
the ``user_loader`` looks it up), users the site has deactivated (``is_active`` false)
or whose accounts wait for approval, remember-me cookies, and session protection."""

from __future__ import annotations

import secrets
import typing as t
from pathlib import Path

import flask_login
import pytest
import sqlalchemy as sa
from flask import Flask, current_app, request, request_finished
from flask_login import LoginManager, UserMixin, current_user
from flask_sqlalchemy import SQLAlchemy
from support import CSRF, logged_in_user_id
from werkzeug.security import generate_password_hash

from flask_wechat_qr import AccountAdapter, WeChatQR, signals

from .browse import Browser, assert_no_server_error, wechat_login
from .shapes import SANDBOX

PASSWORD = "correct horse battery"


def build_host(tmp_path: Path, *, alternative_id: bool = False, active_by_default: bool = True,
               session_protection: str | None = "basic", adapter: type | None = None,
               **config: t.Any) -> Flask:
    """A site whose ``User`` may be deactivated (``active``), may log in by password with
    "remember me" (``/password-login``), and whose Flask-Login id is, with
    ``alternative_id``, a session token as Flask-Login's docs describe it."""
    db = SQLAlchemy()
    login_manager = LoginManager()
    login_manager.session_protection = session_protection

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        username = db.Column(db.String(80), unique=True)
        password_hash = db.Column(db.String(255))
        nickname = db.Column(db.Unicode(255))
        active = db.Column(db.Boolean, nullable=False, default=active_by_default)
        session_token = db.Column(db.String(64), unique=True, nullable=False,
                                  default=lambda: secrets.token_hex(16))

        @property
        def is_active(self) -> bool:
            return bool(self.active)

        if alternative_id:
            def get_id(self) -> str:
                return str(self.session_token)

    app = Flask("login_manager_host", root_path=str(tmp_path))
    app.config.update({**SANDBOX, "SECRET_KEY": "s" * 40,
                       "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'site.db'}",
                       **config})
    db.init_app(app)
    login_manager.init_app(app)

    @login_manager.user_loader
    def load_user(user_id: str) -> User | None:
        if alternative_id:
            return db.session.execute(
                sa.select(User).filter_by(session_token=user_id)).scalar_one_or_none()
        return db.session.get(User, int(user_id))

    WeChatQR(app, db=db, adapter=(adapter or AccountAdapter)(db, User))

    @app.route("/")
    def home() -> str:
        who = f"Hello {current_user.nickname}" if current_user.is_authenticated else "anonymous"
        return f'<p id="who">{who}</p>'

    @app.route("/password-login/<int:user_id>")
    def password_login(user_id: str) -> str:
        """The site's own login, with "remember me" ticked."""
        flask_login.login_user(db.session.get(User, user_id), remember=True)
        return "ok"

    with app.app_context():
        db.create_all()
    app.extensions["test_host"] = (db, User)
    return app


def add_user(app: Flask, **fields: t.Any) -> int:
    db, User = app.extensions["test_host"]
    if "password" in fields:
        fields["password_hash"] = generate_password_hash(fields.pop("password"),
                                                         "pbkdf2:sha256:1000")
    with app.app_context():
        user = User(**fields)
        db.session.add(user)
        db.session.commit()
        return int(user.id)


def users(app: Flask) -> list[tuple[int, bool]]:
    db, User = app.extensions["test_host"]
    with app.app_context():
        return [tuple(row) for row in db.session.execute(  # type: ignore[misc]
            sa.select(User.id, User.active).order_by(User.id)).all()]


def identities(app: Flask) -> list[str]:
    db, _user = app.extensions["test_host"]
    table = db.metadata.tables["wechat_qr_identity"]
    with app.app_context():
        return [str(row) for row in db.session.execute(sa.select(table.c.user_id)).scalars()]


def who(page: t.Any) -> str:
    html = page.get_data(as_text=True)
    return html.split('id="who">', 1)[1].split("<", 1)[0] if 'id="who">' in html else html


def heading(page: t.Any) -> str:
    """The error page's title."""
    return page.get_data(as_text=True).split("<h1", 1)[-1].split(">", 1)[-1].split("<", 1)[0]


# --- an alternative id --------------------------------------------------------------------


def test_a_returning_login_with_flask_logins_alternative_id_finds_its_user(
        tmp_path: Path) -> None:
    """``get_id`` returns a session token. Before: identities stored the token, which the
    default ``load_user`` (by primary key) never found, so every returning login deleted
    the identity and made a new, empty account; and a changed password did the same."""
    app = build_host(tmp_path, alternative_id=True)
    first = Browser(app)
    assert who(wechat_login(first, "zhangsan")) == "Hello 张三🐼"
    assert users(app) == [(1, True)] and identities(app) == ["1"]  # the key, not the token

    returning = Browser(app)
    assert who(wechat_login(returning, "zhangsan")) == "Hello 张三🐼"
    db, User = app.extensions["test_host"]
    with app.app_context():  # the person changes their password: a new session token
        db.session.execute(sa.update(User).values(session_token="rotated-token"))
        db.session.commit()
    after_change = Browser(app)
    assert who(wechat_login(after_change, "zhangsan")) == "Hello 张三🐼"
    assert logged_in_user_id(after_change.client) == "rotated-token"  # Flask-Login's id
    assert users(app) == [(1, True)] and identities(app) == ["1"]
    for browser in (first, returning, after_change):
        assert_no_server_error(browser)


class SoftDeleteAdapter(AccountAdapter[t.Any]):
    """docs/hooks.rst's ``load_user`` for soft-deleted users, as it is written there."""

    def load_user(self, user_id: str) -> t.Any:
        user = super().load_user(user_id)
        if user is None or getattr(user, "deleted_at", None):
            return None
        return user


class TokenAdapter(AccountAdapter[t.Any]):
    """A ``load_user`` of the site's own that reads Flask-Login's session token."""

    def load_user(self, user_id: str) -> t.Any:
        db, User = current_app.extensions["test_host"]
        return db.session.execute(
            sa.select(User).filter_by(session_token=user_id)).scalar_one_or_none()


@pytest.mark.parametrize(("adapter", "stored"), [
    (SoftDeleteAdapter, "the key"),
    (TokenAdapter, "the token"),
])
def test_an_overridden_load_user_with_an_alternative_id_finds_its_user(
        tmp_path: Path, adapter: type, stored: str) -> None:
    """The docs' soft-delete ``load_user`` (by primary key, through ``super()``) on a site
    whose ``get_id`` is a session token: identities stored the token, which it never read
    back, so each WeChat login of the same person made a new account and moved the
    identity to it, silently. The stored id is now one the ``load_user`` reads back."""
    app = build_host(tmp_path, alternative_id=True, adapter=adapter)
    for _ in range(3):
        browser = Browser(app)
        assert who(wechat_login(browser, "zhangsan")) == "Hello 张三🐼"
        assert_no_server_error(browser)
    assert users(app) == [(1, True)]
    db, User = app.extensions["test_host"]
    with app.app_context():
        token = db.session.get(User, 1).session_token
    assert identities(app) == (["1"] if stored == "the key" else [token])


def test_linking_and_unlinking_with_an_alternative_id(tmp_path: Path) -> None:
    app = build_host(tmp_path, alternative_id=True)
    carol = add_user(app, username="carol", password=PASSWORD)
    browser = Browser(app)
    browser.get(f"/password-login/{carol}")
    wechat_login(browser, "xiaohua", path="/auth/wechat/link", next_url="/")
    assert identities(app) == [str(carol)]
    returning = Browser(app)
    assert who(wechat_login(returning, "xiaohua")).startswith("Hello")
    db, User = app.extensions["test_host"]
    with app.app_context():
        token = db.session.get(User, carol).session_token
    assert logged_in_user_id(returning.client) == token  # carol, by WeChat
    assert users(app) == [(carol, True)]


# --- deactivated users, and accounts that wait for approval -------------------------------


@pytest.fixture
def told(request: pytest.FixtureRequest) -> t.Iterator[list[tuple[str, str]]]:
    """What the signals said, in order: (signal, detail)."""
    heard: list[tuple[str, str]] = []

    def receiver(name: str, detail: t.Callable[[dict[str, t.Any]], str]) -> t.Any:
        def receive(_sender: object, **kwargs: t.Any) -> None:
            heard.append((name, detail(kwargs)))
        return receive

    receivers = [
        (signals.user_created, receiver("user_created", lambda kw: str(kw["user"].id))),
        (signals.identity_linked, receiver("identity_linked", lambda kw: kw["via"])),
        (signals.login_succeeded, receiver("login_succeeded", lambda kw: str(kw["user"].id))),
        (signals.login_failed, receiver("login_failed", lambda kw: type(kw["error"]).__name__)),
    ]
    for signal, receive in receivers:
        signal.connect(receive)
    yield heard
    for signal, receive in receivers:
        signal.disconnect(receive)


def test_a_site_whose_new_accounts_wait_for_approval_hears_of_them(
        tmp_path: Path, told: list[tuple[str, str]]) -> None:
    """New users start inactive (the site approves them). The first WeChat login makes the
    user and links WeChat (committed), and Flask-Login refuses to log in an inactive user:
    a page that says the account was made and may not log in yet (it said "This account is
    disabled", to someone who had just signed up). Before, ``user_created`` and
    ``identity_linked`` were never sent for it (the login was refused before them), so the
    site never heard of the account it had to approve, and no later login (a returning one)
    would tell it either."""
    app = build_host(tmp_path, active_by_default=False)
    browser = Browser(app)
    page = wechat_login(browser, "zhangsan")
    assert page.status_code == 403 and heading(page) == "Your account was created"
    assert "does not let it log in yet" in page.get_data(as_text=True)
    assert logged_in_user_id(browser.client) is None
    assert users(app) == [(1, False)] and identities(app) == ["1"]
    assert told == [("user_created", "1"), ("identity_linked", "signup"),
                    ("login_failed", "AccountNotActiveYet")]
    # Still waiting: the next login finds the account, which may be disabled as well.
    told.clear()
    page = wechat_login(Browser(app), "zhangsan")
    assert page.status_code == 403 and heading(page) == "This account cannot log in"
    assert "not approved it yet" in page.get_data(as_text=True)
    assert told == [("login_failed", "AccountDisabled")]

    told.clear()  # approved: the next login goes in, and creates nothing
    db, User = app.extensions["test_host"]
    with app.app_context():
        db.session.execute(sa.update(User).values(active=True))
        db.session.commit()
    returning = Browser(app)
    assert who(wechat_login(returning, "zhangsan")) == "Hello 张三🐼"
    assert told == [("login_succeeded", "1")]
    assert_no_server_error(browser)


def test_wechats_double_redirect_of_a_new_account_waiting_for_approval_says_the_same(
        tmp_path: Path, told: list[tuple[str, str]]) -> None:
    """WeChat's second redirect (the cookie from before the first answer) is what the
    browser shows: it said "This account cannot log in" where the first said "Your account
    was created"."""
    import re

    from support import answer, poll

    app = build_host(tmp_path, active_by_default=False)
    browser = Browser(app)
    start = browser.get("/auth/wechat/login", follow=False)
    qr_page = browser.get(start.headers["Location"].split("#")[0])
    uuid = re.search(r'data-uuid="([^"]+)"', qr_page.get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    assert answer(Browser(app).client, uuid, action="allow", person="zhangsan").status_code \
        == 200
    callback = poll(browser.client, uuid)["redirect"]
    twin = Browser(app)
    twin.client.set_cookie("session", browser.client.get_cookie("session").value)
    first, second = browser.get(callback), twin.get(callback)
    for page in (first, second):
        assert page.status_code == 403 and heading(page) == "Your account was created"
    assert users(app) == [(1, False)]
    assert [name for name, _ in told].count("user_created") == 1


def test_a_hosts_own_refusal_of_a_new_account_keeps_its_page(
        tmp_path: Path, told: list[tuple[str, str]]) -> None:
    """A host's ``login_user`` that refuses with its own ``AccountDisabled`` (a subclass,
    its own words) keeps them for a user made just now."""
    from flask_wechat_qr.errors import AccountDisabled

    class ConfirmEmailFirst(AccountDisabled):
        title = "Confirm your e-mail first"

    class Adapter(AccountAdapter):  # type: ignore[type-arg]
        def login_user(self, user: t.Any) -> None:
            raise ConfirmEmailFirst()

    app = build_host(tmp_path, adapter=Adapter)
    page = wechat_login(Browser(app), "zhangsan")
    assert page.status_code == 403 and heading(page) == "Confirm your e-mail first"
    assert told[-1] == ("login_failed", "ConfirmEmailFirst")


def test_binding_a_deactivated_account_links_it_and_says_so(
        tmp_path: Path, told: list[tuple[str, str]]) -> None:
    """Ask binding to an account the site has deactivated: the password proves it, the
    WeChat account is linked to it (``identity_linked``), and nobody is logged in."""
    app = build_host(tmp_path, WECHAT_QR_ASSOCIATION="ask_binding")
    alice = add_user(app, username="alice", password=PASSWORD, active=False)
    browser = Browser(app)
    page = wechat_login(browser, "lisi")
    [token] = set(CSRF.findall(page.get_data(as_text=True)))
    page = browser.post("/auth/bind", data={"csrf_token": token, "action": "bind",
                                           "username": "alice", "password": PASSWORD})
    assert page.status_code == 403 and heading(page) == "This account cannot log in"
    assert logged_in_user_id(browser.client) is None
    assert identities(app) == [str(alice)]
    assert told == [("identity_linked", "binding"), ("login_failed", "AccountDisabled")]
    again = Browser(app)  # linked: the next login is a returning one, refused the same way
    assert wechat_login(again, "lisi").status_code == 403
    assert logged_in_user_id(again.client) is None
    assert_no_server_error(browser)


def test_a_deactivated_user_of_a_returning_login_is_refused(tmp_path: Path) -> None:
    app = build_host(tmp_path)
    assert who(wechat_login(Browser(app), "zhangsan")) == "Hello 张三🐼"
    db, User = app.extensions["test_host"]
    with app.app_context():
        db.session.execute(sa.update(User).values(active=False))
        db.session.commit()
    browser = Browser(app)
    page = wechat_login(browser, "zhangsan")
    assert page.status_code == 403 and heading(page) == "This account cannot log in"
    assert logged_in_user_id(browser.client) is None and users(app) == [(1, False)]
    assert_no_server_error(browser)


# --- remember-me cookies and session protection -------------------------------------------


def test_a_wechat_login_forgets_the_remember_me_of_whoever_was_logged_in(
        tmp_path: Path) -> None:
    """Alice logged in with "remember me" on a shared computer; Li Si logs in with WeChat
    there and closes the browser. Before: Alice's remember-me cookie outlived the login
    (the session was renewed, not the cookie), and the next visit was Alice's again."""
    app = build_host(tmp_path)
    alice = add_user(app, username="alice", nickname="Alice", password=PASSWORD)
    browser = Browser(app)
    browser.get(f"/password-login/{alice}")
    assert who(browser.get("/")) == "Hello Alice"
    assert who(wechat_login(browser, "lisi")) == "Hello 李四"
    browser.client.delete_cookie("session")  # the browser closed
    assert who(browser.get("/")) == "anonymous"


def test_a_wechat_login_keeps_its_own_remember_me(tmp_path: Path) -> None:
    """An adapter that remembers WeChat users (docs/hooks.rst) still does."""
    class Remembering(AccountAdapter):  # type: ignore[type-arg]
        def login_user(self, user: t.Any) -> None:
            flask_login.login_user(user, remember=True)

    app = build_host(tmp_path, adapter=Remembering)
    alice = add_user(app, username="alice", nickname="Alice", password=PASSWORD)
    browser = Browser(app)
    browser.get(f"/password-login/{alice}")
    assert who(wechat_login(browser, "lisi")) == "Hello 李四"
    browser.client.delete_cookie("session")
    assert who(browser.get("/")) == "Hello 李四"


def callback_cookies(app: Flask) -> list[str]:
    """Every ``Set-Cookie`` the site's WeChat callbacks answer with, from now on."""
    cookies: list[str] = []

    def record(sender: Flask, response: t.Any, **extra: t.Any) -> None:
        if request.endpoint == "wechat_qr.callback":
            cookies.extend(response.headers.getlist("Set-Cookie"))

    request_finished.connect(record, app, weak=False)
    return cookies


def test_a_remember_me_the_callback_cannot_see_is_still_forgotten(tmp_path: Path) -> None:
    """A remember-me cookie whose path hides it from the callback (``REMEMBER_COOKIE_PATH``)
    may be there all the same: it is deleted, at its own path."""
    app = build_host(tmp_path, REMEMBER_COOKIE_PATH="/members")

    @app.route("/members/")
    def members() -> str:
        who = f"Hello {current_user.nickname}" if current_user.is_authenticated else "anonymous"
        return f'<p id="who">{who}</p>'

    alice = add_user(app, username="alice", nickname="Alice", password=PASSWORD)
    cookies = callback_cookies(app)
    browser = Browser(app)
    browser.get(f"/password-login/{alice}")
    browser.client.delete_cookie("session")
    assert who(browser.get("/members/")) == "Hello Alice"  # remembered there
    assert who(wechat_login(browser, "lisi")) == "Hello 李四"
    assert [cookie for cookie in cookies if cookie.startswith("remember_token=;")
            and "Path=/members" in cookie]
    browser.client.delete_cookie("session")  # the browser closed
    assert who(browser.get("/members/")) == "anonymous"


def test_a_login_with_no_remember_me_to_forget_deletes_none(tmp_path: Path) -> None:
    """No remember-me cookie sent, none that could hide from the callback: the answer
    carries no deletion of one (a Set-Cookie on every login, and a fifth of the
    callback's own work after WeChat's answer)."""
    app = build_host(tmp_path)
    cookies = callback_cookies(app)
    assert who(wechat_login(Browser(app), "lisi")) == "Hello 李四"
    assert cookies and not [cookie for cookie in cookies if cookie.startswith("remember_token=")]


def test_a_strict_remember_me_withheld_from_the_callback_is_still_forgotten(
        tmp_path: Path) -> None:
    """``REMEMBER_COOKIE_SAMESITE="Strict"``: a browser withholds that cookie from WeChat's
    redirect (a navigation from another site), so the callback cannot see it; it is
    deleted all the same."""
    app = build_host(tmp_path, REMEMBER_COOKIE_SAMESITE="Strict")
    alice = add_user(app, username="alice", nickname="Alice", password=PASSWORD)
    cookies = callback_cookies(app)
    browser = Browser(app)
    browser.get(f"/password-login/{alice}")
    browser.client.delete_cookie("remember_token")  # as the browser withholds it
    assert who(wechat_login(browser, "lisi")) == "Hello 李四"
    assert [cookie for cookie in cookies if cookie.startswith("remember_token=;")]


@pytest.mark.parametrize("protection", ["strong", "basic"])
@pytest.mark.parametrize("config", [
    {}, {"SESSION_COOKIE_NAME": "site_session", "SESSION_REFRESH_EACH_REQUEST": False},
    {"REMEMBER_COOKIE_NAME": "keep", "REMEMBER_COOKIE_DURATION": 60}])
def test_session_protection_and_cookie_settings(tmp_path: Path, protection: str,
                                                config: dict[str, t.Any]) -> None:
    app = build_host(tmp_path, session_protection=protection, **config)
    browser = Browser(app)
    assert who(wechat_login(browser, "zhangsan")) == "Hello 张三🐼"
    assert who(browser.get("/")) == "Hello 张三🐼"
    assert_no_server_error(browser)


# --- WeChat as the site's only login ----------------------------------------------------------


def test_wechat_as_flask_logins_login_view_brings_the_visitor_back(tmp_path: Path) -> None:
    """``login_manager.login_view = "wechat_qr.login"``, as a site whose only login is WeChat
    writes it: Flask-Login builds that URL with nothing but ``next``. Before: a
    ``BuildError`` (the route needs ``connection``), so every ``@login_required`` page
    answered visitors with a 500."""
    app = build_host(tmp_path)
    app.login_manager.login_view = "wechat_qr.login"  # type: ignore[attr-defined]

    @app.route("/orders")
    @flask_login.login_required
    def orders() -> str:
        return f'<p id="who">Orders of {current_user.nickname}</p>'

    browser = Browser(app)
    asked = browser.get("/orders", follow=False)
    assert asked.status_code == 302
    assert asked.headers["Location"] == "/auth/wechat/login?next=%2Forders"
    assert who(wechat_login(browser, "zhangsan", path=asked.headers["Location"])) \
        == "Orders of 张三🐼"
    assert_no_server_error(browser)


def test_url_for_a_login_page_without_a_connection_is_the_default_connections(
        tmp_path: Path) -> None:
    """A site's own button may name the page alone: the connection named ``wechat`` where
    there is one (as the login button's default always was), else the first of
    ``WECHAT_QR_CONNECTIONS``. Building the callback without one stays an error."""
    from flask import url_for
    from werkzeug.routing import BuildError

    app = build_host(tmp_path, WECHAT_QR_CONNECTIONS=[
        {"connection": "work"}, {"connection": "shop"}])
    with app.test_request_context():
        assert url_for("wechat_qr.login") == "/auth/work/login"
        assert url_for("wechat_qr.qr", next="/a") == "/auth/work/qr?next=/a"
        assert url_for("wechat_qr.link") == "/auth/work/link"
        assert url_for("wechat_qr.login", connection="shop") == "/auth/shop/login"
        with pytest.raises(BuildError):
            url_for("wechat_qr.callback")
    (tmp_path / "2").mkdir()
    app = build_host(tmp_path / "2", WECHAT_QR_CONNECTIONS=[
        {"connection": "work"}, {"connection": "wechat"}])
    with app.test_request_context():
        assert url_for("wechat_qr.login") == "/auth/wechat/login"
