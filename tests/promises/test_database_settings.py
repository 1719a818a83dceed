"""Hosts whose database settings are not the defaults: an isolation level of their own
(``SERIALIZABLE``; ``AUTOCOMMIT``, where every statement commits by itself), a pool of one
connection, connections the database server closed, sessions that begin no transaction.
Logins at the same moment still make one account each, end once, and never show a 500."""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from flask import Flask, request
from flask_login import current_user
from support import (
    AVATAR,
    CODE_USED_ANSWER,
    OPENID_B,
    PROFILE_ANSWER,
    REFRESH_TOKEN,
    TOKEN_ANSWER,
    TOKEN_PATH,
    USERINFO_PATH,
    Database,
    WeChatAPI,
    add_user,
    admin_engine,
    all_identities,
    all_users,
    answer,
    answer_with,
    arrive,
    ask_app,
    bind_page,
    browser_copy,
    database_out_of_reach,
    double_redirect,
    each_code_once,
    error_name,
    log_in,
    logged_in_user_id,
    login_with_wechat,
    meeting,
    open_qr_page,
    poll,
    quoted,
    recording,
    start_link,
    start_login,
    submit,
    wechat_body,
)

from flask_wechat_qr import AccountAdapter, ConfigurationError, WeChatQR, signals
from flask_wechat_qr.runtime import runtime_of


def person(number: int) -> tuple[str, str]:
    """The openid and unionid of simulated person ``number`` (28 characters, as WeChat's)."""
    return f"oPerson{number:04d}".ljust(28, "x"), f"uPerson{number:04d}".ljust(28, "x")


def token_answer(number: int) -> dict[str, t.Any]:
    openid, unionid = person(number)
    return {"access_token": f"AT{number}", "expires_in": 7200, "refresh_token": REFRESH_TOKEN,
            "openid": openid, "scope": "snsapi_login", "unionid": unionid}


def profile_answer(number: int) -> dict[str, t.Any]:
    openid, unionid = person(number)
    return {"openid": openid, "nickname": f"张{number}🐼", "sex": 0, "headimgurl": AVATAR,
            "privilege": [], "unionid": unionid}


def people(api: WeChatAPI, meet: int = 0) -> t.Any:
    """WeChat answering for many people: the code ``P<n>-<anything>`` is person ``n``'s. With
    ``meet``, the profile requests wait until ``meet`` of them are there (every login has
    looked its identity up, found none, and goes on to write at the same moment): the
    barrier, to check it was not ``broken``."""
    answer_with(api, TOKEN_PATH, lambda request: wechat_body(
        token_answer(int(request.params["code"][1:].split("-")[0]))))

    def profile(request: t.Any) -> t.Any:
        return wechat_body(profile_answer(int(request.params["access_token"][2:])))

    if meet:
        return meeting(api, USERINFO_PATH, meet, profile)
    answer_with(api, USERINFO_PATH, profile)
    return None


def logins_at_once(app: Flask, codes: list[str]) -> list[int]:
    """A login of a new browser with each of ``codes``, their callbacks in flight together;
    their statuses, in order."""
    browsers = [app.test_client() for _ in codes]
    states = [start_login(browser, next="/welcome") for browser in browsers]

    def finish(index: int) -> int:
        return int(browsers[index].get("/auth/wechat/callback", query_string={
            "code": codes[index], "state": states[index]}).status_code)

    with ThreadPoolExecutor(len(codes)) as pool:
        return list(pool.map(finish, range(len(codes)), timeout=60))


def host_reads(app: Flask) -> Flask:
    """A host that reads its database at the start of every request (its logged-in user, a
    setting of its own), as many do: the request's session holds a connection from then on."""
    db = app.db  # type: ignore[attr-defined]

    @app.before_request
    def read_first() -> None:
        if current_user.is_authenticated:
            db.session.execute(sa.text("SELECT 1"))
        db.session.execute(sa.text("SELECT 1"))

    return app


# --- isolation levels ----------------------------------------------------------------------


def test_logins_at_the_same_moment_under_serializable(make_app: t.Any,
                                                      wechat_api: WeChatAPI) -> None:
    """``SERIALIZABLE``: eight people's first logins writing at the same moment. PostgreSQL
    rolls most of them back (serialization failures: each read the tables the others wrote),
    MariaDB some (deadlocks between their locking reads); every one was a 500. Each is
    tried again: eight accounts, eight 302s."""
    app = make_app(SQLALCHEMY_ENGINE_OPTIONS={"isolation_level": "SERIALIZABLE"})
    gate = people(wechat_api, meet=8)
    statuses = logins_at_once(app, [f"P{n}-a" for n in range(8)])
    assert statuses == [302] * 8 and not gate.broken
    assert sorted(i.openid for i in all_identities(app)) == sorted(
        person(n)[0] for n in range(8))
    assert len(all_users(app)) == 8


