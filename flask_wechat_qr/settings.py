"""Connection settings: parsed and validated once, at ``init_app`` time.

Each WeChat connection carries the settings of a hosted identity platform's "WeChat QR
code on PC" connection. The flat ``WECHAT_QR_*`` keys describe the single default
connection; ``WECHAT_QR_CONNECTIONS`` (a list of dicts whose keys are the same names
without the prefix, in lower case) describes several.
"""

from __future__ import annotations

import math
import re
import typing as t
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .errors import ConfigurationError
from .i18n import SUPPORTED_LOCALES
from .sandbox.options import SANDBOX_APP_ID, SANDBOX_APP_SECRET
from .urls import (
    IN_PROCESS_ORIGIN,
    WECHAT_API_BASE_URL,
    WECHAT_OPEN_BASE_URL,
    configured_base_url,
    is_local_path,
)

PREFIX = "WECHAT_QR_"

ASSOCIATION_MODES = ("off", "field_matching", "ask_binding")
PROFILE_SYNC_MODES = ("first_login", "each_login", "never")
#: Profile fields WeChat neither verifies nor keeps unique; matching on them hands
#: accounts to strangers.
UNSAFE_MATCH_FIELDS = frozenset(
    {"nickname", "headimgurl", "avatar", "avatar_url", "sex", "province", "city",
     "country", "privilege", "language"}
)
_IDENTIFIER = re.compile(r"[a-z0-9-]{1,31}")

#: Per-connection keys (without prefix) and their defaults.
CONNECTION_DEFAULTS: dict[str, t.Any] = {
    "connection": "wechat",
    "display_name": "WeChat",
    "app_id": None,
    "app_secret": None,
    "callback_url": None,
    "id_token_audience": None,
    "login_only": False,
    "association": "off",
    "match_fields": ("unionid",),
    "profile_sync": "first_login",
    "lang": None,
    "userinfo_lang": None,
    "qr_self_redirect": False,
    "qr_style": "black",
    "qr_href": None,
}

#: App-wide keys (without prefix) and their defaults.
GLOBAL_DEFAULTS: dict[str, t.Any] = {
    "connections": None,
    "open_base_url": WECHAT_OPEN_BASE_URL,
    "api_base_url": WECHAT_API_BASE_URL,
    "sandbox": False,
    "sandbox_prefix": "/wechat-sandbox",
    "sandbox_public_url": None,
    "sandbox_app_name": None,
    "url_prefix": "/auth",
    "http_timeout": 5.0,
    "code_used_wait": 3.0,
    "state_ttl": 600,
    "post_login_url": "/",
    "bind_ttl": 600,
    "bind_attempts_per_binding": 5,
    "bind_attempts_per_address": 20,
    "bind_block_seconds": 900,
    "default_locale": "en",
    "id_token_private_key": None,
    "id_token_secret": None,
    "id_token_published_keys": (),
    "id_token_issuer": None,
    "id_token_ttl": 300,
}


@dataclass(frozen=True)
class ConnectionSettings:
    """One WeChat website application, as configured on this site."""

    identifier: str
    display_name: str
    app_id: str
    app_secret: str = field(repr=False)
    callback_url: str | None
    #: the ID token's ``aud`` for this connection's callback URL (default: the identifier)
    id_token_audience: str | None
    login_only: bool
    association: str
    match_fields: tuple[str, ...]
    profile_sync: str
    lang: str | None
    #: ``None``: the language of the page (``zh_CN`` or ``en``)
    userinfo_lang: str | None
    qr_self_redirect: bool
    qr_style: str
    qr_href: str | None


