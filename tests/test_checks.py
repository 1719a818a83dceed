"""The deployment checks (``flask_wechat_qr.checks``), each rule on its own, without click.

Every rule is tested through its own function and through :func:`run_checks` (so it is
wired in and no other rule fires with it). The command's output and exit status are
``test_cli``'s. The checks read settings and build URLs; they never touch the database, so
these tests run on SQLite only.
"""

from __future__ import annotations

import dataclasses
import sys
import typing as t
from datetime import timedelta

import pytest
from flask import Flask
from support import (
    APP_ID,
    APP_SECRET,
    SANDBOX_APP_ID,
    SANDBOX_APP_SECRET,
    app_settings,
)

from flask_wechat_qr import checks
from flask_wechat_qr.checks import Check, Deployment, Finding, mask_secret, run_checks
from flask_wechat_qr.id_token import IdTokenSigner

PUBLIC = "https://www.example.com"
SANDBOXED = {"WECHAT_QR_SANDBOX": True, "WECHAT_QR_APP_ID": None,
             "WECHAT_QR_APP_SECRET": None}


@pytest.fixture
def make_app(make_production_app: t.Callable[..., Flask]) -> t.Callable[..., Flask]:
    """This module's apps are configured for production (conftest.make_production_app)."""
    return make_production_app


@pytest.fixture
def site(make_app: t.Callable[..., Flask]) -> Flask:
    """A healthy production site."""
    return make_app()


def deploy(app: Flask, base_url: str | None = PUBLIC, callback_domain: str | None = None,
           **changes: t.Any) -> Deployment:
    """``app``'s deployment as ``flask wechat-qr check`` gathers it, with ``changes``."""
    deployment = Deployment.of(app, app_settings(app), base_url, callback_domain)
    return dataclasses.replace(deployment, **changes)


def with_config(deployment: Deployment, **config: t.Any) -> Deployment:
    return dataclasses.replace(deployment, config={**deployment.config, **config})


def only(kind: str, check: Check, deployment: Deployment) -> Finding:
    """The one ``kind`` of finding the whole run makes, asserted to be ``check``'s."""
    findings = run_checks(deployment)
    found = findings.problems if kind == "problem" else findings.warnings
    assert len(found) == 1, findings
    assert found[0] in list(check(deployment)), (check, findings)
    return found[0]


def healthy(deployment: Deployment) -> None:
    findings = run_checks(deployment)
    assert findings.problems == () and findings.warnings == (), findings


# --- the inputs, and a healthy site -------------------------------------------------------


def test_healthy_site_has_no_findings(site: Flask, capsys: pytest.CaptureFixture[str]) -> None:
    deployment = deploy(site, callback_domain="www.example.com")
    healthy(deployment)
    assert deployment.urls.redirect_uris == {"wechat": f"{PUBLIC}/auth/wechat/callback"}
    assert deployment.urls.jwks_url == f"{PUBLIC}/auth/.well-known/jwks.json"
    assert deployment.callback_domain_to_enter == "www.example.com"
    assert capsys.readouterr() == ("", "")  # the checks print nothing


def test_every_check_is_run_in_listing_order(site: Flask) -> None:
    names = [name for name in vars(checks) if name.startswith("check_")]
    assert [check.__name__ for check in checks.DEPLOYMENT_CHECKS] == names


def test_unknown_base_url_gives_paths_only(site: Flask) -> None:
    deployment = deploy(site, base_url=None)
    assert deployment.base_url is None and deployment.redirect is None
    assert deployment.urls.redirect_uris == {"wechat": "/auth/wechat/callback"}
    assert deployment.callback_domain_to_enter is None


