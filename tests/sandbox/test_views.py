"""The simulated WeChat's routes: its QR page, its phone page and poll, and its API, with
WeChat's semantics (whole logins against it: test_mount)."""

from __future__ import annotations

import errno
import html
import ipaddress
import json
import re
import socket
import typing as t
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from flask import Flask
from support import (
    CODE_LIFETIME,
    SAFARI_PHONE,
    SANDBOX_APP_ID,
    SANDBOX_APP_SECRET,
    WECHAT_PHONE,
    WECHAT_WINDOWS,
    Clock,
    answer,
    find_tags,
    open_qr_page,
    poll,
    rows,
)
from support import (
    SANDBOX_PREFIX as SBX,
)

from flask_wechat_qr.sandbox import network
from flask_wechat_qr.sandbox.qr import qr_svg
from flask_wechat_qr.sandbox.users import openid_for, unionid_for


def api(client: t.Any, path: str, **params: str) -> tuple[t.Any, dict[str, t.Any]]:
    resp = client.get(SBX + path, query_string=params)
    return resp, json.loads(resp.data.decode("utf-8"))


def confirmed_code(sandbox_app: Flask, person: str = "zhangsan") -> str:
    client, phone = sandbox_app.test_client(), sandbox_app.test_client()
    uuid, _state = open_qr_page(client)
    answer(phone, uuid, action="allow", person=person)
    return parse_qs(urlsplit(poll(client, uuid)["redirect"]).query)["code"][0]


# --- the QR page -----------------------------------------------------------------------


def test_qr_page_shows_a_real_qr_image_of_the_confirmation_url(sandbox_app: Flask) -> None:
    client = sandbox_app.test_client()
    uuid, _ = open_qr_page(client)
    image = client.get(f"{SBX}/connect/qrcode/{uuid}.svg")
    assert image.status_code == 200
    assert image.content_type == "image/svg+xml"
    assert image.data.startswith(b"<svg") and b"<path" in image.data
    assert image.data == qr_svg(f"http://localhost{SBX}/connect/confirm/{uuid}")


def read_qr(svg: bytes) -> list[str]:
    """What a QR reader (ZXing, as phones' scanners) reads in one of the sandbox's SVG QR
    images: the image drawn module by module at 4 pixels each, on white."""
    import zxingcpp

    text = svg.decode()
    viewbox = re.search(r'viewBox="0 0 (\d+) (\d+)"', text)
    assert viewbox is not None, text[:200]
    size = int(viewbox.group(1))
    assert int(viewbox.group(2)) == size
    scale = 4
    pixels = bytearray(b"\xff" * (size * scale) ** 2)
    for x, y in re.findall(r"M(\d+),(\d+)H", text):
        for row in range(int(y) * scale, (int(y) + 1) * scale):
            start = row * size * scale + int(x) * scale
            pixels[start:start + scale] = bytes(scale)
    image = memoryview(bytes(pixels)).cast("B", shape=[size * scale, size * scale])
    return [found.text for found in zxingcpp.read_barcodes(image)]


@pytest.mark.parametrize("public_url", [
    None,
    # a longer confirmation URL: a QR code of version 8 or more, which qrcode 7.4 (yanked,
    # once this package's floor) drew so that no reader could read it
    "https://wechat-login-sandbox-for-the-spring-campaign.staging.example-company.com.cn:8443",
])
def test_a_phone_reads_the_confirmation_url_in_the_qr_image(
        make_app: t.Callable[..., Flask], public_url: str | None) -> None:
    settings = {"WECHAT_QR_SANDBOX_PUBLIC_URL": public_url} if public_url else {}
    client = make_app(WECHAT_QR_SANDBOX=True, **settings).test_client()
    uuid, _ = open_qr_page(client)
    image = client.get(f"{SBX}/connect/qrcode/{uuid}.svg").data
    assert read_qr(image) == [f"{public_url or 'http://localhost'}{SBX}/connect/confirm/{uuid}"]


def test_public_url_is_what_the_phone_gets(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_SANDBOX_PUBLIC_URL="http://192.168.1.23:5000")
    client = app.test_client()
    uuid, _ = open_qr_page(client)
    page = client.get(f"{SBX}/connect/qrconnect", query_string=[
        ("appid", SANDBOX_APP_ID),
        ("redirect_uri", "http://localhost/auth/wechat/callback"), ("response_type", "code"),
        ("scope", "snsapi_login"), ("state", "abc")]).get_data(as_text=True)
    assert "sbx-loopback-hint" not in page
    image = client.get(f"{SBX}/connect/qrcode/{uuid}.svg").data
    assert image == qr_svg(f"http://192.168.1.23:5000{SBX}/connect/confirm/{uuid}")


