"""The TLS context for WeChat's calls where gevent patched ``ssl`` after urllib3 imported it
(in gunicorn's gevent workers: tests/promises/test_refresh_workers.py)."""

from __future__ import annotations

import json
import logging
import ssl
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
import trustme
from support import LiveServer
from urllib3.util import ssl_ as urllib3_ssl
from werkzeug.wrappers import Response

from flask_wechat_qr import tls

#: What urllib3 sets on its own contexts, compared one by one.
SETTINGS = ("minimum_version", "maximum_version", "options", "verify_flags", "verify_mode",
            "check_hostname", "post_handshake_auth", "hostname_checks_common_name",
            "keylog_filename")


@pytest.fixture
def late_patch(monkeypatch: pytest.MonkeyPatch) -> type[ssl.SSLContext]:
    """``ssl`` as gevent's patch leaves it when urllib3 was imported before: its
    ``SSLContext`` gevent's class, urllib3 still holding the original."""
    from gevent import ssl as gevent_ssl  # importing it patches nothing

    patched: type[ssl.SSLContext] = gevent_ssl.SSLContext
    monkeypatch.setattr(ssl, "SSLContext", patched)
    monkeypatch.setattr(tls, "_told", False)
    assert urllib3_ssl.SSLContext is not ssl.SSLContext
    return patched


def test_urllib3_makes_its_own_where_nothing_was_patched_late() -> None:
    assert tls.context_for_this_process() is None


def test_urllib3_keeps_a_context_class_it_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyOpenSSL's (``urllib3.contrib.pyopenssl.inject_into_urllib3``) is not a patch of
    ``ssl``: urllib3 goes on making its own."""

    class InjectedContext:
        pass

    monkeypatch.setattr(urllib3_ssl, "SSLContext", InjectedContext)
    assert tls.context_for_this_process() is None


def test_a_late_patch_gets_a_context_of_the_patched_class_set_as_urllib3_sets_its_own(
        late_patch: type[ssl.SSLContext], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    monkeypatch.setenv("SSLKEYLOGFILE", str(tmp_path / "keys.log"))
    monkeypatch.setattr(ssl, "SSLContext", urllib3_ssl.SSLContext)  # urllib3's own, first
    reference = urllib3_ssl.create_urllib3_context()
    monkeypatch.setattr(ssl, "SSLContext", late_patch)
    with caplog.at_level(logging.WARNING, logger="flask_wechat_qr"):
        contexts = [tls.context_for_this_process() for _ in range(3)]
    assert all(type(context) is late_patch for context in contexts)
    assert len({id(context) for context in contexts}) == 3  # one per connection
    ours = contexts[0]
    assert {name: getattr(ours, name) for name in SETTINGS} == \
        {name: getattr(reference, name) for name in SETTINGS}
    assert ours is not None and ours.verify_mode == ssl.CERT_REQUIRED and ours.check_hostname
    # Said once per process, with the fix for the site's own calls.
    warnings = [r.getMessage() for r in caplog.records if "ssl was patched" in r.getMessage()]
    assert len(warnings) == 1 and "gunicorn.conf.py" in warnings[0]


def test_a_connection_that_does_not_verify_gets_a_context_that_does_not(
        late_patch: type[ssl.SSLContext]) -> None:
    context = tls.context_for_this_process(verify=False)
    assert context is not None
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname


@pytest.fixture
def wechat_over_https(tmp_path: Path) -> t.Iterator[tuple[str, str]]:
    """A WeChat API on loopback over https (a certificate for 127.0.0.1): its URL and the
    file of the authority that signed it."""
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))

    def app(environ: t.Any, start_response: t.Any) -> t.Any:
        return Response('{"access_token": "AT", "openid": "o1"}',
                        content_type="text/plain")(environ, start_response)

    with LiveServer(app, ssl_context=context) as server:
        yield server.url, str(tmp_path / "ca.pem")


#: A process whose app was imported before gevent or eventlet patched (a gevent worker of a
#: ``--preload`` master, a Flask-SocketIO site that patches late), calling WeChat's API (the
#: deadline adapter) and an image host (the avatars' public-only adapter) over https; it
#: prints what each call gave.
LATE_PATCHED = """
import json, sys
import requests
from flask_wechat_qr import avatar_download
from flask_wechat_qr.deadline import DeadlineAdapter
{patch}
url, authority = sys.argv[1:]
avatar_download.public_address = lambda host, port, timeout: "127.0.0.1"  # stands in for WeChat's
def outcome(session, address, **verify):
    try:
        return session.get(address + "/sns/oauth2/access_token", timeout=5, **verify).text
    except Exception as error:
        return type(error).__name__ + ": " + str(error)
api = requests.Session()
api.mount("https://", DeadlineAdapter(5))
images = avatar_download.download_session()
print(json.dumps([
    outcome(api, url, verify=authority),
    outcome(api, url.replace("127.0.0.1", "localhost"), verify=authority),
    outcome(api, url),
    outcome(images, url, verify=authority),
]))
"""


@pytest.mark.parametrize("patcher", ["gevent", "eventlet"])
def test_after_a_late_patch_calls_over_https_work_and_still_verify(
        wechat_over_https: tuple[str, str], patcher: str) -> None:
    """Every call failed with a ``RecursionError`` (gevent's issue 1016). The warning
    names the library that patched, and how to patch it first (eventlet's was told
    gevent's fix)."""
    url, authority = wechat_over_https
    patch = {"gevent": "from gevent import monkey\nmonkey.patch_all()",
             "eventlet": "import eventlet\neventlet.monkey_patch()"}[patcher]
    done = subprocess.run([sys.executable, "-c", LATE_PATCHED.replace("{patch}", patch), url,
                           authority], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    api, wrong_host, unknown_authority, image_host = json.loads(done.stdout)
    assert json.loads(api)["openid"] == "o1"
    assert wrong_host.startswith("SSLError") and "localhost" in wrong_host  # checked still
    assert unknown_authority.startswith("SSLError") and "verify failed" in unknown_authority
    assert json.loads(image_host)["openid"] == "o1"  # the avatars' connections too
    assert f"ssl was patched ({patcher}) after urllib3" in done.stderr  # and said once
    assert ("eventlet.monkey_patch()' on the first line" in done.stderr) is (
        patcher == "eventlet")
    assert done.stderr.count("ssl was patched") == 1
