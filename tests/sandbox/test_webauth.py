"""The simulated Official Account (服务号): web authorization at /connect/oauth2/authorize
with WeChat's rules, its codes and tokens on the /sns/* API, one unionid per person across
the website application and the Official Account, and snapshot-page visitors."""

from __future__ import annotations

import json
import re
import typing as t
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from support import Clock, Database, dispose_engines

from flask_wechat_qr.sandbox import SandboxApp, create_sandbox_app, install_sandbox
from flask_wechat_qr.sandbox.options import SANDBOX_OA_APP_ID, SANDBOX_OA_APP_SECRET
from flask_wechat_qr.sandbox.users import PEOPLE, openid_for, unionid_for
from flask_wechat_qr.sandbox.webauth import PERSON_COOKIE

WEB_ID, WEB_SECRET = "wxsandboxweb0000001", "web-secret"
OA_ID, OA_SECRET = SANDBOX_OA_APP_ID, SANDBOX_OA_APP_SECRET
DOMAIN = "site.example"
CALLBACK = f"https://{DOMAIN}/auth/wechat/callback"
WECHAT_UA = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
             "Chrome/120.0 Mobile Safari/537.36 MicroMessenger/8.0.49.2600(0x28003133) "
             "NetType/WIFI Language/zh_CN")


@pytest.fixture
def sandbox(database: Database) -> t.Iterator[Flask]:
    """The standalone sandbox with a website application and an Official Account."""
    app = create_sandbox_app(
        [SandboxApp(WEB_ID, WEB_SECRET, "Demo site", DOMAIN),
         SandboxApp(OA_ID, OA_SECRET, "Demo 服务号", DOMAIN, kind="official_account")],
        database_uri=database.url("sandbox"))
    yield app
    dispose_engines(app)


def authorize_path(appid: str = OA_ID, scope: str = "snsapi_userinfo", state: str = "st4te",
                   redirect_uri: str = CALLBACK, extra: str = "") -> str:
    """An authorization URL as the extension sends it (the fragment stays in the browser)."""
    return (f"/connect/oauth2/authorize?appid={appid}&redirect_uri={quote(redirect_uri, safe='')}"
            f"&response_type=code&scope={scope}&state={state}{extra}")


def redirect_query(resp: t.Any) -> dict[str, list[str]]:
    assert resp.status_code == 302, resp.get_data(as_text=True)
    location = resp.headers["Location"]
    assert location.startswith(CALLBACK + "?"), location
    return parse_qs(urlsplit(location).query)


def consent(client: t.Any, path: str | None = None, **form: str) -> dict[str, list[str]]:
    """Open the consent page, answer it (Allow as 张三 unless told), return the callback's
    query."""
    path = path or authorize_path()
    assert client.get(path).status_code == 200
    return redirect_query(client.post(path, data={"action": "allow", "person": "zhangsan",
                                                  **form}))


def api(client: t.Any, path: str, **params: str) -> tuple[t.Any, dict[str, t.Any]]:
    resp = client.get(path, query_string=params)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "text/plain"
    return resp, json.loads(resp.data.decode("utf-8"))


def exchange(client: t.Any, code: str, appid: str = OA_ID,
             secret: str = OA_SECRET) -> dict[str, t.Any]:
    return api(client, "/sns/oauth2/access_token", appid=appid, secret=secret, code=code,
               grant_type="authorization_code")[1]


