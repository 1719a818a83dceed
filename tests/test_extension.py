"""The :class:`WeChatQR` extension object: both setup styles, per-app state, clear setup errors.

These tests build their host apps by hand (not with ``support.make_test_app``) because they
need to vary what the host provides: a ``db`` or not, a user model or not, Flask-Login or
not, one extension instance shared by two apps.
"""

from __future__ import annotations

import typing as t
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from authlib.integrations.flask_client import OAuth
from flask import Flask
from flask_login import LoginManager, UserMixin
from flask_sqlalchemy import SQLAlchemy
from support import (
    APP_ID,
    APP_SECRET,
    Database,
    WeChatAPI,
    dispose_engines,
    finish_login,
    make_test_app,
    start_login,
)

from flask_wechat_qr import AccountAdapter, ConfigurationError, WeChatClient, WeChatQR
from flask_wechat_qr.errors import UnknownConnection
from flask_wechat_qr.runtime import Runtime, current_runtime, runtime_of

AUTHLIB_SLOT = "authlib.integrations.flask_client"


class Host:
    """A host site's ``db`` and user model, shareable by several apps."""

    def __init__(self) -> None:
        self.db = SQLAlchemy()

        class User(self.db.Model, UserMixin):  # type: ignore[name-defined,misc]
            id = self.db.Column(self.db.Integer, primary_key=True)
            username = self.db.Column(self.db.String(80), unique=True)
            nickname = self.db.Column(self.db.Unicode(255))

        self.User = User

    def app(self, folder: Path, *, with_db: bool = True, with_login: bool = True,
            **config: t.Any) -> Flask:
        folder.mkdir(exist_ok=True)
        app = Flask(f"host_{folder.name}", root_path=str(folder))
        app.config.update(
            TESTING=True,
            SECRET_KEY=f"secret-key-of-{folder.name}",
            SQLALCHEMY_DATABASE_URI=f"sqlite:///{folder / 'app.db'}",
            WECHAT_QR_APP_ID=APP_ID,
            WECHAT_QR_APP_SECRET=APP_SECRET,
        )
        app.config.update(config)
        if with_db:
            self.db.init_app(app)
        if with_login:
            manager = LoginManager(app)
            manager.user_loader(lambda user_id: self.db.session.get(self.User, int(user_id)))
        return app

    def create_tables(self, app: Flask) -> None:
        with app.app_context():
            self.db.create_all()


@pytest.fixture
def host() -> Host:
    return Host()


def authorize_params(app: Flask, connection: str = "wechat") -> dict[str, list[str]]:
    resp = app.test_client().get(f"/auth/{connection}/login")
    assert resp.status_code == 302, resp.data
    return parse_qs(urlsplit(resp.headers["Location"]).query)


def ext_state(app: Flask) -> Runtime:
    """The runtime ``init_app`` built for ``app`` (kept in ``app.extensions``)."""
    state = runtime_of(app)
    assert isinstance(state, Runtime)
    return state


# --- the two setup styles ------------------------------------------------------------


def test_direct_style(host: Host, tmp_path: Path) -> None:
    app = host.app(tmp_path / "a")
    WeChatQR(app, db=host.db, user_model=host.User)
    state = ext_state(app)
    assert state.db is host.db
    assert state.settings.connections["wechat"].app_id == APP_ID
    assert list(state.clients) == ["wechat"]
    assert isinstance(state.client("wechat"), WeChatClient)
    assert isinstance(state.adapter, AccountAdapter)
    assert state.adapter.user_model is host.User
    assert "wechat_qr" in app.blueprints
    host.create_tables(app)
    assert authorize_params(app)["appid"] == [APP_ID]


def test_factory_style(host: Host, tmp_path: Path) -> None:
    wechat = WeChatQR(db=host.db, user_model=host.User)
    app = host.app(tmp_path / "a")
    assert "wechat_qr" not in app.extensions
    assert "wechat_qr" not in app.blueprints
    wechat.init_app(app)
    assert isinstance(ext_state(app), Runtime)
    assert "wechat_qr" in app.blueprints
    host.create_tables(app)
    assert authorize_params(app)["appid"] == [APP_ID]
    # App-factory safe: the extension object keeps no reference to an app.
    assert not hasattr(wechat, "app")
    assert all(not isinstance(value, Flask) for value in vars(wechat).values())


