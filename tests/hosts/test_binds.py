"""A site whose users are on a Flask-SQLAlchemy bind of their own (``__bind_key__ = "users"``,
``SQLALCHEMY_BINDS``) and its other tables on the default bind: SQLite files for both, and
PostgreSQL for either. The extension's tables go with the users, so identities have their
foreign key, a first login writes the user and the identity in one database, and deleting a
member (through the ORM or behind it) takes their WeChat logins with it."""

from __future__ import annotations

import os
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask
from support import (
    POSTGRES_URL_VARIABLE,
    REQUIRE_POSTGRES_VARIABLE,
    Database,
    dispose_engines,
    find_tags,
    logged_in_user_id,
)
from werkzeug.security import generate_password_hash

from .browse import Browser, assert_no_server_error, wechat_login
from .shapes import SANDBOX, flask

#: (default bind, users bind)
VARIANTS = [("sqlite", "sqlite"), ("sqlite", "postgresql"), ("postgresql", "sqlite")]
EXTENSION_TABLES = {"wechat_qr_identity", "wechat_qr_login_state", "wechat_qr_pending_binding",
                    "wechat_qr_bind_attempt", "wechat_qr_avatar"}
PASSWORD = "correct horse battery"


class Site(t.NamedTuple):
    build: t.Callable[..., Flask]


@pytest.fixture(params=VARIANTS, ids=[f"default-{d}-users-{u}" for d, u in VARIANTS])
def site(request: pytest.FixtureRequest, tmp_path: t.Any) -> t.Iterator[Site]:
    """``build(**config)``: host_binds on a fresh database for each bind."""
    backends = request.param
    server_url = os.environ.get(POSTGRES_URL_VARIABLE)
    if "postgresql" in backends and not server_url:
        reason = f"set {POSTGRES_URL_VARIABLE} for the PostgreSQL variants"
        if os.environ.get(REQUIRE_POSTGRES_VARIABLE):
            pytest.fail(f"{REQUIRE_POSTGRES_VARIABLE} is set: {reason}")
        pytest.skip(reason)
    databases = {backend: Database(backend, tmp_path, server_url) for backend in backends}
    apps: list[Flask] = []

    def build(**config: t.Any) -> Flask:
        import host_binds

        default, users = (databases[backend].url(f"{name}{len(apps)}") for backend, name
                          in zip(backends, ("site", "accounts"), strict=True))
        app = host_binds.create_app({**SANDBOX, "SQLALCHEMY_DATABASE_URI": default,
                                     "SQLALCHEMY_BINDS": {"users": users}, **config})
        apps.append(app)
        return app

    try:
        yield Site(build)
    finally:
        for app in apps:
            dispose_engines(app)
        for database in databases.values():
            database.drop()


def engine(app: Flask, bind: str | None) -> sa.Engine:
    with app.app_context():
        return t.cast(sa.Engine, app.extensions["sqlalchemy"].engines[bind])


def tables(app: Flask, bind: str | None) -> set[str]:
    return set(sa.inspect(engine(app, bind)).get_table_names())


def identity_owners(app: Flask) -> list[str]:
    """The ``user_id`` of every identity, read where the members are."""
    with engine(app, "users").connect() as connection:
        return [row[0] for row in connection.execute(
            sa.text("SELECT user_id FROM wechat_qr_identity ORDER BY id"))]


def set_password(app: Flask, member_id: str, username: str) -> None:
    """The member chooses a username and password on the site (another way in)."""
    import host_binds

    with app.app_context():
        member = host_binds.db.session.get(host_binds.Member, int(member_id))
        member.username = username
        member.password_hash = generate_password_hash(PASSWORD, "pbkdf2:sha256:1000")
        host_binds.db.session.commit()


def csrf_token(html: str) -> str:
    tokens = {tag["value"] for tag in find_tags(html, "input") if tag.get("name") == "csrf_token"}
    assert len(tokens) == 1, html
    return str(tokens.pop())


