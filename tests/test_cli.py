"""``flask wechat-qr check`` and ``flask wechat-qr sandbox``.

``check`` end to end: what it lists, how findings and the summary read, the exit status.
Each rule's own behaviour is tested in ``test_checks``. ``check`` reads settings and builds
URLs; it never touches the database, so these tests run
on SQLite only (no ``database`` fixture, whose PostgreSQL variant would repeat them for
nothing). ``sandbox`` runs as a real process on a free loopback port.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import typing as t
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from flask import Flask
from support import (
    APP_ID,
    APP_SECRET,
    ROOT,
    SANDBOX_APP_ID,
    SANDBOX_APP_SECRET,
    database_out_of_reach,
    free_port,
    set_journal_mode,
)

from flask_wechat_qr.sandbox.options import SANDBOX_OA_APP_ID, SANDBOX_OA_APP_SECRET

TESTS = ROOT / "tests"
#: The standalone sandbox's options (docs/cli.rst, docs/sandbox.rst).
SANDBOX_FLAGS = {"--host", "--port", "--app-id", "--app-secret", "--oa-app-id",
                 "--oa-app-secret", "--name", "--oa-name", "--callback-domain",
                 "--database", "--public-url"}
DOMAIN_LABEL = "Authorization callback domain (授权回调域)"
PUBLIC = "https://www.example.com"


@pytest.fixture
def make_app(make_production_app: t.Callable[..., Flask]) -> t.Callable[..., Flask]:
    """This module's apps are configured for production (conftest.make_production_app)."""
    return make_production_app


def journal_mode(app: Flask) -> str:
    with app.app_context(), app.extensions["sqlalchemy"].engine.connect() as connection:
        return str(connection.exec_driver_sql("PRAGMA journal_mode").scalar())


