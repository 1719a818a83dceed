"""The :class:`WeChatQR` extension object: ``init_app`` turns settings into a runtime."""

from __future__ import annotations

import functools
import logging
import typing as t
from dataclasses import replace

from authlib.integrations.flask_client import OAuth
from flask import Flask, Response, current_app, request
from flask.sessions import SecureCookieSessionInterface
from flask.signals import request_finished
from flask_login import user_logged_out

from .adapter import (
    AccountAdapter,
    arguments_create_user_cannot_give,
    columns_create_user_cannot_fill,
    composite_key_columns,
    why_accounts_cannot_be_proved,
)
from .association import AssociationPolicy
from .avatar_download import AvatarDownloader
from .avatars import AvatarKeeper, AvatarStore, DatabaseAvatarStore
from .binding import PendingBindings
from .checks import (
    ISSUER_FIX,
    SECRET_KEY_FIX,
    callbacks_shadowed_at_start,
    connection_setting_key,
    half_credentials,
    issuer_problem,
    secret_key_problem,
    shadowed_route_problem,
)
from .client import OfficialAccountClient, WeChatClient
from .csrf import csrf_token
from .database_pools import keep_connections_per_process
from .errors import ConfigurationError
from .flow import LoginFlow, forget_pending_binding
from .forked_child import start_afresh_if_forked_unseen
from .i18n import LazyText, lazy_display_name
from .i18n import lazy_gettext as _l
from .id_token import IdTokenSigner
from .layout import escape_own_pages, page_layout
from .login_state import LoginStates, LoginStateStore, forget_waiting_pages
from .model_base import bind_key_of
from .models import models_for, users_bind_key
from .redact import redact_http_debug_logs
from .refresh import ProfileRefresher, refreshes_profiles, threads_idle_between_requests
from .runtime import EXTENSION_KEY, Runtime, find_runtime
from .session_cookie import HttpsAwareSessionInterface
from .settings import (
    OFFICIAL_ACCOUNT,
    ConnectionSettings,
    Settings,
    apply_defaults,
    load_settings,
    no_such_setting,
    unknown_settings,
)
from .site_routes import routes_subdomain
from .transactions import watch_writes
from .urls import IN_PROCESS_ORIGIN, SANDBOX_IMAGE_ORIGIN, SANDBOX_IMAGE_PATH
from .user_key import (
    SqliteTriggerCheck,
    forget_on_bulk_delete,
    key_identities_on_flush,
    referenced_user_column,
)
from .write_turns import watch as watch_write_turns

if t.TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

    from .protocols import Identity, User

log = logging.getLogger("flask_wechat_qr")


