"""The example site's configuration: defaults, environment variables, and the WeChat switch.

Every ``WECHAT_QR_*`` setting of the extension can be set as an environment variable of the
same name (read by :func:`flask_wechat_qr.config_from_env`), so the site can be configured
without editing code (12-factor style); ``SECRET_KEY`` and ``DATABASE_URL`` too.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import typing as t
from dataclasses import dataclass

import flask_wechat_qr
from flask_wechat_qr import ConfigurationError

#: Variables read besides the ``WECHAT_QR_*`` keys.
SITE_VARIABLES = ("SECRET_KEY", "DATABASE_URL")

#: Variables a site needs for real WeChat login, in the order to set them.
REQUIRED_WECHAT_VARIABLES = ("WECHAT_QR_APP_ID", "WECHAT_QR_APP_SECRET")

#: Optional variables worth naming on the "how to turn WeChat on" page.
OPTIONAL_WECHAT_VARIABLES = (
    "WECHAT_QR_CONNECTION",
    "WECHAT_QR_DISPLAY_NAME",
    "WECHAT_QR_LOGIN_ONLY",
    "WECHAT_QR_ASSOCIATION",
    "WECHAT_QR_CALLBACK_URL",
    # An Official Account (服务号) logs in visitors who open the site inside WeChat.
    "WECHAT_QR_OA_APP_ID",
    "WECHAT_QR_OA_APP_SECRET",
)

DEFAULTS: dict[str, t.Any] = {
    "WECHAT_QR_SANDBOX_APP_NAME": "Example site",
    # WeChat's avatar URLs die when the person changes their avatar: keep a copy.
    "WECHAT_QR_STORE_AVATARS": True,
    "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
}


def config_from_env(environ: t.Mapping[str, str]) -> tuple[dict[str, t.Any], list[str]]:
    """The config set by environment variables, and the unknown ``WECHAT_QR_*`` names.

    Empty variables count as unset. The extension parses its own variables (so
    ``app.config`` shows real booleans and numbers) and refuses, naming the variable, a
    value that does not parse.
    """
    unknown: list[str] = []
    config = flask_wechat_qr.config_from_env(environ, on_unknown=unknown.append)
    for name in SITE_VARIABLES:
        value = environ.get(name, "").strip()
        if value:
            config[name] = value
    return config, unknown


@dataclass(frozen=True)
class WeChatSetup:
    """What the site does about WeChat login, decided once at startup."""

    #: ``"wechat"``: the extension runs against the configured WeChat; ``"sandbox"``: on
    #: the extension's simulated WeChat (``WECHAT_QR_SANDBOX``); ``"off"``: no WeChat
    #: login, the home page says what to set.
    mode: str
    #: the variables still to set when the mode is ``"off"``
    missing: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


def wechat_config_state(config: t.Mapping[str, t.Any]) -> WeChatSetup:
    """Whether this site turns WeChat login on, and against what. The only place that decides.

    Credentials (a flat AppID or a ``WECHAT_QR_CONNECTIONS`` list) mean real WeChat; the
    extension then validates everything else and refuses to start on a mistake. Without
    them, in development (``flask run --debug``) or tests, the site runs on the built-in
    sandbox, so it can be tried in the first minute; anywhere else WeChat login is off
    until credentials, or ``WECHAT_QR_SANDBOX=true``, are given (the home page says what to
    set): a deploy that forgot its AppID never serves the simulated WeChat by omission.
    ``WECHAT_QR_SANDBOX=false`` turns WeChat off in development too.
    """
    sandbox = config.get("WECHAT_QR_SANDBOX")
    if sandbox not in (True, False, None):  # environment variables arrive parsed
        raise ConfigurationError("WECHAT_QR_SANDBOX", f"{sandbox!r} is not a boolean",
                                 "Use True or False (or leave it unset).")
    if sandbox:
        return WeChatSetup(mode="sandbox")
    if config.get("WECHAT_QR_CONNECTIONS") or config.get("WECHAT_QR_APP_ID"):
        return WeChatSetup(mode="wechat")
    if sandbox is None and (config.get("DEBUG") or config.get("TESTING")):
        return WeChatSetup(mode="sandbox")
    missing = tuple(name for name in REQUIRED_WECHAT_VARIABLES if not config.get(name))
    return WeChatSetup(mode="off", missing=missing)


def database_uri(database_url: str | None, instance_path: str) -> str:
    """``DATABASE_URL`` as SQLAlchemy wants it; else a SQLite file in the instance folder."""
    if database_url:
        scheme, separator, rest = database_url.partition("://")
        # Heroku's ``postgres://`` is a scheme SQLAlchemy 1.4+ refuses, and a bare
        # ``postgresql://`` means psycopg2 to SQLAlchemy 2.0, where the docs install psycopg:
        # either names the driver that is installed.
        if separator and scheme in ("postgres", "postgresql"):
            database_url = f"postgresql+{postgres_driver()}://{rest}"
        # A bare ``mysql://`` means mysqlclient to SQLAlchemy, which needs a C build; the docs
        # install PyMySQL. Either way the connection speaks utf8mb4 (emoji nicknames) unless
        # the URL says otherwise.
        elif separator and scheme.split("+")[0] in ("mysql", "mariadb"):
            if "+" not in scheme:
                scheme = f"{scheme}+{mysql_driver()}"
                database_url = f"{scheme}://{rest}"
            # the drivers that take a charset (MariaDB's own connector speaks utf8mb4)
            if scheme.split("+")[1] in _CHARSET_DRIVERS and "charset=" not in rest:
                database_url += ("&" if "?" in rest else "?") + "charset=utf8mb4"
        return database_url
    os.makedirs(instance_path, exist_ok=True)
    return "sqlite:///" + os.path.join(instance_path, "example_app.sqlite")


def postgres_driver() -> str:
    """The PostgreSQL driver SQLAlchemy should use: psycopg (3) where it is installed."""
    return "psycopg" if importlib.util.find_spec("psycopg") is not None else "psycopg2"


#: MariaDB/MySQL drivers whose connections take ``?charset=``.
_CHARSET_DRIVERS = ("pymysql", "mysqldb", "mysqlconnector")


def mysql_driver() -> str:
    """The MariaDB/MySQL driver SQLAlchemy should use: mysqlclient where it is installed,
    else PyMySQL (what the docs install)."""
    return "mysqldb" if importlib.util.find_spec("MySQLdb") is not None else "pymysql"


def dev_secret_key(instance_path: str, logger: logging.Logger) -> str:
    """A random key for development, kept in the instance folder.

    Kept in a file, not in memory, so sessions survive a restart and every worker process
    of one server signs sessions with the same key. The first process to create the file
    wins; the others read it.
    """
    path = os.path.join(instance_path, "dev-secret-key")
    key = _read_key(path)
    if key is None:
        os.makedirs(instance_path, exist_ok=True)
        scratch = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(scratch, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(scratch)
        key = _read_key(path)
        if key is None:
            raise RuntimeError(f"could not create a development secret key in {path}")
    logger.warning(
        "SECRET_KEY is not set: using a random development key stored in %s. "
        "Set SECRET_KEY to a long random value in production.", path,
    )
    return key


def _read_key(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip() or None
    except FileNotFoundError:
        return None
