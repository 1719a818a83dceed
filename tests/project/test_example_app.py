"""The example site: local accounts, WeChat login through the extension, env configuration,
and a real ``gunicorn`` serving it."""

from __future__ import annotations

import importlib.util
import logging
import re
import typing as t
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.cli import ScriptInfo
from support import (
    APP_ID,
    APP_SECRET,
    CSRF,
    NICKNAME,
    ONE_DATABASE,
    OPENID,
    OPENID_2,
    UNIONID,
    UNIONID_2,
    Database,
    answer,
    app_settings,
    bind_as,
    bind_page,
    find_tags,
    finish_login,
    gunicorn,
    login_with_wechat,
    open_qr_page,
    poll,
    scan,
    scan_and_allow,
    start_link,
    start_login,
)
from werkzeug.security import check_password_hash

from example_app import create_app, wechat
from example_app import views as example_views
from example_app.config import (
    config_from_env,
    database_uri,
    dev_secret_key,
    wechat_config_state,
)
from example_app.models import User, db
from flask_wechat_qr import ConfigurationError

#: No variable of the developer's shell leaks into these apps, and no test writes into the
#: repository's instance folder.
pytestmark = pytest.mark.usefixtures("example_app_env")


@pytest.fixture
def site(make_site: t.Callable[..., Flask]) -> Flask:
    """The site without WeChat credentials and with the sandbox turned off."""
    return make_site(WECHAT_QR_SANDBOX=False)


@pytest.fixture
def wechat_site(make_site: t.Callable[..., Flask]) -> Flask:
    return make_site(WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET)


def csrf_token(client: t.Any, path: str = "/") -> str:
    match = CSRF.search(client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def register(client: t.Any, username: str = "alice", password: str = "correct horse") -> t.Any:
    token = csrf_token(client, "/register")
    return client.post("/register", data={"username": username, "password": password,
                                          "csrf_token": token})


def login(client: t.Any, username: str = "alice", password: str = "correct horse",
          **extra: str) -> t.Any:
    token = csrf_token(client, "/login")
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": token, **extra})


def logout(client: t.Any) -> t.Any:
    return client.post("/logout", data={"csrf_token": csrf_token(client)})


# --- local accounts ---------------------------------------------------------------


def test_register_logs_in_and_hashes_the_password(site: Flask) -> None:
    client = site.test_client()
    resp = register(client)
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/"
    assert "alice" in client.get("/").get_data(as_text=True)
    with site.app_context():

        user = db.session.execute(db.select(User)).scalar_one()
        assert user.password_hash != "correct horse"
        assert check_password_hash(user.password_hash, "correct horse")
        assert user.created_at is not None


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        ("al", "correct horse", "3 to 40"),
        ("bad name!", "correct horse", "3 to 40"),
        ("bob", "short", "at least 8"),
        ("ALICE", "another password", "taken"),
    ],
)
def test_register_refuses_bad_input(site: Flask, username: str, password: str,
                                    message: str) -> None:
    register(site.test_client())
    client = site.test_client()
    resp = register(client, username, password)
    assert resp.status_code == 400
    assert message in resp.get_data(as_text=True)
    assert client.get("/api/me").status_code == 401


def test_the_icon_a_browser_asks_for_never_sends_the_session(site: Flask) -> None:
    """Chromium asks for the icon while the register page is open, with the cookie from
    before the login. The answer came after the register's (a 404 page, which loads the
    user and so wrote the session) and its cookie logged the new account out (CI, stop 48)."""
    client = site.test_client()
    page = client.get("/register").get_data(as_text=True)
    link = re.search(r'<link rel="icon" href="([^"]+)"', page)
    assert link, "the layout links no icon"
    before_login = client.get_cookie("session")
    assert before_login is not None
    for path in ("/favicon.ico", link.group(1)):
        answers = [client.get(path)]
        while answers[-1].status_code in (301, 302):
            answers.append(client.get(answers[-1].headers["Location"]))
        for hop in answers:
            hop.close()  # the icon's file
        assert answers[-1].status_code == 200
        assert answers[-1].mimetype == "image/svg+xml"
        assert [a.headers.getlist("Set-Cookie") for a in answers] == [[]] * len(answers)
    # Safari's touch icon, and any other missing image: a 404 with no page, no cookie
    missing = client.get("/apple-touch-icon.png", headers={"Sec-Fetch-Dest": "image"})
    assert (missing.status_code, missing.mimetype) == (404, "text/plain")
    assert missing.headers.getlist("Set-Cookie") == []
    # ...nor from a browser that says not what it asks for (Safari before 16.4), a fetch()
    # or a page: the site's own page, in the visitor's language, the visitor not loaded
    # (a review: Flask-Login wrote "_fresh" there)
    for headers in ({}, {"Sec-Fetch-Dest": "empty"}, {"Sec-Fetch-Dest": "document"}):
        page_404 = client.get("/apple-touch-icon-precomposed.png", headers=headers)
        assert (page_404.status_code, page_404.mimetype) == (404, "text/html")
        assert "Sec-Fetch-Dest" in page_404.headers["Vary"]
        assert page_404.headers.getlist("Set-Cookie") == []
    assert client.get_cookie("session").value == before_login.value  # type: ignore[union-attr]
    # the error's own headers stay: a 405's Allow, on the page and in plain text
    for dest in ("document", "script"):
        refused = client.put("/register", headers={"Sec-Fetch-Dest": dest})
        assert refused.status_code == 405 and "POST" in refused.headers["Allow"]


def test_an_error_page_shows_a_logged_in_visitor_as_logged_in(site: Flask) -> None:
    client = site.test_client()
    register(client, "alice")
    page_404 = client.get("/no-such-page")
    assert page_404.status_code == 404
    assert "alice" in page_404.get_data(as_text=True)  # the layout's header


def test_login_with_the_right_password(site: Flask) -> None:
    register(site.test_client())
    client = site.test_client()
    resp = login(client)
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/"
    assert client.get("/api/me").json["username"] == "alice"


@pytest.mark.parametrize(("username", "password"),
                         [("alice", "wrong password"), ("nobody", "correct horse")])
def test_login_with_a_wrong_password_or_user(site: Flask, username: str,
                                             password: str) -> None:
    register(site.test_client())
    client = site.test_client()
    resp = login(client, username, password)
    assert resp.status_code == 400
    assert "Wrong username or password." in resp.get_data(as_text=True)
    assert client.get("/api/me").status_code == 401


