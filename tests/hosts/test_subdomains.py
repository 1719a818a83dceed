"""A site on several subdomains of one ``SERVER_NAME`` (subdomain matching): a shop on
``shop.example.test`` whose login button sends people through the login on the bare
domain, and back to the shop's page they were on."""

from __future__ import annotations

import re
import typing as t
from urllib.parse import quote, urlsplit

import pytest
from flask import Blueprint, Flask, render_template_string, request
from support import answer, poll

from .shapes import small_site

BASE = "http://example.test"
SHOP = "http://shop.example.test"
BUTTON = ('{% from "wechat_qr/macros.html" import wechat_login_button %}'
          '{{ wechat_login_button("wechat", next=request.url) }}')


def subdomain_site(tmp_path: t.Any) -> Flask:
    """The site: its own pages on the bare domain, the shop on ``shop.``, a user page on
    any ``<user>.`` subdomain, one session cookie for them all (``SESSION_COOKIE_DOMAIN``);
    the extension's routes on the bare domain, as it registers them."""
    from flask_login import LoginManager, UserMixin, current_user
    from flask_sqlalchemy import SQLAlchemy

    db = SQLAlchemy()

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)
        username = db.Column(db.String(80))

    app = small_site(tmp_path, "subdomain_site", db, LoginManager(), User,
                     SERVER_NAME="example.test", SESSION_COOKIE_DOMAIN="example.test")
    app.subdomain_matching = True

    def who() -> str:
        return f"{request.host}{request.path} user={current_user.get_id()}"

    app.add_url_rule("/", "home", who)
    shop = Blueprint("shop", __name__, subdomain="shop")
    shop.add_url_rule("/cart", "cart", lambda: who() + render_template_string(BUTTON))
    app.register_blueprint(shop)
    app.add_url_rule("/profile", "profile", who, subdomain="<user>")
    with app.app_context():
        db.create_all()
    return app


def log_in(app: Flask, client: t.Any, login_url: str) -> t.Any:
    """A whole login from ``login_url`` (absolute) through the sandbox; the callback's
    answer."""
    resp = client.get(login_url)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    qr_page = resp.headers["Location"].split("#")[0]
    assert qr_page.startswith(f"{BASE}/wechat-sandbox/connect/qrconnect?"), qr_page
    page = client.get(qr_page)
    uuid = re.search(r'data-uuid="([^"]+)"', page.get_data(as_text=True))
    assert uuid, page.get_data(as_text=True)
    phone = app.test_client()
    answer(phone, uuid.group(1), action="allow", person="lisi")
    return client.get(poll(client, uuid.group(1))["redirect"])


def test_the_shops_login_button_brings_people_back_to_the_shop(tmp_path: t.Any) -> None:
    """The button on ``shop.example.test/cart`` (``next=request.url``) led to the login on
    the bare domain, which kept only ``next``'s path: people landed on
    ``example.test/cart``, a page the site does not have (404)."""
    app = subdomain_site(tmp_path)
    client = app.test_client()
    cart = client.get(f"{SHOP}/cart")
    href = re.search(r'href="([^"]+)"', cart.get_data(as_text=True))
    assert href, cart.get_data(as_text=True)
    login_url = href.group(1).replace("&amp;", "&")
    assert login_url.startswith(f"{BASE}/auth/wechat/login?"), login_url
    resp = log_in(app, client, login_url)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert resp.headers["Location"] == f"{SHOP}/cart"
    assert client.get(f"{SHOP}/cart").get_data(as_text=True).startswith(
        "shop.example.test/cart user=1")


@pytest.mark.parametrize("next_url", [
    f"{SHOP}/cart?item=7#top",  # the whole URL is kept
    "http://alice.example.test/profile",  # a subdomain of a <user> rule
    f"{BASE}/",  # this very host: taken as its path
])
def test_a_next_on_a_host_the_site_serves_is_kept(tmp_path: t.Any, next_url: str) -> None:
    app = subdomain_site(tmp_path)
    resp = log_in(app, app.test_client(), f"{BASE}/auth/wechat/login?next={quote(next_url)}")
    expected = "/" if next_url == f"{BASE}/" else next_url
    assert resp.headers["Location"] == expected, resp.get_data(as_text=True)


@pytest.mark.parametrize("next_url", [
    "http://evil.test/cart",  # another site
    "http://example.test.evil.test/",  # a name that starts like the site's
    "http://shop.example.test/nothing-here",  # a page the shop does not have
    "http://alice.example.test/cart",  # the shop's page, not on the shop's subdomain
    "http://evil.test@shop.example.test/cart",  # a user part
    "http://alice.example.test:8080/profile",  # another port
    "http://shop.example.test./cart",  # a trailing dot
    "http://a.b.example.test/profile",  # a <user> never has a dot
    "javascript://shop.example.test/cart",
    "ftp://shop.example.test/cart",
])
def test_a_next_on_a_host_the_site_does_not_serve_is_ignored(
        tmp_path: t.Any, next_url: str) -> None:
    app = subdomain_site(tmp_path)
    resp = log_in(app, app.test_client(), f"{BASE}/auth/wechat/login?next={quote(next_url)}")
    assert resp.headers["Location"] == "/", resp.headers["Location"]


def test_without_subdomain_matching_another_host_is_never_kept(tmp_path: t.Any) -> None:
    """A site that does not route subdomains serves only its own host."""
    app = subdomain_site(tmp_path)
    app.subdomain_matching = False
    client = app.test_client()
    resp = log_in(app, client, f"{BASE}/auth/wechat/login?next={SHOP}/cart")
    assert urlsplit(resp.headers["Location"]).netloc == ""


def test_an_https_login_keeps_no_http_next(tmp_path: t.Any) -> None:
    """A login over https does not send people on to a page of the site over http (its
    session cookie may be ``Secure``; found in review)."""
    from flask_wechat_qr import delivery

    app = subdomain_site(tmp_path)

    with app.test_request_context("/", base_url="https://example.test"):
        assert delivery.kept_next(f"{SHOP}/cart") is None
        assert delivery.kept_next("https://shop.example.test/cart") == \
            "https://shop.example.test/cart"
    with app.test_request_context("/", base_url=BASE):
        assert delivery.kept_next(f"{SHOP}/cart") == f"{SHOP}/cart"


@pytest.mark.parametrize("next_url", ["http://[evil/", "http://shop.example.test]/cart"])
def test_a_next_that_is_no_url_at_all_is_ignored(tmp_path: t.Any, next_url: str) -> None:
    """An unbalanced bracket made ``urlsplit`` raise: the login's start answered 500."""
    app = subdomain_site(tmp_path)
    resp = app.test_client().get(f"{BASE}/auth/wechat/login",
                                 query_string={"next": next_url})
    assert resp.status_code == 302

