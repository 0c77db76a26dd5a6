"""What each part of the bot reports to: a network's handle (`NetworkMetrics`, the relay's
ReplyObserver and the session's SessionObserver, with the network label bound and that
network's channel labels bounded) and the shared worker's (`WorkerMetrics`, whose reports
name the network of each job)."""

from __future__ import annotations

from collections.abc import Callable

from relaybot.bridge.observer import DeclineReason, FailureReason
from relaybot.conversation.identity import ContextKey
from relaybot.inference.observer import TokenCounts
from relaybot.service.metrics.families import Families
from relaybot.service.metrics.labels import ChannelLabels


class NetworkMetrics:
    def __init__(self, families: Families, network: str, max_channels: int) -> None:
        self.families = families
        self.network = network
        self.channels = ChannelLabels(max_channels)
        # Every series that has no channel exists from the start, at zero: a rate over a
        # series that appears only with its first event misses that event.
        for family in (
            families.reply_wait,
            families.first_token,
            families.reply_queued,
            families.reply_latency,
            families.prompt_tokens,
            families.generated_tokens,
            families.prefix_cache_hits,
            families.prefix_cache_reused_tokens,
            families.irc_reconnects,
        ):
            family.labels(network)
        families.irc_connected.labels(network).set(0)
        families.queue_depth.labels(network).set(0)
        families.outbox_lines.labels(network).set(0)

    def _channel(self, key: ContextKey) -> str:
        return self.channels(key[1])

    # --- relaybot.bridge.observer.ReplyObserver ----------------------------------------------

    def declined(self, key: ContextKey, reason: DeclineReason) -> None:
        self.families.replies_declined.labels(self.network, self._channel(key), reason).inc()

    def failed(self, key: ContextKey, reason: FailureReason) -> None:
        self.families.replies_failed.labels(self.network, self._channel(key), reason).inc()

    def queued(self, key: ContextKey, seconds: float) -> None:
        self.families.reply_queued.labels(self.network).observe(seconds)

    def first_line(self, key: ContextKey, seconds: float) -> None:
        self.families.reply_latency.labels(self.network).observe(seconds)

    def sent(self, key: ContextKey) -> None:
        self.families.replies_sent.labels(self.network, self._channel(key)).inc()

    def queue_depth(self, depth: Callable[[], int]) -> None:
        self.families.queue_depth.labels(self.network).set_function(depth)

    # --- relaybot.irc.observer.SessionObserver -----------------------------------------------

    def registered(self, up: bool) -> None:
        self.families.irc_connected.labels(self.network).set(1 if up else 0)

    def reconnecting(self) -> None:
        self.families.irc_reconnects.labels(self.network).inc()

    def outbox_lines(self, lines: Callable[[], int]) -> None:
        self.families.outbox_lines.labels(self.network).set_function(lines)


class WorkerMetrics:
    """relaybot.inference.observer.WorkerObserver, for the one worker all networks share."""

    def __init__(self, families: Families) -> None:
        self.families = families

    def started(self, network: str, waited: float) -> None:
        self.families.reply_wait.labels(network).observe(waited)

    def generated(self, network: str, counts: TokenCounts) -> None:
        families = self.families
        families.prompt_tokens.labels(network).inc(counts.prompt_tokens)
        families.generated_tokens.labels(network).inc(counts.generated_tokens)
        if counts.reused_tokens > 0:
            families.prefix_cache_hits.labels(network).inc()
            families.prefix_cache_reused_tokens.labels(network).inc(counts.reused_tokens)

    def first_token(self, network: str, seconds: float) -> None:
        self.families.first_token.labels(network).observe(seconds)

    def batch(self, jobs: int) -> None:
        self.families.batch_size.observe(jobs)
