"""docs/sandbox.rst's "On its own port" recipe, as written, with the example site: the
standalone sandbox in one process, the site in another, configured with exactly what the
sandbox printed, then ``flask wechat-qr check`` and a whole login over real sockets.

Both processes are bounded and stopped by their PID.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import pytest
import requests
from support import ROOT, free_port

#: How long a process may take to start answering, in seconds.
START_TIMEOUT = 30


def _environ(**extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("FLASK_", "WECHAT_QR_")) and k not in ("SECRET_KEY",
                                                                          "DATABASE_URL")}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    return {**environ, **extra}


def _stop(process: subprocess.Popen[str]) -> str:
    """Stop ``process`` (by its PID, through Popen) and return what it wrote."""
    process.terminate()
    try:
        out, err = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate(timeout=15)
    return (out or "") + (err or "")


def _wait_until_up(process: subprocess.Popen[str], url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            pytest.fail(f"{process.args} exited with {process.returncode}:\n{_stop(process)}")
        try:
            requests.get(url, timeout=2)
            return
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                pytest.fail(f"nothing answered at {url} in time:\n{_stop(process)}")
            time.sleep(0.1)


def _printed_settings(process: subprocess.Popen[str]) -> tuple[dict[str, str], list[str]]:
    """The settings the sandbox printed before serving (it flushes every line)."""
    assert process.stdout is not None
    lines: list[str] = []
    while not lines or "For development only" not in lines[-1]:
        line = process.stdout.readline()
        assert line, lines  # the process ended
        lines.append(line.rstrip("\n"))
        assert len(lines) < 20, lines
    settings = dict(re.findall(r"^ {7}(WECHAT_QR_\w+)=(\S+)$", "\n".join(lines), re.M))
    return settings, lines


@pytest.fixture
def standalone(tmp_path: Path) -> t.Iterator[tuple[dict[str, str], list[str]]]:
    """The sandbox as docs/sandbox.rst starts it (the docs' port is taken by other tests
    running at once, so a free one)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "flask_wechat_qr.sandbox", "--port", str(port),
         "--callback-domain", "localhost", "--database", f"sqlite:///{tmp_path / 'sb.db'}"],
        cwd=tmp_path, env=_environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        _wait_until_up(process, f"http://127.0.0.1:{port}/")
        yield _printed_settings(process)
    finally:
        _stop(process)


def test_the_recipe_works_as_written(
    tmp_path: Path, standalone: tuple[dict[str, str], list[str]],
) -> None:
    settings, printed = standalone
    assert set(settings) == {"WECHAT_QR_OPEN_BASE_URL", "WECHAT_QR_API_BASE_URL",
                             "WECHAT_QR_APP_ID", "WECHAT_QR_APP_SECRET",
                             "WECHAT_QR_OA_APP_ID", "WECHAT_QR_OA_APP_SECRET"}, printed
    assert settings["WECHAT_QR_APP_ID"] == "wxsandbox0000000001"
    assert len(settings["WECHAT_QR_APP_SECRET"]) >= 20  # the one it made, printed once
    assert any("Open your site at http://localhost:<its port>/" in line for line in printed)

    site_port = free_port()
    environ = _environ(**settings, SECRET_KEY=secrets.token_hex(32),
                       DATABASE_URL=f"sqlite:///{tmp_path / 'site.db'}")
    flask = [sys.executable, "-m", "flask", "--app", "example_app"]
    site_url = f"http://localhost:{site_port}"
    for base_url in ([], ["--base-url", site_url]):
        check = subprocess.run([*flask, "wechat-qr", "check", *base_url], cwd=tmp_path,
                               env=environ, capture_output=True, text=True, timeout=120)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "PROBLEM" not in check.stdout
        assert "logins go to a standalone sandbox" in check.stdout

    site = subprocess.Popen([*flask, "run", "--port", str(site_port)], cwd=tmp_path,
                            env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        _wait_until_up(site, site_url + "/")
        assert "张三🐼" in _log_in(site_url, settings["WECHAT_QR_OPEN_BASE_URL"])
        # What the printed line warns of: the same site opened at 127.0.0.1.
        wrong_host = requests.get(f"http://127.0.0.1:{site_port}/auth/wechat/login",
                                  timeout=10)
        assert "10003" in wrong_host.text
    finally:
        _stop(site)


def _log_in(site_url: str, sandbox_url: str) -> str:
    """One login as the browser and the phone would make it; the page it ends on."""
    with requests.Session() as browser:
        qr_page = browser.get(f"{site_url}/auth/wechat/login", timeout=10)
        assert qr_page.url.startswith(sandbox_url + "/connect/qrconnect"), qr_page.url
        found = re.search(r"/connect/confirm/([\w-]+)", qr_page.text)
        assert found, qr_page.text
        uuid = found.group(1)
        browser.post(f"{sandbox_url}/connect/confirm/{uuid}", timeout=10,
                     data={"action": "allow", "person": "zhangsan"})
        answer = browser.get(f"{sandbox_url}/connect/l/qrconnect", params={"uuid": uuid},
                             timeout=10).json()
        home = browser.get(answer["redirect"], timeout=20)
        assert home.status_code == 200 and home.url == site_url + "/", (home.url, home.text)
        return home.text
