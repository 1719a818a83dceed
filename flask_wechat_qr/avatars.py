"""Durable avatars: a copy of each WeChat avatar, kept by this site and served by it.

WeChat's avatar URLs stop working when the person changes their avatar, and some are
``http://`` (mixed content on an https page). With ``WECHAT_QR_STORE_AVATARS`` on, a login
that reads the profile (an identity's first, and each one under ``each_login`` sync)
stores the avatar it names, unless already stored, through an :class:`AvatarStore` (a table
on the host's ``db`` by default), and the identity's ``avatar_url`` becomes this site's
``/auth/avatars/<key>``. A failed download never fails the login: the log says why and the
identity keeps WeChat's URL.

An avatar's key is a hash of its (normalised) WeChat URL: WeChat gives a changed avatar a
new URL, so what is stored under a key never changes and may be cached for a year. A later
refresh of profiles off the login's path only has to call :meth:`AvatarKeeper.stored_url`
with the profile it read.
"""

from __future__ import annotations

import hashlib
import logging
import re
import typing as t

import requests
import sqlalchemy as sa
from flask import Response, g, has_app_context, has_request_context, request

from .avatar_download import IMAGE_SIGNATURES, AvatarDownloader, AvatarImage, AvatarRefused
from .column_types import MYSQL_DIALECTS
from .placeholders import is_placeholder_avatar

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

    from .client import WeChatProfile

log = logging.getLogger("flask_wechat_qr")

__all__ = ["AvatarImage", "AvatarKeeper", "AvatarStore", "DatabaseAvatarStore"]

#: What a key looks like (the route answers 404 for anything else, without a lookup).
AVATAR_KEY = re.compile(r"[0-9a-f]{40}")
#: A year: a key's image never changes.
MAX_AGE = 365 * 24 * 3600
#: Where one request remembers the avatars it downloaded (a retried login, the prefetch).
_DOWNLOADS = "_wechat_qr_avatar_downloads"
#: Where work outside a request (the profile refresh) keeps, in ``g``, the path the site is
#: served under, which a stored avatar's path starts with.
SCRIPT_ROOT = "_wechat_qr_script_root"


@t.runtime_checkable
class AvatarStore(t.Protocol):
    """Where stored avatars live. Keys are 40 hexadecimal characters; an image is its bytes
    and content type. ``put`` of a key already stored may be ignored (the image is the
    same); ``get`` of an unknown key is ``None``."""

    def get(self, key: str) -> AvatarImage | None: ...

    def put(self, key: str, image: AvatarImage) -> None: ...

    def delete(self, key: str) -> None: ...


#: How many avatars refused as too large a keeper remembers (then it starts again).
MAX_REMEMBERED_REFUSALS = 10_000
#: What a statement storing an avatar holds beyond its escaped bytes (SQL, key, type).
STATEMENT_ROOM = 1024


class AvatarTooLarge(Exception):
    """An avatar the database cannot take in one statement (said in the log)."""


class DatabaseAvatarStore:
    """The default store: the ``wechat_qr_avatar`` table on the host's ``db``, written in
    the login's own transaction (committed with the identity that points at it)."""

    def __init__(self, db: SQLAlchemy, model: t.Any) -> None:
        self.db = db
        self.model = model

    def get(self, key: str) -> AvatarImage | None:
        row = self.db.session.get(self.model, key)
        return None if row is None else AvatarImage(row.content_type, row.data)

    def put(self, key: str, image: AvatarImage) -> None:
        if self.db.session.get(self.model, key) is None:
            self._fits_a_statement(image)
            self.db.session.add(self.model(key=key, content_type=image.content_type,
                                           data=image.data))

    def _fits_a_statement(self, image: AvatarImage) -> None:
        """MariaDB and MySQL close the connection on a statement longer than their
        ``max_allowed_packet`` (1 MiB on an old MySQL 5.5): the login would die with it
        ("MySQL server has gone away"). :class:`AvatarTooLarge` instead, leaving room for
        the driver's escaping (each byte at most two)."""
        session, mapper = self.db.session, sa.inspect(self.model)
        if session.get_bind(mapper=mapper).dialect.name not in MYSQL_DIALECTS:
            return
        limit = session.execute(sa.text("SELECT @@max_allowed_packet"),
                                bind_arguments={"mapper": mapper}).scalar()
        if limit is not None and 2 * len(image.data) + STATEMENT_ROOM > int(limit):
            raise AvatarTooLarge(
                f"{len(image.data):,} bytes, and the database server takes statements of at "
                f"most {int(limit):,} bytes (max_allowed_packet), with room for escaping")

    def delete(self, key: str) -> None:
        self.db.session.execute(sa.delete(self.model).where(self.model.key == key))


#: A mount point of path segments only, of RFC 3986's path characters (and any beyond
#: ASCII but its controls) without the quote: no query, fragment, escape, backslash,
#: space, quotes or angle brackets (a site that writes the URL into HTML by hand stays
#: whole).
_PLAIN_MOUNT_POINT = re.compile(r"(?:/[A-Za-z0-9\-._~!$&()*+,;=:@\u00a0-\U0010ffff]+)*")


