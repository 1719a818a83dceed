"""``flask wechat-qr``: the extension's command group (registered by ``init_app``).

Subcommands are added to :data:`cli` (``db``, ``check``, ``sandbox``; more can join it with
``@cli.command()`` / ``@cli.group()``). Commands of an ``AppGroup`` run inside the app
context, so they reach the app's runtime. This module is imported by
every ``init_app``: heavy imports (Alembic, the sandbox) happen inside the commands.
"""

from __future__ import annotations

import re
import sys
import typing as t
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

import click
from flask import Flask, current_app, url_for
from flask.cli import AppGroup

from .runtime import Runtime, find_runtime
from .sandbox.options import SANDBOX_APP_ID, SANDBOX_APP_SECRET, SANDBOX_OPTIONS
from .settings import (
    ConnectionSettings,
    Settings,
    configured_issuer,
)
from .urls import (
    WECHAT_API_BASE_URL,
    WECHAT_OPEN_BASE_URL,
    configured_base_url,
    is_loopback_host,
)

cli = AppGroup("wechat-qr", help="Flask-WeChat-QR: log in with WeChat by QR code.")


@cli.group("db")
def db_group() -> None:
    """The extension's own tables and their migrations (apart from the site's own)."""


@db_group.command("upgrade")
@click.argument("revision", default="head")
@click.option("--sql", is_flag=True,
              help="Print the SQL instead of running it (for a DBA to apply).")
def upgrade_command(revision: str, sql: bool) -> None:
    """Create or upgrade the extension's tables (run at every deploy; safe to repeat)."""
    from alembic.util import CommandError  # Alembic loads only when a command runs

    from . import migrations

    try:
        result = migrations.upgrade(revision=revision, sql=sql, output=sys.stdout)
    except (migrations.MigrationError, CommandError) as exc:
        raise click.ClickException(str(exc)) from None
    if sql:
        return
    head = migrations.head_revision()
    if result.adopted:
        click.echo(f"Flask-WeChat-QR tables: found tables made by create_all that match "
                   f"{head}; recorded them as {head} (head).")
    elif result.changed:
        click.echo(f"Flask-WeChat-QR tables: upgraded from {result.before or '(none)'} to "
                   f"{_describe(result.after, head)}.")
    else:
        click.echo(f"Flask-WeChat-QR tables: already at {_describe(result.after, head)}; "
                   "nothing to do.")


@db_group.command("current")
def current_command() -> None:
    """Show the revision of the extension's tables in this app's database."""
    from . import migrations

    current = migrations.current_revision()
    head = migrations.head_revision()
    if current is None:
        click.echo("Flask-WeChat-QR tables: none yet (run `flask wechat-qr db upgrade`).")
    elif current != head:
        click.echo(f"Flask-WeChat-QR tables: {current}; this version needs {head} "
                   "(run `flask wechat-qr db upgrade`).")
    else:
        click.echo(f"Flask-WeChat-QR tables: {_describe(current, head)}.")


@db_group.command("stamp")
@click.argument("revision")
def stamp_command(revision: str) -> None:
    """Record REVISION without running it, for tables made outside these migrations."""
    from alembic.util import CommandError

    from . import migrations

    try:
        result = migrations.stamp(revision=revision)
    except CommandError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Flask-WeChat-QR tables: recorded as {result.after} "
               f"(was {result.before or '(none)'}).")


def _describe(revision: str | None, head: str) -> str:
    return f"{revision} (head)" if revision == head else str(revision)


# --- flask wechat-qr check ------------------------------------------------------------

#: Shorter SECRET_KEYs are flagged: the session cookie carries the login's state.
MIN_SECRET_KEY_LENGTH = 16
#: SECRET_KEYs copied from tutorials and templates, compared in lower case without
#: ``-``, ``_``, ``.`` and spaces; a key containing one of the markers is a placeholder too.
_PLACEHOLDER_KEYS = frozenset({
    "dev", "devkey", "devsecret", "development", "secret", "secretkey", "test", "testing",
    "testkey", "password", "default", "key", "flask", "notsecret", "supersecret",
    "supersecretkey", "mysecretkey", "xxx", "todo",
})
_PLACEHOLDER_MARKERS = ("changeme", "changethis", "replaceme", "insecure", "placeholder",
                        "yoursecret")
