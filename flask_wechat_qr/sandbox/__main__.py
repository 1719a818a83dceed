"""Run the sandbox standalone: ``python -m flask_wechat_qr.sandbox --help``.

``flask wechat-qr sandbox`` runs the same :func:`serve` with the same options
(:data:`flask_wechat_qr.sandbox.options.SANDBOX_OPTIONS`), so the two entry points cannot
drift apart.
"""

from __future__ import annotations

import argparse
import secrets
import typing as t

from werkzeug.serving import make_server

from .mount import create_sandbox_app
from .options import SANDBOX_OPTIONS
from .server import KeepAliveHandler
from .views import SandboxApp


def serve(*, host: str, port: int, app_id: str, app_secret: str | None, name: str,
          callback_domain: str, database: str, public_url: str | None,
          echo: t.Callable[[str], None] | None = None) -> None:
    """Serve the sandbox until interrupted (a port in use: Werkzeug says so and exits 1).

    Without ``app_secret`` a new random one is made and printed once: a well-known default
    secret would let anyone who can reach the sandbox play the site."""
    say = echo or _print
    chosen = app_secret is not None
    app_secret = app_secret if app_secret is not None else secrets.token_urlsafe(18)
    app = create_sandbox_app(
        [SandboxApp(app_id, app_secret, name, callback_domain)],
        database_uri=database, public_url=public_url)
    # Keep-alive, as WeChat's servers: the extension's pooled session is exercised.
    server = make_server(host, port, app, threaded=True, request_handler=KeepAliveHandler)
    say(f" * WeChat sandbox: WECHAT_QR_OPEN_BASE_URL=WECHAT_QR_API_BASE_URL="
        f"http://{host}:{port}  AppID {app_id}")
    if not chosen:
        say(f" * AppSecret {app_secret} (new at every start; --app-secret chooses one)")
    say(" * For development only: anyone who reaches it can log in as a simulated person.")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flask_wechat_qr.sandbox",
                                     description="Simulated WeChat Open Platform")
    for option in SANDBOX_OPTIONS:
        parser.add_argument(option.flag, default=option.default, type=option.type,
                            help=option.help)
    args = parser.parse_args(argv)
    serve(**vars(args))


def _print(line: str) -> None:
    print(line, flush=True)  # flushed: a pipe reading it (a test, a supervisor) sees it now


if __name__ == "__main__":
    main()