def test_loopback_host_gets_a_hint_about_phones(sandbox_app: Flask) -> None:
    client = sandbox_app.test_client()
    location = client.get("/auth/wechat/login").headers["Location"]
    page = client.get(location.split("localhost", 1)[1].split("#")[0]).get_data(as_text=True)
    assert "sbx-loopback-hint" in page and "0.0.0.0" in page


@pytest.mark.parametrize("public_url", [None, "http://192.168.1.23:5001"])
def test_standalone_sandbox_hints_at_its_own_options(tmp_path: t.Any,
                                                     public_url: str | None) -> None:
    """On its own port the QR code holds the sandbox's address, not the site's: opening the
    site by its network address, or the site's WECHAT_QR_SANDBOX_PUBLIC_URL, changes
    nothing there. The hint names the sandbox's own options, in both languages."""
    from flask_wechat_qr.sandbox import SandboxApp, create_sandbox_app

    sandbox = create_sandbox_app(
        [SandboxApp("wxstandalone000001", "standalone-secret", "Standalone", "localhost")],
        database_uri=f"sqlite:///{tmp_path}/sandbox.db", public_url=public_url)
    query = [("appid", "wxstandalone000001"),
             ("redirect_uri", "http://localhost:5000/auth/wechat/callback"),
             ("response_type", "code"), ("scope", "snsapi_login"), ("state", "abc")]
    client = sandbox.test_client()
    page = client.get("/connect/qrconnect", query_string=query,
                      base_url="http://127.0.0.1:5001").get_data(as_text=True)
    if public_url:
        assert "sbx-loopback-hint" not in page
        return
    hint = re.search(r'id="sbx-loopback-hint">(.*?)</p>', page, re.S)
    assert hint and "127.0.0.1:5001" in hint.group(1)
    assert "--public-url" in hint.group(1) and "--host 0.0.0.0" in hint.group(1)
    assert "WECHAT_QR_SANDBOX_PUBLIC_URL" not in hint.group(1)
    assert "open this site" not in hint.group(1)
    zh = client.get("/connect/qrconnect", query_string=[*query, ("lang", "cn")],
                    base_url="http://127.0.0.1:5001").get_data(as_text=True)
    assert "--public-url" in zh and "沙盒" in re.search(
        r'id="sbx-loopback-hint">(.*?)</p>', zh, re.S).group(1)


def loopback_hint(app: Flask, base_url: str, language: str = "en") -> str | None:
    """The QR page's hint about phones (its text), opened through the site's login button
    at ``base_url`` by a browser in ``language``; ``None`` without one."""
    client, headers = app.test_client(), {"Accept-Language": language}
    location = client.get("/auth/wechat/login", base_url=base_url,
                          headers=headers).headers["Location"]
    page = client.get(location.split("#")[0], headers=headers).get_data(as_text=True)
    hint = re.search(r'id="sbx-loopback-hint">(.*?)</p>', page, re.S)
    return html.unescape(hint.group(1)) if hint else None


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
@pytest.mark.parametrize("address", ["192.168.1.20", None], ids=["address", "no-address"])
def test_the_loopback_hint_says_to_open_the_site_by_its_network_address(
        sandbox_app: Flask, monkeypatch: pytest.MonkeyPatch, address: str | None) -> None:
    """Opened at http://127.0.0.1:5000, the QR page cannot tell whether the server listens
    on the network too (``flask run --host 0.0.0.0``) or on this computer only. What to do
    first is the same: open the site by the computer's network address, named where it has
    one; restart with ``--host 0.0.0.0`` if nothing answers there. Before, it said "Run
    with --host 0.0.0.0" also to those who had."""
    monkeypatch.setattr(network, "network_address", lambda: address)
    en = loopback_hint(sandbox_app, "http://127.0.0.1:5000")
    zh = loopback_hint(sandbox_app, "http://127.0.0.1:5000", "zh-CN")
    assert en is not None and zh is not None
    assert en.startswith("Your phone cannot reach 127.0.0.1:5000. ")
    assert zh.startswith("手机无法访问 127.0.0.1:5000。")
    if address:
        assert "Open http://192.168.1.20:5000/ instead, or set " in en
        assert "请改用电脑的局域网地址 http://192.168.1.20:5000/ 打开本站" in zh
    else:
        assert "Open this site at your network address, or set " in en
        assert "请改用电脑的局域网地址打开本站" in zh
    assert "WECHAT_QR_SANDBOX_PUBLIC_URL; no answer there? Restart with --host 0.0.0.0." in en
    assert "或设置 WECHAT_QR_SANDBOX_PUBLIC_URL；若打不开，请加上 --host 0.0.0.0 重新启动。" \
        in zh
    # On the network address itself the page needs no hint.
    assert loopback_hint(sandbox_app, "http://192.168.1.20:5000") is None


