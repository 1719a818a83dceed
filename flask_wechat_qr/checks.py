"""The deployment checks behind ``flask wechat-qr check``: what would make WeChat logins
fail or unsafe, found before registering or deploying.

The command gathers a :class:`Deployment` once (settings, config, the public base URL and
the URLs the app's own ``url_for`` builds), lists it (:func:`describe_connection`), then
:func:`run_checks` passes it to every function of :data:`DEPLOYMENT_CHECKS`. Each check is
a small pure function of that value yielding :class:`Finding` s: none prints, reads options
or calls WeChat, so each is tested alone. The checks that do call WeChat (``--live``) are in
:mod:`.live_checks`, and give :class:`Finding` s too.
"""

from __future__ import annotations

import pathlib
import re
import sys
import typing as t
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import SplitResult, quote, unquote, urlsplit

from flask import Flask, request, url_for
from flask_login.utils import expand_login_view
from jinja2 import TemplateError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import BuildError, Map, MapAdapter, Rule

from .frame_policy import allows_frame
from .sandbox.options import SANDBOX_APP_ID, SANDBOX_APP_SECRET, SANDBOX_OA_APP_ID_PREFIX
from .session_cookie import CookieScope, cookie_scope, misses_callback
from .settings import (
    WEBSITE_APP,
    WECHAT_APP_ID,
    WECHAT_APP_SECRET,
    ConnectionSettings,
    Settings,
    configured_issuer,
)
from .signals import unrunnable_async_receivers
from .site_routes import other_subdomains, routes_subdomain
from .urls import (
    WECHAT_API_BASE_URL,
    WECHAT_OPEN_BASE_URL,
    configured_base_url,
    hostname_of,
    is_loopback_host,
    port_of,
    under_mount_point,
)

#: A key the caller gives each page it asks :func:`_login_pages` about.
K = t.TypeVar("K")

if t.TYPE_CHECKING:
    from .id_token import IdTokenSigner

#: Shorter SECRET_KEYs are flagged: the session cookie carries the login's state.
MIN_SECRET_KEY_BYTES = 32
#: SECRET_KEYs copied from tutorials and templates, compared in lower case without
#: ``-``, ``_``, ``.`` and spaces; a key containing one of the markers is a placeholder too.
_PLACEHOLDER_KEYS = frozenset({
    "dev", "devkey", "devsecret", "development", "secret", "secretkey", "test", "testing",
    "testkey", "password", "default", "key", "flask", "notsecret", "supersecret",
    "supersecretkey", "mysecretkey", "xxx", "todo",
    # Flask's own docs, Flask Web Development and the Flask Mega-Tutorial:
    '5#y2l"f4q8z\xec]/', "hardtoguessstring", "youwillneverguess",
})
_PLACEHOLDER_MARKERS = ("changeme", "changethis", "replaceme", "insecure", "placeholder",
                        "yoursecret")
SECRET_KEY_FIX = ("set SECRET_KEY from the environment to a long random value, the same on "
                   "every worker, e.g. the output of: python -c \"import secrets; "
                   "print(secrets.token_hex(32))\"")
_PORT_FIX = ("serve the public site on port 443 (or 80), behind a reverse proxy if the app "
             "listens elsewhere (ProxyFix without x_port), and give --base-url or "
             "SERVER_NAME without a port")


def mask_secret(secret: str) -> str:
    """Enough of a secret to recognise which one is configured, never enough to use it."""
    if len(secret) < 8:
        return "********"
    return f"{secret[:2]}…{secret[-2:]}"


# --- what the checks look at and what they return ------------------------------------


@dataclass(frozen=True)
class Finding:
    """One thing a check found: a problem fails ``flask wechat-qr check`` (exit status 1),
    a warning only informs."""

    kind: t.Literal["problem", "warning"]
    #: what is wrong and what it breaks
    what: str
    #: what to do about it
    fix: str
    #: the connection it concerns; ``None``: the whole site
    connection: str | None = None


def problem(what: str, fix: str, connection: str | None = None) -> Finding:
    """A finding that must be fixed before registering or deploying."""
    return Finding("problem", what, fix, connection)


def warning(what: str, fix: str, connection: str | None = None) -> Finding:
    """A finding worth a look that does not fail the check."""
    return Finding("warning", what, fix, connection)


@dataclass(frozen=True)
class Findings:
    """Everything the checks found, in the order they found it."""

    found: tuple[Finding, ...] = ()

    @property
    def problems(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.found if f.kind == "problem")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.found if f.kind == "warning")


@dataclass(frozen=True)
class SiteUrls:
    """This site's WeChat URLs as its own ``url_for`` builds them at the public base URL
    (only their paths when that is unknown)."""

    #: each connection's redirect URI, by identifier
    redirect_uris: dict[str, str]
    jwks_url: str
    #: the public host, when Flask refuses it (not in ``TRUSTED_HOSTS``)
    untrusted_host: str | None = None


@dataclass(frozen=True)
class LocalRoute:
    """A route of this app that a business callback URL's path leads to."""

    endpoint: str
    #: the HTTP methods it accepts (the ID token arrives by POST)
    methods: frozenset[str]


@dataclass(frozen=True)
class ShadowedRoute:
    """A URL of the extension that a route of the host answers instead: Werkzeug matches
    the host's rule first (a static part beats a ``<connection>``, and of two equal rules
    the first registered wins)."""

    #: the extension's endpoint, e.g. ``wechat_qr.callback``
    endpoint: str
    #: its URL (path, mount point included) that the host's rule takes
    url: str
    #: the methods of the extension's route that reach the host's rule instead
    methods: tuple[str, ...]
    #: the host's rule and endpoint that answer
    host_rule: str
    host_endpoint: str
    #: the connection whose URL it is; ``None`` for the site-wide routes
    connection: str | None = None


@dataclass(frozen=True)
class WithheldPage:
    """A page of the login that the site's own ``before_request`` hooks answer in its place
    for a visitor who is not logged in (a members-only site's redirect to its login page)."""

    #: what the page is for, in the check's words
    page: str
    path: str
    status: int
    #: where the site sends the visitor instead, if it redirects
    location: str | None = None
    #: what a hook of the site raised when the check ran it (then nobody can tell)
    error: str | None = None


@dataclass(frozen=True)
class BlockedQRFrame:
    """A connection's embedded QR page whose Content-Security-Policy (as the site's own
    hooks leave it) does not let it frame WeChat's QR page: only the fallback link shows."""

    connection: str
    path: str
    #: the origin the page frames (WeChat's, or this site's for the in-app sandbox)
    frame_origin: str


@dataclass(frozen=True)
class PostLoginLanding:
    """Where a login started without ``next`` ends (``WECHAT_QR_POST_LOGIN_URL``) when no
    page of the site answers a ``GET`` there."""

    #: the path the browser is sent to (the mount point included)
    path: str
    #: what answers there instead: a REST framework's own view (Flask-RESTX's Swagger UI
    #: or API root); ``None``: no route of the site takes a ``GET`` of that path
    api_view: str | None = None


