"""Test support: apps built from a small factory, and WeChat's API mocked with
``responses`` returning what WeChat really returns (``text/plain`` without charset,
errors as HTTP 200 ``errcode`` JSON, CJK + emoji nicknames)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
import requests
import responses
from flask import Flask, render_template_string
from flask_login import LoginManager, UserMixin, current_user
from flask_sqlalchemy import SQLAlchemy
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from flask_wechat_qr import WeChatQR

API = "https://api.weixin.qq.com"
OPEN = "https://open.weixin.qq.com"
APP_ID = "wx5f3d2e1c0b9a8776"
APP_SECRET = "5ec3e7a1b0c4d9f8e3a6b7c1d2e4f5a9"  # 32 hexadecimal digits, as WeChat issues them

#: A realistic openid/unionid pair (28 characters, as WeChat issues them).
OPENID = "ohS-VwAJ9GEXlplngwybJ3Z-ZHrI"
UNIONID = "ohHrhwKnD9TOunEW0eKTS45vS5Qo"
ACCESS_TOKEN = "OezXcEiiBSKSxW0eoylIeO5cPxb4Ks1RpbXGMv9uiV35032zNHGzXcld-EKsSScE3gRZMrUU78skCbp1"
REFRESH_TOKEN = "OezXcEiiBSKSxW0eoylIeO5cPxb4Ks1RpbXGMv9uiV35032zNHGzXcld-EKsSScEbMnnMqVExcSpj7KR"
NICKNAME = "张三🐼"
AVATAR = "https://thirdwx.qlogo.cn/mmopen/vi_32/Q0j4TwGTfTKXLMv85Sk2x0MxR9aPOIC9QxWJT5N/132"

#: A second person (of the same Open Platform account as :data:`OPENID`'s app).
OPENID_2 = "ohS-VwBBBBBBlplngwybJ3Z-ZHr2"
UNIONID_2 = "ohHrhwBBBBBBunEW0eKTS45vS5Q2"
#: A second website app of the same Open Platform account, and :data:`OPENID`'s person there.
APP_ID_B = "wx0b0b0b0b0b0b0b0b"
OPENID_B = "oBBBBVwAJ9GEXlplngwybJ3Z-ZHr"

#: The authorization code :func:`finish_login` sends unless told otherwise.
CODE = "0816Ab000aBcdE1xYz3000xyz8z16AbQ"
#: The test host's callback URL (what WeChat redirects back to).
CALLBACK = "http://localhost/auth/wechat/callback"
#: What must never reach a page, a redirect, a log line or an error's text.
SECRETS = (APP_SECRET, CODE, ACCESS_TOKEN, REFRESH_TOKEN)

#: WeChat's API paths.
TOKEN_PATH = "/sns/oauth2/access_token"
USERINFO_PATH = "/sns/userinfo"

#: Where ``WECHAT_QR_SANDBOX`` mounts the simulated WeChat in the host app.
SANDBOX_PREFIX = "/wechat-sandbox"

#: The CSRF token field of a form (the example site's and the extension's pages).
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

#: The repository's root (the example app is served from there).
ROOT = Path(__file__).resolve().parent.parent


# --- documented limits and defaults ---------------------------------------------------------
# The numbers the docs promise (docs/login-flow.rst, docs/sandbox.rst), written here rather
# than imported from the package: a test then fails when the code and the docs part ways.

#: Longest ``next`` a login keeps; longer is a 400 page before any work.
MAX_NEXT_LENGTH = 2048
#: Longest ``state`` a callback accepts (WeChat documents 128 bytes).
MAX_STATE_LENGTH = 128
#: Longest authorization code sent on to WeChat.
MAX_CODE_LENGTH = 512
#: Seconds an authorization code lives at WeChat (then 42003), as the sandbox has it too.
CODE_LIFETIME = 300
#: The sandbox's own website application when none is configured.
SANDBOX_APP_ID = "wxsandbox0000000001"
SANDBOX_APP_SECRET = "sandbox-app-secret"
#: Longer than the "few seconds" in which WeChat's second redirect (or a refresh) of a
#: login repeats its ending for the same browser, and shorter than a login state's life.
PAST_THE_REPEAT_WINDOW = 60


# --- the test host and WeChat's API ----------------------------------------------------


def make_test_app(tmp_path: t.Any, database_url: str | None = None, *,
                  replay_create_all: bool = False, tables_made: bool = False,
                  before_init: t.Callable[[Flask], None] | None = None,
                  home: bool = True, **config: t.Any) -> Flask:
    """A small host site: Flask-SQLAlchemy users, Flask-Login, WeChatQR; its tables made by
    ``db.create_all()``, or with ``replay_create_all`` as the run's first one with the same
    settings made them (:func:`create_all_as_before`), or none made with ``tables_made``:
    the database already has them, empty (:meth:`Database.host_url`). ``before_init(app)``
    runs before ``WeChatQR`` (e.g. to register the host's own routes first); ``home=False``:
    no ``/`` page (an API-first site, a site whose home is elsewhere)."""
    db = SQLAlchemy()

    class User(db.Model, UserMixin):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        username = db.Column(db.String(80), unique=True)
        nickname = db.Column(db.Unicode(255))
        avatar_url = db.Column(db.Text)
        #: Werkzeug hash of a local password; ``None`` for users who only use WeChat.
        password_hash = db.Column(db.String(255), nullable=True)

    app = Flask("host_app", root_path=str(tmp_path))
    app.config.update(
        TESTING=True,
        SECRET_KEY="test-secret-key",
        SQLALCHEMY_DATABASE_URI=database_url or f"sqlite:///{tmp_path / 'app.db'}",
        WECHAT_QR_APP_ID=APP_ID,
        WECHAT_QR_APP_SECRET=APP_SECRET,
        # A used code (40163) with no other request of its login waits this long: short,
        # so the many error-page tests of 40163 do not wait the default.
        WECHAT_QR_CODE_USED_WAIT=0.2,
    )
    app.config.update(config)
    db.init_app(app)
    login_manager = LoginManager(app)

    @login_manager.user_loader
    def load_user(user_id: str) -> t.Any:
        return db.session.get(User, int(user_id))

    if before_init is not None:
        before_init(app)
    wechat = WeChatQR(app, db=db, user_model=User)

    def index() -> str:
        if current_user.is_authenticated:
            return f"logged in as {current_user.id} {current_user.nickname}"
        return "anonymous"

    if home:
        app.add_url_rule("/", "index", index)

    if tables_made:
        replayed = True
    else:
        with app.app_context():
            replayed = create_all_as_before(db, settings_key(config)) if replay_create_all \
                else db.create_all()
    app.db = db  # type: ignore[attr-defined]
    app.User = User  # type: ignore[attr-defined]
    app.wechat = wechat  # type: ignore[attr-defined]
    app.create_all_replayed = bool(replayed)  # type: ignore[attr-defined]
    return app


def set_journal_mode(app: Flask, mode: str) -> None:
    """Put the app's SQLite file in journal ``mode`` (``wal``, ``delete``; the file keeps
    it), as a production site on SQLite should be (docs: deploying, sqlite-wal)."""
    with app.app_context():
        engine = app.extensions["sqlalchemy"].engine
        if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
            with engine.connect() as connection:
                connection.exec_driver_sql(f"PRAGMA journal_mode={mode}")
            engine.dispose()


def schema_and_rows(app: Flask) -> dict[str, t.Any]:
    """Everything about the app's database a start of the site could have made: each
    table's columns, keys, indexes and constraints (SQLite: its triggers too), and rows."""
    import sqlalchemy as sa

    db = app.extensions["sqlalchemy"]
    found: dict[str, t.Any] = {}
    with app.app_context(), db.engine.connect() as conn:
        inspector = sa.inspect(conn)
        for name in sorted(inspector.get_table_names()):
            found[name] = {
                "columns": [(c["name"], str(c["type"]), c["nullable"], str(c["default"]))
                            for c in inspector.get_columns(name)],
                "primary key": inspector.get_pk_constraint(name),
                "foreign keys": sorted(map(repr, inspector.get_foreign_keys(name))),
                "indexes": sorted(map(repr, inspector.get_indexes(name))),
                "unique": sorted(map(repr, inspector.get_unique_constraints(name))),
                "checks": sorted(map(repr, inspector.get_check_constraints(name))),
                "rows": sorted(map(repr, conn.execute(
                    sa.text(f"SELECT * FROM {quoted(conn, name)}")))),
            }
        if conn.dialect.name == "sqlite":
            found["triggers"] = conn.execute(sa.text(
                "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger' "
                "ORDER BY name")).all()
    return found


def settings_key(config: dict[str, t.Any]) -> str:
    """What tells one test host's tables from another's: its settings (:func:`make_test_app`'s
    ``config``)."""
    return repr(sorted(config.items()))


#: create_all's statements by database server and settings (:func:`create_all_as_before`);
#: ``None`` where they cannot be replayed on another database.
_CREATE_ALL_STATEMENTS: dict[tuple[str, str], str | None] = {}


