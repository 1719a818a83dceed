"""CSRF tokens for the extension's own forms (bind, unlink).

Field name ``csrf_token``. When the host uses Flask-WTF's ``CSRFProtect`` its check runs on
every POST and would refuse any other token in that field, so its tokens are used;
otherwise a random token kept in the session.
"""

from __future__ import annotations

import hmac
import secrets

from flask import current_app, session

from .errors import InvalidRequest
from .i18n import lazy_gettext

FIELD = "csrf_token"
SESSION_KEY = "_wechat_qr_csrf"


def _flask_wtf_active() -> bool:
    return "csrf" in current_app.extensions


def csrf_token() -> str:
    """The token to put in a form's ``csrf_token`` field."""
    if _flask_wtf_active():
        from flask_wtf.csrf import generate_csrf

        return str(generate_csrf())
    token = session.get(SESSION_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[SESSION_KEY] = token
    return token


def check_csrf(value: str | None) -> None:
    """:class:`InvalidRequest` unless ``value`` is this session's token."""
    if _flask_wtf_active():
        from flask_wtf.csrf import ValidationError, validate_csrf

        try:
            validate_csrf(value)
        except ValidationError:
            raise InvalidRequest(_EXPIRED) from None
        return
    expected = session.get(SESSION_KEY)
    if not isinstance(expected, str) or not isinstance(value, str) or not hmac.compare_digest(
        expected.encode(), value.encode()
    ):
        raise InvalidRequest(_EXPIRED)


_EXPIRED = lazy_gettext(
    "The form expired or came from another site. Go back, reload the page and try again.")