@dataclass(frozen=True)
class Deployment:
    """What the checks look at, gathered once from the app and the command line."""

    settings: Settings
    #: the app's config (``SECRET_KEY``, ``SERVER_NAME``, the ``WECHAT_QR_*`` keys as given)
    config: t.Mapping[str, t.Any]
    #: ``DEBUG`` and ``TESTING`` both off
    production: bool
    #: the site's public base URL; ``None`` when unknown
    base_url: str | None
    #: where :attr:`base_url` came from
    base_url_source: str
    urls: SiteUrls
    #: the authorization callback domain (授权回调域) entered on the Open Platform, if given
    callback_domain: str | None = None
    #: the route of this app each business callback URL's path leads to, by connection
    business_routes: t.Mapping[str, LocalRoute] = field(default_factory=dict)
    #: the extension's URLs that routes of the host answer instead
    shadowed_routes: tuple[ShadowedRoute, ...] = ()
    #: the login's pages that the site's own hooks keep from a visitor not logged in
    withheld_pages: tuple[WithheldPage, ...] = ()
    #: the embedded QR pages whose policy blocks WeChat's frame
    blocked_qr_frames: tuple[BlockedQRFrame, ...] = ()
    #: Flask-Login's ``login_view`` where ``url_for`` cannot build it here
    unbuildable_login_view: str | None = None
    #: what rendering the extension's error page in the site's layout raised
    page_render_error: str | None = None
    #: the subdomain the app's routes are on (``url_map.default_subdomain`` under subdomain
    #: matching), which a ``SERVER_NAME``-made ``iss`` has too
    subdomain: str = ""
    #: the subdomains of the site's other routes (``shop``, ``<user>``) under subdomain
    #: matching
    other_subdomains: tuple[str, ...] = ()
    #: the session cookie's path and domain, as the app's session interface sets them
    session_cookie: CookieScope = CookieScope("/", None)
    #: the extension's signals with an ``async def`` receiver the app cannot run (no
    #: asgiref, Flask's ``async`` extra)
    unrunnable_async_receivers: tuple[str, ...] = ()
    #: where a login without ``next`` ends, when no page of the site is there; ``None``:
    #: a page is, or no telling (not at the host the login ends on)
    post_login_landing: PostLoginLanding | None = None
    #: the site's own ``wechat_qr/bind.html`` (its file), where its forms send no
    #: ``binding`` and a connection asks binding
    bind_page_without_binding_field: str | None = None

    @classmethod
    def of(cls, app: Flask, settings: Settings, base_url: str | None = None,
           callback_domain: str | None = None) -> Deployment:
        """``app``'s deployment at ``base_url`` (the ``--base-url`` option, if given)."""
        base, source = public_base_url(app.config, base_url)
        urls = site_urls(app, settings, base)
        return cls(settings=settings, config=app.config,
                   production=not (app.debug or app.testing), base_url=base,
                   base_url_source=source, urls=urls,
                   callback_domain=callback_domain,
                   business_routes=business_routes(app, settings),
                   shadowed_routes=shadowed_routes(app, settings, base),
                   withheld_pages=withheld_pages(app, settings, base),
                   blocked_qr_frames=blocked_qr_frames(app, settings, base),
                   unbuildable_login_view=unbuildable_login_view(app, settings, base),
                   page_render_error=page_render_error(app, settings, base),
                   subdomain=routes_subdomain(app),
                   other_subdomains=tuple(other_subdomains(app)),
                   session_cookie=cookie_scope(app),
                   unrunnable_async_receivers=tuple(unrunnable_async_receivers(app)),
                   post_login_landing=post_login_landing(app, settings, urls, base),
                   bind_page_without_binding_field=bind_page_without_binding_field(
                       app, settings))

    @property
    def simulated(self) -> t.Literal["in-app", "standalone"] | None:
        """Whether logins go to a simulated WeChat: the sandbox mounted in this app, or a
        standalone one (its AppID or AppSecret, at an address that is not WeChat's)."""
        settings = self.settings
        if settings.sandbox:
            return "in-app"
        if (settings.open_base_url != WECHAT_OPEN_BASE_URL
                and settings.api_base_url != WECHAT_API_BASE_URL
                and any(map(_uses_sandbox_credentials, settings.connections.values()))):
            return "standalone"
        return None

    @property
    def production_checks(self) -> bool:
        """Whether the production-only checks apply: DEBUG and TESTING off, and no
        simulated WeChat (a sandbox is a development set-up, whatever the flags say)."""
        return self.production and self.simulated is None

    @property
    def redirect(self) -> SplitResult | None:
        """The (first) redirect URI, split; ``None`` when the base URL is unknown."""
        if self.base_url is None:
            return None
        return urlsplit(next(iter(self.urls.redirect_uris.values())))

    @property
    def callback_domain_to_enter(self) -> str | None:
        """The authorization callback domain (授权回调域) the redirect URI needs."""
        return self.redirect.hostname if self.redirect else None


def public_base_url(config: t.Mapping[str, t.Any], option: str | None) -> tuple[str | None, str]:
    """The site's public base URL and where it came from; ``None`` if unknown."""
    if option:
        return option.rstrip("/"), "--base-url"
    configured = configured_base_url(config)
    if configured is None:
        return None, ""
    return configured, "SERVER_NAME, PREFERRED_URL_SCHEME and APPLICATION_ROOT"


def site_urls(app: Flask, settings: Settings, base: str | None) -> SiteUrls:
    """The redirect URIs and JWKS URL ``url_for`` gives at ``base``, as a request would.

    A ``SERVER_NAME`` wins over ``base``'s host, as it does for every request. A host that
    ``TRUSTED_HOSTS`` refuses is noted, and the URLs are built all the same.
    """
    base = _server_name_base(app, base)
    urls = _build_urls(app, settings, base)
    if urls is not None:
        return urls
    with _trusting_every_host(app):
        urls = _build_urls(app, settings, base)
    if urls is None:  # only TRUSTED_HOSTS makes Flask refuse a host
        raise RuntimeError(f"Flask cannot build URLs at {base!r}")
    return SiteUrls(urls.redirect_uris, urls.jwks_url,
                    untrusted_host=urlsplit(base).hostname if base else None)


def _build_urls(app: Flask, settings: Settings, base: str | None) -> SiteUrls | None:
    """The URLs at ``base``; ``None`` when Flask refuses its host."""
    with app.test_request_context(base_url=base) as ctx:
        if ctx.url_adapter is None:
            return None
        external = base is not None
        return SiteUrls(
            redirect_uris={identifier: url_for("wechat_qr.callback", _external=external,
                                               connection=identifier)
                           for identifier in settings.connections},
            jwks_url=url_for("wechat_qr.jwks", _external=external))


def business_routes(app: Flask, settings: Settings) -> dict[str, LocalRoute]:
    """For each connection with a business callback URL, the route of ``app`` its path leads
    to, matched in ``app.url_map`` as a request to that URL would be; none when no route
    of this app has that path."""
    found = {}
    for conn in settings.connections.values():
        if conn.callback_url:
            route = _local_route(app, conn.callback_url)
            if route is not None:
                found[conn.identifier] = route
    return found


def _local_route(app: Flask, url: str) -> LocalRoute | None:
    parts = urlsplit(url)
    adapter = app.url_map.bind(parts.netloc, url_scheme=parts.scheme)
    path = parts.path or "/"
    try:
        endpoint, _ = adapter.match(path, method="POST")
    except MethodNotAllowed as refused:
        methods = frozenset(refused.valid_methods or ())
        endpoint, _ = adapter.match(path, method=min(methods))
        return LocalRoute(str(endpoint), methods)
    except HTTPException:  # no such route, or a redirect that keeps the POST (308)
        return None
    return LocalRoute(str(endpoint), frozenset({"POST"}))


#: The extension's blueprint: its endpoints are ``wechat_qr.<view>``.
BLUEPRINT = "wechat_qr"


def shadowed_routes(app: Flask, settings: Settings,
                    base: str | None) -> tuple[ShadowedRoute, ...]:
    """The extension's URLs (each connection's, and the site-wide ones) that ``app``'s URL
    map gives to another endpoint, matched at ``base`` as a request would be."""
    adapter = _url_adapter(app, _server_name_base(app, base))
    if adapter is None:
        return ()
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".", 1)[0] != BLUEPRINT:
            continue
        for connection in (settings.connections if "connection" in rule.arguments
                           else (None,)):
            values = dict.fromkeys(rule.arguments, "x") | (
                {"connection": connection} if connection else {})
            shadowed = shadowing_rules(adapter, rule, values)
            if shadowed:
                url = adapter.build(rule.endpoint, values)
                by = shadowed[0][1]
                found.append(ShadowedRoute(
                    rule.endpoint, url, tuple(method for method, _ in shadowed), by.rule,
                    str(by.endpoint), connection))
    return tuple(found)


def shadowing_rules(adapter: MapAdapter, rule: Rule,
                    values: t.Mapping[str, t.Any]) -> list[tuple[str, Rule]]:
    """For each method of ``rule`` (HEAD and OPTIONS aside), the other rule of
    ``adapter``'s map that a request of ``rule``'s URL with ``values`` reaches instead."""
    path = rule.build(dict(values))
    if path is None:
        return []
    url = path[1]
    found = []
    for method in sorted((rule.methods or {"GET"}) - {"HEAD", "OPTIONS"}):
        try:
            matched, _ = adapter.match(url, method=method, return_rule=True)
        except HTTPException:  # not found where it was built (host matching): no telling
            continue
        if matched.endpoint != rule.endpoint:
            found.append((method, matched))
    return found


def callback_rule(url_prefix: str) -> Rule:
    """The rule of the extension's callback (its redirect URI) under ``url_prefix``, as
    registering the blueprint makes it."""
    return Rule(f"{url_prefix.rstrip('/')}/<connection>/callback",
                endpoint=f"{BLUEPRINT}.callback", methods=["GET"])


def callbacks_shadowed_at_start(app: Flask, settings: Settings) -> list[ShadowedRoute]:
    """The connections' callbacks that routes ``app`` has already would answer, found in a
    copy of its URL map with the callback added (the app itself is not changed); no copy
    where none of its routes answers a callback's path at all (most sites: a copy compiles
    every route again, 50 ms at each start of a site of a hundred)."""
    url_map = app.url_map
    if url_map.host_matching:  # each rule has its own host: left to ``check``
        return []
    ours = callback_rule(settings.url_prefix)
    server_name = app.config.get("SERVER_NAME") or "localhost"
    subdomain = None if app.subdomain_matching else ""
    if not _any_route_near(url_map.bind(server_name, subdomain=subdomain), ours.empty(),
                           settings):
        return []
    scratch = Map([*(rule.empty() for rule in url_map.iter_rules()), ours],
                  strict_slashes=url_map.strict_slashes, merge_slashes=url_map.merge_slashes,
                  converters=url_map.converters)
    adapter = scratch.bind(server_name, subdomain=subdomain)
    found = []
    for connection in settings.connections:
        values = {"connection": connection}
        shadowed = shadowing_rules(adapter, ours, values)
        if shadowed:
            by = shadowed[0][1]
            found.append(ShadowedRoute(ours.endpoint, adapter.build(ours.endpoint, values),
                                       ("GET",), by.rule, str(by.endpoint), connection))
    return found


