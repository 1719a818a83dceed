"""The ``WECHAT_QR_*`` settings: declared once, parsed and validated once, at ``init_app``.

Each WeChat connection carries the settings of a hosted identity platform's "WeChat QR
code on PC" connection. The flat ``WECHAT_QR_*`` keys describe the single default
connection; ``WECHAT_QR_CONNECTIONS`` (a list of dicts whose keys are the same names
without the prefix, in lower case) describes several.

Every key is declared once, as an attribute of :class:`ConnectionSettings` (per connection)
or :class:`Settings` (app-wide) with its default, parser and one-line doc. The defaults,
:func:`load_settings`, :func:`config_from_env` and the docs' configuration reference all
read that table (:data:`SETTINGS`). Rules that involve more than one key come after it,
each as a small named function. Read top to bottom: value parsers, the table, the loader,
the rules.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import re
import typing as t
from dataclasses import dataclass, field, fields
from urllib.parse import quote, urlsplit

from .errors import ConfigurationError
from .i18n import SUPPORTED_LOCALES
from .sandbox.options import (
    SANDBOX_APP_ID,
    SANDBOX_APP_SECRET,
    SANDBOX_OA_APP_ID,
    SANDBOX_OA_APP_SECRET,
    sandbox_app_ids,
)
from .urls import (
    IN_PROCESS_ORIGIN,
    WECHAT_API_BASE_URL,
    WECHAT_OPEN_BASE_URL,
    configured_base_url,
    is_local_path,
)

log = logging.getLogger("flask_wechat_qr")

PREFIX = "WECHAT_QR_"
#: Environment variables of the project's own test suite, not settings.
TEST_PREFIX = PREFIX + "TEST_"

ASSOCIATION_MODES = ("off", "field_matching", "ask_binding")
PROFILE_SYNC_MODES = ("first_login", "each_login", "never")
#: The scopes of an Official Account's web authorization (网页授权).
OA_SCOPES = ("snsapi_userinfo", "snsapi_base")
#: Which app of a connection an identity (an openid) belongs to.
WEBSITE_APP = "website"
OFFICIAL_ACCOUNT = "official_account"
#: The identifier of a connection configured with the flat keys, which gets none.
DEFAULT_IDENTIFIER = "wechat"
#: Profile fields WeChat neither verifies nor keeps unique; matching on them hands
#: accounts to strangers.
UNSAFE_MATCH_FIELDS = frozenset(
    {"nickname", "headimgurl", "avatar", "avatar_url", "sex", "province", "city",
     "country", "privilege", "language"}
)
#: Longest ID token lifetime accepted: a receiver turns it into its own session at once.
MAX_ID_TOKEN_TTL = 3600
_IDENTIFIER = re.compile(r"[a-z0-9-]{1,31}")

#: A value parser: ``(value, key, default) -> parsed value``, naming ``key`` in the
#: :class:`ConfigurationError` it raises. An unset value (``None``) arrives as the default.
Parser = t.Callable[[t.Any, str, t.Any], t.Any]


# --- value parsers -------------------------------------------------------------------


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


def boolean(value: t.Any, key: str, default: t.Any) -> bool:
    parsed = parse_bool(value)
    if parsed is None:
        raise ConfigurationError(
            key, f"{value!r} is not a boolean",
            "Use True or False (in an environment variable or a config file's string: "
            "true/false, yes/no, on/off or 1/0, in any case; empty is false).")
    return parsed


def one_of(choices: tuple[t.Any, ...], unknown: str, fix: str, *,
           blank_means_default: bool = False) -> Parser:
    """A parser accepting only ``choices``; ``unknown`` starts the problem's text."""
    def parse(value: t.Any, key: str, default: t.Any) -> t.Any:
        if blank_means_default and not value:
            value = default
        if value not in choices:
            raise ConfigurationError(key, f"{unknown} {value!r}", fix)
        return value
    return parse


def connection_identifier(value: t.Any, key: str, default: t.Any) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ConfigurationError(
            key, f"{value!r} is not a valid unique identifier",
            "Use 1 to 31 characters: lowercase letters, digits and '-'. It names the connection "
            "in URLs and stored identities, so do not change it once users have logged in.",
        )
    return value


#: Where a website application's credentials are found, for the fix of an error.
WEBSITE_CONSOLE = "your website application from open.weixin.qq.com (管理中心 > 网站应用)"
#: The same for an Official Account's.
OA_CONSOLE = ("your Official Account (服务号) from mp.weixin.qq.com (设置与开发 > 基本配置)")


def credential(label: str, console: str = WEBSITE_CONSOLE) -> Parser:
    """A parser for an AppID or AppSecret (``label``): text, stripped; ``""`` when unset.

    A missing credential is not a start-up error: a site deploys its code before it has
    WeChat credentials, so the connection stays off until they come (``init_app`` warns).
    """
    def parse(value: t.Any, key: str, default: t.Any) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ConfigurationError(
                key, f"the {label} must be text, not {type(value).__name__}",
                f"Copy the {label} of {console} as a string.",
            )
        return value.strip()
    return parse


#: A WeChat Open Platform AppID: ``wx`` and 16 hexadecimal digits.
WECHAT_APP_ID = re.compile(r"wx[0-9a-f]{16}")
#: What every WeChat AppSecret looks like (for the deployment check's warning only).
WECHAT_APP_SECRET = re.compile(r"[0-9a-fA-F]{32}")


@dataclass(frozen=True)
class _AppIdRule:
    """How start-up errors speak of one app's AppID key."""

    key: str
    sandbox_app_id: str
    #: what the sandbox's AppID stands for, and where the real credentials are
    sandbox_problem: str
    sandbox_fix: str
    shape_fix: str


