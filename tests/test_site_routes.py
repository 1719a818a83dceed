"""The site's own URL map (site_routes.py): which URLs on its other hosts are its pages,
so a login may send people back there, and the subdomain its routes are on."""

from __future__ import annotations

import typing as t
from urllib.parse import urlsplit

import pytest
from flask import Flask
from werkzeug.routing import Rule

from flask_wechat_qr.site_routes import (
    other_subdomains,
    routes_subdomain,
    serves_on_another_host,
)
from flask_wechat_qr.urls import safe_next


def page() -> str:
    return "page"


def subdomain_app() -> Flask:
    app = Flask("subdomains", subdomain_matching=True)
    app.config["SERVER_NAME"] = "example.test"
    app.add_url_rule("/", "home", page)
    app.add_url_rule("/cart", "cart", page, subdomain="shop")
    app.add_url_rule("/docs/", "docs", page, subdomain="shop")
    app.add_url_rule("/pay", "pay", page, subdomain="shop", methods=["POST"])
    app.add_url_rule("/status", "status", page, subdomain="api.eu")
    app.add_url_rule("/profile", "profile", page, subdomain="<user>")
    app.add_url_rule("/partner", "partner", subdomain="shop",
                     redirect_to="https://partner.test/")
    app.add_url_rule("/old-cart", "old_cart", subdomain="shop", redirect_to="/cart")
    return app


def host_matching_app() -> Flask:
    app = Flask("hosts", host_matching=True, static_host="www.example.test")
    app.add_url_rule("/", "home", page, host="www.example.test")
    app.add_url_rule("/cart", "cart", page, host="shop.example.test")
    app.add_url_rule("/profile", "profile", page, host="<user>.people.test")
    app.add_url_rule("/site", "tenant", page, host="<tenant>")  # customers' own domains
    return app


def serves(app: Flask, url: str, script_root: str = "") -> bool:
    return serves_on_another_host(app, urlsplit(url), script_root)


@pytest.mark.parametrize(("url", "served"), [
    ("http://shop.example.test/cart", True),
    ("https://shop.example.test/cart?item=1#top", True),
    ("HTTP://Shop.Example.TEST/cart", True),  # hosts have no case
    ("http://example.test/", True),  # the bare domain's own page
    ("http://shop.example.test/docs", True),  # the site's own redirect to /docs/
    ("http://alice.example.test/profile", True),  # a <user> subdomain
    ("http://api.eu.example.test/status", True),  # a dotted subdomain the site names
    ("http://shop.example.test/pay", False),  # no page to land on: POST only
    ("http://shop.example.test/nothing", False),
    ("http://alice.example.test/cart", False),  # the shop's page on another subdomain
    ("http://a.b.example.test/profile", False),  # <user> is one label
    (f"http://{'a' * 64}.example.test/profile", False),  # no label is that long (a 500)
    ("http://-a.example.test/profile", False),
    ("http://shop.example.test/partner", False),  # the site's redirect elsewhere
    ("http://shop.example.test/old-cart", True),  # its redirect to its own page
    ("http://other.test/cart", False),
    ("http://example.test.other.test/", False),
    ("http://shopexample.test/cart", False),
    ("http://shop.example.test./cart", False),
    ("http://shop.example.test:8080/cart", False),
    ("http://x@shop.example.test/cart", False),
    ("http://shop.example.test%2Fx/cart", False),
    ("ftp://shop.example.test/cart", False),
])
def test_under_subdomain_matching_the_sites_subdomains_are_served(url: str,
                                                                  served: bool) -> None:
    assert serves(subdomain_app(), url) is served


@pytest.mark.parametrize(("url", "served"), [
    ("http://shop.example.test/cart", True),
    ("http://www.example.test/", True),
    ("http://shop.example.test/", False),
    ("http://evil.test/cart", False),
    # a variable in a rule's host is no promise of the site's (found in review: <tenant>
    # matched any host at all, an open redirect)
    ("http://bob.people.test/profile", False),
    ("http://evil.test/site", False),
    ("http://127.0.0.1/site", False),
])
def test_under_host_matching_the_rules_hosts_are_served(url: str, served: bool) -> None:
    assert serves(host_matching_app(), url) is served


def test_a_site_that_routes_one_host_serves_no_other() -> None:
    app = subdomain_app()
    app.subdomain_matching = False
    assert not serves(app, "http://shop.example.test/cart")
    app.subdomain_matching = True
    del app.config["SERVER_NAME"]  # Flask cannot match subdomains without it
    assert not serves(app, "http://shop.example.test/cart")


@pytest.mark.parametrize(("url", "served"), [
    ("http://shop.example.test/site/cart", True),
    ("http://shop.example.test/cart", False),  # outside the mount point
    ("http://shop.example.test/sitecart", False),
])
def test_an_app_under_a_mount_point_serves_only_under_it(url: str, served: bool) -> None:
    assert serves(subdomain_app(), url, script_root="/site") is served


def test_safe_next_keeps_a_served_url_whole_and_refuses_the_rest() -> None:
    app = subdomain_app()
    asked: list[str] = []

    def served(url: t.Any) -> bool:
        asked.append(url.geturl())
        return serves_on_another_host(app, url)

    here = "example.test"
    assert safe_next("http://Shop.example.test/cart?a=1#b", here, served) == \
        "http://shop.example.test/cart?a=1#b"
    assert safe_next("http://example.test/x?y=1", here, served) == "/x?y=1"  # this host
    assert safe_next("http://evil.test/", here, served) is None
    assert safe_next("http://shop.example.test\\@evil.test/", here, served) is None
    assert safe_next("http://shop.example.test/\r\n", here, served) is None
    assert safe_next("/local", here, served) == "/local"
    # asked only of absolute URLs of another host, never of paths or this host's URLs
    assert asked == ["http://Shop.example.test/cart?a=1#b", "http://evil.test/"]
    assert safe_next("http://shop.example.test/cart", here) is None  # nobody to ask


def test_the_routes_subdomain_is_the_default_one_only_under_subdomain_matching() -> None:
    app = subdomain_app()
    app.url_map.default_subdomain = "www"
    assert routes_subdomain(app) == "www"
    app.subdomain_matching = False
    assert routes_subdomain(app) == ""


def test_a_host_rule_class_of_the_site_is_matched_as_the_site_does() -> None:
    """Host matching with the site's own ``url_rule_class`` (every rule on its host)."""
    class HostRule(Rule):
        def __init__(self, *args: t.Any, host: str | None = None, **kw: t.Any) -> None:
            super().__init__(*args, host=host or "www.example.test", **kw)

    app = Flask("hosts", host_matching=True, static_host="www.example.test")
    app.url_rule_class = HostRule
    app.add_url_rule("/", "home", page)
    assert serves(app, "http://www.example.test/")
    assert not serves(app, "http://shop.example.test/")


def test_the_other_subdomains_are_those_of_routes_off_the_logins_own() -> None:
    assert other_subdomains(subdomain_app()) == ["<user>", "api.eu", "shop"]
    app = Flask("www", subdomain_matching=True)
    app.config["SERVER_NAME"] = "example.test"
    app.url_map.default_subdomain = "www"  # before any route, as a site sets it
    app.add_url_rule("/", "home", page)
    assert other_subdomains(app) == []  # every route, the static one too, on www
    app.add_url_rule("/", "to_www", subdomain="", redirect_to="http://www.example.test/")
    assert other_subdomains(app) == []  # the bare name's redirect is no page (review)
    app.add_url_rule("/about", "about", page, subdomain="")
    assert other_subdomains(app) == [""]  # a page of the bare name
    assert other_subdomains(host_matching_app()) == []