def create_all_as_before(db: SQLAlchemy, settings: str) -> bool:
    """``db.create_all()``, or after the run's first one with the same ``settings`` on the
    same server, its statements again in one go (create_all asks the database about each
    table first: a tenth of a second a test on PostgreSQL). True when replayed."""
    engine = db.engine
    if engine.dialect.name not in ("sqlite", "postgresql"):
        db.create_all()  # MariaDB: each test has a database of its own, asked afresh
        return False
    postgres = engine.dialect.name == "postgresql"
    server = engine.url.set(query={}).render_as_string(hide_password=False) if postgres \
        else engine.dialect.name
    key = (server, settings)
    statements = _CREATE_ALL_STATEMENTS.get(key)
    if statements is not None:
        with engine.begin() as conn:
            if postgres:
                conn.connection.cursor().execute(statements)
            else:
                conn.connection.driver_connection.executescript(statements)
        return True
    if key in _CREATE_ALL_STATEMENTS:
        db.create_all()
        return False
    with _recording_changes(engine.url) as recorded:
        db.create_all()
    own_name = engine.url.query["options"].split("=", 1)[1] if postgres \
        else engine.url.database or ""
    replayable = recorded and not any(
        own_name in statement or parameters for statement, parameters in recorded)
    _CREATE_ALL_STATEMENTS[key] = ";\n".join(s for s, _ in recorded) + ";" if replayable \
        else None
    return False


class WeChatAPI:
    """``responses`` with WeChat's real answer shapes."""

    def __init__(self, mock: responses.RequestsMock, base: str = API) -> None:
        self.mock = mock
        self.base = base

    def _add(self, path: str, payload: t.Any, **kwargs: t.Any) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(
            payload, ensure_ascii=False).encode("utf-8")
        kwargs.setdefault("content_type", "text/plain")
        self.mock.add(responses.GET, self.base + path, body=body, **kwargs)

    def token(self, openid: str = OPENID, unionid: str | None = UNIONID, **extra: t.Any) -> None:
        payload = {"access_token": ACCESS_TOKEN, "expires_in": 7200,
                   "refresh_token": REFRESH_TOKEN, "openid": openid, "scope": "snsapi_login"}
        if unionid:
            payload["unionid"] = unionid
        payload.update(extra)
        self._add(TOKEN_PATH, payload)

    def userinfo(self, openid: str = OPENID, unionid: str | None = UNIONID,
                 nickname: str = NICKNAME, **extra: t.Any) -> None:
        payload: dict[str, t.Any] = {
            "openid": openid, "nickname": nickname, "sex": 0, "language": "",
            "city": "", "province": "", "country": "", "headimgurl": AVATAR, "privilege": []}
        if unionid:
            payload["unionid"] = unionid
        payload.update(extra)
        self._add(USERINFO_PATH, payload)

    def error(self, path: str, errcode: int, errmsg: str) -> None:
        rid = "rid: 6731d8f2-1b2c3d4e-5f6a7b8c"
        self._add(path, {"errcode": errcode, "errmsg": f"{errmsg}, {rid}"})

    def raw(self, path: str, body: bytes, **kwargs: t.Any) -> None:
        self._add(path, body, **kwargs)


def start_login(client: t.Any, connection: str = "wechat", **params: t.Any) -> str:
    """Begin a login like a browser does; return the ``state`` WeChat would echo."""
    resp = client.get(f"/auth/{connection}/login", query_string=params)
    assert resp.status_code == 302, resp.data
    match = re.search(r"[?&]state=([A-Za-z0-9]+)", resp.headers["Location"])
    assert match, resp.headers["Location"]
    return match.group(1)


def finish_login(client: t.Any, state: str, code: str = CODE,
                 connection: str = "wechat") -> t.Any:
    return client.get(f"/auth/{connection}/callback", query_string={"code": code, "state": state})


# --- the WeChat API calls made, and the rows written ------------------------------------


def api_paths(api: WeChatAPI) -> list[str]:
    """The paths of the WeChat API requests made so far, in order."""
    from urllib.parse import urlsplit

    return [urlsplit(call.request.url).path for call in api.mock.calls]


def api_queries(api: WeChatAPI, path: str) -> list[dict[str, str]]:
    """The query parameters of every request made to ``path`` so far."""
    from urllib.parse import parse_qsl, urlsplit

    found = []
    for call in api.mock.calls:
        parts = urlsplit(call.request.url)
        if parts.path == path:
            found.append(dict(parse_qsl(parts.query)))
    return found


def login_with_wechat(
    client: t.Any,
    api: WeChatAPI,
    *,
    openid: str = OPENID,
    unionid: str | None = UNIONID,
    profile_unionid: str | None = "same",
    nickname: str = NICKNAME,
    connection: str = "wechat",
    **params: t.Any,
) -> t.Any:
    """A whole WeChat login (QR scanned and confirmed) as the given WeChat account.

    Clears the mocked API first, so ``api_paths(api)`` afterwards lists only the calls of
    this login. ``profile_unionid="same"`` gives userinfo the token's unionid.
    """
    api.mock.reset()
    api.token(openid=openid, unionid=unionid)
    api.userinfo(openid=openid, unionid=unionid if profile_unionid == "same" else profile_unionid,
                 nickname=nickname)
    state = start_login(client, connection=connection, **params)
    return finish_login(client, state, connection=connection)


def table(app: Flask, name: str) -> t.Any:
    """One of the extension's tables as the host's ``db`` declares it (their names are
    documented: docs/deploying.rst), for reading and writing rows as the host's own
    code or a database tool would."""
    return app.db.metadata.tables[name]  # type: ignore[attr-defined]


def quoted(app_or_bind: t.Any, name: str) -> str:
    """The table or column ``name`` quoted for raw SQL as the database of an app (or of an
    engine or connection) quotes an identifier: in double quotes on SQLite and PostgreSQL,
    in backquotes on MariaDB/MySQL (which reads a double-quoted name as a string)."""
    if isinstance(app_or_bind, Flask):
        with app_or_bind.app_context():
            dialect = app_or_bind.extensions["sqlalchemy"].engine.dialect
    else:
        dialect = app_or_bind.dialect
    return str(dialect.identifier_preparer.quote_identifier(name))


def rows(app: Flask, name: str, order_by: str = "id") -> list[t.Any]:
    """Every row of the extension's table ``name``, ordered by ``order_by``."""
    import sqlalchemy as sa

    rows_table = table(app, name)
    with app.app_context():
        db = app.db  # type: ignore[attr-defined]
        return list(db.session.execute(
            sa.select(rows_table).order_by(rows_table.c[order_by])).all())


def all_users(app: Flask) -> list[t.Any]:
    """Every row of the host's user table, ordered by id (detached, attributes loaded)."""
    import sqlalchemy as sa

    with app.app_context():
        db = app.db  # type: ignore[attr-defined]
        return list(db.session.execute(
            sa.select(app.User).order_by(app.User.id)  # type: ignore[attr-defined]
        ).scalars())


def all_identities(app: Flask) -> list[t.Any]:
    """Every WeChat identity row (``wechat_qr_identity``), ordered by id."""
    return rows(app, "wechat_qr_identity")


def add_user(app: Flask, password: str | None = None, **fields: t.Any) -> int:
    """Create a host user directly (as the site's own registration would); its id.

    ``password`` is stored as a Werkzeug hash in ``password_hash`` (what the default
    adapter checks when binding); without it the user has no local password.
    """
    if password is not None:
        from werkzeug.security import generate_password_hash

        fields["password_hash"] = generate_password_hash(password)
    with app.app_context():
        db = app.db  # type: ignore[attr-defined]
        user = app.User(**fields)  # type: ignore[attr-defined]
        db.session.add(user)
        db.session.commit()
        return int(user.id)


def link_identity(app: Flask, user_id: int, openid: str = OPENID,
                  unionid: str | None = UNIONID, connection: str = "wechat",
                  wechat_app: str = "website") -> None:
    """Store an identity row linking a WeChat openid (of ``wechat_app``: ``website`` or
    ``official_account``) to an existing host user (with its foreign key to the user row,
    where the table has one)."""
    import sqlalchemy as sa

    identities = table(app, "wechat_qr_identity")
    user_key = {"user_key": user_id} if "user_key" in identities.c else {}
    with app.app_context():
        db = app.db  # type: ignore[attr-defined]
        db.session.execute(sa.insert(identities).values(
            connection=connection, openid=openid, unionid=unionid, user_id=str(user_id),
            app=wechat_app, **user_key))
        db.session.commit()


def logged_in_user_id(client: t.Any) -> str | None:
    """The Flask-Login user id in the client's session, if any."""
    with client.session_transaction() as sess:
        return sess.get("_user_id")


# --- databases and app factories ----------------------------------------------------------

#: PostgreSQL for the second run of the suite: ``postgresql+psycopg://user@127.0.0.1:port/db``
#: (``.ci/start-postgres`` starts one). Unset: the PostgreSQL variants skip.
POSTGRES_URL_VARIABLE = "WECHAT_QR_TEST_DATABASE_URL"
#: Set (by ``.ci/run``): a PostgreSQL variant that cannot run fails instead of skipping.
REQUIRE_POSTGRES_VARIABLE = "WECHAT_QR_TEST_REQUIRE_POSTGRES"
#: MariaDB (or MySQL) for the third run of the database tests:
#: ``mysql+pymysql://user@127.0.0.1:port/db`` (``.ci/start-mariadb`` starts one). Unset:
#: the MariaDB variants skip.
MARIADB_URL_VARIABLE = "WECHAT_QR_TEST_MARIADB_URL"
#: Set (by ``.ci/run``): a MariaDB variant that cannot run fails instead of skipping.
REQUIRE_MARIADB_VARIABLE = "WECHAT_QR_TEST_REQUIRE_MARIADB"