def test_the_extensions_tables_are_with_the_users_and_keep_to_them(site: Site) -> None:
    """First and returning login, unlink and link again, and a member deleting their
    account on the site's page: their WeChat goes with it, and the next login of that WeChat
    is someone new. Before, the extension's tables were on the default bind with no foreign
    key, and every deletion of a member was a 500 (the ORM's after-delete removed
    identities on the members' connection, whose database has no such table)."""
    app = site.build()
    assert EXTENSION_TABLES <= tables(app, "users")
    assert not EXTENSION_TABLES & tables(app, None)
    [key] = sa.inspect(engine(app, "users")).get_foreign_keys("wechat_qr_identity")
    assert (key["referred_table"], key["referred_columns"]) == ("members", ["id"])

    browser = Browser(app)
    page = wechat_login(browser, "zhangsan")
    assert page.status_code == 200 and 'id="who">Hello' in page.get_data(as_text=True)
    member = logged_in_user_id(browser.client)
    assert member is not None and identity_owners(app) == [member]
    returning = Browser(app)
    wechat_login(returning, "zhangsan")
    assert logged_in_user_id(returning.client) == member

    set_password(app, member, "zhang")
    page = browser.get("/account")
    unlinked = browser.post("/auth/wechat/unlink", data={
        "csrf_token": csrf_token(page.get_data(as_text=True)), "next": "/account"})
    assert unlinked.status_code == 200 and identity_owners(app) == []
    page = wechat_login(browser, "zhangsan", path="/auth/wechat/link", next_url="/account")
    assert browser.seen[-1][1] == "/account" and identity_owners(app) == [member]

    deleted = browser.post("/account/delete", data={
        "csrf_token": csrf_token(page.get_data(as_text=True))})
    assert deleted.status_code == 200 and 'id="who">anonymous' in deleted.get_data(as_text=True)
    assert identity_owners(app) == []
    newcomer = Browser(app)
    wechat_login(newcomer, "zhangsan")
    assert identity_owners(app) == [logged_in_user_id(newcomer.client)]
    for each in (browser, returning, newcomer):
        assert_no_server_error(each)


def test_a_member_deleted_behind_the_orm_takes_their_identities(site: Site) -> None:
    """The foreign key (on SQLite its trigger) in the members' database: a member deleted
    with raw SQL, as another service or a database tool does, leaves no identity for the
    next member given the same id. Before, there was no foreign key to the other bind."""
    app = site.build()
    browser = Browser(app)
    wechat_login(browser, "lisi")
    with engine(app, "users").begin() as connection:
        connection.execute(sa.text("DELETE FROM members"))
    assert identity_owners(app) == []


def test_ask_binding_and_its_attempts_on_the_users_bind(site: Site) -> None:
    """A wrong password counted, the right one binding: the attempt counts and the pending
    binding are read from the members' database."""
    import host_binds

    app = site.build(WECHAT_QR_ASSOCIATION="ask_binding")
    with app.app_context():
        alice = host_binds.Member(username="alice")
        host_binds.db.session.add(alice)
        host_binds.db.session.commit()
        alice_id = str(alice.id)
    set_password(app, alice_id, "alice")
    browser = Browser(app)
    page = wechat_login(browser, "lisi")
    assert browser.seen[-1][1] == "/auth/bind", browser.seen[-3:]
    wrong = browser.post("/auth/bind", data={
        "csrf_token": csrf_token(page.get_data(as_text=True)), "action": "bind",
        "username": "alice", "password": "guess"})
    assert wrong.status_code == 400
    page = browser.post("/auth/bind", data={
        "csrf_token": csrf_token(wrong.get_data(as_text=True)), "action": "bind",
        "username": "alice", "password": PASSWORD})
    assert page.status_code == 200 and logged_in_user_id(browser.client) == alice_id
    assert identity_owners(app) == [alice_id]
    assert_no_server_error(browser)


