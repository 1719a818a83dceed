"""Name lookups within a deadline.

``getaddrinfo`` cannot be interrupted, and a DNS server that does not answer holds it for
the resolver's own timeouts (glibc: five seconds a try, two tries a server): a call to
WeChat, or an avatar's download, ran that far past its deadline while it looked up its
host (a long-run hunt, session 35: 3 s for a 2 s deadline). Here the lookup runs in a
daemon thread, waited for only the time left. One lookup of a name runs at a time and the
others wait for its answer, so a DNS server that does not answer holds one thread per name,
not one per login.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import typing as t

from .forked_child import made_here, start_afresh_if_made_elsewhere, start_afresh_in_forked_child

#: What ``getaddrinfo`` answers: ``(family, type, proto, canonname, sockaddr)`` tuples.
Addresses = list[tuple[t.Any, ...]]


class _Lookup:
    """One lookup in flight, and its answer once it has one."""

    __slots__ = ("done", "error", "found")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.found: Addresses = []
        self.error: OSError | None = None


class NameLookups:
    """The lookups of a process, one per name at a time."""

    def __init__(self) -> None:
        self.start_afresh()
        start_afresh_in_forked_child(self)

    def start_afresh(self) -> None:
        """No lookup in flight: in a forked child (a gunicorn worker of a ``--preload``
        master) the parent's lookup threads are gone, and would never answer there."""
        self._lock = threading.Lock()
        self._running: dict[tuple[t.Any, ...], _Lookup] = {}
        self.made_in = made_here()

    def addresses(self, host: str, port: int | str | None, family: int = 0, type: int = 0,
                  *, timeout: float) -> Addresses:
        """``socket.getaddrinfo(host, port, family, type)``, given up after ``timeout``
        seconds (:class:`TimeoutError`); its own errors (``socket.gaierror``) as they are.
        An address written as one is no lookup: answered here, with no thread."""
        if _is_address(host):
            return socket.getaddrinfo(host, port, family, type)
        start_afresh_if_made_elsewhere(self)
        # The resolver is part of the key: a lookup begun before gevent patched ``socket``
        # (or before a test replaced it) is nobody else's to wait for.
        resolver = socket.getaddrinfo
        key = (resolver, host, port, family, type)
        with self._lock:
            lookup = self._running.get(key)
            if lookup is None:
                lookup = self._running[key] = _Lookup()
                threading.Thread(target=self._look_up, args=(key, lookup), daemon=True,
                                 name="wechat-qr-name-lookup").start()
        if not lookup.done.wait(max(0.0, timeout)):
            raise TimeoutError(f"looking up {host} took longer than {timeout:g} s")
        if lookup.error is not None:
            raise lookup.error
        return lookup.found

    def _look_up(self, key: tuple[t.Any, ...], lookup: _Lookup) -> None:
        resolver, *arguments = key
        try:
            lookup.found = resolver(*arguments)
        except OSError as error:
            lookup.error = error
        finally:
            with self._lock:
                if self._running.get(key) is lookup:
                    del self._running[key]
            lookup.done.set()


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


_LOOKUPS = NameLookups()


def addresses(host: str, port: int | str | None, family: int = 0, type: int = 0, *,
              timeout: float) -> Addresses:
    """The addresses of ``host`` (see :meth:`NameLookups.addresses`)."""
    return _LOOKUPS.addresses(host, port, family, type, timeout=timeout)