def test_two_choices_of_one_pending_binding_at_once_under_serializable(
    make_app: t.Any, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A double-clicked "create" under ``SERIALIZABLE`` (or PostgreSQL's ``REPEATABLE READ``):
    the second marks the pending binding used after the first did, which PostgreSQL refuses
    as a serialization failure and MariaDB as a deadlock (a 500). Tried again, it finds the
    binding used: the page that says so, and one account."""
    import threading

    app = ask_app(make_app, SQLALCHEMY_ENGINE_OPTIONS={"isolation_level": "SERIALIZABLE"})
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    twin = app.test_client()
    twin.set_cookie("session", client.get_cookie("session").value)
    together = threading.Barrier(2, timeout=10)
    real_can_signup = AccountAdapter.can_signup

    def can_signup_together(self: t.Any, connection: t.Any) -> bool:
        try:
            together.wait()  # both have read the pending binding unused (the first time)
        except threading.BrokenBarrierError:
            pass  # a second try meets nobody
        return real_can_signup(self, connection)

    monkeypatch.setattr(AccountAdapter, "can_signup", can_signup_together)
    with ThreadPoolExecutor(2) as pool:
        answers = [pool.submit(submit, browser, token, action="create")
                   for browser in (client, twin)]
        statuses = sorted(answer.result(timeout=30).status_code for answer in answers)
    assert statuses == [302, 400]
    assert len(all_users(app)) == 1 and len(all_identities(app)) == 1


def guesses_at_once(app: Flask, client: t.Any, token: str,
                    monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Four wrong passwords for alice sent on ``client``'s bind page at the same moment (four
    browsers with its session, each held until all are about to count their attempt): the
    answers' statuses."""
    import threading

    browsers = []
    for _ in range(4):
        twin = app.test_client()
        twin.set_cookie("session", client.get_cookie("session").value)
        browsers.append(twin)
    together = threading.Barrier(4, timeout=10)
    real_login_key = AccountAdapter.login_key

    def login_key_together(self: t.Any, username: str) -> str:
        try:
            together.wait()  # each is about to count its attempt
        except threading.BrokenBarrierError:
            pass
        return real_login_key(self, username)

    with monkeypatch.context() as patched:
        patched.setattr(AccountAdapter, "login_key", login_key_together)
        with ThreadPoolExecutor(4) as pool:
            answers = [pool.submit(submit, browser, token, action="bind", username="alice",
                                   password=f"guess-{n}")
                       for n, browser in enumerate(browsers)]
            return [answer.result(timeout=30).status_code for answer in answers]


def test_guesses_at_the_bind_page_at_once_under_serializable(
    make_app: t.Any, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four wrong passwords sent at the same moment on the bind page, under
    ``SERIALIZABLE``: each counts its attempt (a commit of its own), and the database rolled
    some back for the others' sake (a 500). Each counts once: four "wrong password" pages,
    and a fifth attempt is the last one allowed."""
    app = ask_app(make_app, SQLALCHEMY_ENGINE_OPTIONS={"isolation_level": "SERIALIZABLE"})
    add_user(app, username="alice", password="alice-pw")
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    statuses = guesses_at_once(app, client, token, monkeypatch)
    assert statuses == [400] * 4
    assert submit(client, token, action="bind", username="alice",
                  password="guess-4").status_code == 400
    assert submit(client, token, action="bind", username="alice",
                  password="alice-pw").status_code == 429


def test_an_autocommit_engine_still_makes_one_account_per_person(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    """``AUTOCOMMIT``: each statement commits by itself, so two first logins of one person at
    once both kept the user they made, and the one whose identity lost left a user nobody
    can log in as. A login's statements run in one transaction all the same: one user."""
    app = make_app(SQLALCHEMY_ENGINE_OPTIONS={"isolation_level": "AUTOCOMMIT"})
    gate = people(wechat_api, meet=2)
    assert logins_at_once(app, ["P1-a", "P1-b"]) == [302, 302] and not gate.broken
    (user,) = all_users(app)
    assert [i.user_id for i in all_identities(app)] == [str(user.id)]
    # WeChat's double redirect of a new person (the same code twice) too.
    wechat_api.mock.reset()
    seen = double_redirect(app, wechat_api)
    assert [answer.status_code for answer in seen.answers] == [302, 302]
    assert len(all_users(app)) == len(all_identities(app)) == 2


# --- a pool of one connection ----------------------------------------------------------------


def one_connection_app(make_app: t.Any, pool_timeout: float, **config: t.Any) -> Flask:
    """A worker with one database connection (``pool_size=1, max_overflow=0``), whose host
    reads the database first in every request: a request that waits for a second connection
    waits for itself, ``pool_timeout`` seconds, then fails."""
    return host_reads(make_app(SQLALCHEMY_ENGINE_OPTIONS={
        "pool_size": 1, "max_overflow": 0, "pool_timeout": pool_timeout}, **config))


def test_a_pool_of_one_connection_serves_every_step(
    make_app: t.Any, wechat_api: WeChatAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """Every step that used a connection of its own beside the request's: the first request
    (SQLite: the users' trigger checked), a login with a long next (its data parked), the
    minute's purge, the nickname column's character set (MariaDB), a cancelled link (its
    ending recorded), WeChat's double redirect (the second waits for the first's ending).
    Each waited ``pool_timeout`` for itself: a 500, or a warning after the wait."""
    app = one_connection_app(make_app, pool_timeout=1, WECHAT_QR_CODE_USED_WAIT=10)
    people(wechat_api)
    long_next = "/welcome?" + "x" * 400  # too long for the cookie: parked
    with caplog.at_level(logging.WARNING, logger="flask_wechat_qr"):
        browser = app.test_client()
        state = start_login(browser, next=long_next)
        first = browser.get("/auth/wechat/callback", query_string={"code": "P1-a",
                                                                   "state": state})
        assert first.status_code == 302 and first.headers["Location"] == long_next
        assert logged_in_user_id(browser) is not None
        alice = app.test_client()
        log_in(alice, add_user(app, username="alice"))
        state = start_link(alice, next="/account")
        cancelled = alice.get("/auth/wechat/callback", query_string={"state": state})
        assert cancelled.status_code == 200 and error_name(cancelled) == "LoginCancelled"
        wechat_api.mock.reset()
        seen = double_redirect(app, wechat_api)
        assert [answer.status_code for answer in seen.answers] == [302, 302]
    assert [r.getMessage() for r in caplog.records if r.name == "flask_wechat_qr"] == []
    assert len(all_users(app)) == 3 and len(all_identities(app)) == 2


def test_a_pool_of_one_connection_serves_eight_threads(make_app: t.Any,
                                                       wechat_api: WeChatAPI) -> None:
    """A gthread worker of eight threads on one connection: the logins take turns with it.
    One that held it and waited for a second stopped all of them for ``pool_timeout``, then
    every other failed. (A first request of each process runs before, so that the
    turns are what is tried here.)"""
    app = one_connection_app(make_app, pool_timeout=5)
    people(wechat_api)
    assert logins_at_once(app, ["P0-a"]) == [302]
    assert logins_at_once(app, [f"P{n}-b" for n in range(1, 9)]) == [302] * 8
    assert len(all_users(app)) == 9


def test_the_sandbox_on_a_pool_of_one_connection(make_app: t.Any) -> None:
    """The in-app sandbox's first page made its tables with a second connection beside its
    own (an inspector of the engine): with one connection it waited ``pool_timeout`` for
    itself, and the page was a 500. A whole login now, twice."""
    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None,
                   SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0,
                                              "pool_timeout": 1})
    for _ in range(2):
        browser, phone = app.test_client(), app.test_client()
        uuid, _state = open_qr_page(browser)
        answer(phone, uuid, action="allow", person="zhangsan")
        done = browser.get(urlsplit(poll(browser, uuid)["redirect"])._replace(
            scheme="", netloc="").geturl())
        assert done.status_code == 302
    assert len(all_users(app)) == 1


# --- connections the database server closed --------------------------------------------------


def close_connections_of(database: Database, name: str) -> int:
    """Close, from the server's side, every connection of the app whose connections are
    called ``name`` (PostgreSQL: their ``application_name``; MariaDB: the database they
    use): what a restart or a failover does to a pool. How many were closed."""
    with admin_engine(database.server_url or "").connect() as conn:
        if database.is_postgres:
            return len(conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :name"), {"name": name}).all())
        ids = conn.execute(sa.text("SELECT id FROM information_schema.processlist "
                                   "WHERE db = :name"), {"name": name}).scalars().all()
        for connection_id in ids:
            conn.execute(sa.text(f"KILL {int(connection_id)}"))
        return len(ids)


def app_with_named_connections(make_app: t.Any, database: Database) -> tuple[Flask, str]:
    """A test host whose connections :func:`close_connections_of` finds by the name given
    with it (a PostgreSQL ``application_name``, or its MariaDB database's name)."""
    name = f"wechat-qr-{secrets.token_hex(4)}"
    options: dict[str, t.Any] = {"connect_args": {"application_name": name}} \
        if database.is_postgres else {}
    app = make_app(SQLALCHEMY_ENGINE_OPTIONS=options)
    if database.is_mysql:
        name = sa.make_url(app.config["SQLALCHEMY_DATABASE_URI"]).database or ""
    return app, name


@pytest.mark.parametrize("database", ["postgresql", "mariadb"], indirect=True)
def test_a_login_after_the_database_closed_the_pools_connections(
    make_app: t.Any, database: Database, wechat_api: WeChatAPI,
    caplog: pytest.LogCaptureFixture
) -> None:
    """The database restarted between two logins, without ``pool_pre_ping``: the next
    login's first statement found its pooled connection closed (a 500). It is tried again
    on a new connection, and says so in the log. (SQLite has no server to close them.)"""
    app, name = app_with_named_connections(make_app, database)
    people(wechat_api)
    assert logins_at_once(app, ["P1-a"]) == [302]
    assert close_connections_of(database, name) >= 1
    with caplog.at_level(logging.WARNING, logger="flask_wechat_qr"):
        assert logins_at_once(app, ["P2-a"]) == [302]
    assert "connection of a login was lost" in caplog.text
    assert len(all_users(app)) == len(all_identities(app)) == 2


# --- a login waiting for WeChat ---------------------------------------------------------------


@pytest.mark.parametrize("database", ["postgresql", "mariadb"], indirect=True)
def test_a_migration_does_not_wait_for_a_first_login_waiting_for_wechat(
        make_app: t.Any, database: Database, wechat_api: WeChatAPI) -> None:
    """While WeChat answers a first login (its profile may take seconds), the login holds
    no table: the exclusive lock of a migration's ``ALTER TABLE`` on the user, identity or
    login-state table is had at once (``NOWAIT``). A transaction kept open through the
    wait (issue 15, tried in session 39 and taken back after a review) held them, and a
    migration waited behind it, and every read of those tables behind the migration."""
    app = make_app()
    users = app.User.__table__.name  # type: ignore[attr-defined]
    tables = [quoted(app, name)
              for name in (users, "wechat_qr_identity", "wechat_qr_login_state")]
    waiting, answer_now = threading.Event(), threading.Event()

    def profile(request: t.Any) -> t.Any:
        waiting.set()
        answer_now.wait(10)
        return wechat_body(profile_answer(1))

    answer_with(wechat_api, TOKEN_PATH, lambda request: wechat_body(token_answer(1)))
    answer_with(wechat_api, USERINFO_PATH, profile)
    client = app.test_client()
    state = start_login(client)
    with ThreadPoolExecutor(1) as pool:
        login = pool.submit(lambda: client.get("/auth/wechat/callback", query_string={
            "code": "P1-a", "state": state}).status_code)
        refused: list[str] = []
        try:
            assert waiting.wait(10)
            migration = sa.create_engine(app.config["SQLALCHEMY_DATABASE_URI"],
                                         poolclass=sa.pool.NullPool)
            with migration.connect() as conn:
                for name in tables:
                    try:
                        if database.is_postgres:
                            with conn.begin():
                                conn.execute(sa.text(
                                    f"LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE NOWAIT"))
                        else:
                            conn.execute(sa.text(f"LOCK TABLES {name} WRITE NOWAIT"))
                            conn.execute(sa.text("UNLOCK TABLES"))
                    except sa.exc.DBAPIError as error:
                        refused.append(f"{name}: {error.orig}")
            migration.dispose()
        finally:
            answer_now.set()
        assert login.result(timeout=30) == 302
    assert refused == []
    (identity,) = all_identities(app)
    assert identity.openid == person(1)[0]


# --- a database out of reach ----------------------------------------------------------------


@pytest.mark.parametrize("purge_due", [False, True], ids=["", "purge-due"])
def test_a_login_whose_database_is_out_of_reach_ends_on_its_page(
    make_app: t.Any, wechat_api: WeChatAPI, tmp_path: t.Any, caplog: pytest.LogCaptureFixture,
    purge_due: bool
) -> None:
    """The database down (or its file's folder gone) when WeChat sends the person back:
    the login ends on a 503 page that says so (here in Chinese), not Flask's bare 500,
    and ``login_failed`` is sent. The callback tries to connect once: nothing is recorded
    afterwards, and a purge of expired states due then (once a minute) ends it rather than
    let it wait again (each try of a server that does not answer waits its connect
    timeout); the page's "Try again" keeps the login's ``next`` either way. The page says
    when to try again to scripts too (``Retry-After``). The operator's log line gives the
    driver's reason, without a traceback. With the database back, the same browser logs
    in, without a restart."""
    app = make_app()
    app.jinja_env.autoescape = False  # a site's own choice: the page escapes all the same
    with app.app_context():
        engine = app.db.engine  # type: ignore[attr-defined]
    browser = app.test_client()
    assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
    if purge_due:
        runtime_of(app).login_states["wechat"].store.purges.next_at = 0
    with recording(app, "login_failed") as failed, \
            database_out_of_reach(engine, tmp_path) as attempts, \
            caplog.at_level(logging.INFO, logger="flask_wechat_qr"):
        state = start_login(browser, next="/orders?a=1&b=2")  # reads nothing till WeChat
        each_code_once(wechat_api)
        wechat_api.userinfo()
        resp = browser.get("/auth/wechat/callback", query_string={"code": "C1", "state": state},
                           headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert resp.status_code == 503 and error_name(resp) == "DatabaseUnavailable"
    assert resp.headers["Retry-After"] == "120"
    assert "本网站暂时无法连接数据库" in resp.get_data(as_text=True)
    assert "<title>暂时无法登录" in resp.get_data(as_text=True)
    # escaped, whatever the site's own setting
    assert 'href="/orders?a=1&b=2"' not in resp.get_data(as_text=True)
    assert 'href="/orders?a=1&amp;b=2"' in resp.get_data(as_text=True)  # back
    assert 'href="/auth/wechat/login?next=/orders?a%3D1%26b%3D2"' in resp.get_data(as_text=True)
    assert attempts == [1]
    assert [name for name, _ in failed] == ["login_failed"]
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert re.search(r"Connection refused|unable to open database file|Can't connect",
                     errors[0].getMessage())
    assert login_with_wechat(browser, wechat_api, openid=OPENID_B).status_code == 302
    assert len(all_users(app)) == 2


@contextlib.contextmanager
def database_read_only(engine: sa.Engine, database: Database) -> t.Iterator[None]:
    """Every connection ``engine`` makes from now on takes no writes, as a database that
    turned read-only does: SQLite's ``query_only`` (``SQLITE_READONLY``, as a file or
    folder the site cannot write), PostgreSQL's ``default_transaction_read_only`` (25006,
    as a hot standby after a failover), MariaDB's read-only transactions (1792)."""
    statement = ("SET default_transaction_read_only = on" if database.is_postgres
                 else "SET SESSION TRANSACTION READ ONLY" if database.is_mysql
                 else "PRAGMA query_only = ON")

    def read_only(dbapi_connection: t.Any, _record: t.Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(statement)
        cursor.close()
        dbapi_connection.commit()  # psycopg began a transaction, read-write: ended here

    sa.event.listen(engine, "connect", read_only)
    engine.dispose()
    try:
        yield
    finally:
        sa.event.remove(engine, "connect", read_only)
        engine.dispose()


@pytest.mark.parametrize("returning", [False, True], ids=["new", "returning"])
def test_a_login_whose_database_takes_no_writes_ends_on_its_page(
    make_app: t.Any, wechat_api: WeChatAPI, database: Database,
    caplog: pytest.LogCaptureFixture, returning: bool
) -> None:
    """A database that answers but takes no writes (read-only after a failover, a SQLite
    file the site cannot write; a full disk and a statement timeout are answered alike):
    the login ended on Flask's bare English 500, with two tracebacks in the log (a
    helper's hunt of hostile environments). Now a 503 page that says logins cannot be
    saved right now and to try again, in the person's language, with ``Retry-After``;
    one ``ERROR`` line with the database's reason and what to check, and no second one
    for the ending that could not be recorded either;
    and once the database takes writes again, the page's "Try again" logs the person in."""
    app = make_app(PROPAGATE_EXCEPTIONS=False)
    with app.app_context():
        engine = app.db.engine  # type: ignore[attr-defined]
    if returning:
        assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
    browser = app.test_client()
    state = start_login(browser, next="/orders")
    with recording(app, "login_failed") as failed, database_read_only(engine, database), \
            caplog.at_level(logging.INFO, logger="flask_wechat_qr"):
        wechat_api.token()
        wechat_api.userinfo()
        resp = browser.get("/auth/wechat/callback", query_string={"code": "C1", "state": state},
                           headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert resp.status_code == 503 and error_name(resp) == "DatabaseRefusing"
    assert resp.headers["Retry-After"] == "120"
    page = resp.get_data(as_text=True)
    assert "本网站现在无法保存登录" in page and "<title>暂时无法登录" in page
    assert [name for name, _ in failed] == ["login_failed"]
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert re.search(r"readonly|read-only|READ ONLY", errors[0].getMessage())
    assert "accepts writes" in errors[0].getMessage()
    assert len(all_users(app)) == int(returning)
    retry = re.search(r'href="(/auth/wechat/login\?next=[^"]+)"', page)
    assert retry is not None and retry.group(1) == "/auth/wechat/login?next=/orders"
    # Writes back: "Try again" logs the person in, to where the login was going.
    again = login_with_wechat(browser, wechat_api, next="/orders")
    assert again.headers["Location"] == "/orders"
    assert logged_in_user_id(browser) is not None and len(all_users(app)) == 1


def test_pages_that_write_answer_a_database_that_takes_no_writes_with_the_page(
    make_app: t.Any, wechat_api: WeChatAPI, database: Database
) -> None:
    """A start that keeps a long ``next`` in the database, and the bind page's choice:
    Flask's bare 500 before (the hunt), the same 503 page now."""
    app = ask_app(make_app, PROPAGATE_EXCEPTIONS=False)
    with app.app_context():
        engine = app.db.engine  # type: ignore[attr-defined]
    browser = app.test_client()
    arrive(browser, wechat_api)
    _html, token = bind_page(browser)
    with database_read_only(engine, database):
        long_next = "/orders?" + "x" * 400
        start = browser.get("/auth/wechat/login", query_string={"next": long_next})
        choice = submit(browser, token, action="create")
    assert (start.status_code, error_name(start)) == (503, "DatabaseRefusing")
    assert (choice.status_code, error_name(choice)) == (503, "DatabaseRefusing")
    assert all_users(app) == []
    assert submit(browser, token, action="create").status_code == 302  # writes back


def test_a_login_failed_receiver_that_writes_to_a_database_taking_no_writes_is_passed_by(
    make_app: t.Any, wechat_api: WeChatAPI, database: Database
) -> None:
    """A ``login_failed`` receiver that counts failures in the database: passed by where
    the database takes no writes, as where it is out of reach; the page still says what
    happened (a review: the receiver's refusal was the site's 500)."""
    app = make_app(PROPAGATE_EXCEPTIONS=False)
    db = app.db  # type: ignore[attr-defined]
    with app.app_context():
        engine = db.engine
    counted: list[str] = []

    @signals.login_failed.connect_via(app)
    def count_failure(_app: t.Any, error: t.Any, **_extra: t.Any) -> None:
        db.session.add(app.User(nickname=type(error).__name__))  # type: ignore[attr-defined]
        db.session.commit()
        counted.append(type(error).__name__)

    state = start_login(browser := app.test_client())
    with database_read_only(engine, database):
        wechat_api.token()
        wechat_api.userinfo()
        resp = browser.get("/auth/wechat/callback", query_string={"code": "C1", "state": state})
    assert (resp.status_code, error_name(resp)) == (503, "DatabaseRefusing")
    assert counted == [] and all_users(app) == []


@pytest.mark.parametrize("sites_handler", [False, True], ids=["", "sites-handler"])
def test_the_sites_own_write_refused_on_a_login_page(
    make_app: t.Any, database: Database, sites_handler: bool
) -> None:
    """The site's ``before_request`` writes on every page, the login's start too, and its
    layout reads from the database: with the database taking no writes the start was
    Flask's bare 500 (and on PostgreSQL the page's own reads then failed on the aborted
    transaction, a review). Now the extension's page, drawn from its own templates after a
    rollback; a site's own handler of the error's class still answers it, as before."""
    from flask import request
    from sqlalchemy.exc import DBAPIError

    def host(app: Flask) -> None:
        @app.before_request
        def last_seen() -> None:
            if request.path.startswith("/auth/"):
                app.db.session.add(app.User(nickname="seen"))  # type: ignore[attr-defined]
                app.db.session.flush()  # type: ignore[attr-defined]

        @app.context_processor
        def unread() -> dict[str, t.Any]:  # the layout shows a count from the database
            return {"unread": app.db.session.execute(  # type: ignore[attr-defined]
                sa.text("SELECT 1")).scalar()}

        if sites_handler:
            @app.errorhandler(DBAPIError)
            def maintenance(_error: Exception) -> tuple[str, int]:
                app.db.session.rollback()  # type: ignore[attr-defined]
                return "the site's maintenance page", 503

    app = make_app(PROPAGATE_EXCEPTIONS=False, before_init=host)
    with app.app_context():
        engine = app.db.engine  # type: ignore[attr-defined]
    with database_read_only(engine, database):
        resp = app.test_client().get("/auth/wechat/login", query_string={"next": "/orders"})
    assert resp.status_code == 503
    if sites_handler:
        assert resp.get_data(as_text=True) == "the site's maintenance page"
    else:
        assert error_name(resp) == "DatabaseRefusing"


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_sqlite_file_replaced_under_the_site_is_written_to(
    make_app: t.Any, wechat_api: WeChatAPI, tmp_path: t.Any
) -> None:
    """A SQLite file replaced under the running site (a restore, ``mv new.db site.db``):
    the pool's connections are to the old file, which SQLite makes read-only to them
    (``SQLITE_READONLY_DBMOVED``), and "try again in a few minutes" never came true before
    a restart (a review). The login makes the connections anew and goes on."""
    import os
    import shutil

    app = make_app(PROPAGATE_EXCEPTIONS=False)
    with app.app_context():
        path = app.db.engine.url.database  # type: ignore[attr-defined]
    assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
    shutil.copy(path, f"{path}.new")
    os.replace(f"{path}.new", path)
    resp = login_with_wechat(app.test_client(), wechat_api, openid=OPENID_B)
    assert resp.status_code == 302 and len(all_users(app)) == 2


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_lock_another_transaction_held_is_waited_for_once_more(
    make_app: t.Any, wechat_api: WeChatAPI, database: Database,
    caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL's ``lock_timeout`` (55P03) while another transaction holds a table the
    login writes: the login tries once more (the holder may be done by then), and where
    it is held still, ends on the page with advice about long transactions (a review: it
    said to raise the timeouts)."""
    app = make_app(PROPAGATE_EXCEPTIONS=False)
    with app.app_context():
        engine = app.db.engine  # type: ignore[attr-defined]

    @sa.event.listens_for(engine, "connect")
    def short_lock_waits(dbapi_connection: t.Any, _record: t.Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SET lock_timeout = '100ms'")
        cursor.close()
        dbapi_connection.commit()

    engine.dispose()
    refusals: list[str] = []
    with engine.connect() as holder:
        holder.execute(sa.text("LOCK TABLE wechat_qr_login_state IN ACCESS EXCLUSIVE MODE"))

        @sa.event.listens_for(engine, "handle_error")
        def let_go_after_the_first(context: t.Any) -> None:
            refusals.append(getattr(context.original_exception, "sqlstate", ""))
            if len(refusals) == 1:
                holder.rollback()  # the holder is done: the second try gets the lock

        assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
        assert refusals == ["55P03"]
        holder.execute(sa.text("LOCK TABLE wechat_qr_login_state IN ACCESS EXCLUSIVE MODE"))
        sa.event.remove(engine, "handle_error", let_go_after_the_first)
        with caplog.at_level(logging.ERROR, logger="flask_wechat_qr"):
            resp = login_with_wechat(app.test_client(), wechat_api, openid=OPENID_B)
        holder.rollback()
    assert (resp.status_code, error_name(resp)) == (503, "DatabaseRefusing")
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "long transactions of the site's own" in line
    sa.event.remove(engine, "connect", short_lock_waits)
    engine.dispose()


def a_login_meets_the_outage(browser: t.Any, wechat_api: WeChatAPI, code: str) -> None:
    """A login whose callback finds the database out of reach: its page (503) says so, and
    the process remembers the outage (:mod:`flask_wechat_qr.outage`)."""
    state = start_login(browser)
    each_code_once(wechat_api)
    assert browser.get("/auth/wechat/callback", query_string={
        "code": code, "state": state}).status_code == 503


class _MonotonicClock:
    """``time`` for :mod:`flask_wechat_qr.outage`: its durations, moved on by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def outage_clock(monkeypatch: pytest.MonkeyPatch) -> _MonotonicClock:
    from flask_wechat_qr import outage

    clock = _MonotonicClock()
    monkeypatch.setattr(outage, "time", clock)
    return clock


def test_no_login_starts_while_a_database_found_out_of_reach_still_is(
    make_app: t.Any, wechat_api: WeChatAPI, tmp_path: t.Any, outage_clock: t.Any
) -> None:
    """A login's start reads nothing, so while the database was down it still sent people
    to WeChat's QR page: they scanned and confirmed, and only then learned that the site
    could not log them in (session 33, left alone). Once a page said the database is out
    of reach, a start asks it first: still down, the start is that page (503), and WeChat
    never sees the person; the starts of the next few seconds take that answer rather than
    each wait out a connect of their own. Back, the start goes to WeChat and the next ones
    ask nothing; two minutes on, nobody asks either. A site whose database never failed
    asks nothing at a start."""
    app = make_app()
    with app.app_context():
        engine = app.db.engine  # type: ignore[attr-defined]
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda _c, _cur, statement, *_a: statements.append(statement))
    browser = app.test_client()
    assert browser.get("/auth/wechat/login").status_code == 302  # (SQLite: its trigger)
    statements.clear()
    assert browser.get("/auth/wechat/login").status_code == 302
    assert statements == []  # nothing asked at a start
    with database_out_of_reach(engine, tmp_path) as attempts:
        state = start_login(browser, next="/orders")
        each_code_once(wechat_api)
        failed = browser.get("/auth/wechat/callback", query_string={"code": "C1",
                                                                     "state": state})
        assert failed.status_code == 503
        tried = len(attempts)
        for path in ("/auth/wechat/login?next=/orders", "/auth/wechat/qr"):
            resp = browser.get(path)
            assert resp.status_code == 503 and error_name(resp) == "DatabaseUnavailable"
            assert resp.headers["Retry-After"] == "120"
        assert len(attempts) == tried + 1  # the first start asked; the second took that
        outage_clock.now += 6
        assert browser.get("/auth/wechat/login").status_code == 503
        assert len(attempts) == tried + 2
    outage_clock.now += 6
    statements.clear()
    assert browser.get("/auth/wechat/login").status_code == 302  # back: asked, and on
    assert len(statements) == 1
    assert browser.get("/auth/wechat/login").status_code == 302
    assert len(statements) == 1  # and not again
    # An outage two minutes old is forgotten: starts ask no database nobody found down since.
    with database_out_of_reach(engine, tmp_path) as attempts:
        a_login_meets_the_outage(browser, wechat_api, "C2")
        outage_clock.now += 121
        tried = len(attempts)
        assert browser.get("/auth/wechat/login").status_code == 302
        assert len(attempts) == tried


def test_an_outage_remembered_does_not_outlive_a_database_that_answers(
    make_app: t.Any, wechat_api: WeChatAPI, tmp_path: t.Any, outage_clock: t.Any
) -> None:
    """Two ways the memory of an outage must not make one (a review of the first version):
    a pool of one connection that a host's write in ``before_request`` holds (the start's
    question waited for a second connection, timed out, and called that an outage again,
    for two minutes), and a pool whose connections were all in use (an overload: each
    start waited ``pool_timeout`` to say so). Both starts go to WeChat."""
    app = make_app(SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0,
                                              "pool_timeout": 0.2})
    with app.app_context():
        engine = app.db.engine  # type: ignore[attr-defined]
    writes = {"on": False}

    @app.before_request
    def visit_counted() -> None:  # the host's own write, flushed, not committed
        if writes["on"]:
            app.db.session.execute(sa.text("CREATE TABLE IF NOT EXISTS visits (n INTEGER)"))
            app.db.session.execute(sa.text("INSERT INTO visits (n) VALUES (1)"))

    browser = app.test_client()
    assert browser.get("/auth/wechat/login").status_code == 302  # (SQLite: its trigger)
    with database_out_of_reach(engine, tmp_path):
        a_login_meets_the_outage(browser, wechat_api, "C1")
    writes["on"] = True
    for _ in range(3):
        assert browser.get("/auth/wechat/login").status_code == 302
    writes["on"] = False
    with engine.connect():  # every connection of the pool in use
        resp = login_with_wechat(app.test_client(), wechat_api, openid=OPENID_B)
        assert resp.status_code == 503 and error_name(resp) == "DatabaseUnavailable"
    assert browser.get("/auth/wechat/login").status_code == 302


def test_starts_answered_from_the_memory_do_not_keep_the_outage_going(
    make_app: t.Any, wechat_api: WeChatAPI, tmp_path: t.Any, outage_clock: t.Any
) -> None:
    """While one start asks the database (back now), another is answered from the memory
    (503). That answer renewed the memory, so the question's "it answers" was dropped, and
    the starts of the next seconds got 503 from a database that was up: under steady
    traffic, for as long as the traffic lasted (a review, session 35). Now the database
    back is back for everyone once one start found it."""
    app = make_app()
    with app.app_context():
        engine = app.db.engine  # type: ignore[attr-defined]
    browser = app.test_client()
    assert browser.get("/auth/wechat/login").status_code == 302  # (SQLite: its trigger)
    with database_out_of_reach(engine, tmp_path):
        a_login_meets_the_outage(browser, wechat_api, "C1")
    outage_clock.now += 6
    asking, answer = threading.Event(), threading.Event()

    def held(_conn: t.Any, _cursor: t.Any, statement: str, *_args: t.Any) -> None:
        if threading.current_thread().name == "asker" and "anon_1" in statement:
            asking.set()
            answer.wait(10)

    sa.event.listen(engine, "before_cursor_execute", held)
    statuses: list[int] = []
    asker = threading.Thread(name="asker", target=lambda: statuses.append(
        app.test_client().get("/auth/wechat/login").status_code))
    asker.start()
    assert asking.wait(10)
    assert app.test_client().get("/auth/wechat/login").status_code == 503  # from memory
    answer.set()
    asker.join(10)
    sa.event.remove(engine, "before_cursor_execute", held)
    assert statuses == [302]
    assert app.test_client().get("/auth/wechat/login").status_code == 302  # within 5 s


def test_a_start_asks_even_where_the_host_has_writes_waiting(
    make_app: t.Any, wechat_api: WeChatAPI, tmp_path: t.Any, outage_clock: t.Any
) -> None:
    """A host that adds an object in ``before_request`` (not flushed: no connection yet)
    made the start forget the outage without asking, and send the person to WeChat with
    the database down (a review, session 35). The start asks, without flushing the
    host's object."""
    app = make_app()
    with app.app_context():
        engine = app.db.engine  # type: ignore[attr-defined]
    adding = {"on": False}

    @app.before_request
    def visit_noted() -> None:
        if adding["on"]:
            app.db.session.add(app.User(nickname="visit"))  # type: ignore[attr-defined]

    browser = app.test_client()
    assert browser.get("/auth/wechat/login").status_code == 302  # (SQLite: its trigger)
    with database_out_of_reach(engine, tmp_path):
        a_login_meets_the_outage(browser, wechat_api, "C1")
        adding["on"] = True
        resp = browser.get("/auth/wechat/login")
        assert resp.status_code == 503 and error_name(resp) == "DatabaseUnavailable"


def test_a_login_that_finds_every_connection_of_the_pool_taken_ends_on_its_page(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    """A pool of one connection that something else holds past ``pool_timeout`` (all of
    a busy site's connections in use): the login's page says the database cannot be
    reached, a 503, where it was a bare 500; once the connection is given back, the next
    login goes through."""
    app = make_app(SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0,
                                              "pool_timeout": 0.2})
    with app.app_context():
        engine = app.db.engine  # type: ignore[attr-defined]
    assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
    with engine.connect():
        resp = login_with_wechat(app.test_client(), wechat_api, openid=OPENID_B)
    assert resp.status_code == 503 and error_name(resp) == "DatabaseUnavailable"
    assert login_with_wechat(app.test_client(), wechat_api, openid=OPENID_B).status_code == 302
    assert len(all_users(app)) == 2


def test_the_bind_page_of_a_database_out_of_reach_is_its_page(
    make_app: t.Any, wechat_api: WeChatAPI, tmp_path: t.Any
) -> None:
    """Any page of the extension that reads the database (here the bind page, which reads
    the pending binding) ends the same way while it is out of reach, and works again
    after; a database error of another kind stays the site's 500 (below)."""
    app = ask_app(make_app)
    with app.app_context():
        engine = app.db.engine  # type: ignore[attr-defined]
    browser = app.test_client()
    arrive(browser, wechat_api)
    with database_out_of_reach(engine, tmp_path):
        resp = browser.get("/auth/bind")
    assert resp.status_code == 503 and error_name(resp) == "DatabaseUnavailable"
    bind_page(browser)


#: A site's own layout, the extension's pages in it, and its own error page: all show its
#: logged-in user.
SITES_PAGES = {
    "layout.html": "<nav>SITE MENU {{ current_user.nickname }}</nav>{% block body %}"
                   "{% endblock %}",
    "wechat_qr/base.html": '{% extends "layout.html" %}{% block body %}{% block '
                           'wechat_qr_content %}{% endblock %}{% endblock %}',
    "wechat_qr/error.html": '{% extends "layout.html" %}{% block body %}<p>SITE ERROR '
                            '{{ error.title }}</p><div data-error="{{ '
                            'error.__class__.__name__ }}"></div>{% endblock %}',
}


class LanguageOfTheUser(AccountAdapter):
    """docs/hooks.rst's ``select_locale``: the language the logged-in user chose."""

    def select_locale(self) -> str | None:
        user = current_user
        return "zh_CN" if user.is_authenticated and user.nickname else None


@pytest.mark.parametrize("site", ["", "sites-pages", "users-language"])
def test_a_logged_in_browser_gets_the_page_too(
    make_app: t.Any, wechat_api: WeChatAPI, tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch,
    site: str
) -> None:
    """Drawing a page asks the database too where someone is logged in (Flask-Login's
    ``current_user`` loads the user for every template; the site's layout and its own
    error page may show it, its ``select_locale`` may read their language): linking, a
    login in a browser logged in already, and a login cancelled meanwhile still end on
    their pages (the extension's own, in its own layout and the browser's language then),
    where drawing them failed with a bare 500. The database out of reach is asked once a
    request, not again for the page."""
    def sites_templates(app: Flask) -> None:
        from jinja2 import DictLoader

        app.jinja_loader = DictLoader(SITES_PAGES)  # type: ignore[assignment]

    if site == "users-language":
        monkeypatch.setattr(AccountAdapter, "select_locale", LanguageOfTheUser.select_locale)
    sites_page = site == "sites-pages"
    app = make_app(before_init=sites_templates if sites_page else None)
    with app.app_context():
        engine = app.db.engine  # type: ignore[attr-defined]
    browser = app.test_client()
    assert login_with_wechat(browser, wechat_api).status_code == 302
    each_code_once(wechat_api)
    wechat_api.userinfo()
    states = [start_login(browser), start_login(browser)]
    with database_out_of_reach(engine, tmp_path) as attempts:
        link = browser.get("/auth/wechat/link")
        link_attempts = len(attempts)
        again = browser.get("/auth/wechat/callback",
                            query_string={"code": "C1", "state": states[0]})
        again_attempts = len(attempts) - link_attempts
        cancelled = browser.get("/auth/wechat/callback", query_string={"state": states[1]})
    for resp in (link, again):
        assert resp.status_code == 503 and error_name(resp) == "DatabaseUnavailable"
        assert "SITE" not in resp.get_data(as_text=True)
        assert '<html lang="en">' in resp.get_data(as_text=True)
    assert (link_attempts, again_attempts) == (1, 1)
    assert cancelled.status_code == 200 and error_name(cancelled) == "LoginCancelled"
    assert logged_in_user_id(browser) is not None  # still logged in, once it is back
    assert browser.get("/auth/wechat/link").status_code == 302  # (linked already)
    shown = browser.get("/auth/wechat/callback", query_string={"state": "unknown"})
    if sites_page:  # the site's pages, once the database is back
        assert "SITE MENU 张三🐼" in shown.get_data(as_text=True)
    if site == "users-language":
        assert 'lang="zh-CN"' in shown.get_data(as_text=True)


@pytest.mark.parametrize("spa", [False, True], ids=["", "spa-receiver"])
def test_a_login_failed_receiver_that_asks_the_database_leaves_the_page(
    make_app: t.Any, wechat_api: WeChatAPI, tmp_path: t.Any, caplog: pytest.LogCaptureFixture,
    spa: bool
) -> None:
    """A ``login_failed`` receiver that counts failures in the database (as
    docs/signals.rst suggests) while it is out of reach: the person still gets the page,
    or the answer of a single-page app's receiver connected after it; the log says the
    receiver could not run."""
    from flask import redirect

    from flask_wechat_qr import signals

    app = make_app()
    with app.app_context():
        engine = app.db.engine  # type: ignore[attr-defined]

    def count(_sender: t.Any, **_extra: t.Any) -> None:
        app.db.session.execute(sa.text("SELECT 1"))  # type: ignore[attr-defined]

    def to_the_spa(_sender: t.Any, **_extra: t.Any) -> t.Any:
        return redirect("/spa#failed")

    assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
    with contextlib.ExitStack() as receivers:
        receivers.enter_context(signals.login_failed.connected_to(count, sender=app))
        if spa:
            receivers.enter_context(signals.login_failed.connected_to(to_the_spa, sender=app))
        with database_out_of_reach(engine, tmp_path) as attempts, \
                caplog.at_level(logging.WARNING, logger="flask_wechat_qr"):
            resp = login_with_wechat(app.test_client(), wechat_api, openid=OPENID_B)
    if spa:
        assert resp.status_code == 302 and resp.headers["Location"] == "/spa#failed"
    else:
        assert resp.status_code == 503 and error_name(resp) == "DatabaseUnavailable"
    assert "a wechat-qr-login-failed receiver" in caplog.text
    assert "could not run (OperationalError)" in caplog.text
    assert len(attempts) == 2  # the login's, and the receiver's own


def test_a_databases_own_code_for_no_room_is_an_outage_whatever_its_class(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    """pg8000 gives PostgreSQL's "too many connections" (53300) as a ``DatabaseError``, not
    an ``OperationalError``: the pages of the login still say the database is out of
    reach."""
    app = make_app()

    @app.before_request
    def full() -> None:
        raise sa.exc.DatabaseError(None, None, Exception(
            {"S": "FATAL", "C": "53300", "M": "sorry, too many clients already"}))

    resp = app.test_client().get("/auth/wechat/login")
    assert resp.status_code == 503 and error_name(resp) == "DatabaseUnavailable"


@pytest.mark.parametrize("database", ["postgresql", "mariadb"], indirect=True)
def test_a_purge_on_connections_the_database_closed_lets_the_login_through(
    make_app: t.Any, database: Database, wechat_api: WeChatAPI,
    caplog: pytest.LogCaptureFixture
) -> None:
    """The database restarted (or closed idle connections) without ``pool_pre_ping``, and
    the callback's purge of expired states, due then, is the first to meet a closed
    connection: that is no database out of reach. The purge says so in the log and the
    login goes on, on a new connection."""
    app, name = app_with_named_connections(make_app, database)
    assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
    runtime_of(app).login_states["wechat"].store.purges.next_at = 0
    assert close_connections_of(database, name) >= 1
    with caplog.at_level(logging.WARNING, logger="flask_wechat_qr"):
        resp = login_with_wechat(app.test_client(), wechat_api, openid=OPENID_B)
    assert resp.status_code == 302, error_name(resp)
    assert "could not purge expired login states" in caplog.text
    assert len(all_users(app)) == 2


def refuse_a_statement(db: t.Any, database: Database) -> None:
    """Run what each database refuses with an ``OperationalError`` that is no outage, nor
    a refusal for now (a statement timeout is one since session 37): SQLite's missing
    table, PostgreSQL's program limit (54000), MariaDB's own ``SIGNAL`` (1644)."""
    if database.is_postgres:
        db.session.execute(sa.text("SELECT repeat('xx', 1073741824)"))
    elif database.is_mysql:
        db.session.execute(sa.text("SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused'"))
    else:
        db.session.execute(sa.text("SELECT * FROM nowhere"))


def test_the_sites_own_handler_of_a_database_error_still_answers_it(
    make_app: t.Any, database: Database, wechat_api: WeChatAPI,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """A site's ``app.errorhandler`` for a database error class: a login's error of that
    class that is no outage (a statement the database refuses, an ``OperationalError`` on
    each database) reaches it, on the extension's pages too, as before the extension
    answered outages itself."""
    app = make_app()

    @app.errorhandler(sa.exc.OperationalError)
    def the_sites_page(error: Exception) -> tuple[str, int]:
        return f"the site's own page: {type(error).__name__}", 500

    def create_user(self: t.Any, connection: t.Any, profile: t.Any) -> t.Any:
        refuse_a_statement(app.db, database)  # type: ignore[attr-defined]

    monkeypatch.setattr(AccountAdapter, "create_user", create_user)
    resp = login_with_wechat(app.test_client(), wechat_api)
    assert resp.status_code == 500
    assert resp.get_data(as_text=True) == "the site's own page: OperationalError"


def test_a_database_error_that_is_no_outage_stays_the_sites_500(
    make_app: t.Any, database: Database, wechat_api: WeChatAPI,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a handler of the site's, such an error is a bug to see: the 500, with its
    traceback, as before."""
    app = make_app(PROPAGATE_EXCEPTIONS=False)

    def create_user(self: t.Any, connection: t.Any, profile: t.Any) -> t.Any:
        refuse_a_statement(app.db, database)  # type: ignore[attr-defined]

    monkeypatch.setattr(AccountAdapter, "create_user", create_user)
    logged: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = logged.append  # type: ignore[method-assign]
    app.logger.addHandler(handler)
    resp = login_with_wechat(app.test_client(), wechat_api)
    assert resp.status_code == 500 and error_name(resp) is None
    assert [record.exc_info[0].__name__ for record in logged  # type: ignore[index]
            if record.exc_info] == ["OperationalError"]


def lost_connection() -> sa.exc.OperationalError:
    """What SQLAlchemy raises for a statement on a connection the server closed."""
    return sa.exc.OperationalError("INSERT INTO users ...", {}, Exception(
        "server closed the connection unexpectedly"), connection_invalidated=True)


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
@pytest.mark.parametrize("hosts_write", [False, True], ids=["", "hosts-write"])
def test_a_connection_lost_again_is_a_database_out_of_reach(
    make_app: t.Any, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch,
    hosts_write: bool
) -> None:
    """A first login whose connection is lost under ``create_user``, and lost again when
    the login runs once more on a new one: the database is out of reach, its page. Where
    the request's transaction held the site's own writes, lost with it, the login is not
    run again without them: the "could not save your account" page, as for any other
    failure there."""
    app = make_app()
    if hosts_write:
        host_writes(app, "flushed")
    runs: list[int] = []

    def create_user(self: t.Any, connection: t.Any, profile: t.Any) -> t.Any:
        runs.append(1)
        raise lost_connection()

    monkeypatch.setattr(AccountAdapter, "create_user", create_user)
    resp = login_with_wechat(app.test_client(), wechat_api)
    if hosts_write:
        assert (resp.status_code, error_name(resp), len(runs)) == (500, "AccountNotSaved", 1)
    else:
        assert (resp.status_code, error_name(resp), len(runs)) == (503, "DatabaseUnavailable", 2)


def test_a_purge_of_pending_bindings_that_cannot_reach_the_database_ends_the_login(
    make_app: t.Any, wechat_api: WeChatAPI, tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database went away between a new person's login and the parking of their
    choice (bind or create), when the purge of expired pending bindings was due: the
    purge's failed connection ends the login, one wait, not a second for the parking."""
    from flask_wechat_qr.binding import PendingBindings

    app = ask_app(make_app)
    with app.app_context():
        engine = app.db.engine  # type: ignore[attr-defined]
    purge = PendingBindings.purge_now_and_then
    with contextlib.ExitStack() as outage:
        attempts: list[list[int]] = []

        def purge_as_it_goes(self: t.Any) -> None:
            attempts.append(outage.enter_context(database_out_of_reach(engine, tmp_path)))
            self.purges.next_at = 0
            purge(self)

        monkeypatch.setattr(PendingBindings, "purge_now_and_then", purge_as_it_goes)
        resp = login_with_wechat(app.test_client(), wechat_api)
        assert attempts == [[1]]
    assert resp.status_code == 503 and error_name(resp) == "DatabaseUnavailable"


# --- sessions that begin no transaction --------------------------------------------------


def test_sessions_without_autobegin_are_refused_at_start(tmp_path: t.Any) -> None:
    """``SQLAlchemy(session_options={"autobegin": False})``: every login was a 500
    ("Autobegin is disabled on this Session"). The start says so, with the fix."""
    from flask_login import LoginManager, UserMixin
    from flask_sqlalchemy import SQLAlchemy

    db = SQLAlchemy(session_options={"autobegin": False})

    class Member(db.Model, UserMixin):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)

    app = Flask("no_autobegin")
    app.config.update(SECRET_KEY="k", SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'x.db'}",
                      WECHAT_QR_APP_ID="wx1111111111111111", WECHAT_QR_APP_SECRET="s")
    db.init_app(app)
    LoginManager(app)
    with pytest.raises(ConfigurationError) as info:
        WeChatQR(app, db=db, user_model=Member)
    assert info.value.key == "db" and "autobegin" in str(info.value)
    assert re.search(r"Leave autobegin on", info.value.fix)


def test_other_session_options_and_hooks_keep_every_login(
    make_app: t.Any, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No autoflush, no expiry at commit, and a host that rolls its session back after
    every request: a first login, a returning one and a link are all kept."""
    import support
    from flask_sqlalchemy import SQLAlchemy

    monkeypatch.setattr(support, "SQLAlchemy", lambda: SQLAlchemy(session_options={
        "autoflush": False, "expire_on_commit": False}))
    app = make_app()
    db = app.db  # type: ignore[attr-defined]

    @app.after_request
    def roll_back(response: t.Any) -> t.Any:
        db.session.rollback()
        return response

    people(wechat_api)
    assert logins_at_once(app, ["P1-a"]) == [302]
    assert logins_at_once(app, ["P1-b"]) == [302]
    alice = add_user(app, username="alice")
    browser = app.test_client()
    log_in(browser, alice)
    state = start_link(browser)
    linked = browser.get("/auth/wechat/callback", query_string={"code": "P2-a",
                                                                "state": state})
    assert linked.status_code == 302
    assert sorted((i.openid, i.user_id) for i in all_identities(app)) == [
        (person(1)[0], str(all_users(app)[0].id)), (person(2)[0], str(alice))]



# --- a host's own writes before the login ------------------------------------------------


def host_writes(app: Flask, how: str) -> Flask:
    """A host that writes in its ``before_request`` of the callback (a visit, an audit line,
    a last-seen time) and commits nothing itself: an added row, flushed; or an ``UPDATE``
    run through ``db.session.execute``; or an added row left for the next flush."""
    db, User = app.db, app.User  # type: ignore[attr-defined]

    @app.before_request
    def write_first() -> None:
        if not request.path.endswith("/callback"):
            return
        if how == "executed":
            db.session.execute(sa.update(User).values(nickname="seen"))
        db.session.add(User(username=f"visitor-{secrets.token_hex(4)}"))
        if how != "pending":
            db.session.flush()

    return app


def committed_users(app: Flask) -> int:
    """Users another connection sees (committed ones)."""
    db, User = app.db, app.User  # type: ignore[attr-defined]
    with db.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(User.__table__))
                   .scalar_one())


T = t.TypeVar("T")


def first_login_looking_at_wechat(
    app: Flask, api: WeChatAPI, look: t.Callable[[], T]
) -> tuple[t.Any, list[T]]:
    """A first login of simulated person 1 on ``app``; ``look`` is called while WeChat is
    asked for the token (the login's transaction still open). The callback's answer and
    what ``look`` saw."""
    seen: list[T] = []

    def token(request: t.Any) -> t.Any:
        seen.append(look())
        return wechat_body(token_answer(1))

    answer_with(api, TOKEN_PATH, token)
    answer_with(api, USERINFO_PATH, lambda request: wechat_body(profile_answer(1)))
    browser = app.test_client()
    state = start_login(browser, next="/welcome")
    done = browser.get("/auth/wechat/callback", query_string={"code": "P1-a", "state": state})
    return done, seen


def assert_committed_with_the_login(app: Flask, wechat_api: WeChatAPI) -> None:
    """A first login on ``app`` (whose host writes before it): while WeChat is asked, no
    user is committed yet (the host's write waits for the login's commit); after, the
    host's user and the WeChat user both are."""
    def users_committed() -> int:
        with app.app_context():
            return committed_users(app)

    done, seen_by_wechat = first_login_looking_at_wechat(app, wechat_api, users_committed)
    assert done.status_code == 302 and seen_by_wechat == [0]
    assert len(all_users(app)) == 2  # the visitor and the WeChat user


@pytest.mark.parametrize("how", ["flushed", "executed", "pending"])
def test_the_hosts_writes_are_committed_with_the_login_not_before(
    make_app: t.Any, wechat_api: WeChatAPI, how: str
) -> None:
    """A host that wrote before the login (its ``before_request``): the extension ended the
    request's transaction before calling WeChat, taking flushed writes for reads, and
    committed them there, before the login had done anything. They are committed with the
    login's own commit, as they always were."""
    assert_committed_with_the_login(host_writes(make_app(), how), wechat_api)


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
@pytest.mark.parametrize("how", ["select-of-cte", "cte-added", "where-in", "text"])
def test_the_hosts_write_in_a_common_table_expression_is_committed_with_the_login(
    make_app: t.Any, database: Database, wechat_api: WeChatAPI, how: str
) -> None:
    """A host whose ``before_request`` writes with PostgreSQL's data-modifying ``WITH``
    (``sa.select(sa.insert(...).returning(...).cte())``, or the ``INSERT`` added to a
    ``SELECT`` with ``add_cte``, or used only in a subquery of an ORM query's ``WHERE``,
    or as SQL text): the construct was taken for a read, and the extension committed the
    host's row before calling WeChat. It is committed with the login's own commit, as the
    host's other writes are."""
    app = make_app()
    db, User = app.db, app.User  # type: ignore[attr-defined]
    users = User.__table__

    @app.before_request
    def write_first() -> None:
        if not request.path.endswith("/callback"):
            return
        name = f"visitor-{secrets.token_hex(4)}"
        if how == "text":
            db.session.execute(sa.text(
                f"WITH made AS (INSERT INTO {quoted(app, 'user')} (username) VALUES (:name) "
                "RETURNING id) SELECT id FROM made"), {"name": name})
            return
        made = sa.insert(users).values(username=name).returning(users.c.id).cte("made")
        if how == "where-in":  # the ORM query of a host: its users just made
            db.session.scalars(sa.select(User).where(User.id.in_(sa.select(made.c.id)))).all()
            return
        db.session.execute(sa.select(made) if how == "select-of-cte"
                           else sa.select(sa.literal(1)).add_cte(made))

    assert_committed_with_the_login(app, wechat_api)


def test_a_session_the_host_made_after_init_app_keeps_its_flushed_writes(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    """A host (a test fixture, often) that replaced ``db.session`` after ``init_app``: its
    sessions were not watched, so a flush looked like reads and was committed before WeChat
    was called. Where nothing watches the session, its transaction is left as it is."""
    app = make_app()
    db = app.db  # type: ignore[attr-defined]
    db.session = db._make_scoped_session({})  # a new sessionmaker: a class of its own
    assert_committed_with_the_login(host_writes(app, "flushed"), wechat_api)


@pytest.mark.parametrize("database", ["postgresql", "mariadb"], indirect=True)
@pytest.mark.parametrize("how", ["flushed", "executed"])
def test_a_failed_login_never_commits_the_hosts_writes(
    make_app: t.Any, database: Database, wechat_api: WeChatAPI, how: str
) -> None:
    """The host wrote in its ``before_request`` and commits nothing itself: a login that
    fails (WeChat refuses the code) leaves its writes uncommitted, as the host left them;
    the extension committed them. (SQLite: the record of the failure, on a connection of
    its own, waits for the host's write lock, see the docs: not tried here.)"""
    app = host_writes(make_app(), how)
    add_user(app, username="alice")
    answer_with(wechat_api, TOKEN_PATH, lambda request: wechat_body(
        {"errcode": 40029, "errmsg": "invalid code"}))
    browser = app.test_client()
    state = start_login(browser, next="/welcome")
    failed = browser.get("/auth/wechat/callback", query_string={"code": "P1-a",
                                                                "state": state})
    assert failed.status_code == 400
    assert [(user.username, user.nickname) for user in all_users(app)] == [("alice", None)]


@pytest.mark.parametrize("database", ["postgresql", "mariadb"], indirect=True)
def test_a_login_tried_again_never_drops_the_hosts_writes(
    make_app: t.Any, database: Database, wechat_api: WeChatAPI
) -> None:
    """Two first logins of one person at once, in requests where the host flushed a row of
    its own first: the loser's transaction (the unique identity refused) was rolled back,
    the host's row with it, and the login run again and committed without it: both 302,
    one row. A login is not run again without the host's writes: the loser says the
    account could not be saved, and every request that logged in kept its row. (Not on
    SQLite: one writer at a time, the host's flush holds it.)"""
    app = host_writes(make_app(), "flushed")
    gate = people(wechat_api, meet=2)
    statuses = logins_at_once(app, ["P1-a", "P1-b"])
    assert not gate.broken and sorted(statuses) == [302, 500]
    visitors = [user for user in all_users(app) if user.username]
    assert len(visitors) == 1 and len(all_identities(app)) == 1


@pytest.mark.parametrize("database", ["postgresql", "mariadb"], indirect=True)
def test_guesses_at_once_never_drop_the_hosts_writes(
    make_app: t.Any, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four wrong passwords at the same moment under ``SERIALIZABLE``, on a site whose
    ``before_request`` flushes a row of its own (a visit): an attempt's count that the
    database rolled back for another's sake took the host's row with it, and was counted
    again without it (four "wrong password" pages, fewer rows). It is not counted again
    where the transaction held the host's writes: every request that answered kept its
    row. (Not on SQLite: one writer at a time, the host's flush holds it.)"""
    app = ask_app(make_app, SQLALCHEMY_ENGINE_OPTIONS={"isolation_level": "SERIALIZABLE"})
    app.config["PROPAGATE_EXCEPTIONS"] = False  # the database's refusal: a 500, as served
    db, User = app.db, app.User  # type: ignore[attr-defined]

    @app.before_request
    def visit() -> None:
        if request.method == "POST" and request.path == "/auth/bind":
            db.session.add(User(username=f"visitor-{secrets.token_hex(4)}"))
            db.session.flush()

    add_user(app, username="alice", password="alice-pw")
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)

    statuses = guesses_at_once(app, client, token, monkeypatch)
    assert set(statuses) <= {400, 500}, statuses
    visitors = [user for user in all_users(app) if user.username.startswith("visitor-")]
    assert len(visitors) == statuses.count(400), statuses


#: What a host's ``before_request`` takes that lasts until its transaction ends, though its
#: statement is a ``SELECT``: a row lock (SQL text, the ORM's ``with_for_update``), a
#: PostgreSQL transaction-level advisory lock, a table made by PostgreSQL's SELECT INTO.
HELD_UNTIL_COMMIT = {
    "for-update-text": lambda db, User, table, key: db.session.execute(sa.text(
        f"SELECT id FROM {table} WHERE id = :id FOR UPDATE"), {"id": key}),
    "for-share-orm": lambda db, User, table, key: db.session.execute(
        sa.select(User).where(User.id == key).with_for_update(read=True)).all(),
    "advisory-xact-lock": lambda db, User, table, key: db.session.execute(sa.text(
        "SELECT pg_advisory_xact_lock(:key)"), {"key": key}),
    "advisory-xact-lock-orm": lambda db, User, table, key: db.session.execute(
        sa.select(sa.func.pg_advisory_xact_lock(key))),
    "select-into": lambda db, User, table, key: db.session.execute(sa.text(
        f"SELECT id INTO visit_{key} FROM {table} WHERE id = :id"), {"id": key}),
}


def held_by_another(app: Flask, how: str, key: int) -> bool:
    """Whether what :data:`HELD_UNTIL_COMMIT` ``how`` took is held yet (uncommitted), seen
    from another connection without waiting."""
    table = quoted(app, "user")
    with app.app_context(), app.db.engine.connect() as conn:  # type: ignore[attr-defined]
        if how.startswith("advisory-xact-lock"):
            return not conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:key)"),
                                    {"key": key}).scalar()
        if how == "select-into":
            return conn.execute(sa.text("SELECT to_regclass(:name)"),
                                {"name": f"visit_{key}"}).scalar() is None
        try:
            conn.execute(sa.text(f"SELECT id FROM {table} WHERE id = :id FOR UPDATE NOWAIT"),
                         {"id": key})
        except sa.exc.OperationalError:
            return True
        return False


@pytest.mark.parametrize(("database", "how"), [
    ("postgresql", "for-update-text"), ("mariadb", "for-update-text"),
    ("postgresql", "for-share-orm"), ("mariadb", "for-share-orm"),
    ("postgresql", "advisory-xact-lock"), ("postgresql", "advisory-xact-lock-orm"),
    ("postgresql", "select-into"),
], indirect=["database"])
def test_what_the_hosts_select_holds_until_its_commit_stays_held(
    make_app: t.Any, database: Database, wechat_api: WeChatAPI, how: str
) -> None:
    """A host whose ``before_request`` locks a row (``SELECT ... FOR UPDATE``, as SQL text or
    the ORM's ``with_for_update``), takes a transaction's advisory lock or makes a table
    with ``SELECT ... INTO``, then reaches the login: the extension took that ``SELECT``
    for a read, and ended the transaction before calling WeChat, releasing the lock (and
    committing the table) while the host still counted on it. It stays held, as the host's
    writes do, until the login's commit. (SQLite locks no rows.)"""
    app = make_app()
    db, User = app.db, app.User  # type: ignore[attr-defined]
    key = add_user(app, username="alice")
    take = HELD_UNTIL_COMMIT[how]

    @app.before_request
    def lock_first() -> None:
        if request.path.endswith("/callback"):
            take(db, User, quoted(app, "user"), key)

    done, held_while_wechat_answers = first_login_looking_at_wechat(
        app, wechat_api, lambda: held_by_another(app, how, key))
    assert done.status_code == 302 and held_while_wechat_answers == [True]
    assert not held_by_another(app, how, key)  # the login's commit ended the transaction


# --- a host's own writes before a repeated callback ----------------------------------------


def host_writes_when_asked(app: Flask) -> Flask:
    """A host whose ``before_request`` of a callback sent with ``X-Visit`` reads (a count of
    its users: a setting, a quota) then writes a row of its own and flushes it, and whose
    ``after_request`` reads its logged-in user (for its log) and commits only a request
    sent with ``X-Commit``: what the host commits is its own business."""
    db, User = app.db, app.User  # type: ignore[attr-defined]

    @app.before_request
    def visit() -> None:
        if request.path.endswith("/callback") and request.headers.get("X-Visit"):
            db.session.execute(sa.select(sa.func.count()).select_from(User.__table__))
            db.session.add(User(username=f"visitor-{secrets.token_hex(4)}"))
            db.session.flush()

    @app.after_request
    def commit_when_asked(response: t.Any) -> t.Any:
        if current_user.is_authenticated:
            response.headers["X-User"] = str(current_user.id)
        if request.headers.get("X-Commit"):
            db.session.commit()
        return response

    return app


def double_redirect_beside_host_writes(
    app: Flask, api: WeChatAPI, headers: dict[str, str]
) -> tuple[t.Any, t.Any, list[t.Any]]:
    """WeChat's double redirect of one login, its second request sent with ``headers``
    (:func:`host_writes_when_asked`'s): WeChat answers the first request's code only once
    the second has asked (after its host's ``before_request``) and been told the code was
    used. The browser, its twin (the second) and their answers."""
    browser = app.test_client()
    state = start_login(browser, next="/welcome")
    twin = browser_copy(app, browser)
    host_wrote = threading.Event()

    def token(request: t.Any) -> t.Any:
        if request.params["code"] == "first":
            assert host_wrote.wait(timeout=10)  # WeChat answers once the second has written
            return wechat_body(TOKEN_ANSWER)
        host_wrote.set()  # the second asks WeChat after its host's before_request
        return wechat_body(CODE_USED_ANSWER)

    answer_with(api, TOKEN_PATH, token)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(browser.get, "/auth/wechat/callback",
                            query_string={"code": "first", "state": state})
        second = pool.submit(twin.get, "/auth/wechat/callback",
                             query_string={"code": "second", "state": state}, headers=headers)
        return browser, twin, [first.result(timeout=30), second.result(timeout=30)]


def visitors(app: Flask) -> int:
    return sum(1 for user in all_users(app) if (user.username or "").startswith("visitor-"))


def test_a_repeated_callback_leaves_the_hosts_writes_to_the_host(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    """A callback sent again after its login ended (the cookie from before the first
    answer, as WeChat's second redirect or a replay carries it), in a request whose host
    wrote before it and commits nothing: the extension committed the host's row to read
    the first request's user afresh. The browser is logged in again, and the row is the
    host's: gone with its uncommitted transaction, kept where the host commits it."""
    app = host_writes_when_asked(make_app())
    each_code_once(wechat_api)
    answer_with(wechat_api, USERINFO_PATH, lambda request: wechat_body(PROFILE_ANSWER))
    browser = app.test_client()
    state = start_login(browser, next="/welcome")
    replays = [browser_copy(app, browser) for _ in range(2)]  # the pre-login cookie
    query = {"code": "0816AbREPLAY", "state": state}
    assert browser.get("/auth/wechat/callback", query_string=query).status_code == 302
    (user,) = all_users(app)
    for replay, commits in zip(replays, (False, True), strict=True):
        headers = {"X-Visit": "1", **({"X-Commit": "1"} if commits else {})}
        again = replay.get("/auth/wechat/callback", query_string=query, headers=headers)
        assert again.status_code == 302 and again.headers["Location"] == "/welcome"
        assert logged_in_user_id(replay) == str(user.id)
        assert visitors(app) == int(commits)


@pytest.mark.parametrize("database", ["postgresql", "mariadb"], indirect=True)
@pytest.mark.parametrize("commits", [False, True], ids=["host-commits-nothing", "host-commits"])
def test_a_repeated_callback_beside_the_hosts_writes_sees_the_other_requests_login(
    make_app: t.Any, database: Database, wechat_api: WeChatAPI,
    monkeypatch: pytest.MonkeyPatch, commits: bool
) -> None:
    """WeChat's double redirect, its second request in a site whose ``before_request`` read
    the database and wrote a row before the first request committed the new user: on
    MariaDB (REPEATABLE READ) that transaction's reads show the database as it was then,
    without the user. The extension committed the host's row to see the user; it leaves
    the row to the host (uncommitted, or committed by the host), logs the browser in as
    that user all the same, and undoes only what the site's ``login_user`` recorded of the
    repeat (login tracking: the first request recorded the login)."""
    real_login_user = AccountAdapter.login_user

    def tracking(self: t.Any, user: t.Any) -> None:
        real_login_user(self, user)
        user.nickname = f"{user.nickname}+"  # one "+" a login

    monkeypatch.setattr(AccountAdapter, "login_user", tracking)
    app = host_writes_when_asked(make_app(WECHAT_QR_CODE_USED_WAIT=10))
    answer_with(wechat_api, USERINFO_PATH, lambda request: wechat_body(PROFILE_ANSWER))
    headers = {"X-Visit": "1", **({"X-Commit": "1"} if commits else {})}
    browser, twin, answers = double_redirect_beside_host_writes(app, wechat_api, headers)
    assert [answer.status_code for answer in answers] == [302, 302]
    assert visitors(app) == int(commits)
    (user,) = [user for user in all_users(app) if not (user.username or "").startswith("visitor-")]
    assert logged_in_user_id(twin) == logged_in_user_id(browser) == str(user.id)
    assert user.nickname == f"{PROFILE_ANSWER['nickname']}+"


@pytest.mark.parametrize("database", ["mariadb"], indirect=True)
def test_a_repeated_callback_of_a_returning_person_locks_nothing(
    make_app: t.Any, database: Database, wechat_api: WeChatAPI
) -> None:
    """WeChat's double redirect of a person who logged in before, its second request in a
    site whose ``before_request`` read and wrote: on MariaDB the repeat read the person's
    user with a locking read (``LOCK IN SHARE MODE``), whose lock lasted to the end of the
    site's transaction, and another request's update of that user (the first request's
    login tracking, a profile edit) waited for it, or deadlocked. The user is found in the
    transaction's snapshot (it was there before): read without a lock. Only a user made
    after that snapshot (a first login's) is looked for with one."""
    app = host_writes_when_asked(make_app(WECHAT_QR_CODE_USED_WAIT=10))
    db = app.db  # type: ignore[attr-defined]
    answer_with(wechat_api, USERINFO_PATH, lambda request: wechat_body(PROFILE_ANSWER))
    answer_with(wechat_api, TOKEN_PATH, lambda request: wechat_body(TOKEN_ANSWER))
    table = app.User.__table__.name  # type: ignore[attr-defined]
    updates_waited: list[bool] = []
    the_user: list[t.Any] = []

    @app.after_request
    def update_the_user_elsewhere(response: t.Any) -> t.Any:
        """Before the site's transaction ends: another connection updates the user, and
        gives up after a second where a lock holds it."""
        if request.headers.get("X-Visit"):
            with db.engine.connect() as other:
                other.execute(sa.text("SET SESSION innodb_lock_wait_timeout = 1"))
                try:
                    other.execute(sa.text(f"UPDATE `{table}` SET nickname = nickname "
                                          "WHERE id = :id"), {"id": the_user[0]})
                    other.commit()
                    updates_waited.append(False)
                except sa.exc.OperationalError as error:
                    assert "1205" in str(error)  # Lock wait timeout exceeded
                    updates_waited.append(True)
        return response

    first_login = app.test_client()
    first_state = start_login(first_login)
    assert first_login.get("/auth/wechat/callback", query_string={
        "code": "0816AbFIRST", "state": first_state}).status_code == 302  # first login
    (user,) = all_users(app)
    the_user.append(user.id)
    browser, twin, answers = double_redirect_beside_host_writes(
        app, wechat_api, {"X-Visit": "1"})
    assert [answer.status_code for answer in answers] == [302, 302]
    assert logged_in_user_id(twin) == logged_in_user_id(browser) == str(user.id)
    assert updates_waited == [False]


#: A site's ``login_user`` that ends the request's transaction itself, as it logs in: it
#: commits its login tracking (Flask-AppBuilder's ``update_user_auth_stat``), or rolls back.
ENDS_THE_TRANSACTION = {
    "commits": lambda db: db.session.commit(),
    "rolls-back": lambda db: db.session.rollback(),
}


@pytest.mark.parametrize("hook", list(ENDS_THE_TRANSACTION))
def test_a_repeated_callback_logs_in_where_login_user_ends_the_transaction(
    make_app: t.Any, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch, hook: str
) -> None:
    """A callback sent again after its login ended, in a request whose host wrote before
    it, and a site's ``login_user`` that commits by itself (or rolls back): the savepoint
    around the hook was gone with the transaction, and rolling it back was a 500
    ("This transaction is closed"). The browser is logged in; what the hook committed is
    committed (the host's row with it), what it rolled back is gone, at both requests."""
    app = host_writes_when_asked(make_app())
    db = app.db  # type: ignore[attr-defined]
    real_login_user = AccountAdapter.login_user

    def ending_the_transaction(self: t.Any, user: t.Any) -> None:
        real_login_user(self, user)
        user.nickname = f"{user.nickname}+"  # one "+" a login
        ENDS_THE_TRANSACTION[hook](db)

    monkeypatch.setattr(AccountAdapter, "login_user", ending_the_transaction)
    each_code_once(wechat_api)
    answer_with(wechat_api, USERINFO_PATH, lambda request: wechat_body(PROFILE_ANSWER))
    browser = app.test_client()
    state = start_login(browser, next="/welcome")
    replay = browser_copy(app, browser)  # the pre-login cookie
    query = {"code": "0816AbREPLAY", "state": state}
    assert browser.get("/auth/wechat/callback", query_string=query).status_code == 302
    again = replay.get("/auth/wechat/callback", query_string=query, headers={"X-Visit": "1"})
    assert again.status_code == 302 and again.headers["Location"] == "/welcome"
    (user,) = [user for user in all_users(app) if not (user.username or "").startswith("visitor-")]
    assert logged_in_user_id(replay) == str(user.id)
    committed = hook == "commits"
    assert visitors(app) == int(committed)
    assert user.nickname == PROFILE_ANSWER["nickname"] + "++" * committed


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_repeated_callback_whose_login_user_breaks_waits_for_nothing(
    make_app: t.Any, database: Database, wechat_api: WeChatAPI,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A site's ``login_user`` that breaks at a repeated callback, in a request whose host
    wrote before it, on SQLite: the 500's record of the failure (a connection of its own)
    waited for the write lock the request itself held (the host's row, kept after the
    savepoint's rollback): the SQLite timeout (5 s), then "could not record" in the log.
    The request's transaction is rolled back first, as at a first login's."""
    app = host_writes_when_asked(make_app(PROPAGATE_EXCEPTIONS=False))
    real_login_user = AccountAdapter.login_user
    logins = []

    def breaking_at_the_second(self: t.Any, user: t.Any) -> None:
        real_login_user(self, user)
        logins.append(user)
        if len(logins) == 2:
            raise RuntimeError("the site's login_user broke")

    monkeypatch.setattr(AccountAdapter, "login_user", breaking_at_the_second)
    each_code_once(wechat_api)
    answer_with(wechat_api, USERINFO_PATH, lambda request: wechat_body(PROFILE_ANSWER))
    browser = app.test_client()
    state = start_login(browser, next="/welcome")
    replay = browser_copy(app, browser)
    query = {"code": "0816AbREPLAY", "state": state}
    assert browser.get("/auth/wechat/callback", query_string=query).status_code == 302
    with caplog.at_level(logging.ERROR, logger="flask_wechat_qr"):
        again = replay.get("/auth/wechat/callback", query_string=query,
                           headers={"X-Visit": "1"})
    assert again.status_code == 500 and len(logins) == 2
    assert "could not record" not in caplog.text, caplog.text
    assert visitors(app) == 0


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_setting_of_the_hosts_transaction_lasts_through_the_login(
    make_app: t.Any, database: Database, wechat_api: WeChatAPI,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host that sets its tenant for the request's transaction (PostgreSQL's
    ``set_config(name, value, true)``, as row-level security asks, ``SET LOCAL`` taking no
    bound value): the extension took that ``SELECT`` for a read and ended the transaction
    before calling WeChat, and the login's statements (the site's ``create_user`` among
    them) ran without the tenant. It lasts until the login's commit."""
    app = make_app()
    db = app.db  # type: ignore[attr-defined]

    @app.before_request
    def set_tenant() -> None:
        db.session.execute(sa.text("SELECT set_config('wechat_qr_test.tenant', :tenant, true)"),
                           {"tenant": "acme"})

    tenants: list[str | None] = []
    real_create_user = AccountAdapter.create_user

    def create_user(self: t.Any, connection: t.Any, profile: t.Any) -> t.Any:
        tenants.append(db.session.execute(sa.text(
            "SELECT current_setting('wechat_qr_test.tenant', true)")).scalar())
        return real_create_user(self, connection, profile)

    monkeypatch.setattr(AccountAdapter, "create_user", create_user)
    people(wechat_api)
    assert logins_at_once(app, ["P1-a"]) == [302]
    assert tenants == ["acme"]


def test_a_hosts_read_whose_text_says_into_is_a_read(make_app: t.Any,
                                                     wechat_api: WeChatAPI) -> None:
    """A host whose read at the start of every request has "into" in a string literal (a
    banner, "Log into ..."): taken for PostgreSQL's ``SELECT ... INTO``, it counted as the
    host's writes, and on a pool of one connection each step that takes a connection of
    its own beside the request's (SQLite's trigger check, a long next parked) waited
    ``pool_timeout`` for itself, then failed. Words in literals, quoted names and comments
    say nothing."""
    app = make_app(SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0,
                                              "pool_timeout": 1})
    db = app.db  # type: ignore[attr-defined]

    @app.before_request
    def read_banner() -> None:
        db.session.execute(sa.text("SELECT 'Log into the site with WeChat' AS banner"))

    assert_one_connection_serves_a_parked_login(app, wechat_api)


def assert_one_connection_serves_a_parked_login(app: Flask, wechat_api: WeChatAPI) -> None:
    """A first login with a next too long for the cookie (parked: a connection of its own
    beside the request's) ends where it should, without waiting ``pool_timeout``."""
    people(wechat_api)
    long_next = "/welcome?" + "x" * 400  # too long for the cookie: parked
    browser = app.test_client()
    state = start_login(browser, next=long_next)
    done = browser.get("/auth/wechat/callback", query_string={"code": "P1-a", "state": state})
    assert done.status_code == 302 and done.headers["Location"] == long_next


#: Reads of a host that do not begin with SELECT, by the databases that know them.
READS_OF_OTHER_SHAPES = {
    "with-select": "WITH banner AS (SELECT 'Log in with WeChat' AS text) SELECT text "
                   "FROM banner",
    "values": "VALUES (1)",
    "pragma-table-info": "PRAGMA table_info(wechat_qr_identity)",
    "pragma-foreign-keys": "PRAGMA foreign_keys",
}


@pytest.mark.parametrize(("database", "how"), [
    ("sqlite", "with-select"), ("postgresql", "with-select"), ("mariadb", "with-select"),
    ("sqlite", "values"), ("postgresql", "values"), ("mariadb", "values"),
    ("sqlite", "pragma-table-info"), ("sqlite", "pragma-foreign-keys"),
], indirect=["database"])
def test_a_hosts_read_of_another_shape_is_a_read(make_app: t.Any, database: Database,
                                                 wechat_api: WeChatAPI, how: str) -> None:
    """A host whose read at the start of every request is a ``WITH ... SELECT``, a
    ``VALUES`` or (SQLite) a pragma that reads: it counted as the host's writes, and the
    request's transaction was kept across WeChat's call, holding its connection (and a
    snapshot; on SQLite outside WAL a lock every writer waits for): on a pool of one
    connection a login whose next is parked waited ``pool_timeout`` for itself, then
    failed. It is ended as a ``SELECT``'s is."""
    app = make_app(SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0,
                                              "pool_timeout": 1})
    db = app.db  # type: ignore[attr-defined]

    @app.before_request
    def read_first() -> None:
        db.session.execute(sa.text(READS_OF_OTHER_SHAPES[how]))

    assert_one_connection_serves_a_parked_login(app, wechat_api)