class WeChatQR:
    """Log in with WeChat (QR code on PC) for a Flask app.

    ::

        wechat = WeChatQR(app, db=db, user_model=User)
        # or, with an app factory:
        wechat = WeChatQR(db=db, user_model=User)
        wechat.init_app(app)

    :param db: the host's Flask-SQLAlchemy instance; the identity and state tables are
        declared on it. Defaults to the one registered on the app.
    :param user_model: the host's user model, used by the default adapter.
    :param adapter: an :class:`~flask_wechat_qr.AccountAdapter` (subclass) instance for
        hosts whose users need more than the default.
    :param avatar_store: where stored avatars live (``WECHAT_QR_STORE_AVATARS``), e.g.
        object storage: an :class:`~flask_wechat_qr.AvatarStore`. Defaults to a table on
        ``db``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        db: SQLAlchemy | None = None,
        user_model: type[object] | None = None,
        adapter: AccountAdapter | None = None,
        avatar_store: AvatarStore | None = None,
    ) -> None:
        self.db = db
        self.user_model = user_model
        self.adapter = adapter
        self.avatar_store = avatar_store
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read and check the settings, build the app's runtime, register the blueprint
        and the ``flask wechat-qr`` commands. Nothing is left behind when it fails."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "A 'WeChatQR' instance has already been registered on this Flask app. "
                "Import and use that instance instead."
            )
        redact_http_debug_logs()
        apply_defaults(app.config, testing=app.testing)
        settings = load_settings(app.config, testing=app.testing)
        _warn_of_unknown_settings(app)
        id_tokens = IdTokenSigner.from_settings(settings)
        db = self._db_for(app)
        adapter = self._adapter_for(app, db)
        _check_users_can_be_found(adapter)
        _check_association_support(settings, adapter)
        _check_users_can_be_created(settings, adapter)
        _check_id_token_secret(app, settings)
        _check_callbacks_reachable(app, settings)
        _warn_of_a_sandbox_in_production(app, settings)
        _warn_of_missing_credentials(app, settings)
        _warn_of_half_an_official_account(settings)
        _warn_of_uwsgi_without_threads(settings)
        _secure_session_cookie(app)
        runtime = _build_runtime(app, settings, db, adapter, id_tokens, self.avatar_store)
        unavailable = _unsafe_to_serve(app, settings)
        app.extensions[EXTENSION_KEY] = replace(runtime, unavailable=unavailable)
        with app.app_context():  # the site's engines too: forked workers share none
            keep_connections_per_process(db.engines.values())
        # Before the site's own hooks use a connection: a worker forked where no fork hook
        # of the extension's ran (uWSGI's replaced by the site's) starts afresh here.
        app.before_request_funcs.setdefault(None, []).insert(0, start_afresh_if_forked_unseen)

        from .cli import cli
        from .views import blueprint, frame_callbacks_last, no_credentialed_reads_last

        app.register_blueprint(blueprint, url_prefix=settings.url_prefix)
        if any(conn.qr_self_redirect for conn in settings.connections.values()):
            # Only then: the receiver would run after every request of the site.
            request_finished.connect(frame_callbacks_last, app)
        # Whatever SESSION_COOKIE_SAMESITE says: a Lax or Strict cookie stays home from
        # another site's requests, but a sibling sub-domain's (same site) carry it too.
        request_finished.connect(no_credentialed_reads_last, app)
        user_logged_out.connect(forget_pending_binding, app)
        user_logged_out.connect(forget_waiting_pages, app)
        _serve_verify_files(app, settings)
        app.context_processor(_template_context)
        app.add_template_global(csrf_token, "wechat_qr_csrf_token")
        app.add_template_global(_connection_named, "wechat_qr_connection")
        app.add_template_global(_login_available, "wechat_qr_available")
        app.add_template_global(page_layout, "wechat_qr_layout")
        escape_own_pages(app.jinja_env)
        app.cli.add_command(cli)

    def _db_for(self, app: Flask) -> SQLAlchemy:
        """The Flask-SQLAlchemy instance the extension's tables live on."""
        db = self.db if self.db is not None else app.extensions.get("sqlalchemy")
        if db is None:
            raise ConfigurationError(
                "db", "no Flask-SQLAlchemy instance",
                "Pass WeChatQR(app, db=db, ...) or call db.init_app(app) before WeChatQR.",
            )
        if app.extensions.get("sqlalchemy") is not db:
            raise ConfigurationError(
                "db", "this Flask-SQLAlchemy instance is not registered on the app",
                "Call db.init_app(app) before WeChatQR.init_app(app).",
            )
        session_options = getattr(getattr(db, "session", None), "session_factory", None)
        if getattr(session_options, "kw", {}).get("autobegin", True) is False:
            # Every login then failed (a 500): "Autobegin is disabled on this Session".
            raise ConfigurationError(
                "db", "its sessions begin no transaction by themselves "
                "(session_options autobegin=False), and the extension reads and writes each "
                "login through db.session, committing it once",
                "Leave autobegin on (SQLAlchemy's default): SQLAlchemy(session_options=...) "
                "without autobegin=False.",
            )
        return t.cast("SQLAlchemy", db)

    def _adapter_for(self, app: Flask, db: SQLAlchemy) -> AccountAdapter[User]:
        """The host's adapter, or the default one over ``user_model`` and Flask-Login."""
        adapter = self.adapter
        if adapter is not None:
            if adapter.db is None:
                adapter.db = db
            return adapter
        if self.user_model is None:
            raise ConfigurationError(
                "user_model", "the default adapter needs the site's user model",
                "Pass WeChatQR(app, db=db, user_model=User), or adapter=MyAdapter().",
            )
        if getattr(app, "login_manager", None) is None:
            raise ConfigurationError(
                "login_manager", "Flask-Login is not set up on this app",
                "Call LoginManager().init_app(app) before WeChatQR, or pass an adapter "
                "whose login_user logs users in your own way.",
            )
        return AccountAdapter(db, self.user_model)

    # --- for the host's own pages (the current app's runtime) ----------------------------

    @property
    def connections(self) -> dict[str, ConnectionSettings]:
        """The current app's WeChat connections by identifier (none where this extension is
        not set up on it), e.g. for a host's own login page."""
        runtime = find_runtime(current_app)
        return dict(runtime.settings.connections) if runtime is not None else {}

    def identities_of(self, user: User) -> list[Identity]:
        """The WeChat identities linked to ``user`` in the current app, oldest first (none
        where this extension is not set up on it), e.g. for an account page."""
        runtime = find_runtime(current_app)
        return runtime.policy.identities_of(user) if runtime is not None else []

    @property
    def identity_model(self) -> t.Any:
        """The mapped class of ``wechat_qr_identity`` on the current app's ``db``, e.g. for
        an admin's ``ModelView`` (``None`` where this extension is not set up on it)."""
        runtime = find_runtime(current_app)
        return runtime.models.Identity if runtime is not None else None

    def jwks(self) -> dict[str, t.Any]:
        """The public keys of the current app's RS256 ID tokens, as served at
        ``/auth/.well-known/jwks.json`` (``{"keys": []}`` without an RS256 key), for a
        receiver living in the same process."""
        runtime = find_runtime(current_app)
        signer = runtime.id_tokens if runtime is not None else None
        return signer.jwks() if signer is not None else {"keys": []}

    def upgrade_database(self, app: Flask | None = None) -> str | None:
        """Create or upgrade the extension's tables with its own Alembic migrations (what
        ``flask wechat-qr db upgrade`` does); the revision the database is at afterwards.
        Uses ``app``, else the current app."""
        from . import migrations

        return migrations.upgrade(app).after


