"""Keeping WeChat's secrets out of logs.

WeChat takes the AppSecret, the code and tokens in query strings; urllib3 logs every URL
it requests at DEBUG level, and servers' access logs show the callback's code. A filter on
those loggers masks them. Installed once per process, by ``init_app`` (and the sandbox).
"""

from __future__ import annotations

import logging
import re
import typing as t

#: Query parameters that carry secrets.
SECRET_PARAMS = re.compile(r"\b(secret|code|access_token|refresh_token)=[^&\s\"']+")
#: Loggers that write request URLs: urllib3 (our calls to WeChat, at DEBUG) and the
#: servers' access logs (WeChat's redirect to the callback carries the code).
URL_LOGGERS = ("urllib3.connectionpool", "werkzeug", "gunicorn.access")


class RedactSecrets(logging.Filter):
    """Masks ``secret=``, ``code=`` and tokens in log records of URLs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            # In place: gunicorn's access log passes a dict subclass (SafeAtoms) whose
            # lookups its format strings rely on.
            for key, value in list(record.args.items()):
                if isinstance(value, str):
                    record.args[key] = redact(value)
        record.msg = redact(record.msg)
        return True


def redact(value: t.Any) -> t.Any:
    """``value`` with secret query parameters masked (anything but text unchanged)."""
    return SECRET_PARAMS.sub(r"\1=[redacted]", value) if isinstance(value, str) else value


def redact_http_debug_logs() -> None:
    """Install :class:`RedactSecrets` on the loggers that write URLs (once each)."""
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
