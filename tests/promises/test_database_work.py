"""What a login asks of the database: how many statements and commits (counted through the
public routes, never timed), and that each query it runs finds its rows through an index
(EXPLAIN on SQLite, PostgreSQL and MariaDB). docs/deploying.rst, "Scale and performance", gives the
same numbers."""

from __future__ import annotations

import contextlib
import json
import re
import typing as t
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from support import (
    OPENID_2,
    UNIONID_2,
    Database,
    WeChatAPI,
    add_user,
    arrive,
    ask_app,
    bind_as,
    bind_page,
    login_with_wechat,
    quoted,
    table,
)


@dataclass
class Statements:
    """The SQL a piece of work sent, as the database driver got it."""

    sent: list[tuple[str, t.Any]] = field(default_factory=list)
    commits: int = 0

    def kinds(self) -> dict[str, int]:
        """How many statements of each kind (``SELECT``, ``INSERT``, ...)."""
        counts: dict[str, int] = {}
        for statement, _parameters in self.sent:
            kind = statement.split(None, 1)[0].upper()
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def selects(self) -> list[tuple[str, t.Any]]:
        return [(s, p) for s, p in self.sent if s.lstrip().upper().startswith("SELECT")]


@contextlib.contextmanager
def counting(app: t.Any) -> t.Iterator[Statements]:
    """Every statement and commit on ``app``'s engine while the ``with`` runs."""
    with app.app_context():
        engine = app.db.engine
    seen = Statements()

    def on_statement(_conn: t.Any, _cursor: t.Any, statement: str, parameters: t.Any,
                     _context: t.Any, _many: bool) -> None:
        seen.sent.append((statement, parameters))

    def on_commit(_conn: t.Any) -> None:
        seen.commits += 1

    sa.event.listen(engine, "before_cursor_execute", on_statement)
    sa.event.listen(engine, "commit", on_commit)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", on_statement)
        sa.event.remove(engine, "commit", on_commit)


def _logins(app: t.Any, api: WeChatAPI) -> tuple[Statements, Statements]:
    """The statements of a new person's first login and of a returning person's login
    (after a first login has run the once-a-minute purge of expired rows)."""
    login_with_wechat(app.test_client(), api)
    with counting(app) as new:
        assert login_with_wechat(app.test_client(), api, openid=OPENID_2,
                                 unionid=UNIONID_2).status_code == 302
    with counting(app) as returning:
        assert login_with_wechat(app.test_client(), api).status_code == 302
    return new, returning


def test_a_returning_login_costs_one_read_one_insert_and_one_commit(
        app: t.Any, wechat_api: WeChatAPI) -> None:
    """Returning: the identity with its user (one query); the used state's row, whose
    primary key is the check that the state was not used; one commit. No ``last_login_at``
    write within the hour, no reload of the user after the commit."""
    _new, returning = _logins(app, wechat_api)
    assert returning.kinds() == {"SELECT": 1, "INSERT": 1}, returning.sent
    assert returning.commits == 1
    # The one write comes last, right before the commit.
    assert returning.sent[-1][0].startswith("INSERT INTO wechat_qr_login_state")


def test_without_the_foreign_key_the_user_is_a_third_read(
        make_app: t.Any, wechat_api: WeChatAPI) -> None:
    """The user is joined in through ``user_key``; without that column the default
    ``load_user`` reads it on its own (docs: Scale and performance)."""
    app = make_app(WECHAT_QR_USER_FOREIGN_KEY=False)
    _new, returning = _logins(app, wechat_api)
    assert returning.kinds() == {"SELECT": 2, "INSERT": 1}, returning.sent
    assert returning.commits == 1