@dataclass(frozen=True)
class Settings:
    """Everything ``init_app`` read from ``app.config``; never read again after that."""

    connections: dict[str, ConnectionSettings]
    #: ``None``: the sandbox mounted in this app, at the host the browser uses
    open_base_url: str | None
    api_base_url: str
    sandbox: bool
    sandbox_prefix: str
    sandbox_public_url: str | None
    url_prefix: str
    http_timeout: float
    #: seconds a callback whose code WeChat calls used (40163, its double redirect) waits
    #: for the other request of the same login; 0: it does not wait
    code_used_wait: float
    state_ttl: int
    post_login_url: str
    #: the website application's name on the sandbox's phone page (default: the app's name)
    sandbox_app_name: str | None
    #: seconds a pending "bind or create" choice stays valid
    bind_ttl: int
    #: failed binding attempts allowed per pending binding / per client address ...
    bind_attempts_per_binding: int
    bind_attempts_per_address: int
    #: ... within this many seconds (also how long binding then stays blocked)
    bind_block_seconds: int
    #: the pages' language when neither the host nor the browser chooses one
    default_locale: str
    #: RS256 signing key (PEM text, or a path to a PEM file) for ID tokens
    id_token_private_key: str | None = field(repr=False)
    #: HS256 shared secret for ID tokens (instead of a private key)
    id_token_secret: str | None = field(repr=False)
    #: more public keys (PEM) published in the JWKS, e.g. the previous key while rotating
    id_token_published_keys: tuple[str, ...]
    #: the ID token's ``iss`` (default: this site's root URL, from the request)
    id_token_issuer: str | None
    #: seconds an ID token is valid
    id_token_ttl: int

    @property
    def default_connection(self) -> ConnectionSettings:
        return next(iter(self.connections.values()))


def _global(config: t.Mapping[str, t.Any], name: str) -> t.Any:
    """An app-wide key's value, or its default."""
    return config.get(PREFIX + name.upper(), GLOBAL_DEFAULTS[name])


def apply_defaults(config: t.MutableMapping[str, t.Any]) -> None:
    """``setdefault`` every key, so ``app.config`` shows what is in force."""
    for name, value in {**GLOBAL_DEFAULTS, **CONNECTION_DEFAULTS}.items():
        config.setdefault(PREFIX + name.upper(), value)


def load_settings(config: t.Mapping[str, t.Any]) -> Settings:
    """Read and validate every setting; raise :class:`ConfigurationError` on the first problem."""
    sandbox = _bool(_global(config, "sandbox"), PREFIX + "SANDBOX")
    raw_connections = config.get(PREFIX + "CONNECTIONS")
    if raw_connections:
        if not isinstance(raw_connections, (list, tuple)):
            raise ConfigurationError(
                PREFIX + "CONNECTIONS", "must be a list of dicts",
                'Write e.g. [{"connection": "wechat", "app_id": "wx...", "app_secret": "..."}].',
            )
        parsed = [
            _parse_connection(entry, f"{PREFIX}CONNECTIONS[{index}]", sandbox)
            for index, entry in enumerate(raw_connections)
        ]
    else:
        flat = {name: config.get(PREFIX + name.upper(), default)
                for name, default in CONNECTION_DEFAULTS.items()}
        parsed = [_parse_connection(flat, None, sandbox)]

    connections: dict[str, ConnectionSettings] = {}
    for conn in parsed:
        if conn.identifier in connections:
            raise ConfigurationError(
                PREFIX + "CONNECTIONS", f"the identifier {conn.identifier!r} is used twice",
                "Give every connection its own unique identifier.",
            )
        connections[conn.identifier] = conn

    open_base_url: str | None = _base_url(config, "OPEN_BASE_URL")
    api_base_url = _base_url(config, "API_BASE_URL")
    sandbox_prefix = _url_prefix(_global(config, "sandbox_prefix"))
    if sandbox:
        # Left at WeChat's own URLs, the sandbox means the one mounted in this app.
        if not sandbox_prefix:
            raise ConfigurationError(PREFIX + "SANDBOX_PREFIX", "must not be empty",
                                     "Use a path such as '/wechat-sandbox'.")
        if open_base_url == GLOBAL_DEFAULTS["open_base_url"]:
            open_base_url = None
        if api_base_url == GLOBAL_DEFAULTS["api_base_url"]:
            api_base_url = IN_PROCESS_ORIGIN + sandbox_prefix
    public_url = config.get(PREFIX + "SANDBOX_PUBLIC_URL") or None
    if public_url is not None:
        public_url = _base_url(config, "SANDBOX_PUBLIC_URL")

    return Settings(
        connections=connections,
        open_base_url=open_base_url,
        api_base_url=api_base_url,
        sandbox=sandbox,
        sandbox_prefix=sandbox_prefix,
        sandbox_public_url=public_url,
        url_prefix=_url_prefix(_global(config, "url_prefix")),
        http_timeout=_positive_number(config, "HTTP_TIMEOUT"),
        code_used_wait=_seconds_to_wait(config, "CODE_USED_WAIT"),
        state_ttl=math.ceil(_positive_number(config, "STATE_TTL")),
        post_login_url=_local_path(_global(config, "post_login_url"),
                                   PREFIX + "POST_LOGIN_URL"),
        sandbox_app_name=str(config.get(PREFIX + "SANDBOX_APP_NAME") or "") or None,
        bind_ttl=_whole_seconds(config, "BIND_TTL"),
        bind_attempts_per_binding=_whole_seconds(config, "BIND_ATTEMPTS_PER_BINDING"),
        bind_attempts_per_address=_whole_seconds(config, "BIND_ATTEMPTS_PER_ADDRESS"),
        bind_block_seconds=_whole_seconds(config, "BIND_BLOCK_SECONDS"),
        default_locale=_default_locale(config),
        id_token_private_key=_optional_text(config, "ID_TOKEN_PRIVATE_KEY"),
        id_token_secret=_optional_text(config, "ID_TOKEN_SECRET"),
        id_token_published_keys=_text_list(config, "ID_TOKEN_PUBLISHED_KEYS"),
        id_token_issuer=_issuer(config),
        id_token_ttl=_whole_seconds(config, "ID_TOKEN_TTL"),
    )


