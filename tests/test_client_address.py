"""Client addresses as the per-client limits count them."""

from __future__ import annotations

import pytest

from flask_wechat_qr.client_address import client_network


@pytest.mark.parametrize(("address", "counted_as"), [
    ("198.51.100.7", "198.51.100.7"),
    ("::ffff:198.51.100.7", "198.51.100.7"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("::1", "::/64"),
    ("unknown", "unknown"),
    ("", ""),
    ("2001:db8::" + "f" * 80, "2001:db8::" + "f" * 80),
])
def test_client_network_counts_an_ipv6_64_as_one_client(address: str, counted_as: str) -> None:
    assert client_network(address) == counted_as
