"""The sandbox's QR page on a site whose Flask-Limiter (its quick start) has used up the
poll's limit: the page says the site answered 429, instead of waiting without a word
after the phone allowed the login (before)."""

from __future__ import annotations

import sys
import typing as t
import urllib.request
from pathlib import Path

import pytest
from support import LiveServer

from .test_login_in_browser import scan_and_answer

APPS = Path(__file__).resolve().parents[1] / "hosts" / "apps"
if str(APPS) not in sys.path:
    sys.path.insert(0, str(APPS))

import host_factory as host  # noqa: E402  (a host app: a top-level package of apps/)

pytestmark = pytest.mark.browser


def test_the_qr_page_says_the_site_refused_its_poll(page: t.Any, tmp_path: Path) -> None:
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    app = host.create_app({"TESTING": True, "WECHAT_QR_SANDBOX": True,
                           "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'blog.db'}"})
    Limiter(get_remote_address, app=app, default_limits=["200 per day", "50 per hour"],
            storage_uri="memory://")
    with LiveServer(app) as site:
        for _ in range(50):  # a QR page open for 50 seconds earlier this hour
            urllib.request.urlopen(f"{site.url}/wechat-sandbox/connect/l/qrconnect?uuid=x").read()
        page.goto(site.url + "/auth/wechat/login")
        scan_and_answer(page, page, allow=True)
        status = page.locator("#sbx-status")
        status.filter(has_text="HTTP 429").wait_for()
        assert "限流器" in status.inner_text()  # the browser asks for Chinese
