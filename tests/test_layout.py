"""The pages in the host's layout: an override of ``wechat_qr/base.html`` that drops a block
the pages need still gives working pages, and the log names the block."""

from __future__ import annotations

import logging
import typing as t
from pathlib import Path

import pytest
from flask import Flask
from support import arrive, find_tags, make_test_app

LAYOUT_WITH_HEAD = """<!doctype html><html><head><title>{% block title %}Host{% endblock %}</title>
{% block head %}{% endblock %}</head>
<body><nav id="host-nav">Host site</nav>{% block content %}{% endblock %}</body></html>"""
#: A Bootstrap-like layout with neither a title nor a head block.
LAYOUT_WITHOUT_HEAD = """<!doctype html><html><head><title>Host</title></head>
<body><nav id="host-nav">Host site</nav><main>{% block content %}{% endblock %}</main></body>
</html>"""
#: Another layout whose body block is called "main".
LAYOUT_WITH_MAIN = """<!doctype html><html><head><title>Host</title></head>
<body><nav id="host-nav">Host site</nav>{% block main %}{% endblock %}</body></html>"""
#: The override docs/templates.rst shows.
DOCUMENTED_OVERRIDE = """{% extends "layout.html" %}
{% block title %}{% block wechat_qr_title %}{% endblock %}{% endblock %}
{% block head %}{% block wechat_qr_head %}{% endblock %}{% endblock %}
{% block content %}{% block wechat_qr_content %}{% endblock %}{% endblock %}"""


def host(tmp_path: Path, layout: str, override: str | None = DOCUMENTED_OVERRIDE,
         **config: t.Any) -> Flask:
    app = make_test_app(tmp_path, **config)
    templates = tmp_path / "templates"
    (templates / "wechat_qr").mkdir(parents=True)
    (templates / "layout.html").write_text(layout)
    if override is not None:
        (templates / "wechat_qr" / "base.html").write_text(override)
    app.jinja_loader.searchpath = [str(templates)]  # type: ignore[union-attr]
    return app


def qr_page(app: Flask) -> tuple[str, t.Any]:
    resp = app.test_client().get("/auth/wechat/qr")
    assert resp.status_code == 200
    return resp.get_data(as_text=True), resp


def test_the_documented_override_puts_the_pages_in_the_layout(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "flask_wechat_qr"):
        page, resp = qr_page(host(tmp_path, LAYOUT_WITH_HEAD))
    assert 'id="host-nav"' in page and find_tags(page, "iframe")
    assert "<title>Log in with WeChat</title>" in page
    assert resp.headers["Refresh"] == "570"  # a state lives 600 s; a fresh one 30 s before
    assert caplog.records == []


def test_a_layout_without_head_or_title_blocks_keeps_the_qr_page_working(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The reload that gets a fresh QR code before the state expires was a <meta> in the
    head block: it is a header now, which no layout can drop."""
    with caplog.at_level(logging.WARNING, "flask_wechat_qr"):
        app = host(tmp_path, LAYOUT_WITHOUT_HEAD, WECHAT_QR_STATE_TTL=300)
        page, resp = qr_page(app)
        qr_page(app)  # said once per app
    assert 'id="host-nav"' in page and find_tags(page, "iframe")
    assert resp.headers["Refresh"] == "270"
    assert [(r.levelname, "wechat_qr_title" in r.getMessage()) for r in caplog.records] == [
        ("WARNING", True)]


def test_an_override_mapping_content_onto_a_missing_block_uses_the_own_layout(
        tmp_path: Path, wechat_api: t.Any, caplog: pytest.LogCaptureFixture) -> None:
    """Jinja would render an empty page (no QR code, no bind form) without a word."""
    with caplog.at_level(logging.WARNING, "flask_wechat_qr"):
        app = host(tmp_path, LAYOUT_WITH_MAIN, WECHAT_QR_ASSOCIATION="ask_binding")
        page, _ = qr_page(app)
    assert find_tags(page, "iframe") and 'id="host-nav"' not in page
    (record,) = caplog.records
    assert record.levelname == "ERROR"
    assert "wechat_qr/base.html does not render the block wechat_qr_content" in \
        record.getMessage()
    assert "{% block content %}{% block wechat_qr_content %}" in record.getMessage()
    # The other pages too: an error page and the bind form.
    client = app.test_client()
    error = client.get("/auth/wechat/callback").get_data(as_text=True)
    assert 'data-error="StateError"' in error
    arrive(client, wechat_api)
    bind = client.get("/auth/bind").get_data(as_text=True)
    assert [tag.get("value") for tag in find_tags(bind, "input") if tag.get("name") == "action"
            ] == ["bind", "create"]
    assert len(caplog.records) == 1


def test_an_override_that_is_not_a_child_renders_what_it_has(tmp_path: Path) -> None:
    standalone = """<!doctype html><html><body><nav id="host-nav"></nav>
    {% block wechat_qr_content %}{% endblock %}</body></html>"""
    page, _ = qr_page(host(tmp_path, LAYOUT_WITH_HEAD, override=standalone))
    assert 'id="host-nav"' in page and find_tags(page, "iframe")
    broken = """<!doctype html><html><body><nav id="host-nav"></nav></body></html>"""
    (tmp_path / "b").mkdir()
    page, _ = qr_page(host(tmp_path / "b", LAYOUT_WITH_HEAD, override=broken))
    assert 'id="host-nav"' not in page and find_tags(page, "iframe")


def test_without_an_override_the_pages_use_the_own_layout(tmp_path: Path) -> None:
    page, resp = qr_page(host(tmp_path, LAYOUT_WITH_HEAD, override=None))
    assert 'id="host-nav"' not in page and find_tags(page, "iframe")
    assert ".wechat-qr-box {" in page and resp.headers["Refresh"] == "570"
