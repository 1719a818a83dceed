"""Ask binding through the real routes: an unknown WeChat account waits server-side until
its owner binds it to an existing account (proven by password) or creates a new one."""

from __future__ import annotations

import json
import re
import threading
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor

import pytest
from support import (
    AVATAR,
    NICKNAME,
    OPENID,
    OPENID_2,
    TOKEN_PATH,
    UNIONID,
    UNIONID_2,
    USERINFO_PATH,
    WECHAT_PHONE,
    Clock,
    Database,
    add_user,
    all_identities,
    all_users,
    answer,
    api_paths,
    arrive,
    ask_app,
    attempt_rows,
    bind_as,
    bind_page,
    csrf_token_of,
    error_name,
    find_tags,
    link_identity,
    log_in,
    logged_in_user_id,
    login_with_wechat,
    open_qr_page,
    pending_rows,
    poll,
    recording,
    retry_links,
    submit,
)

from flask_wechat_qr import AccountAdapter, signals

OPENID_3 = "ohS-VwCCCCCClplngwybJ3Z-ZHr3"
UNIONID_3 = "ohHrhwCCCCCCunEW0eKTS45vS5Q3"

WRONG = "Wrong username or password."


def browser(app: t.Any, address: str = "127.0.0.1") -> t.Any:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def problem_of(html: str) -> str:
    start = html.index('class="wechat-qr-problem"')
    return html[html.index(">", start) + 1:html.index("</p>", start)]


# --- arriving: the choice is parked server-side ------------------------------------------


def test_unknown_wechat_is_sent_to_the_bind_page_and_only_a_pending_row_is_written(
        make_app: t.Any, wechat_api: t.Any) -> None:
    app = ask_app(make_app)
    client = app.test_client()
    resp = arrive(client, wechat_api, next="/account")
    location = resp.headers["Location"]
    for secret in (OPENID, UNIONID, "code", "state", "0816Ab"):
        assert secret not in location
    # The profile was needed to show the page.
    assert api_paths(wechat_api) == [TOKEN_PATH, USERINFO_PATH]

    assert all_users(app) == []
    assert all_identities(app) == []
    assert attempt_rows(app) == []
    (pending,) = pending_rows(app)
    assert (pending.connection, pending.openid, pending.unionid) == ("wechat", OPENID, UNIONID)
    assert (pending.nickname, pending.avatar_url) == (NICKNAME, AVATAR)
    assert pending.next_url == "/account"
    assert pending.used is False
    assert pending.expires_at - pending.created_at == 600

    # The browser holds only the pending binding's opaque id, nothing about the person.
    with client.session_transaction() as sess:
        assert pending.id in dict(sess).values()
        stored = json.dumps(dict(sess), ensure_ascii=False)
    for value in (OPENID, UNIONID, NICKNAME, AVATAR):
        assert value not in stored
    assert logged_in_user_id(client) is None


def test_bind_page_shows_the_wechat_profile_and_both_forms(make_app: t.Any,
                                                           wechat_api: t.Any) -> None:
    app = ask_app(make_app)
    client = app.test_client()
    arrive(client, wechat_api)
    resp = client.get("/auth/bind")
    assert resp.status_code == 200
    assert resp.headers["Cache-Control"] == "no-store"
    html = resp.get_data(as_text=True)
    assert NICKNAME in html
    assert any(img.get("src") == AVATAR for img in find_tags(html, "img"))

    forms = find_tags(html, "form")
    assert [f.get("method") for f in forms] == ["post", "post"]
    # No action attribute: both forms post back to /auth/bind itself.
    assert all(f.get("action") in (None, "", "/auth/bind") for f in forms)
    inputs = find_tags(html, "input")
    names = [i.get("name") for i in inputs]
    assert names.count("csrf_token") == 2
    assert "username" in names
    assert [i.get("type") for i in inputs if i.get("name") == "password"] == ["password"]
    actions = [i.get("value") for i in inputs if i.get("name") == "action"]
    assert actions == ["bind", "create"]
    assert "Create a new account" in html
    for secret in (OPENID, UNIONID):
        assert secret not in html
    assert all_users(app) == []


def test_bind_page_escapes_the_nickname(make_app: t.Any, wechat_api: t.Any) -> None:
    app = ask_app(make_app)
    client = app.test_client()
    arrive(client, wechat_api, nickname='<script>alert("x")</script>')
    html, _token = bind_page(client)
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert" in html


def test_a_known_wechat_logs_straight_in(make_app: t.Any, wechat_api: t.Any) -> None:
    app = ask_app(make_app)
    user_id = add_user(app, username="alice", password="alice-pw")
    link_identity(app, user_id)
    client = app.test_client()
    resp = login_with_wechat(client, wechat_api, next="/account")
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/account"
    assert logged_in_user_id(client) == str(user_id)
    assert pending_rows(app) == []
    assert api_paths(wechat_api) == [TOKEN_PATH]


# --- create a new account --------------------------------------------------------------


def test_create_makes_one_user_and_identity_and_lands_on_next(make_app: t.Any,
                                                              wechat_api: t.Any) -> None:
    app = ask_app(make_app)
    add_user(app, username="alice", password="alice-pw")
    client = app.test_client()
    arrive(client, wechat_api, next="/account?tab=1")
    _html, token = bind_page(client)
    with recording(app, "user_created", "identity_linked", "login_succeeded") as events:
        resp = submit(client, token, action="create")
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/account?tab=1"

    users = all_users(app)
    assert [u.username for u in users][0] == "alice"
    assert len(users) == 2
    new = users[1]
    assert (new.nickname, new.avatar_url, new.password_hash) == (NICKNAME, AVATAR, None)
    (identity,) = all_identities(app)
    assert (identity.connection, identity.openid, identity.unionid, identity.user_id) == (
        "wechat", OPENID, UNIONID, str(new.id))
    assert identity.nickname == NICKNAME
    assert identity.profile["headimgurl"] == AVATAR
    assert logged_in_user_id(client) == str(new.id)

    assert [name for name, _ in events] == ["user_created", "identity_linked", "login_succeeded"]
    assert events[1][1]["via"] == "signup"
    assert events[0][1]["user"] is events[1][1]["user"]
    assert events[2][1]["created_user"] is True
    assert events[2][1]["new_identity"] is True

    # The pending binding is spent and gone from the session; the WeChat logs straight in.
    (spent,) = pending_rows(app)
    assert spent.used is True
    with client.session_transaction() as sess:
        assert spent.id not in dict(sess).values()
    assert "You are logged in" in client.get("/auth/bind").get_data(as_text=True)
    assert submit(client, token, action="create").status_code == 400
    other = app.test_client()
    assert login_with_wechat(other, wechat_api).headers["Location"] == "/"
    assert logged_in_user_id(other) == str(new.id)
    assert len(all_users(app)) == 2


def test_create_without_next_lands_on_the_post_login_url(make_app: t.Any,
                                                         wechat_api: t.Any) -> None:
    app = ask_app(make_app, WECHAT_QR_POST_LOGIN_URL="/welcome")
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    resp = submit(client, token, action="create")
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/welcome"


def test_create_respects_profile_sync_never(make_app: t.Any, wechat_api: t.Any) -> None:
    app = ask_app(make_app, WECHAT_QR_PROFILE_SYNC="never")
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    assert submit(client, token, action="create").status_code == 302
    (user,) = all_users(app)
    assert (user.nickname, user.avatar_url) == (None, None)
    (identity,) = all_identities(app)
    assert (identity.nickname, identity.avatar_url) == (NICKNAME, AVATAR)


# --- bind to an existing account --------------------------------------------------------


def test_bind_with_the_right_password_links_that_user(make_app: t.Any,
                                                      wechat_api: t.Any) -> None:
    app = ask_app(make_app)
    alice = add_user(app, username="alice", nickname="Alice", password="alice-pw")
    bob = add_user(app, username="bob", nickname="Bob", password="bob-pw")
    client = app.test_client()
    arrive(client, wechat_api, next="/account")
    _html, token = bind_page(client)
    with recording(app, "user_created", "identity_linked", "binding_failed") as events:
        resp = bind_as(client, token, "alice", "alice-pw")
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/account"
    assert logged_in_user_id(client) == str(alice)

    assert [u.id for u in all_users(app)] == [alice, bob]
    (identity,) = all_identities(app)
    assert (identity.openid, identity.unionid, identity.user_id) == (OPENID, UNIONID, str(alice))
    assert identity.nickname == NICKNAME
    # first_login sync: an existing account keeps its own name.
    assert all_users(app)[0].nickname == "Alice"

    assert [name for name, _ in events] == ["identity_linked"]
    assert events[0][1]["via"] == "binding"
    assert str(events[0][1]["user"].id) == str(alice)

    # From now on this WeChat logs in as alice without asking.
    other = app.test_client()
    resp = login_with_wechat(other, wechat_api)
    assert resp.headers["Location"] == "/"
    assert logged_in_user_id(other) == str(alice)


def test_bind_with_each_login_sync_copies_the_profile(make_app: t.Any,
                                                      wechat_api: t.Any) -> None:
    app = ask_app(make_app, WECHAT_QR_PROFILE_SYNC="each_login")
    alice = add_user(app, username="alice", nickname="Alice", password="alice-pw")
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    assert bind_as(client, token, "alice", "alice-pw").status_code == 302
    (user,) = all_users(app)
    assert (user.id, user.nickname, user.avatar_url) == (alice, NICKNAME, AVATAR)