#: A WeChat Open Platform AppID: ``wx`` and 16 hexadecimal digits.
_WECHAT_APP_ID = re.compile(r"wx[0-9a-f]{16}")
_CALLBACK_DOMAIN_LABEL = "Authorization callback domain (授权回调域)"


def mask_secret(secret: str) -> str:
    """Enough of a secret to recognise which one is configured, never enough to use it."""
    if len(secret) < 8:
        return "********"
    return f"{secret[:2]}…{secret[-2:]}"


@dataclass
class _Findings:
    """What ``check`` found: problems fail the command, warnings only inform."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def problem(self, what: str, fix: str, connection: str | None = None) -> None:
        self.problems.append(_line("PROBLEM", what, fix, connection))

    def warning(self, what: str, fix: str, connection: str | None = None) -> None:
        self.warnings.append(_line("WARNING", what, fix, connection))

    def summary(self) -> str:
        counts = [_plural(len(self.problems), "problem") if self.problems else "no problems"]
        if self.warnings:
            counts.append(_plural(len(self.warnings), "warning"))
        advice = "; fix the problems before registering or deploying." if self.problems else "."
        return f"Summary: {', '.join(counts)}{advice}"


def _line(kind: str, what: str, fix: str, connection: str | None) -> str:
    where = f" [{connection}]" if connection else ""
    return f"{kind}{where}: {what}. Fix: {fix}."


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _validate_base_url(_ctx: click.Context, _param: click.Parameter,
                       value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value.strip())
    try:
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        raise click.BadParameter(f"{value!r} has an invalid port.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(
            f"{value!r} is not an http(s) URL; give the site's public address, e.g. "
            "https://www.example.com")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise click.BadParameter(
            f"{value!r} must be the site's address only (no query, fragment or user name).")
    return value.strip()


@cli.command("check")
@click.option("--base-url", metavar="URL", callback=_validate_base_url,
              help="The site's public address as visitors reach it, e.g. "
                   "https://www.example.com (with a path if the site lives under one). "
                   "Default: SERVER_NAME with PREFERRED_URL_SCHEME and APPLICATION_ROOT.")
@click.option("--callback-domain", metavar="DOMAIN",
              help="The authorization callback domain (授权回调域) entered on the WeChat Open "
                   "Platform, to compare with the redirect URI's host.")
def check_command(base_url: str | None, callback_domain: str | None) -> None:
    """Check the WeChat login settings before registering or deploying.

    Lists every connection (AppSecret masked), the exact redirect URI this site sends to
    WeChat and the authorization callback domain (授权回调域) to enter for it on the WeChat
    Open Platform. Then flags what would make WeChat logins fail or unsafe: a port in the
    redirect URI; http, the sandbox or a localhost address in production; a missing or weak
    SECRET_KEY; the sandbox's AppID or AppSecret with the sandbox off; a --callback-domain
    with a scheme, port or path, or that is not the redirect URI's host.

    "Production" means DEBUG (flask --debug, FLASK_DEBUG) and TESTING both off. The
    redirect URI is built with the app's own url_for at the public base URL: --base-url,
    else SERVER_NAME (a SERVER_NAME always wins over --base-url's host, as it does for
    every request). With neither, the redirect URI depends on the host each request
    arrives with (behind a proxy, what ProxyFix passes on), so it cannot be known here:
    that is a warning, not a problem.

    Exit status: 0 when no problem was found (warnings allowed), 1 when one was, 2 for a
    usage error.
    """
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    runtime = find_runtime(app)
    if runtime is None:
        raise click.ClickException("WeChatQR is not set up on this app: call WeChatQR(app, "
                                   "db=db, user_model=User) or wechat.init_app(app).")
    settings = runtime.settings
    findings = _Findings()
    production = not (app.debug or app.testing)
    base, source = _public_base_url(app, base_url)
    uris = _site_urls(app, [("wechat_qr.callback", {"connection": identifier})
                            for identifier in settings.connections], base, findings)
    jwks_url = _site_urls(app, [("wechat_qr.jwks", {})], base, findings)[0]
    uris = dict(zip(settings.connections, uris, strict=True))
    redirect = urlsplit(next(iter(uris.values()))) if base else None
    domain = redirect.hostname if redirect else None

    echo = click.echo
    echo(f"Flask-WeChat-QR check of app {app.name!r}, {_mode(app)}")
    if base:
        echo(f"Public base URL: {base} (from {source})")
    else:
        echo("Public base URL: unknown (no --base-url, no SERVER_NAME)")
    if settings.sandbox:
        echo(f"Sandbox: on, mounted at {settings.sandbox_prefix} (logins go to the simulated "
             "WeChat)")
    else:
        echo(f"Sandbox: off; QR page {settings.open_base_url}, API {settings.api_base_url}")

    for index, conn in enumerate(settings.connections.values()):
        echo("")
        echo(f"Connection {conn.identifier!r}")
        rows = [
            ("Display name", conn.display_name),
            ("AppID", conn.app_id),
            ("AppSecret", f"{mask_secret(conn.app_secret)} (masked)"),
            ("Login only", "yes" if conn.login_only else "no"),
            ("Association", conn.association),
            ("Match fields", ", ".join(conn.match_fields) or "none"),
            ("Profile sync", conn.profile_sync),
            ("Callback URL", conn.callback_url or "none"),
            *([("ID token", _describe_id_token(runtime, conn, jwks_url))] if conn.callback_url
              else []),
            ("Redirect URI", uris[conn.identifier] if base else
             f"unknown; <public base URL>{uris[conn.identifier]}"),
        ]
        for label, value in rows:
            echo(f"  {label + ':':<14} {value}")
        echo(f"  {_CALLBACK_DOMAIN_LABEL}: {domain or 'unknown'}")
        _check_connection(conn, index, settings.sandbox, app, findings)

    _check_secret_key(app.config.get("SECRET_KEY"), findings)
    _check_id_tokens(settings, app, production, findings)
    if settings.sandbox and production:
        findings.problem(
            "WECHAT_QR_SANDBOX is on while DEBUG and TESTING are off: logins go to the "
            "simulated WeChat, where anyone can log in as any simulated user",
            "set WECHAT_QR_SANDBOX=False and give your website application's AppID and "
            "AppSecret (keep the sandbox for development, with DEBUG on)")
    if production and not settings.sandbox:
        _check_wechat_endpoints(settings, findings)
    if redirect is None:
        findings.warning(
            "the redirect URI cannot be known: with no --base-url and no SERVER_NAME it is "
            "built from the host of each request",
            "run again with --base-url https://www.example.com (the address visitors use), "
            "or set SERVER_NAME and PREFERRED_URL_SCHEME")
    else:
        _check_redirect(redirect, base_url, app, settings.sandbox, production, findings)
    if callback_domain is not None:
        _check_callback_domain(callback_domain, domain, findings)

    if findings.problems or findings.warnings:
        echo("")
    for line in [*findings.problems, *findings.warnings]:
        echo(line)
    echo("")
    echo(findings.summary())
    if findings.problems:
        click.get_current_context().exit(1)


def _mode(app: Flask) -> str:
    if app.testing:
        return "testing (TESTING on: production checks skipped)"
    if app.debug:
        return "development (DEBUG on: production checks skipped)"
    return "production (DEBUG and TESTING off)"


def _public_base_url(app: Flask, option: str | None) -> tuple[str | None, str]:
    """The site's public base URL and where it came from; ``None`` if unknown."""
    if option:
        return option.rstrip("/"), "--base-url"
    configured = configured_base_url(app.config)
    return configured, "SERVER_NAME, PREFERRED_URL_SCHEME and APPLICATION_ROOT" if configured \
        else ""