def test_a_login_that_reads_the_profile_reads_the_used_state_first(
        make_app: t.Any, wechat_api: WeChatAPI) -> None:
    """With the profile read at every login, a returning login reads its state's row once,
    before the profile is asked (docs: Scale and performance), and still commits once. Its
    identity is read twice: the transaction that finds it needs the profile is rolled back
    and runs again once it is asked (no connection held meanwhile)."""
    app = make_app(WECHAT_QR_PROFILE_SYNC="each_login")
    _new, returning = _logins(app, wechat_api)
    state_reads = [s for s, _p in returning.selects() if "wechat_qr_login_state" in s]
    assert len(state_reads) == 1 and len(returning.selects()) == 3, returning.sent
    assert returning.commits == 1


def test_a_first_login_costs_two_reads_three_inserts_and_one_commit(
        app: t.Any, wechat_api: WeChatAPI) -> None:
    """New: the identity (none: the profile is needed, asked outside the transaction); is
    the state used? (before the profile is asked); then, not looking for the identity
    again, the user, the identity and the used state's rows; one commit."""
    new, _returning = _logins(app, wechat_api)
    assert new.kinds() == {"SELECT": 2, "INSERT": 3}, new.sent
    assert new.commits == 1


def test_a_returning_login_with_an_hour_old_last_login_writes_it(
        app: t.Any, wechat_api: WeChatAPI) -> None:
    login_with_wechat(app.test_client(), wechat_api)
    identities = table(app, "wechat_qr_identity")
    with app.app_context():
        app.db.session.execute(sa.update(identities).values(
            last_login_at=datetime.now(UTC) - timedelta(hours=2)))
        app.db.session.commit()
    with counting(app) as returning:
        assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
    assert returning.kinds() == {"SELECT": 1, "INSERT": 1, "UPDATE": 1}, returning.sent
    assert returning.commits == 1


# --- the hot queries use indexes ---------------------------------------------------------


def _plan(app: t.Any, statement: str, parameters: t.Any) -> str:
    """The query plan of a statement the extension sent, with its own parameters; on
    PostgreSQL with fresh statistics and sequential scans priced out, so a table without a
    usable index shows as a ``Seq Scan`` however few rows the test has. On MariaDB too
    (``max_seeks_for_key``: an index lookup is priced as cheap whatever the rows), one line
    a table read: ``table <name>: <access type> key <index> on <its columns used>``, the
    access type ``ALL`` a full table scan."""
    with app.app_context(), app.db.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            return "\n".join(str(row[-1]) for row in rows)
        if conn.dialect.name == "mysql":
            tables = ", ".join(quoted(conn, name) for name in sa.inspect(conn).get_table_names())
            conn.exec_driver_sql(f"ANALYZE TABLE {tables}").all()
            conn.exec_driver_sql("SET SESSION max_seeks_for_key = 1")
            plan = conn.exec_driver_sql("EXPLAIN FORMAT=JSON " + statement, parameters).scalar()
            return "\n".join(
                f"table {read['table_name']}: {read['access_type']} key {read.get('key')} on "
                f"({', '.join(read.get('used_key_parts', []))})"
                for read in _table_reads(json.loads(str(plan))))
        conn.exec_driver_sql("ANALYZE")
        conn.exec_driver_sql("SET enable_seqscan = off")
        rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters)
        return "\n".join(str(row[0]) for row in rows)


def _table_reads(plan: t.Any) -> t.Iterator[dict[str, t.Any]]:
    """Every table read in MariaDB's ``EXPLAIN FORMAT=JSON``, however deeply nested (joins,
    subqueries, sorts)."""
    if isinstance(plan, dict):
        if "table_name" in plan and "access_type" in plan:
            yield plan
        for value in plan.values():
            yield from _table_reads(value)
    elif isinstance(plan, list):
        for value in plan:
            yield from _table_reads(value)


