"""What systemd hears from a bot on several networks: one STATUS line naming each network's
state, READY=1 only once every network is ready, and watchdog pings only while every
network's loop is turning."""

from __future__ import annotations

from dataclasses import dataclass, field

from relaybot.service.readiness import READY_GRACE, ServiceStatus


@dataclass
class FakeNotifier:
    watchdog_interval: float | None = 3.0
    is_ready: bool = False
    sent: list[tuple[str, ...]] = field(default_factory=list)

    def ready(self, status: str) -> None:
        self.is_ready = True
        self.sent.append(("READY", status))

    def status(self, status: str) -> None:
        self.sent.append(("STATUS", status))

    def watchdog(self) -> None:
        self.sent.append(("WATCHDOG",))


@dataclass
class FakeReadiness:
    status: str
    ready: bool = False
    alive_at: float = 0.0


def service(notifier: FakeNotifier, *networks: tuple[str, FakeReadiness]) -> ServiceStatus:
    return ServiceStatus(notifier, networks, degradation=lambda: "")  # type: ignore[arg-type]


def test_one_status_line_for_every_network_and_ready_when_all_are() -> None:
    notifier = FakeNotifier(watchdog_interval=None)
    alpha = FakeReadiness("connected to a:6667 as bot; in #x", ready=True)
    beta = FakeReadiness("connecting to b:6697")
    status = service(notifier, ("alpha", alpha), ("beta", beta))
    status.update(now=0.0)
    assert notifier.sent == [
        ("STATUS", "alpha: connected to a:6667 as bot; in #x | beta: connecting to b:6697")
    ]
    status.update(now=0.1)  # nothing changed: nothing sent
    assert len(notifier.sent) == 1
    beta.status, beta.ready = "connected to b:6697 as bot; in #y", True
    status.update(now=0.2)
    assert notifier.sent[-1] == (
        "READY",
        "alpha: connected to a:6667 as bot; in #x | beta: connected to b:6697 as bot; in #y",
    )


def test_a_network_that_never_connects_does_not_hold_the_start_for_ever() -> None:
    notifier = FakeNotifier(watchdog_interval=None)
    alpha = FakeReadiness("connected to a:6667 as bot; in #x", ready=True)
    beta = FakeReadiness("connecting to b:6697")
    status = service(notifier, ("alpha", alpha), ("beta", beta))
    started = status._started
    status.update(now=started + READY_GRACE - 1)
    assert not notifier.is_ready
    status.update(now=started + READY_GRACE)
    assert notifier.sent[-1] == (
        "READY",
        "alpha: connected to a:6667 as bot; in #x | beta: connecting to b:6697",
    )
    # With none ready, nothing to report as started.
    lonely = FakeNotifier(watchdog_interval=None)
    down = service(lonely, ("alpha", FakeReadiness("connecting")), ("beta", FakeReadiness("c")))
    down.update(now=down._started + 10 * READY_GRACE)
    assert not lonely.is_ready


def test_one_network_reads_as_before() -> None:
    notifier = FakeNotifier(watchdog_interval=None)
    service(notifier, ("default", FakeReadiness("connecting to a:6667"))).update(now=0.0)
    assert notifier.sent == [("STATUS", "connecting to a:6667")]


def test_the_watchdog_stops_when_one_network_loop_stops_turning() -> None:
    notifier = FakeNotifier(watchdog_interval=3.0)
    alpha = FakeReadiness("a", ready=True, alive_at=10.0)
    beta = FakeReadiness("b", ready=True, alive_at=10.0)
    status = service(notifier, ("alpha", alpha), ("beta", beta))
    status.update(now=11.0)
    assert notifier.sent.count(("WATCHDOG",)) == 1
    alpha.alive_at = 13.0  # alpha keeps turning; beta's last heartbeat was at 10.0
    status.update(now=13.5)  # beta 3.5 s silent, more than the interval: no ping
    assert notifier.sent.count(("WATCHDOG",)) == 1
    beta.alive_at = 13.6
    status.update(now=13.7)
    assert notifier.sent.count(("WATCHDOG",)) == 2
