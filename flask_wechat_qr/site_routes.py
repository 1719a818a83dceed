"""What the site's own URL map says about the hosts it answers: the subdomain its routes
are on, and whether a URL on another of its hosts (a ``shop.`` subdomain, a host of
host matching) is one of its pages.

Read by the login's pages (a ``next`` back to the shop), the ID token's issuer, the
deployment checks and the sandbox's in-process host; it knows nothing of logins.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult

from flask import Flask
from werkzeug.exceptions import HTTPException
from werkzeug.routing import MapAdapter, RequestRedirect

#: A host as a browser sends it to a site: lower-case letters, digits, dots and dashes,
#: and a port; no user part, no trailing dot.
_PLAIN_HOST = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)*(?::[0-9]{1,5})?")


def routes_subdomain(app: Flask) -> str:
    """The subdomain the app's routes are on, the extension's included (they are registered
    without one): ``url_map.default_subdomain`` under subdomain matching, else none."""
    return app.url_map.default_subdomain if app.subdomain_matching else ""


def other_subdomains(app: Flask) -> list[str]:
    """The subdomains of the app's pages other than the login's own (``shop``, ``<user>``),
    under subdomain matching; none otherwise. Static files are no pages: Flask routes the
    app's before a site sets ``url_map.default_subdomain``, on the bare name."""
    if not app.subdomain_matching:
        return []
    own = routes_subdomain(app)
    return sorted({rule.subdomain for rule in app.url_map.iter_rules()
                   if rule.subdomain is not None and rule.subdomain != own
                   and rule.endpoint.rpartition(".")[2] != "static"})


def serves_on_another_host(app: Flask, url: SplitResult, script_root: str = "") -> bool:
    """Whether the absolute http(s) ``url`` is a page of this very app on a host it routes
    besides the request's: a subdomain of ``SERVER_NAME`` under subdomain matching, or a
    host of its rules under host matching. Sending a browser there after a login is no
    open redirect: the site's own routes answer it. A variable subdomain (``<user>``)
    stands for one label only: ``a.b.example.com`` may be a zone the site does not own.
    ``script_root``: the app's mount point, the same on each of its hosts."""
    host = url.netloc.lower()
    if url.scheme.lower() not in ("http", "https") or not _PLAIN_HOST.fullmatch(host):
        return False
    adapter = _adapter_for(app, host, url.scheme.lower(), script_root)
    path = url.path or "/"
    if script_root:
        if not (path == script_root or path.startswith(script_root + "/")):
            return False
        path = path[len(script_root):] or "/"
    if adapter is None:
        return False
    try:
        adapter.match(path, method="GET")
    except RequestRedirect:
        return True  # the site's own redirect (a missing slash), still one of its pages
    except HTTPException:
        return False
    return True


def _adapter_for(app: Flask, host: str, scheme: str, script_root: str) -> MapAdapter | None:
    url_map = app.url_map
    if url_map.host_matching:
        return url_map.bind(host, script_name=script_root or None, url_scheme=scheme)
    server_name = str(app.config.get("SERVER_NAME") or "").lower()
    if not (app.subdomain_matching and server_name):
        return None
    if host == server_name:
        subdomain = ""
    elif host.endswith("." + server_name):
        subdomain = host[:-len(server_name) - 1]
    else:
        return None
    if "." in subdomain and not any(rule.subdomain == subdomain
                                    for rule in url_map.iter_rules()):
        return None
    return url_map.bind(server_name, script_name=script_root or None, subdomain=subdomain,
                        url_scheme=scheme)
