"""User models as a site started on SQLAlchemy 2 writes them, on the in-app sandbox: a
``MappedAsDataclass`` base (every model a dataclass, the extension's too), a dataclass user
whose ``__init__`` takes its fields, an ``__init__`` of the model's own, and a composite
primary key."""

from __future__ import annotations

import os
import typing as t
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask, render_template_string
from flask_login import LoginManager, UserMixin, current_user
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedAsDataclass, mapped_column
from support import find_tags, log_in, logged_in_user_id
from werkzeug.security import generate_password_hash

from flask_wechat_qr import AccountAdapter, WeChatQR
from flask_wechat_qr.errors import ConfigurationError

from .browse import Browser, assert_no_server_error, wechat_login
from .shapes import SANDBOX

PASSWORD = "correct horse battery"
#: Set by .ci/run where it runs this file again on SQLAlchemy 2.0: a skip is then a failure.
REQUIRE_DATACLASS_BASE = "WECHAT_QR_TEST_REQUIRE_DATACLASS_BASE"


#: The site's account page: the WeChat accounts linked, each with its unlink button.
ACCOUNT = """
{% for identity in identities %}
  <p class="wechat-account">{{ identity.nickname }}</p>
  <form method="post" action="{{ url_for('wechat_qr.unlink', connection=identity.connection) }}">
    <input type="hidden" name="csrf_token" value="{{ wechat_qr_csrf_token() }}">
    <input type="hidden" name="next" value="/account"><button>Unlink WeChat</button>
  </form>
{% else %}
  <a href="{{ url_for('wechat_qr.link', connection='wechat', next='/account') }}">Link WeChat</a>
{% endfor %}
"""


def site(tmp_path: Path, db: SQLAlchemy, model: t.Any, load: t.Callable[[str], t.Any], *,
         adapter: type[AccountAdapter[t.Any]] | None = None, **config: t.Any) -> Flask:
    """A site on ``db`` whose Flask-Login ``user_loader`` is ``load``, with the extension
    (the default adapter over ``model``, or ``adapter``), a home page saying who is logged
    in and an account page listing the WeChat accounts linked."""
    app = Flask("sqlalchemy2_site", root_path=str(tmp_path))
    app.config.update({**SANDBOX, "SECRET_KEY": "sqlalchemy2-site-secret-key-of-32-bytes",
                       "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'site.db'}",
                       **config})
    db.init_app(app)
    LoginManager(app).user_loader(load)
    if adapter is None:
        wechat = WeChatQR(app, db=db, user_model=model)
    else:
        wechat = WeChatQR(app, db=db, adapter=adapter(db, model))

    @app.route("/")
    def home() -> str:
        who = f"Hello {current_user.get_id()}" if current_user.is_authenticated else "nobody"
        return f'<p id="who">{who}</p>'

    @app.route("/account")
    def account() -> str:
        return render_template_string(ACCOUNT, identities=wechat.identities_of(current_user))

    with app.app_context():
        db.create_all()
    app.wechat = wechat  # type: ignore[attr-defined]
    return app


def who(page: t.Any) -> str:
    html = page.get_data(as_text=True)
    return html.split('id="who">', 1)[1].split("<", 1)[0] if 'id="who">' in html else html


def csrf_token(html: str) -> str:
    [token] = {tag["value"] for tag in find_tags(html, "input")
               if tag.get("name") == "csrf_token"}
    return str(token)


def rows(app: Flask, db: SQLAlchemy, model: t.Any) -> list[dict[str, t.Any]]:
    """Every row of ``model``'s table, as a dict of its columns."""
    with app.app_context():
        return [dict(row) for row in db.session.execute(
            sa.select(model.__table__)).mappings()]


# --- a MappedAsDataclass base: every model a dataclass ---------------------------------------


