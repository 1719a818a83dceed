"""A callback the browser sent without its session cookie, which ``SameSite`` withheld.

WeChat's redirect back to the callback is a navigation from another site: a browser sends
no ``SameSite=Strict`` cookie with it, and the login's state lives in the session cookie.
Nor, in Chromium, a ``Lax`` one (or one without the attribute, Lax by default) when WeChat's
QR frame sends its own frame back (``WECHAT_QR_QR_SELF_REDIRECT``): Lax lets a cookie
through another site's navigation of the whole page only. The callback then answers a page
that asks for the same callback again from this site (a navigation a page of the site
starts is same-site, so the cookie comes along), once. Nothing of the login is used before
that, and that page sets no session cookie: the session this request opened is an empty
stand-in, and saved it would replace the withheld cookie.
"""

from __future__ import annotations

import typing as t
from urllib.parse import urlencode

from flask import Request, Response, current_app, render_template, request, url_for

from .context import this_app, this_request
from .errors import InvalidRequest
from .urls import is_local_path

#: Added to the callback URL the page asks for again: it is never asked for a third time (a
#: browser that sends no cookie at all is then told the login failed).
RETURN_HOP_PARAM = "wechat_qr_hop"


def session_cookie_withheld() -> bool:
    """Whether the browser withheld the session cookie from this callback: a ``Strict``
    one from a navigation from another site (``Sec-Fetch-Site: cross-site``), and any
    session cookie missing from another site's navigation of a frame (``Sec-Fetch-Dest:
    iframe``: WeChat's QR frame sending itself back). A browser that sends no such headers
    (Safari before 16.4, WeChat's browser on older iPhones) withheld a Strict cookie where
    it sent no session cookie at all, though the login's start set one.

    The frame's cookie is known by its name: a browser that sent it (Firefox, Safari,
    ``SameSite=None``) is not asked twice. A cookie of the same name from a parent domain
    (another app's ``session`` on ``Domain=example.com``, ``SameSite=None``) passes for it,
    and that login ends as before; asking every frame again would cost the others a
    reload for that rare set-up."""
    asked = this_request()  # read several times: the object, not the proxy
    if RETURN_HOP_PARAM in asked.args:
        return False
    fetch_site = asked.headers.get("Sec-Fetch-Site")
    if fetch_site == "cross-site" and asked.headers.get("Sec-Fetch-Dest") == "iframe":
        return not _session_cookie_sent(asked)
    if str(current_app.config.get("SESSION_COOKIE_SAMESITE") or "").lower() != "strict":
        return False
    if fetch_site is not None:
        return fetch_site == "cross-site"
    return not _session_cookie_sent(asked)


def _session_cookie_sent(asked: Request) -> bool:
    app = this_app()
    return app.session_interface.get_cookie_name(app) in asked.cookies


def return_from_this_site(connection: str) -> Response:
    """The page that asks for this callback again from this site."""
    query = [*request.args.items(multi=True), (RETURN_HOP_PARAM, "1")]
    return_url = f"{url_for('wechat_qr.callback', connection=connection)}?{urlencode(query)}"
    if not is_local_path(return_url):  # a proxy's hostile X-Forwarded-Prefix
        raise InvalidRequest()
    return _WithoutSessionCookie(
        render_template("wechat_qr/same_site_return.html", return_url=return_url))


class _WithoutSessionCookie(Response):
    """A response no session interface can give a session cookie (nor delete one): hooks
    of the host may write to this request's stand-in session after the view, and every
    interface (Flask's, Flask-Session's) sets its cookie through the response."""

    def set_cookie(self, key: str, *args: t.Any, **kwargs: t.Any) -> None:
        if key != current_app.session_interface.get_cookie_name(current_app):
            super().set_cookie(key, *args, **kwargs)

    def delete_cookie(self, key: str, *args: t.Any, **kwargs: t.Any) -> None:
        if key != current_app.session_interface.get_cookie_name(current_app):
            super().delete_cookie(key, *args, **kwargs)
