"""The WeChat protocol client: URLs, requests, decoding, errcodes, transport faults, pooling.

Driven through the real routes where a browser would drive it (``start_login`` /
``finish_login``) and directly on the connection's client (``support.wechat_client``) where
no route exists (refresh, ``/sns/auth``) or where the exact error object matters. WeChat's
API is mocked with ``responses`` in WeChat's real shapes: ``text/plain`` without a charset,
errors as HTTP 200 ``errcode`` JSON.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
import ssl
import time
import typing as t
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import pytest
import requests
import responses
import sqlalchemy as sa
import urllib3
from flask import Flask
from markupsafe import escape
from support import (
    ACCESS_TOKEN,
    API,
    APP_ID,
    APP_SECRET,
    CALLBACK,
    CODE,
    NICKNAME,
    OPEN,
    OPENID,
    REFRESH_TOKEN,
    SECRETS,
    TOKEN_PATH,
    UNIONID,
    USERINFO_PATH,
    WeChatAPI,
    all_identities,
    api_paths,
    callback_app,
    finish_login,
    form_post,
    make_test_app,
    receiver_keys,
    start_login,
    verify,
    wechat_client,
)

from flask_wechat_qr import ConfigurationError, WeChatClient, WeChatProfile, WeChatToken
from flask_wechat_qr.deadline import MAX_ANSWER_BYTES
from flask_wechat_qr.errors import (
    CodeUsed,
    InvalidAccessToken,
    InvalidCode,
    InvalidCredentials,
    InvalidRefreshToken,
    InvalidRequest,
    LoginError,
    MissingCode,
    RateLimited,
    SnapshotUser,
    Unauthorized,
    WeChatAPIError,
    WeChatBusy,
    WeChatTimeout,
    WeChatUnavailable,
)

REFRESH_PATH = "/sns/oauth2/refresh_token"
AUTH_PATH = "/sns/auth"
TOKEN = WeChatToken(openid=OPENID, access_token=ACCESS_TOKEN, refresh_token=REFRESH_TOKEN,
                    unionid=UNIONID)

#: errcode, errmsg as WeChat words it, the error class, the page status the issue asks for.
ERRCODES: list[tuple[int, str, type[WeChatAPIError], int]] = [
    (40029, "invalid code", InvalidCode, 400),
    (42003, "code expired", InvalidCode, 400),
    (40163, "code been used", CodeUsed, 400),
    (41008, "missing code", MissingCode, 400),
    (40125, "invalid appsecret", InvalidCredentials, 502),
    (40013, "invalid appid", InvalidCredentials, 502),
    (40001, "invalid credential, access_token is invalid or not latest", InvalidCredentials, 502),
    (42001, "access_token expired", InvalidAccessToken, 502),
    (40014, "invalid access_token", InvalidAccessToken, 502),
    (40030, "invalid refresh_token", InvalidRefreshToken, 502),
    (-1, "system error", WeChatBusy, 502),
    (45011, "api minute-quota reach limit must slower retry next minute", RateLimited, 502),
    (48001, "api unauthorized", Unauthorized, 502),
    (61999, "a code WeChat invents next year", WeChatAPIError, 502),
]
ERRCODE_IDS = [str(code) for code, *_ in ERRCODES]


# --- helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    """One app for the tests that call the client directly (setting up an app per test
    would make this file slow); tests that log in use the per-test ``app``."""
    return make_test_app(tmp_path_factory.mktemp("client"))


@pytest.fixture
def wx(shared_app: Flask) -> t.Iterator[WeChatClient]:
    """The default connection's client, inside an app context."""
    with shared_app.app_context():
        yield wechat_client(shared_app)


def pairs(url: str) -> list[tuple[str, str]]:
    """The query of ``url`` as ordered (name, value) pairs, decoded once."""
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def raw_query(url: str) -> dict[str, str]:
    """The query of ``url`` as name -> still-encoded value."""
    return dict(part.split("=", 1) for part in urlsplit(url).query.split("&"))


def calls_to(api: WeChatAPI, path: str) -> list[t.Any]:
    return [call for call in api.mock.calls if urlsplit(call.request.url).path == path]


def fail_with(api: WeChatAPI, path: str, exc_cls: type[Exception]) -> None:
    """Make requests to ``path`` fail like the network does, with the full URL (and so the
    secret or token it carries) in the exception's text, as ``requests`` itself does."""

    def callback(request: requests.PreparedRequest) -> t.Any:
        raise exc_cls(f"HTTPSConnectionPool: Max retries exceeded with url: {request.url}")

    api.mock.add_callback(responses.GET, API + path, callback=callback)


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def assert_error_is_clean(error: BaseException) -> None:
    texts = [str(error), repr(error), " ".join(map(str, error.args))]
    if isinstance(error, LoginError):
        texts += [error.title, error.message]
    assert_no_secrets(*texts)


def user_nicknames(app: Flask) -> list[str]:
    with app.app_context():
        db = app.db  # type: ignore[attr-defined]
        return list(db.session.execute(sa.select(app.User.nickname)).scalars())  # type: ignore


# --- the authorize URL ---------------------------------------------------------------


def test_authorize_url_has_wechats_exact_parameter_order(client: t.Any) -> None:
    resp = client.get("/auth/wechat/login")
    assert resp.status_code == 302
    location = resp.headers["Location"]
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == OPEN + "/connect/qrconnect"
    assert parts.fragment == "wechat_redirect"
    assert location.count("#") == 1 and location.endswith("#wechat_redirect")
    query = pairs(location)
    assert [name for name, _ in query] == [
        "appid", "redirect_uri", "response_type", "scope", "state", "lang"]
    assert query[:4] == [("appid", APP_ID), ("redirect_uri", CALLBACK),
                         ("response_type", "code"), ("scope", "snsapi_login")]
    state = query[4][1]
    assert location == (
        f"{OPEN}/connect/qrconnect?appid={APP_ID}"
        "&redirect_uri=http%3A%2F%2Flocalhost%2Fauth%2Fwechat%2Fcallback"
        f"&response_type=code&scope=snsapi_login&state={state}&lang=en#wechat_redirect"
    )


def test_redirect_uri_is_percent_encoded_exactly_once(client: t.Any) -> None:
    location = client.get("/auth/wechat/login").headers["Location"]
    encoded = raw_query(location)["redirect_uri"]
    assert "/" not in encoded and ":" not in encoded
    assert "%25" not in encoded  # not encoded twice
    assert unquote(encoded) == CALLBACK


def test_redirect_uri_with_its_own_query_is_encoded_once(wx: WeChatClient) -> None:
    redirect_uri = "https://www.example.com/auth/wechat/callback?a=1&b=two words"
    url = wx.authorize_url(redirect_uri, "abc123")
    encoded = raw_query(url)["redirect_uri"]
    assert encoded == (
        "https%3A%2F%2Fwww.example.com%2Fauth%2Fwechat%2Fcallback%3Fa%3D1%26b%3Dtwo%20words")
    assert encoded == quote(redirect_uri, safe="")
    assert dict(pairs(url))["redirect_uri"] == redirect_uri
    assert [name for name, _ in pairs(url)] == [
        "appid", "redirect_uri", "response_type", "scope", "state"]


def test_redirect_uri_follows_the_sites_scheme_and_host(client: t.Any) -> None:
    location = client.get("/auth/wechat/login", base_url="https://www.example.com").headers[
        "Location"]
    assert dict(pairs(location))["redirect_uri"] == "https://www.example.com/auth/wechat/callback"


@pytest.mark.parametrize("lang", ["en", "cn"])
@pytest.mark.parametrize("accept_language", ["en", "zh-CN"])
def test_configured_lang_is_appended_last(make_app: t.Any, lang: str,
                                          accept_language: str) -> None:
    location = make_app(WECHAT_QR_LANG=lang).test_client().get(
        "/auth/wechat/login", headers={"Accept-Language": accept_language}).headers["Location"]
    query = pairs(location)
    assert [name for name, _ in query] == [
        "appid", "redirect_uri", "response_type", "scope", "state", "lang"]
    assert query[-1] == ("lang", lang)
    assert location.endswith(f"&lang={lang}#wechat_redirect")


@pytest.mark.parametrize("accept_language, lang", [(None, "en"), ("zh-CN", "cn"),
                                                    ("en-GB", "en")])
def test_lang_follows_the_page_language_by_default(client: t.Any, accept_language: str | None,
                                                   lang: str) -> None:
    headers = {"Accept-Language": accept_language} if accept_language else {}
    location = client.get("/auth/wechat/login", headers=headers).headers["Location"]
    assert pairs(location)[-1] == ("lang", lang)
    assert location.endswith(f"&lang={lang}#wechat_redirect")


def test_open_base_url_is_configurable(make_app: t.Any) -> None:
    app = make_app(WECHAT_QR_OPEN_BASE_URL="http://localhost:5001/")
    location = app.test_client().get("/auth/wechat/login").headers["Location"]
    assert location.startswith(f"http://localhost:5001/connect/qrconnect?appid={APP_ID}&")


def test_state_is_alphanumeric_short_and_fresh(client: t.Any) -> None:
    states = [start_login(client) for _ in range(20)]
    for state in states:
        assert re.fullmatch(r"[A-Za-z0-9]+", state)
        assert 16 <= len(state) <= 128
    assert len(set(states)) == len(states)


