"""Tests for relaybot.moderation.loading: hooks by name, entry point and dotted path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from relaybot.config.loader import loads_config
from relaybot.config.schema import ConfigError
from relaybot.moderation import (
    LinksModerator,
    MassHighlightModerator,
    WordsModerator,
    available_moderators,
    build_chain,
)
from tests.support import moderators
from tests.support.moderators import CHANNEL, ShoutModerator, config_error, load

# The hooks these tests load by their dotted path live in tests.support.moderators.
HERE = moderators.__name__


def test_load_builtins_by_name() -> None:
    assert isinstance(load("words", words=["x"]), WordsModerator)
    assert isinstance(load("mass_highlight", max_nicks=5), MassHighlightModerator)
    assert isinstance(load("links", allowed_domains=["example.com"]), LinksModerator)
    assert {"words", "mass_highlight", "links", "classifier"} <= set(available_moderators())


@pytest.mark.parametrize(
    "use",
    [
        "tests.support.moderators:ShoutModerator",
        "tests.support.moderators.ShoutModerator",
    ],
)
def test_load_by_dotted_path(use: str) -> None:
    moderator = load(use, suffix="!")
    assert isinstance(moderator, ShoutModerator)
    assert moderator.check_output("hi", CHANNEL).text == "HI!"


def test_build_chain_from_config_text() -> None:
    config = loads_config(
        """
        [irc]
        host = "irc.example.net"
        nick = "relaybot"
        [moderation]
        timeout = 0.5
        [[moderation.hooks]]
        use = "words"
        words = ["badword"]
        patterns = ["(?i)buy now"]
        action = "replace"
        [[moderation.hooks]]
        use = "mass_highlight"
        max_nicks = 4
        [[moderation.hooks]]
        use = "tests.support.moderators:ShoutModerator"
        """.replace("\n        ", "\n")
    )
    chain = build_chain(config.networks[0].moderation)
    assert chain.names == ("words", "mass_highlight", "shout")
    assert chain.timeout == 0.5
    verdict = chain.check_output("badword, buy now", CHANNEL)
    assert verdict.replaced and verdict.text == "***, ***"
    assert chain.check_output("alice bob eve d|ve", CHANNEL).blocked
    chain.close()


def test_build_chain_errors_name_the_hook_by_position() -> None:
    config = loads_config(
        '[irc]\nhost = "h"\nnick = "n"\n'
        '[[moderation.hooks]]\nuse = "mass_highlight"\n'
        '[[moderation.hooks]]\nuse = "words"\nwords = ["a"]\npatterns = ["ok", "[z-a]"]\n'
    )
    with pytest.raises(ConfigError, match=r"^moderation\.hooks\[1\]\.patterns\[1\]: bad regex"):
        build_chain(config.networks[0].moderation)


@pytest.fixture
def entry_point_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Installs a fake distribution whose entry_points.txt is the given text."""

    def install(entry_points: str) -> None:
        dist = tmp_path / "relaybot_testmods-0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: relaybot-testmods\nVersion: 0.1\n", encoding="utf-8"
        )
        (dist / "entry_points.txt").write_text(entry_points, encoding="utf-8")
        monkeypatch.syspath_prepend(str(tmp_path))

    return install


def test_load_by_entry_point(entry_point_dir: Callable[[str], None]) -> None:
    entry_point_dir(
        "[relaybot.moderators]\n"
        "shout = tests.support.moderators:ShoutModerator\n"
        "broken = tests.no_such_module:Thing\n"
    )
    moderator = load("shout", suffix="?")
    assert isinstance(moderator, ShoutModerator)
    assert moderator.check_input("hey", CHANNEL).text == "HEY?"
    assert "shout" in available_moderators()
    message = config_error("broken")
    assert message.startswith("moderation.hooks[0].use: cannot load entry point 'broken'")
    assert "tests.no_such_module" in message


def test_entry_point_is_gone_after_cleanup() -> None:
    assert "shout" not in available_moderators()
    assert config_error("shout").startswith("moderation.hooks[0].use: unknown moderator 'shout'")


def test_load_errors_name_the_key() -> None:
    unknown = config_error("wordz")
    assert unknown.startswith("moderation.hooks[0].use: unknown moderator 'wordz'")
    assert "words" in unknown and "module:Name" in unknown
    assert config_error("no_such_pkg.mod:Thing") == (
        "moderation.hooks[0].use: cannot import 'no_such_pkg.mod:Thing': "
        "no module named 'no_such_pkg'"
    )
    assert config_error(f"{HERE}:Missing").startswith(
        f"moderation.hooks[0].use: cannot import '{HERE}:Missing': "
    )
    assert config_error(f"{HERE}:CHANNEL").startswith(
        f"moderation.hooks[0].use: '{HERE}:CHANNEL' is a ModerationContext"
    )
    assert config_error(f"{HERE}:NoMethods").startswith(
        f"moderation.hooks[0].use: '{HERE}:NoMethods' made a NoMethods without "
        "check_input and check_output"
    )
    assert "without check_input" in config_error(f"{HERE}:not_a_class")
    assert config_error(f"{HERE}:ShoutModerator", volume=11).startswith(
        f"moderation.hooks[0].volume: unknown option for '{HERE}:ShoutModerator'"
    )
    assert config_error("bad path:x").startswith("moderation.hooks[0].use: 'bad path:x' is not")


def test_missing_required_option_is_named() -> None:
    assert config_error(f"{HERE}:NeedsLimit").startswith(
        f"moderation.hooks[0].limit: missing (required by '{HERE}:NeedsLimit')"
    )
