"""Linking and unlinking WeChat from a logged-in session, login-only mode, profile sync,
and the same new identity arriving twice at once; all through the real routes."""

from __future__ import annotations

import re
import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import flask_login
import pytest
from support import (
    APP_ID,
    AVATAR,
    NICKNAME,
    OPEN,
    OPENID,
    OPENID_2,
    OPENID_B,
    TOKEN_PATH,
    UNIONID,
    UNIONID_2,
    USERINFO_PATH,
    add_user,
    all_identities,
    all_users,
    api_paths,
    csrf_token_of,
    error_name,
    finish_login,
    link_identity,
    log_in,
    logged_in_user_id,
    login_with_wechat,
    recording,
    start_login,
    two_connections,
    with_csrf_token_route,
)

from flask_wechat_qr.adapter import AccountAdapter


def host_app(make_app: t.Callable[..., t.Any], **config: t.Any) -> t.Any:
    """The test host plus what an account page needs: a CSRF token and a logout."""
    app = with_csrf_token_route(make_app(**config))

    def logout() -> str:
        flask_login.logout_user()
        return "bye"

    app.add_url_rule("/logout", "logout", logout)
    return app


def start_link(client: t.Any, connection: str = "wechat", **params: t.Any) -> str:
    resp = client.get(f"/auth/{connection}/link", query_string=params)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    match = re.search(r"[?&]state=([A-Za-z0-9]+)", resp.headers["Location"])
    assert match, resp.headers["Location"]
    return match.group(1)


def scan(api: t.Any, client: t.Any, state: str, *, openid: str = OPENID,
         unionid: str | None = UNIONID, nickname: str = NICKNAME,
         connection: str = "wechat") -> t.Any:
    """WeChat calls back after the person scanned and confirmed, as ``openid``."""
    api.mock.reset()
    api.token(openid=openid, unionid=unionid)
    api.userinfo(openid=openid, unionid=unionid, nickname=nickname)
    return finish_login(client, state, connection=connection)


def rows(app: t.Any) -> list[tuple[str, str, str]]:
    return [(i.connection, i.openid, i.user_id) for i in all_identities(app)]


# --- link ---------------------------------------------------------------------------------


def test_link_needs_a_logged_in_user(make_app: t.Any) -> None:
    app = host_app(make_app)
    client = app.test_client()
    resp = client.get("/auth/wechat/link")
    assert resp.status_code == 401
    assert error_name(resp) == "NotLoggedIn"
    assert "Log in first" in resp.get_data(as_text=True)
    assert "Location" not in resp.headers


def test_link_unknown_connection_is_404(make_app: t.Any) -> None:
    app = host_app(make_app)
    client = app.test_client()
    log_in(client, add_user(app, username="alice", password="pw"))
    assert client.get("/auth/nope/link").status_code == 404