def _build_runtime(app: Flask, settings: Settings, db: SQLAlchemy, adapter: AccountAdapter[User],
                   id_tokens: IdTokenSigner | None,
                   avatar_store: AvatarStore | None = None) -> Runtime:
    """The app's services, wired once: nothing below them reaches back up for another."""
    models = models_for(db, referenced_user_column(adapter.user_model,
                                                   settings.user_foreign_key),
                        users_bind_key(adapter.user_model))
    # One registry per app, never shared: Authlib's registry keeps ``self.app``, and only
    # ``OAuth(app)``/``init_app`` would set it, which also take the host's own Authlib slot
    # in ``app.extensions``.
    oauth = OAuth()
    oauth.app = app
    client_options: dict[str, t.Any] = dict(
        open_base_url=settings.open_base_url or _sandbox_open_base(settings),
        api_base_url=settings.api_base_url,
        timeout=settings.http_timeout,
        sandbox_images=settings.sandbox,
    )
    clients = {identifier: WeChatClient(oauth, conn, **client_options)
               for identifier, conn in settings.connections.items()}
    official_accounts = {identifier: OfficialAccountClient(oauth, conn, **client_options)
                         for identifier, conn in settings.connections.items()
                         if conn.has_official_account}
    avatars = AvatarKeeper(avatar_store or DatabaseAvatarStore(db, models.Avatar),
                           AvatarDownloader(timeout=settings.http_timeout),
                           enabled=settings.store_avatars, url_prefix=settings.url_prefix)
    if settings.sandbox:
        _install_sandbox(app, db, settings, [*clients.values(), *official_accounts.values()],
                         avatars.downloader, bind_key_of(models.Identity.__table__))
    policy = AssociationPolicy(db, models, adapter, avatars)
    adapter.on_user_deleted(policy.forget_user, id(models.Identity.__table__))
    forget_on_bulk_delete(db, adapter.user_model, policy.forget_users,
                          id(models.Identity.__table__))
    key_identities_on_flush(db, models.Identity, policy.user_key_for,
                            id(models.Identity.__table__))
    watch_writes(db)
    watch_write_turns(db)
    bindings = PendingBindings(db, models, policy, settings)
    refresher = ProfileRefresher(db, models, policy, adapter)
    store = LoginStateStore(db, models.LoginState)
    login_states = {
        identifier: LoginStates(store, identifier, conn.app_id, settings.state_ttl)
        for identifier, conn in settings.connections.items()}
    return Runtime(
        settings=settings, db=db, models=models, adapter=adapter, policy=policy,
        bindings=bindings, clients=clients, official_accounts=official_accounts,
        login_states=login_states,
        sqlite_trigger=SqliteTriggerCheck(db, models.Identity.__table__),
        id_tokens=id_tokens, avatars=avatars, refresher=refresher,
        flow=LoginFlow(db=db, settings=settings, adapter=adapter, policy=policy,
                       bindings=bindings, clients=clients,
                       official_accounts=official_accounts, login_states=login_states,
                       refresher=refresher),
    )


