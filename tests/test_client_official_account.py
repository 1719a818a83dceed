"""The Official Account's web authorization client (logins inside WeChat): WeChat's URL
order, its credentials in the code exchange, silent tokens, snapshot refusals. WeChat's API
mocked with ``responses`` in its real shapes (``text/plain``, errcodes on HTTP 200)."""

from __future__ import annotations

import typing as t
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses
from flask import Flask
from support import CODE, OPENID, USERINFO_PATH, WeChatAPI, make_test_app

from flask_wechat_qr.client import OfficialAccountClient, ProfileNotGranted, WeChatToken
from flask_wechat_qr.errors import SnapshotUser, WeChatAPIError

OA_APP_ID = "wxfedcba9876543210"
OA_SECRET = "0a-s3cr3t-d0-n0t-l34k"


@pytest.fixture(scope="module")
def oa_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    return make_test_app(tmp_path_factory.mktemp("oa"), WECHAT_QR_OA_APP_ID=OA_APP_ID,
                         WECHAT_QR_OA_APP_SECRET=OA_SECRET)


@pytest.fixture
def oa(oa_app: Flask) -> t.Iterator[OfficialAccountClient]:
    with oa_app.test_request_context("/"):
        yield oa_app.extensions["wechat_qr"].official_accounts["wechat"]


@pytest.fixture
def api() -> t.Iterator[WeChatAPI]:
    with responses.RequestsMock() as mock:
        yield WeChatAPI(mock)


def test_no_official_account_client_without_its_credentials(tmp_path: t.Any) -> None:
    app = make_test_app(tmp_path, WECHAT_QR_OA_APP_ID=OA_APP_ID)
    assert app.extensions["wechat_qr"].official_accounts == {}


def test_the_authorize_url_is_in_wechats_order_with_its_fragment(
        oa: OfficialAccountClient) -> None:
    url = oa.authorize_url("https://www.example.com/auth/wechat/callback", "s" * 30)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https", "open.weixin.qq.com", "/connect/oauth2/authorize")
    assert parts.fragment == "wechat_redirect"
    assert parse_qsl(parts.query) == [
        ("appid", OA_APP_ID), ("redirect_uri", "https://www.example.com/auth/wechat/callback"),
        ("response_type", "code"), ("scope", "snsapi_userinfo"), ("state", "s" * 30)]
    assert "redirect_uri=https%3A%2F%2Fwww.example.com%2Fauth%2Fwechat%2Fcallback&" in url
    asked = oa.authorize_url("https://www.example.com/cb", "s", scope="snsapi_base")
    assert ("scope", "snsapi_base") in parse_qsl(urlsplit(asked).query)


def test_the_code_is_exchanged_with_the_official_accounts_credentials(
        oa: OfficialAccountClient, api: WeChatAPI) -> None:
    api.token(scope="snsapi_userinfo")
    token = oa.exchange_code(CODE)
    assert token.app == "official_account" and token.openid == OPENID
    query = dict(parse_qsl(urlsplit(api.mock.calls[0].request.url).query))
    assert (query["appid"], query["secret"]) == (OA_APP_ID, OA_SECRET)


def test_a_silent_token_asks_for_no_profile(oa: OfficialAccountClient, api: WeChatAPI) -> None:
    api.token(scope="snsapi_base", unionid=None)
    token = oa.exchange_code(CODE)
    assert not token.grants_profile
    with pytest.raises(ProfileNotGranted):
        oa.userinfo(token)
    assert [call.request.url for call in api.mock.calls
            if USERINFO_PATH in call.request.url] == []


@pytest.mark.parametrize("scope", [None, "snsapi_login", "snsapi_userinfo",
                                   "snsapi_base,snsapi_userinfo"])
def test_other_tokens_grant_the_profile(scope: str | None) -> None:
    assert WeChatToken(openid="o", access_token="a", scope=scope).grants_profile


def test_a_snapshot_token_is_refused(oa: OfficialAccountClient, api: WeChatAPI) -> None:
    api.token(scope="snsapi_userinfo", is_snapshotuser=1)
    with pytest.raises(SnapshotUser):
        oa.exchange_code(CODE)


def test_a_refused_profile_of_a_granted_token_is_a_snapshot_visitor(
        oa: OfficialAccountClient, api: WeChatAPI) -> None:
    """WeChat refuses /sns/userinfo (48001) for a snapshot-page token even where the flag
    was missing from the token answer."""
    api.error(USERINFO_PATH, 48001, "api unauthorized")
    token = WeChatToken(openid=OPENID, access_token="a", scope="snsapi_userinfo",
                        app="official_account")
    with pytest.raises(SnapshotUser):
        oa.userinfo(token)
    api.userinfo(is_snapshotuser=1)
    with pytest.raises(SnapshotUser):
        oa.userinfo(token)


def test_other_profile_errors_stay_what_they_are(oa: OfficialAccountClient,
                                                 api: WeChatAPI) -> None:
    api.error(USERINFO_PATH, 40001, "invalid credential")
    token = WeChatToken(openid=OPENID, access_token="a", scope="snsapi_userinfo")
    with pytest.raises(WeChatAPIError) as info:
        oa.userinfo(token)
    assert info.value.errcode == 40001


def test_there_is_no_qr_code_for_an_official_account(oa: OfficialAccountClient) -> None:
    with pytest.raises(TypeError):
        oa.qr_iframe_url("https://www.example.com/cb", "s")
