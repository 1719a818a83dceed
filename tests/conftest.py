"""Shared fixtures; the helpers and WeChat's answer shapes live in ``support``.

The suite mirrors the package: ``test_<module>.py`` tests ``flask_wechat_qr/<module>.py``
(``sandbox/`` its sandbox package), through the routes, signals, adapter hooks and public
names wherever they reach; ``promises/`` holds what the whole extension promises across
modules (secrets, hostile input, faults, workers, concurrency, keep-alive); ``project/`` the
repository around it (docs, README, packaging, style, benchmark, example site); ``browser/``
the example site in Chromium.
"""

from __future__ import annotations

import os
import typing as t

import pytest
import responses
import sqlalchemy as sa
import werkzeug.security
from flask import Flask
from support import (
    MARIADB_URL_VARIABLE,
    POSTGRES_URL_VARIABLE,
    REQUIRE_MARIADB_VARIABLE,
    REQUIRE_POSTGRES_VARIABLE,
    STRONG_KEY,
    TEST_PASSWORD_HASH_METHOD,
    Clock,
    Database,
    WeChatAPI,
    app_factory,
    dispose_admin_engines,
    drop_given_back,
    example_site,
    forget_site_templates,
    make_test_app,
    set_journal_mode,
    settings_key,
)


@pytest.fixture(autouse=True)
def no_app_context_left() -> t.Iterator[None]:
    """A test that ends with an app context it pushed still active fails, by name: left,
    it would be every later test's ``current_app`` in this process (a CLI command's, a
    check's), and those would fail far from the cause."""
    from flask.globals import _cv_app

    before = _cv_app.get(None)
    yield
    left = _cv_app.get(None)
    if left is not before:
        while _cv_app.get(None) not in (before, None):
            t.cast(t.Any, _cv_app.get()).pop()
        pytest.fail(f"the test left the app context of {left.app.name!r} pushed")


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashes() -> t.Iterator[None]:
    """Werkzeug's default password hash (scrypt) costs ~100-250 ms a hash *and* a check, by
    design; hundreds of tests hash or check one (add_user, the bind form, the example site's
    register and log-in pages, the adapter's check of an unknown username). In this process
    the default method is a one-round pbkdf2 instead: still a real salted Werkzeug hash that
    only the right password matches. A test about hash methods names its own (as
    test_adapter does); servers started in a subprocess keep the real default."""
    function = werkzeug.security.generate_password_hash
    if function.__defaults__ != ("scrypt", 16):  # another Werkzeug: leave it as it is
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(function, "__defaults__", (TEST_PASSWORD_HASH_METHOD, 16))
        yield


def _without_fsync(dbapi_connection: t.Any, _record: t.Any) -> None:
    import sqlite3

    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.execute("PRAGMA synchronous=OFF")


@pytest.fixture(scope="session", autouse=True)
def sqlite_without_fsync() -> t.Iterator[None]:
    """Every commit of a test's SQLite file otherwise waits for the disk (fsync; a few ms
    each, a third of a database test's time). What survives a power cut is not what the
    tests are about: locking, transactions and what other connections see are unchanged."""
    sa.event.listen(sa.engine.Engine, "connect", _without_fsync)
    try:
        yield
    finally:
        sa.event.remove(sa.engine.Engine, "connect", _without_fsync)


@pytest.fixture(scope="session", autouse=True)
def admin_engines() -> t.Iterator[None]:
    """The schemas given back for later tests' hosts (support.Database.drop) are dropped, and
    the connections that create and drop the tests' schemas (support's admin_engine)
    closed, when the session ends."""
    try:
        yield
    finally:
        try:
            drop_given_back()
        finally:
            dispose_admin_engines()


@pytest.fixture(scope="session", autouse=True)
def site_templates() -> t.Iterator[None]:
    """The example site's template databases (support.example_site) go with the session."""
    try:
        yield
    finally:
        forget_site_templates()


