"""WeChat's login protocols, on Authlib's OAuth client: the website application's QR
login (``snsapi_login``) and an Official Account's web authorization inside WeChat
(``snsapi_userinfo``/``snsapi_base``), which share the ``/sns/*`` API.

Knows WeChat's URLs, parameter order, error codes and encoding quirks; knows nothing of
users, sessions or pages. One :class:`WeChatClient` per connection per app (and one
:class:`OfficialAccountClient` where the connection has an Official Account), each holding
one pooled HTTP session that every request of every thread in this process reuses.
"""

from __future__ import annotations

import functools
import http.client
import http.cookiejar
import json
import logging
import math
import re
import socket
import ssl
import typing as t
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus, urlencode, urlsplit, urlunsplit

import requests
from authlib.consts import default_user_agent
from authlib.integrations.flask_client import FlaskOAuth2App
from authlib.integrations.requests_client import OAuth2Session
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import NewConnectionError

from .deadline import MAX_ANSWER_BYTES, AnswerTooLarge, DeadlineAdapter
from .errors import (
    ConfigurationError,
    InvalidRequest,
    SnapshotUser,
    WeChatAPIError,
    WeChatBusy,
    WeChatTimeout,
    WeChatUnavailable,
    error_for,
)
from .i18n import lazy_gettext as _l
from .placeholders import is_placeholder_avatar, is_placeholder_nickname
from .settings import OFFICIAL_ACCOUNT, WEBSITE_APP

if t.TYPE_CHECKING:
    from authlib.integrations.base_client import FrameworkIntegration
    from authlib.integrations.flask_client import OAuth

    from .settings import ConnectionSettings

log = logging.getLogger("flask_wechat_qr")

SCOPE = "snsapi_login"
QRCONNECT_PATH = "/connect/qrconnect"
#: An Official Account's web authorization (网页授权), only inside WeChat's browser.
OA_AUTHORIZE_PATH = "/connect/oauth2/authorize"
#: The scope of an Official Account token that carries no profile and no ``unionid``.
SILENT_SCOPE = "snsapi_base"
ACCESS_TOKEN_PATH = "/sns/oauth2/access_token"
REFRESH_TOKEN_PATH = "/sns/oauth2/refresh_token"
USERINFO_PATH = "/sns/userinfo"
AUTH_CHECK_PATH = "/sns/auth"
#: The keywords of the calls :meth:`WeChatSession.request` sends the short way.
_SHORT_WAY = frozenset({"headers", "timeout", "allow_redirects"})
#: A query of these characters only is one ``PreparedRequest.prepare_url`` leaves as it is
#: (nothing to requote: RFC 3986's unreserved characters, ``&``, ``=`` and ``+``; no ``%``).
_QUERY_AS_IS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~&=+")


@dataclass(frozen=True)
class WeChatToken:
    """What ``/sns/oauth2/access_token`` (or refresh) returned."""

    openid: str
    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_in: int | None = None
    scope: str | None = None
    unionid: str | None = None
    is_snapshotuser: bool = False
    #: the app of the connection that issued it: its openid is that app's
    app: str = WEBSITE_APP

    @property
    def grants_profile(self) -> bool:
        """Whether ``/sns/userinfo`` answers for this token: not for an Official Account's
        silent ``snsapi_base`` login."""
        return self.scope is None or set(self.scope.split(",")) != {SILENT_SCOPE}

    @classmethod
    def from_response(cls, data: t.Mapping[str, t.Any], app: str = WEBSITE_APP
                      ) -> WeChatToken:
        """The token in an answer of ``app``'s token or refresh endpoint."""
        openid = data.get("openid")
        access_token = data.get("access_token")
        if not _is_wechat_id(openid) or not isinstance(access_token, str):
            raise WeChatUnavailable(_l("WeChat's token answer had no openid or access token."))
        return cls(
            openid=t.cast(str, openid),
            access_token=access_token,
            refresh_token=_text(data.get("refresh_token")),
            expires_in=_seconds(data.get("expires_in")),
            scope=_text(data.get("scope")),
            unionid=_unionid(data),
            is_snapshotuser=str(data.get("is_snapshotuser", "0")) == "1",
            app=app,
        )