_APP_ID_RULES = (
    _AppIdRule(
        "app_id", SANDBOX_APP_ID, "it is the sandbox's AppID, but WECHAT_QR_SANDBOX is off",
        "Set your website application's AppID and AppSecret (open.weixin.qq.com, 管理中心 > "
        "网站应用), or turn WECHAT_QR_SANDBOX on to use the simulated WeChat.",
        "Copy the AppID of your website application (网站应用) from open.weixin.qq.com, "
        "管理中心 > 网站应用 (not the AppSecret, nor an Official Account's or a mini program's). "
        "For a WeChat-compatible service with other AppIDs set its base URLs or "
        "WECHAT_QR_APP_ID_CHECK=False."),
    _AppIdRule(
        "oa_app_id", SANDBOX_OA_APP_ID,
        "it is the sandbox's Official Account, but WECHAT_QR_SANDBOX is off",
        "Set your Official Account's AppID and AppSecret (mp.weixin.qq.com, 设置与开发 > "
        "基本配置), or turn WECHAT_QR_SANDBOX on to use the simulated WeChat.",
        "Copy the AppID of your Official Account (服务号) from mp.weixin.qq.com, 设置与开发 > "
        "基本配置 (not the AppSecret)."),
)


def _app_ids_are_wechat_shaped(values: dict[str, t.Any], where: str | None) -> None:
    """A mistyped AppID (the website application's or the Official Account's) would fail
    only at WeChat, with every visitor's login."""
    for rule in _APP_ID_RULES:
        app_id = values[rule.key]
        if app_id == rule.sandbox_app_id:
            raise ConfigurationError(_key(rule.key, where), rule.sandbox_problem,
                                     rule.sandbox_fix)
        if app_id and not WECHAT_APP_ID.fullmatch(app_id):
            raise ConfigurationError(
                _key(rule.key, where),
                # Never the whole value: it may be the AppSecret, pasted in the wrong field.
                f"{app_id[:4]!r}... ({len(app_id)} characters) is not a WeChat AppID ('wx' and "
                "16 hexadecimal digits)",
                rule.shape_fix)


@dataclass(frozen=True)
class VerifyFile:
    """The ``MP_verify_*.txt`` file WeChat fetches from the site's root before it accepts
    a web authorization domain (网页授权域名) for an Official Account."""

    name: str
    content: str


_VERIFY_NAME = re.compile(r"MP_verify_[A-Za-z0-9_-]{1,64}\.txt")
_VERIFY_CONTENT = re.compile(r"[A-Za-z0-9_-]{1,128}")


def verify_file(value: t.Any, key: str, default: t.Any) -> VerifyFile | None:
    """``name=content`` (e.g. ``MP_verify_AbC123.txt=AbC123``); unset: no file."""
    if value is None or value == "":
        return None
    if isinstance(value, VerifyFile):
        return value
    name, _, content = str(value).strip().partition("=")
    name, content = name.strip().lstrip("/"), content.strip()
    if not _VERIFY_NAME.fullmatch(name) or not _VERIFY_CONTENT.fullmatch(content):
        raise ConfigurationError(
            key, f"{str(value)[:40]!r} is not name=content of an MP_verify_*.txt file",
            "Download the verification file where you add the web authorization domain "
            "(mp.weixin.qq.com, 设置与开发 > 公众号设置 > 功能设置 > 网页授权域名) and write its "
            "name and its text, e.g. MP_verify_AbC123.txt=AbC123.")
    return VerifyFile(name, content)


def text_or_default(value: t.Any, key: str, default: t.Any) -> str:
    return str(value or default)


def optional_name(value: t.Any, key: str, default: t.Any) -> str | None:
    return str(value or "") or None


def frame_sources(value: t.Any, key: str, default: t.Any) -> str | None:
    """A CSP ``frame-ancestors`` source list; ``""`` or ``False``: no framing header."""
    if value is False or value == "":
        return None
    text = str(value).strip()
    if not text or any(ch in text for ch in ";,\r\n") or not text.isprintable():
        raise ConfigurationError(
            key, f"{value!r} is not a frame-ancestors source list",
            "Use e.g. \"'self'\", \"'self' https://partner.example.com\" or \"'none'\"; or "
            "'' to send no framing header (when the site sets its own).")
    return text


def business_url(value: t.Any, key: str, default: t.Any) -> str | None:
    if not value:
        return None
    parts = urlsplit(str(value))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            key, f"{value!r} is not an http(s) URL",
            "Give the full business URL that receives the ID token, e.g. "
            "https://app.example.com/wechat/done, or leave it unset.",
        )
    if "#" in str(value):
        raise ConfigurationError(
            key, f"{value!r} has a '#' fragment (a front-end route such as #/login)",
            "The ID token is POSTed to this URL and browsers never send the part after '#' "
            "to a server, so a #/route never reaches your server. Give the path your server "
            "handles, e.g. https://app.example.com/wechat/done.",
        )
    return t.cast(str, value)


def audience(value: t.Any, key: str, default: t.Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigurationError(key, f"{value!r} is not a string",
                                 "Give the one audience the receiver checks, e.g. 'shop-web'.")
    return value


def field_names(value: t.Any, key: str, default: t.Any) -> tuple[str, ...]:
    """Field names from a list or a comma-separated string; the unsafe ones refused."""
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(f, str) for f in names):
        raise ConfigurationError(
            key, f"{value!r} is not a list of field names",
            "Write e.g. ('unionid',) or the string 'unionid,email'.",
        )
    names = tuple(f.strip() for f in names if f.strip())
    # Compared case-insensitively: 'NickName' is still the nickname.
    unsafe = sorted({f.lower() for f in names} & UNSAFE_MATCH_FIELDS)
    if unsafe:
        raise ConfigurationError(
            key, f"cannot match accounts on {', '.join(unsafe)}",
            "WeChat lets anyone choose their nickname and avatar, and returns empty sex and "
            "region since 2021, so matching on them would hand accounts to strangers. Match on "
            "'unionid', or on a field your own adapter verified.",
        )
    return names


def qr_stylesheet(value: t.Any, key: str, default: t.Any) -> str | None:
    if not value:
        return None
    if not (str(value).startswith("https://")
            or str(value).startswith("data:text/css;base64,")):
        raise ConfigurationError(
            key, "WeChat only loads QR stylesheets over https or as a data URI",
            "Use an https:// URL or data:text/css;base64,... (http is blocked as mixed content).",
        )
    return t.cast(str, value)


