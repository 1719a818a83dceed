"""Profiles refreshed off the login's path (refresh.py, ``WECHAT_QR_PROFILE_REFRESH_AFTER``):
a returning login with a stale profile still makes exactly one WeChat call and answers
before the refresh reads the profile; the refresh happens once per identity, also across
workers on one database; placeholders never overwrite; a new avatar is stored; a failure
waits before it is tried again; the host hears of it through ``profile_refreshed``."""

from __future__ import annotations

import sys
import threading
import typing as t
from datetime import UTC, datetime, timedelta

import pytest
import responses
import sqlalchemy as sa
from flask import Flask, has_request_context
from support import (
    API,
    AVATAR,
    OPENID,
    OPENID_2,
    TOKEN_PATH,
    UNIONID,
    UNIONID_2,
    USERINFO_PATH,
    WeChatAPI,
    all_identities,
    all_users,
    api_paths,
    app_factory,
    finish_login,
    login_with_wechat,
    make_test_app,
    recording,
    start_login,
    table,
)

from flask_wechat_qr import refresh, signals
from flask_wechat_qr.client import WeChatToken
from flask_wechat_qr.placeholders import PLACEHOLDER_AVATAR_IDS

WEEK = 7 * 24 * 3600
NEW_NICKNAME = "张三丰🐉"
NEW_AVATAR = "https://thirdwx.qlogo.cn/mmopen/vi_32/NEWAVATAR/132"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


#: Under TESTING the refresh is off unless set: these tests set it.
REFRESHING = {"WECHAT_QR_PROFILE_REFRESH_AFTER": WEEK}


def _refresher(app: Flask) -> t.Any:
    """The app's refresher, to wait for its background work (the one seam of this file)."""
    return app.extensions["wechat_qr"].refresher


def settle(app: Flask) -> None:
    assert _refresher(app).wait(10), "the profile refresh did not end"


def age_profiles(app: Flask, seconds: float = WEEK + 60) -> None:
    """Make every identity's profile as old as ``seconds`` (as if read that long ago)."""
    identities = table(app, "wechat_qr_identity")
    with app.app_context():
        db = app.db  # type: ignore[attr-defined]
        db.session.execute(sa.update(identities).values(
            profile_refreshed_at=datetime.now(UTC) - timedelta(seconds=seconds),
            created_at=datetime.now(UTC) - timedelta(seconds=seconds)))
        db.session.commit()


def delete_identities(app: Flask) -> None:
    """Every identity gone (unlinked) behind the extension's back."""
    identities = table(app, "wechat_qr_identity")
    with app.app_context():
        app.db.session.execute(sa.delete(identities))  # type: ignore[attr-defined]
        app.db.session.commit()  # type: ignore[attr-defined]


def refreshed_at(app: Flask) -> list[datetime]:
    with app.app_context():
        return [_utc(i.profile_refreshed_at) for i in all_identities(app)]


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class HeldUserinfo:
    """``/sns/userinfo`` answering only once the test lets it: proves a login answered
    before its refresh read the profile, and keeps refreshes running while others start."""

    def __init__(self, api: WeChatAPI, others: dict[str, dict[str, t.Any]] | None = None,
                 **profile: t.Any) -> None:
        self.release = threading.Event()
        self.calls = 0
        #: profiles of other openids, answered at once (not counted)
        self.others = others or {}
        self.profile = {"openid": OPENID, "unionid": UNIONID, "nickname": NEW_NICKNAME,
                        "sex": 0, "language": "", "city": "", "province": "", "country": "",
                        "headimgurl": AVATAR, "privilege": [], **profile}
        api.mock.add_callback(responses.GET, API + USERINFO_PATH, callback=self.answer,
                              content_type="text/plain")

    def answer(self, request: t.Any) -> tuple[int, dict[str, str], bytes]:
        import json
        from urllib.parse import parse_qs, urlsplit

        openid = parse_qs(urlsplit(request.url).query)["openid"][0]
        if openid in self.others:
            return 200, {}, json.dumps(self.others[openid], ensure_ascii=False).encode()
        self.calls += 1
        assert self.release.wait(10)
        body = {**self.profile, "openid": openid}
        return 200, {}, json.dumps(body, ensure_ascii=False).encode()


