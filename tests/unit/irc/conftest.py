"""Fixtures the irc unit tests share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog.testing


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Every log event while the test runs."""
    with structlog.testing.capture_logs() as captured:
        yield captured