def connection_list(value: t.Any, key: str, default: t.Any) -> list[t.Any] | None:
    """The list of connection dicts (also as JSON text); its dicts are read later."""
    example = '[{"connection": "wechat", "app_id": "wx...", "app_secret": "..."}]'
    if isinstance(value, str) and value.strip():
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigurationError(key, "is not valid JSON",
                                     f"Write a JSON list, e.g. {example}.") from None
    if not value:
        return None
    if not isinstance(value, (list, tuple)):
        raise ConfigurationError(key, "must be a list of dicts", f"Write e.g. {example}.")
    return list(value)


def base_url(value: t.Any, key: str, default: t.Any) -> str | None:
    """An http(s) origin (and path); empty: the default (``None`` if there is none). No
    query or fragment: WeChat's paths and their queries are appended to it."""
    if not value:
        if default is None:
            return None
        value = default
    text = str(value).rstrip("/")
    parts = urlsplit(text)
    fix = (f"Leave it unset for WeChat ({default})." if default else
           "Give the full http(s) URL, e.g. https://sandbox.example.com, or leave it unset.")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(key, f"{text!r} is not an http(s) URL", fix)
    if "?" in text or "#" in text:
        raise ConfigurationError(
            key, f"{text!r} has a query or fragment, which the paths of WeChat's pages and "
            "API calls appended to it would land in", fix)
    return text


def path_prefix(value: t.Any, key: str, default: t.Any) -> str:
    prefix = "/" + str(value or "").strip("/")
    return "" if prefix == "/" else prefix


def optional_page(value: t.Any, key: str, default: t.Any) -> str | None:
    """A path on this site or an ``http(s)`` URL; unset: ``None``."""
    if not value:
        return None
    text = str(value).strip()
    parts = urlsplit(text)
    if not (is_local_path(text) or (parts.scheme in ("http", "https") and parts.netloc)):
        raise ConfigurationError(key, f"{text!r} is neither a path on this site nor a URL",
                                 "Use e.g. '/login' or 'https://www.example.com/login'.")
    return text


def local_path(value: t.Any, key: str, default: t.Any) -> str:
    text = str(value or "/")
    if not is_local_path(text):
        raise ConfigurationError(key, f"{text!r} is not a path on this site",
                                 "Use a path such as '/' or '/account'.")
    return text


def _number(value: t.Any) -> float:
    """``value`` as a number; NaN for what is none (``True`` is not 1 second), which every
    range check refuses."""
    try:
        return math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return math.nan


def positive_seconds(value: t.Any, key: str, default: t.Any) -> float:
    number = _number(value)
    if not (number > 0 and math.isfinite(number)):
        raise ConfigurationError(key, f"{value!r} is not a positive number",
                                 f"Use a number of seconds, e.g. {default}.")
    return number


def whole_number(value: t.Any, key: str, default: t.Any) -> int:
    """A positive whole number (seconds or a count); fractions round up, never to zero."""
    return math.ceil(positive_seconds(value, key, default))


#: The longest period a "seconds or off" setting takes (ten years).
MAX_PERIOD = 10 * 365 * 24 * 3600


def seconds_or_off(value: t.Any, key: str, default: t.Any) -> int:
    """A whole number of seconds up to ten years (fractions round up); ``0`` or blank: off."""
    if value is None or str(value).strip() == "":
        return 0
    number = _number(value)
    if not (0 <= number <= MAX_PERIOD):
        raise ConfigurationError(key, f"{value!r} is not a number of seconds (at most ten "
                                 "years)", f"Use a number of seconds, e.g. {default}, or 0 "
                                 "for never.")
    return math.ceil(number)


def seconds_to_wait(value: t.Any, key: str, default: t.Any) -> float:
    """Zero or a positive number of seconds, at most a minute (a request waiting longer
    holds a worker for nothing)."""
    number = _number(value)
    if not (0 <= number <= 60):
        raise ConfigurationError(
            key, f"{value!r} is not a number of seconds from 0 to 60",
            f"Use a number of seconds, e.g. {default}, or 0 not to wait.")
    return number


def token_lifetime(value: t.Any, key: str, default: t.Any) -> int:
    seconds = whole_number(value, key, default)
    if seconds > MAX_ID_TOKEN_TTL:
        raise ConfigurationError(
            key, f"{seconds} seconds is too long",
            f"Use at most {MAX_ID_TOKEN_TTL} (default {default}): the receiver makes its own "
            "session from the token at once, and a long-lived token is worth stealing.")
    return seconds


def secret_text(value: t.Any, key: str, default: t.Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bytes):
        value = value.decode()
    if not isinstance(value, str):
        raise ConfigurationError(key, f"must be text, not {type(value).__name__}",
                                 "Give a string (read secrets from the environment).")
    return value


def public_keys(value: t.Any, key: str, default: t.Any) -> tuple[str, ...]:
    """PEM texts or file paths: a list, one PEM text, or comma-separated paths."""
    if isinstance(value, str):
        value = (value,) if "-----BEGIN" in value else [p.strip() for p in value.split(",")]
        value = [v for v in value if v]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(key, "must be a list of PEM texts or file paths",
                                 "Write e.g. [open('old-public.pem').read()].")
    return tuple(value)


def issuer_url(value: t.Any, key: str, default: t.Any) -> str | None:
    text = secret_text(value, key, default)
    if text is None:
        return None
    text = text.rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigurationError(
            key, f"{text!r} is not an http(s) URL",
            "Use this site's public root URL, e.g. https://www.example.com, or leave it "
            "unset to use the URL the request came to.")
    return text


# --- the table -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Declared:
    default: t.Any
    parse: Parser
    doc: str
    topic: str
    name: str | None
    testing_default: t.Any = None


def setting(default: t.Any, parse: Parser, doc: str, *, topic: str = "connection",
            name: str | None = None, secret: bool = False,
            testing_default: t.Any = None) -> t.Any:
    """Declare a dataclass attribute as the ``WECHAT_QR_*`` key of the same ``name``.

    ``default`` is the config key's (``apply_defaults`` puts it in ``app.config``); the
    dataclass itself has none, so :func:`load_settings` gives every attribute. ``doc`` is
    the key's one-line reference (reStructuredText); ``topic`` the docs section it is
    listed in; ``secret`` keeps the value out of ``repr``; ``testing_default``, when not
    ``None``, is the default of an app with ``TESTING`` on.
    """
    declared = _Declared(default, parse, doc, topic, name, testing_default)
    return field(repr=not secret, metadata={"wechat_qr_setting": declared})


