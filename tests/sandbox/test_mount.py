"""The sandbox mounted in a host app (WECHAT_QR_SANDBOX) and standing alone
(create_sandbox_app): whole logins of the extension against it, in-process and over real
HTTP."""

from __future__ import annotations

import logging
import sqlite3
import typing as t
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from support import (
    Database,
    LiveServer,
    all_identities,
    answer,
    open_qr_page,
    poll,
)

from flask_wechat_qr.sandbox import SandboxApp, create_sandbox_app
from flask_wechat_qr.sandbox.users import unionid_for

# --- whole logins against the sandbox mounted in the host ---------------------------------


def test_login_through_the_sandbox_in_process(sandbox_app: Flask) -> None:
    client, phone = sandbox_app.test_client(), sandbox_app.test_client()
    uuid, _ = open_qr_page(client, next_url="/welcome")
    answer(phone, uuid, action="allow", person="new", nickname="Ada 🧪")
    callback = poll(client, uuid)["redirect"].split("localhost", 1)[1]
    resp = client.get(callback)
    assert resp.status_code == 302 and resp.headers["Location"] == "/welcome"
    assert client.get("/").get_data(as_text=True).endswith("Ada 🧪")


@pytest.mark.parametrize("config", [{"SERVER_NAME": "localhost"},
                                    {"TRUSTED_HOSTS": [".localhost"]}])
def test_login_through_the_sandbox_of_a_host_strict_about_hosts(
        make_app: t.Callable[..., Flask], config: dict[str, t.Any]) -> None:
    """With ``SERVER_NAME`` and subdomain matching, or ``TRUSTED_HOSTS``, the app answers
    only its own host: its calls to the sandbox in it come at that host. Before: the
    sandbox's ``.invalid`` origin got a 404 (or a 400), and the page "WeChat is not
    answering"."""
    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None,
                   **config)
    app.subdomain_matching = True
    client, phone = app.test_client(), app.test_client()
    uuid, _ = open_qr_page(client)
    answer(phone, uuid, action="allow", person="lisi")
    resp = client.get(poll(client, uuid)["redirect"].split("localhost", 1)[1])
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert client.get("/").get_data(as_text=True).startswith("logged in as")


@pytest.mark.parametrize("base", ["http://[::1]:5000", "http://[::1]", "http://LOCALHOST:5000"])
def test_login_through_the_sandbox_of_a_site_opened_at_an_ipv6_address(
        sandbox_app: Flask, base: str) -> None:
    """A site opened at ``http://[::1]:5000`` (``flask run --host ::``): the sandbox took
    ``[::1]`` (or ``[:``) for the callback domain and refused every login with its 10003
    page. Hosts have no case either."""
    client = sandbox_app.test_client()
    resp = client.get("/auth/wechat/login", base_url=base)
    page = client.get(resp.headers["Location"].split("#")[0], base_url=base)
    assert page.status_code == 200, page.get_data(as_text=True)
    assert "/connect/confirm/" in page.get_data(as_text=True)


def test_hostname_of_a_host_header() -> None:
    from flask_wechat_qr.urls import hostname_of

    assert [hostname_of(host) for host in (
        "example.com", "Example.COM:8000", "[::1]:5000", "[2001:DB8::5]", "[::1", "")] == [
        "example.com", "example.com", "::1", "2001:db8::5", "", ""]


