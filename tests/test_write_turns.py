"""write_turns: on SQLite the logins of one process write in turns, each from its first
write to the end of its transaction; never on other databases, never a transaction that
wrote before it was given turns, and a turn is always given back."""

from __future__ import annotations

import logging
import sqlite3
import threading
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
    error_name,
    finish_login,
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
    login_writes = [(write, held) for write, held in first if not write.startswith("DELETE")]
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
        assert write_turns.holds_turn(app.db.session())  # type: ignore[attr-defined]
        raise RuntimeError("the site's own code broke after writing")

    monkeypatch.setattr(AccountAdapter, "create_user", create_user_then_break)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    broken = login_with_wechat(app.test_client(), wechat_api)
    assert broken.status_code == 500
    assert not turns(app).locked()
    monkeypatch.setattr(AccountAdapter, "create_user", real_create_user)
    assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
    assert not turns(app).locked()


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
@pytest.mark.parametrize("how", ["flushed", "executed"])
def test_a_login_after_the_hosts_own_writes_takes_no_turn(
    make_app: t.Any, wechat_api: WeChatAPI, how: str
) -> None:
    """A host that wrote in its ``before_request``: its connection holds SQLite's lock
    already, so the login writes without a turn (waiting for one could keep the turn's
    holder waiting for that lock). The login and the host's row are committed together."""
    app = host_writes(make_app(), how)
    seen = writes_seen(app)
    assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
    assert seen and not any(held for _, held in seen), seen
    assert len(all_users(app)) == 2  # the visitor and the WeChat user


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_a_turn_waited_for_too_long_is_done_without(
    make_app: t.Any, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture
) -> None:
    """A turn held past :data:`TURN_TIMEOUT` (by something stuck): the login writes
    without it, SQLite's own busy timeout deciding, and the log says so."""
    app = make_app()
    add_user(app, username="alice")  # the engine's turns made by the first login below
    assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
    monkeypatch.setattr(write_turns, "TURN_TIMEOUT", 0.05)
    lock = turns(app)
    held_elsewhere = threading.Event()
    done = threading.Event()

    def hold() -> None:
        with lock:
            held_elsewhere.set()
            done.wait(timeout=30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held_elsewhere.wait(timeout=10)
        with caplog.at_level(logging.WARNING, logger="flask_wechat_qr.write_turns"):
            resp = login_with_wechat(app.test_client(), wechat_api)
    finally:
        done.set()
        holder.join(timeout=10)
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
