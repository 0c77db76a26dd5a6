"""Assembly: builds the engine, worker, relay and session in order and runs them together."""

from __future__ import annotations

import signal
import threading
from types import FrameType

from relaybot.config import Config
from relaybot.engine import Engine
from relaybot.formats import RelayFormat
from relaybot.log import get_logger
from relaybot.relay import ModelInfo, Relay, sampling_from
from relaybot.session import IrcSession
from relaybot.worker import Completion, InferenceWorker

log = get_logger(component="bot")


class Bot:
    def __init__(self, config: Config, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.session = IrcSession(
            config.irc,
            on_event=lambda event: self.relay.handle(event),
            on_forget=lambda channel: self.relay.forget(channel),
        )
        self.worker = InferenceWorker(engine, self._completed, max_batch=config.model.max_batch)
        self.relay = Relay(
            network=config.irc.network,
            fmt=RelayFormat(),
            model=ModelInfo(engine.count_tokens, engine.context_window),
            reply=config.reply,
            params=sampling_from(config.model),
            submit=self.worker.submit,
            sender=self.session,
        )

    def _completed(self, completion: Completion) -> None:
        # Called on the inference thread: hand over to the reactor thread, touch nothing.
        self.session.call_soon(lambda: self.relay.on_completion(completion))

    def run(self, *, install_signal_handlers: bool = True) -> None:
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._on_signal)
            signal.signal(signal.SIGTERM, self._on_signal)
        self.worker.start()
        try:
            self.session.run()
        finally:
            self.worker.stop(timeout=10.0)

    def stop(self) -> None:
        self.session.stop()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("signal_received", signal=signal.Signals(signum).name)
        self.session.stop()
