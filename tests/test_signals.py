"""Blinker signals: sent with the app as sender, with the documented keyword arguments."""

from __future__ import annotations

import typing as t

import sqlalchemy as sa
from flask import Response, redirect
from support import (
    OPENID,
    TOKEN_PATH,
    UNIONID,
    all_users,
    finish_login,
    in_a_worker_thread,
    logged_in_user_id,
    login_with_wechat,
    start_login,
)

from flask_wechat_qr import signals
from flask_wechat_qr.errors import InvalidCode, LoginCancelled, StateError, UnknownConnection


class Recorder:
    """A receiver that remembers every call."""

    def __init__(self, result: t.Any = None) -> None:
        self.calls: list[tuple[t.Any, dict[str, t.Any]]] = []
        #: the keyword arguments each call was sent with
        self.keys: list[set[str]] = []
        self.result = result

    def __call__(self, sender: t.Any, **kwargs: t.Any) -> t.Any:
        self.keys.append(set(kwargs))
        # The rows are read while the request is alive (they detach when it ends).
        for name in ("user", "identity"):
            if kwargs.get(name) is not None:
                kwargs[name + "_seen"] = _columns(kwargs[name])
        self.calls.append((sender, kwargs))
        return self.result


def _columns(row: t.Any) -> dict[str, t.Any]:
    return {column.key: getattr(row, column.key) for column in sa.inspect(row).mapper.columns}


def test_login_succeeded_on_first_and_later_logins(app: t.Any, client: t.Any,
                                                   wechat_api: t.Any) -> None:
    succeeded = Recorder()
    failed = Recorder()
    with signals.login_succeeded.connected_to(succeeded, sender=app), \
            signals.login_failed.connected_to(failed, sender=app):
        login_with_wechat(client, wechat_api, next="/account")
        login_with_wechat(client, wechat_api)

    assert failed.calls == []
    assert len(succeeded.calls) == 2
    user = all_users(app)[0]

    sender, first = succeeded.calls[0]
    assert sender is app
    assert succeeded.keys == [{"user", "identity", "connection", "created_user",
                               "new_identity", "next_url"}] * 2
    assert first["user_seen"]["id"] == user.id
    assert first["identity_seen"]["openid"] == OPENID
    assert first["identity_seen"]["unionid"] == UNIONID
    assert first["identity_seen"]["user_id"] == str(user.id)
    assert first["connection"].identifier == "wechat"
    assert first["created_user"] is True
    assert first["new_identity"] is True
    assert first["next_url"] == "/account"

    sender, second = succeeded.calls[1]
    assert sender is app
    assert second["user_seen"]["id"] == user.id
    assert second["created_user"] is False
    assert second["new_identity"] is False
    assert second["next_url"] == "/"


def test_login_succeeded_sees_the_user_logged_in(app: t.Any, client: t.Any,
                                                 wechat_api: t.Any) -> None:
    seen = []

    def receiver(sender: t.Any, **kwargs: t.Any) -> None:
        from flask_login import current_user

        seen.append(current_user.get_id())

    with signals.login_succeeded.connected_to(receiver, sender=app):
        login_with_wechat(client, wechat_api)
    assert seen == [str(all_users(app)[0].id)]


def test_user_created_only_on_creation_and_after_commit(app: t.Any, client: t.Any,
                                                        wechat_api: t.Any) -> None:
    created = Recorder()
    committed_users = []

    def check_committed(sender: t.Any, **kwargs: t.Any) -> None:
        # Seen from another connection: the user and identity are already committed.
        with app.db.engine.connect() as conn:
            committed_users.append(conn.execute(
                sa.select(sa.func.count()).select_from(app.User.__table__)).scalar())

    with signals.user_created.connected_to(created, sender=app), \
            signals.user_created.connected_to(check_committed, sender=app):
        login_with_wechat(client, wechat_api)
        login_with_wechat(client, wechat_api)
        login_with_wechat(app.test_client(), wechat_api)

    assert len(created.calls) == 1
    sender, kwargs = created.calls[0]
    assert sender is app
    assert created.keys == [{"user", "identity", "connection"}]
    assert kwargs["user_seen"]["id"] == all_users(app)[0].id
    assert kwargs["identity_seen"]["openid"] == OPENID
    assert kwargs["connection"].identifier == "wechat"
    assert committed_users == [1]


def test_no_user_created_signal_when_the_login_fails(app: t.Any, client: t.Any,
                                                     wechat_api: t.Any) -> None:
    created = Recorder()
    succeeded = Recorder()
    with signals.user_created.connected_to(created, sender=app), \
            signals.login_succeeded.connected_to(succeeded, sender=app):
        state = start_login(client)
        wechat_api.error(TOKEN_PATH, 40029, "invalid code")
        assert finish_login(client, state).status_code == 400
    assert created.calls == []
    assert succeeded.calls == []


