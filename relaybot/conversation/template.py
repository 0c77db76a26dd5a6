"""`model.format = "template"`: the tokenizer's own chat template (`TemplateFormat`), cut into
markup and plain-text segments, and `template_format` to build it from a tokenizer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relaybot.conversation.formats import Segment
from relaybot.conversation.two_role import TwoRoleFormat

# Private-use code points: no template writes them, so they mark where content went.
_SYSTEM_MARK = "\ue000relaybot-system\ue001"
_USER_MARK = "\ue000relaybot-user\ue001"
ApplyTemplate = Callable[[list[dict[str, str]]], str]


class TemplateFormat(TwoRoleFormat):
    """The tokenizer's own chat template (`tokenizer.chat_template`), for models that ship one.

    The template is rendered once with marker strings in place of the system prompt and the
    user turn, and cut at the markers: what the template writes is markup (special segments),
    and the channel text goes in between as plain-text segments, so the engine still never
    parses a special token out of what people typed. Templates that refuse a system role
    (Mistral's raises) get the system prompt folded into the user turn, as MistralFormat does.
    A BOS the template writes itself is dropped, because the engine adds the tokenizer's BOS.
    """

    name = "template"

    def __init__(self, apply_template: ApplyTemplate, *, bos_token: str = "") -> None:
        super().__init__()
        self.system_role = True
        try:
            head, middle, tail = self._split(apply_template, system_role=True)
        except (ValueError, LookupError, TypeError) as exc:
            raise ValueError(f"the chat template cannot be used: {exc}") from exc
        except Exception:
            # jinja2's TemplateError (raise_exception in the template): no system role.
            self.system_role = False
            try:
                head, middle, tail = self._split(apply_template, system_role=False)
            except Exception as exc:
                raise ValueError(f"the chat template cannot be used: {exc}") from exc
        if bos_token and head.startswith(bos_token):
            head = head[len(bos_token) :]
        self._head, self._middle, self._tail = head, middle, tail

    @staticmethod
    def _split(apply_template: ApplyTemplate, *, system_role: bool) -> tuple[str, str, str]:
        if system_role:
            messages = [
                {"role": "system", "content": _SYSTEM_MARK},
                {"role": "user", "content": _USER_MARK},
            ]
        else:
            messages = [{"role": "user", "content": f"{_SYSTEM_MARK}\n\n{_USER_MARK}"}]
        rendered = apply_template(messages)
        if rendered.count(_SYSTEM_MARK) != 1 or rendered.count(_USER_MARK) != 1:
            raise ValueError("the template does not write each message exactly once")
        head, rest = rendered.split(_SYSTEM_MARK)
        middle, tail = rest.split(_USER_MARK)
        return head, middle, tail

    def _wrap(self, system: str, user: str) -> list[Segment]:
        segments = [
            Segment(self._head, special=True),
            Segment(system),
            Segment(self._middle, special=True),
            Segment(user),
            Segment(self._tail, special=True),
        ]
        return [segment for segment in segments if segment.text]


def template_format(tokenizer: Any) -> TemplateFormat:
    """The `template` format from a transformers tokenizer's chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "model.format = 'template', but the model's tokenizer has no chat template"
        )

    def apply(messages: list[dict[str, str]]) -> str:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return str(text)

    bos = str(getattr(tokenizer, "bos_token", "") or "")
    # The engine puts the tokenizer's BOS in front of every prompt, except a ChatML marker
    # (SmolLM2's BOS is `<|im_start|>`): only a BOS the engine adds is dropped from the template.
    engine_adds_bos = bos not in ("", "<|im_start|>", "<|im_end|>")
    return TemplateFormat(apply, bos_token=bos if engine_adds_bos else "")
