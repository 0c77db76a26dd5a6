"""Tests for relaybot.moderation.builtins: the words, mass_highlight and links hooks."""

from __future__ import annotations

import pytest

from relaybot.moderation import (
    LinksModerator,
    MassHighlightModerator,
    ModerationContext,
    WordsModerator,
)
from tests.support.moderators import CHANNEL, config_error

# --- words ------------------------------------------------------------------------------------


def test_words_blocks_whole_words_case_insensitively() -> None:
    words = WordsModerator(words=["badword", "buy now"])
    assert words.check_input("this has a BadWord!", CHANNEL).blocked
    assert words.check_output("please BUY   now", CHANNEL).blocked
    assert words.check_input("badwords and notbadword are different words", CHANNEL).allowed
    assert words.check_input("perfectly fine", CHANNEL).allowed


def test_words_sees_through_formatting_and_fullwidth_tricks() -> None:
    words = WordsModerator(words=["badword"])
    assert words.check_input("bad\x02word", CHANNEL).blocked
    assert words.check_input("\x0304badword\x03", CHANNEL).blocked
    assert words.check_input("bad\u200bword", CHANNEL).blocked
    assert words.check_input("\uff42\uff41\uff44word", CHANNEL).blocked


def test_words_patterns_block() -> None:
    words = WordsModerator(patterns=[r"(?i)buy\s+now", r"\d{4}-\d{4}"])
    verdict = words.check_output("Buy Now at the shop", CHANNEL)
    assert verdict.blocked and "patterns[0]" in verdict.reason
    assert "patterns[1]" in words.check_output("call 1234-5678", CHANNEL).reason
    assert words.check_output("buy later", CHANNEL).allowed


def test_words_empty_pattern_matches_do_not_count() -> None:
    words = WordsModerator(patterns=["z*"], action="replace")
    assert words.check_output("abc", CHANNEL).allowed
    assert WordsModerator(patterns=["z*"]).check_output("abc", CHANNEL).allowed


def test_words_replace_masks_each_match() -> None:
    words = WordsModerator(words=["darn"], patterns=["(?i)heck+"], action="replace")
    verdict = words.check_output("Darn it, HECKKK, darnit", CHANNEL)
    assert verdict.replaced
    assert verdict.text == "*** it, ***, darnit"
    custom = WordsModerator(words=["darn"], action="replace", replacement="[...]")
    assert custom.check_output("oh darn", CHANNEL).text == "oh [...]"
    assert custom.check_output("clean line", CHANNEL).allowed


def test_words_apply_to_one_direction() -> None:
    output_only = WordsModerator(words=["badword"], apply_to="output")
    assert output_only.check_input("badword", CHANNEL).allowed
    assert output_only.check_output("badword", CHANNEL).blocked
    input_only = WordsModerator(words=["badword"], apply_to="input")
    assert input_only.check_input("badword", CHANNEL).blocked
    assert input_only.check_output("badword", CHANNEL).allowed


def test_words_option_errors_name_the_key() -> None:
    message = config_error("words", words=["ok"], patterns=["fine", "(unclosed"])
    assert message.startswith("moderation.hooks[0].patterns[1]: bad regex:")
    assert config_error("words", words="badword").startswith(
        "moderation.hooks[0].words: expected an array of strings"
    )
    assert config_error("words", words=["ok", 3]).startswith("moderation.hooks[0].words[1]:")
    assert config_error("words", words=["x"], action="delete").startswith(
        "moderation.hooks[0].action: must be one of block, replace"
    )
    assert config_error("words", words=["x"], apply_to="sideways").startswith(
        "moderation.hooks[0].apply_to:"
    )
    assert config_error("words").startswith("moderation.hooks[0].words: give at least one")
    unknown = config_error("words", words=["x"], colour="red")
    assert unknown.startswith("moderation.hooks[0].colour: unknown option for 'words'")
    assert "patterns" in unknown


# --- mass_highlight ---------------------------------------------------------------------------