@dataclass(frozen=True)
class WeChatProfile:
    """What ``/sns/userinfo`` returned, as WeChat sent it (decoded as UTF-8)."""

    openid: str
    unionid: str | None = None
    nickname: str = ""
    avatar_url: str | None = None
    raw: dict[str, t.Any] = field(default_factory=dict, compare=False)

    @property
    def real_nickname(self) -> str | None:
        """The nickname, unless it is empty or a placeholder (see :mod:`.placeholders`)."""
        return None if is_placeholder_nickname(self.nickname) else self.nickname

    @property
    def real_avatar_url(self) -> str | None:
        """The avatar URL, unless it is missing or WeChat's grey default avatar."""
        return None if is_placeholder_avatar(self.avatar_url) else self.avatar_url

    @classmethod
    def from_response(cls, data: t.Mapping[str, t.Any], *,
                      sandbox_images: bool = False) -> WeChatProfile:
        """The profile in an answer of ``/sns/userinfo``; ``sandbox_images``: the answer is
        the built-in sandbox's, whose avatars are ``data:image/`` URIs."""
        openid = data.get("openid")
        if not _is_wechat_id(openid):
            raise WeChatUnavailable(_l("WeChat's profile answer had no openid."))
        nickname = data.get("nickname")
        return cls(
            openid=t.cast(str, openid),
            unionid=_unionid(data),
            nickname=nickname if isinstance(nickname, str) else "",
            avatar_url=avatar_url(data.get("headimgurl"), sandbox_images=sandbox_images),
            raw=dict(data),
        )


#: WeChat's image hosts, whose ``http://`` avatar URLs are upgraded to ``https://``.
AVATAR_HOST_SUFFIX = ".qlogo.cn"
_SANDBOX_IMAGE = re.compile(r"data:image/(png|jpeg|gif|webp|svg\+xml);base64,[A-Za-z0-9+/=]+")


def avatar_url(value: t.Any, *, sandbox_images: bool = False) -> str | None:
    """An avatar URL any page may show: ``https://`` only (WeChat's own ``http://`` images
    upgraded, as they would be blocked as mixed content); anything else (``javascript:``,
    a ``data:`` URI, a user name in the URL) is dropped. The sandbox's ``data:image/``
    avatars are kept when ``sandbox_images``."""
    if not isinstance(value, str) or not value.isprintable() or "\\" in value:
        return None
    if sandbox_images and _SANDBOX_IMAGE.fullmatch(value):
        return value
    parts = urlsplit(value.strip())
    host = (parts.hostname or "").lower()
    if parts.scheme == "http" and host.endswith(AVATAR_HOST_SUFFIX):
        parts = parts._replace(scheme="https")
    if parts.scheme != "https" or not host or parts.username is not None:
        return None
    return urlunsplit(parts)


#: Longest ``openid`` or ``unionid`` accepted (the identity table's columns hold 128;
#: WeChat's are 28 or 29 characters): a longer one is no answer of WeChat's.
MAX_WECHAT_ID_LENGTH = 128


