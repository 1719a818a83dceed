"""Regressions found in review of the flow's move out of the views: what happens after a
login is committed, and what an error page knows of its login while delivering."""

from __future__ import annotations

import json
import typing as t

import pytest
from support import (
    add_user,
    error_name,
    finish_login,
    log_in,
    logged_in_user_id,
    recording,
    start_login,
)

from flask_wechat_qr import LoginCancelled, LoginRefused, signals
from flask_wechat_qr.login_state import Ending


def _raise_in(signal_name: str, error: Exception) -> t.Callable[..., None]:
    def receiver(sender: t.Any, **kwargs: t.Any) -> None:
        raise error

    return receiver


@pytest.mark.parametrize("signal_name", ["user_created", "identity_linked"])
def test_a_login_error_from_a_receiver_after_the_commit_is_its_page(
    make_app: t.Any, wechat_api: t.Any, signal_name: str
) -> None:
    """The login is committed, but a receiver refuses it: the page says so (never a quiet
    "logged in" that skipped login_succeeded), and login_failed is sent."""
    app = make_app()
    client = app.test_client()
    wechat_api.token()
    wechat_api.userinfo()
    receiver = _raise_in(signal_name, LoginRefused())
    with getattr(signals, signal_name).connected_to(receiver, sender=app), \
            recording(app, "login_succeeded", "login_failed") as events:
        resp = finish_login(client, start_login(client, next="/account"))
    assert resp.status_code == 403 and error_name(resp) == "LoginRefused"
    assert [name for name, _ in events] == ["login_failed"]
    # The error page's "try again" link keeps the login's next.
    assert "/auth/wechat/login?next=/account" in resp.get_data(as_text=True)


def test_a_login_error_from_a_receiver_of_a_link_is_its_page(
    make_app: t.Any, wechat_api: t.Any
) -> None:
    app = make_app()
    client = app.test_client()
    log_in(client, add_user(app, username="alice", password="pw-of-alice"))
    wechat_api.token()
    wechat_api.userinfo()
    receiver = _raise_in("identity_linked", LoginCancelled())
    with signals.identity_linked.connected_to(receiver, sender=app):
        resp = client.get("/auth/wechat/link")
        state = resp.headers["Location"].split("state=")[1].split("&")[0].split("#")[0]
        resp = finish_login(client, state)
    assert resp.status_code == 200 and error_name(resp) == "LoginCancelled"


def test_an_error_while_delivering_keeps_the_logins_next_and_business_state(
    make_app: t.Any, wechat_api: t.Any
) -> None:
    """A login_succeeded receiver's error (or the ID token's) is a page that still knows
    the login: its "try again" keeps next, and a callback URL is told with its state."""
    app = make_app(WECHAT_QR_CALLBACK_URL="https://biz.example.com/done",
                   WECHAT_QR_ID_TOKEN_SECRET="s" * 40)
    client = app.test_client()
    wechat_api.token()
    wechat_api.userinfo()
    receiver = _raise_in("login_succeeded", LoginCancelled())
    with signals.login_succeeded.connected_to(receiver, sender=app):
        resp = finish_login(client, start_login(client, state="biz-1", nonce="n-1"))
    body = resp.get_data(as_text=True)
    assert 'name="error" value="access_denied"' in body
    assert 'name="state" value="biz-1"' in body
    assert logged_in_user_id(client) is not None  # the login itself stands


#: Rows written by the previous version (before the flow moved out of the views), verbatim.
OLD_ROWS = {
    '{"user_id": "7", "next": "/account", "at": 1700000000.5, "auth_time": 1700000000.1, '
    '"delivery": {"state": "b", "nonce": "n"}}':
        Ending(user_id="7", next_url="/account", at=1700000000.5, auth_time=1700000000.1,
               business={"state": "b", "nonce": "n"}),
    '{"user_id": "7", "next": "/", "at": 1700000000.5, "auth_time": 1700000000.1, '
    '"delivery": {}}':
        Ending(user_id="7", next_url="/", at=1700000000.5, auth_time=1700000000.1,
               business={}),
    '{"user_id": "7", "next": "/account"}': Ending(user_id="7", next_url="/account"),
    '{"bind": "Xy-_1", "at": 1700000000.5, "delivery": {}}':
        Ending(binding_id="Xy-_1", at=1700000000.5, business={}),
    '{"error": "LoginCancelled", "at": 1700000000.5}':
        Ending(error="LoginCancelled", at=1700000000.5),
    '{"error": true, "at": 1700000000.5}': Ending(error="True", at=1700000000.5),
}


@pytest.mark.parametrize("row", sorted(OLD_ROWS))
def test_rows_of_the_previous_version_are_read_as_they_were_meant(row: str) -> None:
    assert Ending.from_json(row) == OLD_ROWS[row]


@pytest.mark.parametrize("row", sorted(OLD_ROWS))
def test_rows_written_now_have_the_previous_versions_keys_and_values(row: str) -> None:
    """Written again, an ending has the same keys and values as before (the previous version
    reads them during a rolling deploy); only ``true`` for a bug is now its text."""
    old = json.loads(row)
    new = json.loads(OLD_ROWS[row].to_json())
    if old.get("error") is True:
        old["error"] = "True"
    assert new == old
