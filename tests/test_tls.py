"""The TLS context for WeChat's calls where gevent patched ``ssl`` after urllib3 imported it
(the gevent workers themselves: tests/promises/test_refresh_workers.py)."""

from __future__ import annotations

import logging
import ssl

import pytest
from urllib3.util import ssl_ as urllib3_ssl

from flask_wechat_qr import tls


def test_urllib3_makes_its_own_where_nothing_was_patched_late() -> None:
    assert tls.context_for_this_process() is None


def test_a_late_patch_gets_a_context_of_the_patched_class_that_still_verifies(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from gevent import ssl as gevent_ssl  # importing it patches nothing

    # What gevent's patch puts in ``ssl`` (urllib3 keeps the class it imported).
    PatchedContext = gevent_ssl.SSLContext
    monkeypatch.setattr(ssl, "SSLContext", PatchedContext)
    monkeypatch.setattr(tls, "_told", False)
    assert urllib3_ssl.SSLContext is not ssl.SSLContext
    with caplog.at_level(logging.WARNING, logger="flask_wechat_qr"):
        contexts = [tls.context_for_this_process() for _ in range(3)]
    assert all(type(context) is PatchedContext for context in contexts)
    assert len({id(context) for context in contexts}) == 3  # one per connection
    context = contexts[0]
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION and context.options & ssl.OP_NO_TICKET
    assert context.hostname_checks_common_name is False
    # Said once per process, with the fix for the site's own calls.
    warnings = [r.getMessage() for r in caplog.records if "ssl was patched" in r.getMessage()]
    assert len(warnings) == 1 and "gunicorn.conf.py" in warnings[0]