def _secure_session_cookie(app: Flask) -> None:
    """The login's state (and a pending binding) lives in the session cookie. SameSite=Lax
    keeps that cookie on WeChat's top-level redirect back to the callback and off
    cross-site POSTs (bind, unlink). Flask defines the key as None ("not set"), so
    setdefault would do nothing; a host's own choice ("Strict", "None") is kept. And the
    cookie is Secure whenever the request came over https (Flask's cookie session only)."""
    if app.config.get("SESSION_COOKIE_SAMESITE") is None:
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    if type(app.session_interface) is SecureCookieSessionInterface:
        app.session_interface = HttpsAwareSessionInterface()


def _unsafe_to_serve(app: Flask, settings: Settings) -> str | None:
    """Why logins must stay off in this app, said once in the log; ``None`` to serve them.

    Outside debug and testing the app still starts (``flask`` commands, the host's own
    pages) but WeChat login answers 503 while:

    * the SECRET_KEY is missing, short or well known: anyone could forge the session cookie
      that carries a login's state, and with it logins;
    * a connection posts ID tokens to a business callback URL and nothing fixes their
      issuer: ``iss`` would follow each request's Host header, which the client chooses.
    """
    if app.debug or app.testing:
        return None
    problem, fix = secret_key_problem(app.config.get("SECRET_KEY")), SECRET_KEY_FIX
    if problem is None:
        problem, fix = issuer_problem(settings, app.config), ISSUER_FIX
    if problem is not None:
        log.error("WeChat login is OFF: %s. Fix: %s. (`flask wechat-qr check` lists what "
                  "else to fix.)", problem, fix)
    return problem


def _warn_of_a_sandbox_in_production(app: Flask, settings: Settings) -> None:
    """The sandbox is on only when asked for; asked for outside debug and testing, it is
    said loudly at start-up (its pages carry a banner too)."""
    if settings.sandbox and not (app.debug or app.testing):
        log.warning("WECHAT_QR_SANDBOX is on while DEBUG and TESTING are off: logins go to "
                    "the simulated WeChat, where anyone can log in as any simulated person. "
                    "For real WeChat set WECHAT_QR_SANDBOX=false and give your website "
                    "application's AppID and AppSecret.")


