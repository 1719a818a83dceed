"""MariaDB and MySQL as sites really run them: a legacy database whose default character set
is ``latin1`` or ``utf8mb3``, InnoDB's REPEATABLE READ (a transaction reads the snapshot of
its first read), its unique keys under two requests at once, and ``*_general_ci``
collations. Each test on a database of the MariaDB server of ``WECHAT_QR_TEST_MARIADB_URL``
(skipped without one, as every MariaDB variant)."""

from __future__ import annotations

import logging
import secrets
import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from flask import Flask
from support import (
    NICKNAME,
    PROFILE_ANSWER,
    TOKEN_ANSWER,
    TOKEN_PATH,
    USERINFO_PATH,
    WeChatAPI,
    admin_engine,
    all_identities,
    all_users,
    answer_with,
    api_paths,
    arrive,
    ask_app,
    double_redirect,
    error_name,
    logged_in_user_id,
    login_with_wechat,
    make_test_app,
    pending_rows,
    start_login,
    wechat_body,
)

from .browse import Browser, assert_no_server_error, wechat_login
from .shapes import MIGRATE

pytestmark = pytest.mark.parametrize("database", ["mariadb"], indirect=True)


#: What a database of each legacy character set keeps of the test nickname (张三🐼): no
#: emoji in utf8mb3, nothing readable in latin1 (where the name is then not stored).
KEPT = {"latin1": None, "utf8mb3": "张三", "utf8mb4": NICKNAME}


def legacy_database(database: t.Any, charset: str, query: str = "") -> str:
    """The URL of a new database of the test's MariaDB server made as a legacy site's was:
    ``CREATE DATABASE ... CHARACTER SET <charset>`` (tables made in it take that default)."""
    name = f"t_{secrets.token_hex(6)}_{charset}"
    with admin_engine(database.server_url).begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET {charset}"))
    database.schemas.append(name)  # dropped with the test's others
    url = sa.make_url(database.server_url).set(database=name)
    if query:
        url = url.update_query_string(query)
    return url.render_as_string(hide_password=False)


def table_charsets(app: Flask) -> dict[str, str]:
    db = app.extensions["sqlalchemy"]
    with app.app_context(), db.engine.connect() as conn:
        return dict(conn.execute(sa.text(
            "SELECT table_name, table_collation FROM information_schema.tables "
            "WHERE table_schema = DATABASE()")).all())


def warnings_about(caplog: pytest.LogCaptureFixture, column: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.getMessage().startswith(column + " ")]


# --- a legacy database: latin1 or utf8mb3 ------------------------------------------------