#: :func:`admin_engine`'s engines, by server URL.
_ADMIN_ENGINES: dict[str, t.Any] = {}


def admin_engine(server_url: str) -> t.Any:
    """One engine per server for creating and dropping the tests' schemas, its connection
    kept between tests (a new one costs PostgreSQL a process); closed by
    :func:`dispose_admin_engines` when the session ends."""
    if server_url not in _ADMIN_ENGINES:
        import sqlalchemy as sa

        _ADMIN_ENGINES[server_url] = sa.create_engine(server_url, pool_size=1)
    return _ADMIN_ENGINES[server_url]


def dispose_admin_engines() -> None:
    """Close :func:`admin_engine`'s connections (the session is over)."""
    while _ADMIN_ENGINES:
        _ADMIN_ENGINES.popitem()[1].dispose()


def without_tls(server_url: str | None) -> str | None:
    """A MariaDB URL whose connections skip TLS (unless the URL says otherwise): PyMySQL's
    default, "preferred" TLS, loads the system's CA certificates for every new connection
    (0.1 s each, where the tests' server over loopback has no TLS to offer), and every
    test's app opens new ones: a quarter of the MariaDB variants' time."""
    if not server_url:
        return server_url
    import sqlalchemy as sa

    url = sa.make_url(server_url)
    if any(key.startswith("ssl") for key in url.query):
        return server_url
    return url.update_query_dict({"ssl_disabled": "true"}).render_as_string(
        hide_password=False)


class Database:
    """Where one test's databases live: SQLite files in its folder, one PostgreSQL schema
    per database name, or one MariaDB/MySQL database per name (dropped afterwards, or given
    back emptied: :meth:`host_url`), so tests never see each other's rows."""

    def __init__(self, backend: str, tmp_path: t.Any, server_url: str | None = None) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self.server_url = without_tls(server_url) if backend == "mariadb" else server_url
        self.schemas: list[str] = []
        #: the schemas :meth:`host_url` gave, with their hosts' settings
        self.host_schemas: dict[str, str] = {}

    @property
    def is_postgres(self) -> bool:
        return self.backend == "postgresql"

    @property
    def is_mysql(self) -> bool:
        """MariaDB or MySQL (SQLAlchemy's ``mysql`` dialect: ``mysql+pymysql://``)."""
        return self.backend == "mariadb"

    def url(self, name: str = "app") -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.tmp_path / (name + '.db')}"
        import secrets

        import sqlalchemy as sa

        schema = f"t_{secrets.token_hex(6)}_{name}"[:60].lower()
        with admin_engine(self.server_url or "").begin() as conn:
            if self.is_mysql:
                # The server's own default character set (latin1 on a MariaDB without a
                # configuration file) is a site's too: the test says which it needs.
                conn.execute(sa.text(f"CREATE DATABASE `{schema}` CHARACTER SET utf8mb4"))
            else:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        self.schemas.append(schema)
        return self._url_of(schema)

    def _url_of(self, schema: str) -> str:
        import sqlalchemy as sa

        if self.is_mysql:
            return sa.make_url(self.server_url or "").set(database=schema).render_as_string(
                hide_password=False)
        separator = "&" if "?" in (self.server_url or "") else "?"
        return f"{self.server_url}{separator}options=-csearch_path%3D{schema}"

    def host_url(self, name: str, settings: str) -> tuple[str, bool]:
        """A database for a test host (support.make_test_app) with ``settings``
        (:func:`settings_key`), and whether it already has the tables that host's create_all
        makes, empty: on SQLite a copy of the file the run's first such host's create_all
        made; on a server a schema (MariaDB: database) an earlier test's host with the same
        settings made them in, given back emptied by that test's :meth:`drop` because its
        schema was still as made. Without one (False), call :meth:`record_tables` once the
        host made its tables. Creating tables costs a server a tenth of a second a test."""
        if self.backend == "sqlite":
            url = self.url(name)
            template = _SQLITE_HOST_TEMPLATES.get(settings)
            if template is None:
                return url, False
            shutil.copyfile(template, self.tmp_path / (name + ".db"))
            return url, True
        given_back = _GIVEN_BACK.get((self.server_url or "", settings))
        if given_back:
            schema = given_back.pop()
            self.schemas.append(schema)
            self.host_schemas[schema] = settings
            return self._url_of(schema), True
        url = self.url(name)
        self.host_schemas[self.schemas[-1]] = settings
        return url, False

    def record_tables(self, url: str, settings: str) -> None:
        """The host on ``url`` (from :meth:`host_url`) made its tables: what they look like now
        is what a later test's host with the same ``settings`` gets."""
        import sqlalchemy as sa

        if self.backend == "sqlite":
            if settings not in _SQLITE_HOST_TEMPLATES:
                import sqlite3

                path = _template_folder() / f"host{len(_SQLITE_HOST_TEMPLATES)}.db"
                with contextlib.closing(sqlite3.connect(sa.make_url(url).database or "")) as \
                        source, contextlib.closing(sqlite3.connect(path)) as copy:
                    source.backup(copy)
                _SQLITE_HOST_TEMPLATES[settings] = path
            return
        key = (self.server_url or "", settings)
        if key not in _FINGERPRINTS:
            with admin_engine(self.server_url or "").connect() as conn:
                _FINGERPRINTS[key] = _fingerprint(conn, self._schema_of(url))

    def _schema_of(self, url: str) -> str:
        import sqlalchemy as sa

        parsed = sa.make_url(url)
        if self.is_mysql:
            return parsed.database or ""
        return str(parsed.query["options"]).split("=", 1)[1]

    def drop(self) -> None:
        """Drop the test's schemas; a host's (:meth:`host_url`) still as it was made is given
        back instead, emptied, for a later test's host with the same settings."""
        if not self.schemas:
            return
        import sqlalchemy as sa

        engine = admin_engine(self.server_url or "")
        for schema in self.schemas:
            key = (self.server_url or "", self.host_schemas.get(schema, ""))
            fingerprint = _FINGERPRINTS.get(key) if schema in self.host_schemas else None
            if fingerprint is not None and len(_GIVEN_BACK.get(key, ())) < _GIVEN_BACK_PER_KEY:
                with engine.connect() as conn:
                    if _emptied(conn, schema, fingerprint):
                        _GIVEN_BACK.setdefault(key, []).append(schema)
                        continue
            with engine.begin() as conn:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{schema}`" if self.is_mysql
                                     else f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


#: Schemas (MariaDB: databases) given back by :meth:`Database.drop`, by server and their
#: hosts' settings; at most :data:`_GIVEN_BACK_PER_KEY` each.
_GIVEN_BACK: dict[tuple[str, str], list[str]] = {}
_GIVEN_BACK_PER_KEY = 4
#: What the run's first schema of a test host with given settings looked like once its tables
#: were made (:func:`_fingerprint`), by server and settings: a schema is given back only as
#: that.
_FINGERPRINTS: dict[tuple[str, str], str] = {}
#: The file the run's first SQLite test host with given settings made (Database.host_url).
_SQLITE_HOST_TEMPLATES: dict[str, Path] = {}


def drop_given_back() -> None:
    """Drop the schemas given back for later tests (the session is over)."""
    import sqlalchemy as sa

    _FINGERPRINTS.clear()
    while _GIVEN_BACK:
        (server_url, _settings), schemas = _GIVEN_BACK.popitem()
        mysql = sa.make_url(server_url).get_backend_name() == "mysql"
        with admin_engine(server_url).begin() as conn:
            for schema in schemas:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{schema}`" if mysql
                                     else f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


#: Everything about a PostgreSQL schema a test could change (tables, columns, defaults,
#: constraints, indexes, triggers, functions, views, sequences, grants, row security,
#: storage options, owners, comments), as one digest that does not name the schema (read
#: with the schema as the search path, and its name taken out of definitions).
_POSTGRES_FINGERPRINT = """
SELECT md5(coalesce(string_agg(x, E'\\n' ORDER BY x), '')) FROM (
 SELECT concat_ws(' ', 'c', c.relname, c.relkind, c.relacl, c.reloptions, c.relrowsecurity,
                  c.relowner, obj_description(c.oid, 'pg_class')) AS x
   FROM pg_class c WHERE c.relnamespace = to_regnamespace(:s)
 UNION ALL SELECT concat_ws(' ', 'a', c.relname, a.attnum, a.attname,
                  format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity,
                  a.attgenerated, a.attcollation, pg_get_expr(d.adbin, d.adrelid))
   FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
   LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE c.relnamespace = to_regnamespace(:s) AND a.attnum > 0 AND NOT a.attisdropped
 UNION ALL SELECT concat_ws(' ', 'k', conrelid::regclass, conname, pg_get_constraintdef(oid))
   FROM pg_constraint WHERE connamespace = to_regnamespace(:s)
 UNION ALL SELECT concat_ws(' ', 'i',
                  replace(pg_get_indexdef(i.indexrelid), quote_ident(:s) || '.', ''))
   FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
   WHERE c.relnamespace = to_regnamespace(:s)
 UNION ALL SELECT concat_ws(' ', 't',
                  replace(pg_get_triggerdef(t.oid), quote_ident(:s) || '.', ''), t.tgenabled)
   FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
   WHERE c.relnamespace = to_regnamespace(:s) AND NOT t.tgisinternal
 UNION ALL SELECT concat_ws(' ', 'r', rulename, definition)
   FROM pg_rules WHERE schemaname = :s
 UNION ALL SELECT concat_ws(' ', 'p', p.oid::regprocedure, md5(replace(pg_get_functiondef(p.oid),
                                                          quote_ident(:s) || '.', '')))
   FROM pg_proc p WHERE p.pronamespace = to_regnamespace(:s) AND p.prokind IN ('f', 'p')
 UNION ALL SELECT concat_ws(' ', 'y', t.typname, t.typtype)
   FROM pg_type t WHERE t.typnamespace = to_regnamespace(:s)
 UNION ALL SELECT concat_ws(' ', 'n', nspowner, nspacl)
   FROM pg_namespace WHERE oid = to_regnamespace(:s)
) parts
"""

