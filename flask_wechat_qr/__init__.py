"""Flask-WeChat-QR: "Log in with WeChat" by QR code on PC for Flask sites."""

from __future__ import annotations

from . import signals
from .adapter import AccountAdapter
from .association import LoginRefused, Resolution
from .avatars import AvatarImage, AvatarStore
from .client import WeChatClient, WeChatProfile, WeChatToken
from .csrf import check_csrf, csrf_token
from .delivery import id_token_issuer
from .errors import (
    AccountDisabled,
    AccountNotActiveYet,
    CodeUsed,
    ConfigurationError,
    InvalidCode,
    InvalidCredentials,
    LoginCancelled,
    LoginError,
    StateError,
    WeChatAPIError,
    WeChatQRError,
    WeChatTimeout,
    WeChatUnavailable,
)
from .extension import WeChatQR
from .protocols import Identity
from .settings import ConnectionSettings, Settings, config_from_env
from .urls import safe_next

__version__ = "0.1.0.dev0"

__all__ = [
    "AccountAdapter",
    "AccountDisabled",
    "AccountNotActiveYet",
    "AvatarImage",
    "AvatarStore",
    "CodeUsed",
    "ConfigurationError",
    "ConnectionSettings",
    "Identity",
    "InvalidCode",
    "InvalidCredentials",
    "LoginCancelled",
    "LoginError",
    "LoginRefused",
    "Resolution",
    "Settings",
    "StateError",
    "WeChatAPIError",
    "WeChatClient",
    "WeChatProfile",
    "WeChatQR",
    "WeChatQRError",
    "WeChatTimeout",
    "WeChatToken",
    "WeChatUnavailable",
    "check_csrf",
    "config_from_env",
    "csrf_token",
    "id_token_issuer",
    "safe_next",
    "signals",
]