def test_login_failed_carries_the_error_and_connection(app: t.Any, client: t.Any,
                                                       wechat_api: t.Any) -> None:
    failed = Recorder()
    with signals.login_failed.connected_to(failed, sender=app):
        state = start_login(client)
        wechat_api.error(TOKEN_PATH, 40029, "invalid code")
        finish_login(client, state)                                          # WeChat error
        finish_login(client, "forged0000000000000000000000000")               # bad state
        state = start_login(client)
        client.get("/auth/wechat/callback", query_string={"state": state})    # denied
        client.get("/auth/weibo/login")                                       # unknown

    assert [sender for sender, _ in failed.calls] == [app] * 4
    errors = [kwargs["error"] for _, kwargs in failed.calls]
    assert isinstance(errors[0], InvalidCode)
    assert errors[0].errcode == 40029
    assert isinstance(errors[1], StateError)
    assert isinstance(errors[2], LoginCancelled)
    assert isinstance(errors[3], UnknownConnection)
    connections = [kwargs["connection"] for _, kwargs in failed.calls]
    assert [c.identifier for c in connections[:3]] == ["wechat"] * 3
    assert connections[3] is None
    assert failed.keys == [{"error", "connection", "next_url"}] * 4
    assert [kwargs["next_url"] for _, kwargs in failed.calls] == [None] * 4


def test_a_link_refused_before_it_began_still_gives_its_next(app: t.Any, client: t.Any) -> None:
    """Linking while logged out is refused before the login keeps anything: receivers were
    given ``next_url=None``, and a single-page app's route lost where to go back to."""
    failed = Recorder()
    with signals.login_failed.connected_to(failed, sender=app):
        client.get("/auth/wechat/link", query_string={"next": "/app/profile"})
        client.get("/auth/wechat/link", query_string={"next": "https://evil.example/"})
        # Anyone can add a next to a callback's URL: not the person's way back.
        client.get("/auth/wechat/callback", query_string={"state": "s", "next": "/x"})
    assert [kwargs["next_url"] for _, kwargs in failed.calls] == ["/app/profile", None, None]


def test_a_login_failed_receiver_response_replaces_the_error_page(
        app: t.Any, client: t.Any, wechat_api: t.Any) -> None:
    """A single-page app shows a failed login on its own route: the response a receiver
    returns (the first) is sent instead of the error page, given the login's ``next``.
    Before: the return value was ignored, and the login always ended on the extension's
    page (a cancel on the phone never reached the SPA)."""
    def to_the_spa(sender: t.Any, error: t.Any, next_url: str | None = None,
                   **extra: t.Any) -> Response | None:
        if isinstance(error, LoginCancelled):
            return redirect(f"/app/login?wechat_error=cancelled&next={next_url}")
        return None

    with signals.login_failed.connected_to(to_the_spa, sender=app):
        state = start_login(client, next="/app/profile")
        cancelled = client.get("/auth/wechat/callback", query_string={"state": state})
        forged = finish_login(client, "forged0000000000000000000000000")
    assert cancelled.status_code == 302
    assert cancelled.headers["Location"] == "/app/login?wechat_error=cancelled&next=/app/profile"
    assert cancelled.headers["Cache-Control"] == "no-store"
    assert forged.status_code == 400 and "<h1" in forged.get_data(as_text=True)


def test_async_receivers_run_as_with_flasks_own_signals(app: t.Any, client: t.Any,
                                                        wechat_api: t.Any) -> None:
    """An async site's receivers (``async def``, Flask's ``async`` extra) run, and their
    responses count, as Flask runs its own signals' (``ensure_sync``). Before, Blinker
    refused them ("Cannot send to a coroutine function"): every first login of such a site
    was a 500 once the user was committed, every other login too with ``login_succeeded``."""
    seen: list[str] = []

    async def created(sender: t.Any, user: t.Any, **extra: t.Any) -> None:
        seen.append(f"created {user.id}")

    async def welcome(sender: t.Any, created_user: bool, **extra: t.Any) -> Response | None:
        seen.append("succeeded")
        return redirect("/welcome") if created_user else None

    async def to_the_spa(sender: t.Any, error: t.Any, **extra: t.Any) -> Response:
        seen.append(type(error).__name__)
        return redirect("/app/login?wechat_error=1")

    def logins() -> tuple[t.Any, t.Any, t.Any]:
        first = login_with_wechat(client, wechat_api, next="/account")
        second = login_with_wechat(client, wechat_api, next="/account")
        state = start_login(client)
        return first, second, client.get("/auth/wechat/callback",
                                         query_string={"state": state})

    with signals.user_created.connected_to(created, sender=app), \
            signals.login_succeeded.connected_to(welcome, sender=app), \
            signals.login_failed.connected_to(to_the_spa, sender=app):
        first, second, cancelled = in_a_worker_thread(logins)
    assert (first.status_code, first.headers["Location"]) == (302, "/welcome")
    assert (second.status_code, second.headers["Location"]) == (302, "/account")
    assert cancelled.headers["Location"] == "/app/login?wechat_error=1"
    assert seen == [f"created {all_users(app)[0].id}", "succeeded", "succeeded",
                    "LoginCancelled"]