def test_login_follows_only_a_local_next(site: Flask) -> None:
    register(site.test_client())
    client = site.test_client()
    assert login(client, next="/account").headers["Location"] == "/account"
    logout(client)
    assert login(client, next="//evil.example/").headers["Location"] == "/"
    logout(client)
    assert login(client, next="https://evil.example/").headers["Location"] == "/"
    logout(client)
    assert login(client, next="/\\evil.example/").headers["Location"] == "/"


@pytest.mark.parametrize("username", ["ali\x00ce", "\x00"])
def test_login_with_a_nul_in_the_username_is_wrong_credentials(site: Flask,
                                                                username: str) -> None:
    """PostgreSQL refuses NUL in a query: still "wrong username or password", not a 500."""
    register(site.test_client())
    resp = login(site.test_client(), username)
    assert resp.status_code == 400
    assert "Wrong username or password." in resp.get_data(as_text=True)


def test_a_user_without_a_password_cannot_log_in_with_one(site: Flask) -> None:
    """A user made by a WeChat login has no password: no password logs in as them."""
    with site.app_context():
        db.session.add(User(username="wechat-only", password_hash=None))
        db.session.commit()
    for password in ("", "anything"):
        resp = login(site.test_client(), "wechat-only", password)
        assert resp.status_code == 400
        assert "Wrong username or password." in resp.get_data(as_text=True)


def test_an_oversized_next_is_ignored_not_an_error(site: Flask) -> None:
    register(site.test_client())
    client = site.test_client()
    assert client.get("/login", query_string={"next": "/" + "a" * 5000}).status_code == 200
    assert login(client, next="/" + "a" * 5000).headers["Location"] == "/"


