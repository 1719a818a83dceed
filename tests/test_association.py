"""The association policy (association.py) through the real routes: who a WeChat login
logs in as (mode off, login only, field matching), the profile it syncs, linking WeChat from
the account page and unlinking it, and never half a login left behind."""

from __future__ import annotations

import logging
import re
import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from support import (
    APP_ID,
    APP_ID_B,
    APP_SECRET,
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
    api_queries,
    csrf_token_of,
    error_name,
    find_tags,
    finish_login,
    host_app,
    identity_links,
    link_identity,
    log_in,
    logged_in_user_id,
    login_with_wechat,
    quoted,
    recording,
    scan,
    start_link,
    start_login,
    table,
    two_connections,
)

from flask_wechat_qr import AccountAdapter, WeChatClient, signals


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes for ``DateTime(timezone=True)``; they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --- mode off ----------------------------------------------------------------------


def test_first_login_creates_one_user_and_one_identity(app: t.Any, client: t.Any,
                                                       wechat_api: t.Any) -> None:
    before = datetime.now(UTC)
    resp = login_with_wechat(client, wechat_api)
    after = datetime.now(UTC)
    assert resp.status_code == 302
    assert api_paths(wechat_api) == [TOKEN_PATH, USERINFO_PATH]

    users = all_users(app)
    assert len(users) == 1
    user = users[0]
    assert user.nickname == NICKNAME
    assert user.avatar_url == AVATAR

    identities = all_identities(app)
    assert len(identities) == 1
    identity = identities[0]
    assert identity.connection == "wechat"
    assert identity.openid == OPENID
    assert identity.unionid == UNIONID
    assert identity.user_id == str(user.id)
    assert identity.nickname == NICKNAME
    assert identity.avatar_url == AVATAR
    assert identity.profile["nickname"] == NICKNAME
    assert identity.profile["openid"] == OPENID
    assert identity.profile["unionid"] == UNIONID
    assert identity.profile["headimgurl"] == AVATAR
    assert identity.profile["privilege"] == []
    for moment in (identity.created_at, identity.last_login_at):
        assert before - timedelta(seconds=1) <= _aware(moment) <= after + timedelta(seconds=1)

    assert logged_in_user_id(client) == str(user.id)
    assert client.get("/").get_data(as_text=True) == f"logged in as {user.id} {NICKNAME}"


def test_second_login_is_the_same_user_with_one_api_call(app: t.Any, client: t.Any,
                                                         wechat_api: t.Any) -> None:
    login_with_wechat(client, wechat_api)
    first = all_identities(app)[0]
    other_browser = app.test_client()
    resp = login_with_wechat(other_browser, wechat_api, nickname="改名了")
    assert resp.status_code == 302
    assert api_paths(wechat_api) == [TOKEN_PATH]

    users = all_users(app)
    identities = all_identities(app)
    assert len(users) == 1
    assert len(identities) == 1
    assert logged_in_user_id(other_browser) == str(users[0].id)
    # Default profile_sync 'first_login': nothing from the profile is read again.
    assert users[0].nickname == NICKNAME
    assert identities[0].nickname == NICKNAME
    assert identities[0].created_at == first.created_at
    # Within the hour ``last_login_at`` is kept as it is: the login writes no identity row.
    assert identities[0].last_login_at == first.last_login_at


def test_a_receiver_may_keep_the_returning_identity_past_the_request(
        app: t.Any, wechat_api: t.Any) -> None:
    """The identity ``login_succeeded`` gets is the whole row, raw profile included: a
    receiver that keeps it (a task queued for later) reads it after the request's session is
    gone. A deferred column, tried for 10 us a login, raised ``DetachedInstanceError``."""
    login_with_wechat(app.test_client(), wechat_api)
    kept = []
    with signals.login_succeeded.connected_to(
            lambda sender, identity, **kwargs: kept.append(identity), sender=app):
        assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
    assert kept[0].profile["nickname"] == NICKNAME


def test_last_login_at_is_written_once_it_is_an_hour_old(app: t.Any, wechat_api: t.Any
                                                          ) -> None:
    """``last_login_at`` says when the person last logged in, to the hour (docs: Scale and
    performance): a returning login rewrites it only when it is an hour old or older."""
    login_with_wechat(app.test_client(), wechat_api)
    identities = table(app, "wechat_qr_identity")
    for age, rewritten in ((timedelta(minutes=59), False), (timedelta(minutes=61), True)):
        earlier = datetime.now(UTC) - age
        with app.app_context():
            app.db.session.execute(sa.update(identities).values(last_login_at=earlier))
            app.db.session.commit()
        before = datetime.now(UTC)
        assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
        stored = _aware(all_identities(app)[0].last_login_at)
        if rewritten:
            assert stored >= before - timedelta(seconds=1)
        else:
            assert abs(stored - earlier) < timedelta(seconds=1)


