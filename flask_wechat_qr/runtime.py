"""The per-app runtime: what one Flask app's WeChat login needs at request time.

``init_app`` builds one :class:`Runtime` per app and keeps it in
``app.extensions["wechat_qr"]``; everything below the extension object reads it through
:func:`current_runtime`, so nothing needs to import the extension itself.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from flask import Flask

from .context import this_app
from .errors import UnknownConnection

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

    from .adapter import AccountAdapter
    from .association import AssociationPolicy
    from .avatars import AvatarKeeper
    from .binding import PendingBindings
    from .client import OfficialAccountClient, WeChatClient
    from .flow import LoginFlow
    from .id_token import IdTokenSigner
    from .login_state import LoginStates
    from .models import Models
    from .protocols import User
    from .refresh import ProfileRefresher
    from .settings import ConnectionSettings, Settings
    from .user_key import SqliteTriggerCheck

#: Where the runtime lives in ``app.extensions``.
EXTENSION_KEY = "wechat_qr"


@dataclass(frozen=True)
class Runtime:
    """Everything one app needs at request time, built once by ``init_app``."""

    settings: Settings
    db: SQLAlchemy
    models: Models
    adapter: AccountAdapter[User]
    policy: AssociationPolicy
    bindings: PendingBindings
    #: finishes logins: the callback, the bind page, unlinking
    flow: LoginFlow
    #: each connection's protocol client, by identifier
    clients: dict[str, WeChatClient]
    #: the Official Account's client of each connection that has one, by identifier
    official_accounts: dict[str, OfficialAccountClient]
    #: each connection's login states (session + table), by identifier
    login_states: dict[str, LoginStates]
    #: the SQLite user trigger's check at the app's first request (views.before_login_request)
    sqlite_trigger: SqliteTriggerCheck
    #: signs the ID tokens for business callback URLs (``None``: no key configured)
    id_tokens: IdTokenSigner | None = None
    #: stores and serves avatars (``WECHAT_QR_STORE_AVATARS``)
    avatars: AvatarKeeper | None = None
    #: refreshes returning people's stale profiles in the background
    #: (``WECHAT_QR_PROFILE_REFRESH_AFTER``)
    refresher: ProfileRefresher | None = None
    #: why logins are off (said in the log at start-up), or ``None`` when they are on
    unavailable: str | None = None

    def connection(self, identifier: str) -> ConnectionSettings:
        """A connection's settings; :class:`UnknownConnection` (a 404 page) if none."""
        return self.client(identifier).connection

    def client(self, identifier: str) -> WeChatClient:
        """A connection's client; :class:`UnknownConnection` (a 404 page) if none."""
        try:
            return self.clients[identifier]
        except KeyError:
            raise UnknownConnection() from None


def current_runtime() -> Runtime:
    """The runtime of the current app (``RuntimeError`` outside an app context, as
    ``current_app``; ``KeyError`` if ``init_app`` was not called on it)."""
    # runtime_of's look-up written out: every request of the blueprint asks, several times.
    return t.cast(Runtime, this_app().extensions[EXTENSION_KEY])


def runtime_of(app: Flask) -> Runtime:
    """The runtime ``init_app`` built for ``app``."""
    return t.cast(Runtime, app.extensions[EXTENSION_KEY])


def find_runtime(app: Flask) -> Runtime | None:
    """The runtime of ``app``, or ``None`` if WeChat login is not set up on it."""
    return t.cast("Runtime | None", app.extensions.get(EXTENSION_KEY))
