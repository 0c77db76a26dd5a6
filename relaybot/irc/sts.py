"""IRCv3 Strict Transport Security (https://ircv3.net/specs/extensions/sts): reading the `sts`
capability's value, and the persisted policies, one per host, that make the bot connect to that
host with TLS only until they expire. The policies live in a small JSON file that the session
is given (in the bot's state directory); without one they last as long as the process."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relaybot.files import write_atomically
from relaybot.log import get_logger

_log = get_logger(component="session")


@dataclass(frozen=True, slots=True)
class StsValue:
    """The parts of one `sts=` value this client uses; None where missing or malformed (the
    spec: a policy without its required part is no policy)."""

    port: int | None  # the upgrade policy: only heeded on a plaintext connection
    duration: int | None  # the persistence policy: only heeded on a TLS connection


def parse(value: str) -> StsValue:
    """`port=6697,duration=2592000,preload`: unknown keys ignored, bad numbers dropped."""
    port = duration = None
    for token in value.split(","):
        key, _, raw = token.partition("=")
        if key == "port" and raw.isdigit() and 0 < int(raw) < 65536:
            port = int(raw)
        elif key == "duration" and raw.isdigit():
            duration = int(raw)
    return StsValue(port, duration)


@dataclass(frozen=True, slots=True)
class StsPolicy:
    port: int  # the TLS port to use instead of a plaintext one
    duration: int  # seconds, as the server gave it: the expiry is pushed on by it each time
    expires: float  # wall-clock (time.time) seconds


class StsPolicies:
    """The policies by host (as configured, lowercased), read once from `path` and written back
    on every change. A file that cannot be read or written is logged and the policies go on
    in memory: a policy lost that way only means one more plaintext attempt, which the
    server's upgrade policy answers again."""

    def __init__(self, path: Path | None, log: Any = None) -> None:
        self.path = path
        self.log = log if log is not None else _log
        self._policies: dict[str, StsPolicy] = self._load()

    def get(self, host: str, now: float) -> StsPolicy | None:
        """The policy for `host` while it lasts; an expired one is dropped."""
        policy = self._policies.get(host.lower())
        if policy is not None and policy.expires <= now:
            self.log.info("sts_policy_expired", host=host)
            self._drop(host)
            return None
        return policy

    def learn(self, host: str, port: int, duration: int, now: float) -> None:
        """A persistence policy seen on a TLS connection: store it, or, for duration 0, drop
        the one there is."""
        if duration == 0:
            if host.lower() in self._policies:
                self.log.info("sts_policy_removed", host=host)
                self._drop(host)
            return
        known = self._policies.get(host.lower())
        if known is None or (known.port, known.duration) != (port, duration):
            self.log.info("sts_policy_stored", host=host, port=port, duration=duration)
        self._policies[host.lower()] = StsPolicy(port, duration, now + duration)
        self._save()

    def reschedule(self, host: str, now: float) -> None:
        """A TLS connection to `host` ended, or is still up: its policy lasts `duration` from
        now (the spec counts a policy's time from the last moment the client was connected,
        so a connection longer than the duration must not let the policy lapse under it)."""
        policy = self._policies.get(host.lower())
        if policy is not None:
            self._policies[host.lower()] = StsPolicy(
                policy.port, policy.duration, now + policy.duration
            )
            self._save()

    def _drop(self, host: str) -> None:
        self._policies.pop(host.lower(), None)
        self._save()

    def _load(self) -> dict[str, StsPolicy]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            return {
                str(host): StsPolicy(
                    int(item["port"]), int(item["duration"]), float(item["expires"])
                )
                for host, item in doc["policies"].items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.log.error("sts_policies_unreadable", path=str(self.path), problem=str(exc))
            return {}

    def _save(self) -> None:
        if self.path is None:
            return
        doc = {
            "policies": {
                host: {"port": p.port, "duration": p.duration, "expires": p.expires}
                for host, p in sorted(self._policies.items())
            }
        }
        try:
            # A crash mid-write leaves the old file whole.
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomically(self.path, json.dumps(doc, indent=2).encode() + b"\n")
        except OSError as exc:
            self.log.error("sts_policies_not_saved", path=str(self.path), problem=str(exc))