#: The same of a MariaDB/MySQL database: its tables' definitions (SHOW CREATE TABLE, which
#: has their columns, keys, indexes, checks and options), its triggers (SHOW TRIGGERS) and
#: this (information_schema's views of keys and columns take a server ten times as long).
_MYSQL_FINGERPRINT = """
SELECT CONCAT_WS(' ', 'r', ROUTINE_NAME, ROUTINE_TYPE, MD5(IFNULL(ROUTINE_DEFINITION, '')))
  FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = :s
UNION ALL SELECT CONCAT_WS(' ', 'e', EVENT_NAME)
  FROM information_schema.EVENTS WHERE EVENT_SCHEMA = :s
UNION ALL SELECT CONCAT_WS(' ', 'p', GRANTEE, PRIVILEGE_TYPE)
  FROM information_schema.SCHEMA_PRIVILEGES WHERE TABLE_SCHEMA = :s
UNION ALL SELECT CONCAT_WS(' ', 'q', GRANTEE, TABLE_NAME, PRIVILEGE_TYPE)
  FROM information_schema.TABLE_PRIVILEGES WHERE TABLE_SCHEMA = :s
UNION ALL SELECT CONCAT_WS(' ', 'l', GRANTEE, TABLE_NAME, COLUMN_NAME, PRIVILEGE_TYPE)
  FROM information_schema.COLUMN_PRIVILEGES WHERE TABLE_SCHEMA = :s
UNION ALL SELECT CONCAT_WS(' ', 's', DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME)
  FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :s
"""


def _fingerprint(conn: t.Any, schema: str) -> str:
    """A digest of everything a test could have changed in ``schema`` but its rows, that does
    not depend on the schema's name (PostgreSQL: read with it as the search path)."""
    import sqlalchemy as sa

    if conn.dialect.name == "mysql":
        tables = conn.exec_driver_sql(f"SHOW FULL TABLES FROM `{schema}`").all()
        parts = [repr(tuple(table)) for table in tables]
        for name, _kind in tables:
            definition = conn.exec_driver_sql(f"SHOW CREATE TABLE `{schema}`.`{name}`").one()[1]
            # the counter is the rows'; the indexes come in the order they were made, which
            # is not the same from one create_all to the next
            lines = re.sub(r" AUTO_INCREMENT=\d+", "", definition).replace(",\n", "\n")
            indexes = re.compile(r"\s*(UNIQUE |FULLTEXT |SPATIAL )?KEY ")
            parts.append("\n".join([line for line in lines.splitlines()
                                    if not indexes.match(line)]
                                   + sorted(filter(indexes.match, lines.splitlines()))))
        parts += [repr(tuple(trigger)[:5])  # name, event, table, statement, timing
                  for trigger in conn.exec_driver_sql(f"SHOW TRIGGERS FROM `{schema}`")]
        parts += conn.execute(sa.text(_MYSQL_FINGERPRINT), {"s": schema}).scalars().all()
        return hashlib.md5("\n".join(sorted(parts)).encode()).hexdigest()
    with conn.begin():
        conn.execute(sa.text("SELECT set_config('search_path', quote_ident(:s), true)"),
                     {"s": schema})
        return str(conn.execute(sa.text(_POSTGRES_FINGERPRINT), {"s": schema}).scalar())