def _is_wechat_id(value: t.Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_WECHAT_ID_LENGTH


def _unionid(data: t.Mapping[str, t.Any]) -> str | None:
    """An answer's ``unionid``: ``None`` where it has none; refused when it is not one (a
    list or an object cannot be stored, and a unionid is what accounts are matched by)."""
    unionid = data.get("unionid")
    if unionid is None or unionid == "":
        return None
    if not _is_wechat_id(unionid):
        raise WeChatUnavailable(_l("WeChat's answer had a unionid that is not valid."))
    return t.cast(str, unionid)


def _seconds(value: t.Any) -> int | None:
    """A number of seconds (``expires_in``): an integer or a string of ASCII digits, at most
    nine of them; anything else is no lifetime (``"²"`` is a digit to ``str.isdigit`` and
    not to ``int``, and ``int`` refuses a string of more than 4,300 digits)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < 10**9 else None
    if isinstance(value, str) and 0 < len(value) <= 9 and value.isascii() and value.isdigit():
        return int(value)
    return None


def _text(value: t.Any) -> str | None:
    """A text field of an answer (``scope``, ``refresh_token``), ``None`` if not text."""
    return value if isinstance(value, str) and value else None


def _no_constant(name: str) -> t.NoReturn:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    """A JSON number with a fraction or exponent, as Python's float, refused where no float
    holds it (``1e999`` is infinite, which PostgreSQL's and MariaDB's JSON columns refuse:
    a 500, a red team's hostile answer, session 36)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is not a finite number")
    return value


#: WeChat's JSON may hold raw control characters in strings (nicknames): not strict. One
#: decoder for every answer (``json.loads`` with an option builds a new one per call).
#: ``NaN``, ``Infinity`` and numbers too large for a float are no JSON a database's JSON
#: column takes.
_LENIENT_JSON = json.JSONDecoder(strict=False, parse_constant=_no_constant,
                                 parse_float=_finite)


def json_object(resp: requests.Response) -> dict[str, t.Any] | None:
    """WeChat's JSON answer (UTF-8 whatever the Content-Type says), or ``None``."""
    text = resp.content.decode("utf-8", "replace")
    try:
        data = _LENIENT_JSON.decode(text)
    except (ValueError, RecursionError):  # nested deeper than the decoder goes: no answer
        return None
    if _ESCAPED_SURROGATE.search(text) and not _encodes(data):
        return None  # a lone surrogate (``"\\ud800"``): no text a database can store
    if text.count("[") + text.count("{") > MAX_NESTING and _nested_deeper(data, MAX_NESTING):
        return None
    return data if isinstance(data, dict) else None


#: How deep an answer's arrays and objects may nest. WeChat's nest two levels (a profile's
#: ``privilege`` list); the profile is kept as it came, in a JSON column, whose encoding at
#: the flush (and ``json.dumps``) recurse once per level: 960 levels, which the decoder
#: took, ran out of stack there, a 500 (a red team's hostile answer, session 36); MariaDB's
#: ``JSON_VALID`` check refuses more than 32 (a 500 too).
MAX_NESTING = 16


def _nested_deeper(data: t.Any, levels: int) -> bool:
    """Whether ``data`` nests arrays and objects more than ``levels`` deep (a loop, not a
    recursion: the depth is what is in question)."""
    pending: list[tuple[t.Any, int]] = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        for child in value.values() if isinstance(value, dict) else value:  # or a list
            if isinstance(child, (dict, list)):
                if depth + 1 > levels:
                    return True
                pending.append((child, depth + 1))
    return False


#: A ``\\uD800``-``\\uDFFF`` escape: half of a character, which only a pair makes whole.
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _encodes(data: t.Any) -> bool:
    """Whether every string of a decoded answer is whole text (no lone surrogate)."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode_body(resp: requests.Response) -> dict[str, t.Any]:
    """The JSON object of a WeChat API answer, or the typed error it carries.

    WeChat sends ``text/plain`` without a charset, which ``requests`` decodes as
    Latin-1; the bytes are UTF-8. Errors arrive as HTTP 200 with a non-zero ``errcode``.
    """
    if resp.status_code >= 500:
        _not_the_api(resp)
        raise WeChatUnavailable()
    if resp.is_redirect:  # not followed (WeChatSession.request): say where it pointed
        log.warning("WeChat's API answered HTTP %s, a redirect to %s, which is not followed "
                    "(its query would carry the AppSecret or a token); check "
                    "WECHAT_QR_API_BASE_URL and any proxy in front of it",
                    resp.status_code, urlsplit(resp.headers.get("Location", "")).netloc or "?")
        raise WeChatUnavailable()
    data = json_object(resp)
    if data is None:
        _not_the_api(resp)
        raise WeChatUnavailable(
            _l("WeChat answered with something that is not its API. Try again."))
    errcode = data.get("errcode")
    if errcode not in (None, 0, "0"):
        try:
            code = int(errcode)
        except (TypeError, ValueError, OverflowError):  # 1e400 is a float's infinity
            code = -2
        raise error_for(code, str(data.get("errmsg", "")))
    if resp.status_code != 200:
        _not_the_api(resp)
        raise WeChatUnavailable()
    return data


def _not_the_api(resp: requests.Response) -> None:
    """Say to the operator which host answered what, where it was not WeChat's API's JSON:
    an HTML page with HTTP 200 (``WECHAT_QR_API_BASE_URL`` pointing at a web page, a
    captive proxy) or a server error ended every login with only the page's words and an
    ``INFO`` line naming neither (a helper's hunt, session 35). Never the URL's query: it
    carries the AppSecret or a token."""
    log.warning("WeChat's API at %s answered HTTP %s (%s), not its JSON; check "
                "WECHAT_QR_API_BASE_URL and any proxy in front of it",
                urlsplit(resp.url or "").netloc.rpartition("@")[2] or "?", resp.status_code,
                resp.headers.get("Content-Type") or "no Content-Type")


@functools.lru_cache(maxsize=32)
def _credentials_query(app_id: str, app_secret: str) -> str:
    """``appid=...&secret=...``, the start of a token request's query."""
    return urlencode([("appid", app_id), ("secret", app_secret)])


def _environment_settings(url: str) -> dict[str, t.Any]:
    """The proxy and CA-bundle settings requests takes from the environment for ``url``,
    read once, with ``trust_env`` then off.

    With ``trust_env`` on, requests reads them (and ``~/.netrc``) again on every call,
    0.2 ms or more each time; WeChat's API is one host. ``~/.netrc`` is not read at all:
    WeChat takes no HTTP credentials, so any found there could only leak to it.
    """
    with requests.Session() as probe:
        found = probe.merge_environment_settings(url, {}, None, None, None)
    return {"trust_env": False, "proxies": found["proxies"], "verify": found["verify"]}


class ProfileNotGranted(Exception):
    """The token is of a silent ``snsapi_base`` login, which WeChat shares no profile (and
    no ``unionid``) for: the person must be asked with ``snsapi_userinfo``. Not an error
    page: the login flow starts that authorization."""


class WeChatSession(OAuth2Session):
    """Authlib's requests session for one connection, open for the life of the process:
    its connection pool (HTTP keep-alive) serves every call of every thread, the code's
    exchange (:class:`WeChatRemoteApp`) as WeChat's other calls (:meth:`api_get`).
    """

    def __init__(self, *, api_base_url: str, timeout: float) -> None:
        super().__init__(default_timeout=timeout, **_environment_settings(api_base_url))
        #: where WeChat's API is: the host a failed call's log line names
        self.api_base_url = api_base_url
        for scheme in ("https://", "http://"):
            self.mount(scheme, DeadlineAdapter(timeout))
        # WeChat's API sets no cookies, and a jar shared by every person's calls keeps none.
        self.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        # Authlib's User-Agent, as WeChat has always been sent (not requests' own).
        self.headers["User-Agent"] = default_user_agent
        #: :meth:`_checked_headers`' results, by the headers they were made of
        self._headers_checked: dict[t.Any, CaseInsensitiveDict[str | bytes]] = {}
        #: :meth:`_prepared_url`'s prepared parts before the query, by the part as given
        self._bases_prepared: dict[str, str] = {}

    def api_get(self, url: str, *, what: str, retry_busy: bool = False) -> dict[str, t.Any]:
        """``GET`` one of WeChat's API calls (``url`` with its query): the JSON object it
        answered, or the typed error it carries (:func:`decode_body`); a failure to reach
        WeChat is typed too, logged as ``what`` failing, never with the URL (its query holds
        the AppSecret, a code or a token). WeChat's "system busy" (-1) is asked once more
        where ``retry_busy``: it means the call was not looked at."""
        attempts = 2 if retry_busy else 1
        for attempt in range(attempts):
            try:
                # request(), not get(): the stubs give get() requests' own keywords only.
                resp = self.request("GET", url, withhold_token=True)
            except requests.RequestException as exc:
                raise _transport_error(exc, what, self.api_base_url) from None
            try:
                return decode_body(resp)
            except WeChatBusy:
                if attempt + 1 == attempts:
                    raise
                log.warning("WeChat %s answered -1 (busy); retrying once", what)
        raise AssertionError("unreachable")

    def __exit__(self, *exc_info: object) -> None:
        # Authlib's remote apps end each call with ``with session:``: no ``with`` of
        # anyone's closes the pool every call of the process goes through.
        return None  # the pool outlives the block; close() still closes it

    # Authlib's own signature (withhold_token third), which the stubs type keyword by
    # keyword where this takes the rest as **kwargs.
    def request(  # type: ignore[override]
        self, method: str, url: str, withhold_token: bool = False, auth: t.Any = None,
        **kwargs: t.Any,
    ) -> requests.Response:
        """WeChat's API calls (a GET with at most headers, auth and a timeout): prepared
        here and sent without following a redirect; anything else the usual way.

        The usual way (``Session.request``) merges the session's cookies and settings into
        every call again: about 0.2 ms of CPU a call, more than the rest of a returning
        login's own work beyond a hand-written handler's. Here only the session's headers
        and hooks are merged: WeChat is sent no cookies (its API sets none, and the session
        keeps none), the environment's settings were read once
        (:func:`_environment_settings`), and a session given ``auth`` or ``params`` goes the
        usual way. A redirect is answered as WeChat's, never followed: it would carry the
        AppSecret in its query to another host. ``Session.send`` still sends every call, so
        mocks (``responses``, ``requests-mock``) and a host's hooks see them all.
        """
        if (method != "GET" or not _SHORT_WAY.issuperset(kwargs) or self.auth or self.params
                or kwargs.get("allow_redirects") or (auth is None and not withhold_token)):
            return super().request(
                method, url, withhold_token=withhold_token, auth=auth, **kwargs)
        prepared = requests.PreparedRequest()
        prepared.prepare_method(method)
        prepared.url = self._prepared_url(url)
        prepared.headers = self._checked_headers(kwargs.get("headers"))
        # WeChat is sent no cookies: no Cookie header is made, and the request's jar (which
        # only a redirect, never followed, would read) is the session's, which keeps none.
        prepared._cookies = self.cookies
        # No body at all (not ""): requests would frame an empty chunked body on this
        # GET, which some servers answer by closing the kept-alive connection.
        prepared.prepare_body(None, None)
        if auth is not None:
            prepared.prepare_auth(auth)
        prepared.prepare_hooks(self.hooks)
        if self.trust_env:  # a host turned it on again: requests reads the environment
            return self.send(prepared, allow_redirects=False,
                             timeout=kwargs.get("timeout", self.default_timeout))
        # Without the environment, requests' proxies for a call are the session's own (a
        # copy, as requests gives): given here, send() does not parse the URL to find them.
        return self.send(prepared, allow_redirects=False, proxies=self.proxies.copy(),
                         timeout=kwargs.get("timeout", self.default_timeout))

    def _prepared_url(self, url: str) -> str:
        """``url`` as ``PreparedRequest.prepare_url`` gives it (checked, its host
        IDNA-encoded, requoted), its part before the query prepared once: WeChat's calls go
        to a few paths of one API base, their queries (``urlencode``'s, of codes, tokens
        and ids) are mostly left as they are. Any other query is prepared the usual way."""
        base, mark, query = url.partition("?")
        prepared_base = self._bases_prepared.get(base)
        if (prepared_base is None or not _QUERY_AS_IS.issuperset(query)
                or (mark and not query)):  # "?" alone: prepare_url drops it
            made = requests.PreparedRequest()
            made.prepare_url(url, None)
            if prepared_base is None and "#" not in base:
                made_base = requests.PreparedRequest()
                made_base.prepare_url(base, None)
                if len(self._bases_prepared) >= 64:  # bases that keep changing
                    self._bases_prepared.clear()
                self._bases_prepared[base] = t.cast(str, made_base.url)
            return t.cast(str, made.url)
        return f"{prepared_base}{mark}{query}"

    def _checked_headers(self, extra: t.Mapping[str, t.Any] | None
                         ) -> CaseInsensitiveDict[str | bytes]:
        """The session's headers updated with ``extra`` (``None`` values dropped), as
        ``PreparedRequest.prepare_headers`` makes and checks them; a copy for each call.
        Made and checked once for each set of headers (the session's as they are now, the
        call's), not at every call: WeChat's calls send the same few headers each time."""
        try:  # requests' own CaseInsensitiveDict keeps (name, value) pairs in ``_store``
            key = (tuple(self.headers._store.values()),
                   tuple(extra.items()) if extra else ())
            checked = self._headers_checked.get(key)
        except (AttributeError, TypeError):  # another kind of mapping; an unhashable value
            key, checked = None, None
        if checked is None:
            headers = CaseInsensitiveDict(self.headers)
            headers.update(extra or {})
            made = requests.PreparedRequest()
            made.prepare_headers({k: v for k, v in headers.items() if v is not None})
            checked = made.headers
            if key is not None:
                if len(self._headers_checked) >= 16:  # headers that keep changing
                    self._headers_checked.clear()
                self._headers_checked[key] = checked
        return checked.copy()


class WeChatRemoteApp(FlaskOAuth2App):
    """A connection's remote app on Authlib's registry, whose code exchange is WeChat's.

    WeChat's token endpoint is no RFC 6749 one: a GET, ``appid`` and ``secret`` in the query
    in WeChat's documented order (``appid, secret, code, grant_type``), no
    ``redirect_uri``, errors as an ``errcode`` on HTTP 200. Authlib's generic token request,
    bent to that by a client-auth method and a compliance hook, cost a returning login
    4-5% of its CPU (bench/README.md, fifteenth slice) for nothing WeChat uses; the
    exchange is made here the way WeChat's other calls are, on the connection's pooled
    session (:meth:`WeChatSession.api_get`). The remote app's other Authlib calls
    (``get``, ``request``...) are not the extension's and would not use that session:
    every call of WeChat's goes through :attr:`session`.
    """

    def __init__(self, framework: FrameworkIntegration, name: str, *,
                 session: WeChatSession, **kwargs: t.Any) -> None:
        super().__init__(framework, name, **kwargs)
        #: the connection's pooled session, which the exchange goes through
        self.session = session

    def fetch_access_token(self, redirect_uri: str | None = None,
                           **kwargs: t.Any) -> dict[str, t.Any]:
        """WeChat's answer for ``code`` (a keyword, as Authlib's own takes it): a token's
        fields, or the typed error it carries. ``redirect_uri`` is ignored: WeChat wants
        none here. "System busy" (-1) is asked once more: the code was not looked at."""
        try:
            code = quote_plus(kwargs["code"])
        except UnicodeEncodeError:  # half a character: no code WeChat issued
            raise InvalidRequest(
                _l("The WeChat authorization is not valid. Scan the QR code again.")) from None
        query = (f"{_credentials_query(self.client_id, self.client_secret)}"
                 f"&code={code}&grant_type=authorization_code")
        data = self.session.api_get(f"{self.access_token_url}?{query}",
                                    what="access_token", retry_busy=True)
        if "error" in data:
            # OAuth's error shape, not WeChat's (a proxy or a test double): no token,
            # whatever else the answer carries.
            raise WeChatUnavailable()
        return data


class WeChatClient:
    """WeChat's website-login API for one connection."""

    #: which of the connection's apps this client speaks for (its identities' ``app``)
    app = WEBSITE_APP

    def __init__(
        self,
        oauth: OAuth,
        connection: ConnectionSettings,
        *,
        open_base_url: str | t.Callable[[], str],
        api_base_url: str,
        timeout: float,
        sandbox_images: bool = False,
    ) -> None:
        self.connection = connection
        self.open_base_url = open_base_url
        self.api_base_url = api_base_url
        self.timeout = timeout
        #: whether the built-in sandbox answers (its avatars are ``data:image/`` URIs)
        self.sandbox_images = sandbox_images
        self.app_id, app_secret = self.credentials(connection)
        #: The pooled HTTP session every call of this connection goes through (mount
        #: transports on it, e.g. the sandbox's in-process one).
        self.session = WeChatSession(api_base_url=api_base_url, timeout=timeout)
        #: Authlib's remote app for this connection, in this app's own registry: it
        #: exchanges the code (WeChat's other calls have no Authlib counterpart).
        suffix = "" if self.app == WEBSITE_APP else f"_{self.app}"
        self.remote: WeChatRemoteApp = oauth.register(
            f"wechat_qr_{connection.identifier}{suffix}",
            client_cls=WeChatRemoteApp,
            client_id=self.app_id,
            client_secret=app_secret,
            access_token_url=api_base_url + ACCESS_TOKEN_PATH,
            session=self.session,
        )

    @staticmethod
    def credentials(connection: ConnectionSettings) -> tuple[str, str]:
        """The AppID and AppSecret this client logs in with."""
        return connection.app_id, connection.app_secret

    @property
    def open_base(self) -> str:
        """Where browsers reach WeChat's pages (for the built-in sandbox: this site)."""
        base = self.open_base_url
        return base() if callable(base) else base

    # --- URLs the browser is sent to ----------------------------------------------

    def authorize_url(self, redirect_uri: str, state: str, lang: str | None = None) -> str:
        """WeChat's QR page, parameters in WeChat's documented order; ``lang`` (``cn`` or
        ``en``; the connection's setting wins) last.

        WeChat matches this URL strictly (the desktop client shows a blank page when the
        order differs), so it is built here rather than by Authlib, which puts
        ``response_type`` and ``client_id`` first and drops the fragment.
        """
        query = (f"{_qrconnect_query_start(self.connection.app_id, redirect_uri)}"
                 f"&state={quote(state, safe='')}")
        lang = self.connection.lang or lang  # the connection's own setting wins
        if lang:
            query += f"&lang={quote(lang, safe='')}"
        return f"{self.open_base}{QRCONNECT_PATH}?{query}#wechat_redirect"

    def qr_iframe_url(self, redirect_uri: str, state: str, lang: str | None = None) -> str:
        """The ``src`` that WeChat's ``wxLogin.js`` (v3) gives its iframe, built server-side,
        in its order; like it, the optional parameters only when they differ from WeChat's
        defaults: ``lang=en`` (default ``cn``), ``stylelite=1``, ``fast_login=0``."""
        refuse_fragment(redirect_uri)
        conn = self.connection
        params = [
            ("appid", conn.app_id),
            ("scope", SCOPE),
            ("redirect_uri", redirect_uri),
            ("state", state),
            ("login_type", "jssdk"),
            ("self_redirect", "true" if conn.qr_self_redirect else "false"),
            ("style", conn.qr_style),
        ]
        if conn.qr_href:
            params.append(("href", conn.qr_href))
        if (conn.lang or lang) == "en":
            params.append(("lang", "en"))
        if conn.qr_stylelite:
            params.append(("stylelite", "1"))
        if not conn.qr_fast_login:
            params.append(("fast_login", "0"))
        query = urlencode(params, quote_via=quote, safe="")
        return f"{self.open_base}{QRCONNECT_PATH}?{query}"

    # --- API calls ----------------------------------------------------------------

    def exchange_code(self, code: str) -> WeChatToken:
        """``GET /sns/oauth2/access_token``: the code (single use, 5 minutes) for a token,
        through the connection's remote app on Authlib's registry."""
        token = WeChatToken.from_response(self.remote.fetch_access_token(code=code), self.app)
        if token.is_snapshotuser:
            raise SnapshotUser()
        return token

    def refresh(self, refresh_token: str) -> WeChatToken:
        """``GET /sns/oauth2/refresh_token`` (Authlib would POST to the token URL)."""
        data = self._get(REFRESH_TOKEN_PATH, [
            ("appid", self.app_id),
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        return WeChatToken.from_response(data, self.app)

    def userinfo(self, token: WeChatToken, lang: str | None = None) -> WeChatProfile:
        """``GET /sns/userinfo`` with the token and openid in the query; ``lang`` (of region
        names: ``zh_CN``, ``zh_TW``, ``en``): the connection's setting, else ``lang``, else
        WeChat's own default ``zh_CN``. :class:`ProfileNotGranted` without a call for the
        token of a silent login."""
        if not token.grants_profile:
            raise ProfileNotGranted()
        data = self._get(USERINFO_PATH, [
            ("access_token", token.access_token),
            ("openid", token.openid),
            # WeChat's own default is zh_CN.
            ("lang", self.connection.userinfo_lang or lang or "zh_CN"),
        ], retry_busy=True)
        profile = WeChatProfile.from_response(data, sandbox_images=self.sandbox_images)
        if profile.openid != token.openid:
            log.warning("WeChat returned the profile of another openid; refusing it")
            raise WeChatUnavailable()
        if profile.unionid is None and token.unionid:
            profile = WeChatProfile(openid=profile.openid, unionid=token.unionid,
                                    nickname=profile.nickname, avatar_url=profile.avatar_url,
                                    raw=profile.raw)
        return profile

    def check_token(self, access_token: str, openid: str) -> bool:
        """``GET /sns/auth``: whether WeChat still accepts this access token."""
        try:
            self._get(AUTH_CHECK_PATH, [("access_token", access_token), ("openid", openid)])
        except WeChatAPIError as exc:
            if exc.errcode in (40001, 40003, 40014, 42001):
                return False
            raise
        return True

    def _get(self, path: str, params: list[tuple[str, str]], *, retry_busy: bool = False
             ) -> dict[str, t.Any]:
        """WeChat's answer to ``path`` with ``params`` (in their order) in the query."""
        return self.session.api_get(f"{self.api_base_url}{path}?{urlencode(params)}",
                                    what=path, retry_busy=retry_busy)


@functools.lru_cache(maxsize=64)
def _qrconnect_query_start(app_id: str, redirect_uri: str) -> str:
    """The QR page URL's parameters before ``state``, encoded: the same for every login
    that returns to one callback URL (a site has a few), so encoded once (18 us a login
    start, measured in place)."""
    refuse_fragment(redirect_uri)
    return urlencode([
        ("appid", app_id),
        ("redirect_uri", redirect_uri),
        ("response_type", "code"),
        ("scope", SCOPE),
    ], quote_via=quote, safe="")


def refuse_fragment(redirect_uri: str) -> None:
    """WeChat's fast login (desktop WeChat, 2024) puts ``code`` and ``state`` in the wrong
    place of a ``redirect_uri`` with a ``#`` route, and a fragment never reaches a server
    anyway: refused before any visitor is sent to WeChat with one."""
    if "#" in redirect_uri:
        raise ConfigurationError(
            "redirect_uri", f"{redirect_uri!r} has a '#' fragment",
            "Give WeChat a URL your server handles, without '#': the extension's own "
            "/auth/<connection>/callback route (WeChat's fast login misplaces code and state "
            "on a #/route).")


class OfficialAccountClient(WeChatClient):
    """An Official Account's web authorization (网页授权) for one connection: the login of
    visitors inside WeChat's own browser, where a QR code cannot be scanned. The same
    ``/sns/*`` API as the website application, with the Official Account's credentials.
    """

    app = OFFICIAL_ACCOUNT

    @staticmethod
    def credentials(connection: ConnectionSettings) -> tuple[str, str]:
        return connection.oa_app_id, connection.oa_app_secret

    def authorize_url(self, redirect_uri: str, state: str, lang: str | None = None, *,
                      scope: str | None = None) -> str:
        """WeChat's in-app authorization: parameters in exactly WeChat's order (its desktop
        client shows a blank page otherwise), then ``#wechat_redirect``, which WeChat
        requires. ``scope``: the connection's, unless the person must be asked for their
        profile. WeChat has no ``lang`` here: its browser speaks the phone's language."""
        refuse_fragment(redirect_uri)
        query = urlencode([
            ("appid", self.app_id),
            ("redirect_uri", redirect_uri),
            ("response_type", "code"),
            ("scope", scope or self.connection.oa_scope),
            ("state", state),
        ], quote_via=quote, safe="")
        return f"{self.open_base}{OA_AUTHORIZE_PATH}?{query}#wechat_redirect"

    def qr_iframe_url(self, redirect_uri: str, state: str, lang: str | None = None) -> str:
        raise TypeError("an Official Account has no QR code login")

    def userinfo(self, token: WeChatToken, lang: str | None = None) -> WeChatProfile:
        """As the website's, but WeChat's refusal (48001) of a token that was granted the
        profile means a visitor in snapshot mode (快照页), whose ids are virtual."""
        try:
            profile = super().userinfo(token, lang)
        except WeChatAPIError as exc:
            if exc.errcode == 48001:
                raise SnapshotUser() from None
            raise
        if str(profile.raw.get("is_snapshotuser", "0")) == "1":
            raise SnapshotUser()
        return profile


def _transport_error(exc: requests.RequestException, what: str, base_url: str
                     ) -> WeChatTimeout | WeChatUnavailable:
    """The typed error for a ``requests`` failure of the call ``what``, which never carries
    the URL (it has secrets); logged with which host failed and why."""
    log.warning("WeChat %s failed: %s", what, describe_transport_failure(exc, base_url))
    return WeChatTimeout() if isinstance(exc, requests.Timeout) else WeChatUnavailable()


def describe_transport_failure(exc: BaseException, base_url: str) -> str:
    """Which host failed and why, for the operator's log, e.g. ``could not connect to
    api.weixin.qq.com (Connection refused)``.

    Built from the exception types and the operating system's own reason only: the text of
    a ``requests`` or ``urllib3`` error quotes the URL, whose query holds the AppSecret, the
    code or a token.
    """
    parts = urlsplit(base_url)
    host = parts.netloc.rsplit("@", 1)[-1] or base_url
    chain = _causes(exc)
    root = chain[-1]
    proxy = _environment_proxy(base_url)
    if proxy is not None:
        # Before the socket's own reason: "could not connect to api.weixin.qq.com" sent
        # an operator to WeChat's address while the environment's proxy was the one down.
        scheme, where = proxy
        reason = (root.strerror if isinstance(root, OSError) and root.strerror
                  else type(root).__name__)
        if isinstance(exc, requests.exceptions.ProxyError):
            return (f"the proxy {where} (from the environment) on the way to {host} failed "
                    f"({reason})")
        if scheme.startswith("socks") and (isinstance(root, socket.gaierror) or any(
                isinstance(cause, NewConnectionError) for cause in chain)):
            # urllib3 tells a SOCKS proxy's failures as the connection's own
            return (f"could not reach {host} through the proxy {where} (from the "
                    f"environment; the proxy, or its way on, failed: {reason})")
    through = "" if proxy is None else f" (through the proxy {proxy[1]}, from the environment)"
    if isinstance(exc, requests.ConnectTimeout):
        return f"connecting to {host} timed out{through}"
    if isinstance(exc, requests.ReadTimeout):
        return f"{host} did not answer in time (read timeout){through}"
    if isinstance(exc, requests.Timeout):  # the whole call's deadline
        return f"{host} gave no complete answer within WECHAT_QR_HTTP_TIMEOUT{through}"
    if isinstance(exc, AnswerTooLarge):
        return f"{host} answered more than {MAX_ANSWER_BYTES // 1024} KiB (not read further)"
    if isinstance(root, socket.gaierror):
        return f"could not resolve {host} ({root.strerror or 'name lookup failed'})"
    if isinstance(root, ssl.SSLError):
        reason = getattr(root, "verify_message", None) or root.reason or type(root).__name__
        return f"TLS with {host} failed ({reason})"
    if isinstance(root, http.client.RemoteDisconnected):
        return f"{host} closed the connection without answering"
    if isinstance(root, OSError) and root.strerror:
        if any(isinstance(cause, NewConnectionError) for cause in chain):
            return f"could not connect to {host} ({root.strerror})"
        return f"the connection to {host} failed ({root.strerror})"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return f"the answer of {host} broke off ({type(root).__name__})"
    if isinstance(exc, requests.exceptions.ProxyError):
        return f"the proxy to {host} failed ({type(root).__name__})"
    return f"could not reach {host} ({type(root).__name__})"


def _environment_proxy(url: str) -> tuple[str, str] | None:
    """The scheme, and the host and port, of the proxy the environment gives ``url``
    (``HTTPS_PROXY``, ``ALL_PROXY``, unless ``NO_PROXY`` covers it), as the client's session
    took it at start-up (read again here: only a failed call asks); never its credentials,
    whatever they hold (``/``, ``#``, ``@``)."""
    proxy = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
    if not proxy:
        return None
    scheme, separator, rest = proxy.partition("://")
    if not separator:
        scheme, rest = "http", proxy
    where = rest.rsplit("@", 1)[-1].split("/", 1)[0]
    return (scheme.lower(), where) if where else None


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it, outermost first: ``requests`` wraps ``urllib3``'s errors
    in its arguments, ``urllib3`` the socket's in ``reason`` or ``__cause__``."""
    chain = [exc]
    while len(chain) < 10:
        current = chain[-1]
        reason = getattr(current, "reason", None)
        candidates = [reason, current.__cause__, current.__context__, *current.args]
        found = next((c for c in candidates if isinstance(c, BaseException)
                      and c not in chain), None)
        if found is None:
            break
        chain.append(found)
    return chain