def test_db_defaults_to_the_one_registered_on_the_app(host: Host, tmp_path: Path) -> None:
    app = host.app(tmp_path / "a")
    WeChatQR(app, user_model=host.User)
    assert ext_state(app).db is host.db


def test_the_state_lives_in_app_extensions(host: Host, tmp_path: Path) -> None:
    app = host.app(tmp_path / "a", WECHAT_QR_CONNECTION="corp")
    WeChatQR(app, db=host.db, user_model=host.User)
    state = ext_state(app)
    assert state.client("corp").connection is state.settings.connections["corp"]
    assert state.models.Identity.__tablename__ == "wechat_qr_identity"
    with pytest.raises(UnknownConnection) as info:
        state.client("wechat")
    assert info.value.status == 404
    assert app.extensions["wechat_qr"] is state  # where Flask extensions keep theirs
    with app.app_context():
        assert current_runtime() is state


# --- registering twice ---------------------------------------------------------------


def test_second_init_app_on_the_same_app_is_a_runtime_error(host: Host, tmp_path: Path) -> None:
    app = host.app(tmp_path / "a")
    wechat = WeChatQR(app, db=host.db, user_model=host.User)
    state = ext_state(app)
    with pytest.raises(RuntimeError, match="already been registered"):
        wechat.init_app(app)
    with pytest.raises(RuntimeError, match="already been registered"):
        WeChatQR(app, db=host.db, user_model=host.User)
    assert runtime_of(app) is state


def test_a_failed_init_app_leaves_nothing_behind(host: Host, tmp_path: Path) -> None:
    app = host.app(tmp_path / "a", WECHAT_QR_ASSOCIATION="bogus")
    wechat = WeChatQR(db=host.db, user_model=host.User)
    with pytest.raises(ConfigurationError):
        wechat.init_app(app)
    assert "wechat_qr" not in app.extensions
    assert "wechat_qr" not in app.blueprints
    app.config["WECHAT_QR_ASSOCIATION"] = "off"
    wechat.init_app(app)  # fixed configuration: the same instance now succeeds
    assert ext_state(app).settings.connections["wechat"].association == "off"


# --- two apps, one process -----------------------------------------------------------


def test_two_apps_with_different_app_ids_never_share_settings(
    host: Host, tmp_path: Path
) -> None:
    wechat = WeChatQR(db=host.db, user_model=host.User)
    app_a = host.app(tmp_path / "a", WECHAT_QR_APP_ID="wxaaaaaaaaaaaaaaaa",
                     WECHAT_QR_APP_SECRET="secret-of-a", WECHAT_QR_DISPLAY_NAME="A",
                     WECHAT_QR_DEFAULT_LOCALE="zh_CN")
    app_b = host.app(tmp_path / "b", WECHAT_QR_APP_ID="wxbbbbbbbbbbbbbbbb",
                     WECHAT_QR_APP_SECRET="secret-of-b", WECHAT_QR_DISPLAY_NAME="B",
                     WECHAT_QR_LANG="en")
    wechat.init_app(app_a)
    wechat.init_app(app_b)
    host.create_tables(app_a)
    host.create_tables(app_b)

    state_a, state_b = ext_state(app_a), ext_state(app_b)
    assert state_a is not state_b
    assert state_a.client("wechat") is not state_b.client("wechat")
    assert state_a.client("wechat").session is not state_b.client("wechat").session

    # Interleaved requests: each app redirects with its own AppID and lang (B's configured,
    # A's from its pages' default language).
    for _ in range(2):
        params_a = authorize_params(app_a)
        params_b = authorize_params(app_b)
        assert params_a["appid"] == ["wxaaaaaaaaaaaaaaaa"]
        assert params_b["appid"] == ["wxbbbbbbbbbbbbbbbb"]
        assert params_a["lang"] == ["cn"]
        assert params_b["lang"] == ["en"]
    assert state_a.settings.connections["wechat"].display_name == "A"
    assert state_b.settings.connections["wechat"].display_name == "B"
    with app_b.app_context():
        assert current_runtime().settings.connections["wechat"].app_id == (
            "wxbbbbbbbbbbbbbbbb")