def _any_route_near(adapter: MapAdapter, ours: Rule, settings: Settings) -> bool:
    """Whether any rule of ``adapter``'s map (which lacks ``ours``) answers a request of a
    connection's ``ours`` URL in any way: matches it, for any method, or redirects it. Where
    none does, that map with ``ours`` added sends each such request to ``ours``."""
    # a rule builds its URL in a map only
    Map([ours], strict_slashes=adapter.map.strict_slashes,
        merge_slashes=adapter.map.merge_slashes, converters=adapter.map.converters)
    for connection in settings.connections:
        path = ours.build({"connection": connection})
        if path is None:
            continue
        try:
            adapter.match(path[1], method="GET")
        except NotFound:
            continue
        except HTTPException:  # another method's rule, a redirect: not alone there
            return True
        return True
    return False


def _server_name_base(app: Flask, base: str | None) -> str | None:
    """``base`` with ``SERVER_NAME`` as its host, as Flask builds every URL."""
    server_name = app.config.get("SERVER_NAME")
    if base and server_name and urlsplit(base).netloc != server_name:
        parts = urlsplit(base)
        return f"{parts.scheme}://{server_name}{parts.path}"
    return base


def _url_adapter(app: Flask, base: str | None) -> MapAdapter | None:
    """The URL adapter a request at ``base`` gets (at a host ``TRUSTED_HOSTS`` refuses
    too: what matters is which route would answer)."""
    with app.test_request_context(base_url=base) as ctx:
        if ctx.url_adapter is not None:
            return ctx.url_adapter
    with _trusting_every_host(app), app.test_request_context(base_url=base) as ctx:
        return ctx.url_adapter


@contextmanager
def _trusting_every_host(app: Flask) -> t.Iterator[None]:
    """``app`` with ``TRUSTED_HOSTS`` off for a moment: the check asks what a request at a
    host Flask refuses would reach (the refusal is its own finding)."""
    trusted_hosts = app.config.get("TRUSTED_HOSTS")
    app.config["TRUSTED_HOSTS"] = None
    try:
        yield
    finally:
        app.config["TRUSTED_HOSTS"] = trusted_hosts


def withheld_pages(app: Flask, settings: Settings, base: str | None) -> tuple[WithheldPage, ...]:
    """The login's pages that the site's own ``before_request`` hooks answer in their place
    for a visitor with no session: the hooks run as for that request (the extension's own
    skipped), the views do not."""
    pages: list[tuple[str, str, dict[str, t.Any]]] = []
    for identifier in settings.connections:
        pages += [("the login button's page", "wechat_qr.login", {"connection": identifier}),
                  ("the QR code page", "wechat_qr.qr", {"connection": identifier}),
                  ("the callback WeChat sends the visitor to", "wechat_qr.callback",
                   {"connection": identifier})]
    if any(conn.association == "ask_binding" for conn in settings.connections.values()):
        pages.append(("the bind page (ask binding)", "wechat_qr.bind", {}))
    if "wechat_qr_sandbox" in app.blueprints:
        pages += [("the sandbox's QR page", "wechat_qr_sandbox.qrconnect", {}),
                  ("the sandbox's phone page", "wechat_qr_sandbox.confirm", {"uuid": "check"})]
    found = _login_pages(app, base, pages)
    if found is None:
        return ()
    withheld = []
    for page, path, route in found[1]:
        answer = _site_answer(app, path, route, base)
        if answer is not None:
            withheld.append(WithheldPage(page, path, *answer))
    return tuple(withheld)


def _login_pages(app: Flask, base: str | None, pages: list[tuple[K, str, dict[str, t.Any]]]
                 ) -> tuple[str, list[tuple[K, str, str]]] | None:
    """Where a request at ``base`` finds each ``(key, endpoint, values)`` of ``pages``: the
    site's root URL, and per page its key, its path (``url_for``'s: ``base``'s path, the
    mount point, included) and its route (the path under the mount point, as a request
    context takes it). ``None`` at a host ``TRUSTED_HOSTS`` refuses (its own problem)."""
    with app.test_request_context(base_url=base) as ctx:
        if ctx.url_adapter is None:
            return None
        mount_point = ctx.request.script_root
        paths = [(key, url_for(endpoint, **values)) for key, endpoint, values in pages]
        return ctx.request.host_url, [(key, path, path.removeprefix(mount_point))
                                      for key, path in paths]


def _site_answer(app: Flask, path: str, route: str, base: str | None
                 ) -> tuple[int, str | None] | tuple[int, None, str] | None:
    """The status (and redirect) the site's own hooks give a visitor with no session
    instead of ``path``'s view (``route``: the path under the app's mount point); ``None``
    when they let the view answer (or a redirect to the same path, such as to https).
    What a hook raised, if it cannot be run outside a real request."""
    try:
        with app.test_request_context(route, base_url=base):
            answer = _run_site_before_hooks(app)
            if answer is not None:
                made = app.make_response(answer)
                return _withheld(path, made.status_code, made.headers.get("Location"))
    except HTTPException as refused:  # abort(401), a login_required-like hook
        response = refused.get_response()
        return _withheld(path, response.status_code, response.headers.get("Location"))
    except Exception as error:  # the site's code needs what only a real request has
        return 0, None, f"{type(error).__name__}: {error}"[:200]
    return None


def post_login_landing(app: Flask, settings: Settings, urls: SiteUrls, base: str | None
                       ) -> PostLoginLanding | None:
    """Where a login without ``next`` ends when no page of ``app`` is there: its
    ``WECHAT_QR_POST_LOGIN_URL`` matched for ``GET`` in the URL map as a browser sent there
    from the callback asks it (at the callback's host, subdomain included, under the
    mount point, which the setting may leave out, as the login's redirect adds it).
    ``None`` when a page of the site answers (or a redirect of its own, such as to the
    path with a slash), and when the callback itself is not found at that host (host
    matching without ``SERVER_NAME`` or ``--base-url``): no telling."""
    connection = next(iter(settings.connections), None)
    if connection is None:
        return None
    callback = urlsplit(urls.redirect_uris[connection])
    if base is not None and callback.netloc:  # the callback's host, and base's mount point
        base = f"{callback.scheme}://{callback.netloc}{urlsplit(base).path}"
    with _trusting_every_host(app), app.test_request_context(base_url=base) as ctx:
        adapter, mount_point = ctx.url_adapter, ctx.request.script_root
    if adapter is None:
        return None
    try:
        at_callback = adapter.match(unquote(callback.path).removeprefix(mount_point),
                                    method="GET")[0]
    except HTTPException:
        at_callback = None
    if at_callback != f"{BLUEPRINT}.callback":
        return None
    path = under_mount_point(settings.post_login_url, mount_point)
    route = unquote(urlsplit(path).path).removeprefix(mount_point) or "/"
    try:
        rule, _ = adapter.match(route, method="GET", return_rule=True)
    except (NotFound, MethodNotAllowed):
        return PostLoginLanding(path)
    except HTTPException:  # the site's own redirect (a missing slash): a page is there
        return None
    api_view = _rest_framework_view(app.view_functions.get(str(rule.endpoint)))
    return PostLoginLanding(path, api_view) if api_view else None


#: Flask-RESTX's own views (public methods of its ``Api``), by method name.
_RESTX_VIEWS = {
    "render_doc": "Flask-RESTX's Swagger UI (its Api's doc=, by default /)",
    "render_root": "Flask-RESTX's API root (a 404 in JSON)",
}


def _rest_framework_view(view: t.Callable[..., t.Any] | None) -> str | None:
    """What ``view`` is when it is a REST framework's own page rather than the site's:
    Flask-RESTX's ``Api.render_doc`` (Swagger UI) or ``Api.render_root`` (a 404), bound
    to an ``Api`` (only where the site has imported Flask-RESTX)."""
    restx = sys.modules.get("flask_restx")
    owner = getattr(view, "__self__", None)
    if restx is None or not isinstance(owner, restx.Api):
        return None
    return _RESTX_VIEWS.get(str(getattr(view, "__name__", "")))


def unbuildable_login_view(app: Flask, settings: Settings, base: str | None) -> str | None:
    """Flask-Login's ``login_view`` when ``url_for`` cannot build it on the link page (no
    such endpoint, as Flask-AppBuilder's ``"login"``, one that needs arguments, or the
    site's URL defaults raising there: a ``/<lang_code>`` blueprint's, as Flask's docs
    write it, reads ``g.lang_code``, set only on the blueprint's own pages); else
    ``None``."""
    view = getattr(getattr(app, "login_manager", None), "login_view", None)
    connection = next(iter(settings.connections), None)
    if not view or connection is None:
        return None
    with _trusting_every_host(app):
        found = _login_pages(app, base, [("link", "wechat_qr.link",
                                          {"connection": connection})])
        if found is None:
            return None
        _root, [(_key, _path, link_route)] = found
        with app.test_request_context(link_route, base_url=base):
            try:
                _run_site_url_preprocessors(app)
            except Exception:  # the site's page hooks, not its login view: another matter
                return None
            try:
                expand_login_view(view)  # a URL as it is, an endpoint through url_for
            except Exception:  # what url_for, or the site's URL defaults, raised
                return str(view)
    return None


