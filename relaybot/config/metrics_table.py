"""Reads the `[metrics]` table: whether the Prometheus endpoint runs, where it listens, and the
bound on distinct channel labels."""

from __future__ import annotations

import ipaddress

from relaybot.config.schema import MetricsConfig
from relaybot.config.section import Section

# Enough for a bot in many channels; beyond it Prometheus would keep a series per channel for
# every labelled metric, which is what the bound is there to prevent.
MAX_CHANNEL_LABELS = 10_000


def read_metrics(section: Section) -> MetricsConfig:
    address = section.get("address", str)
    try:
        # An IP literal only: a host name may resolve to an address nobody meant to expose,
        # and "" would listen on every interface.
        ipaddress.ip_address(address)
    except ValueError:
        raise section.fail(
            "address", f"{address!r} is not an IP address (127.0.0.1 or ::1 for this host only)"
        ) from None
    config = MetricsConfig(
        enabled=section.get("enabled", bool),
        address=address,
        port=section.number("port", int, 0, 65535),
        max_channels=section.number("max_channels", int, 0, MAX_CHANNEL_LABELS),
    )
    section.finish()
    return config
