"""The Sphinx documentation builds without a single warning and stays true to the code: every
setting with its default, every public name, hook, signal, template, route and command, and
the examples that can run do run (the sandbox test helper, the ID token receiver, the output
of ``flask wechat-qr check``). The docs are the one home of every topic: the README links
into them, only to pages that exist."""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import runpy
import secrets
import subprocess
import sys
import textwrap
import time
import types
import typing as t
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import blinker
import click
import pytest
import requests
from support import (
    ROOT,
    LiveServer,
    find_tags,
    make_test_app,
    scan_and_allow,
    set_journal_mode,
)

import flask_wechat_qr
from flask_wechat_qr import AccountAdapter, signals
from flask_wechat_qr import settings as settings_module
from flask_wechat_qr.cli import cli
from flask_wechat_qr.settings import (
    CONNECTION_DEFAULTS,
    GLOBAL_DEFAULTS,
    PREFIX,
    SETTINGS,
    TOPICS,
)

DOCS = ROOT / "docs"
TEMPLATES = ROOT / "flask_wechat_qr" / "templates" / "wechat_qr"


def page(name: str) -> str:
    return (DOCS / f"{name}.rst").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str],
                                                              Path]:
    """One full HTML build (no cache), warnings as errors; what it printed, and where."""
    out = tmp_path_factory.mktemp("docs-html")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
         "-d", str(out / ".doctrees"), str(DOCS), str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    return result, out


def test_docs_build_without_warnings(build: tuple[subprocess.CompletedProcess[str], Path]
                                     ) -> None:
    result, out = build
    assert result.returncode == 0, result.stderr + result.stdout
    # -q: Sphinx prints only warnings and errors; with -W any of them fails the build, and
    # anything else on stderr (a Python warning while importing for autodoc) fails here.
    assert result.stderr.strip() == "", result.stderr
    assert (out / "index.html").is_file()


# --- configuration.rst: every setting, with its default, from the settings table ------


CONF = runpy.run_path(str(DOCS / "conf.py"))


def _setting_blocks() -> dict[str, str]:
    """``.. setting:: KEY`` -> the directive's body, as the docs generate them."""
    text = "\n".join(CONF["settings_reference"](topic) for topic in TOPICS)
    parts = re.split(r"^\.\. setting:: (\S+)\n", text, flags=re.M)
    blocks = {}
    for key, body in zip(parts[1::2], parts[2::2], strict=True):
        # The body is the indented part; it ends at the first unindented line.
        lines = []
        for line in body.splitlines():
            if line and not line.startswith(" "):
                break
            lines.append(line)
        blocks[key] = "\n".join(lines)
    return blocks


ALL_SETTINGS = sorted({**GLOBAL_DEFAULTS, **CONNECTION_DEFAULTS})


@pytest.mark.parametrize("name", ALL_SETTINGS)
def test_every_setting_is_documented_with_its_default(name: str) -> None:
    key = PREFIX + name.upper()
    blocks = _setting_blocks()
    assert key in blocks, f"{key} is in no topic of the generated reference"
    match = re.search(r":Default: ``(.+?)``", blocks[key])
    assert match, f"{key}: no ':Default: ``...``' line in the generated reference"
    default = {**GLOBAL_DEFAULTS, **CONNECTION_DEFAULTS}[name]
    assert ast.literal_eval(match.group(1)) == default, (
        f"{key}: docs say the default is {match.group(1)}, the code says {default!r}")
    doc = blocks[key].split(":Default:")[1].split("\n\n", 1)[1].strip()
    assert doc == next(row.doc for row in SETTINGS if row.key == key)


@pytest.mark.parametrize("name", sorted(CONNECTION_DEFAULTS))
def test_per_connection_settings_name_their_dict_key(name: str) -> None:
    block = _setting_blocks()[PREFIX + name.upper()]
    assert f":In a connection dict: ``{name}``" in block


