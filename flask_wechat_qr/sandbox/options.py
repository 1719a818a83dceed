"""The standalone sandbox's options, declared once for ``flask wechat-qr sandbox`` (click)
and ``python -m flask_wechat_qr.sandbox`` (argparse), so the two cannot drift apart.

Imports nothing of the sandbox itself: ``init_app`` registers the command without loading
the simulated WeChat.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

from ..i18n import lazy_gettext as _l

#: How the sandbox's own Official Accounts' AppIDs begin.
SANDBOX_OA_APP_ID_PREFIX = "wxsandboxoa"


def sandbox_app_ids(index: int) -> tuple[str, str]:
    """The AppIDs of the simulated website application and Official Account (服务号) the
    ``index``-th sandbox connection gets when it configures none (``...01``, ``...02``):
    two connections are two applications, as on WeChat."""
    return f"wxsandbox{index + 1:010d}", f"{SANDBOX_OA_APP_ID_PREFIX}{index + 1:08d}"


#: Credentials the first sandbox connection of the extension gets when it configures none
#: (the AppID is also the standalone sandbox's default; its AppSecret is random unless
#: given), and for its Official Account, logging in from inside WeChat.
SANDBOX_APP_ID, SANDBOX_OA_APP_ID = sandbox_app_ids(0)
SANDBOX_APP_SECRET = "sandbox-app-secret"
SANDBOX_OA_APP_SECRET = "sandbox-oa-app-secret"
#: The standalone sandbox's names for its applications when none is given: built-in, so
#: shown in each page's language (a name given with ``--name``/``--oa-name`` stays as given).
SANDBOX_APP_NAME = _l("Sandbox website app")
SANDBOX_OA_NAME = _l("Sandbox Official Account")


@dataclass(frozen=True)
class SandboxOption:
    """One option of the standalone sandbox."""

    flag: str
    default: t.Any
    help: str
    type: type = str


SANDBOX_OPTIONS: tuple[SandboxOption, ...] = (
    SandboxOption("--host", "127.0.0.1", "interface to listen on"),
    SandboxOption("--port", 5001, "port to listen on", int),
    SandboxOption("--app-id", SANDBOX_APP_ID, "AppID of the simulated website application"),
    SandboxOption("--app-secret", None,
                  "its AppSecret (default: a new random one, printed at start)"),
    SandboxOption("--oa-app-id", SANDBOX_OA_APP_ID,
                  "AppID of the simulated Official Account (logins inside WeChat)"),
    SandboxOption("--oa-app-secret", None,
                  "its AppSecret (default: a new random one, printed at start)"),
    SandboxOption("--name", None,
                  "the website application's name on the sandbox's pages (default: "
                  f"{SANDBOX_APP_NAME.english()!r}, in the page's language)"),
    SandboxOption("--oa-name", None,
                  "the Official Account's name on the sandbox's pages (default: "
                  f"{SANDBOX_OA_NAME.english()!r}, in the page's language)"),
    SandboxOption("--callback-domain", "localhost",
                  "the authorization callback domain (bare host name)"),
    SandboxOption("--database", "sqlite:///wechat-qr-sandbox.db",
                  "the sandbox's own database URL"),
    SandboxOption("--public-url", None, "base URL a phone uses to reach this sandbox"),
)
