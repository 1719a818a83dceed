"""ID tokens for a connection's business callback URL.

A front end or service that is not this Flask app cannot read its session; a short-lived
JWT signed by this site lets it trust the login instead. Made with ``joserfc`` (Authlib's
JOSE library: ``authlib.jose`` is deprecated since Authlib 1.7 in favour of it, and Authlib
depends on it), so nothing here is hand-written cryptography.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
import typing as t
import warnings
from dataclasses import dataclass
from urllib.parse import urlsplit

from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import OctKey, RSAKey

from .errors import ConfigurationError, IdTokenError
from .settings import PREFIX, WEBSITE_APP
from .urls import is_local_path

if t.TYPE_CHECKING:
    from .protocols import Identity
    from .settings import ConnectionSettings, Settings

log = logging.getLogger("flask_wechat_qr")

#: Shortest HS256 secret accepted (RFC 7518 3.2: a key at least as long as the hash).
MIN_SECRET_BYTES = 32
#: Smallest RSA key accepted for RS256.
MIN_RSA_BITS = 2048
#: The claim holding the WeChat ids (one object, so they never clash with OIDC claims).
WECHAT_CLAIM = "wechat"
#: Claims the adapter's extra claims can never set: they make the token safe to trust.
PROTECTED_CLAIMS = frozenset({"iss", "sub", "aud", "iat", "exp", "nbf", "auth_time", "jti",
                              "nonce", WECHAT_CLAIM})


@dataclass(frozen=True)
class IdTokenSigner:
    """Signs ID tokens with this site's key and publishes the public half (RS256)."""

    algorithm: str
    key: RSAKey | OctKey
    ttl: int
    #: the public keys a receiver may meet (the signing key first), as JWKs
    public_jwks: tuple[dict[str, t.Any], ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> IdTokenSigner | None:
        """The signer the settings describe; ``None`` if they give no key.

        Raises :class:`ConfigurationError` for a key that cannot sign, or when a
        connection has a business callback URL and there is nothing to sign its tokens with (the
        settings themselves, lifetime and which keys go together, were checked by
        :func:`~flask_wechat_qr.settings.load_settings`).
        """
        private_key, secret = settings.id_token_private_key, settings.id_token_secret
        if private_key:
            key = _rsa_key(private_key, PREFIX + "ID_TOKEN_PRIVATE_KEY", private=True)
            published = [key] + [_rsa_key(pem, PREFIX + "ID_TOKEN_PUBLISHED_KEYS", private=False)
                                 for pem in settings.id_token_published_keys]
            # Each key once (by kid): a rotation that left the new key among the published
            # ones would otherwise list it twice, and some receivers (Node's jose) refuse
            # every token when two keys of the JWKS have its kid.
            jwks: dict[str, dict[str, t.Any]] = {}
            for public in published:
                jwks.setdefault(public.thumbprint(), _public_jwk(public))
            return cls("RS256", key, settings.id_token_ttl, tuple(jwks.values()))
        if secret:
            if len(secret.encode()) < MIN_SECRET_BYTES:
                raise ConfigurationError(
                    PREFIX + "ID_TOKEN_SECRET",
                    f"the secret is shorter than {MIN_SECRET_BYTES} bytes",
                    'Use a long random value, e.g. python -c "import secrets; '
                    'print(secrets.token_urlsafe(48))".')
            return cls("HS256", OctKey.import_key(secret), settings.id_token_ttl)
        with_callback = [c.identifier for c in settings.connections.values() if c.callback_url]
        if with_callback:
            raise ConfigurationError(
                PREFIX + "CALLBACK_URL",
                f"connection {with_callback[0]!r} has a business callback URL but no ID token key",
                "Set WECHAT_QR_ID_TOKEN_PRIVATE_KEY (an RSA private key in PEM, for RS256) or "
                "WECHAT_QR_ID_TOKEN_SECRET (a shared secret of 32+ bytes, for HS256).")
        return None

    @property
    def kid(self) -> str | None:
        return self.public_jwks[0]["kid"] if self.public_jwks else None

    def issue(
        self,
        *,
        issuer: str,
        connection: ConnectionSettings,
        subject: str,
        identity: Identity,
        auth_time: float,
        nonce: str | None = None,
        extra_claims: t.Mapping[str, t.Any] | None = None,
        token_id: str | None = None,
        issued_at: float | None = None,
    ) -> tuple[str, dict[str, t.Any]]:
        """A signed token for ``subject``, who logged in with the WeChat ``identity`` (its
        row), and its claims. ``token_id`` and ``issued_at`` make it again, the same, for a
        login posted once already (WeChat's double redirect, a reload): one login, one token
        (RS256 and HS256 signatures are deterministic).

        ``extra_claims`` (the adapter's) are added but never replace the claims that make
        the token safe to trust (``iss``, ``sub``, ``aud``, times, ``jti``, ``nonce``).
        """
        now = int(issued_at if issued_at is not None else time.time())
        claims: dict[str, t.Any] = {}
        if identity.nickname:
            claims["name"] = identity.nickname
        picture = _picture(identity.avatar_url, issuer)
        if picture:
            claims["picture"] = picture
        claims.update({k: v for k, v in (extra_claims or {}).items()
                       if k not in PROTECTED_CLAIMS})
        # ``app`` only where the openid is not the website application's (QR login), so a
        # receiver of tokens from before Official Accounts sees the same claim.
        wechat = {"connection": connection.identifier,
                  "app": identity.app if identity.app != WEBSITE_APP else None,
                  "openid": identity.openid, "unionid": identity.unionid}
        claims[WECHAT_CLAIM] = {k: v for k, v in wechat.items() if v}
        claims.update(
            iss=issuer,
            sub=subject,
            aud=connection.id_token_audience or connection.identifier,
            iat=now,
            exp=now + self.ttl,
            auth_time=int(auth_time),
            jti=token_id or new_token_id(),
        )
        if nonce:
            claims["nonce"] = nonce
        try:
            json.dumps(claims)
        except (TypeError, ValueError) as exc:
            # The detail is for the operator's log; the person gets the error page.
            log.error("AccountAdapter.id_token_claims gave claims that are not JSON: %s", exc)
            raise IdTokenError() from None
        header: dict[str, t.Any] = {"alg": self.algorithm, "typ": "JWT"}
        if self.kid:
            header["kid"] = self.kid
        return jwt.encode(header, claims, self.key, algorithms=[self.algorithm]), claims

    def expired(self, issued_at: float) -> bool:
        """Whether a token issued at ``issued_at`` is past its lifetime now."""
        return time.time() >= int(issued_at) + self.ttl

    def jwks(self) -> dict[str, t.Any]:
        """The JSON Web Key Set receivers verify RS256 tokens with (no private parts)."""
        return {"keys": [dict(jwk) for jwk in self.public_jwks]}


def _picture(avatar_url: str | None, issuer: str) -> str | None:
    """The ``picture`` claim: an ``https`` URL a receiver can fetch, or this site's own
    stored avatar (a path, see :mod:`.avatars`) on the issuer's origin; nothing else."""
    if not avatar_url:
        return None
    if avatar_url.startswith("https://"):
        return avatar_url
    if is_local_path(avatar_url):
        origin = urlsplit(issuer)
        return f"{origin.scheme}://{origin.netloc}{avatar_url}"
    return None


def new_token_id() -> str:
    """A fresh ``jti``: receivers refuse a token id they have seen (a replay)."""
    return secrets.token_urlsafe(16)


def _rsa_key(value: str, key_name: str, *, private: bool) -> RSAKey:
    """An RSA key from PEM text, or from the PEM file ``value`` names."""
    pem = value
    if "\\n" in value and "\n" not in value:
        raise ConfigurationError(
            key_name, "the PEM text has literal \\n instead of line breaks",
            "Put real line breaks in it, or give the path of the PEM file instead (easier "
            "with environment variables and .env files).")
    if "-----BEGIN" not in value:
        shown = value if len(value) <= 100 and "\n" not in value else "(a long text)"
        try:
            with open(os.path.expanduser(value), encoding="ascii") as file:
                pem = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise ConfigurationError(
                key_name, f"no PEM text, and no readable PEM file at {shown!r} ({reason})",
                "Give the key's PEM text (-----BEGIN ...) or the path of a PEM file.",
            ) from None
    try:
        with warnings.catch_warnings():
            # joserfc warns of small keys; they are refused below with a clear error.
            warnings.simplefilter("ignore", SecurityWarning)
            key = RSAKey.import_key(pem)
    except (JoseError, ValueError, TypeError) as exc:
        raise ConfigurationError(
            key_name, f"not an RSA key in PEM ({type(exc).__name__})",
            "Make one with: openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 "
            "-out id-token.pem",
        ) from None
    if private and not key.is_private:
        raise ConfigurationError(key_name, "this is a public key; signing needs the private one",
                                 "Give the private key (-----BEGIN PRIVATE KEY-----).")
    size = key.raw_value.key_size
    if size < MIN_RSA_BITS:
        raise ConfigurationError(key_name, f"the RSA key has {size} bits",
                                 f"Use an RSA key of at least {MIN_RSA_BITS} bits.")
    return key


def _public_jwk(key: RSAKey) -> dict[str, t.Any]:
    jwk = key.as_dict(private=False)
    jwk.update(kid=key.thumbprint(), use="sig", alg="RS256")
    return jwk
