"""Templates: the host app's own templates win; the login button macro."""

from __future__ import annotations

import typing as t
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from flask import render_template_string
from support import APP_ID, APP_SECRET, TOKEN_PATH, find_tags, finish_login, start_login


def _write_template(app: t.Any, name: str, text: str) -> None:
    path = Path(app.root_path) / "templates" / "wechat_qr" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# --- overriding --------------------------------------------------------------------


def test_host_error_page_overrides_the_packaged_one(app: t.Any, wechat_api: t.Any) -> None:
    _write_template(app, "error.html",
                    '<p id="host-error">{{ error.title }} / {{ error.status }} / '
                    '<a href="{{ retry_url }}">again</a></p>')
    client = app.test_client()
    state = start_login(client)
    wechat_api.error(TOKEN_PATH, 40029, "invalid code")
    resp = finish_login(client, state)
    assert resp.status_code == 400
    page = resp.get_data(as_text=True)
    assert page.startswith('<p id="host-error">This QR code has expired / 400 / ')
    assert "wechat-qr-box" not in page
    assert [a["href"] for a in find_tags(page, "a")] == ["/auth/wechat/login"]


def test_host_base_layout_wraps_the_packaged_pages(app: t.Any) -> None:
    _write_template(app, "base.html",
                    '<!doctype html><html><body class="host-layout">'
                    '<nav>My Site</nav>{% block wechat_qr_content %}{% endblock %}'
                    '</body></html>')
    client = app.test_client()

    qr_page = client.get("/auth/wechat/qr").get_data(as_text=True)
    assert 'class="host-layout"' in qr_page
    assert "<nav>My Site</nav>" in qr_page
    frames = find_tags(qr_page, "iframe")
    assert len(frames) == 1
    assert f"appid={APP_ID}" in (frames[0]["src"] or "")

    error_page = client.get("/auth/wechat/callback").get_data(as_text=True)
    assert 'class="host-layout"' in error_page
    assert "no longer valid" in error_page
    assert APP_SECRET not in error_page


def test_packaged_templates_are_used_without_overrides(client: t.Any) -> None:
    page = client.get("/auth/wechat/callback").get_data(as_text=True)
    assert "host-layout" not in page
    assert 'class="wechat-qr-box wechat-qr-error"' in page
    assert 'data-error="StateError"' in page


def test_overrides_belong_to_their_app(make_app: t.Any) -> None:
    host = make_app()
    plain = make_app()
    _write_template(host, "error.html", "HOST ERROR PAGE")
    assert host.test_client().get("/auth/wechat/callback").get_data(as_text=True) == \
        "HOST ERROR PAGE"
    assert "HOST ERROR PAGE" not in plain.test_client().get(
        "/auth/wechat/callback").get_data(as_text=True)


# --- the login button macro --------------------------------------------------------

IMPORT_STYLES = [
    '{% from "wechat_qr/macros.html" import wechat_login_button %}',
    '{% from "wechat_qr/macros.html" import wechat_login_button with context %}',
]


def _button(app: t.Any, call: str, import_line: str = IMPORT_STYLES[0]) -> list[dict[str, t.Any]]:
    with app.test_request_context("/somewhere"):
        html = render_template_string(import_line + "{{ " + call + " }}")
    links = find_tags(html, "a")
    for link in links:
        link["text"] = html
    return links


@pytest.mark.parametrize("import_line", IMPORT_STYLES)
def test_login_button_links_to_the_login_route(make_app: t.Any, import_line: str) -> None:
    app = make_app(WECHAT_QR_DISPLAY_NAME="微信登录")
    links = _button(app, 'wechat_login_button("wechat")', import_line)
    assert len(links) == 1, links
    assert links[0]["href"] == "/auth/wechat/login"
    assert links[0]["data-wechat-connection"] == "wechat"
    assert "微信登录" in links[0]["text"]


@pytest.mark.parametrize("import_line", IMPORT_STYLES)
def test_login_button_embedded_links_to_the_qr_page(make_app: t.Any, import_line: str) -> None:
    app = make_app(WECHAT_QR_DISPLAY_NAME="微信登录")
    links = _button(app, 'wechat_login_button("wechat", next="/account", embedded=True)',
                    import_line)
    assert len(links) == 1, links
    href = urlsplit(links[0]["href"])
    assert href.path == "/auth/wechat/qr"
    assert dict(parse_qsl(href.query)) == {"next": "/account"}
    assert "微信登录" in links[0]["text"]


