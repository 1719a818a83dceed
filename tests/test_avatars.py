"""Durable avatars (avatars.py, avatar_download.py): downloaded only from WeChat's image
hosts, under every rule (never a request anywhere else); stored on the first login and
when the URL changes, never failing a login; served with long-lived caching headers; the
identity and the ID token point at the stored copy; a returning login still makes one
WeChat call; the sandbox's image host and its "change my avatar"."""

from __future__ import annotations

import logging
import socket
import typing as t

import pytest
import requests
import responses
import sqlalchemy as sa
from flask import Flask
from support import (
    AVATAR,
    TOKEN_PATH,
    USERINFO_PATH,
    all_identities,
    all_users,
    answer,
    api_paths,
    callback_app,
    finish_login,
    form_post,
    login_with_wechat,
    open_qr_page,
    poll,
    receiver_keys,
    start_login,
    verify,
)

from flask_wechat_qr.avatar_download import (
    MAX_AVATAR_BYTES,
    AvatarDownloader,
    AvatarRefused,
    PublicOnlyAdapter,
    avatar_source,
)
from flask_wechat_qr.avatars import AvatarKeeper
from flask_wechat_qr.runtime import runtime_of
from flask_wechat_qr.sandbox.images import solid_png
from flask_wechat_qr.sandbox.users import PLACEHOLDER_AVATAR
from flask_wechat_qr.urls import SANDBOX_IMAGE_ORIGIN

PNG = solid_png(8, (10, 20, 30))
JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 64
#: The URL the test avatar (support.AVATAR, already /132) is downloaded from.
SOURCE = AVATAR
SANDBOX_IMAGES = SANDBOX_IMAGE_ORIGIN + "/wechat-sandbox/mmopen/"

# --- which URLs are ever fetched -----------------------------------------------------------

REFUSED = [
    "http://169.254.169.254/latest/meta-data/",
    "https://169.254.169.254/latest",
    "https://evil.example/qlogo.cn",
    "https://thirdwx.qlogo.cn.evil.com/x/132",
    "https://evil.com/thirdwx.qlogo.cn/132",
    "https://qlogo.cn.evil.com/132",
    "https://thirdwx.qlogo.cn@evil.com/132",
    "https://user:pw@thirdwx.qlogo.cn/mmopen/a/132",
    "https://thirdwx.qlogo.cn:8443/mmopen/a/132",
    "https://thirdwx.qlogo.cn:443@127.0.0.1/mmopen/a/132",
    "https://127.0.0.1/mmopen/a/132",
    "https://[::1]/mmopen/a/132",
    "https://2130706433/mmopen/a/132",
    "https://localhost/mmopen/a/132",
    "ftp://thirdwx.qlogo.cn/mmopen/a/132",
    "javascript:alert(1)//thirdwx.qlogo.cn",
    "data:image/png;base64,iVBORw0KGgo=",
    "https://thirdwx.qlogo.cn\\@evil.com/132",
    "https://thirdwx.qlogo.cn/mmopen/a/132\n",
    "https://xn--qlogo-.cn/132",
    "https://thirdwx.qlogo.cn_/132",
    SANDBOX_IMAGES + "zhangsan/1/132",  # the sandbox's host, outside sandbox mode
    "",
    None,
    42,
]


@pytest.mark.parametrize("url", REFUSED)
def test_urls_off_wechats_image_hosts_are_never_fetched(url: t.Any) -> None:
    downloader = AvatarDownloader(timeout=2)
    assert downloader.source(url) is None
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.GET, "https://169.254.169.254/latest", body=PNG,
                 content_type="image/png")
        with pytest.raises(AvatarRefused):
            downloader.download(url)
        assert len(mock.calls) == 0


@pytest.mark.parametrize(("given", "fetched"), [
    ("https://thirdwx.qlogo.cn/mmopen/vi_32/abc/132", "https://thirdwx.qlogo.cn/mmopen/vi_32/abc/132"),
    # WeChat's http:// URLs are upgraded; the 46 px thumbnail becomes the 132 px image
    ("http://wx.qlogo.cn/mmopen/abc/46", "https://wx.qlogo.cn/mmopen/abc/132"),
    ("https://THIRDWX.QLOGO.CN/mmopen/vi_32/abc/0", "https://thirdwx.qlogo.cn/mmopen/vi_32/abc/132"),
    ("https://thirdwx.qlogo.cn:443/mmopen/abc/64?x=1#y", "https://thirdwx.qlogo.cn/mmopen/abc/132"),
    ("https://thirdqq.qlogo.cn/g?b=oidb&k=abc", "https://thirdqq.qlogo.cn/g"),
])
def test_wechat_urls_are_fetched_over_https_at_132_px(given: str, fetched: str) -> None:
    assert avatar_source(given) == fetched