def _parse_connection(raw: t.Any, where: str | None, sandbox: bool = False) -> ConnectionSettings:
    def key(name: str) -> str:
        return f"{where}[{name!r}]" if where else PREFIX + name.upper()

    if not isinstance(raw, t.Mapping):
        raise ConfigurationError(where or PREFIX + "CONNECTIONS", "must be a dict",
                                 "Each connection is a dict of settings.")
    unknown = set(raw) - set(CONNECTION_DEFAULTS)
    if unknown:
        raise ConfigurationError(
            where or PREFIX + "CONNECTIONS", f"unknown setting(s) {sorted(unknown)}",
            f"Use only: {', '.join(CONNECTION_DEFAULTS)}.",
        )
    values = {**CONNECTION_DEFAULTS, **raw}
    if sandbox and not values["app_id"] and not values["app_secret"]:
        values["app_id"], values["app_secret"] = SANDBOX_APP_ID, SANDBOX_APP_SECRET

    identifier = values["connection"]
    if not isinstance(identifier, str) or not _IDENTIFIER.fullmatch(identifier):
        raise ConfigurationError(
            key("connection"), f"{identifier!r} is not a valid unique identifier",
            "Use 1 to 31 characters: lowercase letters, digits and '-'. It names the connection "
            "in URLs and stored identities, so do not change it once users have logged in.",
        )
    for name, label in (("app_id", "AppID"), ("app_secret", "AppSecret")):
        value = values[name]
        if not isinstance(value, str) or not value.strip():
            raise ConfigurationError(
                key(name), f"the {label} is missing",
                f"Copy the {label} of your website application from open.weixin.qq.com "
                "(管理中心 > 网站应用), or set WECHAT_QR_SANDBOX=True to try the simulated WeChat.",
            )

    callback_url = values["callback_url"] or None
    if callback_url is not None:
        parts = urlsplit(str(callback_url))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(
                key("callback_url"), f"{callback_url!r} is not an http(s) URL",
                "Give the full business URL that receives the ID token, e.g. "
                "https://app.example.com/wechat/done, or leave it unset.",
            )

    association = values["association"]
    if association not in ASSOCIATION_MODES:
        raise ConfigurationError(
            key("association"), f"unknown association mode {association!r}",
            f"Use one of: {', '.join(ASSOCIATION_MODES)}.",
        )

    match_fields = values["match_fields"]
    if isinstance(match_fields, str):
        match_fields = match_fields.split(",")
    if not isinstance(match_fields, (list, tuple)) or not all(
        isinstance(f, str) for f in match_fields
    ):
        raise ConfigurationError(
            key("match_fields"), f"{values['match_fields']!r} is not a list of field names",
            "Write e.g. ('unionid',) or the string 'unionid,email'.",
        )
    match_fields = tuple(f.strip() for f in match_fields if f.strip())
    # Compared case-insensitively: 'NickName' is still the nickname.
    unsafe = sorted({f.lower() for f in match_fields} & UNSAFE_MATCH_FIELDS)
    if unsafe:
        raise ConfigurationError(
            key("match_fields"), f"cannot match accounts on {', '.join(unsafe)}",
            "WeChat lets anyone choose their nickname and avatar, and returns empty sex and "
            "region since 2021, so matching on them would hand accounts to strangers. Match on "
            "'unionid', or on a field your own adapter verified.",
        )
    if association == "field_matching" and not match_fields:
        raise ConfigurationError(
            key("match_fields"), "field_matching needs at least one field",
            "Use ('unionid',) or a field your adapter provides a matcher for.",
        )

    profile_sync = values["profile_sync"]
    if profile_sync not in PROFILE_SYNC_MODES:
        raise ConfigurationError(
            key("profile_sync"), f"unknown profile sync mode {profile_sync!r}",
            f"Use one of: {', '.join(PROFILE_SYNC_MODES)}.",
        )
    lang = values["lang"] or None
    if lang not in (None, "cn", "en"):
        raise ConfigurationError(key("lang"), f"unknown QR page language {lang!r}",
                                 "Use 'cn', 'en' or leave it unset (WeChat's default).")
    userinfo_lang = values["userinfo_lang"] or None
    if userinfo_lang not in (None, "zh_CN", "zh_TW", "en"):
        raise ConfigurationError(key("userinfo_lang"), f"unknown language {userinfo_lang!r}",
                                 "Use 'zh_CN', 'zh_TW', 'en' or leave it unset (the language "
                                 "of the page).")
    qr_style = values["qr_style"]
    if qr_style not in ("black", "white"):
        raise ConfigurationError(key("qr_style"), f"unknown QR style {qr_style!r}",
                                 "Use 'black' (for light pages) or 'white' (for dark pages).")
    qr_href = values["qr_href"] or None
    if qr_href is not None and not (
        str(qr_href).startswith("https://") or str(qr_href).startswith("data:text/css;base64,")
    ):
        raise ConfigurationError(
            key("qr_href"), "WeChat only loads QR stylesheets over https or as a data URI",
            "Use an https:// URL or data:text/css;base64,... (http is blocked as mixed content).",
        )

    return ConnectionSettings(
        identifier=identifier,
        display_name=str(values["display_name"] or "WeChat"),
        app_id=values["app_id"].strip(),
        app_secret=values["app_secret"].strip(),
        callback_url=callback_url,
        id_token_audience=_audience(values["id_token_audience"], key("id_token_audience")),
        login_only=_bool(values["login_only"], key("login_only")),
        association=association,
        match_fields=match_fields,
        profile_sync=profile_sync,
        lang=lang,
        userinfo_lang=userinfo_lang,
        qr_self_redirect=_bool(values["qr_self_redirect"], key("qr_self_redirect")),
        qr_style=qr_style,
        qr_href=qr_href,
    )


