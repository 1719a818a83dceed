"""Blinker signals, sent with the application as sender.

Connect with ``signal.connect_via(app)`` or ``signal.connect``. A receiver of
:data:`login_succeeded` may return a response; the callback then returns it instead of
redirecting (as Flask-Dance's ``oauth_authorized`` does).
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: A WeChat login finished and the user is logged in.
#: kwargs: ``user``, ``identity``, ``connection`` (settings), ``created_user`` (bool),
#: ``new_identity`` (bool), ``next_url``.
login_succeeded = _signals.signal("wechat-qr-login-succeeded")

#: A WeChat login ended with an error page.
#: kwargs: ``error`` (a :class:`~flask_wechat_qr.errors.LoginError`), ``connection``
#: (settings, or ``None`` for an unknown connection).
login_failed = _signals.signal("wechat-qr-login-failed")

#: A local user was created from a first WeChat login (already committed).
#: kwargs: ``user``, ``identity``, ``connection``.
user_created = _signals.signal("wechat-qr-user-created")

#: A WeChat account was linked to a local user (committed).
#: kwargs: ``user``, ``identity``, ``connection``, ``via``: ``"signup"`` (with a new user),
#: ``"match"`` (field matching), ``"binding"`` (ask binding, password proven) or ``"link"``
#: (from a logged-in session).
identity_linked = _signals.signal("wechat-qr-identity-linked")

#: A WeChat account was unlinked from the logged-in user (committed).
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

#: An ID token was issued for a connection's business callback URL (about to be posted).
#: kwargs: ``user``, ``connection``, ``claims`` (the token's claims, for audit logs).
id_token_issued = _signals.signal("wechat-qr-id-token-issued")
