"""The prompt formats of the seed model cards (/work/shared/seeds/): ChatML, Llama 2, Mistral,
Llama 3, Vicuna and Alpaca, each written out from its card's template."""

from __future__ import annotations

from relaybot.conversation.formats import Segment
from relaybot.conversation.two_role import TwoRoleFormat


class ChatMLFormat(TwoRoleFormat):
    """ChatML with system/user/assistant roles.

    Follows the relay card's template ("Template: ChatML") as formats.RelayFormat writes it and
    the ChatML form bagel's card quotes ("ChatML (sort of)": `{bos}<|im_start|>{role}` / `{text}`
    / `<|im_end|>{eos}`), with the usual `<|im_end|>\\n` between turns. Bagel's own "sort of"
    variant (BOS/EOS instead of the markers) is not implemented. No BOS: ChatML tokenizers
    (SmolLM2) use `<|im_start|>` as theirs.
    """

    name = "chatml"
    stop = ("<|im_end|>", "<|im_start|>")

    def _turn(self, role: str, content: str) -> list[Segment]:
        return [
            Segment("<|im_start|>", special=True),
            Segment(f"{role}\n{content}"),
            Segment("<|im_end|>", special=True),
            Segment("\n"),
        ]

    def _wrap(self, system: str, user: str) -> list[Segment]:
        return [
            *self._turn("system", system),
            *self._turn("user", user),
            Segment("<|im_start|>", special=True),
            Segment("assistant\n"),
        ]


class Llama2Format(TwoRoleFormat):
    """Llama-2 chat, from bagel's card, passage "Llama-2 chat":

        [INST] <<SYS>>
        {system}
        <</SYS>>

        {instruction} [/INST]

    (The card's TGI curl example opens with `<</SYS>>`, a typo; the passage above is followed.)
    `[INST]`/`<<SYS>>` are plain text in Llama-2's vocabulary; BOS `<s>` comes from the engine.
    """

    name = "llama2"
    stop = ("</s>", "[INST]")
    bos_token = "<s>"

    def _wrap(self, system: str, user: str) -> list[Segment]:
        return [
            Segment(f"[INST] <<SYS>>\n{system}\n<</SYS>>\n\n"),
            Segment(user),
            Segment(" [/INST]"),
        ]


class MistralFormat(TwoRoleFormat):
    """Mistral-Instruct v0.2, from the mistral-7b-remax card, "Direct Use":
    `"<s>[INST] What is your favourite condiment? [/INST]"`. There is no system role, so the
    system prompt opens the (only) user turn, separated by a blank line, as Mistral's own chat
    template does. `<s>` is the tokenizer's BOS, added by the engine (`bos=True` to emit it).
    """

    name = "mistral"
    stop = ("</s>", "[INST]")
    bos_token = "<s>"

    def _wrap(self, system: str, user: str) -> list[Segment]:
        return [Segment("[INST] "), Segment(f"{system}\n\n{user}"), Segment(" [/INST]")]


class Llama3Format(TwoRoleFormat):
    """Llama-3, from the llama3-iterative-dpo-final-exl2 card, "Prompt format":
    `<|start_header_id|>system<|end_header_id|>` / `{system_prompt}<|eot_id|>` / … / assistant.

    That copy of the card lost its blank lines (there are none anywhere in it), and its "Usage"
    builds prompts with `apply_chat_template`, whose Llama-3 template writes `\\n\\n` after
    `<|end_header_id|>` and nothing after `<|eot_id|>`; that is what is rendered here. BOS
    `<|begin_of_text|>` is the tokenizer's BOS, added by the engine (`bos=True` to emit it).
    """

    name = "llama3"
    stop = ("<|eot_id|>", "<|start_header_id|>", "<|end_of_text|>")
    bos_token = "<|begin_of_text|>"

    def _header(self, role: str) -> list[Segment]:
        return [
            Segment("<|start_header_id|>", special=True),
            Segment(role),
            Segment("<|end_header_id|>", special=True),
            Segment("\n\n"),
        ]

    def _wrap(self, system: str, user: str) -> list[Segment]:
        return [
            *self._header("system"),
            Segment(system),
            Segment("<|eot_id|>", special=True),
            *self._header("user"),
            Segment(user),
            Segment("<|eot_id|>", special=True),
            *self._header("assistant"),
        ]


# airoboros-mpt-30b-gpt4-1p4 card: "The prompt it was trained with was:".
AIROBOROS_SYSTEM = (
    "A chat between a curious user and an assistant. The assistant gives helpful, detailed, "
    "accurate, uncensored responses to the user's input."
)
# bagel-8x7b-v0.2 card, "Vicuna": "randomly defaulting to ...".
BAGEL_SYSTEM = "A chat between a user and an unbiased, uncensored assistant."


class VicunaFormat(TwoRoleFormat):
    """Vicuna 1.1 as the airoboros-mpt-30b card spells it (default, `variant="airoboros"`):

        A chat between … to the user's input. USER: [prompt] ASSISTANT:

    "the preamble/system prompt, followed by a single space, then "USER: " … then the prompt …,
    then a single space, followed by "ASSISTANT: "". The card's template line ends at the colon;
    the space its prose puts after it is the one that opens the response (SentencePiece puts it on
    the first word, and FastChat's vicuna_v1.1 ends the prompt at `ASSISTANT:`), so the prompt
    ends at `ASSISTANT:` with no trailing space.

    `variant="bagel"` follows bagel's card, "Vicuna": `{system}` / `USER: {instruction}` /
    `ASSISTANT: ` on separate lines, with the same choice about the trailing space.

    The card's system sentence comes first; the IRC system prompt follows it after one space.
    """

    name = "vicuna"
    stop = ("</s>", "USER:")
    bos_token = "<s>"

    def __init__(self, *, variant: str = "airoboros", bos: bool = False) -> None:
        super().__init__(bos=bos)
        if variant not in ("airoboros", "bagel"):
            raise ValueError(f"unknown vicuna variant {variant!r}: use 'airoboros' or 'bagel'")
        self.variant = variant

    def _wrap(self, system: str, user: str) -> list[Segment]:
        if self.variant == "bagel":
            return [
                Segment(f"{BAGEL_SYSTEM} {system}\nUSER: "),
                Segment(user),
                Segment("\nASSISTANT:"),
            ]
        return [
            Segment(f"{AIROBOROS_SYSTEM} {system} USER: "),
            Segment(user),
            Segment(" ASSISTANT:"),
        ]


# bagel-8x7b-v0.2 card, "Alpaca (sort of)" (two spaces after "task.", as in the card).
ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task.  "
    "Write a response that appropriately completes the request."
)


class AlpacaFormat(TwoRoleFormat):
    """Alpaca as bagel's card spells it, "Alpaca (sort of)":

        Below is an instruction that describes a task.  Write a response that …the request.

        ### Instruction:
        {system prompt, if provided}
        {instruction}

        ### Response:

    The card shows an empty line after `### Response:`; the prompt ends with that header's
    newline, where the response starts.
    """

    name = "alpaca"
    stop = ("\n### Instruction:", "\n### Response:", "</s>")
    bos_token = "<s>"

    def _wrap(self, system: str, user: str) -> list[Segment]:
        return [
            Segment(f"{ALPACA_PREAMBLE}\n\n### Instruction:\n{system}\n"),
            Segment(user),
            Segment("\n\n### Response:\n"),
        ]
