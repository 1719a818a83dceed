"""The example site's "WeChat login is not configured" card names the two callbacks apart:
the authorization callback domain to register (a bare public host) and the business
callback URL (an optional setting, not the redirect URI it shows)."""

from __future__ import annotations

import re
import typing as t

import pytest
from flask import Flask


@pytest.fixture
def site(make_site: t.Callable[..., Flask]) -> Flask:
    """The site without WeChat credentials and with the sandbox turned off."""
    return make_site(WECHAT_QR_SANDBOX=False)


def _card(site: Flask, base_url: str) -> str:
    html = site.test_client().get("/", base_url=base_url).get_data(as_text=True)
    found = re.search(r'<div class="card wechat-setup">(.*?)</div>', html, re.S)
    assert found, html
    return " ".join(found.group(1).split())


def test_a_public_host_is_the_domain_to_register(site: Flask) -> None:
    card = _card(site, "http://shop.example.com:5000")
    assert ("authorization callback domain</strong> (授权回调域) to this site's bare host as "
            "visitors reach it, with no scheme and no port: <code>shop.example.com</code>.") in card
    assert "the redirect URI <code>http://shop.example.com:5000/auth/wechat/callback</code>" in card
    assert "<code>shop.example.com:5000</code>" not in card


@pytest.mark.parametrize("host", ["127.0.0.1:5000", "localhost:5000"])
def test_this_computer_is_not_offered_as_the_domain(site: Flask, host: str) -> None:
    card = _card(site, f"http://{host}")
    bare = host.split(":")[0]
    assert ("its public domain, e.g. <code>www.example.com</code> (WeChat refuses "
            f"<code>{bare}</code>, which is this computer)") in card


def test_the_business_callback_url_is_not_the_redirect_uri(site: Flask) -> None:
    card = _card(site, "http://127.0.0.1:5000")
    assert ("(<code>WECHAT_QR_CALLBACK_URL</code> is a different address: a business callback "
            "URL of your own that receives an ID token after the login, not the one above.)"
            ) in card
