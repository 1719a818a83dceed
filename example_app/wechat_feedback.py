"""A message after every WeChat action (login, binding, link, unlink), flashed from the
extension's signals: the extension redirects on by itself, so the site says what happened.

The receivers are connected once, at import, for every app; they speak only for the
example site's apps (other apps in the same process, e.g. in tests, hear nothing).
"""

from __future__ import annotations

import typing as t

from flask import Flask, flash, g

from flask_wechat_qr import signals

from .i18n import connection_name
from .i18n import gettext as _

#: How the WeChat account of this login was linked, kept for the login's message.
_LINKED_VIA = "example_wechat_linked_via"
#: The connections whose WeChat this request unlinked, told once each.
_UNLINKED = "example_wechat_unlinked"


def _is_site(app: Flask) -> bool:
    return "example_app" in app.extensions


def _account(identity: t.Any, connection: t.Any) -> str:
    """"WeChat account “Zhang San”", in the page's language."""
    if identity is not None and identity.nickname:
        return _("%(wechat)s account “%(nickname)s”", wechat=connection_name(connection),
                 nickname=identity.nickname)
    return _("%(wechat)s account", wechat=connection_name(connection))


@signals.identity_linked.connect
def on_identity_linked(app: Flask, *, identity: t.Any, connection: t.Any, via: str,
                       **_extra: t.Any) -> None:
    """Linked from the account page: say so now. Any other link is part of a login, whose
    message (sent next) says it."""
    if not _is_site(app):
        return
    if via == "link":
        flash(_("%(account)s is now linked to your account. You can log in with it.",
                account=_account(identity, connection)))
    else:
        setattr(g, _LINKED_VIA, via)


@signals.login_succeeded.connect
def on_login_succeeded(app: Flask, *, user: t.Any, identity: t.Any, connection: t.Any,
                       created_user: bool, **_extra: t.Any) -> None:
    """One message per WeChat login: a new account, a newly bound one, or a login."""
    if not _is_site(app):
        return
    name = user.display_name
    if created_user:
        flash(_("Welcome, %(name)s! Your account was created with %(wechat)s.",
                name=name, wechat=connection_name(connection)))
    elif g.get(_LINKED_VIA) in ("binding", "match"):
        flash(_("%(account)s is now linked to your account. You are logged in as %(name)s.",
                account=_account(identity, connection), name=name))
    else:
        flash(_("Logged in with %(wechat)s as %(name)s.", wechat=connection_name(connection),
                name=name))


@signals.identity_unlinked.connect
def on_identity_unlinked(app: Flask, *, identity: t.Any, connection: t.Any,
                         **_extra: t.Any) -> None:
    """One message per unlinked WeChat: unlinking removes its identity of each app (the QR
    code's and the Official Account's), each signalled."""
    if not _is_site(app):
        return
    told = g.setdefault(_UNLINKED, set())
    if connection.identifier not in told:
        told.add(connection.identifier)
        flash(_("%(account)s is unlinked from your account.",
                account=_account(identity, connection)))