def test_qr_iframe_url_is_built_like_wxlogin_js(make_app: t.Any) -> None:
    app = make_app(WECHAT_QR_LANG="en", WECHAT_QR_QR_STYLE="white",
                   WECHAT_QR_QR_HREF="https://static.example.com/qr.css",
                   WECHAT_QR_QR_SELF_REDIRECT=True)
    with app.app_context():
        url = wechat_client(app).qr_iframe_url(CALLBACK, "st4te")
    assert url.startswith(OPEN + "/connect/qrconnect?")
    assert "#" not in url
    assert pairs(url) == [
        ("appid", APP_ID), ("scope", "snsapi_login"), ("redirect_uri", CALLBACK),
        ("state", "st4te"), ("login_type", "jssdk"), ("self_redirect", "true"),
        ("style", "white"), ("href", "https://static.example.com/qr.css"), ("lang", "en"),
    ]
    assert raw_query(url)["redirect_uri"] == quote(CALLBACK, safe="")


#: wxLogin.js v3's parameters after ``state``, in its order, with the value each sends.
WXLOGIN_TAIL = ("login_type", "self_redirect", "style", "href", "lang", "stylelite",
                "fast_login")
HREF = "data:text/css;base64,LmltcG93ZXJCb3ggLnFyY29kZSB7d2lkdGg6IDIwMHB4O30="


@pytest.mark.parametrize("stylelite", [False, True])
@pytest.mark.parametrize("fast_login", [True, False])
@pytest.mark.parametrize("href", [None, HREF])
@pytest.mark.parametrize("lang", [None, "en", "cn"])
def test_qr_iframe_url_sends_todays_wxlogin_options_in_its_order(
    make_app: t.Any, stylelite: bool, fast_login: bool, href: str | None, lang: str | None,
) -> None:
    """stylelite=1 and fast_login=0 only when they differ from WeChat's defaults, after
    lang, as wxLogin.js v3 appends them; the rest unchanged by them."""
    app = make_app(WECHAT_QR_QR_STYLELITE=stylelite, WECHAT_QR_QR_FAST_LOGIN=fast_login,
                   WECHAT_QR_QR_HREF=href, WECHAT_QR_LANG=lang)
    with app.app_context():
        url = wechat_client(app).qr_iframe_url(CALLBACK, "st4te")
    expected = [("appid", APP_ID), ("scope", "snsapi_login"), ("redirect_uri", CALLBACK),
                ("state", "st4te"), ("login_type", "jssdk"), ("self_redirect", "false"),
                ("style", "black")]
    expected += [("href", href)] if href else []
    expected += [("lang", "en")] if lang == "en" else []
    expected += [("stylelite", "1")] if stylelite else []
    expected += [("fast_login", "0")] if not fast_login else []
    assert pairs(url) == expected
    names = [name for name, _ in pairs(url)][4:]
    assert names == [name for name in WXLOGIN_TAIL if name in names]
    assert "#" not in url


@pytest.mark.parametrize("lang", [None, "en"])
def test_the_full_page_qr_url_ignores_the_embedded_only_options(make_app: t.Any,
                                                                 lang: str | None) -> None:
    app = make_app(WECHAT_QR_QR_STYLELITE=True, WECHAT_QR_QR_FAST_LOGIN=False, WECHAT_QR_LANG=lang)
    with app.app_context():
        url = wechat_client(app).authorize_url(CALLBACK, "st4te")
    names = [name for name, _ in pairs(url)]
    assert names == ["appid", "redirect_uri", "response_type", "scope", "state"] + (
        ["lang"] if lang else [])
    assert url.endswith("#wechat_redirect")


@pytest.mark.parametrize("build", ["authorize_url", "qr_iframe_url"])
@pytest.mark.parametrize("redirect_uri", [
    "http://localhost/app#/auth/wechat/callback", "http://localhost/auth/wechat/callback#",
    "https://www.example.com/#/login?x=1",
])
def test_a_redirect_uri_with_a_fragment_is_refused(make_app: t.Any, build: str,
                                                   redirect_uri: str) -> None:
    """WeChat's fast login misplaces code and state on a #/route (2024-10): no visitor is
    sent to WeChat with one."""
    app = make_app()
    with app.app_context(), pytest.raises(ConfigurationError) as info:
        getattr(wechat_client(app), build)(redirect_uri, "st4te")
    error = info.value
    assert error.key == "redirect_uri"
    assert "'#'" in error.problem and repr(redirect_uri) in error.problem
    assert "/auth/<connection>/callback" in error.fix and "fast login" in error.fix


# --- the token request ---------------------------------------------------------------


def test_token_request_is_wechats_get_with_appid_and_secret(
    client: t.Any, wechat_api: WeChatAPI
) -> None:
    state = start_login(client)
    wechat_api.token()
    wechat_api.userinfo()
    assert finish_login(client, state, code=CODE).status_code == 302
    (call,) = calls_to(wechat_api, TOKEN_PATH)
    request = call.request
    assert request.method == "GET"
    assert request.url.startswith(API + TOKEN_PATH + "?")
    assert pairs(request.url) == [("appid", APP_ID), ("secret", APP_SECRET), ("code", CODE),
                                  ("grant_type", "authorization_code")]
    assert "Authorization" not in request.headers
    assert "redirect_uri" not in request.url
    assert "client_id" not in request.url and "client_secret" not in request.url
    assert not request.body


@pytest.mark.parametrize("code", ["a&secret=x&code=y", "a+b c%41", "中=#?", "", "x=y", "A-z_0.9~"])
def test_the_code_reaches_wechat_as_given_in_its_place(
        wx: WeChatClient, wechat_api: WeChatAPI, code: str) -> None:
    """Whatever a callback's code holds, WeChat's token request carries it as one value, in
    WeChat's order, beside the app's own AppID and AppSecret."""
    wechat_api.token()
    wx.exchange_code(code)
    (call,) = calls_to(wechat_api, TOKEN_PATH)
    assert call.request.url.startswith(API + TOKEN_PATH + "?")
    assert pairs(call.request.url) == [("appid", APP_ID), ("secret", APP_SECRET),
                                       ("code", code), ("grant_type", "authorization_code")]


def test_a_hosts_authlib_keys_for_the_remote_app_change_no_call(
        make_app: t.Any, wechat_api: WeChatAPI, caplog: pytest.LogCaptureFixture) -> None:
    """Authlib's registry reads ``<NAME>_CLIENT_ID`` and the like from ``app.config`` for
    what ``register`` was not given: no such key of a host's (the remote app is named
    ``wechat_qr_<connection>``) changes the credentials, the URL or the method of the
    exchange, nor makes any other call (``SERVER_METADATA_URL`` once made one first)."""
    prefix = "WECHAT_QR_WECHAT_"
    app = make_app(**{
        prefix + "CLIENT_ID": "wxelsewhere", prefix + "CLIENT_SECRET": "other-secret",
        prefix + "ACCESS_TOKEN_URL": "https://elsewhere.example.com/token",
        prefix + "ACCESS_TOKEN_PARAMS": {"method": "POST"},
        prefix + "API_BASE_URL": "https://elsewhere.example.com/",
        prefix + "CLIENT_KWARGS": {"token_endpoint_auth_method": "client_secret_basic"},
        prefix + "SERVER_METADATA_URL": "https://elsewhere.example.com/metadata",
    })
    wechat_api.token()
    with app.app_context():
        assert wechat_client(app).exchange_code(CODE).openid == OPENID
    (call,) = wechat_api.mock.calls
    assert call.request.method == "GET"
    assert call.request.url.startswith(API + TOKEN_PATH + "?")
    assert pairs(call.request.url) == [("appid", APP_ID), ("secret", APP_SECRET), ("code", CODE),
                                       ("grant_type", "authorization_code")]
    assert "Authorization" not in call.request.headers


def test_a_code_that_is_not_text_is_refused_before_any_call(
        wx: WeChatClient, wechat_api: WeChatAPI) -> None:
    """Half a character (a lone surrogate, which no callback's query decodes to but a host
    may hand ``exchange_code``) is no code WeChat issued: a typed error, not the
    ``UnicodeEncodeError`` of quoting it, and WeChat is not asked."""
    with pytest.raises(InvalidRequest) as info:
        wx.exchange_code("0a1B\ud800")
    assert info.value.status == 400
    assert not wechat_api.mock.calls


def test_exchange_code_returns_the_token(wx: WeChatClient, wechat_api: WeChatAPI) -> None:
    wechat_api.token()
    token = wx.exchange_code(CODE)
    assert token.openid == OPENID
    assert token.unionid == UNIONID
    assert token.access_token == ACCESS_TOKEN
    assert token.refresh_token == REFRESH_TOKEN
    assert token.expires_in == 7200
    assert token.scope == "snsapi_login"
    assert token.is_snapshotuser is False
    assert ACCESS_TOKEN not in repr(token) and REFRESH_TOKEN not in repr(token)


def test_token_without_unionid(wx: WeChatClient, wechat_api: WeChatAPI) -> None:
    wechat_api.token(unionid=None)
    wechat_api.userinfo(unionid=None)
    token = wx.exchange_code(CODE)
    assert token.unionid is None
    profile = wx.userinfo(token)
    assert profile.unionid is None
    assert profile.openid == OPENID


def test_login_without_unionid_works(app: Flask, client: t.Any, wechat_api: WeChatAPI) -> None:
    state = start_login(client)
    wechat_api.token(unionid=None)
    wechat_api.userinfo(unionid=None)
    assert finish_login(client, state).status_code == 302
    (identity,) = all_identities(app)
    assert identity.openid == OPENID
    assert identity.unionid is None