def test_the_standalone_hint_names_the_public_url_to_give(
        tmp_path: t.Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """On its own port, the ``--public-url`` the hint gives is this computer's network
    address at the sandbox's port (before: ``http://<address>:<port>`` where it was known)."""
    from flask_wechat_qr.sandbox import SandboxApp, create_sandbox_app

    monkeypatch.setattr(network, "network_address", lambda: "192.168.1.20")
    sandbox = create_sandbox_app(
        [SandboxApp("wxstandalone000001", "standalone-secret", "Standalone", "localhost")],
        database_uri=f"sqlite:///{tmp_path}/sandbox.db")
    page = sandbox.test_client().get("/connect/qrconnect", query_string=[
        ("appid", "wxstandalone000001"),
        ("redirect_uri", "http://localhost:5000/auth/wechat/callback"),
        ("response_type", "code"), ("scope", "snsapi_login"), ("state", "abc")],
        base_url="http://127.0.0.1:5001").get_data(as_text=True)
    assert "--host 0.0.0.0 --public-url http://192.168.1.20:5001," in page


def test_the_network_address_is_none_without_a_network(monkeypatch: pytest.MonkeyPatch) -> None:
    found = network.network_address()  # this computer's, if it has one: never a loopback
    assert found is None or not ipaddress.ip_address(found).is_loopback

    def unreachable(_socket: socket.socket, _address: t.Any) -> None:
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    monkeypatch.setattr(socket.socket, "connect", unreachable)
    assert network.network_address() is None


def test_built_in_names_follow_the_page_language_configured_ones_stay(
        make_app: t.Callable[..., Flask]) -> None:
    """With two connections each sandbox application is "<site> (<display name>)": the
    default display name is WeChat's in the page's language ("微信" on a Chinese phone);
    the site's configured name and a configured display name stay exactly as given."""
    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None,
                   WECHAT_QR_SANDBOX_APP_NAME="My Shop", WECHAT_QR_CONNECTIONS=[
                       {"connection": "web"}, {"connection": "shop", "display_name": "Shop"}])
    client, phone = app.test_client(), app.test_client()
    uuid, _ = open_qr_page(client, login_path="/auth/web/login")
    for lang, web, shop in (("zh-CN", "My Shop（微信）", "My Shop（Shop）"),
                            ("en", "My Shop (WeChat)", "My Shop (Shop)")):
        headers = {"Accept-Language": lang}
        index = client.get(f"{SBX}/", headers=headers).get_data(as_text=True)
        assert web in index and shop in index
        confirm = phone.get(f"{SBX}/connect/confirm/{uuid}", headers=headers)
        assert f"<h1>{web}</h1>" in confirm.get_data(as_text=True)


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("appid=wxUNKNOWN&redirect_uri=http%3A%2F%2Flocalhost%2Fcb&response_type=code"
         "&scope=snsapi_login&state=s", "Invalid appid"),
        (f"redirect_uri=http%3A%2F%2Flocalhost%2Fcb&appid={SANDBOX_APP_ID}&response_type=code"
         "&scope=snsapi_login&state=s", "parameter order"),
        (f"appid={SANDBOX_APP_ID}&redirect_uri=http%3A%2F%2Flocalhost%2Fcb&response_type=code"
         "&scope=snsapi_userinfo&state=s", "Scope"),
        (f"appid={SANDBOX_APP_ID}&redirect_uri=http%3A%2F%2Fevil.example%2Fcb"
         "&response_type=code&scope=snsapi_login&state=s", "10003"),
    ],
)
def test_bad_qrconnect_requests_get_wechat_style_error_pages(
    sandbox_app: Flask, query: str, fragment: str
) -> None:
    resp = sandbox_app.test_client().get(f"{SBX}/connect/qrconnect?{query}")
    assert resp.status_code == 400
    body = resp.get_data(as_text=True)
    assert "This link cannot be opened" in body and fragment in body