@pytest.mark.parametrize("config", [
    {"WECHAT_QR_APP_ID": None, "WECHAT_QR_APP_SECRET": None},  # no credentials yet
    {"TESTING": False, "SECRET_KEY": "dev"},  # a set-up that keeps WeChat login off
])
def test_no_login_button_while_the_login_is_off(make_app: t.Any,
                                                config: dict[str, t.Any]) -> None:
    """The button led every visitor to a 503 page "WeChat login is not available" (found by
    a newcomer whose site ran with ``SECRET_KEY = "dev"``): it is not rendered then."""
    app = make_app(**config)
    assert _button(app, 'wechat_login_button("wechat")') == []
    with app.test_request_context("/"):
        assert render_template_string("{{ wechat_qr_available() }}") == "False"
    healthy = make_app()
    with healthy.test_request_context("/"):
        assert render_template_string("{{ wechat_qr_available('wechat') }}") == "True"


def test_the_extensions_styles_go_into_a_sites_own_layout(make_app: t.Any) -> None:
    """``wechat_qr/styles.html``, which the docs' layout recipe includes: the extension's
    classes styled (the button at 44 px, white on green), nothing of the site's own."""
    app = make_app()
    with app.test_request_context("/"):
        css = render_template_string('{% include "wechat_qr/styles.html" %}')
    assert css.strip().startswith("<style>") and css.strip().endswith("</style>")
    assert ".wechat-qr-button { display: inline-block" in css and "min-height: 44px" in css
    assert "body {" not in css


def test_login_button_defaults_and_label(app: t.Any) -> None:
    links = _button(app, "wechat_login_button()")
    assert [link["href"] for link in links] == ["/auth/wechat/login"]
    assert "WeChat" in links[0]["text"]
    links = _button(app, 'wechat_login_button(label="扫码登录")')
    assert "扫码登录" in links[0]["text"]


def test_login_button_without_a_connection_is_the_default_connections(make_app: t.Any
                                                                         ) -> None:
    """The one named ``wechat`` where there is one (as before), else the first. Before, a
    site whose connections have other names got no button at all from
    ``wechat_login_button()``, and no word why."""
    app = make_app(WECHAT_QR_CONNECTIONS=[
        {"connection": "shop", "display_name": "商城微信", "app_id": APP_ID,
         "app_secret": APP_SECRET},
        {"connection": "work", "app_id": "wx0b0b0b0b0b0b0b0b", "app_secret": "another"}])
    links = _button(app, "wechat_login_button()")
    assert [link["href"] for link in links] == ["/auth/shop/login"]
    assert "商城微信" in links[0]["text"]
    app = make_app(WECHAT_QR_CONNECTIONS=[
        {"connection": "shop", "app_id": APP_ID, "app_secret": APP_SECRET},
        {"connection": "wechat", "app_id": "wx0b0b0b0b0b0b0b0b", "app_secret": "another"}])
    assert [link["href"] for link in _button(app, "wechat_login_button()")] \
        == ["/auth/wechat/login"]


def test_login_button_escapes_the_display_name(make_app: t.Any) -> None:
    app = make_app(WECHAT_QR_DISPLAY_NAME="<b>WeChat</b>")
    links = _button(app, "wechat_login_button()")
    assert "&lt;b&gt;WeChat&lt;/b&gt;" in links[0]["text"]
    assert "<b>" not in links[0]["text"]


def test_login_button_for_each_connection(make_app: t.Any) -> None:
    app = make_app(WECHAT_QR_CONNECTIONS=[
        {"connection": "wechat", "display_name": "微信", "app_id": APP_ID,
         "app_secret": APP_SECRET},
        {"connection": "wechat-b", "display_name": "微信 B", "app_id": "wx0b0b0b0b0b0b0b0b",
         "app_secret": "another-secret"},
    ])
    links = _button(app, 'wechat_login_button("wechat-b")')
    assert [link["href"] for link in links] == ["/auth/wechat-b/login"]
    assert "微信 B" in links[0]["text"]
    assert _button(app, 'wechat_login_button("weibo")') == []


def test_login_button_follows_the_url_prefix(make_app: t.Any) -> None:
    app = make_app(WECHAT_QR_URL_PREFIX="/login/social")
    links = _button(app, "wechat_login_button()")
    assert [link["href"] for link in links] == ["/login/social/wechat/login"]