def test_a_disabled_account_is_told_so_not_a_500(site: Flask,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    register(site.test_client())
    monkeypatch.setattr(User, "is_active", property(lambda self: False))
    client = site.test_client()
    resp = login(client)
    assert resp.status_code == 400
    assert "disabled" in resp.get_data(as_text=True)
    assert client.get("/api/me").status_code == 401


def _from(site: Flask, address: str) -> t.Any:
    client = site.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def test_the_login_form_limits_guesses_at_one_account_from_any_address(
    site: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the extension's bind page does: wrong passwords for one account, from many
    addresses, stop at the limit; then even the right one waits; others are not blocked."""
    monkeypatch.setattr(example_views, "FAILURES_PER_ACCOUNT", 3)
    register(site.test_client())
    register(site.test_client(), "bob", "bob's password")
    for number in range(3):
        assert login(_from(site, f"198.51.100.{number}"), "alice", "guess").status_code == 400
    blocked = login(_from(site, "203.0.113.7"), "Alice", "correct horse")
    assert blocked.status_code == 429
    assert "Too many wrong passwords" in blocked.get_data(as_text=True)
    assert login(_from(site, "203.0.113.7"), "bob", "bob's password").status_code == 302


def test_the_login_form_limits_guesses_from_one_address(
    site: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(example_views, "FAILURES_PER_ADDRESS", 3)
    register(site.test_client())
    for name in ("x1", "x2", "x3"):
        assert login(_from(site, "198.51.100.9"), name, "guess").status_code == 400
    assert login(_from(site, "198.51.100.9"), "alice", "correct horse").status_code == 429
    assert login(_from(site, "203.0.113.1"), "alice", "correct horse").status_code == 302


def test_right_passwords_are_not_failures(site: Flask,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(example_views, "FAILURES_PER_ACCOUNT", 2)
    register(site.test_client())
    for _ in range(5):
        client = site.test_client()
        assert login(client).status_code == 302
        logout(client)


def test_account_page_needs_a_login(site: Flask) -> None:
    resp = site.test_client().get("/account")
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/login?next=%2Faccount"


def test_logout_is_a_post_with_the_csrf_token(site: Flask) -> None:
    client = site.test_client()
    register(client)
    # GET only asks; a bare link on another site cannot log anyone out.
    page = client.get("/logout")
    assert page.status_code == 200
    assert 'action="/logout"' in page.get_data(as_text=True)
    assert client.get("/api/me").status_code == 200
    # POST without the token is refused.
    assert client.post("/logout").status_code == 400
    assert client.post("/logout", data={"csrf_token": "forged"}).status_code == 400
    assert client.get("/api/me").status_code == 200

    resp = logout(client)
    assert resp.status_code == 302
    assert client.get("/api/me").status_code == 401
    assert "You are logged out." in client.get("/").get_data(as_text=True)


def test_forms_without_the_csrf_token_are_refused(site: Flask) -> None:
    client = site.test_client()
    resp = client.post("/register", data={"username": "mallory", "password": "long enough!"})
    assert resp.status_code == 400
    client.get("/login")
    resp = client.post("/login", data={"username": "mallory", "password": "long enough!"})
    assert resp.status_code == 400


def test_api_me_is_401_json_then_the_user(site: Flask) -> None:
    client = site.test_client()
    resp = client.get("/api/me")
    assert resp.status_code == 401
    assert resp.is_json
    assert resp.json["error"] == "unauthorized"

    register(client)
    resp = client.get("/api/me")
    assert resp.status_code == 200
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.json == {"id": 1, "username": "alice", "nickname": None, "identities": []}


# --- WeChat through the example site ----------------------------------------------


def test_home_without_credentials_says_what_to_set(site: Flask) -> None:
    html = site.test_client().get("/").get_data(as_text=True)
    assert "WECHAT_QR_APP_ID" in html
    assert "WECHAT_QR_APP_SECRET" in html
    assert 'class="wechat-qr-button"' not in html
    assert "data-wechat-connection" not in html
    assert ">Log in with WeChat</a>" not in html
    assert "/auth/" in html  # only as the callback URL to register
    assert "http://localhost/auth/wechat/callback" in html
    assert 'href="/auth/' not in html
    # The extension is set up with WeChat login off: a clean page, and `check` works.
    assert site.test_client().get("/auth/wechat/login").status_code == 503
    check = site.test_cli_runner().invoke(args=["wechat-qr", "check"])
    assert check.exit_code == 1 and "no AppID and AppSecret" in check.output


def test_home_with_credentials_has_the_wechat_button_and_qr_link(wechat_site: Flask) -> None:
    html = wechat_site.test_client().get("/").get_data(as_text=True)
    assert 'class="wechat-qr-button"' in html
    assert 'href="/auth/wechat/login"' in html
    assert ">Log in with WeChat</a>" in html
    assert 'href="/auth/wechat/qr"' in html
    assert "WECHAT_QR_APP_SECRET" not in html


def test_extension_pages_use_the_site_layout(wechat_site: Flask) -> None:
    client = wechat_site.test_client()
    resp = client.get("/auth/wechat/qr")
    html = resp.get_data(as_text=True)
    assert 'class="brand"' in html  # the site's header
    assert 'id="wechat-qr-frame"' in html
    assert int(resp.headers["Refresh"]) > 0  # a fresh QR code before the state expires
    assert APP_SECRET not in html

    resp = client.get("/auth/wechat/callback", query_string={"state": "forged", "code": "x"})
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    assert 'class="brand"' in html
    assert "This login link is no longer valid" in html


def test_full_wechat_login(wechat_site: Flask, wechat_api: t.Any) -> None:
    client = wechat_site.test_client()
    state = start_login(client, next="/account")
    wechat_api.token()
    wechat_api.userinfo()
    resp = finish_login(client, state)
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/account"

    me = client.get("/api/me").json
    assert me == {
        "id": me["id"],
        "username": None,
        "nickname": NICKNAME,
        "identities": [{"connection": "wechat", "app": "website", "openid": OPENID,
                        "unionid": UNIONID}],
    }

    assert NICKNAME in client.get("/").get_data(as_text=True)
    account = client.get("/account")
    assert account.status_code == 200
    html = account.get_data(as_text=True)
    assert 'class="identity"' in html
    for value in ("wechat", NICKNAME, OPENID, UNIONID):
        assert value in html

    # Logging out and in again with the same WeChat finds the same user.
    logout(client)
    state = start_login(client)
    wechat_api.token()
    assert finish_login(client, state).status_code == 302
    again = client.get("/api/me").json
    assert again["id"] == me["id"]
    assert len(again["identities"]) == 1


def test_a_refreshed_wechat_profile_reaches_the_user(make_site: t.Callable[..., Flask],
                                                    wechat_api: t.Any) -> None:
    """A week later, a returning login refreshes the profile in the background; the site's
    user row follows it (example_app/wechat_profiles.py)."""
    import sqlalchemy as sa

    from flask_wechat_qr.models import utcnow

    wechat_site = make_site(WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET,
                            WECHAT_QR_PROFILE_REFRESH_AFTER=7 * 24 * 3600)

    client = wechat_site.test_client()
    wechat_api.token()
    wechat_api.userinfo()
    assert finish_login(client, start_login(client)).status_code == 302
    week_ago = utcnow() - timedelta(days=8)
    with wechat_site.app_context():
        db.session.execute(sa.text("UPDATE wechat_qr_identity SET profile_refreshed_at = :t, "
                                   "created_at = :t"), {"t": week_ago})
        db.session.commit()
    wechat_api.mock.reset()
    wechat_api.token()
    wechat_api.userinfo(nickname="张三丰🐉")
    logout(client)
    assert finish_login(client, start_login(client)).status_code == 302
    assert wechat_site.extensions["wechat_qr"].refresher.wait(10)
    assert client.get("/api/me").json["nickname"] == "张三丰🐉"


def test_wechat_login_refused_in_login_only_mode(make_site: t.Callable[..., Flask],
                                                 wechat_api: t.Any) -> None:
    site = make_site(WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET,
                     WECHAT_QR_LOGIN_ONLY=True)
    client = site.test_client()
    state = start_login(client)
    wechat_api.token()
    wechat_api.userinfo()
    resp = finish_login(client, state)
    assert resp.status_code == 403
    assert 'class="brand"' in resp.get_data(as_text=True)
    assert client.get("/api/me").status_code == 401


# --- configuration ----------------------------------------------------------------


def test_configuration_from_environment(monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    monkeypatch.setenv("WECHAT_QR_APP_ID", APP_ID)
    monkeypatch.setenv("WECHAT_QR_APP_SECRET", APP_SECRET)
    monkeypatch.setenv("WECHAT_QR_CONNECTION", "wechat-web")
    monkeypatch.setenv("WECHAT_QR_DISPLAY_NAME", "微信")
    monkeypatch.setenv("WECHAT_QR_LOGIN_ONLY", "true")
    monkeypatch.setenv("WECHAT_QR_QR_SELF_REDIRECT", "1")
    monkeypatch.setenv("WECHAT_QR_HTTP_TIMEOUT", "2.5")
    monkeypatch.setenv("WECHAT_QR_STATE_TTL", "300")
    monkeypatch.setenv("WECHAT_QR_API_BASE_URL", "http://127.0.0.1:9/api")
    monkeypatch.setenv("WECHAT_QR_URL_PREFIX", "/login/wechat")
    monkeypatch.setenv("WECHAT_QR_ASSOCIATION", "field_matching")
    monkeypatch.setenv("WECHAT_QR_MATCH_FIELDS", "unionid")
    monkeypatch.setenv("WECHAT_QR_CALLBACK_URL", "")  # empty means unset
    # 32 bytes or more: with a weaker one WeChat login is off, and the button is not shown
    monkeypatch.setenv("SECRET_KEY", "from-the-environment-of-32-bytes-or-more")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    app = create_app()

    assert app.config["WECHAT_QR_APP_ID"] == APP_ID
    assert app.config["WECHAT_QR_LOGIN_ONLY"] is True
    assert app.config["WECHAT_QR_QR_SELF_REDIRECT"] is True
    assert app.config["WECHAT_QR_HTTP_TIMEOUT"] == 2.5
    assert app.config["WECHAT_QR_STATE_TTL"] == 300
    assert app.config["WECHAT_QR_CALLBACK_URL"] is None
    assert app.config["SECRET_KEY"] == "from-the-environment-of-32-bytes-or-more"
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'env.db'}"
    assert (tmp_path / "env.db").exists()

    settings = app_settings(app)
    conn = settings.connections["wechat-web"]
    assert conn.app_id == APP_ID
    assert conn.display_name == "微信"
    assert conn.login_only is True
    assert conn.qr_self_redirect is True
    assert conn.association == "field_matching"
    assert conn.match_fields == ("unionid",)
    assert settings.http_timeout == 2.5
    assert settings.state_ttl == 300
    assert settings.api_base_url == "http://127.0.0.1:9/api"
    assert settings.url_prefix == "/login/wechat"
    html = app.test_client().get("/").get_data(as_text=True)
    assert 'href="/login/wechat/wechat-web/login"' in html
    assert ">Log in with 微信</a>" in html


def test_false_booleans_and_test_config_wins(monkeypatch: pytest.MonkeyPatch,
                                             make_site: t.Callable[..., Flask]) -> None:
    monkeypatch.setenv("WECHAT_QR_APP_ID", "wx-from-env")
    monkeypatch.setenv("WECHAT_QR_APP_SECRET", APP_SECRET)
    monkeypatch.setenv("WECHAT_QR_LOGIN_ONLY", "false")
    monkeypatch.setenv("WECHAT_QR_QR_SELF_REDIRECT", "0")
    app = make_site(WECHAT_QR_APP_ID=APP_ID)
    with app.app_context():
        conn = wechat.connections["wechat"]
    assert conn.app_id == APP_ID
    assert conn.login_only is False
    assert conn.qr_self_redirect is False


def test_several_connections_from_environment_json(monkeypatch: pytest.MonkeyPatch,
                                                   make_site: t.Callable[..., Flask]) -> None:
    monkeypatch.setenv("WECHAT_QR_CONNECTIONS", (
        '[{"connection": "web", "app_id": "wx1111111111111111", "app_secret": "s1"},'
        ' {"connection": "shop", "display_name": "Shop", "app_id": "wx2222222222222222",'
        '  "app_secret": "s2",'
        '  "login_only": true}]'
    ))
    app = make_site()
    with app.app_context():
        connections = wechat.connections
    assert list(connections) == ["web", "shop"]
    assert connections["shop"].login_only is True
    html = app.test_client().get("/").get_data(as_text=True)
    assert 'href="/auth/web/login"' in html
    assert 'href="/auth/shop/login"' in html


def test_bad_environment_values_stop_the_app_with_the_key(
    monkeypatch: pytest.MonkeyPatch, make_site: t.Callable[..., Flask]
) -> None:
    monkeypatch.setenv("WECHAT_QR_APP_ID", APP_ID)
    monkeypatch.setenv("WECHAT_QR_APP_SECRET", APP_SECRET)
    monkeypatch.setenv("WECHAT_QR_LOGIN_ONLY", "maybe")
    with pytest.raises(ConfigurationError, match="WECHAT_QR_LOGIN_ONLY"):
        make_site()
    monkeypatch.setenv("WECHAT_QR_LOGIN_ONLY", "true")
    monkeypatch.setenv("WECHAT_QR_CONNECTIONS", "[not json")
    with pytest.raises(ConfigurationError, match="WECHAT_QR_CONNECTIONS"):
        make_site()


def test_a_misspelled_sandbox_switch_stops_the_app(
    monkeypatch: pytest.MonkeyPatch, make_site: t.Callable[..., Flask]
) -> None:
    """'flase' must not quietly run the simulated WeChat."""
    monkeypatch.setenv("WECHAT_QR_SANDBOX", "flase")
    with pytest.raises(ConfigurationError, match="WECHAT_QR_SANDBOX"):
        make_site()


def test_an_app_id_without_a_secret_starts_with_wechat_login_off(
    monkeypatch: pytest.MonkeyPatch, make_site: t.Callable[..., Flask],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("WECHAT_QR_APP_ID", APP_ID)
    with caplog.at_level(logging.WARNING, "flask_wechat_qr"):
        site = make_site()
    assert "WECHAT_QR_APP_SECRET" in caplog.text
    client = site.test_client()
    assert client.get("/").status_code == 200
    resp = client.get("/auth/wechat/login")
    assert resp.status_code == 503
    assert "not set up yet" in resp.get_data(as_text=True)


def test_unknown_wechat_variables_are_logged(monkeypatch: pytest.MonkeyPatch,
                                             make_site: t.Callable[..., Flask],
                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("WECHAT_QR_APPID", "typo")
    with caplog.at_level(logging.WARNING):
        make_site()
    assert "WECHAT_QR_APPID" in caplog.text
    assert "SANDBOX" in caplog.text and "WECHAT_QR_APP_ID and WECHAT_QR_APP_SECRET" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        make_site(WECHAT_QR_SANDBOX=False)
    assert "WeChat login is OFF for 'wechat': no AppID and AppSecret. Fix: set " \
        "WECHAT_QR_APP_ID and WECHAT_QR_APP_SECRET" in caplog.text


def test_defaults_sqlite_in_instance_folder_and_a_logged_dev_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        app = create_app()
    instance = tmp_path / "instance"
    assert app.instance_path == str(instance)
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{instance / 'example_app.sqlite'}"
    assert (instance / "example_app.sqlite").exists()
    key = (instance / "dev-secret-key").read_text()
    assert app.config["SECRET_KEY"] == key
    assert len(key) == 64
    assert "SECRET_KEY is not set" in caplog.text
    assert key not in caplog.text
    # A second process (another worker, or a restart) signs with the same key.
    assert create_app().config["SECRET_KEY"] == key


def test_dev_secret_key_is_shared_and_private(tmp_path: Path) -> None:
    log = logging.getLogger("test")
    first = dev_secret_key(str(tmp_path), log)
    assert dev_secret_key(str(tmp_path), log) == first
    assert (tmp_path / "dev-secret-key").stat().st_mode & 0o077 == 0
    assert [p.name for p in tmp_path.iterdir()] == ["dev-secret-key"]


def test_database_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """Heroku's ``postgres://`` and a bare ``postgresql://`` (which SQLAlchemy 2.0 reads as
    psycopg2's, where the quick start installs psycopg: before, the site did not start)
    name the installed driver; a URL that names its driver keeps it."""
    assert database_uri("postgres://u:p@db/site", "/x") == "postgresql+psycopg://u:p@db/site"
    assert database_uri("postgresql://db/site", "/x") == "postgresql+psycopg://db/site"
    assert database_uri("postgresql+psycopg://db/site", "/x") == "postgresql+psycopg://db/site"
    assert database_uri("postgresql+pg8000://db/site", "/x") == "postgresql+pg8000://db/site"
    assert database_uri("sqlite:////tmp/site.db", "/x") == "sqlite:////tmp/site.db"
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "psycopg" else object())
    assert database_uri("postgres://u:p@db/site", "/x") == "postgresql+psycopg2://u:p@db/site"


def test_database_uri_of_mariadb_and_mysql(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bare ``mysql://`` (mysqlclient's to SQLAlchemy, not installed by the docs: the site
    did not start) names PyMySQL unless mysqlclient is there, and every MariaDB/MySQL URL
    speaks utf8mb4 unless it names a charset (emoji nicknames)."""
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "MySQLdb" else object())
    assert database_uri("mysql://u:p@db/site", "/x") == \
        "mysql+pymysql://u:p@db/site?charset=utf8mb4"
    assert database_uri("mariadb://db/site?ssl=1", "/x") == \
        "mariadb+pymysql://db/site?ssl=1&charset=utf8mb4"
    assert database_uri("mysql+pymysql://db/site?charset=latin1", "/x") == \
        "mysql+pymysql://db/site?charset=latin1"
    assert database_uri("mysql+mysqlconnector://db/site", "/x") == \
        "mysql+mysqlconnector://db/site?charset=utf8mb4"
    assert database_uri("mariadb+mariadbconnector://db/site", "/x") == \
        "mariadb+mariadbconnector://db/site"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: object())
    assert database_uri("mysql://db/site", "/x") == "mysql+mysqldb://db/site?charset=utf8mb4"