def routed_site(tmp_path: t.Any, shape: str) -> Flask:
    """A site whose routes answer at one host only: ``SERVER_NAME`` with every route on the
    ``www`` subdomain (``url_map.default_subdomain``), or host matching with every route
    given the site's host (a ``url_rule_class``), no ``SERVER_NAME``."""
    from flask_login import LoginManager, UserMixin, current_user
    from flask_sqlalchemy import SQLAlchemy
    from werkzeug.routing import Rule

    from flask_wechat_qr import WeChatQR

    class HostRule(Rule):
        def __init__(self, *args: t.Any, host: str | None = None, **kw: t.Any) -> None:
            super().__init__(*args, host=host or "www.example.test", **kw)

    if shape == "default subdomain":
        app = Flask("routed_site", root_path=str(tmp_path), subdomain_matching=True)
        app.url_map.default_subdomain = "www"
        app.config["SERVER_NAME"] = "example.test"
    else:
        app = Flask("routed_site", root_path=str(tmp_path), host_matching=True,
                    static_host="www.example.test")
        app.url_rule_class = HostRule
    app.config.update(TESTING=True, SECRET_KEY="routed-site-secret-" * 3,
                      SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'routed.db'}",
                      WECHAT_QR_SANDBOX=True)
    db = SQLAlchemy(app)
    login_manager = LoginManager(app)

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        username = db.Column(db.String(80))

    login_manager.user_loader(lambda user_id: db.session.get(User, int(user_id)))
    app.add_url_rule("/", "home", lambda: f"user={current_user.get_id()}")
    WeChatQR(app, db=db, user_model=User)
    with app.app_context():
        db.create_all()
    return app


@pytest.mark.parametrize("shape", ["default subdomain", "host matching"])
def test_login_through_the_sandbox_of_a_site_routed_on_one_host(
        tmp_path: t.Any, shape: str) -> None:
    """The app's calls to the sandbox in it came at ``SERVER_NAME`` (the bare name, where
    nothing is routed), or at the sandbox's ``.invalid`` origin: every login ended on
    "WeChat is not answering"."""
    from flask.testing import FlaskClient

    app = routed_site(tmp_path, shape)
    base = "http://www.example.test"

    class AtTheSitesHost(FlaskClient):
        def open(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
            kwargs.setdefault("base_url", base)
            return super().open(*args, **kwargs)

    app.test_client_class = AtTheSitesHost
    client, phone = app.test_client(), app.test_client()
    uuid, _ = open_qr_page(client, base=base)
    answer(phone, uuid, action="allow", person="lisi")
    callback = poll(client, uuid)["redirect"]
    assert callback.startswith(f"{base}/auth/wechat/callback?")
    resp = client.get(callback[len(base):])
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert client.get("/").get_data(as_text=True) == "user=1"


def test_host_matching_with_no_host_for_the_logins_routes_stops_start_up(
        tmp_path: t.Any) -> None:
    """Host matching and routes without a host: the login's could never be reached (every
    page a 404), and nothing said so."""
    from flask_sqlalchemy import SQLAlchemy

    from flask_wechat_qr import WeChatQR
    from flask_wechat_qr.errors import ConfigurationError

    app = Flask("host_matched", root_path=str(tmp_path), host_matching=True,
                static_host="www.example.test")
    app.config.update(TESTING=True, SECRET_KEY="k" * 40, WECHAT_QR_SANDBOX=True,
                      SQLALCHEMY_DATABASE_URI="sqlite://")
    from flask_login import LoginManager, UserMixin

    db = SQLAlchemy(app)
    LoginManager(app)

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)

    with pytest.raises(ConfigurationError) as refused:
        WeChatQR(app, db=db, user_model=User)
    assert refused.value.key == "host_matching"
    assert "no request can reach the login" in refused.value.problem
    assert "url_rule_class" in refused.value.fix


def test_denied_login_through_the_sandbox(sandbox_app: Flask) -> None:
    client, phone = sandbox_app.test_client(), sandbox_app.test_client()
    uuid, _ = open_qr_page(client)
    answer(phone, uuid, action="deny")
    resp = client.get(poll(client, uuid)["redirect"].split("localhost", 1)[1])
    assert resp.status_code == 200
    assert "cancelled" in resp.get_data(as_text=True)
    assert client.get("/").get_data(as_text=True) == "anonymous"


