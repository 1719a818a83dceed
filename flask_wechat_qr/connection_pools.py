"""Kept-alive connections that stay with the process that opened them.

A gunicorn worker forked from a ``--preload`` master that called WeChat before forking
inherits the master's pooled sockets. Two processes writing on one socket read each other's
answers: one person's token answer could reach another person's callback. Every adapter
here gets a new pool in a forked child (see :mod:`.forked_child`), which then opens
connections of its own: from the fork hook, or, where none ran (a uWSGI worker), at its
next call.
"""

from __future__ import annotations

import threading
import typing as t

from requests import PreparedRequest
from requests.adapters import HTTPAdapter
from urllib3 import PoolManager
from urllib3.connectionpool import HTTPConnectionPool

from .forked_child import made_here, start_afresh_if_made_elsewhere, start_afresh_in_forked_child


class ProcessOwnAdapter(HTTPAdapter):
    """``requests``' adapter whose kept-alive connections stay with the process that opened
    them: a forked child starts with none. Its pools are of :attr:`pool_classes`, through
    a proxy too."""

    #: the connection pools of this adapter, by scheme (``None``: urllib3's own)
    pool_classes: t.ClassVar[dict[str, type[HTTPConnectionPool]] | None] = None
    #: the same through a SOCKS proxy (``None``: urllib3's own)
    socks_pool_classes: t.ClassVar[dict[str, type[HTTPConnectionPool]] | None] = None

    def init_poolmanager(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self._pool_arguments = (args, kwargs)
        self._use_own_pools(self.poolmanager)
        #: the managers of proxies (requests' cache), dropped with the pools
        self.proxy_manager = {}
        self._proxy_managers_lock = threading.Lock()
        #: :meth:`get_connection_with_tls_context`'s pools, by what chose them
        self._pools_chosen: dict[t.Any, HTTPConnectionPool] = {}
        self.made_in = made_here()  # last: a thread that sees it sees the rest ready
        start_afresh_in_forked_child(self)

    def _use_own_pools(self, manager: PoolManager, through_socks: bool = False) -> None:
        pools = self.socks_pool_classes if through_socks else self.pool_classes
        if pools is not None:
            manager.pool_classes_by_scheme = dict(pools)

    def get_connection_with_tls_context(
        self, request: PreparedRequest, verify: t.Any, proxies: t.Any = None,
        cert: t.Any = None,
    ) -> HTTPConnectionPool:
        """requests' pool for ``request``, chosen once for each origin, TLS settings and
        proxies: requests parses the URL three times and makes the pool's key at every
        call (some 1,700 Python opcodes), for the one pool WeChat's API host has. After
        :meth:`close` (or a pool closed by its owner) the next call chooses again, as
        requests would, and opens new connections."""
        start_afresh_if_made_elsewhere(self)  # forked without the fork hook (uWSGI)
        try:  # the scheme and host (with any port and user) of the URL; the settings
            key = (*(request.url or "").split("/", 3)[:3], verify, cert,
                   tuple(proxies.items()) if proxies else ())
            pool = self._pools_chosen.get(key)
        except TypeError:  # a setting that is not hashable
            key, pool = None, None
        if pool is None or pool.pool is None:  # none chosen yet, or closed since
            pool = super().get_connection_with_tls_context(request, verify, proxies, cert)
            if key is not None:
                if len(self._pools_chosen) >= 16:  # origins or settings that keep changing
                    self._pools_chosen.clear()
                self._pools_chosen[key] = pool
        return pool

    def close(self) -> None:
        """requests' close (the pools dropped, their connections no longer reused), and
        the pools chosen forgotten with them."""
        self._pools_chosen.clear()
        super().close()

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: t.Any) -> PoolManager:
        """requests' manager for ``proxy``, its pools of :attr:`pool_classes`, or of
        :attr:`socks_pool_classes` for a SOCKS proxy (a call through ``HTTPS_PROXY`` had
        no deadline)."""
        with self._proxy_managers_lock:  # no thread gets it before its pools are set
            manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
            self._use_own_pools(manager, through_socks=proxy.lower().startswith("socks"))
        return manager

    def start_afresh(self) -> None:
        # A new pool manager (and no proxy's), the old ones dropped, not closed here: their
        # lock may be held by a thread gone with the fork. urllib3 closes their sockets as
        # it collects them, the child's copies only: the parent's stay open.
        args, kwargs = self._pool_arguments
        self.init_poolmanager(*args, **kwargs)