def test_each_login_sync_refreshes_the_profile(make_app: t.Any, wechat_api: t.Any) -> None:
    app = make_app(WECHAT_QR_PROFILE_SYNC="each_login")
    client = app.test_client()
    login_with_wechat(client, wechat_api)
    resp = login_with_wechat(client, wechat_api, nickname="李四✨")
    assert resp.status_code == 302
    assert api_paths(wechat_api) == [TOKEN_PATH, USERINFO_PATH]
    users = all_users(app)
    identities = all_identities(app)
    assert len(users) == 1
    assert len(identities) == 1
    assert users[0].nickname == "李四✨"
    assert identities[0].nickname == "李四✨"
    assert identities[0].profile["nickname"] == "李四✨"


def test_token_without_unionid_then_with_it(app: t.Any, client: t.Any,
                                            wechat_api: t.Any) -> None:
    resp = login_with_wechat(client, wechat_api, unionid=None)
    assert resp.status_code == 302
    assert [i.unionid for i in all_identities(app)] == [None]
    # Later the website app gets bound to an Open Platform account: unionid appears.
    resp = login_with_wechat(client, wechat_api, unionid=UNIONID)
    assert resp.status_code == 302
    identities = all_identities(app)
    assert [i.unionid for i in identities] == [UNIONID]
    assert len(all_users(app)) == 1
    assert api_paths(wechat_api) == [TOKEN_PATH]


def test_unionid_only_in_the_token_is_stored(app: t.Any, client: t.Any,
                                             wechat_api: t.Any) -> None:
    assert login_with_wechat(client, wechat_api, profile_unionid=None).status_code == 302
    assert [i.unionid for i in all_identities(app)] == [UNIONID]


@pytest.mark.parametrize("token_unionid", [True, False], ids=["", "unionid-in-profile-only"])
def test_the_person_of_an_official_account_that_logs_nobody_in_now_is_one_account(
        make_app: t.Any, wechat_api: t.Any, token_unionid: bool) -> None:
    """Someone who signed up inside WeChat (the Official Account's openid, with the
    unionid), then the site unsets the Official Account's AppSecret (the documented
    half-set pair): their QR login made a second account (a helper's hunt); the unionid
    still says who they are, and they log in to the first, also where only the profile
    carries it (a review)."""
    app = make_app(WECHAT_QR_OA_APP_ID="wxfedcba9876543210", WECHAT_QR_OA_APP_SECRET=None)
    user = add_user(app, username="zs")
    link_identity(app, user, openid="o-official-account-zs", wechat_app="official_account")
    client = app.test_client()
    resp = login_with_wechat(client, wechat_api, unionid=UNIONID if token_unionid else None,
                             profile_unionid=UNIONID)
    assert resp.status_code == 302
    assert logged_in_user_id(client) == str(user) and len(all_users(app)) == 1
    assert sorted(i.app for i in all_identities(app)) == ["official_account", "website"]


def test_no_identity_of_a_connection_without_its_credentials_is_a_way_in(
        make_app: t.Any) -> None:
    """A connection whose website AppSecret is unset answers every login with 503, inside
    WeChat too: its Official Account identity (with a unionid) is no way in (a review: the
    person could unlink their last working WeChat)."""
    app = host_app(make_app, WECHAT_QR_CONNECTIONS=[
        {"connection": "wechat", "app_id": APP_ID, "app_secret": None,
         "oa_app_id": "wxfedcba9876543210", "oa_app_secret": "oa-secret"},
        {"connection": "shop", "app_id": APP_ID_B, "app_secret": APP_SECRET}])
    user = add_user(app, username="zs")
    link_identity(app, user, openid="o-official-account-zs", wechat_app="official_account")
    link_identity(app, user, openid="o-shop-zs", connection="shop")
    client = app.test_client()
    log_in(client, user)
    refused = client.post("/auth/shop/unlink", data={"csrf_token": csrf_token_of(client)})
    assert refused.status_code == 409 and error_name(refused) == "LastLoginMethod"


def test_without_an_official_account_configured_a_first_login_reads_no_more(
        make_app: t.Any, wechat_api: t.Any) -> None:
    """A connection with no Official Account configured has no identity of another app to
    find: its first logins do not look (the documented two reads of a first login);
    one that dropped its Official Account entirely keeps its AppID to keep joining them."""
    app = make_app()
    user = add_user(app, username="zs")
    link_identity(app, user, openid="o-official-account-zs", wechat_app="official_account")
    assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
    assert len(all_users(app)) == 2


def test_an_official_account_identity_is_no_way_in_where_nothing_reaches_it(
        make_app: t.Any) -> None:
    """Unlinking another connection's WeChat counted an identity of an Official Account
    that logs nobody in now (its AppSecret unset) and that the QR login cannot reach (no
    unionid) as a way in: the person unlinked their last one (a helper's hunt)."""
    app = host_app(make_app, WECHAT_QR_CONNECTIONS=[
        {"connection": "wechat", "app_id": APP_ID, "app_secret": APP_SECRET,
         "oa_app_id": "wxfedcba9876543210", "oa_app_secret": None},
        {"connection": "shop", "app_id": APP_ID_B, "app_secret": APP_SECRET}])
    user = add_user(app, username="zs")
    link_identity(app, user, openid="o-official-account-zs", unionid=None,
                  wechat_app="official_account")
    link_identity(app, user, openid="o-shop-zs", connection="shop")
    client = app.test_client()
    log_in(client, user)
    refused = client.post("/auth/shop/unlink", data={"csrf_token": csrf_token_of(client)})
    assert refused.status_code == 409 and error_name(refused) == "LastLoginMethod"
    # With its unionid, the QR login finds that identity's person: a way in.
    with app.app_context():
        app.db.session.execute(sa.text(  # type: ignore[attr-defined]
            "UPDATE wechat_qr_identity SET unionid = :u WHERE app = 'official_account'"),
            {"u": UNIONID})
        app.db.session.commit()  # type: ignore[attr-defined]
    assert client.post("/auth/shop/unlink", data={
        "csrf_token": csrf_token_of(client)}).status_code == 302


