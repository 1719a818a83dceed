"""What counts as a safe place to send a browser, and where this site and WeChat live.

Pure predicates on strings (no app, no request): the views, the deployment checks, the
sandbox and a host's own login form use the same rules.
"""

from __future__ import annotations

import ipaddress
import logging
import typing as t
from urllib.parse import SplitResult, quote, urlsplit, urlunsplit

from werkzeug.urls import iri_to_uri

from .errors import InvalidRequest
from .i18n import lazy_gettext as _l

log = logging.getLogger("flask_wechat_qr")

#: Longest ``next`` accepted; anything longer is refused before any work is done.
MAX_NEXT_LENGTH = 2048
#: WeChat's own origins: its pages (the QR code) and its API.
WECHAT_OPEN_BASE_URL = "https://open.weixin.qq.com"
WECHAT_API_BASE_URL = "https://api.weixin.qq.com"
#: Origin standing for the sandbox mounted in this very app, reached in-process; https, as
#: WeChat's API is: a site that sends every http request to https (Flask-Talisman's
#: default, a hand-written ``before_request``) would redirect the extension's own calls.
IN_PROCESS_ORIGIN = "https://wechat-sandbox.invalid"
#: The sandbox's simulated image host (its avatars), reached in-process too; the avatar
#: downloader accepts it only where the sandbox is on. ``.invalid`` never resolves.
SANDBOX_IMAGE_ORIGIN = "https://wechat-sandbox-images.invalid"
#: Where under the sandbox's prefix its image host serves avatars (as WeChat's ``/mmopen``).
SANDBOX_IMAGE_PATH = "/mmopen"


def is_local_path(value: str) -> bool:
    """Whether ``value`` is a path on this site, so redirecting to it is no open redirect:
    no scheme, no host (``//``, or ``/\\`` which browsers read as ``//``), no control
    characters."""
    if (not value.startswith("/") or value.startswith("//") or "\\" in value
            or has_control_characters(value)):
        return False
    parts = urlsplit(value)
    return not (parts.scheme or parts.netloc)


def safe_next(value: str | None, this_host: str | None = None,
              served: t.Callable[[SplitResult], bool] | None = None) -> str | None:
    """``value`` if it is a path on this site, else ``None`` (no open redirects). With
    ``this_host`` (``request.host``), an ``http(s)`` URL of that very host, as Flask-AppBuilder
    writes ``next``, is taken as its path. With ``served`` too, an ``http(s)`` URL of
    another host is kept whole where ``served(urlsplit(value))`` says the site answers it
    (the login's pages ask the site's own URL map: a page of its ``shop.`` subdomain).

    For a host's own login form too: ``redirect(safe_next(request.args.get("next"),
    request.host) or "/")``. :class:`~flask_wechat_qr.errors.InvalidRequest` (a 400 page)
    for a value longer than :data:`MAX_NEXT_LENGTH`, which no honest link carries.
    """
    if not value:
        return None
    if len(value) > MAX_NEXT_LENGTH:
        raise InvalidRequest(_l("The return address is too long. Start the login again."))
    if not is_local_path(value) and this_host and not has_control_characters(value):
        try:
            parts = urlsplit(value)
        except ValueError:  # an unbalanced "[" of an IPv6 address: no URL of this site
            log.info("ignored an off-site next parameter")
            return None
        if parts.scheme.lower() in ("http", "https") and \
                parts.netloc.lower() == this_host.lower():
            value = urlunsplit(("", "", parts.path or "/", parts.query, parts.fragment))
        elif served is not None and "\\" not in value and served(parts):
            return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/",
                               parts.query, parts.fragment))
    if not is_local_path(value):
        log.info("ignored an off-site next parameter")
        return None
    return value


def under_mount_point(path: str, script_root: str) -> str:
    """A local ``path`` (``next``, the post-login URL) for an app mounted under
    ``script_root`` (its ``SCRIPT_NAME``, e.g. ``/site``, or ``""``): written without the
    mount point, as ``request.path`` and the default ``/`` are, it gets it; one that
    already starts with it (``url_for`` and ``request.url`` include it) is kept."""
    if not script_root or not path.startswith("/"):
        return path
    # url_for's is percent-encoded; a pending binding keeps its next as a URI (iri_to_uri)
    for root in (script_root, quote(script_root, safe="/"), iri_to_uri(script_root)):
        rest = path[len(root):] if path.startswith(root) else None
        if rest is not None and (not rest or rest[0] in "/?#"):
            return path
    mounted = script_root + path
    # A mount point from a hostile proxy header (X-Forwarded-Prefix: //evil.example through
    # ProxyFix) leads nowhere else: the path as it was.
    return mounted if is_local_path(mounted) else path


def avatar_for_browser(url: str | None, script_root: str) -> str | None:
    """An avatar URL a browser can load: the sandbox's image host (an ``.invalid`` origin
    only the extension's downloader reaches in-process) serves the same images at this
    site's own path."""
    if url and url.startswith(SANDBOX_IMAGE_ORIGIN + "/"):
        return script_root + url[len(SANDBOX_IMAGE_ORIGIN):]
    return url


def hostname_of(host: str) -> str:
    """The name in a ``Host`` header or ``SERVER_NAME`` (``example.com:8000``,
    ``[::1]:5000``), without its port or an IPv6 address's brackets, lower-case: as
    ``urlsplit(url).hostname`` gives it for a URL at that host."""
    try:
        return urlsplit("//" + host).hostname or ""
    except ValueError:  # an unbalanced bracket
        return ""


def has_control_characters(value: str) -> bool:
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in value)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is this machine (``localhost``, ``127.x``, ``::1``, ``0.0.0.0``):
    a phone, or WeChat's redirect of another visitor, cannot reach it."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def port_of(url: SplitResult) -> int | None:
    """The port a URL reaches, its scheme's default where it names none (80, 443);
    ``None`` for an invalid port or an unknown scheme."""
    try:
        port = url.port
    except ValueError:
        return None
    return port or {"http": 80, "https": 443}.get(url.scheme.lower())


def configured_base_url(config: t.Mapping[str, t.Any]) -> str | None:
    """The site's public root URL as Flask's own settings give it (``SERVER_NAME``,
    ``PREFERRED_URL_SCHEME``, ``APPLICATION_ROOT``), without a trailing slash; ``None``
    without ``SERVER_NAME``."""
    server_name = config.get("SERVER_NAME")
    if not server_name:
        return None
    scheme = config.get("PREFERRED_URL_SCHEME") or "http"
    root = str(config.get("APPLICATION_ROOT") or "/").rstrip("/")
    return f"{scheme}://{server_name}{root}"