@dataclass(frozen=True)
class ConnectionSettings:
    """One WeChat website application, as configured on this site."""

    identifier: str = setting(
        DEFAULT_IDENTIFIER, connection_identifier, name="connection",
        doc="The connection's **unique identifier**: 1 to 31 lowercase letters, digits and "
            "``-``. It names the connection in URLs (``/auth/<connection>/login``) and in "
            "stored identities, so never change it once users have logged in.")
    display_name: str = setting(
        "WeChat", text_or_default,
        doc='The **display name**: the login button says "Log in with <display name>", and '
            "it is the title of the embedded QR page.")
    app_id: str = setting(
        None, credential("AppID"),
        doc="The **AppID** (``wx`` and 16 hexadecimal digits) of the website application, "
            "from 管理中心 › 网站应用 on open.weixin.qq.com. Until it and the AppSecret are set "
            "(or :setting:`WECHAT_QR_SANDBOX` is on and neither is) the site starts, with this "
            "connection's login off (a 503 page) and a warning that says which is missing.")
    app_secret: str = setting(
        None, credential("AppSecret"), secret=True,
        doc="The **AppSecret** of that application; only ever sent to WeChat's API. Needed "
            "with the AppID (see there) unless :setting:`WECHAT_QR_SANDBOX` is on and neither "
            "is set: the sandbox stands in only for a connection with no AppID and no "
            "AppSecret.")
    callback_url: str | None = setting(
        None, business_url,
        doc="The **business callback URL**: a page of your own front end or service (full "
            "``http(s)`` URL, accepting POST) that a successful login ends on, with a signed "
            "ID token in a form POST; unset, logins end on this site. Not the authorization "
            "callback domain (授权回调域) registered on open.weixin.qq.com, and not the "
            "extension's own ``/auth/<connection>/callback`` (WeChat's ``redirect_uri``).")
    id_token_audience: str | None = setting(
        None, audience,
        doc="The ``aud`` claim of this connection's ID tokens; unset, the connection's "
            "identifier.")
    login_only: bool = setting(
        False, boolean,
        doc="**Login only**: a WeChat account not linked to (or matched with) a user of this "
            "site never gets a new account.")
    association: str = setting(
        "off", one_of(ASSOCIATION_MODES, "unknown association mode",
                      f"Use one of: {', '.join(ASSOCIATION_MODES)}."),
        doc="**Account identity association**, what a WeChat account this site has never seen "
            "does: ``off`` (a new user), ``field_matching`` or ``ask_binding``.")
    match_fields: tuple[str, ...] = setting(
        ("unionid",), field_names,
        doc="The fields ``field_matching`` tries, in order: a list, or a comma-separated "
            "string. Nickname, avatar, sex, region and the like are refused.")
    profile_sync: str = setting(
        "first_login", one_of(PROFILE_SYNC_MODES, "unknown profile sync mode",
                              f"Use one of: {', '.join(PROFILE_SYNC_MODES)}."),
        doc="What the user record gets from the WeChat profile: ``first_login``, "
            "``each_login`` or ``never``.")
    profile_refresh_after: int = setting(
        7 * 24 * 3600, seconds_or_off, testing_default=0,
        doc="Seconds after which a returning login refreshes the identity's WeChat profile "
            "(nickname, avatar) in the background, after the login and without slowing it "
            "(one more WeChat call, off the login's path; :data:`~flask_wechat_qr.signals."
            "profile_refreshed` tells the host); ``0``: never. Not needed with "
            "``profile_sync = \"each_login\"``, which reads the profile during every login. "
            "Under ``TESTING`` it is ``0`` unless set (as Flask-Mail suppresses sending: no "
            "background thread calling WeChat after a test has ended). See "
            ":ref:`profile-refresh`.")
    lang: str | None = setting(
        None, one_of((None, "cn", "en"), "unknown QR page language",
                     "Use 'cn', 'en' or leave it unset (WeChat's default).",
                     blank_means_default=True),
        doc="Language of WeChat's QR page: ``cn`` or ``en``; unset, the visitor's language.")
    userinfo_lang: str | None = setting(
        None, one_of((None, "zh_CN", "zh_TW", "en"), "unknown language",
                     "Use 'zh_CN', 'zh_TW', 'en' or leave it unset (the language of the page).",
                     blank_means_default=True),
        doc="Language of the region names in the WeChat profile: ``zh_CN``, ``zh_TW`` or "
            "``en``; unset, the visitor's language.")
    oa_app_id: str = setting(
        None, credential("Official Account AppID", OA_CONSOLE),
        doc="The AppID of a WeChat **Official Account** (服务号, verified) that logs visitors "
            "in from inside WeChat (web authorization, 网页授权): with it and its AppSecret, a "
            "login started in WeChat's browser goes there instead of to a QR code nobody can "
            "scan with the phone holding it. See :doc:`in-wechat`.")
    oa_app_secret: str = setting(
        None, credential("Official Account AppSecret", OA_CONSOLE), secret=True,
        doc="The Official Account's AppSecret; only ever sent to WeChat's API.")
    oa_scope: str = setting(
        "snsapi_userinfo", one_of(OA_SCOPES, "unknown Official Account scope",
                                  "Use 'snsapi_userinfo' (asks for the profile) or "
                                  "'snsapi_base' (silent for people who logged in before).",
                                  blank_means_default=True),
        doc="The scope of in-WeChat logins: ``snsapi_userinfo`` (WeChat asks the person once "
            "and shares their profile and ``unionid``) or ``snsapi_base`` (silent; a person "
            "this site does not know yet is then asked with ``snsapi_userinfo``).")
    oa_verify_file: VerifyFile | None = setting(
        None, verify_file,
        doc="The Official Account's domain verification file as ``name=content`` (e.g. "
            "``MP_verify_AbC123.txt=AbC123``), served at the site's root so adding the web "
            "authorization domain (网页授权域名) needs no file on disk.")
    qr_self_redirect: bool = setting(
        False, boolean,
        doc="Embedded QR page only: ``True`` loads the callback inside the QR iframe, which "
            "then sends the whole page on; ``False`` sends the whole page at once.")
    qr_style: str = setting(
        "black", one_of(("black", "white"), "unknown QR style",
                        "Use 'black' (for light pages) or 'white' (for dark pages)."),
        doc="Embedded QR page only: ``black`` (for light pages) or ``white`` (for dark pages).")
    qr_href: str | None = setting(
        None, qr_stylesheet,
        doc="Embedded QR page only: a stylesheet WeChat applies inside its iframe, over "
            "``https://`` or as ``data:text/css;base64,...``. WeChat ignores it under "
            ":setting:`WECHAT_QR_QR_STYLELITE`.")
    qr_stylelite: bool = setting(
        False, boolean,
        doc="Embedded QR page only: ``True`` asks for WeChat's compact QR box of 2024 "
            "(``stylelite=1``; give it at least 220 x 220 px). WeChat then ignores "
            ":setting:`WECHAT_QR_QR_HREF`, and ``init_app`` warns if both are set.")
    qr_fast_login: bool = setting(
        True, boolean,
        doc="Embedded QR page only: ``False`` turns off WeChat's fast login "
            "(``fast_login=0``), the button that lets a visitor whose desktop WeChat is "
            "logged in confirm on the PC, without scanning. WeChat honoured ``False`` "
            "only with :setting:`WECHAT_QR_QR_STYLELITE` until its fix of 2024-10-24.")

    @property
    def has_credentials(self) -> bool:
        """Whether the AppID and AppSecret are set: without them the connection is off."""
        return bool(self.app_id and self.app_secret)

    @property
    def has_official_account(self) -> bool:
        """Whether logins from inside WeChat go to the Official Account (both its AppID and
        AppSecret set)."""
        return bool(self.oa_app_id and self.oa_app_secret)