def test_global_settings_have_no_connection_dict_key() -> None:
    blocks = _setting_blocks()
    for name in GLOBAL_DEFAULTS:
        assert ":In a connection dict:" not in blocks[PREFIX + name.upper()], name


def test_the_connection_section_lists_only_per_connection_settings() -> None:
    """The "connection" section says its keys go in each ``WECHAT_QR_CONNECTIONS`` dict:
    ``WECHAT_QR_APP_ID_CHECK``, app-wide, was listed there, and a dict with it was refused
    (a helper's docs walk, session 35)."""
    in_section = {row.name for row in SETTINGS if row.topic == "connection"}
    assert in_section <= set(CONNECTION_DEFAULTS), sorted(in_section - set(CONNECTION_DEFAULTS))


def test_the_configuration_page_generates_every_topic_and_writes_no_default() -> None:
    text = page("configuration")
    assert re.findall(r"^\.\. wechat-qr-settings:: (\S+)$", text, re.M) == list(TOPICS)
    # Keys and defaults come from the table only; prose refers to keys with :setting:.
    assert ".. setting::" not in text and ":Default:" not in text


def test_the_built_page_declares_every_setting(
    build: tuple[subprocess.CompletedProcess[str], Path]
) -> None:
    html = (build[1] / "configuration.html").read_text(encoding="utf-8")
    for row in SETTINGS:
        assert f'id="setting-{row.key}"' in html, row.key


def test_a_setting_without_a_doc_fails_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    undocumented = dataclasses.replace(SETTINGS[0], doc=" ")
    monkeypatch.setattr(settings_module, "SETTINGS", (undocumented, *SETTINGS[1:]))
    with pytest.raises(ValueError, match=f"{undocumented.key} has no doc"):
        CONF["settings_reference"](undocumented.topic)


# --- api.rst: every public name ------------------------------------------------------


def _anchors(html: str) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', html))


@pytest.mark.parametrize("name", flask_wechat_qr.__all__)
def test_every_public_name_is_in_the_api_reference(
    build: tuple[subprocess.CompletedProcess[str], Path], name: str
) -> None:
    anchors = _anchors((build[1] / "api.html").read_text(encoding="utf-8"))
    obj = getattr(flask_wechat_qr, name)
    if isinstance(obj, types.ModuleType):
        wanted = {f"module-{obj.__name__}"}
    else:
        # Documented where users import it from, or in the module that defines it.
        wanted = {f"flask_wechat_qr.{name}", f"{obj.__module__}.{name}"}
    assert anchors & wanted, f"flask_wechat_qr.{name} is not in docs/api.rst"


SIGNALS = sorted(name for name, value in vars(signals).items()
                 if isinstance(value, blinker.base.NamedSignal))


@pytest.mark.parametrize("name", SIGNALS)
def test_every_signal_is_in_the_api_reference_and_the_signals_page(
    build: tuple[subprocess.CompletedProcess[str], Path], name: str
) -> None:
    anchors = _anchors((build[1] / "api.html").read_text(encoding="utf-8"))
    assert f"flask_wechat_qr.signals.{name}" in anchors, f"{name} is not in docs/api.rst"
    text = page("signals")
    section = re.search(rf"^``{name}``\n-+\n(.*?)(?=^``\w+``\n-+\n|\Z)", text, re.M | re.S)
    assert section, f"docs/signals.rst has no section for {name}"
    assert "Arguments:" in section.group(1), f"{name}: no arguments in docs/signals.rst"
    assert f"signals.{name}.connect" in section.group(1), f"{name}: no example receiver"


# --- the other pages: hooks, templates, routes, commands -----------------------------


HOOKS = sorted(name for name, value in vars(AccountAdapter).items()
               if callable(value) and not name.startswith("_"))


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_has_a_section_with_an_example(name: str) -> None:
    text = page("hooks")
    section = re.search(rf"^``{name}\(.*?``\n~+\n(.*?)(?=^``\w+\(.*?``\n~+\n|\Z)", text,
                        re.M | re.S)
    assert section, f"docs/hooks.rst has no section for AccountAdapter.{name}"
    assert f"def {name}(" in section.group(1), f"{name}: no example in docs/hooks.rst"