def test_a_redirect_is_not_followed() -> None:
    downloader = AvatarDownloader(timeout=2)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.GET, SOURCE, status=302,
                 headers={"Location": "http://127.0.0.1/admin"})
        mock.add(responses.GET, "http://127.0.0.1/admin", body=PNG, content_type="image/png")
        with pytest.raises(AvatarRefused, match="302"):
            downloader.download(SOURCE)
        assert [call.request.url for call in mock.calls] == [SOURCE]


class ConnectGuard:
    """Records (and refuses) every socket connection attempt."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, resolves_to: list[str]) -> None:
        self.connected: list[t.Any] = []
        self.resolved: list[str] = []

        def getaddrinfo(host: str, port: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
            self.resolved.append(host)
            return [(socket.AF_INET6 if ":" in address else socket.AF_INET,
                     socket.SOCK_STREAM, 6, "", (address, port)) for address in resolves_to]

        def connect(sock: socket.socket, address: t.Any) -> None:
            self.connected.append(address)
            raise ConnectionRefusedError("the test allows no connection")

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.mark.parametrize("addresses", [
    ["127.0.0.1"], ["10.1.2.3"], ["169.254.169.254"], ["::1"], ["fe80::1"], ["192.168.0.9"],
    ["100.64.0.1"], ["0.0.0.0"], ["93.184.216.34", "127.0.0.1"],
])
def test_an_allowed_name_resolving_to_a_private_address_is_not_connected_to(
        monkeypatch: pytest.MonkeyPatch, addresses: list[str]) -> None:
    """DNS rebinding: the address checked is the one connected to, and none was."""
    guard = ConnectGuard(monkeypatch, addresses)
    with pytest.raises(requests.ConnectionError, match="non-public"):
        AvatarDownloader(timeout=2).download(SOURCE)
    assert guard.resolved == ["thirdwx.qlogo.cn"]
    assert guard.connected == []


def test_a_public_address_is_connected_to_by_the_address_checked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    guard = ConnectGuard(monkeypatch, ["93.184.216.34"])
    with pytest.raises(requests.ConnectionError):
        AvatarDownloader(timeout=2).download(SOURCE)
    assert guard.connected == [("93.184.216.34", 443)]


def test_no_proxy_from_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://10.0.0.1:3128")
    guard = ConnectGuard(monkeypatch, ["93.184.216.34"])
    with pytest.raises(requests.ConnectionError):
        AvatarDownloader(timeout=2).download(SOURCE)
    assert guard.resolved[0] == "thirdwx.qlogo.cn" and "10.0.0.1" not in guard.resolved
    assert guard.connected == [("93.184.216.34", 443)]  # not the proxy


# --- what is kept of an answer --------------------------------------------------------------


def fetch(body: bytes, content_type: str = "image/png", **kwargs: t.Any) -> t.Any:
    with responses.RequestsMock() as mock:
        mock.add(responses.GET, SOURCE, body=body, content_type=content_type,
                 headers=kwargs.pop("headers", {}))
        return AvatarDownloader(timeout=2, **kwargs).download(SOURCE)


@pytest.mark.parametrize(("body", "content_type"), [
    (PNG, "image/png"), (JPEG, "image/jpeg"), (b"GIF89a" + b"\0" * 20, "image/gif"),
    (b"RIFF\0\0\0\0WEBPVP8 " + b"\0" * 20, "image/webp"),
])
def test_images_of_the_four_types_are_kept(body: bytes, content_type: str) -> None:
    image = fetch(body, content_type + "; charset=binary")
    assert (image.content_type, image.data) == (content_type, body)


@pytest.mark.parametrize(("body", "content_type", "problem"), [
    (b"<html>no</html>", "text/html", "not an image type"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", "not an image type"),
    (PNG, "application/octet-stream", "not an image type"),
    (JPEG, "image/png", "not image/png"),
    (b"<script>", "image/jpeg", "not image/jpeg"),
    (b"RIFF\0\0\0\0WAVEfmt ", "image/webp", "not image/webp"),
])
def test_wrong_types_are_refused(body: bytes, content_type: str, problem: str) -> None:
    with pytest.raises(AvatarRefused, match=problem):
        fetch(body, content_type)


def test_the_size_cap_is_enforced_while_streaming() -> None:
    assert MAX_AVATAR_BYTES == 1024 * 1024
    assert fetch(PNG, max_bytes=len(PNG)).data == PNG
    with pytest.raises(AvatarRefused, match="larger than"):
        fetch(PNG + b"\0" * 10, max_bytes=len(PNG))  # no Content-Length: counted
    with pytest.raises(AvatarRefused, match="larger than"):
        fetch(PNG + b"\0" * (MAX_AVATAR_BYTES + 1))


def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    with pytest.raises(AvatarRefused, match="larger than"):
        fetch(PNG, headers={"Content-Length": str(MAX_AVATAR_BYTES + 1)})


def test_a_wechat_error_answer_is_refused() -> None:
    with responses.RequestsMock() as mock:
        mock.add(responses.GET, SOURCE, status=404, body=b"", content_type="image/png")
        with pytest.raises(AvatarRefused, match="404"):
            AvatarDownloader(timeout=2).download(SOURCE)


# --- logins store the avatar ------------------------------------------------------------------


def stored_path(source: str = SOURCE) -> str:
    return "/auth/avatars/" + AvatarKeeper.key_for(source)


def avatar_calls(api: t.Any) -> list[str]:
    return [call.request.url for call in api.mock.calls if "qlogo" in call.request.url]


@pytest.fixture
def storing_app(make_app: t.Callable[..., Flask]) -> Flask:
    return make_app(WECHAT_QR_STORE_AVATARS=True)


def serve_avatar(api: t.Any, body: bytes = PNG, **kwargs: t.Any) -> None:
    api.mock.add(responses.GET, SOURCE, body=body, content_type="image/png", **kwargs)


def login(client: t.Any, api: t.Any, **kwargs: t.Any) -> t.Any:
    """A login whose avatar the image host serves (registered after the reset)."""
    api.mock.reset()
    serve_avatar(api)
    api.token()
    api.userinfo(**kwargs)

    return finish_login(client, start_login(client))


@pytest.mark.parametrize(("prefix", "stored"), [
    ("/site", "/site" + stored_path()),
    ("//evil.example", stored_path()),
    ("javascript:alert(document.domain)//", stored_path()),
    ("/\\evil.example", stored_path()),
    ("/account/delete?confirm=1&x=", stored_path()),  # the site's own path, with a query
    ("/site/../logout", stored_path()),
    ('/"><svg/onload=alert(1)>', stored_path()),  # for a site that writes HTML by hand
])
def test_the_stored_avatars_path_takes_no_mount_point_from_a_hostile_header(
        make_app: t.Callable[..., Flask], wechat_api: t.Any, prefix: str, stored: str) -> None:
    """Behind ``ProxyFix(x_prefix=1)``, the mount point is the proxy's
    ``X-Forwarded-Prefix``: one a client forged (a proxy that passes it on) was stored as
    the avatar's URL on the person's rows, shown to others (``//evil.example/...``, or
    ``javascript:`` in an ``href``, or a path of the site's own with a query that makes
    every viewer's browser ask it: a red-team helper and a review, session 35). A mount
    point that is not path segments only is not taken; a real one is."""
    from werkzeug.middleware.proxy_fix import ProxyFix

    app = make_app(WECHAT_QR_STORE_AVATARS=True)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_prefix=1)  # type: ignore[method-assign]
    client = app.test_client()
    wechat_api.mock.reset()
    serve_avatar(wechat_api)
    wechat_api.token()
    wechat_api.userinfo()
    client.environ_base["HTTP_X_FORWARDED_PREFIX"] = prefix  # on every request
    assert finish_login(client, start_login(client)).status_code == 302
    assert [identity.avatar_url for identity in all_identities(app)] == [stored]
    assert [user.avatar_url for user in all_users(app)] == [stored]


def test_the_first_login_stores_the_avatar_and_points_at_it(storing_app: Flask,
                                                            wechat_api: t.Any) -> None:
    client = storing_app.test_client()
    assert login(client, wechat_api).status_code == 302
    (identity,) = all_identities(storing_app)
    assert identity.avatar_url == stored_path()
    assert identity.profile["headimgurl"] == AVATAR  # what WeChat said, for a refresh
    assert avatar_calls(wechat_api) == [SOURCE]
    # The host's user gets the stored copy too (populate_user), not WeChat's URL.
    assert [user.avatar_url for user in all_users(storing_app)] == [stored_path()]

    resp = client.get(stored_path())
    assert resp.status_code == 200 and resp.data == PNG
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    etag = resp.headers["ETag"]
    assert etag == f'"{AvatarKeeper.key_for(SOURCE)}"'
    again = client.get(stored_path(), headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""


@pytest.mark.parametrize("key", ["0" * 40, "nope", "A" * 40, "0" * 41, "0" * 39 + "g"])
def test_unknown_avatars_are_404(storing_app: Flask, key: str) -> None:
    resp = storing_app.test_client().get(f"/auth/avatars/{key}")
    assert resp.status_code == 404
    assert resp.headers["Cache-Control"] == "no-store"


def test_a_user_whose_avatar_could_not_be_stored_gets_wechats_url(
        storing_app: Flask, wechat_api: t.Any) -> None:
    wechat_api.mock.reset()
    wechat_api.token()
    wechat_api.userinfo()  # the image host answers nothing
    client = storing_app.test_client()
    assert finish_login(client, start_login(client)).status_code == 302
    assert [user.avatar_url for user in all_users(storing_app)] == [AVATAR]


@pytest.mark.parametrize("database", ["mariadb"], indirect=True)
def test_an_avatar_larger_than_the_servers_packet_limit_is_not_stored(
        storing_app: Flask, wechat_api: t.Any, caplog: pytest.LogCaptureFixture) -> None:
    """MariaDB and MySQL take no statement longer than ``max_allowed_packet`` (1 MiB on an
    old MySQL 5.5, below the 1 MiB avatar cap): storing a larger avatar broke the connection
    ("MySQL server has gone away") and the login with it, at every login of that person.
    The avatar is not stored (said in the log), the login goes on with WeChat's URL. The
    server's answer is stood in for: MariaDB's setting is global only."""
    def small_packets(conn: t.Any, cursor: t.Any, statement: str, *rest: t.Any) -> t.Any:
        return statement.replace("@@max_allowed_packet", "65536"), rest[0]

    with storing_app.app_context():
        engine = storing_app.extensions["sqlalchemy"].engine
        sa.event.listen(engine, "before_cursor_execute", small_packets, retval=True)
    big = PNG + b"\0" * 40_000  # a PNG with 40 KB after its end: still a PNG
    client = storing_app.test_client()
    wechat_api.mock.reset()
    serve_avatar(wechat_api, body=big)
    wechat_api.token()
    wechat_api.userinfo()
    with caplog.at_level(logging.WARNING, logger="flask_wechat_qr"):
        assert finish_login(client, start_login(client)).status_code == 302
        assert login(storing_app.test_client(), wechat_api).status_code == 302  # again
    assert [user.avatar_url for user in all_users(storing_app)] == [AVATAR]
    said = [r.getMessage() for r in caplog.records if "max_allowed_packet" in r.getMessage()]
    assert said == [f"WeChat avatar not stored: {len(big):,} bytes, and the database server "
                    "takes statements of at most 65,536 bytes (max_allowed_packet), with room "
                    "for escaping; keeping WeChat's URL (not tried again until the site "
                    "restarts). To store it: SET GLOBAL max_allowed_packet=16777216 (and in "
                    "the server's configuration)"], said
    assert avatar_calls(wechat_api) == []  # the second login downloaded nothing


def test_each_login_sync_gives_a_matched_user_the_stored_copy(
        make_app: t.Callable[..., Flask], wechat_api: t.Any) -> None:
    app = make_app(WECHAT_QR_STORE_AVATARS=True, WECHAT_QR_PROFILE_SYNC="each_login")
    login(app.test_client(), wechat_api)
    with app.app_context():
        app.db.session.execute(sa.update(app.User).values(avatar_url=None))  # type: ignore
        app.db.session.commit()  # type: ignore[attr-defined]
    assert login(app.test_client(), wechat_api).status_code == 302
    assert [user.avatar_url for user in all_users(app)] == [stored_path()]


def test_a_returning_login_makes_one_wechat_call_and_no_download(storing_app: Flask,
                                                                 wechat_api: t.Any) -> None:
    client = storing_app.test_client()
    login(client, wechat_api)
    second = storing_app.test_client()
    assert login(second, wechat_api).status_code == 302
    assert api_paths(wechat_api) == [TOKEN_PATH]
    assert [i.avatar_url for i in all_identities(storing_app)] == [stored_path()]


def test_each_login_sync_downloads_only_a_changed_avatar(make_app: t.Callable[..., Flask],
                                                         wechat_api: t.Any) -> None:
    app = make_app(WECHAT_QR_STORE_AVATARS=True, WECHAT_QR_PROFILE_SYNC="each_login")
    login(app.test_client(), wechat_api)
    login(app.test_client(), wechat_api)
    assert api_paths(wechat_api) == [TOKEN_PATH, USERINFO_PATH]  # the image: stored already

    changed = "https://thirdwx.qlogo.cn/mmopen/vi_32/NEWAVATAR/132"
    wechat_api.mock.reset()
    wechat_api.token()
    wechat_api.userinfo(headimgurl=changed.replace("https", "http").replace("/132", "/46"))
    wechat_api.mock.add(responses.GET, changed, body=JPEG, content_type="image/jpeg")

    client = app.test_client()
    assert finish_login(client, start_login(client)).status_code == 302
    assert avatar_calls(wechat_api) == [changed]
    assert [i.avatar_url for i in all_identities(app)] == [stored_path(changed)]
    assert client.get(stored_path(changed)).data == JPEG
    assert client.get(stored_path()).data == PNG  # the old copy is still served


@pytest.mark.parametrize("failure", ["404", "html", "refused"])
def test_a_failed_download_never_fails_the_login(storing_app: Flask, wechat_api: t.Any,
                                                 failure: str, caplog: t.Any) -> None:
    wechat_api.mock.reset()
    wechat_api.token()
    wechat_api.userinfo()
    if failure == "404":
        serve_avatar(wechat_api, status=404)
    elif failure == "html":
        wechat_api.mock.add(responses.GET, SOURCE, body=b"<html>", content_type="text/html")
    # "refused": nothing answers at all

    client = storing_app.test_client()
    resp = finish_login(client, start_login(client))
    assert resp.status_code == 302
    assert [i.avatar_url for i in all_identities(storing_app)] == [AVATAR]
    assert "WeChat avatar not stored" in caplog.text


@pytest.mark.parametrize("headimgurl", [
    "http://169.254.169.254/latest", "https://evil.example/qlogo.cn",
    "https://thirdwx.qlogo.cn.evil.com/x", PLACEHOLDER_AVATAR,
])
def test_a_login_never_fetches_a_hostile_or_placeholder_avatar(
        storing_app: Flask, wechat_api: t.Any, headimgurl: str) -> None:
    wechat_api.mock.reset()
    wechat_api.token()
    wechat_api.userinfo(headimgurl=headimgurl)

    client = storing_app.test_client()
    assert finish_login(client, start_login(client)).status_code == 302
    assert api_paths(wechat_api) == [TOKEN_PATH, USERINFO_PATH]  # nothing else was asked
    (identity,) = all_identities(storing_app)
    assert not (identity.avatar_url or "").startswith("/auth/avatars/")


def test_off_by_default_nothing_is_downloaded(make_app: t.Callable[..., Flask],
                                              wechat_api: t.Any) -> None:
    app = make_app()
    login_with_wechat(app.test_client(), wechat_api)
    assert api_paths(wechat_api) == [TOKEN_PATH, USERINFO_PATH]
    assert [i.avatar_url for i in all_identities(app)] == [AVATAR]


def test_the_id_token_picture_is_the_stored_avatar(make_app: t.Callable[..., Flask],
                                                   wechat_api: t.Any, pem: str) -> None:
    app = callback_app(make_app, pem, WECHAT_QR_STORE_AVATARS=True)
    client = app.test_client()
    wechat_api.mock.reset()
    serve_avatar(wechat_api)

    wechat_api.token()
    wechat_api.userinfo()
    resp = finish_login(client, start_login(client))
    claims = verify(form_post(resp)["fields"]["id_token"], receiver_keys(client))
    assert claims["picture"] == "http://localhost" + stored_path()
    assert client.get(claims["picture"].removeprefix("http://localhost")).data == PNG


def test_a_host_plugs_in_its_own_store(tmp_path: t.Any, wechat_api: t.Any) -> None:
    from flask_login import LoginManager, UserMixin
    from flask_sqlalchemy import SQLAlchemy
    from support import APP_ID, APP_SECRET

    from flask_wechat_qr import AvatarImage, WeChatQR

    class MemoryStore:
        def __init__(self) -> None:
            self.images: dict[str, AvatarImage] = {}

        def get(self, key: str) -> AvatarImage | None:
            return self.images.get(key)

        def put(self, key: str, image: AvatarImage) -> None:
            self.images[key] = image

        def delete(self, key: str) -> None:
            self.images.pop(key, None)

    db = SQLAlchemy()

    class User(db.Model, UserMixin):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)

    app = Flask("store_host", root_path=str(tmp_path))
    app.config.update(TESTING=True, SECRET_KEY="k" * 32, WECHAT_QR_APP_ID=APP_ID,
                      WECHAT_QR_APP_SECRET=APP_SECRET, WECHAT_QR_STORE_AVATARS=True,
                      SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 's.db'}")
    db.init_app(app)
    LoginManager(app).user_loader(lambda user_id: db.session.get(User, int(user_id)))
    store = MemoryStore()
    WeChatQR(app, db=db, user_model=User, avatar_store=store)
    with app.app_context():
        db.create_all()
    client = app.test_client()
    serve_avatar(wechat_api)
    wechat_api.token()
    wechat_api.userinfo()
    assert finish_login(client, start_login(client)).status_code == 302
    assert list(store.images) == [AvatarKeeper.key_for(SOURCE)]
    assert client.get(stored_path()).data == PNG
    with app.app_context():
        assert runtime_of(app).avatars is not None


# --- the sandbox's image host ----------------------------------------------------------------


def sandbox_login(app: Flask, person: str) -> t.Any:
    client, phone = app.test_client(), app.test_client()
    uuid, _ = open_qr_page(client)
    answer(phone, uuid, action="allow", person=person)
    resp = client.get(poll(client, uuid)["redirect"].split("localhost", 1)[1])
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return client


def identity_of(app: Flask, nickname: str) -> t.Any:
    (identity,) = [i for i in all_identities(app) if i.nickname == nickname]
    return identity


@pytest.fixture
def storing_sandbox(make_app: t.Callable[..., Flask]) -> Flask:
    return make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None,
                    WECHAT_QR_STORE_AVATARS=True, WECHAT_QR_PROFILE_SYNC="each_login")


def test_a_stored_avatar_survives_the_avatar_change(storing_sandbox: Flask) -> None:
    client = sandbox_login(storing_sandbox, "zhangsan")
    identity = identity_of(storing_sandbox, "张三🐼")
    first = identity.avatar_url
    old_source = SANDBOX_IMAGES + "zhangsan/1/132"
    assert first == stored_path(old_source)
    sandbox_path = old_source.removeprefix(SANDBOX_IMAGE_ORIGIN)
    original = client.get(sandbox_path).data
    assert original.startswith(b"\x89PNG") and client.get(first).data == original

    assert client.post("/wechat-sandbox/people/zhangsan/avatar").status_code == 302
    assert client.get(sandbox_path).status_code == 404  # WeChat's old URL is dead
    assert client.get(first).data == original  # ours is not

    sandbox_login(storing_sandbox, "zhangsan")  # the next login reads the new profile
    new_source = SANDBOX_IMAGES + "zhangsan/2/132"
    assert identity_of(storing_sandbox, "张三🐼").avatar_url == stored_path(new_source)
    assert client.get(stored_path(new_source)).data == client.get(
        new_source.removeprefix(SANDBOX_IMAGE_ORIGIN)).data != original


def test_the_sandboxs_http_thumbnail_is_stored_over_https_at_132_px(
        storing_sandbox: Flask) -> None:
    client = sandbox_login(storing_sandbox, "zhaoliu")
    identity = identity_of(storing_sandbox, "赵六")
    assert identity.profile["headimgurl"] == (
        SANDBOX_IMAGES.replace("https://", "http://") + "zhaoliu/1/46")
    assert identity.avatar_url == stored_path(SANDBOX_IMAGES + "zhaoliu/1/132")
    assert client.get(identity.avatar_url).data.startswith(b"\x89PNG")


def test_the_sandboxs_placeholder_profile_is_not_downloaded(storing_sandbox: Flask,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    downloads: list[str] = []
    downloader = runtime_of(storing_sandbox).avatars.downloader  # type: ignore[union-attr]
    monkeypatch.setattr(downloader, "download", downloads.append)
    sandbox_login(storing_sandbox, "placeholder")
    identity = identity_of(storing_sandbox, "微信用户")
    assert identity.avatar_url == PLACEHOLDER_AVATAR and downloads == []


def test_sandbox_avatars_stay_data_uris_with_the_setting_off(sandbox_app: Flask) -> None:
    client = sandbox_login(sandbox_app, "lisi")
    assert identity_of(sandbox_app, "李四").avatar_url.startswith("data:image/svg+xml;base64,")
    page = client.get("/wechat-sandbox/").get_data(as_text=True)
    assert 'src="/wechat-sandbox/mmopen/lisi/1/132"' in page


def test_the_sandbox_image_host_is_reachable_in_sandbox_mode_only(
        storing_sandbox: Flask, make_app: t.Callable[..., Flask]) -> None:
    source = SANDBOX_IMAGES + "lisi/1/132"
    assert runtime_of(storing_sandbox).avatars.downloader.source(source) == source  # type: ignore[union-attr]
    # ... and only under its image path (not the rest of the app the transport reaches)
    assert runtime_of(storing_sandbox).avatars.downloader.source(  # type: ignore[union-attr]
        SANDBOX_IMAGE_ORIGIN + "/auth/avatars/x") is None
    real = make_app(WECHAT_QR_STORE_AVATARS=True)
    assert runtime_of(real).avatars.downloader.source(source) is None  # type: ignore[union-attr]


def test_the_sandbox_index_changes_an_avatar(sandbox_app: Flask) -> None:
    client = sandbox_app.test_client()
    assert client.get("/wechat-sandbox/mmopen/lisi/1/132").status_code == 200
    assert client.get("/wechat-sandbox/mmopen/lisi/1/47").status_code == 404
    assert client.get("/wechat-sandbox/mmopen/nobody/1/132").status_code == 404
    client.post("/wechat-sandbox/people/lisi/avatar")
    page = client.get("/wechat-sandbox/").get_data(as_text=True)
    assert 'src="/wechat-sandbox/mmopen/lisi/2/132"' in page
    assert client.get("/wechat-sandbox/mmopen/lisi/1/132").status_code == 404
    assert client.get("/wechat-sandbox/mmopen/lisi/2/0").headers["Content-Type"] == "image/png"
    assert client.post("/wechat-sandbox/people/nobody/avatar").status_code == 404


# --- one deadline for the whole download --------------------------------------------------


@pytest.fixture
def dripping_image_host(tmp_path: t.Any) -> t.Iterator[tuple[int, str]]:
    """An https server on loopback that sends a PNG's headers at once and then its body a
    byte every 0.1 s: each read is quick, the whole download is not."""
    import datetime
    import ssl
    import threading

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "thirdwx.qlogo.cn")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("thirdwx.qlogo.cn")]),
                           critical=False).sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    stop = threading.Event()

    def serve() -> None:
        try:
            raw, _ = listener.accept()
        except OSError:
            return
        with context.wrap_socket(raw, server_side=True) as conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(PNG))
            try:
                for byte in PNG:
                    if stop.wait(0.1):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], str(tmp_path / "cert.pem")
    stop.set()
    listener.close()
    thread.join(5)


def test_a_slow_download_ends_at_the_deadline(monkeypatch: pytest.MonkeyPatch,
                                              dripping_image_host: tuple[int, str]) -> None:
    import time

    from flask_wechat_qr import avatar_download

    port, cert = dripping_image_host
    # Only here: the loopback test server stands in for WeChat's image host.
    monkeypatch.setattr(avatar_download, "public_address",
                        lambda host, _port, _timeout: "127.0.0.1")
    session = avatar_download.download_session()
    session.verify = cert
    session.mount("https://", _PortAdapter(port))
    downloader = AvatarDownloader(timeout=0.8, session=session)
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        downloader.download(SOURCE)
    assert 0.7 < time.monotonic() - started < 3  # far less than the body's ~10 s


class _PortAdapter(PublicOnlyAdapter):
    """The public-only adapter, connecting to the test server's port instead of 443."""

    def __init__(self, port: int) -> None:
        self.port = port
        super().__init__(max_retries=0)

    def get_connection_with_tls_context(self, request: t.Any, verify: t.Any,
                                        proxies: t.Any = None, cert: t.Any = None) -> t.Any:
        request.url = request.url.replace("thirdwx.qlogo.cn/", f"thirdwx.qlogo.cn:{self.port}/")
        return super().get_connection_with_tls_context(request, verify, proxies, cert)