def page_render_error(app: Flask, settings: Settings, base: str | None) -> str | None:
    """What rendering the extension's error page raised, as for a visitor with no session
    (the site's own hooks run first), or ``None``: a ``wechat_qr/base.html`` that extends a
    layout needing what only the site's own views pass (Flask-AppBuilder's ``appbuilder``)
    makes every page of the login a 500."""
    from flask import render_template

    from .errors import StateError

    connection = next(iter(settings.connections), None)
    found = _login_pages(app, base, [("error", "wechat_qr.callback",
                                      {"connection": connection})]) if connection else None
    if found is None:
        return None
    route = found[1][0][2]
    with app.test_request_context(route, base_url=base):
        try:
            if _run_site_before_hooks(app) is not None:
                return None  # the site answers for that page itself: the other check's
        except Exception:  # refused, or needs a real request: the members-only check's
            return None
        try:
            render_template("wechat_qr/error.html", error=StateError(), connection=None,
                            retry_url=None, wechat_logins=[], other_login_url=None)
        except (TemplateError, BuildError) as error:  # the templates' own, not the site's
            return f"{type(error).__name__}: {error}"[:300]
        except Exception:  # something only a real request has: cannot be judged here
            return None
    return None


def bind_page_without_binding_field(app: Flask, settings: Settings) -> str | None:
    """The site's own ``wechat_qr/bind.html`` (its file name) with a form that posts no
    ``binding`` field (or another value than the page's), where a connection asks binding;
    ``None`` for the extension's own page, one whose every form posts it, none asked for,
    or a page that cannot be drawn here (the layout's check tells of that). Drawn as a
    visitor gets it, so a field a macro gives counts, and one in a comment does not."""
    from flask import render_template

    from .binding import login_field_named
    from .delivery import BINDING_FIELD
    from .runtime import runtime_of

    asking = [conn for conn in settings.connections.values()
              if conn.association == "ask_binding"]
    if not asking:
        return None
    loader = app.jinja_env.loader
    if loader is None:
        return None
    try:  # the file's name, for the finding; any failure to read it is the page's to show
        _source, filename, _uptodate = loader.get_source(app.jinja_env, "wechat_qr/bind.html")
    except Exception:
        return None
    own = pathlib.Path(__file__).resolve().parent / "templates"
    if filename is not None and pathlib.Path(filename).resolve().is_relative_to(own):
        return None
    shown = "wechat-qr-check-binding"
    pending = _PendingForCheck(asking[0].identifier)
    with app.test_request_context("/"):
        try:
            page = render_template(
                "wechat_qr/bind.html", connection=asking[0], pending=pending, problem=None,
                can_signup=True, csrf_token="wechat-qr-check-token", binding=shown,
                login_field=login_field_named(runtime_of(app).adapter.login_field),
                avatar_url=None, username="")
        except Exception:  # what only a real request has, or the layout's problem
            return None
    forms = _posted_forms(page)
    if forms and all(form.get(BINDING_FIELD) == shown for form in forms):
        return None
    return filename or "wechat_qr/bind.html"


@dataclass
class _PendingForCheck:
    """A waiting WeChat account for drawing the bind page in ``check``."""

    connection: str
    app: str = WEBSITE_APP
    openid: str = "o-wechat-qr-check"
    unionid: str | None = None
    nickname: str = "WeChat"
    avatar_url: str | None = None


def _posted_forms(page: str) -> list[dict[str, str]]:
    """The fields (name: value) each ``method="post"`` form of ``page`` sends as hidden or
    other inputs, in order."""
    from html.parser import HTMLParser

    forms: list[dict[str, str]] = []

    class Forms(HTMLParser):
        inside = False

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found = {name: value or "" for name, value in attrs}
            if tag == "form":
                self.inside = found.get("method", "").lower() == "post"
                if self.inside:
                    forms.append({})
            elif tag == "input" and self.inside and "name" in found:
                forms[-1].setdefault(found["name"], found.get("value", ""))

        def handle_endtag(self, tag: str) -> None:
            if tag == "form":
                self.inside = False

    Forms(convert_charrefs=True).feed(page)
    return forms


def blocked_qr_frames(app: Flask, settings: Settings, base: str | None
                      ) -> tuple[BlockedQRFrame, ...]:
    """The embedded QR pages whose Content-Security-Policy, as the site's own hooks put it
    on them, blocks the frame of WeChat's QR page. The hooks run as for a visitor with no
    session (the extension's own skipped, no view: an empty answer gets the headers);
    a page the hooks answer themselves, or cannot run for, is the other check's. Asked
    over https, as in production (a hook sending http to https, Flask-Talisman's
    ``force_https``, would answer instead)."""
    parts = urlsplit(base or "http://localhost")
    base = f"https://{parts.netloc}{parts.path}"
    found = _login_pages(app, base, [(identifier, "wechat_qr.qr", {"connection": identifier})
                                     for identifier in settings.connections])
    if found is None:
        return ()
    page_url, pages = found
    # None: the in-app sandbox, which plays WeChat at this site's own origin.
    frame = urlsplit(settings.open_base_url or page_url)
    blocked = []
    for identifier, path, route in pages:
        policies = _site_policies(app, route, base)
        if policies is not None and not allows_frame(policies, frame.geturl(), page_url):
            blocked.append(BlockedQRFrame(identifier, path, f"{frame.scheme}://{frame.netloc}"))
    return tuple(blocked)


def _site_policies(app: Flask, route: str, base: str | None) -> list[str] | None:
    """The Content-Security-Policy headers the site's own hooks put on an answer at
    ``route``; ``None`` when a hook answers instead or raises."""
    try:
        with app.test_request_context(route, base_url=base):
            if _run_site_before_hooks(app) is not None:
                return None
            response = app.response_class("")
            for name in (*request.blueprints, None):
                for after in reversed(app.after_request_funcs.get(name, ())):
                    if not _ours(after):
                        response = app.ensure_sync(after)(response)
            return response.headers.getlist("Content-Security-Policy")
    except Exception:  # HTTPException too: the members-only check reports those pages
        return None


def _run_site_before_hooks(app: Flask) -> t.Any:
    """Run the site's own URL value preprocessors and ``before_request`` hooks for the
    request in context, as Flask would (the extension's skipped): the first answer one
    gives, or ``None``."""
    _run_site_url_preprocessors(app)
    names = (None, *reversed(request.blueprints))
    for name in names:
        for hook in app.before_request_funcs.get(name, ()):
            if not _ours(hook):
                answer = app.ensure_sync(hook)()
                if answer is not None:
                    return answer
    return None


def _run_site_url_preprocessors(app: Flask) -> None:
    """Run the site's own URL value preprocessors for the request in context, as Flask
    does first (the extension's skipped): what they set in ``g``, its URL defaults read."""
    for name in (None, *reversed(request.blueprints)):
        for preprocess in app.url_value_preprocessors.get(name, ()):
            if not _ours(preprocess):
                preprocess(request.endpoint, request.view_args)


def _withheld(path: str, status: int, location: str | None) -> tuple[int, str | None] | None:
    if location is not None and urlsplit(location).path == urlsplit(path).path:
        return None  # e.g. Flask-Talisman's redirect to https: the same page
    if status == 429:
        return None  # a rate limiter (Flask-Limiter) used up by earlier requests: no rule
    return status, location


def _ours(function: t.Callable[..., t.Any]) -> bool:
    return str(getattr(function, "__module__", "")).startswith("flask_wechat_qr")


def describe_connection(deployment: Deployment, conn: ConnectionSettings,
                        id_tokens: IdTokenSigner | None) -> list[tuple[str, str]]:
    """What the check lists about one connection, as (label, value) rows; the AppSecret
    masked."""
    redirect_uri = deployment.urls.redirect_uris[conn.identifier]
    return [
        ("Display name", conn.display_name),
        # An AppID is public; anything else in that field may be a secret pasted there.
        ("AppID", "not set" if not conn.app_id else conn.app_id
         if WECHAT_APP_ID.fullmatch(conn.app_id) or _uses_sandbox_credentials(conn)
         else f"{mask_secret(conn.app_id)} (not an AppID: masked)"),
        ("AppSecret", f"{mask_secret(conn.app_secret)} (masked)" if conn.app_secret
         else "not set"),
        ("Login only", "yes" if conn.login_only else "no"),
        ("Association", conn.association),
        ("Match fields", ", ".join(conn.match_fields) or "none"),
        ("Profile sync", conn.profile_sync),
        ("Business callback URL", conn.callback_url or "none (logins end on this site)"),
        *([("ID token", _describe_id_token(deployment, conn, id_tokens))]
          if conn.callback_url else []),
        ("Redirect URI", redirect_uri if deployment.base_url else
         f"unknown; <public base URL>{redirect_uri}"),
        ("Inside WeChat", _describe_official_account(conn)),
    ]


