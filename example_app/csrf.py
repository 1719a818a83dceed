"""A small per-session CSRF token for the site's own forms (no Flask-WTF needed).

Every form of the site posts a hidden ``csrf_token`` field; a POST to the site's blueprint
without the session's token is refused. The session is renewed at login, which also gives
the new session a new token.
"""

from __future__ import annotations

import hmac
import secrets

from flask import abort, request, session

SESSION_KEY = "_example_csrf_token"
FIELD = "csrf_token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def csrf_token() -> str:
    """The session's token, created on first use (templates call it in every form)."""
    token = session.get(SESSION_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session[SESSION_KEY] = token
    return token


def protect() -> None:
    """Refuse a state-changing request that does not carry the session's token."""
    if request.method not in UNSAFE_METHODS:
        return
    expected = session.get(SESSION_KEY)
    given = request.form.get(FIELD, "")
    if not isinstance(expected, str) or not expected or not hmac.compare_digest(
        expected.encode(), given.encode()
    ):
        abort(400, description="The form expired or did not come from this site. "
                               "Reload the page and try again.")