def test_profile_gets_the_tokens_unionid_when_userinfo_has_none(
    wx: WeChatClient, wechat_api: WeChatAPI
) -> None:
    wechat_api.userinfo(unionid=None)
    assert wx.userinfo(TOKEN).unionid == UNIONID


@pytest.mark.parametrize("flag", [1, "1"])
def test_snapshot_user_is_refused(wx: WeChatClient, wechat_api: WeChatAPI, flag: t.Any) -> None:
    wechat_api.token(is_snapshotuser=flag)
    with pytest.raises(SnapshotUser):
        wx.exchange_code(CODE)


def test_snapshot_user_login_creates_nobody(
    app: Flask, client: t.Any, wechat_api: WeChatAPI
) -> None:
    state = start_login(client)
    wechat_api.token(is_snapshotuser=1)
    wechat_api.userinfo()
    resp = finish_login(client, state)
    assert resp.status_code == 403
    assert calls_to(wechat_api, USERINFO_PATH) == []
    assert user_nicknames(app) == []
    assert all_identities(app) == []


def test_not_a_snapshot_user(wx: WeChatClient, wechat_api: WeChatAPI) -> None:
    wechat_api.token(is_snapshotuser=0)
    assert wx.exchange_code(CODE).is_snapshotuser is False


# --- userinfo ------------------------------------------------------------------------


def test_userinfo_request(client: t.Any, wechat_api: WeChatAPI) -> None:
    state = start_login(client)
    wechat_api.token()
    wechat_api.userinfo()
    assert finish_login(client, state).status_code == 302
    (call,) = calls_to(wechat_api, USERINFO_PATH)
    assert call.request.method == "GET"
    # The page's language (no Accept-Language: WECHAT_QR_DEFAULT_LOCALE, "en").
    assert pairs(call.request.url) == [("access_token", ACCESS_TOKEN), ("openid", OPENID),
                                       ("lang", "en")]
    assert "Authorization" not in call.request.headers


def test_userinfo_lang_is_configurable(make_app: t.Any, wechat_api: WeChatAPI) -> None:
    app = make_app(WECHAT_QR_USERINFO_LANG="en")
    client = app.test_client()
    state = start_login(client)
    wechat_api.token()
    wechat_api.userinfo()
    assert finish_login(client, state).status_code == 302
    (call,) = calls_to(wechat_api, USERINFO_PATH)
    assert pairs(call.request.url)[-1] == ("lang", "en")


def test_userinfo_lang_per_call(wx: WeChatClient, wechat_api: WeChatAPI) -> None:
    wechat_api.userinfo()
    wx.userinfo(TOKEN, lang="zh_TW")
    (call,) = calls_to(wechat_api, USERINFO_PATH)
    assert dict(pairs(call.request.url))["lang"] == "zh_TW"


def test_userinfo_profile_fields(wx: WeChatClient, wechat_api: WeChatAPI) -> None:
    wechat_api.userinfo()
    profile = wx.userinfo(TOKEN)
    assert profile.openid == OPENID
    assert profile.unionid == UNIONID
    assert profile.nickname == NICKNAME
    assert profile.avatar_url and profile.avatar_url.startswith("https://thirdwx.qlogo.cn/")
    assert profile.raw["sex"] == 0 and profile.raw["privilege"] == []


# --- decoding: UTF-8 from the bytes, whatever the Content-Type says -------------------


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/json; encoding=utf-8", "application/json",
    "application/json; charset=utf-8", "text/html",
])
@pytest.mark.parametrize("nickname", [NICKNAME, "José", "某某某", "😀Tom", "TKA\ue13c"])
def test_nickname_comes_through_intact(
    wx: WeChatClient, wechat_api: WeChatAPI, content_type: str, nickname: str
) -> None:
    body = json.dumps({"openid": OPENID, "nickname": nickname, "unionid": UNIONID},
                      ensure_ascii=False).encode("utf-8")
    wechat_api.raw(USERINFO_PATH, body, content_type=content_type)
    assert wx.userinfo(TOKEN).nickname == nickname
    (call,) = calls_to(wechat_api, USERINFO_PATH)
    assert call.response.headers["Content-Type"] == content_type  # the mock sent no charset


def test_requests_alone_would_garble_the_nickname(wechat_api: WeChatAPI) -> None:
    """The control for the test above: the mock really sends what breaks naive clients."""
    wechat_api.userinfo()
    naive = requests.get(API + USERINFO_PATH, timeout=1).json()["nickname"]
    assert naive != NICKNAME
    assert naive.encode("latin-1").decode("utf-8") == NICKNAME


def test_nickname_survives_a_whole_login(app: Flask, client: t.Any, wechat_api: WeChatAPI) -> None:
    state = start_login(client)
    wechat_api.token()
    wechat_api.userinfo(nickname=NICKNAME)
    assert finish_login(client, state).status_code == 302
    assert user_nicknames(app) == [NICKNAME]
    assert [i.nickname for i in all_identities(app)] == [NICKNAME]
    assert client.get("/").get_data(as_text=True).endswith(NICKNAME)


def test_raw_control_characters_in_strings_are_tolerated(
    wx: WeChatClient, wechat_api: WeChatAPI
) -> None:
    body = b'{"openid": "' + OPENID.encode() + b'", "nickname": "tab\there"}'
    wechat_api.raw(USERINFO_PATH, body)
    assert wx.userinfo(TOKEN).nickname == "tab\there"


# --- errcodes ------------------------------------------------------------------------


@pytest.mark.parametrize("errcode, errmsg, error_cls, status", ERRCODES, ids=ERRCODE_IDS)
def test_errcode_on_token_exchange_is_typed(
    wx: WeChatClient, wechat_api: WeChatAPI, errcode: int, errmsg: str,
    error_cls: type[WeChatAPIError], status: int,
) -> None:
    wechat_api.error(TOKEN_PATH, errcode, errmsg)
    with pytest.raises(WeChatAPIError) as info:
        wx.exchange_code(CODE)
    error = info.value
    assert type(error) is error_cls
    assert error.errcode == errcode
    assert error.errmsg.startswith(errmsg + ", rid: ")
    assert str(errcode) in str(error)
    assert error.status == status
    assert_error_is_clean(error)
    # A code is sent again only after "busy" (-1), which means WeChat did not look at it.
    assert len(calls_to(wechat_api, TOKEN_PATH)) == (2 if errcode == -1 else 1)


def test_busy_token_exchange_is_retried_once_and_succeeds(
    wx: WeChatClient, wechat_api: WeChatAPI
) -> None:
    wechat_api.error(TOKEN_PATH, -1, "system error")
    wechat_api.token()
    assert wx.exchange_code(CODE).openid == OPENID
    assert len(calls_to(wechat_api, TOKEN_PATH)) == 2


@pytest.mark.parametrize("errmsg", [
    "invalid code", "invalid code, rid: 63106779-282330ba-5d5deaf3",
    "invalid code, hints: [ req_id: RfHd6zore-b7G7ca ]", "", "something else entirely",
])
def test_only_the_errcode_matters(wx: WeChatClient, wechat_api: WeChatAPI, errmsg: str) -> None:
    wechat_api.raw(TOKEN_PATH, json.dumps({"errcode": 40029, "errmsg": errmsg}).encode())
    with pytest.raises(InvalidCode) as info:
        wx.exchange_code(CODE)
    assert info.value.errmsg == errmsg


def test_errcode_without_errmsg(wx: WeChatClient, wechat_api: WeChatAPI) -> None:
    wechat_api.raw(TOKEN_PATH, b'{"errcode": 40163}')
    with pytest.raises(CodeUsed) as info:
        wx.exchange_code(CODE)
    assert info.value.errmsg == ""


def test_errcode_as_a_string(wx: WeChatClient, wechat_api: WeChatAPI) -> None:
    wechat_api.raw(TOKEN_PATH, b'{"errcode": "40163", "errmsg": "code been used"}')
    with pytest.raises(CodeUsed):
        wx.exchange_code(CODE)


@pytest.mark.parametrize("errcode, errmsg, error_cls, status", ERRCODES, ids=ERRCODE_IDS)
def test_errcode_on_userinfo_is_typed(
    wx: WeChatClient, wechat_api: WeChatAPI, errcode: int, errmsg: str,
    error_cls: type[WeChatAPIError], status: int,
) -> None:
    wechat_api.error(USERINFO_PATH, errcode, errmsg)
    with pytest.raises(WeChatAPIError) as info:
        wx.userinfo(TOKEN)
    assert type(info.value) is error_cls
    assert info.value.errcode == errcode
    assert_error_is_clean(info.value)


@pytest.mark.parametrize("errcode, errmsg, error_cls, status", ERRCODES, ids=ERRCODE_IDS)
def test_errcode_page(
    make_app: t.Any, wechat_api: WeChatAPI, caplog: pytest.LogCaptureFixture, errcode: int,
    errmsg: str, error_cls: type[WeChatAPIError], status: int,
) -> None:
    # A short timeout: on 40163 the callback first waits for another request of the same
    # login (WeChat's double redirect), then its page reloads it until that request had
    # three timeouts' time, and only then shows the error.
    client = make_app(WECHAT_QR_HTTP_TIMEOUT=0.1).test_client()
    state = start_login(client)
    wechat_api.error(TOKEN_PATH, errcode, errmsg)
    with caplog.at_level(logging.DEBUG):
        resp = finish_login(client, state, code=CODE)
        if errcode == 40163:
            assert resp.status_code == 200 and "Refresh" in resp.headers
            assert_no_secrets(resp.get_data(as_text=True), caplog.text)
            time.sleep(0.35)
            resp = client.get(resp.headers["Refresh"].partition("url=")[2])
    assert resp.status_code == status
    body = resp.get_data(as_text=True)
    assert str(escape(error_cls.title)) in body
    assert "Traceback" not in body
    assert_no_secrets(body, caplog.text)