def test_every_page_template_is_documented() -> None:
    text = page("templates")
    templates = sorted(TEMPLATES.glob("*.html"))
    assert len(templates) >= 6
    for path in templates:
        assert f"``wechat_qr/{path.name}``" in text, f"wechat_qr/{path.name}"


def _commands(group: click.Group, prefix: str) -> t.Iterator[str]:
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            yield from _commands(command, path)
        else:
            yield path


def test_every_command_is_documented() -> None:
    text = page("cli")
    commands = list(_commands(cli, "flask wechat-qr"))
    assert {"flask wechat-qr check", "flask wechat-qr sandbox"} <= set(commands)
    for command in commands:
        assert f"``{command}" in text, f"{command} is not in docs/cli.rst"


def test_every_route_is_in_the_routes_table(tmp_path: Path) -> None:
    app = make_test_app(tmp_path)
    text = page("login-flow")
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()
                 if rule.endpoint.startswith("wechat_qr.")}
    assert endpoints
    for endpoint in sorted(endpoints):
        assert f"``{endpoint}``" in text, f"{endpoint} is not in docs/login-flow.rst"


def test_the_routes_table_gives_each_routes_url_and_method(tmp_path: Path) -> None:
    """The URL (at the default prefix) and the method each row states are the rule's."""
    app = make_test_app(tmp_path)
    rules = {rule.endpoint: rule for rule in app.url_map.iter_rules()}
    rows = re.findall(r"^ *\* - ``(wechat_qr\.\w+)``\n +- ``(?:(POST) )?(/[^`]*)``",
                      page("login-flow"), re.M)
    assert {endpoint for endpoint, _, _ in rows} == {
        endpoint for endpoint in rules if endpoint.startswith("wechat_qr.")}
    for endpoint, post, url in rows:
        rule = rules[endpoint]
        assert rule.rule == url, f"{endpoint}: the table says {url}, the app {rule.rule}"
        methods = (rule.methods or set()) - {"HEAD", "OPTIONS"}
        assert methods == {"POST"} if post else "GET" in methods, (endpoint, methods)


def _documented_texts() -> str:
    return "\n".join([*(path.read_text(encoding="utf-8") for path in DOCS.glob("*.rst")),
                      (ROOT / "README.rst").read_text(encoding="utf-8")])


def test_every_setting_the_docs_name_exists() -> None:
    """A ``WECHAT_QR_*`` name in the docs is a setting (not a renamed or made-up one), but
    for the test suite's own variables and the typo the configuration page warns about."""
    known = {row.key for row in SETTINGS} | {"WECHAT_QR_APPID"}
    named = set(re.findall(r"\bWECHAT_QR_[A-Z0-9_]*[A-Z0-9]", _documented_texts()))
    unknown = {name for name in named - known if not name.startswith("WECHAT_QR_TEST")}
    assert not unknown, f"the docs name settings that do not exist: {sorted(unknown)}"


def test_every_route_of_the_example_site_is_documented(
        make_site: t.Callable[..., t.Any]) -> None:
    """The example site's own routes (its business front end's included) are contract the
    docs describe: each URL is named in them."""
    app = make_site(WECHAT_QR_SANDBOX=True)
    text = _documented_texts()
    urls = sorted(rule.rule for rule in app.url_map.iter_rules()
                  if rule.endpoint.split(".")[0] in ("site", "business") and rule.rule != "/")
    assert "/api/me" in urls and "/business/" in urls
    missing = [url for url in urls if not re.search(rf"``(?:[A-Z]+ )?{re.escape(url)}[`?]",
                                                    text)]
    assert not missing, f"the example site's routes missing from the docs: {missing}"


# --- the examples --------------------------------------------------------------------