def returning_login(app: Flask, api: WeChatAPI, openid: str = OPENID,
                    unionid: str = UNIONID) -> t.Any:
    """A returning person's login, its WeChat answers set up anew (the token only)."""
    api.token(openid=openid, unionid=unionid)
    client = app.test_client()
    return finish_login(client, start_login(client))


@pytest.fixture
def known(make_app: t.Callable[..., Flask], wechat_api: WeChatAPI) -> Flask:
    """A site where one person logged in a week and a minute ago."""
    app = make_app(**REFRESHING)
    assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
    age_profiles(app)
    wechat_api.mock.reset()
    return app


# --- off the login's path, once --------------------------------------------------------------


def test_a_stale_profile_is_refreshed_after_a_one_call_login(known: Flask,
                                                              wechat_api: WeChatAPI) -> None:
    held = HeldUserinfo(wechat_api)
    resp = returning_login(known, wechat_api)
    # The login has answered while the refresh still waits for WeChat's profile.
    assert resp.status_code == 302
    assert [i.nickname for i in all_identities(known)] == ["张三🐼"]
    held.release.set()
    settle(known)
    assert api_paths(wechat_api) == [TOKEN_PATH, USERINFO_PATH]
    assert held.calls == 1
    identity, = all_identities(known)
    assert identity.nickname == NEW_NICKNAME
    assert identity.profile["nickname"] == NEW_NICKNAME
    assert refreshed_at(known)[0] > datetime.now(UTC) - timedelta(seconds=60)
    # The user record follows the sync setting (first_login): unchanged.
    assert [u.nickname for u in all_users(known)] == ["张三🐼"]


def test_a_fresh_profile_is_not_refreshed(known: Flask, wechat_api: WeChatAPI) -> None:
    age_profiles(known, WEEK - 3600)
    wechat_api.userinfo(nickname=NEW_NICKNAME)
    assert returning_login(known, wechat_api).status_code == 302
    settle(known)
    assert api_paths(wechat_api) == [TOKEN_PATH]
    assert [i.nickname for i in all_identities(known)] == ["张三🐼"]


def test_logins_during_a_refresh_start_no_second_one(known: Flask,
                                                     wechat_api: WeChatAPI) -> None:
    held = HeldUserinfo(wechat_api)
    for _ in range(3):
        assert returning_login(known, wechat_api).status_code == 302
    held.release.set()
    settle(known)
    assert held.calls == 1
    # Refreshed now: the next login reads nothing.
    wechat_api.mock.reset()
    assert returning_login(known, wechat_api).status_code == 302
    settle(known)
    assert api_paths(wechat_api) == [TOKEN_PATH]


def test_logins_of_one_person_on_two_workers_refresh_once(database: t.Any, tmp_path: t.Any,
                                                 wechat_api: WeChatAPI) -> None:
    """Two workers (two apps on one database, each with its own refresher) log the same
    person in, one after the other, while the first one's refresh still waits for WeChat:
    the second worker reads the claim the first committed and starts none. (Two refreshes
    that both begin are settled by the claim itself: the test below.)"""
    url = database.url("shared")
    with app_factory(lambda name: make_test_app(_folder(tmp_path, name), url,
                                                     **REFRESHING)) as build:
        first, second = build("w1"), build("w2")
        assert login_with_wechat(first.test_client(), wechat_api).status_code == 302
        age_profiles(first)
        wechat_api.mock.reset()
        held = HeldUserinfo(wechat_api)
        assert returning_login(first, wechat_api).status_code == 302
        assert returning_login(second, wechat_api).status_code == 302
        held.release.set()
        settle(first)
        settle(second)
        assert held.calls == 1
        assert [i.nickname for i in all_identities(second)] == [NEW_NICKNAME]