def test_the_proven_account_is_the_one_linked(make_app: t.Any, wechat_api: t.Any) -> None:
    """Re-authenticating as a different existing user links that user (Keycloak's test)."""
    app = ask_app(make_app)
    alice = add_user(app, username="alice", password="alice-pw")
    bob = add_user(app, username="bob", password="bob-pw")
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    # Bob's password does not open Alice's account ...
    resp = bind_as(client, token, "alice", "bob-pw")
    assert resp.status_code == 400
    assert all_identities(app) == []
    # ... it proves Bob, so Bob is linked, and Alice is untouched.
    resp = bind_as(client, token, "bob", "bob-pw")
    assert resp.status_code == 302
    assert logged_in_user_id(client) == str(bob)
    assert [(i.openid, i.user_id) for i in all_identities(app)] == [(OPENID, str(bob))]
    assert [u.id for u in all_users(app)] == [alice, bob]


def test_the_username_compares_as_the_sites_database_does(
        make_app: t.Any, wechat_api: t.Any, database: Database) -> None:
    """The bind form finds the account as the site's own login would: by the user table's
    comparison, exact on SQLite and PostgreSQL (ALICE is wrong credentials), case-blind
    under MariaDB's and MySQL's default collations (where ALICE logs in to the site as
    alice too)."""
    app, client, token = bind_page_of_two_users(make_app, wechat_api)
    with recording(app, "binding_failed", "identity_linked") as events:
        resp = bind_as(client, token, "ALICE", "alice-pw")
    if database.is_mysql:
        assert resp.status_code == 302
        (alice, _wechatonly) = all_users(app)
        assert [i.user_id for i in all_identities(app)] == [str(alice.id)]
    else:
        assert_wrong_credentials(app, client, resp, events, "ALICE")


@pytest.mark.parametrize("username,password", [
    ("alice", "not-alices-password"),
    ("nobody", "alice-pw"),
    ("", "alice-pw"),
    ("alice", ""),
    ("wechatonly", ""),
    ("wechatonly", "anything"),
])
def test_wrong_credentials_bind_nothing_and_say_only_that(
        make_app: t.Any, wechat_api: t.Any, username: str, password: str) -> None:
    app, client, token = bind_page_of_two_users(make_app, wechat_api)
    with recording(app, "binding_failed", "identity_linked") as events:
        resp = bind_as(client, token, username, password)
    assert_wrong_credentials(app, client, resp, events, username)


def bind_page_of_two_users(make_app: t.Any, wechat_api: t.Any) -> tuple[t.Any, t.Any, str]:
    """An ask-binding site with alice (password alice-pw) and a user without a password,
    and a browser on its bind page: the app, the browser and the form's CSRF token."""
    app = ask_app(make_app)
    add_user(app, username="alice", password="alice-pw")
    add_user(app, username="wechatonly")  # no local password: cannot be proven by one
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    return app, client, token


def assert_wrong_credentials(app: t.Any, client: t.Any, resp: t.Any,
                             events: list[t.Any], username: str) -> None:
    """The bind page again, saying only "wrong account or password"; nothing bound, the
    attempt counted and told to ``binding_failed``."""
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    assert problem_of(html) == WRONG
    for leak in ("does not exist", "unknown", "not found", "no such", "incorrect password"):
        assert leak not in html.lower()
    # Still the bind page, ready for another try.
    assert NICKNAME in html
    assert [i.get("value") for i in find_tags(html, "input") if i.get("name") == "action"] == [
        "bind", "create"]
    # The message names the fields it is about, and the password field (the username kept)
    # has the focus for the next try (an accessibility hunt, session 36).
    fields = {i["name"]: i for i in find_tags(html, "input")
              if i.get("name") in ("username", "password")}
    assert {name: field.get("aria-describedby") for name, field in fields.items()} == {
        "username": "wechat-qr-problem", "password": "wechat-qr-problem"}
    assert ("autofocus" in fields["password"]) == bool(fields["username"].get("value"))

    assert all_identities(app) == []
    assert len(all_users(app)) == 2
    assert logged_in_user_id(client) is None
    assert [p.used for p in pending_rows(app)] == [False]
    assert [(a.address, a.binding_id) for a in attempt_rows(app)] == [
        ("127.0.0.1", pending_rows(app)[0].id)]
    assert events == [("binding_failed", {"connection": events[0][1]["connection"],
                                          "reason": "wrong_credentials",
                                          "address": "127.0.0.1",
                                          "username": username})]
    assert events[0][1]["connection"].identifier == "wechat"


def test_unknown_username_and_wrong_password_give_the_same_page(make_app: t.Any,
                                                                wechat_api: t.Any) -> None:
    app = ask_app(make_app)
    add_user(app, username="alice", password="alice-pw")
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    wrong_password = bind_as(client, token, "alice", "guess")
    unknown_user = bind_as(client, token, "alicf", "guess")
    assert wrong_password.status_code == unknown_user.status_code == 400
    # Identical but for the echoed username (same length on purpose).
    assert (wrong_password.get_data(as_text=True).replace('value="alice"', 'value="X"')
            == unknown_user.get_data(as_text=True).replace('value="alicf"', 'value="X"'))


def test_the_password_is_never_echoed(make_app: t.Any, wechat_api: t.Any) -> None:
    app = ask_app(make_app)
    add_user(app, username="alice", password="alice-pw")
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    resp = bind_as(client, token, "alice", "Pa55-typed-by-the-user")
    assert resp.status_code == 400
    assert "Pa55-typed-by-the-user" not in resp.get_data(as_text=True)


@pytest.mark.parametrize("action", [None, "", "delete", "Create", "bind "])
def test_unknown_action_is_refused(make_app: t.Any, wechat_api: t.Any,
                                   action: str | None) -> None:
    app = ask_app(make_app)
    add_user(app, username="alice", password="alice-pw")
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    form = {"username": "alice", "password": "alice-pw"}
    if action is not None:
        form["action"] = action
    resp = submit(client, token, **form)
    assert resp.status_code == 400
    assert error_name(resp) == "InvalidRequest"
    assert all_identities(app) == []
    assert len(all_users(app)) == 1
    assert [p.used for p in pending_rows(app)] == [False]


# --- single use, expiry, one browser ----------------------------------------------------


@pytest.mark.parametrize("first", ["create", "bind"])
@pytest.mark.parametrize("replay", ["create", "bind"])
def test_a_used_pending_binding_cannot_be_replayed(make_app: t.Any, wechat_api: t.Any,
                                                   first: str, replay: str) -> None:
    app = ask_app(make_app)
    add_user(app, username="alice", password="alice-pw")
    add_user(app, username="bob", password="bob-pw")
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    saved = client.get_cookie("session").value
    resp = submit(client, token, action=first, username="alice", password="alice-pw")
    assert resp.status_code == 302
    users_after = [u.id for u in all_users(app)]
    identities_after = [(i.openid, i.user_id) for i in all_identities(app)]
    assert len(identities_after) == 1

    # The browser (or whoever copied its cookie) sends the old session again.
    for replayer in (client, app.test_client()):
        replayer.set_cookie("session", saved)
        with recording(app, "identity_linked", "user_created") as events:
            resp = submit(replayer, token, action=replay, username="bob", password="bob-pw")
        assert resp.status_code == 400
        assert error_name(resp) == "BindingExpired"
        assert "expired" in resp.get_data(as_text=True)
        assert events == []
        assert replayer.get("/auth/bind").status_code == 400
    assert [u.id for u in all_users(app)] == users_after
    assert [(i.openid, i.user_id) for i in all_identities(app)] == identities_after


@pytest.mark.parametrize("action", ["bind", "create"])
def test_the_bind_page_after_the_choice_says_the_login_is_done(make_app: t.Any,
                                                               wechat_api: t.Any,
                                                               action: str) -> None:
    """Back after binding (or creating) asks for the bind page again: the logged-in person
    is told the login is finished and where to go on, not that it expired."""
    app = ask_app(make_app, WECHAT_QR_POST_LOGIN_URL="/dashboard")
    alice = add_user(app, username="alice", password="alice-pw")
    client = app.test_client()
    arrive(client, wechat_api, next="/account")
    _html, token = bind_page(client)
    assert submit(client, token, action=action, username="alice",
                  password="alice-pw").status_code == 302
    user_id = logged_in_user_id(client)
    assert user_id is not None and (user_id == str(alice)) is (action == "bind")

    resp = client.get("/auth/bind")
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert "You are logged in" in html and "expired" not in html
    assert [a["href"] for a in find_tags(html, "a") if "wechat-qr-button" in a.get("class", "")
            ] == ["/dashboard"]
    assert not [i for i in find_tags(html, "input") if i.get("name") == "action"]
    assert resp.headers["Cache-Control"].startswith("no-store")
    assert logged_in_user_id(client) == user_id

    # A form sent again is not done again: it is refused as before.
    with recording(app, "identity_linked", "user_created") as events:
        resp = submit(client, token, action=action, username="alice", password="alice-pw")
    assert resp.status_code == 400 and error_name(resp) == "BindingExpired"
    assert events == []
    assert len(all_identities(app)) == 1


def test_the_bind_page_of_nobody_logged_in_still_says_expired(make_app: t.Any) -> None:
    app = ask_app(make_app)
    resp = app.test_client().get("/auth/bind")
    assert resp.status_code == 400 and error_name(resp) == "BindingExpired"