def _describe_official_account(conn: ConnectionSettings) -> str:
    """How visitors inside WeChat log in: the Official Account (AppSecret masked), or
    what they get without one."""
    if not conn.has_official_account:
        return ("no Official Account: WeChat on a phone gets the phone page, WeChat for "
                "Windows/Mac the QR code")
    verify = conn.oa_verify_file
    simulated = (" (the sandbox's own, simulated)"
                 if (conn.oa_app_id or "").startswith(SANDBOX_OA_APP_ID_PREFIX) else "")
    return (f"Official Account {conn.oa_app_id}{simulated} (AppSecret "
            f"{mask_secret(conn.oa_app_secret)}, masked), scope {conn.oa_scope}"
            + (f"; verify file served at /{verify.name}" if verify else ""))


def _describe_id_token(deployment: Deployment, conn: ConnectionSettings,
                       signer: IdTokenSigner | None) -> str:
    if signer is None:  # init_app refuses this; shown rather than crash
        return "no signing key"
    where = (f"public keys at {deployment.urls.jwks_url}" if signer.algorithm == "RS256"
             else "shared secret")
    mount_point = urlsplit(deployment.base_url).path if deployment.base_url else ""
    issuer = (configured_issuer(deployment.settings, deployment.config, mount_point,
                                deployment.subdomain)
              or "from each request")
    return (f"{signer.algorithm} ({where}), aud {conn.id_token_audience or conn.identifier}, "
            f"iss {issuer}, valid {signer.ttl} s")


# --- the checks, in the order their findings are listed --------------------------------

Check = t.Callable[[Deployment], t.Iterable[Finding]]


def check_trusted_hosts(deployment: Deployment) -> t.Iterator[Finding]:
    """Flask answers a host outside ``TRUSTED_HOSTS`` with 400, the redirect URI too."""
    host = deployment.urls.untrusted_host
    if host:
        yield problem(
            f"the host {host} is not in TRUSTED_HOSTS: Flask answers every request for "
            "it, the redirect URI WeChat sends visitors to included, with 400 Bad Request",
            f"add {host} to TRUSTED_HOSTS, or give the right --base-url")


def check_sandbox_credentials(deployment: Deployment) -> t.Iterator[Finding]:
    """The sandbox's AppID or AppSecret sent to WeChat itself: WeChat refuses them."""
    if deployment.simulated:
        return
    for index, conn in enumerate(deployment.settings.connections.values()):
        if _uses_sandbox_credentials(conn):
            app_id, app_secret = (setting_key(deployment, index, name)
                                  for name in ("app_id", "app_secret"))
            yield problem(
                "the sandbox's AppID or AppSecret is configured but WECHAT_QR_SANDBOX is "
                "off and logins go to WeChat: WeChat does not know them",
                f"set {app_id} and {app_secret} to your website application's "
                "(open.weixin.qq.com, 管理中心 > 网站应用), or turn WECHAT_QR_SANDBOX on, or "
                "point WECHAT_QR_OPEN_BASE_URL and WECHAT_QR_API_BASE_URL at a standalone "
                "sandbox",
                conn.identifier)


def half_credentials(conn: ConnectionSettings, app_id_key: str, app_secret_key: str,
                     sandbox: bool) -> tuple[str, str]:
    """What is wrong with a connection that has its AppID but not its AppSecret (or the
    reverse), and the fix: ``init_app``'s warning and ``flask wechat-qr check`` say it
    alike. The sandbox stands in only for a connection with neither."""
    given, lacking = ((app_id_key, app_secret_key) if conn.app_id
                      else (app_secret_key, app_id_key))
    what = f"{given} is set but {lacking} is not"
    if sandbox:
        what += " (WECHAT_QR_SANDBOX stands in only for a connection with neither)"
    fix = (f"set {lacking} (from open.weixin.qq.com, 管理中心 > 网站应用), or remove {given}"
           + (" to log in on the sandbox" if sandbox else
              " and set WECHAT_QR_SANDBOX=true to try the simulated WeChat"))
    return what, fix


def check_credentials(deployment: Deployment) -> t.Iterator[Finding]:
    """No credentials: the connection's login is off. An AppID that is not ``wx`` and 16
    hexadecimal digits (allowed only by ``WECHAT_QR_APP_ID_CHECK=False``) was likely
    mistyped."""
    sandbox = deployment.settings.sandbox
    for index, conn in enumerate(deployment.settings.connections.values()):
        app_id, app_secret = (setting_key(deployment, index, name)
                              for name in ("app_id", "app_secret"))
        if not conn.has_credentials and (conn.app_id or conn.app_secret):
            what, fix = half_credentials(conn, app_id, app_secret, sandbox)
            yield problem(f"{what}: this connection's WeChat login is off (503 page)", fix,
                          conn.identifier)
            continue
        if sandbox:
            continue
        if not conn.has_credentials:
            yield problem(
                "no AppID and AppSecret: this connection's WeChat login is off (503 page)",
                f"set {app_id} and {app_secret} from open.weixin.qq.com (管理中心 > 网站应用)",
                conn.identifier)
            continue
        if _uses_sandbox_credentials(conn):
            continue
        if not WECHAT_APP_ID.fullmatch(conn.app_id):
            yield warning(
                f"the AppID {conn.app_id[:4]!r}... does not look like a WeChat AppID ('wx' and "
                "16 hexadecimal digits)",
                f"copy {app_id} from open.weixin.qq.com (管理中心 > 网站应用)",
                conn.identifier)
        if not WECHAT_APP_SECRET.fullmatch(conn.app_secret):
            yield warning(
                f"the AppSecret ({len(conn.app_secret)} characters) does not look like a "
                "WeChat AppSecret (32 hexadecimal digits): a placeholder? WeChat refuses "
                "every login with it (errcode 40125)",
                f"copy {app_secret} from open.weixin.qq.com (管理中心 > 网站应用 > 开发信息; "
                "reset it there if nobody kept it)",
                conn.identifier)


def check_official_account(deployment: Deployment) -> t.Iterator[Finding]:
    """Half an Official Account (its AppID without its AppSecret, or the reverse) is not
    used: visitors inside WeChat get no in-WeChat login."""
    for index, conn in enumerate(deployment.settings.connections.values()):
        if bool(conn.oa_app_id) != bool(conn.oa_app_secret):
            oa_app_id, oa_app_secret = (setting_key(deployment, index, name)
                                        for name in ("oa_app_id", "oa_app_secret"))
            yield warning(
                "only half of the Official Account is configured: logins inside WeChat are "
                "off",
                f"set both {oa_app_id} and {oa_app_secret} (mp.weixin.qq.com, 设置与开发 > "
                "基本配置), or neither",
                conn.identifier)


def _uses_sandbox_credentials(conn: ConnectionSettings) -> bool:
    return conn.app_id == SANDBOX_APP_ID or conn.app_secret == SANDBOX_APP_SECRET


def setting_key(deployment: Deployment, index: int, name: str) -> str:
    """How the site configured a connection's setting: its own key, or its list entry."""
    return connection_setting_key(deployment.config, index, name)


def connection_setting_key(config: t.Mapping[str, t.Any], index: int, name: str) -> str:
    """:func:`setting_key` from the app's config (``init_app``'s warnings name keys too)."""
    if config.get("WECHAT_QR_CONNECTIONS"):
        return f"WECHAT_QR_CONNECTIONS[{index}]['{name}']"
    return f"WECHAT_QR_{name.upper()}"


def secret_key_problem(secret_key: t.Any) -> str | None:
    """What is wrong with a SECRET_KEY for WeChat logins, or ``None``: the login's state
    lives in the session cookie, which it signs. ``init_app`` asks this too, and outside
    debug and testing keeps logins off while the answer is not ``None``."""
    if not secret_key:
        return ("SECRET_KEY is not set: the login's state lives in the signed session "
                "cookie, so WeChat logins cannot work")
    raw = secret_key if isinstance(secret_key, bytes) else str(secret_key).encode("utf-8")
    normal = re.sub(r"[-_.\s]", "", raw.decode("latin-1").lower())
    if normal in _PLACEHOLDER_KEYS or any(marker in normal for marker in _PLACEHOLDER_MARKERS):
        return ("SECRET_KEY is a well-known placeholder: anyone can forge session cookies, "
                "and with them logins")
    if len(raw) < MIN_SECRET_KEY_BYTES:
        return f"SECRET_KEY is weak: {len(raw)} bytes, fewer than {MIN_SECRET_KEY_BYTES}"
    return None


def check_secret_key(deployment: Deployment) -> t.Iterator[Finding]:
    """The login's state lives in the session cookie, which SECRET_KEY signs: none breaks
    every login; a weak or well-known one lets anyone forge logins, and keeps them off
    outside debug and testing."""
    key = deployment.config.get("SECRET_KEY")
    found = secret_key_problem(key)
    if found is None:
        return
    if key and not deployment.production:  # as init_app: refused outside debug and testing
        yield warning(found + " (fine while developing, refused in production)",
                      SECRET_KEY_FIX)
    else:
        yield problem(found, SECRET_KEY_FIX)


