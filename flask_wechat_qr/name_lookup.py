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

import copy
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
        self.error: Exception | None = None


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
                lookup = _Lookup()
                try:
                    threading.Thread(target=self._look_up, args=(key, lookup), daemon=True,
                                     name="wechat-qr-name-lookup").start()
                except RuntimeError as error:  # no thread to be had (a process limit)
                    raise socket.gaierror(socket.EAI_AGAIN,
                                          f"no thread to look {host} up: {error}") from None
                self._running[key] = lookup
        # Event.wait past TIMEOUT_MAX (an endless deadline) raises OverflowError.
        if not lookup.done.wait(min(max(0.0, timeout), threading.TIMEOUT_MAX)):
            raise TimeoutError(f"looking up {host} took longer than {timeout:g} s")
        if lookup.error is not None:
            raise _own_copy(lookup.error) from None
        return list(lookup.found)  # each caller's own

    def _look_up(self, key: tuple[t.Any, ...], lookup: _Lookup) -> None:
        resolver, *arguments = key
        try:
            lookup.found = resolver(*arguments)
        except Exception as error:  # raised in each caller (see _own_copy)
            lookup.error = error
        finally:
            with self._lock:
                if self._running.get(key) is lookup:
                    del self._running[key]
            lookup.done.set()


def _own_copy(error: Exception) -> OSError:
    """``error`` for one caller to raise: several callers raising one object would each
    write their traceback into it, and keep each other's frames alive. What is not an
    ``OSError`` (a name IDNA cannot encode: ``UnicodeError``) is a name not found, as
    callers of ``getaddrinfo`` expect."""
    if isinstance(error, OSError):
        try:
            return copy.copy(error)
        except Exception:  # an error that cannot be copied: its words are enough
            pass
    return socket.gaierror(socket.EAI_NONAME, f"{type(error).__name__}: {error}")


def _is_address(host: str) -> bool:
    """Whether ``host`` is an address written out (``fe80::1%eth0`` too; and IPv4's short
    forms, ``127.1``, ``2130706433``, which the resolver reads as addresses)."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        try:
            socket.inet_aton(host)
        except (OSError, ValueError):
            return False
    return True


_LOOKUPS = NameLookups()


def addresses(host: str, port: int | str | None, family: int = 0, type: int = 0, *,
              timeout: float) -> Addresses:
    """The addresses of ``host`` (see :meth:`NameLookups.addresses`)."""
    return _LOOKUPS.addresses(host, port, family, type, timeout=timeout)