def test_signals_are_scoped_to_their_app(make_app: t.Any, wechat_api: t.Any) -> None:
    app = make_app()
    other_app = make_app()
    succeeded = Recorder()
    failed = Recorder()
    with signals.login_succeeded.connected_to(succeeded, sender=other_app), \
            signals.login_failed.connected_to(failed, sender=other_app):
        client = app.test_client()
        login_with_wechat(client, wechat_api)
        finish_login(client, "forged0000000000000000000000000")
    assert succeeded.calls == []
    assert failed.calls == []


def test_a_receiver_response_replaces_the_redirect(app: t.Any, client: t.Any,
                                                   wechat_api: t.Any) -> None:
    def welcome(sender: t.Any, **kwargs: t.Any) -> Response:
        if kwargs["created_user"]:
            return redirect("/welcome")
        return Response("hello again", status=200)

    with signals.login_succeeded.connected_to(welcome, sender=app):
        first = login_with_wechat(client, wechat_api, next="/account")
        second = login_with_wechat(client, wechat_api, next="/account")
    assert first.status_code == 302
    assert first.headers["Location"] == "/welcome"
    assert second.status_code == 200
    assert second.get_data(as_text=True) == "hello again"
    assert second.headers["Cache-Control"] == "no-store"
    assert logged_in_user_id(client) == str(all_users(app)[0].id)


def test_both_signals_take_any_werkzeug_response(app: t.Any, client: t.Any,
                                                 wechat_api: t.Any) -> None:
    """``werkzeug.utils.redirect`` gives a Werkzeug response, not Flask's: before, a
    ``login_succeeded`` receiver's was silently dropped while ``login_failed``'s was sent."""
    from werkzeug.utils import redirect as werkzeug_redirect

    def welcome(sender: t.Any, **kwargs: t.Any) -> t.Any:
        return werkzeug_redirect("/welcome")

    def to_the_spa(sender: t.Any, **kwargs: t.Any) -> t.Any:
        return werkzeug_redirect("/app/login?wechat_error=cancelled")

    with signals.login_succeeded.connected_to(welcome, sender=app), \
            signals.login_failed.connected_to(to_the_spa, sender=app):
        succeeded = login_with_wechat(client, wechat_api, next="/account")
        state = start_login(client)
        cancelled = client.get("/auth/wechat/callback", query_string={"state": state})
    assert (succeeded.status_code, succeeded.headers["Location"]) == (302, "/welcome")
    assert cancelled.headers["Location"] == "/app/login?wechat_error=cancelled"


def test_a_receiver_returning_something_else_is_ignored(app: t.Any, client: t.Any,
                                                        wechat_api: t.Any) -> None:
    with signals.login_succeeded.connected_to(Recorder(result="not a response"), sender=app):
        resp = login_with_wechat(client, wechat_api, next="/account")
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/account"


def first_login_whose_login_user_fails(app: t.Any, wechat_api: t.Any) -> None:
    """A first login in ``app`` whose site ``login_user`` raises (not a login error): the
    error comes up (TESTING: raised, not a 500 page)."""
    import pytest

    from flask_wechat_qr.runtime import runtime_of

    adapter = runtime_of(app).adapter

    def failing_login_user(user: t.Any) -> None:
        raise RuntimeError("the site's hook failed")

    adapter.login_user = failing_login_user  # type: ignore[method-assign]
    try:
        with pytest.raises(RuntimeError, match="the site's hook failed"):
            login_with_wechat(app.test_client(), wechat_api)
    finally:
        del adapter.login_user  # type: ignore[method-assign]


def test_a_first_login_whose_login_user_hook_fails_still_tells_of_what_it_made(
        make_app: t.Any, wechat_api: t.Any) -> None:
    """The site's ``login_user`` raising (not a login error: its 500) after the login
    committed its new user and identity: ``user_created`` and ``identity_linked`` were
    never sent, and the next login, a returning one, never sends them (a helper's hunt,
    session 34). They are sent, then the error goes on as it was."""
    app = make_app()
    created, linked = Recorder(), Recorder()
    signals.user_created.connect(created, app)
    signals.identity_linked.connect(linked, app)
    first_login_whose_login_user_fails(app, wechat_api)
    (user,) = all_users(app)
    assert [kw["user_seen"]["id"] for _s, kw in created.calls] == [user.id]
    assert [kw["via"] for _s, kw in linked.calls] == ["signup"]


def test_a_receiver_failing_after_the_sites_login_user_did_leaves_the_sites_error(
        make_app: t.Any, wechat_api: t.Any, caplog: t.Any) -> None:
    """Where the site's hook failed and a ``user_created`` receiver fails too, the site's
    error is the one raised (the receiver's is logged): a review, session 34."""
    import logging

    app = make_app()

    def failing_receiver(sender: t.Any, **kwargs: t.Any) -> None:
        raise ValueError("the receiver failed too")

    signals.user_created.connect(failing_receiver, app)
    with caplog.at_level(logging.ERROR, logger="flask_wechat_qr"):
        first_login_whose_login_user_fails(app, wechat_api)
    assert any("receiver failed" in r.getMessage() and r.exc_info for r in caplog.records)