def test_off_mode_never_matches_on_unionid(make_app: t.Any, wechat_api: t.Any) -> None:
    app = make_app(**two_connections(association="off"))
    client = app.test_client()
    login_with_wechat(client, wechat_api)
    login_with_wechat(client, wechat_api, openid=OPENID_B, connection="wechat-b")
    identities = all_identities(app)
    assert len(all_users(app)) == 2
    assert len({i.user_id for i in identities}) == 2


def test_nickname_never_matches(make_app: t.Any, wechat_api: t.Any) -> None:
    app = make_app(**two_connections(association="field_matching"))
    client = app.test_client()
    login_with_wechat(client, wechat_api)
    login_with_wechat(client, wechat_api, openid=OPENID_B, unionid="oOtherPersonUnionid000000000",
                      connection="wechat-b")
    assert len(all_users(app)) == 2


# --- login only --------------------------------------------------------------------


def test_login_only_refuses_unknown_wechat_accounts(make_app: t.Any, wechat_api: t.Any) -> None:
    app = make_app(WECHAT_QR_LOGIN_ONLY=True)
    client = app.test_client()
    resp = login_with_wechat(client, wechat_api, next="/account")
    assert resp.status_code == 403
    page = resp.get_data(as_text=True)
    assert "No account is linked to this WeChat" in page
    assert "/auth/wechat/login" in page
    assert all_users(app) == []
    assert all_identities(app) == []
    assert logged_in_user_id(client) is None


def test_login_only_refusal_leads_to_the_sites_own_login(make_app: t.Any,
                                                         wechat_api: t.Any) -> None:
    """The refusal tells the person to log in with their account, then link WeChat; before,
    its only button tried WeChat again (refused again) though the site has a login view.
    Now it also leads to that login, on to where the WeChat login was going."""
    app = make_app(WECHAT_QR_LOGIN_ONLY=True)
    app.add_url_rule("/sign-in", "sign_in", lambda: "the site's login form")
    app.login_manager.login_view = "sign_in"  # type: ignore[attr-defined]
    resp = login_with_wechat(app.test_client(), wechat_api, next="/account")
    assert resp.status_code == 403 and error_name(resp) == "LoginRefused"
    page = resp.get_data(as_text=True)
    assert '<a class="wechat-qr-button" href="/sign-in?next=%2Faccount"' in page
    assert "Log in to your account" in page


def test_login_only_logs_in_a_linked_account(make_app: t.Any, wechat_api: t.Any) -> None:
    app = make_app(WECHAT_QR_LOGIN_ONLY=True)
    user_id = add_user(app, username="alice", nickname="Alice")
    link_identity(app, user_id)
    client = app.test_client()
    resp = login_with_wechat(client, wechat_api)
    assert resp.status_code == 302
    assert logged_in_user_id(client) == str(user_id)
    assert len(all_users(app)) == 1
    assert len(all_identities(app)) == 1
    # The local account keeps its own name: first_login sync only applies to new users.
    assert all_users(app)[0].nickname == "Alice"


def test_login_only_with_field_matching_links_but_never_creates(make_app: t.Any,
                                                                wechat_api: t.Any) -> None:
    app = make_app(**two_connections(association="field_matching", login_only=True))
    user_id = add_user(app, username="alice")
    link_identity(app, user_id, openid=OPENID, unionid=UNIONID, connection="wechat")
    client = app.test_client()
    resp = login_with_wechat(client, wechat_api, openid=OPENID_B, connection="wechat-b")
    assert resp.status_code == 302
    assert logged_in_user_id(client) == str(user_id)
    resp = login_with_wechat(app.test_client(), wechat_api, openid="oStranger0000000000000000000",
                             unionid="oStrangerUnion00000000000000", connection="wechat-b")
    assert resp.status_code == 403
    assert len(all_users(app)) == 1


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
    assert identity_links(app) == [("wechat", OPENID, str(alice)),
                                  ("wechat-b", OPENID_B, str(alice))]
    assert [u.id for u in all_users(app)] == [alice]
    assert all_users(app)[0].nickname == "Alice"  # first_login: a matched user keeps it
    assert [(name, kw.get("via")) for name, kw in events] == [("identity_linked", "match")]


# --- field matching ----------------------------------------------------------------