def dataclass_site(tmp_path: Path, **config: t.Any) -> tuple[Flask, SQLAlchemy, t.Any]:
    """``class Base(MappedAsDataclass, DeclarativeBase, kw_only=True)`` as Flask-SQLAlchemy's
    ``model_class``: its users' ``__init__`` takes their fields by keyword (the key is
    ``init=False``, ``username`` required), ``created_at`` is made by a
    ``default_factory``, and every subclass of ``db.Model`` is a dataclass."""

    class Base(MappedAsDataclass, DeclarativeBase, kw_only=True):
        pass

    try:
        db = SQLAlchemy(model_class=Base)
    except sa.exc.InvalidRequestError as error:
        # Flask-SQLAlchemy 3.1 on SQLAlchemy 2.1: pallets-eco/flask-sqlalchemy#1420
        reason = f"this Flask-SQLAlchemy cannot take a MappedAsDataclass base: {error}"
        if os.environ.get(REQUIRE_DATACLASS_BASE):  # .ci/run's second pass, on SQLAlchemy 2.0
            pytest.fail(f"{REQUIRE_DATACLASS_BASE} is set but {reason}")
        pytest.skip(reason)

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "users"

        id: Mapped[int] = mapped_column(primary_key=True, init=False)
        username: Mapped[str] = mapped_column(sa.String(80), unique=True)
        nickname: Mapped[str | None] = mapped_column(sa.String(255), default=None)
        password_hash: Mapped[str | None] = mapped_column(sa.String(255), default=None)
        created_at: Mapped[datetime] = mapped_column(
            default_factory=lambda: datetime.now(UTC))
        updated_at: Mapped[datetime | None] = mapped_column(
            default=None, onupdate=lambda: datetime.now(UTC))

    app = site(tmp_path, db, User, lambda user_id: db.session.get(User, int(user_id)),
               **config)
    return app, db, User


def test_a_dataclass_base_site_logs_new_and_returning_people_in_and_links(
        tmp_path: Path, dispose: t.Any) -> None:
    """The extension's own models are subclasses of the site's ``db.Model``: as dataclasses
    their ``__init__`` took no argument (before: the sandbox's QR page and every login a
    500). A new person gets a user made with its required ``username``; a returning one
    finds it; a password user links and unlinks WeChat."""
    app, db, User = dataclass_site(tmp_path)
    dispose(app)
    first = Browser(app)
    page = wechat_login(first, "zhangsan")
    assert page.status_code == 200 and who(page).startswith("Hello"), page.get_data(True)
    [made] = rows(app, db, User)
    assert made["username"].startswith("wechat-") and made["nickname"] == "张三🐼"
    assert made["created_at"] is not None
    returning = Browser(app)
    assert who(wechat_login(returning, "zhangsan")) == f"Hello {made['id']}"

    with app.app_context():
        carol = User(username="carol", password_hash=generate_password_hash(
            PASSWORD, "pbkdf2:sha256:1000"))
        db.session.add(carol)
        db.session.commit()
        carol_id = carol.id
    browser = Browser(app)
    log_in(browser.client, carol_id)
    page = wechat_login(browser, "xiaohua", path="/auth/wechat/link", next_url="/account")
    assert "🌸小花🌸" in page.get_data(as_text=True)
    unlinked = browser.post("/auth/wechat/unlink", data={
        "csrf_token": csrf_token(page.get_data(as_text=True)), "next": "/account"})
    assert unlinked.status_code == 200 and "小花" not in unlinked.get_data(as_text=True)
    assert logged_in_user_id(browser.client) == str(carol_id)
    for visitor in (first, returning, browser):
        assert_no_server_error(visitor)