def test_migrations_make_the_tables_on_the_users_bind(site: Site) -> None:
    """A site that makes its tables with migrations: ``flask wechat-qr db upgrade`` makes
    the extension's where the members are, with the foreign key, and ``check`` finds
    nothing wrong."""
    import host_binds

    app = site.build(MIGRATED=True)
    with app.app_context():  # the site's own migrations
        host_binds.Member.__table__.create(engine(app, "users"))
        host_binds.Article.__table__.create(engine(app, None))
    result = flask(app, "wechat-qr", "db", "upgrade")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "added column, index, foreign key" in result.output
    assert EXTENSION_TABLES | {"wechat_qr_alembic_version"} <= tables(app, "users")
    assert not EXTENSION_TABLES & tables(app, None)
    check = flask(app, "wechat-qr", "check")
    assert check.exit_code == 0 and "no problems" in check.output, check.output
    assert "foreign key to your users: members.id, ON DELETE CASCADE" in check.output
    browser = Browser(app)
    wechat_login(browser, "wangwu")
    member = logged_in_user_id(browser.client)
    assert member is not None and identity_owners(app) == [member]


@pytest.mark.parametrize("site", VARIANTS[:1], indirect=True, ids=["sqlite"])
def test_identities_left_on_the_default_bind_are_not_left_behind(site: Site) -> None:
    """Earlier development versions made the extension's tables on the default bind
    whatever the users'.
    Where the default bind's database has identities and the members' none, ``db upgrade``
    stops, changing nothing, and ``check`` says so: made anew beside the members, the
    tables would leave every WeChat user to a new account."""
    app = site.build(MIGRATED=True)
    with app.app_context():
        import host_binds

        host_binds.Member.__table__.create(engine(app, "users"))
    with engine(app, None).begin() as connection:  # as an earlier version left them
        connection.execute(sa.text(
            "CREATE TABLE wechat_qr_identity (id INTEGER PRIMARY KEY, user_id TEXT)"))
        connection.execute(sa.text("INSERT INTO wechat_qr_identity VALUES (1, '1')"))
    result = flask(app, "wechat-qr", "db", "upgrade")
    assert result.exit_code == 1, result.output
    assert "Nothing was changed" in result.output and "'users'" in result.output
    assert "wechat_qr_identity" not in tables(app, "users")
    check = flask(app, "wechat-qr", "check")
    assert check.exit_code == 1, check.output
    assert "PROBLEM" in check.output and "move the wechat_qr_* tables" in check.output



@pytest.mark.parametrize("site", VARIANTS[:1], indirect=True, ids=["sqlite"])
def test_a_stamp_over_identities_left_on_the_default_bind_is_refused_as_an_upgrade(
        site: Site) -> None:
    """``db stamp`` where ``db upgrade`` stops (the default bind's database has identities
    that may be this site's, the members' none): the revision it recorded on the members'
    bind said the choice was made, and neither the next upgrade nor ``check`` asked again;
    every WeChat user would get a new account. It stops the same way, with the same way
    on (``--ignore-default-bind``, said for ``stamp``)."""
    import host_binds

    app = site.build(MIGRATED=True)
    with app.app_context():
        host_binds.Member.__table__.create(engine(app, "users"))
    another_apps_identities(app, tied=False)
    refused = flask(app, "wechat-qr", "db", "stamp", "head")
    assert refused.exit_code == 1 and "Nothing was changed" in refused.output, refused.output
    assert "`flask wechat-qr db stamp head --ignore-default-bind` once" in refused.output
    assert "wechat_qr_alembic_version" not in tables(app, "users")
    check = flask(app, "wechat-qr", "check")
    assert check.exit_code == 1 and "move the wechat_qr_* tables" in check.output, check.output
    result = flask(app, "wechat-qr", "db", "stamp", "head", "--ignore-default-bind")
    assert result.exit_code == 0 and "recorded as" in result.output, result.output
    assert "wechat_qr_alembic_version" in tables(app, "users")


