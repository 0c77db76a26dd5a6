"""The metrics endpoint of a live bot: on a real IRC server (ngIRCd), replying through the real
embedded model, scraped over HTTP on loopback. A channel reply and a query reply show up in
the reply counter under their channel labels (a query never under the peer's nick), in the
latency histograms, in the token counters the local engine feeds, and the connection gauge
reads 1 while the bot is on the server; the endpoint is gone once the bot stops."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from relaybot.config.schema import Config
from tests.support.botrunner import BotRunner
from tests.support.ircservers import RawClient, RunningServer, free_port, privmsg_from

pytestmark = pytest.mark.integration

CHANNEL = "#metrics"
REPLY_TIMEOUT = 30.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def scraped_until(port: int, ready: Callable[[Samples], bool], what: str) -> Samples:
    """Scrape until `ready`: a reply's counters move when its last line is written, a moment
    after the client may have read it."""
    deadline = time.monotonic() + 10.0
    while True:
        samples = scrape(port)
        if ready(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_a_live_bot_serves_its_metrics_over_http(
    irc_server_factory: Callable[[str], RunningServer],
    config_factory: Callable[[str], Config],
    real_engine: object,
) -> None:
    server = irc_server_factory("ngircd")
    port = free_port()
    config = config_factory(f"""
[irc]
network = "test"
host = "{server.host}"
port = {server.port}
nick = "relaybot"
channels = ["{CHANNEL}"]
[reply]
max_lines = 1
[policy]
cooldown = 0.0
[model]
max_new_tokens = 12
seed = 7
[metrics]
enabled = true
port = {port}
""")
    with BotRunner(config, real_engine) as runner:  # type: ignore[arg-type]
        runner.wait_until(lambda: runner.turns(CHANNEL) is not None, 20, "the bot to join")
        assert sample(scrape(port), "relaybot_irc_connected", network="test") == 1

        alice = RawClient.connect(server.host, server.port, "alice")
        alice.join(CHANNEL)
        alice.privmsg(CHANNEL, "relaybot: hello! what do you like to do on weekends?")
        alice.wait_for(privmsg_from("relaybot", CHANNEL), REPLY_TIMEOUT)
        alice.privmsg("relaybot", "hi, are you a bot?")
        alice.wait_for(privmsg_from("relaybot", "alice"), REPLY_TIMEOUT)

        sent = "relaybot_replies_sent_total"
        samples = scraped_until(
            port,
            lambda s: sample(s, sent, network="test", channel="(query)") == 1,
            "the query reply to be counted",
        )
        assert sample(samples, sent, network="test", channel=CHANNEL) == 1
        assert not any(dict(labels).get("channel") == "alice" for _, labels in samples)
        for histogram in ("reply_latency", "reply_queued", "reply_wait", "time_to_first_token"):
            count = f"relaybot_{histogram}_seconds_count"
            assert sample(samples, count, network="test") == 2, histogram
        latency = sample(samples, "relaybot_reply_latency_seconds_sum", network="test")
        assert latency is not None and 0 < latency < 2 * REPLY_TIMEOUT
        generated = sample(samples, "relaybot_generated_tokens_total", network="test")
        assert generated is not None and 0 < generated <= 2 * 12
        assert (sample(samples, "relaybot_prompt_tokens_total", network="test") or 0) > 0
        assert (sample(samples, "relaybot_decode_batch_size_count") or 0) >= 1
        assert sample(samples, "relaybot_irc_connected", network="test") == 1
        assert sample(samples, "relaybot_reply_queue_depth", network="test") == 0
        alice.close()
    with pytest.raises(urllib.error.URLError):
        scrape(port)