#: Empty a PostgreSQL schema (its name and fingerprint filled in) and restart its sequences,
#: in one round trip, unless its fingerprint is no longer the one given.
_POSTGRES_EMPTYING = """
DO $$
DECLARE
  r record;
BEGIN
  PERFORM set_config('search_path', quote_ident(%(schema)s), true);
  IF (%(fingerprint_query)s) IS DISTINCT FROM %(fingerprint)s THEN
    RAISE EXCEPTION 'schema changed';
  END IF;
  -- no foreign key is checked (nor trigger fired) while every row goes
  SET LOCAL session_replication_role = replica;
  FOR r IN SELECT relname FROM pg_class
           WHERE relnamespace = to_regnamespace(%(schema)s) AND relkind IN ('r', 'p') LOOP
    EXECUTE format('DELETE FROM %%I.%%I', %(schema)s, r.relname);
  END LOOP;
  FOR r IN SELECT sequencename FROM pg_sequences
           WHERE schemaname = %(schema)s AND last_value IS NOT NULL LOOP
    EXECUTE format('ALTER SEQUENCE %%I.%%I RESTART', %(schema)s, r.sequencename);
  END LOOP;
END
$$
"""


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _emptied(conn: t.Any, schema: str, fingerprint: str) -> bool:
    """Empty ``schema``'s tables and restart its counters (as a new schema's start), if it is
    still as :func:`_fingerprint` was when its first tables were made, and no connection uses
    it; else (or on any error) False, and the schema is left for its DROP."""
    import sqlalchemy as sa

    try:
        if conn.dialect.name != "mysql":
            statement = _POSTGRES_EMPTYING % {
                "schema": _literal(schema), "fingerprint": _literal(fingerprint),
                "fingerprint_query": _POSTGRES_FINGERPRINT.replace(":s", _literal(schema))}
            with conn.begin():
                conn.connection.cursor().execute(statement)
            return True
        if _fingerprint(conn, schema) != fingerprint or conn.execute(sa.text(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = :s"),
                {"s": schema}).scalar():
            conn.rollback()
            return False
        tables = conn.execute(sa.text(
            "SELECT TABLE_NAME, AUTO_INCREMENT FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = :s AND TABLE_TYPE = 'BASE TABLE'"), {"s": schema}).all()
        conn.execute(sa.text("SET FOREIGN_KEY_CHECKS = 0"))
        try:
            for name, _counter in tables:
                conn.execute(sa.text(f"DELETE FROM `{schema}`.`{name}`"))
            conn.commit()
        finally:
            conn.execute(sa.text("SET FOREIGN_KEY_CHECKS = 1"))
        for name, counter in tables:
            if counter is not None and counter > 1:
                conn.execute(sa.text(f"ALTER TABLE `{schema}`.`{name}` AUTO_INCREMENT = 1"))
        conn.commit()
        return True
    except (sa.exc.SQLAlchemyError, conn.dialect.dbapi.Error):
        conn.rollback()
        return False


def dispose_engines(app: Flask) -> None:
    """Close the app's pooled database connections (a test's PostgreSQL schema is dropped
    next, and an open connection would be a ResourceWarning)."""
    with app.app_context():
        db = app.extensions["sqlalchemy"]
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


@contextlib.contextmanager
def app_factory(build: t.Callable[..., Flask]) -> t.Iterator[t.Callable[..., Flask]]:
    """``build``, remembering every app it makes, whose pooled database connections are
    closed when the ``with`` ends (a test's PostgreSQL schema is dropped next)."""
    apps: list[Flask] = []

    def factory(*args: t.Any, **kwargs: t.Any) -> Flask:
        app = build(*args, **kwargs)
        apps.append(app)
        return app

    try:
        yield factory
    finally:
        for app in apps:
            dispose_engines(app)


#: Werkzeug's default password hash method in this test process (conftest's
#: cheap_password_hashes): a real salted hash, without scrypt's deliberate cost.
TEST_PASSWORD_HASH_METHOD = "pbkdf2:sha256:1"

#: A SECRET_KEY strong enough for ``flask wechat-qr check`` in production.
STRONG_KEY = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"


@contextlib.contextmanager
def entered_in_another_thread(enter: t.Callable[[], t.Any]) -> t.Iterator[t.Any]:
    """The context manager ``enter()`` gives, entered by another thread for as long as the
    block runs (what it gave that thread is what this yields)."""
    values: list[t.Any] = []
    entered, release = threading.Event(), threading.Event()

    def run() -> None:
        with enter() as value:
            values.append(value)
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert entered.wait(10)
        yield values[0]
    finally:
        release.set()
        thread.join(10)


def in_a_worker_thread(work: t.Callable[[], t.Any]) -> t.Any:
    """``work()`` in a thread of its own, as a server's worker thread runs requests: its
    result, or its exception raised here. For async sites: Playwright's sync API, alive in
    this process once a browser test ran, keeps an event loop running in the main thread,
    where asgiref's ``AsyncToSync`` (Flask's ``ensure_sync``) refuses to run."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(work).result(timeout=120)


def in_forked_child(check: t.Callable[[], bool], within: float = 10,
                    fork: t.Callable[[], int] = os.fork) -> int | None:
    """Fork (a gunicorn worker of a ``--preload`` master, say); the child runs ``check`` and
    exits 0 if it held, 2 if not, 1 if it raised, never returning into pytest. The child's
    exit code, or ``None`` (the child killed) if it has not ended ``within`` seconds.
    ``fork``: :func:`without_python_fork_hooks` forks as uWSGI does."""
    pid = fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if check() else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


def without_python_fork_hooks() -> int:
    """C's ``fork`` (the GIL held), as uWSGI forks its workers: no at-fork handler of
    Python's runs in the child."""
    import ctypes

    return int(ctypes.PyDLL(None).fork())


def free_port() -> int:
    """A loopback port nothing listens on (once this socket is closed), to start a server
    on. For a port that must refuse connections, :func:`closed_port`."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def closed_port() -> t.Iterator[int]:
    """A loopback port that refuses connections while the block runs: held bound, never
    listening. A port from :func:`free_port` is free for anyone once its socket closes, and
    a server of a test running beside (another xdist worker) once took one: the "refused"
    call then waited for an answer and timed out."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@contextlib.contextmanager
def database_out_of_reach(engine: t.Any, folder: t.Any) -> t.Iterator[list[int]]:
    """While the block runs, ``engine``'s database cannot be reached: its pool is emptied
    and every new connection goes, through the dialect's own connect, to a loopback port
    that refuses it (PostgreSQL, MariaDB) or a file in a folder that does not exist
    (SQLite, in ``folder``): a server down, a path gone. Yields the list of attempts made
    (one ``1`` each); afterwards the database is there again, as after a restart."""
    import sqlalchemy as sa

    attempts: list[int] = []
    with closed_port() as port:
        def elsewhere(_dialect: t.Any, _record: t.Any, cargs: list[t.Any],
                      cparams: dict[str, t.Any]) -> None:
            attempts.append(1)
            if engine.dialect.name == "sqlite":
                cargs[:1] = [str(folder / "gone" / "app.db")]
            else:
                cparams.update(host="127.0.0.1", port=port)

        engine.dispose()
        sa.event.listen(engine, "do_connect", elsewhere)
        try:
            yield attempts
        finally:
            sa.event.remove(engine, "do_connect", elsewhere)
            engine.dispose()


# --- the host site's own login and forms ----------------------------------------------


def log_in(client: t.Any, user_id: int) -> None:
    """Log in as the host's own login form would (Flask-Login's session keys)."""
    with client.session_transaction() as sess:
        sess["_user_id"] = str(user_id)
        sess["_fresh"] = True


def with_csrf_token_route(app: Flask) -> Flask:
    """Add ``/token``: the extension's CSRF token, through the template global a host uses in
    its own forms (add it before the app's first request)."""
    app.add_url_rule("/token", "token",
                     lambda: render_template_string("{{ wechat_qr_csrf_token() }}"))
    return app


def csrf_token_of(client: t.Any) -> str:
    """The CSRF token of the client's session, from :func:`with_csrf_token_route`'s page."""
    resp = client.get("/token")
    assert resp.status_code == 200
    return str(resp.get_data(as_text=True))


def bind_page(client: t.Any) -> tuple[str, str]:
    """The bind page's HTML and its CSRF token."""
    resp = client.get("/auth/bind")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    html = resp.get_data(as_text=True)
    tokens = {tag["value"] for tag in find_tags(html, "input") if tag.get("name") == "csrf_token"}
    assert len(tokens) == 1
    return html, t.cast(str, tokens.pop())


def error_name(resp: t.Any) -> str | None:
    """The ``data-error`` of the page's error box (the error's class name), if any."""
    boxes = [tag for tag in find_tags(resp.get_data(as_text=True), "div")
             if tag.get("data-error")]
    return boxes[0]["data-error"] if boxes else None


def finishing_page(resp: t.Any) -> bool:
    """Whether ``resp`` is the page that waits for another request of the login to finish
    it (``wechat_qr/finishing.html``), loading the callback again by itself."""
    return any(tag.get("data-outcome") == "finishing"
               for tag in find_tags(resp.get_data(as_text=True), "div"))


@contextlib.contextmanager
def recording(app: Flask, *names: str) -> t.Iterator[list[tuple[str, dict[str, t.Any]]]]:
    """Every send of the named signals by ``app``: ``(name, kwargs)``; rows are read while
    the request is alive into ``user_id`` / ``openid``."""
    from flask_wechat_qr import signals

    events: list[tuple[str, dict[str, t.Any]]] = []
    with contextlib.ExitStack() as stack:
        for name in names:
            def receiver(sender: t.Any, _name: str = name, **kwargs: t.Any) -> None:
                if kwargs.get("user") is not None:
                    kwargs["user_id"] = kwargs["user"].id
                    kwargs["user_type"] = type(kwargs["user"])  # not a proxy of it
                if kwargs.get("identity") is not None:
                    kwargs["openid"] = kwargs["identity"].openid
                events.append((_name, kwargs))

            stack.enter_context(getattr(signals, name).connected_to(receiver, sender=app))
        yield events


def two_connections(**extra: t.Any) -> dict[str, t.Any]:
    """Two website apps of one WeChat Open Platform account (one unionid per person)."""
    return {"WECHAT_QR_CONNECTIONS": [
        {"connection": "wechat", "app_id": APP_ID, "app_secret": APP_SECRET, **extra},
        {"connection": "wechat-b", "display_name": "WeChat (B)", "app_id": APP_ID_B,
         "app_secret": "another-secret-for-app-b", **extra},
    ]}


# --- the sandbox's login steps (QR page, phone, poll) ---------------------------------


def open_qr_page(client: t.Any, next_url: str | None = None, *,
                 login_path: str = "/auth/wechat/login", prefix: str = SANDBOX_PREFIX,
                 base: str = "http://localhost",
                 sandbox_client: t.Any = None) -> tuple[str, str]:
    """Start a login at ``login_path`` and load the sandbox QR page it redirects to; return
    (uuid, state).

    The sandbox is the one mounted at ``prefix`` in ``client``'s app, or a standalone one at
    ``base`` (``prefix=""``) whose pages ``sandbox_client`` loads.
    """
    resp = client.get(login_path, query_string={"next": next_url} if next_url else None)
    location = resp.headers["Location"]
    assert location.startswith(f"{base}{prefix}/connect/qrconnect?"), location
    assert location.endswith("#wechat_redirect"), location
    page = (client if sandbox_client is None else sandbox_client).get(
        location[len(base):].split("#")[0])
    assert page.status_code == 200, page.get_data(as_text=True)
    uuid = re.search(r'data-uuid="([^"]+)"', page.get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    state = parse_qs(urlsplit(location).query)["state"][0]
    return uuid, state


def answer(phone: t.Any, uuid: str, prefix: str = SANDBOX_PREFIX, **form: str) -> t.Any:
    """The phone opens the QR code's confirmation page and answers it with ``form``."""
    phone.get(f"{prefix}/connect/confirm/{uuid}")
    return phone.post(f"{prefix}/connect/confirm/{uuid}", data=form)


def poll(client: t.Any, uuid: str, prefix: str = SANDBOX_PREFIX) -> dict[str, t.Any]:
    """The QR page's poll: ``status`` and, once answered, the ``redirect`` to the callback."""
    return t.cast(dict[str, t.Any],
                  client.get(f"{prefix}/connect/l/qrconnect", query_string={"uuid": uuid}).json)


# --- real servers -----------------------------------------------------------------------


class LiveServer:
    """A WSGI app on a real socket on 127.0.0.1, in a thread (threaded: a page can poll
    while it loads). A Flask app's pooled database connections are closed when it stops."""

    #: How long stopping waits for the serving thread, in seconds.
    join_timeout: float = 10

    def __init__(self, app: t.Any, request_handler: t.Any = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True,
                                  request_handler=request_handler, ssl_context=ssl_context)
        scheme = "https" if ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> t.Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: t.Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=self.join_timeout)
        if "sqlalchemy" in getattr(self.server.app, "extensions", {}):
            dispose_engines(self.server.app)


def serve_example_site(database: Database, **config: t.Any) -> LiveServer:
    """The example site on the in-app sandbox, served on a free port (browser tests)."""
    return LiveServer(example_site(database, "site", "SQLALCHEMY_DATABASE_URI", {
        "TESTING": True,
        "SECRET_KEY": "browser-test-secret",
        "WECHAT_QR_SANDBOX": True,
        **config,
    }))


# --- the example site, started on a database an earlier start has set up --------------------
# The example site's create_app runs the extension's migrations and creates its own tables: a
# quarter of a second on PostgreSQL, for hundreds of tests about its pages. The first site of
# a run with given settings (and environment) is made on an empty database, the real first
# start; what it made is kept as a template, and later sites with the same settings start on a
# copy of it, as a restarted site does (create_app still checks and upgrades: nothing to do).
# Tests about the first start and the migrations pass their own database URL (make_site(url)).


class SiteTemplate:
    """What create_app made of an empty database: the SQLite file (copied with SQLite's
    backup), or on PostgreSQL the statements that changed the schema, replayed in a new one."""

    def __init__(self, path: Path | None = None, statements: list[tuple[str, t.Any]] | None = None
                 ) -> None:
        self.path = path
        self.statements = statements

    def restore(self, database: Database, url: str) -> None:
        import sqlalchemy as sa

        if self.path is not None:
            shutil.copyfile(self.path, sa.make_url(url).database or "")
            return
        schema = sa.make_url(url).query["options"].split("=", 1)[1]
        with admin_engine(database.server_url or "").begin() as conn:
            conn.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
            cursor = conn.connection.cursor()
            for statement, parameters in self.statements or []:
                cursor.execute(statement, parameters or None)


#: :class:`SiteTemplate` by backend, server and the settings and environment that made it;
#: ``None`` where a site's start cannot be replayed (it named its own schema).
_SITE_TEMPLATES: dict[tuple[str, ...], SiteTemplate | None] = {}
_TEMPLATE_FOLDER: list[Path] = []


def _template_key(database: Database, config: dict[str, t.Any]) -> tuple[str, ...]:
    environment = sorted((name, value) for name, value in os.environ.items()
                         if name.startswith("WECHAT_QR_") or name in ("SECRET_KEY", "DATABASE_URL"))
    return (database.backend, database.server_url or "", repr(sorted(config.items())),
            repr(environment))


def example_site(database: Database, name: str, url_key: str, config: dict[str, t.Any]
                 ) -> Flask:
    """``create_app`` with ``config`` on a new database ``name`` of ``database`` (its URL under
    ``url_key``), that an earlier start with the same settings set up, when there was one
    (then the app's ``site_template`` is that :class:`SiteTemplate`, else ``None``)."""
    from example_app import create_app

    key = _template_key(database, config)
    url = database.url(name)
    template = _SITE_TEMPLATES.get(key)
    if template is not None:
        template.restore(database, url)
        app = create_app({**config, url_key: url})
    elif key in _SITE_TEMPLATES:
        app = create_app({**config, url_key: url})
    else:
        with _recording_changes(url) as statements:
            app = create_app({**config, url_key: url})
        _SITE_TEMPLATES[key] = _template_of(database, url, statements)
    app.site_template = template  # type: ignore[attr-defined]
    return app


@contextlib.contextmanager
def _recording_changes(url: t.Any) -> t.Iterator[list[tuple[str, t.Any]]]:
    """The statements run on ``url`` (other than reads) while the ``with`` lasts."""
    import sqlalchemy as sa

    target = sa.make_url(url)
    statements: list[tuple[str, t.Any]] = []

    def record(conn: t.Any, _cursor: t.Any, statement: str, parameters: t.Any, _context: t.Any,
               executemany: bool) -> None:
        if conn.engine.url != target:
            return
        if statement.lstrip().split(None, 1)[0].upper() in ("SELECT", "WITH", "PRAGMA", "SHOW"):
            return
        statements.append((statement, [parameters] if executemany else parameters))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)