def test_field_matching_recognises_a_user_across_connections(make_app: t.Any,
                                                             wechat_api: t.Any) -> None:
    app = make_app(**two_connections(association="field_matching"))
    client = app.test_client()
    assert login_with_wechat(client, wechat_api).status_code == 302
    user = all_users(app)[0]

    other_browser = app.test_client()
    resp = login_with_wechat(other_browser, wechat_api, openid=OPENID_B, connection="wechat-b")
    assert resp.status_code == 302
    # The token of connection B was fetched with B's own AppID.
    assert [q["appid"] for q in api_queries(wechat_api, TOKEN_PATH)] == [APP_ID_B]

    assert [u.id for u in all_users(app)] == [user.id]
    identities = all_identities(app)
    assert [(i.connection, i.openid, i.unionid, i.user_id) for i in identities] == [
        ("wechat", OPENID, UNIONID, str(user.id)),
        ("wechat-b", OPENID_B, UNIONID, str(user.id)),
    ]
    assert logged_in_user_id(other_browser) == str(user.id)


def test_field_matching_without_a_match_creates_a_user(make_app: t.Any,
                                                       wechat_api: t.Any) -> None:
    app = make_app(**two_connections(association="field_matching"))
    add_user(app, username="alice")
    client = app.test_client()
    resp = login_with_wechat(client, wechat_api, connection="wechat-b")
    assert resp.status_code == 302
    users = all_users(app)
    assert [u.username for u in users][0] == "alice"
    assert len(users) == 2
    assert logged_in_user_id(client) == str(users[1].id)
    assert [i.user_id for i in all_identities(app)] == [str(users[1].id)]


def test_field_matching_without_unionid_creates_a_user(make_app: t.Any,
                                                       wechat_api: t.Any) -> None:
    app = make_app(**two_connections(association="field_matching"))
    user_id = add_user(app, username="alice")
    link_identity(app, user_id, unionid=None)
    resp = login_with_wechat(app.test_client(), wechat_api, openid=OPENID_B, unionid=None,
                             connection="wechat-b")
    assert resp.status_code == 302
    assert len(all_users(app)) == 2


def test_field_matching_refuses_an_ambiguous_unionid(make_app: t.Any, wechat_api: t.Any) -> None:
    app = make_app(**two_connections(association="field_matching"))
    link_identity(app, add_user(app, username="alice"), openid="oA", connection="wechat")
    link_identity(app, add_user(app, username="bob"), openid="oB", connection="wechat")
    client = app.test_client()
    resp = login_with_wechat(client, wechat_api, openid=OPENID_B, connection="wechat-b")
    assert resp.status_code == 302
    users = all_users(app)
    assert len(users) == 3
    assert logged_in_user_id(client) == str(users[2].id)


# --- failures never leave half a login behind ----------------------------------------


def _fail(*args: t.Any, **kwargs: t.Any) -> t.NoReturn:
    raise RuntimeError("the database went away")