def _warn_of_uwsgi_without_threads(settings: Settings) -> None:
    """uWSGI without Python threads runs an app's threads only while it serves a request:
    said at start-up, with the fix, where a connection refreshes profiles."""
    if threads_idle_between_requests() and any(
            refreshes_profiles(conn) for conn in settings.connections.values()):
        log.warning("uWSGI runs without Python threads (--enable-threads is off): stale "
                    "WeChat profiles (WECHAT_QR_PROFILE_REFRESH_AFTER) are refreshed in the "
                    "worker after the login's answer, each holding the worker for up to "
                    "WECHAT_QR_HTTP_TIMEOUT. Fix: start uWSGI with --enable-threads "
                    "(enable-threads = true in uwsgi.ini) or --threads N.")


def _warn_of_half_an_official_account(settings: Settings) -> None:
    """An Official Account with its AppID but not its AppSecret (or the reverse) is not
    used: in-WeChat visitors get the QR code login as before."""
    for conn in settings.connections.values():
        if bool(conn.oa_app_id) != bool(conn.oa_app_secret):
            given, missing = (("OA_APP_ID", "OA_APP_SECRET") if conn.oa_app_id
                              else ("OA_APP_SECRET", "OA_APP_ID"))
            log.warning(
                "Connection %r has WECHAT_QR_%s but no WECHAT_QR_%s: logins inside WeChat "
                "stay off until both are set (mp.weixin.qq.com, 设置与开发 > 基本配置).",
                conn.identifier, given, missing)


def _serve_verify_files(app: Flask, settings: Settings) -> None:
    """Each Official Account's ``MP_verify_*.txt`` at the site's root, where WeChat looks
    for it before accepting the web authorization domain (网页授权域名)."""
    files = {conn.oa_verify_file.name: conn.oa_verify_file.content
             for conn in settings.connections.values() if conn.oa_verify_file is not None}
    for name, content in files.items():
        def serve(content: str = content) -> Response:
            return Response(content, mimetype="text/plain",
                            headers={"Cache-Control": "public, max-age=300"})

        app.add_url_rule(f"/{name}", endpoint=f"wechat_qr_verify_file_{name[10:-4]}",
                         view_func=serve)


def _warn_of_missing_credentials(app: Flask, settings: Settings) -> None:
    """A site deploys its code before it has WeChat credentials: it starts (every ``flask``
    command works), and the connections without them answer a 503 page until they come."""
    missing = []
    for index, conn in enumerate(settings.connections.values()):
        if conn.has_credentials:
            continue
        if not (conn.app_id or conn.app_secret):
            missing.append(conn)
            continue
        app_id, app_secret = (connection_setting_key(app.config, index, name)
                              for name in ("app_id", "app_secret"))
        what, fix = half_credentials(conn, app_id, app_secret, settings.sandbox)
        log.warning("WeChat login is OFF for %r: %s. Fix: %s.", conn.identifier, what, fix)
    if not missing:
        return
    log.warning(
        "WeChat login is OFF for %s: no AppID and AppSecret. Fix: %s (from open.weixin.qq.com, "
        "管理中心 > 网站应用), or set WECHAT_QR_SANDBOX=true to try the simulated WeChat.",
        ", ".join(repr(conn.identifier) for conn in missing),
        "set WECHAT_QR_APP_ID and WECHAT_QR_APP_SECRET"
        if not app.config.get("WECHAT_QR_CONNECTIONS") else
        "give each of them app_id and app_secret in WECHAT_QR_CONNECTIONS")


def _check_id_token_secret(app: Flask, settings: Settings) -> None:
    """An ID-token secret is held by every receiver: it must not be the SECRET_KEY."""
    secret = settings.id_token_secret
    key = app.config.get("SECRET_KEY")
    if secret and key and secret.encode() == (key if isinstance(key, bytes)
                                              else str(key).encode()):
        raise ConfigurationError(
            "WECHAT_QR_ID_TOKEN_SECRET", "it is the app's SECRET_KEY",
            "Use a secret of its own (python -c \"import secrets; "
            "print(secrets.token_urlsafe(48))\"): every receiver holds it, and with the "
            "SECRET_KEY anyone could forge this site's session cookies.")