#: Where only the SQLite variants run (neither MariaDB's nor PostgreSQL's), as in the browser
#: tests (support.ONE_DATABASE): which language a page speaks (the example site's too),
#: which URLs a login follows or echoes, which way in a browser gets inside WeChat, the ID
#: token's claims and signature, the CSRF check, the templates' shapes, the pages and form
#: posts a login's outcome becomes, what the protocol client asks WeChat and makes of its
#: errors, and the sandbox's refusals of bad URLs do not depend on the database. What
#: these logins store, and how one person stays one account across two connections
#: (unionid), runs on all three databases in test_flow, test_association, test_client,
#: test_binding, test_login_state and the others; a server database adds nothing here but
#: its cost (a MariaDB test costs several of SQLite's: the suite's ten minutes).
ON_SQLITE_ONLY = ("tests/test_i18n.py", "tests/test_urls.py", "tests/test_in_wechat.py",
                  "tests/test_id_token.py", "tests/test_csrf.py", "tests/test_templates.py",
                  "tests/test_delivery.py",
                  # the example site's languages
                  *(f"tests/project/test_example_app.py::test_{name}" for name in (
                      "pages_of_a_visitor_in_chinese", "pages_of_a_logged_in_user_in_chinese",
                      "form_errors_and_messages_in_chinese", "error_pages_in_the_visitors_",
                      "extension_pages_in_the_site_layout_speak_chinese",
                      "site_and_extension_agree_on_the_language")),
                  # the protocol client's URLs, requests and error pages (it stores nothing)
                  *(f"tests/test_client.py::test_{name}" for name in (
                      "authorize_url_has_wechats_exact_parameter_order",
                      "redirect_uri_is_percent_encoded_exactly_once",
                      "redirect_uri_follows_the_sites_scheme_and_host",
                      "configured_lang_is_appended_last",
                      "lang_follows_the_page_language_by_default",
                      "open_base_url_is_configurable", "state_is_alphanumeric_short_and_fresh",
                      "qr_iframe_url_", "the_full_page_qr_url_ignores_the_embedded_only_options",
                      "a_redirect_uri_with_a_fragment_is_refused", "userinfo_request",
                      "userinfo_lang_is_configurable", "errcode_page", "errcode_on_userinfo_page",
                      "a_hostile_token_answer_is_a_page_not_a_500", "transport_fault_pages",
                      "every_call_carries_the_timeout")),
                  # the sandbox's refusals of bad authorization URLs (before it stores anything)
                  "tests/sandbox/test_views.py::test_bad_qrconnect_requests_get_wechat_style_",
                  # the QR image read back (a drawing of the URL; the row it needs is a given)
                  "tests/sandbox/test_views.py::test_a_phone_reads_the_confirmation_url_in_",
                  "tests/sandbox/test_webauth.py::test_wechat_error_pages",
                  "tests/sandbox/test_webauth.py::test_other_bad_authorization_urls")


#: Tests that take a minute or more alone (valgrind's callgrind): started first, so that
#: the other worker runs the rest meanwhile instead of one of them ending the run alone.
SLOW_FIRST = ("tests/project/test_bench.py::test_the_instruction_count_counts_logins_under_",)


def _left_out(item: pytest.Item) -> bool:
    database = getattr(getattr(item, "callspec", None), "params", {}).get("database")
    return database in ("mariadb", "postgresql") and item.nodeid.startswith(ON_SQLITE_ONLY)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the server databases' variants under :data:`ON_SQLITE_ONLY`;
    :data:`SLOW_FIRST` to the front."""
    left_out = [item for item in items if _left_out(item)]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if item not in left_out]
    items.sort(key=lambda item: not item.nodeid.startswith(SLOW_FIRST))  # stable


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def database(request: pytest.FixtureRequest, tmp_path: t.Any) -> t.Iterator[Database]:
    """Every test that stores anything runs on SQLite, PostgreSQL and MariaDB."""
    server_url = None
    if request.param != "sqlite":
        variable, require, start = {
            "postgresql": (POSTGRES_URL_VARIABLE, REQUIRE_POSTGRES_VARIABLE,
                           "postgresql+psycopg://... (bash .ci/start-postgres prints one)"),
            "mariadb": (MARIADB_URL_VARIABLE, REQUIRE_MARIADB_VARIABLE,
                        "mysql+pymysql://... (bash .ci/start-mariadb prints one)"),
        }[request.param]
        server_url = os.environ.get(variable)
        if not server_url:
            reason = f"{request.param} variant: set {variable}={start}"
            if os.environ.get(require):
                pytest.fail(f"{require} is set but {reason}")
            pytest.skip(reason)
    database = Database(request.param, tmp_path, server_url)
    try:
        yield database
    finally:
        database.drop()


#: Settings naming the host's databases: its tables go there, not in the test's schema.
OWN_DATABASES = ("SQLALCHEMY_DATABASE_URI", "SQLALCHEMY_BINDS")


@pytest.fixture
def make_app(tmp_path: t.Any, database: Database) -> t.Iterator[t.Callable[..., Flask]]:
    """``make_app(**config)``: a new test host (support.make_test_app) on the test's
    database, in a folder of its own; its tables as the run's first ``create_all`` with the
    same settings made them (support.Database.host_url: a copy, a schema an earlier test's
    host made them in and gave back emptied, or the statements replayed), unless
    ``replay_create_all=False``: then its own create_all makes them."""
    counter = iter(range(1000))

    def build(*, replay_create_all: bool = True, **config: t.Any) -> Flask:
        name = f"app{next(counter)}"
        folder = tmp_path / name
        folder.mkdir()
        settings = settings_key({k: v for k, v in config.items() if k != "before_init"})
        if not replay_create_all or any(key in config for key in OWN_DATABASES):
            return make_test_app(folder, database.url(name),
                                 replay_create_all=replay_create_all, **config)
        url, tables_made = database.host_url(name, settings)
        app = make_test_app(folder, url, replay_create_all=True, tables_made=tables_made,
                            **config)
        if not tables_made:
            database.record_tables(url, settings)
        return app

    with app_factory(build) as factory:
        yield factory


@pytest.fixture
def make_production_app(tmp_path: t.Any) -> t.Iterator[t.Callable[..., Flask]]:
    """Test hosts configured for production (TESTING off) with a strong SECRET_KEY, unless
    told otherwise; on SQLite only (the deployment checks store nothing), its file in WAL
    mode as a production site's should be (``flask wechat-qr check`` warns otherwise)."""
    counter = iter(range(1000))

    def build(**config: t.Any) -> Flask:
        folder = tmp_path / f"app{next(counter)}"
        folder.mkdir()
        app = make_test_app(folder, **{"TESTING": False, "SECRET_KEY": STRONG_KEY, **config})
        set_journal_mode(app, "wal")
        return app

    with app_factory(build) as factory:
        yield factory


