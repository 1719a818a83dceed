"""Where browsers send the site's session cookie, which carries each login's state from its
start to the callback: read as the session interface sets the cookie (its path and domain,
the domain as Werkzeug writes it), for the login's start and ``flask wechat-qr check``.
"""

from __future__ import annotations

import typing as t
from urllib.parse import urlsplit

if t.TYPE_CHECKING:
    from flask import Flask


class CookieScope(t.NamedTuple):
    """The session cookie's ``Path``, and its ``Domain`` (``None``: the one host that set
    it)."""

    path: str
    domain: str | None


def cookie_scope(app: Flask) -> CookieScope:
    """The app's session cookie's scope, as its session interface gives it (a site's own
    interface may answer otherwise than the config)."""
    interface = app.session_interface
    domain = interface.get_cookie_domain(app)
    return CookieScope(interface.get_cookie_path(app) or "/",
                       as_written(domain) if isinstance(domain, str) and domain else None)


def as_written(domain: str) -> str:
    """A cookie domain as Werkzeug writes it: no port, no leading dot, IDNA, lower-case."""
    domain = domain.partition(":")[0].lstrip(".")
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return domain.lower()


def misses_callback(scope: CookieScope, callback: str) -> str | None:
    """Why the browser would not send a cookie of ``scope`` to the callback URL
    ``callback`` (or its path alone), or ``None``: a path above which it is not, or a
    domain it is not in. Every login would end on "This login link is no longer valid".
    Flask's defaults (every path of the host that set it) need no look at the URL."""
    if scope.path == "/" and scope.domain is None:
        return None
    parts = urlsplit(callback)
    path = parts.path or "/"
    if not (scope.path == "/" or path == scope.path
            or path.startswith(scope.path.rstrip("/") + "/")):
        return (f"the session cookie's path {scope.path!r} (SESSION_COOKIE_PATH or "
                f"APPLICATION_ROOT) does not include the callback {path!r}")
    host = parts.hostname
    if scope.domain and host:
        host = as_written(host)
        if not (host == scope.domain or host.endswith("." + scope.domain)):
            return (f"the session cookie's domain {scope.domain!r} (SESSION_COOKIE_DOMAIN) "
                    f"does not include the callback's host {host!r}")
    return None
