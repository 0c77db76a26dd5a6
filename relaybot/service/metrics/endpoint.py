"""The HTTP endpoint Prometheus scrapes: prometheus_client's own server on the configured
address and port, serving one registry, started with the bot and shut down when it stops.
An address other than loopback is served as configured, with a warning in the log."""

from __future__ import annotations

import errno
import ipaddress
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from relaybot.config.schema import ConfigError
from relaybot.log import get_logger

log = get_logger(component="metrics")

_JOIN_TIMEOUT = 5.0  # seconds for the server thread to end once shut down


class Endpoint:
    def __init__(self, registry: CollectorRegistry, address: str, port: int) -> None:
        self.registry = registry
        self.address = address
        self.port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Listen, and serve on a daemon thread; the port it listens on (the configured one,
        or the one the system chose for port 0). A port in use or an address this host does
        not have is a ConfigError naming the key."""
        try:
            self._server, self._thread = start_http_server(
                self.port, addr=self.address, registry=self.registry
            )
        except OSError as exc:
            key = "port" if exc.errno in (errno.EADDRINUSE, errno.EACCES) else "address"
            raise ConfigError(
                f"metrics.{key}: cannot listen on {self.address} port {self.port}: "
                f"{exc.strerror or exc}"
            ) from None
        self.port = self._server.server_port
        if ipaddress.ip_address(self.address).is_loopback:
            log.info("metrics_listening", address=self.address, port=self.port)
        else:
            log.warning(
                "metrics_exposed",
                address=self.address,
                port=self.port,
                reason="not a loopback address: whoever reaches it reads the channel names",
            )
        return self.port

    def close(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        thread.join(_JOIN_TIMEOUT)