def _site_urls(app: Flask, targets: list[tuple[str, dict[str, str]]], base: str | None,
               findings: _Findings) -> list[str]:
    """What ``url_for`` gives for each ``(endpoint, values)`` at ``base`` (just the path
    when unknown)."""
    server_name = app.config.get("SERVER_NAME")
    if base and server_name and urlsplit(base).netloc != server_name:
        # SERVER_NAME wins for every request, so it is the host Flask checks too.
        parts = urlsplit(base)
        base = f"{parts.scheme}://{server_name}{parts.path}"
    with app.test_request_context(base_url=base) as ctx:
        if ctx.url_adapter is not None:
            return [url_for(endpoint, _external=base is not None, **values)
                    for endpoint, values in targets]
        refused = urlsplit(base).hostname if base else None
    # Flask refused the host (TRUSTED_HOSTS): still show the URIs, and say why it matters.
    if refused and not any(refused in line for line in findings.problems):
        findings.problem(
            f"the host {refused} is not in TRUSTED_HOSTS: Flask answers every request for "
            "it, WeChat's callback included, with 400 Bad Request",
            f"add {refused} to TRUSTED_HOSTS, or give the right --base-url")
    trusted_hosts = app.config.get("TRUSTED_HOSTS")
    app.config["TRUSTED_HOSTS"] = None
    try:
        return _site_urls(app, targets, base, findings)
    finally:
        app.config["TRUSTED_HOSTS"] = trusted_hosts