def _check_callbacks_reachable(app: Flask, settings: Settings) -> None:
    """A route the host registered first with the path of a connection's callback (the
    redirect URI) gets every login back from WeChat, and no login would finish: say so now,
    with the fix. (Routes registered after ``init_app`` are ``flask wechat-qr check``'s.)"""
    for route in callbacks_shadowed_at_start(app, settings):
        what, fix = shadowed_route_problem(route, settings.url_prefix)
        raise ConfigurationError(f"WECHAT_QR_URL_PREFIX ({route.connection})", what,
                                 fix[0].upper() + fix[1:] + ".")
    # The blueprint's routes are made later, of the app's url_rule_class: one made now
    # has the host they will have.
    if app.url_map.host_matching and app.url_rule_class("/").host is None:
        raise ConfigurationError(
            "host_matching",
            "the app matches routes on their host (Flask(..., host_matching=True)) and the "
            "extension's routes have none, so no request can reach the login",
            "give every route without one your site's host: a url_rule_class whose rules "
            "default to it (class HostRule(Rule): def __init__(self, *args, host=None, **kw): "
            "super().__init__(*args, host=host or 'www.example.com', **kw); then "
            "app.url_rule_class = HostRule before WeChatQR(app)), or serve the site without "
            "host matching.")


def _warn_of_unknown_settings(app: Flask) -> None:
    """A misspelt key (``WECHAT_QR_APPID``) is read by nothing: name it, rather than leave
    the operator with only its consequence (no AppID, login off)."""
    for name in unknown_settings(app.config):
        log.warning("Ignoring %s in app.config: %s.", name, no_such_setting(name))


def _check_users_can_be_found(adapter: AccountAdapter[User]) -> None:
    """The default ``load_user`` looks users up by a primary key of one column: with a
    composite one, every returning WeChat login would fail. Say so now, with the fix."""
    model = adapter.user_model
    if model is None or not adapter._is_default("load_user"):
        return
    key = composite_key_columns(model)
    if key:
        raise ConfigurationError(
            "user_model",
            f"{model.__name__}'s primary key is {len(key)} columns "
            f"({', '.join(key)}), and the default "
            "AccountAdapter.load_user finds a user by one value, so no returning WeChat "
            "login could find its user",
            "Subclass AccountAdapter, override load_user(user_id) to find the user by the "
            "id your get_id() gives (and get_user_id(user) where that is not get_id()), "
            f"and pass WeChatQR(..., adapter=YourAdapter(db, {model.__name__})) (docs: "
            "hooks, 'Finding users').")


def _check_users_can_be_created(settings: Settings, adapter: AccountAdapter[User]) -> None:
    """A user model with a required column the default ``create_user`` cannot fill would
    fail every first WeChat login in the database; say so now, with the fix."""
    model = adapter.user_model
    if model is None or not adapter._is_default("create_user") or all(
            conn.login_only for conn in settings.connections.values()):
        return
    arguments = arguments_create_user_cannot_give(model)
    if arguments:
        raise ConfigurationError(
            "user_model",
            f"{model.__name__}(...) requires the argument(s) {', '.join(arguments)}, and the "
            f"default AccountAdapter.create_user calls {model.__name__}() with none (at most "
            "a made-up username), so every first WeChat login would fail",
            "Subclass AccountAdapter, override create_user to make the user with them "
            "and add it to db.session (docs: hooks, 'Creating users'), and pass "
            f"WeChatQR(..., adapter=YourAdapter(db, {model.__name__})); or give them "
            "defaults (a dataclass field's default= or default_factory=); or set "
            "WECHAT_QR_LOGIN_ONLY=True if WeChat must never create users.")
    missing = columns_create_user_cannot_fill(model)
    if missing:
        raise ConfigurationError(
            "user_model",
            f"{model.__name__} has required column(s) {', '.join(missing)} (NOT NULL, no "
            "default) that the default AccountAdapter.create_user cannot fill, so every "
            "first WeChat login would fail",
            "Subclass AccountAdapter, override create_user to fill them (docs: hooks, "
            "'Creating users'), and pass WeChatQR(..., adapter=YourAdapter(db, "
            f"{model.__name__})); or give the columns a default; or set "
            "WECHAT_QR_LOGIN_ONLY=True if WeChat must never create users.")


