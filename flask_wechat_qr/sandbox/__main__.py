"""Run the sandbox standalone: ``python -m flask_wechat_qr.sandbox --help``.

``flask wechat-qr sandbox`` runs the same :func:`serve` with the same options
(:data:`flask_wechat_qr.sandbox.options.SANDBOX_OPTIONS`), so the two entry points cannot
drift apart.
"""

from __future__ import annotations

import argparse
import re
import secrets
import typing as t

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from werkzeug.serving import make_server

from .mount import create_sandbox_app
from .options import SANDBOX_APP_NAME, SANDBOX_OA_APP_ID, SANDBOX_OA_NAME, SANDBOX_OPTIONS
from .server import KeepAliveHandler
from .views import OFFICIAL_ACCOUNT, SandboxApp


def serve(*, host: str, port: int, app_id: str, app_secret: str | None,
          name: str | None, callback_domain: str, database: str, public_url: str | None,
          oa_app_id: str = SANDBOX_OA_APP_ID, oa_app_secret: str | None = None,
          oa_name: str | None = None, echo: t.Callable[[str], None] | None = None) -> None:
    """Serve the sandbox until interrupted (a port in use: Werkzeug says so and exits 1):
    a website application and an Official Account on one simulated Open Platform account.

    Without ``app_secret`` (``oa_app_secret``) a new random one is made and printed once: a
    well-known default secret would let anyone who can reach the sandbox play the site.
    Without ``name`` (``oa_name``) the application has its built-in name, shown in each
    page's language."""
    say = echo or _print
    callback_domain = callback_domain.strip()
    problem = callback_domain_problem(callback_domain)
    if problem is not None:
        raise SandboxSetupError(problem)
    made = app_secret is None
    app_secret = app_secret if app_secret is not None else secrets.token_urlsafe(18)
    oa_made = oa_app_secret is None
    oa_app_secret = oa_app_secret if oa_app_secret is not None else secrets.token_urlsafe(18)
    try:
        app = create_sandbox_app(
            [SandboxApp(app_id, app_secret, name or SANDBOX_APP_NAME, callback_domain),
             SandboxApp(oa_app_id, oa_app_secret, oa_name or SANDBOX_OA_NAME, callback_domain,
                        kind=OFFICIAL_ACCOUNT)],
            database_uri=database, public_url=public_url)
    except (SQLAlchemyError, ImportError) as error:  # ImportError: its driver is missing
        reason = (str(getattr(error, "orig", None) or error).strip().splitlines() or ["?"])[0]
        raise SandboxSetupError(
            f"--database {_shown(database)} cannot be used: {reason}. Give a SQLite file "
            "whose folder exists and can be written (sqlite:///wechat-qr-sandbox.db, the "
            "default), or the URL of a database server that is running and reachable"
        ) from None
    # Keep-alive, as WeChat's servers: the extension's pooled session is exercised.
    server = make_server(host, port, app, threaded=True, request_handler=KeepAliveHandler)
    with app.app_context():
        database_used = app.extensions["sqlalchemy"].engine.url
    for line in startup_lines(host=host, port=port, app_id=app_id,
                              app_secret=app_secret if made else None,
                              callback_domain=callback_domain, oa_app_id=oa_app_id,
                              oa_app_secret=oa_app_secret if oa_made else None,
                              database=database_used.render_as_string(hide_password=True)):
        say(line)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def startup_lines(*, host: str, port: int, app_id: str, app_secret: str | None,
                  callback_domain: str, oa_app_id: str = SANDBOX_OA_APP_ID,
                  oa_app_secret: str | None = None, database: str | None = None) -> list[str]:
    """What the sandbox says at start: the settings to copy into the site, the address to
    open the site at, and where it keeps its data (``database``, its password hidden).
    ``app_secret``/``oa_app_secret``: the ones it made (a chosen one is never printed)."""
    shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(host, host)
    base = f"http://{'[' + shown + ']' if ':' in shown and '[' not in shown else shown}:{port}"
    secret = app_secret or "<the --app-secret you gave>"
    oa_secret = oa_app_secret or "<the --oa-app-secret you gave>"
    return [
        f" * WeChat sandbox (a simulated WeChat Open Platform) at {base}",
        " * Give your site these settings (app.config or environment variables), with "
        "WECHAT_QR_SANDBOX off:",
        f"       WECHAT_QR_OPEN_BASE_URL={base}",
        f"       WECHAT_QR_API_BASE_URL={base}",
        f"       WECHAT_QR_APP_ID={app_id}",
        f"       WECHAT_QR_APP_SECRET={secret}",
        f"       WECHAT_QR_OA_APP_ID={oa_app_id}",
        f"       WECHAT_QR_OA_APP_SECRET={oa_secret}",
        *([" * A made-up AppSecret is new at every start; --app-secret and --oa-app-secret "
           "keep one."] if app_secret or oa_app_secret else []),
        f" * Authorization callback domain (授权回调域): {callback_domain}. Open your site at "
        f"http://{callback_domain}:<its port>/ (--callback-domain changes it): like WeChat, "
        "the sandbox refuses a redirect URI on another host with error 10003, and localhost "
        "and 127.0.0.1 are different hosts.",
        *([f" * Its database (QR codes, codes, people's avatars): {database}"]
          if database else []),
        " * For development only: anyone who reaches it can log in as a simulated person.",
    ]


class SandboxSetupError(Exception):
    """An option the sandbox cannot start with: what is wrong and what to give instead
    (each entry point says it in one line, exit status 1)."""


def callback_domain_problem(value: str) -> str | None:
    """Why ``value`` is no bare host name (a scheme, a port or a path: then every login
    ended on WeChat's error 10003, the redirect URI's host never equal to it), or
    ``None``."""
    text = value.strip()
    host = text.split("://", 1)[-1]
    name = host.split("/", 1)[0]
    extras = [what for what, found in (
        ("a scheme", "://" in text),
        # an IPv6 address's own colons aside: in brackets, or bare (more than one)
        ("a port", ":" in name.rsplit("]", 1)[-1] and (name.startswith("[")
                                                        or name.count(":") == 1)),
        ("a path", any(mark in host for mark in "/?#"))) if found]
    if not extras and host:
        return None
    return (f"--callback-domain {value!r} has {' and '.join(extras) or 'no host'}, but the "
            "authorization callback domain is a bare host name: give e.g. localhost, and "
            "open your site at http://localhost:<its port>/")


def _shown(url: str) -> str:
    """A database URL as it may be printed (its password hidden)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a URL SQLAlchemy reads: anything like a password masked
        return repr(re.sub(r":[^@/]*@", ":***@", url))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flask_wechat_qr.sandbox",
                                     description="Simulated WeChat Open Platform")
    for option in SANDBOX_OPTIONS:
        parser.add_argument(option.flag, default=option.default, type=option.type,
                            help=option.help)
    args = parser.parse_args(argv)
    try:
        serve(**vars(args))
    except SandboxSetupError as error:
        raise SystemExit(f"Error: {error}") from None


def _print(line: str) -> None:
    print(line, flush=True)  # flushed: a pipe reading it (a test, a supervisor) sees it now


if __name__ == "__main__":
    main()