def _template_folder() -> Path:
    """Where this run keeps its template SQLite files (removed by
    :func:`forget_site_templates`)."""
    import tempfile

    if not _TEMPLATE_FOLDER:
        _TEMPLATE_FOLDER.append(Path(tempfile.mkdtemp(prefix="wechat-qr-site-templates-")))
    return _TEMPLATE_FOLDER[0]


def _template_of(database: Database, url: str, statements: list[tuple[str, t.Any]]
                 ) -> SiteTemplate | None:
    import sqlite3

    import sqlalchemy as sa

    if database.is_mysql:
        return None  # MariaDB: every site is set up afresh
    if not database.is_postgres:
        path = _template_folder() / f"site{len(_SITE_TEMPLATES)}.db"
        with contextlib.closing(sqlite3.connect(sa.make_url(url).database or "")) as source, \
                contextlib.closing(sqlite3.connect(path)) as copy:
            source.backup(copy)
        return SiteTemplate(path=path)
    schema = database.schemas[-1]
    if any(schema in statement or schema in repr(parameters) or isinstance(parameters, list)
           for statement, parameters in statements):
        return None  # it names its own schema, or ran executemany: not replayed
    return SiteTemplate(statements=statements)


def forget_site_templates() -> None:
    """Forget the templates and create_all's statements, deleting the templates' SQLite files
    (the session is over)."""
    _SITE_TEMPLATES.clear()
    _CREATE_ALL_STATEMENTS.clear()
    _SQLITE_HOST_TEMPLATES.clear()
    while _TEMPLATE_FOLDER:
        shutil.rmtree(_TEMPLATE_FOLDER.pop(), ignore_errors=True)


class FakeWeChat(LiveServer):
    """A loopback HTTP server standing for api.weixin.qq.com, with one chosen fault."""

    def __init__(self, fault: str) -> None:
        self.fault = fault
        self.requests = 0
        self.release = threading.Event()
        super().__init__(self.app)
        # Stopping joins the request threads, so a slow request's access-log line (which
        # tests read) is written by the time the ``with`` ends.
        self.server.daemon_threads = False

    @Request.application  # type: ignore[misc]
    def app(self, request: Request) -> Response:
        self.requests += 1
        if self.fault == "slow":
            self.release.wait(timeout=10)  # far longer than the client waits
            return Response("{}", content_type="text/plain")
        if self.fault == "5xx":
            return Response("<html>502 Bad Gateway</html>", status=502,
                            content_type="text/html")
        if self.fault == "html":
            return Response("<html><body>maintenance</body></html>", content_type="text/html")
        if self.fault == "rate-limited":
            return Response('{"errcode":45011,"errmsg":"api minute-quota reach limit"}',
                            content_type="text/plain")
        raise AssertionError(self.fault)

    def __exit__(self, *exc: t.Any) -> None:
        self.release.set()
        super().__exit__(*exc)


def _served(proc: subprocess.Popen[bytes], log: Path, base: str, probe: str,
            server: str) -> t.Iterator[str]:
    """``base`` once the server ``proc`` answers ``probe`` there (within 20 s), for as long
    as the caller's ``with`` runs; then the server stopped (killed after 10 s)."""
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                requests.get(base + probe, timeout=2)
                break
            except requests.RequestException:  # not listening yet, or a worker still booting
                assert time.monotonic() < deadline, f"{server} did not start:\n" \
                    + log.read_text()
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def gunicorn(env: dict[str, str], log: Path, *, app: str = "example_app:create_app()",
             workers: int = 1, threads: int = 0, preload: bool = False, gevent: bool = False,
             path: t.Sequence[Path] = ()) -> t.Iterator[str]:
    """The example app (or ``app``, importable from ``path``) under gunicorn on a free
    loopback port; its URL. ``workers`` sync workers, gthread ones with ``threads``, or
    gevent ones (``gevent``: each patches ``threading`` and serves up to 100 connections);
    ``preload``: the app built once, before the workers are forked."""
    port = free_port()
    worker_class = "gevent" if gevent else "gthread" if threads else "sync"
    options = ["--workers", str(workers), "--worker-class", worker_class,
               *(["--threads", str(threads)] if threads else []),
               *(["--worker-connections", "100"] if gevent else []),
               *(["--preload"] if preload else [])]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", *options,
             "--graceful-timeout", "2", app],
            cwd=ROOT, env={**os.environ, **env,
                           "PYTHONPATH": os.pathsep.join(map(str, [ROOT, *path]))},
            stdout=out, stderr=subprocess.STDOUT)
    yield from _served(proc, log, f"http://127.0.0.1:{port}", "/api/me", "gunicorn")


@contextlib.contextmanager
def uwsgi(env: dict[str, str], log: Path, *, app: str, path: t.Sequence[Path] = (),
          options: t.Sequence[str] = ("--master", "--processes", "2")) -> t.Iterator[str]:
    """``app`` (``module:callable``, importable from ``path``) under uWSGI (PyPI's pyuwsgi:
    uWSGI's own core, as a wheel) on a free loopback port; its URL. By default as uWSGI
    runs a site unless told otherwise: the app loaded once by the master, which then forks
    its workers (C's ``fork``: no Python at-fork handler runs)."""
    port = free_port()
    command = [sys.executable, "-c", "import sys, pyuwsgi; sys.exit(pyuwsgi.run())",
               "--http-socket", f"127.0.0.1:{port}", "--module", app, "--need-app",
               # it answers HTTP/1.1 and closes (nginx in front opens one connection a request)
               "--add-header", "Connection: close", "--die-on-term",
               *[arg for folder in [ROOT, *path] for arg in ("--pythonpath", str(folder))],
               *options]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env},
                                stdout=out, stderr=subprocess.STDOUT)
    yield from _served(proc, log, f"http://127.0.0.1:{port}", "/", "uWSGI")