@dataclass(frozen=True)
class Settings:
    """Everything ``init_app`` read from ``app.config``; never read again after that."""

    #: every connection by its identifier, in the configured order
    connections: dict[str, ConnectionSettings] = setting(
        None, connection_list, topic="connections",
        doc="A list of connection dicts (or its JSON text); when set, the flat per-connection "
            "keys are ignored.")
    #: ``None``: the sandbox mounted in this app, at the host the browser uses
    open_base_url: str | None = setting(
        WECHAT_OPEN_BASE_URL, base_url, topic="addresses",
        doc="Where browsers are sent for the QR page (``/connect/qrconnect``).")
    api_base_url: str = setting(
        WECHAT_API_BASE_URL, base_url, topic="addresses",
        doc="Where the server calls WeChat's API (``/sns/oauth2/access_token``, ...).")
    app_id_check: bool = setting(
        True, boolean, topic="addresses",
        doc="Refuse at start-up an AppID that is not ``wx`` and 16 hexadecimal digits (a typo "
            "would fail only at WeChat). Only applies while logins go to WeChat itself (not "
            "the sandbox, nor other base URLs).")
    sandbox: bool = setting(
        False, boolean, topic="sandbox",
        doc="Mount the simulated WeChat in this app and send logins there (development and "
            "tests only).")
    sandbox_prefix: str = setting(
        "/wechat-sandbox", path_prefix, topic="sandbox",
        doc="Where the sandbox is mounted.")
    sandbox_public_url: str | None = setting(
        None, base_url, topic="sandbox",
        doc="The base URL a phone uses to reach this site's sandbox; unset, the host the "
            "browser used.")
    url_prefix: str = setting(
        "/auth", path_prefix, topic="login",
        doc="URL prefix of the extension's routes (blueprint ``wechat_qr``); ``/`` puts them "
            "at the root.")
    http_timeout: float = setting(
        5.0, positive_seconds, topic="login",
        doc="Seconds a call to WeChat's API may take in all (connecting, waiting, reading the "
            "answer); past it, the call ends as a timeout.")
    code_used_wait: float = setting(
        2.0, seconds_to_wait, topic="login",
        doc="Seconds (0 to 60) a callback whose code WeChat reports as used (``40163``, its "
            "double redirect) waits for the other request of the same login; 0: no wait.")
    state_ttl: int = setting(
        600, whole_number, topic="login",
        doc="Seconds a started login (its ``state``) stays valid.")
    mobile_page: bool = setting(
        True, boolean, topic="login",
        doc="A phone's browser other than WeChat's (which cannot scan a QR code it shows) gets "
            "a page offering what works there: open the page in WeChat, show the QR code "
            "anyway (to scan with another phone), or the site's other ways to log in; "
            "``False`` sends it to WeChat's QR page as on a computer.")
    other_login_url: str | None = setting(
        None, optional_page, topic="login",
        doc="Where the phone page (see :setting:`WECHAT_QR_MOBILE_PAGE`), the \"Log in "
            "first\" page and login-only's refusal offer the site's other ways to log in: a "
            "path or URL; unset, Flask-Login's ``login_view`` where the site has one.")
    post_login_url: str = setting(
        "/", local_path, topic="login",
        doc="A path on this site to go to after a login started without ``next``.")
    frame_ancestors: str | None = setting(
        "'self'", frame_sources, topic="login",
        doc="Who may frame the extension's pages: its ``Content-Security-Policy: "
            "frame-ancestors`` sources (``X-Frame-Options`` follows for ``'self'`` and "
            "``'none'``); ``''`` sends neither, for a site that sets its own.")
    user_foreign_key: bool = setting(
        True, boolean, topic="login",
        doc="Tie each WeChat identity to its user row with a foreign key (``ON DELETE "
            "CASCADE``), so deleting a user by any means deletes their identities; "
            "``False`` for a user table the foreign key cannot or must not refer to.")
    store_avatars: bool = setting(
        False, boolean, topic="login",
        doc="Keep a copy of each WeChat avatar (on an identity's first login, and whenever "
            "a login brings a new avatar URL), downloaded only from WeChat's image hosts, and "
            "serve it at ``/auth/avatars/<key>``: identities and ID tokens then point there, "
            "since WeChat's own avatar URLs stop working when the person changes their "
            "avatar. See :doc:`avatars`.")
    sandbox_app_name: str | None = setting(
        None, optional_name, topic="sandbox",
        doc="The application name the sandbox's phone page shows; unset, the Flask app's "
            "name.")
    bind_ttl: int = setting(
        600, whole_number, topic="binding",
        doc='Seconds a pending "bind or create" choice stays valid.')
    bind_attempts_per_binding: int = setting(
        5, whole_number, topic="binding",
        doc="Failed binding attempts allowed for one pending binding within "
            ":setting:`WECHAT_QR_BIND_BLOCK_SECONDS`.")
    bind_attempts_per_address: int = setting(
        20, whole_number, topic="binding",
        doc="The same limit per client address (an IPv6 address's /64 network counts as "
            "one), across all pending bindings.")
    bind_attempts_per_account: int = setting(
        10, whole_number, topic="binding",
        doc="The same limit per account tried (by its username), across all pending "
            "bindings and client addresses: guessing one account's password from many "
            "addresses stops here.")
    bind_block_seconds: int = setting(
        900, whole_number, topic="binding",
        doc="The window in which failed attempts count, and so how long a block lasts.")
    default_locale: str = setting(
        "en", one_of(SUPPORTED_LOCALES, "unsupported language",
                     "Use 'en' or 'zh_CN' (Simplified Chinese).", blank_means_default=True),
        topic="languages",
        doc="The language of the extension's pages when neither the host nor the browser "
            "chooses one: ``en`` or ``zh_CN``.")
    id_token_private_key: str | None = setting(
        None, secret_text, topic="id_token", secret=True,
        doc="The RSA private key (PEM text, or the path of a PEM file; 2048 bits or more) "
            "that signs ID tokens with RS256.")
    id_token_secret: str | None = setting(
        None, secret_text, topic="id_token", secret=True,
        doc="A shared secret (32 bytes or more) that signs ID tokens with HS256 instead; "
            "not together with a private key.")
    id_token_published_keys: tuple[str, ...] = setting(
        (), public_keys, topic="id_token",
        doc="More RSA public keys (PEM texts or paths) published in the JWKS, e.g. the "
            "previous key while rotating; RS256 only.")
    id_token_issuer: str | None = setting(
        None, issuer_url, topic="id_token",
        doc="The ``iss`` claim, an ``http(s)`` URL; unset, ``SERVER_NAME``'s root URL, else "
            "the request's.")
    id_token_ttl: int = setting(
        300, token_lifetime, topic="id_token",
        doc=f"Seconds an ID token is valid, at most {MAX_ID_TOKEN_TTL}.")

    @property
    def default_connection(self) -> ConnectionSettings | None:
        """The connection a page link or login button means when it names none: the one
        with the default identifier (``wechat``) where there is one, else the first."""
        return (self.connections.get(DEFAULT_IDENTIFIER)
                or next(iter(self.connections.values()), None))


