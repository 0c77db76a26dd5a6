"""Tests for relaybot.moderation: the built-in hooks, the fail-closed chain (errors, bad
answers, timeouts), loading by name / entry point / dotted path, and the classifier on tiny
models built here."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from relaybot.config.loader import loads_config
from relaybot.config.schema import ConfigError, ModerationHookConfig
from relaybot.moderation import (
    Decision,
    LinksModerator,
    MassHighlightModerator,
    ModerationChain,
    ModerationContext,
    Verdict,
    WordsModerator,
    available_moderators,
    build_chain,
    load_moderator,
)
from relaybot.moderation.core import MAX_STUCK_CALLS

CHANNEL = ModerationContext(
    network="net",
    target="#chan",
    nick="relaybot",
    private=False,
    members=frozenset({"relaybot", "alice", "bob", "{carol}", "d|ve", "eve", "frank_"}),
)

# Hooks defined in this file are loaded by their dotted path.
HERE = __name__


def load(use: str, **options: Any) -> Any:
    return load_moderator(ModerationHookConfig(use, options, "moderation.hooks[0]"))


def config_error(use: str, **options: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load(use, **options)
    return str(info.value)


# --- moderators used by the chain and loader tests --------------------------------------------


class ShoutModerator:
    """Upper-cases everything; records the text each call saw."""

    def __init__(self, *, suffix: str = "", name: str = "shout") -> None:
        self.name = name
        self.suffix = suffix
        self.seen: list[str] = []

    def check_input(self, text: str, context: ModerationContext) -> Verdict:
        return self.check_output(text, context)

    def check_output(self, text: str, context: ModerationContext) -> Verdict:
        self.seen.append(text)
        return Verdict.replace(text.upper() + self.suffix, "shouting")


class Recorder:
    def __init__(self, verdict: Verdict | None = None, name: str = "recorder") -> None:
        self.name = name
        self.verdict = verdict or Verdict.allow()
        self.seen: list[str] = []

    def check_input(self, text: str, context: ModerationContext) -> Verdict:
        self.seen.append(text)
        return self.verdict

    check_output = check_input


class Exploding:
    name = "exploding"

    def check_input(self, text: str, context: ModerationContext) -> Verdict:
        raise RuntimeError("backend unreachable")

    check_output = check_input


class Sloppy:
    name = "sloppy"

    def check_input(self, text: str, context: ModerationContext) -> Any:
        return "allow"

    check_output = check_input


class Hanging:
    """Hangs (until released) on lines containing `hang`; answers at once otherwise."""

    name = "hanging"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.threads: list[threading.Thread] = []

    def check_input(self, text: str, context: ModerationContext) -> Verdict:
        if "hang" in text:
            self.threads.append(threading.current_thread())
            self.release.wait(10)
        return Verdict.allow()

    check_output = check_input


class NoMethods:
    def __init__(self) -> None:
        self.name = "nomethods"


def not_a_class() -> None:
    return None


# --- Verdict ------------------------------------------------------------------------------


def test_verdict_constructors() -> None:
    assert Verdict.allow().allowed
    blocked = Verdict.block("spam")
    assert (blocked.decision, blocked.reason, blocked.blocked) == (Decision.BLOCK, "spam", True)
    replaced = Verdict.replace("clean", "masked")
    assert (replaced.decision, replaced.text, replaced.reason) == ("replace", "clean", "masked")
    assert Verdict("block").decision is Decision.BLOCK  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Verdict("maybe")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Verdict(Decision.REPLACE, text=None)  # type: ignore[arg-type]


# --- words --------------------------------------------------------------------------------


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


# --- mass_highlight -----------------------------------------------------------------------


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


# --- links --------------------------------------------------------------------------------


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


# --- the chain ------------------------------------------------------------------------------


def test_chain_without_hooks_allows_without_threads() -> None:
    before = threading.active_count()
    chain = ModerationChain([], timeout=1.0)
    assert chain.check_input("anything", CHANNEL) == Verdict.allow()
    assert chain.check_output("anything", CHANNEL) == Verdict.allow()
    assert threading.active_count() == before


def test_chain_passes_replaced_text_on() -> None:
    shout = ShoutModerator(suffix="!")
    after = Recorder(name="after")
    chain = ModerationChain([shout, after, ShoutModerator(suffix="?", name="again")], timeout=1)
    verdict = chain.check_output("hello", CHANNEL)
    assert after.seen == ["HELLO!"]
    assert verdict.decision is Decision.REPLACE
    assert verdict.text == "HELLO!?"
    assert verdict.hook == "shout,again"
    chain.close()


def test_chain_first_block_stops_the_chain() -> None:
    first = Recorder(Verdict.block("nope"), name="first")
    second = Recorder(name="second")
    chain = ModerationChain([ShoutModerator(), first, second], timeout=1)
    verdict = chain.check_input("hello", CHANNEL)
    assert (verdict.decision, verdict.reason, verdict.hook) == (Decision.BLOCK, "nope", "first")
    assert first.seen == ["HELLO"]
    assert second.seen == []
    chain.close()


def test_chain_allows_when_every_hook_allows() -> None:
    chain = ModerationChain([Recorder(), WordsModerator(words=["x"])], timeout=1)
    assert chain.check_output("fine", CHANNEL) == Verdict.allow()
    chain.close()


def test_chain_names_repeated_hooks_by_position() -> None:
    chain = ModerationChain([Recorder(), Recorder(Verdict.block("no"))], timeout=1)
    assert chain.names == ("recorder#1", "recorder#2")
    assert chain.check_input("x", CHANNEL).hook == "recorder#2"
    chain.close()


def test_hook_that_raises_fails_closed_and_is_logged() -> None:
    after = Recorder()
    chain = ModerationChain([Exploding(), after], timeout=1)
    with capture_logs() as logs:
        verdict = chain.check_input("hello", CHANNEL)
    assert verdict.blocked and verdict.hook == "exploding"
    assert "exploding" in verdict.reason and "backend unreachable" in verdict.reason
    assert after.seen == []
    failed = [entry for entry in logs if entry["event"] == "moderation_hook_failed"]
    assert failed and failed[0]["hook"] == "exploding"
    assert "RuntimeError: backend unreachable" in failed[0]["error"]
    assert failed[0]["log_level"] == "error"
    chain.close()


def test_hook_returning_a_non_verdict_fails_closed() -> None:
    chain = ModerationChain([Sloppy()], timeout=1)
    with capture_logs() as logs:
        verdict = chain.check_output("hello", CHANNEL)
    assert verdict.blocked and "sloppy" in verdict.reason and "not a Verdict" in verdict.reason
    assert any(e["event"] == "moderation_hook_failed" and e["hook"] == "sloppy" for e in logs)
    chain.close()


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    hook = Hanging()
    yield hook
    hook.release.set()


def test_hook_past_the_timeout_fails_closed_promptly(hanging: Hanging) -> None:
    chain = ModerationChain([hanging], timeout=0.2)
    started = time.monotonic()
    with capture_logs() as logs:
        verdict = chain.check_input("please hang", CHANNEL)
    elapsed = time.monotonic() - started
    assert verdict.blocked and "hanging" in verdict.reason and "timed out" in verdict.reason
    assert 0.15 <= elapsed < 1.0
    assert any(e["event"] == "moderation_hook_timeout" and e["hook"] == "hanging" for e in logs)
    assert hanging.threads and hanging.threads[0].daemon

    # The stuck call keeps its thread; the next call gets a fresh one and answers at once.
    started = time.monotonic()
    assert chain.check_input("all good", CHANNEL).allowed
    assert time.monotonic() - started < 0.15
    chain.close()


def test_hook_with_too_many_stuck_calls_fails_at_once(hanging: Hanging) -> None:
    chain = ModerationChain([hanging], timeout=0.05)
    for _ in range(MAX_STUCK_CALLS):
        assert "timed out" in chain.check_output("hang", CHANNEL).reason
    started = time.monotonic()
    verdict = chain.check_output("fine now", CHANNEL)
    assert verdict.blocked and "still running" in verdict.reason
    assert time.monotonic() - started < 0.04
    hanging.release.set()
    deadline = time.monotonic() + 5
    while not chain.check_output("fine now", CHANNEL).allowed:
        assert time.monotonic() < deadline, "the hook never recovered after its calls returned"
        time.sleep(0.01)
    chain.close()


def test_blocks_and_replaces_are_logged_with_a_short_excerpt() -> None:
    chain = ModerationChain(
        [WordsModerator(words=["darn"], action="replace"), WordsModerator(words=["badword"])],
        timeout=1,
    )
    line = "darn " + "x" * 300 + " badword"
    with capture_logs() as logs:
        verdict = chain.check_input(line, CHANNEL)
    assert verdict.blocked and verdict.hook == "words#2"
    replaced = next(e for e in logs if e["event"] == "moderation_replaced")
    assert replaced["hook"] == "words#1" and replaced["reason"] == "masked a listed word"
    blocked = next(e for e in logs if e["event"] == "moderation_blocked")
    assert blocked["hook"] == "words#2" and blocked["reason"] == "matched a listed word"
    assert blocked["direction"] == "input" and blocked["target"] == "#chan"
    assert len(blocked["excerpt"]) <= 80
    assert all("badword" not in str(value) for entry in logs for value in entry.values())


# --- loading -------------------------------------------------------------------------------


def test_load_builtins_by_name() -> None:
    assert isinstance(load("words", words=["x"]), WordsModerator)
    assert isinstance(load("mass_highlight", max_nicks=5), MassHighlightModerator)
    assert isinstance(load("links", allowed_domains=["example.com"]), LinksModerator)
    assert {"words", "mass_highlight", "links", "classifier"} <= set(available_moderators())


@pytest.mark.parametrize(
    "use",
    [
        "tests.unit.moderation.test_moderation:ShoutModerator",
        "tests.unit.moderation.test_moderation.ShoutModerator",
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
        use = "tests.unit.moderation.test_moderation:ShoutModerator"
        """.replace("\n        ", "\n")
    )
    chain = build_chain(config.moderation)
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
        build_chain(config.moderation)


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
        "shout = tests.unit.moderation.test_moderation:ShoutModerator\n"
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