def test_wechat_config_state() -> None:
    # In development and tests the default is the sandbox: try it in a minute.
    assert wechat_config_state({"DEBUG": True}).mode == "sandbox"
    assert wechat_config_state({"TESTING": True}).mode == "sandbox"
    # Anywhere else it is off, never the sandbox by omission (a deploy that forgot its
    # AppID), unless asked for.
    forgot = wechat_config_state({})
    assert forgot.mode == "off" and forgot.missing == ("WECHAT_QR_APP_ID",
                                                        "WECHAT_QR_APP_SECRET")
    assert wechat_config_state({"WECHAT_QR_SANDBOX": True}).mode == "sandbox"
    off = wechat_config_state({"WECHAT_QR_SANDBOX": False, "DEBUG": True})
    assert not off.enabled
    assert off.missing == ("WECHAT_QR_APP_ID", "WECHAT_QR_APP_SECRET")
    assert wechat_config_state({"WECHAT_QR_APP_ID": "wx1"}).mode == "wechat"
    assert wechat_config_state(
        {"WECHAT_QR_CONNECTIONS": [{"app_id": "wx1111111111111111"}]}).mode == "wechat"
    assert wechat_config_state({"WECHAT_QR_APP_ID": "wx1", "WECHAT_QR_SANDBOX": True}).mode == (
        "sandbox")


