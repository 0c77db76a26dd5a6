"""configure_logging: in JSON mode every stderr line is one JSON object, whatever logged it.

Each test runs a small Python process (logging configuration is process-wide state) and reads
its stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

from tests.support.paths import REPO

# Logs one record from each source the journal receives: relaybot's structlog logger, a
# library logger (the irc library), a library error with a traceback, a Python warning.
EVERY_SOURCE = """
import logging, warnings
from relaybot.log import configure_logging, get_logger

configure_logging("info", FORMAT)
get_logger(component="test").info("own_event", answer=42)
logging.getLogger("irc.client").warning("irc says %s", "hello")
try:
    raise ValueError("model exploded")
except ValueError:
    logging.getLogger("transformers").error("transformers failed", exc_info=True)
warnings.warn("x", UserWarning)
"""


def run_python(script: str, fmt: str = "json", **env: str) -> str:
    """Run `script` (with FORMAT bound to `fmt`) in a fresh interpreter; its stderr."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONWARNINGS", "TRANSFORMERS_VERBOSITY", "HF_HUB_VERBOSITY", "CI")
    }
    environment.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **env)
    source = f"FORMAT = {fmt!r}\n" + textwrap.dedent(script)
    result = subprocess.run(
        [sys.executable, "-c", source],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    return result.stderr


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every non-empty line, parsed: fails on the first one that is not a JSON object."""
    records = []
    for line in stderr.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"not JSON: {line!r}\nin stderr:\n{stderr}") from exc
        assert isinstance(record, dict), line
        assert {"event", "level", "timestamp"} <= record.keys(), line
        records.append(record)
    return records


def only(records: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    found = [r for r in records if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, records)
    return found[0]


def test_json_mode_renders_stdlib_logging_and_warnings_as_json() -> None:
    records = json_lines(run_python(EVERY_SOURCE))
    assert len(records) == 4, records

    own = only(records, event="own_event")
    assert own["level"] == "info" and own["answer"] == 42 and own["component"] == "test"

    irc = only(records, logger="irc.client")
    assert irc["event"] == "irc says hello" and irc["level"] == "warning"

    failed = only(records, logger="transformers")
    assert failed["event"] == "transformers failed" and failed["level"] == "error"
    assert "Traceback (most recent call last)" in failed["exception"]
    assert "ValueError: model exploded" in failed["exception"]

    warned = only(records, logger="py.warnings")
    assert warned["level"] == "warning"
    assert "UserWarning: x" in warned["event"]


def test_configure_logging_twice_adds_one_handler() -> None:
    stderr = run_python(
        """
        import logging
        from relaybot.log import configure_logging, get_logger

        configure_logging("info", FORMAT)
        configure_logging("info", FORMAT)
        print(len(logging.getLogger().handlers), file=__import__("sys").stderr)
        """
    )
    assert stderr.strip() == "1"
    # And each record comes out once.
    once = 'configure_logging("info", FORMAT)\n'
    records = json_lines(run_python(EVERY_SOURCE.replace(once, once + once)))
    assert len(records) == 4, records


def test_levels_own_logs_at_configured_level_libraries_at_warning() -> None:
    records = json_lines(
        run_python(
            """
            import logging
            from relaybot.log import configure_logging, get_logger

            configure_logging("debug", FORMAT)
            log = get_logger()
            log.debug("own_debug")
            logging.getLogger("irc.client").info("library info")
            logging.getLogger("urllib3.connectionpool").warning("library warning")
            configure_logging("warning", FORMAT)
            log.info("own_info_filtered")
            log.warning("own_warning")
            """
        )
    )
    assert [r["event"] for r in records] == ["own_debug", "library warning", "own_warning"]


def test_transformers_and_hub_default_handlers_do_not_bypass_json() -> None:
    """transformers and huggingface_hub put a plain-text stderr handler on their loggers on
    import (transformers also stops propagation); `route_library_logs`, which
    `relaybot.inference.local.loading.load_model` calls once it has imported transformers,
    takes them back, whether the import comes before or after configure_logging."""
    script = """
        import logging
        from relaybot.log import configure_logging, route_library_logs

        if FORMAT == "configure-first":  # the bot: configure at start-up, load the model later
            configure_logging("info", "json")
            from transformers.utils import logging as transformers_logging
            route_library_logs()
        elif FORMAT == "import-first":
            from transformers.utils import logging as transformers_logging
            configure_logging("info", "json")
            route_library_logs()
        else:  # "route-first"
            from transformers.utils import logging as transformers_logging
            route_library_logs()
            configure_logging("info", "json")
        import huggingface_hub.utils.logging

        # transformers' get_logger (re)runs its default configuration: it must not come back.
        transformers_logging.get_logger("transformers.modeling_utils").warning("tf warning")
        logging.getLogger("huggingface_hub.file_download").warning("hub warning")
        """
    for order in ("configure-first", "import-first", "route-first"):
        records = json_lines(run_python(script, order))
        assert [(r["event"], r["logger"]) for r in records] == [
            ("tf warning", "transformers.modeling_utils"),
            ("hub warning", "huggingface_hub.file_download"),
        ], order


def test_load_model_routes_library_logs() -> None:
    """The bot's path: `load_model` calls `route_library_logs` before loading anything (the
    load then fails fast here: no such model directory)."""
    records = json_lines(
        run_python(
            """
            import logging
            from pathlib import Path
            from relaybot.inference.local.loading import load_model
            from relaybot.inference.selection import ModelChoice, ModelUnavailable
            from relaybot.log import configure_logging

            configure_logging("info", "json")
            choice = ModelChoice("/nonexistent/model", None, "cpu", "float32", "none", "test")
            try:
                load_model(choice, Path("/nonexistent/cache"), allow_download=False)
            except ModelUnavailable:
                pass
            else:
                raise AssertionError("loaded a model that does not exist")
            logging.getLogger("transformers.modeling_utils").warning("tf warning")
            logging.getLogger("huggingface_hub.file_download").warning("hub warning")
            """
        )
    )
    # Whatever the failed load logged is JSON too (json_lines); ours come last, once each.
    assert [(r["event"], r.get("logger")) for r in records[-2:]] == [
        ("tf warning", "transformers.modeling_utils"),
        ("hub warning", "huggingface_hub.file_download"),
    ], records
    assert [r["event"] for r in records].count("tf warning") == 1, records


def test_console_mode_renders_stdlib_records() -> None:
    stderr = run_python(EVERY_SOURCE, "console")
    assert "--- Logging error ---" not in stderr
    for text in (
        "own_event",
        "irc says hello",
        "irc.client",
        "transformers failed",
        "ValueError: model exploded",
        "UserWarning: x",
    ):
        assert text in stderr, (text, stderr)
    # Through the console renderer: the record's line has its level and logger name.
    [irc] = [line for line in stderr.splitlines() if "irc says hello" in line]
    assert "warning" in irc and "irc.client" in irc
    assert "WARNING:irc.client:" not in stderr  # logging's own format (basicConfig's)