def check(app: Flask, *args: str, debug: bool = False) -> t.Any:
    """Run the command as ``flask`` does: DEBUG comes from FLASK_DEBUG (``--debug``)."""
    result = app.test_cli_runner().invoke(args=["wechat-qr", "check", *args],
                                          env={"FLASK_DEBUG": "1" if debug else "0"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def domain_row(output: str) -> str:
    """What the listing says of the authorization callback domain to register."""
    [row] = [line for line in output.splitlines() if line.startswith(f"  {DOMAIN_LABEL}: ")]
    return row[len(f"  {DOMAIN_LABEL}: "):]


def problems(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("PROBLEM")]


def warnings_of(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("WARNING")]


# --- a healthy configuration --------------------------------------------------------------


def test_healthy_configuration_shows_redirect_uri_and_domain(
    make_app: t.Callable[..., Flask],
) -> None:
    result = check(make_app(), "--base-url", PUBLIC, "--callback-domain", "www.example.com")
    lines = result.output.splitlines()
    assert result.exit_code == 0, result.output
    assert f"  Redirect URI:          {PUBLIC}/auth/wechat/callback" in lines
    assert (f"  {DOMAIN_LABEL}: www.example.com (enter exactly this on open.weixin.qq.com: "
            "no scheme, no port, no path)") in lines
    assert f"Public base URL: {PUBLIC} (from --base-url)" in lines
    assert "Connection 'wechat'" in lines
    assert f"  AppID:                 {APP_ID}" in lines
    assert "  Display name:          WeChat" in lines
    assert "  Login only:            no" in lines
    assert "  Association:           off" in lines
    assert "  Match fields:          unionid" in lines
    assert "  Profile sync:          first_login" in lines
    assert "  Business callback URL: none (logins end on this site)" in lines
    assert lines[-1] == "Summary: no problems."
    assert not problems(result.output) and not warnings_of(result.output)


def test_redirect_uri_uses_the_real_url_prefix_and_site_path(
    make_app: t.Callable[..., Flask],
) -> None:
    app = make_app(WECHAT_QR_URL_PREFIX="/login/wx")
    result = check(app, "--base-url", "https://shop.example.com/site/")
    assert result.exit_code == 0, result.output
    assert ("  Redirect URI:          https://shop.example.com/site/login/wx/wechat/callback"
            in result.output.splitlines())
    assert domain_row(result.output).startswith("shop.example.com (enter exactly this")


def test_base_url_from_server_name(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(SERVER_NAME="www.example.com", PREFERRED_URL_SCHEME="https",
                   APPLICATION_ROOT="/shop")
    result = check(app)
    assert result.exit_code == 0, result.output
    assert ("Public base URL: https://www.example.com/shop (from SERVER_NAME, "
            "PREFERRED_URL_SCHEME and APPLICATION_ROOT)") in result.output
    assert ("  Redirect URI:          https://www.example.com/shop/auth/wechat/callback"
            in result.output)
    assert f"  {DOMAIN_LABEL}: www.example.com" in result.output


def test_server_name_wins_over_base_url_host_with_a_warning(
    make_app: t.Callable[..., Flask],
) -> None:
    result = check(make_app(SERVER_NAME="www.example.com"), "--base-url", "https://example.org")
    assert result.exit_code == 0, result.output
    assert "  Redirect URI:          https://www.example.com/auth/wechat/callback" in result.output
    [warning] = warnings_of(result.output)
    assert "SERVER_NAME (www.example.com) overrides the host of --base-url (example.org)" \
        in warning


def test_unknown_base_url_is_a_warning_not_a_failure(make_app: t.Callable[..., Flask]) -> None:
    result = check(make_app())
    assert result.exit_code == 0, result.output
    assert "Public base URL: unknown (no --base-url, no SERVER_NAME)" in result.output
    assert ("  Redirect URI:          unknown; <public base URL>/auth/wechat/callback"
            in result.output)
    assert f"  {DOMAIN_LABEL}: unknown" in result.output
    [warning] = warnings_of(result.output)
    assert "--base-url https://www.example.com" in warning and "Fix:" in warning
    assert result.output.splitlines()[-1] == "Summary: no problems, 1 warning."


def test_several_connections_are_listed(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(WECHAT_QR_CONNECTIONS=[
        {"connection": "wechat", "app_id": APP_ID, "app_secret": APP_SECRET},
        {"connection": "wechat-shop", "display_name": "WeChat (shop)",
         "app_id": "wx0123456789abcdef", "app_secret": "an0th3r-s3cr3t-f0r-th3-sh0p",
         "association": "field_matching", "match_fields": ["unionid"],
         "login_only": True, "profile_sync": "each_login",
         "callback_url": "https://biz.example.com/wechat/done"},
    ], WECHAT_QR_ID_TOKEN_SECRET="k3y-" * 12, WECHAT_QR_ID_TOKEN_ISSUER=PUBLIC)
    result = check(app, "--base-url", PUBLIC)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Connection 'wechat'" in out and "Connection 'wechat-shop'" in out
    shop = out.split("Connection 'wechat-shop'", 1)[1]
    for line in ["  Display name:          WeChat (shop)",
                 "  AppID:                 wx0123456789abcdef",
                 "  AppSecret:             an…0p (masked)",
                 "  Login only:            yes",
                 "  Association:           field_matching",
                 "  Match fields:          unionid",
                 "  Profile sync:          each_login",
                 "  Business callback URL: https://biz.example.com/wechat/done",
                 f"  Redirect URI:          {PUBLIC}/auth/wechat-shop/callback"]:
        assert line in shop.splitlines(), line
    assert domain_row(shop).startswith("www.example.com (enter exactly this")
    assert f"  Redirect URI:          {PUBLIC}/auth/wechat/callback" in out.split(
        "Connection 'wechat-shop'", 1)[0]
    assert APP_SECRET not in out and "an0th3r-s3cr3t-f0r-th3-sh0p" not in out


# --- the AppSecret never shows --------------------------------------------------------------


def test_secret_is_masked(make_app: t.Callable[..., Flask]) -> None:
    result = check(make_app(), "--base-url", PUBLIC)
    assert f"  AppSecret:             {APP_SECRET[:2]}…{APP_SECRET[-2:]} (masked)" in result.output
    assert APP_SECRET not in result.output
    assert APP_SECRET[:8] not in result.output and APP_SECRET[-8:] not in result.output


def test_short_secret_is_all_stars_even_with_problems(make_app: t.Callable[..., Flask]) -> None:
    secret = "Zq9!xW"
    app = make_app(WECHAT_QR_APP_SECRET=secret, SECRET_KEY="dev")
    result = check(app, "--base-url", "http://localhost:8080", "--callback-domain", "x.test")
    assert result.exit_code == 1
    assert "  AppSecret:             ******** (masked)" in result.output
    assert secret not in result.output


# --- problems fail the check, warnings do not (each rule: test_checks) ---------------------


def test_base_url_with_port_is_a_problem(make_app: t.Callable[..., Flask]) -> None:
    result = check(make_app(), "--base-url", "https://www.example.com:8443")
    assert result.exit_code == 1
    assert ("  Redirect URI:          https://www.example.com:8443/auth/wechat/callback"
            in result.output)
    assert f"  {DOMAIN_LABEL}: www.example.com" in result.output
    [problem] = problems(result.output)
    assert problem.startswith("PROBLEM: the redirect URI has port 8443")
    assert "Fix: serve the public site on port 443 (or 80)" in problem
    assert result.output.splitlines()[-1] == (
        "Summary: 1 problem; fix the problems before registering or deploying.")


def test_http_while_developing_is_fine(make_app: t.Callable[..., Flask]) -> None:
    result = check(make_app(), "--base-url", "http://www.example.com", debug=True)
    assert result.exit_code == 0, result.output
    assert "development (DEBUG on: production checks skipped)" in result.output


def test_sandbox_on_with_debug_off_is_a_loud_warning(make_app: t.Callable[..., Flask]) -> None:
    """The README's own way to try the sandbox without --debug (WECHAT_QR_SANDBOX=true)
    passes, with the warning start-up gives too; http and localhost are fine there."""
    app = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None)
    result = check(app, "--base-url", "http://localhost:5000")
    assert result.exit_code == 0, result.output
    assert "Sandbox: on, mounted at /wechat-sandbox" in result.output
    assert ("development (DEBUG and TESTING off, but a sandbox: production checks skipped)"
            in result.output.splitlines()[0])
    assert problems(result.output) == []
    warning = next(w for w in warnings_of(result.output) if "WECHAT_QR_SANDBOX" in w)
    assert warning.startswith("WARNING: WECHAT_QR_SANDBOX is on while DEBUG and TESTING are "
                              "off")
    assert "never deploy this" in warning and "set WECHAT_QR_SANDBOX=False" in warning
    assert domain_row(result.output).startswith("localhost (the sandbox takes the host")


def test_sandbox_while_testing_is_fine(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(TESTING=True, WECHAT_QR_SANDBOX=True,
                   WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None)
    result = check(app, "--base-url", PUBLIC)
    assert result.exit_code == 0, result.output
    assert "testing (TESTING on: production checks skipped)" in result.output


def test_sandbox_app_id_with_sandbox_off_is_a_problem(make_app: t.Callable[..., Flask]) -> None:
    result = check(make_app(WECHAT_QR_APP_ID=SANDBOX_APP_ID, WECHAT_QR_APP_ID_CHECK=False),
                   "--base-url", PUBLIC)
    assert result.exit_code == 1
    [problem] = problems(result.output)
    assert problem.startswith("PROBLEM [wechat]: the sandbox's AppID or AppSecret")
    assert "set WECHAT_QR_APP_ID and WECHAT_QR_APP_SECRET" in problem


def test_every_problem_says_how_to_fix_it(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(SECRET_KEY="")
    result = check(app, "--base-url", "http://localhost:8000",
                   "--callback-domain", "https://example.com/")
    assert result.exit_code == 1
    found = problems(result.output)
    # key, port, http, localhost, domain format, domain host
    assert len(found) == 6, result.output
    assert all(". Fix: " in line and line.endswith(".") for line in found)
    assert ("Summary: 6 problems; fix the problems before registering or "
            "deploying.") == result.output.splitlines()[-1]


def test_findings_are_listed_problems_first_in_the_order_found(
    make_app: t.Callable[..., Flask],
) -> None:
    app = make_app(SECRET_KEY="dev", TRUSTED_HOSTS=["www.example.com"],
                   WECHAT_QR_API_BASE_URL="http://127.0.0.1:5001",
                   WECHAT_QR_ID_TOKEN_SECRET="k3y-" * 12, WECHAT_QR_APP_ID_CHECK=False,
                   WECHAT_QR_CONNECTIONS=[
                       {"connection": "web", "app_id": SANDBOX_APP_ID, "app_secret": APP_SECRET},
                       {"connection": "shop", "app_id": "my-app", "app_secret": "short",
                        "callback_url": "http://biz.example.com/wechat/done"}])
    result = check(app, "--base-url", "http://localhost:8000/",
                   "--callback-domain", "https://example.com/")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[:3] == [
        "Flask-WeChat-QR check of app 'host_app', production (DEBUG and TESTING off)",
        "Public base URL: http://localhost:8000 (from --base-url)",
        "Sandbox: off; QR page https://open.weixin.qq.com, API http://127.0.0.1:5001"]
    found = lines[lines.index("", lines.index("Connection 'shop'")) + 1:-2]
    assert [line[:40] for line in found] == [
        "PROBLEM: the host localhost is not in TR",
        "PROBLEM [web]: the sandbox's AppID or Ap",
        "PROBLEM: SECRET_KEY is a well-known plac",
        "PROBLEM [shop]: the business callback UR",
        "PROBLEM: a connection posts ID tokens to",
        "PROBLEM: the redirect URI has port 8000,",
        "PROBLEM: the redirect URI uses http in p",
        "PROBLEM: the redirect URI's host localho",
        "PROBLEM: --callback-domain 'https://exam",
        "PROBLEM: the authorization callback doma",
        "WARNING [shop]: the AppID 'my-a'... does",
        "WARNING [shop]: the AppSecret (5 charact",
        "WARNING: WECHAT_QR_API_BASE_URL is http:"]
    assert all(". Fix: " in line and line.endswith(".") for line in found)
    assert lines[-2:] == ["", "Summary: 10 problems, 3 warnings; fix the problems before "
                              "registering or deploying."]


@pytest.mark.parametrize("url", ["www.example.com", "ftp://www.example.com",
                                 "https://www.example.com/?x=1", "https://www.example.com:x"])
def test_bad_base_url_is_a_usage_error(make_app: t.Callable[..., Flask], url: str) -> None:
    result = check(make_app(), "--base-url", url)
    assert result.exit_code == 2
    assert "--base-url" in result.output


# --- the database ---------------------------------------------------------------------------


def test_sqlite_in_its_rollback_journal_is_a_warning(make_app: t.Callable[..., Flask]) -> None:
    """Each login commits once; in the default rollback journal each commit waits for the
    disk twice and blocks the other writers (docs: deploying, sqlite-wal). Said, never
    changed: the file keeps its mode."""
    app = make_app()
    set_journal_mode(app, "delete")
    result = check(app, "--base-url", PUBLIC)
    assert result.exit_code == 0, result.output
    [warning] = warnings_of(result.output)
    with app.app_context():
        database = app.extensions["sqlalchemy"].engine.url.database
    assert warning.startswith(f"WARNING: the extension's database is the SQLite file {database} "
                              "in journal mode delete, not WAL: ")
    assert "Fix: turn on SQLite's write-ahead log" in warning
    assert "'SQLite with several threads'" in warning
    assert result.output.splitlines()[-1] == "Summary: no problems, 1 warning."
    assert journal_mode(app) == "delete"


def test_sqlite_in_wal_mode_is_fine(make_app: t.Callable[..., Flask]) -> None:
    result = check(make_app(), "--base-url", PUBLIC)
    assert result.output.splitlines()[-1] == "Summary: no problems.", result.output


def test_the_journal_mode_is_no_matter_while_developing(
        make_app: t.Callable[..., Flask]) -> None:
    app = make_app()
    set_journal_mode(app, "delete")
    result = check(app, "--base-url", PUBLIC, debug=True)
    assert not warnings_of(result.output), result.output


def test_sqlite_in_memory_has_no_journal_to_warn_of(make_app: t.Callable[..., Flask]) -> None:
    result = check(make_app(SQLALCHEMY_DATABASE_URI="sqlite://"), "--base-url", PUBLIC)
    assert result.output.splitlines()[-1] == "Summary: no problems.", result.output


def test_a_database_that_cannot_be_opened_is_a_problem_not_a_journal_warning(
        make_app: t.Callable[..., Flask]) -> None:
    """The check runs to its end and fails: with no database, every login would end on the
    page that says so (it passed, exit 0, with a warning that gave the error's class only:
    a helper's deployment hunt, session 34). The database's own words are in it."""
    app = make_app()
    with app.app_context():
        path = Path(app.extensions["sqlalchemy"].engine.url.database)
    path.unlink()
    path.mkdir()  # a folder where the file was: SQLite cannot open it
    result = check(app, "--base-url", PUBLIC)
    assert result.exit_code == 1, result.output
    [found] = problems(result.output)
    assert "the database cannot be reached (OperationalError: unable to open database " \
           "file)" in found and "SQLALCHEMY_DATABASE_URI" in found
    assert warnings_of(result.output) == []
    assert result.output.splitlines()[-1].startswith("Summary: 1 problem;")


@pytest.mark.parametrize("database", ["sqlite", "postgresql", "mariadb"], indirect=True)
@pytest.mark.parametrize("command", [["db", "upgrade"], ["db", "upgrade", "--sql"],
                                     ["db", "current"], ["db", "stamp", "head"]])
def test_the_db_commands_say_a_database_out_of_reach_in_a_paragraph(
        make_app: t.Callable[..., Flask], tmp_path: Path, command: list[str],
        database: t.Any) -> None:
    """Each was a traceback of some 140 lines (a helper's deployment hunt, session 34)."""
    app = make_app()
    with app.app_context():
        engine = app.extensions["sqlalchemy"].engine
    with database_out_of_reach(engine, tmp_path):
        result = app.test_cli_runner().invoke(args=["wechat-qr", *command])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    [line] = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert line.startswith("Error: the database cannot be reached")
    assert re.search(r"Connection refused|unable to open database file|Can't connect", line)
    assert "SQLALCHEMY_DATABASE_URI" in line and "Traceback" not in result.output


# --- flask wechat-qr sandbox --------------------------------------------------------------

SITE = """\
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from support import make_test_app
app = make_test_app(Path(__file__).parent)
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A host site module for ``flask --app site``, in its own folder."""
    (tmp_path / "site_for_cli.py").write_text(SITE.format(tests=str(TESTS)), encoding="utf-8")
    return tmp_path


def _environ() -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    return environ


@pytest.mark.parametrize("entry", [
    ["-m", "flask", "--app", "site_for_cli", "wechat-qr", "sandbox"],
    ["-m", "flask_wechat_qr.sandbox"],
], ids=["flask-wechat-qr-sandbox", "python-m"])
def test_sandbox_command_serves_the_sandbox(site: Path, entry: list[str]) -> None:
    """Both entry points start the same server, which answers and then stops."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, *entry, "--port", str(port), "--app-id", "wxclitest00000001",
         "--app-secret", "cli-test-secret", "--name", "CLI test site",
         "--oa-name", "CLI test 服务号",
         "--database", f"sqlite:///{site / 'sandbox.db'}"],
        cwd=site, env=_environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        page = _get_when_up(process, base + "/", deadline=time.monotonic() + 30)
        assert "CLI test site" in page and "wxclitest00000001" in page
        # The names given are shown as given, in either language.
        chinese = _get(base + "/", "zh-CN")
        for text in (page, chinese):
            assert "CLI test site — <code>wxclitest00000001</code>" in text
            assert f"CLI test 服务号 — <code>{SANDBOX_OA_APP_ID}</code>" in text
        with urllib.request.urlopen(
            f"{base}/sns/oauth2/access_token?appid=wxclitest00000001&secret=wrong"
            "&code=x&grant_type=authorization_code", timeout=5,
        ) as response:
            assert json.loads(response.read().decode("utf-8"))["errcode"] == 40125
    finally:
        process.terminate()
        try:
            stdout, stderr = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            pytest.fail("the sandbox did not stop on SIGTERM")
    assert process.returncode in (0, -signal.SIGTERM), stdout + stderr
    lines = stdout.splitlines()
    for setting in (f"WECHAT_QR_OPEN_BASE_URL={base}", f"WECHAT_QR_API_BASE_URL={base}",
                    "WECHAT_QR_APP_ID=wxclitest00000001",
                    "WECHAT_QR_APP_SECRET=<the --app-secret you gave>"):
        assert f"       {setting}" in lines, stdout + stderr
    assert "cli-test-secret" not in stdout + stderr  # chosen by the person: never printed
    assert ("Authorization callback domain (授权回调域): localhost. Open your site at "
            "http://localhost:<its port>/") in stdout
    assert "For development only" in stdout


def test_the_standalone_sandbox_makes_and_prints_a_secret_of_its_own(site: Path) -> None:
    """No well-known default AppSecret: without --app-secret a random one is made, printed
    once (the site needs it), and it is the one the API accepts."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "flask_wechat_qr.sandbox", "--port", str(port),
         "--database", f"sqlite:///{site / 'sandbox-random.db'}"],
        cwd=site, env=_environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _get_when_up(process, base + "/", deadline=time.monotonic() + 30)
        assert process.stdout is not None
        printed = []  # said before serving
        while not printed or "For development only" not in printed[-1]:
            printed.append(process.stdout.readline())
            assert len(printed) < 20, printed
        match = re.search(r"^       WECHAT_QR_APP_SECRET=(\S+)$", "".join(printed), re.M)
        assert match, printed
        secret = match.group(1)
        assert secret != SANDBOX_APP_SECRET and len(secret) >= 20
        assert (" * A made-up AppSecret is new at every start; --app-secret and "
                "--oa-app-secret keep one.\n") in printed
        # The Official Account (logins inside WeChat) is served beside it, its secret too.
        match = re.search(r"^       WECHAT_QR_OA_APP_SECRET=(\S+)$", "".join(printed), re.M)
        assert match, printed
        oa_secret = match.group(1)
        assert oa_secret not in (secret, SANDBOX_OA_APP_SECRET) and len(oa_secret) >= 20
        assert "       WECHAT_QR_OA_APP_ID=wxsandboxoa00000001\n" in printed
        # The simulated applications' default names are the page's language; the Official
        # Account (logins inside WeChat) has a name of its own.
        for lang, website, account in (
                ("zh-CN", "沙盒网站应用", "沙盒公众号"),
                ("en-US", "Sandbox website app", "Sandbox Official Account")):
            index = _get(base + "/", lang)
            assert f"{website} — <code>{SANDBOX_APP_ID}</code>" in index
            assert f"{account} — <code>{SANDBOX_OA_APP_ID}</code>" in index
            sheet = _get(f"{base}/connect/oauth2/authorize?appid={SANDBOX_OA_APP_ID}"
                         "&redirect_uri=http%3A%2F%2Flocalhost%2Fcb&response_type=code"
                         "&scope=snsapi_userinfo&state=s", lang)
            assert f"<strong>{account}</strong>" in sheet and website not in sheet
        for app_id, given, errcode in (
                (SANDBOX_APP_ID, secret, 40029), (SANDBOX_APP_ID, "sandbox-app-secret", 40125),
                (SANDBOX_OA_APP_ID, oa_secret, 40029), (SANDBOX_OA_APP_ID, secret, 40125)):
            with urllib.request.urlopen(
                f"{base}/sns/oauth2/access_token?appid={app_id}&secret={given}"
                "&code=nonsense&grant_type=authorization_code", timeout=5,
            ) as response:  # the right secret reaches the code check; the old default not
                assert json.loads(response.read().decode("utf-8"))["errcode"] == errcode
    finally:
        process.terminate()
        process.communicate(timeout=15)


def _get_when_up(process: subprocess.Popen[str], url: str, deadline: float) -> str:
    while True:
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the sandbox exited with {process.returncode}:\n{out}\n{err}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return str(response.read().decode("utf-8"))
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                pytest.fail(f"the sandbox did not answer at {url} in time")
            time.sleep(0.1)


def _get(url: str, lang: str) -> str:
    request = urllib.request.Request(url, headers={"Accept-Language": lang})
    with urllib.request.urlopen(request, timeout=5) as response:
        return str(response.read().decode("utf-8"))


@pytest.mark.parametrize("options,said", [
    (["--callback-domain", "localhost:5000"],
     "Error: --callback-domain 'localhost:5000' has a port, but the authorization callback "
     "domain is a bare host name"),
    (["--callback-domain", "http://localhost"], "has a scheme"),
    (["--database", "sqlite:////nonexistent-folder-of-the-tests/x.db"],
     "Error: --database sqlite:////nonexistent-folder-of-the-tests/x.db cannot be used: "
     "unable to open database file."),
    (["--database", "postgresql+psycopg://user:hunter2@127.0.0.1:1/nowhere"],
     "Error: --database postgresql+psycopg://user:***@127.0.0.1:1/nowhere cannot be used: "),
    (["--database", "postgres//admin:hunter2@db/x"],
     "Error: --database 'postgres//admin:***@db/x' cannot be used: "),
], ids=["port", "scheme", "sqlite-folder", "server-down", "not-a-url"])
def test_the_sandbox_refuses_what_it_cannot_start_with_in_a_line(
        make_app: t.Callable[..., Flask], options: list[str], said: str) -> None:
    """A callback domain with a port made every login end on error 10003 (the banner said
    "open your site at http://localhost:5000:<its port>/"), and a database it cannot use
    was a traceback of some 140 lines (a helper's deployment hunt, session 34): one line
    each, before anything is served, by both entry points."""
    result = make_app().test_cli_runner().invoke(
        args=["wechat-qr", "sandbox", "--port", "-1", *options])  # never served
    assert result.exit_code == 1 and said in result.output, result.output
    assert "Traceback" not in result.output and "hunter2" not in result.output
    standalone = subprocess.run(
        [sys.executable, "-m", "flask_wechat_qr.sandbox", "--port", "-1", *options],
        capture_output=True, text=True, timeout=60, env=_environ())
    assert standalone.returncode == 1 and said in standalone.stderr, standalone.stderr
    assert "Traceback" not in standalone.stderr


def test_sandbox_command_has_the_options_of_python_m(make_app: t.Callable[..., Flask]) -> None:
    result = make_app().test_cli_runner().invoke(args=["wechat-qr", "sandbox", "--help"])
    assert result.exit_code == 0, result.output
    module = subprocess.run([sys.executable, "-m", "flask_wechat_qr.sandbox", "--help"],
                            env=_environ(), capture_output=True, text=True, timeout=60)
    assert module.returncode == 0, module.stderr

    def flags(text: str) -> set[str]:
        return set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", text)) - {"--help"}

    assert flags(result.output) == flags(module.stdout) == SANDBOX_FLAGS


def test_init_app_does_not_import_the_sandbox(site: Path) -> None:
    """Registering ``flask wechat-qr sandbox`` reads only the sandbox's option table, not
    the simulated WeChat (its views, tables and transport)."""
    code = ("import sys, site_for_cli; "
            "print(sorted(m for m in sys.modules if m.startswith('flask_wechat_qr.sandbox')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=site, env=_environ(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(["flask_wechat_qr.sandbox",
                                         "flask_wechat_qr.sandbox.options"])


# --- the business callback URL and its ID token ----------------------------------------------


def test_id_token_settings_are_shown_and_checked(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(WECHAT_QR_CALLBACK_URL="http://biz.example.com/wechat/done",
                   WECHAT_QR_ID_TOKEN_SECRET="k3y-" * 12, WECHAT_QR_ID_TOKEN_AUDIENCE="biz")
    result = check(app, "--base-url", PUBLIC)
    assert result.exit_code == 1
    assert ("  ID token:              HS256 (shared secret), aud biz, iss from each request, "
            "valid 300 s") in result.output.splitlines()
    http, issuer = problems(result.output)
    assert "is http: the ID token would cross the network in clear text" in http
    # As the app itself, which keeps WeChat login off (503) so: before, only a warning.
    assert "iss would follow each request's Host header" in issuer
    assert "WeChat login is off outside debug and testing" in issuer
    assert "k3y-k3y" not in result.output


def test_the_issuer_shown_is_at_the_sites_mount_point(make_app: t.Callable[..., Flask]) -> None:
    """SERVER_NAME and no APPLICATION_ROOT, a site served under /site: the iss its tokens
    carry there (see test_id_token), next to its public keys."""
    app = make_app(WECHAT_QR_CALLBACK_URL="https://biz.example.com/wechat/done",
                   WECHAT_QR_ID_TOKEN_SECRET="k3y-" * 12, SERVER_NAME="www.example.com",
                   PREFERRED_URL_SCHEME="https")
    result = check(app, "--base-url", f"{PUBLIC}/site")
    assert result.exit_code == 0, result.output
    assert ("  ID token:              HS256 (shared secret), aud wechat, iss "
            f"{PUBLIC}/site, valid 300 s") in result.output.splitlines()


def test_healthy_id_token_settings(make_app: t.Callable[..., Flask], tmp_path: Path) -> None:
    from joserfc.jwk import RSAKey

    pem = RSAKey.generate_key(2048).as_pem(private=True).decode()
    app = make_app(WECHAT_QR_CALLBACK_URL="https://biz.example.com/wechat/done",
                   WECHAT_QR_ID_TOKEN_PRIVATE_KEY=pem,
                   WECHAT_QR_ID_TOKEN_ISSUER="https://www.example.com")
    result = check(app, "--base-url", PUBLIC)
    assert result.exit_code == 0, result.output
    assert (f"  ID token:              RS256 (public keys at {PUBLIC}/auth/.well-known/jwks.json), "
            "aud wechat, iss https://www.example.com, valid 300 s") in result.output.splitlines()
    assert "PRIVATE KEY" not in result.output

# --- a wrong setting while a flask command loads the app ----------------------------------

BAD_FACTORY = """\
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from support import make_test_app


def create_app():
    return make_test_app(Path(__file__).parent, WECHAT_QR_ASSOCIATION="field_matchin")
"""


@pytest.mark.parametrize("command", [["wechat-qr", "check"], ["run", "--port", "1"]])
def test_a_wrong_setting_is_one_paragraph_not_a_traceback(tmp_path: Path,
                                                          command: list[str]) -> None:
    """An app factory whose init_app refuses a setting: `flask` says which key, what is
    wrong and the fix in one `Error:` paragraph, with exit status 1."""
    (tmp_path / "bad_factory.py").write_text(BAD_FACTORY.format(tests=str(TESTS)),
                                             encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "bad_factory", *command],
                            cwd=tmp_path, env=_environ(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        "Error: Flask-WeChat-QR setting WECHAT_QR_ASSOCIATION: unknown association mode "
        "'field_matchin'. Fix: Use one of: off, field_matching, ask_binding."]


# --- the set-ups the README and the quick start recommend pass the check ------------------


@pytest.mark.parametrize("flags, environ", [
    (["--debug"], {}),  # README: flask --app example_app run --debug
    ([], {"WECHAT_QR_SANDBOX": "true"}),  # docs/quickstart.rst: the phone on the network
], ids=["readme-debug", "quickstart-sandbox"])
def test_the_quick_start_set_ups_pass_the_check(tmp_path: Path, flags: list[str],
                                                environ: dict[str, str]) -> None:
    """What the README tells a newcomer to run is what check accepts: exit 0, warnings
    only, on the example site as it starts."""
    env = {**{k: v for k, v in _environ().items() if not k.startswith("WECHAT_QR_")},
           "SECRET_KEY": "q" * 64, "DATABASE_URL": f"sqlite:///{tmp_path / 'site.db'}",
           **environ}
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "example_app", *flags, "wechat-qr", "check",
         "--base-url", "http://127.0.0.1:5000"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert problems(result.stdout) == []
    assert result.stdout.splitlines()[-1].startswith("Summary: no problems")
    assert domain_row(result.stdout).startswith("127.0.0.1 (the sandbox takes the host")


def test_a_secret_pasted_as_the_app_id_is_masked_in_the_listing(
        make_app: t.Callable[..., Flask]) -> None:
    secret = "f3a9c1d2e4b5a6978877665544332211"
    result = check(make_app(WECHAT_QR_APP_ID=secret, WECHAT_QR_APP_ID_CHECK=False),
                   "--base-url", PUBLIC)
    assert secret not in result.output
    assert "f3…11 (not an AppID: masked)" in result.output


def test_the_standalone_sandboxs_own_file_is_in_the_folder_it_runs_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--database sqlite:///wechat-qr-sandbox.db`` (the default): a file in the folder
    the command runs in, as the docs say, and the start says where. Flask-SQLAlchemy put it
    in the app's instance folder: for the sandbox's app, inside the installed package's
    ``var`` folder (or a checkout's ``instance``), where nobody looked (a helper's docs
    walk, session 35)."""
    from flask_wechat_qr.sandbox import __main__ as standalone

    seen: list[str] = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(standalone, "make_server", _server_that_stops_at_once)
    standalone.serve(host="127.0.0.1", port=0, app_id="wxclitest00000001",
                     app_secret="s" * 20, name=None, callback_domain="localhost",
                     database="sqlite:///wechat-qr-sandbox.db", public_url=None,
                     echo=seen.append)
    assert (tmp_path / "wechat-qr-sandbox.db").exists()
    assert f" * Its database (QR codes, codes, people's avatars): sqlite:///{tmp_path}/" \
           "wechat-qr-sandbox.db" in seen
    assert "s" * 20 not in "\n".join(seen)


class _server_that_stops_at_once:  # noqa: N801 (stands in for werkzeug's make_server)
    def __init__(self, *_args: t.Any, **_kwargs: t.Any) -> None:
        pass

    def serve_forever(self) -> None:
        pass

    def server_close(self) -> None:
        pass
