"""Log redaction (redact.py): AppSecrets, codes and tokens masked in the URL loggers' lines
(urllib3, Werkzeug, gunicorn's access log) without breaking their formats. That nothing
secret is ever logged anywhere: promises/test_secrets."""

from __future__ import annotations

import logging
import typing as t

from flask import Flask
from support import CODE


def test_gunicorn_access_lines_keep_their_format_when_redacted(
        make_app: t.Callable[..., Flask]) -> None:
    """What gunicorn's access logger does with every request, once the extension's
    redaction is installed (any app's ``init_app``): the line is still written."""
    from gunicorn.glogging import SafeAtoms

    make_app()
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))  # raises what the format cannot take

    access = logging.getLogger("gunicorn.access")
    keep = Keep()
    access.addHandler(keep)
    level = access.level
    access.setLevel(logging.INFO)
    try:
        atoms = SafeAtoms({
            "h": "10.0.0.2", "r": f"GET /auth/wechat/callback?code={CODE}&state=abc HTTP/1.1",
            "s": "302", "{x-forwarded-for}i": "203.0.113.7"})
        # A proxy-aware format (the client's address from the proxy's header), as a
        # deployment behind nginx uses; "%(M)s" is absent from these atoms.
        access.info('%({X-Forwarded-For}i)s "%(r)s" %(s)s %(M)s', atoms)
    finally:
        access.removeHandler(keep)
        access.setLevel(level)
    assert lines == ['203.0.113.7 "GET /auth/wechat/callback?code=[redacted]&state=abc '
                     'HTTP/1.1" 302 -']
