"""What the site's own URL map says about the hosts it answers: the subdomain its routes
are on, and whether a URL on another of its hosts (a ``shop.`` subdomain, a host of
host matching) is one of its pages.

Read by the login's pages (a ``next`` back to the shop), the ID token's issuer, the
deployment checks and the sandbox's in-process host; it knows nothing of logins.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit

from flask import Flask
from werkzeug.exceptions import HTTPException
from werkzeug.routing import MapAdapter, RequestRedirect, Rule

#: A DNS label as a browser sends it in a host: 1 to 63 lower-case letters, digits and
#: dashes, no dash at either end.
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
#: A host name with an optional port; no user part, no trailing dot, no IP literal brackets.
_PLAIN_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]{{1,5}})?")
#: The longest host name DNS allows.
_MAX_HOST_NAME = 253


def routes_subdomain(app: Flask) -> str:
    """The subdomain the app's routes are on, the extension's included (they are registered
    without one): ``url_map.default_subdomain`` under subdomain matching, else none."""
    return app.url_map.default_subdomain if app.subdomain_matching else ""


def other_subdomains(app: Flask) -> list[str]:
    """The subdomains of the app's pages other than the login's own (``shop``, ``<user>``;
    ``""``: the bare name), under subdomain matching; none otherwise. Static files are no
    pages: Flask routes the app's before a site sets ``url_map.default_subdomain``, on the
    bare name."""
    if not app.subdomain_matching:
        return []
    own = routes_subdomain(app)
    return sorted({rule.subdomain for rule in app.url_map.iter_rules()
                   if rule.subdomain is not None and rule.subdomain != own
                   and rule.redirect_to is None  # the bare name's redirect to www.
                   and rule.endpoint.rpartition(".")[2] != "static"})


def serves_on_another_host(app: Flask, url: SplitResult, script_root: str = "") -> bool:
    """Whether the absolute http(s) ``url`` is a page of this very app on a host it routes
    besides the request's: a subdomain of ``SERVER_NAME`` under subdomain matching, or
    the host of one of its rules under host matching. Sending a browser there after a
    login is no open redirect: the site's own routes answer it.

    What a variable in a rule's host may stand for is not the site's to promise: a
    variable subdomain (``<user>``) stands for one label only (``a.b.example.com`` may be
    a zone the site does not own), and under host matching only rules with a host without
    variables count (``<tenant>`` matches any host at all). A rule that redirects
    elsewhere (``redirect_to``) is no page. ``script_root``: the app's mount point, the
    same on each of its hosts."""
    host = url.netloc.lower()
    if (url.scheme.lower() not in ("http", "https") or not _PLAIN_HOST.fullmatch(host)
            or len(host.partition(":")[0]) > _MAX_HOST_NAME):
        return False
    path = url.path or "/"
    if script_root:
        if not (path == script_root or path.startswith(script_root + "/")):
            return False
        path = path[len(script_root):] or "/"
    adapter = _adapter_for(app, host, url.scheme.lower(), script_root)
    if adapter is None:
        return False
    rule = _page_rule(adapter, path, host)
    return rule is not None and not (app.url_map.host_matching and "<" in (rule.host or ""))


def _page_rule(adapter: MapAdapter, path: str, host: str) -> Rule | None:
    """The rule that answers a ``GET`` of ``path``, following the site's own redirect to
    the same host once (a missing slash); ``None`` for no page there, or a redirect
    anywhere else."""
    for _ in range(2):
        try:
            rule, _args = adapter.match(path, method="GET", return_rule=True)
        except RequestRedirect as redirect:
            target = urlsplit(redirect.new_url)
            if target.netloc.lower() != host:
                return None
            path = target.path or "/"
            continue
        except HTTPException:
            return None
        return None if rule.redirect_to is not None else rule
    return None


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