@pytest.mark.parametrize("where", ["identity_insert", "get_user_id"])
def test_never_a_half_created_user(app: t.Any, client: t.Any, wechat_api: t.Any,
                                   monkeypatch: pytest.MonkeyPatch,
                                   request: pytest.FixtureRequest, where: str) -> None:
    """The database (writing the identity, after the user) or the host's adapter fails in
    the middle of a first login: nothing of it stays."""
    if where == "identity_insert":
        def insert(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
            if statement.lstrip().upper().startswith("INSERT INTO WECHAT_QR_IDENTITY"):
                _fail()

        with app.app_context():
            engine = app.db.engine
        sa.event.listen(engine, "before_cursor_execute", insert)
        request.addfinalizer(lambda: sa.event.remove(engine, "before_cursor_execute", insert))
    else:
        monkeypatch.setattr(AccountAdapter, "get_user_id", _fail)
    with pytest.raises(RuntimeError, match="went away"):
        login_with_wechat(client, wechat_api)
    assert all_users(app) == []
    assert all_identities(app) == []
    assert logged_in_user_id(client) is None


def test_profile_failure_after_the_token_leaves_nothing(app: t.Any, client: t.Any,
                                                        wechat_api: t.Any) -> None:
    state = start_login(client)
    wechat_api.token()
    wechat_api.error(USERINFO_PATH, 40003, "invalid openid")
    assert finish_login(client, state).status_code == 502
    assert all_users(app) == []
    assert all_identities(app) == []


def _identity_made_while_the_profile_is_asked(app: t.Any, monkeypatch: pytest.MonkeyPatch,
                                              user_id: int | None,
                                              username: str = "winner") -> list[int]:
    """While WeChat answers for the profile, another request (the same person's other tab)
    commits the identity of ``OPENID`` for ``user_id``, or for a user 77 (``username``) it
    makes; the list gets that user's id."""
    real_userinfo = WeChatClient.userinfo
    identities = table(app, "wechat_qr_identity")
    made: list[int] = []

    def userinfo(self: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
        profile = real_userinfo(self, *args, **kwargs)
        if not made:
            owner = 77 if user_id is None else user_id
            now = datetime.now(UTC)
            with app.db.engine.begin() as conn:  # the other request's own connection
                if user_id is None:
                    conn.execute(sa.insert(app.User.__table__).values(
                        id=owner, username=username, nickname=NICKNAME))
                conn.execute(sa.insert(identities).values(
                    connection="wechat", openid=OPENID, unionid=UNIONID, user_id=str(owner),
                    created_at=now, last_login_at=now))
            made.append(owner)
        return profile

    monkeypatch.setattr(WeChatClient, "userinfo", userinfo)
    return made


@pytest.mark.parametrize("how", [
    "association off", "signed up inside WeChat", "ask binding", "the site's own can_signup",
    "field matching on the profile's unionid, login only"])
def test_an_identity_made_while_the_profile_is_asked_logs_in_as_its_user(
        make_app: t.Any, wechat_api: t.Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, how: str) -> None:
    """The run after the profile looks for the identity again wherever one made meanwhile
    changes the ending before any insert: a first version skipped the look everywhere and
    ended such logins on "already linked" (409), a bind page, or a refusal (a review,
    session 38). Where only a sign-up can follow, the unique key refuses the second
    identity and the login runs again: one user, no user_created, nothing above INFO."""
    owner: int | None = None
    extra: dict[str, t.Any] = {}
    if how == "signed up inside WeChat":
        app = make_app(WECHAT_QR_OA_APP_ID="wxfedcba9876543210",
                       WECHAT_QR_OA_APP_SECRET="oa-secret-of-the-test")
        owner = add_user(app, username="zs")
        link_identity(app, owner, openid="o-official-account-zs", wechat_app="official_account")
    elif how == "ask binding":
        app = make_app(WECHAT_QR_ASSOCIATION="ask_binding")
    elif how == "field matching on the profile's unionid, login only":
        app = make_app(WECHAT_QR_ASSOCIATION="field_matching", WECHAT_QR_LOGIN_ONLY=True,
                       WECHAT_QR_MATCH_FIELDS=["unionid"])
        owner = add_user(app, username="alice")
        extra = {"unionid": None, "profile_unionid": UNIONID}
    else:
        app = make_app()
    if how == "the site's own can_signup":
        def one_account_only(self: t.Any, connection: t.Any) -> bool:  # a quota: one
            with app.db.engine.connect() as conn:
                return not conn.execute(sa.select(sa.func.count()).select_from(
                    app.User.__table__)).scalar()

        monkeypatch.setattr(AccountAdapter, "can_signup", one_account_only)
    made = _identity_made_while_the_profile_is_asked(app, monkeypatch, owner)
    client = app.test_client()
    with recording(app, "user_created", "login_refused") as events, \
            caplog.at_level(logging.INFO, logger="flask_wechat_qr"):
        resp = login_with_wechat(client, wechat_api, **extra)
    assert resp.status_code == 302, (resp.status_code, error_name(resp))
    assert resp.headers["Location"] == "/"
    assert api_paths(wechat_api).count(USERINFO_PATH) == 1  # the profile asked once
    assert made and logged_in_user_id(client) == str(made[0])
    assert len(all_users(app)) == 1
    assert [i.user_id for i in all_identities(app) if i.app == "website"] == [str(made[0])]
    assert events == []
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.INFO] == []


class _NameTaken(Exception):
    """A site's own create_user's refusal of a name taken."""


@pytest.mark.parametrize("how", ["the site's own create_user checks the name first",
                                 "the site's own create_user sends a welcome",
                                 "the site's own populate_user sends a welcome"])
def test_a_sites_own_hooks_never_run_for_an_identity_made_while_the_profile_is_asked(
        make_app: t.Any, wechat_api: t.Any, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """A site's own create_user or populate_user may act on what it finds (a name taken)
    or outside the database (mail): the run after the profile looks for the identity
    again, as it did before, and finds the one the other tab made (a second review,
    session 38: the login raised the site's error, a 500, or the welcome went out for an
    account rolled back)."""
    app = make_app()
    welcomed: list[str] = []

    def create_user(self: t.Any, connection: t.Any, profile: t.Any) -> t.Any:
        username = f"wx_{profile.openid}"
        if "checks the name" in how and app.db.session.execute(
                sa.select(app.User.id).where(app.User.username == username)).first():
            raise _NameTaken(username)
        if "create_user sends" in how:
            welcomed.append(username)
        user = app.User(username=username)
        app.db.session.add(user)
        return user

    real_populate_user = AccountAdapter.populate_user

    def populate_user(self: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
        welcomed.append("populated")
        return real_populate_user(self, *args, **kwargs)

    if "populate_user" in how:
        monkeypatch.setattr(AccountAdapter, "populate_user", populate_user)
    else:
        monkeypatch.setattr(AccountAdapter, "create_user", create_user)
    made = _identity_made_while_the_profile_is_asked(app, monkeypatch, None, f"wx_{OPENID}")
    client = app.test_client()
    with recording(app, "user_created") as created:
        resp = login_with_wechat(client, wechat_api)
    assert resp.status_code == 302, (resp.status_code, error_name(resp))
    assert made == [77] and logged_in_user_id(client) == "77"
    assert [u.id for u in all_users(app)] == [77]
    assert created == [] and welcomed == []


def test_an_identity_made_while_the_profile_is_asked_at_each_isolation_level(
        make_app: t.Any, wechat_api: t.Any, monkeypatch: pytest.MonkeyPatch,
        database: t.Any) -> None:
    """The unique key's refusal and the run after it, at each level the database has."""
    levels = ["SERIALIZABLE", "AUTOCOMMIT"]
    if database.backend != "sqlite":  # SQLite has no REPEATABLE READ
        levels.append("REPEATABLE READ")
    for level in levels:
        app = make_app(SQLALCHEMY_ENGINE_OPTIONS={"isolation_level": level})
        made = _identity_made_while_the_profile_is_asked(app, monkeypatch, None)
        client = app.test_client()
        with recording(app, "user_created") as created:
            resp = login_with_wechat(client, wechat_api)
        assert resp.status_code == 302, (level, resp.status_code, error_name(resp))
        assert made == [77] and logged_in_user_id(client) == "77", level
        assert [u.id for u in all_users(app)] == [77], level
        assert created == [], level


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
    assert identity_links(app) == [("wechat", OPENID, str(user.id))]
    assert [logged_in_user_id(b) for b in browsers] == [str(user.id)] * 2
    assert len(events) == 1  # one user_created, for the user that exists
    assert events[0][1]["user_id"] == user.id


def test_deleted_host_user_gets_a_fresh_user(make_app: t.Any, wechat_api: t.Any) -> None:
    """Without the foreign key (turned off), a user deleted behind the ORM's back (raw SQL)
    leaves a stale identity behind, which the next login of that WeChat removes."""
    app = make_app(WECHAT_QR_USER_FOREIGN_KEY=False)
    client = app.test_client()
    login_with_wechat(client, wechat_api)
    old_id = all_users(app)[0].id
    add_user(app, username="alice")  # keeps the old id from being handed out again
    with app.app_context():
        app.db.session.execute(sa.text(f"DELETE FROM {quoted(app, 'user')} WHERE id = :id"),
                               {"id": old_id})
        app.db.session.commit()
    assert [i.user_id for i in all_identities(app)] == [str(old_id)]  # stale

    browser = app.test_client()
    resp = login_with_wechat(browser, wechat_api, nickname="新的我")
    assert resp.status_code == 302
    users = all_users(app)
    assert [u.username for u in users][0] == "alice"
    new_user = users[1]
    assert new_user.id != old_id
    assert new_user.nickname == "新的我"
    identities = all_identities(app)
    assert [(i.openid, i.user_id) for i in identities] == [(OPENID, str(new_user.id))]
    assert logged_in_user_id(browser) == str(new_user.id)


def test_deleted_host_user_in_login_only_mode_is_refused(make_app: t.Any,
                                                         wechat_api: t.Any) -> None:
    app = make_app(WECHAT_QR_LOGIN_ONLY=True)
    user_id = add_user(app, username="gone")
    link_identity(app, user_id)
    with app.app_context():
        app.db.session.delete(app.db.session.get(app.User, user_id))
        app.db.session.commit()
    resp = login_with_wechat(app.test_client(), wechat_api)
    assert resp.status_code == 403
    assert all_users(app) == []


def test_inactive_user_is_not_logged_in(app: t.Any, wechat_api: t.Any,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A host user Flask-Login refuses (``is_active`` False, e.g. banned) gets a page that
    says so; the login does not pretend to succeed."""
    user_id = add_user(app, username="banned")
    link_identity(app, user_id)
    monkeypatch.setattr(app.User, "is_active", property(lambda self: self.username != "banned"))
    succeeded = []
    client = app.test_client()
    with signals.login_succeeded.connected_to(lambda sender, **kw: succeeded.append(kw),
                                              sender=app):
        resp = login_with_wechat(client, wechat_api, next="/account")
    assert resp.status_code == 403
    assert "disabled" in resp.get_data(as_text=True)
    assert succeeded == []
    assert logged_in_user_id(client) is None


def test_reused_user_id_does_not_inherit_a_deleted_users_wechat(app: t.Any, client: t.Any,
                                                                wechat_api: t.Any) -> None:
    login_with_wechat(client, wechat_api)
    old_id = all_users(app)[0].id
    with app.app_context():
        app.db.session.delete(app.db.session.get(app.User, old_id))
        app.db.session.commit()
    # SQLite hands the highest free rowid out again; any database may reuse an id.
    stranger_id = add_user(app, username="stranger", id=old_id)
    assert stranger_id == old_id

    browser = app.test_client()
    login_with_wechat(browser, wechat_api)
    assert logged_in_user_id(browser) != str(stranger_id)


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


# --- link: WeChat added from the account page ---------------------------------------------


def test_link_needs_a_logged_in_user(make_app: t.Any) -> None:
    app = host_app(make_app)
    client = app.test_client()
    resp = client.get("/auth/wechat/link")
    assert resp.status_code == 401
    assert error_name(resp) == "NotLoggedIn"
    assert "Log in first" in resp.get_data(as_text=True)
    assert "Location" not in resp.headers


def test_link_sends_a_logged_out_person_to_the_sites_login_and_back(make_app: t.Any) -> None:
    """Before: the "Log in first" page, whose only link started a WeChat login (which logs
    in, or makes an account, instead of linking)."""
    app = host_app(make_app)
    app.add_url_rule("/sign-in", "sign_in", lambda: "the site's login form")
    app.login_manager.login_view = "sign_in"  # type: ignore[attr-defined]
    resp = app.test_client().get("/auth/wechat/link")
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/sign-in?next=%2Fauth%2Fwechat%2Flink"
    # A site's own unauthorized handler decides instead.
    app.login_manager.unauthorized_handler(  # type: ignore[attr-defined]
        lambda: ("ask the site", 403))
    resp = app.test_client().get("/auth/wechat/link")
    assert resp.status_code == 403 and resp.get_data(as_text=True) == "ask the site"


def test_link_with_a_login_view_that_cannot_be_built_shows_log_in_first(
        make_app: t.Any) -> None:
    """A login view that needs arguments cannot be a redirect here: the page, not a 500."""
    app = host_app(make_app)
    app.add_url_rule("/sign-in/<tenant>", "sign_in", lambda tenant: tenant)
    app.login_manager.login_view = "sign_in"  # type: ignore[attr-defined]
    resp = app.test_client().get("/auth/wechat/link")
    assert resp.status_code == 401 and error_name(resp) == "NotLoggedIn"


@pytest.mark.parametrize("other_login", [None, "/login/"])
def test_log_in_first_offers_the_sites_login_not_wechats(make_app: t.Any,
                                                        other_login: str | None) -> None:
    """A login view Flask-Login cannot build (Flask-AppBuilder's ``"login"``, which is no
    endpoint): the "Log in first" page. Before, its one button, "Try again", started a
    WeChat login, which made a second account instead of linking; now it leads to the
    site's other login (:setting:`WECHAT_QR_OTHER_LOGIN_URL`), or nowhere but back."""
    config = {"WECHAT_QR_OTHER_LOGIN_URL": other_login} if other_login else {}
    app = host_app(make_app, **config)
    app.login_manager.login_view = "login"  # type: ignore[attr-defined]
    resp = app.test_client().get("/auth/wechat/link", headers={"Accept-Language": "zh-CN"})
    assert resp.status_code == 401 and error_name(resp) == "NotLoggedIn"
    page = resp.get_data(as_text=True)
    assert "/auth/wechat/login" not in page and "重试" not in page
    if other_login:  # and back to the link after that login, as Flask-Login sends people
        assert (f'<a class="wechat-qr-button" href="{other_login}?next=%2Fauth%2Fwechat%2Flink"'
                in page)
        assert "登录你的账号" in page
    else:
        assert 'class="wechat-qr-button"' not in page


def test_log_in_first_leads_to_a_login_view_given_as_a_url(make_app: t.Any) -> None:
    """Flask-Login takes a ``login_view`` that is a URL as it is; so does the "Log in first"
    page's way to the site's login (found in review: it asked ``url_for`` and offered
    none). The link itself is sent there by Flask-Login, with its next."""
    app = host_app(make_app)
    app.login_manager.login_view = "https://accounts.example.com/login"  # type: ignore[attr-defined]
    resp = app.test_client().get("/auth/wechat/link")
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("https://accounts.example.com/login?next=")
    from flask_wechat_qr.delivery import other_login_url

    with app.test_request_context("/auth/wechat/link"):
        assert other_login_url() == "https://accounts.example.com/login"


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
    # The user object itself, as the docs say: it was Flask-Login's current_user proxy (a
    # helper's docs walk, session 35), which a receiver keeping it could not use later.
    assert events[0][1]["user_type"] is app.User  # type: ignore[attr-defined]

    # The linked WeChat now logs in as alice.
    other = app.test_client()
    resp = login_with_wechat(other, wechat_api)
    assert resp.status_code == 302
    assert logged_in_user_id(other) == str(alice)
    assert [u.id for u in all_users(app)] == [alice, bob]


def test_link_without_next_lands_on_the_post_login_url(make_app: t.Any,
                                                       wechat_api: t.Any) -> None:
    app = host_app(make_app, WECHAT_QR_POST_LOGIN_URL="/account")
    users = []
    for n, next_url in enumerate((None, "https://evil.example/steal", "//evil.example")):
        users.append(add_user(app, username=f"user{n}", password="pw"))
        client = app.test_client()
        log_in(client, users[-1])
        params = {"next": next_url} if next_url else {}
        state = start_link(client, **params)
        resp = scan(wechat_api, client, state, openid=f"o-link-{n}", unionid=None)
        assert resp.status_code == 302
        assert resp.headers["Location"] == "/account"
    assert identity_links(app) == [("wechat", f"o-link-{n}", str(user))
                                   for n, user in enumerate(users)]


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
    assert identity_links(app) == [("wechat", OPENID, str(alice))]
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
    assert identity_links(app) == [("wechat", OPENID, str(bob))]
    assert logged_in_user_id(client) == str(alice)
    assert [u.id for u in all_users(app)] == [alice, bob]
    # "Try again" links again (another WeChat, say). It was a WeChat login, which logged
    # the person out of alice into bob's account (found by a newcomer); "Back to the site"
    # is the page the link started from.
    links = [a["href"] for a in find_tags(resp.get_data(as_text=True), "a")]
    assert links == ["/auth/wechat/link?next=/account", "/account"]


def test_linking_again_what_is_linked_goes_straight_back(make_app: t.Any) -> None:
    """Logged out, "Link WeChat" leads to the site's login page; logging in there with
    WeChat and coming back to the link showed a second QR code, for the WeChat just used
    (found by a newcomer). Linked already on this connection: back to ``next`` at once."""
    app = host_app(make_app)
    alice = add_user(app, username="alice", password="pw")
    link_identity(app, alice, openid=OPENID_2, unionid=UNIONID_2)
    client = app.test_client()
    log_in(client, alice)
    resp = client.get("/auth/wechat/link", query_string={"next": "/account"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/account"
    assert identity_links(app) == [("wechat", OPENID_2, str(alice))]


def test_a_second_wechat_on_the_same_connection_is_refused(make_app: t.Any,
                                                           wechat_api: t.Any) -> None:
    """Linked (in another tab, say) while this link was at WeChat."""
    app = host_app(make_app)
    alice = add_user(app, username="alice", password="pw")
    client = app.test_client()
    log_in(client, alice)
    state = start_link(client)
    link_identity(app, alice, openid=OPENID_2, unionid=UNIONID_2)
    with recording(app, "identity_linked") as events:
        resp = scan(wechat_api, client, state)
    assert resp.status_code == 409
    assert error_name(resp) == "ConnectionAlreadyLinked"
    assert "already has a WeChat account linked" in resp.get_data(as_text=True)
    assert events == []
    # nothing to try again before unlinking: only the way back
    links = [a["href"] for a in find_tags(resp.get_data(as_text=True), "a")]
    assert links == ["/"]
    assert identity_links(app) == [("wechat", OPENID_2, str(alice))]


def test_relinking_the_same_wechat_changes_nothing(make_app: t.Any, wechat_api: t.Any) -> None:
    """Linked (in another tab, say) while this link was at WeChat, to the same WeChat."""
    app = host_app(make_app)
    alice = add_user(app, username="alice", password="pw")
    client = app.test_client()
    log_in(client, alice)
    state = start_link(client, next="/account")
    link_identity(app, alice)
    with recording(app, "identity_linked") as events:
        resp = scan(wechat_api, client, state)
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/account"
    assert events == []
    assert identity_links(app) == [("wechat", OPENID, str(alice))]
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
    assert identity_links(app) == [("wechat", OPENID, str(alice)),
                                  ("wechat-b", OPENID_B, str(alice))]


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


def test_a_cancelled_link_reloaded_late_is_tried_again_as_a_link(
        make_app: t.Any, wechat_api: t.Any, clock: t.Any) -> None:
    """Its page reloaded a while later still says "cancelled", and "Try again" still links
    (a WeChat login there would switch the person into whichever account the WeChat
    scanned belongs to)."""
    app = host_app(make_app)
    client = app.test_client()
    log_in(client, add_user(app, username="alice", password="pw"))
    state = start_link(client, next="/account")
    first = client.get("/auth/wechat/callback", query_string={"state": state})
    clock.advance(3600)
    again = client.get("/auth/wechat/callback", query_string={"state": state})
    for resp in (first, again):
        assert (resp.status_code, error_name(resp)) == (200, "LoginCancelled")
        links = [a["href"] for a in find_tags(resp.get_data(as_text=True), "a")]
        assert links == ["/auth/wechat/link?next=/account", "/account"]
    assert all_identities(app) == [] and len(wechat_api.mock.calls) == 0


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
    assert identity_links(app) == [("wechat", OPENID, str(alice))]


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
    assert events[0][1]["user_type"] is app.User  # type: ignore[attr-defined]

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


def test_a_wechat_of_a_connection_no_longer_configured_is_no_way_in(make_app: t.Any) -> None:
    """A WeChat-only user with identities of two connections, one since removed from the
    settings (its login page is a 404): unlinking the other left them no way in, and was
    allowed, the removed one counted (a helper's hunt, session 34)."""
    app = host_app(make_app)
    carol = add_user(app, username="carol")  # no password
    link_identity(app, carol, connection="wechat")
    link_identity(app, carol, openid=OPENID_2, connection="removed-since")
    client = app.test_client()
    log_in(client, carol)
    resp = client.post("/auth/wechat/unlink", data={"csrf_token": csrf_token_of(client)})
    assert resp.status_code == 409 and error_name(resp) == "LastLoginMethod"
    assert sorted(c for c, _o, _u in identity_links(app)) == ["removed-since", "wechat"]


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
    # no WeChat login offered to someone logged in; back to the account page it came from
    again = client.post("/auth/wechat/unlink",
                        data={"csrf_token": csrf_token_of(client), "next": "/account"})
    links = [a["href"] for a in find_tags(again.get_data(as_text=True), "a")]
    assert links == ["/account"]
    assert identity_links(app) == [("wechat", OPENID, str(user.id))]
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
    assert identity_links(app) == [("wechat", OPENID, str(user.id)),
                                  ("wechat-b", OPENID_B, str(user.id))]

    resp = client.post("/auth/wechat/unlink", data={"csrf_token": csrf_token_of(client)})
    assert resp.status_code == 302
    assert identity_links(app) == [("wechat-b", OPENID_B, str(user.id))]
    # Now B is the last way in.
    resp = client.post("/auth/wechat-b/unlink", data={"csrf_token": csrf_token_of(client)})
    assert resp.status_code == 409
    assert identity_links(app) == [("wechat-b", OPENID_B, str(user.id))]


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
    assert identity_links(app) == [("wechat-b", OPENID_B, str(alice))]


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
    assert identity_links(app) == [("wechat", OPENID, str(bob))]