def test_two_apps_exchange_codes_with_their_own_secret(host: Host, tmp_path: Path) -> None:
    wechat = WeChatQR(db=host.db, user_model=host.User)
    apps = {
        "a": host.app(tmp_path / "a", WECHAT_QR_APP_ID="wxaaaaaaaaaaaaaaaa",
                      WECHAT_QR_APP_SECRET="secret-of-a"),
        "b": host.app(tmp_path / "b", WECHAT_QR_APP_ID="wxbbbbbbbbbbbbbbbb",
                      WECHAT_QR_APP_SECRET="secret-of-b"),
    }
    for app in apps.values():
        wechat.init_app(app)
        host.create_tables(app)
    clients = {name: app.test_client() for name, app in apps.items()}
    states = {name: start_login(client) for name, client in clients.items()}
    with responses.RequestsMock() as mock:
        api = WeChatAPI(mock)
        api.token()
        api.userinfo()
        for name in ("b", "a"):
            resp = finish_login(clients[name], states[name])
            assert resp.status_code == 302, resp.data
        token_calls = [c for c in mock.calls if "/sns/oauth2/access_token" in c.request.url]
        sent = [parse_qs(urlsplit(c.request.url).query) for c in token_calls]
    assert [(q["appid"][0], q["secret"][0]) for q in sent] == [
        ("wxbbbbbbbbbbbbbbbb", "secret-of-b"), ("wxaaaaaaaaaaaaaaaa", "secret-of-a")]


def test_a_state_from_one_app_is_refused_by_the_other(host: Host, tmp_path: Path) -> None:
    # Same SECRET_KEY, so B accepts A's session cookie: the state must still say that it
    # belongs to A's WeChat application. (Two apps sharing the SECRET_KEY *and* the AppID
    # are one site to the login, as they are to the session cookie itself.)
    wechat = WeChatQR(db=host.db, user_model=host.User)
    app_a = host.app(tmp_path / "a", SECRET_KEY="shared", WECHAT_QR_APP_ID="wxaaaaaaaaaaaaaaaa")
    app_b = host.app(tmp_path / "b", SECRET_KEY="shared", WECHAT_QR_APP_ID="wxbbbbbbbbbbbbbbbb")
    for app in (app_a, app_b):
        wechat.init_app(app)
        host.create_tables(app)
    browser_a, browser_b = app_a.test_client(), app_b.test_client()
    state = start_login(browser_a)
    cookie = browser_a.get_cookie("session")
    assert cookie is not None
    browser_b.set_cookie("session", cookie.value)
    with browser_b.session_transaction() as sess:
        assert any(state in key for key in sess)  # B sees A's marker ...
    with responses.RequestsMock() as mock:
        resp = finish_login(browser_b, state)
        assert len(mock.calls) == 0
    assert resp.status_code == 400  # ... but not A's state


def test_a_used_state_of_one_app_is_not_repeated_by_the_other(tmp_path: Path,
                                                             database: Database) -> None:
    """Two apps sharing the SECRET_KEY and the database: after A's login, B given A's old
    cookie must not repeat A's outcome as its own (a repeated callback is only for the
    browser whose session started the login, in this app)."""
    url = database.url("shared")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    app_a = make_test_app(tmp_path / "a", url, SECRET_KEY="shared",
                          WECHAT_QR_APP_ID="wxaaaaaaaaaaaaaaaa")
    app_b = make_test_app(tmp_path / "b", url, SECRET_KEY="shared",
                          WECHAT_QR_APP_ID="wxbbbbbbbbbbbbbbbb")
    try:
        browser_a, browser_b = app_a.test_client(), app_b.test_client()
        state = start_login(browser_a)
        old_cookie = browser_a.get_cookie("session")
        assert old_cookie is not None
        with responses.RequestsMock() as mock:
            api = WeChatAPI(mock)
            api.token()
            api.userinfo()
            assert finish_login(browser_a, state).status_code == 302
        browser_b.set_cookie("session", old_cookie.value)
        with responses.RequestsMock() as mock:
            resp = finish_login(browser_b, state)
            assert len(mock.calls) == 0
        assert resp.status_code == 400
        with browser_b.session_transaction() as sess:
            assert "_user_id" not in sess
    finally:
        dispose_engines(app_a)
        dispose_engines(app_b)


# --- what the host must provide ------------------------------------------------------


def test_missing_db_is_a_configuration_error(host: Host, tmp_path: Path) -> None:
    app = host.app(tmp_path / "a", with_db=False)
    with pytest.raises(ConfigurationError) as info:
        WeChatQR(app, user_model=host.User)
    assert info.value.key == "db"
    assert "db.init_app(app)" in info.value.fix
    assert "wechat_qr" not in app.extensions


