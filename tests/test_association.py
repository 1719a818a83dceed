"""The association policy through the real callback: who a WeChat login logs in as."""

from __future__ import annotations

import typing as t
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from support import (
    APP_ID_B,
    AVATAR,
    NICKNAME,
    OPENID,
    OPENID_B,
    TOKEN_PATH,
    UNIONID,
    USERINFO_PATH,
    add_user,
    all_identities,
    all_users,
    api_paths,
    api_queries,
    finish_login,
    link_identity,
    logged_in_user_id,
    login_with_wechat,
    start_login,
    table,
    two_connections,
)

from flask_wechat_qr import association
from flask_wechat_qr.client import WeChatClient


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


def test_openid_is_unique_per_connection(app: t.Any) -> None:
    link_identity(app, add_user(app, username="a"))
    with pytest.raises(sa.exc.IntegrityError):
        link_identity(app, add_user(app, username="b"))


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
    assert _aware(identities[0].last_login_at) > _aware(first.last_login_at)


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


@pytest.mark.parametrize("where", ["store_profile", "get_user_id"])
def test_never_a_half_created_user(app: t.Any, client: t.Any, wechat_api: t.Any,
                                   monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    if where == "store_profile":
        monkeypatch.setattr(association, "_store_profile", _fail)
    else:
        adapter = app.extensions["wechat_qr"].adapter
        monkeypatch.setattr(adapter, "get_user_id", _fail)
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


def test_identity_created_concurrently_ends_in_one_user(app: t.Any, client: t.Any,
                                                        wechat_api: t.Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Another request creates the same identity between our lookup and our insert."""
    real_userinfo = WeChatClient.userinfo
    identity_table = table(app, "wechat_qr_identity")
    calls = []

    def userinfo_while_another_request_wins(self: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
        profile = real_userinfo(self, *args, **kwargs)
        calls.append(1)
        with app.db.engine.begin() as conn:  # the other request's own connection
            conn.execute(sa.insert(app.User.__table__).values(id=77, username="winner",
                                                              nickname=NICKNAME))
            now = datetime.now(UTC)
            conn.execute(sa.insert(identity_table).values(
                connection="wechat", openid=OPENID, unionid=UNIONID, user_id="77",
                created_at=now, last_login_at=now))
        return profile

    monkeypatch.setattr(WeChatClient, "userinfo", userinfo_while_another_request_wins)
    resp = login_with_wechat(client, wechat_api)
    assert resp.status_code == 302
    assert calls == [1]
    assert [u.id for u in all_users(app)] == [77]
    identities = all_identities(app)
    assert [(i.openid, i.user_id) for i in identities] == [(OPENID, "77")]
    assert logged_in_user_id(client) == "77"


def test_deleted_host_user_gets_a_fresh_user(app: t.Any, client: t.Any,
                                             wechat_api: t.Any) -> None:
    """A user deleted behind the ORM's back (raw SQL) leaves a stale identity behind."""
    login_with_wechat(client, wechat_api)
    old_id = all_users(app)[0].id
    add_user(app, username="alice")  # keeps the old id from being handed out again
    with app.app_context():
        app.db.session.execute(app.db.delete(app.User).where(app.User.id == old_id))
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
    from flask_wechat_qr import signals

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
