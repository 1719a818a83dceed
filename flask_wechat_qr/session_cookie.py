"""The site's session cookie, which carries each login's state from its start to the
callback: where browsers send it, read as the session interface sets the cookie (its path
and domain, the domain as Werkzeug writes it), for the login's start and ``flask wechat-qr
check``; and the interface the extension gives Flask's own cookie session
(:class:`HttpsAwareSessionInterface`).
"""

from __future__ import annotations

import typing as t
import zlib
from urllib.parse import urlsplit

from flask import has_request_context, request
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode
from itsdangerous.url_safe import URLSafeSerializerMixin

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


_Key = t.TypeVar("_Key")
_Value = t.TypeVar("_Value")


class _MadeOnce(dict[_Key, _Value]):
    """Each key's value made by ``make`` the first time it is asked for, then kept."""

    def __init__(self, make: t.Callable[[_Key], _Value]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, key: _Key) -> _Value:
        value = self[key] = self._make(key)
        return value


class _KeysDerivedOnce(TimestampSigner):
    """Flask's session signer, each secret key's signing key derived once (an HMAC of the
    salt under the secret key: the same for every cookie), not at every cookie read or
    written."""

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._derived = _MadeOnce(super().derive_key)

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        return self._derived[secret_key]


class _SessionSerializer(URLSafeTimedSerializer):
    """Flask's session serializer, its signer made once per salt (itsdangerous makes one at
    every cookie read or written; a signer keeps nothing of a cookie), its payload
    compressed by :func:`_compress`."""

    default_signer = _KeysDerivedOnce

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        make = super().make_signer  # a TimestampSigner: default_signer's
        self._signers = _MadeOnce[str | bytes | None, TimestampSigner](
            lambda salt: t.cast(TimestampSigner, make(salt)))

    def make_signer(self, salt: str | bytes | None = None) -> TimestampSigner:
        return self._signers[salt]

    def dump_payload(self, obj: t.Any) -> bytes:
        """As itsdangerous's ``URLSafeSerializerMixin.dump_payload`` (JSON, compressed
        where that is shorter, base64), compressed by :func:`_compress`."""
        json = super(URLSafeSerializerMixin, self).dump_payload(obj)
        compressed = _compress(json)
        if len(compressed) < len(json) - 1:
            return b"." + base64_encode(compressed)
        return base64_encode(json)


#: zlib's window for a session (2 ** 12 bytes: a cookie holds at most 4 KB) and the size of
#: its hash table (``memLevel``; zlib's default is 8).
_WINDOW_BITS = 12
_MEMORY_LEVEL = 5


def _compress(data: bytes) -> bytes:
    """``data`` compressed as itsdangerous compresses a session (zlib, level 6), with a
    4 KB window and a smaller hash table: any zlib reader (Flask's own interface,
    itsdangerous) reads it, and a session cookie's payload compresses as well (its length
    is the same in every session tried). zlib's defaults (a 32 KB window, 64 KB of hash)
    set up and zero some 256 KB of memory for each session written: 60-70 us of CPU, and
    the caches' contents, for a payload of a few hundred bytes."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, _WINDOW_BITS, _MEMORY_LEVEL)
    return compressor.compress(data) + compressor.flush()


#: Serializers an interface keeps (one per secret key set: more only where a site changes
#: its keys while it runs, as tests do).
_MAX_SERIALIZERS = 8


class HttpsAwareSessionInterface(SecureCookieSessionInterface):
    """Flask's cookie session, marked ``Secure`` on every https request even when
    ``SESSION_COOKIE_SECURE`` is left at ``False`` (the session carries login state).

    Its signing serializer is the one Flask builds (the same salt, keys, key derivation,
    digest and serializer: each interface reads the other's cookies), built once per
    secret key and its fallbacks rather than at every request: Flask's builds one for
    each cookie it reads or writes, with a trial dump of its serializer, a signer and the
    key's derivation each time, a few percent of a returning WeChat login's work. A
    session's payload is compressed with less of zlib's memory (:func:`_compress`)."""

    def __init__(self) -> None:
        self._serializers: dict[tuple[t.Any, ...], URLSafeTimedSerializer] = {}

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        secret_key = app.secret_key
        if not secret_key:
            return None
        fallbacks = app.config["SECRET_KEY_FALLBACKS"]
        key = (secret_key, tuple(fallbacks) if fallbacks else (), self.salt,
               self.key_derivation, self.digest_method, self.serializer)
        serializer = self._serializers.get(key)
        if serializer is None:
            if len(self._serializers) >= _MAX_SERIALIZERS:
                self._serializers.clear()
            # As Flask's SecureCookieSessionInterface.get_signing_serializer builds it.
            keys: list[str | bytes] = [*(fallbacks or ()), secret_key]  # current key last
            serializer = self._serializers[key] = _SessionSerializer(
                keys,
                salt=self.salt,
                serializer=self.serializer,
                signer_kwargs={"key_derivation": self.key_derivation,
                               "digest_method": self.digest_method},
            )
        return serializer

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(super().get_cookie_secure(app)) or (
            has_request_context() and request.is_secure)
