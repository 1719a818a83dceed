"""Run the sandbox standalone: ``python -m flask_wechat_qr.sandbox --help``."""

from __future__ import annotations

import argparse

from werkzeug.serving import make_server

from ..settings import SANDBOX_APP_ID, SANDBOX_APP_SECRET
from . import SandboxApp, create_sandbox_app
from .server import KeepAliveHandler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Simulated WeChat Open Platform")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--app-id", default=SANDBOX_APP_ID)
    parser.add_argument("--app-secret", default=SANDBOX_APP_SECRET)
    parser.add_argument("--name", default="Sandbox website app")
    parser.add_argument("--callback-domain", default="localhost",
                        help="the authorization callback domain (bare host name)")
    parser.add_argument("--database", default="sqlite:///wechat-qr-sandbox.db")
    parser.add_argument("--public-url", default=None,
                        help="base URL a phone uses to reach this sandbox")
    args = parser.parse_args(argv)
    app = create_sandbox_app(
        [SandboxApp(args.app_id, args.app_secret, args.name, args.callback_domain)],
        database_uri=args.database, public_url=args.public_url)
    print(f" * WeChat sandbox: WECHAT_QR_OPEN_BASE_URL=WECHAT_QR_API_BASE_URL="
          f"http://{args.host}:{args.port}  AppID {args.app_id}")
    # Keep-alive, as WeChat's servers: the extension's pooled session is exercised.
    make_server(args.host, args.port, app, threaded=True,
                request_handler=KeepAliveHandler).serve_forever()


if __name__ == "__main__":
    main()