def test_mass_highlight_blocks_output_naming_many_members() -> None:
    guard = MassHighlightModerator()
    verdict = guard.check_output("alice bob [carol] d|ve: meeting now", CHANNEL)
    assert verdict.blocked and "4 channel members" in verdict.reason
    assert guard.check_output("Alice,BOB,[CAROL],D\\VE", CHANNEL).blocked  # rfc1459 folding
    assert guard.check_output("alice, bob and [carol]: hi", CHANNEL).allowed  # three is fine


def test_mass_highlight_counts_distinct_whole_nicks_only() -> None:
    guard = MassHighlightModerator(max_nicks=3)
    assert guard.check_output("alice alice alice bob", CHANNEL).allowed
    assert guard.check_output("alicebob bobby frank eve", CHANNEL).allowed  # frank != frank_
    assert guard.check_output("frank_ eve bob", CHANNEL).blocked
    # The bot's own nick is not a highlight.
    assert guard.check_output("relaybot alice bob", CHANNEL).allowed
    assert guard.check_output("zed yan xavier wim", CHANNEL).allowed  # not members


def test_mass_highlight_input_is_optional() -> None:
    user = ModerationContext("net", "#chan", "eve", False, CHANNEL.members)
    line = "alice bob {carol} d|ve frank_ look"
    assert MassHighlightModerator().check_input(line, user).blocked
    assert MassHighlightModerator(check_input=False).check_input(line, user).allowed
    assert MassHighlightModerator(check_output=False).check_output(line, CHANNEL).allowed


def test_mass_highlight_options_are_checked() -> None:
    assert config_error("mass_highlight", max_nicks=1).startswith(
        "moderation.hooks[0].max_nicks: must be at least 2"
    )
    assert config_error("mass_highlight", max_nicks="4").startswith(
        "moderation.hooks[0].max_nicks: expected an integer"
    )
    assert config_error("mass_highlight", check_input="yes").startswith(
        "moderation.hooks[0].check_input: expected a boolean"
    )


# --- links ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "see https://evil.example.net/x.",
        "HTTP://EVIL.NET",
        "go to www.spam.test now",
        "cheap stuff at spam.xyz",
        "docs at foo.bar/path?q=1",
        "http://192.168.0.1:8080/admin",
        "https://example.com@evil.net/",  # user info: the host is evil.net
        "visit evilexample.com",  # not a subdomain of example.com
        "\uff48\uff54\uff54\uff50\uff53://evil.net",  # fullwidth scheme
    ],
)
def test_links_blocks_links_outside_allowed_domains(text: str) -> None:
    links = LinksModerator(allowed_domains=["example.com"])
    assert links.check_output(text, CHANNEL).blocked, text


@pytest.mark.parametrize(
    "text",
    [
        "see https://example.com/page",
        "see https://docs.example.com/a_(b)).",
        "docs.example.com/page",
        "plain words only",
        "edit main.py and README.md, e.g. today",
        "mail me at someone@example.org",
        "version 1.2.3.4 is out",
    ],
)
def test_links_allows_allowed_domains_and_non_links(text: str) -> None:
    links = LinksModerator(allowed_domains=["example.com"])
    assert links.check_output(text, CHANNEL).allowed, text


def test_links_strip_policy_removes_links() -> None:
    links = LinksModerator(policy="strip", allowed_domains=["example.com"])
    verdict = links.check_output("look at https://a.net/x and www.b.org, or example.com", CHANNEL)
    assert verdict.replaced
    assert verdict.text == "look at and, or example.com"
    assert links.check_output("https://a.net/x.", CHANNEL).blocked  # nothing left to say


def test_links_default_is_output_only_and_allow_disables() -> None:
    assert LinksModerator().check_input("https://evil.net", CHANNEL).allowed
    assert LinksModerator().check_output("https://evil.net", CHANNEL).blocked
    assert LinksModerator(apply_to="both").check_input("https://evil.net", CHANNEL).blocked
    assert LinksModerator(policy="allow").check_output("https://evil.net", CHANNEL).allowed


def test_links_options_are_checked() -> None:
    assert config_error("links", policy="nuke").startswith("moderation.hooks[0].policy:")
    assert config_error("links", allowed_domains=["ok.com", "a b"]).startswith(
        "moderation.hooks[0].allowed_domains[1]:"
    )