def test_a_logged_in_browser_whose_binding_expired_is_told_so(make_app: t.Any,
                                                               wechat_api: t.Any,
                                                               clock: Clock) -> None:
    """Logged in as alice, a WeChat login that must be bound, left to expire: it was never
    bound, and the page says it expired, not that the login is done. The same for a
    logged-in browser that never scanned, and for one whose binding is done but that
    has started another that expired."""
    app = ask_app(make_app, WECHAT_QR_BIND_TTL=120)
    alice = add_user(app, username="alice", password="alice-pw")
    never_scanned = app.test_client()
    log_in(never_scanned, alice)
    assert error_name(never_scanned.get("/auth/bind")) == "BindingExpired"

    client = app.test_client()
    log_in(client, alice)
    arrive(client, wechat_api)
    clock.advance(121)
    resp = client.get("/auth/bind")
    assert resp.status_code == 400 and error_name(resp) == "BindingExpired"
    assert logged_in_user_id(client) == str(alice)

    done = app.test_client()
    arrive(done, wechat_api, openid=OPENID_2, unionid=UNIONID_2)
    _html, token = bind_page(done)
    assert bind_as(done, token, "alice", "alice-pw").status_code == 302
    assert "You are logged in" in done.get("/auth/bind").get_data(as_text=True)
    arrive(done, wechat_api, openid=OPENID_3, unionid=UNIONID_3)
    clock.advance(121)
    assert error_name(done.get("/auth/bind")) == "BindingExpired"


def test_an_expired_binding_offers_to_log_in_with_wechat_again(make_app: t.Any,
                                                               wechat_api: t.Any,
                                                               clock: Clock) -> None:
    """The page says "Log in with WeChat again"; before, it offered only "Back to the
    site" (the expired binding no longer says its connection). With one connection there
    is only one to log in with again."""
    app = ask_app(make_app, WECHAT_QR_BIND_TTL=120)
    client = app.test_client()
    arrive(client, wechat_api)
    clock.advance(121)
    resp = client.get("/auth/bind")
    assert resp.status_code == 400 and error_name(resp) == "BindingExpired"
    html = resp.get_data(as_text=True)
    assert [a["href"] for a in find_tags(html, "a") if "wechat-qr-button" in a.get("class", "")
            ] == ["/auth/wechat/login"]


def test_an_expired_binding_offers_no_login_of_a_connection_that_is_off(
        make_app: t.Any) -> None:
    """A site's one connection whose AppSecret was taken away (its logins off: "not set
    up", 503): an expired binding's page offered "Try again" to that login all the same,
    a button to an error page, where a site of several connections offers no login of
    such a connection. Now neither does: "Back to the site" and the site's own login."""
    app = ask_app(make_app, WECHAT_QR_APP_SECRET="", WECHAT_QR_OTHER_LOGIN_URL="/login/password")
    client = app.test_client()
    assert client.get("/auth/wechat/login").status_code == 503  # the login is off
    resp = client.get("/auth/bind", headers={"Accept-Language": "en"})
    assert resp.status_code == 400 and error_name(resp) == "BindingExpired"
    html = resp.get_data(as_text=True)
    assert [a["href"] for a in find_tags(html, "a") if "wechat-qr-button" in a.get("class", "")
            ] == ["/login/password"]
    assert "Try again" not in html


def test_an_expired_binding_on_a_site_of_several_connections_offers_each_login(
        make_app: t.Any, wechat_api: t.Any, clock: Clock) -> None:
    """With several connections the expired binding no longer says which one it was, and
    the page offered only "Back to the site" (found on a two-connection host). It now
    offers a WeChat login of each connection that can start one here (not one for a
    business callback URL: the business front end's state went with the binding), and
    the site's own login: the bind page was for people with an account."""
    from support import APP_ID_B, APP_SECRET, BUSINESS_URL, ID_TOKEN_SECRET, two_connections

    config = two_connections(association="ask_binding")
    config["WECHAT_QR_CONNECTIONS"].append(
        {"connection": "shop", "display_name": "Shop", "app_id": "wx" + "3" * 16,
         "app_secret": APP_SECRET, "callback_url": BUSINESS_URL, "association": "ask_binding"})
    assert APP_ID_B != config["WECHAT_QR_CONNECTIONS"][2]["app_id"]
    app = ask_app(make_app, WECHAT_QR_BIND_TTL=120, WECHAT_QR_ID_TOKEN_SECRET=ID_TOKEN_SECRET,
                  WECHAT_QR_OTHER_LOGIN_URL="/login/password", **config)
    client = app.test_client()
    arrive(client, wechat_api, connection="wechat-b")
    clock.advance(121)
    resp = client.get("/auth/bind", headers={"Accept-Language": "en"})
    assert resp.status_code == 400 and error_name(resp) == "BindingExpired"
    html = resp.get_data(as_text=True)
    buttons = [(a["href"], a.get("target")) for a in find_tags(html, "a")
               if "wechat-qr-button" in (a.get("class") or "")]
    assert buttons == [("/auth/wechat/login", "_top"), ("/auth/wechat-b/login", "_top"),
                       ("/login/password", "_top")]
    assert "Log in with WeChat (B)" in html and "Try again" not in html
    chinese = client.get("/auth/bind", headers={"Accept-Language": "zh-CN"})
    assert "登录你的账号" in chinese.get_data(as_text=True)


def test_a_wrong_password_answer_turns_itself_into_a_visit_of_the_bind_page(
        make_app: t.Any, wechat_api: t.Any) -> None:
    """The answer to a POST puts itself in the browser's history as a visit (GET) of the
    bind page, so Back later asks for the page, not to send the password again."""
    app = ask_app(make_app)
    add_user(app, username="alice", password="alice-pw")
    client = app.test_client()
    arrive(client, wechat_api)
    html, token = bind_page(client)
    replace = "window.history.replaceState(null, \"\", window.location.href)"
    assert replace not in html
    resp = bind_as(client, token, "alice", "guess")
    assert resp.status_code == 400
    assert replace in resp.get_data(as_text=True)


def test_a_used_binding_cannot_relink_after_unlink(make_app: t.Any, wechat_api: t.Any) -> None:
    """A proof is spent even once the link it made is gone (Keycloak K7)."""
    app = ask_app(make_app)
    alice = add_user(app, username="alice", password="alice-pw")
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    saved = client.get_cookie("session").value
    assert bind_as(client, token, "alice", "alice-pw").status_code == 302
    unlink_token = client.get("/token").get_data(as_text=True)
    resp = client.post("/auth/wechat/unlink", data={"csrf_token": unlink_token})
    assert resp.status_code == 302
    assert all_identities(app) == []

    client.set_cookie("session", saved)
    assert bind_as(client, token, "alice", "alice-pw").status_code == 400
    assert submit(client, token, action="create").status_code == 400
    assert all_identities(app) == []
    assert [u.id for u in all_users(app)] == [alice]


def test_an_expired_pending_binding_is_refused(make_app: t.Any, wechat_api: t.Any,
                                               clock: Clock) -> None:
    app = ask_app(make_app, WECHAT_QR_BIND_TTL=120)
    add_user(app, username="alice", password="alice-pw")
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    clock.advance(119)
    assert client.get("/auth/bind").status_code == 200
    clock.advance(2)
    resp = client.get("/auth/bind")
    assert resp.status_code == 400
    assert error_name(resp) == "BindingExpired"
    for action in ("create", "bind"):
        resp = submit(client, token, action=action, username="alice", password="alice-pw")
        assert resp.status_code == 400
        assert error_name(resp) == "BindingExpired"
    assert all_identities(app) == []
    assert len(all_users(app)) == 1
    assert logged_in_user_id(client) is None


def test_default_ttl_is_ten_minutes(make_app: t.Any, wechat_api: t.Any, clock: Clock) -> None:
    app = ask_app(make_app)
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    clock.advance(601)
    assert submit(client, token, action="create").status_code == 400
    assert all_users(app) == []


def test_expired_bindings_are_purged_when_new_ones_start(make_app: t.Any, wechat_api: t.Any,
                                                         clock: Clock) -> None:
    app = ask_app(make_app)
    arrive(app.test_client(), wechat_api)
    clock.advance(601)
    arrive(app.test_client(), wechat_api, openid=OPENID_2, unionid=UNIONID_2)
    assert [p.openid for p in pending_rows(app)] == [OPENID_2]


def test_a_pending_binding_cannot_be_completed_in_another_browser(make_app: t.Any,
                                                                  wechat_api: t.Any) -> None:
    app = ask_app(make_app)
    alice = add_user(app, username="alice", password="alice-pw")
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)

    other = app.test_client()
    assert other.get("/auth/bind").status_code == 400
    other_token = other.get("/token").get_data(as_text=True)
    for form in ({"action": "create"},
                 {"action": "bind", "username": "alice", "password": "alice-pw"}):
        for csrf in (token, other_token):
            resp = submit(other, csrf, **form)
            assert resp.status_code == 400
            assert error_name(resp) == "BindingExpired"
    assert all_identities(app) == []
    assert [u.id for u in all_users(app)] == [alice]
    assert logged_in_user_id(other) is None

    # The browser that started it can still finish.
    assert bind_as(client, token, "alice", "alice-pw").status_code == 302
    assert [i.user_id for i in all_identities(app)] == [str(alice)]


