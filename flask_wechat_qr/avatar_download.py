"""Downloading an avatar from WeChat's image hosts, and from nowhere else.

A profile's ``headimgurl`` is text from WeChat's answer; fetching whatever it says would
let it point this server at its own network (``http://169.254.169.254/``, an admin page on
loopback): the reason some WeChat libraries never store avatars. So a download:

* goes only to ``https`` on port 443 of a ``*.qlogo.cn`` host (WeChat's ``http://`` URLs
  upgraded), named by a host name, never an IP literal, never with a user name in the URL;
* connects only to public addresses: the name is resolved at connect time and refused if
  any address it gives is private, loopback, link-local or otherwise not global (no DNS
  rebinding: the address checked is the address connected to);
* follows no redirect, uses no proxy from the environment, sends no cookie;
* reads at most :data:`MAX_AVATAR_BYTES`, streamed, within one deadline for the whole
  download, and keeps only a JPEG, PNG, GIF or WebP image whose first bytes say so.

The built-in sandbox's image host is allowed too, only where the sandbox is on (its origin
never resolves: ``.invalid``; its answers come from the in-process transport).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
import typing as t
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import requests
from urllib3.connectionpool import HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection

from . import name_lookup
from .connection_pools import ProcessOwnAdapter
from .deadline import TrackedHTTPSConnection, time_left, total_deadline

log = logging.getLogger("flask_wechat_qr")

#: WeChat's image hosts (``thirdwx.qlogo.cn``, ``wx.qlogo.cn``, ...): exact suffix match.
WECHAT_IMAGE_DOMAIN = "qlogo.cn"
#: Largest avatar kept; WeChat's 640 px ones are about 100 KiB.
MAX_AVATAR_BYTES = 1024 * 1024
#: WeChat's last path segment is the size: 0 (640 px), 46, 64, 96 or 132 px.
WECHAT_SIZES = frozenset({"0", "46", "64", "96", "132"})
#: The size kept: WeChat's own default, large enough for any profile picture here.
KEPT_SIZE = "132"
#: The image types kept, by their first bytes (never SVG: it can carry script).
IMAGE_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}


class AvatarRefused(Exception):
    """An avatar URL or answer this extension does not accept (said in the log)."""


@dataclass(frozen=True)
class AvatarImage:
    """A downloaded avatar: its bytes and their (checked) type."""

    content_type: str
    data: bytes


def avatar_source(value: t.Any, extra_hosts: t.Mapping[str, str] | None = None) -> str | None:
    """The URL to download ``value`` (a ``headimgurl``) from, or ``None`` if it is not an
    image on WeChat's hosts (or under the path given for an exact name in ``extra_hosts``:
    the sandbox's).

    ``http://`` is upgraded to ``https://``; the size segment becomes :data:`KEPT_SIZE`
    (rather than the 46 px thumbnail); the query and fragment are dropped.
    """
    if not isinstance(value, str) or not value.isprintable() or "\\" in value:
        return None
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").rstrip(".")
    if (parts.scheme not in ("http", "https") or parts.username is not None
            or parts.password is not None or "@" in parts.netloc or port not in (None, 443)
            or not _allowed_host(host, extra_hosts or {})):
        return None
    if host in (extra_hosts or {}) and not parts.path.startswith((extra_hosts or {})[host]):
        return None
    segments = parts.path.split("/")
    if len(segments) > 2 and segments[-1] in WECHAT_SIZES:
        segments[-1] = KEPT_SIZE
    return urlunsplit(("https", host, "/".join(segments) or "/", "", ""))


def _allowed_host(host: str, extra_hosts: t.Mapping[str, str]) -> bool:
    if not host or _is_ip_literal(host):
        return False
    if host in extra_hosts:
        return True
    return host.endswith("." + WECHAT_IMAGE_DOMAIN) and all(
        label and label.replace("-", "").isalnum() and label.isascii()
        for label in host.split("."))


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host.replace(".", "").isdigit()  # 2130706433, 127.1: still addresses
    return True


def public_address(host: str, port: int, timeout: float) -> str:
    """The address to connect to for ``host``, looked up within ``timeout`` seconds
    (:class:`TimeoutError`): :class:`AvatarRefused` unless every address the name resolves
    to is public (a name resolving to ``127.0.0.1`` is no image host)."""
    found = name_lookup.addresses(host, port, type=socket.SOCK_STREAM, timeout=timeout)
    addresses = [info[4][0] for info in found]
    for address in addresses:
        ip = ipaddress.ip_address(str(address).split("%", 1)[0])
        if not ip.is_global or ip.is_multicast:
            raise AvatarRefused(f"{host} resolves to a non-public address")
    if not addresses:
        raise AvatarRefused(f"{host} resolves to no address")
    return str(addresses[0])


class PublicOnlyConnection(TrackedHTTPSConnection):
    """An https connection that connects only to a public address of its host, the one it
    checked (TLS still verifies the host name)."""

    def _new_conn(self) -> socket.socket:
        try:
            timeout = self.timeout if isinstance(self.timeout, (int, float)) else math.inf
            address = public_address(self.host, self.port, min(timeout, time_left()))
            return connection.create_connection(
                (address, self.port), self.timeout, source_address=self.source_address,
                socket_options=self.socket_options)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"connecting to {self.host} timed out") from exc
        except AvatarRefused as exc:
            raise NewConnectionError(self, str(exc)) from exc
        except OSError as exc:
            raise NewConnectionError(self, f"could not connect: {exc}") from exc


class _PublicOnlyPool(HTTPSConnectionPool):
    ConnectionCls = PublicOnlyConnection


class PublicOnlyAdapter(ProcessOwnAdapter):
    """``requests``' adapter over :class:`PublicOnlyConnection`; mounted for ``https://``
    only (nothing is fetched over plain http)."""

    pool_classes = {"https": _PublicOnlyPool}


class _Refuse(requests.adapters.BaseAdapter):
    """What every other scheme gets: no request at all."""

    def send(self, request: requests.PreparedRequest, *args: t.Any,
             **kwargs: t.Any) -> requests.Response:
        raise AvatarRefused("only https is fetched")

    def close(self) -> None:
        return None


def download_session() -> requests.Session:
    """A session for avatars: public https addresses only, no proxy, netrc or cookies from
    the environment (mount the sandbox's transport on it for the sandbox's host)."""
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", _Refuse())
    session.mount("https://", PublicOnlyAdapter(max_retries=0))
    session.headers["Accept"] = ", ".join(IMAGE_SIGNATURES)
    return session


class AvatarDownloader:
    """Downloads avatars under the rules above; :meth:`download` raises
    :class:`AvatarRefused` or a ``requests`` error when it does not get one."""

    def __init__(self, *, timeout: float, session: requests.Session | None = None,
                 max_bytes: int = MAX_AVATAR_BYTES) -> None:
        self.timeout = timeout
        #: more hosts allowed (exact names), each under one path: the sandbox's only
        self.extra_hosts: dict[str, str] = {}
        self.session = session or download_session()
        self.max_bytes = max_bytes

    def allow_sandbox_host(self, origin: str, path: str,
                           transport: requests.adapters.BaseAdapter) -> None:
        """Accept images under ``path`` of the built-in sandbox's image host (``origin``, an
        ``https://`` origin whose name never resolves), answered by ``transport`` in this
        process: for the sandbox only."""
        host = urlsplit(origin).hostname or ""
        if not host.endswith(".invalid"):
            raise ValueError("the sandbox's image host must be a .invalid name")
        self.extra_hosts[host] = path
        self.session.mount(f"https://{host}/", transport)

    def source(self, headimgurl: t.Any) -> str | None:
        """Where ``headimgurl`` would be downloaded from (``None``: nowhere)."""
        return avatar_source(headimgurl, self.extra_hosts)

    def download(self, url: str) -> AvatarImage:
        """The image at ``url``, which must be what :meth:`source` gave."""
        if not url or avatar_source(url, self.extra_hosts) != url:
            raise AvatarRefused("not an image host URL")  # checked again: never trusted
        with total_deadline(self.timeout) as deadline:
            try:
                with self.session.get(url, stream=True, allow_redirects=False,
                                      timeout=self.timeout) as response:
                    image = self._read(response)
            except requests.RequestException:
                if deadline.expired:
                    raise requests.Timeout(f"no whole avatar within {self.timeout:g} s") \
                        from None
                raise
        if deadline.expired:  # the socket shut at the deadline may read as a clean end
            raise requests.Timeout(f"no whole avatar within {self.timeout:g} s")
        return image

    def _read(self, response: requests.Response) -> AvatarImage:
        if response.is_redirect or response.status_code != 200:
            raise AvatarRefused(f"the image host answered {response.status_code}")
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type not in IMAGE_SIGNATURES:
            raise AvatarRefused(f"not an image type this extension keeps: {content_type!r}")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise AvatarRefused(f"larger than {self.max_bytes} bytes")
        data = bytearray()
        for chunk in response.iter_content(64 * 1024):
            data += chunk
            if len(data) > self.max_bytes:
                raise AvatarRefused(f"larger than {self.max_bytes} bytes")
        if not bytes(data).startswith(IMAGE_SIGNATURES[content_type]) or (
                content_type == "image/webp" and data[8:12] != b"WEBP"):
            raise AvatarRefused(f"the bytes are not {content_type}")
        return AvatarImage(content_type, bytes(data))