#: Fields a site may hope to match on that no WeChat profile carries (WeChat gives no e-mail
#: address or phone number): matching on them needs the person to prove the account instead.
_FIELDS_WECHAT_NEVER_GIVES = frozenset({
    "email", "e_mail", "email_address", "mail", "phone", "phone_number", "mobile",
    "mobile_number", "tel", "telephone"})


def _check_association_support(settings: Settings, adapter: AccountAdapter[User]) -> None:
    """A way of association the adapter cannot carry out would fail every person it is
    offered to (a bind page that always says "wrong password"): say so now, with the fix."""
    for conn in settings.connections.values():
        if conn.association == "ask_binding":
            problem = why_accounts_cannot_be_proved(adapter)
            if problem is not None:
                raise ConfigurationError(
                    f"WECHAT_QR_ASSOCIATION ({conn.identifier})",
                    f"ask_binding has people prove an existing account, but {problem}",
                    "Set login_field on your AccountAdapter subclass to the column your "
                    "users log in with (e.g. login_field = \"email\"), or override "
                    "AccountAdapter.authenticate to check your site's own credentials "
                    "(docs: hooks, 'Proving an existing account').")
        if conn.association == "field_matching":
            custom = [f for f in conn.match_fields if f != "unionid"]
            if custom and adapter._is_default("match_user"):
                fix = ("Override AccountAdapter.match_user to match on fields your site has "
                       "verified, or match on 'unionid' only.")
                contact = [f for f in custom if f.lower() in _FIELDS_WECHAT_NEVER_GIVES]
                if contact:
                    fix += (
                        " WeChat gives no e-mail address or phone number, so no WeChat "
                        f"profile carries a {contact[0]}: to let people attach WeChat to the "
                        f"account of their {contact[0]}, set WECHAT_QR_ASSOCIATION="
                        f"'ask_binding' and login_field = '{contact[0]}' on your "
                        "AccountAdapter subclass, and they prove that account with its "
                        "password (docs: association, 'ask_binding').")
                raise ConfigurationError(
                    f"WECHAT_QR_MATCH_FIELDS ({conn.identifier})",
                    f"no matcher for {', '.join(custom)}", fix)


def _sandbox_open_base(settings: Settings) -> t.Callable[[], str]:
    def open_base() -> str:
        # url_root: the app's own root, mount point (SCRIPT_NAME) included
        return request.url_root.rstrip("/") + settings.sandbox_prefix

    return open_base


def _install_sandbox(
    app: Flask, db: SQLAlchemy, settings: Settings, clients: list[WeChatClient],
    avatar_downloader: AvatarDownloader, bind_key: str | None,
) -> None:
    """Mount the simulated WeChat in this app (each connection's website application and
    Official Account), its tables on ``bind_key``, the extension's own tables' bind; route
    the API calls to it in-process. Where avatars are stored, the sandbox serves them from
    its image host, which only this app's downloader may reach (in-process too)."""
    from .sandbox import SandboxApp, WSGITransport, install_sandbox

    apps = [SandboxApp(c.app_id, c.app_secret, _sandbox_app_name(app, settings, c))
            for c in settings.connections.values()]
    apps += [SandboxApp(c.oa_app_id, c.oa_app_secret, _sandbox_app_name(app, settings, c),
                        kind=OFFICIAL_ACCOUNT)
             for c in settings.connections.values() if c.has_official_account]
    image_origin = SANDBOX_IMAGE_ORIGIN if settings.store_avatars else None
    install_sandbox(app, db, apps, url_prefix=settings.sandbox_prefix,
                    public_url=settings.sandbox_public_url, image_origin=image_origin,
                    bind_key=bind_key)
    transport = WSGITransport(_in_process(app))
    for client in clients:
        if client.api_base_url.startswith(IN_PROCESS_ORIGIN):
            client.session.mount(IN_PROCESS_ORIGIN, transport)
    if image_origin is not None:
        avatar_downloader.allow_sandbox_host(
            image_origin, f"{settings.sandbox_prefix}{SANDBOX_IMAGE_PATH}/", transport)