def test_missing_user_model_is_a_configuration_error(host: Host, tmp_path: Path) -> None:
    app = host.app(tmp_path / "a")
    with pytest.raises(ConfigurationError) as info:
        WeChatQR(app, db=host.db)
    assert info.value.key == "user_model"
    assert "user_model=User" in info.value.fix
    assert "wechat_qr" not in app.extensions


def test_missing_login_manager_is_a_configuration_error(host: Host, tmp_path: Path) -> None:
    app = host.app(tmp_path / "a", with_login=False)
    with pytest.raises(ConfigurationError) as info:
        WeChatQR(app, db=host.db, user_model=host.User)
    assert info.value.key == "login_manager"
    assert "LoginManager" in info.value.fix
    assert "wechat_qr" not in app.extensions


def test_an_adapter_needs_neither_user_model_nor_flask_login(host: Host, tmp_path: Path) -> None:
    class MyAdapter(AccountAdapter):
        def login_user(self, user: t.Any) -> None:  # pragma: no cover - not called here
            pass

    adapter = MyAdapter()
    app = host.app(tmp_path / "a", with_login=False)
    WeChatQR(app, db=host.db, adapter=adapter)
    assert ext_state(app).adapter is adapter
    assert adapter.db is host.db


# --- a route of the host in the way ----------------------------------------------------


@pytest.mark.parametrize(("prefix", "rule"), [
    ("", "/<page>/callback"),       # the routes at the site's root, a host shape of the same
    ("", "/wechat/callback"),       # its own older callback
    ("/auth", "/auth/<provider>/callback"),  # any prefix: another login's routes there
])
def test_a_host_route_answering_the_callback_is_refused_at_start_up(
        host: Host, tmp_path: Path, prefix: str, rule: str) -> None:
    """Werkzeug gives WeChat's redirect to the host's route registered first: no login
    would ever finish, so the app does not start with it (nothing left behind)."""
    app = host.app(tmp_path / "a", WECHAT_QR_URL_PREFIX=prefix)
    app.add_url_rule(rule, "own_callback", lambda **_: "the host's page")
    wechat = WeChatQR(db=host.db, user_model=host.User)
    with pytest.raises(ConfigurationError) as info:
        wechat.init_app(app)
    assert info.value.key == "WECHAT_QR_URL_PREFIX (wechat)"
    assert info.value.problem == (
        f"this app's route {rule} (own_callback) answers {prefix}/wechat/callback before the "
        "extension's wechat_qr.callback: WeChat sends every login back to it (the redirect "
        "URI), so none would finish")
    assert info.value.fix.startswith("Give own_callback another path, or set "
                                     "WECHAT_QR_URL_PREFIX")
    assert "wechat_qr" not in app.extensions and "wechat_qr" not in app.blueprints


def test_a_host_route_the_callback_wins_over_starts(host: Host, tmp_path: Path) -> None:
    """Werkzeug prefers a static part to a variable one: ``/<a>/<b>`` never takes
    ``/wechat/callback``, whatever the order."""
    app = host.app(tmp_path / "a", WECHAT_QR_URL_PREFIX="")
    app.add_url_rule("/<section>/<page>", "pages", lambda **_: "the host's page")
    app.add_url_rule("/<path:anything>", "catch_all", lambda **_: "the host's page")
    WeChatQR(app, db=host.db, user_model=host.User)
    host.create_tables(app)
    response = app.test_client().get("/wechat/callback?state=s&code=c")
    assert b"the host's page" not in response.data
    assert response.status_code == 400  # the extension's page: an unknown state


