"""WeChat misbehaving on a real socket: too slow, refusing connections, failing with 5xx,
answering HTML. Each gives the user a page in words within the configured timeout, and
writes nothing."""

from __future__ import annotations

import threading
import time
import typing as t

import pytest
from support import all_identities, all_users, finish_login, free_port, start_login
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

TIMEOUT = 0.5


class FakeWeChat:
    """A loopback HTTP server standing for api.weixin.qq.com, with one chosen fault."""

    def __init__(self, fault: str) -> None:
        self.fault = fault
        self.requests = 0
        self.release = threading.Event()
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @Request.application  # type: ignore[misc]
    def app(self, request: Request) -> Response:
        self.requests += 1
        if self.fault == "slow":
            self.release.wait(timeout=10)  # far longer than the client waits
            return Response("{}", content_type="text/plain")
        if self.fault == "5xx":
            return Response("<html>502 Bad Gateway</html>", status=502,
                            content_type="text/html")
        if self.fault == "html":
            return Response("<html><body>maintenance</body></html>", content_type="text/html")
        if self.fault == "rate-limited":
            return Response('{"errcode":45011,"errmsg":"api minute-quota reach limit"}',
                            content_type="text/plain")
        raise AssertionError(self.fault)

    def __enter__(self) -> FakeWeChat:
        self.thread.start()
        return self

    def __exit__(self, *exc: t.Any) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)




def _login_against(make_app: t.Callable[..., t.Any], api_base: str) -> tuple[t.Any, t.Any, float]:
    app = make_app(WECHAT_QR_API_BASE_URL=api_base, WECHAT_QR_HTTP_TIMEOUT=TIMEOUT)
    client = app.test_client()
    state = start_login(client)
    started = time.monotonic()
    resp = finish_login(client, state)
    return app, resp, time.monotonic() - started


@pytest.mark.parametrize(("fault", "status", "words"), [
    ("slow", 504, "took too long"),
    ("5xx", 502, "did not answer properly"),
    ("html", 502, "not its API"),
    ("rate-limited", 502, "Wait a minute"),
])
def test_wechat_faults_give_a_clear_page_in_time(
    make_app: t.Callable[..., t.Any], fault: str, status: int, words: str
) -> None:
    with FakeWeChat(fault) as wechat:
        app, resp, elapsed = _login_against(make_app, wechat.url)
    assert resp.status_code == status
    page = resp.get_data(as_text=True)
    assert words in page and "Try again" in page and "Traceback" not in page
    assert wechat.requests == 1
    assert elapsed < 6 * TIMEOUT  # the configured timeout bounds the wait
    assert all_users(app) == [] and all_identities(app) == []


def test_connection_refused_gives_a_clear_page(make_app: t.Callable[..., t.Any]) -> None:
    app, resp, elapsed = _login_against(make_app, f"http://127.0.0.1:{free_port()}")
    assert resp.status_code == 502
    assert "WeChat is not answering" in resp.get_data(as_text=True)
    assert elapsed < 6 * TIMEOUT
    assert all_users(app) == [] and all_identities(app) == []