def _check_connection(conn: ConnectionSettings, index: int, sandbox: bool, app: Flask,
                      findings: _Findings) -> None:
    if sandbox:
        return
    several = bool(app.config.get("WECHAT_QR_CONNECTIONS"))

    def key(name: str) -> str:
        return f"WECHAT_QR_CONNECTIONS[{index}]['{name}']" if several else \
            f"WECHAT_QR_{name.upper()}"

    if conn.app_id == SANDBOX_APP_ID or conn.app_secret == SANDBOX_APP_SECRET:
        findings.problem(
            "the sandbox's AppID or AppSecret is configured but WECHAT_QR_SANDBOX is off: "
            "WeChat does not know them",
            f"set {key('app_id')} and {key('app_secret')} to your website application's "
            "(open.weixin.qq.com, 管理中心 > 网站应用), or turn WECHAT_QR_SANDBOX on",
            conn.identifier)
    elif not _WECHAT_APP_ID.fullmatch(conn.app_id):
        findings.warning(
            f"the AppID {conn.app_id!r} does not look like a WeChat AppID ('wx' and 16 "
            "hexadecimal digits)",
            f"copy {key('app_id')} from open.weixin.qq.com (管理中心 > 网站应用)",
            conn.identifier)


def _describe_id_token(runtime: Runtime, conn: ConnectionSettings, jwks_url: str) -> str:
    signer = runtime.id_tokens
    if signer is None:  # init_app refuses this; shown rather than crash
        return "no signing key"
    where = f"public keys at {jwks_url}" if signer.algorithm == "RS256" else "shared secret"
    issuer = configured_issuer(runtime.settings, current_app.config) or "from each request"
    return (f"{signer.algorithm} ({where}), aud {conn.id_token_audience or conn.identifier}, "
            f"iss {issuer}, valid {signer.ttl} s")


def _check_id_tokens(settings: Settings, app: Flask, production: bool,
                     findings: _Findings) -> None:
    """The business callback URL: where the ID token goes and what it says it comes from."""
    with_callback = [c for c in settings.connections.values() if c.callback_url]
    for conn in with_callback:
        parts = urlsplit(t.cast(str, conn.callback_url))
        if production and parts.scheme == "http" and not is_loopback_host(parts.hostname or ""):
            findings.problem(
                f"the callback URL {conn.callback_url} is http: the ID token would cross the "
                "network in clear text, and browsers warn about the form",
                "use an https callback URL", conn.identifier)
    if with_callback and not settings.id_token_issuer and not app.config.get("SERVER_NAME"):
        findings.warning(
            "the ID token's iss is taken from each request's Host header (no "
            "WECHAT_QR_ID_TOKEN_ISSUER, no SERVER_NAME): www.example.com and example.com "
            "give different issuers, and receivers that check iss refuse one of them",
            "set WECHAT_QR_ID_TOKEN_ISSUER to the site's public root URL, e.g. "
            "https://www.example.com")


def _check_secret_key(secret_key: t.Any, findings: _Findings) -> None:
    fix = ("set SECRET_KEY from the environment to a long random value, the same on every "
           "worker, e.g. the output of: python -c \"import secrets; "
           "print(secrets.token_hex(32))\"")
    if not secret_key:
        findings.problem("SECRET_KEY is not set: the login's state lives in the signed "
                         "session cookie, so WeChat logins cannot work", fix)
        return
    text = secret_key.decode("latin-1") if isinstance(secret_key, bytes) else str(secret_key)
    normal = re.sub(r"[-_.\s]", "", text.lower())
    if normal in _PLACEHOLDER_KEYS or any(marker in normal for marker in _PLACEHOLDER_MARKERS):
        findings.problem("SECRET_KEY is a well-known placeholder: anyone can forge session "
                         "cookies, and with them logins", fix)
    elif len(text) < MIN_SECRET_KEY_LENGTH:
        findings.problem(f"SECRET_KEY is weak: {len(text)} characters, fewer than "
                         f"{MIN_SECRET_KEY_LENGTH}", fix)


