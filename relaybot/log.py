"""Logging setup: structlog with a console renderer on a TTY and JSON lines otherwise.

Everything that ends up on stderr goes through one handler on the root logger whose
`structlog.stdlib.ProcessorFormatter` renders it: relaybot's own structlog events, records from
the standard library's `logging` (transformers, the irc library, urllib3, ...) and Python
warnings (`logging.captureWarnings`). In JSON mode each line is then one JSON object with at
least `event`, `level` and `timestamp` (and `logger` for standard library records), so
`journalctl -o cat | jq` reads the whole log. transformers and huggingface_hub bypass the root
handler with their own unless `route_library_logs` is called once they are imported.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

# relaybot's structlog loggers are standard library loggers under this name (and the configured
# level applies to it); every other logger stays at the root's WARNING.
ROOT_LOGGER = "relaybot"


class _StderrHandler(logging.StreamHandler[TextIO]):
    """The handler `configure_logging` puts on the root logger (found again by its type).

    It writes to whatever `sys.stderr` is when a record comes, not the one there was at
    configuration time (a test's capture may have replaced and closed that one since)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # Handler.handle holds self.lock here
        super().emit(record)


def _is_plain_stderr_handler(handler: logging.Handler) -> bool:
    """A `logging.StreamHandler()` on stderr as `logging.basicConfig` makes: on the root logger,
    its lines would be plain text between the rendered ones."""
    return type(handler) is logging.StreamHandler and handler.stream in (
        sys.stderr,
        sys.__stderr__,
    )


def route_library_logs() -> None:
    """Send transformers' and huggingface_hub's records to the root handler.

    Both libraries configure their top-level logger when first imported (which happens when a
    local model is loaded, usually after `configure_logging`): each adds a plain-text
    `StreamHandler` on stderr, and transformers also sets `propagate = False` on it. Their lines
    would then bypass the rendering (plain text between the JSON lines) or come out twice. Call
    this once those libraries are imported (`relaybot.inference.local.loading` does, before
    loading); it may come before or after `configure_logging`, and again. Levels are left alone:
    both libraries default to WARNING (`TRANSFORMERS_VERBOSITY`, `HF_HUB_VERBOSITY`).

    It imports both libraries: only call it where they are wanted."""
    import huggingface_hub.utils.logging as hub_logging
    import transformers.utils.logging as transformers_logging

    transformers_logging.disable_default_handler()
    transformers_logging.enable_propagation()

    # huggingface_hub has no `disable_default_handler`: its `utils/logging.py` adds one anonymous
    # `logging.StreamHandler()` (stderr) to the library's root logger on import; remove that
    # handler (found by its exact type: a subclass or a FileHandler added by someone else stays).
    # Its propagation is on by default; `enable_propagation` just makes sure.
    hub_root = hub_logging.get_logger()  # no name: the library's root logger
    for handler in list(hub_root.handlers):
        if type(handler) is logging.StreamHandler:
            hub_root.removeHandler(handler)
    hub_logging.enable_propagation()


def _strip_event(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """A warning's text (`warnings.formatwarning`) ends with a newline."""
    event = event_dict.get("event")
    if isinstance(event, str):
        event_dict["event"] = event.rstrip()
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog and the standard library's logging; calling it again reconfigures
    (one handler on the root logger, whatever the number of calls)."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    renderer: Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # Only for records from the standard library (structlog's own went through the above).
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamper,
            _strip_event,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # A plain traceback under `exception`, in both modes (no locals in the console).
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _StderrHandler) or _is_plain_stderr_handler(old):
            root.removeHandler(old)
    root.addHandler(handler)
    # Libraries (transformers, irc) log through the standard library: keep them quiet.
    root.setLevel(logging.WARNING)
    logging.getLogger(ROOT_LOGGER).setLevel(numeric_level)
    logging.captureWarnings(True)


def get_logger(**context: Any) -> Any:
    """A lazy logger: module-level loggers pick up `configure_logging` made after import."""
    return structlog.get_logger(ROOT_LOGGER, **context)