@dataclass(frozen=True)
class Setting:
    """One row of the table: a ``WECHAT_QR_*`` key as users write it."""

    #: the attribute of :class:`ConnectionSettings` or :class:`Settings`
    attribute: str
    #: the key without prefix, in lower case (also its name in a connection dict)
    name: str
    default: t.Any
    parse: Parser
    doc: str
    #: the docs section the key is listed in
    topic: str
    per_connection: bool
    #: the default under ``TESTING`` (``None``: the same)
    testing_default: t.Any = None

    @property
    def key(self) -> str:
        return PREFIX + self.name.upper()

    def default_for(self, testing: bool) -> t.Any:
        """The default of an app with ``TESTING`` on or off."""
        return self.testing_default if testing and self.testing_default is not None \
            else self.default

    def read(self, value: t.Any, key: str | None = None, *, testing: bool = False) -> t.Any:
        """``value`` parsed; ``None`` (unset) means the default."""
        return self.parse(self.default_for(testing) if value is None else value,
                          key or self.key, self.default)


def _rows(cls: type, per_connection: bool) -> tuple[Setting, ...]:
    rows = []
    for attribute in fields(cls):
        declared: _Declared = attribute.metadata["wechat_qr_setting"]
        rows.append(Setting(attribute.name, declared.name or attribute.name, declared.default,
                            declared.parse, declared.doc, declared.topic, per_connection,
                            declared.testing_default))
    return tuple(rows)


CONNECTION_SETTINGS = _rows(ConnectionSettings, per_connection=True)
APP_SETTINGS = _rows(Settings, per_connection=False)
#: Every key, per-connection keys first.
SETTINGS = CONNECTION_SETTINGS + APP_SETTINGS
#: The docs' sections a key's ``topic`` names, in the order the docs show them.
TOPICS = ("connection", "connections", "login", "binding", "id_token", "languages", "sandbox",
          "addresses")
#: Per-connection keys (without prefix) and their defaults.
CONNECTION_DEFAULTS: dict[str, t.Any] = {row.name: row.default for row in CONNECTION_SETTINGS}
#: App-wide keys (without prefix) and their defaults.
GLOBAL_DEFAULTS: dict[str, t.Any] = {row.name: row.default for row in APP_SETTINGS}


# --- the loader ----------------------------------------------------------------------


def apply_defaults(config: t.MutableMapping[str, t.Any], *, testing: bool = False) -> None:
    """``setdefault`` every key, so ``app.config`` shows what is in force (``testing``: an
    app with ``TESTING`` on, whose defaults may differ)."""
    for row in SETTINGS:
        config.setdefault(row.key, row.default_for(testing))


