"""What a forked child (a gunicorn worker of a ``--preload`` master) starts afresh.

Only the forking thread lives on in the child. The parent's other threads, the calls they
were making, the locks they held and the sockets the parent keeps must not carry over:
objects holding such things register here, and the child calls their ``start_afresh``.

A uWSGI worker is forked without Python's at-fork handlers (unless uWSGI's
``--py-call-osafterfork``), and a gevent (or eventlet) worker patches ``threading`` after
the fork: locks, conditions and queues made before are the operating system's, and a
greenlet waiting on one stops the whole worker. So objects also note :func:`made_here` when
they make such things, and start afresh at their next use where :func:`made_elsewhere` says
they were made in another process or before the patch
(:func:`start_afresh_if_made_elsewhere`).
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


def made_here() -> tuple[int, object]:
    """This process, and what makes its locks now: ``threading.Lock``, which gevent and
    eventlet replace when they patch ``threading``."""
    return os.getpid(), threading.Lock


def made_elsewhere(made: tuple[int, object]) -> bool:
    """Whether what :func:`made_here` gave ``made`` for was made in another process (a
    parent) or before ``threading`` was patched: not this process's kind any more."""
    pid, lock_maker = made
    return pid != os.getpid() or lock_maker is not threading.Lock


class MadeIn(StartsAfresh, t.Protocol):
    #: :func:`made_here` when it last started afresh (set last: what it made is ready)
    made_in: tuple[int, object]


#: One lock per process (and kind of threading), for the threads that find at once that
#: something was made elsewhere: one starts it afresh, the others then use what it made.
_GUARDS: dict[tuple[int, object], t.Any] = {}


def start_afresh_if_made_elsewhere(thing: MadeIn) -> None:
    """Start ``thing`` afresh where it was made in another process (a uWSGI worker, forked
    without the fork hook) or before ``threading`` was patched (a gevent worker); once,
    however many threads ask at the same moment."""
    if made_elsewhere(thing.made_in):
        with _GUARDS.setdefault(made_here(), threading.Lock()):
            if made_elsewhere(thing.made_in):
                thing.start_afresh()
