"""CSRF (csrf.py): the extension's own forms (unlink, the bind page) need the session's
token, refuse another session's, and work beside Flask-WTF's CSRFProtect."""

from __future__ import annotations

import typing as t

import pytest
from support import (
    OPENID,
    add_user,
    all_identities,
    all_users,
    arrive,
    ask_app,
    attempt_rows,
    bind_as,
    bind_page,
    csrf_token_of,
    error_name,
    host_app,
    identity_links,
    link_identity,
    log_in,
    logged_in_user_id,
    pending_rows,
    recording,
    submit,
)

# --- unlink -------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "forged-token-forged-token-forged-token"])
def test_unlink_needs_the_csrf_token(make_app: t.Any, token: str | None) -> None:
    app = host_app(make_app)
    alice = add_user(app, username="alice", password="pw")
    link_identity(app, alice)
    client = app.test_client()
    log_in(client, alice)
    csrf_token_of(client)  # the session has a token; the request does not carry it
    data = {} if token is None else {"csrf_token": token}
    with recording(app, "identity_unlinked") as events:
        resp = client.post("/auth/wechat/unlink", data=data)
    assert resp.status_code == 400
    assert error_name(resp) == "InvalidRequest"
    assert events == []
    assert identity_links(app) == [("wechat", OPENID, str(alice))]


def test_unlink_with_a_token_of_another_session_is_refused(make_app: t.Any) -> None:
    app = host_app(make_app)
    alice = add_user(app, username="alice", password="pw")
    link_identity(app, alice)
    attacker = app.test_client()
    client = app.test_client()
    log_in(client, alice)
    csrf_token_of(client)
    resp = client.post("/auth/wechat/unlink", data={"csrf_token": csrf_token_of(attacker)})
    assert resp.status_code == 400
    assert identity_links(app) == [("wechat", OPENID, str(alice))]


def test_unlink_works_with_flask_wtf_csrf_protect(make_app: t.Any) -> None:
    from flask_wtf.csrf import CSRFProtect

    app = host_app(make_app)
    CSRFProtect(app)
    alice = add_user(app, username="alice", password="pw")
    link_identity(app, alice)
    client = app.test_client()
    log_in(client, alice)
    token = csrf_token_of(client)
    assert client.post("/auth/wechat/unlink", data={}).status_code == 400
    assert len(all_identities(app)) == 1
    assert client.post("/auth/wechat/unlink", data={"csrf_token": token}).status_code == 302
    assert all_identities(app) == []


# --- the bind page ------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["create", "bind"])
@pytest.mark.parametrize("token", [None, "", "forged-token-forged-token-forged-token"])
def test_csrf_token_is_required(make_app: t.Any, wechat_api: t.Any, action: str,
                                token: str | None) -> None:
    app = ask_app(make_app)
    add_user(app, username="alice", password="alice-pw")
    client = app.test_client()
    arrive(client, wechat_api)
    _html, good_token = bind_page(client)
    resp = submit(client, token, action=action, username="alice", password="alice-pw")
    assert resp.status_code == 400
    assert error_name(resp) == "InvalidRequest"
    assert "form expired" in resp.get_data(as_text=True)
    assert all_identities(app) == []
    assert len(all_users(app)) == 1
    assert attempt_rows(app) == []
    assert [p.used for p in pending_rows(app)] == [False]
    assert logged_in_user_id(client) is None
    # The honest form still works.
    assert submit(client, good_token, action=action, username="alice",
                  password="alice-pw").status_code == 302


def test_csrf_token_of_another_session_is_refused(make_app: t.Any, wechat_api: t.Any) -> None:
    app = ask_app(make_app)
    attacker = app.test_client()
    attackers_token = attacker.get("/token").get_data(as_text=True)
    client = app.test_client()
    arrive(client, wechat_api)
    bind_page(client)
    resp = submit(client, attackers_token, action="create")
    assert resp.status_code == 400
    assert all_users(app) == []


def test_bind_works_with_flask_wtf_csrf_protect(make_app: t.Any, wechat_api: t.Any) -> None:
    """A host with Flask-WTF's CSRFProtect checks every POST itself: the bind form must
    carry a token that check accepts, and a missing one is still refused."""
    from flask_wtf.csrf import CSRFProtect

    app = ask_app(make_app)
    CSRFProtect(app)
    alice = add_user(app, username="alice", password="alice-pw")
    client = app.test_client()
    arrive(client, wechat_api)
    _html, token = bind_page(client)
    assert submit(client, None, action="bind", username="alice",
                  password="alice-pw").status_code == 400
    assert submit(client, "forged", action="create").status_code == 400
    assert all_identities(app) == []
    resp = bind_as(client, token, "alice", "alice-pw")
    assert resp.status_code == 302
    assert [i.user_id for i in all_identities(app)] == [str(alice)]