def load_settings(config: t.Mapping[str, t.Any], *, testing: bool = False) -> Settings:
    """Read and validate every setting; raise :class:`ConfigurationError` on the first problem.

    The sandbox switch is read first (a sandbox connection may go without credentials),
    then the connections, then the other app-wide keys, then the rules between keys.
    """
    rows = {row.attribute: row for row in APP_SETTINGS}
    sandbox = rows["sandbox"].read(config.get(rows["sandbox"].key))
    # AppIDs are WeChat's only where logins go to WeChat: not the sandbox, in this app or
    # on its own port, nor another WeChat-compatible service.
    real_wechat = not sandbox and all(
        rows[name].read(config.get(rows[name].key)) == rows[name].default
        for name in ("open_base_url", "api_base_url"))
    app_id_check = rows["app_id_check"].read(config.get(rows["app_id_check"].key))
    entries = rows["connections"].read(config.get(rows["connections"].key))
    values: dict[str, t.Any] = {"connections": _load_connections(
        entries, config, sandbox, check_app_id=app_id_check and real_wechat, testing=testing)}
    values.update((name, row.read(config.get(row.key))) for name, row in rows.items()
                  if name not in values)
    for rule in APP_RULES:
        rule(values)
    return Settings(**values)


def _load_connections(entries: list[t.Any] | None, config: t.Mapping[str, t.Any],
                      sandbox: bool, check_app_id: bool, testing: bool = False
                      ) -> dict[str, ConnectionSettings]:
    """The connections by identifier: the ``WECHAT_QR_CONNECTIONS`` dicts, else the one the
    flat keys describe."""
    if entries is None:
        flat = {row.name: config.get(row.key) for row in CONNECTION_SETTINGS}
        return _by_identifier([_load_connection(flat, None, sandbox, check_app_id, testing)])
    return _by_identifier([
        _load_connection(entry, f"{PREFIX}CONNECTIONS[{index}]", sandbox, check_app_id,
                         testing, index)
        for index, entry in enumerate(entries)])


def _load_connection(raw: t.Any, where: str | None, sandbox: bool,
                     check_app_id: bool = False, testing: bool = False, index: int = 0
                     ) -> ConnectionSettings:
    """One connection from its dict (``where`` names it in errors) or the flat keys; the
    ``index``-th of the list."""
    if not isinstance(raw, t.Mapping):
        raise ConfigurationError(where or PREFIX + "CONNECTIONS", "must be a dict",
                                 "Each connection is a dict of settings.")
    unknown = set(raw) - set(CONNECTION_DEFAULTS)
    if unknown:
        raise ConfigurationError(
            where or PREFIX + "CONNECTIONS", f"unknown setting(s) {sorted(unknown)}",
            f"Use only: {', '.join(CONNECTION_DEFAULTS)}.",
        )
    if sandbox:
        raw = _sandbox_credentials(raw, index)
    values = {row.attribute: row.read(raw.get(row.name), _key(row.name, where),
                                      testing=testing)
              for row in CONNECTION_SETTINGS}
    for rule in CONNECTION_RULES:
        rule(values, where)
    if check_app_id:
        _app_ids_are_wechat_shaped(values, where)
    return ConnectionSettings(**values)


def _key(name: str, where: str | None) -> str:
    """How errors name a per-connection key: flat, or inside its connection dict."""
    return f"{where}[{name!r}]" if where else PREFIX + name.upper()


def config_from_env(
    environ: t.Mapping[str, str], *, on_unknown: t.Callable[[str], object] | None = None
) -> dict[str, t.Any]:
    """The ``WECHAT_QR_*`` settings an environment sets, for ``app.config.update``.

    Every known variable with a non-empty value is parsed as ``init_app`` would read it
    (``"true"`` becomes ``True``, ``"2.5"`` 2.5, ``"unionid,email"`` a tuple,
    ``WECHAT_QR_CONNECTIONS`` JSON a list); a value that does not parse raises
    :class:`ConfigurationError` naming the variable. Empty variables count as unset;
    ``WECHAT_QR_TEST_*`` are ignored. Each other unknown ``WECHAT_QR_*`` name (a typo?)
    is passed to ``on_unknown``, by default logged as a warning.
    """
    known = {row.key: row for row in SETTINGS}
    config: dict[str, t.Any] = {}
    for name in sorted(environ):
        text = environ[name].strip()
        if not name.startswith(PREFIX) or name.startswith(TEST_PREFIX) or not text:
            continue
        if name in known:
            config[name] = known[name].read(text)
        elif on_unknown is not None:
            on_unknown(name)
        else:
            log.warning("Ignoring the environment variable %s: %s.", name, no_such_setting(name))
    return config


def unknown_settings(names: t.Iterable[str]) -> list[str]:
    """The ``WECHAT_QR_*`` names among ``names`` that are no setting (the test suite's own
    ``WECHAT_QR_TEST_*`` aside): typos, most likely, which nothing reads."""
    known = {row.key for row in SETTINGS}
    return sorted(name for name in names if isinstance(name, str) and name.startswith(PREFIX)
                  and not name.startswith(TEST_PREFIX) and name not in known)


def no_such_setting(name: str) -> str:
    """What a warning says of an unknown ``WECHAT_QR_*`` name: with the setting it most
    likely means, where one is close (``WECHAT_QR_APPID``: ``WECHAT_QR_APP_ID``)."""
    close = difflib.get_close_matches(name, [row.key for row in SETTINGS], n=1, cutoff=0.8)
    return f"no such setting (did you mean {close[0]}?)" if close else "no such setting"


def configured_issuer(settings: Settings, config: t.Mapping[str, t.Any],
                      mount_point: str = "", subdomain: str = "") -> str | None:
    """The ID tokens' ``iss`` as configured: ``WECHAT_QR_ID_TOKEN_ISSUER``, else the root
    URL of ``SERVER_NAME`` (on ``subdomain``, where the app's routes are: its
    ``url_map.default_subdomain`` under subdomain matching) at the app's mount point;
    ``None`` when only a request can tell.

    ``mount_point`` is where the app is served (a request's ``SCRIPT_NAME``, set by a
    ``DispatcherMiddleware`` or ProxyFix's ``X-Forwarded-Prefix``; ``""``: none): it wins
    over ``APPLICATION_ROOT``, as it does in every URL Flask builds in a request, so ``iss``
    is the root the public keys (``wechat_qr.jwks``) are published under. The host stays
    ``SERVER_NAME``'s, never the request's Host header, which a client chooses."""
    if settings.id_token_issuer:
        return settings.id_token_issuer
    base = configured_base_url(config)
    if base is not None and subdomain:
        parts = urlsplit(base)
        base = parts._replace(netloc=f"{subdomain}.{parts.netloc}").geturl()
    if (base is None or not mount_point or not is_local_path(mount_point)
            or "?" in mount_point or "#" in mount_point):
        return base  # a mount point from a hostile X-Forwarded-Prefix (@evil, //evil) too
    parts = urlsplit(base)
    # Percent-encoded as url_for writes it into the public keys' URL.
    mounted = quote(mount_point.rstrip("/"), safe="/%:@!$&'()*+,;=~")
    return f"{parts.scheme}://{parts.netloc}{mounted}"