def check_callback_url_scheme(deployment: Deployment) -> t.Iterator[Finding]:
    """In production an ID token goes to the business callback URL over https only."""
    if not deployment.production_checks:
        return
    for conn in deployment.settings.connections.values():
        parts = urlsplit(conn.callback_url or "")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname or ""):
            yield problem(
                f"the business callback URL {conn.callback_url} is http: the ID token would "
                "cross the network in clear text, and browsers warn about the form",
                "use an https business callback URL", conn.identifier)


def check_callback_url_method(deployment: Deployment) -> t.Iterator[Finding]:
    """The ID token arrives by form POST: a route of this app that takes no POST ends
    every login on "405 Method Not Allowed"."""
    for index, conn in enumerate(deployment.settings.connections.values()):
        route = deployment.business_routes.get(conn.identifier)
        if route is None or "POST" in route.methods:
            continue
        key = setting_key(deployment, index, "callback_url")
        what = (f"the business callback URL ({key}) {conn.callback_url} is this app's "
                f"{route.endpoint}, which takes {_and(sorted(route.methods))} but not POST: "
                "every login would end on 405 Method Not Allowed when the ID token is posted")
        fix = (f"accept POST there (methods=[\"POST\"]) and verify the ID token, or set {key} "
               "to the page that does")
        if route.endpoint == "wechat_qr.callback":
            what += (" (it is the extension's own redirect URI, which WeChat sends the browser "
                     "back to)")
            fix = (f"unset {key} for logins that end on this site; set it only to a page of "
                   "your own (or another service) that accepts the ID token by POST")
        host = urlsplit(conn.callback_url or "").hostname or ""
        if (route.endpoint.startswith("wechat_qr.") or is_loopback_host(host)
                or host == deployment.callback_domain_to_enter):
            yield problem(what, fix, conn.identifier)
        else:  # another host may serve that path; this app cannot tell
            yield warning(f"if {host} is this app, {what}", fix, conn.identifier)


#: How to give the ID tokens an issuer.
ISSUER_FIX = ("set WECHAT_QR_ID_TOKEN_ISSUER to the site's public root URL, e.g. "
              "https://www.example.com")


def issuer_problem(settings: Settings, config: t.Mapping[str, t.Any]) -> str | None:
    """Why the ID tokens have no issuer of their own, or ``None``: ``iss`` would follow
    each request's Host header, which the client chooses (and www.example.com and
    example.com would give two). ``init_app`` asks this too, and outside debug and
    testing keeps logins off while the answer is not ``None``."""
    if (any(conn.callback_url for conn in settings.connections.values())
            and configured_issuer(settings, config) is None):
        return ("a connection posts ID tokens to a business callback URL, but neither "
                "WECHAT_QR_ID_TOKEN_ISSUER nor SERVER_NAME says who issues them: their iss "
                "would follow each request's Host header (www.example.com and example.com "
                "give different issuers, and receivers that check iss refuse one of them)")
    return None


def check_issuer_source(deployment: Deployment) -> t.Iterator[Finding]:
    """An ``iss`` taken from each request's Host header: the client chooses it. Refused
    outside debug and testing (logins are off), as ``init_app`` does."""
    found = issuer_problem(deployment.settings, deployment.config)
    if found is None:
        return
    if deployment.production:
        yield problem(found + "; so WeChat login is off outside debug and testing (its "
                      "pages answer 503)", ISSUER_FIX)
    else:
        yield warning(found + " (fine while developing, refused in production)", ISSUER_FIX)


def check_issuer_leads_to_the_keys(deployment: Deployment) -> t.Iterator[Finding]:
    """Receivers find the public keys from ``iss`` (``iss`` + the keys' path, as the ID
    token guide's receiver does): an ``iss`` at another host, scheme or path than the keys
    this site publishes leads them nowhere. Only with a known public base URL and signed
    with a private key (a shared secret publishes no keys)."""
    settings = deployment.settings
    keys = deployment.urls.jwks_url
    if (deployment.base_url is None or settings.id_token_secret
            or not any(conn.callback_url for conn in settings.connections.values())):
        return
    mount_point = urlsplit(deployment.base_url).path.rstrip("/")
    issuer = configured_issuer(settings, deployment.config, mount_point, deployment.subdomain)
    if issuer is None:
        return
    where, named = urlsplit(keys), urlsplit(issuer)
    mount = unquote(mount_point)
    keys_path = unquote(where.path).removeprefix(mount)  # as a receiver appends it to iss
    same_path = unquote(named.path).rstrip("/") + keys_path == unquote(where.path)
    if same_path and _origin(named) == _origin(where):
        return
    site_root = f"{where.scheme}://{where.netloc}{quote(mount)}"
    if settings.id_token_issuer:
        fix = (f"set WECHAT_QR_ID_TOKEN_ISSUER to {site_root}, or give every receiver the "
               f"keys' URL itself")
    elif same_path and (named.netloc.lower() == where.netloc.lower()):  # the scheme alone
        fix = f"set PREFERRED_URL_SCHEME to {where.scheme!r} (the iss takes its scheme)"
    else:
        fix = f"set SERVER_NAME to this site's host, or WECHAT_QR_ID_TOKEN_ISSUER to {site_root}"
    yield warning(
        f"the ID token's iss is {issuer}, but this site publishes its public keys at {keys}: "
        "a receiver that finds the keys from iss (iss + the keys' path) gets none, and no "
        "token verifies",
        fix)


def _origin(url: SplitResult) -> tuple[str, str, int | None]:
    """A URL's scheme, host and port as a browser compares them (case, default ports)."""
    return url.scheme.lower(), (url.hostname or "").lower(), port_of(url)


def check_sandbox_in_production(deployment: Deployment) -> t.Iterator[Finding]:
    """In a sandbox anyone can log in as any simulated user: fine for trying a site (the
    README's quick start does), never for a deployed one. A warning, as at start-up: the
    sandbox is on only when asked for."""
    if not deployment.production:
        return
    fix = ("for real WeChat give your website application's AppID and AppSecret and {off}; "
           "while you only try the site (the quick start runs it so, for a phone on your "
           "network), this warning is expected: never deploy it so")
    if deployment.simulated == "in-app":
        yield warning(
            "WECHAT_QR_SANDBOX is on while DEBUG and TESTING are off: logins go to the "
            "simulated WeChat, where anyone can log in as any simulated user (production "
            "checks skipped; never deploy this)",
            fix.format(off="set WECHAT_QR_SANDBOX=False"))
    elif deployment.simulated == "standalone":
        yield warning(
            f"logins go to a standalone sandbox at {deployment.settings.api_base_url}, not "
            "to WeChat, while DEBUG and TESTING are off: anyone can log in there as any "
            "simulated user (production checks skipped; never deploy this)",
            fix.format(off="unset WECHAT_QR_OPEN_BASE_URL and WECHAT_QR_API_BASE_URL"))


def check_wechat_endpoints(deployment: Deployment) -> t.Iterator[Finding]:
    """In production logins go to WeChat's own addresses, not a standalone sandbox."""
    settings = deployment.settings
    if not deployment.production_checks:
        return
    for name, value, default in (("OPEN_BASE_URL", settings.open_base_url, WECHAT_OPEN_BASE_URL),
                                 ("API_BASE_URL", settings.api_base_url, WECHAT_API_BASE_URL)):
        if value != default:
            yield warning(
                f"WECHAT_QR_{name} is {value}, not WeChat's {default}, in production",
                "unset it unless that address is a deliberate proxy to WeChat (a standalone "
                "sandbox left configured sends every login there)")


def check_redirect_known(deployment: Deployment) -> t.Iterator[Finding]:
    """Without a public base URL the redirect URI follows each request's host."""
    if deployment.redirect is None:
        yield warning(
            "the redirect URI cannot be known: with no --base-url and no SERVER_NAME it is "
            "built from the host of each request",
            "run again with --base-url https://www.example.com (the address visitors use), "
            "or set SERVER_NAME and PREFERRED_URL_SCHEME")


def check_redirect_port(deployment: Deployment) -> t.Iterator[Finding]:
    """WeChat refuses a redirect URI with a port (10003); the sandbox does not."""
    redirect = deployment.redirect
    if redirect is None or redirect.port is None:
        return
    what = (f"the redirect URI has port {redirect.port}, but the authorization callback "
            "domain (授权回调域) takes none: WeChat refuses such a redirect_uri (10003)")
    if deployment.simulated:
        yield warning(what + "; the sandbox accepts it", _PORT_FIX)
    else:
        yield problem(what, _PORT_FIX)


def check_server_name_override(deployment: Deployment) -> t.Iterator[Finding]:
    """A SERVER_NAME other than --base-url's host is the host of every external URL."""
    redirect = deployment.redirect
    given = (urlsplit(deployment.base_url).hostname
             if deployment.base_url and deployment.base_url_source == "--base-url" else None)
    # (Without --base-url the base is SERVER_NAME's own: the redirect URI's host may still
    # differ, by the subdomain its routes are on, url_map.default_subdomain.)
    if redirect is not None and given and given != redirect.hostname:
        yield warning(
            f"SERVER_NAME ({deployment.config.get('SERVER_NAME')}) overrides the host of "
            f"--base-url ({given}): Flask builds every external URL, the redirect URI "
            "included, with SERVER_NAME",
            "make SERVER_NAME the public host, or unset it")


