"""Kept-alive connections that stay with the process that opened them.

A gunicorn worker forked from a ``--preload`` master that called WeChat before forking
inherits the master's pooled sockets. Two processes writing on one socket read each other's
answers: one person's token answer could reach another person's callback. Every adapter
here gets a new pool in a forked child (see :mod:`.forked_child`), which then opens
connections of its own: from the fork hook, or, where none ran (a uWSGI worker), at its
next call.
"""

from __future__ import annotations

import os
import typing as t

from requests.adapters import HTTPAdapter

from .forked_child import start_afresh_in_forked_child


class ProcessOwnAdapter(HTTPAdapter):
    """``requests``' adapter whose kept-alive connections stay with the process that opened
    them: a forked child starts with none."""

    def init_poolmanager(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self._pool_arguments = (args, kwargs)
        self._pool_process = os.getpid()
        start_afresh_in_forked_child(self)

    def get_connection_with_tls_context(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        if self._pool_process != os.getpid():  # forked without the fork hook (uWSGI)
            self.start_afresh()
        return super().get_connection_with_tls_context(*args, **kwargs)

    def start_afresh(self) -> None:
        # A new pool manager, the old one dropped unclosed: closing takes its lock, which a
        # thread gone with the fork may hold. Its sockets close with it, the child's copies
        # only: the parent's stay open.
        args, kwargs = self._pool_arguments
        self.init_poolmanager(*args, **kwargs)