def test_a_dataclass_base_site_asks_new_people_to_bind_or_create(
        tmp_path: Path, dispose: t.Any) -> None:
    app, db, User = dataclass_site(tmp_path, WECHAT_QR_ASSOCIATION="ask_binding")
    dispose(app)
    with app.app_context():
        alice = User(username="alice", password_hash=generate_password_hash(
            PASSWORD, "pbkdf2:sha256:1000"))
        db.session.add(alice)
        db.session.commit()
        alice_id = str(alice.id)
    binder = Browser(app)
    page = wechat_login(binder, "lisi")
    assert binder.seen[-1][1] == "/auth/bind", binder.seen[-3:]
    page = binder.post("/auth/bind", data={
        "csrf_token": csrf_token(page.get_data(as_text=True)), "action": "bind",
        "username": "alice", "password": PASSWORD})
    assert who(page) == f"Hello {alice_id}", page.get_data(as_text=True)
    creator = Browser(app)
    page = wechat_login(creator, "zhangsan")
    page = creator.post("/auth/bind", data={
        "csrf_token": csrf_token(page.get_data(as_text=True)), "action": "create"})
    assert who(page).startswith("Hello") and who(page) != f"Hello {alice_id}"
    with app.test_request_context():
        identities = [identity for user in db.session.scalars(sa.select(User))
                      for identity in app.wechat.identities_of(user)]  # type: ignore[attr-defined]
        # rows compared as rows, not as dataclasses of no fields (all equal, unhashable)
        assert len(identities) == 2 and identities[0] != identities[1]
        assert len(set(identities)) == 2
    assert_no_server_error(binder)
    assert_no_server_error(creator)


# --- a dataclass user on a plain base, an __init__ of the model's own ------------------------


def test_a_dataclass_user_is_made_with_the_arguments_its_init_requires(
        tmp_path: Path, dispose: t.Any) -> None:
    """A user mapped as a dataclass on a plain base (``registry.mapped_as_dataclass``): its
    ``username`` is a required argument, which the default ``create_user`` gives (before:
    ``User()``, a ``TypeError``); ``created_at`` is not NULL without a column default but
    filled by its ``default_factory`` (before: refused at start-up as a column nothing
    fills)."""

    class Base(DeclarativeBase):
        pass

    db = SQLAlchemy(model_class=Base)

    @db.Model.registry.mapped_as_dataclass(kw_only=True)
    class User(UserMixin):
        __tablename__ = "users"

        id: Mapped[int] = mapped_column(primary_key=True, init=False)
        username: Mapped[str] = mapped_column(sa.String(80), unique=True)
        nickname: Mapped[str | None] = mapped_column(sa.String(255), default=None)
        created_at: Mapped[datetime] = mapped_column(
            default_factory=lambda: datetime.now(UTC))

    app = dispose(site(tmp_path, db, User, lambda user_id: db.session.get(User, int(user_id))))
    browser = Browser(app)
    page = wechat_login(browser, "zhangsan")
    assert page.status_code == 200 and who(page).startswith("Hello"), page.get_data(True)
    [made] = rows(app, db, User)
    assert made["username"].startswith("wechat-") and made["created_at"] is not None
    assert_no_server_error(browser)


def required_email_by_dataclass() -> tuple[SQLAlchemy, t.Any]:
    class Base(DeclarativeBase):
        pass

    db = SQLAlchemy(model_class=Base)

    @db.Model.registry.mapped_as_dataclass
    class User(UserMixin):
        __tablename__ = "users"

        id: Mapped[int] = mapped_column(primary_key=True, init=False)
        email: Mapped[str | None] = mapped_column(sa.String(120))  # nullable, yet required

    return db, User


def required_email_by_init() -> tuple[SQLAlchemy, t.Any]:
    class Base(DeclarativeBase):
        pass

    db = SQLAlchemy(model_class=Base)

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "users"

        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str | None] = mapped_column(sa.String(120))

        def __init__(self, email: str | None, **values: t.Any) -> None:
            super().__init__(email=email, **values)

    return db, User


@pytest.mark.parametrize("shape", [required_email_by_dataclass, required_email_by_init])
def test_an_init_argument_nothing_gives_is_named_at_init_app(
        tmp_path: Path, shape: t.Callable[[], tuple[SQLAlchemy, t.Any]]) -> None:
    """The default ``create_user`` calls ``User()``: an argument it cannot give stops the
    start, naming it and the hook (before: every first WeChat login a 500). A login-only
    site never creates users."""
    db, User = shape()
    with pytest.raises(ConfigurationError) as refused:
        site(tmp_path, db, User, lambda user_id: None)
    assert refused.value.key == "user_model"
    assert "email" in refused.value.problem and "create_user" in refused.value.fix
    site(tmp_path, *shape(), lambda user_id: None, WECHAT_QR_LOGIN_ONLY=True)


