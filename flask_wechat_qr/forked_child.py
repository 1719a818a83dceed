"""What a forked child (a gunicorn worker of a ``--preload`` master) starts afresh.

Only the forking thread lives on in the child. The parent's other threads, the calls they
were making, the locks they held and the sockets the parent keeps must not carry over:
objects holding such things register here, and the child calls their ``start_afresh``.

A gevent (or eventlet) worker then patches ``threading``: locks, conditions and queues made
before are the operating system's, and a greenlet waiting on one stops the whole worker.
Objects that wait on theirs note :func:`lock_maker` when they make them and start afresh
where it changed since (:func:`threading_patched_since`).
"""

from __future__ import annotations

import os
import threading
import typing as t
import weakref


class StartsAfresh(t.Protocol):
    def start_afresh(self) -> None:
        """Drop what belongs to the parent: threads, queued work, locks, pooled sockets."""


#: Everything to start afresh in a forked child (held weakly: it goes with its owner).
_REGISTERED: weakref.WeakSet[t.Any] = weakref.WeakSet()


def start_afresh_in_forked_child(thing: StartsAfresh) -> None:
    """Call ``thing.start_afresh()`` in every child this process forks, while it lives."""
    _REGISTERED.add(thing)


def _after_fork_in_child() -> None:
    for thing in list(_REGISTERED):
        thing.start_afresh()


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def lock_maker() -> object:
    """What makes this process's locks now: ``threading.Lock``, which gevent and eventlet
    replace when they patch ``threading``."""
    return threading.Lock


def threading_patched_since(made_with: object) -> bool:
    """Whether ``threading`` was patched since :func:`lock_maker` gave ``made_with``: the
    locks and threads made then are not this process's kind any more."""
    return made_with is not threading.Lock