def test_a_production_site_without_credentials_has_wechat_login_off(
    make_site: t.Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """The audit's sandbox by omission: deployed without an AppID (DEBUG and TESTING off),
    the example serves no simulated WeChat; it says what to set."""
    with caplog.at_level("WARNING"):
        app = make_site(TESTING=False)
    assert app.extensions["example_app"]["wechat_setup"].mode == "off"
    assert "WECHAT_QR_SANDBOX=true" in caplog.text
    client = app.test_client()
    assert client.get("/auth/wechat/login").status_code == 503  # no simulated WeChat
    assert client.get("/wechat-sandbox/").status_code == 404


def test_a_sandbox_asked_for_in_production_is_said_loudly(
    make_site: t.Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="flask_wechat_qr"):
        app = make_site(TESTING=False, WECHAT_QR_SANDBOX=True)
    assert app_settings(app).sandbox is True
    assert any("WECHAT_QR_SANDBOX is on while DEBUG and TESTING are off" in r.getMessage()
               for r in caplog.records if r.name == "flask_wechat_qr")


def test_without_credentials_the_site_runs_on_the_sandbox(
    make_site: t.Callable[..., Flask],
) -> None:
    app = make_site()
    assert app.config["WECHAT_QR_SANDBOX"] is True
    settings = app_settings(app)
    assert settings.sandbox and settings.connections["wechat"].app_id == "wxsandbox0000000001"
    client = app.test_client()
    html = client.get("/").get_data(as_text=True)
    assert 'class="wechat-qr-button"' in html and "sandbox" in html.lower()
    open_qr_page(client)  # asserts: the login leads to the mounted sandbox's QR page, which loads


def test_real_credentials_turn_the_sandbox_off(wechat_site: Flask) -> None:
    assert not app_settings(wechat_site).sandbox
    location = wechat_site.test_client().get("/auth/wechat/login").headers["Location"]
    assert location.startswith("https://open.weixin.qq.com/connect/qrconnect?")


def test_config_from_env_ignores_other_variables() -> None:
    config, unknown = config_from_env({"PATH": "/bin", "WECHAT_QR_SANDBOX": "yes",
                                       "WECHAT_QR_NOPE": "1", "SECRET_KEY": " "})
    assert config == {"WECHAT_QR_SANDBOX": True}
    assert unknown == ["WECHAT_QR_NOPE"]


def test_the_config_module_uses_only_the_public_api() -> None:
    """The example reads its environment like any 12-factor host: with
    ``flask_wechat_qr.config_from_env``, not the extension's settings module."""
    import ast

    import example_app.config

    tree = ast.parse(Path(example_app.config.__file__).read_text(encoding="utf-8"))
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    assert {m for m in modules if m and m.startswith("flask_wechat_qr")} == {"flask_wechat_qr"}


def test_flask_cli_finds_the_factory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("SECRET_KEY", "cli")
    app = ScriptInfo(app_import_path="example_app").load_app()
    assert app.import_name == "example_app"
    assert "site.index" in app.view_functions


# --- a real server ------------------------------------------------------------------




@ONE_DATABASE
def test_an_in_memory_database_keeps_the_tables_made_at_start_up(
        make_site: t.Callable[..., Flask]) -> None:
    """The site closes its start-up connections (a server forking after building it would
    share them: tests/promises/test_refresh_workers.py), but not the one connection an
    in-memory SQLite database lives in."""
    import sqlalchemy as sa

    from example_app import db

    site = make_site(url="sqlite://")
    with site.app_context():
        assert db.session.execute(sa.text('SELECT count(*) FROM "user"')).scalar() == 0


def test_runs_under_gunicorn(tmp_path: Path, database: Database) -> None:
    env = {"DATABASE_URL": database.url("gunicorn"), "SECRET_KEY": "gunicorn-test-key-" + "5" * 20,
           "WECHAT_QR_SANDBOX": "true"}  # production asks for the sandbox explicitly
    with gunicorn(env, tmp_path / "gunicorn.log") as base:
        with requests.Session() as http:
            home = http.get(base + "/", timeout=5)
            assert home.status_code == 200
            assert "WECHAT_QR_APP_ID" in home.text

            me = http.get(base + "/api/me", timeout=5)
            assert me.status_code == 401
            assert me.json()["error"] == "unauthorized"

            # A real browser round trip: form, CSRF token, session cookie.
            token = CSRF.search(http.get(base + "/register", timeout=5).text)
            assert token
            resp = http.post(base + "/register", timeout=5, data={
                "username": "gunicorn", "password": "correct horse",
                "csrf_token": token.group(1)})
            assert resp.status_code == 200
            me = http.get(base + "/api/me", timeout=5)
            assert me.status_code == 200
            assert me.json()["username"] == "gunicorn"

        # A whole WeChat login on the built-in sandbox, under ONE synchronous worker: the
        # token and profile requests reach the sandbox in-process, or this would deadlock.
        with requests.Session() as browser:
            start = browser.get(base + "/auth/wechat/login", allow_redirects=False, timeout=5)
            assert start.status_code == 302
            polled = scan_and_allow(browser, base, start.headers["Location"].split("#")[0],
                                    "zhangsan")
            assert polled["status"] == "confirmed"
            done = browser.get(polled["redirect"], allow_redirects=False, timeout=10)
            assert done.status_code == 302, done.text
            me = browser.get(base + "/api/me", timeout=5).json()
            assert me["nickname"] == "张三🐼" and me["identities"][0]["connection"] == "wechat"


def test_sandbox_switch_turns_wechat_login_on(monkeypatch: pytest.MonkeyPatch,
                                              make_site: t.Callable[..., Flask]) -> None:
    monkeypatch.setenv("WECHAT_QR_SANDBOX", "true")
    app = make_site()
    assert app.extensions["example_app"]["wechat_setup"].mode == "sandbox"
    assert app_settings(app).sandbox is True
    html = app.test_client().get("/").get_data(as_text=True)
    assert 'class="wechat-qr-button"' in html
    assert "WeChat sandbox." in html


# --- the business front end (ID token demo) -----------------------------------------------


def test_business_demo_receives_and_verifies_the_id_token(
    make_site: t.Callable[..., Flask],
) -> None:
    """On the sandbox: the demo front end starts a login with its state and nonce; the
    posted token verifies at its callback URL; a forged one does not."""
    site = make_site(WECHAT_QR_SANDBOX=True,
                     WECHAT_QR_CALLBACK_URL="http://localhost/business/wechat-done",
                     WECHAT_QR_ID_TOKEN_SECRET="s" * 40)
    browser, phone = site.test_client(), site.test_client()
    page = browser.get("/business/").get_data(as_text=True)
    login_url = re.search(r'href="(/auth/wechat/login\?[^"]+)"', page).group(1)
    uuid, _state = open_qr_page(browser, login_path=login_url.replace("&amp;", "&"))
    answer(phone, uuid, action="allow", person="zhangsan")
    redirect_to = poll(browser, uuid)["redirect"]
    posted = browser.get(redirect_to.split("localhost", 1)[1])
    html = posted.get_data(as_text=True)
    assert 'action="http://localhost/business/wechat-done"' in html
    fields = dict(re.findall(r'name="(id_token|state)" value="([^"]+)"', html))
    forged = dict(fields, id_token=fields["id_token"][:-4] + "AAAA")

    refused = browser.post("/business/wechat-done", data=forged)
    assert refused.status_code == 400
    assert "did not verify" in refused.get_data(as_text=True)
    pending = browser.get_cookie("business_login", path="/business")
    done = browser.post("/business/wechat-done", data=fields)
    assert done.status_code == 200, done.get_data(as_text=True)
    text = done.get_data(as_text=True)
    assert "The ID token verified" in text and "openid" in text
    # The login it started is used up: a replayed post is refused.
    assert browser.post("/business/wechat-done", data=fields).status_code == 400
    # So is the token, replayed with the login's cookie kept (before: accepted again).
    browser.set_cookie("business_login", pending.value, path="/business")
    replayed = browser.post("/business/wechat-done", data=fields)
    assert replayed.status_code == 400
    assert "ReplayedToken" in replayed.get_data(as_text=True)


def test_extension_pages_in_the_site_layout_speak_chinese(wechat_site: Flask) -> None:
    """The site's layout takes the language of the extension's page inside it."""
    html = wechat_site.test_client().get(
        "/auth/wechat/qr", headers={"Accept-Language": "zh-CN,zh;q=0.9"}).get_data(as_text=True)
    assert '<html lang="zh-CN">' in html
    assert "微信登录" in html
    english = wechat_site.test_client().get("/auth/wechat/qr").get_data(as_text=True)
    assert '<html lang="en">' in english


def test_business_demo_is_told_of_a_cancelled_login(make_site: t.Callable[..., Flask]) -> None:
    site = make_site(WECHAT_QR_SANDBOX=True,
                     WECHAT_QR_CALLBACK_URL="http://localhost/business/wechat-done",
                     WECHAT_QR_ID_TOKEN_SECRET="s" * 40)
    browser = site.test_client()
    page = browser.get("/business/").get_data(as_text=True)
    login_url = re.search(r'href="(/auth/wechat/login\?[^"]+)"', page).group(1)
    location = browser.get(login_url.replace("&amp;", "&")).headers["Location"]
    state = re.search(r"[?&]state=([A-Za-z0-9]+)", location).group(1)
    posted = browser.get("/auth/wechat/callback", query_string={"state": state})
    fields = dict(re.findall(r'name="(error|state|error_description)" value="([^"]+)"',
                             posted.get_data(as_text=True)))
    assert fields["error"] == "access_denied"
    done = browser.post("/business/wechat-done", data=fields)
    assert done.status_code == 200
    assert "did not complete" in done.get_data(as_text=True)


# --- two languages ------------------------------------------------------------------------

ZH = "zh-CN,zh;q=0.9,en;q=0.8"
CJK = re.compile(r"[\u4e00-\u9fff]")
#: English a Chinese page may show: names, protocol words, and code (env variables, paths).
ALLOWED_ON_ZH = re.compile(
    r"\b(?:UTC|ID|JSON|openid|unionid|state|nonce|http|localhost)\b"
    r"|\b[A-Z][A-Z0-9_]{2,}\b|/[\w./-]*|\bflask\b|\bpython3?\b"
)


def browser_in(app: Flask, accept_language: str | None = ZH) -> t.Any:
    """A test client whose every request sends this ``Accept-Language``."""
    client = app.test_client()
    if accept_language is not None:
        client.environ_base["HTTP_ACCEPT_LANGUAGE"] = accept_language
    return client


def shown_text(html: str) -> str:
    """What a page shows, roughly: no markup, style, script or code (commands, names)."""
    html = re.sub(r"<(style|script|pre|code)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def untranslated(html: str, *user_data: str) -> list[str]:
    """English words left on a Chinese page, besides user data and the allowed names."""
    text = shown_text(html)
    for value in user_data:
        text = text.replace(value, " ")
    return re.findall(r"[A-Za-z]{3,}(?:\s+[A-Za-z]{2,})*", ALLOWED_ON_ZH.sub(" ", text))


def flashes(resp: t.Any) -> list[str]:
    return re.findall(r'<div class="flash" role="status">(.*?)</div>',
                      resp.get_data(as_text=True), flags=re.S)


def html_lang(resp: t.Any) -> str:
    match = re.search(r'<html lang="([^"]+)">', resp.get_data(as_text=True))
    assert match
    return match.group(1)


def test_the_site_catalog_is_complete_and_compiled() -> None:
    """Every message of the site (Python and templates) has a Chinese translation that
    keeps its placeholders, none is stale, and the shipped ``.mo`` is the ``.po`` compiled."""
    import configparser
    import io

    from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
    from babel.messages.frontend import parse_keywords, parse_mapping_cfg
    from babel.messages.mofile import read_mo, write_mo
    from babel.messages.pofile import read_po
    from support import ROOT

    cfg = ROOT / "example_app" / "babel.cfg"
    with open(cfg, encoding="utf-8") as config:
        method_map, options_map = parse_mapping_cfg(config)
    sections = configparser.RawConfigParser()
    sections.read(cfg, encoding="utf-8")
    keywords = dict(DEFAULT_KEYWORDS)
    for section in sections.sections():
        keywords.update(parse_keywords(sections.get(section, "keywords", fallback="").split()))
    found = {message: f"{name}:{line}" for name, line, message, _c, _x in extract_from_dir(
        ROOT, method_map, options_map, keywords=keywords)}
    assert len(found) > 60

    po = ROOT / "example_app/translations/zh_CN/LC_MESSAGES/example_app.po"
    with open(po, "rb") as handle:
        catalog = read_po(handle, locale="zh_CN", domain="example_app")
    problems = [f"{message!r} ({where})" for message, where in found.items()
                if not (catalog.get(message) and catalog.get(message).string
                        and not catalog.get(message).fuzzy)]
    assert problems == []
    assert [m.id for m in catalog if m.id and m.id not in found] == [], "run pybabel update"
    assert [(m.id, [str(e) for e in errors]) for m, errors in catalog.check()] == []
    assert all(CJK.search(m.string) for m in catalog if m.id)

    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    with open(po.with_suffix(".mo"), "rb") as handle:
        shipped = read_mo(handle)
    assert {m.id: m.string for m in shipped if m.id} == {
        m.id: m.string for m in read_mo(compiled) if m.id}, "run pybabel compile"


def test_every_template_word_goes_through_the_catalog() -> None:
    """What a template of the site shows outside ``_()`` and ``{% trans %}`` is code or a
    name, never English prose (the catalog test above then sees every text)."""
    from support import ROOT

    templates = sorted((ROOT / "example_app/templates").rglob("*.html"))
    assert len(templates) >= 10
    for path in templates:
        text = path.read_text(encoding="utf-8")
        text = re.sub(r"\{#.*?#\}|\{% trans.*?endtrans %\}", "", text, flags=re.S)
        text = re.sub(r"\{%.*?%\}|\{\{.*?\}\}", "", text, flags=re.S)
        assert untranslated(text) == [], path.name


def _user_with_wechat(site: Flask, wechat_api: t.Any) -> t.Any:
    """A client logged in as alice (local account) with WeChat linked, in Chinese."""
    client = browser_in(site)
    register(client)
    state = start_link(client)
    scan(wechat_api, client, state)
    return client


@pytest.mark.parametrize("path", ["/", "/account", "/account/unlink/wechat", "/logout",
                                  "/business/", "/auth/wechat/qr", "/no-such-page"])
def test_pages_of_a_logged_in_user_in_chinese(wechat_site: Flask, wechat_api: t.Any,
                                              path: str) -> None:
    client = _user_with_wechat(wechat_site, wechat_api)
    resp = client.get(path)
    assert resp.status_code == (404 if path == "/no-such-page" else 200)
    assert html_lang(resp) == "zh-CN"
    assert untranslated(resp.get_data(as_text=True), "alice", NICKNAME) == []
    english = browser_in(wechat_site, None)
    register(english, "bob", "bob's password")
    shown = shown_text(english.get(path).get_data(as_text=True))
    assert not CJK.search(shown.replace(NICKNAME, "")), CJK.findall(shown)


@pytest.mark.parametrize("path", ["/", "/login", "/register", "/business/", "/no-such-page"])
@pytest.mark.parametrize("setup", ["wechat", "off"])
def test_pages_of_a_visitor_in_chinese(make_site: t.Callable[..., Flask], path: str,
                                       setup: str) -> None:
    site = (make_site(WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET)
            if setup == "wechat" else make_site(WECHAT_QR_SANDBOX=False))
    resp = browser_in(site).get(path)
    if setup == "off" and path == "/business/":
        assert resp.status_code == 404  # the demo lives only with WeChat on
    assert html_lang(resp) == "zh-CN"
    assert CJK.search(shown_text(resp.get_data(as_text=True)))
    assert untranslated(resp.get_data(as_text=True)) == []
    english = browser_in(site, "en-US,en;q=0.9").get(path)
    assert html_lang(english) == "en"
    # The home page names WeChat's console in Chinese, as WeChat shows it; nothing else.
    shown = shown_text(english.get_data(as_text=True))
    assert CJK.findall(shown) == [] or path == "/" and setup == "off"


def test_form_errors_and_messages_in_chinese(site: Flask) -> None:
    register(site.test_client())
    client = browser_in(site)
    resp = login(client, "alice", "wrong password")
    assert resp.status_code == 400
    assert "用户名或密码错误。" in resp.get_data(as_text=True)
    resp = register(client, "al", "short")
    assert "用户名须由 3 到 40 个字母" in resp.get_data(as_text=True)
    assert "密码至少 8 个字符。" in resp.get_data(as_text=True)
    assert untranslated(resp.get_data(as_text=True), "al") == []

    assert flashes(client.get(login(client).headers["Location"])) == ["已登录：alice。"]
    assert flashes(client.get(logout(client).headers["Location"])) == ["你已退出登录。"]
    assert client.get("/account").headers["Location"] == "/login?next=%2Faccount"
    assert flashes(client.get("/login?next=%2Faccount")) == ["请先登录再查看此页面。"]
    refused = client.post("/login", data={"username": "alice", "password": "x"})
    assert refused.status_code == 400
    assert "表单已过期，或并非来自本站。" in refused.get_data(as_text=True)
    assert untranslated(refused.get_data(as_text=True)) == []
    assert client.get("/api/me").json["message"] == "请先登录。"


def test_site_and_extension_agree_on_the_language(make_site: t.Callable[..., Flask]) -> None:
    """The extension's page and the site's layout around it speak one language: the one
    the site chose, told to the extension through the adapter's ``select_locale``."""
    site = make_site(WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET)
    for accept_language, lang, brand in [("fr-FR, zh-TW;q=0.8, en;q=0.5", "zh-CN", "示例网站"),
                                         ("de, en-GB;q=0.9, zh;q=0.8", "en", "Example site"),
                                         ("de", "en", "Example site")]:
        resp = browser_in(site, accept_language).get("/auth/wechat/qr")
        assert html_lang(resp) == lang
        html = resp.get_data(as_text=True)
        assert f'class="brand" href="/">{brand}</a>' in html
        assert ("使用微信登录" in html) == (lang == "zh-CN")
    chinese_default = make_site(WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET,
                                WECHAT_QR_DEFAULT_LOCALE="zh_CN")
    resp = browser_in(chinese_default, None).get("/auth/wechat/qr")
    assert html_lang(resp) == "zh-CN" and "示例网站" in resp.get_data(as_text=True)


# --- a message after each WeChat action; unlink asks first ----------------------------------


def test_a_message_after_wechat_login_link_and_unlink(wechat_site: Flask,
                                                      wechat_api: t.Any) -> None:
    client = browser_in(wechat_site, None)
    resp = login_with_wechat(client, wechat_api, next="/account")
    assert flashes(client.get(resp.headers["Location"])) == [
        f"Welcome, {NICKNAME}! Your account was created with WeChat."]
    logout(client)
    resp = login_with_wechat(client, wechat_api)
    assert flashes(client.get(resp.headers["Location"])) == [
        f"Logged in with WeChat as {NICKNAME}."]

    chinese = browser_in(wechat_site)
    register(chinese, "carol", "carol's password")
    chinese.get("/")  # the welcome message
    resp = scan(wechat_api, chinese, start_link(chinese, next="/account"),
                openid=OPENID_2, unionid=UNIONID_2, nickname="Carol")
    assert resp.headers["Location"] == "/account"
    page = chinese.get("/account")
    assert flashes(page) == ["微信账号“Carol”已绑定到你的账号，以后可以用它登录。"]
    assert 'href="/account/unlink/wechat"' in page.get_data(as_text=True)

    confirm = chinese.get("/account/unlink/wechat").get_data(as_text=True)
    token = CSRF.search(confirm).group(1)
    resp = chinese.post("/auth/wechat/unlink", data={"csrf_token": token, "next": "/account"})
    assert resp.headers["Location"] == "/account"
    page = chinese.get("/account")
    assert flashes(page) == ["微信账号“Carol”已与你的账号解绑。"]
    assert 'class="identity"' not in page.get_data(as_text=True)


def test_a_message_after_binding_an_existing_account(make_site: t.Callable[..., Flask],
                                                     wechat_api: t.Any) -> None:
    site = make_site(WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET,
                     WECHAT_QR_ASSOCIATION="ask_binding")
    register(site.test_client())
    client = browser_in(site)
    resp = login_with_wechat(client, wechat_api)
    assert resp.headers["Location"] == "/auth/bind"
    _html, token = bind_page(client)
    resp = bind_as(client, token, "alice", "correct horse")
    assert resp.status_code == 302
    assert flashes(client.get(resp.headers["Location"])) == [
        f"微信账号“{NICKNAME}”已绑定到你的账号。已登录：alice。"]
    # One message per action: nothing is left for the next page.
    assert flashes(client.get("/")) == []


def test_unlink_asks_first(wechat_site: Flask, wechat_api: t.Any) -> None:
    """The account page only links to a confirmation page; that page's form is the one
    that posts to the extension's unlink route, with the CSRF token, back to the account."""
    client = _user_with_wechat(wechat_site, wechat_api)
    account = client.get("/account").get_data(as_text=True)
    assert "/auth/wechat/unlink" not in account
    assert 'class="button unlink-wechat" data-connection="wechat"' in account

    confirm = client.get("/account/unlink/wechat")
    assert confirm.status_code == 200
    forms = find_tags(confirm.get_data(as_text=True), "form")
    assert [(f["method"], f["action"]) for f in forms if "unlink-form" in (f.get("class") or "")] \
        == [("post", "/auth/wechat/unlink")]
    inputs = {tag["name"]: tag["value"] for tag in find_tags(confirm.get_data(as_text=True),
                                                              "input")}
    assert inputs["next"] == "/account" and inputs["csrf_token"]
    assert "解绑微信？" in confirm.get_data(as_text=True)
    assert client.get("/api/me").json["identities"]  # nothing unlinked yet

    missing = client.get("/account/unlink/shop")
    assert missing.status_code == 404
    assert "你的账号没有绑定这种微信账号。" in missing.get_data(as_text=True)
    # An identity of a connection since removed from the settings: a 404 page, not a 500.
    import sqlalchemy as sa

    with wechat_site.app_context():
        identities = db.metadata.tables["wechat_qr_identity"]
        db.session.execute(sa.update(identities).values(connection="old-shop"))
        db.session.commit()
    assert client.get("/account/unlink/old-shop").status_code == 404
    assert wechat_site.test_client().get("/account/unlink/wechat").headers["Location"] == (
        "/login?next=%2Faccount%2Funlink%2Fwechat")


def test_error_pages_in_the_visitors_language(wechat_site: Flask) -> None:
    zh = browser_in(wechat_site).get("/no-such-page")
    assert zh.status_code == 404
    assert "页面不存在" in zh.get_data(as_text=True)
    assert 'class="brand"' in zh.get_data(as_text=True)
    en = browser_in(wechat_site, None).get("/no-such-page")
    assert "Page not found" in en.get_data(as_text=True)
    assert browser_in(wechat_site).post("/").status_code == 405
    # The extension's routes keep their own pages (in the same language).
    forged = browser_in(wechat_site).get("/auth/wechat/callback",
                                         query_string={"state": "forged", "code": "x"})
    assert forged.status_code == 400
    assert "登录链接已失效" in forged.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/", "/login", "/register", "/account"])
def test_the_sites_own_pages_cannot_be_framed_by_other_sites(site: Flask, path: str) -> None:
    """Same-site clickjacking of the unlink confirmation and the account forms."""
    resp = site.test_client().get(path)
    assert resp.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert "frame-ancestors 'self'" in resp.headers["Content-Security-Policy"]
