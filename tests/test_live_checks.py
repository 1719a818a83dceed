"""``flask wechat-qr check --live`` against WeChat's answers, mocked with ``responses`` (the
QR pages are the reconstructed fixtures of tests/fixtures/wechat_pages), and its host probe
on loopback sockets. The same against a real standalone sandbox: tests/sandbox/
test_check_live.py.

No test reaches the internet: the host probe is replaced where WeChat's real host names are
configured (:func:`hosts_up`), and runs for real only on loopback addresses.
"""

from __future__ import annotations

import json
import re
import socket
import time
import typing as t
from email.utils import formatdate
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses
from flask import Flask
from support import API, APP_ID, APP_SECRET, OPEN, TOKEN_PATH, WeChatAPI, free_port

from flask_wechat_qr import live_checks
from flask_wechat_qr.live_checks import (
    INVALID_CODE,
    HostUnreachable,
    connect,
    probe_host,
    resolve,
)

FIXTURES = Path(__file__).parent / "fixtures" / "wechat_pages"
PUBLIC = "https://www.example.com"
REDIRECT_URI = f"{PUBLIC}/auth/wechat/callback"
OA_APP_ID = "wx0a0a0a0a0a0a0a0a"
OA_APP_SECRET = "0a-s3cr3t-0f-th3-0ff1c14l-4cc0unt-0a"
QR_PATH = "/connect/qrconnect"
OA_PATH = "/connect/oauth2/authorize"


@pytest.fixture
def make_app(make_production_app: t.Callable[..., Flask]) -> t.Callable[..., Flask]:
    return make_production_app