def test_embedded_iframe_url_is_accepted(sandbox_app: Flask) -> None:
    client = sandbox_app.test_client()
    page = client.get("/auth/wechat/qr").get_data(as_text=True)
    src = re.search(r'<iframe[^>]*src="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert src.startswith(f"http://localhost{SBX}/connect/qrconnect?")
    frame = client.get(src.split("localhost", 1)[1])
    assert frame.status_code == 200
    assert "window.top" in frame.get_data(as_text=True)  # self_redirect=false: top navigates


# --- the phone page and the poll --------------------------------------------------------


def test_scan_then_allow_gives_code_and_state(sandbox_app: Flask) -> None:
    client, phone = sandbox_app.test_client(), sandbox_app.test_client()
    uuid, state = open_qr_page(client)
    assert poll(client, uuid) == {"status": "waiting"}
    confirm_page = phone.get(f"{SBX}/connect/confirm/{uuid}").get_data(as_text=True)
    assert "Demo site" in confirm_page and "张三🐼" in confirm_page and "王五" in confirm_page
    assert poll(client, uuid) == {"status": "scanned"}
    done = phone.post(f"{SBX}/connect/confirm/{uuid}", data={"action": "allow",
                                                            "person": "zhangsan"})
    assert done.status_code == 200 and 'data-outcome="allowed"' in done.get_data(as_text=True)
    result = poll(client, uuid)
    assert result["status"] == "confirmed"
    query = parse_qs(urlsplit(result["redirect"]).query)
    assert result["redirect"].startswith("http://localhost/auth/wechat/callback?")
    assert query["state"] == [state] and len(query["code"][0]) >= 16


def test_deny_redirects_with_state_only(sandbox_app: Flask) -> None:
    client, phone = sandbox_app.test_client(), sandbox_app.test_client()
    uuid, state = open_qr_page(client)
    answer(phone, uuid, action="deny")
    result = poll(client, uuid)
    assert result["status"] == "denied"
    assert parse_qs(urlsplit(result["redirect"]).query) == {"state": [state]}


def test_a_qr_code_is_answered_once(sandbox_app: Flask) -> None:
    client, phone = sandbox_app.test_client(), sandbox_app.test_client()
    uuid, _ = open_qr_page(client)
    answer(phone, uuid, action="allow", person="lisi")
    again = phone.post(f"{SBX}/connect/confirm/{uuid}", data={"action": "deny"})
    assert again.status_code == 409
    assert poll(client, uuid)["status"] == "confirmed"


def test_qr_code_expires(sandbox_app: Flask, clock: Clock) -> None:
    """An unused QR code expires after five minutes."""
    client, phone = sandbox_app.test_client(), sandbox_app.test_client()
    uuid, _ = open_qr_page(client)
    clock.advance(5 * 60 + 1)
    assert poll(client, uuid) == {"status": "expired"}
    assert phone.get(f"{SBX}/connect/confirm/{uuid}").status_code == 410


def test_new_user_needs_a_nickname(sandbox_app: Flask) -> None:
    client, phone = sandbox_app.test_client(), sandbox_app.test_client()
    uuid, _ = open_qr_page(client)
    resp = answer(phone, uuid, action="allow", person="new", nickname="  ")
    assert resp.status_code == 400
    assert poll(client, uuid)["status"] == "scanned"
    # The page keeps "New user" chosen, says what is wrong where a screen reader hears it
    # and names the field it is about. Before: the first person (张三🐼) was checked again,
    # and the next Allow logged in as them (an accessibility hunt, session 36).
    page = resp.get_data(as_text=True)
    checked = [tag["value"] for tag in find_tags(page, "input")
               if tag.get("name") == "person" and "checked" in tag]
    assert checked == ["new"]
    (problem,) = [tag for tag in find_tags(page, "p") if tag.get("id") == "sbx-problem"]
    assert problem["role"] == "alert"
    (field,) = [tag for tag in find_tags(page, "input") if tag.get("name") == "nickname"]
    assert field["aria-label"] == "Nickname of the new user"
    assert field["aria-describedby"] == "sbx-problem"
    # Nothing chosen at all: the first person, as on the first visit.
    resp = answer(phone, uuid, action="allow", person="nobody-of-these")
    assert resp.status_code == 400
    assert [tag["value"] for tag in find_tags(resp.get_data(as_text=True), "input")
            if tag.get("name") == "person" and "checked" in tag] == ["zhangsan"]


def _openid_of_answer(sandbox_app: Flask, **form: str) -> str:
    """Answer a new QR code on the phone with ``form``; the openid its code gives."""
    client, phone = sandbox_app.test_client(), sandbox_app.test_client()
    uuid, _ = open_qr_page(client)
    assert answer(phone, uuid, action="allow", **form).status_code == 200
    code = parse_qs(urlsplit(poll(client, uuid)["redirect"]).query)["code"][0]
    _, token = api(client, "/sns/oauth2/access_token", appid=SANDBOX_APP_ID,
                   secret=SANDBOX_APP_SECRET, code=code, grant_type="authorization_code")
    return t.cast(str, token["openid"])


def _made_up_choices(page: str) -> list[tuple[str, str]]:
    """The people made up before that a phone's page lists: (key, nickname), in order."""
    return re.findall(r'name="person" value="(new-[0-9a-f]+)"[^>]*>\s*<span>([^<]*)<', page)


def test_a_typed_nickname_is_a_new_person_even_when_taken_and_is_listed_after(
        sandbox_app: Flask) -> None:
    """As on WeChat, where nicknames are not unique (many people are 微信用户), typing a
    nickname makes a new person, whoever has it already; the phone's page then lists the
    people made up before, latest first, which is how a tester comes back as one."""
    ada = _openid_of_answer(sandbox_app, person="new", nickname="Ada 🧪")
    second_ada = _openid_of_answer(sandbox_app, person="new", nickname="Ada 🧪")
    placeholder = _openid_of_answer(sandbox_app, person="new", nickname="微信用户")
    assert len({ada, second_ada, placeholder}) == 3
    assert placeholder != openid_for(SANDBOX_APP_ID, "placeholder")

    client, phone = sandbox_app.test_client(), sandbox_app.test_client()
    uuid, _ = open_qr_page(client)
    page = phone.get(f"{SBX}/connect/confirm/{uuid}").get_data(as_text=True)
    listed = _made_up_choices(page)
    assert [nickname for _key, nickname in listed] == ["微信用户", "Ada 🧪", "Ada 🧪"]
    assert "made up here before" in page
    # Picking the first Ada (listed last) is that person again.
    first_ada_key = listed[-1][0]
    assert _openid_of_answer(sandbox_app, person=first_ada_key) == ada


def test_the_phone_page_lists_only_the_latest_made_up_people(sandbox_app: Flask) -> None:
    for index in range(12):
        _openid_of_answer(sandbox_app, person="new", nickname=f"Tester {index}")
    client, phone = sandbox_app.test_client(), sandbox_app.test_client()
    uuid, _ = open_qr_page(client)
    page = phone.get(f"{SBX}/connect/confirm/{uuid}").get_data(as_text=True)
    assert [nickname for _key, nickname in _made_up_choices(page)] == [
        f"Tester {index}" for index in range(11, 1, -1)]


def test_people_made_up_by_an_earlier_version_come_after_new_ones(sandbox_app: Flask) -> None:
    """A kept sandbox database holds made-up people under the random keys earlier versions
    gave ("new-" and 12 hex digits, most sorting after any time-ordered key): ten of them
    must not hide the people made since."""
    ext = sandbox_app.extensions["sqlalchemy"]
    with sandbox_app.app_context():
        table = ext.metadata.tables["wechat_qr_sandbox_person"]
        with ext.engine.begin() as connection:
            connection.execute(table.insert(), [
                {"key": f"new-{'f' * 11}{index:x}", "nickname": f"Old {index}",
                 "has_unionid": True} for index in range(10)])
    _openid_of_answer(sandbox_app, person="new", nickname="Newest")
    client, phone = sandbox_app.test_client(), sandbox_app.test_client()
    uuid, _ = open_qr_page(client)
    page = phone.get(f"{SBX}/connect/confirm/{uuid}").get_data(as_text=True)
    assert [nickname for _key, nickname in _made_up_choices(page)][0] == "Newest"


def test_an_unknown_made_up_key_is_nobody(sandbox_app: Flask) -> None:
    client, phone = sandbox_app.test_client(), sandbox_app.test_client()
    uuid, _ = open_qr_page(client)
    resp = answer(phone, uuid, action="allow", person="new-0000000000000000000000")
    assert resp.status_code == 400
    assert poll(client, uuid)["status"] == "scanned"


# --- the API --------------------------------------------------------------------------


def test_token_answers_like_wechat(sandbox_app: Flask) -> None:
    code = confirmed_code(sandbox_app)
    client = sandbox_app.test_client()
    resp, data = api(client, "/sns/oauth2/access_token", appid=SANDBOX_APP_ID,
                     secret=SANDBOX_APP_SECRET, code=code, grant_type="authorization_code")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/plain"
    assert data["openid"] == openid_for(SANDBOX_APP_ID, "zhangsan")
    assert data["unionid"] == unionid_for("zhangsan")
    assert data["expires_in"] == 7200 and data["scope"] == "snsapi_login"
    resp, again = api(client, "/sns/oauth2/access_token", appid=SANDBOX_APP_ID,
                      secret=SANDBOX_APP_SECRET, code=code, grant_type="authorization_code")
    assert resp.status_code == 200 and again["errcode"] == 40163

    _, info = api(client, "/sns/userinfo", access_token=data["access_token"],
                  openid=data["openid"], lang="zh_CN")
    assert info["nickname"] == "张三🐼" and info["unionid"] == data["unionid"]
    assert info["sex"] == 0 and info["province"] == ""
    _, ok = api(client, "/sns/auth", access_token=data["access_token"], openid=data["openid"])
    assert ok == {"errcode": 0, "errmsg": "ok"}
    _, refreshed = api(client, "/sns/oauth2/refresh_token", appid=SANDBOX_APP_ID,
                       grant_type="refresh_token", refresh_token=data["refresh_token"])
    assert refreshed["access_token"] == data["access_token"]  # not expired: same token
    assert refreshed["refresh_token"] == data["refresh_token"]


@pytest.mark.parametrize(
    ("params", "errcode"),
    [
        ({"secret": SANDBOX_APP_SECRET, "code": "x", "grant_type": "authorization_code"}, 41002),
        ({"appid": "wxnope", "secret": "s", "code": "x", "grant_type": "authorization_code"},
         40013),
        ({"appid": SANDBOX_APP_ID, "secret": "wrong", "code": "x",
          "grant_type": "authorization_code"}, 40125),
        ({"appid": SANDBOX_APP_ID, "secret": SANDBOX_APP_SECRET,
          "grant_type": "authorization_code"}, 41008),
        ({"appid": SANDBOX_APP_ID, "secret": SANDBOX_APP_SECRET, "code": "x",
          "grant_type": "password"}, 40002),
        ({"appid": SANDBOX_APP_ID, "secret": SANDBOX_APP_SECRET, "code": "nonsense",
          "grant_type": "authorization_code"}, 40029),
    ],
)
def test_token_errors(sandbox_app: Flask, params: dict[str, str], errcode: int) -> None:
    resp, data = api(sandbox_app.test_client(), "/sns/oauth2/access_token", **params)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "text/plain"
    assert data["errcode"] == errcode and ", rid: " in data["errmsg"]


def test_code_expires_after_five_minutes(sandbox_app: Flask, clock: Clock) -> None:
    code = confirmed_code(sandbox_app)
    clock.advance(CODE_LIFETIME + 1)
    _, data = api(sandbox_app.test_client(), "/sns/oauth2/access_token", appid=SANDBOX_APP_ID,
                  secret=SANDBOX_APP_SECRET, code=code, grant_type="authorization_code")
    assert data["errcode"] == 42003


def test_userinfo_errors_and_expiry(sandbox_app: Flask, clock: Clock) -> None:
    client = sandbox_app.test_client()
    _, token = api(client, "/sns/oauth2/access_token", appid=SANDBOX_APP_ID,
                   secret=SANDBOX_APP_SECRET, code=confirmed_code(sandbox_app, "wangwu"),
                   grant_type="authorization_code")
    assert "unionid" not in token
    assert api(client, "/sns/userinfo", openid=token["openid"])[1]["errcode"] == 41001
    assert api(client, "/sns/userinfo", access_token=token["access_token"])[1]["errcode"] == 41009
    assert api(client, "/sns/userinfo", access_token="forged",
               openid=token["openid"])[1]["errcode"] == 40014
    assert api(client, "/sns/userinfo", access_token=token["access_token"],
               openid="o" + "x" * 27)[1]["errcode"] == 40003
    assert api(client, "/sns/auth", access_token=token["access_token"],
               openid="o" + "x" * 27)[1]["errcode"] == 40003
    clock.advance(2 * 3600 + 1)  # access tokens expire after two hours
    assert api(client, "/sns/userinfo", access_token=token["access_token"],
               openid=token["openid"])[1]["errcode"] == 42001
    _, refreshed = api(client, "/sns/oauth2/refresh_token", appid=SANDBOX_APP_ID,
                       grant_type="refresh_token", refresh_token=token["refresh_token"])
    assert refreshed["access_token"] != token["access_token"]
    assert api(client, "/sns/oauth2/refresh_token", appid=SANDBOX_APP_ID,
               grant_type="refresh_token", refresh_token="nope")[1]["errcode"] == 40030


# --- redirect_uri hosts as a browser reads them ------------------------------------------


def _qrconnect(make_app: t.Any, redirect_uri: str) -> t.Any:
    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None)
    query = (f"appid={SANDBOX_APP_ID}&redirect_uri={quote(redirect_uri, safe='')}"
             "&response_type=code&scope=snsapi_login&state=s")
    return app.test_client().get(f"{SBX}/connect/qrconnect?{query}")


