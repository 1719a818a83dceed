"""The sandbox's QR page behind a limiter in front of the site (a proxy's ``limit_req``)
that refuses its poll: the page says the site answered 429, instead of waiting without a
word after the phone allowed the login (before). (The sandbox takes itself out of
Flask-Limiter's limits: tests/hosts/test_flask_limiter.py.)"""

from __future__ import annotations

import sys
import typing as t
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
    app = host.create_app({"TESTING": True, "WECHAT_QR_SANDBOX": True,
                           "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'blog.db'}"})
    site_itself = app.wsgi_app

    def proxy_limit(environ: dict[str, t.Any], start_response: t.Any) -> t.Any:
        """A proxy's rate limit that this hour's polls have used up."""
        if environ["PATH_INFO"].endswith("/connect/l/qrconnect"):
            start_response("429 Too Many Requests", [("Content-Type", "text/plain")])
            return [b"Too Many Requests"]
        return site_itself(environ, start_response)

    app.wsgi_app = proxy_limit  # type: ignore[method-assign]
    with LiveServer(app) as site:
        page.goto(site.url + "/auth/wechat/login")
        scan_and_answer(page, page, allow=True)
        status = page.locator("#sbx-status")
        status.filter(has_text="HTTP 429").wait_for()
        assert "限流器" in status.inner_text()  # the browser asks for Chinese