def another_apps_identities(app: Flask, *, tied: bool) -> None:
    """Another app of a database the sites share, on this site's default bind, with a
    linked WeChat account: its identities tied to its own ``account`` table by the
    extension's foreign key (``tied``), or not (it turned the key off, or its version
    had none)."""
    with engine(app, None).begin() as connection:
        connection.execute(sa.text("CREATE TABLE account (id INTEGER PRIMARY KEY)"))
        connection.execute(sa.text("INSERT INTO account VALUES (1)"))
        key = (", user_key INTEGER REFERENCES account (id) ON DELETE CASCADE" if tied
               else "")
        connection.execute(sa.text(
            f"CREATE TABLE wechat_qr_identity (id INTEGER PRIMARY KEY, user_id TEXT{key})"))
        connection.execute(sa.text("INSERT INTO wechat_qr_identity (id, user_id) "
                                   "VALUES (1, '1')"))


@pytest.mark.parametrize("site", VARIANTS[:1], indirect=True, ids=["sqlite"])
def test_another_apps_identities_on_the_default_bind_are_told_apart(site: Site) -> None:
    """Two apps sharing the default bind's database, this one with its members on a bind
    of their own: the other app's linked WeChat accounts on the default bind stopped
    ``db upgrade`` (taken for this site's, left there by an earlier version), with no way
    on but ``db.create_all()``. Tied by their foreign key to users of that database,
    which this site's never were, they are another app's: the upgrade goes on."""
    import host_binds

    app = site.build(MIGRATED=True)
    with app.app_context():
        host_binds.Member.__table__.create(engine(app, "users"))
    another_apps_identities(app, tied=True)
    result = flask(app, "wechat-qr", "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert EXTENSION_TABLES | {"wechat_qr_alembic_version"} <= tables(app, "users")
    check = flask(app, "wechat-qr", "check")
    assert check.exit_code == 0 and "no problems" in check.output, check.output


@pytest.mark.parametrize("site", VARIANTS[:1], indirect=True, ids=["sqlite"])
def test_identities_of_unknown_owner_on_the_default_bind_are_left_when_told(
        site: Site) -> None:
    """Identities on the default bind tied to no user table there may be this site's
    (left by an earlier version) or another app's: ``db upgrade`` stops, and says how to
    go on either way. ``--ignore-default-bind`` (another app's) makes this site's tables
    beside its members and leaves the others; the next upgrade and ``check`` know the
    choice was made (the version table is on the members' bind)."""
    import host_binds

    app = site.build(MIGRATED=True)
    with app.app_context():
        host_binds.Member.__table__.create(engine(app, "users"))
    another_apps_identities(app, tied=False)
    refused = flask(app, "wechat-qr", "db", "upgrade")
    assert refused.exit_code == 1 and "Nothing was changed" in refused.output
    assert "`flask wechat-qr db upgrade --ignore-default-bind` once" in refused.output
    result = flask(app, "wechat-qr", "db", "upgrade", "--ignore-default-bind")
    assert result.exit_code == 0, result.output
    assert EXTENSION_TABLES | {"wechat_qr_alembic_version"} <= tables(app, "users")
    with engine(app, None).connect() as connection:  # the other app's, as they were
        assert connection.execute(sa.text(
            "SELECT id, user_id FROM wechat_qr_identity")).all() == [(1, "1")]
    again = flask(app, "wechat-qr", "db", "upgrade")
    assert again.exit_code == 0 and "already at" in again.output, again.output
    check = flask(app, "wechat-qr", "check")
    assert check.exit_code == 0 and "no problems" in check.output, check.output


@pytest.mark.parametrize("site", VARIANTS[:1], indirect=True, ids=["sqlite"])
def test_identities_tied_to_the_sites_own_old_user_table_are_not_another_apps(
        site: Site) -> None:
    """A site that had its members on the default bind, the extension's tables beside them
    (their foreign key to ``members``), and moved its members to a bind of their own,
    leaving the old table: the identities' foreign key to a user table of that database
    was taken for another app's, and ``db upgrade`` made empty tables beside the members,
    every WeChat user to get a new account. A key to a table named as this site's user
    table may be this site's: the upgrade stops, as for identities tied to none."""
    import host_binds

    app = site.build(MIGRATED=True)
    with app.app_context():
        host_binds.Member.__table__.create(engine(app, "users"))
    with engine(app, None).begin() as connection:  # as the site left them when it moved
        connection.execute(sa.text("CREATE TABLE members (id INTEGER PRIMARY KEY)"))
        connection.execute(sa.text("INSERT INTO members VALUES (1)"))
        connection.execute(sa.text(
            "CREATE TABLE wechat_qr_identity (id INTEGER PRIMARY KEY, user_id TEXT, "
            "user_key INTEGER REFERENCES members (id) ON DELETE CASCADE)"))
        connection.execute(sa.text("INSERT INTO wechat_qr_identity VALUES (1, '1', 1)"))
    refused = flask(app, "wechat-qr", "db", "upgrade")
    assert refused.exit_code == 1 and "Nothing was changed" in refused.output, refused.output
    assert "wechat_qr_identity" not in tables(app, "users")


SANDBOX_TABLES = {"wechat_qr_sandbox_qr", "wechat_qr_sandbox_person", "wechat_qr_sandbox_code",
                  "wechat_qr_sandbox_token", "wechat_qr_sandbox_consent",
                  "wechat_qr_sandbox_avatar"}


def binds_only(tmp_path: t.Any, **config: t.Any) -> Flask:
    """host_binds_only on SQLite files: no default bind at all."""
    import host_binds_only

    return host_binds_only.create_app({**SANDBOX, "SQLALCHEMY_BINDS": {
        "accounts": f"sqlite:///{tmp_path / 'accounts.db'}",
        "content": f"sqlite:///{tmp_path / 'content.db'}"}, **config})


@pytest.mark.parametrize("migrated", [False, True], ids=["create_all", "migrations"])
def test_a_site_with_binds_only_logs_in_on_the_sandbox(tmp_path: t.Any, migrated: bool) -> None:
    """No SQLALCHEMY_DATABASE_URI, every model on a bind: the sandbox's tables go with the
    extension's, on the user model's bind, made by ``db.create_all(bind_key=[...])`` or by
    the sandbox on its first request; ``db upgrade`` and ``check`` work there. Before, the
    sandbox's tables were on the default bind, which such a site has not: every page of
    the sandbox was a 500 (``db.engine``: KeyError None), and so was every login."""
    import host_binds_only

    app = binds_only(tmp_path, MIGRATED=migrated)
    try:
        if migrated:
            with app.app_context():  # the site's own migrations
                host_binds_only.Member.__table__.create(engine(app, "accounts"))
                host_binds_only.Article.__table__.create(engine(app, "content"))
            result = flask(app, "wechat-qr", "db", "upgrade")
            assert result.exit_code == 0, (result.output, result.exception)
            check = flask(app, "wechat-qr", "check")
            assert check.exit_code == 0 and "no problems" in check.output, check.output
        else:
            assert SANDBOX_TABLES <= tables(app, "accounts")
        browser = Browser(app)
        assert browser.get("/wechat-sandbox/").status_code == 200
        page = wechat_login(browser, "zhangsan")
        assert page.status_code == 200 and "Hello, 张三🐼" in page.get_data(as_text=True)
        assert_no_server_error(browser)
        assert EXTENSION_TABLES | SANDBOX_TABLES <= tables(app, "accounts")
        assert not SANDBOX_TABLES & tables(app, "content")
    finally:
        dispose_engines(app)
