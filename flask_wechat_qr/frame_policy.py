"""Whether a page's Content-Security-Policy lets it frame a given origin.

The embedded QR page frames WeChat's QR page (``wxLogin.js``'s iframe); a host's site-wide
policy that limits frames (Flask-Talisman's default ``default-src 'self'`` has no
``frame-src``) blocks it, and the page shows only its fallback link. ``flask wechat-qr
check`` asks this module about the policy the host's hooks put on that page. Only what
decides a frame is read: ``frame-src``, else ``child-src``, else ``default-src`` (CSP
level 3's fallback), in every policy sent (each must allow it).
"""

from __future__ import annotations

import typing as t
from urllib.parse import urlsplit

#: The directives that decide a frame's source, the first present wins.
FRAME_DIRECTIVES = ("frame-src", "child-src", "default-src")


def frame_sources(header: str) -> list[list[str] | None]:
    """Per policy of one ``Content-Security-Policy`` header value (policies separated by
    ``,``): the source list deciding frames, ``None`` where nothing limits them."""
    decided: list[list[str] | None] = []
    for policy in header.split(","):
        directives: dict[str, list[str]] = {}
        for directive in policy.split(";"):
            name, *sources = directive.split() or [""]
            directives.setdefault(name.lower(), sources)  # the first of a name counts
        chosen = next((directives[name] for name in FRAME_DIRECTIVES if name in directives),
                      None)
        decided.append(chosen)
    return decided


def allows_frame(headers: t.Iterable[str], frame_url: str, page_url: str) -> bool:
    """Whether every policy in ``headers`` (the values of the page's
    ``Content-Security-Policy`` headers) lets the page at ``page_url`` frame ``frame_url``."""
    frame, page = urlsplit(frame_url), urlsplit(page_url)
    for header in headers:
        for sources in frame_sources(header):
            if sources is not None and not any(
                    _matches(source, frame, page) for source in sources):
                return False
    return True


def _matches(source: str, frame: t.Any, page: t.Any) -> bool:
    """CSP's source matching, for an http(s) frame (paths are not compared: a path in a
    source only narrows it, and the check errs towards "allowed")."""
    lowered = source.lower().strip()
    if lowered == "'self'":
        return (frame.scheme, frame.netloc.lower()) == (page.scheme, page.netloc.lower())
    if lowered == "*":
        return frame.scheme in ("http", "https")
    if lowered.startswith("'"):
        return False  # 'none', nonces, hashes, keywords: no frame source
    if lowered.endswith(":") and "/" not in lowered:  # a scheme source: https:
        scheme = lowered[:-1]
        return frame.scheme == scheme or (scheme == "http" and frame.scheme == "https")
    parsed = urlsplit(lowered if "://" in lowered else f"//{lowered}")
    if parsed.scheme and parsed.scheme != frame.scheme and not (
            parsed.scheme == "http" and frame.scheme == "https"):
        return False
    host, frame_host = parsed.hostname or "", frame.hostname or ""
    if host.startswith("*."):
        host_ok = frame_host.endswith(host[1:])
    else:
        host_ok = host == frame_host
    if not host_ok:
        return False
    try:
        port = parsed.port
    except ValueError:  # "host:*"
        return True
    return port is None or port == (frame.port or {"http": 80, "https": 443}.get(frame.scheme))