def test_a_later_wechat_login_replaces_the_pending_binding(make_app: t.Any,
                                                           wechat_api: t.Any) -> None:
    app = ask_app(make_app)
    client = app.test_client()
    arrive(client, wechat_api)
    arrive(client, wechat_api, openid=OPENID_2, unionid=UNIONID_2, nickname="李四")
    html, token = bind_page(client)
    assert "李四" in html
    assert submit(client, token, action="create").status_code == 302
    assert [i.openid for i in all_identities(app)] == [OPENID_2]


def binding_field_of(html: str) -> str:
    """The ``binding`` both forms of a bind page send (the same in each)."""
    values = {tag["value"] for tag in find_tags(html, "input") if tag.get("name") == "binding"}
    assert len(values) == 1 and len(find_tags(html, "form")) == 2
    return t.cast(str, values.pop())


@pytest.mark.parametrize("action", ["bind", "create"])
def test_a_bind_page_shown_before_another_wechat_login_binds_nothing(
        make_app: t.Any, wechat_api: t.Any, action: str) -> None:
    """Two bind pages in one browser: the session keeps the later WeChat login's binding
    only, and the earlier page's form bound that other WeChat (a red-team helper: at a
    shared computer, someone scans with their own WeChat in a new tab while the owner's
    bind page is open; the owner then types their password on the page that still shows
    their own WeChat, and the stranger's WeChat logs in to their account). The form now
    names the WeChat account its page showed: the earlier page's gets a page that says
    what happened, with nothing bound, created or counted, and no form for the WeChat
    waiting now (a review: a bind form there took the owner's next password for the
    stranger's WeChat); it offers to log in with WeChat again."""
    app = ask_app(make_app)
    alice = add_user(app, username="alice", nickname="Alice", password="alice-pw")
    client = app.test_client()
    arrive(client, wechat_api)  # the owner's WeChat, 张三
    html, token = bind_page(client)
    first_page = binding_field_of(html)
    arrive(client, wechat_api, openid=OPENID_2, unionid=UNIONID_2, nickname="李四")
    form = {"action": action, "binding": first_page}
    if action == "bind":
        form.update(username="alice", password="alice-pw")
    with recording(app, "user_created", "identity_linked", "binding_failed") as events:
        stale = submit(client, token, **form)
    assert stale.status_code == 409 and error_name(stale) == "BindingReplaced"
    page = stale.get_data(as_text=True)
    assert "Another WeChat account started logging in in this browser" in page
    assert find_tags(page, "form") == [] and "李四" not in page and "alice" not in page
    assert retry_links(page) == ["/auth/wechat/login"]  # log in with WeChat again
    assert events == [] and all_identities(app) == [] and attempt_rows(app) == []
    assert [u.id for u in all_users(app)] == [alice] and logged_in_user_id(client) is None
    # The bind page asked for again shows the WeChat waiting now, and binds it.
    html, _token = bind_page(client)
    assert "李四" in html and binding_field_of(html) != first_page
    assert submit(client, token, **{**form, "binding": binding_field_of(html)}
                  ).status_code == 302
    assert [i.openid for i in all_identities(app)] == [OPENID_2]


def test_the_same_wechat_scanned_again_binds_from_the_earlier_page(
        make_app: t.Any, wechat_api: t.Any) -> None:
    """The owner scans again with the same WeChat (the QR page reloaded in another tab):
    the earlier page shows the same account, so its form binds it (a review: a value per
    scan refused it with "another WeChat account")."""
    app = ask_app(make_app)
    alice = add_user(app, username="alice", password="alice-pw")
    client = app.test_client()
    arrive(client, wechat_api)
    html, token = bind_page(client)
    arrive(client, wechat_api)
    assert binding_field_of(bind_page(client)[0]) == binding_field_of(html)
    resp = submit(client, token, action="bind", binding=binding_field_of(html),
                  username="alice", password="alice-pw")
    assert resp.status_code == 302
    assert [(i.openid, i.user_id) for i in all_identities(app)] == [(OPENID, str(alice))]


@pytest.mark.parametrize("value", ["", "é" * 40, "\x00", "a" * 100_000])
def test_a_binding_field_of_no_page_binds_nothing(make_app: t.Any, wechat_api: t.Any,
                                                  value: str) -> None:
    app = ask_app(make_app)
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    resp = submit(client, token, action="create", binding=value)
    assert resp.status_code == 409 and all_users(app) == []


def test_the_binding_field_tells_nothing_of_the_openid(make_app: t.Any,
                                                       wechat_api: t.Any) -> None:
    """Keyed with the app's secret: another site (another key) shows another value for the
    same WeChat account, and the value is no plain hash of the openid."""
    import hashlib

    values = []
    for secret in ("a-secret-key-of-32-bytes-or-more-1", "a-secret-key-of-32-bytes-or-more-2"):
        app = ask_app(make_app, SECRET_KEY=secret)
        client = app.test_client()
        arrive(client, wechat_api)
        values.append(binding_field_of(bind_page(client)[0]))
    assert values[0] != values[1]
    assert all(OPENID not in v and hashlib.sha256(OPENID.encode()).hexdigest()[:32] != v
               for v in values)


def test_a_form_without_the_binding_field_binds_the_waiting_wechat(
        make_app: t.Any, wechat_api: t.Any) -> None:
    """A site's own ``bind.html`` from before the field: its forms still bind the WeChat
    waiting (``flask wechat-qr check`` warns that they cannot tell a page shown before)."""
    app = ask_app(make_app)
    alice = add_user(app, username="alice", nickname="Alice", password="alice-pw")
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    assert bind_as(client, token, "alice", "alice-pw").status_code == 302
    (identity,) = all_identities(app)
    assert (identity.openid, identity.user_id) == (OPENID, str(alice))


# --- the target account already has this connection ---------------------------------------


def test_an_account_that_already_has_a_wechat_is_refused(make_app: t.Any,
                                                         wechat_api: t.Any) -> None:
    app = ask_app(make_app)
    alice = add_user(app, username="alice", password="alice-pw")
    link_identity(app, alice, openid=OPENID_2, unionid=UNIONID_2)
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    with recording(app, "binding_failed", "identity_linked") as events:
        resp = bind_as(client, token, "alice", "alice-pw")
    assert resp.status_code == 409
    html = resp.get_data(as_text=True)
    assert "already has a WeChat account linked" in problem_of(html)
    assert [(i.openid, i.user_id) for i in all_identities(app)] == [(OPENID_2, str(alice))]
    assert logged_in_user_id(client) is None
    assert [name for name, _ in events] == ["binding_failed"]
    assert events[0][1]["reason"] == "already_linked"
    assert events[0][1]["address"] == "127.0.0.1"
    # Not a wrong password: no attempt counted. The choice is still open.
    assert attempt_rows(app) == []
    assert [p.used for p in pending_rows(app)] == [False]
    resp = submit(client, token, action="create")
    assert resp.status_code == 302
    users = all_users(app)
    assert len(users) == 2
    assert [(i.openid, i.user_id) for i in all_identities(app)] == [
        (OPENID_2, str(alice)), (OPENID, str(users[1].id))]


# --- attempt limits ------------------------------------------------------------------------


def test_attempts_are_limited_per_pending_binding(make_app: t.Any, wechat_api: t.Any,
                                                  clock: Clock) -> None:
    app = ask_app(make_app, WECHAT_QR_BIND_ATTEMPTS_PER_BINDING=3,
                  WECHAT_QR_BIND_BLOCK_SECONDS=60)
    alice = add_user(app, username="alice", password="alice-pw")
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    for guess in ("one", "two", "three"):
        resp = bind_as(client, token, "alice", guess)
        assert resp.status_code == 400 and "Retry-After" not in resp.headers
        assert problem_of(resp.get_data(as_text=True)) == WRONG
    with recording(app, "binding_failed", "identity_linked") as events:
        resp = bind_as(client, token, "alice", "alice-pw")  # even the right password
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "60"  # the configured window, as the page says
    assert "Too many attempts" in resp.get_data(as_text=True)
    assert error_name(resp) == "BindingBlocked"
    assert events == []
    assert all_identities(app) == []
    assert logged_in_user_id(client) is None
    assert len(attempt_rows(app)) == 3  # blocked attempts are not counted

    clock.advance(30)
    assert bind_as(client, token, "alice", "alice-pw").status_code == 429
    clock.advance(31)  # the failures are now older than the block
    resp = bind_as(client, token, "alice", "alice-pw")
    assert resp.status_code == 302
    assert [i.user_id for i in all_identities(app)] == [str(alice)]


