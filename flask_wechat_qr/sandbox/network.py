"""This computer's address on its network: where a phone on the same network may reach a
site that the browser on this computer opened at a loopback address."""

from __future__ import annotations

import socket

from ..urls import is_loopback_host

#: Any address off this computer: connecting a UDP socket to it only picks the route (no
#: packet is sent). Werkzeug's development server picks its "Running on http://<address>"
#: the same way, so the page names the address ``flask run --host 0.0.0.0`` printed.
_OFF_THIS_COMPUTER = ("10.253.155.219", 58162)


def network_address() -> str | None:
    """The IPv4 address this computer's traffic leaves from; ``None`` without one (no
    network, or IPv6 only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(_OFF_THIS_COMPUTER)
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if is_loopback_host(address) else address
