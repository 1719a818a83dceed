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