@pytest.mark.parametrize("credentials", [True, False])
def test_two_connections_share_unionid_in_the_sandbox(make_app: t.Callable[..., Flask],
                                                      credentials: bool) -> None:
    """Two connections are two sandbox applications, with or without credentials of their
    own (before: two without any were one application, the second's, under one AppID)."""
    given = [{"app_id": "wxweb0000000000001", "app_secret": "a"},
             {"app_id": "wxshop000000000001", "app_secret": "b"}] if credentials else [{}, {}]
    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None,
                   WECHAT_QR_CONNECTIONS=[
                       {"connection": "web", "display_name": "Web",
                        "association": "field_matching", **given[0]},
                       {"connection": "shop", "display_name": "Shop",
                        "association": "field_matching", **given[1]},
                   ])
    if not credentials:
        connections = app.extensions["wechat_qr"].settings.connections
        assert [c.app_id for c in connections.values()] == [
            "wxsandbox0000000001", "wxsandbox0000000002"]
        client = app.test_client()
        location = client.get("/auth/web/login").headers["Location"]
        page = client.get(location.split("localhost", 1)[1].split("#")[0])
        assert "(Web)" in page.get_data(as_text=True)
    users = []
    for connection in ("web", "shop"):
        client, phone = app.test_client(), app.test_client()
        uuid, _ = open_qr_page(client, login_path=f"/auth/{connection}/login")
        answer(phone, uuid, action="allow", person="lisi")
        client.get(poll(client, uuid)["redirect"].split("localhost", 1)[1])
        users.append(client.get("/").get_data(as_text=True))
    assert users[0] == users[1] and users[0].startswith("logged in as")
    identities = all_identities(app)
    assert sorted(i.connection for i in identities) == ["shop", "web"]
    assert identities[0].openid != identities[1].openid
    assert identities[0].unionid == identities[1].unionid == unionid_for("lisi")


# --- the standalone sandbox ---------------------------------------------------------------


