"""The site's own forms use the extension's CSRF token (one per session, or Flask-WTF's when
``CSRFProtect`` is on): every form of the site posts a hidden ``csrf_token`` field, and a
POST to the site's blueprint without it is refused. The session is renewed at login, which
also gives the new session a new token.

The CSRF helpers need no ``init_app``, so this works when WeChat login is turned off too.
"""

from __future__ import annotations

from flask import abort, request

from flask_wechat_qr import LoginError, check_csrf, csrf_token

from .i18n import gettext as _

__all__ = ["csrf_token", "protect"]

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: The form field the extension's own forms use too.
FIELD = "csrf_token"


def protect() -> None:
    """Refuse a state-changing request that does not carry the session's token."""
    if request.method not in UNSAFE_METHODS:
        return
    try:
        check_csrf(request.form.get(FIELD))
    except LoginError:
        abort(400, description=_("The form expired or did not come from this site. "
                                 "Reload the page and try again."))
