"""``flask wechat-qr check --live --base-url ...`` against the standalone sandbox on its own
port, in the four set-ups of issue 17: correct, a wrong callback domain, a wrong
AppSecret, an unreachable API host. Exit codes and wording, over real sockets.

The sandbox runs as ``python -m flask_wechat_qr.sandbox`` (bounded start, stopped by its
PID); the site is a test host configured with what the sandbox printed, its command run
in this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import pytest
import requests
from flask import Flask
from support import ROOT, closed_port, free_port

from flask_wechat_qr.sandbox.options import SANDBOX_APP_ID, SANDBOX_OA_APP_ID

START_TIMEOUT = 30
SITE = "http://localhost:5000"
REDIRECT_URI = f"{SITE}/auth/wechat/callback"
APP_SECRET = "live-check-app-secret-7f3a"
OA_APP_SECRET = "live-check-oa-secret-91c2"


class Sandbox(t.NamedTuple):
    base: str
    process: subprocess.Popen[str]


def _start(tmp_path: Path, callback_domain: str) -> Sandbox:
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "WECHAT_QR_"))}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT),
                                                          environ.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "flask_wechat_qr.sandbox", "--port", str(port),
         "--app-secret", APP_SECRET, "--oa-app-secret", OA_APP_SECRET,
         "--callback-domain", callback_domain,
         "--database", f"sqlite:///{tmp_path / f'sandbox-{port}.db'}"],
        cwd=tmp_path, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            pytest.fail(f"the sandbox exited with {process.returncode}: {_stop(process)}")
        try:
            requests.get(base + "/", timeout=2)
            return Sandbox(base, process)
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                pytest.fail(f"the sandbox did not answer in time: {_stop(process)}")
            time.sleep(0.1)


def _stop(process: subprocess.Popen[str]) -> str:
    process.terminate()
    try:
        _out, err = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        _out, err = process.communicate(timeout=15)
    return err or ""


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Sandbox]:
    """A sandbox whose callback domain is the site's host."""
    started = _start(tmp_path_factory.mktemp("sandbox"), "localhost")
    yield started
    _stop(started.process)


@pytest.fixture(scope="module")
def sandbox_of_another_domain(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Sandbox]:
    """A sandbox whose registered callback domain is not the site's host."""
    started = _start(tmp_path_factory.mktemp("sandbox-other"), "other.example.com")
    yield started
    _stop(started.process)


def site(make_production_app: t.Callable[..., Flask], open_base: str, api_base: str,
         app_secret: str = APP_SECRET) -> Flask:
    return make_production_app(
        WECHAT_QR_OPEN_BASE_URL=open_base, WECHAT_QR_API_BASE_URL=api_base,
        WECHAT_QR_APP_ID=SANDBOX_APP_ID, WECHAT_QR_APP_SECRET=app_secret,
        WECHAT_QR_OA_APP_ID=SANDBOX_OA_APP_ID, WECHAT_QR_OA_APP_SECRET=OA_APP_SECRET,
        WECHAT_QR_HTTP_TIMEOUT=3)