@pytest.mark.parametrize("redirect_uri", [
    "http://evil\\@localhost/cb",       # a browser goes to "evil"
    "http://evil.example\\@localhost/",
    "http://user@localhost/cb",         # a user name WeChat never accepts
    "http://localhost:80@evil.example/cb",
])
def test_a_redirect_uri_that_a_browser_reads_as_another_host_is_refused(
    make_app: t.Any, redirect_uri: str
) -> None:
    resp = _qrconnect(make_app, redirect_uri)
    assert resp.status_code == 400
    assert "10003" in resp.get_data(as_text=True)


def test_the_registered_host_is_still_accepted(make_app: t.Any) -> None:
    resp = _qrconnect(make_app, "http://localhost/auth/wechat/callback")
    assert resp.status_code == 200


# --- a sandbox left running does not grow without end ------------------------------------


def test_expired_qr_codes_codes_and_tokens_are_purged(sandbox_app: Flask, clock: Clock) -> None:
    """Every QR page makes a row: the ones long past use go, now and then, and a QR page
    still open just after it expired still says "expired"."""
    def qr_codes() -> list[str]:
        return [row.uuid for row in rows(sandbox_app, "wechat_qr_sandbox_qr",
                                         order_by="created_at")]

    first, _state = open_qr_page(sandbox_app.test_client())
    assert qr_codes() == [first]
    clock.advance(300 + 30)  # expired a moment ago: kept, so its page says so
    open_qr_page(sandbox_app.test_client())
    assert first in qr_codes()
    clock.advance(2 * 3600)  # long past use
    latest, _state = open_qr_page(sandbox_app.test_client())
    assert qr_codes() == [latest]