def _literal_blocks(page_name: str) -> t.Iterator[str]:
    """The ``.. code-block:: text`` blocks of a page, dedented."""
    lines = page(page_name).splitlines()
    for index, line in enumerate(lines):
        if line.strip() != ".. code-block:: text":
            continue
        body = []
        for following in lines[index + 1:]:
            if following.strip() and not following.startswith(" "):
                break
            body.append(following)
        yield textwrap.dedent("\n".join(body)).strip("\n")


def _python_blocks() -> t.Iterator[tuple[str, str]]:
    for path in sorted(DOCS.glob("*.rst")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for index, line in enumerate(lines):
            if line.strip() != ".. code-block:: python":
                continue
            indent = len(line) - len(line.lstrip())
            body = []
            for following in lines[index + 1:]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                body.append(following)
            yield f"{path.name}:{index + 1}", textwrap.dedent("\n".join(body)).strip("\n")


PYTHON_BLOCKS = list(_python_blocks())


@pytest.mark.parametrize(("where", "code"), PYTHON_BLOCKS, ids=[w for w, _ in PYTHON_BLOCKS])
def test_python_examples_are_valid_python(where: str, code: str) -> None:
    ast.parse(code, filename=where)


def _example(page_name: str, marker: str) -> str:
    """The Python block of a page that contains ``marker``."""
    blocks = [code for where, code in PYTHON_BLOCKS
              if where.startswith(page_name + ".rst:") and marker in code]
    assert len(blocks) == 1, f"{page_name}.rst: {len(blocks)} blocks with {marker!r}"
    return blocks[0]


def test_the_sandbox_test_helper_logs_in(tmp_path: Path) -> None:
    namespace: dict[str, t.Any] = {}
    exec(_example("sandbox", "def log_in_with_sandbox"), namespace)
    app = make_test_app(tmp_path, WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None,
                        WECHAT_QR_APP_SECRET=None)
    with app.test_client() as client:
        page_ = namespace["log_in_with_sandbox"](client, person="zhangsan")
        assert page_.status_code == 200
        assert "logged in as" in page_.text and "张三🐼" in page_.text
    namespace["test_wechat_login"](app)  # the docs' own test passes
    # ... and fails where nobody is logged in: under ask binding the login ends on the bind
    # page, which greets 张三🐼 too (the docs' test checked only the name, and passed).
    (tmp_path / "ask").mkdir()
    asking = make_test_app(tmp_path / "ask", WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None,
                           WECHAT_QR_APP_SECRET=None, WECHAT_QR_ASSOCIATION="ask_binding")
    with pytest.raises(AssertionError):
        namespace["test_wechat_login"](asking)


@pytest.mark.parametrize("site_ahead", [0, 30])
def test_the_id_token_receiver_verifies_a_real_login(tmp_path: Path, site_ahead: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver of docs/id-token.rst, run against a sandbox login of a connection with a
    callback URL: state and nonce out, form POST back, signature and claims checked. Also
    with the login site's clock ``site_ahead`` seconds ahead of the receiver's: its ``iat``
    is then in the receiver's future, which joserfc refuses without a leeway."""
    from joserfc.jwk import RSAKey

    issuer = "https://www.example.com"  # the docs' LOGIN_SITE
    site = make_test_app(
        tmp_path, WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None,
        WECHAT_QR_CALLBACK_URL="https://app.example.com/wechat/done",
        WECHAT_QR_ID_TOKEN_PRIVATE_KEY=RSAKey.generate_key(2048).as_pem(private=True).decode(),
        WECHAT_QR_ID_TOKEN_ISSUER=issuer,
    )
    browser = site.test_client()

    def fetch(url: str, timeout: float) -> t.Any:  # requests.get, answered by the site
        answer = browser.get(urlsplit(url).path)
        return types.SimpleNamespace(json=lambda: answer.json,
                                     raise_for_status=lambda: None)

    namespace: dict[str, t.Any] = {"__name__": "receiver"}
    exec(_example("id-token", "def wechat_done"), namespace)
    namespace["requests"] = types.SimpleNamespace(get=fetch)
    seen: set[str] = set()
    remembered: list[bool] = []

    def remember_jti(jti: str, until: int) -> bool:
        remembered.append(jti not in seen)
        seen.add(jti)
        return remembered[-1]

    namespace["remember_jti"] = remember_jti
    receiver = namespace["app"].test_client()

    start = urlsplit(receiver.get("/login").headers["Location"])
    assert f"{start.scheme}://{start.netloc}" == issuer
    with monkeypatch.context() as site_clock:  # the login site's clock, not the receiver's
        real_time = time.time
        site_clock.setattr(time, "time", lambda: real_time() + site_ahead)
        qr_page = browser.get(f"{start.path}?{start.query}", follow_redirects=True)
        uuid = re.search(r"/connect/confirm/([\w-]+)", qr_page.text).group(1)
        browser.post(f"/wechat-sandbox/connect/confirm/{uuid}",
                     data={"action": "allow", "person": "zhangsan"})
        answer = browser.get("/wechat-sandbox/connect/l/qrconnect",
                             query_string={"uuid": uuid})
        form_page = browser.get(answer.json["redirect"])
    html = form_page.get_data(as_text=True)
    form = find_tags(html, "form")[0]
    assert form["method"] == "post"
    fields = {tag["name"]: tag["value"] for tag in find_tags(html, "input")
              if tag.get("type") == "hidden"}
    assert set(fields) == {"id_token", "state"}

    done = receiver.post(urlsplit(t.cast(str, form["action"])).path, data=fields)
    assert done.status_code == 302, done.get_data(as_text=True)
    with receiver.session_transaction() as session:
        user_id = session["user_id"]
    with site.app_context():
        assert site.db.session.get(site.User, int(user_id)).nickname == "张三🐼"
    # The same post again in this browser (a reload, Back to WeChat's consent sheet): on,
    # as logged in already (it was a 400: a helper's phone hunt, session 34).
    again = receiver.post("/wechat/done", data=fields)
    assert again.status_code == 302 and again.headers["Location"] == "/"
    assert remembered == [True, False]
    # The same token in another browser, even with the right state and nonce: a replay.
    other = namespace["app"].test_client()
    with other.session_transaction() as session:
        session["wechat_state"] = fields["state"]
        session["wechat_nonce"] = parse_qs(start.query)["nonce"][0]
    assert other.post("/wechat/done", data=fields).status_code == 400
    assert remembered == [True, False, False]  # refused as a replay, not for another reason
    with other.session_transaction() as session:
        assert "user_id" not in session
    # A token signed with the site's key but without a jti (no token of the extension's, a
    # key holder's): refused as the others, not a KeyError's 500 (a red-team helper).
    from joserfc import jwt

    key = RSAKey.import_key(site.config["WECHAT_QR_ID_TOKEN_PRIVATE_KEY"])
    signed = jwt.decode(fields["id_token"], key)
    claims = {name: value for name, value in signed.claims.items() if name != "jti"}
    unnamed = jwt.encode({"alg": "RS256", "kid": signed.header["kid"]}, claims, key)
    third = namespace["app"].test_client()
    with third.session_transaction() as session:
        session["wechat_state"] = fields["state"]
        session["wechat_nonce"] = parse_qs(start.query)["nonce"][0]
    assert third.post("/wechat/done", data={**fields, "id_token": unnamed}).status_code == 400
    assert remembered == [True, False, False]  # refused before it was remembered


def test_the_id_token_receiver_in_the_login_sites_own_app(tmp_path: Path) -> None:
    """docs/id-token.rst's receiver as a route of the login site's own app (a JSON API with
    its business callback URL): the docs' receiver keeps state and nonce in the session the
    WeChat login renews, so there every login ended on its 400; the variant the page gives
    for this case, with a cookie of its own, logs in."""
    from flask import Flask
    from joserfc.jwk import RSAKey

    issuer = "https://www.example.com"  # the docs' LOGIN_SITE
    key = RSAKey.generate_key(2048).as_pem(private=True).decode()

    def site_with_receiver(folder: str, mount: t.Callable[[Flask, dict[str, t.Any]], None]
                           ) -> Flask:
        (tmp_path / folder).mkdir()
        namespace: dict[str, t.Any] = {"__name__": "receiver"}
        exec(_example("id-token", "# business backend"), namespace)
        site = make_test_app(
            tmp_path / folder, WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None,
            WECHAT_QR_APP_SECRET=None, WECHAT_QR_ID_TOKEN_PRIVATE_KEY=key,
            WECHAT_QR_CALLBACK_URL=issuer + "/wechat/done", WECHAT_QR_ID_TOKEN_ISSUER=issuer,
            before_init=lambda app: mount(app, namespace))
        with site.test_client() as keys:  # the JWKS, fetched before any login
            jwks = keys.get("/auth/.well-known/jwks.json").json
        namespace["requests"] = types.SimpleNamespace(get=lambda url, timeout: (
            types.SimpleNamespace(json=lambda: jwks, raise_for_status=lambda: None)))
        seen: set[str] = set()
        namespace["remember_jti"] = lambda jti, until: not (jti in seen or seen.add(jti))
        return site

    def log_in(site: Flask, start: str) -> t.Any:
        browser = site.test_client()
        qr_page = browser.get(issuer + start, follow_redirects=True)
        uuid = re.search(r"/connect/confirm/([\w-]+)", qr_page.text).group(1)
        browser.post(f"{issuer}/wechat-sandbox/connect/confirm/{uuid}",
                     data={"action": "allow", "person": "zhangsan"})
        answer = browser.get(f"{issuer}/wechat-sandbox/connect/l/qrconnect",
                             query_string={"uuid": uuid})
        html = browser.get(answer.json["redirect"]).get_data(as_text=True)
        form = find_tags(html, "form")[0]
        fields = {tag["name"]: tag["value"] for tag in find_tags(html, "input")
                  if tag.get("type") == "hidden"}
        assert form["action"] == issuer + "/wechat/done" and set(fields) == {"id_token", "state"}
        done = browser.post(t.cast(str, form["action"]), data=fields)
        home = browser.get(issuer + "/").get_data(as_text=True)
        reposted.append(browser.post(t.cast(str, form["action"]), data=fields))
        return done, home

    reposted: list[t.Any] = []  # each login's form posted again (a reload, Back)

    def in_session(app: Flask, namespace: dict[str, t.Any]) -> None:  # the docs' first one
        app.add_url_rule("/login", view_func=namespace["login"])
        app.add_url_rule("/wechat/done", view_func=namespace["wechat_done"], methods=["POST"])

    done, _ = log_in(site_with_receiver("session", in_session), "/login")
    assert done.status_code == 400  # the state went with the session the login renewed

    def own_cookie(app: Flask, namespace: dict[str, t.Any]) -> None:
        namespace["app"] = app
        exec(_example("id-token", "def start_wechat_login"), namespace)

    done, home = log_in(site_with_receiver("cookie", own_cookie), "/wechat/start")
    assert done.status_code == 302, done.get_data(as_text=True)
    assert done.headers["Location"] == "/"
    assert "logged in as" in home and "张三🐼" in home
    # Posted again in the same browser: on, as logged in already (it was a 400).
    assert reposted[-1].status_code == 302 and reposted[-1].headers["Location"] == "/"


def test_the_pyjwt_verify_of_the_docs_verifies_a_real_login(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/id-token.rst's ``verify`` with PyJWT (in the ``test`` extra, so never skipped),
    against a sandbox login on a real socket (``PyJWKClient`` fetches the keys over HTTP) of
    a login site whose clock is 30 s ahead: it accepts the token, and refuses it with
    another nonce."""
    import jwt
    from joserfc.jwk import RSAKey

    assert hasattr(jwt, "PyJWKClient"), "the module named jwt is not PyJWT"

    site = make_test_app(
        tmp_path, WECHAT_QR_SANDBOX=True, WECHAT_QR_APP_ID=None, WECHAT_QR_APP_SECRET=None,
        WECHAT_QR_CALLBACK_URL="https://app.example.com/wechat/done",
        WECHAT_QR_ID_TOKEN_PRIVATE_KEY=RSAKey.generate_key(2048).as_pem(private=True).decode(),
    )
    with LiveServer(site) as live, requests.Session() as browser:
        with monkeypatch.context() as site_clock:  # the login site's clock, not PyJWT's
            real_time = time.time
            site_clock.setattr(time, "time", lambda: real_time() + 30)
            start = browser.get(live.url + "/auth/wechat/login", timeout=5,
                                params={"state": "s-1", "nonce": "n-1"}, allow_redirects=False)
            poll = scan_and_allow(browser, live.url, start.headers["Location"], "zhangsan")
            form_page = browser.get(urljoin(live.url, poll["redirect"]), timeout=5)
        fields = {tag["name"]: tag["value"] for tag in find_tags(form_page.text, "input")}
        namespace: dict[str, t.Any] = {"LOGIN_SITE": live.url, "CONNECTION": "wechat"}
        exec(_example("id-token", "jwt.PyJWKClient"), namespace)
        claims = namespace["verify"](fields["id_token"], "n-1")
        assert claims["iss"] == live.url
        assert claims["name"] == "张三🐼"
        with pytest.raises(jwt.InvalidTokenError, match="nonce"):
            namespace["verify"](fields["id_token"], "n-2")


def test_the_check_output_shown_is_what_check_prints(tmp_path: Path) -> None:
    """docs/cli.rst's example run of ``flask wechat-qr check``, run for real."""
    blocks = [block for block in _literal_blocks("cli")
              if block.startswith("$ flask --app yoursite wechat-qr check")]
    assert len(blocks) == 1, "docs/cli.rst: no example run of flask wechat-qr check"
    command, *shown = blocks[0].splitlines()
    app = make_test_app(tmp_path, TESTING=False, SECRET_KEY="k" * 64 + "-docs-example",
                        WECHAT_QR_APP_ID="wx0123456789abcdef",
                        WECHAT_QR_APP_SECRET="0f" + "0123456789abcdef" + "0123456789ab" + "f0")
    app.name = "yoursite"
    set_journal_mode(app, "wal")  # its SQLite file as a production site's (sqlite-wal)
    result = app.test_cli_runner().invoke(args=command.split()[4:])
    assert result.exit_code == 1, result.output  # the example finds one problem
    assert result.output.rstrip("\n").splitlines() == shown


def test_the_quick_starts_configuration_error_is_what_init_app_raises(tmp_path: Path) -> None:
    """docs/quickstart.rst's example of a wrong setting stopping the app, for real: the
    setting it names, and the message word for word."""
    found = re.search(r'\(``(WECHAT_QR_\w+)=(".*?")``\)::\n\n((?:    .*\n?)+)',
                      page("quickstart"))
    assert found, "docs/quickstart.rst: no example of a ConfigurationError"
    key, value, shown = found.group(1), ast.literal_eval(found.group(2)), found.group(3)
    with pytest.raises(flask_wechat_qr.errors.ConfigurationError) as info:
        make_test_app(tmp_path, **{key: value})
    assert " ".join(shown.split()) == (
        f"flask_wechat_qr.errors.ConfigurationError: {info.value}")


def test_the_quick_starts_site_runs_as_printed(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/quickstart.rst's ``app.py`` and its two pages, run as printed on the sandbox
    (``WECHAT_QR_SANDBOX=true`` in the environment, as the page runs it): the home page's
    button logs in and comes back greeted; the account page lists the WeChat account with
    an Unlink form the extension takes (and refuses, as the page says: that WeChat is the
    user's only way in); a site user with none gets "Link WeChat", which links."""
    monkeypatch.chdir(tmp_path)  # app.py's sqlite:///site.db, in ./instance
    for name in [name for name in os.environ if name.startswith("WECHAT_QR_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("WECHAT_QR_SANDBOX", "true")
    monkeypatch.setenv("SECRET_KEY", secrets.token_hex(32))
    site: dict[str, t.Any] = {"__name__": "quickstart_site"}
    exec(_example("quickstart", "config_from_env(os.environ)"), site)
    exec(_example("quickstart", "def account("), site)
    helper: dict[str, t.Any] = {}
    exec(_example("sandbox", "def log_in_with_sandbox"), helper)
    app = site["app"]
    assert (tmp_path / "instance" / "site.db").is_file()

    browser = app.test_client()
    button = [a for a in find_tags(browser.get("/").text, "a")
              if "wechat-qr-button" in (a.get("class") or "")]
    assert [a["href"] for a in button] == ["/auth/wechat/login?next=/"]
    home = helper["log_in_with_sandbox"](browser, person="lisi")
    assert home.request.path == "/" and "Hello, 李四." in home.text
    account = browser.get("/account").text
    assert "WeChat: 李四, linked" in account and "Link WeChat" not in account
    fields = {tag["name"]: tag["value"] for tag in find_tags(account, "input")}
    [form] = find_tags(account, "form")
    refused = browser.post(t.cast(str, form["action"]), data=fields)
    assert refused.status_code == 409 and "your only way to log in" in refused.text

    with app.app_context():
        user = site["User"](nickname="Alice")  # one of the site's own accounts
        site["db"].session.add(user)
        site["db"].session.commit()
        user_id = user.id
    alice = app.test_client()
    with alice.session_transaction() as session:
        session["_user_id"] = str(user_id)  # logged in, as the site's own login does
    [link] = [a["href"] for a in find_tags(alice.get("/account").text, "a")]
    assert link == "/auth/wechat/link?next=/account"
    qr_page = alice.get(link, follow_redirects=True)
    uuid = re.search(r"/connect/confirm/([\w-]+)", qr_page.text).group(1)  # type: ignore[union-attr]
    alice.post(f"/wechat-sandbox/connect/confirm/{uuid}",
               data={"action": "allow", "person": "zhangsan"})
    answer = alice.get("/wechat-sandbox/connect/l/qrconnect", query_string={"uuid": uuid})
    linked = alice.get(answer.json["redirect"], follow_redirects=True)
    assert linked.request.path == "/account" and "WeChat: 张三🐼, linked" in linked.text


def test_conf_py_uses_no_network_extension() -> None:
    """The build needs no network: Sphinx's own extensions only (no intersphinx)."""
    source = (DOCS / "conf.py").read_text(encoding="utf-8")
    extensions = ast.literal_eval(
        re.search(r"^extensions = (\[.*?\])", source, re.M | re.S).group(1))
    assert all(name.startswith("sphinx.ext.") for name in extensions), extensions
    assert "sphinx.ext.intersphinx" not in extensions


# --- the README: the front door leads into these pages -------------------------------


def test_the_readme_links_only_to_docs_pages_that_exist(
    build: tuple[subprocess.CompletedProcess[str], Path]
) -> None:
    """Every ``docs/<page>.rst`` the README links to is a page of the built docs."""
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    linked = re.findall(r"<docs/([^>#]+)\.rst(?:#[^>]*)?>`__?", readme)
    assert linked, "README.rst links to no docs page"
    missing = sorted({name for name in linked if not (build[1] / f"{name}.html").is_file()})
    assert missing == [], f"README.rst links to docs pages that do not exist: {missing}"
    elsewhere = re.findall(r"<(docs/[^>]*)>`__?", readme)
    assert all(re.fullmatch(r"docs/[\w-]+\.rst(#[\w-]+)?", uri) for uri in elsewhere), (
        f"README.rst links into docs/ other than to a page: {elsewhere}")