def test_a_misspelt_setting_in_app_config_is_named(host: Host, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """``WECHAT_QR_APPID`` in ``app.config`` was ignored without a word (the environment's
    was named), and the log said only that the AppID was missing: now it names the key and
    the setting it most likely means."""
    app = host.app(tmp_path / "a", WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None,
                   WECHAT_QR_APPID="wx0123456789abcdef", WECHAT_QR_MY_OWN_FLAG=True,
                   WECHAT_QR_TEST_ANYTHING="the test suite's own")
    with caplog.at_level("WARNING", logger="flask_wechat_qr"):
        WeChatQR(app, db=host.db, user_model=host.User)
    assert "WECHAT_QR_APPID" in caplog.text and "did you mean WECHAT_QR_APP_ID?" in caplog.text
    assert "WECHAT_QR_MY_OWN_FLAG" in caplog.text  # named, with nothing to suggest
    assert "WECHAT_QR_TEST_ANYTHING" not in caplog.text


# --- association modes ----------------------------------------------------------------


def test_field_matching_on_a_custom_field_needs_a_matcher(host: Host, tmp_path: Path) -> None:
    app = host.app(tmp_path / "a", WECHAT_QR_ASSOCIATION="field_matching",
                   WECHAT_QR_MATCH_FIELDS=("unionid", "email"))
    with pytest.raises(ConfigurationError) as info:
        WeChatQR(app, db=host.db, user_model=host.User)
    assert "WECHAT_QR_MATCH_FIELDS" in info.value.key
    assert "email" in info.value.problem
    assert "match_user" in info.value.fix


def test_field_matching_on_an_email_address_points_to_ask_binding(host: Host,
                                                                 tmp_path: Path) -> None:
    """WeChat gives no e-mail address: a site that wants its users attached by theirs is
    told how they prove it (ask binding by e-mail), not only to write a matcher."""
    app = host.app(tmp_path / "a", WECHAT_QR_ASSOCIATION="field_matching",
                   WECHAT_QR_MATCH_FIELDS=("unionid", "email"))
    with pytest.raises(ConfigurationError) as info:
        WeChatQR(app, db=host.db, user_model=host.User)
    assert "no e-mail address" in info.value.fix
    assert "'ask_binding'" in info.value.fix and "login_field = 'email'" in info.value.fix


def test_field_matching_on_a_custom_field_with_a_matcher(host: Host, tmp_path: Path) -> None:
    class EmailAdapter(AccountAdapter):
        def match_user(self, connection: t.Any, field: str, profile: t.Any) -> t.Any:
            return None

    app = host.app(tmp_path / "a", WECHAT_QR_ASSOCIATION="field_matching",
                   WECHAT_QR_MATCH_FIELDS=("unionid", "email"))
    WeChatQR(app, db=host.db, adapter=EmailAdapter(user_model=host.User))
    assert ext_state(app).settings.connections["wechat"].match_fields == ("unionid", "email")


def test_field_matching_on_unionid_needs_no_matcher(host: Host, tmp_path: Path) -> None:
    app = host.app(tmp_path / "a", WECHAT_QR_ASSOCIATION="field_matching")
    WeChatQR(app, db=host.db, user_model=host.User)
    assert ext_state(app).settings.connections["wechat"].association == "field_matching"


def test_custom_field_is_fine_while_association_is_off(host: Host, tmp_path: Path) -> None:
    app = host.app(tmp_path / "a", WECHAT_QR_MATCH_FIELDS=("email",))
    WeChatQR(app, db=host.db, user_model=host.User)
    assert "wechat_qr" in app.extensions


# --- living next to the host's own Authlib -------------------------------------------


def test_the_hosts_authlib_registry_keeps_its_slot(host: Host, tmp_path: Path) -> None:
    app = host.app(tmp_path / "a")
    host_oauth = OAuth(app)
    host_oauth.register("github", client_id="gh-id", client_secret="gh-secret",
                        authorize_url="https://github.com/login/oauth/authorize",
                        access_token_url="https://github.com/login/oauth/access_token")
    WeChatQR(app, db=host.db, user_model=host.User)
    assert app.extensions[AUTHLIB_SLOT] is host_oauth
    assert host_oauth.create_client("wechat_qr_wechat") is None
    assert host_oauth.create_client("github") is not None


def test_wechat_qr_does_not_take_the_authlib_slot(host: Host, tmp_path: Path) -> None:
    app = host.app(tmp_path / "a")
    WeChatQR(app, db=host.db, user_model=host.User)
    assert AUTHLIB_SLOT not in app.extensions
    host_oauth = OAuth(app)  # a host adding Authlib afterwards gets the slot
    assert app.extensions[AUTHLIB_SLOT] is host_oauth
    host.create_tables(app)
    assert authorize_params(app)["appid"] == [APP_ID]


def test_the_hosts_authlib_clients_work_beside_ours(host: Host, tmp_path: Path) -> None:
    """After a WeChat login, the host's own Authlib client still builds its own session
    and speaks standard OAuth 2 (a POST with HTTP Basic client auth): nothing of the
    WeChat client's pooled session or query-string auth reaches it."""
    app = host.app(tmp_path / "a")
    host_oauth = OAuth(app)
    github = host_oauth.register(
        "github", client_id="gh-id", client_secret="gh-secret",
        authorize_url="https://github.com/login/oauth/authorize",
        access_token_url="https://github.com/login/oauth/access_token")
    WeChatQR(app, db=host.db, user_model=host.User)
    host.create_tables(app)
    client = app.test_client()
    state = start_login(client)
    with responses.RequestsMock() as mock:
        api = WeChatAPI(mock)
        api.token()
        api.userinfo()
        assert finish_login(client, state).status_code == 302
        mock.add(responses.POST, "https://github.com/login/oauth/access_token",
                 json={"access_token": "gh-token", "token_type": "bearer"})
        with app.test_request_context():
            token = github.fetch_access_token(code="gh-code")
        (call,) = [c for c in mock.calls if c.request.url.startswith("https://github.com/")]
    assert token["access_token"] == "gh-token"
    assert call.request.method == "POST"
    assert call.request.headers["Authorization"].startswith("Basic ")
    assert "gh-secret" not in call.request.url and "appid" not in call.request.url
    assert "code=gh-code" in call.request.body


# --- no network at setup -------------------------------------------------------------


def test_init_app_makes_no_network_calls(host: Host, tmp_path: Path) -> None:
    app = host.app(tmp_path / "a")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        WeChatQR(app, db=host.db, user_model=host.User)
        host.create_tables(app)
        # Redirecting to WeChat builds a URL; it does not call WeChat either.
        assert authorize_params(app)["appid"] == [APP_ID]
        assert len(mock.calls) == 0


def test_factory_init_app_with_several_connections_makes_no_network_calls(
    host: Host, tmp_path: Path
) -> None:
    conns = [{"connection": "wechat", "app_id": "wx1111111111111111", "app_secret": "s1"},
             {"connection": "mp", "app_id": "wx2222222222222222", "app_secret": "s2"}]
    wechat = WeChatQR(db=host.db, user_model=host.User)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for name in ("a", "b"):
            wechat.init_app(host.app(tmp_path / name, WECHAT_QR_CONNECTIONS=conns))
        assert len(mock.calls) == 0


def test_db_must_be_registered_on_the_app_first(tmp_path: t.Any) -> None:
    from flask_login import LoginManager
    from flask_sqlalchemy import SQLAlchemy

    db = SQLAlchemy()

    class Member(db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)

    app = Flask("unregistered_db")
    app.config.update(SECRET_KEY="k", SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'x.db'}",
                      WECHAT_QR_APP_ID="wx1111111111111111", WECHAT_QR_APP_SECRET="s")
    LoginManager(app)
    with pytest.raises(ConfigurationError) as info:
        WeChatQR(app, db=db, user_model=Member)
    assert info.value.key == "db" and "db.init_app(app)" in str(info.value)


