"""The prompt format registry (`FORMATS`, `FORMAT_NAMES`, `format_by_name`,
`configured_format`) and `instruction_prompt`; the formats themselves live in two_role.py
(channel rendering), families.py (the model cards' formats) and template.py (chat templates)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relaybot.conversation.families import (
    AlpacaFormat,
    ChatMLFormat,
    Llama2Format,
    Llama3Format,
    MistralFormat,
    VicunaFormat,
)
from relaybot.conversation.formats import Prompt, PromptFormat, RelayFormat, Turn, with_stops
from relaybot.conversation.template import TemplateFormat, template_format
from relaybot.conversation.two_role import (
    TwoRoleFormat,
)

if TYPE_CHECKING:
    # config/ validates format names against this module: only a type is needed back.
    from relaybot.config.schema import ModelConfig


def instruction_prompt(fmt: PromptFormat, system: str, user: str) -> Prompt:
    """A one-shot instruction (system prompt + user turn) in `fmt`. Relay has no system role
    for this, so it gets a query: the human (`anon`) asks, the model answers as `user`."""
    if isinstance(fmt, TwoRoleFormat):
        return fmt.instruction(system, user)
    return fmt.render([Turn("anon", f"{system}\n\n{user}")], "user")


FORMATS: dict[str, type[PromptFormat]] = {
    RelayFormat.name: RelayFormat,
    ChatMLFormat.name: ChatMLFormat,
    Llama2Format.name: Llama2Format,
    MistralFormat.name: MistralFormat,
    Llama3Format.name: Llama3Format,
    VicunaFormat.name: VicunaFormat,
    AlpacaFormat.name: AlpacaFormat,
}


# `template` is built from a tokenizer, so it is a name but not a class in FORMATS.
FORMAT_NAMES: tuple[str, ...] = (*sorted(FORMATS), TemplateFormat.name)


def format_by_name(name: str, tokenizer: Any = None) -> PromptFormat:
    """A format with its defaults, by registry name; `template` needs the model's tokenizer."""
    if name == TemplateFormat.name:
        if tokenizer is None:
            raise ValueError("model.format = 'template' needs a local tokenizer (engine = 'local')")
        return template_format(tokenizer)
    try:
        cls = FORMATS[name]
    except KeyError:
        valid = ", ".join(FORMAT_NAMES)
        raise ValueError(f"unknown prompt format {name!r}; valid names: {valid}") from None
    return cls()


def configured_format(model: ModelConfig, tokenizer: Any = None) -> PromptFormat:
    """The format `[model]` names, with the preset's or config's extra stops; `template` reads
    the local model's tokenizer. ValueError names the key."""
    try:
        fmt = format_by_name(model.format, tokenizer)
    except ValueError as exc:
        raise ValueError(f"model.format: {exc}") from None
    return with_stops(fmt, model.stop)
