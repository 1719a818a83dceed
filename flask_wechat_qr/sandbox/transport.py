"""A ``requests`` transport that hands requests to a WSGI app in this process.

The example app talks to its own built-in sandbox. Over real HTTP that deadlocks under a
single synchronous worker (the worker waits for itself), so the client's session routes
the sandbox's API origin to the app's WSGI callable instead. The response is still raw
bytes with WeChat's headers, so the client's real HTTP parsing is exercised.
"""

from __future__ import annotations

import contextvars
import io
import typing as t
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from urllib3 import HTTPResponse
from urllib3.exceptions import DecodeError
from werkzeug.datastructures import Headers
from werkzeug.test import EnvironBuilder, run_wsgi_app

from ..urls import IN_PROCESS_ORIGIN

__all__ = ["IN_PROCESS_ORIGIN", "WSGITransport"]


class WSGITransport(BaseAdapter):
    """Mount on a session prefix: ``session.mount(IN_PROCESS_ORIGIN, WSGITransport(app))``."""

    def __init__(self, wsgi_app: t.Callable[..., t.Any]) -> None:
        super().__init__()
        self.wsgi_app = wsgi_app

    def send(
        self, request: requests.PreparedRequest, stream: bool = False,
        timeout: t.Any = None, verify: t.Any = True, cert: t.Any = None,
        proxies: t.Any = None,
    ) -> requests.Response:
        parts = urlsplit(request.url or "")
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        builder = EnvironBuilder(
            path=parts.path or "/",
            query_string=parts.query,
            method=request.method or "GET",
            headers=Headers(dict(request.headers)),
            # The client's bodies are bytes (a file object would do too); never a generator.
            data=t.cast("bytes | t.IO[bytes]", body),
            base_url=f"{parts.scheme}://{parts.netloc}",
        )
        try:
            environ = builder.get_environ()
        finally:
            builder.close()
        # In a copy of this context, as WeChat's servers answer in processes of their own: a
        # site's hook that keeps per-request state in a ContextVar (Flask-DebugToolbar)
        # would otherwise start afresh here and leave the request that called (a login's
        # callback) without its own.
        status, headers, content = contextvars.copy_context().run(self._answer, environ)

        response = requests.Response()
        response.status_code = int(status.split(" ", 1)[0])
        response.reason = status.split(" ", 1)[1] if " " in status else ""
        response.headers = CaseInsensitiveDict(headers.items())
        content = _decoded(content, headers, response.status_code)
        response.raw = HTTPResponse(body=io.BytesIO(content), preload_content=False,
                                    status=response.status_code)
        response._content = content
        response.encoding = requests.utils.get_encoding_from_headers(response.headers)
        response.url = request.url or ""
        response.request = request
        # requests types it HTTPAdapter, but any mounted adapter puts itself here.
        response.connection = self  # type: ignore[assignment]
        return response

    def _answer(self, environ: dict[str, t.Any]) -> tuple[str, Headers, bytes]:
        app_iter, status, headers = run_wsgi_app(self.wsgi_app, environ, buffered=True)
        try:
            return status, headers, b"".join(app_iter)
        finally:
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()

    def close(self) -> None:
        return None


def _decoded(content: bytes, headers: Headers, status: int) -> bytes:
    """The body as ``requests`` gives it over HTTP: decoded from its ``Content-Encoding``
    (``gzip``, ``br``: the client's ``Accept-Encoding`` went to the app, whose host may
    compress every answer, Flask-Compress for one). Before, the sandbox's compressed JSON
    reached the client as it was, and every login ended on "WeChat is not answering"."""
    encoding = headers.get("Content-Encoding")
    if not encoding:
        return content
    encoded = HTTPResponse(body=io.BytesIO(content), headers={"Content-Encoding": encoding},
                           preload_content=False, decode_content=True, status=status)
    try:
        return encoded.read()
    except DecodeError as exc:  # as requests' own adapter says it
        raise requests.exceptions.ContentDecodingError(exc) from exc