def test_attempts_are_limited_per_address(make_app: t.Any, wechat_api: t.Any,
                                          clock: Clock) -> None:
    app = ask_app(make_app, WECHAT_QR_BIND_ATTEMPTS_PER_ADDRESS=4,
                  WECHAT_QR_BIND_ATTEMPTS_PER_BINDING=10, WECHAT_QR_BIND_BLOCK_SECONDS=60)
    alice = add_user(app, username="alice", password="alice-pw")
    bob = add_user(app, username="bob", password="bob-pw")
    carol = add_user(app, username="carol", password="carol-pw")
    first = browser(app, "198.51.100.7")
    second = browser(app, "198.51.100.7")
    elsewhere = browser(app, "203.0.113.9")
    arrive(first, wechat_api)
    arrive(second, wechat_api, openid=OPENID_2, unionid=UNIONID_2)
    arrive(elsewhere, wechat_api, openid=OPENID_3, unionid=UNIONID_3)
    _h, first_token = bind_page(first)
    _h, second_token = bind_page(second)
    _h, elsewhere_token = bind_page(elsewhere)

    with recording(app, "binding_failed") as events:
        for client, token in ((first, first_token), (second, second_token)) * 2:
            assert bind_as(client, token, "alice", "guess").status_code == 400
    assert {e[1]["address"] for e in events} == {"198.51.100.7"}
    assert len(events) == 4

    # Four failures from that address, over two pending bindings: blocked for both.
    assert bind_as(second, second_token, "bob", "bob-pw").status_code == 429
    assert bind_as(first, first_token, "alice", "alice-pw").status_code == 429
    # Another address is not blocked.
    assert bind_as(elsewhere, elsewhere_token, "carol", "wrong").status_code == 400
    assert bind_as(elsewhere, elsewhere_token, "carol", "carol-pw").status_code == 302
    assert [i.user_id for i in all_identities(app)] == [str(carol)]

    clock.advance(61)
    assert bind_as(first, first_token, "alice", "alice-pw").status_code == 302
    assert bind_as(second, second_token, "bob", "bob-pw").status_code == 302
    assert sorted((i.openid, i.user_id) for i in all_identities(app)) == sorted([
        (OPENID, str(alice)), (OPENID_2, str(bob)), (OPENID_3, str(carol))])


def test_guesses_at_one_account_are_limited_across_addresses_and_bindings(
    make_app: t.Any, wechat_api: t.Any, clock: Clock
) -> None:
    """The audit's takeover: wrong passwords for one account from many addresses (each a
    fresh pending binding) stop at the per-account limit; then even the right password is
    refused, from anywhere, until the window passes. Other accounts are not blocked, and the
    signal names the account tried so its owner can be told."""
    app = ask_app(make_app, WECHAT_QR_BIND_ATTEMPTS_PER_ACCOUNT=4,
                  WECHAT_QR_BIND_ATTEMPTS_PER_ADDRESS=20, WECHAT_QR_BIND_ATTEMPTS_PER_BINDING=5,
                  WECHAT_QR_BIND_BLOCK_SECONDS=60)
    alice = add_user(app, username="alice", password="alice-pw")
    bob = add_user(app, username="bob", password="bob-pw")
    # Four attackers, one guess each, spelling the name as a login form would accept it.
    spellings = ["alice", "Alice", " alice ", "ALICE"]
    with recording(app, "binding_failed") as events:
        for number, spelling in enumerate(spellings):
            attacker = browser(app, f"198.51.100.{number + 1}")
            arrive(attacker, wechat_api, openid=f"attacker-openid-{number}")
            _h, token = bind_page(attacker)
            assert bind_as(attacker, token, spelling, f"guess-{number}").status_code == 400
    assert [e[1]["username"] for e in events] == spellings
    assert len({e[1]["address"] for e in events}) == 4

    fifth = browser(app, "198.51.100.99")
    arrive(fifth, wechat_api, openid="attacker-openid-5")
    _h, token = bind_page(fifth)
    resp = bind_as(fifth, token, "alice", "alice-pw")  # the right password: still refused
    assert resp.status_code == 429 and error_name(resp) == "BindingBlocked"
    assert all_identities(app) == []
    # Another account, from the same attacker: not blocked.
    assert bind_as(fifth, token, "bob", "bob-pw").status_code == 302
    assert [i.user_id for i in all_identities(app)] == [str(bob)]

    clock.advance(61)
    owner = browser(app, "203.0.113.5")
    arrive(owner, wechat_api, openid=OPENID_3, unionid=UNIONID_3)
    _h, token = bind_page(owner)
    assert bind_as(owner, token, "alice", "alice-pw").status_code == 302
    assert str(alice) in {i.user_id for i in all_identities(app)}


@pytest.mark.parametrize("database", ["sqlite", "postgresql", "mariadb"], indirect=True)
def test_guesses_at_one_account_under_accented_and_full_width_spellings_count_as_one(
    make_app: t.Any, wechat_api: t.Any, database: t.Any
) -> None:
    """A helper's attack (session 34): MariaDB's default collation finds ``alice`` for
    ``Álice`` or ``alïce`` (its Unicode ones, and MySQL 8's, for the full-width
    ``ａｌｉｃｅ``, or with an invisible character, too), but each spelling was counted as its
    own account, so every accent of every letter gave an attacker with many addresses more
    guesses at one account's password. They count as one now, on every database (where
    the lookup is exact, they are one name to the limit all the same, whether or not such
    an account exists): a ninth guess, the right password, is refused."""
    spellings = ["Álice", "alïce", "ａｌｉｃｅ", "al\u200bice", "alice \u0301", "al\ufe0fice",
                 "ali\u034fce", "alice\u3000"]
    app = ask_app(make_app, WECHAT_QR_BIND_ATTEMPTS_PER_ACCOUNT=len(spellings),
                  WECHAT_QR_BIND_ATTEMPTS_PER_ADDRESS=20, WECHAT_QR_BIND_ATTEMPTS_PER_BINDING=5)
    add_user(app, username="alice", password="alice-pw")
    for number, spelling in enumerate(spellings):
        attacker = browser(app, f"198.51.100.{number + 1}")
        arrive(attacker, wechat_api, openid=f"attacker-openid-{number}")
        _h, token = bind_page(attacker)
        assert bind_as(attacker, token, spelling, f"guess-{number}").status_code == 400
    assert len({row.account for row in attempt_rows(app)}) == 1
    for number, spelling in enumerate(["alice", "ÀLICE"]):
        late = browser(app, f"198.51.100.{99 - number}")
        arrive(late, wechat_api, openid=f"attacker-openid-late-{number}")
        _h, token = bind_page(late)
        resp = bind_as(late, token, spelling, "alice-pw")  # the right password: refused
        assert resp.status_code == 429 and error_name(resp) == "BindingBlocked", spelling


@pytest.mark.parametrize("database", ["sqlite", "postgresql", "mariadb"], indirect=True)
def test_what_an_accented_spelling_finds_is_the_databases_to_say(
    make_app: t.Any, wechat_api: t.Any, database: t.Any
) -> None:
    """Why the limit folds accents: on MariaDB (``utf8mb4_general_ci``) ``Álice`` and the
    right password bind to ``alice``; where comparisons are exact (SQLite, PostgreSQL) that
    spelling is no account."""
    app = ask_app(make_app)
    alice = add_user(app, username="alice", password="alice-pw")
    client = browser(app)
    arrive(client, wechat_api)
    _h, token = bind_page(client)
    resp = bind_as(client, token, "Álice", "alice-pw")
    if database.is_mysql:
        assert resp.status_code == 302
        assert [i.user_id for i in all_identities(app)] == [str(alice)]
    else:
        assert resp.status_code == 400 and all_identities(app) == []


@pytest.mark.parametrize("how", [["logout"], ["login"], ["login", "logout"]],
                         ids=["logout", "login", "login-logout"])
def test_the_sites_own_login_or_logout_ends_a_waiting_binding(
        make_app: t.Any, wechat_api: t.Any, how: list[str]) -> None:
    """A WeChat left waiting on the bind page at a shared computer: after the site's own
    logout (or someone's login there), the next person's password on that page linked the
    earlier person's WeChat to their account (a helper's hunt, session 34). Flask-Login's
    ``user_logged_out`` takes it out of the session; a binding made in another person's
    session (or in none) is no one else's to use."""
    import flask_login

    app = ask_app(make_app)
    bob = add_user(app, username="bob", password="bob-pw")

    @app.route("/site-login")
    def site_login() -> str:
        flask_login.login_user(app.db.session.get(app.User, bob))  # type: ignore[attr-defined]
        return "in"

    @app.route("/site-logout")
    def site_logout() -> str:
        flask_login.logout_user()
        return "out"

    shared = app.test_client()
    arrive(shared, wechat_api)  # the earlier person's WeChat waits
    bind_page(shared)
    for step in how:
        assert shared.get(f"/site-{step}").status_code == 200
    page = shared.get("/auth/bind")
    assert page.status_code == 400 and error_name(page) == "BindingExpired"
    assert all_identities(app) == []


def test_a_site_that_logs_its_user_in_at_every_request_can_bind(
        make_app: t.Any, wechat_api: t.Any) -> None:
    """A site whose ``before_request`` calls Flask-Login's ``login_user`` at every request
    (a header its single sign-on sets): ending a waiting binding at every login made the
    bind page expire at once there (a review, session 34); the same person's session
    keeps it."""
    import flask_login
    from flask import request

    app = ask_app(make_app)
    bob = add_user(app, username="bob", password="bob-pw")
    alice = add_user(app, username="alice", password="alice-pw")

    @app.before_request
    def single_sign_on() -> None:
        if request.headers.get("X-Signed-In") == "bob":
            flask_login.login_user(app.db.session.get(app.User, bob))  # type: ignore[attr-defined]

    client = app.test_client()
    client.environ_base["HTTP_X_SIGNED_IN"] = "bob"
    arrive(client, wechat_api)
    _h, token = bind_page(client)
    assert bind_as(client, token, "alice", "alice-pw").status_code == 302
    assert [i.user_id for i in all_identities(app)] == [str(alice)]


def test_attempts_keep_no_typed_username(make_app: t.Any, wechat_api: t.Any) -> None:
    """People type passwords into the username field: the attempt keeps only a hash."""
    app = ask_app(make_app)
    client = browser(app)
    arrive(client, wechat_api)
    _h, token = bind_page(client)
    bind_as(client, token, "my-secret-password", "x")
    (row,) = attempt_rows(app)
    assert "my-secret-password" not in repr(tuple(row))
    assert len(row.account) == 32


