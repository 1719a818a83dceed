"""The sandbox in hosts that are strict about their pages: Jinja's ``StrictUndefined``
(every variable a template reads must be given), Flask-WTF's ``CSRFProtect`` over every
POST of the app, and a nonce-based Content Security Policy (Flask-Talisman's ``csp_nonce()``
template global). Whole logins through the sandbox's own pages, as a person tries the site."""

from __future__ import annotations

import re
import typing as t

import jinja2
import pytest
from flask import Flask
from support import SANDBOX_PREFIX, all_users, answer, open_qr_page, poll

NONCE = "n0nce-123"
WECHAT_PHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
                "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.49(0x18003130) "
                "NetType/WIFI Language/zh_CN")


@pytest.fixture
def strict_host(make_app: t.Callable[..., Flask]) -> Flask:
    from flask_wtf.csrf import CSRFProtect

    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None,
                   WECHAT_QR_OA_VERIFY_FILE="MP_verify_Sandbox42.txt=Sandbox42")
    CSRFProtect(app)  # set up after the extension: its check runs first on every POST
    app.jinja_env.undefined = jinja2.StrictUndefined
    app.jinja_env.globals["csp_nonce"] = lambda: NONCE
    return app


def scripts_carry_the_nonce(resp: t.Any) -> bool:
    """Every inline script of the page may run under the host's policy."""
    tags = re.findall(r"<script\b[^>]*>", resp.get_data(as_text=True))
    return all(f'nonce="{NONCE}"' in tag for tag in tags if "src=" not in tag)


def local(url: str) -> str:
    return url.removeprefix("http://localhost").split("#")[0]


def test_a_qr_login_through_the_sandboxs_pages(strict_host: Flask) -> None:
    """Before: the phone's page was a 500 (``problem`` undefined), its Allow a 400 (no
    CSRF token), and the QR page's polling script was blocked by the policy."""
    client, phone = strict_host.test_client(), strict_host.test_client()
    start = client.get("/auth/wechat/login", query_string={"next": "/welcome"})
    qr_page = client.get(local(start.headers["Location"]))
    assert qr_page.status_code == 200 and scripts_carry_the_nonce(qr_page)
    uuid = re.search(r'data-uuid="([^"]+)"', qr_page.get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    page = phone.get(f"{SANDBOX_PREFIX}/connect/confirm/{uuid}")
    assert page.status_code == 200 and scripts_carry_the_nonce(page)
    # Allow without choosing anyone: the page says so (the variable the template reads).
    unchosen = phone.post(f"{SANDBOX_PREFIX}/connect/confirm/{uuid}",
                          data={"action": "allow", "person": "new", "nickname": ""})
    assert unchosen.status_code == 400, unchosen.get_data(as_text=True)
    allowed = answer(phone, uuid, action="allow", person="lisi")
    assert allowed.status_code == 200 and scripts_carry_the_nonce(allowed)
    done = client.get(local(poll(client, uuid)["redirect"]))
    assert done.status_code == 302 and done.headers["Location"] == "/welcome"
    assert len(all_users(strict_host)) == 1
    # The phone's page once the code is used, and for an unknown QR code.
    assert phone.get(f"{SANDBOX_PREFIX}/connect/confirm/{uuid}").status_code == 409
    assert phone.get(f"{SANDBOX_PREFIX}/connect/confirm/no-such-uuid").status_code == 410


def test_a_denied_login_and_the_fast_login(strict_host: Flask) -> None:
    client, phone = strict_host.test_client(), strict_host.test_client()
    uuid, _state = open_qr_page(client)
    assert answer(phone, uuid, action="deny").status_code == 200
    assert client.get(local(poll(client, uuid)["redirect"])).status_code == 200
    uuid, _state = open_qr_page(client)
    fast = client.post(f"{SANDBOX_PREFIX}/connect/qrconnect/fast_login/{uuid}",
                       data={"person": "zhangsan"})
    assert fast.status_code == 302, fast.get_data(as_text=True)
    assert client.get(local(fast.headers["Location"])).status_code == 302


def test_the_sandboxs_index_and_an_avatar_change(strict_host: Flask) -> None:
    client = strict_host.test_client()
    index = client.get(f"{SANDBOX_PREFIX}/")
    assert index.status_code == 200 and scripts_carry_the_nonce(index)
    changed = client.post(f"{SANDBOX_PREFIX}/people/zhangsan/avatar")
    assert changed.status_code in (302, 303), changed.get_data(as_text=True)


def test_a_login_inside_wechat_through_the_consent_sheet(strict_host: Flask) -> None:
    client = strict_host.test_client()
    client.environ_base["HTTP_USER_AGENT"] = WECHAT_PHONE
    location = local(client.get("/auth/wechat/login").headers["Location"])
    sheet = client.get(location)
    assert sheet.status_code == 200 and scripts_carry_the_nonce(sheet)
    consent = client.post(location, data={"action": "allow", "person": "zhangsan"})
    assert consent.status_code == 302, consent.get_data(as_text=True)
    # inside WeChat the login moves on with a page of its own (see test_in_wechat), whose
    # script the site's policy must let run
    done = client.get(local(consent.headers["Location"]))
    assert done.status_code == 200 and scripts_carry_the_nonce(done)
    assert "window.top.location.href" in done.get_data(as_text=True)
    assert len(all_users(strict_host)) == 1


def test_the_extensions_own_scripts_carry_the_nonce(strict_host: Flask) -> None:
    """Every template with an inline script: a host's nonce reaches each (the break-out
    page of ``WECHAT_QR_QR_SELF_REDIRECT`` and the ID token's form post included)."""
    from pathlib import Path

    import flask_wechat_qr

    templates = Path(flask_wechat_qr.__file__).parent / "templates"
    for path in templates.rglob("*.html"):
        for tag in re.findall(r"<script\b[^>]*>", path.read_text()):
            if "src=" not in tag:
                assert "csp_nonce()" in tag, (path.name, tag)
