"""What the package (and a host annotating its own code) may rely on of the host's users and
of the extension's rows.

The mapped classes are declared on the host's ``db`` at run time (:mod:`.models`), so a type
checker cannot see their columns: these protocols say what the rows hold. A user is the
host's own object, which only the account adapter looks inside. ``tests/test_typing.py``
holds the protocols to the tables.
"""

from __future__ import annotations

import typing as t
from datetime import datetime

__all__ = ["Identity", "PendingBinding", "User"]


class User(t.Protocol):
    """A user of the host site: any object. Only the
    :class:`~flask_wechat_qr.AccountAdapter` looks inside it (the default one through
    Flask-Login and the user model's columns); the rest of the extension hands it on."""


class Identity(t.Protocol):
    """A WeChat account (one ``openid`` of one app of one connection) linked to a user of
    the site: a row of ``wechat_qr_identity``."""

    id: int
    #: the connection's identifier
    connection: str
    #: the app the openid belongs to: ``"website"`` (QR login) or ``"official_account"``
    #: (logins inside WeChat)
    app: str
    openid: str
    unionid: str | None
    #: the user's id, as :meth:`~flask_wechat_qr.AccountAdapter.get_user_id` gives it
    user_id: str
    nickname: str | None
    avatar_url: str | None
    #: the WeChat profile as WeChat sent it, when it was last fetched
    profile: dict[str, t.Any] | None
    created_at: datetime
    last_login_at: datetime
    #: when the profile was last read from WeChat (``None``: not since the row's creation)
    profile_refreshed_at: datetime | None


class PendingBinding(t.Protocol):
    """A WeChat account waiting on the bind page for its owner's choice: a row of
    ``wechat_qr_pending_binding`` (its ``id`` lives only in the browser's session)."""

    id: str
    #: the connection's identifier
    connection: str
    #: the app the openid belongs to (as :attr:`Identity.app`)
    app: str
    openid: str
    unionid: str | None
    nickname: str | None
    avatar_url: str | None
    #: the WeChat profile as WeChat sent it
    profile: dict[str, t.Any] | None
    #: where the login goes on to (a local path)
    next_url: str | None
    #: Unix times
    created_at: float
    expires_at: float
    #: completed (single use)
    used: bool