# --- rules between keys --------------------------------------------------------------


def _sandbox_credentials(raw: t.Mapping[str, t.Any], index: int = 0) -> t.Mapping[str, t.Any]:
    """A sandbox connection without AppID and AppSecret gets a simulated website app's, and
    without Official Account credentials a simulated Official Account's: the ``index``-th
    connection the ``index``-th of each (:func:`~.sandbox.options.sandbox_app_ids`), so two
    connections are two applications, with an openid each, as on WeChat."""
    filled = dict(raw)
    app_id, oa_app_id = sandbox_app_ids(index)
    if not (raw.get("app_id") or raw.get("app_secret")):
        filled.update(app_id=app_id, app_secret=SANDBOX_APP_SECRET)
    if not (raw.get("oa_app_id") or raw.get("oa_app_secret")):
        filled.update(oa_app_id=oa_app_id, oa_app_secret=SANDBOX_OA_APP_SECRET)
    return filled


def _two_apps_not_one(values: dict[str, t.Any], where: str | None) -> None:
    """A website application cannot log anyone in inside WeChat (WeChat answers 10005,
    "此公众号并没有这些scope的权限"), nor an Official Account show a QR code."""
    if values["oa_app_id"] and values["oa_app_id"] == values["app_id"]:
        raise ConfigurationError(
            _key("oa_app_id", where), "it is the website application's AppID",
            "In-WeChat login needs an Official Account (服务号) of its own: give its AppID "
            "and AppSecret from mp.weixin.qq.com, or leave both unset.")


def _field_matching_needs_a_field(values: dict[str, t.Any], where: str | None) -> None:
    if values["association"] == "field_matching" and not values["match_fields"]:
        raise ConfigurationError(
            _key("match_fields", where),
            "field_matching needs at least one field",
            "Use ('unionid',) or a field your adapter provides a matcher for.",
        )


def _qr_href_is_ignored_under_stylelite(values: dict[str, t.Any], where: str | None) -> None:
    """A warning, not a refusal: the QR still works (in WeChat's compact style), the
    stylesheet is only unused, and a site trying the new style keeps its old one ready."""
    if values["qr_stylelite"] and values["qr_href"]:
        log.warning(
            "%s is ignored: WeChat applies no custom stylesheet to the compact QR box that "
            "%s asks for. Unset one of them.",
            _key("qr_href", where), _key("qr_stylelite", where))


def _by_identifier(connections: list[ConnectionSettings]) -> dict[str, ConnectionSettings]:
    """The connections by identifier; an identifier used twice is refused."""
    by_identifier: dict[str, ConnectionSettings] = {}
    for conn in connections:
        if conn.identifier in by_identifier:
            raise ConfigurationError(
                PREFIX + "CONNECTIONS", f"the identifier {conn.identifier!r} is used twice",
                "Give every connection its own unique identifier.",
            )
        by_identifier[conn.identifier] = conn
    return by_identifier


def _sandbox_in_process(values: dict[str, t.Any]) -> None:
    """With the sandbox on, WeChat's own URLs mean the sandbox mounted in this app."""
    if not values["sandbox"]:
        return
    if not values["sandbox_prefix"]:
        raise ConfigurationError(PREFIX + "SANDBOX_PREFIX", "must not be empty",
                                 "Use a path such as '/wechat-sandbox'.")
    if values["open_base_url"] == GLOBAL_DEFAULTS["open_base_url"]:
        values["open_base_url"] = None
    if values["api_base_url"] == GLOBAL_DEFAULTS["api_base_url"]:
        values["api_base_url"] = IN_PROCESS_ORIGIN + values["sandbox_prefix"]


def _published_keys_need_a_private_key(values: dict[str, t.Any]) -> None:
    if values["id_token_published_keys"] and not values["id_token_private_key"]:
        raise ConfigurationError(
            PREFIX + "ID_TOKEN_PUBLISHED_KEYS", "public keys are published only for RS256",
            "Set WECHAT_QR_ID_TOKEN_PRIVATE_KEY too, or leave this unset.")


def _one_id_token_key(values: dict[str, t.Any]) -> None:
    if values["id_token_private_key"] and values["id_token_secret"]:
        raise ConfigurationError(
            PREFIX + "ID_TOKEN_SECRET", "both a private key and a shared secret are set",
            "Keep one: ID_TOKEN_PRIVATE_KEY (RS256, receivers fetch the public key) or "
            "ID_TOKEN_SECRET (HS256, receivers hold the same secret).")


def _one_verify_file_per_name(values: dict[str, t.Any]) -> None:
    """Connections may share an Official Account (and its file), but one path at the site's
    root serves one content: two files of one name would leave one domain unverified."""
    served: dict[str, str] = {}
    for conn in values["connections"].values():
        file = conn.oa_verify_file
        if file is None:
            continue
        if served.setdefault(file.name, file.content) != file.content:
            raise ConfigurationError(
                f"{PREFIX}CONNECTIONS[...]['oa_verify_file']",
                f"two connections serve {file.name} with different contents",
                "A verification file's name is unique to its Official Account: copy each "
                "connection's name=content again from mp.weixin.qq.com.")


#: Checked on each connection's parsed values, in order.
CONNECTION_RULES: tuple[t.Callable[[dict[str, t.Any], str | None], None], ...] = (
    _field_matching_needs_a_field,
    _two_apps_not_one,
    _qr_href_is_ignored_under_stylelite,
)
#: Checked on the app-wide parsed values (connections already read), in order.
APP_RULES: tuple[t.Callable[[dict[str, t.Any]], None], ...] = (
    _sandbox_in_process,
    _published_keys_need_a_private_key,
    _one_id_token_key,
    _one_verify_file_per_name,
)
