"""Shared fixtures: config from TOML text, the real embedded model, real IRC servers."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from relaybot.config.loader import loads_config
from relaybot.config.schema import Config, ModelConfig
from tests.support.ircservers import RunningServer, start_server

# The notify-socket fixtures (`socket_dir`, `listener`) serve unit and integration tests alike.
pytest_plugins = ["tests.support.notify"]

SERVER_BINARIES = {"inspircd": "/usr/sbin/inspircd", "ngircd": "/usr/sbin/ngircd"}


@pytest.fixture
def config_factory(tmp_path: Path) -> Callable[[str], Config]:
    def make(toml: str) -> Config:
        return loads_config(toml, base_dir=tmp_path)

    return make


@pytest.fixture(scope="session")
def real_engine() -> object:
    """The embedded SmolLM2 model through the real transformers engine, loaded once."""
    from relaybot.inference.local.engine import TransformersEngine

    return TransformersEngine.load(
        ModelConfig(name="embedded", device="cpu", max_new_tokens=48, context_tokens=2048, seed=7)
    )


def _require(kind: str) -> None:
    binary = SERVER_BINARIES.get(kind)
    if binary and not shutil.which(binary):
        pytest.skip(f"{kind} is not installed ({binary}); .ci/run installs it")


@pytest.fixture
def irc_server_factory(tmp_path: Path) -> Iterator[Callable[[str], RunningServer]]:
    started: list[RunningServer] = []

    def start(kind: str) -> RunningServer:
        _require(kind)
        workdir = tmp_path / f"{kind}-{len(started)}"
        workdir.mkdir()
        server = start_server(kind, workdir)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