def _check_wechat_endpoints(settings: Settings, findings: _Findings) -> None:
    for name, value, default in (("OPEN_BASE_URL", settings.open_base_url, WECHAT_OPEN_BASE_URL),
                                 ("API_BASE_URL", settings.api_base_url, WECHAT_API_BASE_URL)):
        if value != default:
            findings.warning(
                f"WECHAT_QR_{name} is {value}, not WeChat's {default}, in production",
                "unset it unless that address is a deliberate proxy to WeChat (a standalone "
                "sandbox left configured sends every login there)")


def _check_redirect(redirect: SplitResult, base_url: str | None, app: Flask, sandbox: bool,
                    production: bool, findings: _Findings) -> None:
    host = redirect.hostname or ""
    if redirect.port is not None:
        what = (f"the redirect URI has port {redirect.port}, but the authorization callback "
                "domain (授权回调域) takes none: WeChat refuses such a redirect_uri (10003)")
        fix = ("serve the public site on port 443 (or 80), behind a reverse proxy if the app "
               "listens elsewhere (ProxyFix without x_port), and give --base-url or "
               "SERVER_NAME without a port")
        if sandbox:
            findings.warning(what + "; the sandbox accepts it", fix)
        else:
            findings.problem(what, fix)
    if base_url is not None:
        given = urlsplit(base_url).hostname
        if given and given != host:
            findings.warning(
                f"SERVER_NAME ({app.config.get('SERVER_NAME')}) overrides the host of "
                f"--base-url ({given}): Flask builds every external URL, the redirect URI "
                "included, with SERVER_NAME",
                "make SERVER_NAME the public host, or unset it")
    if not production:
        return
    if redirect.scheme != "https":
        findings.problem(
            "the redirect URI uses http in production: WeChat's code and the session cookie "
            "would travel unencrypted",
            "serve the site over https and give --base-url https://... (or "
            "PREFERRED_URL_SCHEME=https with SERVER_NAME); behind a proxy, ProxyFix with "
            "x_proto=1 makes Flask see https")
    if is_loopback_host(host):
        findings.problem(
            f"the redirect URI's host {host} is this machine, not a public domain: WeChat "
            "would send each visitor's browser to their own computer",
            "give --base-url (or SERVER_NAME) with the site's public domain")


def _check_callback_domain(entered: str, domain: str | None, findings: _Findings) -> None:
    text = entered.strip()
    example = domain or "www.example.com"
    parts = urlsplit(text if "://" in text else "//" + text)
    extras = []
    if parts.scheme:
        extras.append(f"a scheme ({parts.scheme}://)")
    if ":" in parts.netloc.rsplit("@", 1)[-1].rsplit("]", 1)[-1]:
        extras.append("a port")
    if parts.path or parts.query or parts.fragment:
        extras.append("a path")
    if extras:
        findings.problem(
            f"--callback-domain {text!r} has {_and(extras)}, but the authorization "
            "callback domain (授权回调域) is a bare host (any path on it works; no port)",
            f"enter only the host on the Open Platform, e.g. {example}")
    entered_host = (parts.hostname or "").rstrip(".")
    if domain is None:
        findings.warning("--callback-domain cannot be compared with the redirect URI, which "
                         "is unknown", "run again with --base-url as well")
    elif entered_host != domain:
        findings.problem(
            f"the authorization callback domain (授权回调域) {entered_host or text!r} is not "
            f"the redirect URI's host {domain!r}: WeChat matches it exactly (www.example.com "
            "and example.com differ; sub-domains are not covered) and refuses the login",
            f"enter {domain} on the Open Platform (管理中心 > 网站应用 > 开发信息), or fix "
            "--base-url / SERVER_NAME")


# --- flask wechat-qr sandbox ----------------------------------------------------------


def _sandbox_options(command: t.Callable[..., None]) -> t.Callable[..., None]:
    for option in reversed(SANDBOX_OPTIONS):
        command = click.option(option.flag, default=option.default, type=option.type,
                               show_default=option.default is not None,
                               help=option.help)(command)
    return command


@cli.command("sandbox", with_appcontext=False)
@_sandbox_options
def sandbox_command(**options: t.Any) -> None:
    """Run the simulated WeChat Open Platform on its own port.

    The same server as `python -m flask_wechat_qr.sandbox`. Point WECHAT_QR_OPEN_BASE_URL
    and WECHAT_QR_API_BASE_URL at the address it prints and use its AppID and AppSecret.
    Stop it with Ctrl-C.
    """
    from .sandbox.__main__ import serve

    serve(**options, echo=click.echo)