def test_base_url_from_server_name(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(SERVER_NAME="www.example.com", PREFERRED_URL_SCHEME="https",
                   APPLICATION_ROOT="/shop")
    deployment = deploy(app, base_url=None)
    assert deployment.base_url == "https://www.example.com/shop"
    assert deployment.base_url_source == "SERVER_NAME, PREFERRED_URL_SCHEME and APPLICATION_ROOT"
    assert deployment.urls.redirect_uris["wechat"] == (
        "https://www.example.com/shop/auth/wechat/callback")
    healthy(deployment)


def test_a_given_base_url_loses_its_trailing_slash(site: Flask) -> None:
    deployment = deploy(site, base_url="https://shop.example.com/site/")
    assert (deployment.base_url, deployment.base_url_source) == (
        "https://shop.example.com/site", "--base-url")
    assert deployment.urls.redirect_uris["wechat"] == (
        "https://shop.example.com/site/auth/wechat/callback")


@pytest.mark.parametrize("secret,masked", [
    ("", "********"), ("1234567", "********"), ("12345678", "12…78"),
    ("0123456789abcdef0123456789abcdef", "01…ef"),
])
def test_mask_secret(secret: str, masked: str) -> None:
    assert mask_secret(secret) == masked


def test_a_connection_is_described_with_its_secret_masked(site: Flask) -> None:
    settings = app_settings(site)
    rows = dict(checks.describe_connection(deploy(site), settings.connections["wechat"],
                                           IdTokenSigner.from_settings(settings)))
    assert rows["AppID"] == APP_ID
    assert rows["AppSecret"] == f"{APP_SECRET[:2]}…{APP_SECRET[-2:]} (masked)"
    assert APP_SECRET not in str(rows) and "ID token" not in rows
    unknown = dict(checks.describe_connection(deploy(site, base_url=None),
                                              settings.connections["wechat"], None))
    assert unknown["Redirect URI"] == "unknown; <public base URL>/auth/wechat/callback"


def test_missing_credentials_are_described_as_not_set(make_app: t.Callable[..., Flask]
                                                     ) -> None:
    """Not as a masked value, as if something odd had been pasted there."""
    site = make_app(WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None)
    rows = dict(checks.describe_connection(deploy(site), app_settings(site).connections["wechat"],
                                           None))
    assert (rows["AppID"], rows["AppSecret"]) == ("not set", "not set")


def test_the_sandboxs_official_account_is_described_as_simulated(
        make_app: t.Callable[..., Flask]) -> None:
    """A sandbox site configures no Official Account, yet ``check`` listed one (found by a
    newcomer, who wondered where it came from)."""
    site = make_app(WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None)
    rows = dict(checks.describe_connection(deploy(site), app_settings(site).connections["wechat"],
                                           None))
    assert rows["Inside WeChat"].startswith(
        "Official Account wxsandboxoa00000001 (the sandbox's own, simulated) (AppSecret ")


def test_the_official_account_is_described_with_its_secret_masked(
        make_app: t.Callable[..., Flask]) -> None:
    site = make_app(WECHAT_QR_OA_APP_ID="wxfedcba9876543210",
                    WECHAT_QR_OA_APP_SECRET="0a-s3cr3t-n0t-t0-b3-sh0wn",
                    WECHAT_QR_OA_VERIFY_FILE="MP_verify_Ab12.txt=Ab12")
    conn = app_settings(site).connections["wechat"]
    row = dict(checks.describe_connection(deploy(site), conn, None))["Inside WeChat"]
    assert row == ("Official Account wxfedcba9876543210 (AppSecret 0a…wn, masked), scope "
                   "snsapi_userinfo; verify file served at /MP_verify_Ab12.txt")
    healthy(deploy(site))
    plain = app_settings(make_app()).connections["wechat"]
    assert "no Official Account" in dict(checks.describe_connection(
        deploy(site), plain, None))["Inside WeChat"]


def test_half_an_official_account_is_a_warning(make_app: t.Callable[..., Flask]) -> None:
    site = make_app(WECHAT_QR_OA_APP_ID="wxfedcba9876543210")
    warning = only("warning", checks.check_official_account, deploy(site))
    assert "only half of the Official Account" in warning.what
    assert "WECHAT_QR_OA_APP_SECRET" in warning.fix


# --- SECRET_KEY ---------------------------------------------------------------------------


def test_missing_secret_key_is_a_problem(site: Flask) -> None:
    problem = only("problem", checks.check_secret_key, with_config(deploy(site), SECRET_KEY=None))
    assert problem.what.startswith("SECRET_KEY is not set")
    assert problem.fix.startswith("set SECRET_KEY from the environment")


@pytest.mark.parametrize("key,why", [
    ("dev", "well-known placeholder"),
    ("change-me", "well-known placeholder"),
    ("Please change me before going live!", "well-known placeholder"),
    ("your-secret-key", "well-known placeholder"),
    ("test-secret-key", "15 bytes, fewer than 32"),
    (b"0123456789", "10 bytes, fewer than 32"),
    ("a" * 31, "31 bytes, fewer than 32"),
    ("键" * 10, "30 bytes, fewer than 32"),  # bytes, not characters, are what signs
    (b'_5#y2L"F4Q8z\n\xec]/', "well-known placeholder"),  # Flask's quickstart
    ("hard to guess string", "well-known placeholder"),
    ("you-will-never-guess", "well-known placeholder"),
])
def test_weak_secret_key_is_a_problem(site: Flask, key: t.Any, why: str) -> None:
    problem = only("problem", checks.check_secret_key, with_config(deploy(site), SECRET_KEY=key))
    assert problem.what.startswith("SECRET_KEY is") and why in problem.what


def test_a_weak_secret_key_while_developing_is_a_warning(site: Flask) -> None:
    """init_app refuses it only outside debug and testing; the check says the same."""
    deployment = dataclasses.replace(with_config(deploy(site), SECRET_KEY="change-me"),
                                     production=False)
    warning = only("warning", checks.check_secret_key, deployment)
    assert "well-known placeholder" in warning.what and "refused in production" in warning.what


def test_no_secret_key_while_developing_is_still_a_problem(site: Flask) -> None:
    """Without one, sessions (and so every login's state) do not work at all."""
    deployment = dataclasses.replace(with_config(deploy(site), SECRET_KEY=""), production=False)
    only("problem", checks.check_secret_key, deployment)


def test_a_long_random_secret_key_is_fine(site: Flask) -> None:
    healthy(with_config(deploy(site), SECRET_KEY=b"\x8f" * 32))
    healthy(with_config(deploy(site), SECRET_KEY="9f8e7d6c5b4a39281706f5e4d3c2b1a0"))


# --- the sandbox and the credentials ------------------------------------------------------


def test_sandbox_on_with_debug_off_is_a_warning(make_app: t.Callable[..., Flask]) -> None:
    """As at start-up: the sandbox is on only when asked for (the README asks for it to try
    the site without --debug), so it is said loudly, not refused."""
    deployment = deploy(make_app(**SANDBOXED))
    warning = only("warning", checks.check_sandbox_in_production, deployment)
    assert warning.what.startswith("WECHAT_QR_SANDBOX is on while DEBUG and TESTING are off")
    assert "never deploy this" in warning.what
    assert "set WECHAT_QR_SANDBOX=False" in warning.fix
    assert "the quick start runs it so" in warning.fix  # it does not contradict the README
    healthy(dataclasses.replace(deployment, production=False))


def test_the_sandbox_is_a_development_set_up(make_app: t.Callable[..., Flask]) -> None:
    """http, localhost and a port are what trying the sandbox looks like: not problems."""
    deployment = deploy(make_app(**SANDBOXED), base_url="http://127.0.0.1:5000")
    assert deployment.simulated == "in-app" and not deployment.production_checks
    findings = run_checks(deployment)
    assert findings.problems == ()
    assert [f.what.split(":")[0] for f in findings.warnings] == [
        "WECHAT_QR_SANDBOX is on while DEBUG and TESTING are off",
        "the redirect URI has port 5000, but the authorization callback domain (授权回调域) "
        "takes none"]


STANDALONE = {"WECHAT_QR_OPEN_BASE_URL": "http://127.0.0.1:5001",
              "WECHAT_QR_API_BASE_URL": "http://127.0.0.1:5001",
              "WECHAT_QR_APP_ID": SANDBOX_APP_ID, "WECHAT_QR_APP_SECRET": "pr1nt3d-at-start"}


@pytest.mark.parametrize("base_url", [None, "http://localhost:5000"])
def test_the_standalone_sandbox_recipe_passes(make_app: t.Callable[..., Flask],
                                              base_url: str | None) -> None:
    """docs/sandbox.rst's settings, DEBUG off: the sandbox's AppID is right there."""
    deployment = deploy(make_app(**STANDALONE), base_url=base_url)
    assert deployment.simulated == "standalone"
    findings = run_checks(deployment)
    assert findings.problems == (), findings
    warning = next(iter(checks.check_sandbox_in_production(deployment)))
    assert warning.what.startswith("logins go to a standalone sandbox at "
                                   "http://127.0.0.1:5001, not to WeChat")
    assert "unset WECHAT_QR_OPEN_BASE_URL and WECHAT_QR_API_BASE_URL" in warning.fix
    assert warning in findings.warnings
    assert list(checks.check_sandbox_in_production(
        dataclasses.replace(deployment, production=False))) == []


def test_sandbox_app_id_with_sandbox_off_is_a_problem(make_app: t.Callable[..., Flask]) -> None:
    problem = only("problem", checks.check_sandbox_credentials,
                   deploy(make_app(WECHAT_QR_APP_ID=SANDBOX_APP_ID,
                                  WECHAT_QR_APP_ID_CHECK=False)))
    assert problem.connection == "wechat"
    assert problem.what.startswith("the sandbox's AppID or AppSecret")
    assert "set WECHAT_QR_APP_ID and WECHAT_QR_APP_SECRET" in problem.fix


def test_sandbox_app_secret_with_sandbox_off_is_a_problem(
    make_app: t.Callable[..., Flask],
) -> None:
    app = make_app(WECHAT_QR_APP_ID="not-an-app-id", WECHAT_QR_APP_SECRET=SANDBOX_APP_SECRET,
                   WECHAT_QR_APP_ID_CHECK=False)
    problem = only("problem", checks.check_sandbox_credentials, deploy(app))
    assert problem.connection == "wechat"
    assert run_checks(deploy(app)).warnings == ()  # one finding for one mistake


def test_sandbox_app_id_in_one_of_several_connections(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(WECHAT_QR_APP_ID_CHECK=False, WECHAT_QR_CONNECTIONS=[
        {"connection": "web", "app_id": APP_ID, "app_secret": APP_SECRET},
        {"connection": "shop", "app_id": SANDBOX_APP_ID, "app_secret": "s3cr3t-0f-th3-sh0p"},
    ])
    problem = only("problem", checks.check_sandbox_credentials, deploy(app))
    assert problem.connection == "shop"
    assert "WECHAT_QR_CONNECTIONS[1]['app_id']" in problem.fix


def test_missing_credentials_are_a_problem(make_app: t.Callable[..., Flask]) -> None:
    problem = only("problem", checks.check_credentials,
                   deploy(make_app(WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None)))
    assert problem.connection == "wechat" and "WeChat login is off" in problem.what
    assert "set WECHAT_QR_APP_ID and WECHAT_QR_APP_SECRET" in problem.fix


@pytest.mark.parametrize("sandbox", [False, True])
def test_an_appid_without_its_appsecret_is_a_problem(make_app: t.Callable[..., Flask],
                                                     sandbox: bool) -> None:
    """Named as the half that is missing, in the sandbox too: it stands in only for a
    connection with neither, so this one's login is off (503) there as well."""
    problem = only("problem", checks.check_credentials,
                   deploy(make_app(WECHAT_QR_APP_SECRET=None, WECHAT_QR_SANDBOX=sandbox)))
    assert problem.connection == "wechat" and "WeChat login is off" in problem.what
    assert "WECHAT_QR_APP_ID is set but WECHAT_QR_APP_SECRET is not" in problem.what
    assert "set WECHAT_QR_APP_SECRET" in problem.fix and "remove WECHAT_QR_APP_ID" in problem.fix


def test_odd_app_id_is_a_warning(make_app: t.Callable[..., Flask]) -> None:
    """Only where the host turned the start-up check off (a WeChat-compatible service)."""
    deployment = deploy(make_app(WECHAT_QR_APP_ID="my-app", WECHAT_QR_APP_ID_CHECK=False))
    assert run_checks(deployment).problems == ()
    warning = only("warning", checks.check_credentials, deployment)
    assert "does not look like a WeChat AppID" in warning.what
    assert warning.connection == "wechat" and "WECHAT_QR_APP_ID" in warning.fix


def test_standalone_sandbox_left_configured_is_a_warning(
    make_app: t.Callable[..., Flask],
) -> None:
    deployment = deploy(make_app(WECHAT_QR_OPEN_BASE_URL="http://127.0.0.1:5001",
                                 WECHAT_QR_API_BASE_URL="http://127.0.0.1:5001"))
    findings = run_checks(deployment)
    assert findings.problems == ()
    assert findings.warnings == tuple(checks.check_wechat_endpoints(deployment))
    assert [w.what.split(" is ")[0] for w in findings.warnings] == [
        "WECHAT_QR_OPEN_BASE_URL", "WECHAT_QR_API_BASE_URL"]
    healthy(dataclasses.replace(deployment, production=False))


# --- the redirect URI ---------------------------------------------------------------------


def test_unknown_base_url_is_a_warning(site: Flask) -> None:
    warning = only("warning", checks.check_redirect_known, deploy(site, base_url=None))
    assert "--base-url https://www.example.com" in warning.fix
    assert run_checks(deploy(site, base_url=None)).problems == ()


def test_base_url_with_port_is_a_problem(site: Flask) -> None:
    deployment = deploy(site, base_url="https://www.example.com:8443")
    problem = only("problem", checks.check_redirect_port, deployment)
    assert problem.what.startswith("the redirect URI has port 8443")
    assert problem.fix.startswith("serve the public site on port 443 (or 80)")
    assert deployment.callback_domain_to_enter == "www.example.com"


def test_standard_port_is_not_a_problem(site: Flask) -> None:
    deployment = deploy(site, base_url="https://www.example.com:443")
    healthy(deployment)
    assert deployment.urls.redirect_uris["wechat"] == f"{PUBLIC}/auth/wechat/callback"


def test_port_with_the_sandbox_is_only_a_warning(make_app: t.Callable[..., Flask]) -> None:
    deployment = deploy(make_app(TESTING=True, **SANDBOXED), base_url="http://localhost:5000")
    assert run_checks(deployment).problems == ()
    warning = only("warning", checks.check_redirect_port, deployment)
    assert "port 5000" in warning.what and "the sandbox accepts it" in warning.what


def test_http_in_production_is_a_problem(site: Flask) -> None:
    deployment = deploy(site, base_url="http://www.example.com")
    problem = only("problem", checks.check_redirect_scheme, deployment)
    assert "uses http in production" in problem.what
    assert problem.fix.startswith("serve the site over https")
    healthy(dataclasses.replace(deployment, production=False))


def test_localhost_in_production_is_a_problem(site: Flask) -> None:
    deployment = deploy(site, base_url="https://127.0.0.1")
    problem = only("problem", checks.check_redirect_host, deployment)
    assert "host 127.0.0.1 is this machine" in problem.what
    healthy(dataclasses.replace(deployment, production=False))


def test_server_name_wins_over_base_url_host_with_a_warning(
    make_app: t.Callable[..., Flask],
) -> None:
    deployment = deploy(make_app(SERVER_NAME="www.example.com"), base_url="https://example.org")
    assert deployment.urls.redirect_uris["wechat"] == f"{PUBLIC}/auth/wechat/callback"
    assert run_checks(deployment).problems == ()
    warning = only("warning", checks.check_server_name_override, deployment)
    assert "SERVER_NAME (www.example.com) overrides the host of --base-url (example.org)" \
        in warning.what


def test_host_outside_trusted_hosts_is_a_problem(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(TRUSTED_HOSTS=["www.example.com"])
    healthy(deploy(app))
    deployment = deploy(app, base_url="https://example.com")
    assert deployment.urls.redirect_uris["wechat"] == "https://example.com/auth/wechat/callback"
    problem = only("problem", checks.check_trusted_hosts, deployment)
    assert "the host example.com is not in TRUSTED_HOSTS" in problem.what
    assert app.config["TRUSTED_HOSTS"] == ["www.example.com"]


def test_server_name_host_is_the_one_checked_against_trusted_hosts(
    make_app: t.Callable[..., Flask],
) -> None:
    app = make_app(SERVER_NAME="www.example.com", PREFERRED_URL_SCHEME="https",
                   TRUSTED_HOSTS=["www.example.com"])
    deployment = deploy(app, base_url="https://example.com")
    assert run_checks(deployment).problems == ()
    assert deployment.urls.redirect_uris["wechat"] == f"{PUBLIC}/auth/wechat/callback"


# --- the authorization callback domain (授权回调域) ---------------------------------------


@pytest.mark.parametrize("entered", ["example.com", "www.example.org", "api.www.example.com"])
def test_callback_domain_that_does_not_match_is_a_problem(site: Flask, entered: str) -> None:
    problem = only("problem", checks.check_callback_domain_match,
                   deploy(site, callback_domain=entered))
    assert f"(授权回调域) '{entered}' is not the redirect URI's host 'www.example.com'" \
        in problem.what
    assert problem.fix.startswith("enter www.example.com on the Open Platform")


@pytest.mark.parametrize("entered,what", [
    ("https://www.example.com", "a scheme (https://)"),
    ("www.example.com:8443", "a port"),
    ("www.example.com/auth/wechat/callback", "a path"),
    ("http://www.example.com:80/x", "a scheme (http://), a port and a path"),
])
def test_callback_domain_with_scheme_port_or_path_is_a_problem(
    site: Flask, entered: str, what: str,
) -> None:
    problem = only("problem", checks.check_callback_domain_shape,
                   deploy(site, callback_domain=entered))  # the host itself matches
    assert problem.what.startswith(f"--callback-domain '{entered}' has {what}, but")
    assert problem.fix == "enter only the host on the Open Platform, e.g. www.example.com"


def test_callback_domain_is_compared_without_case(site: Flask) -> None:
    healthy(deploy(site, callback_domain="WWW.Example.COM"))


def test_callback_domain_without_base_url_is_a_warning(site: Flask) -> None:
    deployment = deploy(site, base_url=None, callback_domain="www.example.com")
    assert run_checks(deployment).problems == ()
    found = list(checks.check_callback_domain_match(deployment))
    assert [f.kind for f in found] == ["warning"] and "cannot be compared" in found[0].what
    assert set(found) < set(run_checks(deployment).warnings)


# --- the business callback URL and its ID token -------------------------------------------


def test_http_callback_url_in_production_is_a_problem(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(WECHAT_QR_CALLBACK_URL="http://biz.example.com/wechat/done",
                   WECHAT_QR_ID_TOKEN_SECRET="k3y-" * 12, SERVER_NAME="www.example.com",
                   PREFERRED_URL_SCHEME="https")
    deployment = deploy(app)
    problem = only("problem", checks.check_callback_url_scheme, deployment)
    assert "is http: the ID token would cross the network in clear text" in problem.what
    assert problem.connection == "wechat"
    healthy(dataclasses.replace(deployment, production=False))


def test_http_callback_url_on_this_machine_is_fine(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(WECHAT_QR_CALLBACK_URL="http://127.0.0.1:8000/wechat/done",
                   WECHAT_QR_ID_TOKEN_SECRET="k3y-" * 12,
                   WECHAT_QR_ID_TOKEN_ISSUER="https://www.example.com")
    healthy(deploy(app))


def test_issuer_from_the_host_header_is_a_problem_in_production(
        make_app: t.Callable[..., Flask]) -> None:
    """The app keeps WeChat login off (503) when its ID tokens' ``iss`` would follow the
    Host header: before, ``check`` called that a warning and passed the deploy."""
    app = make_app(WECHAT_QR_CALLBACK_URL="https://biz.example.com/wechat/done",
                   WECHAT_QR_ID_TOKEN_SECRET="k3y-" * 12)
    deployment = deploy(app)
    found = only("problem", checks.check_issuer_source, deployment)
    assert "their iss would follow each request's Host header" in found.what
    assert "WeChat login is off outside debug and testing" in found.what
    assert found.fix.startswith("set WECHAT_QR_ID_TOKEN_ISSUER")
    developing = dataclasses.replace(deployment, production=False)
    warning = only("warning", checks.check_issuer_source, developing)
    assert warning.what.endswith("(fine while developing, refused in production)")
    healthy(with_config(deployment, SERVER_NAME="www.example.com"))


@pytest.mark.parametrize(("config", "base_url", "fix"), [
    ({"WECHAT_QR_ID_TOKEN_ISSUER": "https://login.example.com"}, PUBLIC,
     "set WECHAT_QR_ID_TOKEN_ISSUER to https://www.example.com, or give every receiver the "
     "keys' URL itself"),
    ({"WECHAT_QR_ID_TOKEN_ISSUER": "https://www.example.com"}, PUBLIC + "/shop",
     "set WECHAT_QR_ID_TOKEN_ISSUER to https://www.example.com/shop, or give every receiver "
     "the keys' URL itself"),
    # SERVER_NAME without PREFERRED_URL_SCHEME: an iss of http on a site served over https
    ({"SERVER_NAME": "www.example.com"}, PUBLIC,
     "set PREFERRED_URL_SCHEME to 'https' (the iss takes its scheme)"),
])
def test_an_issuer_that_does_not_lead_to_the_public_keys_is_a_warning(
        make_app: t.Callable[..., Flask], pem: str, config: dict[str, str], base_url: str,
        fix: str) -> None:
    """Receivers find the keys at iss + their path (the ID token guide's receiver does): an
    iss elsewhere made every token fail there, and nothing said why."""
    app = make_app(WECHAT_QR_CALLBACK_URL="https://biz.example.com/wechat/done",
                   WECHAT_QR_ID_TOKEN_PRIVATE_KEY=pem, **config)
    deployment = deploy(app, base_url)
    warning = only("warning", checks.check_issuer_leads_to_the_keys, deployment)
    assert "but this site publishes its public keys at " in warning.what
    assert warning.what.endswith("a receiver that finds the keys from iss (iss + the keys' "
                                 "path) gets none, and no token verifies")
    assert warning.fix == fix
    if "SERVER_NAME" in config:
        healthy(deploy(make_app(WECHAT_QR_CALLBACK_URL="https://biz.example.com/wechat/done",
                                WECHAT_QR_ID_TOKEN_PRIVATE_KEY=pem,
                                PREFERRED_URL_SCHEME="https", **config), base_url))


@pytest.mark.parametrize(("issuer", "base_url"), [
    ("https://www.example.com/shop", PUBLIC + "/shop"),
    ("https://www.example.com/shop/", PUBLIC + "/shop"),
    # written another way, the same place (a receiver's URL library reads them alike)
    ("https://WWW.Example.com:443/shop", PUBLIC + "/shop"),
    ("https://www.example.com/my%20shop", PUBLIC + "/my%20shop"),
    ("https://www.example.com/my%20shop", PUBLIC + "/my shop"),
    ("https://www.example.com/%E5%95%86%E5%BA%97", PUBLIC + "/商店"),
])
def test_an_issuer_at_the_keys_is_fine(make_app: t.Callable[..., Flask], pem: str,
                                        issuer: str, base_url: str) -> None:
    app = make_app(WECHAT_QR_CALLBACK_URL="https://biz.example.com/wechat/done",
                   WECHAT_QR_ID_TOKEN_ISSUER=issuer, WECHAT_QR_ID_TOKEN_PRIVATE_KEY=pem)
    healthy(deploy(app, base_url))


def test_an_issuer_elsewhere_with_a_shared_secret_is_fine(
        make_app: t.Callable[..., Flask]) -> None:
    """A shared secret publishes no keys to find."""
    app = make_app(WECHAT_QR_CALLBACK_URL="https://biz.example.com/wechat/done",
                   WECHAT_QR_ID_TOKEN_ISSUER="https://login.example.com",
                   WECHAT_QR_ID_TOKEN_SECRET="k3y-" * 12)
    healthy(deploy(app, PUBLIC + "/shop"))


# --- a business callback URL that would end in 405 ------------------------------------------

ID_TOKENS = {"WECHAT_QR_ID_TOKEN_SECRET": "k3y-" * 12,
             "WECHAT_QR_ID_TOKEN_ISSUER": "https://www.example.com"}


def test_the_redirect_uri_as_business_callback_url_is_a_problem(
    make_app: t.Callable[..., Flask],
) -> None:
    """What the example's home page once invited: the extension's own GET-only callback
    route as WECHAT_QR_CALLBACK_URL ends every login on 405."""
    app = make_app(WECHAT_QR_CALLBACK_URL="http://127.0.0.1:5000/auth/wechat/callback",
                   **ID_TOKENS)
    deployment = deploy(app)
    assert deployment.business_routes["wechat"].endpoint == "wechat_qr.callback"
    problem = only("problem", checks.check_callback_url_method, deployment)
    assert problem.connection == "wechat"
    assert problem.what.startswith("the business callback URL (WECHAT_QR_CALLBACK_URL) "
                                   "http://127.0.0.1:5000/auth/wechat/callback is this app's "
                                   "wechat_qr.callback")
    assert "but not POST" in problem.what and "405 Method Not Allowed" in problem.what
    assert "the extension's own redirect URI" in problem.what
    assert problem.fix.startswith("unset WECHAT_QR_CALLBACK_URL for logins that end on this site")


@pytest.mark.parametrize("rule, url", [
    ("/wechat/done", "https://www.example.com/wechat/done"),
    ("/wechat/done", "http://localhost:8000/wechat/done"),
    ("/<path:anything>", "https://www.example.com/wechat/done"),
])
def test_a_get_only_route_of_this_app_is_a_problem(make_app: t.Callable[..., Flask],
                                                  rule: str, url: str) -> None:
    app = make_app(WECHAT_QR_CALLBACK_URL=url, **ID_TOKENS)
    app.add_url_rule(rule, "done", lambda: "thanks")  # GET only
    problem = only("problem", checks.check_callback_url_method, deploy(app))
    assert "is this app's done, which takes GET, HEAD and OPTIONS but not POST" in problem.what
    assert problem.what.endswith("every login would end on 405 Method Not Allowed when the "
                                 "ID token is posted")
    assert problem.fix.startswith('accept POST there (methods=["POST"])')


def test_a_route_that_takes_post_is_fine(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(WECHAT_QR_CALLBACK_URL="https://www.example.com/wechat/done", **ID_TOKENS)
    app.add_url_rule("/wechat/done", "done", lambda: "thanks", methods=["POST"])
    deployment = deploy(app)
    assert "POST" in deployment.business_routes["wechat"].methods
    healthy(deployment)


def test_a_url_no_route_of_this_app_serves_is_not_checked(
    make_app: t.Callable[..., Flask],
) -> None:
    app = make_app(WECHAT_QR_CALLBACK_URL="https://biz.example.com/wechat/receive", **ID_TOKENS)
    deployment = deploy(app)
    assert deployment.business_routes == {}
    healthy(deployment)


def test_the_same_path_on_another_host_is_a_warning(make_app: t.Callable[..., Flask]) -> None:
    """Another service may serve that path; this app cannot tell."""
    app = make_app(WECHAT_QR_CALLBACK_URL="https://biz.example.com/wechat/done", **ID_TOKENS)
    app.add_url_rule("/wechat/done", "done", lambda: "thanks")
    warning = only("warning", checks.check_callback_url_method, deploy(app))
    assert warning.what.startswith("if biz.example.com is this app, the business callback URL")


def test_each_connection_is_checked_by_its_own_key(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(WECHAT_QR_CONNECTIONS=[
        {"connection": "web", "app_id": APP_ID, "app_secret": APP_SECRET},
        {"connection": "shop", "app_id": APP_ID, "app_secret": APP_SECRET,
         "callback_url": "https://www.example.com/auth/shop/login"},
    ], **ID_TOKENS)
    problem = only("problem", checks.check_callback_url_method, deploy(app))
    assert problem.connection == "shop"
    assert "(WECHAT_QR_CONNECTIONS[1]['callback_url'])" in problem.what
    assert "this app's wechat_qr.login" in problem.what


# --- the session cookie must reach the callback ------------------------------------------------


@pytest.mark.parametrize(("config", "reason"), [
    ({"SESSION_COOKIE_PATH": "/app"}, "path '/app'"),
    ({"SESSION_COOKIE_PATH": "/auth/wechat/callbackx"}, "path '/auth/wechat/callbackx'"),
    ({"APPLICATION_ROOT": "/shop"}, "path '/shop'"),
    ({"SESSION_COOKIE_DOMAIN": "shop.example.com"}, "domain 'shop.example.com'"),
    ({"SESSION_COOKIE_DOMAIN": ".other.example"}, "domain 'other.example'"),
])
def test_a_session_cookie_the_browser_keeps_from_the_callback_is_a_problem(
        make_app: t.Callable[..., Flask], config: dict[str, t.Any], reason: str) -> None:
    """Before: ``check`` said "no problems", and every login ended on "This login link is
    no longer valid" (an INFO line in the log)."""
    finding = only("problem", checks.check_session_cookie_reaches_callback,
                   deploy(make_app(**config)))
    assert f"the session cookie's {reason}" in finding.what
    assert "'This login link is no longer valid'" in finding.what
    assert "SESSION_COOKIE_PATH and SESSION_COOKIE_DOMAIN" in finding.fix


@pytest.mark.parametrize("config", [
    {"SESSION_COOKIE_PATH": "/"}, {"SESSION_COOKIE_PATH": "/auth"},
    {"SESSION_COOKIE_PATH": "/auth/"}, {"SESSION_COOKIE_DOMAIN": "example.com"},
    {"SESSION_COOKIE_DOMAIN": "www.example.com"}, {"SESSION_COOKIE_DOMAIN": False},
    # as Werkzeug writes the cookie: without the port, in IDNA (found in review)
    {"SESSION_COOKIE_DOMAIN": "www.example.com:443"}, {"SESSION_COOKIE_DOMAIN": "EXAMPLE.com"},
])
def test_a_session_cookie_over_the_callback_is_fine(make_app: t.Callable[..., Flask],
                                                    config: dict[str, t.Any]) -> None:
    assert list(checks.check_session_cookie_reaches_callback(
        deploy(make_app(**config)))) == []


@pytest.mark.parametrize("base_url", ["http://192.168.1.5", "http://dev.example.com"])
def test_a_secure_only_session_cookie_over_http_is_a_problem(
        make_app: t.Callable[..., Flask], base_url: str) -> None:
    """``SESSION_COOKIE_SECURE = True`` copied from a production config onto a site served
    over http (the sandbox tried from a phone on the network, a staging host): browsers
    keep no ``Secure`` cookie from an http page. Before: ``check`` said nothing, and every
    login ended on "This login link is no longer valid" (an INFO line in the log)."""
    app = make_app(DEBUG=True, SESSION_COOKIE_SECURE=True)
    finding = only("problem", checks.check_session_cookie_reaches_callback,
                   deploy(app, base_url=base_url))
    assert "SESSION_COOKIE_SECURE is on but the callback" in finding.what
    assert "'This login link is no longer valid'" in finding.what
    assert "https" in finding.fix and "SESSION_COOKIE_SECURE" in finding.fix


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:5000", "http://localhost:5000",
                                      "https://www.example.com"])
def test_a_secure_only_session_cookie_where_browsers_keep_it_is_fine(
        make_app: t.Callable[..., Flask], base_url: str) -> None:
    """Browsers keep ``Secure`` cookies from https pages, and from http ones on this
    machine (a secure context)."""
    app = make_app(DEBUG=True, SESSION_COOKIE_SECURE=True)
    assert list(checks.check_session_cookie_reaches_callback(
        deploy(app, base_url=base_url))) == []


def test_a_partitioned_session_cookie_over_http_is_a_problem(
        make_app: t.Callable[..., Flask]) -> None:
    """Flask 3.1's ``SESSION_COOKIE_PARTITIONED`` (CHIPS): Werkzeug writes a partitioned
    cookie ``Secure`` too, so over http away from this machine browsers keep none. Before:
    ``check`` said nothing (it looked at ``SESSION_COOKIE_SECURE`` only), and every login
    ended on "This login link is no longer valid"."""
    app = make_app(DEBUG=True, SESSION_COOKIE_PARTITIONED=True)
    finding = only("problem", checks.check_session_cookie_reaches_callback,
                   deploy(app, base_url="http://192.168.1.5"))
    assert "SESSION_COOKIE_PARTITIONED is on but the callback" in finding.what
    assert "Secure" in finding.what
    assert "https" in finding.fix and "SESSION_COOKIE_PARTITIONED" in finding.fix
    for base_url in ("http://127.0.0.1:5000", "https://www.example.com"):
        assert list(checks.check_session_cookie_reaches_callback(
            deploy(app, base_url=base_url))) == []


# --- routes of the host in the way ------------------------------------------------------


@pytest.mark.parametrize(("prefix", "rule", "url", "endpoint", "role"), [
    ("", "/wechat/callback", "/wechat/callback", "wechat_qr.callback",
     "WeChat sends every login back to it"),
    ("", "/wechat/login", "/wechat/login", "wechat_qr.login", "the login button leads there"),
    ("", "/wechat/qr", "/wechat/qr", "wechat_qr.qr", "it is the page with the embedded QR"),
    ("/auth", "/auth/wechat/link", "/auth/wechat/link", "wechat_qr.link",
     "account pages link WeChat"),
])
def test_a_host_route_answering_an_extension_url_is_a_problem(
        make_app: t.Callable[..., Flask], prefix: str, rule: str, url: str, endpoint: str,
        role: str) -> None:
    """Registered after ``init_app`` (a blueprint of the app factory's), out of the
    start-up check's sight: the URL map says whose view answers."""
    app = make_app(WECHAT_QR_URL_PREFIX=prefix)
    app.add_url_rule(rule, "own_view", lambda **_: "the host's page")
    with app.test_client() as client:  # what visitors get
        assert client.get(url).get_data(as_text=True) == "the host's page"
    found = only("problem", checks.check_shadowed_routes, deploy(app))
    assert found.connection == "wechat"
    assert found.what.startswith(f"this app's route {rule} (own_view) answers {url} before "
                                 f"the extension's {endpoint}: {role}")
    assert found.fix.startswith("give own_view another path, or set WECHAT_QR_URL_PREFIX "
                                f"(now {prefix or '/'}) to a prefix no route of the site "
                                "uses")


def test_a_shadowed_url_is_said_under_the_mount_point_and_per_method(
        make_app: t.Callable[..., Flask]) -> None:
    app = make_app(WECHAT_QR_URL_PREFIX="")
    app.add_url_rule("/wechat/unlink", "own_unlink", lambda: "", methods=["POST"])
    found = only("problem", checks.check_shadowed_routes,
                 deploy(app, base_url=f"{PUBLIC}/site"))
    assert found.what.startswith("this app's route /wechat/unlink (own_unlink) answers "
                                 "/site/wechat/unlink (POST) before the extension's "
                                 "wechat_qr.unlink: ")


def test_a_host_route_registered_first_is_a_problem(make_app: t.Callable[..., Flask]) -> None:
    """Of two rules of the same shape Werkzeug takes the first registered: the host's
    ``/<lang>/login`` before ``init_app`` takes every connection's login."""
    def own_routes(app: Flask) -> None:
        app.add_url_rule("/<lang>/login", "own_login", lambda lang: lang)

    app = make_app(WECHAT_QR_URL_PREFIX="", before_init=own_routes)
    found = only("problem", checks.check_shadowed_routes, deploy(app))
    assert found.what.startswith("this app's route /<lang>/login (own_login) answers "
                                 "/wechat/login before the extension's wechat_qr.login: ")


def test_a_host_route_on_a_url_these_settings_do_not_use_is_fine(
        make_app: t.Callable[..., Flask]) -> None:
    """No RS256 key, no public keys to serve; association off, no bind page."""
    def own_routes(app: Flask) -> None:
        app.add_url_rule("/.well-known/jwks.json", "own_jwks", lambda: "{}")
        app.add_url_rule("/bind", "own_bind", lambda: "")

    app = make_app(WECHAT_QR_URL_PREFIX="", before_init=own_routes)
    assert {route.endpoint for route in deploy(app).shadowed_routes} == {
        "wechat_qr.jwks", "wechat_qr.bind"}
    healthy(deploy(app))


def test_a_host_route_on_the_public_keys_with_an_rs256_key_is_a_problem(
        make_app: t.Callable[..., Flask], pem: str) -> None:
    def own_routes(app: Flask) -> None:
        app.add_url_rule("/.well-known/jwks.json", "own_jwks", lambda: "{}")

    app = make_app(WECHAT_QR_URL_PREFIX="/", WECHAT_QR_ID_TOKEN_PRIVATE_KEY=pem,
                   before_init=own_routes)
    found = only("problem", checks.check_shadowed_routes, deploy(app))
    assert found.connection is None
    assert found.what.endswith("wechat_qr.jwks: receivers fetch the ID tokens' public keys "
                               "there")


def test_host_routes_the_extension_wins_over_are_fine(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(WECHAT_QR_URL_PREFIX="")
    app.add_url_rule("/<page>/callback", "pages", lambda page: page)  # after: ours first
    app.add_url_rule("/<path:anything>", "catch_all", lambda anything: anything)
    deployment = deploy(app)
    assert deployment.shadowed_routes == ()
    healthy(deployment)


@pytest.mark.parametrize("secret", ["...", "change-me", "5ec3e7a1b0c4d9f8e3a6b7c1d2e4f5a"])
def test_an_app_secret_that_is_no_wechat_app_secret_is_a_warning(
        make_app: t.Callable[..., Flask], secret: str) -> None:
    finding = only("warning", checks.check_credentials,
                   deploy(make_app(WECHAT_QR_APP_SECRET=secret)))
    assert f"the AppSecret ({len(secret)} characters) does not look like" in finding.what
    assert secret not in finding.what and "WECHAT_QR_APP_SECRET" in finding.fix


# --- the embedded QR code's frame -----------------------------------------------------


@pytest.mark.parametrize(("policy", "blocked"), [
    (None, True),  # Talisman's own default: default-src 'self', no frame-src
    ({"default-src": "'self'", "frame-src": ["'self'", "https://open.weixin.qq.com"]}, False),
    ({"default-src": "'self'"}, True),
])
def test_a_policy_that_blocks_wechats_frame_is_a_warning(
        make_app: t.Callable[..., Flask], policy: dict[str, t.Any] | None,
        blocked: bool) -> None:
    """Flask-Talisman's default policy (``default-src 'self'``) keeps WeChat's QR frame off
    the embedded QR page, which then shows only its link: the check says so, and what to
    add. Talisman's force_https does not hide it (the page is asked for over https)."""
    from flask_talisman import Talisman

    app = make_app()
    if policy is None:
        Talisman(app)
    else:
        Talisman(app, content_security_policy=policy)
    deployment = deploy(app)
    if not blocked:
        assert list(checks.check_qr_frame_allowed(deployment)) == []
        return
    finding = only("warning", checks.check_qr_frame_allowed, deployment)
    assert finding.connection == "wechat"
    assert ("the embedded QR page (/auth/wechat/qr) cannot show WeChat's QR code: this "
            "site's Content-Security-Policy does not let it frame "
            "https://open.weixin.qq.com") in finding.what
    assert "'frame-src'" in finding.fix


def test_the_in_app_sandbox_is_framed_from_this_site(make_app: t.Callable[..., Flask]) -> None:
    """With the in-app sandbox the frame is this site's own page: 'self' lets it in."""
    from flask_talisman import Talisman

    app = make_app(WECHAT_QR_SANDBOX=True)
    Talisman(app)
    assert list(checks.check_qr_frame_allowed(deploy(app))) == []


def test_a_site_without_a_policy_frames_wechat(site: Flask) -> None:
    assert deploy(site).blocked_qr_frames == ()


# --- Flask-Login's login view -------------------------------------------------------------


@pytest.mark.parametrize(("view", "other_login", "warned"), [
    ("login", None, True),  # Flask-AppBuilder's: no endpoint of that name
    ("sign_in_of", None, True),  # an endpoint that needs arguments
    ("login", "/login/", False),  # the "Log in first" page leads there instead
    ("sign_in", None, False),
    ("/sign-in", None, False),  # a URL: Flask-Login takes it as it is (found in review)
    (None, None, False),
])
def test_a_login_view_that_cannot_be_built_is_a_warning(
        make_app: t.Callable[..., Flask], view: str | None, other_login: str | None,
        warned: bool) -> None:
    """Following "Link WeChat" logged out leads to Flask-Login's login view: one that
    cannot be built left people on the "Log in first" page with no way to log in, and
    ``check`` said nothing."""
    config = {"WECHAT_QR_OTHER_LOGIN_URL": other_login} if other_login else {}
    app = make_app(**config)
    app.add_url_rule("/sign-in", "sign_in", lambda: "form")
    app.add_url_rule("/sign-in/<tenant>", "sign_in_of", lambda tenant: tenant)
    app.login_manager.login_view = view  # type: ignore[attr-defined]
    deployment = deploy(app)
    if not warned:
        assert list(checks.check_login_view(deployment)) == []
        return
    finding = only("warning", checks.check_login_view, deployment)
    assert f"Flask-Login's login_view {view!r} cannot be built here" in finding.what
    assert "WECHAT_QR_OTHER_LOGIN_URL" in finding.fix and "auth_view" in finding.fix


# --- a site on several subdomains --------------------------------------------------------


@pytest.mark.parametrize(("cookie_domain", "warned"), [
    (None, True),  # Flask's default: a cookie for the one host that set it
    ("www.example.com", True),
    ("example.com", False),
    (".example.com", False),
])
def test_pages_on_other_subdomains_want_a_session_cookie_that_covers_them(
        make_app: t.Callable[..., Flask], cookie_domain: str | None, warned: bool) -> None:
    """A shop on ``shop.`` whose button sends people through the login comes back to them
    logged out unless the session cookie covers the shop's subdomain."""
    app = make_app(SERVER_NAME="example.com", SESSION_COOKIE_DOMAIN=cookie_domain)
    app.subdomain_matching = True
    app.add_url_rule("/cart", "cart", lambda: "cart", subdomain="shop")
    app.add_url_rule("/me", "me", lambda: "me", subdomain="<user>")
    deployment = deploy(app, "https://example.com")
    found = list(checks.check_session_cookie_covers_subdomains(deployment))
    if not warned:
        assert found == []
        return
    finding = only("warning", checks.check_session_cookie_covers_subdomains, deployment)
    assert finding.what.startswith(
        "the site has pages on <user>.example.com and shop.example.com, but "
        "SESSION_COOKIE_DOMAIN is "), finding.what
    assert "(on example.com)" in finding.what
    assert "SESSION_COOKIE_DOMAIN = 'example.com'" in finding.fix


# --- the pages in the site's layout -------------------------------------------------------


@pytest.mark.parametrize("context_processor", [False, True])
def test_a_layout_that_cannot_render_the_pages_is_a_problem(
        make_app: t.Callable[..., Flask], context_processor: bool) -> None:
    """Flask-AppBuilder's baselayout.html needs ``appbuilder``, which only its own views
    pass: a wechat_qr/base.html extending it made every page of the login a 500, and
    ``check`` said nothing."""
    from jinja2 import ChoiceLoader, DictLoader

    app = make_app()
    app.jinja_loader = ChoiceLoader([DictLoader({  # type: ignore[assignment]
        "wechat_qr/base.html": '{% extends "layout.html" %}{% block body %}'
                               '{% block wechat_qr_content %}{% endblock %}{% endblock %}',
        "layout.html": "<title>{{ appbuilder.app_name }}</title>{% block body %}{% endblock %}",
    }), app.jinja_loader])
    if context_processor:
        app.context_processor(lambda: {"appbuilder": {"app_name": "Site"}})
    page = app.test_client().get("/auth/wechat/callback?code=x&state=y")
    deployment = deploy(app)
    if context_processor:
        assert page.status_code == 400
        assert list(checks.check_pages_render(deployment)) == []
        return
    assert page.status_code == 500  # what check now tells of
    found = only("problem", checks.check_pages_render, deployment)
    assert "UndefinedError: 'appbuilder' is undefined" in found.what
    assert "context processor" in found.fix


def test_a_hook_that_cannot_run_here_is_no_layout_problem(
        make_app: t.Callable[..., Flask]) -> None:
    """A site hook that needs what only a real request has: the members-only check says it
    could not judge; the layout check said the pages could not be rendered (found in
    review)."""
    from flask import request

    app = make_app()

    @app.before_request
    def needs_the_real_server() -> None:
        request.environ["SERVER_SOFTWARE_REAL"]  # noqa: B018

    deployment = deploy(app)
    assert list(checks.check_pages_render(deployment)) == []
    assert any("could not tell" in w.what for w in run_checks(deployment).warnings)


# --- the site's own bind page ---------------------------------------------------------------


def _with_bind_page(app: Flask, pages: dict[str, str]) -> Flask:
    """``app`` with templates of its own (``wechat_qr/bind.html`` and any it uses)."""
    from jinja2 import ChoiceLoader, DictLoader

    app.jinja_loader = ChoiceLoader([DictLoader(pages), app.jinja_loader])  # type: ignore[assignment]
    return app


FIELD = '<input type="hidden" name="binding" value="{{ binding }}">'


def _form(action: str, field: str = "") -> str:
    return ('<form method="post"><input type="hidden" name="csrf_token" '
            f'value="{{{{ csrf_token }}}}">{field}<input type="hidden" name="action" '
            f'value="{action}"><button>Go</button></form>')


@pytest.mark.parametrize("page", [
    _form("create"),  # from before the field
    _form("bind", FIELD) + _form("create"),  # in one form only (a review)
    '{# name="binding" #}' + _form("create"),  # in a comment only (a review)
    _form("create", '<input name="binding-note" value="{{ binding }}">'),  # another field
    _form("create", '<input type="hidden" name="binding" value="binding">'),  # no value
    '{% from "forms.html" import hidden %}' + _form("create", "{{ hidden() }}"),
], ids=["none", "one-form", "comment", "other-name", "constant", "macro-without-context"])
def test_a_bind_page_of_the_sites_own_without_the_binding_field_is_warned_of(
        make_app: t.Callable[..., Flask], page: str) -> None:
    """A site's own bind.html whose forms do not all send the page's ``binding``: such a
    form binds whatever WeChat waits in the session, also the one of another login started
    since the page was shown (a stranger's, at a shared computer). The page is drawn as a
    visitor gets it and each of its forms read."""
    app = _with_bind_page(make_app(WECHAT_QR_ASSOCIATION="ask_binding"),
                          {"wechat_qr/bind.html": page,
                           "forms.html": "{% macro hidden() %}" + FIELD + "{% endmacro %}"})
    found = only("warning", checks.check_bind_page_binding_field, deploy(app))
    assert "wechat_qr/bind.html" in found.what
    assert 'name="binding" value="{{ binding }}"' in found.fix


@pytest.mark.parametrize(("config", "pages"), [
    ({"WECHAT_QR_ASSOCIATION": "ask_binding"}, {}),  # the extension's own page
    ({"WECHAT_QR_ASSOCIATION": "ask_binding"},
     {"wechat_qr/bind.html": _form("bind", FIELD) + _form("create", FIELD)}),
    ({"WECHAT_QR_ASSOCIATION": "ask_binding"},  # from a macro of another file (a review;
     # imported without the page's context, the macro sends an empty value: warned of)
     {"wechat_qr/bind.html": '{% from "forms.html" import hidden with context %}'
                             + _form("create", "{{ hidden() }}"),
      "forms.html": "{% macro hidden() %}" + FIELD + "{% endmacro %}"}),
    ({}, {"wechat_qr/bind.html": _form("create")}),  # no connection asks binding
], ids=["own", "both-forms", "macro", "not-asked"])
def test_a_bind_page_that_sends_the_field_or_is_never_shown_is_not_warned_of(
        make_app: t.Callable[..., Flask], config: dict[str, str],
        pages: dict[str, str]) -> None:
    healthy(deploy(_with_bind_page(make_app(**config), pages)))


def test_a_bind_page_that_cannot_be_read_or_drawn_stops_no_check(
        make_app: t.Callable[..., Flask], tmp_path: t.Any) -> None:
    """A bind.html saved as GBK made the whole command a traceback (a review); one that
    needs what only a real request has cannot be judged here. Neither is warned of."""
    from jinja2 import ChoiceLoader, FileSystemLoader

    (tmp_path / "wechat_qr").mkdir()
    (tmp_path / "wechat_qr" / "bind.html").write_bytes(("<p>绑定</p>" + _form("create"))
                                                        .encode("gbk"))
    app = make_app(WECHAT_QR_ASSOCIATION="ask_binding")
    app.jinja_loader = ChoiceLoader([  # type: ignore[assignment]
        FileSystemLoader(str(tmp_path)), app.jinja_loader])
    healthy(deploy(app))
    needs_a_request = _with_bind_page(make_app(WECHAT_QR_ASSOCIATION="ask_binding"), {
        "wechat_qr/bind.html": "{{ request.environ['REMOTE_USER'].upper() }}"
                               + _form("create")})
    assert list(checks.check_bind_page_binding_field(deploy(needs_a_request))) == []


# --- the session's lifetime ---------------------------------------------------------------


@pytest.mark.parametrize(("lifetime", "warned"), [
    (timedelta(minutes=5), True),
    (120, True),  # seconds, as Flask also takes it
    (timedelta(minutes=10), False),
    (timedelta(days=31), False),  # Flask's default
])
def test_a_session_lifetime_shorter_than_a_login_is_a_warning(
        make_app: t.Callable[..., Flask], lifetime: t.Any, warned: bool) -> None:
    """Flask refuses a session cookie older than ``PERMANENT_SESSION_LIFETIME``: a login
    that took longer ended on "This login link is no longer valid", and ``check`` said
    nothing."""
    app = make_app(PERMANENT_SESSION_LIFETIME=lifetime, WECHAT_QR_STATE_TTL=600)
    deployment = deploy(app)
    if not warned:
        assert list(checks.check_session_lifetime(deployment)) == []
        return
    finding = only("warning", checks.check_session_lifetime, deployment)
    seconds = lifetime.total_seconds() if isinstance(lifetime, timedelta) else lifetime
    assert finding.what.startswith(
        f"PERMANENT_SESSION_LIFETIME is {seconds:g} seconds, less than WECHAT_QR_STATE_TTL "
        "(600 seconds)"), finding.what


# --- async receivers of the extension's signals --------------------------------------------


def test_an_async_receiver_without_flasks_async_extra_is_a_problem(
        site: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ``async def`` receiver runs through Flask's ``async`` extra (asgiref). Without it
    the signal's send raises, after its login was committed: a 500 for a person who is
    logged in, the site's later receivers not run, and ``check`` said nothing."""
    from flask_wechat_qr import signals

    async def welcome(sender: Flask, **extra: t.Any) -> None:
        return None

    def audit(sender: Flask, **extra: t.Any) -> None:
        return None

    with signals.login_succeeded.connected_to(welcome, sender=site), \
            signals.user_created.connected_to(audit, sender=site):
        healthy(deploy(site))  # asgiref is installed (the test extra)
        monkeypatch.setitem(sys.modules, "asgiref.sync", None)  # as if it were not
        deployment = deploy(site)
        [found] = run_checks(deployment).problems
        assert found in list(checks.check_async_receivers(deployment))
        assert "wechat-qr-login-succeeded" in found.what
        assert "user-created" not in found.what  # a plain function runs anyway
        assert 'pip install "flask[async]"' in found.fix
    healthy(deploy(site))  # no async receiver: nothing to run


# --- where a login without next ends ------------------------------------------------------


def post_login_warning(deployment: Deployment) -> Finding:
    finding = only("warning", checks.check_post_login_page, deployment)
    assert "WECHAT_QR_POST_LOGIN_URL" in finding.what and "next" in finding.fix
    return finding


def test_a_post_login_url_no_route_answers_is_a_warning(make_app: t.Callable[..., Flask]
                                                        ) -> None:
    """The default ``/`` on a site whose home is elsewhere: a 404 right after logging in."""
    app = make_app(home=False)
    app.add_url_rule("/home", "home", lambda: "home")
    with app.test_client() as client:  # what a login without next ends on
        assert client.get("/").status_code == 404
    finding = post_login_warning(deploy(app))
    assert finding.what.startswith("a login started without next (and linking or unlinking "
                                   "WeChat) ends at WECHAT_QR_POST_LOGIN_URL (/, / on this "
                                   "site), but no route of this app answers a GET there")
    assert finding.fix.startswith("set WECHAT_QR_POST_LOGIN_URL to the site's home page")
    healthy(deploy(make_app(home=False, WECHAT_QR_POST_LOGIN_URL="/home",
                            before_init=lambda app: app.add_url_rule("/home", "home",
                                                                     lambda: "home"))))


@pytest.mark.parametrize(("rule", "setting"), [
    ("/home", "/home"),
    ("/u/<name>", "/u/x"),
    ("/u/<int:number>", "/u/7?tab=me#top"),
    ("/home/", "/home"),  # the site's own redirect to the slash
    ("/中文", "/%E4%B8%AD%E6%96%87"),
])
def test_a_post_login_url_a_route_answers_is_fine(make_app: t.Callable[..., Flask], rule: str,
                                                 setting: str) -> None:
    app = make_app(home=False, WECHAT_QR_POST_LOGIN_URL=setting)
    app.add_url_rule(rule, "page", lambda **_: "page")
    healthy(deploy(app))


@pytest.mark.parametrize("setting", ["/u/x/y", "/u/seven"])
def test_a_post_login_url_a_route_does_not_match_is_a_warning(
        make_app: t.Callable[..., Flask], setting: str) -> None:
    app = make_app(WECHAT_QR_POST_LOGIN_URL=setting)
    app.add_url_rule("/u/<int:number>", "page", lambda **_: "page")
    assert f"({setting}, {setting} on this site)" in post_login_warning(deploy(app)).what


def test_a_post_login_url_of_business_callback_logins_only_is_not_checked(
        make_app: t.Callable[..., Flask]) -> None:
    """Every connection hands its logins to a business callback URL (an ID token), not to
    the site's own session: no login ends at the setting."""
    app = make_app(home=False, WECHAT_QR_CALLBACK_URL="https://biz.example.com/wechat/done",
                   **ID_TOKENS)
    assert deploy(app).post_login_landing is not None
    assert list(checks.check_post_login_page(deploy(app))) == []
    two = make_app(home=False, WECHAT_QR_CONNECTIONS=[
        {"connection": "wechat", "app_id": APP_ID, "app_secret": APP_SECRET,
         "callback_url": "https://biz.example.com/wechat/done"},
        {"connection": "shop", "app_id": APP_ID, "app_secret": APP_SECRET}], **ID_TOKENS)
    assert len(list(checks.check_post_login_page(deploy(two)))) == 1


def test_a_post_only_route_at_the_post_login_url_is_a_warning(
        make_app: t.Callable[..., Flask]) -> None:
    app = make_app(home=False)
    app.add_url_rule("/", "search", lambda: "", methods=["POST"])
    post_login_warning(deploy(app))


SERVED_AT_APP = {"SERVER_NAME": "www.example.com", "PREFERRED_URL_SCHEME": "https",
                 "APPLICATION_ROOT": "/app"}


@pytest.mark.parametrize(("base_url", "config", "setting", "path"), [
    (None, SERVED_AT_APP, "/", "/app/"),
    (None, SERVED_AT_APP, "/app/away", "/app/away"),
    (None, {"APPLICATION_ROOT": "/app"}, "/away", "/app/away"),
    (f"{PUBLIC}/site", {}, "/away", "/site/away"),
    (f"{PUBLIC}/site", {}, "/site/away", "/site/away"),
])
def test_a_post_login_url_under_the_mount_point(
        make_app: t.Callable[..., Flask], base_url: str | None, config: dict[str, t.Any],
        setting: str, path: str) -> None:
    """The setting may be written with or without the mount point (the login's redirect
    adds it); the app's routes are matched under it. (Without SERVER_NAME or --base-url,
    APPLICATION_ROOT is the mount point, as in Flask's own test requests.)"""
    app = make_app(home=False, WECHAT_QR_POST_LOGIN_URL=setting, **config)
    app.add_url_rule("/home", "home", lambda: "home")
    [finding] = checks.check_post_login_page(deploy(app, base_url=base_url))
    assert f"({setting}, {path} on this site)" in finding.what
    for written in ("/home", f"{path.rpartition('/')[0]}/home"):
        app = make_app(home=False, WECHAT_QR_POST_LOGIN_URL=written, **config)
        app.add_url_rule("/home", "home", lambda: "home")
        assert list(checks.check_post_login_page(deploy(app, base_url=base_url))) == []


@pytest.mark.parametrize("base_url", [None, "https://example.com", "https://www.example.com"])
@pytest.mark.parametrize(("home_subdomain", "warned"), [("www", False), ("shop", True)])
def test_a_post_login_url_is_matched_on_the_logins_subdomain(
        make_app: t.Callable[..., Flask], home_subdomain: str, warned: bool,
        base_url: str | None) -> None:
    """The login's routes on ``www.`` (``url_map.default_subdomain``): the redirect after
    it stays there, and a home page of the ``shop.`` subdomain's blueprint is not there."""
    from flask import Blueprint

    def www(app: Flask) -> None:
        app.subdomain_matching = True
        app.url_map.default_subdomain = "www"

    app = make_app(home=False, SERVER_NAME="example.com", PREFERRED_URL_SCHEME="https",
                   before_init=www)
    pages = Blueprint("pages", __name__, subdomain=home_subdomain)
    pages.add_url_rule("/", "home", lambda: "home")
    app.register_blueprint(pages)
    deployment = deploy(app, base_url)
    assert deployment.urls.redirect_uris["wechat"].endswith("www.example.com/auth/wechat/callback")
    found = list(checks.check_post_login_page(deployment))
    assert len(found) == warned, found


@pytest.mark.parametrize(("doc", "answer"), [
    ("/", "Flask-RESTX's Swagger UI"),
    ("/docs", "Flask-RESTX's API root"),
])
def test_a_post_login_url_flask_restx_answers_is_a_warning(
        make_app: t.Callable[..., Flask], doc: str, answer: str) -> None:
    """An API-first site: ``Api(app)`` claims ``/``, its Swagger UI (``doc="/"``, the
    default) or its API root (a 404 in JSON)."""
    from flask_restx import Api

    app = make_app(home=False)
    Api(app, doc=doc)
    finding = post_login_warning(deploy(app))
    assert f"but {answer}" in finding.what and "an API's page" in finding.what


def test_a_site_home_before_flask_restx_is_fine(make_app: t.Callable[..., Flask]) -> None:
    """The site's own ``/``, registered before ``Api(app)``, answers ``/``; an ``Api`` on a
    blueprint under ``/api`` claims only that."""
    from flask import Blueprint
    from flask_restx import Api

    app = make_app()
    Api(app)
    blueprint = Blueprint("api", __name__, url_prefix="/api")
    Api(blueprint)
    app.register_blueprint(blueprint)
    healthy(deploy(app))


@pytest.mark.parametrize(("home_host", "warned"), [("www.example.com", False),
                                                   ("shop.example.com", True)])
def test_a_post_login_url_is_matched_on_the_logins_host(
        make_app: t.Callable[..., Flask], home_host: str, warned: bool) -> None:
    """Host matching, every rule of the site on its host (the site's ``url_rule_class``, as
    site_routes' tests): the home page of another host is not where the login ends."""
    from werkzeug.routing import Rule

    class HostRule(Rule):
        def __init__(self, *args: t.Any, host: str | None = None, **kw: t.Any) -> None:
            super().__init__(*args, host=host or "www.example.com", **kw)

    def on_www(app: Flask) -> None:
        app.url_map.host_matching = True
        app.url_rule_class = HostRule

    app = make_app(home=False, before_init=on_www)
    app.add_url_rule("/", "home", lambda: "home", host=home_host)
    found = list(checks.check_post_login_page(deploy(app)))
    assert len(found) == warned, found
    # at a host the callback is not on (no --base-url, no SERVER_NAME): no telling
    assert deploy(app, base_url=None).post_login_landing is None
