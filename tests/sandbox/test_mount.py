"""The sandbox mounted in a host app (WECHAT_QR_SANDBOX) and standing alone
(create_sandbox_app): whole logins of the extension against it, in-process and over real
HTTP."""

from __future__ import annotations

import logging
import typing as t
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from support import (
    Database,
    LiveServer,
    all_identities,
    answer,
    open_qr_page,
    poll,
)

from flask_wechat_qr.sandbox import SandboxApp, create_sandbox_app
from flask_wechat_qr.sandbox.users import unionid_for

# --- whole logins against the sandbox mounted in the host ---------------------------------


def test_login_through_the_sandbox_in_process(sandbox_app: Flask) -> None:
    client, phone = sandbox_app.test_client(), sandbox_app.test_client()
    uuid, _ = open_qr_page(client, next_url="/welcome")
    answer(phone, uuid, action="allow", person="new", nickname="Ada 🧪")
    callback = poll(client, uuid)["redirect"].split("localhost", 1)[1]
    resp = client.get(callback)
    assert resp.status_code == 302 and resp.headers["Location"] == "/welcome"
    assert client.get("/").get_data(as_text=True).endswith("Ada 🧪")


@pytest.mark.parametrize("config", [{"SERVER_NAME": "localhost"},
                                    {"TRUSTED_HOSTS": [".localhost"]}])
def test_login_through_the_sandbox_of_a_host_strict_about_hosts(
        make_app: t.Callable[..., Flask], config: dict[str, t.Any]) -> None:
    """With ``SERVER_NAME`` and subdomain matching, or ``TRUSTED_HOSTS``, the app answers
    only its own host: its calls to the sandbox in it come at that host. Before: the
    sandbox's ``.invalid`` origin got a 404 (or a 400), and the page "WeChat is not
    answering"."""
    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None,
                   **config)
    app.subdomain_matching = True
    client, phone = app.test_client(), app.test_client()
    uuid, _ = open_qr_page(client)
    answer(phone, uuid, action="allow", person="lisi")
    resp = client.get(poll(client, uuid)["redirect"].split("localhost", 1)[1])
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert client.get("/").get_data(as_text=True).startswith("logged in as")


def test_denied_login_through_the_sandbox(sandbox_app: Flask) -> None:
    client, phone = sandbox_app.test_client(), sandbox_app.test_client()
    uuid, _ = open_qr_page(client)
    answer(phone, uuid, action="deny")
    resp = client.get(poll(client, uuid)["redirect"].split("localhost", 1)[1])
    assert resp.status_code == 200
    assert "cancelled" in resp.get_data(as_text=True)
    assert client.get("/").get_data(as_text=True) == "anonymous"


@pytest.mark.parametrize("credentials", [True, False])
def test_two_connections_share_unionid_in_the_sandbox(make_app: t.Callable[..., Flask],
                                                      credentials: bool) -> None:
    """Two connections are two sandbox applications, with or without credentials of their
    own (before: two without any were one application, the second's, under one AppID)."""
    given = [{"app_id": "wxweb0000000000001", "app_secret": "a"},
             {"app_id": "wxshop000000000001", "app_secret": "b"}] if credentials else [{}, {}]
    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None,
                   WECHAT_QR_CONNECTIONS=[
                       {"connection": "web", "display_name": "Web",
                        "association": "field_matching", **given[0]},
                       {"connection": "shop", "display_name": "Shop",
                        "association": "field_matching", **given[1]},
                   ])
    if not credentials:
        connections = app.extensions["wechat_qr"].settings.connections
        assert [c.app_id for c in connections.values()] == [
            "wxsandbox0000000001", "wxsandbox0000000002"]
        client = app.test_client()
        location = client.get("/auth/web/login").headers["Location"]
        page = client.get(location.split("localhost", 1)[1].split("#")[0])
        assert "(Web)" in page.get_data(as_text=True)
    users = []
    for connection in ("web", "shop"):
        client, phone = app.test_client(), app.test_client()
        uuid, _ = open_qr_page(client, login_path=f"/auth/{connection}/login")
        answer(phone, uuid, action="allow", person="lisi")
        client.get(poll(client, uuid)["redirect"].split("localhost", 1)[1])
        users.append(client.get("/").get_data(as_text=True))
    assert users[0] == users[1] and users[0].startswith("logged in as")
    identities = all_identities(app)
    assert sorted(i.connection for i in identities) == ["shop", "web"]
    assert identities[0].openid != identities[1].openid
    assert identities[0].unionid == identities[1].unionid == unionid_for("lisi")


# --- the standalone sandbox ---------------------------------------------------------------


def test_standalone_sandbox_over_real_http(
    make_app: t.Callable[..., Flask], database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """Real HTTP, real urllib3 (which logs every URL at DEBUG: secrets must not show)."""
    sandbox = create_sandbox_app(
        [SandboxApp("wxstandalone000001", "standalone-secret", "Standalone", "localhost")],
        database_uri=database.url("sandbox"))
    with LiveServer(sandbox) as server:
        app = make_app(WECHAT_QR_APP_ID="wxstandalone000001",
                       WECHAT_QR_APP_SECRET="standalone-secret",
                       WECHAT_QR_OPEN_BASE_URL=server.url, WECHAT_QR_API_BASE_URL=server.url)
        client = app.test_client()
        sandbox_client = sandbox.test_client()
        uuid, _ = open_qr_page(client, prefix="", base=server.url, sandbox_client=sandbox_client)
        answer(sandbox_client, uuid, prefix="", action="allow", person="xiaohua")
        redirect = poll(sandbox_client, uuid, prefix="")["redirect"]
        code = parse_qs(urlsplit(redirect).query)["code"][0]
        with caplog.at_level(logging.DEBUG):
            resp = client.get(redirect.split("localhost", 1)[1])
        assert resp.status_code == 302
        assert client.get("/").get_data(as_text=True).endswith("🌸小花🌸")
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "/sns/oauth2/access_token?appid=wxstandalone000001&secret=[redacted]" in logged
        assert "standalone-secret" not in logged and code not in logged
        assert "access_token=[redacted]" in logged
