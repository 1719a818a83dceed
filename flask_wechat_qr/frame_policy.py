"""Content-Security-Policy as it concerns frames: what a page may frame, and who may frame it.

The embedded QR page frames WeChat's QR page (``wxLogin.js``'s iframe); a host's site-wide
policy that limits frames (Flask-Talisman's default ``default-src 'self'`` has no
``frame-src``) blocks it, and the page shows only its fallback link. ``flask wechat-qr
check`` asks this module about the policy the host's hooks put on that page. Only what
decides a frame is read: ``frame-src``, else ``child-src``, else ``default-src`` (CSP
level 3's fallback), in every policy sent (each must allow it). The other way round,
:func:`with_frame_ancestors` lets this site frame a page a host's policy forbids to be
framed (the self-redirect callback, see :func:`.delivery.let_this_site_frame`).
"""

from __future__ import annotations

import typing as t
from urllib.parse import urlsplit

from .urls import port_of

#: The directives that decide a frame's source, the first present wins.
FRAME_DIRECTIVES = ("frame-src", "child-src", "default-src")


def _policies(header: str) -> list[list[tuple[str, list[str], str]]]:
    """One ``Content-Security-Policy`` header value (policies separated by ``,``,
    directives by ``;``): per policy, each directive's lower-case name, its sources and
    its text as written."""
    return [[(name.lower(), sources, directive)
             for directive in policy.split(";")
             for name, *sources in [directive.split() or [""]]]
            for policy in header.split(",")]


def frame_sources(header: str) -> list[list[str] | None]:
    """Per policy of one ``Content-Security-Policy`` header value: the source list deciding
    frames, ``None`` where nothing limits them."""
    decided: list[list[str] | None] = []
    for policy in _policies(header):
        directives: dict[str, list[str]] = {}
        for name, sources, _text in policy:
            directives.setdefault(name, sources)  # the first of a name counts
        decided.append(next((directives[name] for name in FRAME_DIRECTIVES
                             if name in directives), None))
    return decided


def with_frame_ancestors(header: str, needed: list[str]) -> str:
    """A ``Content-Security-Policy`` header value whose ``frame-ancestors`` directives
    include the ``needed`` sources (``'none'`` giving way); everything else as written."""
    policies = []
    for policy in _policies(header):
        directives: list[str] = []
        for name, sources, text in policy:
            present = {source.lower() for source in sources}
            missing = [source for source in needed if source.lower() not in present]
            if name == "frame-ancestors" and missing:
                kept = [source for source in sources if source.lower() != "'none'"]
                text = " ".join([text.split()[0], *kept, *missing])
                text = f" {text}" if directives else text
            directives.append(text)
        policies.append(";".join(directives))
    return ",".join(policies)


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
    return port is None or port == port_of(frame)