def test_a_new_pending_binding_does_not_reset_the_address_limit(make_app: t.Any,
                                                                wechat_api: t.Any) -> None:
    """Scanning again gives a fresh pending binding, not fresh guesses."""
    app = ask_app(make_app, WECHAT_QR_BIND_ATTEMPTS_PER_BINDING=2,
                  WECHAT_QR_BIND_ATTEMPTS_PER_ADDRESS=3)
    add_user(app, username="alice", password="alice-pw")
    client = browser(app, "198.51.100.7")
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    assert [bind_as(client, token, "alice", g).status_code for g in "ab"] == [400, 400]
    assert bind_as(client, token, "alice", "c").status_code == 429
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    assert bind_as(client, token, "alice", "d").status_code == 400
    assert bind_as(client, token, "alice", "alice-pw").status_code == 429
    assert all_identities(app) == []


def test_a_long_client_address_is_still_limited(make_app: t.Any, wechat_api: t.Any) -> None:
    """Addresses are stored cut to 64 characters; the limit must count them all the same."""
    app = ask_app(make_app, WECHAT_QR_BIND_ATTEMPTS_PER_ADDRESS=2,
                  WECHAT_QR_BIND_ATTEMPTS_PER_BINDING=10)
    add_user(app, username="alice", password="alice-pw")
    address = "2001:db8::" + "f" * 80
    first, second = browser(app, address), browser(app, address)
    arrive(first, wechat_api)
    arrive(second, wechat_api, openid=OPENID_2, unionid=UNIONID_2)
    _h, first_token = bind_page(first)
    _h, second_token = bind_page(second)
    assert bind_as(first, first_token, "alice", "guess").status_code == 400
    assert bind_as(second, second_token, "alice", "guess").status_code == 400
    assert bind_as(first, first_token, "alice", "alice-pw").status_code == 429
    assert all_identities(app) == []


def test_addresses_of_one_ipv6_network_share_the_address_limit(make_app: t.Any,
                                                                wechat_api: t.Any) -> None:
    """A client picks any address of its IPv6 /64 at will: a new one per guess must not
    reset the per-address limit (then only the per-account limit stood between a script
    and trying one password on every account)."""
    app = ask_app(make_app, WECHAT_QR_BIND_ATTEMPTS_PER_ADDRESS=2,
                  WECHAT_QR_BIND_ATTEMPTS_PER_BINDING=10)
    add_user(app, username="alice", password="alice-pw")
    add_user(app, username="bob", password="bob-pw")
    add_user(app, username="carol", password="carol-pw")
    clients = [browser(app, f"2001:db8:7:7::{n}") for n in (1, 2, 3)]
    arrive(clients[0], wechat_api)
    arrive(clients[1], wechat_api, openid=OPENID_2, unionid=UNIONID_2)
    arrive(clients[2], wechat_api, openid=OPENID_3, unionid=UNIONID_3)
    tokens = [bind_page(client)[1] for client in clients]
    assert bind_as(clients[0], tokens[0], "alice", "guess").status_code == 400
    assert bind_as(clients[1], tokens[1], "bob", "guess").status_code == 400
    assert bind_as(clients[2], tokens[2], "carol", "guess").status_code == 429
    other = browser(app, "2001:db8:7:8::1")
    arrive(other, wechat_api, openid="o-other", unionid="u-other")
    assert bind_as(other, bind_page(other)[1], "carol", "guess").status_code == 400
    assert all_identities(app) == []


def test_create_is_not_blocked_by_failed_binds(make_app: t.Any, wechat_api: t.Any) -> None:
    """The limit guards password guessing; creating an account proves nothing."""
    app = ask_app(make_app, WECHAT_QR_BIND_ATTEMPTS_PER_BINDING=1)
    add_user(app, username="alice", password="alice-pw")
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    assert bind_as(client, token, "alice", "guess").status_code == 400
    assert bind_as(client, token, "alice", "alice-pw").status_code == 429
    assert submit(client, token, action="create").status_code == 302
    assert len(all_users(app)) == 2


# --- login only + ask binding -------------------------------------------------------------


def test_login_only_offers_only_binding(make_app: t.Any, wechat_api: t.Any) -> None:
    app = ask_app(make_app, WECHAT_QR_LOGIN_ONLY=True)
    alice = add_user(app, username="alice", password="alice-pw")
    client = app.test_client()
    arrive(client, wechat_api, next="/account")
    html, token = bind_page(client)
    actions = [i.get("value") for i in find_tags(html, "input") if i.get("name") == "action"]
    assert actions == ["bind"]
    assert "Create a new account" not in html
    assert "does not create accounts" in html

    with recording(app, "user_created", "identity_linked") as events:
        resp = submit(client, token, action="create")
    assert resp.status_code == 403
    assert error_name(resp) == "LoginRefused"
    assert events == []
    assert [u.id for u in all_users(app)] == [alice]
    assert all_identities(app) == []
    assert logged_in_user_id(client) is None

    # Binding an existing account is still the way in.
    resp = bind_as(client, token, "alice", "alice-pw")
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/account"
    assert [i.user_id for i in all_identities(app)] == [str(alice)]
    assert [u.id for u in all_users(app)] == [alice]


# --- two completions at once -----------------------------------------------------------