# --- a composite primary key ---------------------------------------------------------------


def tenant_site(tmp_path: Path, adapter: type[AccountAdapter[t.Any]] | None = None
                ) -> tuple[Flask, SQLAlchemy, t.Any]:
    """Users keyed by (id, tenant); Flask-Login's id is ``tenant/id``, and the site's loader
    still takes a bare ``id`` of the first tenant's (its ids from before tenants)."""

    class Base(DeclarativeBase):
        pass

    db = SQLAlchemy(model_class=Base)

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "users"

        id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
        tenant: Mapped[str] = mapped_column(sa.String(20), primary_key=True, default="main")
        nickname: Mapped[str | None] = mapped_column(sa.String(255))
        password_hash: Mapped[str | None] = mapped_column(sa.String(255))

        def get_id(self) -> str:
            return f"{self.tenant}/{self.id}"

    def load(user_id: str) -> User | None:
        tenant, _, number = user_id.rpartition("/")
        return db.session.get(User, (int(number), tenant or "main")) \
            if number.isdigit() else None

    # WeChat cannot choose an id and a tenant: such a site only logs its users in
    return site(tmp_path, db, User, load, adapter=adapter, WECHAT_QR_LOGIN_ONLY=True), db, User


def test_a_composite_key_with_the_default_load_user_is_refused_at_init_app(
        tmp_path: Path) -> None:
    """The default ``load_user`` finds a user by one value: before, the site started, the
    first WeChat login stored the key's first column as the user's id, and every returning
    login was a 500."""
    with pytest.raises(ConfigurationError) as refused:
        tenant_site(tmp_path)
    assert refused.value.key == "user_model" and "primary key" in refused.value.problem
    assert "load_user" in refused.value.fix


def test_a_load_user_replaced_on_accountadapter_itself_is_the_sites_own_at_init_app(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A load_user replaced on AccountAdapter itself (a test's monkeypatch) is the site's
    own at init_app as at the login: before, init_app took it for the default and refused
    the composite key with "the default load_user" (a review, session 38)."""

    def load_user(self: t.Any, user_id: str) -> t.Any:
        tenant, _, number = user_id.rpartition("/")
        return self._require_db().session.get(self.user_model, (int(number), tenant)) \
            if number.isdigit() else None

    monkeypatch.setattr(AccountAdapter, "load_user", load_user)
    app, _db, _User = tenant_site(tmp_path)  # no ConfigurationError
    assert "wechat_qr" in app.extensions


def test_a_composite_key_site_with_its_own_load_user_finds_each_tenants_user(
        tmp_path: Path, dispose: t.Any) -> None:
    """Two tenants' users share the id 1. ``acme/1`` links WeChat: the identity names
    ``acme/1``, and its returning login is ``acme/1`` (before: the stored id was the key's
    first column, ``1``, which the site's loader reads as ``main/1``: someone else)."""

    class Adapter(AccountAdapter[t.Any]):
        def load_user(self, user_id: str) -> t.Any:
            loader = t.cast(t.Any, self.user_model)
            tenant, _, number = user_id.rpartition("/")
            return self._require_db().session.get(loader, (int(number), tenant or "main")) \
                if number.isdigit() else None

    app, db, User = tenant_site(tmp_path, Adapter)
    dispose(app)
    with app.app_context():
        db.session.add_all([User(id=1, tenant="main"), User(id=1, tenant="acme")])
        db.session.commit()
    linker = Browser(app)
    log_in(linker.client, "acme/1")  # type: ignore[arg-type]
    wechat_login(linker, "zhangsan", path="/auth/wechat/link", next_url="/account")
    with app.app_context():
        identities = db.session.execute(sa.text("SELECT user_id FROM wechat_qr_identity"))
        assert [row.user_id for row in identities] == ["acme/1"]
    returning = Browser(app)
    assert who(wechat_login(returning, "zhangsan")) == "Hello acme/1"
    assert_no_server_error(linker)
    assert_no_server_error(returning)
