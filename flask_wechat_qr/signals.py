"""Blinker signals, sent with the application as sender.

Connect with ``signal.connect_via(app)`` or ``signal.connect``. A receiver of
:data:`login_succeeded` may return a response; the callback then returns it instead of
redirecting (as Flask-Dance's ``oauth_authorized`` does). So may one of
:data:`login_failed`, instead of the error page. A receiver may be a coroutine function
(``async def``), as Flask's own signals' may: :func:`send` runs it through the app's
``ensure_sync`` (Flask's ``async`` extra).
"""

from __future__ import annotations

import importlib
import logging
import typing as t
from inspect import iscoroutinefunction

from blinker import Namespace
from flask import Flask, current_app

if t.TYPE_CHECKING:
    from blinker import NamedSignal
    from werkzeug.local import LocalProxy

log = logging.getLogger("flask_wechat_qr")
_signals = Namespace()


def sender() -> Flask:
    """The current app itself, not the ``current_app`` proxy: what every signal is sent
    with (and what a receiver's ``connect_via(app)`` compares)."""
    # Flask types current_app as the app; it is the proxy in front of it.
    return t.cast("LocalProxy[Flask]", current_app)._get_current_object()


def send(signal: NamedSignal, passable: t.Callable[[Exception], bool] | None = None,
         **kwargs: t.Any) -> list[tuple[t.Callable[..., t.Any], t.Any]]:
    """Send ``signal`` from the current app as Flask sends its own: an ``async def``
    receiver runs through ``app.ensure_sync`` (Blinker alone refuses it, "Cannot send to a
    coroutine function", a 500 after the login was committed); each receiver's result. A
    receiver that raises an error ``passable`` accepts is passed by (said in the log) and
    the others still run, their results kept (a single-page app's route among them)."""
    app = sender()
    results = []
    for receiver in signal.receivers_for(app):
        try:
            results.append((receiver, app.ensure_sync(receiver)(app, **kwargs)))
        except Exception as error:
            if passable is None or not passable(error):
                raise
            log.warning("a %s receiver %s could not run (%s); the others still run",
                        signal.name, getattr(receiver, "__qualname__", receiver),
                        type(error).__name__)
    return results


def unrunnable_async_receivers(app: Flask) -> list[str]:
    """The names of the extension's signals with an ``async def`` receiver for ``app`` that
    ``app`` cannot run: Flask's ``async`` extra (asgiref) is not installed, and the app runs
    coroutines Flask's own way (its ``ensure_sync`` and ``async_to_sync`` not overridden).
    Sending such a signal raises ("Install Flask with the 'async' extra"), after the login
    it tells of was committed (``flask wechat-qr check`` says so first)."""
    if (type(app).ensure_sync is not Flask.ensure_sync
            or type(app).async_to_sync is not Flask.async_to_sync):
        return []
    try:
        importlib.import_module("asgiref.sync")
    except ImportError:
        return [name for name, signal in sorted(_signals.items())
                if any(map(iscoroutinefunction, signal.receivers_for(app)))]
    return []


#: A WeChat login finished and the user is logged in.
#: kwargs: ``user``, ``identity``, ``connection`` (settings), ``created_user`` (bool),
#: ``new_identity`` (bool), ``next_url``.
login_succeeded = _signals.signal("wechat-qr-login-succeeded")

#: A WeChat login, or a link or unlink, ended with an error page (or the response a
#: receiver returned).
#: kwargs: ``error`` (a :class:`~flask_wechat_qr.errors.LoginError`), ``connection``
#: (settings, or ``None`` for an unknown connection), ``next_url`` (the login's ``next``,
#: or ``None``).
login_failed = _signals.signal("wechat-qr-login-failed")

#: A local user was created from a first WeChat login (already committed).
#: kwargs: ``user``, ``identity``, ``connection``.
user_created = _signals.signal("wechat-qr-user-created")

#: A WeChat account was linked to a local user (committed).
#: kwargs: ``user``, ``identity``, ``connection``, ``via``: ``"signup"`` (with a new user),
#: ``"match"`` (field matching), ``"binding"`` (ask binding, password proven), ``"link"``
#: (from a logged-in session) or ``"unionid"`` (the same person's identity of the
#: connection's other app: a QR login joining an in-WeChat one, or the reverse).
identity_linked = _signals.signal("wechat-qr-identity-linked")

#: A WeChat account was unlinked from the logged-in user (committed); sent once for each
#: of the connection's apps the account had an identity of.
#: kwargs: ``user``, ``identity`` (deleted row), ``connection``.
identity_unlinked = _signals.signal("wechat-qr-identity-unlinked")

#: Login-only mode refused a WeChat account that no local user owns (no user or identity
#: written; once per login).
#: kwargs: ``connection``, ``openid``.
login_refused = _signals.signal("wechat-qr-login-refused")

#: A "bind to my existing account" attempt failed.
#: kwargs: ``connection``, ``reason`` (``"wrong_credentials"``, ``"already_linked"``: the
#: account has a WeChat for this connection, or ``"linked_elsewhere"``: this WeChat was
#: linked to another account meanwhile),
#: ``address`` (the client address), ``username`` (the username typed, at most 200
#: characters: a site can warn that account's owner of guesses at its password).
binding_failed = _signals.signal("wechat-qr-binding-failed")

#: A returning person's WeChat profile was read again off the login's path and stored on
#: their identity (committed; see :mod:`flask_wechat_qr.refresh`). Sent from a background
#: thread, in an app context without a request. A host that keeps its own copy of the
#: nickname or avatar on its users updates it here (``profile.real_nickname`` and
#: ``profile.real_avatar_url`` are ``None`` for WeChat's placeholders;
#: ``identity.avatar_url`` is this site's stored copy where avatars are stored).
#: kwargs: ``user`` (``None`` if it is gone), ``identity``, ``profile``
#: (:class:`~flask_wechat_qr.client.WeChatProfile`), ``connection``.
profile_refreshed = _signals.signal("wechat-qr-profile-refreshed")

#: An ID token was issued for a connection's business callback URL (about to be posted).
#: kwargs: ``user``, ``connection``, ``claims`` (the token's claims, for audit logs).
id_token_issued = _signals.signal("wechat-qr-id-token-issued")