# --- desktop WeChat's fast login ---------------------------------------------------------


def _jssdk_path(*extras: str) -> str:
    """The iframe URL as wxLogin.js v3 builds it: its five parameters, then its extras."""
    return (f"{SBX}/connect/qrconnect?appid={SANDBOX_APP_ID}&scope=snsapi_login"
            f"&redirect_uri={quote('http://localhost/auth/wechat/callback', safe='')}"
            f"&state=s7ate&login_type=jssdk{''.join(extras)}")


def _fast_login_form(page: str) -> str | None:
    found = re.search(r'<form method="post" id="sbx-fast-login".*?</form>', page, re.S)
    return found.group(0) if found else None


def test_fast_login_on_the_full_qr_page_logs_in_without_a_phone(sandbox_app: Flask) -> None:
    client = sandbox_app.test_client()
    uuid, state = open_qr_page(client, next_url="/welcome")
    location = client.get("/auth/wechat/login").headers["Location"].split("localhost", 1)[1]
    form = _fast_login_form(client.get(location.split("#")[0]).get_data(as_text=True))
    assert form is not None and 'target="_self"' in form and "李四" in form
    resp = client.post(f"{SBX}/connect/qrconnect/fast_login/{uuid}", data={"person": "lisi"})
    assert resp.status_code == 302
    callback = resp.headers["Location"]
    query = parse_qs(urlsplit(callback).query)
    assert callback.startswith("http://localhost/auth/wechat/callback?")
    assert query["state"] == [state] and len(query["code"][0]) >= 16
    assert poll(client, uuid)["status"] == "confirmed"
    assert client.get(callback.split("localhost", 1)[1]).headers["Location"] == "/welcome"
    assert client.get("/").get_data(as_text=True).endswith("李四")


