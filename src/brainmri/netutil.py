"""Which host names stay on this machine: shared by the web app (``serve``), which refuses to
listen beyond loopback without a token, and the load test (``loadtest``), which only ever
targets loopback. Standard library only, so the load-test client imports nothing of the app."""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and any loopback address (``127.0.0.0/8``, ``::1``; brackets allowed)."""
    if host.strip("[]") in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