@pytest.mark.parametrize("charset", ["latin1", "utf8mb3"])
def test_a_migrated_site_in_a_legacy_database_logs_a_cjk_emoji_nickname_in(
    database: t.Any, charset: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A Flask-Migrate site deployed into a database made ``CHARACTER SET latin1`` (MariaDB's
    own default) or ``utf8mb3``: ``flask db upgrade`` and ``flask wechat-qr db upgrade``
    make every table in that character set. A new WeChat user named 张三🐼 logs in (it was
    a 500: "Incorrect string value", error 1366, on the user's and the identity's
    nickname); the extension's own columns are utf8mb4 whatever the database's default and
    keep the whole name; the host's is kept as far as its column holds it, and the log says
    which column to convert, once."""
    app = MIGRATE.build(legacy_database(database, charset))
    try:
        collations = table_charsets(app)
        assert collations["user"].startswith(charset), collations
        browser = Browser(app)
        with caplog.at_level(logging.WARNING, logger="flask_wechat_qr"):
            assert wechat_login(browser, "zhangsan").status_code == 200
            assert logged_in_user_id(browser.client) == "1"
            assert_no_server_error(browser)
            again = Browser(app)  # the same person in another browser: said once
            assert wechat_login(again, "zhangsan").status_code == 200
        assert [u["nickname"] for u in MIGRATE.users(app)] == [KEPT[charset]]
        assert [i["nickname"] for i in MIGRATE.identities(app)] == [NICKNAME]
        said = warnings_about(caplog, "user.nickname")
        assert len(said) == 1 and "ALTER TABLE `user` MODIFY `nickname` varchar(255) " \
            "CHARACTER SET utf8mb4" in said[0], said
        assert warnings_about(caplog, "wechat_qr_identity.nickname") == []
    finally:
        with app.app_context():
            MIGRATE.db(app).engine.dispose()


#: (database charset, URL query, the host's user table keeps, the identities keep)
@pytest.mark.parametrize(("charset", "query", "kept", "kept_by_identities"), [
    ("latin1", "", [None, "Zoë"], [NICKNAME, "Zoë 🌸"]),
    ("utf8mb3", "", ["张三", "Zoë"], [NICKNAME, "Zoë 🌸"]),
    ("utf8mb4", "charset=utf8", ["张三", "Zoë"], ["张三", "Zoë"]),
    ("utf8mb4", "charset=latin1", [None, "Zoë"], [None, "Zoë"]),
    ("utf8mb4", "", [NICKNAME, "Zoë 🌸"], [NICKNAME, "Zoë 🌸"]),
])
def test_create_all_in_a_legacy_database_or_over_a_narrow_connection(
    database: t.Any, tmp_path: t.Any, wechat_api: WeChatAPI, charset: str, query: str,
    kept: list[str | None], kept_by_identities: list[str | None]
) -> None:
    """``db.create_all()`` in a legacy database, or a utf8mb4 one reached with an old
    tutorial's ``?charset=utf8`` (or ``latin1``) in the URL: the first login of 张三🐼 and
    of a Latin name with an emoji, with the default adapter, end logged in (they were a
    500: a DataError, or PyMySQL's UnicodeEncodeError for latin1). The extension's own
    columns are utf8mb4 whatever the database's default: only a narrow connection narrows
    what they keep."""
    app = make_test_app(tmp_path, legacy_database(database, charset, query))
    try:
        first = login_with_wechat(app.test_client(), wechat_api)
        second = login_with_wechat(app.test_client(), wechat_api, openid="oOther",
                                   unionid=None, nickname="Zoë 🌸")
        assert [first.status_code, second.status_code] == [302, 302]
        with app.app_context():
            assert [u.nickname for u in app.User.query.order_by("id")] == kept
        assert [i.nickname for i in all_identities(app)] == kept_by_identities
    finally:
        with app.app_context():
            app.db.engine.dispose()


def test_ask_binding_in_a_legacy_database_parks_the_nickname_it_can_hold(
    database: t.Any, tmp_path: t.Any, wechat_api: WeChatAPI
) -> None:
    """Ask binding parks the WeChat account with its nickname (the pending binding's own
    column, utf8mb4 in a utf8mb3 database; through a utf8mb3 connection only what it
    carries): the bind page, not a 500."""
    app = ask_app(lambda **config: make_test_app(
        tmp_path, legacy_database(database, "utf8mb3"), **config))
    narrow = ask_app(lambda **config: make_test_app(
        tmp_path, legacy_database(database, "utf8mb4", "charset=utf8"), **config))
    try:
        for site, kept in ((app, NICKNAME), (narrow, "张三")):
            client = site.test_client()
            arrive(client, wechat_api)
            assert [row.nickname for row in pending_rows(site)] == [kept]
            page = client.get("/auth/bind")
            assert page.status_code == 200 and kept in page.get_data(as_text=True)
    finally:
        for site in (app, narrow):
            with site.app_context():
                site.db.engine.dispose()


def test_ask_binding_over_a_latin1_connection_keeps_a_chinese_next_page(
    database: t.Any, tmp_path: t.Any, wechat_api: WeChatAPI
) -> None:
    """A login that asked to come back to ``/文章`` parks that page with its binding (as a
    URI: it was PyMySQL's UnicodeEncodeError over a latin1 connection, a 500) and ends
    there after the choice."""
    app = ask_app(lambda **config: make_test_app(
        tmp_path, legacy_database(database, "utf8mb4", "charset=latin1"), **config))
    try:
        client = app.test_client()
        arrive(client, wechat_api, next="/文章")
        assert [row.next_url for row in pending_rows(app)] == ["/%E6%96%87%E7%AB%A0"]
        page = client.get("/auth/bind")
        token = page.get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
        done = client.post("/auth/bind", data={"action": "create", "csrf_token": token})
        assert done.status_code == 302
        assert done.headers["Location"].endswith("/%E6%96%87%E7%AB%A0")
    finally:
        with app.app_context():
            app.db.engine.dispose()


def reads_the_database_first(app: Flask) -> None:
    """A host whose every request reads its own table first (a site setting, a count on
    the layout, a members-only check): on InnoDB that read takes the request's snapshot."""
    @app.before_request
    def count_users() -> None:
        db = app.extensions["sqlalchemy"]
        db.session.execute(sa.text("SELECT COUNT(*) FROM user")).scalar()


# --- REPEATABLE READ ------------------------------------------------------------------------


def test_double_redirect_of_a_first_login_sees_the_first_requests_user(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI
) -> None:
    """WeChat's double redirect of someone new, on a host that reads its database at the
    start of each request: the second callback (40163) waits for the first one's ending and
    then loads the user the first one made. Its snapshot, taken before that commit, must
    not hide the user (the second redirect's page, the one the browser shows, said "no
    longer valid" after a login that succeeded)."""
    app = make_app(before_init=reads_the_database_first, WECHAT_QR_CODE_USED_WAIT=5)
    seen = double_redirect(app, wechat_api)
    assert [(a.status_code, error_name(a)) for a in seen.answers] == [(302, None), (302, None)]
    assert [a.headers["Location"] for a in seen.answers] == ["/welcome", "/welcome"]
    assert api_paths(wechat_api).count(USERINFO_PATH) == 1
    user_id = str(all_users(app)[0].id)
    assert logged_in_user_id(seen.browser) == user_id
    assert logged_in_user_id(seen.twin) == user_id
    assert len(all_users(app)) == 1 and len(all_identities(app)) == 1


def test_first_logins_of_one_person_at_once_make_one_user_without_a_deadlock(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """Eight browsers finishing the first login of one new person at the same moment, on a
    host that reads its database first (each request's snapshot taken before any of them
    commits): InnoDB makes the losers wait on the winner's unique key and then refuses them
    (1062, not a deadlock, 1213); each retries and finds the winner's identity. One user,
    no 5xx."""
    count = 8
    app = make_app(before_init=reads_the_database_first,
                   SQLALCHEMY_ENGINE_OPTIONS={"pool_size": count + 4, "max_overflow": 0})
    answer_with(wechat_api, TOKEN_PATH, lambda request: wechat_body(TOKEN_ANSWER))
    gate = threading.Barrier(count, timeout=20)

    def profile(request: t.Any) -> tuple[int, dict[str, str], bytes]:
        try:
            gate.wait()  # everyone has looked the identity up and found nothing
        except threading.BrokenBarrierError:
            pass
        return wechat_body(PROFILE_ANSWER)

    answer_with(wechat_api, USERINFO_PATH, profile)
    browsers = [app.test_client() for _ in range(count)]
    states = [start_login(browser) for browser in browsers]

    def finish(index: int) -> int:
        return browsers[index].get("/auth/wechat/callback", query_string={
            "code": f"code{index}", "state": states[index]}).status_code

    with caplog.at_level(logging.INFO, logger="flask_wechat_qr"), \
            ThreadPoolExecutor(count) as pool:
        statuses = list(pool.map(finish, range(count), timeout=120))
    assert statuses == [302] * count and not gate.broken
    assert "another request may have made the same identity" in caplog.text
    assert "1213" not in caplog.text and "Deadlock" not in caplog.text
    users = all_users(app)
    assert len(users) == 1 and len(all_identities(app)) == 1
    assert {logged_in_user_id(browser) for browser in browsers} == {str(users[0].id)}


# --- case-insensitive collations -------------------------------------------------------------


def test_openids_differing_only_in_case_are_two_people(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI
) -> None:
    """WeChat's openids are case-sensitive: ``oAbc…`` and ``oabc…`` are two people. In a
    ``*_general_ci`` column they compare equal, and the second would log in as the first
    (or be refused by the unique key). What a site gets today, whatever the collation: two
    users, each logged in as themselves: the extension's identifier columns are
    ``utf8mb4_bin`` (before, the second person logged in to the first's account)."""
    app = make_app()
    db = app.extensions["sqlalchemy"]
    with app.app_context(), db.engine.connect() as conn:
        collation = conn.execute(sa.text(
            "SELECT collation_name FROM information_schema.columns WHERE table_schema = "
            "DATABASE() AND table_name = 'wechat_qr_identity' AND column_name = 'openid'"
        )).scalar()
    upper, lower = "oHS-VwAJ9GEXlplngwybJ3Z-ZHrI", "ohs-vwaj9gexlplngwybj3z-zhri"
    first, second = app.test_client(), app.test_client()
    assert login_with_wechat(first, wechat_api, openid=upper, unionid=None).status_code == 302
    answer = login_with_wechat(second, wechat_api, openid=lower, unionid=None,
                               nickname="李四")
    assert collation == "utf8mb4_bin"  # in a utf8mb4_general_ci database
    assert answer.status_code == 302
    assert len(all_users(app)) == 2
    assert logged_in_user_id(first) != logged_in_user_id(second)


# --- the example site ------------------------------------------------------------------------


@pytest.mark.parametrize("charset", ["utf8mb4", "latin1"])
def test_the_example_site_starts_and_logs_in_on_mariadb(
    make_site: t.Callable[..., Flask], database: t.Any, charset: str
) -> None:
    """The quick start on MariaDB (``DATABASE_URL=mysql+pymysql://...``): the example site
    makes its tables at start-up, and a sandbox login of 张三🐼 ends logged in, without a
    5xx on any page it saw, in a utf8mb4 database and in a latin1 one."""
    app = make_site(legacy_database(database, charset), WECHAT_QR_SANDBOX=True)
    browser = Browser(app)
    assert wechat_login(browser, "zhangsan").status_code == 200
    assert logged_in_user_id(browser.client) is not None
    assert_no_server_error(browser)


def test_a_nickname_typed_in_the_sandbox_over_a_utf8_connection(
    make_site: t.Callable[..., Flask], database: t.Any
) -> None:
    """A tester types 阿强🚀 on the sandbox's phone page of a site whose connection is
    ``?charset=utf8`` (no emoji): the person is 阿强 and logs in (it was a 500, and the
    QR page waited for ever)."""
    app = make_site(legacy_database(database, "utf8mb4", "charset=utf8"),
                    WECHAT_QR_SANDBOX=True)
    browser = Browser(app)
    assert wechat_login(browser, "new", nickname="阿强🚀").status_code == 200
    assert logged_in_user_id(browser.client) is not None
    assert_no_server_error(browser)
    db = app.extensions["sqlalchemy"]
    with app.app_context():
        assert db.session.execute(sa.text(
            "SELECT nickname FROM wechat_qr_sandbox_person")).scalars().all() == ["阿强"]


# --- a string-keyed user table in another character set ---------------------------------------


@pytest.mark.parametrize("made_by", ["db upgrade", "create_all"])
def test_string_keyed_users_in_a_latin1_table_of_a_utf8mb4_database_get_the_foreign_key(
    database: t.Any, tmp_path: t.Any, made_by: str
) -> None:
    """An old user table kept in latin1 (string keys) in a database made utf8mb4 since:
    ``flask wechat-qr db upgrade`` and ``db.create_all()`` give the identities' ``user_key``
    the user key's own character set and collation, so MariaDB takes the foreign key (it
    refused it, errno 150 "incorrectly formed": the site did not start, or the upgrade
    failed, and every one after it), and deleting a user with raw SQL takes their
    identities with it."""
    from flask_login import LoginManager, UserMixin
    from flask_sqlalchemy import SQLAlchemy
    from support import APP_ID, APP_SECRET

    from flask_wechat_qr import WeChatQR, migrations

    db = SQLAlchemy()

    class User(db.Model, UserMixin):  # type: ignore[name-defined,misc]
        __table_args__ = {"mysql_charset": "latin1"}
        id = db.Column(db.String(40), primary_key=True,
                       default=lambda: f"member-{secrets.token_hex(4)}")
        nickname = db.Column(db.Unicode(255))

    app = Flask("latin1_users", root_path=str(tmp_path))
    app.config.update(TESTING=True, SECRET_KEY="test-secret-key", WECHAT_QR_APP_ID=APP_ID,
                      WECHAT_QR_APP_SECRET=APP_SECRET,
                      SQLALCHEMY_DATABASE_URI=legacy_database(database, "utf8mb4"))
    db.init_app(app)
    LoginManager(app).user_loader(lambda user_id: db.session.get(User, user_id))
    WeChatQR(app, db=db, user_model=User)

    try:
        with app.app_context():
            db.metadata.create_all(db.engine, tables=[User.__table__])  # the site's own
            db.session.add(User(id="member-Ab12", nickname="x"))
            db.session.commit()
        if made_by == "db upgrade":
            status = migrations.upgrade(app).foreign_key
            assert status is not None and status.state == "on"
        else:
            with app.app_context():
                db.create_all()
        with app.app_context(), db.engine.connect() as conn:
            assert [fk["name"] for fk in sa.inspect(conn).get_foreign_keys(
                "wechat_qr_identity")] == ["fk_wechat_qr_identity_user_key"]
            assert conn.execute(sa.text(
                "SELECT character_set_name FROM information_schema.columns WHERE "
                "table_schema = DATABASE() AND table_name = 'wechat_qr_identity' "
                "AND column_name = 'user_key'")).scalar() == "latin1"
            conn.execute(sa.text(
                "INSERT INTO wechat_qr_identity (connection, app, openid, user_id, user_key, "
                "created_at, last_login_at) VALUES ('wechat', 'website', 'oX', "
                "'member-Ab12', 'member-Ab12', NOW(), NOW())"))
            conn.execute(sa.text("DELETE FROM user WHERE id = 'member-Ab12'"))
            assert conn.execute(sa.text("SELECT COUNT(*) FROM wechat_qr_identity")
                                ).scalar() == 0
            conn.commit()
    finally:
        with app.app_context():
            db.engine.dispose()


def test_check_says_what_a_mariadb_site_lacks(database: t.Any, tmp_path: t.Any) -> None:
    """``flask wechat-qr check`` on MariaDB: a connection that cannot carry every nickname is
    a warning, identities whose openids compare without case (tables from before 0006) a
    problem; a site with neither hears nothing of either."""
    def check(app: Flask) -> t.Any:
        return app.test_cli_runner().invoke(args=["wechat-qr", "check"])

    fine = make_test_app(tmp_path, legacy_database(database, "utf8mb4"))
    narrow = make_test_app(tmp_path, legacy_database(database, "utf8mb4", "charset=utf8"))
    legacy = make_test_app(tmp_path, legacy_database(database, "latin1"))
    try:
        said = check(fine).output
        assert "character set" not in said and "compare without case" not in said, said
        said = check(legacy).output  # the site's own user table, made latin1
        assert "WARNING: user.nickname is in character set latin1, which cannot hold every " \
            "character of WeChat nicknames" in said, said
        assert "Fix: ALTER TABLE `user` MODIFY `nickname` varchar(255) CHARACTER SET " \
            "utf8mb4 NULL (keep its DEFAULT, if it has one); users made before keep what " \
            "was stored" in said, said
        result = check(narrow)
        assert result.exit_code == 0, result.output
        assert "WARNING: the database connection's character set is utf8mb3: WeChat " \
            "nicknames are stored without the characters it cannot carry" in result.output
        assert "Fix: add ?charset=utf8mb4 to SQLALCHEMY_DATABASE_URI" in result.output
        with fine.app_context(), fine.db.engine.begin() as conn:  # type: ignore[attr-defined]
            conn.execute(sa.text("ALTER TABLE wechat_qr_identity MODIFY openid VARCHAR(128) "
                                 "CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL"))
        result = check(fine)
        assert result.exit_code == 1, result.output
        assert "PROBLEM: the identities' openids compare without case (collation " \
            "utf8mb4_general_ci)" in result.output
        assert "`flask wechat-qr db upgrade`" in result.output
        # At 0006 already (an earlier 0006 that did not change them, say): the fix says to
        # stamp 0005 so that 0006 runs again, and following it mends them (an upgrade
        # hunt, session 35: the fix said only to upgrade, which did nothing).
        assert "`flask wechat-qr db stamp 0005` first, so that 0006 runs again" \
            in result.output
        runner = fine.test_cli_runner()
        assert runner.invoke(args=["wechat-qr", "db", "stamp", "0005"]).exit_code == 0
        upgraded = runner.invoke(args=["wechat-qr", "db", "upgrade"])
        assert upgraded.exit_code == 0, upgraded.output
        assert "compare without case" not in check(fine).output
    finally:
        for app in (fine, narrow, legacy):
            with app.app_context():
                app.db.engine.dispose()  # type: ignore[attr-defined]


# --- a legacy site's MyISAM tables -------------------------------------------------------


def myisam_host(database: t.Any, tmp_path: t.Any, query: str = "") -> Flask:
    """A legacy site whose user table is MyISAM (MySQL's default engine before 5.5, kept by
    every upgrade since), in a utf8mb4 database; its own table made, the extension's not."""
    from flask_login import LoginManager, UserMixin
    from flask_sqlalchemy import SQLAlchemy
    from support import APP_ID, APP_SECRET

    from flask_wechat_qr import WeChatQR

    db = SQLAlchemy()

    class User(db.Model, UserMixin):  # type: ignore[name-defined,misc]
        __tablename__ = "members"
        __table_args__ = {"mysql_engine": "MyISAM"}
        id = db.Column(db.Integer, primary_key=True)
        nickname = db.Column(db.Unicode(255))
        avatar_url = db.Column(db.Text)

    app = Flask("myisam_users", root_path=str(tmp_path))
    app.config.update(TESTING=True, SECRET_KEY="test-secret-key", WECHAT_QR_APP_ID=APP_ID,
                      WECHAT_QR_APP_SECRET=APP_SECRET,
                      SQLALCHEMY_DATABASE_URI=legacy_database(database, "utf8mb4", query))
    db.init_app(app)
    LoginManager(app).user_loader(lambda user_id: db.session.get(User, int(user_id)))
    WeChatQR(app, db=db, user_model=User)
    with app.app_context():
        db.metadata.create_all(db.engine, tables=[User.__table__])  # the site's own
    app.db, app.User = db, User  # type: ignore[attr-defined]
    return app


@pytest.fixture
def myisam_sites(database: t.Any, tmp_path: t.Any) -> t.Iterator[t.Callable[..., Flask]]:
    """``myisam_sites(query="")``: a new :func:`myisam_host`, its engine disposed after the
    test."""
    made: list[Flask] = []

    def build(query: str = "") -> Flask:
        made.append(myisam_host(database, tmp_path, query))
        return made[-1]

    yield build
    for app in made:
        with app.app_context():
            app.db.engine.dispose()  # type: ignore[attr-defined]


def identity_foreign_keys(app: Flask) -> list[str]:
    with app.app_context(), app.db.engine.connect() as conn:  # type: ignore[attr-defined]
        return [str(fk["name"]) for fk in sa.inspect(conn).get_foreign_keys(
            "wechat_qr_identity")]


def check_output(app: Flask) -> t.Any:
    return app.test_cli_runner().invoke(args=["wechat-qr", "check"])


@pytest.mark.parametrize("made_by", ["create_all", "db upgrade"])
def test_a_myisam_user_table_gets_the_extensions_tables_without_the_foreign_key(
    database: t.Any, tmp_path: t.Any, wechat_api: WeChatAPI, made_by: str,
    caplog: pytest.LogCaptureFixture,
    myisam_sites: t.Callable[..., Flask],
) -> None:
    """MyISAM tables take no foreign keys. Before: ``db.create_all()`` failed (errno 150,
    "Foreign key constraint is incorrectly formed": the site did not start) and so did
    ``flask wechat-qr db upgrade``, at every run, while ``check`` said to run it again.
    Now the tables come without the foreign key, it is said with its fix (the table to
    InnoDB), logins work, an ORM delete still takes the identities; once the table is
    InnoDB the next upgrade adds the key."""
    app = myisam_sites()
    db, User = app.db, app.User  # type: ignore[attr-defined]
    fix = "ALTER TABLE members ENGINE=InnoDB"
    if made_by == "create_all":
        with caplog.at_level(logging.WARNING, logger="flask_wechat_qr"), \
                app.app_context():
            db.create_all()
        said = [r.getMessage() for r in caplog.records if "MyISAM" in r.getMessage()]
        assert len(said) == 1, caplog.text
        assert "members is a MyISAM table" in said[0] and fix in said[0], said
    else:
        result = app.test_cli_runner().invoke(args=["wechat-qr", "db", "upgrade"])
        assert result.exit_code == 0, (result.output, result.exception)
        assert "members is a MyISAM table" in result.output, result.output
        assert fix in result.output, result.output
    assert identity_foreign_keys(app) == []
    result = check_output(app)
    assert result.exit_code == 0, result.output
    assert "WARNING: the identities have no foreign key to members.id: members is a " \
        "MyISAM table" in result.output, result.output
    assert f"Fix: {fix}" in result.output, result.output

    browser = app.test_client()
    assert login_with_wechat(browser, wechat_api).status_code == 302
    user_id = logged_in_user_id(browser)
    assert user_id is not None
    with app.app_context():
        assert [i.user_key for i in all_identities(app)] == [int(user_id)]
        db.session.delete(db.session.get(User, int(user_id)))
        db.session.commit()
    assert all_identities(app) == []

    with app.app_context(), db.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE members ENGINE=InnoDB"))
    result = app.test_cli_runner().invoke(args=["wechat-qr", "db", "upgrade"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert identity_foreign_keys(app) == ["fk_wechat_qr_identity_user_key"]
    result = check_output(app)
    assert result.exit_code == 0 and "foreign key" not in result.output.split(
        "Connection")[-1], result.output


def test_the_extensions_tables_made_myisam_by_the_servers_default_are_a_problem(
    database: t.Any, tmp_path: t.Any,
    myisam_sites: t.Callable[..., Flask],
) -> None:
    """A server whose default engine is still MyISAM makes the extension's tables MyISAM:
    no transactions (a login that fails halfway keeps what it wrote: a user without their
    identity, made again by the retry), and a foreign key MariaDB accepts and then drops
    (before: ``check`` said "run db upgrade", which said it added it, for ever)."""
    app = myisam_sites("init_command=SET default_storage_engine=MyISAM")
    db = app.db  # type: ignore[attr-defined]
    with app.app_context():
        db.create_all()
    result = app.test_cli_runner().invoke(args=["wechat-qr", "db", "upgrade"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "added foreign key" not in result.output, result.output
    result = check_output(app)
    assert result.exit_code == 1, result.output
    assert "PROBLEM: the extension's tables wechat_qr_avatar, wechat_qr_bind_attempt, " \
        "wechat_qr_identity, wechat_qr_login_state, wechat_qr_pending_binding are " \
        "MyISAM tables, which have no transactions" in result.output, result.output
    assert "ALTER TABLE wechat_qr_identity ENGINE=InnoDB; " in result.output
    assert "WARNING: the identities have no foreign key to members.id: members is a " \
        "MyISAM table" in result.output, result.output


def test_check_warns_when_the_pool_keeps_connections_past_the_servers_wait_timeout(
    database: t.Any, tmp_path: t.Any,
) -> None:
    """A server that closes idle connections sooner than the pool recycles them (Flask-
    SQLAlchemy's default: two hours; a shared or cloud server's ``wait_timeout`` is often
    minutes) makes the first login after a quiet spell a 500 ("MySQL server has gone
    away") after WeChat's code was spent: the person scans again. Before: no word of it."""
    short = legacy_database(database, "utf8mb4", "init_command=SET wait_timeout=60")
    apps = {"short": make_test_app(tmp_path, short),
            "pre_ping": make_test_app(tmp_path, short,
                                      SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True}),
            "recycled": make_test_app(tmp_path, short,
                                      SQLALCHEMY_ENGINE_OPTIONS={"pool_recycle": 30}),
            "no_pool": make_test_app(tmp_path, short,
                                     SQLALCHEMY_ENGINE_OPTIONS={"poolclass": sa.pool.NullPool}),
            "default": make_test_app(tmp_path, legacy_database(database, "utf8mb4"))}
    try:
        said = {name: check_output(app).output for name, app in apps.items()}
        assert "WARNING: the database server closes connections idle for 60 s " \
            "(wait_timeout) and the pool keeps them for 7200 s (pool_recycle), unchecked: " \
            "the first login after a quiet spell fails" in said["short"], said["short"]
        assert "Fix: set SQLALCHEMY_ENGINE_OPTIONS = {\"pool_pre_ping\": True}" in said["short"]
        for name in ("pre_ping", "recycled", "no_pool", "default"):
            assert "wait_timeout" not in said[name], (name, said[name])
    finally:
        for app in apps.values():
            with app.app_context():
                app.db.engine.dispose()  # type: ignore[attr-defined]


def test_a_foreign_key_the_database_refuses_is_one_readable_error(
    database: t.Any, tmp_path: t.Any,
    myisam_sites: t.Callable[..., Flask],
) -> None:
    """MariaDB names foreign keys per database: a table of the site's holding a key named as
    the identities' makes the upgrade's ``ADD CONSTRAINT`` fail (errno 121). Before: a
    Python traceback after the revisions had run; now one paragraph with the revision the
    tables are at and the database's reason."""
    app = myisam_sites()  # its user table, then made InnoDB
    db = app.db  # type: ignore[attr-defined]
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE members ENGINE=InnoDB"))
        conn.execute(sa.text(
            "CREATE TABLE site_notes (id INT PRIMARY KEY, member INT, CONSTRAINT "
            "fk_wechat_qr_identity_user_key FOREIGN KEY (member) REFERENCES members (id))"))
    result = app.test_cli_runner().invoke(args=["wechat-qr", "db", "upgrade"])
    assert result.exit_code == 1, (result.output, result.exception)
    assert result.output.startswith(
        "Error: The extension's tables are at revision 0006, but the identities' foreign "
        "key to your users could not be added: the database refused it ("), result.output
    assert "Mend the cause and run `flask wechat-qr db upgrade` again." in result.output


def test_a_failed_create_table_leaves_no_foreign_key_omitted_for_the_next(
    database: t.Any, tmp_path: t.Any,
    myisam_sites: t.Callable[..., Flask],
) -> None:
    """The identities' foreign key is left out of one ``CREATE TABLE`` (a MyISAM user
    table). Before: when that ``CREATE TABLE`` failed, it stayed left out of this thread's
    next one, after the user table had become InnoDB: no foreign key, and nothing said."""
    app = myisam_sites()
    db = app.db  # type: ignore[attr-defined]
    with app.app_context():
        db.create_all()
        identities = db.metadata.tables["wechat_qr_identity"]
        with pytest.raises(sa.exc.OperationalError):  # it exists: 1050
            db.metadata.create_all(db.engine, tables=[identities], checkfirst=False)
        with db.engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE members ENGINE=InnoDB"))
            conn.execute(sa.text("DROP TABLE wechat_qr_identity"))
        db.metadata.create_all(db.engine, tables=[identities])
    assert identity_foreign_keys(app) == ["fk_wechat_qr_identity_user_key"]


def test_a_partitioned_user_table_gets_the_identities_without_the_foreign_key(
    database: t.Any, tmp_path: t.Any, caplog: pytest.LogCaptureFixture,
    myisam_sites: t.Callable[..., Flask],
) -> None:
    """InnoDB refuses a foreign key to a partitioned table (errno 150): before, create_all
    stopped there, as for MyISAM."""
    app = myisam_sites()
    db = app.db  # type: ignore[attr-defined]
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(sa.text(
                "ALTER TABLE members ENGINE=InnoDB PARTITION BY HASH (id) PARTITIONS 2"))
        with caplog.at_level(logging.WARNING, logger="flask_wechat_qr"):
            db.create_all()
    said = [r.getMessage() for r in caplog.records if "partitioned" in r.getMessage()]
    assert len(said) == 1 and "members is partitioned" in said[0], caplog.text
    assert "WECHAT_QR_USER_FOREIGN_KEY = False" in said[0], said
    assert identity_foreign_keys(app) == []
    result = check_output(app)
    assert result.exit_code == 0, result.output
    assert "WARNING: the identities have no foreign key to members.id: members is " \
        "partitioned" in result.output, result.output


@pytest.mark.parametrize(("charset", "kept"), [("utf8mb4", "张三🐼"), ("latin1", "of")])
def test_a_nickname_column_shorter_in_the_database_than_in_the_model_is_filled_to_its_length(
    database: t.Any, tmp_path: t.Any, wechat_api: WeChatAPI, caplog: pytest.LogCaptureFixture,
    charset: str, kept: str,
    myisam_sites: t.Callable[..., Flask],
) -> None:
    """A legacy table's ``nickname`` is ``VARCHAR(4)`` where the model says 255 (the model
    written later, from memory). Before: strict MariaDB refused the first login ("Data too
    long", a 500; non-strict servers cut it themselves). Now the nickname is cut to the
    column the database has, said once with one fix for all that is wrong with the column
    (two, one per problem, each undid the other)."""
    app = myisam_sites()
    db = app.db  # type: ignore[attr-defined]
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE members ENGINE=InnoDB, MODIFY nickname "
                                 f"VARCHAR(4) CHARACTER SET {charset} NULL"))
        db.create_all()
    with caplog.at_level(logging.WARNING, logger="flask_wechat_qr"):
        for number in (1, 2):
            browser = app.test_client()
            resp = login_with_wechat(browser, wechat_api, openid=f"o-long-{number}",
                                     nickname="张三🐼 of WeChat")
            assert resp.status_code == 302, resp.get_data(as_text=True)
    assert [u.nickname for u in all_users(app)] == [kept, kept]
    assert [i.nickname for i in all_identities(app)] == ["张三🐼 of WeChat"] * 2
    said = warnings_about(caplog, "members.nickname")
    assert len(said) == 1, caplog.text
    assert "holds 4 characters in the database, where the model says 255" in said[0]
    result = check_output(app)  # said before anyone logs in too
    assert "WARNING: members.nickname " in result.output, result.output
    assert "holds 4 characters in the database, where the model says 255" \
        in result.output.split("WARNING: members.nickname ")[1].split("\n")[0]
    with app.app_context(), db.engine.connect() as conn:
        collation = conn.execute(sa.text(
            "SELECT collation_name FROM information_schema.columns WHERE table_schema = "
            "DATABASE() AND table_name = 'members' AND column_name = 'nickname'")).scalar()
    collation = collation if charset == "utf8mb4" else None  # its own, kept
    fix = "ALTER TABLE `members` MODIFY `nickname` varchar(255) CHARACTER SET utf8mb4 " \
        + (f"COLLATE {collation} NULL" if collation else "NULL")
    assert fix in said[0], said
    assert f"Fix: {fix}" in result.output, result.output


def test_the_first_logins_read_of_the_catalogue_opens_one_tables_definition(
    database: t.Any, make_app: t.Callable[..., Flask], wechat_api: WeChatAPI
) -> None:
    """The nickname column's character set, read once per process at the first login, is a
    lookup of that one column. Before: its query (a ``LEFT JOIN`` of ``information_schema``)
    made MariaDB read the definition of every table of every database on the server (EXPLAIN:
    "Scanned all databases"), 20 ms a column with five databases and seconds on a shared
    server, at the first login of each worker. Now a ``WHERE`` on schema, table and column
    names."""
    app = make_app()
    asked: list[tuple[str, t.Any]] = []
    with app.app_context():
        engine = app.db.engine  # type: ignore[attr-defined]

    def seen(_conn: t.Any, _cursor: t.Any, statement: str, parameters: t.Any,
             _context: t.Any, _many: bool) -> None:
        if "information_schema.columns" in statement:
            asked.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    # the user's nickname and the identity's, each read once
    assert sorted(p["table"] for _s, p in asked) == ["user", "wechat_qr_identity"], asked
    for statement, parameters in asked:
        with app.app_context(), engine.connect() as conn:
            extras = [row[-1] or "" for row in conn.exec_driver_sql("EXPLAIN " + statement,
                                                                     parameters)]
        assert any("Open_frm_only" in extra for extra in extras), extras  # the catalogue
        assert not any("Scanned all databases" in extra for extra in extras), extras
