"""relaybot.service.metrics: the channel label bound, what each report becomes in the registry
(read back through the Prometheus text format), one registry shared by several networks, and
the endpoint served over HTTP on loopback."""

from __future__ import annotations

import dataclasses
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from relaybot.config.schema import ConfigError, MetricsConfig
from relaybot.conversation.identity import ContextKey
from relaybot.service.metrics import Metrics
from relaybot.service.metrics import endpoint as endpoint_module
from relaybot.service.metrics.labels import OTHER, QUERY, ChannelLabels

LOOPBACK = MetricsConfig(enabled=True, address="127.0.0.1", port=0)


@dataclasses.dataclass(frozen=True)
class Counts:
    prompt_tokens: int
    reused_tokens: int
    generated_tokens: int


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, by name and labels, parsed back from the text format."""
    text = metrics.exposition().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


def key(name: str, network: str = "net") -> ContextKey:
    return ContextKey(network, name)


# --- the channel label bound ----------------------------------------------------------------


def test_the_first_channels_keep_their_label_and_later_ones_are_other() -> None:
    labels = ChannelLabels(2)
    assert [labels(name) for name in ("#a", "#b", "#c", "#a", "&d")] == [
        "#a",
        "#b",
        OTHER,
        "#a",
        OTHER,
    ]


def test_a_query_is_never_labelled_by_nick() -> None:
    labels = ChannelLabels(5)
    assert labels("alice") == QUERY
    assert labels("#a") == "#a"  # and it took no channel's place
    assert ChannelLabels(0)("#a") == OTHER


def test_replies_in_channels_past_the_bound_count_as_other() -> None:
    metrics = Metrics(dataclasses.replace(LOOPBACK, max_channels=1))
    net = metrics.network("net")
    for name in ("#a", "#b", "#c", "bob"):
        net.sent(key(name))
    net.sent(key("#a"))
    sent = "relaybot_replies_sent_total"
    assert value(metrics, sent, network="net", channel="#a") == 2
    assert value(metrics, sent, network="net", channel=OTHER) == 2
    assert value(metrics, sent, network="net", channel=QUERY) == 1
    assert value(metrics, sent, network="net", channel="#b") is None


# --- reports into the registry ----------------------------------------------------------------


def test_declines_and_failures_carry_their_reason() -> None:
    metrics = Metrics(LOOPBACK)
    net = metrics.network("net")
    net.declined(key("#a"), "user_budget")
    net.declined(key("#a"), "user_budget")
    net.declined(key("#a"), "stale")
    net.failed(key("alice"), "engine")
    declined = "relaybot_replies_declined_total"
    assert value(metrics, declined, network="net", channel="#a", reason="user_budget") == 2
    assert value(metrics, declined, network="net", channel="#a", reason="stale") == 1
    failed = "relaybot_replies_failed_total"
    assert value(metrics, failed, network="net", channel=QUERY, reason="engine") == 1


def test_reply_times_are_histograms_per_network() -> None:
    metrics = Metrics(LOOPBACK)
    net = metrics.network("net")
    net.queued(key("#a"), 1.5)
    net.first_line(key("#a"), 2.5)
    net.first_line(key("#b"), 40.0)
    latency = "relaybot_reply_latency_seconds"
    assert value(metrics, f"{latency}_count", network="net") == 2
    assert value(metrics, f"{latency}_sum", network="net") == 42.5
    assert value(metrics, f"{latency}_bucket", network="net", le="3.0") == 1
    assert value(metrics, "relaybot_reply_queued_seconds_count", network="net") == 1


def test_gauges_read_their_source_at_each_scrape() -> None:
    metrics = Metrics(LOOPBACK)
    net = metrics.network("net")
    depth, lines = [0], [0]
    net.queue_depth(lambda: depth[0])
    net.outbox_lines(lambda: lines[0])
    assert value(metrics, "relaybot_reply_queue_depth", network="net") == 0
    depth[0], lines[0] = 3, 7
    assert value(metrics, "relaybot_reply_queue_depth", network="net") == 3
    assert value(metrics, "relaybot_outbox_lines", network="net") == 7


def test_the_connection_gauge_follows_registration_and_reconnects_count() -> None:
    metrics = Metrics(LOOPBACK)
    net = metrics.network("net")
    assert value(metrics, "relaybot_irc_connected", network="net") == 0
    assert value(metrics, "relaybot_irc_reconnects_total", network="net") == 0
    net.registered(True)
    assert value(metrics, "relaybot_irc_connected", network="net") == 1
    net.registered(False)
    net.reconnecting()
    net.reconnecting()
    assert value(metrics, "relaybot_irc_connected", network="net") == 0
    assert value(metrics, "relaybot_irc_reconnects_total", network="net") == 2


def test_the_worker_reports_tokens_and_waits_by_the_network_of_each_job() -> None:
    metrics = Metrics(LOOPBACK)
    metrics.network("net")
    metrics.worker.started("net", 0.3)
    metrics.worker.generated("net", Counts(prompt_tokens=100, reused_tokens=0, generated_tokens=20))
    metrics.worker.generated("net", Counts(prompt_tokens=120, reused_tokens=90, generated_tokens=5))
    metrics.worker.generated("other", Counts(prompt_tokens=10, reused_tokens=4, generated_tokens=3))
    metrics.worker.batch(3)
    assert value(metrics, "relaybot_reply_wait_seconds_count", network="net") == 1
    assert value(metrics, "relaybot_generated_tokens_total", network="net") == 25
    assert value(metrics, "relaybot_prompt_tokens_total", network="net") == 220
    assert value(metrics, "relaybot_prefix_cache_hits_total", network="net") == 1
    assert value(metrics, "relaybot_prefix_cache_reused_tokens_total", network="net") == 90
    assert value(metrics, "relaybot_generated_tokens_total", network="other") == 3
    assert value(metrics, "relaybot_prefix_cache_hits_total", network="other") == 1
    # A batch mixes networks: its size has no network label.
    assert value(metrics, "relaybot_decode_batch_size_count") == 1
    assert value(metrics, "relaybot_decode_batch_size_sum") == 3


def test_networks_share_one_registry_each_with_its_own_label_and_bound() -> None:
    metrics = Metrics(dataclasses.replace(LOOPBACK, max_channels=1))
    assert metrics.network("libera") is metrics.network("libera")
    libera, oftc = metrics.network("libera"), metrics.network("oftc")
    libera.sent(key("#a", "libera"))
    oftc.sent(key("#b", "oftc"))  # oftc's own first channel: labelled, whatever libera did
    oftc.registered(True)
    sent = "relaybot_replies_sent_total"
    assert value(metrics, sent, network="libera", channel="#a") == 1
    assert value(metrics, sent, network="oftc", channel="#b") == 1
    assert value(metrics, "relaybot_irc_connected", network="libera") == 0
    assert value(metrics, "relaybot_irc_connected", network="oftc") == 1


def test_each_bot_has_a_registry_of_its_own() -> None:
    first, second = Metrics(LOOPBACK), Metrics(LOOPBACK)
    first.network("net").sent(key("#a"))
    second.network("net")
    assert value(second, "relaybot_replies_sent_total", network="net", channel="#a") is None


# --- the endpoint ------------------------------------------------------------------------------


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        return str(response.read().decode())


def test_the_endpoint_serves_the_registry_on_loopback_until_closed() -> None:
    metrics = Metrics(LOOPBACK)
    metrics.network("net").sent(key("#a"))
    with capture_logs() as logs:
        port = metrics.serve()
    try:
        assert port > 0
        text = scrape(port)
        families = {family.name: family for family in text_string_to_metric_families(text)}
        [sample] = [
            s for s in families["relaybot_replies_sent"].samples if s.name.endswith("_total")
        ]
        assert sample.labels == {"network": "net", "channel": "#a"} and sample.value == 1
    finally:
        metrics.close()
    assert [entry["event"] for entry in logs] == ["metrics_listening"]
    with pytest.raises(urllib.error.URLError):
        scrape(port)


def test_a_port_in_use_names_the_key() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        metrics = Metrics(dataclasses.replace(LOOPBACK, port=port))
        with pytest.raises(
            ConfigError, match=rf"^metrics.port: cannot listen on 127.0.0.1 port {port}"
        ):
            metrics.serve()


def test_an_address_this_host_lacks_names_the_key() -> None:
    metrics = Metrics(dataclasses.replace(LOOPBACK, address="192.0.2.1"))  # TEST-NET-1
    with pytest.raises(ConfigError, match=r"^metrics.address: cannot listen on 192.0.2.1"):
        metrics.serve()


def test_an_address_other_than_loopback_is_served_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[tuple[Any, ...]] = []

    class Server:
        server_port = 9464

    def start(port: int, addr: str, registry: Any) -> tuple[Server, None]:
        # Not really listening: a test binds nothing outside loopback.
        started.append((port, addr))
        return Server(), None

    monkeypatch.setattr(endpoint_module, "start_http_server", start)
    metrics = Metrics(dataclasses.replace(LOOPBACK, address="0.0.0.0", port=9464))
    with capture_logs() as logs:
        assert metrics.serve() == 9464
    assert started == [(9464, "0.0.0.0")]
    [entry] = logs
    assert entry["event"] == "metrics_exposed" and entry["log_level"] == "warning"
    assert entry["address"] == "0.0.0.0"
