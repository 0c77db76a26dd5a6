"""The metric definitions: every name, help text, label set and bucket list, made on the
registry they are given (never the process-wide default one, so that each bot, and each test,
has its own)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

NETWORK = ("network",)
CHANNEL = ("network", "channel")
REASON = ("network", "channel", "reason")

# Seconds. Replies are bounded by `reply.max_age` (60 s by default, at most 3600).
WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
REPLY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0)
# Jobs in one batch: `model.max_batch` is 8 by default; larger values are for big GPUs.
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)


@dataclass(frozen=True, slots=True)
class Families:
    replies_sent: Counter
    replies_declined: Counter
    replies_failed: Counter
    queue_depth: Gauge
    reply_wait: Histogram
    reply_queued: Histogram
    first_token: Histogram
    reply_latency: Histogram
    prompt_tokens: Counter
    generated_tokens: Counter
    prefix_cache_hits: Counter
    prefix_cache_reused_tokens: Counter
    batch_size: Histogram
    irc_connected: Gauge
    irc_reconnects: Counter
    outbox_lines: Gauge

    @classmethod
    def on(cls, registry: CollectorRegistry) -> Families:
        r = registry
        return cls(
            replies_sent=Counter(
                "relaybot_replies_sent",
                "Replies whose every line was written to the server.",
                CHANNEL,
                registry=r,
            ),
            replies_declined=Counter(
                "relaybot_replies_declined",
                "Replies the bot chose not to give, by reason (policy, budgets, freshness, "
                "moderation).",
                REASON,
                registry=r,
            ),
            replies_failed=Counter(
                "relaybot_replies_failed",
                "Replies the bot meant to give and could not, by reason (engine, empty, "
                "outbox_full, undelivered).",
                REASON,
                registry=r,
            ),
            queue_depth=Gauge(
                "relaybot_reply_queue_depth",
                "Replies being generated or waiting for a generation slot.",
                NETWORK,
                registry=r,
            ),
            reply_wait=Histogram(
                "relaybot_reply_wait_seconds",
                "Seconds from the line that asked to its reply starting to generate.",
                NETWORK,
                buckets=WAIT_BUCKETS,
                registry=r,
            ),
            first_token=Histogram(
                "relaybot_time_to_first_token_seconds",
                "Seconds from the line that asked to the engine choosing the reply's first "
                "token (the local engine; remote engines do not report it).",
                NETWORK,
                buckets=REPLY_BUCKETS,
                registry=r,
            ),
            reply_queued=Histogram(
                "relaybot_reply_queued_seconds",
                "Seconds from the line that asked to the reply's lines being handed to the "
                "outbox (generated, moderated, laid out).",
                NETWORK,
                buckets=REPLY_BUCKETS,
                registry=r,
            ),
            reply_latency=Histogram(
                "relaybot_reply_latency_seconds",
                "Seconds from the line that asked to the reply's first line written to the "
                "server (echoed back, where the server echoes).",
                NETWORK,
                buckets=REPLY_BUCKETS,
                registry=r,
            ),
            prompt_tokens=Counter(
                "relaybot_prompt_tokens",
                "Prompt tokens of finished generations (engines that count tokens: local).",
                NETWORK,
                registry=r,
            ),
            generated_tokens=Counter(
                "relaybot_generated_tokens",
                "Tokens generated (engines that count tokens: local).",
                NETWORK,
                registry=r,
            ),
            prefix_cache_hits=Counter(
                "relaybot_prefix_cache_hits",
                "Generations that reused part of their prompt's KV state from the prefix cache.",
                NETWORK,
                registry=r,
            ),
            prefix_cache_reused_tokens=Counter(
                "relaybot_prefix_cache_reused_tokens",
                "Prompt tokens whose KV state came from the prefix cache, not computed again.",
                NETWORK,
                registry=r,
            ),
            batch_size=Histogram(
                "relaybot_decode_batch_size",
                "Jobs one engine batch generated: those it started with and those that joined "
                "it between decode steps (all networks together).",
                buckets=BATCH_BUCKETS,
                registry=r,
            ),
            irc_connected=Gauge(
                "relaybot_irc_connected",
                "1 while the bot is connected and registered on the network, else 0.",
                NETWORK,
                registry=r,
            ),
            irc_reconnects=Counter(
                "relaybot_irc_reconnects",
                "Reconnect attempts scheduled after a lost link or a failed attempt.",
                NETWORK,
                registry=r,
            ),
            outbox_lines=Gauge(
                "relaybot_outbox_lines",
                "Lines waiting in the outbox to be sent.",
                NETWORK,
                registry=r,
            ),
        )