@pytest.fixture
def hosts_up(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """WeChat's hosts resolve and connect (no DNS, no socket): the URLs probed."""
    probed: list[str] = []

    def probe(url: str, proxies: t.Mapping[str, str], timeout: float) -> str:
        probed.append(url)
        return "resolves to 192.0.2.10; port 443 takes a connection (3 ms)"

    monkeypatch.setattr(live_checks, "probe_host", probe)
    return probed


def page(api: WeChatAPI, name: str, path: str = QR_PATH, status: int = 200) -> None:
    body = (FIXTURES / name).read_bytes()
    api.mock.add(responses.GET, OPEN + path, body=body, status=status,
                 content_type="text/html; charset=utf-8")


def token_answer(api: WeChatAPI, errcode: int | None, errmsg: str = "", *,
                 clock_offset: float = 0) -> None:
    """WeChat's answer to the token request; its Date is the time of the request, minus
    ``clock_offset`` seconds (this server's clock is that much ahead)."""
    payload = {"errcode": errcode, "errmsg": f"{errmsg}, rid: 6731d8f2-1b2c3d4e-5f6a7b8c"}
    body = json.dumps(payload, ensure_ascii=False)

    def answer(request: t.Any) -> tuple[int, dict[str, str], str]:
        date = formatdate(time.time() - clock_offset, usegmt=True)
        return 200, {"Date": date, "Content-Type": "text/plain"}, body

    api.mock.add_callback(responses.GET, API + TOKEN_PATH, callback=answer)


def live(app: Flask, *args: str) -> t.Any:
    result = app.test_cli_runner().invoke(
        args=["wechat-qr", "check", "--live", *args], env={"FLASK_DEBUG": "0"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def row(output: str, label: str) -> str:
    [found] = [line for line in output.splitlines() if line.startswith(f"  {label}:")]
    return found.split(":", 1)[1].strip()


def findings(output: str, kind: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(kind)]


def calls_to(api: WeChatAPI, path: str) -> list[t.Any]:
    return [call for call in api.mock.calls if urlsplit(call.request.url).path == path]


# --- a healthy set-up ---------------------------------------------------------------------


def test_a_healthy_set_up_passes_and_says_what_was_seen(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI, hosts_up: list[str],
) -> None:
    page(wechat_api, "qrconnect_ok.html")
    token_answer(wechat_api, 40029, "invalid code")
    result = live(make_app(), "--base-url", PUBLIC)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert (f"Live checks: QR pages at {OPEN}, API at {API}; each step at most 5 s") in lines
    assert row(result.output, "QR pages host") == (
        "open.weixin.qq.com: resolves to 192.0.2.10; port 443 takes a connection (3 ms)")
    assert row(result.output, "API host").startswith("api.weixin.qq.com: resolves to")
    assert row(result.output, "Clock") == "OK, within 1 s of the API's (the Date of its answer)"
    assert "Live checks of connection 'wechat'" in lines
    assert row(result.output, "QR page") == (
        f"OK, the QR code for AppID {APP_ID} and redirect URI {REDIRECT_URI}")
    assert row(result.output, "AppID and AppSecret").startswith(
        "OK, they match (WeChat: errcode 40029: invalid code, rid: 6731d8f2")
    assert lines[-1] == "Summary: no problems."
    assert hosts_up == [OPEN, API]


def test_the_qr_page_is_asked_as_a_visitor_s_browser_asks_it(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI, hosts_up: list[str],
) -> None:
    page(wechat_api, "qrconnect_ok.html")
    token_answer(wechat_api, 40029, "invalid code")
    live(make_app(WECHAT_QR_LANG="en"), "--base-url", PUBLIC)
    [call] = calls_to(wechat_api, QR_PATH)
    parts = urlsplit(call.request.url)
    query = parse_qsl(parts.query)
    assert [key for key, _ in query] == ["appid", "redirect_uri", "response_type", "scope",
                                         "state", "lang"]
    assert dict(query) == {"appid": APP_ID, "redirect_uri": REDIRECT_URI,
                           "response_type": "code", "scope": "snsapi_login",
                           "state": dict(query)["state"], "lang": "en"}
    assert re.fullmatch(r"[0-9a-f]{32}", dict(query)["state"])
    assert "MicroMessenger" not in call.request.headers["User-Agent"]
    assert call.request.headers["Accept-Language"].startswith("zh-CN")
    assert APP_SECRET not in call.request.url


def test_the_made_up_code_is_exchanged_with_the_appid_and_secret(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI, hosts_up: list[str],
) -> None:
    page(wechat_api, "qrconnect_ok.html")
    token_answer(wechat_api, 40029, "invalid code")
    result = live(make_app(), "--base-url", PUBLIC)
    [call] = calls_to(wechat_api, TOKEN_PATH)
    assert parse_qsl(urlsplit(call.request.url).query) == [
        ("appid", APP_ID), ("secret", APP_SECRET), ("code", INVALID_CODE),
        ("grant_type", "authorization_code")]
    assert APP_SECRET not in result.output


# --- (b) what WeChat says of the AppID and AppSecret ------------------------------------


def test_a_wrong_secret_is_a_problem_naming_the_setting(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI, hosts_up: list[str],
) -> None:
    page(wechat_api, "qrconnect_ok.html")
    token_answer(wechat_api, 40125, "invalid appsecret")
    result = live(make_app(), "--base-url", PUBLIC)
    assert result.exit_code == 1, result.output
    assert row(result.output, "AppID and AppSecret") == (
        "PROBLEM, errcode 40125: invalid appsecret, rid: 6731d8f2-1b2c3d4e-5f6a7b8c")
    [found] = findings(result.output, "PROBLEM")
    assert found.startswith(
        f"PROBLEM [wechat]: WeChat refuses the AppSecret of the website application {APP_ID} "
        "(errcode 40125: invalid appsecret, rid: 6731d8f2-1b2c3d4e-5f6a7b8c). Fix: copy the "
        "AppSecret of your website application on open.weixin.qq.com (管理中心 > 网站应用) "
        "into WECHAT_QR_APP_SECRET")


def test_an_unknown_app_id_is_a_problem(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI, hosts_up: list[str],
) -> None:
    page(wechat_api, "qrconnect_ok.html")
    token_answer(wechat_api, 40013, "invalid appid")
    result = live(make_app(), "--base-url", PUBLIC)
    assert result.exit_code == 1, result.output
    [found] = findings(result.output, "PROBLEM")
    assert found.startswith(f"PROBLEM [wechat]: WeChat does not know the AppID {APP_ID} of "
                            "the website application (errcode 40013: invalid appid")
    assert "Fix: copy WECHAT_QR_APP_ID from" in found


def test_any_other_answer_is_quoted_verbatim(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI, hosts_up: list[str],
) -> None:
    page(wechat_api, "qrconnect_ok.html")
    errmsg = "invalid ip 203.0.113.7 ipv6 ::ffff:203.0.113.7, not in whitelist"
    token_answer(wechat_api, 40164, errmsg)
    result = live(make_app(), "--base-url", PUBLIC)
    assert result.exit_code == 1, result.output
    said = f"errcode 40164: {errmsg}, rid: 6731d8f2-1b2c3d4e-5f6a7b8c"
    assert row(result.output, "AppID and AppSecret") == f"PROBLEM, {said}"
    [found] = findings(result.output, "PROBLEM")
    assert f"WeChat answered the made-up code with {said}, not 40029 (invalid code)" in found


def test_a_busy_wechat_is_a_warning(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI, hosts_up: list[str],
) -> None:
    page(wechat_api, "qrconnect_ok.html")
    token_answer(wechat_api, -1, "system error")
    result = live(make_app(), "--base-url", PUBLIC)
    assert result.exit_code == 0, result.output
    [found] = findings(result.output, "WARNING")
    assert "WeChat was busy (errcode -1: system error" in found
    assert "run the check again in a minute" in found


def test_an_answer_that_is_not_wechat_s_json_is_a_problem(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI, hosts_up: list[str],
) -> None:
    page(wechat_api, "qrconnect_ok.html")
    wechat_api.raw(TOKEN_PATH, (FIXTURES / "proxy_bad_gateway.html").read_bytes(), status=502,
                   content_type="text/html")
    result = live(make_app(), "--base-url", PUBLIC)
    assert result.exit_code == 1, result.output
    assert row(result.output, "AppID and AppSecret") == "PROBLEM, HTTP 502, not WeChat's JSON"
    [found] = findings(result.output, "PROBLEM")
    assert ("answered HTTP 502 with something that is not WeChat's JSON (“502 Bad Gateway · "
            "502 Bad Gateway nginx”)") in found


def test_the_secret_is_never_printed_even_when_echoed(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI, hosts_up: list[str],
) -> None:
    """A proxy or a WeChat error may quote the request: its URL carries the AppSecret."""
    echoed_url = (f"{API}{TOKEN_PATH}?appid={APP_ID}&secret={APP_SECRET}&code={INVALID_CODE}"
                  "&grant_type=authorization_code")
    page(wechat_api, "proxy_bad_gateway.html")
    wechat_api.mock.replace(responses.GET, OPEN + QR_PATH,
                            body=f"<title>Denied</title><p>{APP_SECRET} {OA_APP_SECRET}</p>",
                            content_type="text/html")
    oa_secret_echo = f"secret {OA_APP_SECRET} refused"
    wechat_api.mock.add(responses.GET, OPEN + OA_PATH, body=f"<p>{oa_secret_echo}</p>",
                        content_type="text/html")

    def echo(request: t.Any) -> tuple[int, dict[str, str], str]:
        return 200, {}, json.dumps({"errcode": 40125, "errmsg": f"bad {APP_SECRET} at "
                                                                f"{echoed_url}"})

    wechat_api.mock.add_callback(responses.GET, API + TOKEN_PATH, callback=echo)
    result = live(make_app(WECHAT_QR_OA_APP_ID=OA_APP_ID, WECHAT_QR_OA_APP_SECRET=OA_APP_SECRET),
                  "--base-url", PUBLIC)
    assert result.exit_code == 1, result.output
    assert len(calls_to(wechat_api, TOKEN_PATH)) == 2  # the echo was printed, masked
    assert APP_SECRET not in result.output and OA_APP_SECRET not in result.output
    assert "bad ******** at" in result.output and "secret=[redacted]" in result.output


# --- (a) what the QR page says ----------------------------------------------------------


@pytest.mark.parametrize(("fixture", "row_text", "finding"), [
    ("qrconnect_redirect_uri_error.html",
     "PROBLEM, “redirect_uri 参数错误” (10003): www.example.com is not registered",
     f"PROBLEM [wechat]: WeChat refuses the redirect URI {REDIRECT_URI} for the website "
     f"application {APP_ID} (“redirect_uri 参数错误”, 10003): its host www.example.com is not "
     "the domain registered for it. Fix: enter www.example.com as the authorization callback "
     "domain (授权回调域) on open.weixin.qq.com (管理中心 > 网站应用 > 开发信息): exactly that "
     "host, no scheme, no port; or fix --base-url / SERVER_NAME."),
    ("qrconnect_scope_error.html", "PROBLEM, “Scope参数错误或没有Scope权限” (10005)",
     f"PROBLEM [wechat]: WeChat refuses the scope asked for the website application {APP_ID} "
     "(“Scope参数错误或没有Scope权限”, 10005): the AppID is another kind of app's, or the app "
     "has no right to that scope yet. Fix: set WECHAT_QR_APP_ID to the AppID of your website "
     "application on open.weixin.qq.com (管理中心 > 网站应用) (approved)."),
    ("qrconnect_appid_error.html", "PROBLEM, “appid 参数错误”: WeChat does not know the AppID",
     f"PROBLEM [wechat]: WeChat does not know the AppID {APP_ID} of the website application "
     "(“appid 参数错误”)."),
    ("qrconnect_link_refused.html", "PROBLEM, “该链接无法访问”, no cause given",
     "PROBLEM [wechat]: WeChat refuses the QR page (“该链接无法访问”) without saying why: "
     "most often www.example.com is not the registered domain"),
])
def test_a_refused_qr_page_is_a_problem_with_its_cause(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI, hosts_up: list[str],
    fixture: str, row_text: str, finding: str,
) -> None:
    page(wechat_api, fixture)
    token_answer(wechat_api, 40029, "invalid code")
    result = live(make_app(), "--base-url", PUBLIC)
    assert result.exit_code == 1, result.output
    assert row(result.output, "QR page") == row_text
    [found] = findings(result.output, "PROBLEM")
    assert found.startswith(finding), found


def test_a_page_this_check_does_not_know_is_a_warning_with_the_address_to_open(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI, hosts_up: list[str],
) -> None:
    page(wechat_api, "proxy_bad_gateway.html", status=502)
    token_answer(wechat_api, 40029, "invalid code")
    result = live(make_app(), "--base-url", PUBLIC)
    assert result.exit_code == 0, result.output
    assert row(result.output, "QR page") == (
        "WARNING, a page this check does not know: HTTP 502, “502 Bad Gateway · 502 Bad "
        "Gateway nginx”")
    [found] = findings(result.output, "WARNING")
    assert f"Fix: open it in a browser and look: {OPEN}{QR_PATH}?appid={APP_ID}&" in found


def test_without_a_public_address_the_qr_page_is_not_checked_but_the_keys_are(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI, hosts_up: list[str],
) -> None:
    token_answer(wechat_api, 40029, "invalid code")
    result = live(make_app())
    assert row(result.output, "QR page") == (
        "not checked: the redirect URI is unknown (give --base-url or SERVER_NAME)")
    assert row(result.output, "AppID and AppSecret").startswith("OK, they match")
    assert not calls_to(wechat_api, QR_PATH)
    assert result.exit_code == 0, result.output  # the offline check already warns


# --- (c) hosts and clock ------------------------------------------------------------------


def test_an_unreachable_api_host_is_a_problem_and_is_not_called(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def probe(url: str, proxies: t.Mapping[str, str], timeout: float) -> str:
        if url == API:
            raise HostUnreachable("could not resolve api.weixin.qq.com (Name or service not "
                                  "known)")
        return "resolves to 192.0.2.10; port 443 takes a connection (3 ms)"

    monkeypatch.setattr(live_checks, "probe_host", probe)
    page(wechat_api, "qrconnect_ok.html")
    result = live(make_app(), "--base-url", PUBLIC)
    assert result.exit_code == 1, result.output
    assert row(result.output, "API host") == (
        "api.weixin.qq.com: UNREACHABLE, could not resolve api.weixin.qq.com (Name or service "
        "not known)")
    assert row(result.output, "AppID and AppSecret") == (
        "not checked: api.weixin.qq.com is unreachable")
    assert row(result.output, "Clock") == "not checked: no answer of the API said its time"
    assert row(result.output, "QR page").startswith("OK, the QR code")
    [found] = findings(result.output, "PROBLEM")
    assert found.startswith(
        "PROBLEM: this server cannot reach WeChat's API at api.weixin.qq.com: could not "
        "resolve api.weixin.qq.com (Name or service not known); every login fails")
    assert not calls_to(wechat_api, TOKEN_PATH)


def test_an_unreachable_qr_page_host_is_a_warning(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def probe(url: str, proxies: t.Mapping[str, str], timeout: float) -> str:
        if url == OPEN:
            raise HostUnreachable("could not connect to 192.0.2.10:443 (timed out after 5 s)")
        return "resolves to 192.0.2.11; port 443 takes a connection (3 ms)"

    monkeypatch.setattr(live_checks, "probe_host", probe)
    token_answer(wechat_api, 40029, "invalid code")
    result = live(make_app(), "--base-url", PUBLIC)
    assert result.exit_code == 0, result.output
    assert row(result.output, "QR page") == "not checked: open.weixin.qq.com is unreachable"
    [found] = findings(result.output, "WARNING")
    assert "visitors' browsers load them, not this server" in found
    assert not calls_to(wechat_api, QR_PATH)


@pytest.mark.parametrize(("offset", "callback", "kind"), [
    (-600, False, "WARNING"), (-600, True, "PROBLEM"), (90, True, "PROBLEM"),
])
def test_a_clock_off_by_more_than_a_minute(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI, hosts_up: list[str],
    offset: int, callback: bool, kind: str,
) -> None:
    """WeChat's Date says the time: this server's clock is ``offset`` seconds ahead."""
    page(wechat_api, "qrconnect_ok.html")
    token_answer(wechat_api, 40029, "invalid code", clock_offset=offset)
    config = ({"WECHAT_QR_CALLBACK_URL": "https://biz.example.com/wechat/done",
               "WECHAT_QR_ID_TOKEN_SECRET": "k3y-" * 12,
               "WECHAT_QR_ID_TOKEN_ISSUER": PUBLIC} if callback else {})
    result = live(make_app(**config), "--base-url", PUBLIC)
    assert result.exit_code == (1 if kind == "PROBLEM" else 0), result.output
    side = "ahead of" if offset > 0 else "behind"
    said = row(result.output, "Clock")
    assert re.fullmatch(rf"{kind}, ({abs(offset) - 1}|{abs(offset)}|{abs(offset) + 1}) s "
                        rf"{side} the API's \(the Date of its answer\)", said), said
    [found] = [f for f in findings(result.output, kind) if "clock" in f]
    assert "keep the clock synchronised (NTP" in found
    if callback:
        effect = "not valid yet" if offset > 0 else "expired"
        assert f"(valid 300 s) reach receivers whose clocks are right {effect}" in found


# --- (d) the Official Account ------------------------------------------------------------


def _answer_by_appid(api: WeChatAPI, codes: dict[str, int]) -> None:
    def answer(request: t.Any) -> tuple[int, dict[str, str], str]:
        app_id = dict(parse_qsl(urlsplit(request.url).query))["appid"]
        return 200, {"Date": formatdate(usegmt=True)}, json.dumps(
            {"errcode": codes[app_id], "errmsg": "whatever, rid: 1-2-3"})

    api.mock.add_callback(responses.GET, API + TOKEN_PATH, callback=answer)


def test_the_official_account_is_checked_as_wechat_s_browser(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI, hosts_up: list[str],
) -> None:
    page(wechat_api, "qrconnect_ok.html")
    page(wechat_api, "authorize_consent.html", OA_PATH)
    _answer_by_appid(wechat_api, {APP_ID: 40029, OA_APP_ID: 40029})
    app = make_app(WECHAT_QR_OA_APP_ID=OA_APP_ID, WECHAT_QR_OA_APP_SECRET=OA_APP_SECRET)
    result = live(app, "--base-url", PUBLIC)
    assert result.exit_code == 0, result.output
    assert row(result.output, "Official Account page") == (
        f"OK, the authorization page for AppID {OA_APP_ID} and redirect URI {REDIRECT_URI}")
    assert row(result.output, "Official Account keys").startswith("OK, they match")
    [call] = calls_to(wechat_api, OA_PATH)
    assert "MicroMessenger/" in call.request.headers["User-Agent"]
    assert dict(parse_qsl(urlsplit(call.request.url).query))["scope"] == "snsapi_userinfo"
    oa_exchange = [dict(parse_qsl(urlsplit(c.request.url).query))
                   for c in calls_to(wechat_api, TOKEN_PATH)][1]
    assert (oa_exchange["appid"], oa_exchange["secret"]) == (OA_APP_ID, OA_APP_SECRET)


def test_the_official_account_s_wrong_secret_names_its_setting(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI, hosts_up: list[str],
) -> None:
    page(wechat_api, "qrconnect_ok.html")
    page(wechat_api, "authorize_outside_wechat.html", OA_PATH)
    _answer_by_appid(wechat_api, {APP_ID: 40029, OA_APP_ID: 40125})
    app = make_app(WECHAT_QR_OA_APP_ID=OA_APP_ID, WECHAT_QR_OA_APP_SECRET=OA_APP_SECRET)
    result = live(app, "--base-url", PUBLIC)
    assert result.exit_code == 1, result.output
    [found] = findings(result.output, "PROBLEM")
    assert f"WeChat refuses the AppSecret of the Official Account {OA_APP_ID}" in found
    assert "into WECHAT_QR_OA_APP_SECRET" in found
    assert row(result.output, "Official Account page") == (
        "WARNING, “请在微信客户端打开链接”: not checked outside WeChat")
    [warned] = [f for f in findings(result.output, "WARNING") if "请在微信客户端" in f]
    assert "open the site's login once in WeChat on a phone" in warned


def test_a_silent_authorization_straight_to_the_redirect_uri_is_accepted(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI, hosts_up: list[str],
) -> None:
    page(wechat_api, "qrconnect_ok.html")
    wechat_api.mock.add(responses.GET, OPEN + OA_PATH, status=302,
                        headers={"Location": f"{REDIRECT_URI}?code=x&state=y"})
    _answer_by_appid(wechat_api, {APP_ID: 40029, OA_APP_ID: 40029})
    app = make_app(WECHAT_QR_OA_APP_ID=OA_APP_ID, WECHAT_QR_OA_APP_SECRET=OA_APP_SECRET,
                   WECHAT_QR_OA_SCOPE="snsapi_base")
    result = live(app, "--base-url", PUBLIC)
    assert result.exit_code == 0, result.output
    assert row(result.output, "Official Account page") == (
        f"OK, WeChat sends the browser straight on to the redirect URI {REDIRECT_URI}")


def test_the_in_app_sandbox_is_not_called(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI,
) -> None:
    result = live(make_app(WECHAT_QR_SANDBOX=True, DEBUG=True), "--base-url", PUBLIC)
    assert result.exit_code == 0, result.output
    assert ("Live checks: skipped; logins go to the sandbox inside this app, which answers "
            "only this app's own requests: nothing to call.") in result.output
    assert not wechat_api.mock.calls


# --- the host probe, on loopback -----------------------------------------------------------


def test_a_name_lookup_that_hangs_is_given_up_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow_lookup(*args: t.Any, **kwargs: t.Any) -> t.Any:
        time.sleep(3)
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", slow_lookup)
    started = time.monotonic()
    with pytest.raises(HostUnreachable, match=r"^resolving api\.weixin\.qq\.com took longer "
                                              r"than 0\.3 s$"):
        resolve("api.weixin.qq.com", 443, 0.3)
    assert time.monotonic() - started < 2


def test_a_name_that_does_not_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args: t.Any, **kwargs: t.Any) -> t.Any:
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", failing)
    with pytest.raises(HostUnreachable, match=r"^could not resolve api\.weixin\.qq\.com "
                                              r"\(Name or service not known\)$"):
        probe_host(API, {}, 1)


def test_a_closed_port_is_refused_at_once() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(HostUnreachable, match=rf"^could not connect to 127\.0\.0\.1:{port} "
                                              r"\(Connection refused\)$"):
        probe_host(f"http://127.0.0.1:{port}", {}, 2)
    assert time.monotonic() - started < 2


def test_a_listening_port_takes_a_connection() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        seen = probe_host(f"http://127.0.0.1:{port}", {}, 2)
        assert connect(["127.0.0.1"], port, 2) == "127.0.0.1"
    assert re.fullmatch(rf"resolves to 127\.0\.0\.1; port {port} takes a connection "
                        r"\(\d+ ms\)", seen), seen


def test_through_a_proxy_the_proxy_is_probed_not_wechat(monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up: list[str] = []
    real = socket.getaddrinfo

    def spy(host: str, *args: t.Any, **kwargs: t.Any) -> t.Any:
        looked_up.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", spy)
    with socket.socket() as proxy:
        proxy.bind(("127.0.0.1", 0))
        proxy.listen()
        port = proxy.getsockname()[1]
        seen = probe_host(API, {"https": f"http://user:pw@127.0.0.1:{port}"}, 2)
    assert seen.endswith(f"(through the proxy 127.0.0.1:{port})")
    assert "pw" not in seen
    assert set(looked_up) == {"127.0.0.1"}  # never api.weixin.qq.com


def test_a_server_that_never_answers_does_not_hold_the_check(
    make_app: t.Callable[..., Flask],
) -> None:
    """It takes the connection (the kernel's backlog) and says nothing: each call ends at
    WECHAT_QR_HTTP_TIMEOUT, and the command exits 1."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        base = f"http://127.0.0.1:{silent.getsockname()[1]}"
        app = make_app(WECHAT_QR_OPEN_BASE_URL=base, WECHAT_QR_API_BASE_URL=base,
                       WECHAT_QR_HTTP_TIMEOUT=0.5)
        started = time.monotonic()
        result = live(app, "--base-url", PUBLIC)
        elapsed = time.monotonic() - started
    assert elapsed < 8, elapsed
    assert result.exit_code == 1, result.output
    netloc = base.split("//")[1]
    assert row(result.output, "QR page").startswith(f"not checked: {netloc} ")
    assert row(result.output, "AppID and AppSecret").startswith(f"not checked: {netloc} ")
    assert "in time" in row(result.output, "AppID and AppSecret") or \
        "within WECHAT_QR_HTTP_TIMEOUT" in row(result.output, "AppID and AppSecret")
    [found] = [f for f in findings(result.output, "PROBLEM") if "could not be asked" in f]
    assert f"make sure {netloc} is WeChat's API (or a proxy to it)" in found


def test_without_live_nothing_is_called(
    make_app: t.Callable[..., Flask], wechat_api: WeChatAPI, hosts_up: list[str],
) -> None:
    result = make_app().test_cli_runner().invoke(
        args=["wechat-qr", "check", "--base-url", PUBLIC], env={"FLASK_DEBUG": "0"})
    assert result.exit_code == 0, result.output
    assert "Live checks" not in result.output
    assert not wechat_api.mock.calls and not hosts_up
