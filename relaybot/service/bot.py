"""The process: one engine and one inference worker shared by every network, one `Network`
per `[[networks]]` table (or the one `[irc]`), each on a loop thread of its own so that a
fault on one link never stalls the others; signals, reloads and systemd on the main thread;
with `[metrics]` enabled, the endpoint every part reports to.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import select
import signal
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from relaybot.config.loader import load_config
from relaybot.config.schema import Config, ConfigError
from relaybot.inference.engine import Engine, degradation
from relaybot.inference.worker import Completion, InferenceWorker
from relaybot.log import get_logger
from relaybot.moderation import ModerationChain
from relaybot.service.metrics import Metrics
from relaybot.service.network import Network, state_directory
from relaybot.service.readiness import HEARTBEAT_EVERY, ServiceStatus
from relaybot.service.systemd import Notifier

__all__ = ["Bot", "state_directory"]

log = get_logger(component="bot")

# Jobs waiting for the engine, all networks together (each network's share bounds it first).
MAX_PENDING = 4096
# Seconds a stopping network gets to QUIT and save its contexts.
STOP_TIMEOUT = 20.0


class Bot:
    def __init__(
        self,
        config: Config,
        engine: Engine,
        *,
        config_path: Path | None = None,
        moderation: Mapping[str, ModerationChain] | ModerationChain | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.engine = engine
        # Metrics: one registry for the process; each network reports through a handle with
        # its network label bound, the worker through one that reads each job's network.
        self.metrics = Metrics(config.metrics) if config.metrics.enabled else None
        # Jobs of every network share one queue and one decode batch.
        self.worker = InferenceWorker(
            engine,
            self._completed,
            max_batch=config.model.max_batch,
            # Each network's own share, read at each submit (a reload may raise it), so that
            # one network's flood cannot fill the queue the others need; the whole queue's
            # bound is only a backstop.
            max_pending=MAX_PENDING,
            max_pending_per_network=self._pending_share,
            observer=self.metrics.worker if self.metrics else None,
        )
        # Another thread, or a signal handler, writes a byte here to wake the main loop.
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._stop_requested = False
        self._signal_name: str | None = None  # the signal that asked us to stop
        self._hangup_requested = False
        self._crashed: list[str] = []  # networks whose loop ended in an exception
        notifier = Notifier.from_environment()
        interval = notifier.watchdog_interval
        heartbeat = HEARTBEAT_EVERY if interval is None else min(HEARTBEAT_EVERY, interval / 4)
        job_ids = itertools.count(1)
        self.networks: dict[str, Network] = {}
        if isinstance(moderation, ModerationChain) and len(config.networks) > 1:
            # Each network closes its chain on reload and at exit: one chain cannot be shared.
            raise ValueError("give one moderation chain per network (a mapping by name)")
        for net in config.networks:
            chain = moderation.get(net.name) if isinstance(moderation, Mapping) else moderation
            self.networks[net.name] = Network(
                config,
                net,
                engine,
                self.worker,
                job_ids=job_ids,
                moderation=chain,
                reload=functools.partial(self._reload_from, net.name),
                on_status=self._wake,
                heartbeat=heartbeat,
                metrics=self.metrics.network(net.name) if self.metrics else None,
            )
        self.status = ServiceStatus(
            notifier,
            [(name, network.readiness) for name, network in self.networks.items()],
            degradation=lambda: degradation(self.engine),
        )
        self._threads: list[threading.Thread] = []
        if self.metrics is not None:
            # Last: a port in use fails the start here (a ConfigError), with nothing running.
            self.metrics.serve()

    @property
    def only(self) -> Network:
        """The network of a one-network bot (tests and the demo have one)."""
        if len(self.networks) != 1:
            raise ValueError(f"the bot is on {len(self.networks)} networks, not one")
        return next(iter(self.networks.values()))

    def _pending_share(self, name: str) -> int:
        """The jobs network `name` may have waiting: its replies generating at once, and a
        few `ask` jobs besides."""
        network = self.networks.get(name)
        return max(network.net.policy.max_concurrent, 1) + 8 if network is not None else 8

    # --- completions (the inference thread) -------------------------------------------------

    def _completed(self, completion: Completion) -> None:
        # Called on the inference thread: hand over to the network's own thread, touch nothing.
        network = self.networks.get(completion.job.key[0])
        if network is None:
            log.error("completion_for_unknown_network", network=completion.job.key[0])
            return
        network.session.call_soon(lambda: network.dispatch(completion))

    # --- reloads ----------------------------------------------------------------------------

    def _load(self) -> Config | str:
        """The file re-read, or what is wrong with it."""
        if self.config_path is None:
            return "no config file to reload"
        try:
            return load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload_failed", error=str(exc))
            return f"reload failed, still on the old config: {exc}"

    def _networks_changed(self, new: Config) -> str:
        old = [net.name for net in self.config.networks]
        names = [net.name for net in new.networks]
        if names == old:
            return ""
        return f"; restart to change the networks ({', '.join(old)} -> {', '.join(names)})"

    def _reload_from(self, name: str) -> str:
        """`!relay reload` on one network (its loop thread): apply the file there only; the
        other networks take it on SIGHUP, so that an operator of one network changes
        nothing on another."""
        new = self._load()
        if isinstance(new, str):
            return new
        # Without the networks' names: an operator of one network learns nothing of others.
        changed = "; restart to add or remove networks" if self._networks_changed(new) else ""
        return self.networks[name].apply(new) + changed

    def reload(self) -> str:
        """SIGHUP (the main thread): apply the file on every network, each on its own thread,
        and wait for them."""
        new = self._load()
        if isinstance(new, str):
            return new
        results: dict[str, str] = {}
        done = {name: threading.Event() for name in self.networks}

        def apply_on(name: str, network: Network) -> None:
            try:
                results[name] = network.apply(new)
            finally:
                done[name].set()

        for name, network in self.networks.items():
            network.session.call_soon(functools.partial(apply_on, name, network))
        deadline = time.monotonic() + STOP_TIMEOUT  # one wait for all, not one each
        for name, event in done.items():
            if not event.wait(max(0.0, deadline - time.monotonic())):
                results[name] = "did not answer; reload it with !relay reload"
        changed = self._networks_changed(new)
        if not changed:
            self.config = new  # else the file's networks still differ from those running
        if len(results) == 1:
            return next(iter(results.values())) + changed
        summary = "; ".join(f"{name}: {results.get(name, '')}" for name in self.networks)
        return summary + changed

    # --- running ----------------------------------------------------------------------------

    def run(self, *, install_signal_handlers: bool = True) -> int:
        """Serve every network until stopped; the exit status: 0, or 1 when a network's loop
        crashed (a bug), which stops the whole process so that the service manager restarts
        it rather than leave that network silently dead."""
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._on_signal)
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGHUP, self._on_hangup)
        self.worker.start()
        self.status.update()  # "connecting to ...", before any network has done anything
        for name, network in self.networks.items():
            thread = threading.Thread(
                target=self._run_network, args=(name, network), name=f"relaybot-{name}"
            )
            self._threads.append(thread)
            thread.start()
        try:
            self._main_loop()
        finally:
            self.status.stopping()
            for network in self.networks.values():
                network.stop()
            deadline = time.monotonic() + STOP_TIMEOUT
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            self.worker.stop(timeout=10.0)
            if self.metrics is not None:
                self.metrics.close()
            self._wake_read.close()
            self._wake_write.close()
        return 1 if self._crashed else 0

    def _run_network(self, name: str, network: Network) -> None:
        try:
            network.run()
        except Exception:
            # The loop guards every stage, so this is a bug. A network left dead would stay
            # silent for good (with no watchdog to notice): stop the process, exit non-zero.
            log.exception("network_loop_crashed", network=name)
            self._crashed.append(name)
            self.stop()
        self._wake()

    def _main_loop(self) -> None:
        interval = self.status.watchdog_interval
        timeout = 1.0 if interval is None else min(1.0, interval / 3)
        while True:
            with contextlib.suppress(OSError, ValueError):
                select.select([self._wake_read], [], [], timeout)
                while self._wake_read.recv(4096):
                    pass
            if self._stop_requested:
                if self._signal_name is not None:
                    log.info("signal_received", signal=self._signal_name)
                return
            if self._hangup_requested:
                self._hangup_requested = False
                self._hangup()
            if not any(thread.is_alive() for thread in self._threads):
                log.error("networks_all_stopped")  # unasked: each loop must have ended
                self._crashed.append("all")
                return
            self.status.update()

    def stop(self) -> None:
        """Thread-safe and signal-safe."""
        self._stop_requested = True
        for network in self.networks.values():
            network.stop()
        self._wake()

    def _wake(self) -> None:
        # A full pipe means a wake-up is pending anyway; a closed one, that we are stopping.
        with contextlib.suppress(OSError):
            self._wake_write.send(b"\0")

    # A signal handler runs between two bytecodes of the main thread, which may be holding
    # any lock just then (the log writer's, for one: logging from the handler deadlocked the
    # bot when SIGTERM arrived mid-log line). So handlers only set a flag and wake the loop.

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signal_name = signal.Signals(signum).name
        self._stop_requested = True
        self._wake()

    def _on_hangup(self, signum: int, frame: FrameType | None) -> None:
        self._hangup_requested = True
        self._wake()

    def _hangup(self) -> None:
        log.info("signal_received", signal="SIGHUP")
        self.status.reloading()
        try:
            log.info("reload", result=self.reload())
        finally:
            self.status.reloaded()