def parse_bool(value: t.Any) -> bool | None:
    """``True``/``False`` for booleans and the usual spellings; ``None`` if unrecognised."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
    if isinstance(value, int):
        return bool(value)
    return None


def _bool(value: t.Any, key: str) -> bool:
    parsed = parse_bool(value)
    if parsed is None:
        raise ConfigurationError(key, f"{value!r} is not a boolean", "Use True or False.")
    return parsed


def _base_url(config: t.Mapping[str, t.Any], name: str) -> str:
    key = PREFIX + name
    value = str(config.get(key) or GLOBAL_DEFAULTS.get(name.lower()) or "").rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        default = GLOBAL_DEFAULTS.get(name.lower())
        raise ConfigurationError(key, f"{value!r} is not an http(s) URL",
                                 f"Leave it unset for WeChat ({default})." if default else
                                 "Give the full http(s) URL, e.g. https://sandbox.example.com, "
                                 "or leave it unset.")
    return value


def _url_prefix(value: t.Any) -> str:
    prefix = "/" + str(value or "").strip("/")
    return "" if prefix == "/" else prefix


def _positive_number(config: t.Mapping[str, t.Any], name: str) -> float:
    key = PREFIX + name
    value = config.get(key, GLOBAL_DEFAULTS[name.lower()])
    try:
        number = 0.0 if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = 0.0
    if not (number > 0 and math.isfinite(number)):
        raise ConfigurationError(key, f"{value!r} is not a positive number",
                                 f"Use a number of seconds, e.g. {GLOBAL_DEFAULTS[name.lower()]}.")
    return number


def _seconds_to_wait(config: t.Mapping[str, t.Any], name: str) -> float:
    """Zero or a positive number of seconds, at most a minute (a request waiting longer
    holds a worker for nothing)."""
    key = PREFIX + name
    value = config.get(key, GLOBAL_DEFAULTS[name.lower()])
    try:
        number = -1.0 if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not (0 <= number <= 60):
        raise ConfigurationError(
            key, f"{value!r} is not a number of seconds from 0 to 60",
            f"Use a number of seconds, e.g. {GLOBAL_DEFAULTS[name.lower()]}, or 0 not to wait.")
    return number


def _whole_seconds(config: t.Mapping[str, t.Any], name: str) -> int:
    """A positive whole number (seconds or a count); fractions round up, never to zero."""
    return math.ceil(_positive_number(config, name))


def _optional_text(config: t.Mapping[str, t.Any], name: str) -> str | None:
    value = config.get(PREFIX + name)
    if value is None or value == "":
        return None
    if isinstance(value, bytes):
        value = value.decode()
    if not isinstance(value, str):
        raise ConfigurationError(PREFIX + name, f"must be text, not {type(value).__name__}",
                                 "Give a string (read secrets from the environment).")
    return value


def _text_list(config: t.Mapping[str, t.Any], name: str) -> tuple[str, ...]:
    value = config.get(PREFIX + name) or ()
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(PREFIX + name, "must be a list of PEM texts or file paths",
                                 "Write e.g. [open('old-public.pem').read()].")
    return tuple(value)


def _audience(value: t.Any, key: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigurationError(key, f"{value!r} is not a string",
                                 "Give the one audience the receiver checks, e.g. 'shop-web'.")
    return value


def _issuer(config: t.Mapping[str, t.Any]) -> str | None:
    value = _optional_text(config, "ID_TOKEN_ISSUER")
    if value is not None:
        value = value.rstrip("/")
        parts = urlsplit(value)
        if (parts.scheme not in ("http", "https") or not parts.netloc or parts.query
                or parts.fragment):
            raise ConfigurationError(
                PREFIX + "ID_TOKEN_ISSUER", f"{value!r} is not an http(s) URL",
                "Use this site's public root URL, e.g. https://www.example.com, or leave it "
                "unset to use the URL the request came to.")
    return value


def _default_locale(config: t.Mapping[str, t.Any]) -> str:
    value = config.get(PREFIX + "DEFAULT_LOCALE") or GLOBAL_DEFAULTS["default_locale"]
    if value not in SUPPORTED_LOCALES:
        raise ConfigurationError(PREFIX + "DEFAULT_LOCALE", f"unsupported language {value!r}",
                                 "Use 'en' or 'zh_CN' (Simplified Chinese).")
    return t.cast(str, value)


def configured_issuer(settings: Settings, config: t.Mapping[str, t.Any]) -> str | None:
    """The ID tokens' ``iss`` as configured: ``WECHAT_QR_ID_TOKEN_ISSUER``, else the root
    URL of ``SERVER_NAME``; ``None`` when only a request can tell."""
    return settings.id_token_issuer or configured_base_url(config)


def _local_path(value: t.Any, key: str) -> str:
    text = str(value or "/")
    if not is_local_path(text):
        raise ConfigurationError(key, f"{text!r} is not a path on this site",
                                 "Use a path such as '/' or '/account'.")
    return text