def test_standalone_sandbox_over_real_http(
    make_app: t.Callable[..., Flask], database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """Real HTTP, real urllib3 (which logs every URL at DEBUG: secrets must not show)."""
    sandbox = create_sandbox_app(
        [SandboxApp("wxstandalone000001", "standalone-secret", "Standalone", "localhost")],
        database_uri=database.url("sandbox"))
    with LiveServer(sandbox) as server:
        app = make_app(WECHAT_QR_APP_ID="wxstandalone000001",
                       WECHAT_QR_APP_SECRET="standalone-secret",
                       WECHAT_QR_OPEN_BASE_URL=server.url, WECHAT_QR_API_BASE_URL=server.url)
        client = app.test_client()
        sandbox_client = sandbox.test_client()
        uuid, _ = open_qr_page(client, prefix="", base=server.url, sandbox_client=sandbox_client)
        answer(sandbox_client, uuid, prefix="", action="allow", person="xiaohua")
        redirect = poll(sandbox_client, uuid, prefix="")["redirect"]
        code = parse_qs(urlsplit(redirect).query)["code"][0]
        with caplog.at_level(logging.DEBUG):
            resp = client.get(redirect.split("localhost", 1)[1])
        assert resp.status_code == 302
        assert client.get("/").get_data(as_text=True).endswith("🌸小花🌸")
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "/sns/oauth2/access_token?appid=wxstandalone000001&secret=[redacted]" in logged
        assert "standalone-secret" not in logged and code not in logged
        assert "access_token=[redacted]" in logged


def test_the_standalone_sandbox_writes_while_others_read(tmp_path: t.Any) -> None:
    """A connection in the middle of a read (a phone's poll) holds no new QR code back: the
    standalone sandbox keeps its SQLite file in WAL mode. In SQLite's rollback-journal mode
    the code's commit waited for the read to end, and answered 500 "database is locked"
    after the busy timeout (5 s): seen with 32 browsers at once in bench/versus_bench.py."""
    path = tmp_path / "sandbox.db"
    sandbox = create_sandbox_app(
        [SandboxApp("wxstandalone000001", "standalone-secret", "Standalone", "localhost")],
        database_uri=f"sqlite:///{path}")
    query = [("appid", "wxstandalone000001"),
             ("redirect_uri", "http://localhost:5000/auth/wechat/callback"),
             ("response_type", "code"), ("scope", "snsapi_login"), ("state", "abc")]
    client = sandbox.test_client()
    assert client.get("/connect/qrconnect", query_string=query).status_code == 200
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM wechat_qr_sandbox_qr").fetchone() == (1,)
        assert client.get("/connect/qrconnect", query_string=query).status_code == 200
    finally:
        reader.close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert check.execute("SELECT count(*) FROM wechat_qr_sandbox_qr").fetchone() == (2,)


def test_the_sandbox_in_the_host_says_when_its_database_is_out_of_reach(
        sandbox_app: Flask, tmp_path: t.Any) -> None:
    """The host's database down (the in-app sandbox keeps its tables there): its pages
    were Flask's bare 500 with a traceback (session 33, left alone). The QR page and the
    phone's page now say so in words (a 503), the poll answers a 503 the QR page's script
    says, and the API answers as WeChat does when it is busy (errcode -1): the login
    ends on "WeChat is not answering". Once the database is back, the same browser logs in."""
    from support import SANDBOX_PREFIX, database_out_of_reach

    with sandbox_app.app_context():
        engine = sandbox_app.db.engine  # type: ignore[attr-defined]
    client, phone = sandbox_app.test_client(), sandbox_app.test_client()
    uuid, state = open_qr_page(client)
    with database_out_of_reach(engine, tmp_path):
        started = client.get("/auth/wechat/login")  # reads nothing: to WeChat's page
        qr_page = client.get(started.headers["Location"].split("localhost", 1)[1])
        phone_page = phone.get(f"{SANDBOX_PREFIX}/connect/confirm/{uuid}")
        polled = client.get(f"{SANDBOX_PREFIX}/connect/l/qrconnect", query_string={"uuid": uuid})
        app_id = parse_qs(urlsplit(started.headers["Location"]).query)["appid"][0]
        secret = sandbox_app.extensions["wechat_qr_sandbox"].apps[app_id].app_secret
        token = client.get(f"{SANDBOX_PREFIX}/sns/oauth2/access_token",
                           query_string={"appid": app_id, "secret": secret, "code": "z",
                                         "grant_type": "authorization_code"})
        callback = client.get("/auth/wechat/callback", query_string={"code": "C1",
                                                                    "state": state})
    for page in (qr_page, phone_page):
        assert page.status_code == 503
        assert "database" in page.get_data(as_text=True)
        assert "Traceback" not in page.get_data(as_text=True)
    assert polled.status_code == 503 and polled.json == {"status": "unavailable"}
    assert token.status_code == 200 and token.content_type == "text/plain"
    assert token.get_data(as_text=True).startswith('{"errcode": -1, "errmsg": "system error')
    assert callback.status_code in (502, 503), callback.get_data(as_text=True)
    uuid, _ = open_qr_page(client)
    answer(phone, uuid, action="allow", person="lisi")
    resp = client.get(poll(client, uuid)["redirect"].split("localhost", 1)[1])
    assert resp.status_code == 302


@pytest.mark.parametrize("store_avatars", [False, True])
def test_the_change_avatar_button_only_where_avatars_can_change(
        make_app: t.Callable[..., Flask], store_avatars: bool) -> None:
    """Profiles carry ``data:`` URIs unless ``WECHAT_QR_STORE_AVATARS`` is on: the index
    page's **Change avatar** buttons then changed nothing a login shows, where the docs say
    they are there only with it on (a helper's docs walk, session 35)."""
    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None,
                   WECHAT_QR_STORE_AVATARS=store_avatars)
    page = app.test_client().get("/wechat-sandbox/").get_data(as_text=True)
    assert ("Change avatar" in page) is store_avatars
    assert ("the old URL then answers 404" in page) is store_avatars
