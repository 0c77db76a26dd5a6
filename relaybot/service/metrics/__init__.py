"""The Prometheus metrics (`[metrics]`, off by default): one registry for the process, a
handle for each network that its relay and IRC session report to, one for the inference worker
all networks share, and the HTTP endpoint that serves them.

`families` defines every metric, `labels` bounds the channel label, `handles` turns reports
into samples, `endpoint` serves the registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from relaybot.config.schema import MetricsConfig
from relaybot.service.metrics.endpoint import Endpoint
from relaybot.service.metrics.families import Families
from relaybot.service.metrics.handles import NetworkMetrics, WorkerMetrics

__all__ = ["Metrics", "NetworkMetrics", "WorkerMetrics"]


class Metrics:
    def __init__(self, config: MetricsConfig) -> None:
        self.config = config
        self.registry = CollectorRegistry()
        self.families = Families.on(self.registry)
        self.worker = WorkerMetrics(self.families)
        self._networks: dict[str, NetworkMetrics] = {}
        self.endpoint = Endpoint(self.registry, config.address, config.port)

    def network(self, name: str) -> NetworkMetrics:
        """The handle of network `name` (the same one each time it is asked for)."""
        handle = self._networks.get(name)
        if handle is None:
            handle = self._networks[name] = NetworkMetrics(
                self.families, name, self.config.max_channels
            )
        return handle

    def serve(self) -> int:
        """Start the endpoint; the port it listens on."""
        return self.endpoint.start()

    def close(self) -> None:
        self.endpoint.close()

    def exposition(self) -> bytes:
        """What a scrape returns now, in the Prometheus text format."""
        return generate_latest(self.registry)