def _assert_indexed(app: t.Any, database: Database, statement: str, parameters: t.Any,
                    columns: t.Iterable[str]) -> str:
    """The statement finds its rows of the extension's tables through an index on one of
    ``columns`` (a condition on it, not a filter over an index on something else)."""
    plan = _plan(app, statement, parameters)
    if database.is_postgres:
        conditions = " ".join(line for line in plan.splitlines() if "Index Cond" in line)
        assert "Seq Scan" not in plan, f"{statement}\n{plan}"
    elif database.is_mysql:
        assert plan and not re.search(r": (ALL|index) key", plan), f"{statement}\n{plan}"
        # The index columns the lookups used, each as a condition on it ("index", a full
        # scan of one, uses none).
        conditions = " ".join(f"({column}) =" for line in plan.splitlines()
                              for column in line.rsplit(" on (", 1)[1][:-1].split(", ")
                              if column)
    else:
        assert not [line for line in plan.splitlines() if line.startswith("SCAN")], \
            f"{statement}\n{plan}"
        conditions = " ".join(line for line in plan.splitlines() if "USING" in line)
    assert any(re.search(rf"[( ]\(?{column}\)?(::\w+)?\s*[=<>]", conditions)
               for column in columns), f"{statement}\n{plan}"
    return plan


def test_the_queries_of_a_login_use_indexes(app: t.Any, database: Database,
                                            wechat_api: WeChatAPI) -> None:
    """The identity by openid (with its user by primary key) and the used state by key."""
    new, returning = _logins(app, wechat_api)
    queries = new.selects() + returning.selects()
    assert len(queries) == 3
    for statement, parameters in queries:
        assert "wechat_qr_identity" in statement or "wechat_qr_login_state" in statement
        key = "openid" if "wechat_qr_identity" in statement else "key"
        _assert_indexed(app, database, statement, parameters, [key])


def test_the_queries_of_binding_and_of_the_purges_use_indexes(
        make_app: t.Any, database: Database, wechat_api: WeChatAPI) -> None:
    """The pending binding by id, the bind attempts' counts and the purges' batches (by
    their expiry columns)."""
    app = ask_app(make_app)
    add_user(app, username="alice", password="alice-pw")
    client = app.test_client()
    with counting(app) as arriving:
        arrive(client, wechat_api)
    _html, token = bind_page(client)
    with counting(app) as binding:
        assert bind_as(client, token, "alice", "wrong").status_code == 400
    sent = arriving.sent + binding.sent
    wanted = {  # what a statement looks like: the columns an index of it may be on
        ("SELECT", "FROM wechat_qr_pending_binding"): ["id"],
        ("SELECT count(", "FROM wechat_qr_bind_attempt"): ["binding_id", "address", "account",
                                                           "at"],
        ("DELETE", "FROM wechat_qr_login_state"): ["expires_at"],
        ("DELETE", "FROM wechat_qr_pending_binding"): ["expires_at"],
        ("DELETE", "FROM wechat_qr_bind_attempt"): ["at"],
    }
    for (start, source), columns in wanted.items():
        found = [(s, p) for s, p in sent if s.startswith(start) and source in " ".join(s.split())]
        assert found, f"no {start} {source} in {[s for s, _p in sent]}"
        for statement, parameters in found:
            if statement.startswith("DELETE") and not database.is_mysql:
                # A batch's rows are picked by the subquery: explain it on its own. (MariaDB
                # has no LIMIT in such a subquery: its batch is a DELETE ... LIMIT, explained
                # as it is.)
                statement = "SELECT" + statement.split("(SELECT", 1)[1].rsplit(")", 1)[0]
            _assert_indexed(app, database, statement, parameters, columns)


def test_the_index_check_sees_a_table_scan(app: t.Any, database: Database) -> None:
    """The check above fails a query without an index (else it would pass them all)."""
    states = table(app, "wechat_qr_login_state")
    statement = sa.select(states.c.key).where(states.c.value == "x")
    with app.app_context():
        compiled = statement.compile(app.db.engine)
    parameters: t.Any = ("x",) if database.backend == "sqlite" else {"value_1": "x"}
    with pytest.raises(AssertionError):
        _assert_indexed(app, database, str(compiled), parameters, ["value", "key"])