def check_live(app: Flask) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(
        args=["wechat-qr", "check", "--live", "--base-url", SITE], env={"FLASK_DEBUG": "0"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def rows(output: str) -> dict[str, str]:
    found = {}
    for line in output.splitlines():
        if line.startswith("  ") and ": " in line:
            label, value = line.strip().split(": ", 1)
            found.setdefault(label.rstrip(":").strip(), value.strip())
    return found


def problems(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("PROBLEM")]


def test_correct_set_up(make_production_app: t.Callable[..., Flask], sandbox: Sandbox) -> None:
    code, output = check_live(site(make_production_app, sandbox.base, sandbox.base))
    assert code == 0, output
    seen = rows(output)
    netloc = sandbox.base.split("//")[1]
    assert seen["QR pages and API host"].startswith(
        f"{netloc}: resolves to 127.0.0.1; port {netloc.split(':')[1]} takes a connection")
    assert seen["Clock"].startswith("OK, "), output
    assert seen["QR page"] == (
        f"OK, the QR code for AppID {SANDBOX_APP_ID} and redirect URI {REDIRECT_URI}")
    assert seen["AppID and AppSecret"].startswith(
        "OK, they match (WeChat: errcode 40029: invalid code, rid: ")
    assert seen["Official Account page"] == (
        f"OK, the authorization page for AppID {SANDBOX_OA_APP_ID} and redirect URI "
        f"{REDIRECT_URI}")
    assert seen["Official Account keys"].startswith("OK, they match")
    assert not problems(output)
    assert output.splitlines()[-1] == "Summary: no problems, 2 warnings."  # sandbox, port
    assert APP_SECRET not in output and OA_APP_SECRET not in output


def test_wrong_callback_domain(make_production_app: t.Callable[..., Flask],
                               sandbox_of_another_domain: Sandbox) -> None:
    base = sandbox_of_another_domain.base
    code, output = check_live(site(make_production_app, base, base))
    assert code == 1, output
    seen = rows(output)
    assert seen["QR page"] == (
        "PROBLEM, “redirect_uri 参数错误” (10003): localhost is not registered")
    assert seen["Official Account page"] == seen["QR page"]
    assert seen["AppID and AppSecret"].startswith("OK, they match")
    assert problems(output) == [
        f"PROBLEM [wechat]: WeChat refuses the redirect URI {REDIRECT_URI} for the website "
        f"application {SANDBOX_APP_ID} (“redirect_uri 参数错误”, 10003): its host localhost is "
        "not the domain registered for it. Fix: enter localhost as the authorization callback "
        "domain (授权回调域) on open.weixin.qq.com (管理中心 > 网站应用 > 开发信息): exactly that "
        "host, no scheme, no port; or fix --base-url / SERVER_NAME.",
        f"PROBLEM [wechat]: WeChat refuses the redirect URI {REDIRECT_URI} for the Official "
        f"Account {SANDBOX_OA_APP_ID} (“redirect_uri 参数错误”, 10003): its host localhost is "
        "not the domain registered for it. Fix: enter localhost as a web authorization domain "
        "(网页授权域名) on mp.weixin.qq.com (设置与开发 > 公众号设置 > 功能设置), with its "
        "MP_verify file served: exactly that host, no scheme, no port; or fix --base-url / "
        "SERVER_NAME.",
    ]
    assert output.splitlines()[-1] == (
        "Summary: 2 problems, 2 warnings; fix the problems before registering or deploying.")


def test_wrong_secret(make_production_app: t.Callable[..., Flask], sandbox: Sandbox) -> None:
    wrong = "not-the-sandbox-s-secret-0000"
    code, output = check_live(site(make_production_app, sandbox.base, sandbox.base,
                                   app_secret=wrong))
    assert code == 1, output
    seen = rows(output)
    assert seen["QR page"].startswith("OK, the QR code")  # the page takes no AppSecret
    assert seen["AppID and AppSecret"].startswith(
        "PROBLEM, errcode 40125: invalid appsecret, rid: ")
    assert seen["Official Account keys"].startswith("OK, they match")
    [found] = problems(output)
    assert found.startswith(
        f"PROBLEM [wechat]: WeChat refuses the AppSecret of the website application "
        f"{SANDBOX_APP_ID} (errcode 40125: invalid appsecret, rid: ")
    assert "into WECHAT_QR_APP_SECRET (reset it there if nobody has it" in found
    assert wrong not in output and APP_SECRET not in output


def test_unreachable_api_host(make_production_app: t.Callable[..., Flask],
                              sandbox: Sandbox) -> None:
    with closed_port() as port:
        closed = f"127.0.0.1:{port}"
        started = time.monotonic()
        code, output = check_live(site(make_production_app, sandbox.base, f"http://{closed}"))
    assert time.monotonic() - started < 20
    assert code == 1, output
    seen = rows(output)
    assert seen["API host"] == (
        f"{closed}: UNREACHABLE, could not connect to {closed} (Connection refused)")
    assert seen["QR pages host"].startswith(f"{sandbox.base.split('//')[1]}: resolves to")
    assert seen["AppID and AppSecret"] == f"not checked: {closed} is unreachable"
    assert seen["Official Account keys"] == f"not checked: {closed} is unreachable"
    assert seen["Clock"] == "not checked: no answer of the API said its time"
    assert seen["QR page"].startswith("OK, the QR code")
    assert problems(output) == [
        f"PROBLEM: this server cannot reach WeChat's API at {closed}: could not connect to "
        f"{closed} (Connection refused); every login fails when the code is exchanged. Fix: "
        f"let this server resolve and connect to {closed} (DNS, firewall, security group), or "
        "give it a proxy (HTTPS_PROXY), or fix WECHAT_QR_API_BASE_URL."]