def scan_and_allow(browser: requests.Session, phone_base: str, qr_page_url: str,
                   person: str) -> dict[str, t.Any]:
    """Over real HTTP: load the QR page, let a phone (its own session, on ``phone_base``)
    allow it as ``person``; the browser's poll answer."""
    page = browser.get(qr_page_url, timeout=5)
    assert page.status_code == 200, page.text
    uuid = re.search(r'data-uuid="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    confirm = f"{phone_base}{SANDBOX_PREFIX}/connect/confirm/{uuid}"
    with requests.Session() as phone:
        assert phone.get(confirm, timeout=5).status_code == 200
        assert phone.post(confirm, data={"action": "allow", "person": person},
                          timeout=5).status_code == 200
    origin = re.match(r"^http://127\.0\.0\.1:\d+", qr_page_url).group(0)  # type: ignore[union-attr]
    return t.cast(dict[str, t.Any], browser.get(f"{origin}{SANDBOX_PREFIX}/connect/l/qrconnect",
                                                params={"uuid": uuid}, timeout=5).json())


# --- pages and URLs ---------------------------------------------------------------------


def open_phone(page: t.Any, frame: t.Any) -> t.Any:
    """In a browser (Playwright): press the sandbox QR page's "simulate a scan" in ``frame``;
    the phone page it opens, loaded. The phone window of an earlier scan closes itself 800
    ms after its answer, and until then the link opens in it (a named window), where no new
    page appears: a login soon after another waited 15 s for one (a CI flake). It is closed
    first."""
    for earlier in page.context.pages:
        if earlier is not page and earlier.opener() is page:
            earlier.close()
    with page.context.expect_page() as popup_info:
        frame.locator("#sbx-simulate").click()
    phone = popup_info.value
    phone.wait_for_load_state()
    return phone


def simulate_scan(page: t.Any, frame: t.Any, person: str) -> None:
    """In a browser (Playwright): press the sandbox QR page's "simulate a scan" in ``frame``
    and allow as ``person`` on the phone page that opens."""
    phone = open_phone(page, frame)
    phone.locator(f"input[name=person][value={person}]").check()
    phone.locator("#sbx-allow").click()


def find_tags(html: str, tag: str) -> list[dict[str, str | None]]:
    """The attributes (entities decoded) of every ``<tag>`` in ``html``."""
    from html.parser import HTMLParser

    found: list[dict[str, str | None]] = []

    class Parser(HTMLParser):
        def handle_starttag(self, name: str, attrs: list[tuple[str, str | None]]) -> None:
            if name == tag:
                found.append(dict(attrs))

    parser = Parser()
    parser.feed(html)
    parser.close()
    return found


def query_pairs(url: str) -> list[tuple[str, str]]:
    """The query of ``url`` as ordered (name, value) pairs, decoded once."""
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def retry_links(html: str, connection: str = "wechat") -> list[str]:
    """The "try again" links of a page: those to the connection's login route."""
    return [a["href"] or "" for a in find_tags(html, "a")
            if (a.get("href") or "").startswith(f"/auth/{connection}/login")]


# --- the account page: link and unlink ---------------------------------------------------


def host_app(make_app: t.Callable[..., t.Any], **config: t.Any) -> t.Any:
    """The test host plus what an account page needs: a CSRF token and a logout."""
    import flask_login

    app = with_csrf_token_route(make_app(**config))

    def logout() -> str:
        flask_login.logout_user()
        return "bye"

    app.add_url_rule("/logout", "logout", logout)
    return app


def start_link(client: t.Any, connection: str = "wechat", **params: t.Any) -> str:
    """Begin linking WeChat from the account page; return the ``state`` WeChat would echo."""
    resp = client.get(f"/auth/{connection}/link", query_string=params)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    match = re.search(r"[?&]state=([A-Za-z0-9]+)", resp.headers["Location"])
    assert match, resp.headers["Location"]
    return match.group(1)


def scan(api: WeChatAPI, client: t.Any, state: str, *, openid: str = OPENID,
         unionid: str | None = UNIONID, nickname: str = NICKNAME,
         connection: str = "wechat") -> t.Any:
    """WeChat calls back after the person scanned and confirmed, as ``openid``."""
    api.mock.reset()
    api.token(openid=openid, unionid=unionid)
    api.userinfo(openid=openid, unionid=unionid, nickname=nickname)
    return finish_login(client, state, connection=connection)


def identity_links(app: Flask) -> list[tuple[str, str, str]]:
    """Every identity as (connection, openid, user id)."""
    return [(i.connection, i.openid, i.user_id) for i in all_identities(app)]


# --- ask binding: the bind page ----------------------------------------------------------


def ask_app(make_app: t.Callable[..., t.Any], **config: t.Any) -> t.Any:
    """The test host in ask-binding mode, with the CSRF token route its own forms use (added
    before any request)."""
    return with_csrf_token_route(make_app(WECHAT_QR_ASSOCIATION="ask_binding", **config))


def arrive(client: t.Any, api: WeChatAPI, *, openid: str = OPENID,
           unionid: str | None = UNIONID, nickname: str = NICKNAME, **params: t.Any) -> t.Any:
    """A WeChat login of an account nobody owns: it must end on the bind page."""
    resp = login_with_wechat(client, api, openid=openid, unionid=unionid, nickname=nickname,
                             **params)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert resp.headers["Location"] == "/auth/bind"
    return resp


def submit(client: t.Any, token: str | None, **form: str) -> t.Any:
    """Post the bind page's form (with ``token`` as its CSRF token, unless ``None``)."""
    if token is not None:
        form["csrf_token"] = token
    return client.post("/auth/bind", data=form)


def bind_as(client: t.Any, token: str, username: str, password: str) -> t.Any:
    return submit(client, token, action="bind", username=username, password=password)


def pending_rows(app: Flask) -> list[t.Any]:
    """Every pending binding (``wechat_qr_pending_binding``), oldest first."""
    return rows(app, "wechat_qr_pending_binding", order_by="created_at")


def attempt_rows(app: Flask) -> list[t.Any]:
    """Every failed bind attempt (``wechat_qr_bind_attempt``), oldest first."""
    return rows(app, "wechat_qr_bind_attempt")


# --- WeChat answering by hand: double redirects and races --------------------------------

#: WeChat's token answer for :data:`OPENID`, and its profile answer.
TOKEN_ANSWER = {"access_token": ACCESS_TOKEN, "expires_in": 7200,
                "refresh_token": REFRESH_TOKEN, "openid": OPENID, "scope": "snsapi_login",
                "unionid": UNIONID}
PROFILE_ANSWER = {"openid": OPENID, "nickname": NICKNAME, "sex": 0, "headimgurl": AVATAR,
                  "privilege": [], "unionid": UNIONID}
#: WeChat's answer to a code that was already exchanged.
CODE_USED_ANSWER = {"errcode": 40163, "errmsg": "code been used, rid: 1-2-3"}


def wechat_body(payload: dict[str, t.Any]) -> tuple[int, dict[str, str], bytes]:
    """A ``responses`` callback's answer in WeChat's shape (``text/plain`` JSON)."""
    return 200, {"Content-Type": "text/plain"}, json.dumps(payload, ensure_ascii=False).encode()


def answer_with(api: WeChatAPI, path: str, answer: t.Callable[[t.Any], t.Any]) -> None:
    """WeChat's API at ``path`` answers each request with ``answer(request)``."""
    api.mock.add_callback(responses.GET, api.base + path, callback=answer)


def each_code_once(api: WeChatAPI) -> list[str]:
    """The token endpoint as WeChat runs it: every code works once (for the same person),
    then 40163. The codes asked for, in order."""
    codes: list[str] = []
    lock = threading.Lock()

    def answer(request: t.Any) -> tuple[int, dict[str, str], bytes]:
        code = request.params["code"]
        with lock:
            used = code in codes
            codes.append(code)
        return wechat_body(CODE_USED_ANSWER if used else TOKEN_ANSWER)

    answer_with(api, TOKEN_PATH, answer)
    return codes


def meeting(api: WeChatAPI, path: str, parties: int, answer: t.Callable[[t.Any], t.Any],
            timeout: float = 10) -> threading.Barrier:
    """WeChat's API at ``path`` holds each request until ``parties`` of them are there (a
    race forced, not hoped for), then answers ``answer(request)``. Check the barrier is
    not ``broken`` afterwards: else the requests did not really meet."""
    gate = threading.Barrier(parties, timeout=timeout)

    def meet(request: t.Any) -> t.Any:
        try:
            gate.wait()
        except threading.BrokenBarrierError:
            pass
        return answer(request)

    answer_with(api, path, meet)
    return gate


def browser_copy(app: Flask, client: t.Any) -> t.Any:
    """A second connection of the same browser: same cookies (WeChat's second redirect
    arrives with the cookie from before the first one's answer)."""
    twin = app.test_client()
    twin.set_cookie("session", client.get_cookie("session").value)
    return twin


class DoubleRedirect(t.NamedTuple):
    """What :func:`double_redirect` saw: both answers, both browsers' connections, the codes
    WeChat was asked for, and the state."""

    answers: list[t.Any]
    browser: t.Any
    twin: t.Any
    calls: list[str]
    state: str


def double_redirect(app: Flask, api: WeChatAPI, next_url: str = "/welcome") -> DoubleRedirect:
    """WeChat's double redirect of a new person's login: the same code delivered twice, the
    second while the first is still at WeChat, which answers the second 40163 (code used)
    and the first only after the second came."""
    browser = app.test_client()
    state = start_login(browser, next=next_url)
    twin = browser_copy(app, browser)
    second_arrived = threading.Event()
    first_at_wechat = threading.Event()
    calls: list[str] = []

    def token(request: t.Any) -> tuple[int, dict[str, str], bytes]:
        calls.append(request.params["code"])
        if len(calls) == 1:
            first_at_wechat.set()
            second_arrived.wait(timeout=10)  # WeChat answers the first after the second came
            return wechat_body(TOKEN_ANSWER)
        second_arrived.set()
        return wechat_body(CODE_USED_ANSWER)

    answer_with(api, TOKEN_PATH, token)
    answer_with(api, USERINFO_PATH, lambda request: wechat_body(PROFILE_ANSWER))
    query = {"code": "0816AbDOUBLE", "state": state}
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(browser.get, "/auth/wechat/callback", query_string=query)
        assert first_at_wechat.wait(timeout=10)  # the first is exchanging the code
        second = pool.submit(twin.get, "/auth/wechat/callback", query_string=query)
        answers = [first.result(timeout=30), second.result(timeout=30)]
    assert second_arrived.is_set()  # the second was answered 40163 while the first ran
    return DoubleRedirect(answers, browser, twin, calls, state)


# --- the business callback URL and its ID token -------------------------------------------

#: The business front end's callback URL in the ID-token tests.
BUSINESS_URL = "https://app.example.com/wechat/done"
#: An HS256 shared secret long enough for the extension.
ID_TOKEN_SECRET = "k7V9mQ2xT4rW8yZ1bN6cF3hJ5pL0sD2gA9eU4iO7wR1t"


def callback_app(make_app: t.Callable[..., t.Any], pem: str, **config: t.Any) -> t.Any:
    """The test host with a business callback URL, signing its ID tokens with ``pem``."""
    config.setdefault("WECHAT_QR_ID_TOKEN_PRIVATE_KEY", pem)
    return make_app(WECHAT_QR_CALLBACK_URL=BUSINESS_URL, **config)


def form_post(resp: t.Any) -> dict[str, t.Any]:
    """The auto-submitting form of a response: its action, method, target and fields."""
    assert resp.status_code == 200, resp.get_data(as_text=True)
    html = resp.get_data(as_text=True)
    forms = find_tags(html, "form")
    assert len(forms) == 1, html
    fields = {tag["name"]: tag["value"] for tag in find_tags(html, "input")}
    return {**forms[0], "fields": fields, "html": html}


def receiver_keys(client: t.Any) -> t.Any:
    """What a receiver does first: fetch the site's JWKS (a joserfc ``KeySet``)."""
    from joserfc.jwk import KeySet

    resp = client.get("/auth/.well-known/jwks.json")
    assert resp.status_code == 200
    return KeySet.import_key_set(resp.get_json())


def verify(token: str, key: t.Any, *, audience: str = "wechat",
           issuer: str = "http://localhost", nonce: str | None = None,
           now: int | None = None, algorithm: str = "RS256") -> dict[str, t.Any]:
    """A receiver's verification: signature, algorithm, issuer, audience, expiry, nonce."""
    from joserfc import jwt
    from joserfc.jwt import JWTClaimsRegistry

    decoded = jwt.decode(token, key, algorithms=[algorithm])
    options: dict[str, t.Any] = {
        "iss": {"essential": True, "value": issuer},
        "aud": {"essential": True, "value": audience},
        "sub": {"essential": True},
        "exp": {"essential": True},
        "iat": {"essential": True},
    }
    if nonce is not None:
        options["nonce"] = {"essential": True, "value": nonce}
    JWTClaimsRegistry(now=now, **options).validate(decoded.claims)
    return t.cast(dict[str, t.Any], decoded.claims)


# --- time ----------------------------------------------------------------------------------


class Clock:
    """The wall clock (``time.time``) stopped for one test and moved on by hand, so that
    login states, pending bindings, bind-attempt blocks and the sandbox's QR codes expire
    without waiting. Durations (``time.monotonic``, which the extension's waits use) still
    run. Use the ``clock`` fixture."""

    def __init__(self, monkeypatch: t.Any) -> None:
        self.now = time.time()
        monkeypatch.setattr(time, "time", self.time)

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- internal seams: the few places the tests reach inside the extension -------------------
# Each is here once, saying why, so a move inside the package breaks one helper and not the
# tests that use it. Everything else goes through routes, signals, adapter hooks, settings,
# the public names of flask_wechat_qr and the documented tables.


def _runtime(app: Flask) -> t.Any:
    """The per-app runtime ``init_app`` keeps in ``app.extensions`` (no public accessor)."""
    return app.extensions["wechat_qr"]


def models_of(app: Flask) -> t.Any:
    """The extension's mapped classes on the host's ``db`` (``models.Models``), which
    ``migrations.extension_tables`` takes; tests read and write rows through :func:`table`."""
    return _runtime(app).models


def wechat_client(app: Flask, connection: str = "wechat") -> t.Any:
    """A connection's :class:`~flask_wechat_qr.WeChatClient`, built by ``init_app``: for the
    calls no route makes (refresh, ``/sns/auth``), the exact error objects, and its pooled
    HTTP session. The extension has no public accessor for it."""
    return _runtime(app).client(connection)


def app_settings(app: Flask) -> t.Any:
    """The :class:`~flask_wechat_qr.Settings` ``init_app`` read for ``app`` (what a host's
    config became; ``WeChatQR.connections`` shows only the connections)."""
    return _runtime(app).settings


def login_states(app: Flask, connection: str = "wechat") -> t.Any:
    """A connection's login states (``flask_wechat_qr.login_state.LoginStates``), for the
    unit tests of that module."""
    return _runtime(app).login_states[connection]


def login_state_store(app: Flask) -> t.Any:
    """A new store over ``app``'s state table, as another worker process has one
    (``flask_wechat_qr.login_state.LoginStateStore``), for the unit tests of that module."""
    from flask_wechat_qr.login_state import LoginStateStore

    return LoginStateStore(app.db, _runtime(app).models.LoginState)  # type: ignore[attr-defined]


def ending_of(app: Flask, state: str, connection: str = "wechat") -> t.Any:
    """How the login of a used ``state`` ended (``login_state.Ending``), ``None`` if the state
    was never used: the only record that a login finished once, not twice, and how (a
    repeated callback shows it too, but only by making another request)."""
    with app.app_context():
        return login_states(app, connection).ending(state)


def forbid_waiting(monkeypatch: t.Any) -> None:
    """From now on, any wait for another request's outcome fails the test. The extension
    waits by sleeping (``time.sleep``, between looks at the state table); nothing else in a
    login's callback sleeps (the bind page's password check may: ``check_times``)."""

    def sleep(seconds: float) -> None:
        raise AssertionError("waited for an outcome")

    monkeypatch.setattr(time, "sleep", sleep)


def waits_run_out_once(monkeypatch: t.Any, ready: t.Callable[[], bool]) -> set[int]:
    """The threads that wait for another request's outcome from now on (see
    :func:`forbid_waiting`: a wait is a ``time.sleep``), whose waits run out at once as soon
    as ``ready()`` is true: from then on each of their sleeps passes the time it asks for
    without taking it (``time.monotonic``, by which the extension's waits end, moves on by
    as much). For a test whose waiters can only ever give up (no request will end what they
    wait for): they give up as they would have at ``WECHAT_QR_CODE_USED_WAIT``, without the
    test sitting through it once what it watches (the others' answers) is over."""
    waiters: set[int] = set()
    real_sleep, real_monotonic = time.sleep, time.monotonic
    skipped = [0.0]
    lock = threading.Lock()

    def monotonic() -> float:
        return real_monotonic() + skipped[0]

    def sleep(seconds: float) -> None:
        waiters.add(threading.get_ident())
        if ready():
            with lock:
                skipped[0] += seconds
        else:
            real_sleep(seconds)

    monkeypatch.setattr(time, "monotonic", monotonic)
    monkeypatch.setattr(time, "sleep", sleep)
    return waiters


def take_waiting_places(store: t.Any, count: int) -> bool:
    """Take ``count`` of the places a process has for requests waiting on another one's
    outcome (as that many waiting requests would); whether there were as many free. Waiting
    requests cannot be held still from outside, so the test takes their places itself."""
    return all(store._waiting.acquire(blocking=False) for _ in range(count))


def in_process_origin() -> str:
    """The origin of the sandbox mounted in the host app, as the extension's client reaches it
    in-process (no socket): what a sandbox connection's API base URL starts with."""
    from flask_wechat_qr.urls import IN_PROCESS_ORIGIN

    return IN_PROCESS_ORIGIN


def max_waiting_requests() -> int:
    """How many requests of one app in one process may wait for another request's outcome at
    the same time (an internal limit, not a setting)."""
    from flask_wechat_qr.login_state import MAX_WAITING_REQUESTS

    return MAX_WAITING_REQUESTS


def raising(error: BaseException) -> t.Callable[..., None]:
    """A signal receiver that raises ``error`` (a host's receiver refusing what happened)."""

    def receiver(sender: t.Any, **kwargs: t.Any) -> None:
        raise error

    return receiver


# --- browsers, by their User-Agent (logins inside WeChat and on phones) -------------------

WECHAT_PHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
                "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.49(0x18003129) "
                "NetType/WIFI Language/zh_CN")
WECHAT_WINDOWS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
                  "Gecko) Chrome/81.0.4044.138 Safari/537.36 NetType/WIFI "
                  "MicroMessenger/7.0.20.1781(0x6700143B) WindowsWechat(0x63090a13) XWEB/9129")
SAFARI_PHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
                "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
WECOM = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
         "like Gecko) Mobile/15E148 wxwork/4.1.26 MicroMessenger/7.0.1 Language/zh")

#: For browser tests about the browser's side of a flow (which page, which way in, what
#: shows): one database is enough there, as the database's side of the same flows runs on
#: all three databases in the test-client suites (test_flow, test_association, test_views,
#: test_avatars, project/test_example_app; test_in_wechat's logins store what theirs
#: store). Keeps the whole suite inside its ten minutes.
ONE_DATABASE = pytest.mark.parametrize("database", ["sqlite"], indirect=True)
