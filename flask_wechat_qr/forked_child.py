"""What a forked child (a gunicorn worker of a ``--preload`` master) starts afresh.

Only the forking thread lives on in the child. The parent's other threads, the calls they
were making, the locks they held and the sockets the parent keeps must not carry over:
objects holding such things register here, and the child calls their ``start_afresh``.

A uWSGI worker is forked without Python's at-fork handlers (unless uWSGI's
``--py-call-osafterfork``): there the child calls them from uWSGI's own post-fork hook
(``uwsgi.post_fork_hook``, chained to the site's), once. A gevent (or eventlet) worker
patches ``threading`` after the fork: locks, conditions and queues made before are the
operating system's, and a greenlet waiting on one stops the whole worker. So objects also
note :func:`made_here` when they make such things, and start afresh at their next use where
:func:`made_elsewhere` says they were made in another process or before the patch
(:func:`start_afresh_if_made_elsewhere`).
"""

from __future__ import annotations

import os
import sys
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
    _call_from_uwsgi_post_fork()  # again: the site may have set uWSGI's hook since


#: The process that last started everything afresh (uWSGI may call both hooks).
_started_afresh_in: list[int] = [os.getpid()]


def _after_fork_in_child() -> None:
    if _started_afresh_in[0] == os.getpid():
        return
    _started_afresh_in[0] = os.getpid()
    for thing in list(_REGISTERED):
        thing.start_afresh()


def start_afresh_if_forked_unseen() -> None:
    """Start everything afresh now where this process is a child forked without a hook that
    said so: a uWSGI worker whose post-fork hook the site replaced after the extension
    chained it (``import uwsgidecorators`` below the app sets its own, and
    ``uwsgi.post_fork_hook = ...`` does likewise). Once, however many threads ask at the
    same moment; no more than a comparison of process ids where nothing was missed."""
    if _started_afresh_in[0] != os.getpid():
        with _GUARDS.setdefault(made_here(), threading.Lock()):
            _after_fork_in_child()


def _call_from_uwsgi_post_fork() -> None:
    """Chain :func:`_after_fork_in_child` to uWSGI's post-fork hook, in a uWSGI process;
    again where the site (``uwsgidecorators``) has set the hook since."""
    uwsgi = sys.modules.get("uwsgi")  # only inside uWSGI
    if uwsgi is None:
        return
    previous = getattr(uwsgi, "post_fork_hook", None)
    if previous is not None and previous is _uwsgi_hooks.get(id(uwsgi)):
        return  # ours, set before

    def post_fork_hook() -> None:
        if previous is not None:
            previous()
        _after_fork_in_child()

    _uwsgi_hooks[id(uwsgi)] = post_fork_hook
    setattr(uwsgi, "post_fork_hook", post_fork_hook)  # noqa: B010  (a module of uWSGI's)


#: The hook :func:`_call_from_uwsgi_post_fork` set, by uWSGI module (one, the process's).
_uwsgi_hooks: dict[int, t.Callable[[], None]] = {}


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
_call_from_uwsgi_post_fork()


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
    pid, lock_maker = thing.made_in  # made_elsewhere's test, written out: every call asks
    if pid != os.getpid() or lock_maker is not threading.Lock:
        with _GUARDS.setdefault(made_here(), threading.Lock()):
            if made_elsewhere(thing.made_in):
                thing.start_afresh()