def check_redirect_scheme(deployment: Deployment) -> t.Iterator[Finding]:
    """In production WeChat's code and the session cookie travel over https only."""
    redirect = deployment.redirect
    if deployment.production_checks and redirect is not None and redirect.scheme != "https":
        yield problem(
            "the redirect URI uses http in production: WeChat's code and the session cookie "
            "would travel unencrypted",
            "serve the site over https and give --base-url https://... (or "
            "PREFERRED_URL_SCHEME=https with SERVER_NAME); behind a proxy, ProxyFix with "
            "x_proto=1 makes Flask see https")


def check_redirect_host(deployment: Deployment) -> t.Iterator[Finding]:
    """In production WeChat sends visitors to a public host, not their own computer."""
    host = deployment.callback_domain_to_enter
    if deployment.production_checks and host is not None and is_loopback_host(host):
        yield problem(
            f"the redirect URI's host {host} is this machine, not a public domain: WeChat "
            "would send each visitor's browser to their own computer",
            "give --base-url (or SERVER_NAME) with the site's public domain")


def check_callback_domain_shape(deployment: Deployment) -> t.Iterator[Finding]:
    """The authorization callback domain is a bare host: no scheme, port or path."""
    if deployment.callback_domain is None:
        return
    text = deployment.callback_domain.strip()
    parts = _split_domain(text)
    extras = []
    if parts.scheme:
        extras.append(f"a scheme ({parts.scheme}://)")
    if ":" in parts.netloc.rsplit("@", 1)[-1].rsplit("]", 1)[-1]:
        extras.append("a port")
    if parts.path or parts.query or parts.fragment:
        extras.append("a path")
    if extras:
        example = deployment.callback_domain_to_enter or "www.example.com"
        yield problem(
            f"--callback-domain {text!r} has {_and(extras)}, but the authorization "
            "callback domain (授权回调域) is a bare host (any path on it works; no port)",
            f"enter only the host on the Open Platform, e.g. {example}")


def check_callback_domain_match(deployment: Deployment) -> t.Iterator[Finding]:
    """WeChat matches the authorization callback domain with the redirect URI's host
    exactly."""
    if deployment.callback_domain is None:
        return
    text = deployment.callback_domain.strip()
    entered = (_split_domain(text).hostname or "").rstrip(".")
    domain = deployment.callback_domain_to_enter
    if domain is None:
        yield warning("--callback-domain cannot be compared with the redirect URI, which "
                      "is unknown", "run again with --base-url as well")
    elif entered != domain:
        yield problem(
            f"the authorization callback domain (授权回调域) {entered or text!r} is not "
            f"the redirect URI's host {domain!r}: WeChat matches it exactly (www.example.com "
            "and example.com differ; sub-domains are not covered) and refuses the login",
            f"enter {domain} on the Open Platform (管理中心 > 网站应用 > 开发信息), or fix "
            "--base-url / SERVER_NAME")


#: The settings that make Flask write the session cookie ``Secure``: its own, and Flask
#: 3.1's ``SESSION_COOKIE_PARTITIONED`` (CHIPS), which Werkzeug writes ``Secure`` too.
SECURE_COOKIE_SETTINGS = ("SESSION_COOKIE_SECURE", "SESSION_COOKIE_PARTITIONED")


def secure_cookie_dropped(config: t.Mapping[str, t.Any], callback: str) -> str | None:
    """The setting for which browsers would keep no session cookie at all on the way to
    ``callback``, or ``None``: one that makes it ``Secure`` (:data:`SECURE_COOKIE_SETTINGS`)
    on a site served over http, away from this machine (where an http page is a secure
    context, which may keep ``Secure`` cookies)."""
    parts = urlsplit(callback)
    if not (parts.scheme == "http" and parts.hostname
            and not is_loopback_host(parts.hostname)):
        return None
    return next((key for key in SECURE_COOKIE_SETTINGS if config.get(key)), None)


def check_session_cookie_reaches_callback(deployment: Deployment) -> t.Iterator[Finding]:
    """The session cookie carries each login's state to the callback: the browser must
    keep it, and send it there."""
    for connection, uri in deployment.urls.redirect_uris.items():
        setting = secure_cookie_dropped(deployment.config, uri)
        if setting is not None:
            secure = ("" if setting == "SESSION_COOKIE_SECURE"
                      else " (a partitioned cookie is always Secure)")
            yield problem(
                f"{setting} is on but the callback {uri} is http{secure}: browsers keep "
                "no Secure cookie from an http page, so every login (and every session of "
                "the site) is forgotten and ends on 'This login link is no longer valid'",
                "serve the site over https (behind a proxy: ProxyFix, see docs/deploying), "
                f"or set {setting} only where it is",
                connection)
            continue
        reason = misses_callback(deployment.session_cookie, uri)
        if reason is not None:
            yield problem(
                f"{reason}: the browser does not send it there, and every login ends on "
                "'This login link is no longer valid'",
                "unset SESSION_COOKIE_PATH and SESSION_COOKIE_DOMAIN (Flask's defaults cover "
                "the whole site), or make them include the callback",
                connection)


def check_session_lifetime(deployment: Deployment) -> t.Iterator[Finding]:
    """Flask refuses a signed session cookie older than ``PERMANENT_SESSION_LIFETIME``
    (permanent session or not): the login's state, set at its start, must outlive the
    time a person takes to scan and confirm."""
    lifetime = deployment.config.get("PERMANENT_SESSION_LIFETIME")
    seconds = lifetime.total_seconds() if isinstance(lifetime, timedelta) else lifetime
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return
    ttl = deployment.settings.state_ttl
    if seconds < ttl:
        yield warning(
            f"PERMANENT_SESSION_LIFETIME is {seconds:g} seconds, less than WECHAT_QR_STATE_TTL "
            f"({ttl} seconds): Flask refuses a session cookie older than that, so a login "
            f"that takes longer than {seconds:g} seconds from its start to WeChat's answer "
            "ends on 'This login link is no longer valid'",
            "make PERMANENT_SESSION_LIFETIME at least WECHAT_QR_STATE_TTL (WeChat's QR codes "
            "last 300 seconds), or lower WECHAT_QR_STATE_TTL to it")


def check_session_cookie_covers_subdomains(deployment: Deployment) -> t.Iterator[Finding]:
    """A login on the routes' own subdomain logs people in there only, unless the session
    cookie covers the site's other subdomains (a shop whose button sends people through
    the login, and back)."""
    config = deployment.config
    server_name = hostname_of(str(config.get("SERVER_NAME") or ""))
    if not (deployment.other_subdomains and server_name):
        return
    domain = deployment.session_cookie.domain
    if domain and (server_name == domain or server_name.endswith("." + domain)):
        return
    hosts = _and([f"{sub}.{server_name}" if sub else server_name
                  for sub in deployment.other_subdomains])
    login_host = ".".join(filter(None, [deployment.subdomain, server_name]))
    said = f"{domain!r}" if domain else "not set, so the cookie is for one host only"
    yield warning(
        f"the site has pages on {hosts}, but SESSION_COOKIE_DOMAIN is {said}: someone who "
        f"logs in with WeChat (on {login_host}) is logged in there, and comes back to those "
        "pages logged out",
        f"set SESSION_COOKIE_DOMAIN = {server_name!r} (docs: deploying, 'On several hosts'), "
        "or ignore this where no page there needs a login")


#: What each route of the extension is for, said when a route of the host answers its URL
#: instead; and whether these settings use it at all.
_ROUTE_ROLES: dict[str, tuple[str, t.Callable[[Settings], bool]]] = {
    "callback": ("WeChat sends every login back to it (the redirect URI), so none would "
                 "finish", lambda settings: True),
    "login": ("the login button leads there, so no login would start", lambda settings: True),
    "qr": ("it is the page with the embedded QR code", lambda settings: True),
    "link": ("account pages link WeChat through it", lambda settings: True),
    "unlink": ("account pages unlink WeChat through it", lambda settings: True),
    "bind": ("it asks people to bind their WeChat to an account or create one (ask_binding)",
             lambda settings: any(conn.association == "ask_binding"
                                  for conn in settings.connections.values())),
    "jwks": ("receivers fetch the ID tokens' public keys there",
             lambda settings: bool(settings.id_token_private_key)),
    "avatar": ("it serves the stored avatars (WECHAT_QR_STORE_AVATARS)",
               lambda settings: settings.store_avatars),
}


def shadowed_route_problem(route: ShadowedRoute, url_prefix: str) -> tuple[str, str]:
    """What is wrong, and the fix, when a route of the host answers the extension's
    ``route``: in the check and, for a callback, at start-up."""
    view = route.endpoint.split(".", 1)[-1]
    role = _ROUTE_ROLES.get(view, ("", lambda settings: True))[0]
    methods = "" if route.methods == ("GET",) else f" ({_and(list(route.methods))})"
    what = (f"this app's route {route.host_rule} ({route.host_endpoint}) answers "
            f"{route.url}{methods} before the extension's {route.endpoint}"
            + (f": {role}" if role else ""))
    return what, (f"give {route.host_endpoint} another path, or set WECHAT_QR_URL_PREFIX "
                  f"(now {url_prefix or '/'}) to a prefix no route of the site uses, "
                  "e.g. the default /auth (the redirect URI's path needs no registration "
                  "with WeChat)")