class AvatarKeeper:
    """Decides when an avatar is stored, stores it, and serves it."""

    def __init__(self, store: AvatarStore, downloader: AvatarDownloader, *, enabled: bool,
                 url_prefix: str) -> None:
        self.store = store
        self.downloader = downloader
        #: ``WECHAT_QR_STORE_AVATARS``: off, nothing is downloaded (stored ones are served)
        self.enabled = enabled
        self.url_prefix = url_prefix
        #: keys of avatars the store refused as too large: not downloaded again, nor said,
        #: until the process restarts (at most :data:`MAX_REMEMBERED_REFUSALS`)
        self._too_large: set[str] = set()

    @staticmethod
    def key_for(source: str) -> str:
        """The key of the avatar downloaded from ``source``."""
        return hashlib.sha256(f"wechat-qr-avatar:{source}".encode()).hexdigest()[:40]

    def path_for(self, key: str) -> str:
        """The path this site serves the avatar ``key`` at. Stored on the person's rows and
        shown to others, so a mount point from a hostile proxy header (``X-Forwarded-Prefix``
        through ``ProxyFix``: ``//evil.example``, or a path of the site's with a query that
        turns the rest into a parameter) is not taken unless it is path segments only."""
        root = (request.script_root if has_request_context()
                else g.get(SCRIPT_ROOT, "") if has_app_context() else "")
        path = f"{self.url_prefix}/avatars/{key}"
        return root + path if _PLAIN_MOUNT_POINT.fullmatch(root) and not (
            {".", ".."} & set(root.split("/"))) else path

    def source_of(self, profile: WeChatProfile) -> str | None:
        """Where ``profile``'s avatar would be downloaded from; ``None`` when the setting is
        off, the profile has WeChat's placeholder, or its URL is on no allowed host."""
        headimgurl = profile.raw.get("headimgurl", profile.avatar_url)
        if not self.enabled or not headimgurl or is_placeholder_avatar(str(headimgurl)):
            return None
        return self.downloader.source(headimgurl)

    def prefetch(self, profile: WeChatProfile, before_download: t.Callable[[], object]
                 ) -> WeChatProfile:
        """Download ``profile``'s avatar now if it is not stored yet (no write: the login
        has taken no database lock yet), for :meth:`stored_url` to store later.
        ``before_download``: called once the store was asked and a download follows (to
        give back the connection the store's read took: a download may take seconds)."""
        source = self.source_of(profile)
        if source is None:
            return profile
        key = self.key_for(source)
        if key not in self._too_large and self.store.get(key) is None:
            before_download()
            self._download(source)
        return profile

    def stored_url(self, profile: WeChatProfile) -> str | None:
        """The path of ``profile``'s stored avatar, storing it first if needed; ``None``
        (log said why) when there is none to store or it could not be downloaded."""
        source = self.source_of(profile)
        if source is None:
            return None
        key = self.key_for(source)
        if key in self._too_large:
            return None
        if self.store.get(key) is None:
            image = self._download(source)
            if image is None:
                return None
            try:
                self.store.put(key, image)
            except AvatarTooLarge as error:
                log.warning("WeChat avatar not stored: %s; keeping WeChat's URL (not tried "
                            "again until the site restarts). To store it: SET GLOBAL "
                            "max_allowed_packet=16777216 (and in the server's "
                            "configuration)", error)
                if len(self._too_large) >= MAX_REMEMBERED_REFUSALS:
                    self._too_large.clear()
                self._too_large.add(key)
                return None
            except Exception:
                log.exception("could not store a WeChat avatar; keeping WeChat's URL")
                return None
        return self.path_for(key)

    def _download(self, source: str) -> AvatarImage | None:
        """The image at ``source``, downloaded once per request (``None``: it failed)."""
        downloads: dict[str, AvatarImage | None] = (
            g.setdefault(_DOWNLOADS, {}) if has_app_context() else {})
        if source in downloads:
            return downloads[source]
        image = None
        try:
            image = self.downloader.download(source)
        except AvatarRefused as refused:
            log.warning("WeChat avatar not stored: %s", refused)
        except requests.RequestException as exc:
            log.warning("WeChat avatar not stored: download failed (%s)", type(exc).__name__)
        downloads[source] = image
        return image

    def response(self, key: str) -> Response | None:
        """The stored avatar ``key`` as a long-cached response; ``None`` if unknown."""
        image = self.store.get(key) if AVATAR_KEY.fullmatch(key) else None
        if image is None:
            return None
        content_type = (image.content_type if image.content_type in IMAGE_SIGNATURES
                        else "application/octet-stream")
        response = Response(image.data, content_type=content_type)
        response.set_etag(key)
        response.headers["Cache-Control"] = f"public, max-age={MAX_AGE}, immutable"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
        response.make_conditional(request)  # 304 for a matching If-None-Match
        return response