# --- a SECRET_KEY that cannot protect a login ------------------------------------------------


@pytest.mark.parametrize("secret_key", [None, "", "dev", "change-me-please", "k" * 31])
def test_an_unsafe_secret_key_keeps_logins_off_in_production(
    make_production_app: t.Callable[..., Flask], secret_key: t.Any, caplog: t.Any
) -> None:
    """The app still starts (its own pages, every flask command); WeChat login answers a
    503 page that says so, and the log says why and what to do, once, at start-up."""
    with caplog.at_level("ERROR", logger="flask_wechat_qr"):
        app = make_production_app(SECRET_KEY=secret_key)
    (record,) = [r for r in caplog.records if "WeChat login is OFF" in r.getMessage()]
    assert "SECRET_KEY" in record.getMessage() and "secrets.token_hex" in record.getMessage()
    client = app.test_client()
    for path in ("/auth/wechat/login", "/auth/wechat/qr", "/auth/wechat/callback", "/auth/bind"):
        resp = client.get(path)
        assert resp.status_code == 503, path
        assert 'data-error="LoginUnavailable"' in resp.get_data(as_text=True)
    zh = client.get("/auth/wechat/login", headers={"Accept-Language": "zh-CN"})
    assert "微信登录暂不可用" in zh.get_data(as_text=True)
    assert client.get("/").status_code == 200  # the host's own pages
    assert client.get("/auth/.well-known/jwks.json").status_code == 404  # not refused
    check = app.test_cli_runner().invoke(args=["wechat-qr", "check", "--base-url",
                                               "https://www.example.com"])
    assert check.exit_code == 1 and "SECRET_KEY" in check.output