def check_shadowed_routes(deployment: Deployment) -> t.Iterator[Finding]:
    """Werkzeug gives a request to the first rule that matches: a route of the host with
    the path of one of the extension's (an empty WECHAT_QR_URL_PREFIX and the host's own
    ``/<page>/login``, or a static ``/wechat/callback``) takes it over."""
    settings = deployment.settings
    for route in deployment.shadowed_routes:
        role = _ROUTE_ROLES.get(route.endpoint.split(".", 1)[-1])
        if role is not None and not role[1](settings):
            continue
        yield problem(*shadowed_route_problem(route, settings.url_prefix), route.connection)


def check_login_pages_reachable(deployment: Deployment) -> t.Iterator[Finding]:
    """A members-only site (a ``before_request`` that sends every visitor who is not logged
    in to its login page) must let them reach the login's pages, or logging in with WeChat
    goes in a circle back to that login page."""
    for withheld in deployment.withheld_pages:
        if withheld.error is not None:
            yield warning(
                f"could not tell whether a visitor who is not logged in reaches "
                f"{withheld.page} ({withheld.path}): a before_request hook of the site "
                f"raised {withheld.error} when the check ran it",
                "open that page in a private browser window (logged out) and make sure it "
                "is the login's page, not the site's login page")
            continue
        answer = f"{withheld.status}" + (f" to {withheld.location}" if withheld.location
                                          else "")
        yield problem(
            f"a visitor who is not logged in cannot reach {withheld.page} ({withheld.path}): "
            f"a before_request hook of the site answers {answer} instead, and logging in "
            "with WeChat cannot finish",
            "let every page of the blueprint 'wechat_qr' (and, with the sandbox, "
            "'wechat_qr_sandbox') through, as docs/deploying.rst 'Members-only sites' "
            "shows: if request.blueprint in ('wechat_qr', 'wechat_qr_sandbox'): return None")


def check_qr_frame_allowed(deployment: Deployment) -> t.Iterator[Finding]:
    """A site-wide Content-Security-Policy without WeChat in its frame sources (Flask-
    Talisman's default ``default-src 'self'``) blocks the embedded QR code: the QR page
    then shows only its link to WeChat's own page."""
    for blocked in deployment.blocked_qr_frames:
        yield warning(
            f"the embedded QR page ({blocked.path}) cannot show WeChat's QR code: this "
            f"site's Content-Security-Policy does not let it frame {blocked.frame_origin}, "
            "so the page shows only its link to WeChat's own QR page (the login button's "
            "redirect is not affected)",
            f"add {blocked.frame_origin} to the policy's frame-src (with Flask-Talisman: "
            f"content_security_policy={{..., 'frame-src': ['\'self\'', "
            f"'{blocked.frame_origin}']}}), or use only the login button",
            blocked.connection)


def check_login_view(deployment: Deployment) -> t.Iterator[Finding]:
    """Someone who follows "Link WeChat" logged out is sent to Flask-Login's login view, and
    the phone page offers it as the other way to log in: one that cannot be built leaves
    them on the "Log in first" page with no way to log in."""
    view = deployment.unbuildable_login_view
    if view is None or deployment.settings.other_login_url:
        return
    yield warning(
        f"Flask-Login's login_view {view!r} cannot be built here (no such endpoint, one "
        "that needs arguments, or your URL defaults raise on the extension's pages, as a "
        "/<lang_code> blueprint's reading g.lang_code does): someone who follows \"Link "
        "WeChat\" logged out gets the \"Log in first\" page with no way to log in, and the "
        "phone page offers no other login",
        "set login_manager.login_view to your login page's endpoint (Flask-AppBuilder: "
        "f\"{type(appbuilder.sm.auth_view).__name__}.login\"); give your URL defaults a "
        "fallback (values.setdefault(\"lang_code\", g.get(\"lang_code\", \"zh\"))); or set "
        "WECHAT_QR_OTHER_LOGIN_URL to its URL")


def check_pages_render(deployment: Deployment) -> t.Iterator[Finding]:
    """The login's pages render in the site's layout (``wechat_qr/base.html``)."""
    if deployment.page_render_error is None:
        return
    yield problem(
        "the login's pages cannot be rendered in your layout: the error page raised "
        f"{deployment.page_render_error} (rendered as for a visitor with no session), so "
        "every page of the login (QR code, bind form, errors) answers 500",
        "give your wechat_qr/base.html what its layout needs, from a context processor "
        "(Flask-AppBuilder's baselayout.html: @app.context_processor returning "
        "appbuilder=appbuilder and base_template=appbuilder.base_template), or extend a "
        "layout that needs nothing (docs: templates)")


def check_async_receivers(deployment: Deployment) -> t.Iterator[Finding]:
    """An ``async def`` receiver of the extension's signals runs through Flask's ``async``
    extra (asgiref), as those of Flask's own signals do: without it, sending the signal
    raises, after the login it tells of was committed."""
    names = deployment.unrunnable_async_receivers
    if not names:
        return
    yield problem(
        f"an async def receiver is connected to {_and(list(names))}, and Flask's async "
        "extra (asgiref) is not installed: each login that sends it ends on a 500 page "
        "after it was committed (the person logged in, later receivers not run)",
        "install Flask with its async extra (pip install \"flask[async]\"), or make the "
        "receivers plain functions")


def check_post_login_page(deployment: Deployment) -> t.Iterator[Finding]:
    """A login started without ``next`` ends at WECHAT_QR_POST_LOGIN_URL (default ``/``),
    as do linking and unlinking WeChat without one and the bind page's *Continue*: on an
    API-first site (Flask-RESTX's ``Api(app)`` at ``/``) or a site whose home is ``/home``,
    nothing of the site answers there. A warning: a reverse proxy may serve that path.
    Not where every connection hands its logins to a business callback URL instead."""
    landing = deployment.post_login_landing
    connections = deployment.settings.connections.values()
    if landing is None or all(conn.callback_url for conn in connections):
        return
    where = (f"{landing.api_view} answers it" if landing.api_view
             else "no route of this app answers a GET there")
    yield warning(
        "a login started without next (and linking or unlinking WeChat) ends at "
        f"WECHAT_QR_POST_LOGIN_URL ({deployment.settings.post_login_url}, {landing.path} "
        f"on this site), but {where}: people land on "
        + ("an API's page" if landing.api_view else "a 404 page") + " right after logging in",
        "set WECHAT_QR_POST_LOGIN_URL to the site's home page (e.g. /home), or pass next to "
        "every login (wechat_login_button(next=request.path)); nothing to do if a reverse "
        "proxy serves that path")


def check_bind_page_binding_field(deployment: Deployment) -> t.Iterator[Finding]:
    """A site's own bind page with a form that does not send the page's ``binding``: such
    a form of a bind page shown before another WeChat login in the same browser binds that
    other WeChat (at a shared computer, a stranger's). A warning: the page works, as
    before the field."""
    filename = deployment.bind_page_without_binding_field
    if filename is None:
        return
    yield warning(
        f"your wechat_qr/bind.html ({filename}) has a form that does not send the page's "
        "binding: a bind page left open while another WeChat login starts in the same "
        "browser (a stranger scanning at a shared computer) binds that other WeChat to the "
        "account whose password is typed on it",
        'add <input type="hidden" name="binding" value="{{ binding }}"> to each of its '
        "forms (a macro that adds it needs the page's context: import it \"with "
        'context"; docs: templates)')


def _split_domain(text: str) -> SplitResult:
    return urlsplit(text if "://" in text else "//" + text)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


#: Every check ``flask wechat-qr check`` runs, in the order their findings are listed.
DEPLOYMENT_CHECKS: tuple[Check, ...] = (
    check_trusted_hosts,
    check_sandbox_credentials,
    check_credentials,
    check_official_account,
    check_secret_key,
    check_callback_url_scheme,
    check_callback_url_method,
    check_issuer_source,
    check_issuer_leads_to_the_keys,
    check_sandbox_in_production,
    check_wechat_endpoints,
    check_redirect_known,
    check_redirect_port,
    check_server_name_override,
    check_redirect_scheme,
    check_redirect_host,
    check_callback_domain_shape,
    check_callback_domain_match,
    check_session_cookie_reaches_callback,
    check_session_lifetime,
    check_session_cookie_covers_subdomains,
    check_shadowed_routes,
    check_login_pages_reachable,
    check_qr_frame_allowed,
    check_login_view,
    check_pages_render,
    check_async_receivers,
    check_post_login_page,
    check_bind_page_binding_field,
)


def run_checks(deployment: Deployment,
               checks: t.Iterable[Check] = DEPLOYMENT_CHECKS) -> Findings:
    """Everything ``checks`` find in ``deployment``."""
    return Findings(tuple(finding for check in checks for finding in check(deployment)))