def test_link_attaches_the_wechat_to_the_logged_in_user(make_app: t.Any,
                                                        wechat_api: t.Any) -> None:
    app = host_app(make_app)
    alice = add_user(app, username="alice", nickname="Alice", password="pw")
    bob = add_user(app, username="bob", password="pw")
    client = app.test_client()
    log_in(client, alice)

    resp = client.get("/auth/wechat/link", query_string={"next": "/account"})
    assert resp.status_code == 302
    location = urlsplit(resp.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == (
        f"{OPEN}/connect/qrconnect")
    query = parse_qs(location.query)
    assert query["appid"] == [APP_ID]
    assert query["scope"] == ["snsapi_login"]
    assert re.fullmatch(r"[A-Za-z0-9]{32}", query["state"][0])
    assert "next" not in location.query and "account" not in location.query

    with recording(app, "identity_linked", "user_created", "login_succeeded") as events:
        resp = scan(wechat_api, client, query["state"][0])
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/account"
    assert [u.id for u in all_users(app)] == [alice, bob]  # no user created
    (identity,) = all_identities(app)
    assert (identity.connection, identity.openid, identity.unionid, identity.user_id) == (
        "wechat", OPENID, UNIONID, str(alice))
    assert (identity.nickname, identity.avatar_url) == (NICKNAME, AVATAR)
    # Linking is not a login: alice stays logged in and keeps her own name.
    assert logged_in_user_id(client) == str(alice)
    assert all_users(app)[0].nickname == "Alice"
    assert [(name, kw["via"], kw["user_id"], kw["openid"]) for name, kw in events] == [
        ("identity_linked", "link", alice, OPENID)]
    assert events[0][1]["connection"].identifier == "wechat"

    # The linked WeChat now logs in as alice.
    other = app.test_client()
    resp = login_with_wechat(other, wechat_api)
    assert resp.status_code == 302
    assert logged_in_user_id(other) == str(alice)
    assert [u.id for u in all_users(app)] == [alice, bob]


def test_link_without_next_lands_on_the_post_login_url(make_app: t.Any,
                                                       wechat_api: t.Any) -> None:
    app = host_app(make_app, WECHAT_QR_POST_LOGIN_URL="/account")
    alice = add_user(app, username="alice", password="pw")
    client = app.test_client()
    log_in(client, alice)
    for next_url in (None, "https://evil.example/steal", "//evil.example"):
        params = {"next": next_url} if next_url else {}
        state = start_link(client, **params)
        resp = scan(wechat_api, client, state)
        assert resp.status_code == 302
        assert resp.headers["Location"] == "/account"
    assert rows(app) == [("wechat", OPENID, str(alice))]


@pytest.mark.parametrize("config", [
    {"WECHAT_QR_LOGIN_ONLY": True},
    {"WECHAT_QR_ASSOCIATION": "ask_binding"},
    {"WECHAT_QR_ASSOCIATION": "ask_binding", "WECHAT_QR_LOGIN_ONLY": True},
    {"WECHAT_QR_ASSOCIATION": "field_matching"},
])
def test_link_works_in_every_mode(make_app: t.Any, wechat_api: t.Any,
                                  config: dict[str, t.Any]) -> None:
    """Login-only sites tell people to link from their account page: that must work."""
    app = host_app(make_app, **config)
    alice = add_user(app, username="alice", password="pw")
    client = app.test_client()
    log_in(client, alice)
    resp = scan(wechat_api, client, start_link(client, next="/account"))
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/account"
    assert rows(app) == [("wechat", OPENID, str(alice))]
    assert [u.id for u in all_users(app)] == [alice]


def test_linking_a_wechat_of_another_user_is_refused(make_app: t.Any,
                                                     wechat_api: t.Any) -> None:
    app = host_app(make_app)
    alice = add_user(app, username="alice", password="pw")
    bob = add_user(app, username="bob", password="pw")
    link_identity(app, bob)
    client = app.test_client()
    log_in(client, alice)
    state = start_link(client, next="/account")
    with recording(app, "identity_linked", "identity_unlinked") as events:
        resp = scan(wechat_api, client, state)
    assert resp.status_code == 409
    assert error_name(resp) == "AlreadyLinked"
    assert "linked to another account" in resp.get_data(as_text=True)
    assert events == []
    assert rows(app) == [("wechat", OPENID, str(bob))]
    assert logged_in_user_id(client) == str(alice)
    assert [u.id for u in all_users(app)] == [alice, bob]


def test_a_second_wechat_on_the_same_connection_is_refused(make_app: t.Any,
                                                           wechat_api: t.Any) -> None:
    app = host_app(make_app)
    alice = add_user(app, username="alice", password="pw")
    link_identity(app, alice, openid=OPENID_2, unionid=UNIONID_2)
    client = app.test_client()
    log_in(client, alice)
    state = start_link(client)
    with recording(app, "identity_linked") as events:
        resp = scan(wechat_api, client, state)
    assert resp.status_code == 409
    assert error_name(resp) == "ConnectionAlreadyLinked"
    assert "already has a WeChat account linked" in resp.get_data(as_text=True)
    assert events == []
    assert rows(app) == [("wechat", OPENID_2, str(alice))]


def test_relinking_the_same_wechat_changes_nothing(make_app: t.Any, wechat_api: t.Any) -> None:
    app = host_app(make_app)
    alice = add_user(app, username="alice", password="pw")
    link_identity(app, alice)
    client = app.test_client()
    log_in(client, alice)
    state = start_link(client, next="/account")
    with recording(app, "identity_linked") as events:
        resp = scan(wechat_api, client, state)
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/account"
    assert events == []
    assert rows(app) == [("wechat", OPENID, str(alice))]
    assert api_paths(wechat_api) == [TOKEN_PATH]


def test_link_on_a_second_connection(make_app: t.Any, wechat_api: t.Any) -> None:
    app = host_app(make_app, **two_connections())
    alice = add_user(app, username="alice", password="pw")
    link_identity(app, alice)
    client = app.test_client()
    log_in(client, alice)
    state = start_link(client, connection="wechat-b")
    resp = scan(wechat_api, client, state, openid=OPENID_B, connection="wechat-b")
    assert resp.status_code == 302
    assert rows(app) == [("wechat", OPENID, str(alice)), ("wechat-b", OPENID_B, str(alice))]


def test_logging_out_before_the_callback_links_nothing(make_app: t.Any,
                                                       wechat_api: t.Any) -> None:
    app = host_app(make_app)
    alice = add_user(app, username="alice", password="pw")
    client = app.test_client()
    log_in(client, alice)
    state = start_link(client)
    assert client.get("/logout").status_code == 200
    assert logged_in_user_id(client) is None
    with recording(app, "identity_linked", "user_created") as events:
        resp = scan(wechat_api, client, state)
    assert resp.status_code == 401
    assert error_name(resp) == "NotLoggedIn"
    assert events == []
    assert all_identities(app) == []
    assert [u.id for u in all_users(app)] == [alice]
    assert logged_in_user_id(client) is None


def test_switching_user_before_the_callback_links_nothing(make_app: t.Any,
                                                          wechat_api: t.Any) -> None:
    app = host_app(make_app)
    alice = add_user(app, username="alice", password="pw")
    mallory = add_user(app, username="mallory", password="pw")
    client = app.test_client()
    log_in(client, alice)
    state = start_link(client)
    log_in(client, mallory)
    resp = scan(wechat_api, client, state)
    assert resp.status_code == 401
    assert all_identities(app) == []


def test_a_cancelled_link_changes_nothing(make_app: t.Any, wechat_api: t.Any) -> None:
    app = host_app(make_app)
    alice = add_user(app, username="alice", password="pw")
    client = app.test_client()
    log_in(client, alice)
    state = start_link(client)
    resp = client.get("/auth/wechat/callback", query_string={"state": state})
    assert resp.status_code == 200
    assert error_name(resp) == "LoginCancelled"
    assert all_identities(app) == []
    assert logged_in_user_id(client) == str(alice)


def test_a_link_state_is_single_use(make_app: t.Any, wechat_api: t.Any) -> None:
    app = host_app(make_app)
    alice = add_user(app, username="alice", password="pw")
    client = app.test_client()
    log_in(client, alice)
    state = start_link(client)
    assert scan(wechat_api, client, state).status_code == 302
    # The same browser coming back (a refresh, WeChat's double redirect): sent on, no
    # second code exchange (``scan`` resets the recorded calls), nothing linked twice.
    again = scan(wechat_api, client, state, openid=OPENID_2)
    assert again.status_code == 302
    assert len(wechat_api.mock.calls) == 0
    # Anyone else with the state: refused.
    stranger = app.test_client()
    log_in(stranger, add_user(app, username="mallory", password="pw2"))
    assert scan(wechat_api, stranger, state, openid=OPENID_2).status_code == 400
    assert rows(app) == [("wechat", OPENID, str(alice))]


# --- unlink -------------------------------------------------------------------------------


def test_unlink_removes_the_identity(make_app: t.Any, wechat_api: t.Any) -> None:
    app = host_app(make_app)
    alice = add_user(app, username="alice", password="pw")
    link_identity(app, alice)
    client = app.test_client()
    log_in(client, alice)
    with recording(app, "identity_unlinked", "identity_linked") as events:
        resp = client.post("/auth/wechat/unlink",
                           data={"csrf_token": csrf_token_of(client), "next": "/account"})
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/account"
    assert all_identities(app) == []
    assert [u.id for u in all_users(app)] == [alice]
    assert logged_in_user_id(client) == str(alice)
    assert [(name, kw["user_id"], kw["openid"]) for name, kw in events] == [
        ("identity_unlinked", alice, OPENID)]
    assert events[0][1]["connection"].identifier == "wechat"

    # The WeChat no longer opens alice's account: it is a stranger again (mode off).
    other = app.test_client()
    login_with_wechat(other, wechat_api)
    assert logged_in_user_id(other) not in (None, str(alice))
    assert len(all_users(app)) == 2


def test_unlink_lands_on_the_post_login_url_without_a_local_next(make_app: t.Any) -> None:
    app = host_app(make_app)
    alice = add_user(app, username="alice", password="pw")
    link_identity(app, alice)
    client = app.test_client()
    log_in(client, alice)
    resp = client.post("/auth/wechat/unlink",
                       data={"csrf_token": csrf_token_of(client), "next": "https://evil.example/"})
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/"


@pytest.mark.parametrize("token", [None, "", "forged-token-forged-token-forged-token"])
def test_unlink_needs_the_csrf_token(make_app: t.Any, token: str | None) -> None:
    app = host_app(make_app)
    alice = add_user(app, username="alice", password="pw")
    link_identity(app, alice)
    client = app.test_client()
    log_in(client, alice)
    csrf_token_of(client)  # the session has a token; the request does not carry it
    data = {} if token is None else {"csrf_token": token}
    with recording(app, "identity_unlinked") as events:
        resp = client.post("/auth/wechat/unlink", data=data)
    assert resp.status_code == 400
    assert error_name(resp) == "InvalidRequest"
    assert events == []
    assert rows(app) == [("wechat", OPENID, str(alice))]


def test_unlink_with_a_token_of_another_session_is_refused(make_app: t.Any) -> None:
    app = host_app(make_app)
    alice = add_user(app, username="alice", password="pw")
    link_identity(app, alice)
    attacker = app.test_client()
    client = app.test_client()
    log_in(client, alice)
    csrf_token_of(client)
    resp = client.post("/auth/wechat/unlink", data={"csrf_token": csrf_token_of(attacker)})
    assert resp.status_code == 400
    assert rows(app) == [("wechat", OPENID, str(alice))]


def test_unlink_is_post_only(make_app: t.Any) -> None:
    app = host_app(make_app)
    alice = add_user(app, username="alice", password="pw")
    link_identity(app, alice)
    client = app.test_client()
    log_in(client, alice)
    assert client.get("/auth/wechat/unlink").status_code == 405
    assert len(all_identities(app)) == 1


def test_unlinking_the_last_way_in_is_refused(make_app: t.Any, wechat_api: t.Any) -> None:
    app = host_app(make_app)
    client = app.test_client()
    login_with_wechat(client, wechat_api)  # a WeChat-only account: no password
    (user,) = all_users(app)
    assert user.password_hash is None
    with recording(app, "identity_unlinked") as events:
        resp = client.post("/auth/wechat/unlink", data={"csrf_token": csrf_token_of(client)})
    assert resp.status_code == 409
    assert error_name(resp) == "LastLoginMethod"
    assert "only way to log in" in resp.get_data(as_text=True)
    assert events == []
    assert rows(app) == [("wechat", OPENID, str(user.id))]
    assert logged_in_user_id(client) == str(user.id)


def test_unlink_with_a_password_works(make_app: t.Any, wechat_api: t.Any) -> None:
    app = host_app(make_app)
    client = app.test_client()
    login_with_wechat(client, wechat_api)
    (user,) = all_users(app)
    with app.app_context():  # the user sets a password on the account page
        from werkzeug.security import generate_password_hash

        app.db.session.get(app.User, user.id).password_hash = generate_password_hash("pw")
        app.db.session.commit()
    resp = client.post("/auth/wechat/unlink", data={"csrf_token": csrf_token_of(client)})
    assert resp.status_code == 302
    assert all_identities(app) == []


def test_unlink_with_another_identity_works(make_app: t.Any, wechat_api: t.Any) -> None:
    app = host_app(make_app, **two_connections())
    client = app.test_client()
    login_with_wechat(client, wechat_api)
    (user,) = all_users(app)
    state = start_link(client, connection="wechat-b")
    assert scan(wechat_api, client, state, openid=OPENID_B,
                connection="wechat-b").status_code == 302
    assert rows(app) == [("wechat", OPENID, str(user.id)), ("wechat-b", OPENID_B, str(user.id))]

    resp = client.post("/auth/wechat/unlink", data={"csrf_token": csrf_token_of(client)})
    assert resp.status_code == 302
    assert rows(app) == [("wechat-b", OPENID_B, str(user.id))]
    # Now B is the last way in.
    resp = client.post("/auth/wechat-b/unlink", data={"csrf_token": csrf_token_of(client)})
    assert resp.status_code == 409
    assert rows(app) == [("wechat-b", OPENID_B, str(user.id))]


def test_unlink_needs_a_logged_in_user(make_app: t.Any) -> None:
    app = host_app(make_app)
    alice = add_user(app, username="alice", password="pw")
    link_identity(app, alice)
    client = app.test_client()
    resp = client.post("/auth/wechat/unlink", data={"csrf_token": csrf_token_of(client)})
    assert resp.status_code == 401
    assert error_name(resp) == "NotLoggedIn"
    assert len(all_identities(app)) == 1


def test_unlink_without_an_identity_is_404(make_app: t.Any) -> None:
    app = host_app(make_app, **two_connections())
    alice = add_user(app, username="alice", password="pw")
    link_identity(app, alice, connection="wechat-b", openid=OPENID_B)
    client = app.test_client()
    log_in(client, alice)
    resp = client.post("/auth/wechat/unlink", data={"csrf_token": csrf_token_of(client)})
    assert resp.status_code == 404
    assert error_name(resp) == "NotLinked"
    assert rows(app) == [("wechat-b", OPENID_B, str(alice))]


def test_unlink_on_an_unknown_connection_is_404(make_app: t.Any) -> None:
    app = host_app(make_app)
    alice = add_user(app, username="alice", password="pw")
    link_identity(app, alice)
    client = app.test_client()
    log_in(client, alice)
    resp = client.post("/auth/nope/unlink", data={"csrf_token": csrf_token_of(client)})
    assert resp.status_code == 404
    assert error_name(resp) == "UnknownConnection"
    assert len(all_identities(app)) == 1


def test_unlink_only_removes_the_own_identity(make_app: t.Any) -> None:
    app = host_app(make_app)
    alice = add_user(app, username="alice", password="pw")
    bob = add_user(app, username="bob", password="pw")
    link_identity(app, alice, openid=OPENID_2, unionid=UNIONID_2)
    link_identity(app, bob)
    client = app.test_client()
    log_in(client, alice)
    assert client.post("/auth/wechat/unlink",
                       data={"csrf_token": csrf_token_of(client)}).status_code == 302
    assert rows(app) == [("wechat", OPENID, str(bob))]


# --- login only ---------------------------------------------------------------------------


@pytest.mark.parametrize("association", ["off", "field_matching"])
def test_login_only_refuses_before_asking_for_the_profile(make_app: t.Any, wechat_api: t.Any,
                                                          association: str) -> None:
    app = host_app(make_app, WECHAT_QR_LOGIN_ONLY=True, WECHAT_QR_ASSOCIATION=association)
    add_user(app, username="alice", password="pw")
    client = app.test_client()
    with recording(app, "login_refused", "user_created", "identity_linked",
                   "login_succeeded") as events:
        resp = login_with_wechat(client, wechat_api, next="/account")
    assert resp.status_code == 403
    assert error_name(resp) == "LoginRefused"
    page = resp.get_data(as_text=True)
    assert "No account is linked to this WeChat" in page
    assert "link WeChat from your account page" in page
    assert api_paths(wechat_api) == [TOKEN_PATH]  # no userinfo call
    assert [name for name, _ in events] == ["login_refused"]
    assert events[0][1]["openid"] == OPENID
    assert events[0][1]["connection"].identifier == "wechat"
    assert [u.username for u in all_users(app)] == ["alice"]
    assert all_identities(app) == []
    assert logged_in_user_id(client) is None


def test_login_only_field_matching_on_unionid_links_and_logs_in(make_app: t.Any,
                                                                wechat_api: t.Any) -> None:
    app = host_app(make_app, **two_connections(association="field_matching", login_only=True))
    alice = add_user(app, username="alice", nickname="Alice", password="pw")
    link_identity(app, alice, openid=OPENID, unionid=UNIONID, connection="wechat")
    client = app.test_client()
    with recording(app, "login_refused", "user_created", "identity_linked") as events:
        resp = login_with_wechat(client, wechat_api, openid=OPENID_B, connection="wechat-b",
                                 next="/account")
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/account"
    assert logged_in_user_id(client) == str(alice)
    assert rows(app) == [("wechat", OPENID, str(alice)), ("wechat-b", OPENID_B, str(alice))]
    assert [u.id for u in all_users(app)] == [alice]
    assert all_users(app)[0].nickname == "Alice"  # first_login: a matched user keeps it
    assert [(name, kw.get("via")) for name, kw in events] == [("identity_linked", "match")]


# --- profile sync -------------------------------------------------------------------------


@pytest.mark.parametrize("sync,user_first,user_later,identity_later,later_calls", [
    ("first_login", NICKNAME, NICKNAME, NICKNAME, [TOKEN_PATH]),
    ("each_login", NICKNAME, "李四✨", "李四✨", [TOKEN_PATH, USERINFO_PATH]),
    ("never", None, None, NICKNAME, [TOKEN_PATH]),
])
def test_profile_sync(make_app: t.Any, wechat_api: t.Any, sync: str, user_first: str | None,
                      user_later: str | None, identity_later: str,
                      later_calls: list[str]) -> None:
    config = {} if sync == "first_login" else {"WECHAT_QR_PROFILE_SYNC": sync}
    app = host_app(make_app, **config)
    client = app.test_client()
    assert login_with_wechat(client, wechat_api).status_code == 302
    (user,) = all_users(app)
    assert user.nickname == user_first
    assert user.avatar_url == (AVATAR if user_first else None)
    (identity,) = all_identities(app)
    # The identity row keeps the profile whatever the user gets.
    assert (identity.nickname, identity.avatar_url) == (NICKNAME, AVATAR)

    assert login_with_wechat(app.test_client(), wechat_api,
                             nickname="李四✨").status_code == 302
    assert api_paths(wechat_api) == later_calls
    (user,) = all_users(app)
    assert user.nickname == user_later
    (identity,) = all_identities(app)
    # Only a login that fetched the profile refreshes the identity row.
    assert identity.nickname == identity_later
    assert identity.profile["nickname"] == identity_later


def test_each_login_never_blanks_the_user_with_an_empty_profile(make_app: t.Any,
                                                               wechat_api: t.Any) -> None:
    app = host_app(make_app, WECHAT_QR_PROFILE_SYNC="each_login")
    client = app.test_client()
    login_with_wechat(client, wechat_api)
    login_with_wechat(client, wechat_api, nickname="")
    (user,) = all_users(app)
    assert (user.nickname, user.avatar_url) == (NICKNAME, AVATAR)
    (identity,) = all_identities(app)
    assert identity.nickname == NICKNAME


def test_each_login_syncs_onto_a_matched_user(make_app: t.Any, wechat_api: t.Any) -> None:
    app = host_app(make_app, **two_connections(association="field_matching",
                                                profile_sync="each_login"))
    alice = add_user(app, username="alice", nickname="Alice", password="pw")
    link_identity(app, alice)
    login_with_wechat(app.test_client(), wechat_api, openid=OPENID_B, connection="wechat-b")
    (user,) = all_users(app)
    assert (user.id, user.nickname, user.avatar_url) == (alice, NICKNAME, AVATAR)


def test_linking_never_rewrites_the_users_profile(make_app: t.Any, wechat_api: t.Any) -> None:
    app = host_app(make_app, WECHAT_QR_PROFILE_SYNC="each_login")
    alice = add_user(app, username="alice", nickname="Alice", password="pw")
    client = app.test_client()
    log_in(client, alice)
    assert scan(wechat_api, client, start_link(client)).status_code == 302
    assert all_users(app)[0].nickname == "Alice"
    assert all_identities(app)[0].nickname == NICKNAME


# --- the same new identity twice at once ---------------------------------------------------


def test_two_first_logins_at_once_make_one_user(make_app: t.Any, wechat_api: t.Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    app = host_app(make_app)
    browsers = [app.test_client(), app.test_client()]
    states = [start_login(b) for b in browsers]
    wechat_api.token()
    wechat_api.userinfo()

    barrier = threading.Barrier(2, timeout=10)
    real_create_user = AccountAdapter.create_user
    created = []

    def create_user_together(self: t.Any, connection: t.Any, profile: t.Any) -> t.Any:
        # Both requests have looked the identity up and found nothing.
        created.append(threading.get_ident())
        barrier.wait()
        return real_create_user(self, connection, profile)

    monkeypatch.setattr(AccountAdapter, "create_user", create_user_together)
    with recording(app, "user_created") as events, ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(finish_login, b, s) for b, s in zip(browsers, states, strict=True)]
        responses = [f.result(timeout=60) for f in futures]
    assert [r.status_code for r in responses] == [302, 302]
    assert len(created) == 2 and len(set(created)) == 2  # both really raced
    (user,) = all_users(app)
    assert rows(app) == [("wechat", OPENID, str(user.id))]
    assert [logged_in_user_id(b) for b in browsers] == [str(user.id)] * 2
    assert len(events) == 1  # one user_created, for the user that exists
    assert events[0][1]["user_id"] == user.id


def test_unlink_works_with_flask_wtf_csrf_protect(make_app: t.Any) -> None:
    from flask_wtf.csrf import CSRFProtect

    app = host_app(make_app)
    CSRFProtect(app)
    alice = add_user(app, username="alice", password="pw")
    link_identity(app, alice)
    client = app.test_client()
    log_in(client, alice)
    token = csrf_token_of(client)
    assert client.post("/auth/wechat/unlink", data={}).status_code == 400
    assert len(all_identities(app)) == 1
    assert client.post("/auth/wechat/unlink", data={"csrf_token": token}).status_code == 302
    assert all_identities(app) == []