def test_errcode_on_userinfo_page(client: t.Any, wechat_api: WeChatAPI) -> None:
    state = start_login(client)
    wechat_api.token()
    wechat_api.error(USERINFO_PATH, 40014, "invalid access_token")
    resp = finish_login(client, state)
    assert resp.status_code == 502
    assert str(escape(InvalidAccessToken.title)) in resp.get_data(as_text=True)
    assert_no_secrets(resp.get_data(as_text=True))


def test_busy_userinfo_is_retried_once(wx: WeChatClient, wechat_api: WeChatAPI) -> None:
    wechat_api.error(USERINFO_PATH, -1, "system error")
    wechat_api.userinfo()
    profile = wx.userinfo(TOKEN)
    assert profile.nickname == NICKNAME
    calls = calls_to(wechat_api, USERINFO_PATH)
    assert len(calls) == 2
    assert pairs(calls[0].request.url) == pairs(calls[1].request.url)


def test_busy_userinfo_twice_gives_up(wx: WeChatClient, wechat_api: WeChatAPI) -> None:
    wechat_api.error(USERINFO_PATH, -1, "system error")
    with pytest.raises(WeChatBusy):
        wx.userinfo(TOKEN)
    assert len(calls_to(wechat_api, USERINFO_PATH)) == 2


def test_userinfo_errors_other_than_busy_are_not_retried(
    wx: WeChatClient, wechat_api: WeChatAPI
) -> None:
    wechat_api.error(USERINFO_PATH, 45011, "api minute-quota reach limit")
    wechat_api.userinfo()
    with pytest.raises(RateLimited):
        wx.userinfo(TOKEN)
    assert len(calls_to(wechat_api, USERINFO_PATH)) == 1


def test_busy_during_login_retries_userinfo(
    app: Flask, client: t.Any, wechat_api: WeChatAPI
) -> None:
    state = start_login(client)
    wechat_api.token()
    wechat_api.error(USERINFO_PATH, -1, "system error")
    wechat_api.userinfo()
    assert finish_login(client, state).status_code == 302
    assert len(calls_to(wechat_api, USERINFO_PATH)) == 2
    assert user_nicknames(app) == [NICKNAME]


# --- refresh and token check ---------------------------------------------------------


def test_refresh_is_a_get_without_the_secret(wx: WeChatClient, wechat_api: WeChatAPI) -> None:
    wechat_api.raw(REFRESH_PATH, json.dumps({
        "access_token": "NEW_ACCESS_TOKEN", "expires_in": 7200,
        "refresh_token": "NEW_REFRESH_TOKEN", "openid": OPENID, "scope": "snsapi_login",
    }).encode())
    token = wx.refresh(REFRESH_TOKEN)
    assert token.access_token == "NEW_ACCESS_TOKEN"
    assert token.refresh_token == "NEW_REFRESH_TOKEN"
    assert token.openid == OPENID
    assert token.expires_in == 7200
    (call,) = wechat_api.mock.calls
    assert call.request.method == "GET"
    assert urlsplit(call.request.url).path == REFRESH_PATH
    assert pairs(call.request.url) == [("appid", APP_ID), ("grant_type", "refresh_token"),
                                       ("refresh_token", REFRESH_TOKEN)]
    assert "secret" not in call.request.url
    assert APP_SECRET not in call.request.url
    assert "Authorization" not in call.request.headers
    assert not call.request.body


@pytest.mark.parametrize("errcode", [40030, 42002])
def test_refresh_errors(wx: WeChatClient, wechat_api: WeChatAPI, errcode: int) -> None:
    wechat_api.error(REFRESH_PATH, errcode, "invalid refresh_token")
    with pytest.raises(InvalidRefreshToken) as info:
        wx.refresh(REFRESH_TOKEN)
    assert info.value.errcode == errcode
    assert_error_is_clean(info.value)


def test_check_token_valid(wx: WeChatClient, wechat_api: WeChatAPI) -> None:
    wechat_api.raw(AUTH_PATH, b'{"errcode":0,"errmsg":"ok"}')
    assert wx.check_token(ACCESS_TOKEN, OPENID) is True
    (call,) = wechat_api.mock.calls
    assert call.request.method == "GET"
    assert urlsplit(call.request.url).path == AUTH_PATH
    assert pairs(call.request.url) == [("access_token", ACCESS_TOKEN), ("openid", OPENID)]
    assert "Authorization" not in call.request.headers


@pytest.mark.parametrize("errcode, errmsg", [(40003, "invalid openid"),
                                             (42001, "access_token expired"),
                                             (40014, "invalid access_token")])
def test_check_token_invalid(
    wx: WeChatClient, wechat_api: WeChatAPI, errcode: int, errmsg: str
) -> None:
    wechat_api.error(AUTH_PATH, errcode, errmsg)
    assert wx.check_token(ACCESS_TOKEN, OPENID) is False


@pytest.mark.parametrize("errcode, error_cls", [(-1, WeChatBusy), (45011, RateLimited),
                                                (40125, InvalidCredentials)])
def test_check_token_does_not_hide_other_errors(
    wx: WeChatClient, wechat_api: WeChatAPI, errcode: int, error_cls: type[Exception]
) -> None:
    wechat_api.error(AUTH_PATH, errcode, "x")
    with pytest.raises(error_cls):
        wx.check_token(ACCESS_TOKEN, OPENID)


# --- transport faults ----------------------------------------------------------------

