"""A simulated WeChat Open Platform, for development and tests.

Mounted in the host app by ``WECHAT_QR_SANDBOX=True`` (the extension's API calls then reach
it in-process), or run standalone on its own port::

    python -m flask_wechat_qr.sandbox --port 5001 --app-id wxdemo --app-secret s3cret \\
        --callback-domain localhost

The package's names load on first use: registering the ``flask wechat-qr sandbox`` command
reads :mod:`.options` without loading the simulated WeChat itself.
"""

from __future__ import annotations

import importlib
import typing as t

if t.TYPE_CHECKING:
    from .mount import create_sandbox_app, install_sandbox, sandbox_tables
    from .transport import WSGITransport
    from .views import SandboxApp

__all__ = ["SandboxApp", "WSGITransport", "create_sandbox_app", "install_sandbox",
           "sandbox_tables"]

_HOMES = {
    "SandboxApp": ".views",
    "WSGITransport": ".transport",
    "create_sandbox_app": ".mount",
    "install_sandbox": ".mount",
    "sandbox_tables": ".mount",
}


def __getattr__(name: str) -> t.Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home, __name__), name)
