"""Test support: apps built from a small factory, and WeChat's API mocked with
``responses`` returning what WeChat really returns (``text/plain`` without charset,
errors as HTTP 200 ``errcode`` JSON, CJK + emoji nicknames)."""

from __future__ import annotations

import json
import re
import typing as t

import responses
from flask import Flask
from flask_login import LoginManager, UserMixin, current_user
from flask_sqlalchemy import SQLAlchemy

from flask_wechat_qr import WeChatQR

API = "https://api.weixin.qq.com"
OPEN = "https://open.weixin.qq.com"
APP_ID = "wx5f3d2e1c0b9a8776"
APP_SECRET = "s3cr3t-0f-th3-w3bs1t3-app-d0-n0t-l34k"

#: A realistic openid/unionid pair (28 characters, as WeChat issues them).
OPENID = "ohS-VwAJ9GEXlplngwybJ3Z-ZHrI"
UNIONID = "ohHrhwKnD9TOunEW0eKTS45vS5Qo"
ACCESS_TOKEN = "OezXcEiiBSKSxW0eoylIeO5cPxb4Ks1RpbXGMv9uiV35032zNHGzXcld-EKsSScE3gRZMrUU78skCbp1"
REFRESH_TOKEN = "OezXcEiiBSKSxW0eoylIeO5cPxb4Ks1RpbXGMv9uiV35032zNHGzXcld-EKsSScEbMnnMqVExcSpj7KR"
NICKNAME = "张三🐼"
AVATAR = "https://thirdwx.qlogo.cn/mmopen/vi_32/Q0j4TwGTfTKXLMv85Sk2x0MxR9aPOIC9QxWJT5N/132"


def make_test_app(tmp_path: t.Any, database_url: str | None = None, **config: t.Any) -> Flask:
    """A small host site: Flask-SQLAlchemy users, Flask-Login, WeChatQR."""
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
    )
    app.config.update(config)
    db.init_app(app)
    login_manager = LoginManager(app)

    @login_manager.user_loader
    def load_user(user_id: str) -> t.Any:
        return db.session.get(User, int(user_id))

    wechat = WeChatQR(app, db=db, user_model=User)

    @app.route("/")
    def index() -> str:
        if current_user.is_authenticated:
            return f"logged in as {current_user.id} {current_user.nickname}"
        return "anonymous"

    with app.app_context():
        db.create_all()
    app.db = db  # type: ignore[attr-defined]
    app.User = User  # type: ignore[attr-defined]
    app.wechat = wechat  # type: ignore[attr-defined]
    return app


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
        self._add("/sns/oauth2/access_token", payload)

    def userinfo(self, openid: str = OPENID, unionid: str | None = UNIONID,
                 nickname: str = NICKNAME, **extra: t.Any) -> None:
        payload: dict[str, t.Any] = {
            "openid": openid, "nickname": nickname, "sex": 0, "language": "",
            "city": "", "province": "", "country": "", "headimgurl": AVATAR, "privilege": []}
        if unionid:
            payload["unionid"] = unionid
        payload.update(extra)
        self._add("/sns/userinfo", payload)

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


def finish_login(client: t.Any, state: str, code: str = "0816Ab000aBcdE1xYz3000xyz8z16AbQ",
                 connection: str = "wechat") -> t.Any:
    return client.get(f"/auth/{connection}/callback", query_string={"code": code, "state": state})


# --- Helpers added for the flow tests (views, association, signals, templates) --------

#: The authorization code :func:`finish_login` sends unless told otherwise.
CODE = "0816Ab000aBcdE1xYz3000xyz8z16AbQ"


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


def identity_model(app: Flask) -> t.Any:
    return app.extensions["wechat_qr"].models.Identity


def all_users(app: Flask) -> list[t.Any]:
    """Every row of the host's user table, ordered by id (detached, attributes loaded)."""
    import sqlalchemy as sa

    with app.app_context():
        db = app.db  # type: ignore[attr-defined]
        return list(db.session.execute(
            sa.select(app.User).order_by(app.User.id)  # type: ignore[attr-defined]
        ).scalars())


def all_identities(app: Flask) -> list[t.Any]:
    """Every WeChat identity row, ordered by id (detached, attributes loaded)."""
    import sqlalchemy as sa

    Identity = identity_model(app)
    with app.app_context():
        db = app.db  # type: ignore[attr-defined]
        return list(db.session.execute(sa.select(Identity).order_by(Identity.id)).scalars())


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
                  unionid: str | None = UNIONID, connection: str = "wechat") -> None:
    """Store an identity row linking a WeChat openid to an existing host user."""
    with app.app_context():
        db = app.db  # type: ignore[attr-defined]
        db.session.add(identity_model(app)(connection=connection, openid=openid,
                                           unionid=unionid, user_id=str(user_id)))
        db.session.commit()


def logged_in_user_id(client: t.Any) -> str | None:
    """The Flask-Login user id in the client's session, if any."""
    with client.session_transaction() as sess:
        return sess.get("_user_id")


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


#: PostgreSQL for the second run of the suite: ``postgresql://user@127.0.0.1:port/db``
#: (``.ci/start-postgres`` starts one). Unset: the PostgreSQL variants skip.
POSTGRES_URL_VARIABLE = "WECHAT_QR_TEST_DATABASE_URL"
#: Set (by ``.ci/run``): a PostgreSQL variant that cannot run fails instead of skipping.
REQUIRE_POSTGRES_VARIABLE = "WECHAT_QR_TEST_REQUIRE_POSTGRES"


class Database:
    """Where one test's databases live: SQLite files in its folder, or one PostgreSQL
    schema per database name (dropped afterwards), so tests never see each other's rows."""

    def __init__(self, backend: str, tmp_path: t.Any, server_url: str | None = None) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self.server_url = server_url
        self.schemas: list[str] = []

    @property
    def is_postgres(self) -> bool:
        return self.backend == "postgresql"

    def url(self, name: str = "app") -> str:
        if not self.is_postgres:
            return f"sqlite:///{self.tmp_path / (name + '.db')}"
        import secrets

        import sqlalchemy as sa

        schema = f"t_{secrets.token_hex(6)}_{name}"[:60].lower()
        engine = sa.create_engine(self.server_url or "")
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        finally:
            engine.dispose()
        self.schemas.append(schema)
        separator = "&" if "?" in (self.server_url or "") else "?"
        return f"{self.server_url}{separator}options=-csearch_path%3D{schema}"

    def drop(self) -> None:
        if not self.schemas:
            return
        import sqlalchemy as sa

        engine = sa.create_engine(self.server_url or "")
        try:
            with engine.begin() as conn:
                for schema in self.schemas:
                    conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        finally:
            engine.dispose()


def dispose_engines(app: Flask) -> None:
    """Close the app's pooled database connections (a test's PostgreSQL schema is dropped
    next, and an open connection would be a ResourceWarning)."""
    with app.app_context():
        db = app.extensions["sqlalchemy"]
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


def free_port() -> int:
    """A loopback port nothing listens on (once this socket is closed)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