def test_two_completions_of_one_pending_binding_at_once(make_app: t.Any, wechat_api: t.Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A double-clicked "create" (or a copied cookie) races itself: one user, one identity."""
    app = ask_app(make_app)
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    cookie = client.get_cookie("session").value
    twin = app.test_client()
    twin.set_cookie("session", cookie)

    barrier = threading.Barrier(2, timeout=10)
    real_can_signup = AccountAdapter.can_signup

    def can_signup_together(self: t.Any, connection: t.Any) -> bool:
        barrier.wait()  # both requests have found the pending binding unused
        return real_can_signup(self, connection)

    monkeypatch.setattr(AccountAdapter, "can_signup", can_signup_together)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(submit, c, token, action="create") for c in (client, twin)]
        statuses = sorted(f.result(timeout=30).status_code for f in futures)
    assert statuses == [302, 400]
    assert len(all_users(app)) == 1
    (identity,) = all_identities(app)
    assert identity.user_id == str(all_users(app)[0].id)


def on_the_bind_page_in_several_tabs(app: t.Any, wechat_api: t.Any, tabs: int
                                     ) -> tuple[t.Any, str, list[t.Any]]:
    """A browser that arrived on the bind page, its form's CSRF token, and ``tabs`` more
    clients with its session cookie (the same page open in several tabs)."""
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    cookie = client.get_cookie("session").value
    browsers = []
    for _ in range(tabs):
        twin = app.test_client()
        twin.set_cookie("session", cookie)
        browsers.append(twin)
    return client, token, browsers


def test_concurrent_guesses_cannot_exceed_the_limit(make_app: t.Any, wechat_api: t.Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of simultaneous guesses must not all be checked against a count taken before
    any of them failed."""
    limit, burst = 2, 6
    app = ask_app(make_app, WECHAT_QR_BIND_ATTEMPTS_PER_BINDING=limit)
    add_user(app, username="alice", password="alice-pw")
    client, token, browsers = on_the_bind_page_in_several_tabs(app, wechat_api, burst)

    # Hold every guess that reaches the password check until the whole burst is there
    # (deterministic overlap): each guess of the burst has either reached the check or been
    # answered without it (the limit already stopped it). None is answered past the check
    # before the hold ends, so an answered guess is one the check never saw.
    arrived = threading.Condition()
    count = [0]
    answered = [0]
    real_authenticate = AccountAdapter.authenticate

    def authenticate_together(self: t.Any, username: str, password: str) -> t.Any:
        with arrived:
            count[0] += 1
            arrived.notify_all()
            arrived.wait_for(lambda: count[0] + answered[0] >= burst, timeout=10)
        return real_authenticate(self, username, password)

    def guess(browser: t.Any, n: int) -> t.Any:
        try:
            return bind_as(browser, token, "alice", f"guess-{n}")
        finally:
            with arrived:
                answered[0] += 1
                arrived.notify_all()

    monkeypatch.setattr(AccountAdapter, "authenticate", authenticate_together)
    with ThreadPoolExecutor(max_workers=burst) as pool:
        futures = [pool.submit(guess, b, n) for n, b in enumerate(browsers)]
        statuses = [f.result(timeout=60).status_code for f in futures]
    assert set(statuses) <= {400, 429}
    tried = statuses.count(400)
    assert tried <= limit  # a simultaneous burst may be blocked early, never late
    assert count[0] == tried  # only the counted attempts reached the password check
    # One by one, the remaining allowance (and no more) can still be used.
    for n in range(limit - tried):
        assert bind_as(client, token, "alice", f"later-{n}").status_code == 400
    assert bind_as(client, token, "alice", "alice-pw").status_code == 429
    assert len(attempt_rows(app)) == limit
    assert all_identities(app) == []


@pytest.mark.parametrize("block_seconds,wait", [
    (None, "wait 15 minutes"), (3600, "wait 60 minutes"), (60, "wait 1 minute "),
    (90, "wait 2 minutes")])
def test_the_block_message_tells_the_configured_wait(make_app: t.Any, wechat_api: t.Any,
                                                     block_seconds: int | None,
                                                     wait: str) -> None:
    config: dict[str, t.Any] = {"WECHAT_QR_BIND_ATTEMPTS_PER_BINDING": 1}
    if block_seconds is not None:
        config["WECHAT_QR_BIND_BLOCK_SECONDS"] = block_seconds
    app = ask_app(make_app, **config)
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    assert bind_as(client, token, "alice", "guess").status_code == 400
    resp = bind_as(client, token, "alice", "guess")
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == str(block_seconds or 900)  # and to scripts
    html = resp.get_data(as_text=True)
    assert "Too many attempts" in html
    assert wait in html


def _waiting_in_two_browsers(app: t.Any, wechat_api: t.Any) -> tuple[t.Any, str, t.Any, str]:
    """The same WeChat waiting on the bind page in two browsers (the computer, and the
    phone inside WeChat): each browser and its form's token."""
    first, second = app.test_client(), app.test_client()
    arrive(first, wechat_api)
    arrive(second, wechat_api)
    _h, first_token = bind_page(first)
    _h, second_token = bind_page(second)
    return first, first_token, second, second_token


def test_a_wechat_linked_meanwhile_to_another_account_is_a_clear_refusal(
        make_app: t.Any, wechat_api: t.Any) -> None:
    """One browser created an account for the waiting WeChat; the other then binds it to
    another account: a page in words (not a server error), and nothing re-linked."""
    app = ask_app(make_app)
    alice = add_user(app, username="alice", password="alice-pw")
    first, first_token, second, second_token = _waiting_in_two_browsers(app, wechat_api)
    assert submit(second, second_token, action="create").status_code == 302
    (winner,) = [u for u in all_users(app) if u.id != alice]

    with recording(app, "identity_linked", "user_created") as events:
        resp = submit(first, first_token, action="bind", username="alice",
                      password="alice-pw")
    assert resp.status_code == 409
    assert "linked to another account" in resp.get_data(as_text=True)
    assert events == []
    assert sorted(u.id for u in all_users(app)) == sorted([alice, winner.id])
    assert [(i.openid, i.user_id) for i in all_identities(app)] == [(OPENID, str(winner.id))]
    assert logged_in_user_id(first) is None


@pytest.mark.parametrize("first_choice", ["create", "bind"])
def test_a_wechat_linked_meanwhile_says_so_and_offers_its_login(
        make_app: t.Any, wechat_api: t.Any, first_choice: str) -> None:
    """The person chose on one device, then "Create a new account" on the other: that
    answered "linked to another account", naming the person's own new account as another
    (session 34, left alone). The page now says the WeChat was linked meanwhile and offers
    to log in with it; it does not log in to that account by itself, as the page may have
    been left open at a shared computer (a red-team helper's review of a first version)."""
    app = ask_app(make_app)
    add_user(app, username="alice", password="alice-pw")
    first, first_token, second, second_token = _waiting_in_two_browsers(app, wechat_api)
    assert submit(second, second_token, action=first_choice, username="alice",
                  password="alice-pw").status_code == 302
    (linked,) = all_identities(app)
    users = sorted(u.id for u in all_users(app))

    with recording(app, "identity_linked", "user_created") as events:
        resp = submit(first, first_token, action="create")
    assert resp.status_code == 409 and error_name(resp) == "LinkedMeanwhile"
    page = resp.get_data(as_text=True)
    assert "linked meanwhile" in page and "another account" not in page
    assert any("/auth/wechat/login" in href for href in retry_links(page))
    assert events == []
    assert logged_in_user_id(first) is None
    assert sorted(u.id for u in all_users(app)) == users
    assert [(i.openid, i.user_id) for i in all_identities(app)] == [(OPENID, linked.user_id)]


def test_an_account_made_meanwhile_through_the_other_app_says_linked_meanwhile(
        make_app: t.Any) -> None:
    """The person waits on the bind page on the computer (the QR code's openid) and inside
    WeChat on the phone (the Official Account's), and creates their account on the phone;
    then "Create a new account" on the computer said "linked to another account", their
    own account taken for someone else's (a helper's hunt). Now, as for one app, the page
    says the WeChat was linked meanwhile and offers to log in with it."""
    app = ask_app(make_app, WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None,
                  WECHAT_QR_APP_SECRET=None)
    computer = app.test_client()
    uuid, _state = open_qr_page(computer)
    answer(app.test_client(), uuid, action="allow", person="zhangsan")
    arrived = computer.get(poll(computer, uuid)["redirect"].removeprefix("http://localhost"))
    assert arrived.headers["Location"] == "/auth/bind"
    phone = app.test_client()
    phone.environ_base["HTTP_USER_AGENT"] = WECHAT_PHONE
    location = phone.get("/auth/wechat/login").headers["Location"]
    consent = phone.post(location.removeprefix("http://localhost").split("#")[0],
                         data={"action": "allow", "person": "zhangsan"})
    moved_on = phone.get(consent.headers["Location"].removeprefix("http://localhost"))
    assert "/auth/bind" in moved_on.get_data(as_text=True)  # a page that moves on by itself
    assert submit(phone, bind_page(phone)[1], action="create").status_code in (200, 302)
    (user,) = all_users(app)
    resp = submit(computer, bind_page(computer)[1], action="create")
    assert resp.status_code == 409 and error_name(resp) == "LinkedMeanwhile"
    assert [u.id for u in all_users(app)] == [user.id]
    assert [i.app for i in all_identities(app)] == ["official_account"]


# SQLite's one writer serializes the two choices whole (the meeting below would wait on it).
@pytest.mark.parametrize("database", ["postgresql", "mariadb"], indirect=True)
def test_binding_on_one_device_and_creating_on_the_other_at_once_never_split_the_person(
        make_app: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The person waits on the bind page through both apps (the QR code on the computer,
    inside WeChat on the phone), and chooses "Bind" on one and "Create" on the other at
    the same moment: a first version claimed the person only for a new account, and the
    two choices left an identity on each of two accounts (a review). Now both choices
    take the claim: one goes through, the other is refused, never two accounts."""
    from flask_wechat_qr.association import AssociationPolicy

    app = ask_app(make_app, WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None,
                  WECHAT_QR_APP_SECRET=None)
    add_user(app, username="alice", password="alice-pw")
    computer = app.test_client()
    uuid, _state = open_qr_page(computer)
    answer(app.test_client(), uuid, action="allow", person="zhangsan")
    computer.get(poll(computer, uuid)["redirect"].removeprefix("http://localhost"))
    phone = app.test_client()
    phone.environ_base["HTTP_USER_AGENT"] = WECHAT_PHONE
    location = phone.get("/auth/wechat/login").headers["Location"]
    consent = phone.post(location.removeprefix("http://localhost").split("#")[0],
                         data={"action": "allow", "person": "zhangsan"})
    phone.get(consent.headers["Location"].removeprefix("http://localhost"))
    computer_token, phone_token = bind_page(computer)[1], bind_page(phone)[1]
    arrived = threading.Barrier(2, timeout=20)
    first_claims = iter(range(2))
    real_claimed = AssociationPolicy.person_claimed

    def claimed_together(self: t.Any, *args: t.Any) -> t.Any:
        if next(first_claims, None) is not None:
            arrived.wait()  # both read the identities before either claimed the person
        return real_claimed(self, *args)

    monkeypatch.setattr(AssociationPolicy, "person_claimed", claimed_together)
    with ThreadPoolExecutor(2) as pool:
        bound = pool.submit(bind_as, computer, computer_token, "alice", "alice-pw")
        made = pool.submit(submit, phone, phone_token, action="create")
        statuses = sorted(r.status_code for r in (bound.result(60), made.result(60)))
    assert 500 not in statuses and 302 in statuses and not arrived.broken
    owners = {i.user_id for i in all_identities(app)}
    assert len(owners) == 1


def test_a_wechat_linked_meanwhile_to_the_account_a_password_proves_logs_in_to_it(
        make_app: t.Any, wechat_api: t.Any) -> None:
    """Bound to alice in one browser, then bound to alice again in the other: her password
    proves the account the WeChat is linked to now, so that is a login to it, not a 409."""
    app = ask_app(make_app)
    alice = add_user(app, username="alice", password="alice-pw")
    first, first_token, second, second_token = _waiting_in_two_browsers(app, wechat_api)
    assert submit(second, second_token, action="bind", username="alice",
                  password="alice-pw").status_code == 302
    with recording(app, "identity_linked", "user_created") as events:
        resp = submit(first, first_token, action="bind", username="alice",
                      password="alice-pw")
    assert resp.status_code == 302
    assert events == []
    assert logged_in_user_id(first) == str(alice)
    assert [(i.openid, i.user_id) for i in all_identities(app)] == [(OPENID, str(alice))]


def test_create_refused_in_login_only_mode_sends_login_refused(
    make_app: t.Any, wechat_api: t.Any
) -> None:
    app = make_app(WECHAT_QR_ASSOCIATION="ask_binding", WECHAT_QR_LOGIN_ONLY=True)
    client = app.test_client()
    heard: list[dict[str, t.Any]] = []

    def receiver(sender: t.Any, **kwargs: t.Any) -> None:
        heard.append(kwargs)

    with signals.login_refused.connected_to(receiver, sender=app):
        login_with_wechat(client, wechat_api)
        page = client.get("/auth/bind").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        resp = client.post("/auth/bind", data={"action": "create", "csrf_token": token})
    assert resp.status_code == 403
    assert [h["openid"] for h in heard] == [OPENID]


@pytest.mark.parametrize("action", ["create", "bind"])
def test_a_wechat_linked_between_the_check_and_the_link_is_told_as_linked_meanwhile(
        make_app: t.Any, wechat_api: t.Any, monkeypatch: pytest.MonkeyPatch,
        action: str) -> None:
    """The other browser commits between the choice's check and its link (the check saw
    nothing yet): the link then finds the WeChat by its unionid, and the page said "linked
    to another account" (a review, session 35). It is the same answer as when the check
    saw it: ``LinkedMeanwhile`` for create, the login for the account a password proved."""
    from flask_wechat_qr.association import AssociationPolicy

    app = ask_app(make_app)
    alice = add_user(app, username="alice", password="alice-pw")
    first, first_token, second, second_token = _waiting_in_two_browsers(app, wechat_api)
    assert submit(second, second_token, action="bind", username="alice",
                  password="alice-pw").status_code == 302
    real = AssociationPolicy.linked_user
    checks: list[int] = []

    def stale_first(self: t.Any, connection: str, openid: str) -> t.Any:
        checks.append(1)
        return None if len(checks) == 1 else real(self, connection, openid)

    monkeypatch.setattr(AssociationPolicy, "linked_user", stale_first)
    resp = submit(first, first_token, action=action, username="alice", password="alice-pw")
    if action == "create":
        assert resp.status_code == 409 and error_name(resp) == "LinkedMeanwhile"
        assert logged_in_user_id(first) is None
    else:
        assert resp.status_code == 302
        assert logged_in_user_id(first) == str(alice)
    assert [(i.openid, i.user_id) for i in all_identities(app)] == [(OPENID, str(alice))]


class _StoppedClock:
    """``time`` for :mod:`flask_wechat_qr.check_times`: stopped, moved on by the site's
    password checks (as a bcrypt check takes its time) and by the waits asked of it."""

    def __init__(self, app: t.Any) -> None:
        self.now = 1000.0
        self.app = app
        #: whether the request's session held a transaction at each wait
        self.holding: list[bool] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.holding.append(self.app.db.session().in_transaction())
        self.now += seconds


@pytest.mark.parametrize(("account_check", "unknown_check"), [(0.25, 0.1), (0.02, 0.1)])
def test_the_bind_page_answers_as_late_for_any_username(
        make_app: t.Any, wechat_api: t.Any, monkeypatch: pytest.MonkeyPatch,
        account_check: float, unknown_check: float) -> None:
    """A site's own password check (bcrypt, passlib, its own ``authenticate``) takes a time
    of its own, slower or faster than the dummy hash of an unknown username: the time of
    the answer told which usernames exist (75.7 ms for an account against 104.5 ms for
    none, a red-team helper's measure, session 35). Each answer now comes no sooner
    than the slowest recent check of the app's, of accounts and unknowns alike; a check
    ten minutes old no longer counts."""
    from flask_wechat_qr import AccountAdapter, check_times

    app = ask_app(make_app)
    clock = _StoppedClock(app)
    monkeypatch.setattr(check_times, "time", clock)
    add_user(app, username="alice", password="alice-pw")

    def authenticate(self: t.Any, username: str, password: str) -> t.Any:
        clock.now += account_check if username == "alice" else unknown_check
        return None  # every password wrong here

    monkeypatch.setattr(AccountAdapter, "authenticate", authenticate)
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)

    def answered_in(username: str) -> float:
        started = clock.now
        assert bind_as(client, token, username, "wrong").status_code == 400
        return round(clock.now - started, 6)

    slowest = max(account_check, unknown_check)
    assert answered_in("alice") == account_check  # nothing recent yet
    assert [answered_in(name) for name in ("nobody", "alice", "nobody")] == [slowest] * 3
    assert clock.holding and not any(clock.holding)  # no connection held while waiting
    clock.now += check_times.RECENT_SECONDS + 1  # those are old now
    assert answered_in("alice") == account_check


def test_a_password_check_that_fails_sets_no_time_for_the_others(
        make_app: t.Any, wechat_api: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A check that raised (a lookup that timed out, the site's own bug) took its time for
    its own reasons: counted, it held every answer of the next ten minutes to it (a
    review, session 35)."""
    from flask_wechat_qr import AccountAdapter, check_times

    app = ask_app(make_app)
    clock = _StoppedClock(app)
    monkeypatch.setattr(check_times, "time", clock)

    def authenticate(self: t.Any, username: str, password: str) -> t.Any:
        clock.now += 1.5 if username == "boom" else 0.1
        if username == "boom":
            raise RuntimeError("the site's own lookup failed")
        return None

    monkeypatch.setattr(AccountAdapter, "authenticate", authenticate)
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    with pytest.raises(RuntimeError):
        bind_as(client, token, "boom", "wrong")
    started = clock.now
    assert bind_as(client, token, "nobody", "wrong").status_code == 400
    assert round(clock.now - started, 6) == 0.1


def test_a_burst_of_password_checks_takes_turns(make_app: t.Any, wechat_api: t.Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: every guess of a burst ran its check at once, each sharing the CPU with the
    others; the slowest (4.3 s of wall time, a red team's measure, session 36) then held
    every other person's bind page at the 2 s cap for ten minutes, and the burst's
    scrypt checks took the process from 111 MB to 559 MB. Two run at once now; the others
    wait their turn, which is not counted in the check's time."""
    from flask_wechat_qr import check_times

    burst = 6
    app = ask_app(make_app, WECHAT_QR_BIND_ATTEMPTS_PER_BINDING=burst)
    _client, token, browsers = on_the_bind_page_in_several_tabs(app, wechat_api, burst)
    state = threading.Condition()
    running, most = [0], [0]
    release = threading.Event()

    def authenticate(self: t.Any, username: str, password: str) -> t.Any:
        with state:
            running[0] += 1
            most[0] = max(most[0], running[0])
            state.notify_all()
        release.wait(timeout=10)
        with state:
            running[0] -= 1
        return None

    monkeypatch.setattr(AccountAdapter, "authenticate", authenticate)
    with ThreadPoolExecutor(max_workers=burst) as pool:
        futures = [pool.submit(bind_as, b, token, "alice", f"guess-{n}")
                   for n, b in enumerate(browsers)]
        with state:  # every turn there is is taken; the other guesses wait for one
            assert state.wait_for(lambda: running[0] == check_times.CHECKS_AT_ONCE, 10)
        time.sleep(0.2)  # a guess that did not wait for a turn would be running by now
        assert running[0] == check_times.CHECKS_AT_ONCE
        release.set()
        statuses = [f.result(timeout=60).status_code for f in futures]
    assert statuses == [400] * burst
    assert most[0] == check_times.CHECKS_AT_ONCE == 2


# --- a planted session cookie ---------------------------------------------------------------


def _over_https(app: t.Any) -> t.Any:
    """Every request of ``app`` arrives over https (as behind a TLS proxy with ProxyFix)."""
    inner = app.wsgi_app

    def https(environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        environ["wsgi.url_scheme"] = "https"
        return inner(environ, start_response)

    app.wsgi_app = https
    return app


def test_a_pending_binding_tossed_into_another_browser_is_refused(
    make_app: t.Any, wechat_api: t.Any
) -> None:
    """The audit's cookie tossing: the attacker scans with their own WeChat, then plants
    their session cookie (from a sibling sub-domain) in the victim's browser, hoping the
    victim's password binds the attacker's WeChat. Over https the pending binding is tied to
    a __Host- cookie no sub-domain can set, so the planted session alone is refused."""
    app = _over_https(ask_app(make_app))
    add_user(app, username="victim", password="victim-pw")
    attacker = app.test_client()
    arrive(attacker, wechat_api, openid=OPENID_3, unionid=UNIONID_3)
    session_cookie = attacker.get_cookie("session")
    assert attacker.get_cookie("__Host-wechat-qr-binding") is not None
    victim = app.test_client()
    victim.set_cookie("session", session_cookie.value)  # only what a sub-domain can plant
    page = victim.get("/auth/bind")
    assert page.status_code == 400 and error_name(page) == "BindingExpired"
    token = csrf_token_of(victim)  # a CSRF token of the planted session
    refused = bind_as(victim, token, "victim", "victim-pw")
    assert refused.status_code == 400 and error_name(refused) == "BindingExpired"
    assert all_identities(app) == []
    # The browser that scanned still binds (its own account, here a new one).
    _html, own_token = bind_page(attacker)
    assert submit(attacker, own_token, action="create").status_code == 302
    assert [i.openid for i in all_identities(app)] == [OPENID_3]


def test_over_https_a_bind_page_shown_before_another_wechat_login_binds_nothing(
    make_app: t.Any, wechat_api: t.Any
) -> None:
    """The later login replaces the ``__Host-`` binding cookie too, so that cookie cannot
    tell the pages apart: the form's field does (the red team's https case, where the
    earlier page showed one WeChat and its form linked the other)."""
    app = _over_https(ask_app(make_app))
    add_user(app, username="bob", password="bob-pw")
    client = app.test_client()
    arrive(client, wechat_api)
    html, token = bind_page(client)
    arrive(client, wechat_api, openid=OPENID_3, unionid=UNIONID_3, nickname="王五")
    stale = submit(client, token, action="bind", binding=binding_field_of(html),
                   username="bob", password="bob-pw")
    assert stale.status_code == 409 and error_name(stale) == "BindingReplaced"
    assert all_identities(app) == [] and attempt_rows(app) == []
