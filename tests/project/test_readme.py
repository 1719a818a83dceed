"""The README keeps what a front door promises: the two quick-start lines exactly (CI runs
the test line), an integration example that works, links into pages that exist, valid
reStructuredText (PyPI refuses to render a README with errors), and a short length. Every
other fact lives once, in docs/, which tests/test_docs.py checks against the code."""

from __future__ import annotations

import io
import re
import secrets
import typing as t
from pathlib import Path

import pytest
from flask import render_template_string
from support import ROOT, dispose_engines

README = (ROOT / "README.rst").read_text(encoding="utf-8")

#: Made and entered first: Debian and Ubuntu refuse ``pip install`` outside a virtual
#: environment (PEP 668), and have ``python3`` but no ``python`` until one is active.
VENV_LINE = "python3 -m venv .venv && . .venv/bin/activate"
QUICK_START = [
    "python -m pip install -e . && flask --app example_app run --debug",
    "python -m pip install -e '.[test]' && python -m pytest",
]


def _doctree() -> t.Any:
    from docutils import core  # in the test extra: these checks always run

    return core.publish_doctree(README, settings_overrides={
        "report_level": 5, "halt_level": 5, "syntax_highlight": "none"})


def _section(title: str) -> t.Any:
    from docutils import nodes

    for section in _doctree().findall(nodes.section):
        if section[0].astext() == title:
            return section
    raise AssertionError(f"README.rst has no {title!r} section")


def _literal_blocks(node: t.Any, language: str | None = None) -> list[str]:
    """The literal blocks under ``node``; only ``.. code-block:: <language>`` ones if given."""
    from docutils import nodes

    return [block.astext() for block in node.findall(nodes.literal_block)
            if language is None or language in block.get("classes", [])]


def test_quick_start_is_a_virtualenv_then_two_lines() -> None:
    """Make a virtualenv, try the example site, run the tests: nothing else to type."""
    commands = [line.strip() for block in _literal_blocks(_section("Quick start"), "sh")
                for line in block.splitlines() if line.strip()]
    assert commands == [VENV_LINE, *QUICK_START]
    assert len(_literal_blocks(_section("Quick start"))) == 2  # no other block there


def test_quick_start_works_on_a_fresh_debian() -> None:
    """The shape that works as pasted where only ``python3`` exists and the system Python
    refuses ``pip install`` (PEP 668): ``python3`` until a virtualenv is active, and every
    ``pip install`` after it; inside it, ``python`` is the virtualenv's."""
    commands = [line.strip() for block in _literal_blocks(_section("Quick start"), "sh")
                for line in block.splitlines() if line.strip()]
    venv = re.fullmatch(r"python3 -m venv (\S+) && \. (\S+)/bin/activate", commands[0])
    assert venv and venv.group(1) == venv.group(2), commands[0]
    assert all("pip install" not in line for line in commands[:1])
    assert all(re.match(r"python -m pip install ", line) for line in commands[1:])
    assert "PEP 668" in _section("Quick start").astext()
    assert "python3-venv" in _section("Quick start").astext()  # Debian's ensurepip


def test_ci_runs_the_readme_test_line() -> None:
    """.ci/run greps the README for the test line and runs what it found."""
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    pattern = re.search(r'grep -m1 -o "(.+?)" README\.rst', script)
    assert pattern, ".ci/run no longer takes its test line from README.rst"
    found = re.search(pattern.group(1), README)  # a basic regex that Python reads alike
    assert found and found.group(0) == QUICK_START[1]


def _links() -> list[str]:
    from docutils import nodes

    return [ref["refuri"] for ref in _doctree().findall(nodes.reference)
            if "refuri" in ref]


def test_relative_links_point_at_files_that_exist() -> None:
    local = [uri for uri in _links() if "://" not in uri and not uri.startswith("mailto:")]
    assert local
    missing = [uri for uri in local if not (ROOT / uri.split("#")[0]).is_file()]
    assert missing == []


def test_links_lead_into_the_docs() -> None:
    """The front door says where to go next: the docs, the settings, the sandbox."""
    links = set(_links())
    for page in ("index", "quickstart", "configuration", "sandbox", "deploying", "api"):
        assert f"docs/{page}.rst" in links, f"README.rst does not link to docs/{page}.rst"


def test_readme_stays_a_front_door() -> None:
    """Topics are told once, in docs/: the README holds a pitch, the quick start, one
    example and links, as the READMEs of Flask-SQLAlchemy, Flask-Login and Authlib do."""
    assert len(README.splitlines()) < 200
    assert "list-table" not in README  # the settings, routes and errors tables are docs'


def test_the_integration_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                      ) -> None:
    """The README's Python example starts, creates its tables, and the button it shows
    links to the login, which is on as pasted (not the 503 of a placeholder SECRET_KEY,
    which the example had: a newcomer's plain ``flask run`` found WeChat login off)."""
    example = _literal_blocks(_section("Add it to your site"), "python")
    template = _literal_blocks(_section("Add it to your site"), "html+jinja")
    assert len(example) == 1 and len(template) == 1
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SECRET_KEY", secrets.token_hex(32))  # as the README says to make it
    monkeypatch.setenv("WECHAT_QR_APP_SECRET", secrets.token_hex(16))
    namespace: dict[str, t.Any] = {"__name__": "readme_example"}
    exec(compile(example[0], "README.rst", "exec"), namespace)
    app = namespace["app"]
    try:
        with app.test_request_context("/account"):
            button = render_template_string(template[0])
        assert not (app.debug or app.testing)
        start = app.test_client().get("/auth/wechat/login")
        assert start.status_code == 302
        assert start.headers["Location"].startswith("https://open.weixin.qq.com/")
    finally:
        dispose_engines(app)
    assert (tmp_path / "instance" / "site.db").is_file()  # db.create_all() ran
    assert 'href="/auth/wechat/login?next=/account"' in button
    assert "Log in with WeChat" in button


def test_readme_and_changes_are_valid_restructuredtext() -> None:
    from docutils import core

    for path in (ROOT / "README.rst", ROOT / "CHANGES.rst"):
        warnings = io.StringIO()
        core.publish_string(
            path.read_text(encoding="utf-8"), writer="html",
            settings_overrides={"warning_stream": warnings, "report_level": 2,
                                "halt_level": 5, "syntax_highlight": "none"},
        )
        assert warnings.getvalue() == "", f"{path.name}: {warnings.getvalue()}"