def _in_process(app: Flask) -> t.Callable[..., t.Any]:
    """The app's own request handling for its calls to the sandbox mounted in it: inside
    whatever the host wraps around ``app.wsgi_app`` (a ``DispatcherMiddleware`` mounting it
    under a prefix would answer a 404, and these are no requests from outside), at a host
    the app answers (with ``SERVER_NAME`` and subdomain matching, or ``TRUSTED_HOSTS``, the
    sandbox's own ``.invalid`` origin would be a 404 or a 400)."""
    handle = functools.partial(type(app).wsgi_app, app)

    def call(environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        host = _sandbox_host(app)
        if host:
            environ["HTTP_HOST"] = host
        return handle(environ, start_response)

    return call


def _sandbox_host(app: Flask) -> str | None:
    """The host the sandbox's routes answer at: their own under host matching; under
    ``SERVER_NAME`` with the subdomain they took (``url_map.default_subdomain``, "www" say:
    the bare name was a 404); else the first ``TRUSTED_HOSTS`` one; ``None`` for any."""
    if app.url_map.host_matching:
        return next((rule.host for rule in app.url_map.iter_rules()
                     if rule.endpoint.startswith("wechat_qr_sandbox.") and rule.host), None)
    server_name = app.config.get("SERVER_NAME")
    if server_name:
        subdomain = routes_subdomain(app)
        return f"{subdomain}.{server_name}" if subdomain else str(server_name)
    return next((str(h).lstrip(".") for h in app.config.get("TRUSTED_HOSTS") or ()), None)


def _sandbox_app_name(app: Flask, settings: Settings,
                      conn: ConnectionSettings) -> str | LazyText:
    """What the sandbox's pages call the site ("<name> wants to log in ..."). With several
    connections the display name is added, translated when shown: the names are made at
    start-up, and the default one ("WeChat") is "微信" on a Chinese phone."""
    name = settings.sandbox_app_name or app.name.replace("_", " ").strip().title()
    if len(settings.connections) > 1:
        return _l("%(name)s (%(connection)s)", name=name, connection=lazy_display_name(conn))
    return name


def _connection_named(identifier: str | None = None) -> ConnectionSettings | None:
    """A connection's settings (``None``: the default connection's, as ``url_for`` of its
    pages without one), or ``None``: a template global, so the login button macro
    works when imported without context (``{% from "wechat_qr/macros.html" import ... %}``),
    where context processors' variables are not visible. (``wechat_qr_csrf_token`` is the
    other global: for the host's own unlink forms.)"""
    runtime = find_runtime(current_app)
    if runtime is None:
        return None
    settings = runtime.settings
    return (settings.default_connection if identifier is None
            else settings.connections.get(identifier))


def _login_available(identifier: str | None = None) -> bool:
    """Whether a connection's login starts (``None``: the default connection's): not while
    the site's set-up keeps WeChat login off, nor for a connection without credentials
    (both said at start-up). The login button shows only then: a visitor's click would
    end on a 503 page."""
    runtime = find_runtime(current_app)
    conn = _connection_named(identifier)
    return bool(runtime is not None and conn is not None and not runtime.unavailable
                and conn.has_credentials)


def _template_context() -> dict[str, t.Any]:
    runtime = find_runtime(current_app)
    connections = list(runtime.settings.connections.values()) if runtime else []
    return {"wechat_qr_connections": connections,
            "wechat_qr_sandbox": bool(runtime and runtime.settings.sandbox)}