@pytest.mark.parametrize(("extras", "target"), [
    ((), "_top"),
    (("&self_redirect=false",), "_top"),
    (("&self_redirect=true", "&style=white"), "_self"),
    (("&self_redirect=default", "&style=black", "&href=", "&lang=en", "&stylelite=1"), "_top"),
])
def test_fast_login_in_the_iframe_navigates_where_wxlogin_says(
    sandbox_app: Flask, extras: tuple[str, ...], target: str
) -> None:
    page = sandbox_app.test_client().get(_jssdk_path(*extras))
    assert page.status_code == 200
    form = _fast_login_form(page.get_data(as_text=True))
    assert form is not None and f'target="{target}"' in form


def test_fast_login_0_hides_it_and_the_v3_extras_are_accepted(sandbox_app: Flask) -> None:
    page = sandbox_app.test_client().get(_jssdk_path(
        "&self_redirect=false", "&style=black", "&href=", "&lang=en", "&stylelite=1",
        "&fast_login=0"), headers={"Accept-Language": "zh-CN"})
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert _fast_login_form(body) is None and 'lang="en"' in body  # lang=en wins
    full = sandbox_app.test_client().get(
        f"{SBX}/connect/qrconnect?appid={SANDBOX_APP_ID}"
        f"&redirect_uri={quote('http://localhost/auth/wechat/callback', safe='')}"
        "&response_type=code&scope=snsapi_login&state=s&fast_login=0")
    assert full.status_code == 200 and _fast_login_form(full.get_data(as_text=True)) is None


