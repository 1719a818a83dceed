"""TLS for calls to WeChat in a process where gevent (or eventlet) patched ``ssl`` after urllib3
imported it.

A gunicorn gevent worker whose app was built before the worker patched (``--preload``) has
urllib3 holding the ``ssl.SSLContext`` class from before the patch. A context of that class
fails as urllib3 sets it up (a ``RecursionError``: gevent/gevent#1016), and with it every
call to WeChat's API. The extension's connections get a context of the class ``ssl`` has
now, set up as urllib3 sets up its own; where nothing was patched late, urllib3 makes its
own as usual.
"""

from __future__ import annotations

import logging
import os
import ssl
import sys

from urllib3.util import ssl_ as urllib3_ssl

log = logging.getLogger("flask_wechat_qr")

_told = False


def context_for_this_process(*, verify: bool = True) -> ssl.SSLContext | None:
    """A new context for one https connection, of the class ``ssl`` has now; ``None`` where
    urllib3's own works: ``ssl.SSLContext`` is the class urllib3 imported, or not one made
    from it by a later patch (gevent's and eventlet's are; pyOpenSSL's, which urllib3 may be
    given, is not). ``verify``: whether the connection verifies the certificate."""
    urllib3_class: object = urllib3_ssl.SSLContext
    now = ssl.SSLContext
    if now is urllib3_class or not (isinstance(urllib3_class, type)
                                    and issubclass(now, urllib3_class)):
        return None
    _tell_once()
    # urllib3's own settings (urllib3.util.ssl_.create_urllib3_context), on the class of now.
    context = now(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_SSLv2 | ssl.OP_NO_SSLv3 | ssl.OP_NO_COMPRESSION \
        | ssl.OP_NO_TICKET
    if sys.version_info >= (3, 13):
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
    context.post_handshake_auth = True
    if not verify:  # the host name check goes first: it needs a verified certificate
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.hostname_checks_common_name = False
    keylog = os.environ.get("SSLKEYLOGFILE")
    if keylog:
        context.keylog_filename = os.path.expandvars(keylog)
    return context


#: How to patch first, by the library that patched ``ssl`` late.
PATCH_FIRST = {
    "gevent": ("a gevent worker of a --preload master", "put 'from gevent import monkey; "
               "monkey.patch_all()' at the top of gunicorn.conf.py, or serve without "
               "--preload"),
    "eventlet": ("eventlet.monkey_patch() called after the app's imports (Flask-SocketIO "
                 "sites)", "call 'import eventlet; eventlet.monkey_patch()' on the first "
                 "line of the module that starts the app, before any other import"),
}


def _tell_once() -> None:
    global _told
    if not _told:
        _told = True
        patcher = "eventlet" if ssl.SSLContext.__module__.startswith("eventlet") else "gevent"
        where, fix = PATCH_FIRST[patcher]
        log.warning(
            "ssl was patched (%s) after urllib3 was imported, as by %s: calls to WeChat "
            "use a TLS context of the patched class; the site's other https calls through "
            "requests fail with a RecursionError. Patch first: %s.", patcher, where, fix)