def qr_login_code(sandbox: Flask, person: str) -> str:
    """A website-app code for ``person`` by QR login (scanned and allowed on "the phone")."""
    client = sandbox.test_client()
    page = client.get(f"/connect/qrconnect?appid={WEB_ID}&redirect_uri={quote(CALLBACK, safe='')}"
                      "&response_type=code&scope=snsapi_login&state=s")
    uuid = re.search(r'data-uuid="([^"]+)"', page.get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    client.get(f"/connect/confirm/{uuid}")
    client.post(f"/connect/confirm/{uuid}", data={"action": "allow", "person": person})
    redirect = client.get("/connect/l/qrconnect", query_string={"uuid": uuid}).json["redirect"]
    return t.cast(str, parse_qs(urlsplit(redirect).query)["code"][0])


# --- the consent page -------------------------------------------------------------------


def test_consent_page_in_chinese_like_wechat(sandbox: Flask) -> None:
    page = sandbox.test_client().get(authorize_path(), headers={
        "Accept-Language": "zh-CN,zh;q=0.9", "User-Agent": WECHAT_UA})
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "“Demo 服务号”申请获得你的公开信息（昵称、头像）" in body
    assert "允许" in body and "拒绝" in body and "快照页" in body
    assert all(person.nickname in body for person in PEOPLE)
    assert 'value="new"' in body and 'id="sbx-not-in-wechat"' not in body


def test_consent_page_in_english_and_outside_wechat(sandbox: Flask) -> None:
    body = sandbox.test_client().get(authorize_path(), headers={
        "Accept-Language": "en"}).get_data(as_text=True)
    assert "Demo 服务号 requests your public information (nickname, avatar)" in body
    assert "Allow" in body and "Deny" in body and "Snapshot visitor (快照页)" in body
    # WeChat itself would refuse a browser outside WeChat: the sandbox says so, and goes on.
    assert 'id="sbx-not-in-wechat"' in body and "请在微信客户端打开链接" in body


def test_allow_redirects_with_code_and_state(sandbox: Flask) -> None:
    query = consent(sandbox.test_client())
    assert query["state"] == ["st4te"] and len(query["code"][0]) >= 16


def test_deny_redirects_with_state_only(sandbox: Flask) -> None:
    client = sandbox.test_client()
    client.get(authorize_path())
    assert redirect_query(client.post(authorize_path(), data={"action": "deny"})) == {
        "state": ["st4te"]}


def test_connect_redirect_is_accepted(sandbox: Flask) -> None:
    """WeChat's undocumented trailing ``connect_redirect=1``, which many sites send."""
    query = consent(sandbox.test_client(), authorize_path(extra="&connect_redirect=1"))
    assert "code" in query


def test_a_new_user_needs_a_nickname(sandbox: Flask) -> None:
    resp = sandbox.test_client().post(authorize_path(), data={
        "action": "allow", "person": "new", "nickname": " "})
    assert resp.status_code == 400 and "nickname" in resp.get_data(as_text=True)


# --- tokens: per-app openids, one unionid ------------------------------------------------


def test_oa_token_has_its_own_openid_and_the_shared_unionid(sandbox: Flask) -> None:
    client = sandbox.test_client()
    oa = exchange(client, consent(client, person="lisi")["code"][0])
    web = exchange(client, qr_login_code(sandbox, "lisi"), WEB_ID, WEB_SECRET)
    assert list(oa) == ["access_token", "expires_in", "refresh_token", "openid", "scope",
                        "unionid"]
    assert oa["scope"] == "snsapi_userinfo" and oa["expires_in"] == 7200
    assert oa["openid"] == openid_for(OA_ID, "lisi") != web["openid"]
    assert oa["unionid"] == web["unionid"] == unionid_for("lisi")
    _, info = api(client, "/sns/userinfo", access_token=oa["access_token"],
                  openid=oa["openid"], lang="zh_CN")
    assert info["nickname"] == "李四" and info["unionid"] == oa["unionid"]
    assert info["openid"] == oa["openid"]


def test_a_person_without_unionid_gets_none_from_the_oa(sandbox: Flask) -> None:
    client = sandbox.test_client()
    token = exchange(client, consent(client, person="wangwu")["code"][0])
    assert "unionid" not in token and token["openid"] == openid_for(OA_ID, "wangwu")


def test_a_new_user_made_on_the_consent_page(sandbox: Flask) -> None:
    client = sandbox.test_client()
    token = exchange(client, consent(client, person="new", nickname="Ada 🧪")["code"][0])
    _, info = api(client, "/sns/userinfo", access_token=token["access_token"],
                  openid=token["openid"])
    assert info["nickname"] == "Ada 🧪" and info["unionid"] == token["unionid"]


@pytest.mark.parametrize("oa_code", [True, False])
def test_a_code_of_one_app_fails_with_the_other_apps_credentials(
    sandbox: Flask, oa_code: bool
) -> None:
    """WeChat answers 40029 ("code和appid不匹配" is one of its causes), not 40163, which is
    only for a code already used."""
    client = sandbox.test_client()
    if oa_code:
        code, appid, secret = consent(client)["code"][0], WEB_ID, WEB_SECRET
    else:
        code, appid, secret = qr_login_code(sandbox, "zhangsan"), OA_ID, OA_SECRET
    error = exchange(client, code, appid, secret)
    assert error["errcode"] == 40029 and error["errmsg"].startswith("invalid code, rid: ")
    assert "access_token" in exchange(client, code, *(
        (OA_ID, OA_SECRET) if oa_code else (WEB_ID, WEB_SECRET)))  # still good for its app


def test_oa_refresh_keeps_the_scope(sandbox: Flask) -> None:
    client = sandbox.test_client()
    token = exchange(client, consent(client, authorize_path(scope="snsapi_base"))["code"][0])
    _, refreshed = api(client, "/sns/oauth2/refresh_token", appid=OA_ID,
                       grant_type="refresh_token", refresh_token=token["refresh_token"])
    assert refreshed["scope"] == "snsapi_base" and refreshed["openid"] == token["openid"]


# --- snsapi_base: silent once the sandbox knows who holds the phone ----------------------


def test_snsapi_base_token_has_no_unionid_and_reads_no_profile(sandbox: Flask) -> None:
    client = sandbox.test_client()
    page = client.get(authorize_path(scope="snsapi_base")).get_data(as_text=True)
    assert 'data-scope="snsapi_base"' in page and "snapshot" not in page  # userinfo only
    token = exchange(client, consent(client, authorize_path(scope="snsapi_base"))["code"][0])
    assert token["scope"] == "snsapi_base" and "unionid" not in token
    assert token["openid"] == openid_for(OA_ID, "zhangsan")
    _, info = api(client, "/sns/userinfo", access_token=token["access_token"],
                  openid=token["openid"])
    assert info["errcode"] == 48001 and info["errmsg"].startswith("api unauthorized")
    _, check = api(client, "/sns/auth", access_token=token["access_token"],
                   openid=token["openid"])
    assert check == {"errcode": 0, "errmsg": "ok"}


def test_snsapi_base_is_silent_for_a_person_who_consented(sandbox: Flask) -> None:
    client = sandbox.test_client()
    consent(client, person="xiaohua")
    assert client.get_cookie(PERSON_COOKIE).value == "xiaohua"  # type: ignore[union-attr]
    silent = client.get(authorize_path(scope="snsapi_base", state="again"))
    query = redirect_query(silent)
    assert query["state"] == ["again"]
    token = exchange(client, query["code"][0])
    assert token["openid"] == openid_for(OA_ID, "xiaohua") and token["scope"] == "snsapi_base"


def test_snsapi_base_asks_a_browser_the_sandbox_does_not_know(sandbox: Flask) -> None:
    consent(sandbox.test_client(), person="xiaohua")
    stranger = sandbox.test_client()
    assert stranger.get(authorize_path(scope="snsapi_base")).status_code == 200
    stranger.set_cookie(PERSON_COOKIE, "nobody-of-this-sandbox")
    assert stranger.get(authorize_path(scope="snsapi_base")).status_code == 200


def test_snsapi_base_asks_again_when_the_consent_is_forgotten(
    sandbox: Flask, clock: Clock
) -> None:
    client = sandbox.test_client()
    consent(client, authorize_path(scope="snsapi_base"))
    assert client.get(authorize_path(scope="snsapi_base")).status_code == 302
    clock.advance(31 * 24 * 3600)
    assert client.get(authorize_path(scope="snsapi_base")).status_code == 200


def test_snsapi_userinfo_always_asks_with_the_remembered_person_chosen(sandbox: Flask) -> None:
    client = sandbox.test_client()
    consent(client, person="jose")
    page = client.get(authorize_path()).get_data(as_text=True)
    assert re.search(r'value="jose"\s+checked', page)


def test_a_remembered_new_user_is_offered_again(sandbox: Flask) -> None:
    client = sandbox.test_client()
    consent(client, person="new", nickname="Grace 🐚")
    page = client.get(authorize_path()).get_data(as_text=True)
    assert "Grace 🐚" in page
    assert client.get(authorize_path(scope="snsapi_base")).status_code == 302


def test_a_remembered_new_user_picked_again_is_that_person(sandbox: Flask) -> None:
    """The consent page lists the person this phone made up, checked; allowing with them
    is them (before: "Choose a person", the list's own choice refused)."""
    client = sandbox.test_client()
    first = exchange(client, consent(client, person="new", nickname="Grace 🐚")["code"][0])
    page = client.get(authorize_path()).get_data(as_text=True)
    (key,) = re.findall(r'value="(new-[0-9a-f]+)"\s+checked', page)
    again = exchange(client, consent(client, person=key)["code"][0])
    assert again["openid"] == first["openid"] and again["unionid"] == first["unionid"]


def test_another_phone_is_offered_the_people_made_up_before(sandbox: Flask) -> None:
    """The people made up on any phone are listed (latest first) to everyone's consent
    page: how a tester logs in as the same "Ada" from another browser."""
    consent(sandbox.test_client(), person="new", nickname="Ada 🧪")
    other = sandbox.test_client()
    page = other.get(authorize_path()).get_data(as_text=True)
    assert "Ada 🧪" in page and "made up here before" in page
    (key,) = re.findall(r'value="(new-[0-9a-f]+)"', page)
    token = exchange(other, consent(other, person=key)["code"][0])
    _, info = api(other, "/sns/userinfo", access_token=token["access_token"],
                  openid=token["openid"])
    assert info["nickname"] == "Ada 🧪"


def test_the_person_cookie_lives_under_the_sandbox_prefix(database: Database) -> None:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database.url("mounted")
    db = SQLAlchemy(app)
    install_sandbox(app, db, [SandboxApp(OA_ID, OA_SECRET, "OA", DOMAIN,
                                         kind="official_account")], url_prefix="/wechat-sandbox")
    try:
        client = app.test_client()
        resp = client.post("/wechat-sandbox" + authorize_path(), data={
            "action": "allow", "person": "lisi"})
        assert resp.status_code == 302
        cookie = resp.headers["Set-Cookie"]
        assert cookie.startswith(f"{PERSON_COOKIE}=lisi;") and "Path=/wechat-sandbox/" in cookie
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    finally:
        dispose_engines(app)


# --- snapshot-page visitors ------------------------------------------------------------


def test_snapshot_visitor_gets_virtual_ids_and_no_profile(sandbox: Flask) -> None:
    client = sandbox.test_client()
    token = exchange(client, consent(client, person="snapshot")["code"][0])
    assert token["is_snapshotuser"] == 1 and token["scope"] == "snsapi_userinfo"
    real_openids = {openid_for(OA_ID, person.key) for person in PEOPLE}
    real_unionids = {unionid_for(person.key) for person in PEOPLE}
    assert token["openid"] not in real_openids and token["unionid"] not in real_unionids
    _, info = api(client, "/sns/userinfo", access_token=token["access_token"],
                  openid=token["openid"])
    assert info["errcode"] == 48001
    _, refreshed = api(client, "/sns/oauth2/refresh_token", appid=OA_ID,
                       grant_type="refresh_token", refresh_token=token["refresh_token"])
    assert refreshed["is_snapshotuser"] == 1
    # Another snapshot visit: another virtual openid on the same virtual unionid (what
    # corrupted user tables that trusted them), and nobody is remembered.
    again = exchange(client, consent(client, person="snapshot")["code"][0])
    assert again["openid"] != token["openid"] and again["unionid"] == token["unionid"]
    assert client.get_cookie(PERSON_COOKIE) is None


def test_snapshot_is_no_choice_for_snsapi_base(sandbox: Flask) -> None:
    client = sandbox.test_client()
    resp = client.post(authorize_path(scope="snsapi_base"), data={"action": "allow",
                                                                  "person": "snapshot"})
    assert resp.status_code == 400


# --- WeChat's error pages --------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "errcode", "text"),
    [
        (authorize_path(appid=WEB_ID), 10005, "此公众号并没有这些scope的权限"),
        (authorize_path(scope="snsapi_login"), 10005, "此公众号并没有这些scope的权限"),
        (authorize_path(scope="snsapi_userinfo,snsapi_base"), 10005, "此公众号并没有这些scope"),
        (f"/connect/qrconnect?appid={OA_ID}&redirect_uri={quote(CALLBACK, safe='')}"
         "&response_type=code&scope=snsapi_userinfo&state=s", 10005,
         "Scope 参数错误或没有 Scope 权限"),
        (f"/connect/qrconnect?appid={OA_ID}&redirect_uri={quote(CALLBACK, safe='')}"
         "&response_type=code&scope=snsapi_login&state=s", 10005,
         "Scope 参数错误或没有 Scope 权限"),
        (authorize_path(redirect_uri="https://evil.example/cb"), 10003, "redirect_uri 参数错误"),
        (authorize_path(redirect_uri=f"https://{DOMAIN}/cb#/route"), 10003, "redirect_uri"),
    ],
)
def test_wechat_error_pages(sandbox: Flask, path: str, errcode: int, text: str) -> None:
    resp = sandbox.test_client().get(path, headers={"Accept-Language": "zh-CN"})
    assert resp.status_code == 400
    body = resp.get_data(as_text=True)
    assert f'data-errcode="{errcode}"' in body and f"错误码：{errcode}" in body
    assert text in body and "该链接无法访问" in body


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (authorize_path(appid="wxUNKNOWN"), "Invalid appid"),
        (f"/connect/oauth2/authorize?redirect_uri={quote(CALLBACK, safe='')}&appid={OA_ID}"
         "&response_type=code&scope=snsapi_base&state=s", "parameter order"),
        (f"/connect/oauth2/authorize?appid={OA_ID}&redirect_uri={quote(CALLBACK, safe='')}"
         "&scope=snsapi_base&response_type=code&state=s", "parameter order"),
        (authorize_path().replace("response_type=code", "response_type=token"), "response_type"),
        (authorize_path(state="x" * 129), "state"),
    ],
)
def test_other_bad_authorization_urls(sandbox: Flask, path: str, text: str) -> None:
    resp = sandbox.test_client().get(path, headers={"Accept-Language": "en"})
    assert resp.status_code == 400
    body = resp.get_data(as_text=True)
    assert "This link cannot be opened" in body and text in body


