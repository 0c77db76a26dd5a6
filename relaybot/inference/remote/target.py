"""Where a remote server is: its configured URL split into the parts the client needs, and the
paths of its API and of its root (health checks) under any base path the URL has."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Target:
    """Where the server is: `url` as configured, split into its parts."""

    url: str
    tls: bool
    host: str
    port: int
    base_path: str  # "" or a prefix such as "/api" or "/v1", without a trailing slash

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        return cls(url.rstrip("/"), tls, parts.hostname, port, parts.path.rstrip("/"))

    def api_path(self, path: str) -> str:
        """`path` (such as /v1/completions) under the base path; OpenAI clients are often
        given a base URL that already ends in /v1, so that prefix is not doubled."""
        if path.startswith("/v1/") and self.base_path.endswith("/v1"):
            return self.base_path + path.removeprefix("/v1")
        return self.base_path + path

    def root_path(self, path: str) -> str:
        """`path` (such as /health) at the server's root, below any /v1 of the base URL."""
        return self.base_path.removesuffix("/v1") + path

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def origin(self) -> str:
        """scheme://host[:port], without the user information or the path of `url`."""
        return f"{'https' if self.tls else 'http'}://{self.host_header}"