def _qr_page_as(client: t.Any, user_agent: str, lang: str, *extras: str) -> str:
    """The full QR page (or with ``extras`` the iframe's) as a browser of ``user_agent`` in
    ``lang`` sees it (no ``lang`` parameter: the browser's language)."""
    path = _jssdk_path(*extras) if extras else (
        f"{SBX}/connect/qrconnect?appid={SANDBOX_APP_ID}"
        f"&redirect_uri={quote('http://localhost/auth/wechat/callback', safe='')}"
        "&response_type=code&scope=snsapi_login&state=s")
    page = client.get(path, headers={"User-Agent": user_agent, "Accept-Language": lang})
    assert page.status_code == 200
    return str(page.get_data(as_text=True))


@pytest.mark.parametrize("user_agent", [SAFARI_PHONE, WECHAT_PHONE], ids=["safari", "wechat"])
@pytest.mark.parametrize("extras", [(), ("&self_redirect=true",)], ids=["full", "iframe"])
def test_a_phone_is_offered_what_works_there_not_the_desktop_fast_login(
    sandbox_app: Flask, user_agent: str, extras: tuple[str, ...]
) -> None:
    """WeChat for PC's fast login means nothing on a phone: there the page says how to
    answer (this phone's page, or another device's camera) and links to the phone page."""
    client = sandbox_app.test_client()
    for lang, hint, link in (
            ("zh-CN", "用另一台设备扫描这个二维码", "在本机模拟扫码"),
            ("en", "scan this code from another device", "Answer on this phone")):
        page = _qr_page_as(client, user_agent, lang, *extras)
        assert _fast_login_form(page) is None
        assert "Log in with desktop WeChat" not in page and "微信快速登录" not in page
        found = re.search(r'<p[^>]*id="sbx-phone-hint"[^>]*>(.*?)</p>', page, re.S)
        assert found is not None and hint in found.group(1), page
        simulate = re.search(r'<a href="([^"]+)" id="sbx-simulate"[^>]*>([^<]*)</a>', page)
        assert simulate is not None and simulate.group(2) == link
        assert re.fullmatch(rf"{SBX}/connect/confirm/[\w-]+", simulate.group(1))


@pytest.mark.parametrize("user_agent", [WECHAT_WINDOWS, "Mozilla/5.0 (X11; Linux x86_64) "
                                        "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 "
                                        "Safari/537.36", ""], ids=["wechat-pc", "chrome", "none"])
def test_a_computer_keeps_the_fast_login(sandbox_app: Flask, user_agent: str) -> None:
    page = _qr_page_as(sandbox_app.test_client(), user_agent, "zh-CN")
    assert _fast_login_form(page) is not None and 'id="sbx-phone-hint"' not in page
    assert "模拟扫码（无需手机）" in page


def test_fast_login_answers_a_qr_code_once(sandbox_app: Flask) -> None:
    client, phone = sandbox_app.test_client(), sandbox_app.test_client()
    uuid, _ = open_qr_page(client)
    answer(phone, uuid, action="deny")
    late = client.post(f"{SBX}/connect/qrconnect/fast_login/{uuid}", data={"person": "lisi"})
    assert late.status_code == 400 and "Already answered" in late.get_data(as_text=True)
    assert poll(client, uuid)["status"] == "denied"
    uuid, _ = open_qr_page(client)
    nobody = client.post(f"{SBX}/connect/qrconnect/fast_login/{uuid}", data={"person": "x"})
    assert nobody.status_code == 400 and poll(client, uuid)["status"] == "waiting"


def test_fast_login_on_an_expired_qr_code(sandbox_app: Flask, clock: Clock) -> None:
    client = sandbox_app.test_client()
    uuid, _ = open_qr_page(client)
    clock.advance(5 * 60 + 1)
    resp = client.post(f"{SBX}/connect/qrconnect/fast_login/{uuid}", data={"person": "lisi"})
    assert resp.status_code == 410
    assert client.post(f"{SBX}/connect/qrconnect/fast_login/nope",
                       data={"person": "lisi"}).status_code == 410


def test_the_qr_page_may_be_framed_by_any_site_as_wechats_is(sandbox_app: Flask) -> None:
    """wxLogin.js frames WeChat's QR page on any site. A host that puts ``X-Frame-Options:
    DENY`` on every response (an app-wide ``after_request``) left the embedded sandbox QR
    blank: ``frame-ancestors``, which browsers follow first, keeps it frameable."""

    @sandbox_app.after_request
    def deny_framing(response: t.Any) -> t.Any:
        response.headers["X-Frame-Options"] = "DENY"
        return response

    page = sandbox_app.test_client().get(_jssdk_path())
    assert page.status_code == 200
    assert page.headers["Content-Security-Policy"] == "frame-ancestors *"