@pytest.fixture
def make_site(database: Database, example_app_env: None
                      ) -> t.Iterator[t.Callable[..., Flask]]:
    """``make_site(url=None, **config)``: the example site (example_app) in test
    mode, on the test's database (or ``url``), untouched by the developer's shell."""
    from example_app import create_app

    counter = iter(range(1000))

    def build(url: str | None = None, **config: t.Any) -> Flask:
        base = {"TESTING": True, "SECRET_KEY": "example-app-test-key"}
        if url is None:  # a new database: set up as the last start with these settings did
            return example_site(database, f"site{next(counter)}", "DATABASE_URL",
                                {**base, **config})
        return create_app(test_config={**base, "DATABASE_URL": url, **config})

    with app_factory(build) as factory:
        yield factory


@pytest.fixture
def app(make_app: t.Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> t.Any:
    return app.test_client()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The wall clock, stopped and moved on by hand: ``clock.advance(601)``."""
    return Clock(monkeypatch)


@pytest.fixture(scope="session")
def rsa_key() -> t.Any:
    """An RSA key for RS256 ID tokens (a joserfc ``RSAKey``), made once per run."""
    from joserfc.jwk import RSAKey

    return RSAKey.generate_key(2048)


@pytest.fixture(scope="session")
def pem(rsa_key: t.Any) -> str:
    """:func:`rsa_key` as the PEM text ``WECHAT_QR_ID_TOKEN_PRIVATE_KEY`` takes."""
    return str(rsa_key.as_pem(private=True).decode())


@pytest.fixture
def wechat_api() -> t.Iterator[WeChatAPI]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield WeChatAPI(mock)


@pytest.fixture
def example_app_env(monkeypatch: pytest.MonkeyPatch, tmp_path: t.Any) -> None:
    """No variable of the developer's shell reaches the example app, and no test writes into
    the repository's instance folder. Modules that build the example app apply it to every
    test: ``pytestmark = pytest.mark.usefixtures("example_app_env")``."""
    for name in list(os.environ):
        if name.startswith("WECHAT_QR_TEST_"):
            continue  # the test suite's own switches (e.g. PostgreSQL), not settings
        if name.startswith("WECHAT_QR_") or name in ("SECRET_KEY", "DATABASE_URL"):
            monkeypatch.delenv(name)
    instance = str(tmp_path / "instance")
    monkeypatch.setattr(Flask, "auto_find_instance_path", lambda self: instance)


@pytest.fixture
def sandbox_app(make_app: t.Callable[..., Flask]) -> Flask:
    """The test host with the sandbox mounted in it, on the sandbox's own credentials."""
    return make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None,
                    WECHAT_QR_SANDBOX_APP_NAME="Demo site")