def test_a_bad_url_is_refused_on_post_too(sandbox: Flask) -> None:
    resp = sandbox.test_client().post(authorize_path(appid=WEB_ID), data={
        "action": "allow", "person": "zhangsan"})
    assert resp.status_code == 400


# --- the sandbox's own house-keeping -----------------------------------------------------


def test_index_lists_the_official_account(sandbox: Flask) -> None:
    body = sandbox.test_client().get("/", headers={"Accept-Language": "en"}).get_data(
        as_text=True)
    assert "Official Accounts" in body and OA_ID in body and WEB_ID in body


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind"):
        SandboxApp("wxa", "s", "A", kind="mini_program")


def test_expired_consents_and_codes_are_purged(sandbox: Flask, clock: Clock) -> None:
    client = sandbox.test_client()
    consent(client, authorize_path(scope="snsapi_base"))

    def count(table: str) -> int:
        with sandbox.app_context():
            db = sandbox.extensions["sqlalchemy"]
            return int(db.session.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar())

    assert count("wechat_qr_sandbox_consent") == 1 and count("wechat_qr_sandbox_code") == 1
    clock.advance(31 * 24 * 3600 + 3600)
    consent(sandbox.test_client(), person="lisi")  # a grant purges now and then
    assert count("wechat_qr_sandbox_consent") == 1  # lisi's, new; zhangsan's gone
    assert count("wechat_qr_sandbox_code") == 1


def test_an_older_sandbox_database_gets_the_new_columns(tmp_path: t.Any) -> None:
    """A standalone sandbox keeps its SQLite file between versions: the scope columns are
    added to the code and token tables it made before they existed."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "CREATE TABLE wechat_qr_sandbox_code (code VARCHAR(64) PRIMARY KEY, app_id "
            "VARCHAR(64) NOT NULL, person_key VARCHAR(64) NOT NULL, created_at FLOAT NOT NULL, "
            "used BOOLEAN NOT NULL)"))
    engine.dispose()
    app = create_sandbox_app([SandboxApp(OA_ID, OA_SECRET, "OA", DOMAIN,
                                         kind="official_account")], database_uri=url)
    try:
        client = app.test_client()
        token = exchange(client, consent(client)["code"][0])
        assert token["scope"] == "snsapi_userinfo"
        with app.app_context():
            columns = sa.inspect(app.extensions["sqlalchemy"].engine).get_columns(
                "wechat_qr_sandbox_code")
        assert "scope" in {column["name"] for column in columns}
    finally:
        dispose_engines(app)