def test_a_strong_secret_key_serves_logins_in_production(
    make_production_app: t.Callable[..., Flask], caplog: t.Any
) -> None:
    with caplog.at_level("ERROR", logger="flask_wechat_qr"):
        app = make_production_app()  # a strong key
    assert not caplog.records
    assert app.test_client().get("/auth/wechat/login").status_code == 302


@pytest.mark.parametrize("mode", [{"TESTING": True}, {"DEBUG": True}])
def test_development_may_use_a_short_secret_key(
    make_production_app: t.Callable[..., Flask], mode: dict[str, bool]
) -> None:
    app = make_production_app(SECRET_KEY="dev", **mode)
    assert app.test_client().get("/auth/wechat/login").status_code == 302


def test_an_id_token_secret_equal_to_the_secret_key_is_refused(
    make_production_app: t.Callable[..., Flask]
) -> None:
    """Every receiver holds the ID-token secret: as the SECRET_KEY it would let them forge
    this site's session cookies."""
    key = "a-long-random-key-used-for-both-purposes-0123456789"
    with pytest.raises(ConfigurationError) as info:
        make_production_app(SECRET_KEY=key, WECHAT_QR_ID_TOKEN_SECRET=key,
                            WECHAT_QR_CALLBACK_URL="https://biz.example.com/done")
    assert info.value.key == "WECHAT_QR_ID_TOKEN_SECRET"
    assert key not in str(info.value)


def test_a_callback_url_without_a_fixed_issuer_keeps_logins_off_in_production(
    make_production_app: t.Callable[..., Flask], caplog: t.Any
) -> None:
    """The ID token's iss must not follow the Host header a client chooses."""
    business = {"WECHAT_QR_CALLBACK_URL": "https://biz.example.com/done",
                "WECHAT_QR_ID_TOKEN_SECRET": "an-id-token-secret-of-its-own-" + "x" * 16}
    with caplog.at_level("ERROR", logger="flask_wechat_qr"):
        unfixed = make_production_app(**business)
    assert any("WECHAT_QR_ID_TOKEN_ISSUER" in r.getMessage() for r in caplog.records)
    assert unfixed.test_client().get("/auth/wechat/login").status_code == 503
    fixed = make_production_app(WECHAT_QR_ID_TOKEN_ISSUER="https://www.example.com", **business)
    assert fixed.test_client().get("/auth/wechat/login").status_code == 302
    by_server_name = make_production_app(SERVER_NAME="www.example.com", **business)
    resp = by_server_name.test_client().get("/auth/wechat/login",
                                            base_url="http://www.example.com")
    assert resp.status_code == 302


# --- no WeChat credentials yet ------------------------------------------------------------