def test_two_workers_refreshing_one_identity_at_once_read_wechat_once(
        database: t.Any, tmp_path: t.Any, wechat_api: WeChatAPI) -> None:
    """Both workers found the profile stale (their logins read it before either refresh
    began); the claim in the database lets one of them call WeChat."""
    url = database.url("shared")
    with app_factory(lambda name: make_test_app(_folder(tmp_path, name), url,
                                                     **REFRESHING)) as build:
        workers = [build("w1"), build("w2")]
        login_with_wechat(workers[0].test_client(), wechat_api)
        age_profiles(workers[0])
        identity_id = all_identities(workers[0])[0].id
        held = HeldUserinfo(wechat_api)
        results: dict[int, bool] = {}

        def refresh_in(index: int) -> None:
            app = workers[index]
            runtime = app.extensions["wechat_qr"]
            with app.app_context():
                results[index] = runtime.refresher.refresh(
                    runtime.settings.connections["wechat"], runtime.clients["wechat"],
                    identity_id, WeChatToken(OPENID, "access-token", scope="snsapi_login"))

        threads = [threading.Thread(target=refresh_in, args=(i,)) for i in (0, 1)]
        threads[0].start()
        assert _wait_for(lambda: held.calls == 1)  # the first has claimed it, and waits
        threads[1].start()
        threads[1].join(10)
        assert results == {1: False}
        held.release.set()
        threads[0].join(10)
        assert results == {0: True, 1: False} and held.calls == 1
        assert [i.nickname for i in all_identities(workers[1])] == [NEW_NICKNAME]


def test_one_process_queues_an_identity_once(known: Flask, wechat_api: WeChatAPI) -> None:
    held = HeldUserinfo(wechat_api)
    runtime = known.extensions["wechat_qr"]
    connection, client = runtime.settings.connections["wechat"], runtime.clients["wechat"]
    token = WeChatToken(OPENID, "access-token", scope="snsapi_login")
    with known.test_request_context():
        identity = all_identities(known)[0]
        assert runtime.refresher.schedule(connection, client, identity, token) is True
        assert runtime.refresher.schedule(connection, client, identity, token) is False
    held.release.set()
    settle(known)
    assert held.calls == 1


def _folder(tmp_path: t.Any, name: str) -> t.Any:
    folder = tmp_path / name
    folder.mkdir()
    return folder