class NeedsLimit(Recorder):
    def __init__(self, *, limit: int) -> None:
        super().__init__(name="needs_limit")
        self.limit = limit


# --- classifier --------------------------------------------------------------------------


def _tiny_classifier(directory: Path, favour: str) -> Path:
    """A 1-layer BERT whose classifier ignores the text and prefers `favour`."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "you", "are", "nice"]
    backend = tokenizers.Tokenizer(
        tokenizers.models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="[UNK]")
    )
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=32,
    )
    labels = {0: "ok", 1: "toxic"}
    config = transformers.BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=2,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        bias = [-6.0, 6.0] if favour == "toxic" else [6.0, -6.0]
        model.classifier.bias.copy_(torch.tensor(bias))
    directory.mkdir()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("classifiers")
    return {favour: _tiny_classifier(root / favour, favour) for favour in ("toxic", "ok")}


def test_classifier_blocks_when_a_block_label_wins(tiny_models: dict[str, Path]) -> None:
    moderator = load("classifier", model=str(tiny_models["toxic"]), block_labels=["toxic"])
    verdict = moderator.check_input("you are nice", CHANNEL)
    assert verdict.blocked and "toxic" in verdict.reason
    assert moderator.check_output("hello world", CHANNEL).blocked
    assert moderator.check_output("  ", CHANNEL).allowed  # nothing to classify


def test_classifier_allows_when_the_safe_label_wins(tiny_models: dict[str, Path]) -> None:
    moderator = load("classifier", model=str(tiny_models["ok"]), block_labels=["TOXIC"])
    assert moderator.check_input("you are nice", CHANNEL).allowed
    assert moderator.check_output("hello world " * 50, CHANNEL).allowed  # truncated, not an error
    # A threshold the winning "ok" label reaches blocks when "ok" is a block label.
    strict = load("classifier", model=str(tiny_models["ok"]), block_labels=["ok"], threshold=0.9)
    assert strict.check_input("hello", CHANNEL).blocked


def test_classifier_in_a_chain(tiny_models: dict[str, Path]) -> None:
    config = loads_config(
        f'[irc]\nhost = "h"\nnick = "n"\n[[moderation.hooks]]\nuse = "classifier"\n'
        f'model = "{tiny_models["toxic"]}"\nblock_labels = ["toxic"]\napply_to = "output"\n'
    )
    chain = build_chain(config.moderation)
    assert chain.check_input("hello", CHANNEL).allowed
    verdict = chain.check_output("hello", CHANNEL)
    assert verdict.blocked and verdict.hook == "classifier"
    chain.close()


def test_classifier_options_are_checked(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    assert config_error("classifier", block_labels=["toxic"]).startswith(
        "moderation.hooks[0].model: missing"
    )
    assert config_error("classifier", model=str(tmp_path / "nope"), block_labels=["x"]).startswith(
        "moderation.hooks[0].model: "
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert config_error("classifier", model=str(empty), block_labels=["toxic"]).startswith(
        "moderation.hooks[0].model: cannot load"
    )
    model = str(tiny_models["ok"])
    assert config_error("classifier", model=model).startswith(
        "moderation.hooks[0].block_labels: missing"
    )
    assert config_error("classifier", model=model, block_labels=["toxic", "rude"]) == (
        "moderation.hooks[0].block_labels[1]: 'rude' is not a label of this model (ok, toxic)"
    )
    assert config_error(
        "classifier", model=model, block_labels=["toxic"], threshold=1.5
    ).startswith("moderation.hooks[0].threshold: must be between 0 and 1")
    assert config_error("classifier", model=model, block_labels=["toxic"], device="tpu").startswith(
        "moderation.hooks[0].device:"
    )