OPERATIONS: dict[str, tuple[str, t.Callable[[WeChatClient], t.Any]]] = {
    "exchange_code": (TOKEN_PATH, lambda wx: wx.exchange_code(CODE)),
    "userinfo": (USERINFO_PATH, lambda wx: wx.userinfo(TOKEN)),
    "refresh": (REFRESH_PATH, lambda wx: wx.refresh(REFRESH_TOKEN)),
    "check_token": (AUTH_PATH, lambda wx: wx.check_token(ACCESS_TOKEN, OPENID)),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
@pytest.mark.parametrize("fault", [requests.Timeout, requests.ReadTimeout,
                                   requests.ConnectTimeout])
def test_timeout_is_wechat_timeout(
    wx: WeChatClient, wechat_api: WeChatAPI, operation: str, fault: type[Exception]
) -> None:
    path, call = OPERATIONS[operation]
    fail_with(wechat_api, path, fault)
    with pytest.raises(WeChatTimeout) as info:
        call(wx)
    assert info.value.status == 504
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert_error_is_clean(info.value)


@pytest.mark.parametrize("operation", list(OPERATIONS))
@pytest.mark.parametrize("fault", [requests.ConnectionError, requests.exceptions.SSLError,
                                   requests.exceptions.ChunkedEncodingError])
def test_connection_error_is_wechat_unavailable(
    wx: WeChatClient, wechat_api: WeChatAPI, operation: str, fault: type[Exception]
) -> None:
    path, call = OPERATIONS[operation]
    fail_with(wechat_api, path, fault)
    with pytest.raises(WeChatUnavailable) as info:
        call(wx)
    assert type(info.value) is WeChatUnavailable
    assert info.value.status == 502
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert_error_is_clean(info.value)


BAD_ANSWERS = [
    pytest.param(500, b'{"errcode": -1, "errmsg": "system error"}', id="500-json"),
    pytest.param(500, b"<html><body>500 Internal Server Error</body></html>", id="500-html"),
    pytest.param(502, b"<html><body>502 Bad Gateway</body></html>", id="502-html"),
    pytest.param(503, b"", id="503-empty"),
    pytest.param(200, b"<html><head><title>\xe5\xbe\xae\xe4\xbf\xa1</title></head></html>",
                 id="200-html"),
    pytest.param(200, b"", id="200-empty"),
    pytest.param(200, b'["not", "an", "object"]', id="200-json-list"),
    pytest.param(200, b'"ok"', id="200-json-string"),
    pytest.param(200, b'{"openid": "trunc', id="200-truncated"),
    pytest.param(404, b"<html>404 Not Found</html>", id="404-html"),
    pytest.param(403, b'{"message": "forbidden by proxy"}', id="403-json"),
    # A hostile or broken upstream: nesting deeper than the JSON decoder's stack (a
    # RecursionError), and JavaScript's constants, which are no JSON.
    pytest.param(200, b"[" * 200_000, id="200-nested-deeper-than-the-stack"),
    pytest.param(200, b'{"openid": "o1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                 id="200-object-nested-deeper-than-the-stack"),
    pytest.param(200, b'{"errcode": Infinity, "errmsg": "x"}', id="200-errcode-infinity"),
    pytest.param(200, b'{"openid": "o1", "access_token": "AT", "nickname": "n", "x": NaN}',
                 id="200-nan"),
]


@pytest.mark.parametrize("operation", list(OPERATIONS))
@pytest.mark.parametrize("status, body", BAD_ANSWERS)
def test_answers_that_are_not_wechats_api_are_wechat_unavailable(
    wx: WeChatClient, wechat_api: WeChatAPI, operation: str, status: int, body: bytes,
    caplog: pytest.LogCaptureFixture
) -> None:
    """Each is a 502 page, and a WARNING naming the host and what it answered (never the
    query, which carries secrets): an HTML page or a server error left only an INFO line
    naming neither (a helper's hunt, session 35)."""
    path, call = OPERATIONS[operation]
    wechat_api.raw(path, body, status=status)
    with pytest.raises(WeChatUnavailable) as info, \
            caplog.at_level(logging.WARNING, logger="flask_wechat_qr"):
        call(wx)
    assert type(info.value) is WeChatUnavailable
    assert info.value.status == 502
    assert_error_is_clean(info.value)
    said = [record.getMessage() for record in caplog.records
            if record.levelno == logging.WARNING and "not its JSON" in record.getMessage()]
    assert said == [f"WeChat's API at {urlsplit(API).netloc} answered HTTP {status} "
                    "(text/plain), not its JSON; check WECHAT_QR_API_BASE_URL and any proxy "
                    "in front of it"]


def test_the_warning_of_an_answer_not_wechats_names_no_credentials(
        caplog: pytest.LogCaptureFixture) -> None:
    """An API base URL with a proxy's credentials in it (``https://user:pass@host``): the
    host is named, the credentials and the query (the AppSecret) are not (a review)."""
    from flask_wechat_qr.client import decode_body

    resp = requests.Response()
    resp.status_code, resp._content = 200, b"<html>login</html>"
    resp.headers["Content-Type"] = "text/html"
    resp.url = "https://user:s3cr3t@api.example.com/sns/oauth2/access_token?secret=APPSECRET"
    with pytest.raises(WeChatUnavailable), \
            caplog.at_level(logging.WARNING, logger="flask_wechat_qr"):
        decode_body(resp)
    (said,) = [record.getMessage() for record in caplog.records]
    assert said.startswith("WeChat's API at api.example.com answered HTTP 200 (text/html)")
    assert "s3cr3t" not in said and "user" not in said and "APPSECRET" not in said


def _padded_token_answer(size: int) -> bytes:
    """A valid token answer, padded with spaces to ``size`` bytes."""
    body = json.dumps({"access_token": "AT", "expires_in": 7200, "openid": "o1",
                       "scope": "snsapi_login"}).encode()
    return body + b" " * (size - len(body))


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_an_oversized_answer_is_refused_unread(wx: WeChatClient, wechat_api: WeChatAPI,
                                               operation: str, caplog: t.Any) -> None:
    """WeChat's answers are under 2 KB: one of megabytes (a hostile or broken upstream) is
    refused, not held whole in the worker's memory."""
    path, call = OPERATIONS[operation]
    wechat_api.raw(path, _padded_token_answer(MAX_ANSWER_BYTES + 1))
    with pytest.raises(WeChatUnavailable) as info:
        call(wx)
    assert type(info.value) is WeChatUnavailable
    assert f"answered more than {MAX_ANSWER_BYTES // 1024} KiB" in caplog.text
    assert_error_is_clean(info.value)


def test_an_answer_under_the_limit_is_read_whole(wx: WeChatClient,
                                                 wechat_api: WeChatAPI) -> None:
    wechat_api.raw(TOKEN_PATH, _padded_token_answer(MAX_ANSWER_BYTES))
    assert wx.exchange_code(CODE).openid == "o1"


def test_a_compressed_answer_counts_as_it_unpacks(wx: WeChatClient,
                                                  wechat_api: WeChatAPI) -> None:
    """A small gzip body that unpacks to megabytes is refused like a big one."""
    import gzip

    packed = gzip.compress(_padded_token_answer(4 * MAX_ANSWER_BYTES))
    assert len(packed) < MAX_ANSWER_BYTES // 10
    wechat_api.raw(TOKEN_PATH, packed, headers={"Content-Encoding": "gzip"})
    with pytest.raises(WeChatUnavailable):
        wx.exchange_code(CODE)


def test_an_errcode_too_big_for_an_integer_is_still_an_error(wx: WeChatClient,
                                                              wechat_api: WeChatAPI) -> None:
    """``1e400`` reads as a float's infinity, which no int() takes (an OverflowError): an
    answer with a number no float holds is no answer of WeChat's API (session 36; a
    ``WeChatAPIError`` before), the same 502."""
    wechat_api.raw(TOKEN_PATH, b'{"errcode": 1e400, "errmsg": "x"}')
    with pytest.raises(WeChatUnavailable) as info:
        wx.exchange_code(CODE)
    assert info.value.status == 502


TOKEN_ANSWER = {"access_token": ACCESS_TOKEN, "expires_in": 7200, "openid": OPENID,
                "scope": "snsapi_login", "unionid": UNIONID}


@pytest.mark.parametrize("operation", ["exchange_code", "refresh", "userinfo"])
@pytest.mark.parametrize("field, value", [
    pytest.param("unionid", {"a": 1}, id="unionid-object"),
    pytest.param("unionid", [UNIONID], id="unionid-list"),
    pytest.param("unionid", 5, id="unionid-number"),
    pytest.param("unionid", "u" * 129, id="unionid-longer-than-its-column"),
    pytest.param("openid", "o" * 129, id="openid-longer-than-its-column"),
    pytest.param("openid", 5, id="openid-number"),
])
def test_ids_that_are_not_wechats_are_wechat_unavailable(
    wx: WeChatClient, wechat_api: WeChatAPI, operation: str, field: str, value: t.Any
) -> None:
    """An openid or unionid no identity row can hold (on PostgreSQL, a 500 from the
    insert; a list, on every database) is no answer of WeChat's."""
    path, call = OPERATIONS[operation]
    wechat_api.raw(path, json.dumps({**TOKEN_ANSWER, field: value}).encode())
    with pytest.raises(WeChatUnavailable) as info:
        call(wx)
    assert info.value.status == 502
    assert_error_is_clean(info.value)


@pytest.mark.parametrize("field", ["scope", "refresh_token"])
def test_token_text_fields_that_are_not_text_are_left_out(wx: WeChatClient,
                                                          wechat_api: WeChatAPI,
                                                          field: str) -> None:
    """A ``scope`` that is a list made ``grants_profile`` raise (a 500 on the callback)."""
    wechat_api.raw(TOKEN_PATH, json.dumps({**TOKEN_ANSWER, field: ["snsapi_login"]}).encode())
    token = wx.exchange_code(CODE)
    assert getattr(token, field) is None
    assert token.grants_profile


@pytest.mark.parametrize(("body", "status"), [
    pytest.param(b"[" * 200_000, 502, id="nested-deeper-than-the-stack"),
    pytest.param(b'{"errcode": 1e400}', 502, id="errcode-infinity"),
    pytest.param(json.dumps({**TOKEN_ANSWER, "scope": ["snsapi_login"]}).encode(), 302,
                 id="scope-list"),
    pytest.param(json.dumps({**TOKEN_ANSWER, "unionid": [UNIONID]}).encode(), 502,
                 id="unionid-list"),
    pytest.param(json.dumps({**TOKEN_ANSWER, "unionid": "\ud800"}).encode(), 502,
                 id="unionid-lone-surrogate"),
    # a lifetime no integer reads is no lifetime (below), the login goes on
    pytest.param(json.dumps({**TOKEN_ANSWER, "expires_in": "\u00b2"}).encode(), 302,
                 id="expires-in-superscript-two"),
    pytest.param(json.dumps({**TOKEN_ANSWER, "expires_in": "9" * 5000}).encode(), 302,
                 id="expires-in-5000-digits"),
])
def test_a_hostile_token_answer_is_a_page_not_a_500(client: t.Any, wechat_api: WeChatAPI,
                                                    body: bytes, status: int) -> None:
    state = start_login(client)
    wechat_api.raw(TOKEN_PATH, body)
    wechat_api.userinfo()
    resp = finish_login(client, state, code=CODE)
    assert resp.status_code == status
    assert "Traceback" not in resp.get_data(as_text=True)


@pytest.mark.parametrize("number", ["1e999", "-1E400", "9" * 400 + ".0"])
@pytest.mark.parametrize("where", ["field", "nested"])
def test_a_profile_with_a_number_no_float_holds_is_a_page_not_a_500(
        client: t.Any, wechat_api: WeChatAPI, number: str, where: str) -> None:
    """Before: ``1e999`` decoded to an infinite float, stored with the profile: PostgreSQL
    refused the JSON (a 500), MariaDB's check of the column too (a bare 500), SQLite kept
    what is no JSON (a red team's hostile answer, session 36). ``NaN`` was refused
    already."""
    state = start_login(client)
    wechat_api.token()
    value = number if where == "field" else f'{{"b": [{number}]}}'
    wechat_api.raw(USERINFO_PATH,
                   f'{{"openid": "{OPENID}", "nickname": "n", "sex": {value}}}'.encode())
    resp = finish_login(client, state, code=CODE)
    assert resp.status_code == 502, resp.get_data(as_text=True)[-500:]


@pytest.mark.parametrize("levels, status", [
    # Deeper than the flush's stack but not the decoder's, wherever the test's stack ends
    # (a red team found 960-965 levels so, session 36; a band of them here).
    *((levels, 502) for levels in range(800, 1000, 20)),
    (33, 502), (17, 502), (16, 302)])
def test_a_profile_nested_deeper_than_wechats_is_a_page_not_a_500(
        client: t.Any, wechat_api: WeChatAPI, levels: int, status: int) -> None:
    """Before: an answer nested some 960 levels deep (arrays in a profile's field) was taken
    by the decoder and ran out of stack where the profile was stored at the flush, a 500
    with a RecursionError; on MariaDB, whose check of a JSON column refuses more than 32
    levels, 32 was a 500. The profile itself is the first level."""
    state = start_login(client)
    wechat_api.token()
    inner = levels - 1
    wechat_api.raw(USERINFO_PATH, b'{"openid": "%s", "nickname": "n", "x": %s%s}' % (
        OPENID.encode(), b"[" * inner, b"]" * inner))
    resp = finish_login(client, state, code=CODE)
    assert resp.status_code == status, resp.get_data(as_text=True)[-500:]
    assert "Traceback" not in resp.get_data(as_text=True)


def test_a_nickname_with_half_a_character_is_a_page_not_a_500(
        client: t.Any, wechat_api: WeChatAPI) -> None:
    """A lone surrogate escape (``"\\ud800"``) decodes to a string no database stores: the
    identity's INSERT raised ``UnicodeEncodeError``."""
    state = start_login(client)
    wechat_api.token()
    wechat_api.raw(USERINFO_PATH, b'{"openid": "%s", "nickname": "A\\ud800"}'
                   % OPENID.encode())
    resp = finish_login(client, state, code=CODE)
    assert resp.status_code == 502
    assert "Traceback" not in resp.get_data(as_text=True)


@pytest.mark.parametrize("operation", ["exchange_code", "refresh"])
@pytest.mark.parametrize("expires_in", ["\u00b2", "9" * 5000, -5, True, 10**12, "12"])
def test_a_tokens_odd_lifetime_is_no_lifetime(
        wx: WeChatClient, wechat_api: WeChatAPI, operation: str, expires_in: t.Any) -> None:
    """``str.isdigit`` takes "²" (``int`` does not) and ``int`` refuses 5,000 digits: the
    refresh raised ``ValueError``; the exchange refused the whole answer, one read the
    same way as the refresh's."""
    path, call = OPERATIONS[operation]
    wechat_api.raw(path, json.dumps({**TOKEN_ANSWER, "expires_in": expires_in}).encode())
    token = call(wx)
    assert token.expires_in == (12 if expires_in == "12" else None)


@pytest.mark.parametrize("operation", ["exchange_code", "refresh"])
def test_token_answer_without_openid_or_token_is_wechat_unavailable(
    wx: WeChatClient, wechat_api: WeChatAPI, operation: str
) -> None:
    path, call = OPERATIONS[operation]
    wechat_api.raw(path, json.dumps({"expires_in": 7200, "scope": "snsapi_login"}).encode())
    with pytest.raises(WeChatUnavailable):
        call(wx)


@pytest.mark.parametrize("body", [
    {"error": "invalid_grant", "error_description": "bad code"},
    # an error beside a token: no token (the exchange of session 28 took it, a login)
    {**TOKEN_ANSWER, "error": "invalid_grant"},
])
def test_oauth2_style_error_body_is_wechat_unavailable(
    client: t.Any, wechat_api: WeChatAPI, body: dict[str, t.Any]
) -> None:
    """Not WeChat's shape, but what a proxy or test double may send: Authlib would raise
    its own OAuthError for it, which no error page handles (a 500)."""
    state = start_login(client)
    wechat_api.raw(TOKEN_PATH, json.dumps(body).encode())
    wechat_api.userinfo()  # the profile would be there: only the token answer fails
    resp = finish_login(client, state, code=CODE)
    assert resp.status_code == 502
    assert str(escape(WeChatUnavailable.title)) in resp.get_data(as_text=True)


def test_userinfo_without_openid_is_wechat_unavailable(
    wx: WeChatClient, wechat_api: WeChatAPI
) -> None:
    wechat_api.raw(USERINFO_PATH, json.dumps({"nickname": NICKNAME}).encode())
    with pytest.raises(WeChatUnavailable):
        wx.userinfo(TOKEN)


@pytest.mark.parametrize("path", [TOKEN_PATH, USERINFO_PATH])
@pytest.mark.parametrize("fault, status, title", [
    (requests.Timeout, 504, WeChatTimeout.title),
    (requests.ConnectionError, 502, WeChatUnavailable.title),
])
def test_transport_fault_pages(
    client: t.Any, wechat_api: WeChatAPI, caplog: pytest.LogCaptureFixture, path: str,
    fault: type[Exception], status: int, title: str,
) -> None:
    state = start_login(client)
    if path == USERINFO_PATH:
        wechat_api.token()
    fail_with(wechat_api, path, fault)
    with caplog.at_level(logging.DEBUG):
        resp = finish_login(client, state, code=CODE)
    assert resp.status_code == status
    body = resp.get_data(as_text=True)
    assert str(escape(title)) in body
    assert "Traceback" not in body
    assert_no_secrets(body, caplog.text)


@pytest.mark.parametrize("status, body", [(500, b"<html>oops</html>"), (200, b"<html>hi</html>")])
def test_non_api_answer_page(client: t.Any, wechat_api: WeChatAPI, status: int,
                             body: bytes) -> None:
    state = start_login(client)
    wechat_api.raw(TOKEN_PATH, body, status=status)
    resp = finish_login(client, state, code=CODE)
    assert resp.status_code == 502
    assert str(escape(WeChatUnavailable.title)) in resp.get_data(as_text=True)
    assert_no_secrets(resp.get_data(as_text=True))


# --- one pooled session, timeouts on every call --------------------------------------


def test_one_session_per_connection(wx: WeChatClient, make_app: t.Any) -> None:
    assert isinstance(wx.session, requests.Session)
    assert wx.session is wx.session
    other_app = make_app(WECHAT_QR_CONNECTIONS=[
        {"connection": "wechat", "app_id": "wx1111111111111111", "app_secret": "s1"},
        {"connection": "other", "app_id": "wx2222222222222222", "app_secret": "s2"},
    ])
    other_sessions = [wechat_client(other_app, name).session for name in ("wechat", "other")]
    assert other_sessions[0] is not other_sessions[1]
    assert other_sessions[0] is not wx.session


def test_session_survives_a_completed_login(
    app: Flask, client: t.Any, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    wx = wechat_client(app)
    session = wx.session
    adapters = dict(session.adapters)
    closed: list[t.Any] = []
    original_close = requests.adapters.HTTPAdapter.close

    def spy_close(self: requests.adapters.HTTPAdapter) -> None:
        closed.append(self)
        original_close(self)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "close", spy_close)
    sent: list[str] = []
    original_send = session.send

    def spy_send(request: requests.PreparedRequest, **kwargs: t.Any) -> t.Any:
        sent.append(urlsplit(request.url).path)
        return original_send(request, **kwargs)

    monkeypatch.setattr(session, "send", spy_send)

    for openid in (OPENID, "ohS-VwAJ9GEXlplngwybJ3Z-ZHr2"):  # two first logins
        state = start_login(client)
        wechat_api.mock.reset()
        wechat_api.token(openid=openid)
        wechat_api.userinfo(openid=openid)
        assert finish_login(client, state).status_code == 302
        client.get("/")  # the next page view
    assert wx.session is session
    assert dict(session.adapters) == adapters
    assert closed == []
    # Both the token exchange (through Authlib) and userinfo went through this session.
    assert sent.count(TOKEN_PATH) == 2 and sent.count(USERINFO_PATH) == 2

    session.close()  # the spy does see a real close
    assert closed


@pytest.mark.parametrize("timeout, expected", [(2.5, 2.5), ("7", 7.0), (None, 5.0)])
def test_every_call_carries_the_timeout(
    make_app: t.Any, wechat_api: WeChatAPI, timeout: t.Any, expected: float
) -> None:
    config = {} if timeout is None else {"WECHAT_QR_HTTP_TIMEOUT": timeout}
    app = make_app(**config)
    client = app.test_client()
    state = start_login(client)
    wechat_api.token()
    wechat_api.userinfo()
    wechat_api.raw(REFRESH_PATH, json.dumps({"access_token": "A2", "openid": OPENID}).encode())
    wechat_api.raw(AUTH_PATH, b'{"errcode":0,"errmsg":"ok"}')
    assert finish_login(client, state).status_code == 302
    with app.app_context():
        wx = wechat_client(app)
        wx.refresh(REFRESH_TOKEN)
        wx.check_token(ACCESS_TOKEN, OPENID)
    calls = wechat_api.mock.calls
    assert [urlsplit(c.request.url).path for c in calls] == [
        TOKEN_PATH, USERINFO_PATH, REFRESH_PATH, AUTH_PATH]
    for call in calls:
        assert call.request.req_kwargs["timeout"] == expected


def test_profile_of_another_openid_is_refused(
    app: Flask, client: t.Any, wechat_api: WeChatAPI
) -> None:
    state = start_login(client)
    wechat_api.token()
    wechat_api.userinfo(openid="o" + "Z" * 27)
    resp = finish_login(client, state)
    assert resp.status_code == 502
    with app.app_context():
        assert app.db.session.execute(app.db.select(app.User)).first() is None


def test_proxy_environment_is_read_once_and_honoured(
    make_app: t.Any, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests re-reads the proxy variables on every call; the client's session reads
    them when the app is set up, and still sends every call through the proxy."""
    import requests.sessions

    reads: list[str] = []
    real = requests.sessions.get_environ_proxies

    def counting(url: str, no_proxy: t.Any = None) -> dict[str, str]:
        reads.append(url)
        return real(url, no_proxy=no_proxy)

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", counting)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.cn:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    app = make_app()
    assert len(reads) == 1  # at setup, for WeChat's API host
    wechat_api.userinfo()
    wechat_api.raw(AUTH_PATH, b'{"errcode":0,"errmsg":"ok"}')
    wechat_api.raw(AUTH_PATH, b'{"errcode":0,"errmsg":"ok"}')
    with app.app_context():
        wx = wechat_client(app)
        wx.userinfo(TOKEN)
        wx.check_token(ACCESS_TOKEN, OPENID)
        wx.check_token(ACCESS_TOKEN, OPENID)
    assert len(reads) == 1
    assert len(wechat_api.mock.calls) == 3
    for call in wechat_api.mock.calls:
        assert call.request.req_kwargs["proxies"]["https"] == "http://proxy.example.cn:3128"


def test_netrc_credentials_never_reach_wechat(
    make_app: t.Any, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch,
    tmp_path: t.Any,
) -> None:
    """requests would add a ``~/.netrc`` login for WeChat's host as HTTP Basic auth to
    every call that has no auth of its own (userinfo, refresh, the token check)."""
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine {urlsplit(API).hostname} login someone password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert requests.utils.get_netrc_auth(API + USERINFO_PATH) == ("someone", "hunter2")
    app = make_app()
    wechat_api.userinfo()
    wechat_api.raw(AUTH_PATH, b'{"errcode":0,"errmsg":"ok"}')
    with app.app_context():
        wx = wechat_client(app)
        wx.userinfo(TOKEN)
        wx.check_token(ACCESS_TOKEN, OPENID)
    assert len(wechat_api.mock.calls) == 2
    for call in wechat_api.mock.calls:
        assert "Authorization" not in call.request.headers


@pytest.mark.parametrize("path", [TOKEN_PATH, USERINFO_PATH])
def test_a_redirect_from_wechats_api_is_not_followed(
    make_app: t.Any, wechat_api: WeChatAPI, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The query of a WeChat API call holds the AppSecret (or a user's access token): a
    redirect would carry it to whatever host it names. It is WeChat's answer, not taken."""
    app = make_app()
    elsewhere = "https://elsewhere.example.com/collect"
    wechat_api.raw(path, b"", status=302, headers={"Location": elsewhere})
    with app.app_context(), pytest.raises(WeChatUnavailable):
        wx = wechat_client(app)
        if path == TOKEN_PATH:
            wx.exchange_code(CODE)
        else:
            wx.userinfo(TOKEN)
    assert [urlsplit(call.request.url).path for call in wechat_api.mock.calls] == [path]
    # Said where it pointed (the host only: a query might carry a secret).
    assert "elsewhere.example.com" in caplog.text and "collect" not in caplog.text


def test_a_session_given_params_by_the_host_still_sends_them(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    """The short way merges only the session's headers and hooks: a session a host gave
    ``params`` (or ``auth``) goes the usual way, which merges those too."""
    app = make_app()
    wechat_api.raw(AUTH_PATH, b'{"errcode":0,"errmsg":"ok"}')
    with app.app_context():
        wx = wechat_client(app)
        wx.session.params = {"tag": "host"}
        try:
            assert wx.check_token(ACCESS_TOKEN, OPENID)
        finally:
            wx.session.params = {}
    assert "tag=host" in wechat_api.mock.calls[0].request.url


def test_wechat_is_sent_no_cookies_and_the_session_keeps_none(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    """Every person's calls share the client's session: a cookie set on one answer (by a
    proxy, say) would go back with everyone's later calls, on any path."""
    app = make_app()
    wechat_api.raw(AUTH_PATH, b'{"errcode":0,"errmsg":"ok"}',
                   headers={"Set-Cookie": "sid=someone; Path=/"})
    wechat_api.raw(AUTH_PATH, b'{"errcode":0,"errmsg":"ok"}')
    with app.app_context():
        wx = wechat_client(app)
        assert wx.check_token(ACCESS_TOKEN, OPENID)
        assert wx.check_token(ACCESS_TOKEN, OPENID)
        assert len(wx.session.cookies) == 0
        # The usual way (a call the short way does not take) sends none either.
        wx.session.request("GET", API + AUTH_PATH, withhold_token=True,
                           params={"access_token": ACCESS_TOKEN, "openid": OPENID})
    assert [call.request.headers.get("Cookie") for call in wechat_api.mock.calls] == [
        None, None, None]


def test_the_sessions_headers_as_they_are_at_each_call_are_sent(
    make_app: t.Any, wechat_api: WeChatAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """The short way checks a set of headers once, not at every call: a header the host
    sets, changes or removes on the client's session between calls goes (or stops going)
    with the next call, and one no HTTP request may carry is still refused."""
    app = make_app()
    for _ in range(4):
        wechat_api.raw(AUTH_PATH, b'{"errcode":0,"errmsg":"ok"}')
    with app.app_context():
        wx = wechat_client(app)
        assert wx.check_token(ACCESS_TOKEN, OPENID)
        wx.session.headers["X-Tag"] = "one"
        try:
            assert wx.check_token(ACCESS_TOKEN, OPENID)
            wx.session.headers["X-Tag"] = "two"
            assert wx.check_token(ACCESS_TOKEN, OPENID)
            wx.session.headers["X-Tag"] = "three\r\nX-Injected: yes"
            with pytest.raises(WeChatUnavailable):
                wx.check_token(ACCESS_TOKEN, OPENID)
            assert "(InvalidHeader)" in caplog.text
        finally:
            del wx.session.headers["X-Tag"]
        assert wx.check_token(ACCESS_TOKEN, OPENID)
    sent = [call.request.headers for call in wechat_api.mock.calls]
    assert [headers.get("X-Tag") for headers in sent] == [None, "one", "two", None]
    assert all(headers.get("X-Injected") is None for headers in sent)
    assert len({id(headers) for headers in sent}) == len(sent)  # each call its own


def test_the_short_way_sends_the_url_requests_would_prepare(
    make_app: t.Any, wechat_api: WeChatAPI
) -> None:
    """The short way prepares the part of a call's URL before its query once: each call,
    the first and the later ones, still goes to the URL ``PreparedRequest`` makes of it
    (dot segments resolved, characters quoted, a query requoted where it needs it)."""
    app = make_app()
    queries = ["access_token=a-b_c.d~e&openid=o+x", "access_token=%41%2A&openid=o",
               "access_token=a b&openid=中", "", "access_token=x#fragment"]
    urls = [f"{API}/x/..{AUTH_PATH}{'?' if query else ''}{query}" for query in queries]
    for _ in urls * 2:
        wechat_api.raw(AUTH_PATH, b'{"errcode":0,"errmsg":"ok"}')
    with app.app_context():
        wx = wechat_client(app)
        for url in urls * 2:
            wx.session.request("GET", url, withhold_token=True)
    expected = [requests.Request("GET", url).prepare().url for url in urls * 2]
    assert [call.request.url for call in wechat_api.mock.calls] == expected
    assert f"{API}{AUTH_PATH}?access_token=a-b_c.d~e&openid=o+x" in expected


def test_a_logins_wechat_calls_skip_requests_per_call_merging(
    client: t.Any, wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first login's two WeChat calls are prepared by the client's session, not merged
    with its cookies and settings again by ``Session.request`` (0.2 ms of CPU a call); the
    session's hooks still see both, as ``Session.send`` sends them."""
    merged: list[str] = []
    real = requests.Session.prepare_request

    def counting(self: requests.Session, request: requests.Request) -> t.Any:
        merged.append(urlsplit(request.url).path)
        return real(self, request)

    monkeypatch.setattr(requests.Session, "prepare_request", counting)
    hooked: list[str] = []

    def hook(resp: requests.Response, **_kwargs: t.Any) -> None:
        hooked.append(urlsplit(resp.url).path)

    session = wechat_client(client.application).session
    session.hooks["response"].append(hook)
    try:
        state = start_login(client)
        wechat_api.token()
        wechat_api.userinfo()
        assert finish_login(client, state).status_code == 302
    finally:
        session.hooks["response"].remove(hook)
    assert hooked == [TOKEN_PATH, USERINFO_PATH]
    assert merged == []


# --- retries ------------------------------------------------------------------------------


def test_busy_userinfo_is_retried_once_during_a_login(client: t.Any, wechat_api: t.Any) -> None:
    state = start_login(client)
    wechat_api.token()
    wechat_api.error(USERINFO_PATH, -1, "system error")
    wechat_api.userinfo()
    resp = finish_login(client, state)
    assert resp.status_code == 302
    assert api_paths(wechat_api) == [TOKEN_PATH, USERINFO_PATH, USERINFO_PATH]
    assert client.get("/").get_data(as_text=True).endswith(NICKNAME)


# --- avatars a page may show --------------------------------------------------------------


@pytest.mark.parametrize("given, kept", [
    ("https://thirdwx.qlogo.cn/mmopen/vi_32/abc/132", "https://thirdwx.qlogo.cn/mmopen/vi_32/abc/132"),
    ("http://thirdwx.qlogo.cn/mmopen/abc/0", "https://thirdwx.qlogo.cn/mmopen/abc/0"),
    ("HTTP://wx.qlogo.cn/mmopen/abc/0", "https://wx.qlogo.cn/mmopen/abc/0"),
    ("http://evil.example/a.png", None),  # mixed content, and not WeChat's
    ("javascript:alert(document.cookie)", None),
    ("data:image/svg+xml;base64,PHN2Zy8+", None),  # only the sandbox's, in sandbox mode
    ("https://user@thirdwx.qlogo.cn/a", None),
    ("https://thirdwx.qlogo.cn\\@evil.example/", None),
    ("", None), (None, None), (132, None),
])
def test_only_https_avatars_are_kept(given: t.Any, kept: str | None) -> None:
    profile = WeChatProfile.from_response({"openid": OPENID, "headimgurl": given})
    assert profile.avatar_url == kept


def test_the_sandboxs_image_avatars_are_kept_only_for_the_sandbox() -> None:
    data = {"openid": OPENID, "headimgurl": "data:image/svg+xml;base64,PHN2Zy8+"}
    assert WeChatProfile.from_response(data, sandbox_images=True).avatar_url == (
        "data:image/svg+xml;base64,PHN2Zy8+")
    hostile = {"openid": OPENID, "headimgurl": "data:text/html;base64,PHNjcmlwdD4="}
    assert WeChatProfile.from_response(hostile, sandbox_images=True).avatar_url is None


def test_a_hostile_avatar_reaches_no_row_and_no_token(make_app: t.Any, wechat_api: t.Any,
                                                       pem: str) -> None:
    app = callback_app(make_app, pem)
    client = app.test_client()
    wechat_api.token()
    wechat_api.userinfo(headimgurl="javascript:alert(1)")
    resp = finish_login(client, start_login(client))
    claims = verify(form_post(resp)["fields"]["id_token"], receiver_keys(client))
    assert "picture" not in claims
    assert [i.avatar_url for i in all_identities(app)] == [None]


# --- outage logs: which host, and why ------------------------------------------------


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_outage_log_names_the_host_and_the_reason(
    make_app: t.Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A real refused connection: the log says where and why, never the query's secrets."""
    port = _closed_port()
    app = make_app(WECHAT_QR_API_BASE_URL=f"http://127.0.0.1:{port}")
    with app.app_context(), caplog.at_level(logging.DEBUG):
        with pytest.raises(WeChatUnavailable):
            wechat_client(app).exchange_code(CODE)
    assert (f"WeChat access_token failed: could not connect to 127.0.0.1:{port} "
            "(Connection refused)") in caplog.messages
    assert_no_secrets(caplog.text)
    assert "secret=" not in caplog.text and "code=" not in caplog.text


def _exchange_through(proxy: str, make_app: t.Any, caplog: pytest.LogCaptureFixture,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A code exchanged with WeChat's real address through ``proxy`` (the environment's
    ``HTTPS_PROXY``), which fails: the log in ``caplog``."""
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    app = make_app(WECHAT_QR_API_BASE_URL="https://api.weixin.qq.com")
    with app.app_context(), caplog.at_level(logging.DEBUG):
        with pytest.raises(WeChatUnavailable):
            wechat_client(app).exchange_code(CODE)


def test_an_outage_log_names_the_environments_proxy_that_failed(
    make_app: t.Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``HTTPS_PROXY`` at a dead port: the log said "could not connect to
    api.weixin.qq.com (Connection refused)", and an operator looked at WeChat's address
    (a helper's hunt). It names the proxy, without its credentials."""
    port = _closed_port()
    _exchange_through(f"http://site:pr0xy-pass@127.0.0.1:{port}", make_app, caplog,
                      monkeypatch)
    assert (f"WeChat access_token failed: the proxy 127.0.0.1:{port} (from the environment) "
            "on the way to api.weixin.qq.com failed (Connection refused)") in caplog.messages
    assert "pr0xy-pass" not in caplog.text and "site:" not in caplog.text
    assert_no_secrets(caplog.text)


def test_a_timeout_through_the_environments_proxy_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy that takes the call and then says nothing: WeChat did not answer, through
    that proxy (named, without credentials); no proxy set for WeChat's host, no mention."""
    from flask_wechat_qr.client import describe_transport_failure

    monkeypatch.setenv("HTTPS_PROXY", "http://site:pr0xy-pass@proxy.example.cn:3128")
    monkeypatch.setenv("NO_PROXY", "sandbox.example.cn")
    silent = requests.ReadTimeout("read timed out")
    assert describe_transport_failure(silent, "https://api.weixin.qq.com") == (
        "api.weixin.qq.com did not answer in time (read timeout) (through the proxy "
        "proxy.example.cn:3128, from the environment)")
    assert describe_transport_failure(silent, "https://sandbox.example.cn") == (
        "sandbox.example.cn did not answer in time (read timeout)")
    # credentials holding what a URL parser takes for the path or fragment (a review)
    for password in ("pa/ss", "pa#ss", "p@ss", "pa?ss"):
        monkeypatch.setenv("HTTPS_PROXY", f"http://site:{password}@proxy.example.cn:3128/")
        assert describe_transport_failure(silent, "https://api.weixin.qq.com") == (
            "api.weixin.qq.com did not answer in time (read timeout) (through the proxy "
            "proxy.example.cn:3128, from the environment)")


def test_an_outage_log_names_a_socks_proxy_that_failed(
    make_app: t.Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """urllib3 tells a SOCKS proxy's failures as the connection's own: "could not connect to
    api.weixin.qq.com" for a dead ``socks5h://`` proxy (a review). Now the proxy is named."""
    port = _closed_port()
    _exchange_through(f"socks5h://site:s3cret@127.0.0.1:{port}", make_app, caplog,
                      monkeypatch)
    (line,) = [m for m in caplog.messages if m.startswith("WeChat access_token failed")]
    assert line.startswith("WeChat access_token failed: could not reach api.weixin.qq.com "
                           f"through the proxy 127.0.0.1:{port} (from the environment")
    assert "s3cret" not in caplog.text


def _raise_chain(request: requests.PreparedRequest, cause: BaseException,
                 wrapper: type[requests.RequestException] = requests.ConnectionError) -> t.Any:
    """What requests raises: its error around urllib3's, whose text quotes the URL."""
    pool = urllib3.HTTPSConnectionPool("api.weixin.qq.com")
    inner = urllib3.exceptions.MaxRetryError(pool, str(request.url), reason=cause)
    raise wrapper(inner, request=request)


def _name_not_resolved() -> BaseException:
    lookup = socket.gaierror(-2, "Name or service not known")
    cause = urllib3.exceptions.NameResolutionError(
        "api.weixin.qq.com", None, lookup)  # type: ignore[arg-type]
    cause.__cause__ = lookup
    return cause


def _certificate_refused() -> BaseException:
    error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED]")
    error.verify_message = "certificate has expired"
    error.reason = "CERTIFICATE_VERIFY_FAILED"
    return urllib3.exceptions.SSLError(error)


@pytest.mark.parametrize("cause, wrapper, expected", [
    (_name_not_resolved, requests.ConnectionError,
     "could not resolve api.weixin.qq.com (Name or service not known)"),
    (_certificate_refused, requests.exceptions.SSLError,
     "TLS with api.weixin.qq.com failed (certificate has expired)"),
    (lambda: urllib3.exceptions.ProtocolError(
        "Connection aborted.", http.client.RemoteDisconnected("Remote end closed")),
     requests.ConnectionError, "api.weixin.qq.com closed the connection without answering"),
    (lambda: urllib3.exceptions.ProtocolError(
        "Connection aborted.", ConnectionResetError(104, "Connection reset by peer")),
     requests.ConnectionError,
     "the connection to api.weixin.qq.com failed (Connection reset by peer)"),
    (lambda: urllib3.exceptions.ConnectTimeoutError("timed out"), requests.ConnectTimeout,
     "connecting to api.weixin.qq.com timed out"),
    (lambda: urllib3.exceptions.ReadTimeoutError(None, "/", "timed out"),  # type: ignore[arg-type]
     requests.ReadTimeout, "api.weixin.qq.com did not answer in time (read timeout)"),
    (lambda: TimeoutError("the call's deadline"), requests.Timeout,
     "api.weixin.qq.com gave no complete answer within WECHAT_QR_HTTP_TIMEOUT"),
], ids=["dns", "tls", "disconnected", "reset", "connect-timeout", "read-timeout", "deadline"])
def test_outage_logs_say_why(
    wx: WeChatClient, wechat_api: WeChatAPI, caplog: pytest.LogCaptureFixture,
    cause: t.Callable[[], BaseException], wrapper: type[requests.RequestException],
    expected: str,
) -> None:
    wechat_api.mock.add_callback(
        responses.GET, API + TOKEN_PATH,
        callback=lambda request: _raise_chain(request, cause(), wrapper))
    with caplog.at_level(logging.DEBUG), pytest.raises((WeChatUnavailable, WeChatTimeout)):
        wx.exchange_code(CODE)
    assert f"WeChat access_token failed: {expected}" in caplog.messages
    assert_no_secrets(caplog.text)


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_an_unexplained_failure_still_names_the_host(
    wx: WeChatClient, wechat_api: WeChatAPI, caplog: pytest.LogCaptureFixture, operation: str
) -> None:
    path, call = OPERATIONS[operation]
    fail_with(wechat_api, path, requests.ConnectionError)
    with caplog.at_level(logging.DEBUG), pytest.raises(WeChatUnavailable):
        call(wx)
    assert any(message.startswith("WeChat ") and message.endswith(
        "failed: could not reach api.weixin.qq.com (ConnectionError)")
        for message in caplog.messages), caplog.messages
    assert_no_secrets(caplog.text)