@pytest.mark.parametrize("credentials", [
    {"WECHAT_QR_APP_ID": None, "WECHAT_QR_APP_SECRET": None},
    {"WECHAT_QR_APP_ID": "", "WECHAT_QR_APP_SECRET": ""},
])
def test_an_app_without_credentials_starts_with_its_wechat_login_off(
    make_production_app: t.Callable[..., Flask], caplog: t.Any, credentials: dict[str, t.Any]
) -> None:
    """A site deploys its code before it has WeChat credentials: it starts, every ``flask``
    command runs, the host's pages work, WeChat login answers a 503 page that says so, and
    the log says what to set, once."""
    with caplog.at_level("WARNING", logger="flask_wechat_qr"):
        app = make_production_app(**credentials)
    (record,) = [r for r in caplog.records if "WeChat login is OFF" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert "WECHAT_QR_APP_ID and WECHAT_QR_APP_SECRET" in record.getMessage()
    assert "WECHAT_QR_SANDBOX=true" in record.getMessage()
    client = app.test_client()
    caplog.clear()
    with caplog.at_level("INFO", logger="flask_wechat_qr"):
        for path in ("/auth/wechat/login", "/auth/wechat/qr",
                     "/auth/wechat/callback?code=c&state=s", "/auth/wechat/link"):
            resp = client.get(path)
            assert resp.status_code == 503, path
            page = resp.get_data(as_text=True)
            assert 'data-error="LoginNotSetUp"' in page and "not set up yet" in page, path
    # Said once at start-up: no WARNING or ERROR line per visitor (a flood of them).
    assert [r.levelname for r in caplog.records] == ["INFO"] * 4
    zh = client.get("/auth/wechat/login", headers={"Accept-Language": "zh-CN"})
    assert "微信登录尚未设置" in zh.get_data(as_text=True)
    assert client.get("/auth/nope/login").status_code == 404
    assert client.get("/").status_code == 200
    runner = app.test_cli_runner()
    assert runner.invoke(args=["--help"]).exit_code == 0
    upgrade = runner.invoke(args=["wechat-qr", "db", "upgrade"])
    assert upgrade.exit_code == 0, upgrade.output


@pytest.mark.parametrize("sandbox", [False, True])
def test_an_appid_without_its_appsecret_is_named_as_such(
    make_production_app: t.Callable[..., Flask], caplog: t.Any, sandbox: bool
) -> None:
    """An AppID pasted into the config before its AppSecret (the README's example keeps one)
    leaves the login off: the log names the missing half, not "no AppID", and, with the
    sandbox on (which stands in only for a connection with neither), says to remove the
    AppID rather than to turn on the sandbox that is already on."""
    with caplog.at_level("WARNING", logger="flask_wechat_qr"):
        app = make_production_app(WECHAT_QR_APP_SECRET=None, WECHAT_QR_SANDBOX=sandbox)
    (record,) = [r for r in caplog.records if "WeChat login is OFF" in r.getMessage()]
    message = record.getMessage()
    assert "WECHAT_QR_APP_ID is set but WECHAT_QR_APP_SECRET is not" in message
    assert "no AppID" not in message
    assert "set WECHAT_QR_APP_SECRET" in message and "remove WECHAT_QR_APP_ID" in message
    assert ("set WECHAT_QR_SANDBOX=true" in message) is not sandbox
    assert app.test_client().get("/auth/wechat/login").status_code == 503


def test_one_connection_without_credentials_leaves_the_others_on(
    make_production_app: t.Callable[..., Flask], caplog: t.Any
) -> None:
    connections = [{"connection": "web", "app_id": "wx1111111111111111", "app_secret": "s1"},
                   {"connection": "shop"}]
    with caplog.at_level("WARNING", logger="flask_wechat_qr"):
        app = make_production_app(WECHAT_QR_CONNECTIONS=connections)
    (record,) = [r for r in caplog.records if "WeChat login is OFF" in r.getMessage()]
    assert "'shop'" in record.getMessage() and "'web'" not in record.getMessage()
    assert "app_id and app_secret in WECHAT_QR_CONNECTIONS" in record.getMessage()
    client = app.test_client()
    assert client.get("/auth/web/login").status_code == 302
    assert client.get("/auth/shop/login").status_code == 503


def test_credentials_in_development_still_say_how_to_try_the_sandbox(
    make_production_app: t.Callable[..., Flask], caplog: t.Any
) -> None:
    with caplog.at_level("WARNING", logger="flask_wechat_qr"):
        app = make_production_app(DEBUG=True, WECHAT_QR_APP_ID=None)
    assert "WECHAT_QR_SANDBOX=true" in caplog.text
    assert app.test_client().get("/auth/wechat/qr").status_code == 503
    sandbox = make_production_app(DEBUG=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None,
                                  WECHAT_QR_SANDBOX=True)
    assert sandbox.test_client().get("/auth/wechat/login").status_code == 302


def test_the_late_frame_hook_listens_only_where_a_connection_needs_it(make_app: t.Any) -> None:
    """The callback's late framing check runs after every request of the site once
    connected: a site without WeChat's self-redirect pays nothing for it. (The late drop of
    a host's credentialed CORS listens on every site: session 34.)"""
    from flask.signals import request_finished

    from flask_wechat_qr.views import frame_callbacks_last, no_credentialed_reads_last

    plain = make_app()
    assert set(request_finished.receivers_for(plain)) == {no_credentialed_reads_last}
    framed = make_app(WECHAT_QR_QR_SELF_REDIRECT=True)
    assert set(request_finished.receivers_for(framed)) == {
        frame_callbacks_last, no_credentialed_reads_last}