def test_a_full_queue_skips_and_a_later_login_asks_again(
        make_app: t.Callable[..., Flask], wechat_api: WeChatAPI,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(refresh, "MAX_QUEUED", 1)
    app = make_app(**REFRESHING)
    people = [(OPENID, UNIONID), (OPENID_2, UNIONID_2), ("o-third", "u-third")]
    for openid, unionid in people:
        login_with_wechat(app.test_client(), wechat_api, openid=openid, unionid=unionid)
    age_profiles(app)
    wechat_api.mock.reset()
    held = HeldUserinfo(wechat_api)
    returning_login(app, wechat_api, *people[0])
    assert _wait_for(lambda: held.calls == 1)  # the first is running, off the queue
    returning_login(app, wechat_api, *people[1])  # queued
    returning_login(app, wechat_api, *people[2])  # the queue is full: skipped
    held.release.set()
    settle(app)
    assert held.calls == 2
    nicknames = {i.openid: i.nickname for i in all_identities(app)}
    assert nicknames == {OPENID: NEW_NICKNAME, OPENID_2: NEW_NICKNAME, "o-third": "张三🐼"}
    # Skipped, not claimed: the next login of that person refreshes.
    returning_login(app, wechat_api, *people[2])
    settle(app)
    assert {i.openid: i.nickname for i in all_identities(app)}["o-third"] == NEW_NICKNAME


def _wait_for(condition: t.Callable[[], bool], seconds: float = 10) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


# --- what a refresh stores ---------------------------------------------------------------------


def test_placeholders_never_overwrite_on_refresh(known: Flask, wechat_api: WeChatAPI) -> None:
    grey, = PLACEHOLDER_AVATAR_IDS
    placeholder_avatar = f"https://thirdwx.qlogo.cn/mmopen/vi_32/{grey}/132"
    wechat_api.userinfo(nickname="微信用户", headimgurl=placeholder_avatar)
    assert returning_login(known, wechat_api).status_code == 302
    settle(known)
    assert api_paths(wechat_api) == [TOKEN_PATH, USERINFO_PATH]
    identity, = all_identities(known)
    assert (identity.nickname, identity.avatar_url) == ("张三🐼", AVATAR)
    assert identity.profile["nickname"] == "微信用户"  # the raw profile is what WeChat sent


def test_a_changed_avatar_is_stored_by_the_refresh(make_app: t.Callable[..., Flask],
                                                   wechat_api: WeChatAPI) -> None:
    app = make_app(WECHAT_QR_STORE_AVATARS=True, **REFRESHING)
    wechat_api.mock.add(responses.GET, AVATAR, body=PNG, content_type="image/png")
    login_with_wechat(app.test_client(), wechat_api)
    age_profiles(app)
    wechat_api.mock.reset()
    wechat_api.userinfo(headimgurl=NEW_AVATAR.replace("https", "http"))
    wechat_api.mock.add(responses.GET, NEW_AVATAR, body=PNG[:-1] + b"\1",
                        content_type="image/png")
    with recording(app, "profile_refreshed") as events:
        assert returning_login(app, wechat_api).status_code == 302
        settle(app)
    identity, = all_identities(app)
    assert identity.avatar_url.startswith("/auth/avatars/")
    assert identity.avatar_url != all_users(app)[0].avatar_url  # first_login: kept as was
    # The host is handed the stored copy, as populate_user is.
    (_, event), = events
    assert event["profile"].real_avatar_url == identity.avatar_url
    assert event["profile"].raw["headimgurl"] == NEW_AVATAR.replace("https", "http")
    client = app.test_client()
    assert client.get(identity.avatar_url).data == PNG[:-1] + b"\1"


def test_the_refresh_holds_no_connection_while_a_new_avatar_downloads(
        make_app: t.Callable[..., Flask], wechat_api: WeChatAPI) -> None:
    """Before: the refresh asked the avatar store (a read, a connection out of the pool)
    and downloaded the new avatar holding it (a review, session 36): on a pool of one the
    site's other pages waited for the download."""
    app = make_app(WECHAT_QR_STORE_AVATARS=True, SQLALCHEMY_ENGINE_OPTIONS={
        "pool_size": 1, "max_overflow": 0, "pool_timeout": 0.5}, **REFRESHING)
    wechat_api.mock.add(responses.GET, AVATAR, body=PNG, content_type="image/png")
    login_with_wechat(app.test_client(), wechat_api)
    age_profiles(app)
    read_meanwhile: list[object] = []

    def new_avatar(request: t.Any) -> tuple[int, dict[str, str], bytes]:
        with app.app_context():  # another page of the site, while the avatar downloads
            with app.db.engine.connect() as connection:  # type: ignore[attr-defined]
                read_meanwhile.append(connection.execute(sa.text("SELECT 1")).scalar())
        return 200, {"Content-Type": "image/png"}, PNG[:-1] + b"\1"

    wechat_api.mock.reset()
    wechat_api.userinfo(headimgurl=NEW_AVATAR)
    wechat_api.mock.add_callback(responses.GET, NEW_AVATAR, callback=new_avatar)
    assert returning_login(app, wechat_api).status_code == 302
    settle(app)
    assert read_meanwhile == [1]
    identity, = all_identities(app)
    assert app.test_client().get(identity.avatar_url).data == PNG[:-1] + b"\1"


def test_the_host_hears_of_a_refresh(known: Flask, wechat_api: WeChatAPI) -> None:
    wechat_api.userinfo(nickname=NEW_NICKNAME)
    seen: list[dict[str, t.Any]] = []

    def receiver(sender: Flask, **kwargs: t.Any) -> None:
        seen.append({**kwargs, "sender": sender, "in_request": has_request_context()})

    with signals.profile_refreshed.connected_to(receiver):
        assert returning_login(known, wechat_api).status_code == 302
        settle(known)
    event, = seen
    assert event["sender"] is known and event["in_request"] is False
    assert event["user"].id == all_users(known)[0].id
    assert event["identity"].nickname == NEW_NICKNAME
    assert event["profile"].real_nickname == NEW_NICKNAME
    assert event["connection"].identifier == "wechat"


# --- when no refresh runs ----------------------------------------------------------------------


@pytest.mark.parametrize("config", [
    {"WECHAT_QR_PROFILE_REFRESH_AFTER": 0},
    {"WECHAT_QR_PROFILE_SYNC": "each_login", **REFRESHING},  # read during the login
    {},  # TESTING, and the setting not given
])
def test_no_background_refresh(make_app: t.Callable[..., Flask], wechat_api: WeChatAPI,
                               config: dict[str, t.Any]) -> None:
    app = make_app(**config)
    login_with_wechat(app.test_client(), wechat_api)
    age_profiles(app)
    wechat_api.mock.reset()
    wechat_api.userinfo(nickname=NEW_NICKNAME)
    with recording(app, "profile_refreshed") as events:
        assert returning_login(app, wechat_api).status_code == 302
        settle(app)
    assert events == []
    read_at_login = "WECHAT_QR_PROFILE_SYNC" in config
    assert api_paths(wechat_api) == ([TOKEN_PATH, USERINFO_PATH] if read_at_login
                                     else [TOKEN_PATH])


def test_a_failed_refresh_waits_before_it_is_tried_again(known: Flask, wechat_api: WeChatAPI,
                                                         caplog: t.Any) -> None:
    wechat_api.error(USERINFO_PATH, 40001, "invalid credential, access_token is invalid")
    assert returning_login(known, wechat_api).status_code == 302
    settle(known)
    assert "profile refresh of identity" in caplog.text
    assert [i.nickname for i in all_identities(known)] == ["张三🐼"]
    # Tried again an hour from now: stale by then, not before.
    retry_at = refreshed_at(known)[0] + timedelta(seconds=WEEK)
    expected = datetime.now(UTC) + timedelta(seconds=refresh.RETRY_AFTER)
    assert abs((retry_at - expected).total_seconds()) < 60
    wechat_api.mock.reset()
    assert returning_login(known, wechat_api).status_code == 302
    settle(known)
    assert api_paths(wechat_api) == [TOKEN_PATH]


def test_an_identity_unlinked_before_its_refresh_is_left_alone(
        known: Flask, wechat_api: WeChatAPI) -> None:
    held = HeldUserinfo(wechat_api)
    assert returning_login(known, wechat_api).status_code == 302
    assert _wait_for(lambda: held.calls == 1)
    delete_identities(known)
    with recording(known, "profile_refreshed") as events:
        held.release.set()
        settle(known)
    assert events == [] and all_identities(known) == []


def after(app: Flask) -> int:
    return int(app.extensions["wechat_qr"].settings.connections["wechat"]
               .profile_refresh_after)


def test_a_site_refreshes_weekly_by_default(make_production_app: t.Any) -> None:
    app = make_production_app()
    assert after(app) == WEEK
    assert app.config["WECHAT_QR_PROFILE_REFRESH_AFTER"] == WEEK


def test_under_testing_the_refresh_is_off_unless_set(make_app: t.Callable[..., Flask]) -> None:
    assert after(make_app()) == 0
    assert after(make_app(WECHAT_QR_PROFILE_REFRESH_AFTER=60)) == 60
    listed = make_app(WECHAT_QR_CONNECTIONS=[
        {"connection": "wechat", "app_id": "wx5f3d2e1c0b9a8776", "app_secret": "s"}])
    assert after(listed) == 0


# --- what a refresh never does -----------------------------------------------------------------


def test_a_refresh_never_writes_onto_an_identity_that_took_a_deleted_ones_id(
        make_app: t.Callable[..., Flask], wechat_api: WeChatAPI) -> None:
    """SQLite gives a deleted highest id to the next row: Alice's refresh, running while
    her identity is deleted and Bob's is created with its id, must not land on Bob's."""
    app = make_app(**REFRESHING)
    login_with_wechat(app.test_client(), wechat_api)  # Alice
    age_profiles(app)
    wechat_api.mock.reset()
    bob = {"openid": OPENID_2, "unionid": UNIONID_2, "nickname": "Bob", "headimgurl": ""}
    held = HeldUserinfo(wechat_api, others={OPENID_2: bob})
    assert returning_login(app, wechat_api).status_code == 302
    assert _wait_for(lambda: held.calls == 1)
    delete_identities(app)
    wechat_api.token(openid=OPENID_2, unionid=UNIONID_2)
    client = app.test_client()
    assert finish_login(client, start_login(client)).status_code == 302
    held.release.set()
    settle(app)
    bobs, = all_identities(app)
    with app.app_context():
        dialect = app.db.engine.dialect.name  # type: ignore[attr-defined]
    assert bobs.id == 1 or dialect != "sqlite"  # the id was given again
    assert (bobs.openid, bobs.unionid, bobs.nickname) == (OPENID_2, UNIONID_2, "Bob")


def test_a_refresh_that_fails_after_its_claim_is_tried_again_in_an_hour(
        known: Flask, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch,
        caplog: t.Any) -> None:
    def broken(*args: t.Any) -> None:
        raise sa.exc.OperationalError("UPDATE", {}, Exception("database is locked"))

    monkeypatch.setattr(known.extensions["wechat_qr"].policy, "refresh_profile", broken)
    wechat_api.userinfo(nickname=NEW_NICKNAME)
    assert returning_login(known, wechat_api).status_code == 302
    settle(known)
    assert "profile refresh of identity" in caplog.text
    retry_at = refreshed_at(known)[0] + timedelta(seconds=WEEK)
    expected = datetime.now(UTC) + timedelta(seconds=refresh.RETRY_AFTER)
    assert abs((retry_at - expected).total_seconds()) < 60


def test_a_refresh_that_cannot_start_leaves_the_login_alone(
        known: Flask, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch,
        caplog: t.Any) -> None:
    def no_threads(*args: t.Any, **kwargs: t.Any) -> bool:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(_refresher(known), "schedule", no_threads)
    client = known.test_client()
    wechat_api.token()
    resp = finish_login(client, start_login(client))
    assert resp.status_code == 302
    assert client.get("/").get_data(as_text=True).startswith("logged in as")
    assert "could not start a profile refresh" in caplog.text


def test_a_stored_avatar_keeps_the_sites_path_prefix(make_app: t.Callable[..., Flask],
                                                     wechat_api: WeChatAPI) -> None:
    """A site served under /site: the refresh, which has no request, stores the avatar's
    path with the prefix its login had."""
    app = make_app(WECHAT_QR_STORE_AVATARS=True, **REFRESHING)
    client = app.test_client()
    base = "http://localhost/site"
    wechat_api.token()
    wechat_api.userinfo(headimgurl="")
    state = _state(client.get("/auth/wechat/login", base_url=base))
    assert client.get("/auth/wechat/callback", base_url=base,
                      query_string={"code": "c" * 32, "state": state}).status_code == 302
    age_profiles(app)
    wechat_api.mock.reset()
    wechat_api.token()
    wechat_api.userinfo(headimgurl=NEW_AVATAR)
    wechat_api.mock.add(responses.GET, NEW_AVATAR, body=PNG, content_type="image/png")
    state = _state(client.get("/auth/wechat/login", base_url=base))
    assert client.get("/auth/wechat/callback", base_url=base,
                      query_string={"code": "c" * 32, "state": state}).status_code == 302
    settle(app)
    identity, = all_identities(app)
    assert identity.avatar_url.startswith("/site/auth/avatars/")
    assert client.get(identity.avatar_url[len("/site"):], base_url=base).data == PNG


def _state(resp: t.Any) -> str:
    import re

    match = re.search(r"[?&]state=([A-Za-z0-9]+)", resp.headers["Location"])
    assert match, resp.headers["Location"]
    return match.group(1)


# --- uWSGI without Python threads ------------------------------------------------------------


class _UWSGIWithoutThreads:
    """What ``import uwsgi`` gives inside a uWSGI worker started without ``--enable-threads``
    (uWSGI's default before 2.0.27, unless ``--threads``): the GIL stays with the worker
    between requests, so an app's thread runs only while a request is served."""

    has_threads = 0
    opt: t.ClassVar[dict[str, t.Any]] = {"master": True, "processes": b"2"}


def test_under_uwsgi_without_threads_the_refresh_runs_after_the_answer_not_in_a_thread(
        known: Flask, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refresh thread would sit until the worker's next request (seen under uWSGI 2.0.23:
    nicknames unchanged 8 s after logins, refreshed only as other requests came): it runs
    in the request's thread once the answer is complete, and no thread is started."""
    monkeypatch.setitem(sys.modules, "uwsgi", _UWSGIWithoutThreads())
    held = HeldUserinfo(wechat_api)
    held.release.set()
    resp = returning_login(known, wechat_api)
    assert resp.status_code == 302
    assert _refresher(known)._thread is None  # no refresh thread (earlier tests' may linger)
    assert held.calls == 0  # not during the request: after its answer
    resp.close()  # the WSGI server closes the answer it sent
    assert held.calls == 1
    identity, = all_identities(known)
    assert identity.nickname == NEW_NICKNAME
    settle(known)


def test_under_uwsgi_without_threads_an_answer_the_host_replaced_leaves_the_refresh_to_later(
        make_app: t.Callable[..., Flask], wechat_api: WeChatAPI,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A host's ``after_request`` that returns another response: the one the refresh waited
    to be closed never is. Nothing is left waiting: the next login refreshes."""
    app = make_app(**REFRESHING)
    replacing = {"on": False}

    @app.after_request
    def replace(response: t.Any) -> t.Any:
        if not replacing["on"]:
            return response
        return app.response_class(response.get_data(), status=response.status_code,
                                  headers=list(response.headers))

    assert login_with_wechat(app.test_client(), wechat_api).status_code == 302
    age_profiles(app)
    wechat_api.mock.reset()
    monkeypatch.setitem(sys.modules, "uwsgi", _UWSGIWithoutThreads())
    held = HeldUserinfo(wechat_api)
    held.release.set()
    replacing["on"] = True
    returning_login(app, wechat_api).close()
    assert held.calls == 0  # the replaced answer was never closed
    replacing["on"] = False
    returning_login(app, wechat_api).close()
    assert held.calls == 1
    identity, = all_identities(app)
    assert identity.nickname == NEW_NICKNAME


def test_under_uwsgi_without_threads_the_start_up_log_says_to_enable_them(
        make_app: t.Callable[..., Flask], monkeypatch: pytest.MonkeyPatch,
        caplog: t.Any) -> None:
    monkeypatch.setitem(sys.modules, "uwsgi", _UWSGIWithoutThreads())
    make_app(**REFRESHING)
    assert "uWSGI runs without Python threads (--enable-threads is off)" in caplog.text
    caplog.clear()
    make_app(**REFRESHING, WECHAT_QR_PROFILE_SYNC="each_login")  # no refresh to run
    assert "--enable-threads" not in caplog.text
    monkeypatch.setattr(_UWSGIWithoutThreads, "has_threads", 1)
    make_app(**REFRESHING)
    assert "--enable-threads" not in caplog.text
