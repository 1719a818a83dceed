"""write_turns: on SQLite the logins of one process write in turns, each from its first
write to the end of its transaction; never on other databases, never a transaction that
wrote before it was given turns, and a turn is always given back."""

from __future__ import annotations

import contextlib
import logging
import secrets
import sqlite3
import threading
import types
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask
from promises.test_database_settings import host_writes, logins_at_once, people
from support import (
    OPENID,
    UNIONID,
    USERINFO_PATH,
    WeChatAPI,
    add_user,
    all_users,
    answer_with,
    csrf_token_of,
    error_name,
    finish_login,
    host_app,
    link_identity,
    log_in,
    login_with_wechat,
    set_journal_mode,
    start_login,
    wechat_body,
)

from flask_wechat_qr import AccountAdapter, write_turns


def turns(app: Flask) -> t.Any:
    """The lock of the app's engine that the logins of this process take turns on."""
    with app.app_context():
        return write_turns.turns_of(app.extensions["sqlalchemy"].engine)


def writes_seen(app: Flask) -> list[tuple[str, bool]]:
    """Every write statement run on the app's engine from now on (its first word and
    table), and whether the engine's turn was held by a login while it ran."""
    with app.app_context():
        engine = app.extensions["sqlalchemy"].engine
    seen: list[tuple[str, bool]] = []

    def before(_conn: t.Any, _cursor: t.Any, statement: str, *_args: t.Any) -> None:
        words = statement.split()
        if words[0] in ("INSERT", "UPDATE", "DELETE"):
            table = words[2] if words[0] != "UPDATE" else words[1]
            lock = write_turns.turns_of(engine)
            seen.append((f"{words[0]} {table.strip(chr(34))}",
                         lock is not None and lock.locked()))

    sa.event.listen(engine, "before_cursor_execute", before)
    return seen


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_logins_at_once_never_meet_sqlites_lock(make_app: t.Any,
                                                wechat_api: WeChatAPI) -> None:
    """SQLite's busy timeout at 0: a connection that finds another writing fails at once
    ("database is locked") instead of polling for the lock. Eight first logins whose
    profiles come back together (each then writes its user, identity and used state at the
    same moment) all succeed: each waited for its turn, none for SQLite's lock. Before,
    most of them failed."""
    app = make_app(SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"timeout": 0}})
    set_journal_mode(app, "wal")  # readers never hold a writer back: only writers meet
    meet = people(wechat_api, meet=8)
    statuses = logins_at_once(app, [f"P{n}-a" for n in range(8)])
    assert not meet.broken
    assert statuses == [302] * 8
    assert len(all_users(app)) == 8
    assert not turns(app).locked()


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_every_write_of_a_login_is_made_in_its_turn(make_app: t.Any,
                                                    wechat_api: WeChatAPI) -> None:
    """A first login (its user, identity and used state written by a flush and a statement
    on the connection) and a returning one (only its used state, no flush): each write of
    the login's transaction runs while the turn is held, and the turn is free after."""
    app = make_app()
    browser = app.test_client()
    seen = writes_seen(app)
    assert login_with_wechat(browser, wechat_api).status_code == 302
    first = list(seen)
    seen.clear()
    assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
    returning = list(seen)
    assert {write for write, _ in first} >= {
        "INSERT user", "INSERT wechat_qr_identity", "INSERT wechat_qr_login_state"}
    # The first callback's purge of expired states runs on a connection of its own.
    login_writes = [(write, held) for write, held in first
                    if write != "DELETE wechat_qr_login_state"]
    assert all(held for _, held in login_writes), first
    assert returning == [("INSERT wechat_qr_login_state", True)]
    assert not turns(app).locked()


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_turn_is_given_back_when_the_login_fails_after_writing(
    make_app: t.Any, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A login whose adapter breaks after its user was flushed (the turn taken) ends in an
    error page; the rollback gives the turn back, and the next login writes at once."""
    app = make_app()
    real_create_user = AccountAdapter.create_user

    def create_user_then_break(self: t.Any, connection: t.Any, profile: t.Any) -> t.Any:
        user = real_create_user(self, connection, profile)
        app.db.session.add(user)  # type: ignore[attr-defined]
        app.db.session.flush()  # type: ignore[attr-defined]
        assert turns(app).locked()  # the flush took the turn
        raise RuntimeError("the site's own code broke after writing")

    monkeypatch.setattr(AccountAdapter, "create_user", create_user_then_break)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    broken = login_with_wechat(app.test_client(), wechat_api)
    assert broken.status_code == 500
    assert not turns(app).locked()
    monkeypatch.setattr(AccountAdapter, "create_user", real_create_user)
    assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
    assert not turns(app).locked()


@contextlib.contextmanager
def turn_held_elsewhere(app: Flask) -> t.Iterator[None]:
    """Another thread holds the app's turn throughout (as a login of this process that is
    writing would)."""
    lock = turns(app)
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            done.wait(timeout=30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(timeout=10)
        yield
    finally:
        done.set()
        holder.join(timeout=10)


def writes_in_create_user(app: Flask) -> None:
    """``create_user`` writes a row of its own on the session's connection, which the
    session does not see: ``sqlite3`` begins its transaction, and takes SQLite's lock, then."""
    real_create_user = AccountAdapter.create_user
    db, User = app.db, app.User  # type: ignore[attr-defined]

    def create_user(self: t.Any, connection: t.Any, profile: t.Any) -> t.Any:
        db.session.connection().execute(sa.insert(User.__table__).values(
            username=f"audit-{secrets.token_hex(4)}"))
        return real_create_user(self, connection, profile)

    app.extensions["wechat_qr"].adapter.create_user = types.MethodType(
        create_user, app.extensions["wechat_qr"].adapter)


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
@pytest.mark.parametrize("how", ["flushed", "executed", "unseen", "first-read"])
def test_a_login_that_may_hold_sqlites_lock_never_waits_for_a_turn(
    make_app: t.Any, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A login whose connection may hold SQLite's lock already: the host's
    ``before_request`` wrote (flushed, or executed), its ``create_user`` wrote on the
    session's connection (unseen by the session), or the host begins transactions at their
    first read. Waiting for the turn would keep the turn's holder waiting for that lock (a
    stall of the turn's timeout, or a failed login); such a login takes the turn only if it
    is free, and here, held by another thread, writes without it at once."""
    app = make_app()
    if how in ("flushed", "executed"):
        host_writes(app, how)
    elif how == "unseen":
        writes_in_create_user(app)
    else:
        set_journal_mode(app, "wal")
        begin_at_the_first_read(app)
    # A first login makes the engine's turns.
    assert login_with_wechat(app.test_client(), wechat_api, openid="o-first").status_code == 302
    monkeypatch.setattr(write_turns, "TURN_TIMEOUT", 60)  # a wait would outlast the test
    answers: list[t.Any] = []
    with turn_held_elsewhere(app):
        login = threading.Thread(target=lambda: answers.append(
            login_with_wechat(app.test_client(), wechat_api)))
        login.start()
        login.join(timeout=20)
        waited = login.is_alive()
    login.join(timeout=60)
    assert not waited and answers[0].status_code == 302, error_name(answers[0])


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_an_unlink_writes_in_its_turn(make_app: t.Any, wechat_api: WeChatAPI) -> None:
    """An unlink's first write is an ORM ``UPDATE`` through ``session.execute`` (no flush):
    it too is made in the turn."""
    app = host_app(make_app)
    alice = add_user(app, username="alice", password="pw")
    link_identity(app, alice)
    client = app.test_client()
    log_in(client, alice)
    assert login_with_wechat(app.test_client(), wechat_api, openid="o-other").status_code == 302
    seen = writes_seen(app)
    resp = client.post("/auth/wechat/unlink", data={"csrf_token": csrf_token_of(client)})
    assert resp.status_code == 302
    assert seen[0] == ("UPDATE wechat_qr_identity", True), seen
    assert all(held for _, held in seen), seen


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_turn_waited_for_too_long_is_done_without(
    make_app: t.Any, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture
) -> None:
    """A turn held past :data:`TURN_TIMEOUT` (by something stuck): the login writes
    without it, SQLite's own busy timeout deciding, and the log says so."""
    app = make_app()
    assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
    monkeypatch.setattr(write_turns, "TURN_TIMEOUT", 0.05)
    with turn_held_elsewhere(app), caplog.at_level(logging.WARNING,
                                                   logger="flask_wechat_qr.write_turns"):
        resp = login_with_wechat(app.test_client(), wechat_api)
    assert resp.status_code == 302 and error_name(resp) is None
    assert "writes without it" in caplog.text


def test_other_databases_take_no_turns(make_app: t.Any, wechat_api: WeChatAPI,
                                       database: t.Any) -> None:
    """PostgreSQL and MariaDB lock rows, not the database: their logins never wait for
    each other here. (On SQLite the engine has its turns after a login.)"""
    app = make_app()
    browser = app.test_client()
    state = start_login(browser)
    wechat_api.token()
    wechat_api.userinfo()
    assert finish_login(browser, state).status_code == 302
    assert (turns(app) is not None) is (database.backend == "sqlite")


# --- SQLite's lock held by another connection -----------------------------------------------


def sqlite_path(app: Flask) -> str:
    with app.app_context():
        return str(app.extensions["sqlalchemy"].engine.url.database)


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_lock_held_past_the_busy_timeout_ends_on_the_error_page(
    make_app: t.Any, wechat_api: WeChatAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process writing to the file (a script, a second worker) holds SQLite's lock
    past the busy timeout (0 here: at once): the login ends on the ``AccountNotSaved``
    page, with what to do in the log. It was a bare 500, "database is locked"."""
    app = make_app(SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"timeout": 0}})
    app.config["PROPAGATE_EXCEPTIONS"] = False
    other = sqlite3.connect(sqlite_path(app), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # the write lock, until it commits
        with caplog.at_level(logging.ERROR):
            resp = login_with_wechat(app.test_client(), wechat_api)
    finally:
        other.close()
    assert resp.status_code == 500 and error_name(resp) == "AccountNotSaved"
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert "database is locked" in logged and "WAL mode with a busy timeout" in logged
    assert not turns(app).locked()
    assert login_with_wechat(app.test_client(), wechat_api).status_code == 302


def begin_at_the_first_read(app: Flask) -> None:
    """SQLAlchemy's own advice for pysqlite: the driver's transactions off, ``BEGIN`` where
    SQLAlchemy begins one, so that a transaction's reads and writes see one snapshot."""
    with app.app_context():
        engine = app.extensions["sqlalchemy"].engine

    @sa.event.listens_for(engine, "connect")
    def no_driver_transactions(dbapi_connection: t.Any, _record: t.Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def begin(connection: t.Any) -> None:
        connection.exec_driver_sql("BEGIN")

    engine.dispose()


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_write_on_a_stale_snapshot_is_tried_again(make_app: t.Any,
                                                    wechat_api: WeChatAPI) -> None:
    """A host that begins SQLite transactions at their first read (SQLAlchemy's advice), in
    WAL mode: another connection commits while the login asks WeChat for the profile,
    between the login's first read and its first write; SQLite refuses that write at once
    (``SQLITE_BUSY_SNAPSHOT``: waiting cannot help). The login runs again and logs in.
    It was a bare 500, "database is locked"."""
    app = make_app()
    set_journal_mode(app, "wal")
    begin_at_the_first_read(app)
    path = sqlite_path(app)
    wechat_api.token()
    committed = []

    def profile_after_a_commit(request: t.Any) -> t.Any:
        if not committed:  # the first run of the login only
            with sqlite3.connect(path) as other:
                other.execute("INSERT INTO user (username) VALUES ('elsewhere')")
            committed.append(True)
        return wechat_body({"openid": OPENID, "nickname": "小明", "sex": 0,
                            "headimgurl": "", "privilege": [], "unionid": UNIONID})

    answer_with(wechat_api, USERINFO_PATH, profile_after_a_commit)
    browser = app.test_client()
    resp = finish_login(browser, start_login(browser))
    assert committed and resp.status_code == 302, error_name(resp)
    assert sorted(u.username or "" for u in all_users(app)) == ["", "elsewhere"]


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_write_refused_at_once_while_another_writes_is_tried_again(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    """A host that begins SQLite transactions at their first read: a login that read, then
    writes while another connection holds the write lock, is refused at once (SQLite does
    not wait there: ``SQLITE_BUSY``, whatever the busy timeout). The other connection
    commits; the login, tried again, logs in. It ended on the error page."""
    app = make_app()
    set_journal_mode(app, "wal")
    begin_at_the_first_read(app)
    other = sqlite3.connect(sqlite_path(app), isolation_level=None)
    with app.app_context():
        engine = app.extensions["sqlalchemy"].engine

    def release(_connection: t.Any) -> None:  # the login's rollback: the other commits
        if other.in_transaction:
            other.execute("COMMIT")

    sa.event.listen(engine, "rollback", release)
    wechat_api.token()

    began = []

    def profile_while_another_writes(request: t.Any) -> t.Any:
        if not began:
            began.append(True)
            other.execute("BEGIN IMMEDIATE")
            other.execute("INSERT INTO user (username) VALUES ('elsewhere')")
        return wechat_body({"openid": OPENID, "nickname": "小明", "sex": 0,
                            "headimgurl": "", "privilege": [], "unionid": UNIONID})

    answer_with(wechat_api, USERINFO_PATH, profile_while_another_writes)
    try:
        browser = app.test_client()
        resp = finish_login(browser, start_login(browser))
    finally:
        sa.event.remove(engine, "rollback", release)
        other.close()
    assert resp.status_code == 302, error_name(resp)
    assert sorted(u.username or "" for u in all_users(app)) == ["", "elsewhere"]
